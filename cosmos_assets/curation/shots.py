"""Splitting videos into clips: shots from TransNetV2's transition probabilities, or a fixed stride,
then clip planning.

The detector itself is model code (``cosmos_assets/models/transnetv2.py``); this module decodes the
small frames it takes, turns its per-frame probabilities into shots and shots into clips.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import av
import numpy as np

from cosmos_assets.common.decoding import FrameLimits, decode_frames, quarter_turns, rotate_rgb, turned_size
from cosmos_assets.common.knobs import knob
from cosmos_assets.curation.probe import primary_video_stream
from cosmos_assets.models.transnetv2 import TRANSNET_HEIGHT, TRANSNET_WIDTH


@dataclass(frozen=True)
class SplitConfig:
    """Shot splitting and clip planning, with cosmos-curate's defaults."""

    method: str = knob("transnetv2", "transnetv2: clips follow the shots TransNetV2 finds; fixed_stride: clips of "
                                     "stride_s seconds whatever the content.")
    threshold: float = knob(0.4, "TransNetV2 transition probability (0..1) above which a frame is a cut.")
    min_clip_s: float = knob(2.0, "Shortest clip in seconds; shorter shots (after trimming) are dropped.")
    max_clip_s: float = knob(60.0, "Longest clip in seconds; longer shots are cut into pieces of at most this.")
    trim_at_cuts_s: float = knob(0.5, "Seconds trimmed from each side of a cut (not at the video's start or end), "
                                      "so no clip holds transition frames.")
    stride_s: float = knob(10.0, "Clip length in seconds in fixed_stride mode.")


@dataclass(frozen=True)
class Span:
    start_frame: int  # inclusive
    end_frame: int  # exclusive

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame


def decode_small_rgb(path: str | os.PathLike, width=TRANSNET_WIDTH, height=TRANSNET_HEIGHT,
                     limits: FrameLimits | None = None) -> np.ndarray:
    """All frames of a video as uint8 RGB ``[T, height, width, 3]``, decoded with PyAV.

    One ``VideoReformatter`` is reused for every frame: PyAV otherwise builds a new scaler per frame.
    The deblocking filter is skipped: a third faster, and invisible at 48x27 (mean change < 1/255).
    Every frame is held to ``limits`` before it is scaled (``FrameTooLarge``), and turned upright like
    the clips (scaled to the turned size, then turned: the upright picture at ``width`` x ``height``).
    """
    reformatter = av.video.reformatter.VideoReformatter()
    frames = []
    with av.open(str(path)) as container:
        stream = primary_video_stream(container)
        stream.thread_type = "AUTO"
        stream.codec_context.options = {"skip_loop_filter": "all"}
        turns = None
        for frame in decode_frames(container, stream, limits):
            if turns is None:  # the first frame's display rotation holds for the whole video
                turns = quarter_turns(frame)
                coded_width, coded_height = turned_size(width, height, turns)
            frames.append(rotate_rgb(
                reformatter.reformat(
                    frame, width=coded_width, height=coded_height, format="rgb24", interpolation="BILINEAR"
                ).to_ndarray(), turns))
    if not frames:
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    return np.stack(frames)


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
    """Where the cuts are: the transition frame after each shot, which TransNetV2 puts on the last
    frame of the outgoing shot."""
    return [scene.end_frame for scene in scenes[:-1]]


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


class StreamingClipPlanner:
    """``plan_clips(scenes_from_probabilities(p, threshold), total, fps, config)``, decided frame by frame while the
    probabilities arrive, for a split that encodes each clip as soon as its frames are known to be in it.

    ``push(probabilities)`` and, at the end of the video, ``finish()`` return events in frame order:
    ``("skip", i)`` for a frame in no clip, ``("frame", i, start)`` for a frame of the clip that starts at ``start``,
    and ``("end", start, end, kept)`` once that clip's last frame is known. A frame is known to be in its shot's clip
    once the probabilities ``trim_at_cuts_s`` past it are below the threshold, so a clip starts before its end is
    known; a clip that then ends shorter than ``min_clip_s`` is not kept (its writer throws it away). The events give
    exactly the spans ``plan_clips`` gives for the same probabilities (``tests/test_streaming_split.py``).
    """

    def __init__(self, threshold: float, fps: float, config: SplitConfig):
        self.threshold = threshold
        self.trim = int(round(config.trim_at_cuts_s * fps))
        self.min_frames = max(1, int(round(config.min_clip_s * fps)))
        self.max_frames = max(self.min_frames, int(round(config.max_clip_s * fps)))
        self.seen = 0  # probabilities received
        self.decided = 0  # frames with their event given
        self.clip_start: int | None = None  # the first frame of the current shot's clips (its trimmed start)
        self.piece: int | None = None  # the first frame of the clip being written
        self.events: list[tuple] = []

    def push(self, probabilities) -> list[tuple]:
        for probability in probabilities:
            if probability > self.threshold:
                if self.clip_start is not None:  # a cut: the shot [start, here) ends `trim` frames early
                    self._decide_until(self.seen - self.trim)
                    self._end_piece()
                    self.clip_start = None
            elif self.clip_start is None:  # a shot starts; trimmed unless it starts the video
                self.clip_start = self.seen + (self.trim if self.seen > 0 else 0)
            self.seen += 1
            if self.clip_start is None:
                self._skip_until(self.seen)
            else:
                self._decide_until(self.seen - self.trim)
        return self._take()

    def finish(self) -> list[tuple]:
        """The video has ended: its last shot runs to the last frame, untrimmed."""
        if self.clip_start is not None:
            self._decide_until(self.seen)
            self._end_piece()
        self._skip_until(self.seen)
        return self._take()

    def _decide_until(self, end: int) -> None:
        """Frames before ``end`` belong to the current shot (whose clips start at ``clip_start``)."""
        while self.decided < end:
            frame = self.decided
            if frame < self.clip_start:
                self.events.append(("skip", frame))
            else:
                if self.piece is None:
                    self.piece = frame
                self.events.append(("frame", frame, self.piece))
                if frame + 1 - self.piece == self.max_frames:  # a full piece: the next frame starts another
                    self.events.append(("end", self.piece, frame + 1, True))
                    self.piece = None
            self.decided += 1

    def _end_piece(self) -> None:
        if self.piece is not None:
            self.events.append(("end", self.piece, self.decided, self.decided - self.piece >= self.min_frames))
            self.piece = None

    def _skip_until(self, end: int) -> None:
        while self.decided < end:
            self.events.append(("skip", self.decided))
            self.decided += 1

    def _take(self) -> list[tuple]:
        events, self.events = self.events, []
        return events
