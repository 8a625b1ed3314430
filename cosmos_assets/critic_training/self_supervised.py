"""Self-supervised plausibility labels from real clips: the laptop critic's training data when no one has
labelled anything.

A real clip played as recorded is plausible; the same frames played in an order no camera records are
not. From each clip (frames sampled at a fixed rate) come windows of ``window_frames`` frames:

- ``original`` and ``offset``: the clip as recorded, at its start and at other offsets (plausible);
- ``reversed``: a window played backwards;
- ``shuffled``: a window in a random order (few neighbours stay neighbours);
- ``frozen``: one frame held from a point in the window to its end (the picture stops, time goes on);
- ``stuttered``: bursts where a frame is repeated and then the frames it stood in for are dropped, so the
  video keeps time on average but moves in jerks;
- ``speed_jump``: a window that suddenly skips ahead by ``jump`` frames and carries on.

A variant is a tuple of indices into the clip's frames, so every variant of a clip shares its frames (and
their features, which the critic computes once per clip).

The trap: on a nearly static clip (a parked camera, a pause between gestures) reversing, shuffling or
freezing changes nothing anyone can see, and labelling such a variant implausible would teach the critic
that a still scene is implausible. Every implausible variant carries the visible change its edit makes
(``evidence``, mean absolute change of blurred, coarse luma in 0..1 over the frames the edit touches); a
variant whose evidence is below ``min_visible_change`` is skipped and the reason recorded, never labelled.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from cosmos_assets.common.knobs import knob

PLAUSIBLE_KINDS = ("original", "offset")
IMPLAUSIBLE_KINDS = ("reversed", "shuffled", "frozen", "stuttered", "speed_jump")
VARIANT_KINDS = PLAUSIBLE_KINDS + IMPLAUSIBLE_KINDS
COARSE_WIDTH = 64  # motion is judged on 64-pixel-wide blurred luma: sensor noise and compression grain average out


@dataclass(frozen=True)
class SelfSupervisedSettings:
    """How plausibility labels are derived from real clips."""

    fps: float = knob(10.0, "Frames per second sampled from each clip (the critic sees videos at this rate).")
    window_frames: int = knob(16, "Frames per example (1.6 s at 10 fps).")
    offset_windows: int = knob(4, "Plausible windows per clip besides the one at its start (spread over the clip).")
    kinds: tuple[str, ...] = knob(IMPLAUSIBLE_KINDS, "Implausible variants made from each clip.")
    variants_per_kind: int = knob(2, "Variants of each implausible kind per clip (each at its own random window).")
    min_visible_change: float = knob(
        0.003, "Mean change of coarse luma (0..1) an edit must make to count as visible; below it the variant is "
               "skipped, not labelled implausible (a still scene played backwards is still a plausible still scene).")
    jump_frames: tuple[int, int] = knob((5, 10), "A speed jump skips this many frames (at least, at most).")
    stutter_bursts: int = knob(2, "Bursts of repeated-then-dropped frames in a stuttered window.")
    seed: int = knob(0, "Seed of offsets, permutations and burst positions (with the clip id).")

    def version(self) -> str:
        digest = hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]
        return f"self-supervised/1+{digest}"


@dataclass(frozen=True)
class SourceClip:
    """A real clip's frames (uint8 T×H×W×3 RGB at ``fps``), the clip id and the source video it was cut from
    (train / test splits go by source video, so two clips of one video never land on both sides)."""

    clip_id: str
    video: str
    frames: np.ndarray = field(repr=False, compare=False)
    fps: float

    def __post_init__(self):
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"clip {self.clip_id}: frames must be uint8 T×H×W×3, got {self.frames.dtype} {self.frames.shape}")

    @property
    def digest(self) -> str:
        """Content hash of the frames: cached features are valid for exactly these pixels."""
        return hashlib.sha256(np.ascontiguousarray(self.frames).data).hexdigest()[:16]


@dataclass(frozen=True)
class PlausibilityExample:
    """One labelled video: ``clip.frames[indices]`` played at ``clip.fps``."""

    clip: SourceClip = field(repr=False)
    kind: str
    plausible: bool
    indices: tuple[int, ...]
    evidence: float | None = None  # visible change the edit makes (implausible kinds only)

    @property
    def clip_id(self) -> str:
        return self.clip.clip_id

    @property
    def video(self) -> str:
        return self.clip.video

    def frames(self) -> np.ndarray:
        return self.clip.frames[list(self.indices)]


@dataclass(frozen=True)
class SkippedVariant:
    clip_id: str
    kind: str
    reason: str


@dataclass
class ClipVariants:
    clip: SourceClip
    examples: list[PlausibilityExample]
    skipped: list[SkippedVariant]


def coarse_luma(frames: np.ndarray, width: int = COARSE_WIDTH) -> np.ndarray:
    """Blurred luma in 0..1 at ``width`` pixels wide (float32 T×h×w), where motion is measured."""
    height = max(4, round(frames.shape[1] * width / frames.shape[2]))
    out = np.empty((len(frames), height, width), np.float32)
    for index, frame in enumerate(frames):
        gray = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (width, height), interpolation=cv2.INTER_AREA)
        out[index] = cv2.GaussianBlur(gray.astype(np.float32) / 255.0, (0, 0), 1.0)
    return out


def step_changes(luma: np.ndarray) -> np.ndarray:
    """Mean absolute change between consecutive frames (length T-1)."""
    return np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2)) if len(luma) > 1 else np.zeros(0, np.float32)


def _rng(seed: int, clip_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha256(clip_id.encode()).hexdigest()[:15], 16)])


def _shuffled(window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation in which at most a quarter of the neighbours stay neighbours (in either direction),
    so the result never passes for a mostly intact or reversed window."""
    for _ in range(100):
        order = rng.permutation(len(window))
        kept = np.abs(np.diff(order)) == 1
        if kept.mean() <= 0.25:
            return window[order]
    raise RuntimeError("no shuffle found")  # unreachable for windows of 4 frames or more


def _stuttered(window: np.ndarray, bursts: int, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The window with ``bursts`` places where a frame is held for ``r`` (2-3) steps and the ``r`` frames it
    stood in for are dropped: the video keeps time, but stops and lurches. Returns the indices and the
    (position, r) of each burst."""
    indices = window.copy()
    done: list[tuple[int, int]] = []
    for slot in np.array_split(np.arange(1, len(window) - 1), bursts):
        repeat = int(rng.integers(2, 4))
        if len(slot) < repeat + 1:
            continue
        at = int(rng.integers(slot[0], slot[-1] - repeat + 1))
        indices[at + 1:at + 1 + repeat] = indices[at]
        done.append((at, repeat))
    return indices, done


def plausibility_variants(clip: SourceClip, settings: SelfSupervisedSettings = SelfSupervisedSettings()) -> ClipVariants:
    """The labelled windows of one clip, and the variants left out with the reason.

    Deterministic: the same clip id, frames and settings give the same examples on every machine.
    """
    length, total = settings.window_frames, len(clip.frames)
    if length < 4:
        raise ValueError("window_frames must be at least 4")
    unknown = set(settings.kinds) - set(IMPLAUSIBLE_KINDS)
    if unknown:
        raise ValueError(f"unknown variant kinds {sorted(unknown)}; expected some of {IMPLAUSIBLE_KINDS}")
    if total < length:
        return ClipVariants(clip, [], [SkippedVariant(clip.clip_id, kind, f"clip has {total} frames, fewer than a "
                                                      f"{length}-frame window") for kind in VARIANT_KINDS])
    rng = _rng(settings.seed, clip.clip_id)
    changes = step_changes(coarse_luma(clip.frames))  # changes[i]: frame i -> i + 1
    threshold = settings.min_visible_change
    examples: list[PlausibilityExample] = []
    skipped: list[SkippedVariant] = []

    def window_change(start: int, end: int) -> float:
        """Mean change per step over frames [start, end] of the clip."""
        return float(changes[start:end].mean()) if end > start else 0.0

    def add(kind: str, indices: np.ndarray, evidence: float | None, what: str = "") -> None:
        if evidence is not None and evidence < threshold:
            skipped.append(SkippedVariant(clip.clip_id, kind, f"nearly static: the edit changes coarse luma by {evidence:.4f} "
                                          f"per frame over {what}, below the visible {threshold}; not implausible"))
            return
        examples.append(PlausibilityExample(clip, kind, kind in PLAUSIBLE_KINDS, tuple(int(i) for i in indices),
                                            None if evidence is None else round(evidence, 6)))

    add("original", np.arange(length), None)
    room = total - length
    offsets = sorted({round(room * (k + 1) / settings.offset_windows) for k in range(settings.offset_windows)} - {0})
    for offset in offsets:
        add("offset", offset + np.arange(length), None)
    for kind in [k for k in settings.kinds for _ in range(settings.variants_per_kind)]:
        start = int(rng.integers(0, room + 1))
        window = start + np.arange(length)
        if kind == "reversed":
            add(kind, window[::-1], window_change(start, start + length - 1), "the window")
        elif kind == "shuffled":
            add(kind, _shuffled(window, rng), window_change(start, start + length - 1), "the window")
        elif kind == "frozen":
            held = int(rng.integers(length // 4, length // 2 + 1))
            indices = window.copy()
            indices[held:] = window[held]
            # What the freeze hides: the motion of the frames it replaces.
            add(kind, indices, window_change(start + held, start + length - 1), "the frozen stretch")
        elif kind == "stuttered":
            indices, bursts = _stuttered(window, settings.stutter_bursts, rng)
            # What a burst hides: the motion from the held frame to the frame it resumes at.
            spans = [window_change(int(window[at]), int(window[at]) + repeat + 1) for at, repeat in bursts]
            add(kind, indices, float(np.mean(spans)) if spans else 0.0, "the stuttering bursts")
        elif kind == "speed_jump":
            low, high = settings.jump_frames
            if room < low:
                skipped.append(SkippedVariant(clip.clip_id, kind, f"clip has {total} frames: no room for a {low}-frame "
                                              f"jump in a {length}-frame window"))
                continue
            jump = int(rng.integers(low, min(high, room) + 1))
            start = int(rng.integers(0, room - jump + 1))
            at = int(rng.integers(length // 4, 3 * length // 4))  # the jump follows frame ``at`` of the window
            indices = start + np.arange(length)
            indices[at + 1:] += jump
            # Visible if the cut's change stands out from the window's own steps.
            luma = coarse_luma(clip.frames[[indices[at], indices[at + 1]]])
            cut = float(np.abs(luma[1] - luma[0]).mean())
            add(kind, indices, cut - float(np.median(changes[start:start + length + jump - 1])), "the jump")
    return ClipVariants(clip, examples, skipped)


def clip_from_file(path, clip_id: str, video: str, settings: SelfSupervisedSettings = SelfSupervisedSettings(),
                   max_frames: int = 256, max_side: int = 256, start_s: float = 0.0, end_s: float | None = None) -> SourceClip:
    """A clip's frames decoded the project's way (``sample_frames``: held to the frame limits, upright), at the
    settings' rate. ``max_side`` keeps memory small: the critic looks at 224-pixel frames and 64-pixel luma."""
    from cosmos_assets.models.frames import sample_frames

    sampled = sample_frames(path, fps=settings.fps, max_frames=max_frames, start_s=start_s, end_s=end_s, max_side=max_side)
    return SourceClip(clip_id, video, sampled.frames, sampled.fps)
