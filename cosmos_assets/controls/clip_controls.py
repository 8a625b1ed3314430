"""Control videos of the source windows a generation round works from, stored once per extractor version.

A window is a clip, a start and a request geometry (size, rate, frame count): exactly the frames a request
generates from. Each of its controls is an H.264 video of that geometry under
``artefacts/synthetic/controls/<window>/<kind>-<version>.mp4``, where ``version`` digests the extractor's
identity (or the user file's content): a new extractor version is a new file, an unchanged one is reused.
A thumbnail strip (a few frames side by side) sits beside each.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cosmos_assets.common.artefacts import SYNTHETIC, ArtefactStore
from cosmos_assets.common.files import sha256_of_file, stable_id
from cosmos_assets.controls.extractors import ExtractorIdentity
from cosmos_assets.controls.user_controls import (
    ControlUnreadable, ControlVideoError, VideoFacts, check_control, controls_beside, probe_control,
)
from cosmos_assets.synthetic.video import write_jpeg, write_mp4

CONTROLS = f"{SYNTHETIC}/controls"
STRIP_FRAMES = 6
STRIP_HEIGHT = 72

# The cookbook's recipes: weather augmentation's best results came from depth 0.9 + segmentation 0.9; multi-view
# CG-to-real uses edge 0.5 + depth 0.5; ``edge`` is the single-control default the rounds have always used.
CONTROL_RECIPES: dict[str, dict[str, float]] = {
    "weather": {"depth": 0.9, "seg": 0.9},
    "cg_to_real": {"edge": 0.5, "depth": 0.5},
    "edge": {"edge": 0.9},
}


@dataclass(frozen=True)
class Window:
    """The frames a request generates from: a clip, a start in it, and the request's geometry."""

    clip_id: str
    start_s: float
    width: int
    height: int
    fps: int
    num_frames: int

    @classmethod
    def of_request(cls, request: dict) -> Window:
        return cls(request["source_clip_id"], float(request["source_start_s"] or 0.0), int(request["width"]),
                   int(request["height"]), int(request["fps"]), int(request["num_frames"]))

    @property
    def id(self) -> str:
        return stable_id("control-window", self.clip_id, self.start_s, self.width, self.height, self.fps, self.num_frames)


def requested_kinds(requests: list[dict]) -> list[str]:
    """The control kinds the requests of a round ask for (their ``controls`` JSON), in first-seen order."""
    kinds: dict[str, None] = {}
    for request in requests:
        for name in json.loads(request.get("controls") or "{}"):
            kinds[name] = None
    return list(kinds)


def control_key(window: Window, kind: str, version: str) -> str:
    return f"{CONTROLS}/{window.id[:2]}/{window.id}/{kind}-{version}.mp4"


def identity_version(identity: ExtractorIdentity) -> str:
    return stable_id("extractor", json.dumps(identity.as_dict(), sort_keys=True))[:12]


def thumbnail_strip(video: np.ndarray, frames: int = STRIP_FRAMES, height: int = STRIP_HEIGHT) -> np.ndarray:
    """A few frames of a video, evenly spread, side by side at ``height`` pixels: uint8 H x W x 3."""
    picks = np.linspace(0, len(video) - 1, min(frames, len(video))).round().astype(int)
    width = max(1, round(video.shape[2] * height / video.shape[1]))
    return np.hstack([cv2.resize(video[i], (width, height), interpolation=cv2.INTER_AREA) for i in picks])


def store_control(store: ArtefactStore, window: Window, kind: str, version: str, make_video) -> tuple[str, str, bool]:
    """Write a control video (H.264, the project's encoder) and its strip unless this version is stored;
    returns (video ref, strip ref, reused). ``make_video`` is only called when the file is missing."""
    key = control_key(window, kind, version)
    strip_key = key.removesuffix(".mp4") + ".strip.jpg"
    reused = store.exists(key) and store.exists(strip_key)
    if not reused:
        video = make_video()
        expected = (window.num_frames, window.height, window.width, 3)
        if video.shape != expected:
            raise ValueError(f"{kind} control came out {video.shape}, expected {expected}")
        with store.writing(strip_key) as tmp:
            write_jpeg(tmp, thumbnail_strip(video))
        with store.writing(key) as tmp:  # the video last: its presence marks the pair complete
            write_mp4(tmp, video, window.fps)
    return store.ref(key), store.ref(strip_key), reused


@dataclass(frozen=True)
class UserControl:
    """A user-supplied control video found beside a clip's RGB video, checked against it."""

    kind: str
    relative_path: bytes  # inside the landing zone
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return os.fsdecode(self.relative_path)


def user_controls_of(landing: Path, rgb_relative: bytes | str, rgb: VideoFacts | None) -> tuple[dict[str, UserControl], dict[str, ControlVideoError]]:
    """The usable user-supplied controls beside an RGB video, and the refused ones with their error."""
    usable: dict[str, UserControl] = {}
    refused: dict[str, ControlVideoError] = {}
    for kind, relative in controls_beside(landing, rgb_relative).items():
        path = Path(os.fsdecode(os.path.join(os.fsencode(landing), relative)))
        try:
            if rgb is None:
                raise ControlUnreadable("the RGB video's facts are not known (no raw_videos row for its content)")
            check_control(probe_control(path), rgb, kind)
            usable[kind] = UserControl(kind, relative, path, sha256_of_file(path))
        except ControlVideoError as error:
            refused[kind] = error
    return usable, refused


def profile_recipe(profile: str | None = None) -> str | None:
    """The recipe a profile's rounds use unless configured: the cookbook's weather recipe where real depth and
    segmentation models run (``gpu``, ``k8s``); none on a laptop (``local``: its classical backend uses no control,
    and its demo extracts no depth or segmentation)."""
    from cosmos_assets.settings import cosmos_profile

    return None if (profile or cosmos_profile()) == "local" else "weather"


def control_weights(recipe: str | None, weights: dict[str, float] | None, single: str, single_weight: float) -> dict[str, float]:
    """The control weights of a round's requests: explicit ``weights`` win, then a named recipe (``single``: none),
    then one control."""
    if recipe == "single":
        recipe = None
    if weights:
        chosen = {str(k): float(v) for k, v in weights.items()}
    elif recipe:
        if recipe not in CONTROL_RECIPES:
            raise ValueError(f"control recipe {recipe!r}; known: {', '.join(CONTROL_RECIPES)}")
        chosen = dict(CONTROL_RECIPES[recipe])
    else:
        chosen = {single: float(single_weight)}
    bad = {k: v for k, v in chosen.items() if not 0.0 <= v <= 2.0}
    if bad:
        raise ValueError(f"control weights must lie in [0, 2]: {bad}")
    return chosen


def round_controls(store: ArtefactStore, partition: str) -> dict[tuple[str, str], dict]:
    """(window id, kind) -> the usable ``clip_controls`` row of a round, read from the store (empty before it ran)."""
    import polars as pl

    from cosmos_assets.common.artefacts import table_key

    key = table_key("clip_controls", partition)
    if not store.exists(key):
        return {}
    rows = store.read_parquet(key).filter(pl.col("status") == "ok").to_dicts()
    return {(row["window_id"], row["kind"]): row for row in rows}


def request_control_frames(store: ArtefactStore, stored: dict[tuple[str, str], dict], request: dict) -> dict[str, np.ndarray]:
    """The stored control videos (uint8 T x H x W x 3) of a request's controls; kinds with none stored are left out."""
    from cosmos_assets.synthetic.video import read_video

    window = Window.of_request(request)
    frames = {}
    for kind in json.loads(request.get("controls") or "{}"):
        row = stored.get((window.id, kind))
        if row is not None:
            frames[kind] = read_video(store.local_path(row["path"]))[0]
    return frames
