"""The classical CPU generator of the ``local`` profile: weather and lighting applied to a real clip.

A Transfer-style augmentation without a diffusion model: the source clip's structure and motion stay,
the condition is rendered over it with image operations. Every candidate draws its own parameters
(intensity, tint, particle field, wind) from its seed, and those parameters hold for the whole clip;
particles (rain streaks, snowflakes) and fog patches move continuously over time, so nothing flickers
from frame to frame. Same frames, condition and seed: the same output, byte for byte.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

CLASSICAL_GENERATOR = "classical-weather"
CLASSICAL_VERSION = "1"
CHUNK_FRAMES = 16

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return round(float(rng.uniform(low, high)), 4)


def _luma(video: np.ndarray) -> np.ndarray:
    return video @ _LUMA


def _desaturate(video: np.ndarray, amount: float) -> np.ndarray:
    return video * (1 - amount) + _luma(video)[..., None] * amount


def _smoothstep(low: float, high: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _vignette(height: int, width: int, strength: float) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.hypot((x - width / 2) / (width / 2), (y - height / 2) / (height / 2)) / math.sqrt(2)
    return (1 - strength * r**2)[..., None].astype(np.float32)


def _wide_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of large sigma, computed at a quarter of the size (the result is smooth anyway)."""
    height, width = image.shape[:2]
    if sigma < 8 or min(height, width) < 64:
        return cv2.GaussianBlur(image, (0, 0), max(1.0, sigma))
    small = cv2.resize(image, (width // 4, height // 4), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / 4), (width, height), interpolation=cv2.INTER_LINEAR)


def _rows(height: int) -> np.ndarray:
    """0 at the top row, 1 at the bottom: the sky and far scene are usually at the top."""
    return np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]


# --- rain ------------------------------------------------------------------------------------------------


def _rain_params(rng):
    return {"density": _uniform(rng, 5.0, 9.0), "angle_deg": _uniform(rng, -18, 18), "length": _uniform(rng, 0.05, 0.1),
            "speed": _uniform(rng, 1.2, 1.8), "streak_alpha": _uniform(rng, 0.3, 0.5), "exposure": _uniform(rng, 0.72, 0.88),
            "desaturate": _uniform(rng, 0.3, 0.5), "haze": _uniform(rng, 0.08, 0.16)}


def _rain(video, p, rng, fps, first):
    frames, height, width, _ = video.shape
    base = _desaturate(video, p["desaturate"]) * p["exposure"] * np.array([0.93, 0.97, 1.04], np.float32)
    base = base * (1 - p["haze"]) + 0.55 * p["haze"]
    count = int(p["density"] * height * width / 1000)
    depth = rng.uniform(0.3, 1.0, count)  # near streaks are longer, faster and brighter
    x0, y0 = rng.uniform(0, width, count), rng.uniform(0, height, count)
    length = p["length"] * height * (0.4 + depth)
    speed = p["speed"] * height * (0.5 + depth)  # pixels per second along the streak
    angle = math.radians(p["angle_deg"])
    dx, dy = math.sin(angle), math.cos(angle)
    span = height + length.max()
    groups = np.digitize(depth, [0.55, 0.8])
    out = np.empty_like(base)
    for index in range(frames):
        travel = speed * (first + index) / fps
        y = (y0 + travel * dy) % span - length.max()
        x = (x0 + travel * dx) % width
        layer = np.zeros((height, width), np.float32)
        for group, alpha in enumerate((0.45, 0.7, 1.0)):
            chosen = groups == group
            ends = np.stack([x[chosen], y[chosen], x[chosen] + dx * length[chosen], y[chosen] + dy * length[chosen]], axis=1)
            lines = np.rint(ends * 4).astype(np.int32).reshape(-1, 2, 2)  # shift=2: quarter-pixel positions
            cv2.polylines(layer, list(lines), False, alpha, 1, cv2.LINE_AA, shift=2)
        layer = cv2.GaussianBlur(layer, (0, 0), 0.6)[..., None] * p["streak_alpha"]
        out[index] = base[index] * (1 - layer) + 0.85 * layer
    return out


# --- snow ------------------------------------------------------------------------------------------------


def _snow_params(rng):
    return {"density": _uniform(rng, 2.0, 4.0), "fall": _uniform(rng, 0.12, 0.25), "wind": _uniform(rng, -0.08, 0.08),
            "sway": _uniform(rng, 0.006, 0.015), "flake_alpha": _uniform(rng, 0.75, 0.95), "haze": _uniform(rng, 0.15, 0.3),
            "desaturate": _uniform(rng, 0.25, 0.45)}


def _snow(video, p, rng, fps, first):
    frames, height, width, _ = video.shape
    base = _desaturate(video, p["desaturate"]) * np.array([0.95, 0.98, 1.05], np.float32)
    base = base * (1 - p["haze"]) + 0.92 * p["haze"]
    count = int(p["density"] * height * width / 1000)
    radius = rng.choice([0, 1, 2], size=count, p=[0.55, 0.32, 0.13])  # 1, 3 and 5 pixel flakes
    x0, y0 = rng.uniform(0, width, count), rng.uniform(0, height, count)
    fall = p["fall"] * height * (0.6 + 0.25 * radius)  # bigger (nearer) flakes fall faster
    frequency, phase = rng.uniform(0.3, 1.0, count), rng.uniform(0, 2 * np.pi, count)
    kernels = [cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)) for r in range(3)]
    out = np.empty_like(base)
    for index in range(frames):
        seconds = (first + index) / fps
        x = (x0 + p["wind"] * width * seconds + p["sway"] * width * np.sin(2 * np.pi * frequency * seconds + phase)) % width
        y = (y0 + fall * seconds) % height
        layer = np.zeros((height, width), np.float32)
        for r, kernel in enumerate(kernels):
            dots = np.zeros((height, width), np.float32)
            chosen = radius == r
            dots[y[chosen].astype(int), x[chosen].astype(int)] = 1.0
            layer = np.maximum(layer, cv2.dilate(dots, kernel))
        layer = cv2.GaussianBlur(layer, (0, 0), 0.7)[..., None] * p["flake_alpha"]
        out[index] = base[index] * (1 - layer) + 0.97 * layer
    return out


# --- fog -------------------------------------------------------------------------------------------------


def _fog_params(rng):
    return {"density": _uniform(rng, 1.1, 1.9), "patchiness": _uniform(rng, 0.25, 0.5), "airlight": _uniform(rng, 0.72, 0.86),
            "depth_gamma": _uniform(rng, 0.8, 1.4), "drift_x": _uniform(rng, -0.06, 0.06), "drift_y": _uniform(rng, -0.02, 0.02)}


def _fog(video, p, rng, fps, first):
    frames, height, width, _ = video.shape
    # Fog patches: smooth noise twice the frame size, drifting with the wind and wrapping around.
    coarse = rng.random((6, 10)).astype(np.float32)
    field = cv2.resize(coarse, (2 * width, 2 * height), interpolation=cv2.INTER_CUBIC)
    field = cv2.GaussianBlur(field, (0, 0), max(2.0, width / 20))
    field = (field - field.min()) / max(1e-6, float(field.max() - field.min()))
    depth = (1 - _rows(height)) ** p["depth_gamma"] * 0.8 + 0.2  # far at the top of the frame
    airlight = p["airlight"] * np.array([0.97, 0.98, 1.0], np.float32)
    out = np.empty_like(video)
    for index in range(frames):
        seconds = (first + index) / fps
        rows = (np.arange(height) + int(round(p["drift_y"] * height * seconds))) % (2 * height)
        cols = (np.arange(width) + int(round(p["drift_x"] * width * seconds))) % (2 * width)
        patches = field[np.ix_(rows, cols)]
        transmission = np.exp(-p["density"] * depth * (1 + p["patchiness"] * (2 * patches - 1)))[..., None]
        out[index] = _desaturate(video[index], 0.2) * transmission + airlight * (1 - transmission)
    return out


# --- night and dusk --------------------------------------------------------------------------------------


def _night_params(rng):
    return {"exposure": _uniform(rng, 0.04, 0.09), "light_threshold": _uniform(rng, 0.78, 0.9), "glow": _uniform(rng, 0.25, 0.5),
            "desaturate": _uniform(rng, 0.35, 0.55), "vignette": _uniform(rng, 0.25, 0.45)}


def _night(video, p, rng, fps, first):
    frames, height, width, _ = video.shape
    linear = video**2.2
    # Light sources (the brightest pixels) stay lit and glow; everything else loses about four stops.
    lights = linear * _smoothstep(p["light_threshold"], 1.0, _luma(video))[..., None]
    dark = _desaturate(linear * p["exposure"], p["desaturate"]) * np.array([0.7, 0.85, 1.2], np.float32)
    glow = np.stack([_wide_blur(frame, 0.02 * width) for frame in lights]) * p["glow"]
    return (np.clip(dark + 0.9 * lights + glow, 0, 1) ** (1 / 2.2)) * _vignette(height, width, p["vignette"])


def _dusk_params(rng):
    return {"exposure": _uniform(rng, 0.35, 0.6), "glow": _uniform(rng, 0.3, 0.5), "glow_falloff": _uniform(rng, 1.2, 2.2),
            "warmth": _uniform(rng, 0.8, 1.0), "vignette": _uniform(rng, 0.2, 0.35)}


def _dusk(video, p, rng, fps, first):
    frames, height, width, _ = video.shape
    warm = np.array([1.0 + 0.15 * p["warmth"], 1.0 - 0.08 * p["warmth"], 1.0 - 0.35 * p["warmth"]], np.float32)
    graded = np.clip(video**2.2 * p["exposure"] * warm, 0, 1) ** (1 / 2.2)
    sky = ((1 - _rows(height)) ** p["glow_falloff"] * p["glow"])[..., None] * np.array([1.0, 0.5, 0.25], np.float32)
    return (1 - (1 - graded) * (1 - sky)) * _vignette(height, width, p["vignette"])  # screen blend of the sky glow


_AUGMENTATIONS = {
    "rain": (_rain_params, _rain),
    "snow": (_snow_params, _snow),
    "fog": (_fog_params, _fog),
    "night": (_night_params, _night),
    "dusk": (_dusk_params, _dusk),
}


def augmentation_parameters(condition: str, seed: int) -> dict:
    """The parameters a seed gives a condition (recorded with every candidate)."""
    return _AUGMENTATIONS[condition][0](np.random.default_rng([seed, _condition_salt(condition)]))


def _condition_salt(condition: str) -> int:
    # The same seed under two conditions should not share particle fields.
    return sum((i + 1) * ord(c) for i, c in enumerate(condition))


def augment(frames: np.ndarray, condition: str, seed: int, fps: float) -> tuple[np.ndarray, dict]:
    """Render ``condition`` over uint8 T×H×W×3 ``frames``; returns the new frames and the parameters used.

    Frames are rendered in chunks (a 93-frame 720p clip in float32 would be a gigabyte); every chunk draws the
    same particle field from the seed, and time runs on from chunk to chunk, so chunking changes nothing."""
    if condition not in _AUGMENTATIONS:
        raise ValueError(f"no classical augmentation for {condition!r}; known: {', '.join(_AUGMENTATIONS)}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames of shape T x H x W x 3, got {frames.dtype} {frames.shape}")
    sample_parameters, render = _AUGMENTATIONS[condition]
    params = augmentation_parameters(condition, seed)
    out = np.empty_like(frames)
    for first in range(0, len(frames), CHUNK_FRAMES):
        chunk = frames[first:first + CHUNK_FRAMES].astype(np.float32) / 255.0
        particles = np.random.default_rng([seed, _condition_salt(condition), 1])
        rendered = render(chunk, params, particles, float(fps), first)
        out[first:first + CHUNK_FRAMES] = np.clip(np.rint(rendered * 255.0), 0, 255).astype(np.uint8)
    return out, params
