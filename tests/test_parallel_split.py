"""Splitting a batch in worker processes (curation.parallel) gives what the sequential split gives: the same clip
rows and the same bytes, scenes cut on their reference camera's spans, and one broken or lost video never costs
the batch its other videos."""

import hashlib
import os

import pytest
from dying_store import DiesOpening

from cosmos_assets.common.artefacts import LocalStore
from cosmos_assets.curation.clips import TranscodeConfig
from cosmos_assets.curation.parallel import WORKER_CRASHED, split_in_parallel, transnet_loader
from cosmos_assets.curation.pipeline import split_videos
from cosmos_assets.curation.probe import probe_video
from cosmos_assets.curation.shots import SplitConfig

# Clips of about a second: several per sample, so ids and spans are compared on more than one clip a video.
STRIDE = SplitConfig(method="fixed_stride", stride_s=1.0, min_clip_s=0.5)
SMALL = TranscodeConfig(max_width=320, max_height=240)  # the tests compare bytes, not pictures: keep encodes cheap


def raw_row(path, name=None, **scene) -> dict:
    """A ``raw_videos`` ok row for a file (as ``pipeline.ingest_member`` records it, without the landing)."""
    data = path.read_bytes()
    return {"content_hash": hashlib.sha256(data).hexdigest(), "landing_name": name or path.name, "batch": "batch-test",
            "raw_path": str(path), **probe_video(path).as_row(), **scene}


def scene_rows(rig) -> list[dict]:
    views = [raw_row(rig / f"{camera}.mp4", f"dashcam_rig/{camera}.mp4") for camera in ("front_left", "front_center", "front_right")]
    scene = "scene-" + "".join(v["content_hash"][:4] for v in views)
    for view, camera in zip(views, ("front_left", "front_center", "front_right")):
        view.update(scene_id=scene, camera=camera, scene_reference=camera == "front_center")
    return views


FILE_COLUMNS = ("path", "thumbnail_path", "proxy_path")  # the clip's files: references into each test's own store


def comparable(store: LocalStore, rows: list[dict]) -> list[dict]:
    """Clip rows as both stores hold them: ids, spans and scene ids, and the keys and bytes' hashes of their files."""
    result = []
    for row in rows:
        kept = {k: v for k, v in row.items() if k not in FILE_COLUMNS}
        for column in FILE_COLUMNS:
            kept[column + "_key"] = store.key_of(row[column])
            kept[column + "_sha256"] = hashlib.sha256(store.local_path(row[column]).read_bytes()).hexdigest()
        result.append(kept)
    return sorted(result, key=lambda r: r["clip_id"])


def by_name(results) -> dict:
    return {video["landing_name"]: (rows, error) for video, rows, error, _ in results}


@pytest.fixture(scope="module")
def batch(samples):
    return [raw_row(samples / name) for name in ("asl_again.mkv", "asl_book.mkv", "asl_walk.mkv")] + scene_rows(samples / "dashcam_rig")


def test_two_workers_cut_the_same_clips_with_the_same_bytes_as_the_sequential_split(tmp_path, batch):
    sequential_store, parallel_store = LocalStore(tmp_path / "sequential"), LocalStore(tmp_path / "parallel")
    sequential = by_name(split_videos(batch, sequential_store, STRIDE, SMALL, None))
    parallel = by_name(split_in_parallel(batch, parallel_store, STRIDE, SMALL, None, workers=2))

    assert sorted(parallel) == sorted(v["landing_name"] for v in batch), "one result per video"
    for name, (rows, error) in sequential.items():
        assert error is None and rows
        assert parallel[name][1] is None
        assert comparable(parallel_store, parallel[name][0]) == comparable(sequential_store, rows), name
    # The scene's three views are cut on the reference camera's spans: clip k of every view shares its scene clip.
    scene_clips = [{r["scene_clip_id"] for r in parallel[f"dashcam_rig/{c}.mp4"][0]} for c in ("front_left", "front_center", "front_right")]
    assert scene_clips[0] == scene_clips[1] == scene_clips[2] and None not in scene_clips[0]


def test_a_corrupt_video_is_recorded_and_the_rest_of_the_batch_is_split(tmp_path, batch, samples):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom((samples / "asl_walk.mkv").stat().st_size))  # probed fine once, overwritten since
    videos = batch[:2] + [{**batch[2], "content_hash": "corrupt", "landing_name": "corrupt.mp4", "raw_path": str(corrupt)}]
    results = by_name(split_in_parallel(videos, LocalStore(tmp_path / "store"), STRIDE, SMALL, None, workers=2))

    rows, error = results["corrupt.mp4"]
    assert rows == [] and error["error_class"] == "SplitFailed" and error["content_hash"] == "corrupt"
    assert all(results[v["landing_name"]][1] is None and results[v["landing_name"]][0] for v in batch[:2])


def test_a_worker_that_dies_loses_only_the_video_it_was_cutting(tmp_path, batch):
    """asl_book and the scene's front_left view kill their workers: each gets SplitWorkerCrashed; the other videos
    are split, and the scene's remaining view is cut on the reference's spans in a new worker."""
    doomed = {name: next(v for v in batch if v["landing_name"] == name) for name in ("asl_book.mkv", "dashcam_rig/front_left.mp4")}
    store = DiesOpening(tmp_path / "store", {v["raw_path"] for v in doomed.values()})
    results = by_name(split_in_parallel(batch, store, STRIDE, SMALL, None, workers=2))

    assert sorted(results) == sorted(v["landing_name"] for v in batch)
    for name in doomed:
        rows, error = results[name]
        assert rows == [] and error["error_class"] == WORKER_CRASHED, name
    for video in batch:
        if video["landing_name"] not in doomed:
            rows, error = results[video["landing_name"]]
            assert error is None and rows, video["landing_name"]
    reference, right = (results[f"dashcam_rig/{c}.mp4"][0] for c in ("front_center", "front_right"))
    assert [r["scene_clip_id"] for r in right] == [r["scene_clip_id"] for r in reference]


def test_a_lost_reference_view_fails_its_scene_as_the_sequential_split_does(tmp_path, batch):
    scene = [v for v in batch if v.get("scene_id")]
    reference = next(v for v in scene if v["scene_reference"])
    results = by_name(split_in_parallel(scene, DiesOpening(tmp_path / "store", {reference["raw_path"]}), STRIDE, SMALL, None,
                                        workers=2))

    assert results[reference["landing_name"]][1]["error_class"] == WORKER_CRASHED
    for view in scene:
        if view is not reference:
            assert results[view["landing_name"]] == ([], {"content_hash": view["content_hash"], "landing_name": view["landing_name"],
                                                          "error_class": "SceneReferenceFailed",
                                                          "error_message": f"the reference view of scene {view['scene_id']} could not be split"})


def test_a_worker_loads_the_real_shot_detector_and_cuts_at_its_shots(tmp_path, samples):
    """TransNetV2 built in the worker by its loader: the same clips as the sequential split with the detector built
    here (one short video: the detector is slow on a test machine's CPU)."""
    videos = [raw_row(samples / "dashcam_rig" / "front_center.mp4")]
    split = SplitConfig(min_clip_s=1.0)
    load = transnet_loader("cpu", bf16=False)
    sequential_store, parallel_store = LocalStore(tmp_path / "sequential"), LocalStore(tmp_path / "parallel")
    ((_, rows, error, _),) = split_videos(videos, sequential_store, split, SMALL, load())
    ((_, parallel_rows, parallel_error, _),) = split_in_parallel(videos, parallel_store, split, SMALL, load, workers=2)
    assert error is None and parallel_error is None and rows and rows[0]["shot_model"] == "TransNetV2"
    assert comparable(parallel_store, parallel_rows) == comparable(sequential_store, rows)


def test_the_clip_pool_reads_each_clip_as_clip_embeddings_does(tmp_path, batch):
    """clip_embedding_inputs in clip_work_pool processes: the embedding frames and perceptual hashes of every clip,
    in the clips' order, equal to the same reads done here one clip at a time."""
    import functools

    import numpy as np

    from cosmos_assets.curation.clip_frames import clip_frame_set
    from cosmos_assets.curation.frame_hashes import clip_hashes_of_frames
    from cosmos_assets.curation.parallel import clip_embedding_inputs, clip_work_pool
    from cosmos_assets.models.frames import pick_samples

    store = LocalStore(tmp_path / "store")
    clips = [row for _, rows, _, _ in split_videos(batch[:2], store, STRIDE, SMALL, None) for row in rows]
    with clip_work_pool(2) as pool:
        pooled = list(pool.map(functools.partial(clip_embedding_inputs, store, frames_per_clip=4), clips))
    assert len(pooled) == len(clips) > 2
    for clip, (frames, hashes) in zip(clips, pooled):
        frame_set = clip_frame_set(store, clip)
        np.testing.assert_array_equal(frames, pick_samples(frame_set, 4 / clip["duration_s"], 4).frames)
        assert len(frames) and hashes == clip_hashes_of_frames(frame_set, clip["duration_s"]).encode()
