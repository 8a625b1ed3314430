"""Probing landed files with PyAV: what the file is, and whether we can curate it.

A file that cannot be curated raises ``VideoRejected`` with an error class that names the problem
(``EmptyFile``, ``NotAVideo``, ``TruncatedVideo``, ``AudioOnly``, ``NoVideoStream``,
``UnsupportedCodec``, ``UndecodableVideo``, ``ResolutionTooLarge``, ``DurationTooLong``,
``FileTooLarge``, ``FrameTooLarge``, ``PixelRateTooHigh``) and a message a person can act on. Nothing here
raises anything else for bad input.

The header's size is not the last word: MJPEG packets are measured here without decoding, and every
other place that decodes a user's frames holds each frame to the same limits (``common.decoding``).

A display matrix (a phone's portrait video stored as landscape frames) is recorded as
``display_rotation``, the counter-clockwise degrees that show the picture upright; ``width`` and
``height`` are the upright picture's, and every reader (clips, thumbnails, scores, shot detection,
sampled frames) turns the frames upright."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cosmos_assets.common.decoding import (
    DEFAULT_MAX_HEIGHT,
    DEFAULT_MAX_PIXELS_PER_SECOND,
    DEFAULT_MAX_WIDTH,
    FrameGuard,
    FrameLimits,
    FrameTooLarge,
    VideoRejected,
    decode_frames,
    quarter_turns,
    turned_size,
)
from cosmos_assets.common.knobs import knob

MP4_FAMILY_BOX = b"ftyp"


__all__ = ["FrameTooLarge", "ProbeLimits", "VideoProbe", "VideoRejected", "primary_video_stream", "probe_video"]


@dataclass(frozen=True)
class ProbeLimits:
    """What a landed video may be at most; larger ones are recorded as rejected, never decoded."""

    max_file_bytes: int = knob(20 * 1024**3, "Largest file accepted, in bytes (default 20 GiB).")
    max_width: int = knob(DEFAULT_MAX_WIDTH, "Widest video (and widest frame in it) accepted, in pixels.")
    max_height: int = knob(DEFAULT_MAX_HEIGHT, "Tallest video (and tallest frame in it) accepted, in pixels.")
    max_duration_s: float = knob(4 * 3600.0, "Longest video accepted, in seconds (default 4 hours).")
    max_pixels_per_second: float = knob(float(DEFAULT_MAX_PIXELS_PER_SECOND),
                                        "Most pixels per second of footage a video may decode (default 8K at 60 fps).")

    def frame_limits(self) -> FrameLimits:
        return FrameLimits(self.max_width, self.max_height, self.max_pixels_per_second)


@dataclass(frozen=True)
class VideoProbe:
    """What a landed video is. ``width`` and ``height`` are as displayed: after ``display_rotation``."""

    container: str
    codec: str
    pixel_format: str
    bit_depth: int
    width: int
    height: int
    average_fps: float
    real_fps: float
    variable_frame_rate: bool
    frames: int
    duration_s: float
    video_streams: int
    audio_streams: int
    display_rotation: int = 0  # counter-clockwise degrees (0, 90, 180, 270) that show the frames upright

    def as_row(self) -> dict:
        return asdict(self)


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(64)
    if head[4:8] == MP4_FAMILY_BOX:
        return "mp4"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")):
        return "image"
    if head.startswith(b"%PDF"):
        return "pdf"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "binary"


def primary_video_stream(container):
    """The first real video stream: cover art (attached pictures) is not the video."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _fps(rate) -> float:
    return float(rate) if rate else 0.0


def _bit_depth(pixel_format: str) -> int:
    try:
        return max(c.bits for c in av.VideoFormat(pixel_format).components)
    except Exception:  # unknown or hardware pixel format: report 8 like ffprobe's default
        return 8


def probe_video(path: str | os.PathLike, limits: ProbeLimits = ProbeLimits()) -> VideoProbe:
    """Open, demux and test-decode a file; return its facts or raise ``VideoRejected``."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise VideoRejected("EmptyFile", "the file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        raise VideoRejected(
            "FileTooLarge", f"{size} bytes is over the configured limit of {limits.max_file_bytes}"
        )
    kind = _sniff(path)
    if kind in ("image", "pdf"):  # FFmpeg would happily open a PNG as a one-frame "video"
        raise VideoRejected("NotAVideo", f"the file content is {kind}, not a video container")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as error:
        if kind == "mp4":
            raise VideoRejected(
                "TruncatedVideo",
                f"MP4 header found but the index (moov atom) is missing or unreadable; "
                f"the upload was probably cut short ({error.strerror})",
            ) from None
        if kind == "text":
            raise VideoRejected(
                "NotAVideo", f"the file content is {kind}, not a video container"
            ) from None
        raise VideoRejected("NotAVideo", f"no known container format: {error.strerror}") from None

    with container:
        if container.format.name == "image2" or container.format.name.endswith("_pipe"):
            # FFmpeg's still-image demuxers (webp_pipe, tiff_pipe, ...): a picture, not a video
            raise VideoRejected("NotAVideo", f"the file is a still image ({container.format.name})")
        video_streams = [
            s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
        ]
        audio_streams = list(container.streams.audio)
        if not video_streams:
            if audio_streams:
                raise VideoRejected(
                    "AudioOnly", f"{len(audio_streams)} audio stream(s) and no video stream"
                )
            raise VideoRejected(
                "NoVideoStream", f"container {container.format.name!r} holds no video stream"
            )
        stream = video_streams[0]
        codec_context = stream.codec_context
        if codec_context is None or not codec_context.name:
            tag = getattr(stream, "codec_tag", None) or "unknown"
            raise VideoRejected(
                "UnsupportedCodec", f"this FFmpeg build has no decoder for the video codec (tag {tag!r})"
            )
        width, height = codec_context.width, codec_context.height
        if width > limits.max_width or height > limits.max_height:
            raise VideoRejected(
                "ResolutionTooLarge",
                f"{width}x{height} is over the configured limit of {limits.max_width}x{limits.max_height}",
            )

        # Demux every video packet (cheap: no decoding) to count frames and see the real timing.
        timestamps: list[int] = []
        guard = FrameGuard(limits.frame_limits(), codec=codec_context.name)  # MJPEG: each packet's size
        try:
            for packet in container.demux(stream):
                guard.check_packet(packet)
                # Raw elementary streams (.h264) carry no pts; their dts still orders the frames.
                timestamp = packet.pts if packet.pts is not None else packet.dts
                if packet.size:
                    timestamps.append(timestamp if timestamp is not None else len(timestamps))
        except av.error.FFmpegError as error:
            raise VideoRejected(
                "TruncatedVideo", f"demuxing stopped after {len(timestamps)} packets: {error.strerror}"
            ) from None
        declared_frames = stream.frames or 0
        if declared_frames and len(timestamps) < 0.98 * declared_frames:
            raise VideoRejected(
                "TruncatedVideo",
                f"the index declares {declared_frames} frames but only {len(timestamps)} are present; "
                "the data was cut short",
            )
        if not timestamps:
            raise VideoRejected("UndecodableVideo", "the video stream holds no frames")

        pixel_format = codec_context.pix_fmt or "unknown"
        turns = _test_decode(path, codec_context.name, limits.frame_limits())

        time_base = stream.time_base or Fraction(1, 1000)
        ordered = np.sort(np.asarray(timestamps, dtype=np.int64))
        deltas = np.diff(ordered) * float(time_base)
        deltas = deltas[deltas > 0]
        span_s = float(ordered[-1] - ordered[0]) * float(time_base)
        frames = len(timestamps)
        measured_fps = (frames - 1) / span_s if span_s > 0 else _fps(stream.average_rate)
        average_fps = _fps(stream.average_rate) or measured_fps
        real_fps = _fps(stream.base_rate) or _fps(stream.guessed_rate) or average_fps
        median_delta = float(np.median(deltas)) if deltas.size else 0.0
        variable = bool(
            deltas.size
            and median_delta > 0
            and (np.abs(deltas - median_delta) > 0.25 * median_delta).mean() > 0.05
        ) or (average_fps > 0 and abs(average_fps - real_fps) / real_fps > 0.02)
        duration_s = span_s + (median_delta or (1.0 / average_fps if average_fps else 0.0))
        if container.duration and not duration_s:
            duration_s = container.duration / av.time_base
        if duration_s > limits.max_duration_s:
            raise VideoRejected(
                "DurationTooLong",
                f"{duration_s:.1f} s is over the configured limit of {limits.max_duration_s:.0f} s",
            )
        pixel_rate = width * height * max(average_fps, measured_fps)
        if pixel_rate > limits.max_pixels_per_second * 1.02:  # 2 %: a measured 60.3 fps is 60 fps
            raise VideoRejected(
                "PixelRateTooHigh",
                f"{width}x{height} at {max(average_fps, measured_fps):.1f} fps is {pixel_rate:.0f} pixels per second, "
                f"over the configured limit of {limits.max_pixels_per_second:.0f}",
            )
        display_width, display_height = turned_size(width, height, turns)
        return VideoProbe(
            container=container.format.name,
            codec=codec_context.name,
            pixel_format=pixel_format,
            bit_depth=_bit_depth(pixel_format),
            width=display_width,
            height=display_height,
            average_fps=round(average_fps, 4),
            real_fps=round(real_fps, 4),
            variable_frame_rate=variable,
            frames=frames,
            duration_s=round(duration_s, 4),
            video_streams=len(video_streams),
            audio_streams=len(audio_streams),
            display_rotation=turns * 90,
        )


def _test_decode(path: Path, codec: str, limits: FrameLimits, frames_wanted: int = 2) -> int:
    """Decode the first frames: a stream we can demux but not decode is of no use. Returns the
    counter-clockwise quarter turns of the first frame's display matrix."""
    try:
        with av.open(str(path)) as container:
            stream = primary_video_stream(container)
            decoded, turns = 0, 0
            for frame in decode_frames(container, stream, limits):
                if decoded == 0:
                    turns = quarter_turns(frame)
                decoded += 1
                if decoded >= frames_wanted:
                    return turns
            if decoded == 0:
                raise VideoRejected("UndecodableVideo", f"no {codec} frame could be decoded")
            return turns
    except av.error.DecoderNotFoundError:
        raise VideoRejected("UnsupportedCodec", f"this FFmpeg build has no decoder for {codec!r}") from None
    except av.error.FFmpegError as error:
        raise VideoRejected(
            "UndecodableVideo", f"decoding the first {codec} frames failed: {error.strerror}"
        ) from None
