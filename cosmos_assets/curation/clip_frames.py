"""The frames of one clip that every CPU signal after the split reads (signal captions, embeddings, perceptual
hashes), decoded once per reader from the clip's proxy: ``clips.PROXY_FPS`` frames per second at
``clips.PROXY_MAX_SIDE`` pixels, written while the clip was encoded. Readers pick their own sample times from it
(``models.frames.pick_samples``), the same times they would sample from the clip. A clip split before proxies existed
is sampled from the clip file at the proxy's rate and size instead.
"""

from __future__ import annotations

import numpy as np

from cosmos_assets.common.artefacts import ArtefactStore
from cosmos_assets.curation.clips import PROXY_FPS, PROXY_MAX_SIDE
from cosmos_assets.curation.frame_hashes import clip_hashes_of_frames
from cosmos_assets.models.frames import SampledFrames, pick_samples, sample_frames

_ALL = 10**7  # no bound on frames: a clip is at most max_clip_s long


def clip_frame_set(store: ArtefactStore, clip: dict) -> SampledFrames:
    """Every proxy frame of a ``video_clips`` row (upright RGB, their clip times), as a set sampled at PROXY_FPS."""
    if clip.get("proxy_path"):
        decoded = sample_frames(store.local_path(clip["proxy_path"]), None, _ALL, max_side=PROXY_MAX_SIDE)
    else:
        decoded = sample_frames(store.local_path(clip["path"]), PROXY_FPS, _ALL, max_side=PROXY_MAX_SIDE)
    return SampledFrames(decoded.frames, decoded.timestamps, PROXY_FPS)


def clip_embedding_inputs(store: ArtefactStore, clip: dict, frames_per_clip: int = 8) -> tuple[np.ndarray, str]:
    """What ``clip_embeddings`` reads of one clip, from one decode of its proxy: the ``frames_per_clip`` frames spread
    over it for the video embedder, and its encoded perceptual hashes (the CPU part of embedding a clip)."""
    frame_set = clip_frame_set(store, clip)
    rate = max(frames_per_clip / max(clip["duration_s"], 1e-3), 0.1)
    return pick_samples(frame_set, rate, frames_per_clip).frames, clip_hashes_of_frames(frame_set, clip["duration_s"]).encode()
