"""Cutting a video into H.264 clips and measuring each clip, in one decode pass.

Every frame is decoded once. ``stream_split`` feeds each decoded frame both to the shot detector (as a 48x27
picture) and to a short look-behind buffer (at the clip's size); a frame leaves the buffer as soon as
``shots.StreamingClipPlanner`` knows which clip it belongs to, and is encoded into that clip right away. The
detector runs on its own thread, so detection overlaps decoding and encoding. The buffer holds the detector's delay
(``transnetv2.TransitionStream``: about 100-130 frames on the CPU, at most a window on a GPU) plus the trim at cuts
(0.5 s), and never more than ``MAX_BUFFERED_FRAMES`` (decoding waits for the detector there): at most ~350 MB of
frames at 720p whatever the video's length, never a whole clip or video, plus libx264's own look-ahead per open
clip (bench/RESULTS.md has the measured peak). ``cut_clips`` cuts at spans already known (a fixed stride, or the
reference camera's spans for the other views of a multi-camera scene) in the same single pass.

A few frames per second of each clip are measured while it is encoded (motion, sharpness, exposure, bars), and
``PROXY_FPS`` frames per second go into a small proxy of the clip (``PROXY_MAX_SIDE`` pixels on its long side):
the frame set that captions, embeddings and perceptual hashes read instead of decoding the full clip again.
Encoding runs in libx264's own threads while Python measures, so the measuring is nearly free.
A source with a display matrix (a phone's portrait video) is cut upright: frames are scaled to the
turned size and turned before encoding, so the clip, its thumbnail and its signals show what the
camera meant, and the clip carries no rotation of its own.
"""

from __future__ import annotations

import collections
import math
import os
import queue
import tempfile
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from cosmos_assets.common.decoding import FrameLimits, decode_frames, quarter_turns, rotate_rgb, rotate_yuv420p, turned_size
from cosmos_assets.curation.probe import primary_video_stream
from cosmos_assets.common.encoding import h264_options
from cosmos_assets.common.files import TEMP_PREFIX, write_bytes_atomically
from cosmos_assets.common.knobs import knob
from cosmos_assets.curation.scores import ClipSignals, SignalAccumulator
from cosmos_assets.curation.shots import Span, StreamingClipPlanner
from cosmos_assets.models.transnetv2 import TRANSNET_HEIGHT, TRANSNET_WIDTH

# The proxy of each clip: the frames every later CPU signal reads. 4 per second covers the perceptual hashes
# (frame_hashes.HASH_FPS) and the 2-per-second caption windows exactly (every second proxy frame); 448 pixels is
# what captions and embeddings sample at (their ``max_side``).
PROXY_FPS = 4.0
PROXY_MAX_SIDE = 448


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
    proxy_path: Path | None = None


@dataclass(frozen=True)
class ClipFiles:
    """Where a finished clip goes: the clip, its thumbnail and (optionally) its proxy."""

    clip: Path
    thumbnail: Path
    proxy: Path | None = None


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


def proxy_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, PROXY_MAX_SIDE / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class _Frames:
    """What the decode loop knows of the source: the output geometry (set from the first frame's rotation) and
    how one decoded frame becomes the upright, output-size yuv420p frame the encoder takes."""

    def __init__(self, stream, source_fps: float, config: TranscodeConfig):
        self.config = config
        self.coded_size = stream.codec_context.width, stream.codec_context.height
        self.turns = 0
        self.width, self.height = output_size(*self.coded_size, config)
        self.fps, _ = output_fps(source_fps, config)
        self.rate = Fraction(self.fps).limit_denominator(1001)
        self.source_frame_s = 1.0 / source_fps if source_fps > 0 else 1.0 / self.fps
        self.reformatter = av.video.reformatter.VideoReformatter()

    def first(self, frame: av.VideoFrame) -> None:
        """The display rotation of the first frame holds for the whole video."""
        self.turns = quarter_turns(frame)
        self.width, self.height = output_size(*turned_size(*self.coded_size, self.turns), self.config)

    def time_of(self, frame: av.VideoFrame, index: int) -> float:
        # Presentation time: real timing for variable-frame-rate sources (index as fallback).
        return frame.time if frame.time is not None else index * self.source_frame_s

    def prepare(self, frame: av.VideoFrame) -> av.VideoFrame:
        if self.turns == 0 and frame.format.name == "yuv420p" and (frame.width, frame.height) == (self.width, self.height):
            return frame  # already what the encoder wants; the encoder keeps its own reference
        coded_width, coded_height = turned_size(self.width, self.height, self.turns)
        return rotate_yuv420p(self.reformatter.reformat(frame, width=coded_width, height=coded_height, format="yuv420p"),
                              self.turns)

    def small_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """The shot detector's 48x27 RGB picture of the upright frame (as ``shots.decode_small_rgb`` makes it)."""
        coded_width, coded_height = turned_size(TRANSNET_WIDTH, TRANSNET_HEIGHT, self.turns)
        return rotate_rgb(self.reformatter.reformat(frame, width=coded_width, height=coded_height, format="rgb24",
                                                    interpolation="BILINEAR").to_ndarray(), self.turns)


@dataclass
class _OpenClip:
    start_frame: int
    start_time: float
    tmp_path: Path
    container: av.container.OutputContainer
    stream: av.video.stream.VideoStream
    accumulator: SignalAccumulator
    proxy_tmp: Path | None = None
    proxy_container: av.container.OutputContainer | None = None
    proxy_stream: av.video.stream.VideoStream | None = None
    written: int = 0
    held: av.VideoFrame | None = None  # the latest source frame, not yet written
    last_time: float = 0.0
    next_sample_time: float = 0.0
    next_proxy_time: float = 0.0
    thumbnails: list = field(default_factory=list)  # (clip time, RGB) at the score samples: the middle one is kept


class ClipWriter:
    """Encodes frames into one clip at a time: ``open``, ``add`` every frame of the clip in order, then ``close``
    with where the finished clip goes (or nothing, to throw it away). Files are written under temporary names in
    ``staging`` (a crashed writer's leftovers are removed by name) and appear under their final names only whole."""

    def __init__(self, frames: _Frames, staging: Path, with_proxy: bool):
        self.frames, self.staging, self.with_proxy = frames, Path(staging), with_proxy
        self.current: _OpenClip | None = None

    def open(self, start_frame: int, start_time: float) -> None:
        f, config = self.frames, self.frames.config
        tmp_path, container, stream = self._output(f.width, f.height, config.preset, config.crf)
        self.current = _OpenClip(start_frame, start_time, tmp_path, container, stream, SignalAccumulator())
        if self.with_proxy:
            clip = self.current
            clip.proxy_tmp, clip.proxy_container, clip.proxy_stream = self._output(*proxy_size(f.width, f.height),
                                                                                  config.preset, config.crf)

    def _output(self, width, height, preset, crf):
        self.staging.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".mp4", dir=self.staging)
        os.close(fd)
        container = av.open(name, "w", format="mp4", options={"movflags": "+faststart"})
        stream = container.add_stream("libx264", rate=self.frames.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = h264_options(preset, crf)
        return Path(name), container, stream

    def add(self, frame_time: float, prepared: av.VideoFrame) -> None:
        self._emit_until(frame_time)
        self.current.held, self.current.last_time = prepared, frame_time

    def close(self, files: ClipFiles | None, span: Span | None = None) -> ClipResult | None:
        """Finish the clip; ``files`` None throws it away. ``span``: the source frames it covers."""
        clip, f = self.current, self.frames
        end_time = clip.last_time + f.source_frame_s
        self._emit_until(end_time)
        self.current = None
        for container, stream in ((clip.container, clip.stream), (clip.proxy_container, clip.proxy_stream)):
            if container is not None:
                for packet in stream.encode(None):
                    container.mux(packet)
                container.close()
        if files is None:
            self._discard(clip)
            return None
        files.clip.parent.mkdir(parents=True, exist_ok=True)
        os.replace(clip.tmp_path, files.clip)
        if clip.proxy_tmp is not None:
            if files.proxy is None:
                clip.proxy_tmp.unlink(missing_ok=True)
            else:
                files.proxy.parent.mkdir(parents=True, exist_ok=True)
                os.replace(clip.proxy_tmp, files.proxy)
        if clip.thumbnails:
            middle = clip.written / f.fps / 2
            _, thumbnail = min(clip.thumbnails, key=lambda sample: abs(sample[0] - middle))
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(thumbnail, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 82])
            write_bytes_atomically(files.thumbnail, jpeg.tobytes())
        return ClipResult(
            span=span or Span(clip.start_frame, clip.start_frame + clip.written),
            path=files.clip, thumbnail_path=files.thumbnail, width=f.width, height=f.height, fps=f.fps,
            frames=clip.written, start_s=clip.start_time, end_s=end_time, signals=clip.accumulator.result(),
            proxy_path=files.proxy if clip.proxy_tmp is not None else None,
        )

    def abort(self) -> None:
        """Never leave a half-written clip behind (on an error in the middle of one)."""
        if self.current is not None:
            for container in (self.current.container, self.current.proxy_container):
                if container is not None:
                    container.close()
            self._discard(self.current)
            self.current = None

    @staticmethod
    def _discard(clip: _OpenClip) -> None:
        for path in (clip.tmp_path, clip.proxy_tmp):
            if path is not None:
                path.unlink(missing_ok=True)

    def _emit_until(self, until_s: float) -> None:
        """Resample to a constant rate: each output slot shows the latest source frame at its time.

        The held frame fills every slot that starts before ``until_s`` (the next frame's time), with a
        quarter-slot tolerance so a constant-rate source at the output rate maps one to one and a
        double-rate source keeps every second frame. Variable-rate sources keep their real timing.
        """
        clip, f, config = self.current, self.frames, self.frames.config
        if clip.held is None:
            return
        tolerance = 0.25 / f.fps
        while clip.start_time + clip.written / f.fps + tolerance < until_s:
            frame = clip.held
            frame.pts, frame.time_base = clip.written, 1 / f.rate
            for packet in clip.stream.encode(frame):
                clip.container.mux(packet)
            clip_time = clip.written / f.fps
            if clip_time >= clip.next_sample_time:
                clip.accumulator.add(frame.to_ndarray()[:f.height], clip_time)  # the Y plane of yuv420p
                thumb_width = config.thumbnail_width
                thumb_height = max(2, round(thumb_width * f.height / f.width))
                clip.thumbnails.append((clip_time, f.reformatter.reformat(
                    frame, width=thumb_width, height=thumb_height, format="rgb24").to_ndarray()))
                clip.next_sample_time += 1.0 / config.score_sample_fps
            if clip.proxy_stream is not None and clip_time >= clip.next_proxy_time:
                # The proxy keeps the clip's timeline: pts in the clip's time base, so its frames carry their real times.
                small = f.reformatter.reformat(frame, width=clip.proxy_stream.width, height=clip.proxy_stream.height,
                                               format="yuv420p")
                small.pts, small.time_base = clip.written, 1 / f.rate
                for packet in clip.proxy_stream.encode(small):
                    clip.proxy_container.mux(packet)
                clip.next_proxy_time += 1.0 / PROXY_FPS
            clip.written += 1


def _as_files(destination) -> ClipFiles:
    return destination if isinstance(destination, ClipFiles) else ClipFiles(*destination)


def cut_clips(
    source: str | os.PathLike,
    spans: list[Span],
    destinations: list,
    source_fps: float,
    config: TranscodeConfig = TranscodeConfig(),
    limits: FrameLimits | None = None,
) -> list[ClipResult]:
    """Write one MP4 per span (``destinations``: ``ClipFiles`` or (clip path, thumbnail path[, proxy path]) per
    span), measuring each, in one decode pass.

    Spans must be sorted and non-overlapping. Files appear under their final names only when
    complete. Raises PyAV errors on undecodable input, and ``FrameTooLarge`` on a frame over ``limits``
    (whatever the stream header said): the caller records them per video.
    """
    if not spans:
        return []
    files = [_as_files(d) for d in destinations]
    results: list[ClipResult] = []
    pending = collections.deque(zip(spans, files))
    with av.open(str(source)) as container:
        stream = primary_video_stream(container)
        stream.thread_type = "AUTO"
        frames = _Frames(stream, source_fps, config)
        writer = ClipWriter(frames, files[0].clip.parent, with_proxy=any(f.proxy for f in files))
        index = -1
        try:
            for frame in decode_frames(container, stream, limits):
                index += 1
                if index == 0:
                    frames.first(frame)
                if writer.current is None:
                    if not pending:
                        break
                    if index < pending[0][0].start_frame:
                        continue
                    writer.open(index, frames.time_of(frame, index))
                writer.add(frames.time_of(frame, index), frames.prepare(frame))
                if index == pending[0][0].end_frame - 1:
                    span, destination = pending.popleft()
                    results.append(writer.close(destination, span))
            if writer.current is not None:  # the video ended early: keep what was decoded of the last span
                span, destination = pending.popleft()
                results.append(writer.close(destination, Span(span.start_frame, index + 1)))
        except BaseException:
            writer.abort()
            raise
    return results


# The look-behind buffer's bound when the detector falls behind the decoder: decoding waits for it beyond this.
MAX_BUFFERED_FRAMES = 256


class _DetectorThread:
    """The detector's stream on its own thread, so shot detection overlaps decoding and encoding (torch and
    libav both run without the GIL): chunks go in, probabilities come out in order, errors come out too."""

    def __init__(self, transitions):
        self.transitions = transitions
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.pending = 0  # submissions not yet answered
        self.thread = threading.Thread(target=self._run, name="shot-detector", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            chunk = self.inbox.get()
            if chunk is _STOP:
                return
            try:
                self.outbox.put(self.transitions.finish() if chunk is _FINISH else self.transitions.push(chunk))
            except BaseException as error:  # handed to the decoding thread, which raises it
                self.outbox.put(error)
                return

    def submit(self, chunk) -> None:
        self.pending += 1
        self.inbox.put(chunk)

    def ready(self, wait: bool = False) -> np.ndarray:
        """Probabilities finished so far (at least one answer's when ``wait``), in frame order."""
        answers = []
        while self.pending and (wait and not answers or not self.outbox.empty()):
            answers.append(self.outbox.get())
            self.pending -= 1
            if isinstance(answers[-1], BaseException):
                raise answers[-1]
        return np.concatenate(answers) if answers else np.zeros(0, np.float32)

    def drain(self) -> np.ndarray:
        parts = []
        while self.pending:
            parts.append(self.ready(wait=True))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def close(self) -> None:
        self.inbox.put(_STOP)
        self.thread.join()


_FINISH, _STOP = object(), object()


def stream_split(
    source: str | os.PathLike,
    detector,
    planner: StreamingClipPlanner,
    destination_for,
    source_fps: float,
    config: TranscodeConfig = TranscodeConfig(),
    limits: FrameLimits | None = None,
    staging: Path | None = None,
    stats: dict | None = None,
) -> list[ClipResult]:
    """Split a video at its shots in one decode: every frame goes to the detector's stream (``detector.stream()``, on
    a thread of its own, so detection overlaps decoding and encoding) and waits in a look-behind buffer until
    ``planner`` says which clip it is in; clips are encoded as their frames are decided. ``destination_for(span)`` names a kept clip's ``ClipFiles``; ``staging`` holds the files being
    written; ``stats`` (a dict) gets ``max_buffered_frames``, the most frames the look-behind buffer held. Errors as
    ``cut_clips``; no partial clip is left behind."""
    results: list[ClipResult] = []
    buffer: collections.deque = collections.deque()  # (index, time, prepared frame) not yet decided
    small: list[np.ndarray] = []
    detections = _DetectorThread(detector.stream())
    with av.open(str(source)) as container:
        stream = primary_video_stream(container)
        stream.thread_type = "AUTO"
        frames = _Frames(stream, source_fps, config)
        writer = ClipWriter(frames, staging or Path(tempfile.gettempdir()), with_proxy=True)

        def follow(events) -> None:
            for event in events:
                if event[0] == "end":
                    _, start, end, kept = event
                    span = Span(start, end)
                    result = writer.close(destination_for(span) if kept else None, span)
                    if result is not None:
                        results.append(result)
                    continue
                index, time_s, prepared = buffer.popleft()
                assert index == event[1], "the planner decides frames in order"
                if event[0] == "frame":
                    if writer.current is None:
                        writer.open(index, time_s)
                    writer.add(time_s, prepared)

        index, most = -1, 0
        try:
            for frame in decode_frames(container, stream, limits):
                index += 1
                if index == 0:
                    frames.first(frame)
                buffer.append((index, frames.time_of(frame, index), frames.prepare(frame)))
                most = max(most, len(buffer))
                small.append(frames.small_rgb(frame))
                if len(small) == 32:
                    detections.submit(np.stack(small))
                    small = []
                follow(planner.push(detections.ready()))
                while len(buffer) >= MAX_BUFFERED_FRAMES and detections.pending:  # the detector is far behind: wait
                    follow(planner.push(detections.ready(wait=True)))
            if small:
                detections.submit(np.stack(small))
            detections.submit(_FINISH)
            follow(planner.push(detections.drain()))
            follow(planner.finish())
        except BaseException:
            writer.abort()
            raise
        finally:
            detections.close()
    if stats is not None:
        stats["max_buffered_frames"] = most
    return results
