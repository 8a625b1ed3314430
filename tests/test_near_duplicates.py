"""Near-exact de-duplication on perceptual frame hashes (issue 14): a re-encoded copy of a sample clip,
built at test time, is dropped naming its evidence; a distinct shot of the same camera is kept."""

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from cosmos_assets.curation.frame_hashes import ClipHashes, clip_hashes, compare, near_exact_dedup


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
    return {name: clip_hashes(path) for name, path in [("original", original), ("copy", copy), ("distinct", distinct)]}


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
