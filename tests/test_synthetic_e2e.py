"""The synthetic loop end to end through `cosmos run`, on the CPU, from real sample videos: a new curated
dataset version starts a generation round; its candidates are generated, critiqued and selected; candidates
dropped into the synthetic inbox by an external generator are checked, critiqued and selected; every batch
is handled exactly once."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import av
import dagster as dg
import numpy as np
import polars as pl
import pytest

import media_factory
from conftest import SAMPLES, age_file
from cosmos_assets.synthetic.generation import ClassicalBackend, candidate_id
from cosmos_assets.synthetic.selection import DEFAULT_THRESHOLDS
from cosmos_assets.synthetic.video import read_video, write_mp4
from dagster._core.storage.dagster_run import RunsFilter
from sensors.synthetic_batch import critique_run_key
from test_cosmos_run import COSMOS

THRESHOLD = DEFAULT_THRESHOLDS["metric"]
CONDITIONS = ["rain", "fog", "snow", "night", "dusk"]


def run(paths, timeout=600):
    env = {**os.environ, "COSMOS_HOME": str(paths.home), "DAGSTER_HOME": str(paths.dagster_home), "COSMOS_SETTLE_SECONDS": "0",
           # Post-training has its own tests: keep retraining (issue 6) out of these runs.
           "COSMOS_RETRAIN_MIN_NEW_SAMPLES": "1000000"}
    result = subprocess.run([COSMOS, "run", "--json"], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def jobs(summary):
    return [(r["job"], r["status"]) for r in summary["runs"]]


def table(paths, asset, partition):
    return pl.read_parquet(paths.tables / asset / f"{partition}.parquet")


def instance_of(paths):
    return dg.DagsterInstance.from_config(str(paths.dagster_home))


@pytest.fixture(scope="module")
def flywheel(tmp_path_factory, samples):
    """A real dashcam video landed and run through curation, the dataset, one generation round and its critique."""
    from cosmos_assets.settings import CosmosPaths

    paths = CosmosPaths(tmp_path_factory.mktemp("synthetic") / "home")
    paths.landing.mkdir(parents=True)
    shutil.copy(samples / "dashcam_solid_white_right.mp4", paths.landing / "dashcam.mp4")
    summary = run(paths)
    [round_run] = [r for r in summary["runs"] if r["job"] == "generation_job"]
    return paths, summary, round_run["partition"]


def test_a_new_dataset_version_starts_one_round_that_is_generated_critiqued_and_selected(flywheel):
    paths, summary, partition = flywheel
    assert jobs(summary) == [("curation_job", "SUCCESS"), ("dataset_job", "SUCCESS"), ("generation_job", "SUCCESS"),
                             ("critique_job", "SUCCESS")]
    version = summary["assets"]["curated_dataset"]
    clips = version["train_clips"]
    assert clips >= 1 and partition.startswith("round-ds-")
    assert [r["partition"] for r in summary["runs"][2:]] == [partition, partition]
    # Five conditions per training clip, two seeds per request, best-of-2 keeps one per request.
    assert summary["synthetic"] == {"requests": 5 * clips, "candidates": 10 * clips, "critiqued": 10 * clips,
                                    "accepted": 5 * clips, "acceptance_rate": 0.5}


def test_best_of_n_keeps_exactly_one_candidate_per_request_and_it_is_the_best(flywheel):
    paths, _, partition = flywheel
    accepted = table(paths, "accepted_videos", partition)
    for (request,), group in accepted.group_by("request_id"):
        assert group.height == 2 and set(group["seed"]) == {0, 1}
        [kept] = group.filter(pl.col("accepted")).to_dicts()
        assert kept["score"] == group["score"].max() >= THRESHOLD and kept["rank"] == 1
        assert group.filter(~pl.col("accepted"))["decision"].to_list() == ["not_best_in_request"]
    assert set(accepted["rule"]) == {"best_of_n_and_threshold"} and set(accepted["critic"]) == {"metric"}
    assert set(accepted["condition"]) == set(CONDITIONS) and not accepted["tiny_random"].any()


def test_every_candidate_records_where_it_came_from_and_is_a_real_h264_video(flywheel):
    paths, _, partition = flywheel
    requests = {r["request_id"]: r for r in table(paths, "generation_prompts", partition).to_dicts()}
    candidates = table(paths, "synthetic_videos", partition)
    digest = ClassicalBackend().config_digest()
    assert candidates["candidate_id"].n_unique() == candidates.height == 2 * len(requests)
    for row in candidates.to_dicts():
        request = requests[row["request_id"]]
        assert row["candidate_id"] == candidate_id(row["request_id"], row["seed"], digest)
        assert (row["backend"], row["generator"], row["status"], row["source_clip_id"]) == (
            "classical", "classical-weather", "ok", request["source_clip_id"])
        settings = json.loads(row["settings"])
        assert settings["augmentation"] == row["condition"] == request["condition"] and settings["parameters"]
        assert request["prompt"] == row["prompt"] and request["condition"] in request["prompt"].lower()
        assert request["negative_prompt"] and request["prompt_writer"] == "template-v1"
        assert json.loads(request["controls"]) == {"edge": 0.9}
        controls = json.loads(request["control_paths"])
        assert set(controls) == {"edge", "blur"} and all(Path(p).is_file() for p in controls.values())
        path = Path(row["path"])
        assert path.is_relative_to(paths.synthetic) and path.stem == row["candidate_id"]
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (request["width"], request["height"])
        frames, fps = read_video(path)
        assert len(frames) == request["num_frames"] == row["frames"] and fps == 16
    assert not list(paths.home.rglob(".tmp-*"))
    scores = table(paths, "critique_scores", partition)
    assert set(scores["candidate_id"]) == set(candidates["candidate_id"])
    assert scores["critic_version"].n_unique() == 1 and scores["critic_version"][0].startswith("metric-critic/1+")
    assert min(scores.select(pl.col("edge_f1", "blur_ssim", "motion_fidelity", "temporal_alignment").min()).row(0)) > 0.4


def test_the_ui_shows_source_and_candidates_rates_and_a_passed_blocking_check(flywheel):
    paths, _, partition = flywheel
    instance = instance_of(paths)
    try:
        videos = instance.get_latest_materialization_event(dg.AssetKey("synthetic_videos")).asset_materialization
        assert "data:image/jpeg;base64," in videos.metadata["source_and_candidates"].value
        assert videos.metadata["tiny_random_weights"].value is False
        accepted = instance.get_latest_materialization_event(dg.AssetKey("accepted_videos")).asset_materialization
        assert accepted.partition == partition and accepted.metadata["acceptance_rate"].value == 0.5
        assert accepted.metadata["acceptance_rate_by_condition"].value == {c: 0.5 for c in CONDITIONS}
        assert "data:image/png;base64," in accepted.metadata["score_histogram"].value
        for name in ("accepted_candidates", "rejected_candidates"):
            assert "data:image/jpeg;base64," in accepted.metadata[name].value
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("accepted_videos"), "accepted_videos_rates_in_bounds")])
        [execution] = check.values()
        assert execution.status.value == "SUCCEEDED"
        critique_run = instance.get_run_by_id(next(r["run_id"] for r in flywheel[1]["runs"] if r["job"] == "critique_job"))
        assert critique_run.tags["dagster/sensor_name"] == "synthetic_batch_sensor"
        assert critique_run.tags["dagster/run_key"].startswith(f"critique-{partition}-")
    finally:
        instance.dispose()


def test_regenerating_a_round_after_a_crash_finishes_it_without_duplicates_or_a_second_critique(flywheel, monkeypatch):
    paths, _, partition = flywheel
    before = table(paths, "synthetic_videos", partition)
    victim = before.row(0, named=True)
    record = Path(victim["path"]).with_suffix(".json")
    record.unlink()  # the crash came after the video was written, before its record
    stale = Path(victim["path"]).with_name(".tmp-999999999-left-by-a-crash.mp4")
    stale.write_bytes(b"half a video")
    monkeypatch.setenv("COSMOS_HOME", str(paths.home))
    monkeypatch.setenv("DAGSTER_HOME", str(paths.dagster_home))
    from cosmos_assets.definitions import build_definitions

    instance = instance_of(paths)
    try:
        result = build_definitions("local").resolve_job_def("generation_job").execute_in_process(instance=instance, partition_key=partition)
    finally:
        instance.dispose()
    assert result.success
    after = table(paths, "synthetic_videos", partition)
    assert after["candidate_id"].to_list() == before["candidate_id"].to_list()
    assert after["reused"].sum() == after.height - 1 and record.is_file() and not stale.exists()
    assert after.filter(pl.col("candidate_id") == victim["candidate_id"])["sha256"].to_list() == [victim["sha256"]]
    # The same candidates, the same batch: synthetic_batch_sensor's next tick (the inbox test's run below) finds
    # the critique run key of this materialization already used.
    metadata = result.asset_materializations_for_node("synthetic_videos")[0].metadata
    # Which generator checkpoint made the round is on its page (the classical generator has none, and says so).
    assert metadata["generator_checkpoint"].value.startswith("classical-weather")
    assert critique_run_key(partition, metadata["batch_digest"].value) == _critique_run_key_used(paths)


def _critique_run_key_used(paths):
    instance = instance_of(paths)
    try:
        [critique] = instance.get_runs(filters=RunsFilter(job_name="critique_job"))
        return critique.tags["dagster/run_key"]
    finally:
        instance.dispose()


def _drop_external_batch(paths, partition):
    """An external generator's drop: a good candidate for a real request, three broken variants of it,
    and bad input of every kind, in one manifest."""
    accepted = table(paths, "accepted_videos", partition).filter(pl.col("accepted") & (pl.col("condition") == "rain"))
    source = accepted.row(0, named=True)
    good, fps = read_video(source["path"])
    folder = paths.synthetic_inbox / "acme" / "drop-1"
    folder.mkdir(parents=True)
    shutil.copy(source["path"], folder / "good.mp4")
    write_mp4(folder / "frozen.mp4", np.repeat(good[:1], len(good), axis=0), fps)
    write_mp4(folder / "shuffled.mp4", good[np.random.default_rng(1).permutation(len(good))], fps)
    write_mp4(folder / "blank.mp4", np.full_like(good, 128), fps)
    (folder / "notes.mp4").write_text("this is not a video")
    os.symlink(folder / "good.mp4", folder / "link.mp4")
    # Probes fine (its header and first frames are 64x64), then a frame 8000 pixels wide: refused, not thumbnailed.
    media_factory.write_growing_frames(folder / "grows.ts", SAMPLES, codec="libx264", container_format="mpegts",
                                       large_size=(8000, 16))
    clip = source["source_clip_id"]
    candidates = [{"file": f"{name}.mp4", "request_id": "acme-17", "seed": seed, "source_clip_id": clip, "condition": "rain"}
                  for seed, name in enumerate(["good", "frozen", "shuffled", "blank"])]
    candidates += [
        {"file": "notes.mp4", "request_id": "acme-18", "seed": 0, "source_clip_id": clip},
        {"file": "link.mp4", "request_id": "acme-18", "seed": 1, "source_clip_id": clip},
        {"file": "../../escape.mp4", "request_id": "acme-18", "seed": 2, "source_clip_id": clip},
        {"file": "never-written.mp4", "request_id": "acme-18", "seed": 3, "source_clip_id": clip},
        {"file": "grows.ts", "request_id": "acme-18", "seed": 4, "source_clip_id": clip},
        {"file": "good.mp4", "request_id": "acme-19", "seed": 0, "source_clip_id": "no-such-clip"},
        {"file": "good.mp4", "request_id": "acme-20", "seed": "zero", "source_clip_id": clip},
    ]
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"generator": "acme-gen 3.1", "candidates": candidates}))
    for path in folder.iterdir():
        if not path.is_symlink():
            age_file(path)  # settled long ago: the missing file is past its grace period
    return source


def test_an_inbox_drop_is_checked_critiqued_and_selected_once_and_broken_candidates_are_rejected(flywheel):
    paths, _, partition = flywheel
    source = _drop_external_batch(paths, partition)
    summary = run(paths)
    # Only the inbox batch runs: the round regenerated above holds the same candidates, already critiqued.
    assert jobs(summary) == [("inbox_job", "SUCCESS")]
    batch = summary["runs"][0]["partition"]
    assert batch.startswith("inbox-000001-")
    assert summary["synthetic"]["candidates"] == 4 and summary["synthetic"]["accepted"] == 1
    assert summary["assets"]["synthetic_videos"]["rejected_by_error_class"] == {
        "NotAVideo": 1, "UnsafePath": 2, "MissingFile": 1, "UnknownSourceClip": 1, "ManifestEntryInvalid": 1,
        "FrameTooLarge": 1}
    decided = table(paths, "accepted_videos", batch).to_dicts()
    videos = {r["candidate_id"]: r for r in table(paths, "synthetic_videos", batch).to_dicts()}
    [good] = [r for r in decided if r["accepted"]]
    assert good["seed"] == 0 and good["request_id"] == "acme-17" and good["score"] >= THRESHOLD
    assert Path(good["path"]).read_bytes() == Path(source["path"]).read_bytes()  # copied into the store by content
    broken = [r for r in decided if r["request_id"] == "acme-17" and not r["accepted"]]
    assert sorted(r["seed"] for r in broken) == [1, 2, 3]
    assert all(r["score"] < THRESHOLD and r["decision"] == "below_threshold" for r in broken)  # for their scores
    bad = sorted((videos[r["candidate_id"]]["error_class"], r["decision"]) for r in decided if r["decision"] == "bad_input")
    assert bad == sorted([("NotAVideo", "bad_input"), ("UnsafePath", "bad_input"), ("UnsafePath", "bad_input"),
                          ("MissingFile", "bad_input"), ("UnknownSourceClip", "bad_input"), ("ManifestEntryInvalid", "bad_input"),
                          ("FrameTooLarge", "bad_input")])
    assert {videos[c]["generator"] for c in videos} == {"acme-gen 3.1"}
    assert not (paths.synthetic_inbox.parent / "escape.mp4").exists()


def test_nothing_runs_twice_even_when_the_sensors_lose_their_cursors(flywheel):
    """Last: every batch above (the round, its regeneration, the inbox drop) was handled exactly once."""
    paths, _, _ = flywheel
    instance = instance_of(paths)
    try:  # as after a restart with the cursors gone: the run keys still say which batches were done
        instance.run_storage.set_cursor_values({f"cosmos-run/sensor-cursor/{name}": ""
                                                for name in ("generation_round_sensor", "synthetic_batch_sensor")})
    finally:
        instance.dispose()
    summary = run(paths)
    assert summary["runs"] == [] and summary["nothing_new"]
