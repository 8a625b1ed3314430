"""Builds test media from the real sample videos: bad inputs, odd-but-valid inputs, cut videos.

Everything is generated with PyAV at test time, so the repository ships only the real samples.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def read_rgb_frames(path: Path, limit: int | None = None, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if size:
                frame = frame.reformat(width=size[0], height=size[1])
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit and len(frames) >= limit:
                break
    return frames


def write_video(
    path: Path,
    frames: list[np.ndarray],
    fps: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    container_format: str | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    options: dict | None = None,
    audio_seconds: float = 0.0,
) -> Path:
    """Encode RGB frames; ``pts`` with ``time_base`` gives variable frame timing."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format=container_format, options=options or {}) as output:
        stream = output.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if time_base is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        audio = output.add_stream("aac", rate=48000) if audio_seconds else None
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[index], time_base
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
        if audio:
            _write_tone(output, audio, audio_seconds)
    return path


def _write_tone(output, stream, seconds: float) -> None:
    rate = 48000
    samples = int(rate * seconds)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)
    frame_size = stream.codec_context.frame_size or 1024
    for start in range(0, samples, frame_size):
        chunk = tone[start : start + frame_size]
        if len(chunk) < frame_size:
            chunk = np.pad(chunk, (0, frame_size - len(chunk)))
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        for packet in stream.encode(frame):
            output.mux(packet)
    for packet in stream.encode(None):
        output.mux(packet)


def write_audio_only(path: Path, seconds: float = 2.0) -> Path:
    with av.open(str(path), "w", format="mp4") as output:
        _write_tone(output, output.add_stream("aac", rate=48000), seconds)
    return path


def replace_fourcc(source: Path, destination: Path, old: bytes = b"avc1", new: bytes = b"zzzz") -> Path:
    """Rename the codec in an MP4's sample description: a container whose codec nobody knows."""
    data = source.read_bytes()
    assert old in data, f"{old!r} not found in {source}"
    destination.write_bytes(data.replace(old, new))
    return destination


def truncate(source: Path, destination: Path, keep_fraction: float) -> Path:
    data = source.read_bytes()
    destination.write_bytes(data[: int(len(data) * keep_fraction)])
    return destination


def image_bytes(image_format: str = "PNG", width: int = 8, height: int = 8) -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format=image_format)
    return buffer.getvalue()


SUBTITLES = "1\n00:00:00,000 --> 00:00:02,000\nA subtitle track and nothing else\n\n"


def concatenate_clips(path: Path, pieces: list[tuple[Path, int, int]], size=(320, 180), fps: int = 25) -> list[int]:
    """Write a video made of (source, first frame, frame count) pieces; returns the cut frames.

    A cut frame is the last frame of a piece that another piece follows (TransNetV2's convention).
    """
    frames: list[np.ndarray] = []
    cuts = []
    for source, first, count in pieces:
        decoded = read_rgb_frames(source, limit=first + count, size=size)[first:]
        assert len(decoded) == count, f"{source.name} has fewer than {first + count} frames"
        frames.extend(decoded)
        cuts.append(len(frames) - 1)
    write_video(path, frames, fps=fps)
    return cuts[:-1]




def write_growing_frames(path: Path, samples: Path, codec: str = "mjpeg", container_format: str = "matroska",
                         small: int = 10, large: int = 5, large_size: tuple[int, int] = (16000, 16)) -> Path:
    """A video whose stream header and first ``small`` frames are 64x64 and whose next ``large`` frames
    are ``large_size`` (width, height): real footage, re-encoded by a second encoder into the same stream.

    MJPEG in Matroska carries each frame's size in its JPEG header only; H.264 in MPEG-TS (``libx264``,
    ``mpegts``) announces the new size in an in-band sequence header. 16000x16 is over any size limit
    yet cheap to build and to refuse."""
    frames = read_rgb_frames(samples / "bottle_conveyor.mp4", limit=small, size=(64, 64))
    width, height = large_size
    tile = read_rgb_frames(samples / "dashcam_solid_white_right.mp4", limit=1, size=(min(width, 960), min(height, 540)))[0]
    big = np.ascontiguousarray(np.tile(tile, (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1))[:height, :width])
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    with av.open(str(path), "w", format=container_format) as output:
        stream = output.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, pix_fmt
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
        encoder = av.CodecContext.create(codec, "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, pix_fmt
        encoder.time_base, encoder.framerate = Fraction(1, 25), 25
        for index in range(large):
            frame = av.VideoFrame.from_ndarray(big, format="rgb24")
            frame.pts, frame.time_base = small + index, Fraction(1, 25)
            for packet in encoder.encode(frame):
                packet.stream = stream
                output.mux(packet)
        for packet in encoder.encode(None):
            packet.stream = stream
            output.mux(packet)
    return path


def remux_with_rotation(source: Path, destination: Path, degrees: int) -> Path:
    """The same video stream (packets copied, nothing re-encoded) in an MP4 whose display matrix turns
    it ``degrees`` counter-clockwise, as a phone records portrait video (-90: turn clockwise)."""
    with av.open(str(source)) as src, av.open(str(destination), "w", format="mp4") as output:
        stream = src.streams.video[0]
        copied = output.add_stream_from_template(stream)
        copied.set_display_rotation(degrees)
        for packet in src.demux(stream):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = copied
            output.mux(packet)
    return destination


def build_bad_inputs(directory: Path, samples: Path) -> dict[str, str]:
    """Write the bad-input corpus; returns file name → the error class it must be rejected with."""
    directory.mkdir(parents=True, exist_ok=True)
    frames = read_rgb_frames(samples / "asl_walk.mkv", limit=30, size=(320, 240))
    scratch = directory / ".scratch"
    scratch.mkdir(exist_ok=True)
    complete = write_video(scratch / "complete.mp4", frames, audio_seconds=1.0)
    faststart = write_video(scratch / "faststart.mp4", frames, options={"movflags": "+faststart"})
    (directory / "empty.mp4").write_bytes(b"")
    (directory / "notes.mp4").write_text("meeting notes, not a video\n")
    (directory / "photo.mkv").write_bytes(image_bytes("PNG"))
    (directory / "still.mp4").write_bytes(image_bytes("WEBP"))
    (directory / "captions.mkv").write_text(SUBTITLES)  # a container FFmpeg opens, with no video
    truncate(complete, directory / "cut_before_index.mp4", 0.6)
    truncate(faststart, directory / "cut_mid_data.mp4", 0.5)
    write_audio_only(directory / "voice_memo.mp4")
    replace_fourcc(complete, directory / "unknown_codec.mp4")
    for leftover in scratch.iterdir():
        leftover.unlink()
    scratch.rmdir()
    return {
        "empty.mp4": "EmptyFile",
        "notes.mp4": "NotAVideo",
        "photo.mkv": "NotAVideo",
        "still.mp4": "NotAVideo",
        "captions.mkv": "NoVideoStream",
        "cut_before_index.mp4": "TruncatedVideo",
        "cut_mid_data.mp4": "TruncatedVideo",
        "voice_memo.mp4": "AudioOnly",
        "unknown_codec.mp4": "UnsupportedCodec",
    }


def build_odd_valid_inputs(directory: Path, samples: Path) -> list[str]:
    """Decodable inputs that must be accepted: VFR, 10-bit, WebM/VP9, MOV (Matroska ships as samples)."""
    from fractions import Fraction as F

    directory.mkdir(parents=True, exist_ok=True)
    frames = read_rgb_frames(samples / "bottle_conveyor.mp4", limit=75, size=(320, 180))
    write_video(directory / "variable_rate.mp4", frames,
                pts=[i * 40 + (15 if i % 3 == 0 else 0) for i in range(len(frames))], time_base=F(1, 1000))
    write_video(directory / "ten_bit.mp4", frames, pix_fmt="yuv420p10le")
    write_video(directory / "vp9.webm", frames, codec="libvpx-vp9")
    write_video(directory / "camera.mov", frames)
    return ["variable_rate.mp4", "ten_bit.mp4", "vp9.webm", "camera.mov"]
