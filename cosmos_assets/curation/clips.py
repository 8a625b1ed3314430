"""Cutting a video into H.264 clips and measuring each clip, in one decode pass.

Every frame is decoded once: frames inside a planned span are scaled and encoded into that span's
clip, and a few frames per second of each clip are measured (motion, sharpness, exposure, bars).
Encoding runs in libx264's own threads while Python measures, so the measuring is nearly free.
A source with a display matrix (a phone's portrait video) is cut upright: frames are scaled to the
turned size and turned before encoding, so the clip, its thumbnail and its signals show what the
camera meant, and the clip carries no rotation of its own.
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

from cosmos_assets.common.decoding import FrameLimits, decode_frames, quarter_turns, rotate_rgb, rotate_yuv420p, turned_size
from cosmos_assets.curation.probe import primary_video_stream
from cosmos_assets.common.encoding import h264_options
from cosmos_assets.common.files import atomic_path, write_bytes_atomically
from cosmos_assets.common.knobs import knob
from cosmos_assets.curation.scores import ClipSignals, SignalAccumulator
from cosmos_assets.curation.shots import Span


@dataclass(frozen=True)
class TranscodeConfig:
    """How each clip is encoded (H.264) and sampled for its quality signals."""

    max_width: int = knob(1280, "Widest clip in pixels; larger sources are scaled down, keeping the aspect ratio.")
    max_height: int = knob(720, "Tallest clip in pixels; larger sources are scaled down, keeping the aspect ratio.")
    max_fps: float = knob(30.0, "Highest clip frame rate in frames per second; faster sources drop frames.")
    preset: str = knob("veryfast", "libx264 preset (ultrafast .. veryslow): encoding speed against file size.")
    crf: int = knob(23, "libx264 constant rate factor (0..51): lower is better quality and larger files.")
    score_sample_fps: float = knob(2.0, "Frames per second of each clip measured for the quality signals.")
    thumbnail_width: int = knob(192, "Width of each clip's thumbnail in pixels.")


@dataclass
class ClipResult:
    span: Span
    path: Path
    thumbnail_path: Path
    width: int
    height: int
    fps: float
    frames: int
    start_s: float = 0.0  # presentation time of the span in the source
    end_s: float = 0.0
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
    held: av.VideoFrame | None = None  # the latest source frame, not yet written
    start_time: float = 0.0
    thumbnail_width: int = 192
    next_sample_time: float = 0.0
    turns: int = 0  # counter-clockwise quarter turns that show the source upright


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
    limits: FrameLimits | None = None,
) -> list[ClipResult]:
    """Write one MP4 per span (``destinations``: (clip path, thumbnail path) per span), measuring each.

    Spans must be sorted and non-overlapping. Files appear under their final names only when
    complete. Raises PyAV errors on undecodable input, and ``FrameTooLarge`` on a frame over ``limits``
    (whatever the stream header said): the caller records them per video.
    """
    if not spans:
        return []
    fps, _ = output_fps(source_fps, config)
    rate = Fraction(fps).limit_denominator(1001)
    source_frame_s = 1.0 / source_fps if source_fps > 0 else 1.0 / fps
    results: list[ClipResult] = []
    pending = list(zip(spans, destinations))
    current: _OpenClip | None = None
    with av.open(str(source)) as container:
        stream = primary_video_stream(container)
        stream.thread_type = "AUTO"
        coded_size = stream.codec_context.width, stream.codec_context.height
        turns = 0
        width, height = output_size(*coded_size, config)
        reformatter = av.video.reformatter.VideoReformatter()
        index, frame_time = -1, 0.0
        try:
            for frame in decode_frames(container, stream, limits):
                index += 1
                if index == 0:  # the display rotation of the first frame holds for the whole video
                    turns = quarter_turns(frame)
                    width, height = output_size(*turned_size(*coded_size, turns), config)
                # Presentation time: real timing for variable-frame-rate sources (index as fallback).
                frame_time = frame.time if frame.time is not None else index * source_frame_s
                if current is None:
                    if not pending or index < pending[0][0].start_frame:
                        if not pending:
                            break
                        continue
                    span, (clip_path, thumb_path) = pending.pop(0)
                    current = _open_clip(span, clip_path, thumb_path, width, height, rate, config)
                    current.start_time, current.turns = frame_time, turns
                _emit_until(current, frame_time, reformatter, width, height, fps, rate, config)
                current.held = frame
                if current.thumbnail is None and index >= current.middle_frame:
                    thumb_size = turned_size(config.thumbnail_width, max(2, round(config.thumbnail_width * height / width)), turns)
                    current.thumbnail = rotate_rgb(reformatter.reformat(
                        frame, width=thumb_size[0], height=thumb_size[1], format="rgb24"
                    ).to_ndarray(), turns)
                if index == current.span.end_frame - 1:
                    _emit_until(current, frame_time + source_frame_s, reformatter, width, height, fps, rate, config)
                    results.append(_close_clip(current, width, height, fps, end_time=frame_time + source_frame_s))
                    current = None
        except BaseException:
            if current is not None:  # never leave a half-written clip behind
                current.container.close()
                current.tmp_context.__exit__(*sys.exc_info())
            raise
        if current is not None:  # the video ended early: keep what was decoded of the last span
            _emit_until(current, frame_time + source_frame_s, reformatter, width, height, fps, rate, config)
            results.append(
                _close_clip(current, width, height, fps, end_time=frame_time + source_frame_s, truncated_at=index + 1)
            )
    return results


def _emit_until(clip, until_s, reformatter, width, height, fps, rate, config) -> None:
    """Resample to a constant rate: each output slot shows the latest source frame at its time.

    The held frame fills every slot that starts before ``until_s`` (the next frame's time), with a
    quarter-slot tolerance so a constant-rate source at the output rate maps one to one and a
    double-rate source keeps every second frame. Variable-rate sources keep their real timing.
    """
    if clip.held is None:
        return
    tolerance = 0.25 / fps
    while clip.start_time + clip.written / fps + tolerance < until_s:
        held = clip.held
        if clip.turns == 0 and held.format.name == "yuv420p" and (held.width, held.height) == (width, height):
            scaled = held  # already what the encoder wants; the encoder keeps its own reference
        else:  # scaled to the size that turns into (width, height), then turned upright
            coded_width, coded_height = turned_size(width, height, clip.turns)
            scaled = rotate_yuv420p(
                reformatter.reformat(held, width=coded_width, height=coded_height, format="yuv420p"), clip.turns)
        scaled.pts, scaled.time_base = clip.written, 1 / rate
        for packet in clip.stream.encode(scaled):
            clip.container.mux(packet)
        clip_time = clip.written / fps
        if clip_time >= clip.next_sample_time:
            clip.accumulator.add(scaled.to_ndarray()[:height], clip_time)  # the Y plane of yuv420p
            clip.next_sample_time += 1.0 / config.score_sample_fps
        clip.last_frame = scaled  # a thumbnail source if the video ends before the middle
        clip.written += 1


def _open_clip(span, clip_path, thumb_path, width, height, rate, config) -> _OpenClip:
    tmp_context = atomic_path(clip_path)
    tmp_path = tmp_context.__enter__()
    output = av.open(str(tmp_path), "w", format="mp4", options={"movflags": "+faststart"})
    video = output.add_stream("libx264", rate=rate)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = h264_options(config.preset, config.crf)
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


def _close_clip(clip: _OpenClip, width, height, fps, end_time: float, truncated_at: int | None = None) -> ClipResult:
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
        start_s=clip.start_time,
        end_s=end_time,
        signals=clip.accumulator.result(),
    )
