"""Perceptual frame hashes of clips and the near-exact duplicate stage that compares them.

PDQ/vPDQ (Meta) are the reference for this; their Python bindings have no wheel for this platform and
would need a C++ build, so this is a hash of the same family, in numpy/OpenCV:

- Frames are sampled at fixed times (``HASH_FPS`` per second of the clip's own timeline, whatever its
  frame rate), upright and downsized as everywhere else (``sample_frames``).
- Luma only; black letterbox / pillarbox bars are cropped (rows and columns at the edges that stay
  dark in every sampled frame), so a letterboxed copy hashes the same picture.
- The cropped luma is resized to 64 × 64 (area averaging), its 2-D DCT taken, and the 16 × 16
  lowest-frequency coefficients are compared with their median: 256 bits per frame, as PDQ. Low
  frequencies survive rescaling and re-compression; the median makes the hash independent of
  brightness and contrast. Nearly flat frames (fades, black) carry no information and are marked
  invalid: they neither match nor count.
- Crops: the hash moves by ~15 bits per 1 % of the picture cut from each side (measured by
  bench/near_duplicates.py), so a cropped copy does not match the whole picture. Each frame is therefore
  also hashed at the centred crops in ``CROPS`` (a zoomed re-upload: 1.5-10.5 % off every side in steps of
  1.5 %; a 16:9 picture cut to 4:3 or a 4:3 one to 16:9). A copy that is a centred crop of a clip matches
  one of that clip's crop hashes, whichever of the two landed first. Each frame is also hashed with one
  edge cut off, top, bottom, left or right (a caption band, a ticker or a watermark strip removed): 5-11 %
  of that side in steps of 2 %. Cutting one edge moves the hash by ~10 bits per 1 % (it shifts the picture
  by half as much as it zooms it), so each such copy cut 4-12 % is within 1 % of a hashed one. Crops of two
  edges at once and pan-and-scan (a narrower window moving over the picture) are not covered.
- Two clips are compared on a common time offset (one clip may start later: a trimmed start or a shot
  cut at another frame): for each offset the share of the later clip's valid frames that have a frame
  of the earlier clip within ``MAX_HAMMING`` bits at the aligned time (± one sample, which absorbs a
  changed frame rate and sub-sample misalignment), for the whole pictures and for each crop of either
  clip against the other's whole picture (1 + 2 × 25 pairings). The clip is a near-exact duplicate when the
  best share is at least ``MIN_MATCHED_SHARE`` over at least ``MIN_MATCHED_FRAMES`` frames.

Candidate pairs are found in bulk (numpy, no per-frame Python): each hash gives ``BANDS`` keys of
``BAND_BITS`` bits; entries that share a key are joined by sorting each band once, and a joined pair counts
only when the two whole hashes are within ``MAX_HAMMING`` bits. Two clips are compared frame by frame only
when one such pair of frames joins them (whole picture with whole picture or with a crop). A duplicate is
missed only when none of its matching frames shares a key with its match: each does not with probability
0.05 within 20 bits, 0.34 within 28 bits, 0.5 within 32. Those misses are independent only when the frames
differ in different bits; a copy whose every frame differs in the same bits (a still shot) is missed with
the single frame's probability (measured in the bench's scale run: copies of copies, the same 24 bits
apart in every frame, 10 of ~60 missed). Copies within 20 bits are found.
No Dagster here.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

# 2: every frame also hashed at the centred crops in CROPS; hashes stored as base64 (v1 columns still
# decode, as whole-picture hashes only).
# 3: the edge crops added after the centred ones; v2 columns still decode, with their centred crops (a prefix
# of CROPS), and meet edge-cut copies once re-hashed.
HASH_VERSION = 3
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
# (kept width, kept height) of each centred crop hashed besides the whole picture. Measured on the bench's
# shots rescaled and at CRF 32 (worst shot's median): the copy's own crop 14-19 bits, 0.5 % per side away
# ≤ 24, 1 % away 28-34: hence steps of 1.5 % per side, none more than 0.75 % from any crop up to 11 %.
# Then the edge crops, (kept width, kept height, the edge cut): one side only. Measured on the sample clips at
# the hashing size (bench/near_duplicates.py's shots, 256 px wide): cutting 0.5 % more of one edge moves the
# hash 0-10 bits, 1 % 10-20, 1.5 % 18-26 (median-max), against 12-18 and 26-38 for the centred crops at
# 0.75 and 1.5 % a side; a 2 % grid leaves every cut of 4-12 % within 1 % of a hashed one at the cost of 16
# hashes a frame (a 1.5 % grid would take 20).
EDGE_CUTS = (0.05, 0.07, 0.09, 0.11)
CROPS = tuple((round(1 - 2 * cut, 3), round(1 - 2 * cut, 3)) for cut in (0.015, 0.03, 0.045, 0.06, 0.075, 0.09, 0.105)) + (
    (0.75, 1.0), (1.0, 0.75)) + tuple(
    (1.0, round(1 - cut, 3), edge) for edge in ("top", "bottom") for cut in EDGE_CUTS) + tuple(
    (round(1 - cut, 3), 1.0, edge) for edge in ("left", "right") for cut in EDGE_CUTS)
# Keys: 19 windows of 24 bits starting every 12 bits over bits 0-239 (the last row of frequencies, the
# least stable, is left out). A frame within 20 bits of another shares one of them with probability 0.95,
# within 28 bits 0.66, within 32 bits 0.50 (simulated); two random frames with probability 1e-6, which keeps
# the joins linear up to millions of clips (16-bit keys would give 3e10 random frame pairs at a million
# clips; overlapping windows catch more than 10 disjoint ones, 0.45 within 28 bits, at twice the joins).
BAND_BITS = 24
BAND_STEP = 12
BANDS = 19
MAX_BUCKET = 4096  # a key held by more clips than this is not used to find candidates


@dataclass(frozen=True)
class ClipHashes:
    """256-bit hashes of frames sampled every ``step_s`` seconds from the clip's start.

    hashes: uint64[n, v, 4], the whole picture (v = 0) then each of ``CROPS`` (v = 1..), or of its first
    v - 1 for hashes stored before the later crops were added (the whole picture alone for version 1). valid: bool[n] (False for flat frames,
    whose hash means nothing).
    """

    step_s: float
    hashes: np.ndarray
    valid: np.ndarray

    def encode(self) -> str:
        """A compact JSON string (the ``frame_hashes`` column): the valid frames' hashes as base64."""
        crops = [list(c) for c in CROPS[:self.hashes.shape[1] - 1]]
        return json.dumps({"v": HASH_VERSION, "step_s": self.step_s, "crops": crops,
                           "valid": "".join("1" if ok else "0" for ok in self.valid),
                           "h": base64.b64encode(np.ascontiguousarray(self.hashes[self.valid]).tobytes()).decode()},
                          separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> ClipHashes | None:
        if not text:
            return None
        data = json.loads(text)
        if data.get("v") == 1:
            rows = data["h"]
            hashes = np.zeros((len(rows), 1, WORDS), dtype=np.uint64)
            valid = np.array([row is not None for row in rows], dtype=bool)
            for i, row in enumerate(rows):
                if row is not None:
                    hashes[i, 0] = np.frombuffer(bytes.fromhex(row), dtype=np.uint64)
            return cls(float(data["step_s"]), hashes, valid)
        if data.get("v") not in (2, HASH_VERSION):
            return None
        valid = np.array([c == "1" for c in data["valid"]], dtype=bool)
        crops = [tuple(c) for c in data["crops"]]
        hashes = np.zeros((len(valid), 1 + len(crops), WORDS), dtype=np.uint64)
        hashes[valid] = np.frombuffer(base64.b64decode(data["h"]), dtype=np.uint64).reshape(-1, 1 + len(crops), WORDS)
        # Crops hashed under another CROPS list mean other pictures: only the whole picture and the crops both
        # lists begin with (version 2's centred crops) are comparable.
        same = next((i for i, (a, b) in enumerate(zip(crops, CROPS)) if a != b), min(len(crops), len(CROPS)))
        return cls(float(data["step_s"]), hashes[:, :1 + same], valid)


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


_WEIGHTS = (1 << np.arange(64, dtype=np.uint64)).astype(np.uint64)


def _bits(small: np.ndarray) -> np.ndarray:
    """The 256-bit DCT hash (uint64[4]) of a 64 × 64 luma picture."""
    import cv2

    low = cv2.dct(small)[:LOW_FREQUENCIES, :LOW_FREQUENCIES].ravel()
    bits = (low > np.median(low)).reshape(WORDS, 64).astype(np.uint64)
    return (bits * _WEIGHTS).sum(axis=1, dtype=np.uint64)


def frame_hashes_of(lumas: np.ndarray, crops: tuple[tuple[float, float], ...] = CROPS) -> tuple[np.ndarray, np.ndarray]:
    """Hashes (uint64[n, 1 + len(crops), 4]: the whole picture, then each crop) and validity of luma
    frames (float32[n, h, w]) of one clip."""
    import cv2

    n = len(lumas)
    hashes = np.zeros((n, 1 + len(crops), WORDS), dtype=np.uint64)
    valid = np.zeros(n, dtype=bool)
    if n == 0:
        return hashes, valid
    rows, columns = _crop_bars(lumas)
    for i, luma in enumerate(lumas):
        picture = np.ascontiguousarray(luma[rows, columns], dtype=np.float32)
        if float(picture.std()) < MIN_FRAME_STD:
            continue
        height, width = picture.shape
        for v, crop in enumerate(((1.0, 1.0), *crops)):
            part = picture[_region(crop, height, width)]
            hashes[i, v] = _bits(cv2.resize(part, (HASH_SIZE, HASH_SIZE), interpolation=cv2.INTER_AREA))
        valid[i] = True
    return hashes, valid


def _region(crop: tuple, height: int, width: int) -> tuple[slice, slice]:
    """Rows and columns kept by a crop of ``CROPS``: centred, or with one named edge cut."""
    keep_w, keep_h, *edge = crop
    if not edge:  # rounded as HASH_VERSION 2 did, so that its stored centred crops keep their meaning
        dy, dx = int(round(height * (1 - keep_h) / 2)), int(round(width * (1 - keep_w) / 2))
        return slice(dy, height - dy), slice(dx, width - dx)
    cut_y, cut_x = int(round(height * (1 - keep_h))), int(round(width * (1 - keep_w)))
    return {"top": (slice(cut_y, height), slice(None)), "bottom": (slice(0, height - cut_y), slice(None)),
            "left": (slice(None), slice(cut_x, width)), "right": (slice(None), slice(0, width - cut_x))}[edge[0]]


def _hash_rate(duration_s: float) -> float:
    return HASH_FPS if duration_s * HASH_FPS <= MAX_HASH_FRAMES else max(MAX_HASH_FRAMES / max(duration_s, 1e-3), 0.05)


def clip_hashes(path, max_side: int = 256) -> ClipHashes:
    """Hash a clip file: frames at ``HASH_FPS`` (fewer for long clips), luma, bars cropped, whole and at ``CROPS``."""
    import av

    from cosmos_assets.models.frames import sample_frames

    with av.open(str(path)) as container:
        duration = float(container.duration / 1e6) if container.duration else 0.0
    fps = _hash_rate(duration)
    return _hash_sampled(sample_frames(path, fps, MAX_HASH_FRAMES, max_side=max_side), fps)


def clip_hashes_of_frames(decoded, duration_s: float, max_side: int = 256) -> ClipHashes:
    """``clip_hashes`` of frames already decoded (``models.frames.SampledFrames``, e.g. a clip's proxy, at least
    ``HASH_FPS`` per second): the same sample times, each frame brought down to ``max_side``."""
    import cv2

    from cosmos_assets.models.frames import SampledFrames, pick_samples

    fps = _hash_rate(duration_s)
    sampled = pick_samples(decoded, fps, MAX_HASH_FRAMES)
    height, width = sampled.frames.shape[1:3]
    scale = max_side / max(height, width)
    if scale < 1:
        size = (max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2))
        sampled = SampledFrames(np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in sampled.frames]),
                                sampled.timestamps, sampled.fps)
    return _hash_sampled(sampled, fps)


def _hash_sampled(sampled, fps: float) -> ClipHashes:
    frames = np.asarray(sampled.frames, dtype=np.float32)
    if len(frames) == 0:
        return ClipHashes(1.0 / fps, np.zeros((0, 1 + len(CROPS), WORDS), np.uint64), np.zeros(0, bool))
    lumas = frames[..., 0] * 0.299 + frames[..., 1] * 0.587 + frames[..., 2] * 0.114
    hashes, valid = frame_hashes_of(lumas)
    return ClipHashes(1.0 / float(sampled.fps) if getattr(sampled, "fps", None) else 1.0 / fps, hashes, valid)


@dataclass(frozen=True)
class Match:
    matched_share: float  # of the later clip's valid frames
    matched_frames: int
    median_hamming: float  # over the matched frames
    offset_s: float  # the later clip's start in the earlier clip's time
    # When a crop matched: which clip's crop ("later" or "earlier") equals the other's whole picture, and the
    # crop as in CROPS: (kept width, kept height) share of that clip's picture, then the edge cut if not centred.
    cropped: str | None = None
    crop: tuple | None = None


_FAR = 10**6


def compare(later: ClipHashes, earlier: ClipHashes, max_hamming: int = MAX_HAMMING) -> Match | None:
    """Best time alignment of ``later`` inside ``earlier``, over the whole pictures and every crop of
    either clip against the other's whole picture; None when either has no valid frame. Of alignments
    matching as many frames, the one with the smallest total distance wins, then the whole pictures,
    then the smaller offset."""
    q_index, c_index = np.flatnonzero(later.valid), np.flatnonzero(earlier.valid)
    if len(q_index) == 0 or len(c_index) == 0:
        return None
    q_hashes, c_hashes = later.hashes[q_index], earlier.hashes[c_index]
    # Pairings: whole × whole, whole × each crop of the earlier clip, each crop of the later clip × whole.
    distance = np.concatenate([  # later frame × earlier frame × pairing
        np.bitwise_count(q_hashes[:, None, None, 0] ^ c_hashes[None, :, :]).sum(axis=-1, dtype=np.int32),
        np.bitwise_count(q_hashes[:, None, 1:] ^ c_hashes[None, :, None, 0]).sum(axis=-1, dtype=np.int32)], axis=2)
    distance = np.moveaxis(distance, 2, 0)  # pairing × later frame × earlier frame
    # Both on the earlier clip's sampling grid (steps differ only for long clips).
    q_pos = np.rint(q_index * later.step_s / earlier.step_s).astype(np.int64)
    length = int(c_index[-1]) + 1
    dense = np.full((len(distance), len(q_index), length + 2), _FAR, dtype=np.int32)
    dense[:, :, c_index + 1] = distance
    # The nearest earlier frame within ± one sample of each aligned time.
    window = np.minimum(np.minimum(dense[:, :, :-2], dense[:, :, 1:-1]), dense[:, :, 2:])
    offsets = np.unique(c_index[None, :] - q_pos[:, None])
    target = q_pos[:, None] + offsets[None, :]
    inside = (target >= 0) & (target < length)
    aligned = np.where(inside, window[:, np.arange(len(q_index))[:, None], np.clip(target, 0, length - 1)], _FAR)
    hit = aligned <= max_hamming
    matched = hit.sum(axis=1)  # pairing × offset
    # Most frames matched; among those, the smallest total distance (which crop fits best), then the first.
    score = matched.astype(np.int64) * (max_hamming + 1) * len(q_index) - np.where(hit, aligned, 0).sum(axis=1)
    pairing, offset = np.unravel_index(int(np.argmax(score)), score.shape)
    hits = int(matched[pairing, offset])
    column = aligned[pairing, :, offset]
    cropped, crop = None, None
    whole_vs_crop = c_hashes.shape[1] - 1
    if 1 <= pairing <= whole_vs_crop:
        cropped, crop = "later", CROPS[pairing - 1]
    elif pairing > whole_vs_crop:
        cropped, crop = "earlier", CROPS[pairing - 1 - whole_vs_crop]
    return Match(hits / len(q_index), hits, float(np.median(column[column <= max_hamming])) if hits else float("nan"),
                 float(offsets[offset] * earlier.step_s), cropped, crop)


def is_duplicate(match: Match | None, min_share: float = MIN_MATCHED_SHARE) -> bool:
    return match is not None and match.matched_share >= min_share and match.matched_frames >= min(
        MIN_MATCHED_FRAMES, max(1, int(round(match.matched_frames / max(match.matched_share, 1e-9)))))


@dataclass(frozen=True)
class NearExactResult:
    """Per clip (input order): -1 when kept by this stage, else the index of the earlier kept clip it
    repeats; and for those, the match's evidence (share of matched frames, their median Hamming distance,
    and which clip is a crop of the other, if one is: ``{"cropped": "this" | "kept", "keep": [w, h]}``, with
    ``"cut": "top" | "bottom" | "left" | "right"`` when one edge was cut rather than the picture centred)."""

    duplicate_of: np.ndarray
    matched_share: np.ndarray
    hamming: np.ndarray
    matched_frames: np.ndarray
    crop: list


def near_exact_dedup(clips: list[ClipHashes | None], priority: np.ndarray | None = None, *,
                     max_hamming: int = MAX_HAMMING, min_share: float = MIN_MATCHED_SHARE) -> NearExactResult:
    """Visit clips by priority (smallest first); drop a clip whose frames repeat an earlier kept clip's.

    A clip without hashes (None) is kept by this stage. The earlier clip named is the kept candidate
    with the largest matched share (ties: the earliest by priority)."""
    n = len(clips)
    order = np.arange(n) if priority is None else np.argsort(np.asarray(priority), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    share = np.full(n, np.nan)
    hamming = np.full(n, np.nan)
    matched_frames = np.zeros(n, dtype=np.int64)
    crop: list = [None] * n
    later, earlier = candidate_pairs(clips, rank, max_hamming)
    bounds = np.flatnonzero(np.diff(later, prepend=-1, append=-1))  # pairs come grouped by later clip, in visiting order
    for start, end in zip(bounds[:-1], bounds[1:]):
        index = int(later[start])
        best, best_match = -1, None
        for other in earlier[start:end].tolist():
            if duplicate_of[other] >= 0:
                continue  # dropped itself: only kept clips are named
            match = compare(clips[index], clips[other], max_hamming)
            if is_duplicate(match, min_share) and (best_match is None or match.matched_share > best_match.matched_share):
                best, best_match = other, match
        if best >= 0:
            duplicate_of[index] = best
            share[index], hamming[index] = best_match.matched_share, best_match.median_hamming
            matched_frames[index] = best_match.matched_frames
            if best_match.cropped:
                crop[index] = {"cropped": "this" if best_match.cropped == "later" else "kept",
                               "keep": list(best_match.crop[:2]), **({"cut": best_match.crop[2]} if len(best_match.crop) > 2 else {})}
    return NearExactResult(duplicate_of, share, hamming, matched_frames, crop)


def candidate_pairs(clips: list[ClipHashes | None], rank: np.ndarray,
                    max_hamming: int = MAX_HAMMING) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (later clip, earlier clip) by ``rank`` with a frame of one within ``max_hamming`` bits of a frame
    of the other, found through a shared key: whole picture with whole picture or with a crop. Sorted by
    the later clip's rank, then the earlier's."""
    whole_clip, whole, crop_clip, crops = _entries(clips)
    n = len(clips)
    found = []
    for band in range(BANDS):
        whole_key = _key(whole, band)
        first, second = _same_key(whole_key, whole_clip)
        pairs = [(whole_clip[first], whole_clip[second], whole[first] ^ whole[second])]
        if len(crops):
            # Crops only against whole pictures: look each crop's key up among the sorted whole keys.
            order = np.argsort(whole_key)
            sorted_key = whole_key[order]
            crop_key = _key(crops, band)
            # A table of the 2^24 keys first: most crop keys match no whole picture, and a table look-up is
            # cheaper than a binary search (which then runs on the few that do).
            held = np.zeros(1 << BAND_BITS, dtype=bool)
            held[whole_key] = True
            hit = np.flatnonzero(held[crop_key])
            low = np.searchsorted(sorted_key, crop_key[hit])
            count = np.searchsorted(sorted_key, crop_key[hit], side="right") - low
            small = count <= MAX_BUCKET
            hit, low, count = hit[small], low[small], count[small]
            crop_index = np.repeat(hit, count)
            within = np.arange(len(crop_index)) - np.repeat(np.cumsum(count) - count, count)
            whole_index = order[np.repeat(low, count) + within]
            pairs.append((whole_clip[whole_index], crop_clip[crop_index], whole[whole_index] ^ crops[crop_index]))
        for one, other, difference in pairs:
            # A shared key is only a lead: two random frames share one of the keys with probability 1e-6, and
            # the whole hashes then differ by ~128 bits. Checking the distance here keeps such pairs from
            # costing a clip comparison each.
            close = (one != other) & (np.bitwise_count(difference).sum(axis=1) <= max_hamming)
            one, other = one[close], other[close]
            swap = rank[one] < rank[other]
            found.append(np.unique(np.where(swap, other, one) * n + np.where(swap, one, other)))
    codes = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    later, earlier = codes // n, codes % n
    by_rank = np.lexsort((rank[earlier], rank[later]))
    return later[by_rank], earlier[by_rank]


def _entries(clips: list[ClipHashes | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every hash the candidate search keys: each valid frame's whole picture, and its crops. Returns the
    clip of each whole-picture entry and their hashes (uint64[m, 4]), then the same for the crop entries."""
    present = [i for i, c in enumerate(clips) if c is not None and c.valid.any()]
    none = (np.zeros(0, np.int64), np.zeros((0, WORDS), np.uint64))
    if not present:
        return none + none
    valid = np.concatenate([clips[i].valid for i in present])
    whole_clip = np.repeat(np.asarray(present, dtype=np.int64), [len(clips[i].valid) for i in present])[valid]
    whole = np.concatenate([clips[i].hashes[:, 0] for i in present])[valid]
    # Crops: those each clip was hashed with (all of CROPS, the centred ones for version 2, none for version 1).
    cropped = [i for i in present if clips[i].hashes.shape[1] > 1]
    if not cropped:
        return (whole_clip, whole) + none
    crops = np.concatenate([clips[i].hashes[clips[i].valid, 1:].reshape(-1, WORDS) for i in cropped])
    crop_clip = np.repeat(np.asarray(cropped, dtype=np.int64),
                          [int(clips[i].valid.sum()) * (clips[i].hashes.shape[1] - 1) for i in cropped])
    return whole_clip, whole, crop_clip, crops


def _key(hashes: np.ndarray, band: int) -> np.ndarray:
    """Key ``band`` of each hash: bits ``BAND_STEP``·band onwards, ``BAND_BITS`` of them, as uint32."""
    start = band * BAND_STEP
    octets = np.ascontiguousarray(hashes).view(np.uint8).reshape(len(hashes), 32)[:, start // 8:start // 8 + 4]
    word = np.ascontiguousarray(octets).view("<u4").ravel()
    return (word >> np.uint32(start % 8)) & np.uint32((1 << BAND_BITS) - 1)


def _same_key(key: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of entries with equal ``key`` and different ``owner`` (clip), one entry per owner and key;
    keys held by more than ``MAX_BUCKET`` owners left out. One sort, then a loop over the
    distance within a run of equal keys: the work is the number of pairs, not a Python step per entry."""
    # One entry per (key, owner): the frames of a still shot share their keys, and pairing them all with
    # each other would cost a clip's frame count squared for nothing.
    order = np.argsort(key.astype(np.int64) * (int(owner.max()) + 1 if len(owner) else 1) + owner)
    first_of_owner = np.ones(len(order), dtype=bool)
    first_of_owner[1:] = (key[order[1:]] != key[order[:-1]]) | (owner[order[1:]] != owner[order[:-1]])
    order = order[first_of_owner]
    sorted_key = key[order]
    starts = np.flatnonzero(np.diff(sorted_key, prepend=sorted_key[:1] ^ 1)) if len(order) else np.zeros(0, np.int64)
    sizes = np.diff(starts, append=len(order))
    run_size = np.repeat(sizes, sizes)
    position = np.arange(len(order)) - np.repeat(starts, sizes)
    active = np.flatnonzero((run_size >= 2) & (run_size <= MAX_BUCKET))
    first, second = [], []
    step = 1
    while len(active):
        active = active[position[active] + step < run_size[active]]
        first.append(order[active])
        second.append(order[active + step])
        step += 1
    if not first:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(first), np.concatenate(second)
