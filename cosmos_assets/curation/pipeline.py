"""Curating one landed file: ingest into the raw store, split into clips, measure — plain Python.

These functions are what the Dagster assets call per file. Each returns rows (dicts) and never
raises for bad input: a file or video that fails is returned with its error class and message.
Finished videos are recorded beside their clips, so a re-run after a crash skips them. Every file goes
through the artefact store (``common.artefacts``): rows record its reference, work happens on local copies.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from cosmos_assets.common.artefacts import CLIPS, ArtefactStore, clip_key, proxy_key, raw_key, thumbnail_key
from cosmos_assets.common.files import copy_and_hash_atomically, stable_id
from cosmos_assets.curation.clips import ClipFiles, TranscodeConfig, cut_clips, stream_split
from cosmos_assets.common.decoding import FrameLimits
from cosmos_assets.common.drop_zone import open_dropped_file
from cosmos_assets.curation.landing import BatchMember
from cosmos_assets.curation.probe import ProbeLimits, VideoProbe, VideoRejected, probe_video
from cosmos_assets.curation.scenes import scene_clip_id, scene_groups
from cosmos_assets.curation.shots import (
    SplitConfig,
    Span,
    StreamingClipPlanner,
    decode_small_rgb,
    plan_clips,
    plan_fixed_stride,
    scenes_from_probabilities,
)

# Part of every split recipe: 2 is the streaming one-decode split that also writes each clip's proxy (a new
# version re-splits, since the older clips have no proxy).
SPLIT_VERSION = 2

# Suffixes kept on raw copies so tools recognise them; anything else is stored as ".bin".
KNOWN_VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".mpg", ".mpeg", ".flv", ".3gp"}
RAW_COLUMNS = list(VideoProbe.__dataclass_fields__)


def raw_suffix(relative_path: bytes) -> str:
    suffix = os.path.splitext(os.path.basename(relative_path))[1].decode("ascii", "replace").lower()
    return suffix if suffix in KNOWN_VIDEO_SUFFIXES else ".bin"


class _ChangedAfterLanding(Exception):
    pass


def ingest_member(
    member: BatchMember, batch: str, landing: Path, store: ArtefactStore, limits: ProbeLimits
) -> dict:
    """Copy one landed file into the content-addressed raw store and probe it; one ``raw_videos`` row."""
    row = {
        "content_hash": member.content_hash,
        "landing_name": member.name,
        "batch": batch,
        "size_bytes": member.size,
        "status": "rejected",
        "error_class": None,
        "error_message": None,
        "raw_path": None,
        **{column: None for column in RAW_COLUMNS},
        "supersedes": member.supersedes,
    }
    if member.content_hash is None:  # refused by the sensor before reading (symlink, unreadable)
        unsafe = member.note and any(word in member.note for word in ("symlink", "OutsideDropZone", "OutsideLandingZone"))  # older ledgers
        row["error_class"] = "UnsafePath" if unsafe else "UnreadableFile"
        row["error_message"] = member.note
        row["content_hash"] = "name:" + stable_id("landing-name", member.relative_path.hex())
        return row
    if member.size > limits.max_file_bytes:
        row["error_class"] = "FileTooLarge"
        row["error_message"] = f"{member.size} bytes is over the configured limit of {limits.max_file_bytes}"
        return row
    key = raw_key(member.content_hash, raw_suffix(member.relative_path))
    probe = None
    try:
        if not store.exists(key):
            with open_dropped_file(landing, member.relative_path) as source, store.writing(key) as tmp:
                copied_hash, _ = copy_and_hash_atomically(source, tmp)
                if copied_hash != member.content_hash:  # leaving the block by raising publishes nothing
                    raise _ChangedAfterLanding
                if os.fstat(source.fileno()).st_nlink > 1:
                    # A hard link: its bytes have another name, maybe outside the landing zone. Probed before it is
                    # published, so a rejected one leaves nothing in the raw store (a plain rejected file's bytes are
                    # kept there, so remove_from_landing loses nothing the user landed).
                    probe = probe_video(tmp, limits)
    except _ChangedAfterLanding:
        row["error_class"] = "ChangedAfterLanding"
        row["error_message"] = "the file's content changed between detection and ingestion; it will be picked up again"
        return row
    except VideoRejected as rejected:
        row["error_class"], row["error_message"] = rejected.error_class, f"{rejected.message} (a hard link: not kept)"
        return row
    except OSError as error:
        row["error_class"] = "UnreadableFile"
        row["error_message"] = f"{type(error).__name__}: {error}"
        return row
    row["raw_path"] = store.ref(key)
    try:
        probe = probe or probe_video(store.local_path(row["raw_path"]), limits)
    except VideoRejected as rejected:
        row["error_class"], row["error_message"] = rejected.error_class, rejected.message
        return row
    row.update(probe.as_row())
    row["frame_limits"] = json.dumps(asdict(limits.frame_limits()), sort_keys=True)
    row["status"] = "ok"
    return row


def accepted_frame_limits(video: dict) -> FrameLimits:
    """The limits a raw video was accepted under (``raw_videos.frame_limits``); rows written before the
    column existed were probed with the defaults."""
    recorded = video.get("frame_limits")
    return FrameLimits(**json.loads(recorded)) if recorded else FrameLimits()


class SplitProgress:
    """Progress of one split step over its videos, by seconds of footage: done, left, and an estimate."""

    def __init__(self, videos: list[dict]):
        self.total_videos = len(videos)
        self.total_s = sum(v["duration_s"] or 0.0 for v in videos)
        self.done_videos = 0
        self.done_s = 0.0
        self.busy_s = 0.0

    def video_done(self, video: dict, clips: int, seconds: float) -> str:
        self.done_videos += 1
        self.done_s += video["duration_s"] or 0.0
        self.busy_s += seconds
        left_s = self.total_s - self.done_s
        estimate = f", about {left_s * self.busy_s / self.done_s:.0f} s to go" if self.done_s and left_s > 0 else ""
        return (f"[{self.done_videos}/{self.total_videos}] {video['landing_name']!r}: {clips} clips in {seconds:.1f} s; "
                f"{self.done_s:.0f} of {self.total_s:.0f} s of footage split{estimate}")


def clip_id_for(source_hash: str, span: Span) -> str:
    """cosmos-curate style deterministic id: UUID5 of (source, start, end)."""
    return stable_id(source_hash, span.start_frame, span.end_frame)


def plan_spans(raw_path: str | Path, frames: int, fps: float, split: SplitConfig, detector,
               limits: FrameLimits | None = None) -> list[Span]:
    """The clips' spans before cutting (a second decode for shots; the split itself streams, see ``split_video``)."""
    if split.method == "fixed_stride":
        return plan_fixed_stride(frames, fps, split)
    small = decode_small_rgb(raw_path, limits=limits)
    scenes = scenes_from_probabilities(detector.transition_probabilities(small), split.threshold)
    return plan_clips(scenes, len(small), fps, split)


def split_videos(videos: list[dict], store: ArtefactStore, split: SplitConfig, transcode: TranscodeConfig, detector):
    """``split_video`` over a batch's ok videos, yielding (video, clip rows, error or None, seconds) per video.

    The views of a multi-camera scene (``curation.scenes``) are cut on the spans of its reference camera, split first,
    so clip k of every view covers the same frames and shares a ``scene_clip_id``; when the reference cannot be split,
    the scene's other views get no clips either (``SceneReferenceFailed``)."""
    grouped, singles = scene_groups(videos)
    spans: dict[str, list[Span] | None] = {}
    for video in singles + [view for views in grouped.values() for view in views]:
        started = time.perf_counter()
        scene = video.get("scene_id")
        if scene and scene not in spans:  # the reference camera (first of its scene)
            rows, error = split_video(video, store, split, transcode, detector)
            spans[scene] = None if error else [Span(r["start_frame"], r["end_frame"]) for r in rows]
        elif scene and spans[scene] is None:
            rows, error = [], {"content_hash": video["content_hash"], "landing_name": video["landing_name"],
                               "error_class": "SceneReferenceFailed",
                               "error_message": f"the reference view of scene {scene} could not be split"}
        else:
            rows, error = split_video(video, store, split, transcode, detector, spans[scene] if scene else None)
        yield video, rows, error, time.perf_counter() - started


def split_video(
    video: dict, store: ArtefactStore, split: SplitConfig, transcode: TranscodeConfig, detector,
    spans: list[Span] | None = None,
) -> tuple[list[dict], dict | None]:
    """Cut one ingested video into clips with their signals; returns (clip rows, error or None). ``spans``: cut
    there instead of at the video's own shots (every view of a multi-camera scene is cut at its reference's)."""
    recipe = stable_id("split", SPLIT_VERSION, json.dumps(asdict(split), sort_keys=True), json.dumps(asdict(transcode), sort_keys=True),
                       getattr(detector, "model_version", "none"),
                       *([] if spans is None else ["spans", [(s.start_frame, s.end_frame) for s in spans]]))
    record = f"{CLIPS}/_finished/{video['content_hash']}-{recipe}.json"
    if store.exists(record):
        rows = store.read_json(record)
        if all(store.exists(store.key_of(r["path"])) for r in rows):
            for r in rows:
                r["batch"] = video["batch"]
            return rows, None

    def files_for(span: Span) -> ClipFiles:
        clip_id = clip_id_for(video["content_hash"], span)
        return ClipFiles(store.staging_path(clip_key(clip_id, recipe)), store.staging_path(thumbnail_key(clip_id, recipe)),
                         store.staging_path(proxy_key(clip_id, recipe)))

    try:
        fps = video["average_fps"] or video["real_fps"]
        raw = store.local_path(video["raw_path"])
        limits = accepted_frame_limits(video)
        if spans is None and split.method != "fixed_stride":  # shots found while the clips are cut: one decode
            planner = StreamingClipPlanner(split.threshold, fps, split)
            results = stream_split(raw, detector, planner, files_for, fps, transcode, limits,
                                   staging=store.staging_path(f"{CLIPS}/{recipe[:8]}"))
        else:
            spans = spans if spans is not None else plan_fixed_stride(video["frames"], fps, split)
            results = cut_clips(raw, spans, [files_for(span) for span in spans], fps, transcode, limits=limits)
        # Named by the planned span (a video that ends early shortens its last clip's span, not its name).
        planned = [r.span for r in results] if spans is None else spans[:len(results)]
        ids = [clip_id_for(video["content_hash"], span) for span in planned]
        for clip_id in ids:  # written in one decode pass; published once all are whole
            for key in (clip_key(clip_id, recipe), thumbnail_key(clip_id, recipe), proxy_key(clip_id, recipe)):
                store.commit(key)
    except VideoRejected as rejected:  # a frame over the limits though the header was within them
        return [], {
            "content_hash": video["content_hash"],
            "landing_name": video["landing_name"],
            "error_class": rejected.error_class,
            "error_message": rejected.message,
        }
    except Exception as error:  # PyAV / decode errors on a file that probed fine: record, go on
        return [], {
            "content_hash": video["content_hash"],
            "landing_name": video["landing_name"],
            "error_class": "SplitFailed",
            "error_message": f"{type(error).__name__}: {error}",
        }
    rows = []
    for clip_id, result in zip(ids, results):
        span = result.span
        rows.append(
            {
                "clip_id": clip_id,
                "source_hash": video["content_hash"],
                "source_name": video["landing_name"],
                "batch": video["batch"],
                "start_frame": span.start_frame,
                "end_frame": span.end_frame,
                "start_s": round(result.start_s, 4),
                "end_s": round(result.end_s, 4),
                "duration_s": round(result.frames / result.fps, 4),
                "width": result.width,
                "height": result.height,
                "fps": round(result.fps, 4),
                "frames": result.frames,
                "path": store.ref(clip_key(clip_id, recipe)),
                "thumbnail_path": store.ref(thumbnail_key(clip_id, recipe)),
                "proxy_path": store.ref(proxy_key(clip_id, recipe)),
                "split_method": split.method,
                "shot_model": getattr(detector, "model_name", None) if split.method != "fixed_stride" else None,
                "shot_model_version": getattr(detector, "model_version", None) if split.method != "fixed_stride" else None,
                "signals": result.signals.as_row() if result.signals else None,
                "scene_id": video.get("scene_id"),
                "camera": video.get("camera"),
                "scene_clip_id": scene_clip_id(video["scene_id"], span.start_frame, span.end_frame) if video.get("scene_id") else None,
            }
        )
    store.write_json(record, rows, indent=None)
    return rows, None
