"""The whole flywheel on the CPU, driven only by sensors through `cosmos run`: landing → curation →
dataset → synthetic generation → critique → training → evaluation → promotion; then new video lands
and a second round trains from the new dataset version, and lineage reaches the new raw video."""

import json
import os
import shutil
import subprocess

import dagster as dg
import polars as pl
import pytest

from cosmos_assets.common.artefacts import LocalStore
from cosmos_assets.settings import CosmosPaths
from cosmos_assets.training import registry
from cosmos_assets.training.lineage import checkpoint_lineage, forward_lineage
from test_cosmos_run import COSMOS, cosmos_run

FLYWHEEL_JOBS = {"curation_job", "dataset_job", "training_job", "evaluation_job"}


def trained(summary) -> list[str]:
    return [r["partition"] for r in summary["runs"] if r["job"] == "training_job"]


@pytest.fixture(scope="module")
def flywheel(tmp_path_factory, samples):
    paths = CosmosPaths(tmp_path_factory.mktemp("flywheel") / "home")
    paths.landing.mkdir(parents=True)
    shutil.copy(samples / "dashcam_solid_white_right.mp4", paths.landing / "dashcam.mp4")
    shutil.copy(samples / "asl_book.mkv", paths.landing / "asl_book.mkv")
    first = cosmos_run(paths, timeout=1500)
    (paths.landing / "week2").mkdir()
    shutil.copy(samples / "asl_walk.mkv", paths.landing / "week2" / "asl_walk.mkv")
    second = cosmos_run(paths, timeout=1500)
    return paths, first, second


def test_the_first_round_reaches_a_promoted_checkpoint_through_sensors_alone(flywheel):
    paths, first, _ = flywheel
    assert FLYWHEEL_JOBS <= {r["job"] for r in first["runs"]}
    assert all(r["status"] == "SUCCESS" for r in first["runs"]), first["runs"]
    [key] = trained(first)
    assert key in [h["checkpoint"] for h in registry.history(LocalStore(paths.home))]  # promoted (round 2 may follow)
    manifest = registry.verified_checkpoint(LocalStore(paths.home), key)
    assert manifest["dataset_version"] == key and manifest["tiny_random"] is True and manifest["steps"] == len(manifest["losses"])
    counts = first["assets"]["training_dataset"]
    assert counts["real"] >= 2 and counts["synthetic"] >= 1


def test_a_second_round_trains_from_the_new_dataset_version_and_lineage_reaches_the_new_video(flywheel):
    paths, first, second = flywheel
    [first_key], [second_key] = trained(first), trained(second)
    assert first_key != second_key
    new_video = pl.read_parquet(next(p for p in (paths.tables / "raw_videos").glob("*.parquet")
                                     if "week2/asl_walk.mkv" in pl.read_parquet(p)["landing_name"].to_list()))
    new_hash = new_video.filter(pl.col("landing_name") == "week2/asl_walk.mkv")["content_hash"][0]
    backward = checkpoint_lineage(LocalStore(paths.home), second_key)
    assert new_hash in {v["content_hash"] for v in backward["source_videos"]}
    assert {v["original_name"] for v in backward["source_videos"]} >= {"dashcam.mp4", "asl_book.mkv", "week2/asl_walk.mkv"}
    synthetic = [s for s in backward["samples"] if s["kind"] == "synthetic"]
    assert synthetic and all({"request_id", "seed", "generator", "critic", "score", "source_clip_id"} <= s.keys() for s in synthetic)
    forward = forward_lineage(LocalStore(paths.home), new_hash)
    assert forward["kind"] == "raw video" and forward["checkpoints"] == [second_key]
    assert new_hash not in {v["content_hash"] for v in checkpoint_lineage(LocalStore(paths.home), first_key)["source_videos"]}


def test_cosmos_lineage_defaults_to_the_promoted_checkpoint(flywheel):
    paths, _, _ = flywheel
    env = {**os.environ, "COSMOS_HOME": str(paths.home), "DAGSTER_HOME": str(paths.dagster_home)}
    result = subprocess.run([COSMOS, "lineage", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout)
    assert found["direction"] == "backward" and found["promoted"] is True
    assert found["checkpoint"] == registry.promoted(LocalStore(paths.home))["checkpoint"]
    text = subprocess.run([COSMOS, "lineage"], env=env, capture_output=True, text=True, timeout=120).stdout
    assert "[promoted]" in text and "dashcam.mp4" in text


def _evaluate(paths, key, monkeypatch, run_config=None):
    monkeypatch.setenv("COSMOS_HOME", str(paths.home))  # restored after the test: never leak into later tests
    monkeypatch.setenv("DAGSTER_HOME", str(paths.dagster_home))
    from cosmos_assets.definitions import build_definitions

    instance = dg.DagsterInstance.from_config(str(paths.dagster_home))
    try:
        instance.add_dynamic_partitions("training_runs", [key])
        job = build_definitions("local").resolve_job_def("evaluation_job")
        return job.execute_in_process(instance=instance, partition_key=key, run_config=run_config or {}, raise_on_error=False)
    finally:
        instance.dispose()


def test_a_corrupt_checkpoint_fails_evaluation_clearly_and_is_not_promoted(flywheel, monkeypatch):
    paths, _, second = flywheel
    [key] = trained(second)
    before = registry.promoted(LocalStore(paths.home))
    broken = paths.checkpoints / f"{key}-corrupt"
    shutil.copytree(paths.checkpoints / key, broken)
    adapter = broken / registry.ADAPTER
    adapter.write_bytes(adapter.read_bytes()[:100])
    result = _evaluate(paths, broken.name, monkeypatch)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "CorruptCheckpoint" in failure.step_failure_data.error.message
    assert registry.promoted(LocalStore(paths.home)) == before


def test_a_checkpoint_worse_than_its_base_by_the_margin_is_not_promoted(flywheel, monkeypatch):
    paths, _, second = flywheel
    [key] = trained(second)
    history = registry.history(LocalStore(paths.home))
    demanding = {"ops": {"checkpoint_evaluation_no_worse_than_base": {"config": {"margin": -0.5}}}}
    result = _evaluate(paths, key, monkeypatch, demanding)  # must beat its base by 50 %: a few tiny steps do not
    assert not result.success
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert [c.passed for c in checks] == [False]
    assert registry.history(LocalStore(paths.home)) == history
