"""Decoding user video safely: every decoded frame held to the size and pixel-rate limits, and the
display rotation a camera recorded applied to what is decoded.

A stream header says one frame size, but nothing stops later frames from being larger (an MJPEG
stream of 64x64 frames that become 16000x16000, an H.264 stream whose new sequence header asks for
another size). The probe reads the header, so every place that decodes frames from a user's file goes
through ``decode_frames``: MJPEG packets are measured before they are decoded (their size is in the
JPEG header), every frame is measured before it is converted, and the pixels decoded so far are held
to a rate per second of footage. A frame over the limits stops decoding with ``FrameTooLarge``.

Phones record portrait video as landscape frames with a display matrix that says "turn me 90°".
``quarter_turns`` reads it from a decoded frame (PyAV's ``frame.rotation``, counter-clockwise degrees)
and ``rotate_rgb`` / ``rotate_yuv420p`` turn decoded frames upright, so clips, thumbnails, scores,
captions and embeddings all see the picture as it is meant to be seen. Every reader takes the first
frame's rotation for the whole stream, scales to the turned size (``turned_size``) and turns after
scaling, so only small frames are turned. Mirroring in a display matrix is not applied.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

# The defaults of curation.probe.ProbeLimits: decoded frames are held to the same sizes as headers.
DEFAULT_MAX_WIDTH = 7680
DEFAULT_MAX_HEIGHT = 4320
# 8K at 60 frames per second: the most pixels per second of footage any accepted video may decode.
DEFAULT_MAX_PIXELS_PER_SECOND = 7680 * 4320 * 60


class VideoRejected(Exception):
    """A landed file that will not be curated, with a stable error class for reporting."""

    def __init__(self, error_class: str, message: str):
        super().__init__(f"{error_class}: {message}")
        self.error_class = error_class
        self.message = message


class FrameTooLarge(VideoRejected, ValueError):
    """A decoded (or about to be decoded) frame is over the size or pixel-rate limits.

    A ``ValueError`` too, so callers that record undecodable input as such record this as well."""

    def __init__(self, message: str):
        super().__init__("FrameTooLarge", message)


@dataclass(frozen=True)
class FrameLimits:
    max_width: int = DEFAULT_MAX_WIDTH
    max_height: int = DEFAULT_MAX_HEIGHT
    max_pixels_per_second: float = DEFAULT_MAX_PIXELS_PER_SECOND


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment, without decoding; None if not found."""
    if data[:2] != b"\xff\xd8":
        return None
    i, end = 2, len(data)
    while i + 4 <= end:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if marker == 0xDA or marker == 0xD9:  # start of scan or end of image: no SOF before it
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > end:
                return None
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return width, height
        i += 2 + length
    return None


class FrameGuard:
    """Holds one stream's frames to ``FrameLimits``; raises ``FrameTooLarge``."""

    PACKET_SIZE_READERS = {"mjpeg": jpeg_size, "jpegls": jpeg_size}

    def __init__(self, limits: FrameLimits | None = None, fps: float = 0.0, codec: str = ""):
        self.limits = limits or FrameLimits()
        self.fps = fps if fps and fps > 0 else 30.0
        self.read_packet_size = self.PACKET_SIZE_READERS.get(codec)
        self.frames = 0
        self.pixels = 0
        self.first_time: float | None = None
        self.latest_time = 0.0

    def _check_size(self, width: int, height: int, what: str) -> None:
        limits = self.limits
        if width > limits.max_width or height > limits.max_height:
            raise FrameTooLarge(
                f"{what} {self.frames} is {width}x{height}, over the limit of {limits.max_width}x{limits.max_height} "
                "(the stream header declared a smaller size); decoding stopped"
            )

    def check_packet(self, packet: av.Packet) -> None:
        """Measure a packet whose frame size can be read without decoding it (MJPEG)."""
        if self.read_packet_size is None or not packet.size:
            return
        size = self.read_packet_size(bytes(packet))
        if size is not None:
            self._check_size(*size, "packet")

    def check(self, frame: av.VideoFrame) -> None:
        """Measure a decoded frame before anything converts it."""
        width, height = frame.width, frame.height
        self._check_size(width, height, "frame")
        time = frame.time
        if time is None:
            time = self.frames / self.fps
        if self.first_time is None:
            self.first_time = time
        self.latest_time = max(self.latest_time, time - self.first_time)
        self.frames += 1
        self.pixels += width * height
        budget = self.limits.max_pixels_per_second * (self.latest_time + 1.0)  # one second of slack
        if self.pixels > budget:
            raise FrameTooLarge(
                f"{self.pixels} pixels decoded in the first {self.latest_time:.2f} s of footage ({self.frames} frames), "
                f"over the limit of {self.limits.max_pixels_per_second:.0f} pixels per second; decoding stopped"
            )


def decode_frames(container, stream, limits: FrameLimits | None = None) -> Iterator[av.VideoFrame]:
    """``container.decode(stream)``, with every packet and frame held to ``limits`` (``FrameTooLarge``)."""
    codec = stream.codec_context.name if stream.codec_context is not None else ""
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    guard = FrameGuard(limits, fps, codec)
    for packet in container.demux(stream):
        guard.check_packet(packet)
        for frame in packet.decode():
            guard.check(frame)
            yield frame


def quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns (0..3) that show ``frame`` upright, from its display matrix."""
    try:
        degrees = frame.rotation
    except Exception:  # no display matrix, or a PyAV without it
        return 0
    return int(round((degrees or 0) / 90.0)) % 4


def turned_size(width: int, height: int, turns: int) -> tuple[int, int]:
    """The (width, height) a picture has after ``turns`` quarter turns."""
    return (height, width) if turns % 2 else (width, height)


def rotate_rgb(array: np.ndarray, turns: int) -> np.ndarray:
    """An H×W(×C) array turned counter-clockwise by ``turns`` quarter turns (contiguous)."""
    if turns % 4 == 0:
        return array
    return np.ascontiguousarray(np.rot90(array, turns % 4))


def rotate_yuv420p(frame: av.VideoFrame, turns: int) -> av.VideoFrame:
    """A yuv420p frame (even sides) turned counter-clockwise by ``turns`` quarter turns."""
    if turns % 4 == 0:
        return frame
    width, height = frame.width, frame.height
    flat = frame.to_ndarray().reshape(-1)
    luma, chroma = width * height, (width // 2) * (height // 2)
    y = np.rot90(flat[:luma].reshape(height, width), turns)
    u = np.rot90(flat[luma:luma + chroma].reshape(height // 2, width // 2), turns)
    v = np.rot90(flat[luma + chroma:luma + 2 * chroma].reshape(height // 2, width // 2), turns)
    new_width, new_height = turned_size(width, height, turns)
    packed = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(new_height * 3 // 2, new_width)
    return av.VideoFrame.from_ndarray(packed, format="yuv420p")
