"""The production instance on a real PostgreSQL server.

deploy/dagster.yaml loads as it is (PostgreSQL storage from DAGSTER_PG_* variables, the Kubernetes run
launcher pointed at an offline kubeconfig), and the sensor → run flow runs on it end to end: the real
``dagster-daemon`` process evaluates ``landing_zone_sensor``, queues and launches runs, and run
workers execute them as their own processes. Two landed videos make two batches in one tick and two
runs at once; afterwards every batch has exactly one successful run, every video is in
``raw_videos`` exactly once, and nothing was materialized twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import polars as pl
import psutil
import pytest
import yaml
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from conftest import age_file
from cosmos_assets.headless import LAUNCHED_BY_TAG, sensor_daemon_heartbeat_age
from test_cosmos_run import COSMOS
from cosmos_assets.settings import CosmosPaths
from postgres_support import offline_kubeconfig, offline_run_launcher, postgres_server, production_instance_config  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DAEMON = str(Path(sys.executable).with_name("dagster-daemon"))
SAMPLE_VIDEOS = ["asl_walk.mkv", "asl_book.mkv"]
CURATION_ASSETS = ["raw_videos", "video_clips", "clip_scores", "filtered_clips"]
GPU_STEP = "video_clips_and_scores"
RUNS_TIMEOUT_S = 240

# The project's definitions as the daemon loads them, with one file per ingest batch: two landed
# videos then make two batches in one sensor tick, so two runs are queued and started together.
# Only the landing-zone sensor runs, so the flow under test is landing → curation.
FLOW_DEFINITIONS = textwrap.dedent('''
    import dagster as dg

    from cosmos_assets.definitions import build_definitions
    from resources.landing import LandingZoneSettings

    def one_file_per_batch(project: dg.Definitions) -> dg.Definitions:
        return dg.Definitions(
            assets=project.assets,
            asset_checks=project.asset_checks,
            jobs=project.jobs,
            sensors=[sensor for sensor in project.sensors if sensor.name == "landing_zone_sensor"],
            executor=project.executor,
            resources={**project.resources, "landing_zone": LandingZoneSettings(settle_seconds=0, max_files_per_batch=1)},
        )

    defs = one_file_per_batch(build_definitions("local"))
''')


def test_the_production_instance_loads_on_postgresql_without_a_cluster(postgres_server, monkeypatch, tmp_path):
    for name, value in postgres_server.env.items():
        monkeypatch.setenv(name, value)
    config = production_instance_config()
    config["run_launcher"] = offline_run_launcher(config, offline_kubeconfig(tmp_path))
    with dg.instance_for_test(overrides=config, temp_dir=str(tmp_path)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_launcher, K8sRunLauncher)
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        # The `gpu` pool limit the README tells operators to set lives in PostgreSQL.
        instance.event_log_storage.set_concurrency_slots("gpu", 4)
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 4
        run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), run_id="a1b2c3d4-0000-4000-8000-000000000001")
        assert instance.get_run_by_id(run.run_id).job_name == "noop"


def _stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the daemon's process group (daemon, code server, run workers), SIGKILL what is left."""
    members = []
    try:
        parent = psutil.Process(process.pid)
        members = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    process.wait(timeout=30)


@pytest.fixture
def daemon_flow(postgres_server, samples, tmp_path, monkeypatch):
    """A landing zone with two real videos, an instance on PostgreSQL (deploy/dagster.yaml with the
    default run launcher: run workers are local processes), and the real daemon running on them."""
    paths = CosmosPaths(tmp_path / "cosmos_home")
    paths.landing.mkdir(parents=True)
    for name in SAMPLE_VIDEOS:
        shutil.copy(samples / name, paths.landing / name)
        age_file(paths.landing / name)
    config = production_instance_config()
    # The default launcher instead of Kubernetes; it cannot resume a run in a new worker (the
    # K8sRunLauncher can), so monitoring fails such runs instead of resuming them.
    del config["run_launcher"]
    config["run_monitoring"]["max_resume_run_attempts"] = 0
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "flow_definitions.py").write_text(FLOW_DEFINITIONS)
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_file": {"relative_path": "flow_definitions.py", "location_name": "cosmos"}}]}))
    env = {**postgres_server.env, "COSMOS_HOME": str(paths.home), "DAGSTER_HOME": str(dagster_home),
           "COSMOS_PROFILE": "local", "COSMOS_SETTLE_SECONDS": "0"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    # This machine stands in for one GPU: the `gpu` pool gets one slot, set by the command that
    # deploy/k8s/gpu-pool-job.yaml runs in the cluster.
    [job] = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "gpu-pool-job.yaml").read_text())
    *set_gpu_pool, _ = job["spec"]["template"]["spec"]["containers"][0]["args"]
    set_gpu_pool[0] = str(Path(sys.executable).with_name(set_gpu_pool[0]))
    subprocess.run([*set_gpu_pool, "1"], env={**os.environ, **env}, check=True, capture_output=True, timeout=120)
    assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1
    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen([DAEMON, "run", "-w", str(workspace)], cwd=tmp_path, env={**os.environ, **env},
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield DaemonFlow(paths, instance, daemon, tmp_path / "daemon.log")
    finally:
        _stop_process_group(daemon)
        log.close()
        instance.dispose()


class DaemonFlow:
    """The running daemon and what the test reads back from the instance."""

    def __init__(self, paths, instance, daemon, log_path):
        self.paths, self.instance, self.daemon, self.log_path = paths, instance, daemon, log_path

    def log_tail(self) -> str:
        return self.log_path.read_text()[-4000:]

    def curation_runs(self):
        return self.instance.get_run_records(filters=RunsFilter(job_name="curation_job"))

    def wait_for_runs(self, count: int, timeout_s: float):
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            assert self.daemon.poll() is None, f"the daemon exited:\n{self.log_tail()}"
            assert "Error loading repository location" not in self.log_path.read_text(), self.log_tail()
            records = self.curation_runs()
            if len(records) >= count and all(r.dagster_run.is_finished for r in records):
                return records
            time.sleep(1)
        states = [(r.dagster_run.run_id[:8], r.dagster_run.status.value) for r in self.curation_runs()]
        pytest.fail(f"runs not finished after {timeout_s} s: {states}\n{self.log_tail()}")

    def sensor_ticks(self):
        [state] = [s for s in self.instance.all_instigator_state() if s.name == "landing_zone_sensor"]
        return self.instance.get_ticks(state.instigator_origin_id, state.selector_id)

    def timeline(self, run_id: str) -> str:
        """When each run and step event happened, in seconds after the run was queued."""
        events = [e for e in self.instance.all_logs(run_id) if e.dagster_event]
        first = events[0].timestamp
        return ", ".join(f"{(e.step_key + ' ') if e.step_key else ''}{e.dagster_event.event_type_value} {e.timestamp - first:.1f}"
                         for e in events if e.dagster_event.event_type_value.startswith(("RUN_", "PIPELINE_", "STEP_START", "STEP_SUCCESS")))

    def step_window(self, run_id: str, step_key: str) -> tuple[float, float]:
        events = self.instance.all_logs(run_id)
        start = [e.timestamp for e in events if e.step_key == step_key and e.dagster_event and e.dagster_event.event_type_value == "STEP_START"]
        end = [e.timestamp for e in events if e.step_key == step_key and e.dagster_event and e.dagster_event.event_type_value == "STEP_SUCCESS"]
        assert len(start) == len(end) == 1, (run_id, step_key)
        return start[0], end[0]


@pytest.mark.slow
def test_two_batches_run_at_once_through_the_daemon_and_nothing_is_lost_or_duplicated(daemon_flow):
    flow = daemon_flow
    started = time.time()
    # `cosmos run` beside a live daemon executes nothing itself (the daemon's check-then-launch cannot be
    # locked against): it waits for the daemon's runs and reports them.
    while sensor_daemon_heartbeat_age(flow.instance) is None:
        assert time.time() - started < 120 and flow.daemon.poll() is None, f"no daemon heartbeat\n{flow.log_tail()}"
        time.sleep(0.5)
    beside = subprocess.run([COSMOS, "run", "--json"], env=os.environ.copy(), capture_output=True, text=True,
                            timeout=2 * RUNS_TIMEOUT_S + 180)  # the runs, a tick after them, and its own start
    summary = json.loads(beside.stdout.splitlines()[-1])
    assert beside.returncode == 0 and summary["mode"] == "daemon", beside.stderr[-2000:]
    assert sorted((r["job"], r["status"]) for r in summary["runs"]) == [("curation_job", "SUCCESS")] * len(SAMPLE_VIDEOS)
    records = flow.wait_for_runs(len(SAMPLE_VIDEOS), RUNS_TIMEOUT_S)
    runs = [r.dagster_run for r in records]
    assert not [run for run in runs if LAUNCHED_BY_TAG in run.tags], "every run was launched by the daemon"
    assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * len(SAMPLE_VIDEOS), flow.log_tail()

    # One batch per video, one run per batch, requested by one tick of the sensor.
    partitions = flow.instance.get_dynamic_partitions("ingest_batches")
    run_keys = [run.tags["dagster/run_key"] for run in runs]
    assert len(partitions) == len(SAMPLE_VIDEOS) and sorted(run_keys) == sorted(partitions)
    assert sorted(run.tags["dagster/partition"] for run in runs) == sorted(partitions)
    requesting_ticks = [tick for tick in flow.sensor_ticks() if tick.run_ids]
    assert len(requesting_ticks) == 1 and sorted(requesting_ticks[0].run_ids) == sorted(run.run_id for run in runs)

    # The two runs were in progress at the same time; the `gpu` pool let one GPU step run at a time.
    assert max(r.start_time for r in records) < min(r.end_time for r in records)
    (first_start, first_end), (second_start, second_end) = sorted(flow.step_window(run.run_id, GPU_STEP) for run in runs)
    assert first_end <= second_start

    # Every asset of every batch materialized exactly once.
    for asset in CURATION_ASSETS:
        events = flow.instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
        assert Counter(e.partition_key for e in events) == Counter(partitions), asset

    # Every landed video is in raw_videos exactly once, and no clip is in two batches.
    raw = pl.concat([pl.read_parquet(flow.paths.tables / "raw_videos" / f"{p}.parquet") for p in partitions])
    assert sorted(raw["landing_name"]) == sorted(SAMPLE_VIDEOS) and raw["content_hash"].n_unique() == raw.height
    assert set(raw["status"]) == {"ok"}
    clips = pl.concat([pl.read_parquet(flow.paths.tables / "video_clips" / f"{p}.parquet") for p in partitions])
    assert clips.height >= len(SAMPLE_VIDEOS) and clips["clip_id"].n_unique() == clips.height

    # The sensor keeps running and, with nothing new landed, asks for nothing more.
    last_end = max(r.end_time for r in records)
    deadline = time.time() + 60
    while not any(t.status.value == "SKIPPED" and t.timestamp > last_end for t in flow.sensor_ticks()):
        assert time.time() < deadline, f"no sensor tick after the runs ended\n{flow.log_tail()}"
        time.sleep(1)
    assert len(flow.curation_runs()) == len(SAMPLE_VIDEOS)
    print(f"\ndaemon flow: {len(runs)} runs succeeded {time.time() - started:.1f} s after the daemon started")
    for run in runs:
        print(f"  {run.run_id[:8]}: {flow.timeline(run.run_id)}")
