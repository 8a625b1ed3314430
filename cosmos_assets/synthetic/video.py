"""Video windows for generation and critique: exact-size source windows, control videos, MP4 files.

Sizes are multiples of 16 and frame counts ``1 + 4k``: what every Cosmos generator accepts (the VAE
compresses space 8x, patches are 2x2, and time is compressed 4x), so one request fits every backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from cosmos_assets.common.decoding import FrameLimits, decode_frames, quarter_turns, rotate_rgb, turned_size
from cosmos_assets.common.encoding import h264_options
from cosmos_assets.common.files import atomic_path, write_bytes_atomically
from cosmos_assets.models.frames import sample_frames
from cosmos_assets.models.generator import blur_control, edge_control

# Controls derived from the source clip on the CPU. Depth and segmentation need a model of their own
# (none is configured here), so they are refused rather than faked.
CONTROL_BUILDERS = {"edge": edge_control, "blur": blur_control}


@dataclass(frozen=True)
class Geometry:
    width: int
    height: int
    fps: int
    num_frames: int

    def as_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fps": self.fps, "num_frames": self.num_frames}


def at_most(geometry: Geometry, max_width: int) -> Geometry:
    """The same window at most ``max_width`` wide (even sides), for measuring rather than generating."""
    if geometry.width <= max_width:
        return geometry
    height = max(2, round(geometry.height * max_width / geometry.width / 2) * 2)
    return Geometry(max_width // 2 * 2, height, geometry.fps, geometry.num_frames)


def _multiple_of_16(value: float) -> int:
    return max(16, int(value) // 16 * 16)


def request_geometry(source_width: int, source_height: int, source_seconds: float, max_width: int, fps: int,
                     seconds: float) -> Geometry:
    """Keep the source's aspect ratio at most ``max_width`` wide; ``1 + 4k`` frames within ``seconds`` (and the clip)."""
    width = _multiple_of_16(min(max_width, source_width))
    height = _multiple_of_16(width * source_height / max(1, source_width))
    usable = max(1, int(min(seconds, source_seconds) * fps + 1e-6))
    return Geometry(width, height, int(fps), 1 + 4 * ((usable - 1) // 4))


def read_window(path: str | os.PathLike, geometry: Geometry, start_s: float = 0.0,
                limits: FrameLimits | None = None) -> np.ndarray:
    """``geometry.num_frames`` frames from ``start_s`` at ``geometry.fps``, resized to exactly the geometry.

    A clip with fewer frames than asked repeats its last frame (the caller sized the window from the clip,
    so this only happens by a frame at the end of rounded durations)."""
    sampled = sample_frames(path, geometry.fps, geometry.num_frames, start_s=start_s,
                            max_side=max(geometry.width, geometry.height) * 2, limits=limits)
    frames = [cv2.resize(f, (geometry.width, geometry.height), interpolation=cv2.INTER_AREA) for f in sampled.frames]
    while len(frames) < geometry.num_frames:
        frames.append(frames[-1])
    return np.stack(frames)


def read_video(path: str | os.PathLike, max_frames: int = 10_000, max_width: int | None = None,
               gray: bool = False, limits: FrameLimits | None = None) -> tuple[np.ndarray, float]:
    """Every frame of a (short) video as uint8 T×H×W×3 (T×H×W luma with ``gray``), and its frame rate.

    ``max_width`` scales wider videos down while decoding (one reused scaler): a critic that measures luma at
    320 px never holds 720p RGB frames. Every frame is held to ``limits`` before it is converted
    (``FrameTooLarge``, a ``ValueError``). Frames come out upright (a display matrix applied; ``max_width``
    is the upright picture's)."""
    frames = []
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 16)
        coded_size = stream.codec_context.width, stream.codec_context.height
        reformatter = av.video.reformatter.VideoReformatter()
        turns = None
        for frame in decode_frames(container, stream, limits):
            if turns is None:  # the first frame's display rotation holds for the whole video
                turns = quarter_turns(frame)
                width, height = turned_size(*coded_size, turns)
                if max_width and width > max_width:
                    width, height = max_width // 2 * 2, max(2, round(height * max_width / width / 2) * 2)
                width, height = turned_size(width, height, turns)  # the size to scale to before turning
            frames.append(rotate_rgb(reformatter.reformat(frame, width=width, height=height,
                                                          format="gray" if gray else "rgb24").to_ndarray(), turns))
            if len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"no frames decoded from {os.fspath(path)!r}")
    return np.stack(frames), fps


def control_video(frames: np.ndarray, control: str) -> np.ndarray:
    if control not in CONTROL_BUILDERS:
        raise ValueError(f"no {control!r} control can be derived here (no model for it is configured); "
                         f"available: {', '.join(CONTROL_BUILDERS)}")
    return CONTROL_BUILDERS[control](frames)


def write_mp4(destination: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18, preset: str = "veryfast") -> Path:
    """H.264 (yuv420p) MP4, written under a temporary name and renamed into place when complete."""
    frames = np.asarray(frames)
    height, width = frames.shape[1:3]
    with atomic_path(destination) as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as output:
            stream = output.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = h264_options(preset, crf)
            for rgb in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                    output.mux(packet)
            for packet in stream.encode(None):
                output.mux(packet)
    return Path(destination)


def write_jpeg(destination: str | os.PathLike, frame: np.ndarray, quality: int = 85) -> Path:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return write_bytes_atomically(destination, data.tobytes())


def middle_frame(frames: np.ndarray) -> np.ndarray:
    return frames[len(frames) // 2]


def video_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the upright picture: what ``read_video`` returns."""
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        size = stream.codec_context.width, stream.codec_context.height
        for frame in decode_frames(container, stream):
            return turned_size(*size, quarter_turns(frame))
        return size
