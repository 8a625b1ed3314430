"""Captions per clip window: from a vision-language model, or — on a laptop with no VLM weights —
from real signals (ImageNet tags of the packaged image model, motion and exposure statistics).

The prompt is versioned: rows carry the prompt version and the captioner's identity, so a new prompt
re-captions the same clips without re-splitting and old captions stay readable beside the new ones.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from cosmos_assets.models.vlm import GenerationSettings, VideoPrompt, parse_reasoned_answer

# cosmos-curate: windows of up to 256 source frames, sampled at 2 fps.
WINDOW_FRAMES = 256
SAMPLE_FPS = 2.0

DEFAULT_PROMPT_VERSION = "v1"
DEFAULT_PROMPT = (
    "Describe this video in detail for training a world model: the scene and setting, the main objects "
    "and agents and what they do, how the camera moves, the lighting and weather. Use plain sentences."
)


@dataclass(frozen=True)
class CaptionWindow:
    index: int
    start_s: float
    end_s: float


def caption_windows(duration_s: float, fps: float, window_frames: int = WINDOW_FRAMES) -> list[CaptionWindow]:
    """Consecutive windows of at most ``window_frames`` source frames covering the clip."""
    span = window_frames / max(fps, 1e-6)
    count = max(1, math.ceil(duration_s / span - 1e-9))
    return [CaptionWindow(i, round(i * span, 3), round(min(duration_s, (i + 1) * span), 3)) for i in range(count)]


def prompt_id(version: str, text: str) -> str:
    """The version users name, plus a digest of the text, so editing a prompt without bumping its
    version is still told apart in the table."""
    return f"{version}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def caption_status(text: str) -> tuple[str, str]:
    """(status, caption): ``ok``, ``empty`` or ``unparseable`` (recorded as such, never dropped).

    Reason-style models may wrap the caption in <think>/<answer>; plain captioners do not.
    """
    stripped = (text or "").strip()
    if not stripped:
        return "empty", ""
    if "<answer>" in stripped.lower() or "<think>" in stripped.lower():
        parsed = parse_reasoned_answer(stripped)
        return ("ok", parsed.answer) if parsed.parsed and parsed.answer else ("unparseable", stripped)
    if not any(ch.isalpha() for ch in stripped):
        return "unparseable", stripped
    return "ok", stripped


def vlm_captions(vlm, windows_frames: list[tuple[np.ndarray, float]], prompt: str, settings: GenerationSettings,
                 batch_size: int = 4) -> list[str]:
    """One caption per window (frames, fps), windows batched into the model ``batch_size`` at a time."""
    captions: list[str] = []
    single = GenerationSettings(**{**settings.__dict__, "trials": 1})
    for start in range(0, len(windows_frames), batch_size):
        chunk = windows_frames[start:start + batch_size]
        answers = vlm.generate([VideoPrompt(frames, fps, prompt) for frames, fps in chunk], single)
        captions.extend(texts[0] for texts in answers)
    return captions


def _motion_words(motion: float | None) -> str:
    if motion is None:
        return "unknown motion"
    if motion < 0.002:
        return "an almost static view"
    if motion < 0.01:
        return "gentle motion"
    if motion < 0.05:
        return "moderate motion"
    return "fast motion"


def _light_words(brightness: float | None) -> str:
    if brightness is None:
        return "unknown lighting"
    if brightness < 0.25:
        return "dark, low-light footage"
    if brightness > 0.75:
        return "very bright footage"
    return "normally lit footage"


SIGNAL_LABEL = "[signal caption, no VLM]"


def join_window_captions(captions: list[str]) -> str:
    """One text per clip from its windows in order; a signal label is said once, not per window."""
    texts = [c for c in captions if c]
    if texts and all(t.startswith(SIGNAL_LABEL) for t in texts):
        return SIGNAL_LABEL + " " + " Then ".join(t[len(SIGNAL_LABEL):].strip() for t in texts)
    return " ".join(texts)


def signal_caption(tags: list[tuple[str, float]], scores: dict, duration_s: float) -> str:
    """A caption built from measured signals, for laptops without VLM weights. It says what it is."""
    things = ", ".join(tag for tag, _ in tags[:3]) or "no confident ImageNet tags"
    return (
        f"{SIGNAL_LABEL} A {duration_s:.1f} s clip that looks like: {things}; "
        f"{_motion_words(scores.get('motion_global'))}, {_light_words(scores.get('brightness'))}."
    )
