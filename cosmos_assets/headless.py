"""``cosmos run``: the daemon's sensor → run loop, headless, against the real Dagster instance.

Each sensor is evaluated with its own cursor (kept in the instance's key-value store), the
partitions it adds are added, and each run it requests is executed through Dagster's own execution
(``execute_in_process`` on the instance in ``$DAGSTER_HOME``, so runs appear in the UI). A run
request whose run key already has a successful or live run, launched by the daemon or by an
earlier ``cosmos run``, is skipped: a batch is curated once. A run key is claimed before its run is
looked for and executed (an exclusive lock beside the instance, ``_claim_run_key``), so two ``cosmos run``
processes on one home never execute the same request: the second finds the key claimed and skips it. Runs
left ``STARTED`` by a ``cosmos run`` that died (killed, disk full) are marked failed and executed again, with
the dead run's job, partition, run config and tags (``recover_dead_runs``), even when no sensor requests
their key again (a sensor's cursor may have moved past it).

A dagster-daemon on the same instance (``cosmos demo``, ``dagster dev``, a deployment) evaluates the same sensors
and launches the same run keys; its check-then-launch cannot take our claims, so ``cosmos run`` never races it:
when a daemon is alive (``cosmos demo`` holds the runner lock, or the sensor daemon's heartbeat is recent) it
evaluates nothing and executes nothing itself, and instead waits until the daemon's sensors have looked at
everything that landed and the runs they launched have finished, then reports those runs
(``wait_for_daemon``). ``cosmos demo`` in turn waits for a ``cosmos run`` in progress before it starts its daemon.
"""

import contextlib
import fcntl
import hashlib
import os
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

from cosmos_assets.common.drop_zone import ScanResult, scan_drop_zone
from cosmos_assets.definitions import build_definitions
from cosmos_assets.text_to_image.prompts import prompt_inbox

LAUNCHED_BY_TAG = "cosmos/launched_by"
PID_TAG = "cosmos/pid"
SUMMARY_SKIP_PREFIXES = ("dagster/",)
LIVE_STATUSES = {DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED}
RETRY_OF_TAG = "cosmos/retry_of"
CLAIMS_FOLDER = ".cosmos-run-claims"
# Held shared by every `cosmos run` while it works, and exclusively by `cosmos demo` for the life of its UI and
# daemon (the descriptor survives its exec into `dagster dev`): each sees the other.
RUNNER_LOCK = ".cosmos-runner.lock"
# The daemon reports every 30 s (Dagster's default heartbeat interval); three missed beats mean it is gone.
DAEMON_ALIVE_S = 90.0
# How long `cosmos run` waits for a daemon's runs by default: a curation run of a large batch takes minutes.
DAEMON_WAIT_S = 3600.0
# Runs a daemon is working on. A NOT_STARTED run was created and never submitted (by a script, a test, a failed
# launch): no daemon will ever move it, so waiting for it would never end.
DAEMON_BUSY_STATUSES = {DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
                        DagsterRunStatus.CANCELING}
# A sensor whose last tick is older than this is not being evaluated by any live daemon (sensors tick every 15-30 s).
ACTIVE_TICK_S = 300.0


def _claim_run_key(instance: dg.DagsterInstance, sensor_name: str, run_key: str, held: dict):
    """Claim a run key for this process: an exclusive ``flock`` on a file beside the instance, taken before the
    key's run is looked for and held until this process has executed it (the lock goes with the process, so a
    ``cosmos run`` that dies releases it). ``held`` keeps the claims of this process (keyed by sensor and run
    key), to be released with ``_release_claims``. False when another process holds the key."""
    name = f"{sensor_name}\0{run_key}"
    if name in held:
        return True
    folder = Path(instance.root_directory) / CLAIMS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".lock"), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return False
    held[name] = handle
    return True


def _release_claims(held: dict) -> None:
    for handle in held.values():
        handle.close()  # closing the file releases its lock
    held.clear()


def _mark_dead_run_failed(instance: dg.DagsterInstance, run) -> None:
    """Mark a run of a dead ``cosmos run`` failed and give back the pool slots its steps held (or a retry
    would wait for them forever)."""
    instance.report_run_failed(run)
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def _process_alive(pid: str | None) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def _existing_run(instance: dg.DagsterInstance, sensor_name: str, run_key: str):
    """A successful or live run for this run key, if there is one."""
    runs = instance.get_runs(filters=RunsFilter(tags={"dagster/run_key": run_key, "dagster/sensor_name": sensor_name}))
    for existing in runs:
        if existing.status == DagsterRunStatus.SUCCESS:
            return existing
        if existing.status in LIVE_STATUSES:
            if existing.tags.get(LAUNCHED_BY_TAG) == "cosmos run" and not _process_alive(existing.tags.get(PID_TAG)):
                # Its `cosmos run` process died: mark it failed and run the batch again.
                _mark_dead_run_failed(instance, existing)
                continue
            return existing
    return None


def _merge_counts(total: dict, metadata: dict) -> None:
    for name, value in metadata.items():
        if name.startswith(SUMMARY_SKIP_PREFIXES):
            continue
        if isinstance(value, dg.IntMetadataValue):
            total[name] = total.get(name, 0) + (value.value or 0)
        elif isinstance(value, dg.JsonMetadataValue) and isinstance(value.data, dict) and all(
            isinstance(v, int) for v in value.data.values()
        ):
            merged = Counter(total.get(name, {}))
            merged.update(value.data)
            total[name] = dict(merged)


# The synthetic loop's counts, one per asset, in the order the data flows.
SYNTHETIC_COUNTS = (("generation_prompts", "requests"), ("synthetic_videos", "candidates"),
                    ("critique_scores", "critiqued"), ("accepted_videos", "accepted"))


def _synthetic_counts(assets: dict) -> dict | None:
    """requests → candidates → critiqued → accepted, and the acceptance rate. Rates cannot be summed over
    runs, so it is computed from the summed counts (accepted over judged candidates)."""
    if not any(asset in assets for asset, _ in SYNTHETIC_COUNTS):
        return None
    counts = {name: assets.get(asset, {}).get(name, 0) for asset, name in SYNTHETIC_COUNTS}
    judged = assets.get("accepted_videos", {}).get("judged", 0)
    counts["acceptance_rate"] = round(counts["accepted"] / judged, 4) if judged else None
    return counts


def watched_folders(defs: dg.Definitions) -> list[tuple[str, Path, float]]:
    """The folders sensors take dropped files from, each with its settle time: (name, root, settle seconds)."""
    paths = defs.resources["storage"].paths
    landing_settle = defs.resources["landing_zone"].settle_seconds
    return [
        ("landing zone", paths.landing, landing_settle),
        ("synthetic inbox", paths.synthetic_inbox, defs.resources["synthetic"].inbox_settle_seconds),
        # checkpoint_sensor takes inbox drops with the landing zone's settle time.
        ("checkpoint inbox", paths.checkpoint_inbox, landing_settle),
        ("label inbox", paths.label_inbox, defs.resources["critic_training"].label_settle_seconds),
        ("prompt inbox", prompt_inbox(paths.home), defs.resources["text_to_image"].prompt_settle_seconds),
    ]


def scan_watched(folders: list[tuple[str, Path, float]], now: float | None = None) -> dict[str, ScanResult]:
    now = time.time() if now is None else now
    return {name: scan_drop_zone(root, settle, now) for name, root, settle in folders}


def settling_files(folders: list[tuple[str, Path, float]], scans: dict[str, ScanResult], now: float) -> list[dict]:
    """Files still settling, each with the seconds until it has been untouched long enough to be taken."""
    settle = {name: seconds for name, _, seconds in folders}
    return sorted(
        ({"folder": name, "file": entry.name,
          "ready_in_s": round(max(0.0, settle[name] - (now - entry.mtime_ns / 1e9)), 1)}
         for name, scan in scans.items() for entry in scan.unsettled),
        key=lambda f: (f["ready_in_s"], f["folder"], f["file"]),
    )


def settled_since(before: dict[str, ScanResult], after: dict[str, ScanResult]) -> bool:
    """Whether a file is settled in ``after`` that was not settled in ``before``.

    A round scans before its sensors run and again after: a file settled before the round was seen settled by
    its sensor (a file's identity includes its size and mtime, so a rewrite is a new file). One that settled,
    or was moved in, during the round may have been missed, and needs another round before the loop is idle.
    """
    return any(set(after[name].settled) - set(before[name].settled) for name in after)


def _settling_message(settling: list[dict]) -> str:
    first = settling[0]
    folders = sorted({f["folder"] for f in settling})
    return (f"{len(settling)} file(s) settling in the {', '.join(folders)}, "
            f"ready in {first['ready_in_s']:.0f} s" + (f" ({first['file']})" if len(settling) == 1 else ""))


def open_runner_lock(dagster_home: str | os.PathLike):
    """The lock file beside the instance that ``cosmos run`` and ``cosmos demo`` coordinate on."""
    Path(dagster_home).mkdir(parents=True, exist_ok=True)
    return open(Path(dagster_home) / RUNNER_LOCK, "a+")


@contextlib.contextmanager
def runner_lock_shared(dagster_home: str | os.PathLike):
    """Hold the runner lock shared for a ``cosmos run``; yields False when ``cosmos demo`` holds it (its daemon
    evaluates the sensors: this process must not)."""
    handle = open_runner_lock(dagster_home)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        handle.close()


def take_runner_lock_for_daemon(dagster_home: str | os.PathLike, log=print):
    """For ``cosmos demo``: wait until no ``cosmos run`` works on this home, then hold the lock exclusively and
    keep it across ``exec`` (the returned file stays open, inheritable), so that later ``cosmos run`` invocations
    defer to the daemon the demo starts."""
    handle = open_runner_lock(dagster_home)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("a `cosmos run` is working on this home; the UI and its daemon start when it has finished")
        fcntl.flock(handle, fcntl.LOCK_EX)
    os.set_inheritable(handle.fileno(), True)
    return handle


def sensor_daemon_heartbeat_age(instance: dg.DagsterInstance, now: float | None = None) -> float | None:
    """Seconds since a dagster-daemon's sensor loop last reported to this instance, when recent enough that the
    daemon is alive; None otherwise (a daemon that stopped leaves its last heartbeat behind)."""
    beat = instance.get_daemon_heartbeats().get("SENSOR")
    if beat is None:
        return None
    age = (time.time() if now is None else now) - beat.timestamp
    return age if age <= DAEMON_ALIVE_S else None


def _latest_sensor_ticks(instance: dg.DagsterInstance, names: set[str]) -> dict:
    """The latest tick of each running sensor the daemon evaluates, by sensor name (None before its first)."""
    from dagster._core.definitions.run_request import InstigatorType

    ticks = {}
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name in names and state.is_running:
            latest = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            ticks[state.name] = latest[0] if latest else None
    return ticks


def _summarise_daemon_runs(instance: dg.DagsterInstance, since: float, seen_live: set[str], summary: dict) -> None:
    """The runs created since ``since`` and those seen queued or running while waiting (created just before)."""
    from dagster._core.events import DagsterEventType

    records = instance.get_run_records(filters=RunsFilter(created_after=datetime.fromtimestamp(since, tz=timezone.utc)))
    known = {record.dagster_run.run_id for record in records}
    if missing := seen_live - known:
        records = [*records, *instance.get_run_records(filters=RunsFilter(run_ids=list(missing)))]
    for record in sorted(records, key=lambda r: r.create_timestamp):
        run = record.dagster_run
        info = {"run_id": run.run_id, "job": run.job_name, "partition": run.tags.get("dagster/partition"),
                "status": run.status.value}
        if run.status in LIVE_STATUSES:
            summary["waiting_on"].append({"partition": info["partition"], "run_id": run.run_id, "status": run.status.value})
            continue
        summary["runs"].append(info)
        succeeded = run.status == DagsterRunStatus.SUCCESS
        summary["runs_succeeded" if succeeded else "runs_failed"] += 1
        for event in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records:
            materialization = event.event_log_entry.asset_materialization
            asset = materialization.asset_key.to_user_string()
            if materialization.partition is None:
                summary["assets"][asset] = {}
            _merge_counts(summary["assets"].setdefault(asset, {}), materialization.metadata)


def wait_for_daemon(instance: dg.DagsterInstance, defs: dg.Definitions, folders, summary: dict, log,
                    max_wait_s: float, poll_s: float = 2.0) -> list[dict]:
    """With a daemon evaluating the sensors: wait until nothing is settling, no run is queued or running, and every
    running sensor has finished a tick that started after the last time something was (so it has seen all of it);
    then put the runs launched meanwhile into the summary. Returns what is still settling at the end."""
    from dagster._core.scheduler.instigation import TickStatus

    started, deadline = time.time(), time.monotonic() + max_wait_s
    names = {sensor.name for sensor in defs.sensors}
    busy_until = started
    settling: list[dict] = []
    seen_live: set[str] = set()
    while True:
        now = time.time()
        settling = settling_files(folders, scan_watched(folders, now), now)
        live = instance.get_runs(filters=RunsFilter(statuses=list(DAEMON_BUSY_STATUSES)))
        seen_live.update(run.run_id for run in live)
        if settling or live:
            busy_until = now
        # Sensors the daemon is ticking now: a state whose last tick is long past belongs to a code location or a
        # sensor no daemon evaluates any more (another deployment on a shared database), and is not waited for.
        ticks = [t for t in _latest_sensor_ticks(instance, names).values() if t is not None and now - t.timestamp < ACTIVE_TICK_S]
        looked = bool(ticks) and all(t.timestamp > busy_until and t.status != TickStatus.STARTED for t in ticks)
        if not settling and not live and looked:
            break
        if time.monotonic() >= deadline:
            log(f"stopped waiting for the daemon after {max_wait_s:.0f} s")
            break
        time.sleep(poll_s)
    for name, tick in _latest_sensor_ticks(instance, names).items():
        if tick is not None and tick.status == TickStatus.FAILURE:
            error = tick.error.message if tick.error else "failed"
            summary.setdefault("sensor_errors", {})[name] = f"(daemon tick) {error}"[:2000]
    _summarise_daemon_runs(instance, started, seen_live, summary)
    return settling


def run_until_idle(wait_for_settling: bool = True, log=print, max_rounds: int = 1000,
                   max_wait_s: float | None = None) -> dict:
    """Evaluate every sensor and run what they request, round after round, until a round requests nothing.

    Files still settling in a watched folder are waited for (at most ``max_wait_s``, by default three settle
    times and 5 s, which covers a copy that just finished) unless ``wait_for_settling`` is off; what is still
    settling at the end is reported (``status`` "settling"), never passed off as "nothing new".
    """
    log = log or (lambda *_: None)
    instance = dg.DagsterInstance.get()
    defs = build_definitions()
    folders = watched_folders(defs)
    summary: dict = {"runs": [], "assets": {}, "runs_succeeded": 0, "runs_failed": 0, "waiting_on": [], "mode": "headless"}
    started = time.monotonic()
    waited_s = 0.0
    settling: list[dict] = []
    attempted: set = set()
    with runner_lock_shared(instance.root_directory) as lock_free:
        daemon_age = None if not lock_free else sensor_daemon_heartbeat_age(instance)
        if not lock_free or daemon_age is not None:
            summary["mode"] = "daemon"
            summary["daemon"] = ("`cosmos demo` is running on this home" if not lock_free else
                                 f"a dagster-daemon is evaluating this home's sensors (heartbeat {daemon_age:.0f} s ago)")
            log(f"{summary['daemon']}: it launches the runs; waiting for them instead of racing it")
            settling = wait_for_daemon(instance, defs, folders, summary, log,
                                       max_wait_s if max_wait_s is not None else DAEMON_WAIT_S)
            waited_s = time.monotonic() - started
            return _finish_summary(summary, started, waited_s, settling, wait_for_settling)
        if max_wait_s is None:
            max_wait_s = 3 * max(settle for _, _, settle in folders) + 5
        recover_dead_runs(instance, defs, summary, log, attempted)
        settling, waited_s = _headless_rounds(instance, defs, folders, summary, log, attempted, max_rounds,
                                              wait_for_settling, max_wait_s)
    return _finish_summary(summary, started, waited_s, settling, wait_for_settling)


def _headless_rounds(instance, defs, folders, summary, log, attempted, max_rounds, wait_for_settling, max_wait_s):
    """Rounds of evaluating every sensor and executing what it requests, until a round requests nothing and
    nothing is settling (or the wait is over). Returns (still settling, seconds waited)."""
    waited_s = 0.0
    settling: list[dict] = []
    for _ in range(max_rounds):
        before = scan_watched(folders)
        requested = 0
        for sensor in defs.sensors:
            requested += _evaluate_and_execute(instance, defs, sensor, summary, log, attempted)
        if requested:
            continue
        now = time.time()
        after = scan_watched(folders, now)
        if settled_since(before, after):
            continue  # settled while the sensors ran: let them look again
        settling = settling_files(folders, after, now)
        if not settling:
            break
        if not wait_for_settling or waited_s >= max_wait_s:
            break
        pause = min(max(0.5, settling[0]["ready_in_s"] + 0.2), max_wait_s - waited_s)
        log(f"{_settling_message(settling)}; waiting {pause:.0f} s")
        time.sleep(pause)
        waited_s += pause
    return settling, waited_s


def _finish_summary(summary: dict, started: float, waited_s: float, settling: list[dict], wait_for_settling: bool) -> dict:
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    summary["waited_s"] = round(waited_s, 1)
    summary["settling"] = settling
    if synthetic := _synthetic_counts(summary["assets"]):
        summary["synthetic"] = synthetic
    summary["nothing_new"] = not summary["runs"] and not summary["waiting_on"] and not settling
    summary["status"] = (
        "sensor_errors" if summary.get("sensor_errors") else "failed" if summary["runs_failed"]
        else "settling" if settling else "idle" if summary["nothing_new"] else "done"
    )
    if summary["nothing_new"]:
        summary["message"] = "nothing new: no landed files to curate and no requested runs"
    else:
        parts = [f"{summary['runs_succeeded']} run(s) succeeded, {summary['runs_failed']} failed"]
        if summary["waiting_on"]:
            parts.append(f"{len(summary['waiting_on'])} batch(es) already have a queued or running run elsewhere")
        if settling:
            parts.append(_settling_message(settling) + ("" if wait_for_settling else " (not waited for: --no-wait)")
                         + "; run again then")
        summary["message"] = "; ".join(parts)
    if summary.get("mode") == "daemon":
        summary["message"] = f"{summary['daemon']}; its runs since this command started: " + summary["message"]
    if summary.get("sensor_errors"):
        summary["message"] = (f"{len(summary['sensor_errors'])} sensor evaluation(s) failed "
                              f"({', '.join(sorted(summary['sensor_errors']))}); " + summary["message"])
    return summary


def _evaluate_and_execute(instance, defs, sensor, summary, log, attempted: set | None = None) -> int:
    """Evaluate one sensor and execute what it requests. ``attempted`` holds the run keys this ``cosmos run``
    executed already: a run that failed is tried once per invocation, never in a loop."""
    attempted = set() if attempted is None else attempted
    cursor_key = f"cosmos-run/sensor-cursor/{sensor.name}"
    cursor = instance.run_storage.get_cursor_values({cursor_key}).get(cursor_key)
    with partition_loading_context(dynamic_partitions_store=instance):
        # The instance ref (as the daemon has) lets the tick validate partitions its own SensorResult adds.
        with dg.build_sensor_context(
            instance=instance, instance_ref=instance.get_ref(), cursor=cursor, definitions=defs, resources=defs.resources
        ) as context:
            try:
                tick = sensor.evaluate_tick(context)
            except Exception as error:  # one broken sensor must not stop the others; it is reported
                message = f"{error.__class__.__name__}: {error}"
                log(f"{sensor.name}: evaluation failed: {message}")
                summary.setdefault("sensor_errors", {})[sensor.name] = message[:2000]
                return 0
    for request in tick.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            new = [k for k in dict.fromkeys(request.partition_keys)
                   if not instance.has_dynamic_partition(request.partitions_def_name, k)]
            if new:  # as the daemon does: a key already there (or listed twice) is no error
                instance.add_dynamic_partitions(request.partitions_def_name, new)
    executed = 0
    claims: dict = {}
    for request in tick.run_requests or []:
        if request.run_key and not _claim_run_key(instance, sensor.name, request.run_key, claims):
            # Another `cosmos run` on this home is checking or executing this key right now: its run is live.
            summary["waiting_on"].append({"partition": request.partition_key, "run_id": None, "status": "CLAIMED"})
            log(f"{sensor.name}: {request.run_key} is being run by another cosmos run; skipped")
            continue
        existing = _existing_run(instance, sensor.name, request.run_key) if request.run_key else None
        if existing is not None:
            if existing.status != DagsterRunStatus.SUCCESS:  # e.g. queued by the daemon of `cosmos demo`
                summary["waiting_on"].append(
                    {"partition": request.partition_key, "run_id": existing.run_id, "status": existing.status.value}
                )
            log(f"{sensor.name}: {request.run_key} already has run {existing.run_id[:8]} ({existing.status.value})")
            continue
        if request.run_key and (sensor.name, request.run_key) in attempted:
            log(f"{sensor.name}: {request.run_key} was tried in this run already; not again")
            continue
        attempted.add((sensor.name, request.run_key))
        job = defs.resolve_job_def(request.job_name or sensor.job_name)
        log(f"{sensor.name}: running {job.name} for {request.partition_key}")
        tags = {
            **request.tags,
            "dagster/sensor_name": sensor.name,
            LAUNCHED_BY_TAG: "cosmos run",
            PID_TAG: str(os.getpid()),
        }
        if request.run_key:
            tags["dagster/run_key"] = request.run_key
        # The sensor's plan (e.g. retraining_sensor's generation rounds) travels in the run config.
        run_config = {**dict(request.run_config or {}), "loggers": {"console": {"config": {"log_level": "INFO"}}}}
        _execute(instance, job, request.partition_key, tags, run_config, summary, log)
        executed += 1
    _release_claims(claims)
    if tick.cursor is not None and tick.cursor != cursor:
        instance.run_storage.set_cursor_values({cursor_key: tick.cursor})
    return executed


def _execute(instance, job, partition_key, tags: dict, run_config: dict, summary: dict, log) -> None:
    """Execute one run in this process and add it to the summary."""
    try:
        result = job.execute_in_process(instance=instance, partition_key=partition_key, tags=tags,
                                        raise_on_error=False, run_config=run_config)
    except Exception as error:  # a framework error in one run is that run's failure, not the command's
        log(f"{job.name} for {partition_key}: {error.__class__.__name__}: {error}")
        summary["runs"].append({"run_id": None, "job": job.name, "partition": partition_key, "status": "FAILURE",
                                "error": f"{error.__class__.__name__}: {str(error)[:500]}"})
        summary["runs_failed"] += 1
        return
    summary["runs"].append(
        {"run_id": result.run_id, "job": job.name, "partition": partition_key,
         "status": "SUCCESS" if result.success else "FAILURE"}
    )
    summary["runs_succeeded" if result.success else "runs_failed"] += 1
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        asset = materialization.asset_key.to_user_string()
        if materialization.partition is None:  # a whole-collection asset: its latest counts, not a sum
            summary["assets"][asset] = {}
        _merge_counts(summary["assets"].setdefault(asset, {}), materialization.metadata)


def recover_dead_runs(instance, defs, summary: dict, log, attempted: set) -> int:
    """Runs a ``cosmos run`` started and never finished because its process died (killed, out of disk): marked
    failed and executed again now, with the dead run's job, partition, run config and tags. Their sensor may
    never request them again (its cursor moved on when it requested them), so waiting for that would leave
    the loop stalled. A key claimed by another live ``cosmos run``, or with a successful or live run by now, is
    left alone; each run is tried once per invocation. Returns how many runs were executed."""
    dead = [run for run in instance.get_runs(filters=RunsFilter(statuses=list(LIVE_STATUSES),
                                                                 tags={LAUNCHED_BY_TAG: "cosmos run"}))
            if not _process_alive(run.tags.get(PID_TAG))]
    executed, claims = 0, {}
    for run in reversed(dead):  # oldest first
        sensor_name, run_key = run.tags.get("dagster/sensor_name", ""), run.tags.get("dagster/run_key")
        if run_key and not _claim_run_key(instance, sensor_name, run_key, claims):
            continue  # another `cosmos run` is on it (it will find the dead run and mark it)
        _mark_dead_run_failed(instance, run)
        log(f"run {run.run_id[:8]} ({run.job_name} for {run.tags.get('dagster/partition')}) died with its cosmos run "
            "process: marked failed")
        if (run_key and (sensor_name, run_key) in attempted) or (run_key and _existing_run(instance, sensor_name, run_key)):
            continue
        log(f"run {run.run_id[:8]}: executing it again")
        attempted.add((sensor_name, run_key))
        try:
            job = defs.resolve_job_def(run.job_name)
        except Exception as error:  # a job that no longer exists: the failure stays recorded
            log(f"run {run.run_id[:8]}: job {run.job_name} is not defined any more ({error.__class__.__name__})")
            continue
        tags = {k: v for k, v in run.tags.items() if not k.startswith("dagster/") or k in ("dagster/run_key", "dagster/sensor_name")}
        tags.update({PID_TAG: str(os.getpid()), RETRY_OF_TAG: run.run_id})
        _execute(instance, job, run.tags.get("dagster/partition"), tags, dict(run.run_config or {}), summary, log)
        executed += 1
    _release_claims(claims)
    return executed
