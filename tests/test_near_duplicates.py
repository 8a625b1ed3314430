"""Near-exact de-duplication on perceptual frame hashes (issue 14): a re-encoded, cropped or edge-cut copy of a
sample clip, built at test time, is dropped naming its evidence; a distinct shot of the same camera is kept; the
bulk candidate search decides exactly as comparing every clip with every earlier kept clip would."""

import base64
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from cosmos_assets.curation.frame_hashes import (
    CROPS, WORDS, ClipHashes, clip_hashes, compare, is_duplicate, near_exact_dedup)


def segment(path: Path, start: float, end: float) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            t = float(frame.pts * frame.time_base)
            if t >= end:
                break
            if t >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
    return frames


def encode(path: Path, frames: list[np.ndarray], fps: int, crf: int) -> Path:
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory, samples):
    """An original shot of the dashcam, its re-landing at 480x270, 10 fps, CRF 32, and a later, distinct shot."""
    directory = tmp_path_factory.mktemp("near_duplicates")
    source = samples / "dashcam_solid_white_right.mp4"
    shot = segment(source, 0.0, 3.0)
    original = encode(directory / "original.mp4", shot, 25, 20)
    small = [cv2.resize(shot[int(i * 2.5)], (480, 270), interpolation=cv2.INTER_AREA) for i in range(int(len(shot) / 2.5))]
    copy = encode(directory / "reencoded.mp4", small, 10, 32)
    distinct = encode(directory / "distinct.mp4", segment(source, 5.0, 8.0), 25, 20)
    # A zoomed re-upload (8 % off every side, then 480 wide at CRF 28) and the 16:9 picture cut to 4:3.
    zoomed = [cv2.resize(f[43:540 - 43, 77:960 - 77], (480, 270), interpolation=cv2.INTER_AREA) for f in shot]
    cropped = encode(directory / "zoomed.mp4", zoomed, 25, 28)
    four_three = encode(directory / "four_three.mp4", [np.ascontiguousarray(f[:, 120:840]) for f in shot], 25, 24)
    # A caption band cut off: the bottom 10 % (54 of 540 rows) gone, the rest re-encoded at CRF 28. 10 % is
    # between two hashed edge cuts (9 and 11 %), as far from both as a cut in that range can be.
    bottom_cut = encode(directory / "bottom_cut.mp4", [np.ascontiguousarray(f[:486]) for f in shot], 25, 28)
    return {name: clip_hashes(path) for name, path in [("original", original), ("copy", copy), ("distinct", distinct),
                                                         ("zoomed", cropped), ("four_three", four_three),
                                                         ("bottom_cut", bottom_cut)]}


def test_a_reencoded_copy_is_a_near_exact_duplicate_naming_its_evidence(clips):
    order = [clips["original"], clips["distinct"], clips["copy"]]
    result = near_exact_dedup(order)
    assert result.duplicate_of.tolist() == [-1, -1, 0]  # the copy names the original; the older clip wins
    assert result.matched_share[2] >= 0.9 and result.hamming[2] <= 16 and result.matched_frames[2] >= 10
    match = compare(clips["copy"], clips["original"])
    assert match.matched_share == result.matched_share[2] and abs(match.offset_s) <= 0.25


def test_a_distinct_shot_of_the_same_camera_is_kept(clips):
    result = near_exact_dedup([clips["original"], clips["distinct"]])
    assert result.duplicate_of.tolist() == [-1, -1]
    assert compare(clips["distinct"], clips["original"]).matched_share < 0.5


def test_the_copy_landing_first_keeps_it_and_drops_the_later_original(clips):
    result = near_exact_dedup([clips["copy"], clips["original"]], priority=np.array([0, 1]))
    assert result.duplicate_of.tolist() == [-1, 0]


def test_hashes_round_trip_through_their_column_and_a_clip_without_hashes_is_kept(clips):
    decoded = ClipHashes.decode(clips["copy"].encode())
    assert np.array_equal(decoded.hashes, clips["copy"].hashes) and np.array_equal(decoded.valid, clips["copy"].valid)
    assert ClipHashes.decode(None) is None
    assert near_exact_dedup([clips["original"], None]).duplicate_of.tolist() == [-1, -1]


def test_a_centred_crop_is_a_near_exact_duplicate_naming_the_crop(clips):
    result = near_exact_dedup([clips["original"], clips["distinct"], clips["zoomed"], clips["four_three"]])
    assert result.duplicate_of.tolist() == [-1, -1, 0, 0]
    assert result.matched_share[2] >= 0.9 and result.matched_share[3] >= 0.9
    zoom, aspect = result.crop[2], result.crop[3]
    assert zoom["cropped"] == "this" and abs(zoom["keep"][0] - 0.84) <= 0.02 and abs(zoom["keep"][1] - 0.84) <= 0.02
    assert aspect == {"cropped": "this", "keep": [0.75, 1.0]}
    assert result.crop[0] is None and near_exact_dedup([clips["original"], clips["copy"]]).crop[1] is None


def test_a_copy_with_its_bottom_edge_cut_is_a_near_exact_duplicate_naming_the_edge(clips):
    result = near_exact_dedup([clips["original"], clips["distinct"], clips["bottom_cut"]])
    assert result.duplicate_of.tolist() == [-1, -1, 0]
    assert result.matched_share[2] >= 0.9
    crop = result.crop[2]
    assert crop["cropped"] == "this" and crop["cut"] == "bottom"
    assert crop["keep"][0] == 1.0 and abs(crop["keep"][1] - 0.9) <= 0.011
    # Landing first, the cut copy is kept and the whole picture dropped: its bottom-cut crop is the kept clip.
    reverse = near_exact_dedup([clips["bottom_cut"], clips["distinct"], clips["original"]])
    assert reverse.duplicate_of.tolist() == [-1, -1, 0]
    assert reverse.crop[2]["cropped"] == "kept" and reverse.crop[2]["cut"] == "bottom"
    for name in ("original", "bottom_cut"):  # nor does any edge crop make the distinct shot a copy
        assert compare(clips["distinct"], clips[name]).matched_share < 0.5
        assert compare(clips[name], clips["distinct"]).matched_share < 0.5


def test_a_crop_landing_first_keeps_it_and_drops_the_whole_picture_naming_the_crop_of_the_kept_clip(clips):
    result = near_exact_dedup([clips["zoomed"], clips["distinct"], clips["original"]])
    assert result.duplicate_of.tolist() == [-1, -1, 0]
    assert result.crop[2]["cropped"] == "kept" and result.matched_share[2] >= 0.9


def test_a_distinct_shot_matches_no_crop_of_the_other(clips):
    for name in ("original", "zoomed", "four_three"):
        assert compare(clips["distinct"], clips[name]).matched_share < 0.5
        assert compare(clips[name], clips["distinct"]).matched_share < 0.5


def brute_force(clips: list[ClipHashes | None], priority: np.ndarray) -> tuple[list[int], list[float]]:
    """The specification the indexed search must meet: each clip, by priority, against every earlier kept clip."""
    duplicate_of, shares, kept = [-1] * len(clips), [float("nan")] * len(clips), []
    for index in np.argsort(priority, kind="stable").tolist():
        best, best_share = -1, -1.0
        for other in kept:
            match = compare(clips[index], clips[other]) if clips[index] is not None else None
            if is_duplicate(match) and match.matched_share > best_share:
                best, best_share = other, match.matched_share
        if best >= 0:
            duplicate_of[index], shares[index] = best, best_share
        elif clips[index] is not None:
            kept.append(index)
    return duplicate_of, shares


def planted_collection(seed: int) -> tuple[list[ClipHashes | None], np.ndarray]:
    """Random clips of 8-40 frames (2-10 s), and copies of some: bits flipped, trimmed, with frames of other content,
    as a centred crop of the source or with the source being a crop of the copy; within 4-20 bits, or far off
    (48 bits)."""
    rng = np.random.default_rng(seed)
    variants = 1 + len(CROPS)

    def random_clip(frames: int) -> ClipHashes:
        return ClipHashes(0.25, rng.integers(0, 2**64, size=(frames, variants, WORDS), dtype=np.uint64),
                          rng.random(frames) > 0.05)

    def flipped(hashes: np.ndarray, bits: int) -> np.ndarray:
        out = hashes.copy()
        for index in np.ndindex(out.shape[:-1]):
            for bit in rng.choice(256, bits, replace=False):
                out[index + (bit // 64,)] ^= np.uint64(1) << np.uint64(bit % 64)
        return out

    clips: list[ClipHashes | None] = [random_clip(int(rng.integers(8, 41))) for _ in range(150)]
    for _ in range(70):
        source = clips[int(rng.integers(0, 150))]
        hashes, valid = flipped(source.hashes, int(rng.choice([4, 12, 16, 20, 48]))), source.valid.copy()
        kind = rng.choice(["copy", "trim", "mixed", "crop", "uncrop"])
        if kind == "trim":
            hashes, valid = hashes[len(hashes) // 4:], valid[len(valid) // 4:]
        elif kind == "mixed":  # some frames of other content: a share around the threshold
            other = rng.random(len(hashes)) < rng.uniform(0.1, 0.5)
            hashes[other] = rng.integers(0, 2**64, size=(int(other.sum()), variants, WORDS), dtype=np.uint64)
        elif kind == "crop":  # the copy's whole picture is a crop of the source's
            hashes[:, 0] = hashes[:, int(rng.integers(1, variants))]
        elif kind == "uncrop":  # the source is a crop of the copy's whole picture
            k = int(rng.integers(1, variants))
            hashes[:, k], hashes[:, 0] = hashes[:, 0], rng.integers(0, 2**64, size=(len(hashes), WORDS), dtype=np.uint64)
        clips.append(ClipHashes(0.25, hashes, valid))
    clips += [None] * 5
    return clips, rng.permutation(len(clips))


@pytest.mark.parametrize("seed", [1, 2])
def test_the_indexed_search_decides_exactly_as_comparing_every_pair(seed):
    clips, priority = planted_collection(seed)
    result = near_exact_dedup(clips, priority)
    expected, shares = brute_force(clips, priority)
    assert result.duplicate_of.tolist() == expected
    assert np.allclose(result.matched_share, shares, equal_nan=True)
    assert sum(d >= 0 for d in expected) >= 30  # the planted copies are there to be found


def test_hashes_stored_with_centred_crops_only_still_decode_and_match_centred_crops(clips):
    original = clips["original"]
    centred = original.hashes[:, :10]  # HASH_VERSION 2: the whole picture and the 9 centred crops
    stored = json.dumps({"v": 2, "step_s": original.step_s, "crops": [list(c) for c in CROPS[:9]],
                         "valid": "".join("1" if ok else "0" for ok in original.valid),
                         "h": base64.b64encode(np.ascontiguousarray(centred[original.valid]).tobytes()).decode()})
    decoded = ClipHashes.decode(stored)
    assert np.array_equal(decoded.hashes, centred)
    result = near_exact_dedup([decoded, clips["zoomed"], clips["bottom_cut"]])
    # The zoomed copy still meets a stored centred crop; the edge-cut one only once the clip is hashed again.
    assert result.duplicate_of.tolist() == [-1, 0, -1]
    assert near_exact_dedup([original, clips["zoomed"], clips["bottom_cut"]]).duplicate_of.tolist() == [-1, 0, 0]


def test_hashes_stored_before_crops_still_decode_and_match_as_whole_pictures(clips):
    original = clips["original"]
    stored = json.dumps({"v": 1, "step_s": original.step_s,
                         "h": [h.tobytes().hex() if ok else None for h, ok in zip(original.hashes[:, 0], original.valid)]})
    decoded = ClipHashes.decode(stored)
    assert decoded.hashes.shape == (len(original.valid), 1, WORDS) and np.array_equal(decoded.hashes[:, 0], original.hashes[:, 0])
    assert near_exact_dedup([decoded, clips["copy"], clips["zoomed"]]).duplicate_of.tolist() == [-1, 0, -1]
    # The crop is found once the older clip is hashed again, with its crops.
    assert near_exact_dedup([original, clips["copy"], clips["zoomed"]]).duplicate_of.tolist() == [-1, 0, 0]
