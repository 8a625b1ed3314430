"""Helpers for tests/test_ui.py: a real ``cosmos demo`` server, its GraphQL API, files, a browser.

Nothing here is a fixture; test_ui.py holds the fixtures and the specifications.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# `cosmos demo` loads `-m cosmos_assets.definitions`: the location is named after the module and
# the Definitions object becomes the implicit `__repository__`.
LOCATION = "cosmos_assets.definitions"
REPOSITORY = "__repository__"
SENSOR = "landing_zone_sensor"
JOB = "curation_job"


# --------------------------------------------------------------------------------------------
# The demo server: `cosmos demo` in its own process group
# --------------------------------------------------------------------------------------------


@dataclass
class DemoServer:
    process: subprocess.Popen
    port: int
    home: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def pgid(self) -> int:
        return self.process.pid  # start_new_session=True: the child leads its own group

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        return graphql(self.url, query, variables, timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def demo_environment(home: Path, settle_seconds: float) -> dict[str, str]:
    """The environment a user would have: our own COSMOS_HOME, and DAGSTER_HOME left for
    `cosmos demo` to derive ($COSMOS_HOME/dagster)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMOS_", "DAGSTER_"))}
    env.update(
        COSMOS_HOME=str(home),
        COSMOS_SETTLE_SECONDS=str(settle_seconds),
        COSMOS_PROFILE="local",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_cosmos_demo(home: Path, settle_seconds: float = 1, ready_timeout: float = 180) -> DemoServer:
    """Start `cosmos demo` (it execs `dagster dev`: webserver + daemon) and wait for its GraphQL."""
    port = free_port()
    log_path = home.parent / "cosmos_demo.log"
    cosmos = Path(sys.executable).with_name("cosmos")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(cosmos), "demo", "--host", "127.0.0.1", "--port", str(port)],
            env=demo_environment(home, settle_seconds),
            cwd=home.parent,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so it can be stopped as a whole
        )
    server = DemoServer(process, port, home, log_path)
    try:
        wait_until(
            lambda: _answers_graphql(server),
            timeout=ready_timeout,
            interval=0.5,
            what=f"GraphQL at {server.url}/graphql",
            on_timeout=server.log_tail,
        )
    except BaseException:
        stop_process_group(server.process)
        raise
    return server


def start_webserver(home: Path, ready_timeout: float = 180) -> DemoServer:
    """The Dagster UI alone (no daemon: nothing new runs) over an existing COSMOS_HOME, in its own process group."""
    port = free_port()
    log_path = home.parent / "webserver.log"
    env = {**demo_environment(home, settle_seconds=10), "DAGSTER_HOME": str(home / "dagster")}
    webserver = Path(sys.executable).with_name("dagster-webserver")
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(webserver), "-h", "127.0.0.1", "-p", str(port), "-m", LOCATION], env=env,
                                   cwd=home.parent, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = DemoServer(process, port, home, log_path)
    try:
        wait_until(lambda: _answers_graphql(server), timeout=ready_timeout, interval=0.5,
                   what=f"GraphQL at {server.url}/graphql", on_timeout=server.log_tail)
    except BaseException:
        stop_process_group(server.process)
        raise
    return server


def _answers_graphql(server: DemoServer) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(
            f"cosmos demo exited with {server.process.returncode} before serving:\n{server.log_tail()}"
        )
    try:
        return "version" in server.graphql("{ version }", timeout=5)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def stop_process_group(process: subprocess.Popen, term_timeout: float = 30, kill_timeout: float = 15) -> dict:
    """SIGTERM the whole group, SIGKILL whatever is left after ``term_timeout``.

    Returns {"needed_sigkill": [...commands alive after SIGTERM...], "survivors": [...alive at the end...]}.
    """
    pgid = process.pid
    _signal_group(pgid, signal.SIGTERM)
    needed_kill = [_describe(pid) for pid in _wait_group_gone(process, pgid, term_timeout)]
    if needed_kill:
        _signal_group(pgid, signal.SIGKILL)
    survivors = [_describe(pid) for pid in _wait_group_gone(process, pgid, kill_timeout)]
    return {"needed_sigkill": needed_kill, "survivors": survivors}


def _describe(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = "?"
    return f"{pid}: {command[:160]}"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_group_gone(process: subprocess.Popen, pgid: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            process.wait(timeout=0.2)  # reap our direct child (the group leader)
        except subprocess.TimeoutExpired:
            pass
        alive = live_processes_in_group(pgid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.3)


def live_processes_in_group(pgid: int) -> list[int]:
    """Pids of processes in group ``pgid`` that are still running (zombies are dead: they only
    wait to be reaped, which is their parent's business, not a survivor)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_line = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        fields = stat_line[stat_line.rfind(")") + 2 :].split()
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state not in ("Z", "X"):
            alive.append(int(entry))
    return alive


# --------------------------------------------------------------------------------------------
# GraphQL
# --------------------------------------------------------------------------------------------


def graphql(base_url: str, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.loads(response.read())
    if body.get("errors"):
        raise AssertionError(f"GraphQL errors: {body['errors']}")
    return body["data"]


RUNS_QUERY = """
query CurationRuns($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status startTime endTime tags { key value } } }
    ... on PythonError { message }
  }
}
"""


def curation_runs(server: DemoServer) -> list[dict]:
    """Every curation_job run, newest first, each with its `partition` lifted out of the tags."""
    result = server.graphql(RUNS_QUERY, {"filter": {"pipelineName": JOB}})["runsOrError"]
    assert result["__typename"] == "Runs", result
    runs = result["results"]
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        run["tags"] = tags
        run["partition"] = tags.get("dagster/partition")
    return runs


FAILED_STATUSES = {"FAILURE", "CANCELED", "CANCELING"}


def assert_no_failed_run(server: DemoServer, runs: list[dict]) -> None:
    failed = [r for r in runs if r["status"] in FAILED_STATUSES]
    assert not failed, f"curation run(s) failed: {failed}\n{server.log_tail()}"


MATERIALIZATIONS_QUERY = """
query Materializations($assetKey: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $assetKey) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions) {
        runId
        partition
        timestamp
        metadataEntries {
          __typename
          label
          ... on MarkdownMetadataEntry { mdStr }
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}
"""


def materializations(server: DemoServer, asset: str, partition: str | None = None) -> list[dict]:
    """Materializations of ``asset`` (optionally of one partition), each with `metadata` as a dict
    label → value (markdown as its string, ints as int)."""
    variables = {"assetKey": {"path": [asset]}, "partitions": [partition] if partition else None}
    result = server.graphql(MATERIALIZATIONS_QUERY, variables)["assetOrError"]
    if result["__typename"] != "Asset":
        return []  # AssetNotFoundError: never materialized yet
    events = result["assetMaterializations"]
    for event in events:
        event["metadata"] = {
            entry["label"]: entry.get("mdStr", entry.get("intValue", entry.get("text")))
            for entry in event["metadataEntries"]
        }
    return events


SENSOR_TICKS_QUERY = """
query SensorTicks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 20) { id status timestamp runIds } } }
  }
}
"""


def sensor_ticks(server: DemoServer) -> list[dict]:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": SENSOR}
    result = server.graphql(SENSOR_TICKS_QUERY, {"selector": selector})["sensorOrError"]
    assert result["__typename"] == "Sensor", result
    return result["sensorState"]["ticks"]


# --------------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------------


def wait_until(
    check: Callable[[], T],
    timeout: float,
    interval: float = 2.0,
    what: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` until it returns something truthy (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def remux_to_mp4(source: Path, destination: Path) -> None:
    """Copy the video stream of ``source`` into an MP4 container (no re-encode): the same
    pictures, different bytes."""
    import av

    with av.open(str(source)) as reader, av.open(str(destination), "w", format="mp4") as writer:
        in_stream = reader.streams.video[0]
        out_stream = writer.add_stream_from_template(in_stream)
        for packet in reader.demux(in_stream):
            if packet.size == 0:  # the demuxer's final flush packet (MKV leaves some dts unset: keep those)
                continue
            packet.stream = out_stream
            writer.mux(packet)


def land_atomically(destination: Path, write: Callable[[Path], None]) -> Path:
    """Write a file next to ``destination`` under a dot-name (which the landing zone ignores),
    then rename it into place, as an upload tool that renames on completion would."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.uploading")
    write(partial)
    os.replace(partial, destination)
    return destination


# --------------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------------


def launch_chromium(playwright, user_data_dir: Path):
    """A persistent context on Debian's chromium (Playwright's own download is not available)."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": 1400, "height": 1000},
    )


def dismiss_community_dialog(page, appear_timeout_ms: int = 10_000) -> None:
    """The Dagster UI on localhost greets a new instance with a "Join the Dagster community"
    dialog (after a 1 s delay) that covers the page; skip it as a user would."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    dialog = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
    try:
        dialog.get_by_role("button", name="Skip").click(timeout=appear_timeout_ms)
    except PlaywrightTimeout:
        return  # not shown (already dismissed on this instance)
    dialog.wait_for(state="hidden", timeout=10_000)
