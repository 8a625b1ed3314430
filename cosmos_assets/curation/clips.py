"""Cutting a video into H.264 clips and measuring each clip, in one decode pass.

Every frame is decoded once: frames inside a planned span are scaled and encoded into that span's
clip, and a few frames per second of each clip are measured (motion, sharpness, exposure, bars).
Encoding runs in libx264's own threads while Python measures, so the measuring is nearly free.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from cosmos_assets.common.files import atomic_path, write_bytes_atomically
from cosmos_assets.curation.scores import ClipSignals, SignalAccumulator
from cosmos_assets.curation.shots import Span


@dataclass(frozen=True)
class TranscodeConfig:
    max_width: int = 1280
    max_height: int = 720
    max_fps: float = 30.0
    preset: str = "veryfast"
    crf: int = 23
    score_sample_fps: float = 2.0
    thumbnail_width: int = 192


@dataclass
class ClipResult:
    span: Span
    path: Path
    thumbnail_path: Path
    width: int
    height: int
    fps: float
    frames: int
    signals: ClipSignals | None = None


@dataclass
class _OpenClip:
    span: Span
    path: Path
    thumbnail_path: Path
    tmp_context: object
    tmp_path: Path
    container: av.container.OutputContainer
    stream: av.video.stream.VideoStream
    accumulator: SignalAccumulator
    written: int = 0
    middle_frame: int = 0
    thumbnail: np.ndarray | None = None
    last_frame: av.VideoFrame | None = None
    thumbnail_width: int = 192
    next_sample_time: float = 0.0


def output_size(width: int, height: int, config: TranscodeConfig) -> tuple[int, int]:
    """Largest size within the limits that keeps the aspect ratio, with even dimensions (yuv420p)."""
    scale = min(1.0, config.max_width / width, config.max_height / height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def output_fps(source_fps: float, config: TranscodeConfig) -> tuple[float, int]:
    """The clip frame rate and the source-frame step that gives it (keep every n-th frame)."""
    if source_fps <= 0:
        return config.max_fps, 1
    # 2 % tolerance: a phone's 30.05 fps average should stay 30 fps, not become 15.
    step = max(1, math.ceil(source_fps / (config.max_fps * 1.02)))
    return source_fps / step, step


def cut_clips(
    source: str | os.PathLike,
    spans: list[Span],
    destinations: list[tuple[Path, Path]],
    source_fps: float,
    config: TranscodeConfig = TranscodeConfig(),
) -> list[ClipResult]:
    """Write one MP4 per span (``destinations``: (clip path, thumbnail path) per span), measuring each.

    Spans must be sorted and non-overlapping. Files appear under their final names only when
    complete. Raises PyAV errors on undecodable input: the caller records them per video.
    """
    if not spans:
        return []
    fps, step = output_fps(source_fps, config)
    rate = Fraction(fps).limit_denominator(1001)
    results: list[ClipResult] = []
    pending = list(zip(spans, destinations))
    current: _OpenClip | None = None
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = output_size(stream.codec_context.width, stream.codec_context.height, config)
        reformatter = av.video.reformatter.VideoReformatter()
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                if current is None:
                    if not pending or index < pending[0][0].start_frame:
                        if not pending:
                            break
                        continue
                    span, (clip_path, thumb_path) = pending.pop(0)
                    current = _open_clip(span, clip_path, thumb_path, width, height, rate, config)
                if (index - current.span.start_frame) % step == 0:
                    scaled = reformatter.reformat(frame, width=width, height=height, format="yuv420p")
                    scaled.pts = current.written
                    scaled.time_base = 1 / rate
                    for packet in current.stream.encode(scaled):
                        current.container.mux(packet)
                    clip_time = current.written / fps
                    if clip_time >= current.next_sample_time:
                        current.accumulator.add(scaled.to_ndarray()[:height], clip_time)  # the Y plane of yuv420p
                        current.next_sample_time += 1.0 / config.score_sample_fps
                    if current.thumbnail is None and index >= current.middle_frame:
                        current.thumbnail = reformatter.reformat(
                            frame,
                            width=config.thumbnail_width,
                            height=max(2, round(config.thumbnail_width * height / width)),
                            format="rgb24",
                        ).to_ndarray()
                    current.last_frame = scaled  # a thumbnail source if the video ends before the middle
                    current.written += 1
                if index == current.span.end_frame - 1:
                    results.append(_close_clip(current, width, height, fps))
                    current = None
        except BaseException:
            if current is not None:  # never leave a half-written clip behind
                current.container.close()
                current.tmp_context.__exit__(*sys.exc_info())
            raise
        if current is not None:  # the video ended early: keep what was decoded of the last span
            results.append(_close_clip(current, width, height, fps, truncated_at=index + 1))
    return results


def _open_clip(span, clip_path, thumb_path, width, height, rate, config) -> _OpenClip:
    tmp_context = atomic_path(clip_path)
    tmp_path = tmp_context.__enter__()
    output = av.open(str(tmp_path), "w", format="mp4", options={"movflags": "+faststart"})
    video = output.add_stream("libx264", rate=rate)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"preset": config.preset, "crf": str(config.crf)}
    return _OpenClip(
        span=span,
        path=Path(clip_path),
        thumbnail_path=Path(thumb_path),
        tmp_context=tmp_context,
        tmp_path=tmp_path,
        container=output,
        stream=video,
        accumulator=SignalAccumulator(),
        middle_frame=(span.start_frame + span.end_frame) // 2,
        thumbnail_width=config.thumbnail_width,
    )


def _close_clip(clip: _OpenClip, width, height, fps, truncated_at: int | None = None) -> ClipResult:
    for packet in clip.stream.encode(None):
        clip.container.mux(packet)
    clip.container.close()
    clip.tmp_context.__exit__(None, None, None)  # rename into place
    span = clip.span if truncated_at is None else Span(clip.span.start_frame, truncated_at)
    if clip.thumbnail is None and clip.last_frame is not None:
        clip.thumbnail = clip.last_frame.reformat(
            width=clip.thumbnail_width,
            height=max(2, round(clip.thumbnail_width * height / width)),
            format="rgb24",
        ).to_ndarray()
    if clip.thumbnail is not None:
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(clip.thumbnail, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 82])
        write_bytes_atomically(clip.thumbnail_path, jpeg.tobytes())
    return ClipResult(
        span=span,
        path=clip.path,
        thumbnail_path=clip.thumbnail_path,
        width=width,
        height=height,
        fps=fps,
        frames=clip.written,
        signals=clip.accumulator.result(),
    )
