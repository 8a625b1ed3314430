"""Multi-camera scenes: a folder of synchronised camera videos landed, curated and generated as one unit.

A scene is a folder in the landing zone holding ``scene.json`` and one video per camera::

    {"scene": "crossing_42", "cameras": {"front": "front.mp4", "left": "left.mp4"},
     "reference_camera": "front", "rig": {...anything...}}

- **Landing**: the folder is taken whole (``hold_back_unsettled_scenes``: no file of it is batched while
  another is still changing; ``landing`` keeps its files in one batch). Names in the manifest are data: each is
  resolved below the manifest's folder (``drop_zone.member_path``), never followed elsewhere.
- **Identity**: the scene id is derived from content (camera names and the views' content hashes), so the same
  footage under another folder name is the same scene.
- **Unit rule**: a scene is usable only if every camera it names is there, decodes, and all views have the same
  frame count and frame rate; otherwise every row of the scene is rejected with the scene's error class
  (``SCENE_ERRORS``) and the rest of the batch goes on. Clips of a scene are cut on the same spans (the reference
  camera's), so clip k of every view covers the same frames and they share a ``scene_clip_id``; filtering and
  de-duplication keep or drop a scene clip as a whole.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

from cosmos_assets.common.drop_zone import (
    MAX_MANIFEST_BYTES, DroppedFile, OutsideDropZone, ScanResult, member_path, open_dropped_file, parse_manifest_bytes,
)
from cosmos_assets.common.files import stable_id

SCENE_MANIFEST = b"scene.json"
CAMERA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_CAMERAS = 16
FPS_TOLERANCE = 1e-3  # relative: 30000/1001 and 29.97 are one rate, 25 and 30 are not

# Error classes a scene's rows are rejected with; each names what the user has to fix.
BAD_MANIFEST = "BadSceneManifest"  # not JSON, a missing / malformed field, a name leaving the folder
VIEW_MISSING = "SceneViewMissing"  # a camera's file is not in the folder (or its bytes were landed before)
VIEW_REJECTED = "SceneViewRejected"  # a camera's file was landed but is not a usable video (its own row says why)
LENGTH_MISMATCH = "SceneLengthMismatch"  # views of different frame counts: not synchronised
FRAME_RATE_MISMATCH = "SceneFrameRateMismatch"  # views at different frame rates
NOT_IN_MANIFEST = "NotInSceneManifest"  # a file in a scene folder that the manifest does not name
SCENE_ERRORS = (BAD_MANIFEST, VIEW_MISSING, VIEW_REJECTED, LENGTH_MISMATCH, FRAME_RATE_MISMATCH, NOT_IN_MANIFEST)

# Rejection reasons filtered_clips gives the other views of a scene clip one of whose views failed.
SCENE_VIEW_FAILED = "scene_view_failed"
SCENE_VIEW_ABSENT = "scene_view_absent"


class SceneProblem(ValueError):
    def __init__(self, error_class: str, message: str):
        super().__init__(message)
        self.error_class = error_class
        self.message = message


@dataclass(frozen=True)
class SceneManifest:
    name: str
    cameras: tuple[tuple[str, str], ...]  # (camera, file name beside the manifest), in the manifest's order
    reference_camera: str
    rig: dict = field(default_factory=dict)

    @property
    def files(self) -> dict[str, str]:
        return dict(self.cameras)


def is_scene_manifest(relative_path: bytes) -> bool:
    return os.path.basename(relative_path) == SCENE_MANIFEST


def scene_folder(relative_path: bytes) -> bytes:
    return os.path.dirname(relative_path)


def parse_scene_manifest(data: bytes) -> SceneManifest:
    """The manifest's scene, or ``SceneProblem(BadSceneManifest)`` saying what is wrong with it."""
    try:
        parsed = parse_manifest_bytes(data, "the scene manifest")
    except ValueError as error:  # not UTF-8 JSON, or over the size / nesting limits
        raise SceneProblem(BAD_MANIFEST, str(error)) from None
    if not isinstance(parsed, dict):
        raise SceneProblem(BAD_MANIFEST, "the scene manifest must be a JSON object")
    cameras = parsed.get("cameras")
    if not isinstance(cameras, dict) or not 2 <= len(cameras) <= MAX_CAMERAS:
        raise SceneProblem(BAD_MANIFEST, f'"cameras" must map 2 to {MAX_CAMERAS} camera names to file names')
    for camera, name in cameras.items():
        if not CAMERA_NAME.match(camera):
            raise SceneProblem(BAD_MANIFEST, f"camera name {camera!r}: letters, digits, '_', '-', '.' (at most 64)")
        if not isinstance(name, str):
            raise SceneProblem(BAD_MANIFEST, f"camera {camera!r}: the file name must be a string")
        try:
            member_path(SCENE_MANIFEST, name)
        except OutsideDropZone as error:
            raise SceneProblem(BAD_MANIFEST, f"camera {camera!r}: {error}") from None
        if "/" in name or os.fsencode(name) == SCENE_MANIFEST:
            raise SceneProblem(BAD_MANIFEST, f"camera {camera!r}: {name!r} must be a file directly beside scene.json")
    if len(set(cameras.values())) != len(cameras):
        raise SceneProblem(BAD_MANIFEST, "two cameras name the same file")
    reference = parsed.get("reference_camera", next(iter(cameras)))
    if reference not in cameras:
        raise SceneProblem(BAD_MANIFEST, f"reference_camera {reference!r} is not one of the cameras")
    name = parsed.get("scene", "")
    rig = parsed.get("rig", {})
    if not isinstance(name, str) or not isinstance(rig, dict):
        raise SceneProblem(BAD_MANIFEST, '"scene" must be a string and "rig" an object')
    return SceneManifest(name[:200], tuple(cameras.items()), reference, rig)


def scene_id_of(view_hashes: dict[str, str]) -> str:
    """Content-derived: the cameras and their views' bytes, whatever the folder or manifest is called."""
    return "scene-" + stable_id("scene", sorted(view_hashes.items()))


def scene_clip_id(scene_id: str, start_frame: int, end_frame: int) -> str:
    """Shared by the clips of every view that cover frames [start_frame, end_frame) of the scene."""
    return stable_id("scene-clip", scene_id, start_frame, end_frame)


def manifest_ledger_hash(relative_path: bytes, content_hash: str) -> str:
    """The ledger's key for a scene manifest: its bytes and its folder. Content de-duplication would otherwise take
    a second scene folder whose manifest reads the same (the same camera names and file names) as already landed,
    and its views would be curated as unrelated videos."""
    import hashlib

    return hashlib.sha256(b"scene-manifest\0" + relative_path + b"\0" + content_hash.encode()).hexdigest()


# --- landing ------------------------------------------------------------------------------------------------


def hold_back_unsettled_scenes(scan: ScanResult) -> list[DroppedFile]:
    """The settled files to batch now: those of a scene folder wait until every file of the folder has settled,
    so a scene is never batched without a view that is still uploading."""
    folders = {scene_folder(e.relative_path) for e in scan.settled + scan.unsettled if is_scene_manifest(e.relative_path)}
    folders.discard(b"")  # a manifest at the zone's root is no scene folder (it is rejected when ingested)
    if not folders:
        return scan.settled
    busy = {f for f in folders if any(_inside(e.relative_path, f) for e in scan.unsettled)}
    return [e for e in scan.settled if not any(_inside(e.relative_path, f) for f in busy)]


def _inside(relative_path: bytes, folder: bytes) -> bool:
    return relative_path.startswith(folder + b"/")


def scene_unit_of(relative_paths: list[bytes]):
    """A function naming the scene folder a path belongs to (None outside scenes), for keeping a scene in one batch."""
    folders = {scene_folder(p) for p in relative_paths if is_scene_manifest(p)} - {b""}

    def unit(relative_path: bytes) -> bytes | None:
        folder = scene_folder(relative_path)
        while True:
            if not folder:
                return None
            if folder in folders:
                return folder
            folder = os.path.dirname(folder)

    return unit


# --- raw_videos ---------------------------------------------------------------------------------------------


def _reject(row: dict, error_class: str, message: str) -> None:
    row.update(status="rejected", error_class=error_class, error_message=message)


def check_views(manifest: SceneManifest, views: dict[str, dict | None]) -> SceneProblem | None:
    """The first reason the scene cannot be used, given each camera's ``raw_videos`` row (None when its file is not
    in the batch); None when every view is there, decoded, and synchronised with the others."""
    missing = [c for c, _ in manifest.cameras if views.get(c) is None]
    if missing:
        names = ", ".join(f"{c} ({manifest.files[c]!r})" for c in missing)
        return SceneProblem(VIEW_MISSING, f"no file for camera(s) {names} in this landing (missing from the folder, or its "
                                          "exact bytes were landed before: content is ingested once)")
    broken = [c for c, _ in manifest.cameras if views[c]["status"] != "ok"]
    if broken:
        return SceneProblem(VIEW_REJECTED, "; ".join(f"camera {c}: {views[c]['error_class']}" for c in broken))
    rates = {c: views[c]["average_fps"] or views[c]["real_fps"] or 0.0 for c, _ in manifest.cameras}
    low, high = min(rates.values()), max(rates.values())
    if high - low > FPS_TOLERANCE * high:
        return SceneProblem(FRAME_RATE_MISMATCH, "views at different frame rates: "
                                                 + ", ".join(f"{c} {r:.3f} fps" for c, r in rates.items()))
    frames = {c: views[c]["frames"] for c, _ in manifest.cameras}
    if len(set(frames.values())) > 1:
        return SceneProblem(LENGTH_MISMATCH, "views of different lengths (not synchronised): "
                                             + ", ".join(f"{c} {n} frames" for c, n in frames.items()))
    return None


def manifest_row(member, batch: str) -> dict:
    """The ``raw_videos`` row of a scene manifest (status ``scene`` once the scene is checked)."""
    return {"content_hash": member.content_hash, "landing_name": member.name, "batch": batch, "size_bytes": member.size,
            "status": "rejected", "error_class": None, "error_message": None, "raw_path": None,
            "supersedes": member.supersedes}


def assemble_scenes(members: list, rows: list[dict], landing) -> list[dict]:
    """Apply the scene rules to one batch's ``raw_videos`` rows (one per member, in order), in place, and return them.

    Views get ``scene_id``, ``camera`` and ``scene_reference``; a scene that breaks a rule has every row (its
    manifest's and its views') rejected with the scene's error class, and a file in a scene folder that the
    manifest does not name is rejected as ``NotInSceneManifest``. Rows outside scene folders are left as they are."""
    unit = scene_unit_of([m.relative_path for m in members])
    by_folder: dict[bytes, list[int]] = defaultdict(list)
    for index, member in enumerate(members):
        folder = unit(member.relative_path)
        if folder is not None:
            by_folder[folder].append(index)
    for folder, indexes in by_folder.items():
        manifest_index = next(i for i in indexes if members[i].relative_path == os.path.join(folder, SCENE_MANIFEST))
        head = rows[manifest_index]
        views = [i for i in indexes if i != manifest_index]
        try:
            manifest = _read_manifest(members[manifest_index], head, landing)
        except SceneProblem as problem:
            for i in [manifest_index] + views:
                _reject(rows[i], problem.error_class, f"scene {display(folder)}: {problem.message}")
            continue
        # Keyed by the path below the scene folder: a file in a subfolder is no camera's (names have no '/').
        by_name = {members[i].relative_path[len(folder) + 1:]: i for i in views}
        camera_of = {os.fsencode(name): camera for camera, name in manifest.cameras}
        for name, i in by_name.items():
            if name not in camera_of:
                _reject(rows[i], NOT_IN_MANIFEST, f"{display(members[i].relative_path)} is in scene folder "
                                                  f"{display(folder)} but its scene.json names no camera for it")
        present = {camera_of[n]: rows[i] for n, i in by_name.items() if n in camera_of}
        problem = check_views(manifest, {c: present.get(c) for c, _ in manifest.cameras})
        scene = scene_id_of({c: r["content_hash"] for c, r in present.items()})
        head.update(status="scene", scene_id=scene, scene_name=manifest.name)
        for camera, row in present.items():
            row.update(scene_id=scene, camera=camera, scene_name=manifest.name,
                       scene_reference=camera == manifest.reference_camera)
        if problem is not None:
            for row in [head] + list(present.values()):
                if row is head or row["status"] == "ok":
                    _reject(row, problem.error_class, f"scene {display(folder)}: {problem.message}")
                else:  # a view rejected for itself keeps its own class; the message names the scene too
                    row["error_message"] = f"{row['error_message']} (view {row['camera']} of scene {display(folder)})"
    for member, row in zip(members, rows):
        if is_scene_manifest(member.relative_path) and row["status"] == "rejected" and row["error_class"] is None:
            _reject(row, BAD_MANIFEST, "a scene.json at the top of the landing zone: put each scene in a folder of its own")
    return rows


def _read_manifest(member, row: dict, landing) -> SceneManifest:
    if member.content_hash is None:  # refused before reading (symlink, unreadable)
        raise SceneProblem(BAD_MANIFEST, f"{row['error_class']}: {row['error_message']}")
    try:
        with open_dropped_file(landing, member.relative_path) as stream:
            return parse_scene_manifest(stream.read(MAX_MANIFEST_BYTES + 1))
    except OSError as error:
        raise SceneProblem(BAD_MANIFEST, f"{type(error).__name__}: {error}") from None


def display(path: bytes) -> str:
    return repr(os.fsdecode(path) or ".")


# --- curation: aligned clips, unit filtering and de-duplication ----------------------------------------------


def scene_groups(videos: list[dict]) -> tuple[dict[str, list[dict]], list[dict]]:
    """``raw_videos`` ok rows split into scenes (scene id -> views, the reference camera first) and single videos."""
    scenes: dict[str, list[dict]] = defaultdict(list)
    singles = []
    for video in videos:
        (scenes[video["scene_id"]] if video.get("scene_id") else singles).append(video)
    for views in scenes.values():
        views.sort(key=lambda v: (not v.get("scene_reference"), v["camera"]))
    return dict(scenes), singles


def unit_rejections(clips: list[dict], reasons: list[list[str]]) -> list[list[str]]:
    """Per clip, its rejection reasons once scene clips are judged as units: when one view of a scene clip is
    rejected (or a camera of its scene has no clip on that span), every view of it is, the others with
    ``scene_view_failed: <camera>`` / ``scene_view_absent: <camera>``. Single clips keep their reasons."""
    cameras: dict[str, set[str]] = defaultdict(set)
    members: dict[str, list[int]] = defaultdict(list)
    for index, clip in enumerate(clips):
        if clip.get("scene_clip_id"):
            cameras[clip["scene_id"]].add(clip["camera"])
            members[clip["scene_clip_id"]].append(index)
    result = [list(r) for r in reasons]
    for indexes in members.values():
        scene = clips[indexes[0]]["scene_id"]
        failed = sorted(clips[i]["camera"] for i in indexes if reasons[i])
        absent = sorted(cameras[scene] - {clips[i]["camera"] for i in indexes})
        for i in indexes:
            result[i] += [f"{SCENE_VIEW_FAILED}: {c}" for c in failed if c != clips[i]["camera"]]
            result[i] += [f"{SCENE_VIEW_ABSENT}: {c}" for c in absent]
    return result


def unit_dedup(scene_clip_of: dict[str, str], ids: list[str], duplicate_of: list[str | None]) -> tuple[list[str | None], list[str]]:
    """Duplicates decided per clip, made per scene clip. Views of one scene clip are never duplicates of each other
    (their overlap is the point of a rig); a scene clip is dropped only when every view duplicates a clip outside
    it, and then all its views are; otherwise every view is kept. Returns (duplicate_of per clip, the ids whose
    drop was undone, for the evidence)."""
    position = {clip: i for i, clip in enumerate(ids)}
    result = list(duplicate_of)
    undone = []
    views: dict[str, list[int]] = defaultdict(list)
    for i, clip in enumerate(ids):
        if clip in scene_clip_of:
            views[scene_clip_of[clip]].append(i)
    for scene_clip, indexes in views.items():
        outside = [i for i in indexes if result[i] is not None and scene_clip_of.get(result[i]) != scene_clip]
        if len(outside) == len(indexes):
            continue  # the whole scene clip is a copy of footage kept elsewhere
        for i in indexes:
            if result[i] is not None:
                undone.append(ids[i])
                result[i] = None
    # A clip dropped as the duplicate of a view whose drop was undone still names a kept clip; one dropped as the
    # duplicate of a view dropped with its scene clip points at a clip that is itself dropped: follow it.
    for i, target in enumerate(result):
        seen = set()
        while target is not None and result[position[target]] is not None and target not in seen:
            seen.add(target)
            target = result[position[target]]
        result[i] = target
    return result, undone


SCENE_COLUMNS = ("scene_id", "camera", "scene_clip_id")


def scene_clips(store) -> dict[str, dict]:
    """Clip id -> its scene fields (``SCENE_COLUMNS``), for every clip of a scene in the ``video_clips`` tables on the
    store (the LanceDB rows and the dataset are keyed by clip id; a clip's scene is read from where it was cut)."""
    import polars as pl

    clips = store.read_partitions("video_clips")
    if clips.is_empty() or "scene_clip_id" not in clips.columns:
        return {}
    clips = clips.filter(pl.col("scene_clip_id").is_not_null()).select("clip_id", *SCENE_COLUMNS).unique("clip_id")
    return {row["clip_id"]: row for row in clips.to_dicts()}


def with_scene_columns(table, store, key: str = "clip_id"):
    """``table`` (rows keyed by clip id) with the scene columns of its clips (null for single-camera clips)."""
    import polars as pl

    found = scene_clips(store)
    return table.with_columns(**{column: pl.Series([found.get(c, {}).get(column) for c in table[key]], dtype=pl.String)
                                 for column in SCENE_COLUMNS})


def first_units(clips: list[dict], limit: int | None) -> list[dict]:
    """The clips of the first ``limit`` units, in order: a unit is a single clip or every view of a scene clip (a
    limit on source clips never takes part of a scene)."""
    if limit is None:
        return clips
    order: list[str] = []
    for clip in clips:
        unit = clip.get("scene_clip_id") or clip["clip_id"]
        if unit not in order:
            order.append(unit)
    chosen = set(order[:limit])
    return [c for c in clips if (c.get("scene_clip_id") or c["clip_id"]) in chosen]


def shared_per_scene_clip(keys: list[tuple], values: list) -> list:
    """``values`` with every item whose key's scene clip (first element; None outside scenes) and the rest of the key
    repeat an earlier item's given that earlier value: one prompt for every view of a scene clip and condition."""
    first: dict[tuple, object] = {}
    result = []
    for key, value in zip(keys, values):
        if key[0] is None:
            result.append(value)
        else:
            result.append(first.setdefault(key, value))
    return result
