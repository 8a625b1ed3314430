"""Text-to-image assets, one partition of ``generation_rounds`` per round (the video rounds' partitions):

    prompt_inbox/ file ─┐
    curated_dataset ────┴─> image_prompts ─> synthetic_images ─> image_critique_scores ─> accepted_images ─> image_detector_export

A round is a prompt file dropped in ``$COSMOS_HOME/prompt_inbox`` (``prompts-<content hash>``, started by
``text_to_image_sensor``), or, with the ``text_to_image`` resource's ``dataset_rounds`` on, a curated dataset
version's round (``round-<version>``: prompts from the clips' captions per condition). The logic lives in the plain
modules of this package (``prompts``, ``generation``, ``critique``, ``export``) and in ``synthetic.selection``.
"""

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Optional

import dagster as dg
import numpy as np
import polars as pl
from PIL import Image
from pydantic import Field

from cosmos_assets.common.artefacts import SYNTHETIC
from cosmos_assets.common.drop_zone import error_class, open_dropped_file
from cosmos_assets.common.files import display_name, remove_stale_temporaries, stable_id
from cosmos_assets.common.pictures import contact_sheet, encode_jpeg, encode_png, histogram, markdown_image, markdown_table, thumbnail_image
from cosmos_assets.common.pod_classes import pod_class
from cosmos_assets.models.image_generator import ImageDefaults
from cosmos_assets.synthetic import conditions
# The video rounds' partitions, and their helpers for a round's dataset version, typed tables and the tiny-weights
# label: image rounds follow the same rules, so they share the code rather than repeat it.
from cosmos_assets.synthetic.assets import (ROUND_PREFIX, AcceptanceBoundsConfig, AcceptanceConfig, _round_dataset, _table, _tiny_label,
                                           acceptance_rates_check, generation_rounds)
from cosmos_assets.synthetic.critics import trials_json
from cosmos_assets.synthetic.selection import check_rule, select
from cosmos_assets.text_to_image import prompts as prompt_sets
from cosmos_assets.text_to_image.critique import IMAGE_COMPONENTS, ImageCriticConfig, ImageMetricCritic, ImageReasonCritic
from cosmos_assets.text_to_image.export import MARKER, write_detector_export
from cosmos_assets.text_to_image.generation import CANDIDATES, candidate_id, generate_image_candidate
from resources import CosmosStorage, EmbedderResource, VisionLanguageResource
from resources.config import config_from
from resources.generator import ImageGeneratorResource
from resources.text_to_image import TextToImageSettings

GROUP = "text_to_image"
OWNERS = ["team:synthetic"]
PROMPT_FILES = f"{SYNTHETIC}/prompt_files"
EXPORTS = f"{SYNTHETIC}/image_exports"
SHEET_LIMIT = 24
# The image metric critic's scale: sharp, clean, well-exposed images score 0.95-1; blurred, noisy or blank ones
# under 0.6 (tests/test_text_to_image.py measures a real frame against its damaged versions). The VLM critics'
# thresholds mean the same as for videos.
IMAGE_THRESHOLDS = {"metric": 0.7, "reason": 0.5, "rubric": 0.75}

IMAGE_PROMPTS = {
    "request_id": pl.String, "round": pl.String, "origin": pl.String, "source": pl.String, "line": pl.Int64,
    "source_clip_id": pl.String, "condition": pl.String, "prompt": pl.String, "prompt_writer": pl.String,
    "negative_prompt": pl.String, "class_names": pl.List(pl.String), "seeds": pl.List(pl.Int64), "width": pl.Int64,
    "height": pl.Int64, "error_class": pl.String, "error_message": pl.String,
}
SYNTHETIC_IMAGES = {
    "candidate_id": pl.String, "request_id": pl.String, "round": pl.String, "origin": pl.String, "seed": pl.Int64,
    "condition": pl.String, "source_clip_id": pl.String, "prompt": pl.String, "negative_prompt": pl.String,
    "class_names": pl.List(pl.String), "backend": pl.String, "generator": pl.String, "model": pl.String,
    "model_version": pl.String, "checkpoint": pl.String, "settings": pl.String, "path": pl.String,
    "thumbnail_path": pl.String, "sha256": pl.String, "width": pl.Int64, "height": pl.Int64, "status": pl.String,
    "error_class": pl.String, "error_message": pl.String, "tiny_random": pl.Boolean, "label": pl.String, "reused": pl.Boolean,
}
IMAGE_CRITIQUE_SCORES = {
    "candidate_id": pl.String, "request_id": pl.String, "round": pl.String, "critic": pl.String, "critic_mode": pl.String,
    "critic_model": pl.String, "critic_version": pl.String, "critic_tiny_random": pl.Boolean, "score": pl.Float64,
    **{name: pl.Float64 for name in IMAGE_COMPONENTS}, "tags": pl.String, "rating_mean": pl.Float64,
    "trials_total": pl.Int64, "trials_parsed": pl.Int64, "parse_failures": pl.Int64, "trials": pl.String,
    "error_class": pl.String, "error_message": pl.String,
}
ACCEPTED_IMAGES = {
    "candidate_id": pl.String, "request_id": pl.String, "round": pl.String, "origin": pl.String, "condition": pl.String,
    "seed": pl.Int64, "source_clip_id": pl.String, "prompt": pl.String, "negative_prompt": pl.String,
    "class_names": pl.List(pl.String), "path": pl.String, "thumbnail_path": pl.String, "width": pl.Int64,
    "height": pl.Int64, "backend": pl.String, "model": pl.String, "model_version": pl.String, "checkpoint": pl.String,
    "critic": pl.String, "critic_version": pl.String, "score": pl.Float64, "accepted": pl.Boolean, "rank": pl.Int64,
    "decision": pl.String, "rule": pl.String, "threshold": pl.Float64, "trials_total": pl.Int64,
    "parse_failures": pl.Int64, "tiny_random": pl.Boolean,
}
IMAGE_DETECTOR_EXPORT = {
    "round": pl.String, "path": pl.String, "images": pl.Int64, "categories": pl.List(pl.String), "boxes": pl.Int64,
    "manifest_path": pl.String, "coco_path": pl.String, "yolo_data_path": pl.String, "tiny_random": pl.Boolean,
}


def is_prompt_file_round(partition: str) -> bool:
    return partition.startswith(prompt_sets.PROMPT_PARTITION_PREFIX)


def _sheet(storage: CosmosStorage, rows: list[dict], label, alt: str) -> str:
    """A contact sheet of candidates' thumbnails (at most ``SHEET_LIMIT``), each captioned by ``label(row)``."""
    shown = [r for r in rows if r.get("thumbnail_path")][:SHEET_LIMIT]
    if not shown:
        return "none"
    images = [thumbnail_image(storage.store, r["thumbnail_path"]) for r in shown]
    return markdown_image(encode_jpeg(contact_sheet(images, [label(r) for r in shown], columns=6, tile_width=128), quality=70), alt)


# --- image_prompts -----------------------------------------------------------------------------------------------


class ImagePromptsConfig(config_from(prompt_sets.PromptSettings)):
    """Where this round's prompts come from (a prompt file, or the curated clips' captions) and how rows become
    requests (``PromptSettings``)."""

    prompt_file_hex: Optional[str] = Field(
        default=None, description="The prompt file's path inside $COSMOS_HOME/prompt_inbox/, hex-encoded bytes "
                                  "(prompts-* rounds; text_to_image_sensor fills it in).")
    conditions: list[str] = Field(
        default=list(conditions.CONDITIONS),
        description=f"Curated rounds: conditions each caption is rewritten for, from: {', '.join(conditions.CONDITIONS)}.")
    class_names: list[str] = Field(
        default=[], description="Curated rounds: the classes a detector trained on these images should find "
                                "(recorded per image and named in the export's categories).")
    splits: list[str] = Field(default=["train"], description="Curated rounds: dataset splits whose clips give prompts.")
    max_clips: Optional[int] = Field(default=None, description="Curated rounds: at most this many clips; unset: all.")


def _image_size(image_generator: ImageGeneratorResource) -> tuple[int, int]:
    defaults = ImageDefaults()
    return image_generator.width or defaults.width, image_generator.height or defaults.height


def _request_row(request: prompt_sets.ImageRequest, partition: str, line: int | None = None) -> dict:
    return {**dataclasses.asdict(request), "round": partition, "line": line}


def _prompt_file_rows(context, config: ImagePromptsConfig, storage: CosmosStorage, settings, width: int, height: int):
    """The rows of the round's prompt file, checked against the content the round is named after."""
    if not config.prompt_file_hex:
        raise dg.Failure("MissingConfig: a prompts-* round needs prompt_file_hex (set by text_to_image_sensor)")
    relative = bytes.fromhex(config.prompt_file_hex)
    name = display_name(relative)
    try:
        with open_dropped_file(prompt_sets.prompt_inbox(storage.home), relative) as stream:
            data = stream.read(prompt_sets.MAX_PROMPT_FILE_BYTES + 1)
    except OSError as error:
        raise dg.Failure(f"{error_class(error)}: {name} cannot be read ({error})") from None
    digest = hashlib.sha256(data).hexdigest()
    if prompt_sets.prompt_partition(digest) != context.partition_key:
        raise dg.Failure(f"ChangedAfterLanding: {name} no longer has the content of {context.partition_key}; its new "
                         "content is taken as a new round")
    suffix = Path(name).suffix.lower()
    storage.store.write_bytes(f"{PROMPT_FILES}/{digest}{suffix}", data)  # the prompts as they landed
    parsed = prompt_sets.parse_prompt_file(data, name, settings.max_images_per_prompt)
    rows = []
    for row, request in prompt_sets.requests_from_rows(parsed, settings, width, height, name):
        if request is None:
            rows.append({"round": context.partition_key, "origin": "prompt_file", "source": f"{name}:{row.line}",
                         "line": row.line, "prompt": row.prompt, "error_class": row.error_class,
                         "error_message": row.error_message})
        else:
            rows.append(_request_row(request, context.partition_key, row.line))
    return rows, {"prompt_file": name, "sha256": digest}


def _caption_rows(context, config: ImagePromptsConfig, storage: CosmosStorage, settings, width: int, height: int):
    current = storage.store.read_table("curated_dataset")
    version, dataset = _round_dataset(storage, current if current is not None else pl.DataFrame(), context.partition_key)
    clips = dataset.filter(pl.col("split").is_in(config.splits)).sort("clip_id").to_dicts() if dataset.height else []
    clips = clips[: config.max_clips]
    requests = prompt_sets.requests_from_captions(clips, config.conditions, config.class_names, settings, width, height)
    return [_request_row(r, context.partition_key) for r in requests], {"dataset_version": version or "", "clips": len(clips)}


@dg.asset(partitions_def=generation_rounds, group_name=GROUP, kinds={"python", "parquet"}, owners=OWNERS,
          code_version="image-prompts-1", tags=pod_class("cpu-light"),
          # Captions come from the curated dataset, read from the store (a prompt-file round needs none).
          deps=[dg.AssetDep("curated_dataset")])
def image_prompts(context: dg.AssetExecutionContext, config: ImagePromptsConfig, storage: CosmosStorage,
                  image_generator: ImageGeneratorResource) -> dg.Output[pl.DataFrame]:
    """Text-to-image requests of one round: per prompt a negative prompt, N seeds, the image size and the class
    names a detector should find. From a dropped prompt file (JSONL / CSV; bad rows kept with their error class) or
    from the curated clips' captions rewritten per condition."""
    settings = config.to_dataclass()
    width, height = _image_size(image_generator)
    if is_prompt_file_round(context.partition_key):
        rows, facts = _prompt_file_rows(context, config, storage, settings, width, height)
    elif context.partition_key.startswith(ROUND_PREFIX):
        rows, facts = _caption_rows(context, config, storage, settings, width, height)
    else:
        raise dg.Failure(f"{context.partition_key}: image rounds are prompts-* (a prompt file) or round-* (a dataset)")
    table = _table(rows, IMAGE_PROMPTS)
    usable = table.filter(pl.col("error_class").is_null())
    bad = table.filter(pl.col("error_class").is_not_null())
    context.log.info(f"{usable.height} image request(s), {bad.height} bad row(s) in {context.partition_key}")
    return dg.Output(table, metadata={
        "requests": usable.height,
        "rows_with_errors": bad.height,
        "images_requested": int(usable["seeds"].list.len().sum() or 0) if usable.height else 0,
        "errors_by_class": dg.MetadataValue.json(dict(Counter(bad["error_class"].to_list()))),
        **{k: (dg.MetadataValue.text(v) if isinstance(v, str) else v) for k, v in facts.items()},
        "examples": dg.MetadataValue.md(markdown_table(
            [{**r, "prompt": (r["prompt"] or "")[:160]} for r in table.head(10).to_dicts()],
            ["source", "prompt", "seeds", "error_class"]) if table.height else "no prompts"),
    })


# --- synthetic_images --------------------------------------------------------------------------------------------


def _failed_row(base: dict, error_class_name: str, message: str) -> dict:
    return {**base, "status": "rejected", "error_class": error_class_name, "error_message": message[:500], "reused": False}


@dg.asset(partitions_def=generation_rounds, group_name=GROUP, pool="gpu", kinds={"pytorch", "parquet"}, owners=OWNERS,
          code_version="images-1", tags=pod_class("gpu-predict2-2b"))
def synthetic_images(context: dg.AssetExecutionContext, storage: CosmosStorage, image_generator: ImageGeneratorResource,
                     image_prompts: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """N candidate images per prompt from Cosmos-Predict2 Text2Image (PNG under artefacts/synthetic/images), each
    recording its request, prompt and negative prompt, seed, generator checkpoint and settings, like a synthetic
    video candidate. A failed generation is recorded with its error and the rest goes on."""
    store = storage.store
    remove_stale_temporaries(store.staging_path(CANDIDATES))
    todo = image_prompts.filter(pl.col("error_class").is_null()).to_dicts()
    rows = []
    generator = image_generator.get() if todo else None
    for number, request in enumerate(todo, start=1):
        for seed in request["seeds"]:
            try:
                rows.append(generate_image_candidate(generator, request, seed, store, context.partition_key))
            except (ValueError, RuntimeError) as error:  # this request's size or prompt; the others go on
                base = {key: request.get(key) for key in ("request_id", "origin", "condition", "source_clip_id", "prompt",
                                                          "negative_prompt", "class_names")}
                rows.append(_failed_row({**base, **generator.identity, "round": context.partition_key, "seed": seed,
                                         "candidate_id": candidate_id(request["request_id"], seed, generator.recipe())},
                                        "GenerationFailed", f"{error.__class__.__name__}: {error}"))
                context.log.warning(f"{request['request_id']} seed {seed}: {rows[-1]['error_message']}")
        context.log.info(f"[{number}/{len(todo)}] {len(request['seeds'])} image(s) of {request['prompt'][:60]!r}")
    table = _table(rows, SYNTHETIC_IMAGES)
    ok = table.filter(pl.col("status") == "ok")
    failures = Counter(table.filter(pl.col("status") != "ok")["error_class"].to_list())
    if table.height and not ok.height:
        raise dg.Failure(f"no image could be generated: {dict(failures)}")
    identity = generator.identity if generator else {}
    return dg.Output(table, metadata={
        "candidates": ok.height,
        "failed": table.height - ok.height,
        "failed_by_error_class": dg.MetadataValue.json(dict(failures)),
        "reused": int(ok["reused"].sum()) if ok.height else 0,
        "generator": identity.get("generator", ""),
        "generator_checkpoint": identity.get("checkpoint") or "",
        **_tiny_label(bool(ok["tiny_random"].any()) if ok.height else False),
        "candidate_sheet": dg.MetadataValue.md(_sheet(
            storage, ok.sort("request_id", "seed").to_dicts(),
            lambda r: f"seed {r['seed']}" + (" [tiny]" if r["tiny_random"] else ""), "candidates")),
    })


# --- image_critique_scores ---------------------------------------------------------------------------------------


class ImageCritiqueConfig(config_from(ImageCriticConfig)):
    """Which critic scores the images (``ImageCriticConfig``: the metric critic's knobs)."""

    critic: Optional[str] = Field(
        default=None, description="metric, reason or rubric; unset: the profile's (the `text_to_image` resource).")
    trials: Optional[int] = Field(
        default=None, description="K, the VLM critic's answers per image; unset: the `vlm` resource's critique settings.")
    batch_size: int = Field(default=4, description="Images per critic call.")


def _read_image(store, reference: str) -> np.ndarray:
    with Image.open(store.local_path(reference)) as image:
        return np.asarray(image.convert("RGB"))


def _critique_rows(context, store, critic, candidates: list[dict], batch_size: int) -> list[dict]:
    rows = []
    for start in range(0, len(candidates), batch_size):
        chunk, images = [], []
        for candidate in candidates[start:start + batch_size]:
            try:
                images.append(_read_image(store, candidate["path"]))
                chunk.append(candidate)
            except (OSError, ValueError) as error:
                rows.append({"candidate_id": candidate["candidate_id"], "error_class": "UndecodableCandidate",
                             "error_message": f"{error.__class__.__name__}: {error}"[:500]})
        if not images:
            continue
        if isinstance(critic, ImageMetricCritic):
            for candidate, result in zip(chunk, critic.score(images, [c["prompt"] for c in chunk])):
                rows.append({"candidate_id": candidate["candidate_id"], "score": result.score, **result.components(),
                             "tags": json.dumps(result.tags) if result.tags else None, "trials_total": 0,
                             "trials_parsed": 0, "parse_failures": 0})
        else:
            for candidate, critique in zip(chunk, critic.critique(images)):
                rows.append({"candidate_id": candidate["candidate_id"], "score": critique.score,
                             "rating_mean": critique.rating_mean, "trials_total": len(critique.trials),
                             "trials_parsed": critique.parsed, "parse_failures": critique.parse_failures,
                             "trials": trials_json(critique.trials)})
        context.log.info(f"critiqued {min(start + batch_size, len(candidates))}/{len(candidates)}")
    return rows


@dg.asset(partitions_def=generation_rounds, group_name=GROUP, pool="gpu", kinds={"pytorch", "parquet"}, owners=OWNERS,
          code_version="image-critique-1", tags=pod_class("gpu-reason-7b"))
def image_critique_scores(context: dg.AssetExecutionContext, config: ImageCritiqueConfig, storage: CosmosStorage,
                          text_to_image: TextToImageSettings, vlm: VisionLanguageResource, embedders: EmbedderResource,
                          synthetic_images: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """A score in [0, 1] per candidate image: the metric critic's image mode (sharpness, exposure, noise, and the
    agreement of ImageNet tags with the prompt), or the Reason critic's image mode (share of "no anomaly" over K
    trials, or its 1-5 rubric), with every trial's text, parse failures counted and the critic's version per row."""
    mode = config.critic or text_to_image.critic
    if mode == "metric":
        critic = ImageMetricCritic(config.to_dataclass(), embedders.video_signals(), embedders.text())
    elif mode in ("reason", "rubric"):
        settings = vlm.critique.settings()
        critic = ImageReasonCritic(vlm.get(), dataclasses.replace(settings, trials=config.trials) if config.trials else settings, mode)
    else:
        raise dg.Failure(f"critic {mode!r}; expected metric, reason or rubric")
    candidates = synthetic_images.filter(pl.col("status") == "ok").to_dicts()
    scored = _critique_rows(context, storage.store, critic, candidates, config.batch_size)
    identity = critic.identity
    by_id = {c["candidate_id"]: c for c in candidates}
    rows = [{"request_id": by_id[r["candidate_id"]]["request_id"], "round": context.partition_key,
             "critic": identity["critic"], "critic_mode": mode, "critic_model": identity["critic_model"],
             "critic_version": identity["critic_version"], "critic_tiny_random": identity["tiny_random"], **r} for r in scored]
    table = _table(rows, IMAGE_CRITIQUE_SCORES)
    scores = table["score"].drop_nulls()
    trials, failures = int(table["trials_total"].sum() or 0), int(table["parse_failures"].sum() or 0)
    return dg.Output(table, metadata={
        "critiqued": table.height,
        "unscored": table.height - scores.len(),
        "critic": identity["critic"],
        "critic_version": identity["critic_version"],
        "parse_failure_rate": round(failures / trials, 4) if trials else 0.0,
        "mean_score": round(float(scores.mean()), 4) if scores.len() else 0.0,
        **_tiny_label(bool(identity["tiny_random"])),
        "score_histogram": dg.MetadataValue.md(markdown_image(
            encode_png(histogram(scores.to_list(), f"image {mode} critic score", threshold=IMAGE_THRESHOLDS[mode])),
            "score histogram", "image/png")),
    })


# --- accepted_images ---------------------------------------------------------------------------------------------


class ImageAcceptanceConfig(AcceptanceConfig):
    """Which critiqued images are accepted: the rules of ``accepted_videos`` (an image is a candidate, a prompt its
    request), with the image critics' default thresholds."""

    threshold: Optional[float] = Field(
        default=None, description="Least critic score (0..1) to accept; unset: the critic's default "
                                  f"({', '.join(f'{k} {v}' for k, v in IMAGE_THRESHOLDS.items())}).")


@dg.asset(partitions_def=generation_rounds, group_name=GROUP, kinds={"python", "parquet"}, owners=OWNERS,
          code_version="image-selection-1", tags=pod_class("cpu-light"))
def accepted_images(context: dg.AssetExecutionContext, config: ImageAcceptanceConfig, storage: CosmosStorage,
                    synthetic_images: pl.DataFrame, image_critique_scores: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Best-of-N over each prompt's images by the configured rule (the same selection as for videos): every
    candidate with `accepted`, its rank and the decision behind it; the acceptance rate."""
    rule = check_rule(config.rule)
    modes = set(image_critique_scores["critic_mode"].drop_nulls())
    mode = modes.pop() if len(modes) == 1 else "metric"
    threshold = config.threshold if config.threshold is not None else IMAGE_THRESHOLDS[mode]
    joined = synthetic_images.join(
        image_critique_scores.select("candidate_id", "critic", "critic_version", "critic_tiny_random", "score",
                                     "trials_total", "parse_failures", pl.col("error_class").alias("critique_error")),
        on="candidate_id", how="left").to_dicts()
    decisions = select([{"candidate_id": r["candidate_id"], "request_id": r["request_id"], "score": r["score"],
                         "usable": r["status"] == "ok" and r["critique_error"] is None} for r in joined], rule, threshold)
    rows = [{**r, "accepted": decisions[r["candidate_id"]].accepted, "rank": decisions[r["candidate_id"]].rank,
             "decision": decisions[r["candidate_id"]].reason or "accepted", "rule": rule, "threshold": threshold,
             "tiny_random": bool(r["tiny_random"] or r["critic_tiny_random"])} for r in joined]
    table = _table(rows, ACCEPTED_IMAGES)
    judged = table.filter(pl.col("decision") != "bad_input")
    accepted = table.filter(pl.col("accepted"))
    context.log.info(f"accepted {accepted.height} of {judged.height} judged images ({rule}, threshold {threshold})")
    label = lambda r: f"{'OK' if r['accepted'] else 'NO'} " + (f"{r['score']:.2f}" if r["score"] is not None else r["decision"])  # noqa: E731
    return dg.Output(table, metadata={
        "accepted": accepted.height,
        "judged": judged.height,
        "acceptance_rate": round(accepted.height / judged.height, 4) if judged.height else 0.0,
        "decisions": dg.MetadataValue.json(dict(Counter(table["decision"].to_list()))),
        "rule": rule,
        "threshold": float(threshold),
        **_tiny_label(bool(table["tiny_random"].any()) if table.height else False),
        "score_histogram": dg.MetadataValue.md(markdown_image(
            encode_png(histogram(judged["score"].drop_nulls().to_list(), f"image {mode} critic score", threshold=threshold)),
            "score histogram", "image/png")),
        "accepted_images": dg.MetadataValue.md(_sheet(storage, accepted.to_dicts(), label, "accepted")),
        "rejected_images": dg.MetadataValue.md(_sheet(storage, table.filter(~pl.col("accepted")).to_dicts(), label, "rejected")),
    })


# --- image_detector_export ---------------------------------------------------------------------------------------


@dg.asset(partitions_def=generation_rounds, group_name=GROUP, kinds={"python", "parquet"}, owners=OWNERS,
          code_version="detector-export-1", tags=pod_class("cpu-light"))
def image_detector_export(context: dg.AssetExecutionContext, storage: CosmosStorage,
                          accepted_images: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """The round's accepted images in the layouts detector training reads: COCO `annotations.json` (images and
    categories, no boxes) and YOLO `images/` + empty `labels/` + `data.yaml`, with a manifest of prompts, seeds and
    scores and a README. Provided: images, prompts, seeds, scores, class names. Not provided: boxes, the detector."""
    store = storage.store
    rows = accepted_images.filter(pl.col("accepted")).to_dicts()
    content = stable_id("image-detector-export", sorted((r["candidate_id"], r["score"]) for r in rows))
    key = f"{EXPORTS}/{context.partition_key}/{content}"
    if store.exists(f"{key}/{MARKER}"):
        summary = store.read_json(f"{key}/{MARKER}")  # the same accepted images were exported before
    else:
        with store.folder(key, MARKER) as folder:
            summary = write_detector_export(folder, rows, store.local_path, context.partition_key)
    row = {"round": context.partition_key, "path": store.ref(key), "images": summary["images"],
           "categories": summary["categories"], "boxes": 0, "manifest_path": store.ref(f"{key}/manifest.jsonl"),
           "coco_path": store.ref(f"{key}/annotations.json"), "yolo_data_path": store.ref(f"{key}/data.yaml"),
           "tiny_random": summary["tiny_random"]}
    context.log.info(f"exported {summary['images']} image(s) to {row['path']}")
    return dg.Output(_table([row], IMAGE_DETECTOR_EXPORT), metadata={
        "images": summary["images"],
        "categories": dg.MetadataValue.json(summary["categories"]),
        "boxes": 0,
        "export_path": dg.MetadataValue.path(row["path"]),
        "you_bring": dg.MetadataValue.md("**Boxes** (label the images, or pre-label with your own detector and check), "
                                         "class names where the prompts named none, and the detector's training. "
                                         "See README.md in the export."),
        **_tiny_label(summary["tiny_random"]),
    })


@dg.asset_check(asset=accepted_images, blocking=True, partitions_def=generation_rounds,
                description="Stops the detector export of a round whose image critic's parse-failure rate or acceptance "
                            "rate is outside the configured bounds (the same bounds as the video rounds).")
def accepted_images_rates_in_bounds(config: AcceptanceBoundsConfig, accepted_images: pl.DataFrame) -> dg.AssetCheckResult:
    return acceptance_rates_check(config, accepted_images)


text_to_image_job = dg.define_asset_job(
    "text_to_image_job",
    selection=[image_prompts, synthetic_images, image_critique_scores, accepted_images, image_detector_export],
    description="One text-to-image round: prompts, N Predict2 Text2Image candidates per prompt, image critique, "
                "best-of-N and the detector export.",
)
