"""Teaching the critic: labels land (or are derived from curated clips), a versioned training set is split by video,
a critic is trained, evaluated against its base on held-out videos, and promoted behind a blocking check; the
promoted critic is what ``critique_scores`` uses from then on.

    label_inbox/ file ─┐                                     (one partition of label_drops each)
    curated_dataset ───┼─> critic_labels ─> critic_training_set ─> critic_checkpoint ─> critic_evaluation ─> promoted_critic
    synthetic_videos ──┘                    (one partition of critic_training_runs each, from here on)

Processing lives in plain modules (``loop``, ``labels``, ``training_set``, ``feature_critic``, ``reason_tuning``,
``metrics``); these assets read their inputs, call them, write the outputs and put pictures on the pages.
"""

import hashlib
import shutil
from collections import Counter
from pathlib import Path
from typing import Optional

import dagster as dg
import polars as pl
from pydantic import Field

from cosmos_assets.common.artefacts import CRITIC, CRITIC_CHECKPOINTS, table_key
from cosmos_assets.common.drop_zone import error_class, open_dropped_file
from cosmos_assets.common.files import display_name, sha256_of_stream
from cosmos_assets.common.pictures import encode_png, line_plot, markdown_image, markdown_table
from cosmos_assets.common.pod_classes import pod_class
from cosmos_assets.critic_training import labels as label_files
from cosmos_assets.critic_training import checkpoints, loop, metrics
from cosmos_assets.critic_training.feature_critic import FeatureCriticSettings, load_feature_critic, train_feature_critic
from cosmos_assets.critic_training.reason_grpo import GRPOSettings, train_reason_grpo
from cosmos_assets.critic_training.reason_tuning import SFTSettings, train_reason_sft
from cosmos_assets.critic_training.self_supervised import SelfSupervisedSettings
from cosmos_assets.critic_training.training_set import (
    TrainingSetRecipe, build_training_set, export_conversations, rows_by_side,
)
from cosmos_assets.models.checkpoints import TINY_LABEL
from cosmos_assets.training import registry
from resources import CosmosStorage, VisionLanguageResource
from resources.config import config_from
from resources.critic_training import CriticTrainingSettings

label_drops = dg.DynamicPartitionsDefinition(name="label_drops")
critic_training_runs = dg.DynamicPartitionsDefinition(name="critic_training_runs")
GROUP = "critic"
OWNERS = ["team:critic"]
LABEL_SUFFIXES = (b".jsonl", b".csv", b".json")
MAX_LABEL_FILE_BYTES = label_files.MAX_LABEL_FILE_BYTES
FILE_PREFIX, SELF_PREFIX = "file-", "self-"


def label_partition_for_file(digest: str) -> str:
    """A landed label file's partition: its content, so the same file under two names is one partition."""
    return f"{FILE_PREFIX}{digest[:16]}"


def label_partition_for_dataset(version: str) -> str:
    return f"{SELF_PREFIX}{version}"


# --- critic_labels --------------------------------------------------------------------------------------------------


class CriticLabelsConfig(config_from(SelfSupervisedSettings, include=("fps", "window_frames", "offset_windows",
                                                                      "variants_per_kind", "min_visible_change", "seed"))):
    """Which label file this partition takes (critic_labels_sensor fills it in), how to read it, and how
    self-supervised labels are made (``SelfSupervisedSettings``)."""

    label_file_hex: Optional[str] = Field(
        default=None, description="The label file's path inside $COSMOS_HOME/label_inbox/, hex-encoded bytes "
                                  "(file-* partitions; the sensor fills it in).")
    layout: Optional[str] = Field(
        default=None, description="generic, videophy2, multiple_choice or conversations; unset: detected from the file.")


def _landed_file(context, storage: CosmosStorage, config: CriticLabelsConfig) -> tuple[bytes, str, dict[str, str]]:
    """The label file's bytes (checked against the partition's content hash), its name, and the videos dropped
    beside it, copied into the store by content (name -> store reference)."""
    root = storage.paths.label_inbox
    if not config.label_file_hex:
        raise dg.Failure("MissingConfig: a file-* partition needs label_file_hex (set by critic_labels_sensor)")
    relative = bytes.fromhex(config.label_file_hex)
    name = display_name(relative)
    with open_dropped_file(root, relative) as stream:
        data = stream.read(MAX_LABEL_FILE_BYTES + 1)
    digest = hashlib.sha256(data).hexdigest()
    if label_partition_for_file(digest) != context.partition_key:
        raise dg.Failure(f"ChangedAfterLanding: {name} no longer has the content of {context.partition_key}; "
                         "its new content is taken as a new drop")
    store = storage.store
    store.write_bytes(f"{CRITIC}/labels/{digest}{Path(name).suffix.lower()}", data)  # the labels as they landed
    beside = {}
    folder = relative.rsplit(b"/", 1)[0] if b"/" in relative else b""
    for entry in sorted((root / folder.decode(errors="surrogateescape")).iterdir() if folder else root.iterdir()):
        if not entry.is_file() or entry.is_symlink() or entry.suffix.lower() not in loop.VIDEO_SUFFIXES:
            continue
        member = (folder + b"/" if folder else b"") + entry.name.encode(errors="surrogateescape")
        with open_dropped_file(root, member) as video:  # no links followed; hashed and copied from one open file
            video_digest, _ = sha256_of_stream(video)
            key = f"{CRITIC}/videos/{video_digest}{entry.suffix.lower()}"
            if not store.exists(key):
                video.seek(0)
                with store.writing(key) as tmp, open(tmp, "wb") as out:
                    shutil.copyfileobj(video, out)
        beside[entry.name] = store.ref(key)
    return data, name, beside


@dg.asset(partitions_def=label_drops, group_name=GROUP, kinds={"python", "parquet"}, owners=OWNERS, code_version="labels-1",
          tags=pod_class("cpu-ingest"),
          # Labels name curated clips and synthetic candidates and landed source videos: all read, all declared.
          deps=[dg.AssetDep("curated_dataset"),
                dg.AssetDep("synthetic_videos", partition_mapping=dg.AllPartitionMapping()),
                dg.AssetDep("raw_videos", partition_mapping=dg.AllPartitionMapping())])
def critic_labels(context: dg.AssetExecutionContext, config: CriticLabelsConfig, storage: CosmosStorage,
                  critic_training: CriticTrainingSettings) -> dg.Output[pl.DataFrame]:
    """One label drop: a landed file's rows resolved to videos (bad rows kept with their error class), or the
    self-supervised plausibility labels of a curated dataset version (real clips as they are, and reversed,
    shuffled, frozen, stuttered and speed-jumped versions of them, written as videos)."""
    key, store = context.partition_key, storage.store
    # Read from the store rather than loaded as an input: labels may land (naming candidates, or videos dropped
    # beside them) before any dataset is curated.
    dataset_key = table_key("curated_dataset", None)
    curated_dataset = store.read_parquet(dataset_key) if store.exists(dataset_key) else pl.DataFrame(
        schema={"clip_id": pl.String, "source_hash": pl.String, "path": pl.String})
    if key.startswith(SELF_PREFIX):
        settings = config.to_dataclass(SelfSupervisedSettings)
        labelled = loop.self_supervised_labels(
            store, curated_dataset.to_dicts(), settings, critic_training.self_supervised_clips,
            progress=lambda done, total: context.log.info(f"self-supervised labels: {done}/{total} clips"))
        versions = sorted(set(curated_dataset["dataset_version"])) if "dataset_version" in curated_dataset.columns else []
        # The latest version's clips (a later version than this partition's when curation moved on meanwhile).
        origin = f"curated dataset {', '.join(versions) or 'none'} ({settings.version()})"
    else:
        try:
            data, name, beside = _landed_file(context, storage, config)
        except OSError as error:
            raise dg.Failure(f"{error_class(error)}: the label file cannot be read: {error}") from None
        rows, bad = loop.parse_landed(data, name, config.layout)
        raw = store.read_partitions("raw_videos")  # empty before anything landed in the landing zone
        labelled = loop.landed_labels(rows, bad, curated_dataset, store.read_partitions("synthetic_videos"),
                                      raw.filter(pl.col("status") == "ok") if raw.height else raw, beside)
        origin = name
    table = labelled.table(key)
    good = table.filter(pl.col("error_class").is_null())
    by_class = Counter(table.filter(pl.col("error_class").is_not_null())["error_class"].to_list())
    for note in labelled.notes[:20]:
        context.log.info(f"not labelled: {note}")
    return dg.Output(table, metadata={
        "origin": origin,
        "labels": good.height,
        "refused": sum(by_class.values()),
        "refused_by_error_class": dg.MetadataValue.json(dict(by_class)),
        "by_task_and_answer": dg.MetadataValue.json({f"{t}:{a}": n for (t, a), n in
                                                     Counter(zip(good["task"], good["answer"])).most_common()}),
        "skipped_variants": len(labelled.notes),
        "sample": dg.MetadataValue.md(markdown_table(good.head(8).to_dicts(), ["subject", "task", "answer", "source"])
                                      if good.height else "no labels"),
        "refused_rows": dg.MetadataValue.md(markdown_table(table.filter(pl.col("error_class").is_not_null()).head(12).to_dicts(),
                                                           ["source", "line", "error_class", "error_message"])
                                            if by_class else "none"),
    })


# --- critic_training_set --------------------------------------------------------------------------------------------


class CriticTrainingSetConfig(dg.Config):
    label_partitions: list[str] = Field(
        default_factory=list, description="The label drops this run learns from (critic_training_sensor fills it in); "
                                          "empty: every materialized drop.")
    balance: str = Field(default="cap", description="none, cap or resample (training_set.BALANCE_MODES).")


def _label_rows(storage: CosmosStorage, partitions: set[str] | None) -> pl.DataFrame:
    labels = storage.store.read_partitions("critic_labels", partitions)
    return labels.filter(pl.col("error_class").is_null()) if labels.height else labels


@dg.asset(partitions_def=critic_training_runs, group_name=GROUP, kinds={"python", "parquet"}, owners=OWNERS,
          code_version="critic-set-1", tags=pod_class("cpu-light"),
          deps=[dg.AssetDep("critic_labels", partition_mapping=dg.AllPartitionMapping())])
def critic_training_set(context: dg.AssetExecutionContext, config: CriticTrainingSetConfig, storage: CosmosStorage,
                        critic_training: CriticTrainingSettings) -> dg.Output[pl.DataFrame]:
    """The labels of this run, each once, split by video (never one video on both sides), the training side
    balanced, exported in the Cosmos RL conversation format (SFT and GRPO files) beside the table."""
    partitions = set(config.label_partitions) or None
    labels = _label_rows(storage, partitions)
    if not labels.height:
        raise dg.Failure("no labels in the chosen label drops")
    rows = [label_files.LabelRow.from_record(r) for r in labels.to_dicts()]
    paths = dict(zip(labels["label_id"], labels["video_path"]))
    recipe = TrainingSetRecipe(test_fraction=critic_training.test_fraction, salt=critic_training.split_salt,
                               balance=config.balance)
    training_set = build_training_set(rows, recipe)
    root = f"{CRITIC}/training_sets/{training_set.version}"
    store = storage.store
    video_of = lambda row: store.local_path(paths[row.label_id]).as_posix()  # noqa: E731
    exported = {}
    for side, side_rows in (("train", training_set.train), ("test", training_set.test)):
        for mode in ("sft", "grpo"):
            key = f"{root}/{side}_{mode}.jsonl"
            if not store.exists(key):
                with store.writing(key) as tmp:
                    export_conversations(side_rows, video_of, tmp, mode)
            exported[f"{side}_{mode}"] = store.ref(key)
    table = pl.DataFrame([{**r, "choices": list(r["choices"]), "video_path": paths[r["label_id"]]}
                          for r in training_set.records()])
    summary = training_set.summary()
    duplicates = len(rows) - len({r.label_id for r in rows})
    context.log.info(f"critic training set {training_set.version}: {summary['train_rows']} train / {summary['test_rows']} test rows")
    return dg.Output(table, metadata={
        "training_set_version": training_set.version,
        "train_rows": summary["train_rows"], "test_rows": summary["test_rows"],
        "train_videos": summary["train_videos"], "test_videos": summary["test_videos"],
        "duplicate_labels": duplicates,
        "label_partitions": dg.MetadataValue.json(sorted(set(labels["label_partition"]))),
        "class_counts": dg.MetadataValue.json(summary["class_counts"]),
        "cosmos_rl_export": dg.MetadataValue.json(exported),
        "recipe": dg.MetadataValue.json(summary["recipe"]),
    })


# --- critic_checkpoint ----------------------------------------------------------------------------------------------


class CriticCheckpointConfig(config_from(FeatureCriticSettings, include=("epochs", "hidden", "learning_rate", "seed"))):
    """The feature critic's training (``FeatureCriticSettings``), and the Reason backend's LoRA SFT / GRPO lengths
    (``SFTSettings`` / ``GRPOSettings`` otherwise)."""

    sft_steps: Optional[int] = Field(default=None, description="Reason backend: LoRA SFT steps (unset: SFTSettings' 200).")
    sft_grad_accumulation: Optional[int] = Field(default=None, description="Reason backend: examples per SFT step (unset: 8).")


def _set_rows(storage: CosmosStorage, partition: str) -> tuple[dict, dict[str, str], str]:
    table = storage.store.read_parquet(table_key("critic_training_set", partition))
    return rows_by_side(table.to_dicts()), dict(zip(table["label_id"], table["video_path"])), table["version"][0]


def _log_every(context, what: str):
    def progress(step: int, total: int, loss: float) -> None:
        if step % 25 == 0 or step == total:
            context.log.info(f"{what} step {step}/{total}: loss {loss:.4f}")
    return progress


def _train_feature(context, store, config, key, train, paths, version):
    settings = config.to_dataclass(FeatureCriticSettings)
    examples, skipped = loop.feature_examples(store, train, paths, SelfSupervisedSettings())
    context.log.info(f"training the feature critic on {len(examples)} videos ({len(skipped)} rows say nothing about plausibility)")
    result = train_feature_critic(examples, settings, store.staging_path(f"{CRITIC}/runs/{key}"), training_set_version=version,
                                  progress=_log_every(context, "feature critic"))
    manifest = {"critic_version": result.identity["critic_version"], "training_set_version": version, "identity": result.identity,
                "steps": result.steps, "resumed_from": result.resumed_from, "random_weights": False}
    saved = checkpoints.write_checkpoint(store, key, "feature", result.path, manifest)
    details = {"examples": result.examples, "train_accuracy": result.train_accuracy,
               "feature_extractor": result.identity["feature_extractor"]}
    return saved, result.loss_curve, details


def _train_reason(context, store, config, vlm: VisionLanguageResource, grpo_steps: int, key, train, paths, version):
    base = vlm.checkpoint()
    overrides = {"steps": config.sft_steps, "grad_accumulation": config.sft_grad_accumulation}
    settings = SFTSettings(**{k: v for k, v in overrides.items() if v is not None})
    examples = loop.reason_examples(store, train, paths)
    context.log.info(f"LoRA SFT of {base.label} on {len(examples)} labelled videos ({settings.steps} steps)")
    result = train_reason_sft(base, examples, settings, store.staging_path(f"{CRITIC}/runs/{key}"),
                              device=vlm.torch_device(), dtype=vlm.torch_dtype(), training_set_version=version,
                              progress=lambda stats: stats.get("step", 0) % 25 == 0 and context.log.info(f"SFT {stats}"))
    adapter, curve, stage, details = Path(result.adapter_path), list(result.losses), "sft", {}
    if grpo_steps:  # GRPO on top of the SFT adapter: rewards 1 exact / 0.5 off by one, format, KL 0.05 to the base
        grpo = train_reason_grpo(base, examples, GRPOSettings(steps=grpo_steps), store.staging_path(f"{CRITIC}/runs/{key}/grpo"),
                                 init_adapter=adapter, device=vlm.torch_device(), dtype=vlm.torch_dtype(),
                                 training_set_version=version,
                                 progress=lambda stats: context.log.info(f"GRPO step {stats.get('step')}: reward {stats.get('reward_mean')}"))
        adapter, stage = Path(grpo.adapter_path), "sft+grpo"
        rewards = [float(s.get("reward_mean") or 0.0) for s in grpo.stats]
        details["grpo_reward_curve"] = dg.MetadataValue.md(markdown_image(
            encode_png(line_plot(rewards, "GRPO mean reward per step")), "GRPO reward curve", "image/png"))
    fingerprint = hashlib.sha256(adapter.read_bytes()).hexdigest()[:12]
    manifest = {"critic_version": f"{base.name}@{base.version}+{stage}-lora-{fingerprint}", "training_set_version": version,
                "base_model": base.label, "steps": result.steps, "resumed_from": result.resumed_from, "stage": stage,
                "random_weights": bool(base.tiny_random), "adapter_metadata": result.metadata}
    saved = checkpoints.write_checkpoint(store, key, "reason", adapter, manifest)
    details.update({"examples": len(examples), "base_model": base.label, "samples_per_s": round(result.samples_per_s, 3)})
    return saved, curve, details


@dg.asset(partitions_def=critic_training_runs, group_name=GROUP, pool="gpu", kinds={"pytorch", "safetensors"}, owners=OWNERS,
          code_version="critic-ckpt-1", tags=pod_class("gpu-train-2b"), deps=[critic_training_set])
def critic_checkpoint(context: dg.AssetExecutionContext, config: CriticCheckpointConfig, storage: CosmosStorage,
                      critic_training: CriticTrainingSettings, vlm: VisionLanguageResource) -> dg.Output[pl.DataFrame]:
    """The critic trained on this run's training side: the feature critic (laptop default) or a LoRA adapter of the
    Reason model; safetensors only, resumed from its last saved state after a crash, with its loss curve."""
    key, store = context.partition_key, storage.store
    sides, paths, version = _set_rows(storage, key)
    train = _train_reason if critic_training.backend == "reason" else _train_feature
    extra = (vlm, critic_training.grpo_steps) if critic_training.backend == "reason" else ()
    saved, curve, details = train(context, store, config, *extra, key, sides["train"], paths, version)
    manifest = saved.manifest
    row = pl.DataFrame([{"checkpoint": key, "backend": saved.backend, "path": str(saved.weights(store)),
                         "training_set_version": version, "critic_version": saved.critic_version, "steps": manifest["steps"],
                         "resumed_from": manifest["resumed_from"], "random_weights": manifest["random_weights"],
                         "final_loss": curve[-1] if curve else None}])
    picture = encode_png(line_plot(curve, f"{saved.backend} critic training loss"))
    return dg.Output(row, metadata={
        "checkpoint": key, "backend": saved.backend, "critic_version": saved.critic_version, "training_set_version": version,
        "steps": manifest["steps"], "resumed_from_step": manifest["resumed_from"], "random_weights": manifest["random_weights"],
        **({"label": TINY_LABEL} if manifest["random_weights"] else {}), **details,
        "loss_curve": dg.MetadataValue.md(markdown_image(picture, "loss curve", "image/png")),
    })


# --- critic_evaluation ----------------------------------------------------------------------------------------------


def _evaluation_rows(name: str, critic: str, result: metrics.CriticMetrics) -> list[dict]:
    return [{"model": name, "critic": critic, "measure": measure, "value": value, "support": result.support.get(metrics.support_key(measure))}
            for measure, value in sorted(result.measures.items())]


@dg.asset(partitions_def=critic_training_runs, group_name=GROUP, pool="gpu", kinds={"pytorch", "parquet"}, owners=OWNERS,
          code_version="critic-eval-1", tags=pod_class("gpu-reason-7b"), deps=[critic_checkpoint, critic_training_set])
def critic_evaluation(context: dg.AssetExecutionContext, storage: CosmosStorage, critic_training: CriticTrainingSettings,
                      vlm: VisionLanguageResource) -> dg.Output[pl.DataFrame]:
    """Base vs tuned on the held-out videos: exact and off-by-one accuracy and correlations for scores, accuracy for
    plausibility and per question type for VQA, parse failures, and a confusion matrix per task. The base is the
    critic promoted before this one (of the same backend), else the untuned one: the Reason model without the
    adapter, or for a first feature critic the untrained baseline (the most common training answer)."""
    key, store = context.partition_key, storage.store
    sides, paths, _ = _set_rows(storage, key)
    test = sides["test"]
    tuned_checkpoint = checkpoints.read_checkpoint(store, key)
    previous = checkpoints.promoted_critic(store)
    previous = previous if previous and previous.key != key and previous.backend == tuned_checkpoint.backend else None
    if tuned_checkpoint.backend == "reason":
        tuned_predictions, texts = loop.reason_predictions(vlm.tuned(tuned_checkpoint.weights(store)), store, test, paths)
        base_vlm = vlm.tuned(previous.weights(store)) if previous else vlm.get()
        base_name = f"promoted {previous.key}" if previous else f"{vlm.checkpoint().label} (no adapter)"
        base_predictions, _ = loop.reason_predictions(base_vlm, store, test, paths)
    else:
        window = SelfSupervisedSettings()
        tuned_predictions = loop.feature_predictions(load_feature_critic(tuned_checkpoint.weights(store)), store, test, paths, window)
        texts = []
        if previous:
            base_name = f"promoted {previous.key}"
            base_predictions = loop.feature_predictions(load_feature_critic(previous.weights(store)), store, test, paths, window)
        else:
            base_name = "majority answer (untrained)"
            base_predictions = loop.majority_predictions(sides["train"], test)
    tuned_result = metrics.evaluate_predictions(test, tuned_predictions)
    base_result = metrics.evaluate_predictions(test, base_predictions)
    comparison = metrics.compare(base_result, tuned_result, critic_training.promotion_margin)
    table = pl.DataFrame(_evaluation_rows("base", base_name, base_result)
                         + _evaluation_rows("tuned", tuned_checkpoint.critic_version, tuned_result),
                         schema={"model": pl.String, "critic": pl.String, "measure": pl.String, "value": pl.Float64, "support": pl.Int64})
    pictures = {task: markdown_image(encode_png(image), f"confusion matrix ({task})", "image/png")
                for task, image in metrics.confusion_pictures(tuned_result, "tuned: ").items()}
    random_weights = bool(tuned_checkpoint.manifest.get("random_weights"))
    return dg.Output(table, metadata={
        "base": base_name, "tuned": tuned_checkpoint.critic_version, "test_rows": len(test),
        "passed": comparison.passed, "failed_measures": dg.MetadataValue.json(comparison.failed_measures),
        "comparison": dg.MetadataValue.md(metrics.comparison_table(comparison)),
        "tuned_answers": dg.MetadataValue.json(metrics.answer_distribution(tuned_predictions)),
        "random_weights": random_weights, **({"label": TINY_LABEL} if random_weights else {}),
        **({"answer_examples": dg.MetadataValue.md(markdown_table(
            [{"subject": r.subject[:24], "task": r.task, "reference": r.answer, "answer": t[:160]} for r, t in zip(test[:6], texts)],
            ["subject", "task", "reference", "answer"]))} if texts else {}),
        **{f"confusion_matrix_{task}": dg.MetadataValue.md(md) for task, md in pictures.items()},
        **{f"tuned_{m}": v for m, v in tuned_result.measures.items() if "[" not in m},
    })


@dg.asset_check(asset=critic_evaluation, blocking=True,
                description="The tuned critic is no worse than its base on every measure by more than the margin.")
def critic_no_worse_than_base(context: dg.AssetCheckExecutionContext, storage: CosmosStorage,
                              critic_training: CriticTrainingSettings) -> dg.AssetCheckResult:
    partition = context.run.tags["dagster/partition"]
    table = storage.store.read_parquet(table_key("critic_evaluation", partition))
    values = {model: {r["measure"]: r["value"] for r in table.filter(pl.col("model") == model).to_dicts()} for model in ("base", "tuned")}
    comparison = metrics.compare(values["base"], values["tuned"], critic_training.promotion_margin)
    return dg.AssetCheckResult(passed=comparison.passed, metadata={
        "failed_measures": dg.MetadataValue.json(comparison.failed_measures),
        "margin": critic_training.promotion_margin, "checkpoint": partition,
        "comparison": dg.MetadataValue.md(metrics.comparison_table(comparison))})


# --- promoted_critic ------------------------------------------------------------------------------------------------


@dg.asset(partitions_def=critic_training_runs, group_name=GROUP, pool="collection", kinds={"python"}, owners=OWNERS,
          code_version="critic-promote-1", tags=pod_class("cpu-light"), deps=[critic_training_set, critic_checkpoint])
def promoted_critic(context: dg.AssetExecutionContext, storage: CosmosStorage, critic_evaluation: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Points the critic's PROMOTED.json at this checkpoint (reached only when the blocking check passed):
    ``critique_scores`` uses it from its next run on, and records its version on every row."""
    store = storage.store
    manifest = checkpoints.read_checkpoint(store, context.partition_key).manifest
    evidence = {model: {r["measure"]: r["value"] for r in critic_evaluation.filter(pl.col("model") == model).to_dicts()}
                for model in ("base", "tuned")}
    entry = registry.promote(store, context.partition_key, {"critic_version": manifest["critic_version"],
                                                            "backend": manifest["backend"], **evidence}, CRITIC_CHECKPOINTS)
    history = [{"checkpoint": h["checkpoint"], "promoted_at": h["promoted_at"],
                "critic_version": h["evidence"].get("critic_version")} for h in registry.history(store, CRITIC_CHECKPOINTS)]
    return dg.Output(pl.DataFrame(history), metadata={
        "promoted": entry["checkpoint"], "critic_version": manifest["critic_version"], "backend": manifest["backend"],
        "training_set_version": manifest["training_set_version"],
        "history": dg.MetadataValue.md(markdown_table(history, ["checkpoint", "promoted_at", "critic_version"])),
    })


critic_labels_job = dg.define_asset_job("critic_labels_job", selection=[critic_labels],
                                        description="Take one label drop: a landed label file, or self-supervised labels of a curated dataset version.")
critic_training_job = dg.define_asset_job(
    "critic_training_job", selection=[critic_training_set, critic_checkpoint, critic_evaluation, promoted_critic],
    description="Build the critic's training set from the label drops, train, evaluate against the base, promote if no worse.")
