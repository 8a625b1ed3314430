"""Measure, on this machine, what deploy/README.md's "Scale on paper" builds on: what a step costs when
it runs in its own process (as every step pod does), PostgreSQL's share, the landing-zone sensor's
tick time, and dynamic partitions on PostgreSQL. Prints one markdown table.

    .venv/bin/python deploy/measure_overheads.py

It starts a throwaway PostgreSQL (tests/postgres_support.py) and uses the packaged sample videos.
What a cluster adds on top (pod scheduling, image pull, container start) cannot be measured here.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' throwaway PostgreSQL server

import dagster as dg  # noqa: E402
import yaml  # noqa: E402

from cosmos_assets.definitions import build_definitions  # noqa: E402
from cosmos_assets.settings import CosmosPaths  # noqa: E402
from postgres_support import running_postgres  # noqa: E402
from resources.landing import LandingZoneSettings  # noqa: E402
from sensors.landing_zone import evaluate_landing_zone  # noqa: E402

SAMPLE = ROOT / "cosmos_assets" / "samples" / "asl_walk.mkv"
CURATION_STEPS = ["raw_videos", "video_clips", "clip_scores", "filtered_clips"]


def _curation_steps(executor: dg.ExecutorDefinition) -> dg.JobDefinition:
    """raw_videos → video_clips + clip_scores → filtered_clips, the project's assets and resources."""
    project = build_definitions("local")
    job = dg.define_asset_job("curation_steps", selection=dg.AssetSelection.assets(*CURATION_STEPS), executor_def=executor)
    defs = dg.Definitions(assets=project.assets, asset_checks=project.asset_checks, jobs=[job], resources=project.resources)
    return defs.resolve_job_def("curation_steps")


# Module-level functions, so that step processes can load the job again (dg.reconstructable).
def steps_in_one_process() -> dg.JobDefinition:
    return _curation_steps(dg.in_process_executor)


def step_per_process() -> dg.JobDefinition:
    return _curation_steps(dg.multiprocess_executor)


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def import_cost() -> float:
    """A fresh interpreter importing the code location: what every step pod pays before its step."""
    command = [sys.executable, "-c", "import cosmos_assets.definitions"]
    return statistics.median(seconds(lambda: subprocess.run(command, check=True, cwd=ROOT)) for _ in range(3))


def land_one_batch(home: Path, instance: dg.DagsterInstance) -> str:
    os.environ["COSMOS_HOME"] = str(home)
    paths = CosmosPaths(home)
    paths.landing.mkdir(parents=True)
    shutil.copy(SAMPLE, paths.landing / SAMPLE.name)
    os.utime(paths.landing / SAMPLE.name, (time.time() - 3600,) * 2)
    storage = build_definitions("local").resources["storage"]
    [batch], _, _ = evaluate_landing_zone(storage, LandingZoneSettings(settle_seconds=0), None)
    instance.add_dynamic_partitions("ingest_batches", [batch.key])
    return batch.key


def curation_run(instance: dg.DagsterInstance, home: Path, job_function) -> tuple[float, float, int]:
    """(wall seconds, seconds inside steps, events written) for one run of the curation steps."""
    partition = land_one_batch(home, instance)
    started = time.perf_counter()
    result = dg.execute_job(dg.reconstructable(job_function), instance=instance, tags={"dagster/partition": partition})
    wall = time.perf_counter() - started
    assert result.success, job_function.__name__
    events = instance.all_logs(result.run_id)
    in_steps = 0.0
    for step in {e.step_key for e in events if e.step_key}:
        times = [e.timestamp for e in events if e.step_key == step and e.dagster_event
                 and e.dagster_event.event_type_value in ("STEP_START", "STEP_SUCCESS")]
        in_steps += max(times) - min(times)
    return wall, in_steps, len(events)


def event_write_ms(instance: dg.DagsterInstance, count: int = 300) -> float:
    run = instance.create_run_for_job(dg.GraphDefinition("event_writes").to_job())
    elapsed = seconds(lambda: [instance.report_engine_event(f"event {i}", run) for i in range(count)])
    return 1000 * elapsed / count


def sensor_tick_seconds(folder: Path, files: int) -> tuple[float, float]:
    """(first tick: hash and batch every file, next tick: nothing new) for a landing zone of tiny files."""
    paths = CosmosPaths(folder)
    for index in range(files):
        target = paths.landing / f"day-{index // 1000}" / f"video-{index:06d}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(index.to_bytes(8, "little") * 128)
    past = time.time() - 3600
    for path in paths.landing.rglob("*.mp4"):
        os.utime(path, (past, past))
    os.environ["COSMOS_HOME"] = str(folder)
    storage = build_definitions("local").resources["storage"]
    settings = LandingZoneSettings(settle_seconds=0)
    cursor = {}

    def tick():
        _, cursor["value"], _ = evaluate_landing_zone(storage, settings, cursor.get("value"))

    return seconds(tick), seconds(tick)


def main() -> None:
    rows = []
    rows.append(("fresh process importing the code location (every step pod pays this)", f"{import_cost():.1f} s"))
    with running_postgres() as server, tempfile.TemporaryDirectory() as scratch:
        os.environ.update(server.env)
        home = Path(scratch) / "dagster_home"
        home.mkdir()
        instance_config = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
        del instance_config["run_launcher"]
        instance_config["run_monitoring"]["max_resume_run_attempts"] = 0
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
        os.environ["DAGSTER_HOME"] = str(home)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            curation_run(instance, Path(scratch) / "warmup", steps_in_one_process)  # imports and file caches warm
            one = curation_run(instance, Path(scratch) / "in_process", steps_in_one_process)
            each = curation_run(instance, Path(scratch) / "multiprocess", step_per_process)
            steps = 3  # raw_videos, video_clips_and_scores, filtered_clips
            rows.append(("curation run, 3 steps in one process (wall / inside steps)", f"{one[0]:.1f} s / {one[1]:.1f} s"))
            rows.append(("same run, each step in its own process (wall / inside steps)", f"{each[0]:.1f} s / {each[1]:.1f} s"))
            rows.append(("extra wall time per step in its own process", f"{(each[0] - one[0]) / steps:.1f} s"))
            rows.append(("events written to PostgreSQL per curation run", f"{one[2]}"))
            rows.append(("PostgreSQL event write, one at a time", f"{event_write_ms(instance):.1f} ms"))
            keys = [f"batch-{i:06d}" for i in range(10_000)]
            rows.append(("add 10,000 dynamic partitions on PostgreSQL", f"{seconds(lambda: instance.add_dynamic_partitions('scale_test', keys)):.2f} s"))
            rows.append(("read 10,000 dynamic partition keys", f"{seconds(lambda: instance.get_dynamic_partitions('scale_test')):.3f} s"))
        for files in (1_000, 10_000):
            first, again = sensor_tick_seconds(Path(scratch) / f"landing-{files}", files)
            rows.append((f"landing-zone sensor tick, {files:,} new files (hash + batch) / next tick", f"{first:.2f} s / {again:.2f} s"))
    print("| measured | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
