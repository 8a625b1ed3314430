"""Per-clip quality signals and the filter that turns them into keep / reject with reasons.

Signals are measured on the luma plane of a few frames per second (2 by default, as cosmos-curate
samples motion), at the clip's output resolution, so they do not depend on the source's size:
- motion: dense optical flow (Farnebäck) between consecutive samples on a 160-px-wide copy, as a
  fraction of the frame width per second; the global mean, and the minimum over a 4x4 grid of
  patches of each patch's mean (a frozen region, e.g. a static overlay or a paused feed, shows there);
- sharpness: variance of the Laplacian on a 320-px-wide copy (median over samples);
- exposure: mean luma in [0, 1] (black to white) and the shares of crushed-black and blown-out pixels;
- bars: share of the height (letterbox) and width (pillarbox) taken by uniform dark bars.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from cosmos_assets.common.knobs import knob

MOTION_WIDTH = 160
SHARPNESS_WIDTH = 320
PATCH_GRID = 4


@dataclass(frozen=True)
class ClipSignals:
    motion_global: float
    motion_patch_min: float
    sharpness: float
    brightness: float
    dark_fraction: float
    bright_fraction: float
    letterbox_fraction: float
    pillarbox_fraction: float
    samples: int

    def as_row(self) -> dict:
        return asdict(self)


def _resize_width(gray: np.ndarray, width: int) -> np.ndarray:
    height = max(1, round(gray.shape[0] * width / gray.shape[1]))
    return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)


def bar_fraction(profile_mean: np.ndarray, profile_std: np.ndarray) -> float:
    """Share of a luma profile (rows or columns) covered by dark, uniform bars at both ends."""
    is_bar = (profile_mean < 30) & (profile_std < 8)
    length = len(is_bar)
    leading = int(np.argmin(is_bar)) if not is_bar.all() else length
    trailing = int(np.argmin(is_bar[::-1])) if not is_bar.all() else 0
    return (leading + trailing) / length


@dataclass
class SignalAccumulator:
    """Collects measurements from sampled luma frames of one clip, in order."""

    sample_interval_s: float = 0.5
    _previous_small: np.ndarray | None = None
    _previous_time: float | None = None
    _global: list = field(default_factory=list)
    _patch_sums: np.ndarray | None = None
    _sharpness: list = field(default_factory=list)
    _brightness: list = field(default_factory=list)
    _dark: list = field(default_factory=list)
    _bright: list = field(default_factory=list)
    _letterbox: list = field(default_factory=list)
    _pillarbox: list = field(default_factory=list)

    def add(self, luma: np.ndarray, time_s: float | None = None) -> None:
        """Measure one sampled luma frame taken ``time_s`` seconds into the clip."""
        luma = np.ascontiguousarray(luma)
        medium = _resize_width(luma, SHARPNESS_WIDTH)
        self._sharpness.append(float(cv2.Laplacian(medium, cv2.CV_64F).var()))
        # The Y plane of an H.264 clip is limited range: 16 is black and 235 is white.
        self._brightness.append(float(np.clip((medium.mean() - 16.0) / 219.0, 0.0, 1.0)))
        self._dark.append(float((medium < 20).mean()))
        self._bright.append(float((medium > 245).mean()))
        self._letterbox.append(bar_fraction(medium.mean(axis=1), medium.std(axis=1)))
        self._pillarbox.append(bar_fraction(medium.mean(axis=0), medium.std(axis=0)))

        small = _resize_width(luma, MOTION_WIDTH)
        if self._previous_small is not None:
            flow = cv2.calcOpticalFlowFarneback(self._previous_small, small, None, 0.5, 3, 15, 3, 5, 1.2, 0)
            interval = (
                time_s - self._previous_time
                if time_s is not None and self._previous_time is not None and time_s > self._previous_time
                else self.sample_interval_s
            )
            magnitude = np.hypot(flow[..., 0], flow[..., 1]) / MOTION_WIDTH / interval
            self._global.append(float(magnitude.mean()))
            height, width = magnitude.shape
            patches = (
                magnitude[: height // PATCH_GRID * PATCH_GRID, : width // PATCH_GRID * PATCH_GRID]
                .reshape(PATCH_GRID, height // PATCH_GRID, PATCH_GRID, width // PATCH_GRID)
                .mean(axis=(1, 3))
            )
            self._patch_sums = patches if self._patch_sums is None else self._patch_sums + patches
        self._previous_small = small
        self._previous_time = time_s

    def result(self) -> ClipSignals | None:
        if not self._sharpness:
            return None
        pairs = len(self._global)
        return ClipSignals(
            motion_global=float(np.mean(self._global)) if pairs else 0.0,
            motion_patch_min=float((self._patch_sums / pairs).min()) if pairs else 0.0,
            sharpness=float(np.median(self._sharpness)),
            brightness=float(np.mean(self._brightness)),
            dark_fraction=float(np.mean(self._dark)),
            bright_fraction=float(np.mean(self._bright)),
            letterbox_fraction=float(np.median(self._letterbox)),
            pillarbox_fraction=float(np.median(self._pillarbox)),
            samples=len(self._sharpness),
        )


@dataclass(frozen=True)
class FilterThresholds:
    """Keep a clip only if every signal is inside these bounds (defaults suit real footage)."""

    min_motion_global: float = knob(
        0.001, "Least mean motion (optical flow, in frame widths per second); stiller clips are rejected as `static`.")
    min_motion_patch_min: float = knob(
        0.0, "Least motion of the stillest of 4x4 patches (frame widths per second); below it a frozen region "
             "(an overlay, a paused feed) rejects the clip as `frozen_region`. 0 turns the check off.")
    min_sharpness: float = knob(
        10.0, "Least sharpness (variance of the Laplacian on a 320-px-wide copy, median over samples); "
              "blurrier clips are rejected as `blurry`.")
    min_brightness: float = knob(0.06, "Least mean luma (0 black .. 1 white); darker clips are rejected as `too_dark`.")
    max_brightness: float = knob(0.94, "Most mean luma (0 black .. 1 white); brighter clips are rejected as `too_bright`.")
    max_bar_fraction: float = knob(
        0.2, "Most share (0..1) of the height or width taken by letterbox or pillarbox bars; more is rejected as `bars`.")
    min_duration_s: float = knob(2.0, "Shortest clip kept, in seconds; shorter clips are rejected as `too_short`.")


def rejection_reasons(row: dict, thresholds: FilterThresholds) -> list[str]:
    """Why a scored clip fails the thresholds; empty when it passes."""
    reasons = []
    if row.get("motion_global") is None:
        return ["no_signals: the clip had no decodable frame to measure"]
    if row["motion_global"] < thresholds.min_motion_global:
        reasons.append(f"static: motion {row['motion_global']:.5f} < {thresholds.min_motion_global}")
    if row["motion_patch_min"] < thresholds.min_motion_patch_min:
        reasons.append(
            f"frozen_region: patch motion {row['motion_patch_min']:.6f} < {thresholds.min_motion_patch_min}"
        )
    if row["sharpness"] < thresholds.min_sharpness:
        reasons.append(f"blurry: sharpness {row['sharpness']:.1f} < {thresholds.min_sharpness}")
    if row["brightness"] < thresholds.min_brightness:
        reasons.append(f"too_dark: brightness {row['brightness']:.3f} < {thresholds.min_brightness}")
    if row["brightness"] > thresholds.max_brightness:
        reasons.append(f"too_bright: brightness {row['brightness']:.3f} > {thresholds.max_brightness}")
    bars = max(row["letterbox_fraction"], row["pillarbox_fraction"])
    if bars > thresholds.max_bar_fraction:
        reasons.append(f"bars: {bars:.2f} of the frame is letterbox/pillarbox > {thresholds.max_bar_fraction}")
    if row.get("duration_s", thresholds.min_duration_s) < thresholds.min_duration_s:
        reasons.append(f"too_short: {row['duration_s']:.2f} s < {thresholds.min_duration_s} s")
    return reasons


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]
