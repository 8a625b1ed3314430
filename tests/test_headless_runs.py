"""`cosmos run`'s bookkeeping of runs on a real DagsterInstance, with a tiny partitioned job (fast):

- issue 14.5: a run key is claimed before its run is looked for and executed, so a second `cosmos run` on the
  same home skips a key the first one holds instead of executing it a second time;
- issue 14.8: a run left STARTED by a `cosmos run` that died (killed, disk full) is marked failed and executed
  again with its job, partition, run config and tags, although no sensor requests its key any more."""

import subprocess
import time

import dagster as dg
import pytest

from cosmos_assets import headless

PARTITIONS = dg.StaticPartitionsDefinition(["p1", "p2"])
EXECUTED: list[tuple[str, str]] = []


class Note(dg.Config):
    note: str = "default"


@dg.asset(partitions_def=PARTITIONS)
def tiny(context: dg.AssetExecutionContext, config: Note) -> None:
    EXECUTED.append((context.partition_key, config.note))


tiny_job = dg.define_asset_job("tiny_job", selection=[tiny])


@dg.sensor(job=tiny_job)
def tiny_sensor(context):
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key="tiny-p1", partition_key="p1",
                                                       run_config={"ops": {"tiny": {"config": {"note": "planned"}}}})],
                           cursor="advanced")


DEFS = dg.Definitions(assets=[tiny], jobs=[tiny_job], sensors=[tiny_sensor])


@pytest.fixture
def instance(tmp_path):
    EXECUTED.clear()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def _summary():
    return {"runs": [], "assets": {}, "runs_succeeded": 0, "runs_failed": 0, "waiting_on": []}


def _dead_pid() -> str:
    process = subprocess.Popen(["true"])
    process.wait()
    return str(process.pid)


def test_a_run_key_claimed_by_another_cosmos_run_is_not_executed_twice(instance):
    sensor = DEFS.resolve_sensor_def("tiny_sensor")
    other = {}  # the first `cosmos run`, between checking for the key's run and finishing it
    assert headless._claim_run_key(instance, "tiny_sensor", "tiny-p1", other)
    summary = _summary()
    assert headless._evaluate_and_execute(instance, DEFS, sensor, summary, lambda *_: None) == 0
    assert EXECUTED == [] and summary["waiting_on"] == [{"partition": "p1", "run_id": None, "status": "CLAIMED"}]
    assert instance.get_runs() == []
    headless._release_claims(other)  # it finished (or died: the lock goes with its process)
    summary = _summary()
    assert headless._evaluate_and_execute(instance, DEFS, sensor, summary, lambda *_: None) == 1
    assert EXECUTED == [("p1", "planned")] and summary["runs_succeeded"] == 1
    again = _summary()
    headless._evaluate_and_execute(instance, DEFS, sensor, again, lambda *_: None)
    assert EXECUTED == [("p1", "planned")], "a key with a successful run is never run again"


def test_a_run_whose_cosmos_run_died_is_marked_failed_and_executed_again(instance):
    job = DEFS.resolve_job_def("tiny_job")
    tags = {"dagster/partition": "p2", "dagster/run_key": "tiny-p2", "dagster/sensor_name": "tiny_sensor",
            headless.LAUNCHED_BY_TAG: "cosmos run", headless.PID_TAG: _dead_pid(), "cosmos/candidates": "3"}
    config = {"ops": {"tiny": {"config": {"note": "from the dead run"}}}}
    dead = instance.create_run_for_job(job, run_config=config, tags=tags, status=dg.DagsterRunStatus.STARTED)
    alive = instance.create_run_for_job(job, run_config=config, status=dg.DagsterRunStatus.STARTED,
                                        tags={**tags, "dagster/run_key": "tiny-other", headless.PID_TAG: "1"})
    summary, attempted = _summary(), set()
    assert headless.recover_dead_runs(instance, DEFS, summary, lambda *_: None, attempted) == 1
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED, "a live process's run is left alone"
    assert EXECUTED == [("p2", "from the dead run")] and summary["runs_succeeded"] == 1
    [retry] = [r for r in instance.get_runs() if r.tags.get(headless.RETRY_OF_TAG) == dead.run_id]
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    assert {k: retry.tags[k] for k in ("dagster/partition", "dagster/run_key", "dagster/sensor_name", "cosmos/candidates")} == \
        {"dagster/partition": "p2", "dagster/run_key": "tiny-p2", "dagster/sensor_name": "tiny_sensor", "cosmos/candidates": "3"}
    assert headless.recover_dead_runs(instance, DEFS, _summary(), lambda *_: None, set()) == 0, "recovered once"
    assert EXECUTED == [("p2", "from the dead run")]


def test_an_orphan_candidate_of_a_dead_run_is_regenerated_not_reused(tmp_path, samples):
    """The dead run may leave a candidate's video (even a truncated one: the disk filled) without its record, which
    is written last. A later round regenerates it; only a candidate with all its files and its record is reused."""
    from cosmos_assets.common.artefacts import LocalStore
    from cosmos_assets.synthetic.generation import candidate_files, candidate_id, generate_candidate
    from cosmos_assets.synthetic.video import read_window, request_geometry

    geometry = request_geometry(960, 540, 8.84, 320, 16, 0.5)
    source = read_window(samples / "dashcam_solid_white_right.mp4", geometry)

    class Backend:
        calls = 0

        def identity(self):
            return {"backend": "classical", "model": "test", "model_version": "1"}

        def config_digest(self):
            return "digest"

        def generate(self, request, seed, frames, controls=None):  # the backends' interface since clip_controls
            Backend.calls += 1
            return frames, {"seed": seed}

    store, root = LocalStore(tmp_path / "home"), "synthetic/candidates"
    request = {"request_id": "r-1", "condition": "rain", "source_clip_id": "c-1", "prompt": "rain", "controls": "{}",
               "fps": geometry.fps}
    video, thumbnail, record = candidate_files(root, candidate_id("r-1", 0, "digest"))
    store.write_bytes(video, (samples / "dashcam_solid_white_right.mp4").read_bytes()[:5000])  # cut off by a full disk
    store.write_bytes(thumbnail, b"\xff\xd8")
    row = generate_candidate(Backend(), request, 0, source, store, root, "round-2")
    assert row["reused"] is False and Backend.calls == 1 and store.exists(record)
    assert row["frames"] == len(source) and store.local_path(store.ref(video)).stat().st_size != 5000
    again = generate_candidate(Backend(), request, 0, source, store, root, "round-2")
    assert again["reused"] is True and Backend.calls == 1 and again["sha256"] == row["sha256"]


def test_beside_a_live_daemon_cosmos_run_executes_nothing_and_reports_what_the_daemon_ran(cosmos_env, samples):
    """Issue 14.5 with a daemon: the daemon's check-then-launch cannot take our claims, so `cosmos run` never
    evaluates sensors beside it. `cosmos demo` holds the runner lock for its daemon's life; any other daemon is
    seen by its heartbeat. (The daemon at work: tests/test_postgres_instance.py.)"""
    import shutil

    from dagster._daemon.types import DaemonHeartbeat

    from cosmos_assets.settings import ensure_local_instance

    home = ensure_local_instance(cosmos_env)
    shutil.copy(samples / "asl_walk.mkv", cosmos_env.landing / "walk.mkv")
    quiet = lambda *_: None  # noqa: E731

    demo_lock = headless.take_runner_lock_for_daemon(home)  # as `cosmos demo` holds it
    try:
        summary = headless.run_until_idle(log=quiet, max_wait_s=2)
    finally:
        demo_lock.close()
    assert summary["mode"] == "daemon" and "cosmos demo" in summary["daemon"]
    assert summary["runs"] == [] and not (cosmos_env.tables / "raw_videos").exists(), "nothing executed beside it"

    with dg.DagsterInstance.from_config(str(home)) as instance:
        now = time.time()
        instance.add_daemon_heartbeat(DaemonHeartbeat(now - 10, "SENSOR", "elsewhere", errors=[]))
        summary = headless.run_until_idle(log=quiet, max_wait_s=2)
        assert summary["mode"] == "daemon" and "heartbeat" in summary["daemon"] and summary["runs"] == []
        # A daemon that stopped leaves its last heartbeat: once it is stale, `cosmos run` works on its own.
        instance.add_daemon_heartbeat(DaemonHeartbeat(now - headless.DAEMON_ALIVE_S - 60, "SENSOR", "elsewhere", errors=[]))
        assert headless.sensor_daemon_heartbeat_age(instance) is None
