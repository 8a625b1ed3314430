"""Perceptual frame hashes of clips and the near-exact duplicate stage that compares them.

PDQ/vPDQ (Meta) are the reference for this; their Python bindings have no wheel for this platform and
would need a C++ build, so this is a hash of the same family, in numpy/OpenCV:

- Frames are sampled at fixed times (``HASH_FPS`` per second of the clip's own timeline, whatever its
  frame rate), upright and downsized as everywhere else (``sample_frames``).
- Luma only; black letterbox / pillarbox bars are cropped (rows and columns at the edges that stay
  dark in every sampled frame), so a letterboxed copy hashes the same picture.
- The cropped luma is resized to 64 × 64 (area averaging), its 2-D DCT taken, and the 16 × 16
  lowest-frequency coefficients are compared with their median: 256 bits per frame, as PDQ. Low
  frequencies survive rescaling, re-compression and small crops; the median makes the hash
  independent of brightness and contrast. Nearly flat frames (fades, black) carry no information and
  are marked invalid: they neither match nor count.
- Two clips are compared on a common time offset (one clip may start later: a trimmed start or a shot
  cut at another frame): for each offset the share of the later clip's valid frames that have a frame
  of the earlier clip within ``MAX_HAMMING`` bits at the aligned time (± one sample, which absorbs a
  changed frame rate and sub-sample misalignment). The clip is a near-exact duplicate when that share
  is at least ``MIN_MATCHED_SHARE`` over at least ``MIN_MATCHED_FRAMES`` frames.
- Not crop-invariant: the hash shifts by ~40 bits per 2 % of the picture cut from each side, so a
  cropped copy (other than black bars) is left to the semantic stage.

Candidate pairs are found through 16 bands of 16 bits of each frame hash (a pair of near-identical
frames shares a band with high probability, see ``MIN_BAND_HIT_SHARE``); only candidates are compared
frame by frame. No Dagster here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

HASH_VERSION = 1
HASH_FPS = 4.0
MAX_HASH_FRAMES = 480  # 2 minutes at 4 fps; longer clips are sampled more sparsely
HASH_SIZE = 64
LOW_FREQUENCIES = 16  # 16 × 16 = 256 bits
WORDS = LOW_FREQUENCIES**2 // 64
BAR_LUMA = 24.0  # an edge row/column is a bar when it stays below this mean luma in every sampled frame
MIN_FRAME_STD = 4.0  # luma standard deviation under which a frame is flat (no hash)
# Measured by bench/near_duplicates.py (2026-12-02): at 32 bits, transformed copies matched 0.79-1.0 of
# their frames; distinct shots of one camera (a periodic conveyor, one signer before one wall) at most 0.53.
MAX_HAMMING = 32  # of 256 bits
MIN_MATCHED_SHARE = 0.7
MIN_MATCHED_FRAMES = 3
BANDS = 16
# A kept clip is compared frame by frame only when this share of the new clip's frames share a band with
# it: a frame within 32 bits of another shares one of 16 bands of 16 bits with probability ≥ 0.87, so a
# true duplicate (≥ 70 % of frames matched) has about 60 % or more; a random pair of frames 0.4 %.
MIN_BAND_HIT_SHARE = 0.3
MAX_BUCKET = 4096  # a band value shared by more kept frames than this is not used to find candidates


@dataclass(frozen=True)
class ClipHashes:
    """256-bit hashes of frames sampled every ``step_s`` seconds from the clip's start.

    hashes: uint64[n, 4]; valid: bool[n] (False for flat frames, whose hash means nothing).
    """

    step_s: float
    hashes: np.ndarray
    valid: np.ndarray

    def encode(self) -> str:
        """A compact JSON string (the ``frame_hashes`` column)."""
        return json.dumps({"v": HASH_VERSION, "step_s": self.step_s,
                           "h": [h.tobytes().hex() if ok else None for h, ok in zip(self.hashes, self.valid)]},
                          separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> ClipHashes | None:
        if not text:
            return None
        data = json.loads(text)
        if data.get("v") != HASH_VERSION:
            return None
        rows = data["h"]
        hashes = np.zeros((len(rows), WORDS), dtype=np.uint64)
        valid = np.zeros(len(rows), dtype=bool)
        for i, row in enumerate(rows):
            if row is not None:
                hashes[i] = np.frombuffer(bytes.fromhex(row), dtype=np.uint64)
                valid[i] = True
        return cls(float(data["step_s"]), hashes, valid)


def _crop_bars(lumas: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns inside the dark bars that frame every sampled frame (letterbox, pillarbox)."""
    brightest = lumas.max(axis=0)  # per pixel, over frames
    rows, columns = brightest.mean(axis=1), brightest.mean(axis=0)

    def inside(profile: np.ndarray) -> slice:
        lit = np.flatnonzero(profile >= BAR_LUMA)
        if len(lit) == 0 or (lit[-1] + 1 - lit[0]) < len(profile) // 2:
            return slice(0, len(profile))  # dark footage, not bars: keep the whole frame
        return slice(int(lit[0]), int(lit[-1]) + 1)

    return inside(rows), inside(columns)


def frame_hashes_of(lumas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hashes (uint64[n, 4]) and validity of luma frames (float32[n, h, w]) of one clip."""
    import cv2

    n = len(lumas)
    hashes = np.zeros((n, WORDS), dtype=np.uint64)
    valid = np.zeros(n, dtype=bool)
    if n == 0:
        return hashes, valid
    rows, columns = _crop_bars(lumas)
    weights = (1 << np.arange(64, dtype=np.uint64)).astype(np.uint64)
    for i, luma in enumerate(lumas):
        picture = np.ascontiguousarray(luma[rows, columns], dtype=np.float32)
        if float(picture.std()) < MIN_FRAME_STD:
            continue
        small = cv2.resize(picture, (HASH_SIZE, HASH_SIZE), interpolation=cv2.INTER_AREA)
        low = cv2.dct(small)[:LOW_FREQUENCIES, :LOW_FREQUENCIES].ravel()
        bits = (low > np.median(low)).reshape(WORDS, 64).astype(np.uint64)
        hashes[i] = (bits * weights).sum(axis=1, dtype=np.uint64)
        valid[i] = True
    return hashes, valid


def clip_hashes(path, max_side: int = 256) -> ClipHashes:
    """Hash a clip file: frames at ``HASH_FPS`` (fewer for long clips), luma, bars cropped."""
    import av

    from cosmos_assets.models.frames import sample_frames

    with av.open(str(path)) as container:
        duration = float(container.duration / 1e6) if container.duration else 0.0
    fps = HASH_FPS if duration * HASH_FPS <= MAX_HASH_FRAMES else max(MAX_HASH_FRAMES / max(duration, 1e-3), 0.05)
    sampled = sample_frames(path, fps, MAX_HASH_FRAMES, max_side=max_side)
    frames = np.asarray(sampled.frames, dtype=np.float32)
    if len(frames) == 0:
        return ClipHashes(1.0 / fps, np.zeros((0, WORDS), np.uint64), np.zeros(0, bool))
    lumas = frames[..., 0] * 0.299 + frames[..., 1] * 0.587 + frames[..., 2] * 0.114
    hashes, valid = frame_hashes_of(lumas)
    return ClipHashes(1.0 / float(sampled.fps) if getattr(sampled, "fps", None) else 1.0 / fps, hashes, valid)


def hamming_matrix(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Bit distances between every row of ``first`` (uint64[n, 4]) and of ``second`` (uint64[m, 4])."""
    return np.bitwise_count(first[:, None, :] ^ second[None, :, :]).sum(axis=2, dtype=np.int32)


@dataclass(frozen=True)
class Match:
    matched_share: float  # of the later clip's valid frames
    matched_frames: int
    median_hamming: float  # over the matched frames
    offset_s: float  # the later clip's start in the earlier clip's time


def compare(later: ClipHashes, earlier: ClipHashes, max_hamming: int = MAX_HAMMING) -> Match | None:
    """Best time alignment of ``later`` inside ``earlier``; None when either has no valid frame."""
    q_index, c_index = np.flatnonzero(later.valid), np.flatnonzero(earlier.valid)
    if len(q_index) == 0 or len(c_index) == 0:
        return None
    # Both on the earlier clip's sampling grid (steps differ only for long clips).
    ratio = later.step_s / earlier.step_s
    distance = hamming_matrix(later.hashes[q_index], earlier.hashes[c_index])
    q_pos = np.rint(q_index * ratio).astype(np.int64)
    best: Match | None = None
    for offset in np.unique(c_index[None, :] - q_pos[:, None]):
        target = q_pos + offset
        # The nearest candidate frame within ± one sample of the aligned time.
        near = np.abs(c_index[None, :] - target[:, None]) <= 1
        aligned = np.where(near, distance, 10**6).min(axis=1)
        hit = aligned <= max_hamming
        matched = int(hit.sum())
        if best is not None and matched <= best.matched_frames:
            continue
        best = Match(matched / len(q_index), matched, float(np.median(aligned[hit])) if matched else float("nan"),
                     float(offset * earlier.step_s))
    return best


def is_duplicate(match: Match | None, min_share: float = MIN_MATCHED_SHARE) -> bool:
    return match is not None and match.matched_share >= min_share and match.matched_frames >= min(
        MIN_MATCHED_FRAMES, max(1, int(round(match.matched_frames / max(match.matched_share, 1e-9)))))


@dataclass(frozen=True)
class NearExactResult:
    """Per clip (input order): -1 when kept by this stage, else the index of the earlier kept clip it
    repeats; and for those, the match's evidence (share of matched frames, their median Hamming distance)."""

    duplicate_of: np.ndarray
    matched_share: np.ndarray
    hamming: np.ndarray
    matched_frames: np.ndarray


def near_exact_dedup(clips: list[ClipHashes | None], priority: np.ndarray | None = None, *,
                     max_hamming: int = MAX_HAMMING, min_share: float = MIN_MATCHED_SHARE) -> NearExactResult:
    """Visit clips by priority (smallest first); drop a clip whose frames repeat an earlier kept clip's.

    A clip without hashes (None) is kept by this stage. The earlier clip named is the kept candidate
    with the largest matched share (ties: the earliest)."""
    n = len(clips)
    order = np.arange(n) if priority is None else np.argsort(np.asarray(priority), kind="stable")
    duplicate_of = np.full(n, -1, dtype=np.int64)
    share = np.full(n, np.nan)
    hamming = np.full(n, np.nan)
    matched_frames = np.zeros(n, dtype=np.int64)
    buckets: list[dict[int, list[int]]] = [{} for _ in range(BANDS)]
    for index in order:
        clip = clips[index]
        if clip is None or not clip.valid.any():
            continue
        bands = _bands(clip.hashes[clip.valid])
        hits: dict[int, int] = {}  # kept clip -> how many of this clip's frames share a band with one of its frames
        for frame_bands in bands.tolist():
            hit: set[int] = set()
            for b, value in enumerate(frame_bands):
                members = buckets[b].get(value)
                if members and len(members) <= MAX_BUCKET:
                    hit.update(members)
            for other in hit:
                hits[other] = hits.get(other, 0) + 1
        needed = max(1, int(np.ceil(MIN_BAND_HIT_SHARE * len(bands))))
        best, best_match = -1, None
        for other in sorted(o for o, count in hits.items() if count >= needed):
            match = compare(clip, clips[other], max_hamming)
            if is_duplicate(match, min_share) and (best_match is None or match.matched_share > best_match.matched_share):
                best, best_match = other, match
        if best >= 0:
            duplicate_of[index] = best
            share[index], hamming[index] = best_match.matched_share, best_match.median_hamming
            matched_frames[index] = best_match.matched_frames
            continue
        for b in range(BANDS):
            table = buckets[b]
            for value in np.unique(bands[:, b]).tolist():
                table.setdefault(value, []).append(int(index))
    return NearExactResult(duplicate_of, share, hamming, matched_frames)


def _bands(hashes: np.ndarray) -> np.ndarray:
    """uint16 bands of each hash: int64[n, 16]."""
    return np.ascontiguousarray(hashes).view(np.uint16).reshape(len(hashes), BANDS).astype(np.int64)
