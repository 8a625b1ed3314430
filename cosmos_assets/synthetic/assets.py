"""Synthetic data assets, one partition of ``generation_rounds`` per round or inbox batch:
generation_prompts → synthetic_videos → critique_scores → accepted_videos (with a blocking rate check).

A round (``round-<dataset version>``) is created by ``generation_round_sensor`` when a new curated dataset
version exists; an inbox batch (``inbox-NNNNNN-<digest>``) by ``synthetic_batch_sensor`` when an external
generator drops candidates with a manifest. The logic is in the plain modules of this package.
"""

import dataclasses
import json
from collections import Counter, defaultdict
from typing import Optional

import dagster as dg
import numpy as np
import polars as pl

from cosmos_assets.common.artefacts import DATASETS, SYNTHETIC, table_key
from cosmos_assets.common.files import remove_stale_temporaries, stable_id
from cosmos_assets.common.pictures import (
    contact_sheet,
    encode_jpeg,
    encode_png,
    histogram,
    markdown_image,
    markdown_table,
    thumbnail_image,
)
from cosmos_assets.common.pod_classes import pod_class
from cosmos_assets.common.drop_zone import OutsideDropZone
from cosmos_assets.critic_training import checkpoints as critic_checkpoints
from cosmos_assets.critic_training.feature_critic import load_feature_critic
from cosmos_assets.curation import scenes
from cosmos_assets.curation.probe import VideoRejected
from cosmos_assets.models.checkpoints import TINY_LABEL
from cosmos_assets.models.cosmos3 import COSMOS3_CRITIC, ReasonerSizing, open_reasoner
from cosmos_assets.models.frames import sample_frames
from cosmos_assets.synthetic import conditions as prompts
from cosmos_assets.synthetic.critics import (
    METRIC_COMPONENTS, MetricCritic, MetricCriticConfig, ReasonCritic, align_source, trials_json,
)
from cosmos_assets.synthetic.generation import candidate_id, generate_candidate, open_backend, request_geometry_of
from cosmos_assets.controls.clip_controls import (
    CONTROL_RECIPES, control_weights, profile_recipe, request_control_frames, round_controls,
)
from cosmos_assets.controls.fidelity import ControlFidelity
from cosmos_assets.models.catalog import TRANSFER25
from cosmos_assets.common.drop_zone import member_path
from cosmos_assets.synthetic.inbox import INBOX_PREFIX, InboxLedger, ManifestInvalid, ingest_file, parse_manifest
from cosmos_assets.synthetic import multiview
from cosmos_assets.synthetic.selection import DEFAULT_THRESHOLDS, check_rule, select_scenes
from cosmos_assets.synthetic.video import (
    at_most, control_video, middle_frame, read_video, read_window, request_geometry, video_size, write_jpeg, write_mp4,
)
from pydantic import Field
from resources import CosmosStorage, VisionLanguageResource
from resources.config import config_from
from resources.generator import VideoGeneratorResource
from resources.synthetic import SyntheticSettings

GROUP = "synthetic"
OWNERS = ["team:synthetic"]
ROUND_PREFIX = "round-"
DATASET_ROUND_PREFIX = ROUND_PREFIX + "ds-"  # round-<dataset version>: rounds the sensor starts
SHEET_ROWS = 6

generation_rounds = dg.DynamicPartitionsDefinition(name="generation_rounds")

SCENE_SCHEMA = {
    "scene_id": pl.String, "camera": pl.String, "scene_clip_id": pl.String,
    # Cross-view consistency of the scene candidate a view belongs to (synthetic.multiview): its worst camera pair's
    # median Sampson distance under the source's geometry, share of matches under the threshold, and generated /
    # source match count; every pair as JSON.
    "cross_view_sampson_px": pl.Float64, "cross_view_share_under_threshold": pl.Float64,
    "cross_view_match_ratio": pl.Float64, "cross_view_pairs": pl.String,
}
GENERATION_PROMPTS = {
    "request_id": pl.String, "round": pl.String, "origin": pl.String, "dataset_version": pl.String,
    "source_clip_id": pl.String, "source_name": pl.String, "source_path": pl.String, "source_start_s": pl.Float64,
    "source_thumbnail_path": pl.String, "control_paths": pl.String, "condition": pl.String, "prompt": pl.String,
    "prompt_writer": pl.String, "prompt_status": pl.String, "negative_prompt": pl.String, "controls": pl.String,
    "seeds": pl.List(pl.Int64), "width": pl.Int64, "height": pl.Int64, "fps": pl.Int64, "num_frames": pl.Int64,
    "tiny_random": pl.Boolean, "error_class": pl.String, "error_message": pl.String,
    "scene_id": pl.String, "camera": pl.String, "scene_clip_id": pl.String,  # multi-camera scenes: every view of a scene clip gets one prompt and the same seeds
}
SYNTHETIC_VIDEOS = {
    "candidate_id": pl.String, "request_id": pl.String, "round": pl.String, "origin": pl.String, "seed": pl.Int64,
    "condition": pl.String, "source_clip_id": pl.String, "prompt": pl.String, "backend": pl.String,
    "generator": pl.String, "model": pl.String, "model_version": pl.String, "checkpoint": pl.String,
    "controls": pl.String, "settings": pl.String, "path": pl.String, "thumbnail_path": pl.String, "sha256": pl.String,
    "width": pl.Int64, "height": pl.Int64, "fps": pl.Float64, "frames": pl.Int64, "status": pl.String,
    "error_class": pl.String, "error_message": pl.String, "tiny_random": pl.Boolean, "label": pl.String, "reused": pl.Boolean,
    "scene_id": pl.String, "camera": pl.String, "scene_clip_id": pl.String,
}
CRITIQUE_SCORES = {
    "candidate_id": pl.String, "request_id": pl.String, "round": pl.String, "condition": pl.String, "critic": pl.String,
    "critic_mode": pl.String, "critic_model": pl.String, "critic_version": pl.String, "critic_tiny_random": pl.Boolean,
    "score": pl.Float64, **{name: pl.Float64 for name in METRIC_COMPONENTS}, "rating_mean": pl.Float64,
    "depth_si_rmse": pl.Float64, "seg_miou": pl.Float64, "control_fidelity": pl.String,
    "trials_total": pl.Int64, "trials_parsed": pl.Int64, "parse_failures": pl.Int64, "trials": pl.String,
    "error_class": pl.String, "error_message": pl.String,
    **SCENE_SCHEMA,
}
ACCEPTED_VIDEOS = {
    "candidate_id": pl.String, "request_id": pl.String, "round": pl.String, "origin": pl.String, "condition": pl.String,
    "seed": pl.Int64, "source_clip_id": pl.String, "prompt": pl.String, "path": pl.String, "thumbnail_path": pl.String,
    "backend": pl.String, "model": pl.String, "model_version": pl.String, "critic": pl.String,
    "critic_version": pl.String, "score": pl.Float64, "accepted": pl.Boolean, "rank": pl.Int64, "decision": pl.String,
    "rule": pl.String, "threshold": pl.Float64, "trials_total": pl.Int64, "parse_failures": pl.Int64,
    "tiny_random": pl.Boolean, **SCENE_SCHEMA,
}


def _table(rows: list[dict], schema: dict) -> pl.DataFrame:
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)


def is_inbox_batch(partition: str) -> bool:
    return partition.startswith(INBOX_PREFIX)


def round_key(dataset_version: str) -> str:
    return f"{ROUND_PREFIX}{dataset_version}"


def _tiny_label(tiny: bool) -> dict:
    """Metadata that makes outputs of tiny random-weight models visible as such in the UI."""
    return {"tiny_random_weights": tiny,
            "label": dg.MetadataValue.md(f"**{TINY_LABEL}**: made with a tiny random-weight model" if tiny else "real models")}


# --- generation_prompts ----------------------------------------------------------------------------------


class GenerationPromptsConfig(dg.Config):
    """Which clips of the dataset get synthetic variants, under which conditions, and how the prompts are written."""

    conditions: list[str] = Field(
        default=list(prompts.CONDITIONS),
        description=f"Conditions each source window is rendered under, from: {', '.join(prompts.CONDITIONS)}.")
    seeds_per_request: int = Field(
        default=2, description="Candidates per request (N of best-of-N: one seed each; the best is accepted).")
    base_seed: int = Field(default=0, description="Seeds of a request are base_seed, base_seed + 1, ...")
    splits: list[str] = Field(
        default=["train"], description="Dataset splits whose clips are sources (validation clips stay unseen by training).")
    max_clips: Optional[int] = Field(default=None, description="At most this many source clips per round; unset: all.")
    skip_clips_in_earlier_rounds: bool = Field(
        default=True, description="A new dataset version generates for its new clips only, not again for every clip.")
    max_width: Optional[int] = Field(
        default=None, description="Candidate width in pixels; unset: the profile's (the `synthetic` resource).")
    seconds: Optional[float] = Field(
        default=None, description="Candidate length in seconds; unset: the profile's (the `synthetic` resource).")
    fps: Optional[int] = Field(
        default=None, description="Candidate frames per second; unset: the profile's (the `synthetic` resource).")
    control_inputs: list[str] = Field(
        default=["edge", "blur"], description="Control videos derived from each source window (edge, blur).")
    transfer_control: str = Field(
        default="edge", description="The one control Transfer 2.5 is conditioned on when the recipe is single.")
    transfer_control_weight: float = Field(default=0.9, description="Weight (0..1) of the Transfer 2.5 control.")
    control_recipe: Optional[str] = Field(
        default=None, description=f"Several controls at once, from the cookbook: {', '.join(f'{k} ({v})' for k, v in CONTROL_RECIPES.items())}, "
                                  "or single (transfer_control alone at transfer_control_weight); unset: the profile's "
                                  "(weather on gpu / k8s, single on local).")
    control_weights: Optional[dict[str, float]] = Field(
        default=None, description="Control -> weight (e.g. {depth: 0.9, seg: 0.9}); wins over control_recipe.")
    prompt_writer: str = Field(
        default="auto", description="template: prompts from templates; vlm: written by the `vlm` resource; auto: the "
                                    "VLM when it is an endpoint, else templates.")
    negative_prompt: str = Field(default=prompts.DEFAULT_NEGATIVE_PROMPT,
                                 description="What the generator is steered away from.")


def _round_dataset(storage: CosmosStorage, curated_dataset: pl.DataFrame, partition: str) -> tuple[str, pl.DataFrame]:
    """The dataset version a round was made for: the current table, or the version's export on the store."""
    current = curated_dataset["dataset_version"][0] if curated_dataset.height else None
    if not partition.startswith(DATASET_ROUND_PREFIX) or partition[len(ROUND_PREFIX):] == current:
        return current, curated_dataset  # a round added by hand uses the current version
    version = partition[len(ROUND_PREFIX):]
    store = storage.store
    members = f"{DATASETS}/{version}/members.parquet"
    if not store.exists(members):
        raise dg.Failure(f"round {partition}: dataset version {version} is neither current nor exported at "
                         f"{store.ref(f'{DATASETS}/{version}')}")
    return version, store.read_parquet(members)


def _clips_in_other_rounds(storage: CosmosStorage, partition: str) -> set[str]:
    store = storage.store
    clips: set[str] = set()
    for other in store.table_partitions("generation_prompts"):
        if other.startswith(ROUND_PREFIX) and other != partition:
            table = store.read_parquet(table_key("generation_prompts", other), columns=["source_clip_id"])
            clips |= set(table["source_clip_id"].drop_nulls())
    return clips


@dataclasses.dataclass
class _SourceWindow:
    clip: dict
    geometry: object
    start_s: float
    frames: np.ndarray
    thumbnail_path: str
    control_paths: dict


def _source_window(storage: CosmosStorage, clip: dict, config: GenerationPromptsConfig, synthetic: SyntheticSettings,
                   start_s: float = 0.0) -> _SourceWindow:
    """The part of a clip requests are made from, at request size, with its thumbnail and control videos stored."""
    store = storage.store
    clip_file = store.local_path(clip["path"])
    width, height = video_size(clip_file)
    duration = max(0.0, (clip["end_s"] - clip["start_s"]) - start_s)
    geometry = request_geometry(width, height, duration, config.max_width or synthetic.max_width,
                                config.fps or synthetic.fps, config.seconds or synthetic.seconds)
    frames = read_window(clip_file, geometry, start_s)
    window = stable_id("source-window", clip["clip_id"], start_s, sorted(geometry.as_dict().items()))
    folder = f"{SYNTHETIC}/sources/{window[:2]}/{window}"
    thumbnail = f"{folder}/thumbnail.jpg"
    if not store.exists(thumbnail):
        with store.writing(thumbnail) as tmp:
            write_jpeg(tmp, middle_frame(frames))
    control_paths = {}
    for control in config.control_inputs:
        key = f"{folder}/{control}.mp4"
        if not store.exists(key):
            with store.writing(key) as tmp:
                write_mp4(tmp, control_video(frames, control), geometry.fps)
        control_paths[control] = store.ref(key)
    return _SourceWindow(clip, geometry, start_s, frames, store.ref(thumbnail), control_paths)


def _use_vlm_writer(config: GenerationPromptsConfig, vlm: VisionLanguageResource) -> bool:
    if config.prompt_writer not in ("auto", "template", "vlm"):
        raise dg.Failure(f"prompt_writer {config.prompt_writer!r}; expected auto, template or vlm")
    return config.prompt_writer == "vlm" or (config.prompt_writer == "auto" and vlm.backend == "endpoint")


def _request_row(window: _SourceWindow, partition: str, dataset_version: str | None, condition: str, written,
                 negative: str, controls: dict, seeds: list[int], origin: str, tiny: bool) -> dict:
    clip = window.clip
    geometry = window.geometry.as_dict()
    return {
        "request_id": prompts.request_id(clip["clip_id"], condition, written.prompt, negative, {**geometry, "start_s": window.start_s},
                                         controls),
        "round": partition, "origin": origin, "dataset_version": dataset_version, "source_clip_id": clip["clip_id"],
        "source_name": clip.get("source_name"), "source_path": clip["path"], "source_start_s": window.start_s,
        "source_thumbnail_path": window.thumbnail_path, "control_paths": json.dumps(window.control_paths),
        "condition": condition, "prompt": written.prompt, "prompt_writer": written.writer, "prompt_status": written.status,
        "negative_prompt": negative, "controls": json.dumps(controls), "seeds": seeds, **geometry,
        "tiny_random": tiny and written.status == "rewritten", **{k: clip.get(k) for k in scenes.SCENE_COLUMNS},
    }


def _round_requests(context, config, storage, synthetic, vlm, curated_dataset) -> tuple[list[dict], dict]:
    partition = context.partition_key
    version, dataset = _round_dataset(storage, curated_dataset, partition)
    conditions = prompts.check_conditions(config.conditions)
    clips = dataset.filter(pl.col("split").is_in(config.splits)).sort("clip_id").to_dicts() if dataset.height else []
    earlier = _clips_in_other_rounds(storage, partition) if config.skip_clips_in_earlier_rounds else set()
    skipped = sum(c["clip_id"] in earlier for c in clips)
    clips = scenes.first_units([c for c in clips if c["clip_id"] not in earlier], config.max_clips)
    windows = []
    for number, clip in enumerate(clips, start=1):
        windows.append(_source_window(storage, clip, config, synthetic))
        context.log.info(f"[{number}/{len(clips)}] source window of {clip['clip_id']} ({clip.get('source_name')})")
    items = [(window, condition) for window in windows for condition in conditions]
    tiny = False
    if _use_vlm_writer(config, vlm) and items:
        model = vlm.get()
        tiny = bool(model.identity["tiny_random"])
        written = prompts.rewrite_prompts(
            model, [(w.frames[:: max(1, w.geometry.fps // 2)][:8], 2.0, w.clip.get("caption"), c) for w, c in items],
            vlm.caption.settings())
    else:
        written = [prompts.templated(w.clip.get("caption"), c) for w, c in items]
    # Every view of a scene clip is generated from one prompt (its first view's), so the views show one world.
    written = scenes.shared_per_scene_clip([(w.clip.get("scene_clip_id"), c) for w, c in items], written)
    seeds = [config.base_seed + i for i in range(config.seeds_per_request)]
    controls = control_weights(config.control_recipe or profile_recipe(), config.control_weights,
                               config.transfer_control, config.transfer_control_weight)
    rows = [_request_row(w, partition, version, c, text, prompts.negative_prompt(config.negative_prompt, c), controls,
                         seeds, "generated", tiny)
            for (w, c), text in zip(items, written)]
    return rows, {"dataset_version": version or "", "clips": len(windows), "clips_in_earlier_rounds": skipped}


def _inbox_requests(context, config, storage, synthetic, curated_dataset) -> tuple[list[dict], dict]:
    """The requests an inbox manifest names, with the source windows of their clips (known clips only)."""
    batch = InboxLedger(storage.paths.synthetic_inbox_ledger).batch(context.partition_key)
    if batch.problem or batch.manifest_bytes is None:
        return [], {"manifest": batch.manifest_name, "manifest_problem": batch.problem or ""}
    try:
        manifest = parse_manifest(batch.manifest_bytes)
    except ManifestInvalid as error:
        return [], {"manifest": batch.manifest_name, "manifest_problem": f"ManifestInvalid: {error}"}
    clips = {c["clip_id"]: c for c in curated_dataset.to_dicts()}
    grouped: dict[str, list] = defaultdict(list)
    for entry in manifest.entries:
        if entry.error_class is None:
            grouped[entry.request_id].append(entry)
    rows = []
    version = curated_dataset["dataset_version"][0] if curated_dataset.height else None
    for request, entries in grouped.items():
        first = entries[0]
        seeds = sorted({e.seed for e in entries})
        clip = clips.get(first.source_clip_id)
        if clip is None:
            rows.append({"request_id": request, "round": context.partition_key, "origin": "external",
                         "source_clip_id": first.source_clip_id, "condition": first.condition, "prompt": first.prompt,
                         "seeds": seeds, "tiny_random": False, "error_class": "UnknownSourceClip",
                         "error_message": f"source clip {first.source_clip_id!r} is not in the curated dataset"})
            continue
        window = _source_window(storage, clip, config, synthetic, first.source_start_s)
        written = prompts.WrittenPrompt(first.prompt or "", manifest.generator, "external")
        row = _request_row(window, context.partition_key, version, first.condition or "", written, "", {}, seeds, "external", False)
        rows.append({**row, "request_id": request})  # the external generator's own request id
    return rows, {"manifest": batch.manifest_name, "generator": manifest.generator}


@dg.asset(partitions_def=generation_rounds, group_name=GROUP, kinds={"python", "parquet"}, owners=OWNERS, code_version="prompts-2",  # 2: one prompt per scene clip
          tags=pod_class("cpu-light"))
def generation_prompts(
    context: dg.AssetExecutionContext, config: GenerationPromptsConfig, storage: CosmosStorage,
    synthetic: SyntheticSettings, vlm: VisionLanguageResource, curated_dataset: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Generation requests of one round: per curated training clip and augmentation condition, a prompt
    (rewritten from the caption by the VLM endpoint, or from a template), a negative prompt, N seeds, the
    source window at candidate size and control videos derived from it (edges, blur). For an inbox batch:
    the requests its manifest names."""
    remove_stale_temporaries(storage.store.staging_path(f"{SYNTHETIC}/sources"))
    if is_inbox_batch(context.partition_key):
        rows, facts = _inbox_requests(context, config, storage, synthetic, curated_dataset)
    else:
        rows, facts = _round_requests(context, config, storage, synthetic, vlm, curated_dataset)
    table = _table(rows, GENERATION_PROMPTS)
    usable = table.filter(pl.col("error_class").is_null())
    statuses = Counter(usable["prompt_status"].to_list())
    context.log.info(f"{usable.height} request(s) in {context.partition_key}" + (f"; prompts: {dict(statuses)}" if statuses else ""))
    examples = usable.head(8).select("condition", "prompt_status", "prompt").to_dicts()
    return dg.Output(table, metadata={
        "requests": usable.height,
        "requests_with_errors": table.height - usable.height,
        "seeds_per_request": config.seeds_per_request if not is_inbox_batch(context.partition_key) else 0,
        "prompt_status": dg.MetadataValue.json(dict(statuses)),
        **{k: (dg.MetadataValue.text(v) if isinstance(v, str) else v) for k, v in facts.items()},
        **_tiny_label(bool(table["tiny_random"].any()) if table.height else False),
        "examples": dg.MetadataValue.md(markdown_table([{**e, "prompt": e["prompt"][:200]} for e in examples],
                                                  ["condition", "prompt_status", "prompt"]) if examples else "no requests"),
    })


# --- synthetic_videos ------------------------------------------------------------------------------------


class SyntheticVideosConfig(dg.Config):
    """Which backend makes this round's candidates."""

    backend: Optional[str] = Field(
        default=None, description="classical (CPU augmentation) or generator (the `generator` resource); unset: the "
                                  "profile's (the `synthetic` resource).")


def _failed_row(base: dict, error_class: str, message: str) -> dict:
    return {**base, "status": "rejected", "error_class": error_class, "error_message": message[:500], "tiny_random": False,
            "reused": False}


def _generate_round(context, storage, backend, requests: pl.DataFrame) -> list[dict]:
    store, root = storage.store, f"{SYNTHETIC}/candidates"
    remove_stale_temporaries(store.staging_path(root))
    rows = []
    todo = requests.filter(pl.col("error_class").is_null()).to_dicts()
    # Transfer generates from the round's stored control videos (clip_controls); edge and blur missing there are
    # derived from the source window as before.
    stored = round_controls(store, context.partition_key) if backend.identity()["backend"] == TRANSFER25 else {}
    for number, request in enumerate(todo, start=1):
        source = read_window(store.local_path(request["source_path"]), request_geometry_of(request), request["source_start_s"])
        controls = request_control_frames(store, stored, request) if stored else None
        for seed in request["seeds"]:
            base = {"request_id": request["request_id"], "round": context.partition_key, "origin": "generated", "seed": seed,
                    "condition": request["condition"], "source_clip_id": request["source_clip_id"], "prompt": request["prompt"],
                    **backend.identity()}
            base["candidate_id"] = candidate_id(request["request_id"], seed, backend.config_digest())
            try:
                row = generate_candidate(backend, request, seed, source, store, root, context.partition_key, controls)
            except (ValueError, RuntimeError) as error:  # this request's geometry or inputs; the others go on
                row = _failed_row(base, "GenerationFailed", f"{error.__class__.__name__}: {error}")
                context.log.warning(f"{request['request_id']} seed {seed}: {row['error_message']}")
            row["tiny_random"] = bool(row["tiny_random"] or request["tiny_random"])
            row.update({k: request.get(k) for k in scenes.SCENE_COLUMNS})
            rows.append(row)
        context.log.info(f"[{number}/{len(todo)}] {request['condition']} on {request['source_clip_id']}: "
                         f"{len(request['seeds'])} candidate(s)")
    return rows


def _ingest_inbox(context, storage, requests: pl.DataFrame) -> list[dict]:
    paths, store = storage.paths, storage.store
    batch = InboxLedger(paths.synthetic_inbox_ledger).batch(context.partition_key)
    base = {"round": context.partition_key, "origin": "external", "backend": "external"}
    if batch.problem or batch.manifest_bytes is None:
        error_class, _, message = (batch.problem or "ManifestUnreadable: no manifest bytes").partition(": ")
        return [_failed_row({**base, "candidate_id": stable_id("inbox-manifest", batch.key)}, error_class, message)]
    try:
        manifest = parse_manifest(batch.manifest_bytes)
    except ManifestInvalid as error:
        return [_failed_row({**base, "candidate_id": stable_id("inbox-manifest", batch.key)}, "ManifestInvalid", str(error))]
    by_request = {r["request_id"]: r for r in requests.to_dicts()}
    external = f"{SYNTHETIC}/external"
    remove_stale_temporaries(store.staging_path(external))
    rows, taken = [], {}  # candidate id -> the entry that made it: ids are unique in every table
    for entry in manifest.entries:
        row = {**base, "candidate_id": stable_id("inbox-entry", batch.key, entry.index), "request_id": entry.request_id,
               "seed": entry.seed, "condition": entry.condition, "source_clip_id": entry.source_clip_id, "prompt": entry.prompt,
               "generator": manifest.generator, "model": manifest.generator}
        request = by_request.get(entry.request_id)
        try:
            if entry.error_class:
                raise VideoRejected(entry.error_class, entry.error_message)
            if request is None or request["error_class"]:
                raise VideoRejected(request["error_class"] if request else "UnknownRequest",
                                    request["error_message"] if request else "the request is not in generation_prompts")
            try:
                relative = member_path(batch.manifest_path, entry.file)
            except OutsideDropZone as error:
                raise VideoRejected("UnsafePath", str(error)) from None
            ingested = ingest_file(paths.synthetic_inbox, relative, store, lambda digest: f"{external}/{digest[:2]}/{digest}.mp4",
                                   entry.sha256)
        except VideoRejected as rejected:
            rows.append(_failed_row(row, rejected.error_class, rejected.message))
            context.log.warning(f"inbox entry {entry.index} ({entry.file!r}): {rejected.error_class}: {rejected.message}")
            continue
        candidate = stable_id("external-candidate", entry.request_id, entry.seed, ingested.sha256)
        if candidate in taken:  # parse_manifest marks a repeated request and seed; this holds the invariant whatever the cause
            rows.append(_failed_row(row, "DuplicateEntry", f"the same candidate as entry {taken[candidate]} of this manifest"))
            context.log.warning(f"inbox entry {entry.index} ({entry.file!r}): DuplicateEntry of entry {taken[candidate]}")
            continue
        thumbnail = f"{external}/{ingested.sha256[:2]}/{ingested.sha256}.jpg"
        try:  # the probe decoded its first frames only: a later frame may still be over the limits or corrupt
            if not store.exists(thumbnail):
                with store.writing(thumbnail) as tmp:
                    write_jpeg(tmp, middle_frame(read_video(store.local_path(ingested.path))[0]))
        except Exception as error:  # noqa: BLE001 - one undecodable candidate is recorded; the manifest goes on
            reason = error.error_class if isinstance(error, VideoRejected) else "UndecodableVideo"
            rows.append(_failed_row(row, reason, f"{type(error).__name__}: {error}"))
            context.log.warning(f"inbox entry {entry.index} ({entry.file!r}): {reason}: {error}")
            continue
        taken[candidate] = entry.index
        probe = ingested.probe
        rows.append({**row, "candidate_id": candidate, "model_version": None, "checkpoint": None, "controls": "{}",
                     "settings": json.dumps({"manifest": batch.manifest_name, "entry": entry.index, "file": entry.file}),
                     "path": ingested.path, "thumbnail_path": store.ref(thumbnail), "sha256": ingested.sha256,
                     "width": probe["width"], "height": probe["height"], "fps": probe["average_fps"], "frames": probe["frames"],
                     "status": "ok", "tiny_random": False, "label": "", "reused": False})
    return rows


def _side_by_side(storage: CosmosStorage, requests: pl.DataFrame, candidates: pl.DataFrame) -> str:
    """Per request (a few): the source window, then its candidates, in one row."""
    images, labels, columns = [], [], 1
    by_request = defaultdict(list)
    for row in candidates.filter(pl.col("status") == "ok").to_dicts():
        by_request[row["request_id"]].append(row)
    shown = [r for r in requests.to_dicts() if r["request_id"] in by_request][:SHEET_ROWS]
    for request in shown:
        group = sorted(by_request[request["request_id"]], key=lambda r: (r["seed"] is None, r["seed"]))
        columns = max(columns, 1 + len(group))
    store = storage.store
    for request in shown:
        group = sorted(by_request[request["request_id"]], key=lambda r: (r["seed"] is None, r["seed"]))
        tiles = [(request["source_thumbnail_path"], f"source {request['condition']}")]
        tiles += [(r["thumbnail_path"], f"seed {r['seed']}" + (" [tiny]" if r["tiny_random"] else "")) for r in group]
        tiles += [(None, "")] * (columns - len(tiles))
        for path, label in tiles:
            images.append(thumbnail_image(store, path))
            labels.append(label)
    if not images:
        return "no candidates"
    return markdown_image(encode_jpeg(contact_sheet(images, labels, columns=columns, tile_width=128), quality=70),
                          "source and candidates")


def batch_digest(candidates: pl.DataFrame) -> str:
    """Names the set of candidates a materialization holds: the sensor's run key for its critique."""
    return stable_id("synthetic-batch", sorted(candidates["candidate_id"].to_list()))


# code_version 2: deterministic H.264 settings (common/encoding.py) changed every candidate's bytes.
@dg.asset(partitions_def=generation_rounds, group_name=GROUP, pool="gpu", kinds={"pytorch", "parquet"}, owners=OWNERS,
          code_version="candidates-2", tags=pod_class("gpu-predict2-2b"), deps=["clip_controls"])
def synthetic_videos(
    context: dg.AssetExecutionContext, config: SyntheticVideosConfig, storage: CosmosStorage, synthetic: SyntheticSettings,
    generator: VideoGeneratorResource, generation_prompts: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """N candidate videos per request (H.264 MP4 under artefacts/synthetic), each recording its request, seed,
    backend, model and checkpoint, controls and settings. For an inbox batch: the dropped videos, checked and
    copied into the store, with bad files recorded and set aside."""
    if is_inbox_batch(context.partition_key):
        rows, backend_name, model = _ingest_inbox(context, storage, generation_prompts), "external", ""
        made_by = "external generators (see each row's generator and model)"
    else:
        backend = open_backend(config.backend or synthetic.generator_backend, generator)
        identity = backend.identity()
        rows, backend_name, model = _generate_round(context, storage, backend, generation_prompts), identity["backend"], identity["checkpoint"] or identity["model"]
        made_by = generator_checkpoint_of(identity)
    table = _table(rows, SYNTHETIC_VIDEOS)
    ok = table.filter(pl.col("status") == "ok")
    failures = Counter(table.filter(pl.col("status") != "ok")["error_class"].to_list())
    if table.height and not ok.height and not is_inbox_batch(context.partition_key):
        raise dg.Failure(f"no candidate could be generated: {dict(failures)}",
                         metadata={"failures": dg.MetadataValue.md(markdown_table(rows, ["request_id", "seed", "error_class", "error_message"]))})
    context.log.info(f"{ok.height} candidate(s), {table.height - ok.height} rejected or failed")
    return dg.Output(table, metadata={
        "candidates": ok.height,
        "rejected": table.height - ok.height,
        "rejected_by_error_class": dg.MetadataValue.json(dict(failures)),
        "reused": int(ok["reused"].sum()) if ok.height else 0,
        "backend": backend_name,
        "model": model or "",
        # The checkpoint → next round edge, which the acyclic asset graph cannot hold: each round's page says
        # which generator checkpoint made its candidates (rows carry it per candidate).
        "generator_checkpoint": made_by,
        "batch_digest": batch_digest(ok),
        **_tiny_label(bool(ok["tiny_random"].any()) if ok.height else False),
        "source_and_candidates": dg.MetadataValue.md(_side_by_side(storage, generation_prompts, table)),
        "failures": dg.MetadataValue.md(markdown_table(table.filter(pl.col("status") != "ok").to_dicts(),
                                                  ["request_id", "seed", "error_class", "error_message"]) if failures else "none"),
    })


def generator_checkpoint_of(identity: dict) -> str:
    """The generator checkpoint behind a backend, as the UI shows it on a round."""
    if identity["checkpoint"]:
        return identity["checkpoint"] + (" (tiny random weights)" if identity["tiny_random"] else "")
    return f"{identity['model']} {identity['model_version']} (classical augmentation: no model checkpoint)"


# --- critique_scores -------------------------------------------------------------------------------------


class CritiqueConfig(config_from(MetricCriticConfig, include=("analysis_width",))):
    """Which critic scores the candidates, and how it watches them."""

    critic: Optional[str] = Field(
        default=None, description="metric, reason, rubric or cosmos3; unset: the profile's (the `synthetic` resource).")
    trials: Optional[int] = Field(
        default=None, description="K, the VLM critic's independent answers per video; unset: the `vlm` resource's "
                                  "critique settings (5).")
    critic_fps: float = Field(
        default=16.0, description="Frames per second the VLM critic watches (within the VLM's pixel budget).")
    critic_max_frames: int = Field(default=96, description="Most frames of one video the VLM critic watches.")
    batch_size: int = Field(default=2, description="Videos per VLM call.")


def _metric_rows(context, store, critic: MetricCritic, candidates: list[dict], requests: dict,
                 fidelity: ControlFidelity) -> list[dict]:
    rows = []
    by_request = defaultdict(list)
    for candidate in candidates:
        by_request[candidate["request_id"]].append(candidate)
    done = 0
    for request_id, group in by_request.items():
        request = requests[request_id]
        # Both sides decoded straight to the critic's working width (the candidate as luma): no 720p frames held.
        width = critic.config.analysis_width
        geometry = at_most(request_geometry_of(request), width)
        source = read_window(store.local_path(request["source_path"]), geometry, request["source_start_s"])
        window_s = len(source) / geometry.fps
        for candidate in group:
            try:
                frames, fps = read_video(store.local_path(candidate["path"]), max_width=width, gray=True)
                # Only the time the source window covers is compared (an external candidate may be longer).
                frames = frames[: max(2, int(window_s * fps + 1e-6))]
                aligned = align_source(source, geometry.fps, len(frames), fps)
                result = critic.score(frames, aligned)
                path = store.local_path(candidate["path"])
                rows.append({"candidate_id": candidate["candidate_id"], "score": result.score, **result.components(),
                             "trials_total": 0, "trials_parsed": 0, "parse_failures": 0,
                             **fidelity.row(candidate, request, result.components(),
                                            lambda: read_video(path, max_width=width)[0][: len(frames)], aligned)})
            except (ValueError, OSError) as error:
                rows.append({"candidate_id": candidate["candidate_id"], "error_class": "UndecodableCandidate",
                             "error_message": f"{error.__class__.__name__}: {error}"[:500]})
            done += 1
        context.log.info(f"critiqued {done}/{len(candidates)}")
    return rows


def _vlm_rows(context, store, critic: ReasonCritic, candidates: list[dict], config: CritiqueConfig) -> list[dict]:
    rows = []
    for start in range(0, len(candidates), config.batch_size):
        chunk, videos = [], []
        for candidate in candidates[start:start + config.batch_size]:
            try:
                sampled = sample_frames(store.local_path(candidate["path"]), config.critic_fps, config.critic_max_frames)
            except (ValueError, OSError) as error:
                rows.append({"candidate_id": candidate["candidate_id"], "error_class": "UndecodableCandidate",
                             "error_message": f"{error.__class__.__name__}: {error}"[:500]})
                continue
            chunk.append(candidate)
            videos.append((sampled.frames, sampled.fps))
        for candidate, critique in zip(chunk, critic.critique(videos) if videos else []):
            rows.append({"candidate_id": candidate["candidate_id"], "score": critique.score, "rating_mean": critique.rating_mean,
                         "trials_total": len(critique.trials), "trials_parsed": critique.parsed,
                         "parse_failures": critique.parse_failures, "trials": trials_json(critique.trials)})
        context.log.info(f"critiqued {min(start + config.batch_size, len(candidates))}/{len(candidates)}")
    return rows


def _learned_rows(context, store, critic, candidates: list[dict], config: CritiqueConfig) -> list[dict]:
    """The promoted feature critic's P(plausible) per candidate, as it watches any video (its own frame rate)."""
    rows = []
    for number, candidate in enumerate(candidates, start=1):
        try:
            sampled = sample_frames(store.local_path(candidate["path"]), config.critic_fps, config.critic_max_frames, max_side=256)
            rating, plausible = critic.score_videos([(sampled.frames, sampled.fps)])[0]
            rows.append({"candidate_id": candidate["candidate_id"], "score": plausible, "rating_mean": rating,
                         "trials_total": 0, "trials_parsed": 0, "parse_failures": 0})
        except (ValueError, OSError) as error:
            rows.append({"candidate_id": candidate["candidate_id"], "error_class": "UndecodableCandidate",
                         "error_message": f"{error.__class__.__name__}: {error}"[:500]})
        if number % 10 == 0 or number == len(candidates):
            context.log.info(f"critiqued {number}/{len(candidates)}")
    return rows


def _promoted_critic(context, store, synthetic: SyntheticSettings, config: CritiqueConfig):
    """The critic promoted by the critic loop, when the run did not name a critic and the profile follows promotions."""
    if config.critic is not None or not synthetic.use_promoted_critic:
        return None
    promoted = critic_checkpoints.promoted_critic(store)
    if promoted is not None:
        context.log.info(f"critic {promoted.key} ({promoted.backend}, {promoted.critic_version}) is promoted: it scores this round")
    return promoted


@dg.asset(partitions_def=generation_rounds, group_name=GROUP, pool="gpu", kinds={"pytorch", "parquet"}, owners=OWNERS,
          code_version="critique-2", tags=pod_class("gpu-reason-7b"),  # 2: cross-view consistency of scene candidates
          # The critic the critic loop promoted scores from then on: its promotion is upstream of every round's scores.
          # clip_controls: the control videos the metric critic measures each used control's fidelity against.
          deps=[dg.AssetDep("promoted_critic", partition_mapping=dg.AllPartitionMapping()), "clip_controls"])
def critique_scores(
    context: dg.AssetExecutionContext, config: CritiqueConfig, synthetic: SyntheticSettings, vlm: VisionLanguageResource,
    storage: CosmosStorage, synthetic_videos: pl.DataFrame, generation_prompts: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """A score in [0, 1] per candidate from the configured critic (metric signals against the source clip; the
    Reason critic's share of "no anomaly" over K trials; or its 1-5 rubric), with every trial's text and
    reasoning, parse failures counted, and the critic's identity and version on every row."""
    mode = config.critic or synthetic.critic
    candidates = synthetic_videos.filter(pl.col("status") == "ok").to_dicts()
    requests = {r["request_id"]: r for r in generation_prompts.to_dicts()}
    promoted = _promoted_critic(context, storage.store, synthetic, config)
    if promoted is not None and promoted.backend == "feature":
        mode = "learned"
        critic = load_feature_critic(promoted.weights(storage.store))
        scored = _learned_rows(context, storage.store, critic, candidates, config)
    elif mode == "metric":
        critic = MetricCritic(config.to_dataclass(MetricCriticConfig))
        fidelity = ControlFidelity(storage.store, context.partition_key, storage.paths.models, critic.identity["critic_version"])
        scored = _metric_rows(context, storage.store, critic, candidates, requests, fidelity)
    elif mode in ("reason", "rubric", COSMOS3_CRITIC):
        settings = vlm.critique.settings()
        if config.trials:
            settings = dataclasses.replace(settings, trials=config.trials)
        if mode == COSMOS3_CRITIC:
            # Cosmos 3's Reasoner asked the Reason critic's anomaly question: the same protocol and record, so the
            # rows are reason rows (the critic column names the Cosmos 3 model); a promoted Reason1 adapter is not
            # applied to another model. Device, dtype and pixel budget are the critic role's (the `vlm` resource).
            reasoner = open_reasoner(synthetic.critic_model, vlm.models_root, vlm.torch_device(), vlm.torch_dtype(),
                                     sizing=ReasonerSizing(total_pixels=vlm.total_pixels))
            mode, critic = "reason", ReasonCritic(reasoner, settings, "reason")
        else:
            critic = ReasonCritic(vlm.get(), settings, mode)
            if promoted is not None and promoted.backend == "reason":  # the tuned adapter on the `vlm` resource's base
                critic = ReasonCritic(vlm.tuned(promoted.weights(storage.store)), settings, mode)
        scored = _vlm_rows(context, storage.store, critic, candidates, config)
    else:
        raise dg.Failure(f"critic {mode!r}; expected metric, reason, rubric or cosmos3")
    if promoted is not None and promoted.backend == "reason" and mode == "metric":
        context.log.warning(f"critic {promoted.key} is a Reason adapter; this profile's critic is metric, so it is not used")
    identity = critic.identity
    by_id = {c["candidate_id"]: c for c in candidates}
    # Multi-camera scenes: how well each scene candidate's views keep the source rig's geometry (all views alike).
    consistency = multiview.measure_scene_candidates(storage.store, candidates, requests)
    rows = [{**{k: by_id[r["candidate_id"]][k] for k in ("request_id", "round", "condition", *scenes.SCENE_COLUMNS)},
             "critic": identity["critic"], "critic_mode": mode, "critic_model": identity["critic_model"],
             "critic_version": identity["critic_version"], "critic_tiny_random": identity["tiny_random"], **r,
             **multiview.consistency_columns(consistency.get(_scene_candidate_key(by_id[r["candidate_id"]])))} for r in scored]
    table = _table(rows, CRITIQUE_SCORES)
    trials, failures = int(table["trials_total"].sum() or 0), int(table["parse_failures"].sum() or 0)
    scores = table["score"].drop_nulls()
    metadata = {
        "critiqued": table.height,
        "unscored": table.height - scores.len(),
        "trials": trials,
        "parse_failures": failures,
        "parse_failure_rate": round(failures / trials, 4) if trials else 0.0,
        "critic": identity["critic"],
        "critic_version": identity["critic_version"],
        "mean_score": round(float(scores.mean()), 4) if scores.len() else 0.0,
        **_tiny_label(bool(identity["tiny_random"])),
    }
    if consistency:
        metadata["scene_candidates"] = len(consistency)
        metadata["cross_view_consistency"] = dg.MetadataValue.md(_scene_table(rows))
    if mode in ("reason", "rubric") and table.height:
        examples = [{"candidate_id": r["candidate_id"][:8], "score": r["score"], "parsed": f"{r['trials_parsed']}/{r['trials_total']}",
                     "first trial": (json.loads(r["trials"])[0]["text"] if r["trials"] else "")[:160]} for r in rows[:6]]
        metadata["trials_examples"] = dg.MetadataValue.md(markdown_table(examples, ["candidate_id", "score", "parsed", "first trial"]))
    context.log.info(f"{identity['critic']}: {table.height} critiqued, {failures}/{trials} trials unparsed")
    return dg.Output(table, metadata=metadata)


def _scene_candidate_key(candidate: dict) -> tuple | None:
    return (candidate["scene_clip_id"], candidate["condition"], candidate["seed"]) if candidate.get("scene_clip_id") else None


def _scene_table(rows: list[dict]) -> str:
    """One line per scene candidate (scene clip, condition, seed): its cameras, cross-view consistency and, once
    selected, whether it was accepted."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if row.get("scene_clip_id"):
            groups[(row["scene_id"], row["scene_clip_id"], row["condition"], row.get("seed"))].append(row)
    lines = []
    for (scene, scene_clip, condition, seed), views in groups.items():
        first = views[0]
        lines.append({"scene_id": scene[:18], "scene_clip": scene_clip[:8], "condition": condition, "seed": seed,
                      "cameras": ", ".join(sorted(v["camera"] for v in views)),
                      "sampson_px (worst pair)": first.get("cross_view_sampson_px"),
                      "share under threshold": first.get("cross_view_share_under_threshold"),
                      "match ratio": first.get("cross_view_match_ratio"),
                      **({"accepted": all(v["accepted"] for v in views)} if "accepted" in first else {})})
    columns = list(lines[0]) if lines else []
    return markdown_table(lines, columns) if lines else "no multi-camera scene"


# --- accepted_videos -------------------------------------------------------------------------------------


class AcceptanceConfig(dg.Config):
    """Which critiqued candidates are accepted."""

    rule: str = Field(
        default="best_of_n_and_threshold",
        description="best_of_n: the best candidate of each request; threshold: every candidate scoring at least the "
                    "threshold; best_of_n_and_threshold: the best, if it reaches the threshold.")
    threshold: Optional[float] = Field(
        default=None, description="Least critic score (0..1) to accept; unset: the critic's default "
                                  f"({', '.join(f'{k} {v}' for k, v in DEFAULT_THRESHOLDS.items())}).")


def _decision_sheet(storage: CosmosStorage, rows: list[dict], accepted: bool, limit: int = 12) -> str:
    chosen = [r for r in rows if r["accepted"] == accepted and r["thumbnail_path"]][:limit]
    if not chosen:
        return "none"
    store = storage.store
    images = [thumbnail_image(store, r["thumbnail_path"]) for r in chosen]
    labels = [f"{'OK' if accepted else 'NO'} {r['condition'] or '?'} {r['score']:.2f}" if r["score"] is not None
              else f"NO {r['decision']}" for r in chosen]
    return markdown_image(encode_jpeg(contact_sheet(images, labels, columns=6, tile_width=128), quality=70),
                          "accepted" if accepted else "rejected")


@dg.asset(partitions_def=generation_rounds, group_name=GROUP, kinds={"python", "parquet"}, owners=OWNERS, code_version="selection-2",  # 2: scene candidates accepted as units
          tags=pod_class("cpu-light"))
def accepted_videos(
    context: dg.AssetExecutionContext, config: AcceptanceConfig, storage: CosmosStorage, synthetic_videos: pl.DataFrame,
    critique_scores: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Rejection sampling: every candidate with `accepted` and the decision behind it, by the configured rule
    (best-of-N per request, a score threshold, or both); acceptance rates overall and per condition."""
    rule = check_rule(config.rule)
    modes = set(critique_scores["critic_mode"].drop_nulls())
    mode = modes.pop() if len(modes) == 1 else "metric"
    threshold = config.threshold if config.threshold is not None else DEFAULT_THRESHOLDS[mode]
    consistency_columns = [c for c in SCENE_SCHEMA if c.startswith("cross_view_") and c in critique_scores.columns]
    joined = synthetic_videos.join(critique_scores.select("candidate_id", "critic", "critic_version", "critic_tiny_random",
                                                          "score", "trials_total", "parse_failures",
                                                          pl.col("error_class").alias("critique_error"), *consistency_columns),
                                   on="candidate_id", how="left").to_dicts()
    # A multi-camera scene candidate (one seed of a scene clip under one condition) is accepted only if all its views are.
    cameras = defaultdict(set)
    for r in joined:
        if r.get("scene_id"):
            cameras[r["scene_id"]].add(r["camera"])
    decisions = select_scenes([{"candidate_id": r["candidate_id"], "request_id": r["request_id"], "score": r["score"],
                                "usable": r["status"] == "ok" and r["critique_error"] is None, "seed": r["seed"],
                                "scene_key": f"{r['scene_clip_id']}/{r['condition']}" if r.get("scene_clip_id") else None,
                                "camera": r.get("camera"), "scene_cameras": len(cameras.get(r.get("scene_id"), ()))}
                               for r in joined], rule, threshold)
    rows = []
    for r in joined:
        decision = decisions[r["candidate_id"]]
        rows.append({**r, "accepted": decision.accepted, "rank": decision.rank, "decision": decision.reason or "accepted",
                     "rule": rule, "threshold": threshold,
                     "tiny_random": bool(r["tiny_random"] or r["critic_tiny_random"])})
    table = _table(rows, ACCEPTED_VIDEOS)
    judged = table.filter(pl.col("decision") != "bad_input")
    accepted = table.filter(pl.col("accepted"))
    by_condition = {}
    for (condition,), group in judged.group_by("condition", maintain_order=True):
        by_condition[condition or "?"] = round(float(group["accepted"].mean()), 4)
    trials, failures = int(judged["trials_total"].sum() or 0), int(judged["parse_failures"].sum() or 0)
    scores = judged["score"].drop_nulls().to_list()
    context.log.info(f"accepted {accepted.height} of {judged.height} judged candidates ({rule}, threshold {threshold})")
    return dg.Output(table, metadata={
        "accepted": accepted.height,
        "rejected": table.height - accepted.height,
        "judged": judged.height,
        "acceptance_rate": round(accepted.height / judged.height, 4) if judged.height else 0.0,
        "acceptance_rate_by_condition": dg.MetadataValue.json(by_condition),
        "accepted_by_condition": dg.MetadataValue.json(dict(Counter(accepted["condition"].fill_null("?").to_list()))),
        "decisions": dg.MetadataValue.json(dict(Counter(table["decision"].to_list()))),
        "parse_failure_rate": round(failures / trials, 4) if trials else 0.0,
        "rule": rule,
        "threshold": float(threshold),
        **_tiny_label(bool(table["tiny_random"].any()) if table.height else False),
        "score_histogram": dg.MetadataValue.md(markdown_image(encode_png(histogram(scores, f"{mode} critic score", threshold=threshold)),
                                                              "score histogram", "image/png")),
        "accepted_candidates": dg.MetadataValue.md(_decision_sheet(storage, rows, True)),
        "scene_candidates_accepted": len({(r["scene_clip_id"], r["condition"], r["seed"]) for r in rows
                                          if r.get("scene_clip_id") and r["accepted"]}),
        "scenes": dg.MetadataValue.md(_scene_table(rows)),
        "rejected_candidates": dg.MetadataValue.md(_decision_sheet(storage, rows, False)),
    })


class AcceptanceBoundsConfig(dg.Config):
    """When a round's acceptance looks broken (the check fails and blocks training on it)."""

    max_parse_failure_rate: float = Field(
        default=0.2, description="Most share (0..1) of critic trials left unparsed; more means the critic is not working.")
    min_acceptance_rate: float = Field(default=0.05, description="Least share (0..1) of candidates accepted.")
    max_acceptance_rate: float = Field(default=1.0, description="Most share (0..1) of candidates accepted.")


@dg.asset_check(asset=accepted_videos, blocking=True, partitions_def=generation_rounds,  # checks the run's batch
                description="Stops downstream use of a batch when the critic's parse-failure rate or the acceptance "
                            "rate is outside the configured bounds.")
def accepted_videos_rates_in_bounds(config: AcceptanceBoundsConfig, accepted_videos: pl.DataFrame) -> dg.AssetCheckResult:
    return acceptance_rates_check(config, accepted_videos)


def acceptance_rates_check(config: AcceptanceBoundsConfig, decisions: pl.DataFrame) -> dg.AssetCheckResult:
    """The blocking rates check of a round's selection, for videos and images alike: the critic's parse-failure rate
    and the acceptance rate against the configured bounds (bad inputs are not judged, so they count in neither)."""
    judged = decisions.filter(pl.col("decision") != "bad_input")
    trials, failures = int(judged["trials_total"].sum() or 0), int(judged["parse_failures"].sum() or 0)
    parse_failure_rate = failures / trials if trials else 0.0
    acceptance_rate = float(judged["accepted"].mean()) if judged.height else None
    problems = []
    if parse_failure_rate > config.max_parse_failure_rate:
        problems.append(f"parse-failure rate {parse_failure_rate:.2f} > {config.max_parse_failure_rate}")
    if acceptance_rate is not None and not config.min_acceptance_rate <= acceptance_rate <= config.max_acceptance_rate:
        problems.append(f"acceptance rate {acceptance_rate:.2f} outside [{config.min_acceptance_rate}, {config.max_acceptance_rate}]")
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) or ("no candidate to judge" if acceptance_rate is None else "rates within bounds"),
        metadata={"parse_failure_rate": round(parse_failure_rate, 4), "judged": judged.height,
                  "acceptance_rate": round(acceptance_rate, 4) if acceptance_rate is not None else -1.0,
                  "bounds": dg.MetadataValue.json(config.model_dump())},
    )


generation_job = dg.define_asset_job(
    "generation_job", selection=dg.AssetSelection.assets(generation_prompts, "clip_controls", synthetic_videos),
    description="One generation round: requests from the curated clips, then N candidates per request.",
)
critique_job = dg.define_asset_job(
    "critique_job", selection=[critique_scores, accepted_videos],
    description="Critique one batch of candidates and keep the good ones (rejection sampling).",
)
inbox_job = dg.define_asset_job(
    "inbox_job",
    selection=dg.AssetSelection.assets(generation_prompts, "clip_controls", synthetic_videos, critique_scores, accepted_videos),
    description="Take one inbox batch of externally generated candidates, then critique it and keep the good ones.",
)
