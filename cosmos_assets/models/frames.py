"""Frames sampled from a video file at a fixed rate, for models that look at a few frames per second."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SampledFrames:
    frames: np.ndarray  # uint8, T×H×W×3 RGB
    timestamps: np.ndarray  # seconds from the start of the file
    fps: float  # the sampling rate actually achieved (the source rate caps it)

    def __len__(self) -> int:
        return len(self.frames)


def sample_frames(
    path: str | os.PathLike,
    fps: float | None = 2.0,
    max_frames: int = 256,
    start_s: float = 0.0,
    end_s: float | None = None,
    max_side: int | None = None,
    limits=None,
) -> SampledFrames:
    """Decode once and keep the first frame at or after each multiple of 1/fps inside [start, end) (every frame
    there when ``fps`` is None).

    ``max_frames`` bounds the window (cosmos-curate captions windows of up to 256 frames at 2 fps);
    ``max_side`` downsizes during conversion so large sources never become full-size arrays.
    Every decoded frame is held to ``limits`` (``common.decoding.FrameLimits``; its defaults when None)
    before it is converted: a frame larger than any accepted video raises ``FrameTooLarge``.
    Frames come out upright: a display matrix (a phone's portrait video) is applied, the first frame's
    for the whole video, after scaling; ``max_side`` bounds the upright picture.
    """
    import av  # here, not at the top: model code that never decodes files runs without PyAV

    from cosmos_assets.common.decoding import decode_frames, quarter_turns, rotate_rgb, turned_size

    frames, stamps = [], []
    every_frame = fps is None
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_fps = float(stream.average_rate or stream.guessed_rate or 30)
        fps = source_fps if fps is None else min(fps, source_fps)
        width, height = stream.codec_context.width, stream.codec_context.height
        if max_side and max(width, height) > max_side:
            scale = max_side / max(width, height)
            width, height = max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)
        reformatter = av.video.reformatter.VideoReformatter()
        turns = None
        clock = _SampleClock(None if every_frame else fps, max_frames, start_s, end_s)
        for frame in decode_frames(container, stream, limits):
            if turns is None:  # the first frame's display rotation holds for the whole video
                turns = quarter_turns(frame)
            if frame.time is None:
                continue
            keep = clock.keeps(frame.time)
            if keep is None:
                break
            if keep:
                rgb = reformatter.reformat(frame, width=width, height=height, format="rgb24")
                frames.append(rotate_rgb(rgb.to_ndarray(), turns))
                stamps.append(frame.time)
    if not frames:
        raise ValueError(f"no frames decoded from {os.fspath(path)!r} in [{start_s}, {end_s})")
    return SampledFrames(np.stack(frames), np.asarray(stamps), fps)


class _SampleClock:
    """Which frames a sampling at ``fps`` keeps: the first at or after each multiple of 1/fps from ``start_s``,
    before ``end_s``, at most ``max_frames`` (every frame when ``fps`` is None). ``keeps(time)``: True, False, or
    None once nothing more is wanted."""

    def __init__(self, fps: float | None, max_frames: int, start_s: float = 0.0, end_s: float | None = None):
        self.fps, self.max_frames, self.start_s, self.end_s = fps, max_frames, start_s, end_s
        self.next_time, self.kept = start_s, 0

    def keeps(self, time_s: float) -> bool | None:
        if (self.end_s is not None and time_s >= self.end_s) or self.kept >= self.max_frames:
            return None
        if time_s + 1e-6 < self.next_time:
            return False
        if self.fps is not None:
            self.next_time = self.start_s + math.floor((time_s - self.start_s) * self.fps + 1 + 1e-6) / self.fps
        self.kept += 1
        return True


def pick_samples(decoded: SampledFrames, fps: float, max_frames: int = 256, start_s: float = 0.0,
                 end_s: float | None = None) -> SampledFrames:
    """What ``sample_frames`` keeps, chosen among frames already decoded (all the frames of a clip's proxy, say),
    so several readers of one clip share one decode. ``fps`` is capped at the decoded frames' own rate."""
    fps = min(fps, decoded.fps)
    clock = _SampleClock(fps, max_frames, start_s, end_s)
    chosen = []
    for index, time_s in enumerate(decoded.timestamps):
        keep = clock.keeps(float(time_s))
        if keep is None:
            break
        if keep:
            chosen.append(index)
    if not chosen:
        raise ValueError(f"no frames in [{start_s}, {end_s}) among {len(decoded)} decoded")
    return SampledFrames(decoded.frames[chosen], decoded.timestamps[chosen], fps)


def fit_pixel_budget(height: int, width: int, frames: int, total_pixels: int, factor: int = 28,
                     min_pixels: int = 4 * 28 * 28, max_pixels: int = 768 * 28 * 28) -> tuple[int, int]:
    """Frame size for a Qwen2.5-VL video: sides multiples of ``factor``, all frames within ``total_pixels``.

    This is how the Reason critic bounds its visual tokens (8192·28·28 pixels for the whole video).
    """
    per_frame = min(max_pixels, max(min_pixels, total_pixels // max(frames, 1)))
    scale = math.sqrt(per_frame / (height * width))
    new_h = max(factor, math.floor(height * scale / factor) * factor)
    new_w = max(factor, math.floor(width * scale / factor) * factor)
    return new_h, new_w
