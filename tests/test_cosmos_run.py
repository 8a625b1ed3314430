"""End to end: `cosmos run` curates real landed videos through Dagster on the real instance."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

import media_factory

COSMOS = str(Path(sys.executable).with_name("cosmos"))
GOOD_SAMPLES = ["asl_walk.mkv", "asl_book.mkv", "dashcam_solid_white_right.mp4"]


def cosmos_run(paths, *extra, timeout=600):
    env = {**os.environ, "COSMOS_HOME": str(paths.home), "DAGSTER_HOME": str(paths.dagster_home), "COSMOS_SETTLE_SECONDS": "0"}
    result = subprocess.run([COSMOS, "run", "--json", *extra], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def jobs_and_statuses(summary):
    return [(run["job"], run["status"]) for run in summary["runs"]]


# A landed batch runs curation_job first and the new clip embeddings then one dataset_job; the rest of the
# flywheel (generation, critique, training, evaluation) follows and is specified in its own tests.
CURATION_THEN_DATASET = [("curation_job", "SUCCESS"), ("dataset_job", "SUCCESS")]


def curated_first(summary) -> bool:
    runs = jobs_and_statuses(summary)
    return runs[:2] == CURATION_THEN_DATASET and all(status == "SUCCESS" for _, status in runs)


def table(paths, asset, partition):
    return pl.read_parquet(paths.tables / asset / f"{partition}.parquet")


@pytest.fixture(scope="module")
def curated(tmp_path_factory, samples):
    """A landing zone with three real videos, the bad-input corpus and a symlink, curated once."""
    root = tmp_path_factory.mktemp("e2e")
    from cosmos_assets.settings import CosmosPaths

    paths = CosmosPaths(root / "home")
    paths.landing.mkdir(parents=True)
    for name in GOOD_SAMPLES:
        shutil.copy(samples / name, paths.landing / name)
    expected_rejections = media_factory.build_bad_inputs(paths.landing / "uploads" / "bad", samples)
    secret = root / "outside.mp4"
    shutil.copy(samples / "asl_again.mkv", secret)
    os.symlink(secret, paths.landing / "sneaky.mp4")
    summary = cosmos_run(paths)
    return paths, summary, expected_rejections


def test_first_run_curates_the_batch_and_reports_counts(curated):
    paths, summary, expected = curated
    assert curated_first(summary), summary["runs"]
    raw = summary["assets"]["raw_videos"]
    assert raw["ok"] == 3 and raw["rejected"] == len(expected) + 1
    classes = {}
    for error_class in list(expected.values()) + ["UnsafePath"]:
        classes[error_class] = classes.get(error_class, 0) + 1
    assert raw["rejected_by_error_class"] == classes
    clips = summary["assets"]["video_clips"]["clips"]
    assert clips >= 3 and summary["assets"]["clip_scores"]["clips"] == clips
    filtered = summary["assets"]["filtered_clips"]
    assert filtered["kept"] + filtered["rejected"] == clips and filtered["kept"] >= 1
    assert set(filtered["rejections_by_reason"]) <= {"static", "frozen_region", "blurry", "too_dark", "too_bright", "bars", "too_short"}


def test_every_rejected_file_is_recorded_with_its_class_and_the_rest_is_curated(curated):
    paths, summary, expected = curated
    partition = summary["runs"][0]["partition"]
    raw = table(paths, "raw_videos", partition)
    by_name = {row["landing_name"]: row for row in raw.iter_rows(named=True)}
    for name, error_class in expected.items():
        row = by_name[f"uploads/bad/{name}"]
        assert (row["status"], row["error_class"]) == ("rejected", error_class) and row["error_message"]
    assert by_name["sneaky.mp4"]["error_class"] == "UnsafePath"
    for name in GOOD_SAMPLES:
        row = by_name[name]
        assert row["status"] == "ok" and Path(row["raw_path"]).is_file()
        assert Path(row["raw_path"]).is_relative_to(paths.home) and row["content_hash"] in row["raw_path"]
    clips = table(paths, "video_clips", partition)
    assert clips["clip_id"].n_unique() == clips.height
    assert set(clips["source_name"]) == set(GOOD_SAMPLES)
    assert all(Path(p).is_file() for p in clips["path"])
    assert not list(paths.home.rglob(".tmp-*"))


def test_the_ui_gets_a_contact_sheet_and_histograms(curated):
    paths, summary, _ = curated
    instance = dg.DagsterInstance.from_config(str(paths.dagster_home))
    try:
        clips = instance.get_latest_materialization_event(dg.AssetKey("video_clips")).asset_materialization
        assert "data:image/jpeg;base64," in clips.metadata["contact_sheet"].value
        scores = instance.get_latest_materialization_event(dg.AssetKey("clip_scores")).asset_materialization
        assert "data:image/png;base64," in scores.metadata["histograms"].value
        run = instance.get_run_by_id(summary["runs"][0]["run_id"])
        assert run.tags["dagster/sensor_name"] == "landing_zone_sensor" and run.tags["dagster/run_key"] == run.tags["dagster/partition"]
    finally:
        instance.dispose()


def test_a_second_run_with_nothing_new_does_nothing_and_says_so(curated):
    paths, _, _ = curated
    summary = cosmos_run(paths)
    assert summary["nothing_new"] and summary["runs"] == [] and "nothing new" in summary["message"]


def test_new_files_start_one_new_run_for_just_them_and_survive_a_crash(curated, samples):
    paths, first, _ = curated
    env = {**os.environ, "COSMOS_HOME": str(paths.home), "DAGSTER_HOME": str(paths.dagster_home), "COSMOS_SETTLE_SECONDS": "0"}
    new = paths.landing / "day2" / "conveyor.mp4"
    new.parent.mkdir()
    shutil.copy(samples / "bottle_conveyor.mp4", new)
    # Kill `cosmos run` in the middle of splitting (once the first clip of the batch is written).
    before = set(paths.clips.rglob("*.mp4"))
    process = subprocess.Popen([COSMOS, "run", "--json"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not (set(paths.clips.rglob("*.tmp-*.mp4")) | (set(paths.clips.rglob("*.mp4")) - before)):
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    summary = cosmos_run(paths)  # picks the interrupted batch up again
    assert curated_first(summary), summary["runs"]
    assert summary["assets"]["raw_videos"] == {"ok": 1, "rejected": 0, "rejected_by_error_class": {}, "total_bytes": new.stat().st_size}
    partition = summary["runs"][0]["partition"]
    assert partition != first["runs"][0]["partition"]
    clips = table(paths, "video_clips", partition)
    assert clips.height >= 1 and clips["clip_id"].n_unique() == clips.height
    assert set(clips["source_name"]) == {"day2/conveyor.mp4"}
    assert not list(paths.home.rglob(".tmp-*"))
    assert cosmos_run(paths)["nothing_new"]
