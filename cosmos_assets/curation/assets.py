"""Curation assets: raw_videos → video_clips + clip_scores → filtered_clips, one partition per batch."""


import os
from collections import Counter
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from PIL import Image

from cosmos_assets.common.artefacts import CLIPS, PROXIES, RAW, THUMBNAILS, ArtefactStore
from cosmos_assets.common.files import remove_stale_temporaries, sha256_of_file
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
from cosmos_assets.curation import scenes, schemas
from cosmos_assets.curation.clips import TranscodeConfig
from cosmos_assets.common.drop_zone import assert_inside
from cosmos_assets.curation.landing import LandingLedger
from cosmos_assets.curation.parallel import split_in_parallel
from cosmos_assets.curation.pipeline import SplitProgress, ingest_member, split_videos
from cosmos_assets.curation.probe import ProbeLimits
from cosmos_assets.curation.scores import FilterThresholds, reason_code, rejection_reasons
from cosmos_assets.curation.shots import SplitConfig
from cosmos_assets.settings import cpu_threads_per_step, device_pool_limits
from pydantic import Field
from resources import CosmosStorage, ShotDetectorResource
from resources.config import config_from

ingest_batches = dg.DynamicPartitionsDefinition(name="ingest_batches")

GROUP = "curation"
CONTACT_SHEET_LIMIT = 24


class RawVideosConfig(config_from(ProbeLimits)):
    """Limits on landed videos (``ProbeLimits``), and what happens to the landed files."""

    remove_from_landing: bool = Field(
        default=False, description="Delete each landed file once it is recorded (ok or rejected): its bytes are "
                                   "kept in the content-addressed raw store.")


class SplitAndTranscodeConfig(config_from(SplitConfig, TranscodeConfig, exclude=("score_sample_fps", "thumbnail_width"))):
    """How videos are split into clips (``SplitConfig``) and how clips are encoded (``TranscodeConfig``)."""


class FilterConfig(config_from(FilterThresholds)):
    """The thresholds a clip must pass to be kept (``FilterThresholds``)."""


def _clip_contact_sheet(store: ArtefactStore, clips: pl.DataFrame, title: str) -> str:
    shown = clips.head(CONTACT_SHEET_LIMIT)
    images, labels = [], []
    for row in shown.iter_rows(named=True):
        if row["thumbnail_path"]:
            images.append(thumbnail_image(store, row["thumbnail_path"]))
            labels.append(f"{row['source_name'][:14]} {row['start_s']:.1f}-{row['end_s']:.1f}s")
    more = f"\n\n{clips.height - shown.height} more clips not shown." if clips.height > shown.height else ""
    return markdown_image(encode_jpeg(contact_sheet(images, labels)), title) + more


@dg.asset(
    partitions_def=ingest_batches,
    group_name=GROUP,
    kinds={"python", "parquet"},
    owners=["team:curation"],
    tags=pod_class("cpu-ingest"),
    code_version="ingest-2",  # 2: multi-camera scene folders
)
def raw_videos(
    context: dg.AssetExecutionContext, config: RawVideosConfig, storage: CosmosStorage
) -> dg.Output[pl.DataFrame]:
    """One row per landed file of the batch: content hash, probe facts, and `ok` or `rejected` with
    the error class and message. Files are copied into a content-addressed raw store."""
    paths, store = storage.paths, storage.store
    batch = LandingLedger(paths.landing_ledger).batch(context.partition_key)
    limits = config.to_dataclass(ProbeLimits)
    if removed := remove_stale_temporaries(store.staging_path(RAW)):
        context.log.info(f"removed {removed} temporary file(s) left by a crashed copy")
    rows = []
    for number, member in enumerate(batch.members, start=1):
        if scenes.is_scene_manifest(member.relative_path) and member.content_hash is not None:
            row = scenes.manifest_row(member, batch.key)  # read below, with its scene's views
        else:
            row = ingest_member(member, batch.key, paths.landing, store, limits)
        rows.append(row)
        context.log.info(
            f"[{number}/{len(batch.members)}] {row['landing_name']!r}: {row['status']}"
            + (f" ({row['error_class']}: {row['error_message']})" if row["error_class"] else "")
        )
    # Multi-camera scene folders: a scene is used whole or not at all (every row of a broken one says why).
    scenes.assemble_scenes(list(batch.members), rows, paths.landing)
    for member, row in zip(batch.members, rows):
        if row["status"] == "rejected" and row["error_class"] in scenes.SCENE_ERRORS:
            context.log.warning(f"{row['landing_name']!r}: {row['error_class']}: {row['error_message']}")
        if config.remove_from_landing and (row["raw_path"] or row["status"] == "scene"):
            _remove_landed(paths.landing, member)  # its bytes are safe in the raw store
    table = schemas.table(rows, schemas.RAW_VIDEOS)
    scene_rows = [r for r in rows if r.get("scene_id") or r["error_class"] in scenes.SCENE_ERRORS]
    rejected = Counter(r["error_class"] for r in rows if r["status"] == "rejected")
    return dg.Output(
        table,
        metadata={
            "ok": sum(r["status"] == "ok" for r in rows),
            "rejected": sum(rejected.values()),
            "rejected_by_error_class": dg.MetadataValue.json(dict(rejected)),
            "total_bytes": batch.total_bytes,
            "files": dg.MetadataValue.md(
                markdown_table(rows, ["landing_name", "status", "error_class", "codec", "width", "height", "average_fps", "duration_s"])
            ),
            # Only for batches with multi-camera scenes: the UI's table of their views and why a scene was set aside.
            **({"scenes": sum(r["status"] == "scene" for r in rows), "scene_views": dg.MetadataValue.md(markdown_table(
                scene_rows, ["scene_name", "scene_id", "camera", "landing_name", "status", "error_class", "frames", "average_fps"]))}
               if scene_rows else {}),
        },
    )


def _remove_landed(landing: Path, member) -> None:
    path = os.path.join(os.fsencode(landing), member.relative_path)
    try:
        assert_inside(landing, path)
        if os.lstat(path).st_size == member.size and sha256_of_file(path) == member.content_hash:
            os.unlink(path)
    except OSError:  # gone, replaced, or outside the zone: leave it alone
        pass


@dg.multi_asset(
    partitions_def=ingest_batches,
    group_name=GROUP,
    pool="gpu",
    outs={
        # code_version 2: the deterministic H.264 settings (common/encoding.py) changed every clip's bytes.
        # code_version 3: the views of a multi-camera scene are cut on their reference camera's spans.
        # code_version 4: one decode per video (the streaming split) and a proxy per clip.
        "video_clips": dg.AssetOut(kinds={"pytorch", "parquet"}, owners=["team:curation"], tags=pod_class("gpu-shot-detector"),
                                   code_version="clips-4",
                                   description="Shot-split H.264 clips with deterministic ids and their span in the source."),
        "clip_scores": dg.AssetOut(kinds={"python", "parquet"}, owners=["team:curation"], tags=pod_class("gpu-shot-detector"),
                                   code_version="scores-1",
                                   description="Per-clip motion, sharpness, exposure and letterbox signals."),
    },
)
def video_clips_and_scores(
    context: dg.AssetExecutionContext,
    config: SplitAndTranscodeConfig,
    storage: CosmosStorage,
    shot_detector: ShotDetectorResource,
    raw_videos: pl.DataFrame,
):
    """Split each ok video at its shots (TransNetV2) or a fixed stride, transcode the clips to
    H.264, and measure each clip and write its proxy in the same, single decode pass."""
    split, transcode = config.to_dataclass(SplitConfig), config.to_dataclass(TranscodeConfig)
    _use_a_share_of_the_cores(context)
    store = storage.store
    for folder in (store.staging_path(CLIPS), store.staging_path(THUMBNAILS), store.staging_path(PROXIES)):
        if removed := remove_stale_temporaries(folder):
            context.log.info(f"removed {removed} temporary file(s) left by a crashed writer in {folder}")
    videos = raw_videos.filter(pl.col("status") == "ok").to_dicts()
    progress = SplitProgress(videos)
    clip_rows, errors = [], []
    shots = split.method != "fixed_stride"
    if device_pool_limits().device != "cpu" and len(videos) > 1:
        # A GPU node: videos split side by side in worker processes (decoding and encoding are the CPU's, and keep its
        # cores busy; bench/GPU_RESULTS.md, "GPU curation node"), each with its own detector on the GPU.
        splits = split_in_parallel(videos, store, split, transcode, shot_detector.loader() if shots else None)
    else:
        splits = split_videos(videos, store, split, transcode, shot_detector.get() if shots else None)
    for video, rows, error, seconds in splits:
        clip_rows.extend(rows)
        line = progress.video_done(video, len(rows), seconds)
        if error:
            errors.append(error)
            context.log.warning(f"{video['landing_name']!r}: {error['error_class']}: {error['error_message']}")
        context.log.info(line)
        # The step's outputs appear only when every video is split; an observation per finished video
        # puts its clips (contact sheet, counts, progress) on the asset's page in the UI right away.
        context.log_event(dg.AssetObservation(
            asset_key="video_clips",
            partition=context.partition_key,
            description=line,
            metadata=_video_partial_result(store, video, rows, error, progress),
        ))

    # Workers finish in any order: the table keeps the sequential split's order (single videos, then scenes' views).
    grouped, singles = scenes.scene_groups(videos)
    order = {v["content_hash"]: i for i, v in enumerate(singles + [view for views in grouped.values() for view in views])}
    clip_rows.sort(key=lambda r: (order[r["source_hash"]], r["start_frame"]))
    signal_rows = [{"clip_id": r["clip_id"], "duration_s": r["duration_s"], **(r.pop("signals") or {})} for r in clip_rows]
    clips = schemas.table(clip_rows, schemas.VIDEO_CLIPS)
    scores = schemas.table(signal_rows, schemas.CLIP_SCORES)
    yield dg.Output(
        clips,
        output_name="video_clips",
        metadata={
            "clips": clips.height,
            "videos_split": len(videos) - len(errors),
            "videos_failed": len(errors),
            "videos_without_clips": len(videos) - len(errors) - (clips["source_hash"].n_unique() if clips.height else 0),
            "clip_seconds": round(float(clips["duration_s"].sum()), 2) if clips.height else 0.0,
            "split_method": split.method,
            "contact_sheet": dg.MetadataValue.md(_clip_contact_sheet(store, clips, "clip thumbnails")) if clips.height else dg.MetadataValue.md("no clips"),
            "failures": dg.MetadataValue.md(markdown_table(errors, ["landing_name", "error_class", "error_message"])) if errors else dg.MetadataValue.md("none"),
        },
    )
    yield dg.Output(scores, output_name="clip_scores", metadata=_score_metadata(scores))


def _use_a_share_of_the_cores(context: dg.AssetExecutionContext) -> None:
    """Without a GPU the `gpu` pool runs up to one step per core at once (``settings.device_pool_limits``);
    each step's torch then keeps to its share of the cores (the rest of this run's steps share the
    process, so they keep to it too). With a GPU the pool runs one step and the CPU is left as it is."""
    if device_pool_limits().device != "cpu":
        return
    import torch

    pool_limit = context.instance.event_log_storage.get_concurrency_info("gpu").limit
    threads = cpu_threads_per_step(pool_limit)
    if torch.get_num_threads() != threads:
        context.log.info(f"`gpu` pool admits {pool_limit} CPU steps at once: this step uses {threads} thread(s)")
        torch.set_num_threads(threads)


def _video_partial_result(store: ArtefactStore, video: dict, rows: list[dict], error: dict | None, progress: SplitProgress) -> dict:
    metadata = {
        "source_name": video["landing_name"],
        "source_hash": video["content_hash"],
        "clips": len(rows),
        "clip_seconds": round(sum(r["duration_s"] for r in rows), 2),
        "videos_done": progress.done_videos,
        "videos_in_batch": progress.total_videos,
        "footage_done_s": round(progress.done_s, 2),
        "footage_in_batch_s": round(progress.total_s, 2),
    }
    if error:
        metadata["error"] = f"{error['error_class']}: {error['error_message']}"
    elif rows:
        metadata["contact_sheet"] = dg.MetadataValue.md(
            _clip_contact_sheet(store, pl.DataFrame([{k: r[k] for k in ("thumbnail_path", "source_name", "start_s", "end_s")} for r in rows]),
                                f"clips of {video['landing_name'][:40]}"))
    return metadata


def _score_metadata(scores: pl.DataFrame, thresholds: FilterThresholds | None = None) -> dict:
    metadata: dict = {"clips": scores.height}
    if scores.filter(pl.col("motion_global").is_not_null()).height == 0:
        return metadata
    thresholds = thresholds or FilterThresholds()
    plots = [
        histogram(scores["motion_global"].drop_nulls().to_list(), "motion (global mean)", threshold=thresholds.min_motion_global),
        histogram(scores["sharpness"].drop_nulls().to_list(), "sharpness (Laplacian var)", threshold=thresholds.min_sharpness),
        histogram(scores["brightness"].drop_nulls().to_list(), "brightness", threshold=thresholds.min_brightness),
    ]
    width = sum(p.width for p in plots)
    strip = Image.new("RGB", (width, plots[0].height))
    for index, plot in enumerate(plots):
        strip.paste(plot, (index * plot.width, 0))
    metadata["histograms"] = dg.MetadataValue.md(markdown_image(encode_png(strip), "score histograms", "image/png"))
    for column in ("motion_global", "sharpness", "brightness"):
        metadata[f"median_{column}"] = float(np.median(scores[column].drop_nulls().to_numpy()))
    return metadata


@dg.asset(
    partitions_def=ingest_batches,
    group_name=GROUP,
    kinds={"python", "parquet"},
    owners=["team:curation"],
    tags=pod_class("cpu-light"),
    code_version="filter-2",  # 2: a scene clip is kept or rejected as a unit
)
def filtered_clips(
    context: dg.AssetExecutionContext, config: FilterConfig, storage: CosmosStorage, video_clips: pl.DataFrame,
    clip_scores: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Every clip of the batch with `kept` true when all its scores pass the configured thresholds,
    and the reasons for each rejection otherwise."""
    thresholds = config.to_dataclass(FilterThresholds)
    scored = video_clips.join(clip_scores.drop("duration_s"), on="clip_id", how="left")
    reasons = [rejection_reasons(row, thresholds) for row in scored.iter_rows(named=True)]
    # A scene clip is kept or rejected as a unit: one failing view rejects all its views.
    reasons = scenes.unit_rejections([{k: r.get(k) for k in ("scene_id", "camera", "scene_clip_id")}
                                      for r in scored.to_dicts()], reasons)
    table = scored.select(video_clips.columns).with_columns(
        kept=pl.Series([not r for r in reasons], dtype=pl.Boolean),
        rejection_reasons=pl.Series(reasons, dtype=pl.List(pl.String)),
    )
    counts = Counter(reason_code(reason) for rs in reasons for reason in rs)
    kept = table.filter(pl.col("kept"))
    metadata = {
        "kept": kept.height,
        "rejected": table.height - kept.height,
        "rejections_by_reason": dg.MetadataValue.json(dict(counts)),
        "thresholds": dg.MetadataValue.json(config.model_dump()),
        "kept_clips": dg.MetadataValue.md(_clip_contact_sheet(storage.store, kept, "kept clips")) if kept.height else dg.MetadataValue.md("no clip kept"),
    }
    metadata.update({k: v for k, v in _score_metadata(clip_scores, thresholds).items() if k == "histograms"})
    context.log.info(f"kept {kept.height} of {table.height} clips; rejections: {dict(counts) or 'none'}")
    return dg.Output(table, metadata=metadata)


curation_job = dg.define_asset_job(
    "curation_job",
    # By key: captions and embeddings live in their own module, downstream of filtered_clips.
    selection=dg.AssetSelection.assets("raw_videos", "video_clips", "clip_scores", "filtered_clips", "clip_captions", "clip_embeddings"),
    description="Ingest one landing-zone batch and curate it into filtered, captioned, embedded clips.",
)
