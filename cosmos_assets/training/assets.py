"""Post-training, evaluation and promotion, one partition per training run: its dataset version, or
``inbox-<digest>`` for a checkpoint an external trainer dropped in.

    curated_dataset ─┐
                     ├─> training_dataset ─> generator_checkpoint ─┐
    accepted_videos ─┘                                             ├─> checkpoint_evaluation ─> promoted_checkpoint
                                         inbox_checkpoint ─────────┘
"""


import copy
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import dagster as dg
import numpy as np
import polars as pl
from PIL import Image

from cosmos_assets.common.drop_zone import error_class
from cosmos_assets.common.artefacts import TRAINING_RUNS, ArtefactStore, table_key
from cosmos_assets.common.pictures import contact_sheet, encode_jpeg, encode_png, line_plot, markdown_image, markdown_table
from cosmos_assets.common.pod_classes import pod_class
from cosmos_assets.models.checkpoints import TINY_LABEL, ModelError
from cosmos_assets.models.frames import sample_frames
from cosmos_assets.models.generator import GenerationRequest, VideoGenerator, defaults_for
from cosmos_assets.models.lora import load_lora
from cosmos_assets.synthetic.critics import MetricCritic, align_source
from cosmos_assets.training import registry
from cosmos_assets.training.alignment import AlignmentSettings, EvaluationVideo, alignment_by_prompt, prompt_alignment
from cosmos_assets.training.datasets import (
    MixConfig, plan_training_dataset, real_samples, sample_counts, samples_markdown, snapshot_samples, synthetic_samples,
    write_snapshot,
)
from cosmos_assets.models.feature_spaces import EfficientNetFrames
from cosmos_assets.training.evaluation import ModelScores, distances_by_feature_space, promotion_decision
from cosmos_assets.training.trainer import STATE_PREFIX, TrainingConfig, cache_samples, latest_state, train_lora
from pydantic import Field
from resources import CosmosStorage, EmbedderResource
from resources.config import config_from
from resources.retraining import RetrainingSettings
from resources.training import TrainerResource

training_runs = dg.DynamicPartitionsDefinition(name="training_runs")
GROUP = "training"


def _frames(store: ArtefactStore, reference: str, config) -> np.ndarray:
    """``config.frames`` frames at the generator's rate, resized to the training size."""
    sampled = sample_frames(store.local_path(reference), fps=16.0, max_frames=config.frames)
    frames = sampled.frames
    if len(frames) < config.frames:  # a short clip: hold the last frame
        frames = np.concatenate([frames, np.repeat(frames[-1:], config.frames - len(frames), axis=0)])
    return np.stack([np.asarray(Image.fromarray(f).resize((config.width, config.height), Image.BICUBIC)) for f in frames])


def checked_accepted_partitions(instance: dg.DagsterInstance) -> set[str]:
    """Generation rounds whose latest accepted_videos came from a successful run: its blocking rate check
    passed. A round that failed the check never reaches a training mix."""
    latest: dict[str, object] = {}
    for record in instance.fetch_materializations(dg.AssetKey("accepted_videos"), limit=10_000).records:  # newest first
        latest.setdefault(record.partition_key, record)
    passed = set()
    for partition, record in latest.items():
        run = instance.get_run_by_id(record.run_id)
        if run is not None and run.status == dg.DagsterRunStatus.SUCCESS:
            passed.add(partition)
    return passed


def plan_training_mix(store: ArtefactStore, mix: MixConfig, rounds: set[str]) -> tuple[str, pl.DataFrame] | None:
    """(version, samples) of the mix the current curated dataset and the accepted videos of ``rounds`` make,
    or None before the first curated dataset. Reads only; ``retraining_sensor`` and ``training_dataset`` both
    plan with it, so the run builds exactly what the sensor decided on."""
    curated = store.read_table("curated_dataset")
    if curated is None:
        return None
    real = real_samples(curated)
    return plan_training_dataset(real, synthetic_samples(store.read_partitions("accepted_videos", only=rounds), real), mix)


class TrainingDatasetConfig(dg.Config):
    generation_rounds: list[str] = Field(
        default_factory=list,
        description="The generation rounds (accepted_videos partitions) whose accepted videos may join the mix: "
                    "retraining_sensor fills this in with the rounds that passed their rate check when it planned.")


@dg.asset(partitions_def=training_runs, group_name=GROUP, kinds={"python", "parquet"}, owners=["team:training"],
          deps=[dg.AssetDep("curated_dataset"),
                # Every round may contribute: the mix reads the accepted videos of all rounds that passed their check.
                dg.AssetDep("accepted_videos", partition_mapping=dg.AllPartitionMapping())],
          code_version="mix-1", tags=pod_class("cpu-dataset"))
def training_dataset(context: dg.AssetExecutionContext, config: TrainingDatasetConfig, storage: CosmosStorage,
                     retraining: RetrainingSettings) -> dg.Output[pl.DataFrame]:
    """The samples of this training run: curated real clips and accepted synthetic videos, one row each with its
    lineage (source clip, source video, batch; for synthetic: request, seed, generator, critic, score). Planned
    from the tables, written once as an immutable snapshot named by its content-derived version (the partition)."""
    store, version = storage.store, context.partition_key
    samples = snapshot_samples(store, version)
    if samples is None:
        plan = plan_training_mix(store, retraining.mix(), set(config.generation_rounds))
        if plan is None:
            raise dg.Failure("no curated dataset yet: nothing to train on")
        planned, samples = plan
        if planned != version:
            # The tables moved on since the sensor planned this version; the sensor plans the new one.
            raise dg.Failure(f"the current tables make dataset version {planned}, not {version}: data changed since "
                             "retraining_sensor planned it; its next tick plans the new version")
        write_snapshot(store, version, samples, retraining.mix())
        context.log.info(f"wrote the snapshot of {version}: {samples.height} samples")
    else:
        context.log.info(f"{version} was planned before: its snapshot is reused unchanged")
    return dg.Output(samples.with_columns(dataset_version=pl.lit(version)), metadata={
        "dataset_version": version,
        **sample_counts(samples),
        "generation_rounds": dg.MetadataValue.json(sorted(config.generation_rounds)),
        "contains_tiny_random_outputs": bool(samples["tiny_random"].fill_null(False).any()),
        "learned_from": dg.MetadataValue.md(samples_markdown(samples)),
    })


class InboxCheckpointConfig(dg.Config):
    inbox_item: str = Field(description="The folder name under $COSMOS_HOME/checkpoint_inbox/ holding adapter.safetensors "
                                        "and manifest.json (checkpoint_sensor fills this in).")


@dg.asset(partitions_def=training_runs, group_name=GROUP, kinds={"python", "safetensors"}, owners=["team:training"],
          code_version="inbox-1", tags=pod_class("cpu-light"))
def inbox_checkpoint(context: dg.AssetExecutionContext, config: InboxCheckpointConfig, storage: CosmosStorage) -> dg.Output[pl.DataFrame]:
    """A checkpoint an external trainer dropped into the checkpoint inbox, checked (safetensors, manifest, no
    links) and copied into the store under ``inbox-<adapter digest>`` (the partition), once."""
    name = config.inbox_item
    if not name or name != Path(name).name or name.startswith("."):
        raise dg.Failure(f"UnsafePath: {name!r} is not a folder name inside the checkpoint inbox")
    try:
        manifest = registry.register_inbox_checkpoint(storage.store, storage.paths.checkpoint_inbox / name, context.partition_key)
    except registry.INBOX_ERRORS as error:
        raise dg.Failure(f"{error_class(error)}: {error}") from None
    adapter = storage.store.ref(f"{registry.checkpoint_key(context.partition_key)}/{registry.ADAPTER}")
    row = pl.DataFrame([{"checkpoint": context.partition_key, "path": adapter, "inbox_name": name,
                         "base_model": str(manifest.get("base_model")), "kind": str(manifest.get("kind")),
                         "adapter_sha256": manifest.get("adapter_sha256")}])
    return dg.Output(row, metadata={"checkpoint": context.partition_key, "path": adapter, "inbox_name": name,
                                    "base_model": str(manifest.get("base_model")),
                                    "trained_on": str(manifest.get("dataset_version") or "not stated by the external trainer")})


def restore_run_state(store: ArtefactStore, key: str) -> Path:
    """The local folder a training run keeps its state in. Locally that is the state folder itself; with
    an object store, a scratch folder holding the run's latest saved state from the store, so a run that
    died in one pod resumes in the next."""
    if not store.remote:
        return store.staging_path(f"{TRAINING_RUNS}/{key}")
    run_dir = store.staging_path(f"{TRAINING_RUNS}/{key}")
    saved = [k for k in store.list(f"{TRAINING_RUNS}/{key}/") if k.rsplit("/", 1)[-1].startswith(STATE_PREFIX)]
    if saved and latest_state(run_dir) is None:
        store.local_path(store.ref(max(saved)))  # downloads into run_dir: the cache path of its key
    return run_dir


def save_run_state(store: ArtefactStore, key: str, state: Path) -> None:
    """Publish a state file the trainer just saved, and drop older ones from the store as it does locally."""
    if not store.remote:
        return
    store.commit(f"{TRAINING_RUNS}/{key}/{state.name}")
    saved = sorted(k for k in store.list(f"{TRAINING_RUNS}/{key}/") if k.rsplit("/", 1)[-1].startswith(STATE_PREFIX))
    for older in saved[:-2]:
        store.remove(older)


RUN_SIZES = ("steps", "warmup_steps", "save_interval", "frames", "height", "width")  # per profile, on the trainer


class PostTrainingConfig(config_from(
        TrainingConfig,
        include=("rank", "alpha", "learning_rate", "batch_size", "gradient_accumulation", "seed") + RUN_SIZES,
        unset={name: "the `trainer` resource's (per profile)." for name in RUN_SIZES})):
    """Cookbook LoRA settings (``TrainingConfig``); sizes left unset come from the trainer resource (per profile)."""

    def training(self, trainer: TrainerResource) -> TrainingConfig:
        """The run's settings: the trainer's kind (its loss), this config's values, the trainer's sizes for the rest."""
        return self.to_dataclass(TrainingConfig, kind=trainer.kind,
                                 **{k: getattr(trainer, k) for k in RUN_SIZES if getattr(self, k) is None})


@dg.asset(partitions_def=training_runs, group_name=GROUP, pool="gpu", kinds={"pytorch", "safetensors"}, owners=["team:training"],
          code_version="lora-1", tags=pod_class("gpu-train-2b"))
def generator_checkpoint(
    context: dg.AssetExecutionContext, config: PostTrainingConfig, trainer: TrainerResource, storage: CosmosStorage,
    training_dataset: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """A LoRA adapter (safetensors) post-trained on this run's dataset; resumes from its last save."""
    training = config.training(trainer)
    checkpoint, pipeline = trainer.pipeline()
    key = context.partition_key
    store = storage.store
    run_dir = restore_run_state(store, key)
    samples = [(r["sample_id"], _frames(store, r["path"], training), r["caption"] or "") for r in training_dataset.to_dicts()]
    # The latent cache is recomputable and large: it stays on the local (or scratch) disk, never on the store.
    latent_cache = (storage.paths.training_runs if not store.remote else storage.paths.scratch / TRAINING_RUNS) / "latent_cache"
    cache = cache_samples(pipeline, checkpoint.version, samples, latent_cache, training, log=context.log.info)
    result = train_lora(pipeline.transformer, cache, training, run_dir, log=context.log.info,
                        on_save=lambda state: save_run_state(store, key, state))
    manifest = {"checkpoint": key, "kind": trainer.kind, "base_model": checkpoint.name, "base_model_version": checkpoint.version,
                "dataset_version": key, "steps": result.steps, "resumed_from": result.resumed_from, "losses": result.losses,
                "lora": {"rank": training.rank, "alpha": training.alpha, "target_modules": list(training.target_modules)},
                "config": asdict(training) | {"target_modules": list(training.target_modules)},
                "tiny_random": checkpoint.tiny_random, "source": "generator_checkpoint"}
    folder = registry.checkpoint_key(key)
    with store.folder(folder, marker=registry.MANIFEST) as staging:
        shutil.copyfile(result.adapter_path, staging / registry.ADAPTER)
        (staging / registry.MANIFEST).write_bytes(registry.manifest_json(manifest))
    adapter = store.ref(f"{folder}/{registry.ADAPTER}")
    row = pl.DataFrame([{"checkpoint": key, "path": adapter, "dataset_version": key,
                         "base_model": checkpoint.name, "steps": result.steps, "final_loss": result.losses[-1],
                         "tiny_random": checkpoint.tiny_random}])
    return dg.Output(row, metadata={
        "checkpoint": key, "path": adapter, "dataset_version": key, "steps": result.steps,
        "resumed_from_step": result.resumed_from, "final_loss": float(result.losses[-1]),
        "base_model": checkpoint.label,
        "loss_curve": dg.MetadataValue.md(markdown_image(encode_png(line_plot(result.losses, "training loss")), "loss curve", "image/png")),
        **_learned_from(training_dataset, key),
        **({"label": TINY_LABEL} if checkpoint.tiny_random else {}),
    })


def _learned_from(samples: pl.DataFrame | None, checkpoint: str) -> dict:
    """Per-sample lineage on a checkpoint's page: counts, and the table of source videos, clips and synthetic samples."""
    if samples is None:
        return {"learned_from": dg.MetadataValue.md("An external checkpoint: its training data is not known here.")}
    counts = sample_counts(samples)
    return {"real_samples": counts["real"], "synthetic_samples": counts["synthetic"], "source_videos": counts["source_videos"],
            "learned_from": dg.MetadataValue.md(samples_markdown(samples, checkpoint))}


class AlignmentConfig(config_from(AlignmentSettings)):
    """Sampling of the VLM's prompt-alignment answers (``AlignmentSettings``)."""


class EvaluationConfig(dg.Config):
    """How a checkpoint and its base are compared: on which clips, seeds and sampling steps."""

    clips: Optional[int] = Field(
        default=None, description="Held-out validation clips generated from (training clips stand in when there are "
                                  "none); unset: the `trainer` resource's evaluation_clips.")
    seeds: list[int] = Field(default=[0, 1], description="Seeds each clip is generated with, by both models.")
    steps: Optional[int] = Field(
        default=None, description="Sampling steps per generation; unset: the `trainer` resource's evaluation_steps.")
    accept_threshold: float = Field(
        default=0.5, description="Metric critic score (0..1) at which a generated clip counts as accepted.")
    prompt_alignment: bool = Field(
        default=True, description="Ask the trainer's VLM (where one is configured) whether each generated video matches "
                                  "its prompt, for base and tuned; off: skipped.")
    alignment: AlignmentConfig = Field(default=AlignmentConfig.from_dataclass(AlignmentSettings()),
                                       description="How the VLM is asked about prompt alignment.")


def _generate_all(generator: VideoGenerator, clips: list[dict], seeds: list[int], geometry: TrainingConfig,
                  steps: int) -> list[tuple[dict, int, np.ndarray]]:
    outputs = []
    for clip in clips:
        for seed in seeds:
            request = GenerationRequest(prompt=clip["caption"] or "a video", seed=seed, conditioning_frames=clip["frames"][:1],
                                        num_frames=geometry.frames, height=geometry.height, width=geometry.width, steps=steps)
            outputs.append((clip, seed, generator.generate(request).frames))
    return outputs


def _scores(outputs, critic: MetricCritic, frechet: float, threshold: float) -> tuple[ModelScores, list[float]]:
    scores = [critic.score(frames, align_source(clip["frames"], 16.0, len(frames), 16.0)).score for clip, _, frames in outputs]
    return ModelScores(acceptance_rate=float(np.mean([s >= threshold for s in scores])), mean_score=float(np.mean(scores)),
                       frechet_distance=frechet), scores


# The standard spaces' columns of the evaluation table, beside the EfficientNet `frechet_distance`.
STANDARD_SPACE_COLUMNS = {"inception_v3 pool3 (FID)": "fid", "i3d (FVD)": "fvd"}


def _standard_space_columns(distances: list[dict], spaces, model: str) -> dict:
    """fid / fvd and the space each was measured in (its weights' label); null where no weights are configured."""
    columns = {}
    for name, column in STANDARD_SPACE_COLUMNS.items():
        space = next((s.space for s in spaces if s.space.name == name), None)
        row = next((r for r in distances if space and r["model"] == model and r["feature_space"] == space.label), None)
        columns[column] = row["frechet_distance"] if row else None
        columns[f"{column}_feature_space"] = f"{space.label}: {space.weights}" if space else None
    return columns


@dg.asset(partitions_def=training_runs, group_name=GROUP, pool="gpu", kinds={"pytorch"}, owners=["team:training"],
          # A partition's checkpoint is either trained here or registered from the inbox; the evaluation set is
          # the curated dataset's held-out clips.
          deps=[generator_checkpoint, inbox_checkpoint, dg.AssetDep("curated_dataset")], code_version="eval-2",
          tags=pod_class("gpu-eval"))
def checkpoint_evaluation(
    context: dg.AssetExecutionContext, config: EvaluationConfig, trainer: TrainerResource, embedders: EmbedderResource,
    storage: CosmosStorage,
) -> dg.Output[pl.DataFrame]:
    """The checkpoint against its base on a fixed evaluation set (held-out clips, their captions as prompts,
    fixed seeds): metric-critic acceptance and mean score, and the Fréchet distance of generated to real held-out
    clips in every available feature space: the packaged EfficientNet-Lite0 (per frame, always), FID's
    Inception-v3 and FVD's I3D where their weights are configured. Each number names its space. Where the trainer
    has a VLM, it is asked per prompt whether each video matches it (prompt alignment, base and tuned)."""
    store = storage.store
    try:
        manifest = registry.verified_checkpoint(store, context.partition_key)
    except ModelError as error:
        raise dg.Failure(f"{error.__class__.__name__}: {error}") from None
    if manifest.get("kind") not in (None, trainer.kind):
        raise dg.Failure(f"KindMismatch: {context.partition_key} is a {manifest['kind']} adapter; the trainer evaluates "
                         f"on {trainer.kind} ({trainer.base_model})")
    base_checkpoint, pipeline = trainer.pipeline()
    curated = store.read_table("curated_dataset")
    curated = pl.DataFrame() if curated is None else curated
    if curated.is_empty():
        raise dg.Failure("no curated dataset to evaluate against")
    held_out = curated.filter(pl.col("split") == "validation")
    evaluation_set = "validation clips" if held_out.height else "training clips (the dataset has no validation clips yet)"
    chosen = (held_out if held_out.height else curated).sort("clip_id").head(config.clips or trainer.evaluation_clips).to_dicts()
    geometry = TrainingConfig(frames=trainer.frames, height=trainer.height, width=trainer.width)
    steps = config.steps or trainer.evaluation_steps
    clips = [{**c, "frames": _frames(store, c["path"], geometry)} for c in chosen]
    defaults = defaults_for(trainer.kind, num_frames=geometry.frames, height=geometry.height, width=geometry.width, steps=steps)
    base = VideoGenerator(trainer.kind, base_checkpoint, pipeline, pipeline.device, pipeline.dtype, defaults)
    tuned_transformer = copy.deepcopy(pipeline.transformer)
    load_lora(tuned_transformer, registry.adapter_path(store, context.partition_key))
    tuned_pipeline = type(pipeline)(**{**pipeline.components, "transformer": tuned_transformer})
    tuned_pipeline.set_progress_bar_config(disable=True)
    tuned = VideoGenerator(trainer.kind, base_checkpoint, tuned_pipeline, pipeline.device, pipeline.dtype, defaults)
    embedder = embedders.video_signals()
    spaces = [EfficientNetFrames(embedder), *embedders.standard_feature_spaces()]
    critic = MetricCritic()
    context.log.info(f"generating {len(clips) * len(config.seeds)} videos with the base model and with {context.partition_key}")
    base_outputs = _generate_all(base, clips, config.seeds, geometry, steps)
    tuned_outputs = _generate_all(tuned, clips, config.seeds, geometry, steps)
    distances = distances_by_feature_space(
        spaces, {"base": [f for _, _, f in base_outputs], "fine-tuned": [f for _, _, f in tuned_outputs]}, [c["frames"] for c in clips])
    efficientnet = {r["model"]: r["frechet_distance"] for r in distances if r["feature_space"] == spaces[0].space.label}
    base_scores, base_each = _scores(base_outputs, critic, efficientnet["base"], config.accept_threshold)
    tuned_scores, tuned_each = _scores(tuned_outputs, critic, efficientnet["fine-tuned"], config.accept_threshold)
    alignment = _prompt_alignment(context, config, trainer, {"base": base_outputs, "fine-tuned": tuned_outputs}, defaults.fps)
    rows = [{"model": name, **asdict(scores), **_standard_space_columns(distances, spaces, name),
             **alignment.columns(name)} for name, scores in (("base", base_scores), ("fine-tuned", tuned_scores))]
    # Typed even when no FID / FVD weights or no VLM are configured (all null), so every partition's table has one schema.
    typed = ({c: pl.Float64 for c in STANDARD_SPACE_COLUMNS.values()} | {f"{c}_feature_space": pl.String for c in STANDARD_SPACE_COLUMNS.values()}
             | {"prompt_alignment": pl.Float64, "prompt_alignment_vlm": pl.String})
    table = pl.DataFrame(rows, schema_overrides=typed).with_columns(checkpoint=pl.lit(context.partition_key), evaluation_set=pl.lit(evaluation_set),
                                            feature_space=pl.lit(f"{embedder.name} (1280-d pooled, per frame)"),
                                            critic=pl.lit(critic.identity["critic_version"]),
                                            tiny_random=pl.lit(bool(manifest.get("tiny_random"))))
    sheet = contact_sheet([f[len(f) // 2] for _, _, f in base_outputs] + [f[len(f) // 2] for _, _, f in tuned_outputs],
                          [f"base seed {s}" for _, s, _ in base_outputs] + [f"tuned seed {s}" for _, s, _ in tuned_outputs],
                          columns=len(base_outputs))
    return dg.Output(table, metadata={
        "checkpoint": context.partition_key, "evaluation_set": evaluation_set,
        "base": dg.MetadataValue.json(asdict(base_scores)), "fine_tuned": dg.MetadataValue.json(asdict(tuned_scores)),
        "final_training_loss": float(manifest["losses"][-1]) if manifest.get("losses") else float("nan"),
        "feature_space": "EfficientNet-Lite0 ImageNet features (1280-d), per frame",
        "scores": dg.MetadataValue.md(markdown_table(rows, ["model", "acceptance_rate", "mean_score", "frechet_distance"])),
        "feature_spaces": dg.MetadataValue.json([{"space": s.space.label, "weights": s.space.weights, "unit": s.space.unit}
                                                 for s in spaces]),
        "frechet_distances": dg.MetadataValue.md(markdown_table(
            distances, ["model", "feature_space", "frechet_distance", "samples", "real_samples", "unit"])),
        "base_vs_fine_tuned": dg.MetadataValue.md(markdown_image(encode_jpeg(sheet), "base (top) vs fine-tuned (bottom)")),
        **alignment.metadata(),
        **({"label": TINY_LABEL} if manifest.get("tiny_random") else {}),
    })


class _Alignment:
    """The prompt-alignment results of one evaluation (or why there are none), as table columns and metadata."""

    def __init__(self, rows: list[dict] | None = None, vlm_label: str | None = None, skipped: str | None = None):
        self.rows, self.vlm_label, self.skipped = rows or [], vlm_label, skipped
        self.table = alignment_by_prompt(self.rows) if self.rows else []

    def columns(self, model: str) -> dict:
        mean = self.table[-1][model] if self.table else None
        return {"prompt_alignment": mean, "prompt_alignment_vlm": self.vlm_label}

    def metadata(self) -> dict:
        if self.skipped:
            return {"prompt_alignment": dg.MetadataValue.md(f"Not measured: {self.skipped}.")}
        random_weights = any(r["random_weights"] for r in self.rows)
        head = (f"**VLM `{self.vlm_label}` asked per prompt whether each video matches it (share of Yes).**"
                + (" Its weights are random: the numbers exercise the path, they say nothing of the videos." if random_weights else ""))
        return {
            "prompt_alignment": dg.MetadataValue.md(head + "\n\n" + markdown_table(
                self.table, ["prompt", "base", "fine-tuned", "videos", "parse_failures", "errors"])),
            "prompt_alignment_videos": dg.MetadataValue.md(markdown_table(
                self.rows, ["model", "prompt", "seed", "alignment", "answers", "parse_failures", "error", "random_weights"])),
            "prompt_alignment_by_prompt": dg.MetadataValue.json(self.table),
            "prompt_alignment_random_weights": random_weights,
        }


def _prompt_alignment(context, config: EvaluationConfig, trainer: TrainerResource, outputs: dict[str, list], fps: float) -> _Alignment:
    if trainer.vlm is None:
        return _Alignment(skipped="the trainer has no VLM configured")
    if not config.prompt_alignment:
        return _Alignment(skipped="turned off in the run config (prompt_alignment: false)")
    vlm = trainer.vlm.get()
    identity = vlm.identity
    label = f"{identity['model']}@{identity['model_version']}" + (" [random_weights]" if identity["tiny_random"] else "")
    videos = [EvaluationVideo(model, clip["caption"] or "a video", clip["clip_id"], seed, frames, fps)
              for model, generated in outputs.items() for clip, seed, frames in generated]
    context.log.info(f"asking {label} about the prompt alignment of {len(videos)} videos")
    return _Alignment(prompt_alignment(vlm, videos, config.alignment.to_dataclass()), label)


class PromotionConfig(dg.Config):
    """How much worse than its base a checkpoint may score and still be promoted."""

    margin: float = Field(
        default=0.01, description="Allowed shortfall against the base model (evaluation noise): absolute for the "
                                  "acceptance rate and mean score (0..1), relative for the Fréchet distance.")


@dg.asset_check(asset=checkpoint_evaluation, blocking=True, description="The fine-tuned checkpoint is no worse than its base by more than the margin.")
def no_worse_than_base(context: dg.AssetCheckExecutionContext, config: PromotionConfig, storage: CosmosStorage) -> dg.AssetCheckResult:
    # The evaluation of this run's partition, read by key: checks of partitioned assets get no partition input.
    partition = context.run.tags["dagster/partition"]
    evaluation = storage.store.read_parquet(table_key("checkpoint_evaluation", partition))
    by_model = {r["model"]: r for r in evaluation.to_dicts()}
    fields = ("acceptance_rate", "mean_score", "frechet_distance")
    decision = promotion_decision(ModelScores(**{k: by_model["base"][k] for k in fields}),
                                  ModelScores(**{k: by_model["fine-tuned"][k] for k in fields}), config.margin)
    return dg.AssetCheckResult(passed=decision.promote, metadata={"reasons": dg.MetadataValue.json(decision.reasons),
                                                                   "margin": config.margin, "checkpoint": partition})


# The `collection` pool: the promotion registry has one writer at a time (registry.py says why that matters).
@dg.asset(partitions_def=training_runs, group_name=GROUP, pool="collection", kinds={"python"}, owners=["team:training"],
          deps=[training_dataset], code_version="promote-1", tags=pod_class("cpu-light"))
def promoted_checkpoint(context: dg.AssetExecutionContext, storage: CosmosStorage, checkpoint_evaluation: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Points PROMOTED.json at this checkpoint (only reached when the blocking evaluation check passed) and
    appends to the promotion history with the evidence."""
    evidence = {r["model"]: {k: r[k] for k in ("acceptance_rate", "mean_score", "frechet_distance")} for r in checkpoint_evaluation.to_dicts()}
    entry = registry.promote(storage.store, context.partition_key, evidence)
    history = [{"checkpoint": h["checkpoint"], "promoted_at": h["promoted_at"], "evidence": json.dumps(h["evidence"])}
               for h in registry.history(storage.store)]
    return dg.Output(pl.DataFrame(history), metadata={
        "promoted": entry["checkpoint"], "promoted_at": entry["promoted_at"],
        "history": dg.MetadataValue.md(markdown_table(history, ["checkpoint", "promoted_at"])),
        **_learned_from(snapshot_samples(storage.store, context.partition_key), context.partition_key),
    })


training_job = dg.define_asset_job("training_job", selection=[training_dataset, generator_checkpoint],
                                   description="Post-train the generator on one planned dataset version.")
checkpoint_inbox_job = dg.define_asset_job(
    "checkpoint_inbox_job", selection=[inbox_checkpoint, checkpoint_evaluation, promoted_checkpoint],
    description="Register a checkpoint dropped into the checkpoint inbox, evaluate it against its base and promote it if it passes.")
evaluation_job = dg.define_asset_job("evaluation_job", selection=[checkpoint_evaluation, promoted_checkpoint],
                                     description="Evaluate one checkpoint against its base and promote it if it passes.")
