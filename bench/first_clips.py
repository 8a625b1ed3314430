"""Time to first result of `cosmos demo`: from the UI coming up to the first clips, on a fresh COSMOS_HOME.

    .venv/bin/python bench/first_clips.py [--tree DIR] [--label NAME] [--timeout S] [--keep]
    .venv/bin/python bench/first_clips.py --baseline-tree OLD_DIR [--rounds N]   # old and new, alternating

Starts `cosmos demo` (which execs `dagster dev`: webserver, daemon, code server) in its own process
group on a free port, waits until the UI answers, then polls the Dagster instance once a second for:

- first clips shown: the first `video_clips` event of any kind (a per-video observation with that
  video's contact sheet, where the code emits one, or the step's materialization);
- first `video_clips` materialization: the first ingest batch's clips table is done;
- all clips: every sample video is in a materialized `video_clips` partition;
- all curated: every curation run of those batches succeeded (captions and embeddings included).

Every time is printed in seconds from the UI answering (and from the start of the command). The
process group is killed at the end, whatever happened. `--tree DIR` runs another checkout of the project
(e.g. `git archive <commit> | tar -x -C DIR`) through PYTHONPATH, which comes before the editable
install, so old and new behaviour can be measured with the same venv and script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE_COUNT = 5  # cosmos demo lands the five packaged sample videos


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ui_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class InstanceProbe:
    """Reads the demo's instance and landing ledger; opened once the demo has written them."""

    def __init__(self, home: Path):
        self.home = home
        self.instance = None

    def _open(self) -> bool:
        if self.instance is None and (self.home / "dagster" / "dagster.yaml").exists():
            import dagster as dg

            self.instance = dg.DagsterInstance.from_config(str(self.home / "dagster"))
        return self.instance is not None

    def batches(self) -> dict[str, int]:
        from cosmos_assets.curation.landing import LandingLedger

        ledger_path = self.home / "tables" / "landing_ledger.sqlite"
        if not ledger_path.exists():
            return {}
        return {batch.key: len(batch.members) for batch in LandingLedger(ledger_path).batches_after(0)}

    def first_event(self, kind: str) -> float | None:
        import dagster as dg

        if not self._open():
            return None
        fetch = self.instance.fetch_materializations if kind == "materialization" else self.instance.fetch_observations
        records = fetch(dg.AssetKey("video_clips"), limit=1, ascending=True).records
        return records[0].timestamp if records else None

    def materialized_partitions(self, asset: str) -> dict[str, float]:
        import dagster as dg

        if not self._open():
            return {}
        records = self.instance.fetch_materializations(dg.AssetKey(asset), limit=1000, ascending=True).records
        return {r.partition_key: r.timestamp for r in records if r.partition_key}

    def curation_runs(self) -> dict[str, str]:
        import dagster as dg

        if not self._open():
            return {}
        runs = self.instance.get_runs(filters=dg.RunsFilter(job_name="curation_job"))
        return {run.tags.get("dagster/partition", run.run_id): run.status.value for run in runs}


def measure(tree: Path | None, timeout: float, keep: bool) -> dict:
    home = Path(tempfile.mkdtemp(prefix="first_clips_"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "COSMOS_SETTLE_SECONDS")}
    env.update(COSMOS_HOME=str(home), COSMOS_PROFILE="local")
    if tree:
        env["PYTHONPATH"] = str(tree) + os.pathsep + env.get("PYTHONPATH", "")
    cosmos = Path(sys.executable).with_name("cosmos")
    log = open(home / "demo.log", "wb")
    start = time.time()
    process = subprocess.Popen([str(cosmos), "demo", "--port", str(port)], env=env, cwd=tree or REPO,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    probe = InstanceProbe(home)
    result: dict = {"home": str(home), "port": port, "tree": str(tree) if tree else str(REPO)}
    try:
        while not ui_answers(port):
            if process.poll() is not None:
                raise RuntimeError(f"cosmos demo exited with {process.returncode}; see {home / 'demo.log'}")
            if time.time() - start > timeout:
                raise TimeoutError("the UI never answered")
            time.sleep(0.5)
        ui_up = time.time()
        result["ui_up_s_from_start"] = round(ui_up - start, 1)
        first_shown = first_materialized = all_clips = all_curated = None
        while time.time() - ui_up < timeout:
            if first_shown is None:
                seen = [t for t in (probe.first_event("observation"), probe.first_event("materialization")) if t]
                first_shown = min(seen) if seen else None
            if first_materialized is None:
                first_materialized = probe.first_event("materialization")
            batches = probe.batches()
            landed_all = sum(batches.values()) >= SAMPLE_COUNT
            clips = probe.materialized_partitions("video_clips")
            if all_clips is None and landed_all and set(batches) <= set(clips):
                all_clips = max(clips[key] for key in batches)
            runs = probe.curation_runs()
            failed = {key: status for key, status in runs.items() if status in ("FAILURE", "CANCELED")}
            if failed:
                result["failed_runs"] = failed
                break
            if landed_all and set(batches) <= set(runs) and all(runs[key] == "SUCCESS" for key in batches):
                all_curated = max(probe.materialized_partitions("clip_embeddings").get(key, time.time()) for key in batches)
                break
            time.sleep(1.0)
        result["batches"] = probe.batches()
        for name, moment in (("first_clips_shown", first_shown), ("first_video_clips_materialized", first_materialized),
                             ("all_clips", all_clips), ("all_curated", all_curated)):
            result[f"{name}_s_from_ui"] = round(moment - ui_up, 1) if moment else None
            result[f"{name}_s_from_start"] = round(moment - start, 1) if moment else None
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # dagster dev's children may outlive it briefly; the group is theirs too.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        if probe.instance is not None:
            probe.instance.dispose()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    return result


COLUMNS = ("ui_up_s_from_start", "first_clips_shown_s_from_ui", "first_video_clips_materialized_s_from_ui",
           "all_clips_s_from_ui", "all_curated_s_from_ui")


def side_by_side(results: list[dict]) -> str:
    lines = ["| run | batches | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for r in results:
        lines.append(f"| {r['label']} | {len(r.get('batches', {}))} | " + " | ".join(str(r.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> int:
    # Started in the background (nohup ... &), SIGINT is ignored; on SIGTERM leave through the finally
    # blocks so the demo's process group is killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, help="run this checkout of the project instead of the repository")
    parser.add_argument("--label", default="this tree")
    parser.add_argument("--baseline-tree", type=Path, help="also run this checkout (the old behaviour), alternating with --tree")
    parser.add_argument("--rounds", type=int, default=1, help="with --baseline-tree: how many old/new pairs")
    parser.add_argument("--timeout", type=float, default=900, help="give up this many seconds after the UI is up")
    parser.add_argument("--keep", action="store_true", help="keep the COSMOS_HOME (and demo.log) for inspection")
    args = parser.parse_args()
    runs = [(args.label, args.tree)]
    if args.baseline_tree:
        runs = [("baseline", args.baseline_tree), (args.label, args.tree)] * args.rounds
    results = []
    for label, tree in runs:
        result = {"label": label, "cpus": os.cpu_count(), "load_before": round(os.getloadavg()[0], 1),
                  **measure(tree.resolve() if tree else None, args.timeout, args.keep)}
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    print(side_by_side(results))
    return 0 if all(r.get("all_curated_s_from_ui") is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
