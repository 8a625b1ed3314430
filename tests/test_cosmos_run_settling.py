"""`cosmos run` right after a drop: files still settling are waited for or reported, never "nothing new";
a sensor that cannot be evaluated makes the command fail and is said first."""

import json
import os
import shutil
import subprocess

from cosmos_assets.common.drop_zone import scan_drop_zone
from cosmos_assets.headless import run_until_idle, settled_since
from cosmos_assets.settings import ensure_local_instance
from test_cosmos_run import COSMOS


def run_in_process(paths, **options) -> dict:
    ensure_local_instance(paths)  # as `cosmos run` does
    return run_until_idle(log=None, **options)


def run_cli(paths, *args, settle_seconds="600"):
    env = {**os.environ, "COSMOS_HOME": str(paths.home), "DAGSTER_HOME": str(paths.dagster_home),
           "COSMOS_SETTLE_SECONDS": settle_seconds}
    return subprocess.run([COSMOS, "run", *args], env=env, capture_output=True, text=True, timeout=600)


def test_a_file_still_settling_is_reported_with_when_it_is_ready_not_as_nothing_new(cosmos_env, samples):
    shutil.copy(samples / "asl_again.mkv", cosmos_env.landing / "just_copied.mkv")  # mtime: now
    result = run_cli(cosmos_env, "--no-wait")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing new" not in result.stdout
    assert "1 file(s) settling in the landing zone, ready in" in result.stdout and "just_copied.mkv" in result.stdout


def test_the_json_summary_has_a_settling_status_with_seconds_until_ready(cosmos_env, monkeypatch, samples):
    monkeypatch.setenv("COSMOS_SETTLE_SECONDS", "600")
    shutil.copy(samples / "asl_again.mkv", cosmos_env.landing / "just_copied.mkv")
    summary = run_in_process(cosmos_env, wait_for_settling=False)
    assert summary["status"] == "settling" and summary["nothing_new"] is False and summary["runs"] == []
    [settling] = summary["settling"]
    assert settling["folder"] == "landing zone" and settling["file"] == "just_copied.mkv"
    assert 0 < settling["ready_in_s"] <= 600
    json.dumps(summary)  # what `--json` prints


def test_a_settling_file_is_waited_for_and_curated_in_the_same_run(cosmos_env, monkeypatch):
    monkeypatch.setenv("COSMOS_SETTLE_SECONDS", "3")
    # Not a video: its curation run records the rejection, quickly, with no model in the way.
    (cosmos_env.landing / "notes.mp4").write_bytes(b"not a video " * 100)
    summary = run_in_process(cosmos_env)
    # Only the curation run is this test's business: the dataset_job after it meets a collection with no clip.
    assert summary["runs"][0]["job"] == "curation_job" and summary["runs"][0]["status"] == "SUCCESS"
    # Waited for, or (on a busy machine, where evaluating the sensors outlasts the settle time) settled during a
    # round and looked at again: either way taken in this run, and nothing is left settling.
    assert summary["settling"] == [] and not summary["nothing_new"]
    assert summary["assets"]["raw_videos"]["rejected"] == 1


def test_the_wait_is_bounded_and_what_is_left_is_reported(cosmos_env, monkeypatch):
    monkeypatch.setenv("COSMOS_SETTLE_SECONDS", "120")
    (cosmos_env.landing / "slow_upload.mp4").write_bytes(b"x" * 100)
    summary = run_in_process(cosmos_env, max_wait_s=2)
    # The bound is on waiting; evaluating the sensors takes what it takes on a busy machine.
    assert summary["status"] == "settling" and not summary["nothing_new"] and 1.5 <= summary["waited_s"] <= 2.0
    assert "1 file(s) settling in the landing zone" in summary["message"]


def test_a_file_that_settles_while_the_sensors_run_needs_another_round(tmp_path):
    # The race behind "nothing new" right after a drop: the landing sensor looked while the file was still
    # settling; by the end of the round (the other sensors took a while) it had settled, so no file was
    # "settling" any more and the loop stopped without the sensor ever seeing it settled.
    (tmp_path / "copied.mp4").write_bytes(b"x")
    mtime = os.stat(tmp_path / "copied.mp4").st_mtime
    when_the_sensor_looked = {"landing zone": scan_drop_zone(tmp_path, 10, now=mtime + 9.5)}
    after_the_round = {"landing zone": scan_drop_zone(tmp_path, 10, now=mtime + 10.5)}
    assert when_the_sensor_looked["landing zone"].unsettled and not after_the_round["landing zone"].unsettled
    assert settled_since(when_the_sensor_looked, after_the_round)
    # Settled before the round started: its sensor saw it, no need to look again.
    assert not settled_since(after_the_round, {"landing zone": scan_drop_zone(tmp_path, 10, now=mtime + 99)})


def test_a_sensor_that_fails_makes_cosmos_run_fail_and_is_reported_first(cosmos_env):
    cosmos_env.tables.mkdir(parents=True, exist_ok=True)
    cosmos_env.landing_ledger.write_bytes(b"this is not an SQLite database, it was overwritten" * 100)
    result = run_cli(cosmos_env, settle_seconds="0")
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    error = next(i for i, line in enumerate(lines) if line.startswith("ERROR: sensor landing_zone_sensor failed: DatabaseError"))
    # The summary starts with the error; that the other sensors had nothing to do comes after it.
    assert lines[error + 1].startswith("Nothing new"), result.stdout
