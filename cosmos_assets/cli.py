"""The ``cosmos`` command: ``demo`` (the UI on sample videos), ``run`` (headless), ``models``, ``paths``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from importlib import resources as package_files
from pathlib import Path

from cosmos_assets import quiet_dagster_warnings_in_children
from cosmos_assets.common.artefacts import OBJECT_STORE_ENV
from cosmos_assets.settings import (
    CosmosPaths, SettingsError, cosmos_home, cosmos_profile, ensure_local_instance, usable_home,
)

SAMPLE_VIDEOS = ("dashcam_solid_white_right.mp4", "bottle_conveyor.mp4", "asl_walk.mkv", "asl_book.mkv", "asl_again.mkv")
# Multi-camera scene folders (``curation.scenes``): landed as folders, the manifest last.
SAMPLE_SCENES = ("dashcam_rig",)


def _prepare_environment() -> CosmosPaths:
    """Resolve COSMOS_HOME and DAGSTER_HOME to absolute paths every child process will share."""
    cosmos_profile()  # an unknown COSMOS_PROFILE, or a home that is a file or read-only: one message (SettingsError)
    paths = CosmosPaths(usable_home(cosmos_home()))
    os.environ["COSMOS_HOME"] = str(paths.home)
    os.environ["DAGSTER_HOME"] = str(ensure_local_instance(paths))
    quiet_dagster_warnings_in_children()  # `dagster dev` and its processes: no warnings a user cannot act on
    # With an object store, artefacts and tables live there; the tables folder still holds the ledgers.
    local_artefacts = () if os.environ.get(OBJECT_STORE_ENV) else (paths.artefacts,)
    for folder in (paths.landing, paths.tables, *local_artefacts):
        folder.mkdir(parents=True, exist_ok=True)
    return paths


def _storage():
    """The `storage` resource the code location uses: the same store as the assets."""
    from cosmos_assets.definitions import build_definitions

    return build_definitions().resources["storage"]


def land_sample_videos(paths: CosmosPaths) -> list[Path]:
    """Copy the packaged sample videos into the landing zone; their attribution goes beside it."""
    target = paths.landing / "samples"
    target.mkdir(parents=True, exist_ok=True)
    samples = package_files.files("cosmos_assets") / "samples"
    (paths.home / "SAMPLES_ATTRIBUTION.md").write_text((samples / "ATTRIBUTION.md").read_text())
    landed = [_land_sample(samples / name, target / name) for name in SAMPLE_VIDEOS]
    for scene in SAMPLE_SCENES:
        (target / scene).mkdir(exist_ok=True)
        # The manifest last: the sensor never sees a scene whose views are not all there yet.
        names = sorted(f.name for f in (samples / scene).iterdir() if f.name != "scene.json") + ["scene.json"]
        landed += [_land_sample(samples / scene / name, target / scene / name) for name in names]
    return landed


def _land_sample(packaged, destination: Path) -> Path:
    if not destination.exists():
        with package_files.as_file(packaged) as source:
            tmp = destination.with_name(f".{destination.name}.copying")
            shutil.copyfile(source, tmp)
            os.replace(tmp, destination)  # appears whole: the sensor never sees a partial copy
    return destination


def _port_is_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return True
        except OSError:
            return False


def demo(args: argparse.Namespace) -> int:
    if not _port_is_free(args.host, args.port):
        # dagster dev waits forever on a busy port instead of failing; say so up front.
        print(f"cosmos demo: {args.host}:{args.port} is in use; pick another with --port", file=sys.stderr)
        return 2
    paths = _prepare_environment()
    os.environ.setdefault("COSMOS_SETTLE_SECONDS", "3")
    # Someone is watching: the smallest sample alone first (its clips after one short run), while the
    # other samples curate beside it on the other core (without a GPU the `gpu` pool admits a step per core).
    os.environ.setdefault("COSMOS_FIRST_BATCH_FILES", "1")
    land_sample_videos(paths)
    from cosmos_assets.headless import take_runner_lock_for_daemon

    # Held by `dagster dev` after the exec below (and so for the life of the daemon): `cosmos run` sees it and
    # waits for the daemon's runs instead of executing the same run keys beside it.
    # Kept in a name: an unreferenced file object would be closed (and the lock released) before the exec.
    runner_lock = take_runner_lock_for_daemon(os.environ["DAGSTER_HOME"], log=lambda line: print(f"cosmos demo: {line}", flush=True))
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-h", args.host, "-p", str(args.port), "-m", "cosmos_assets.definitions"]
    print(
        f"Cosmos flywheel demo (profile local)\n"
        f"  UI:            http://{args.host}:{args.port}\n"
        f"  landing zone:  {paths.landing}  (drop videos here, any folder depth)\n"
        f"  state:         {paths.home}\n"
        f"The landing_zone_sensor picks up the sample videos within seconds; watch Runs and the asset graph.\n",
        flush=True,
    )
    os.execv(command[0], command)
    runner_lock.close()  # not reached: the exec keeps the locked descriptor open in `dagster dev`
    return 0


def run(args: argparse.Namespace) -> int:
    _prepare_environment()
    from cosmos_assets.headless import run_until_idle

    summary = run_until_idle(wait_for_settling=not args.no_wait, log=None if args.json else print, max_wait_s=args.max_wait)
    if args.json:
        print(json.dumps(summary, indent=None, sort_keys=True))
    else:
        print(format_summary(summary))
    return run_exit_code(summary)


def run_exit_code(summary: dict) -> int:
    """1 when a run failed or a sensor could not be evaluated (its work silently not started), else 0.

    Files still settling are not an error: the summary says so and the next `cosmos run` takes them."""
    return 1 if summary["runs_failed"] or summary.get("sensor_errors") else 0


def format_summary(summary: dict) -> str:
    lines = []
    # A sensor that raised started nothing: say it first, not below a list of runs.
    for sensor, error in sorted(summary.get("sensor_errors", {}).items()):
        lines.append(f"ERROR: sensor {sensor} failed: {error.splitlines()[0] if error else ''}")
    if summary["nothing_new"]:
        return "\n".join(lines + ["Nothing new: no landed files to curate and no requested runs."])
    lines.append(summary["message"])
    for waiting in summary["waiting_on"]:
        run_id = (waiting["run_id"] or "not yet created")[:8]  # a key claimed by another `cosmos run` has no run yet
        lines.append(f"  {waiting['partition']}: run {run_id} is {waiting['status']} elsewhere")
    for run_info in summary["runs"]:
        run_id = (run_info["run_id"] or "none")[:8]
        lines.append(f"  {run_info['partition'] or run_info['job']}: {run_info['status']} (run {run_id})")
    for settling in summary.get("settling", []):
        lines.append(f"  settling in the {settling['folder']}: {settling['file']} (ready in {settling['ready_in_s']:.0f} s)")
    for asset, counts in summary["assets"].items():
        lines.append(f"  {asset}: {json.dumps(counts, sort_keys=True)}")
    return "\n".join(lines)


def show_paths(args: argparse.Namespace) -> int:
    paths = _prepare_environment()
    print(json.dumps({"home": str(paths.home), "landing": str(paths.landing), "dagster_home": str(paths.dagster_home),
                      "artefacts": str(paths.artefacts), "tables": str(paths.tables),
                      "object_store": os.environ.get(OBJECT_STORE_ENV) or None}, indent=2))
    return 0


def search(args: argparse.Namespace) -> int:
    """Semantic search over curated clips through the caption embeddings in LanceDB."""
    from cosmos_assets.curation.dataset_assets import vector_store
    from cosmos_assets.curation.vector_store import table_name
    from cosmos_assets.definitions import build_definitions

    _prepare_environment()
    resources = build_definitions().resources
    video, text = resources["embedders"].video(), resources["embedders"].text()
    store, name = vector_store(resources["storage"]), table_name(video.name, video.dim)
    if not store.exists(name):
        print(f"cosmos search: no embedded clips yet for {video.name} (run `cosmos run` first)", file=sys.stderr)
        return 1
    found = store.search_text(name, text.embed_texts([args.text])[0], limit=args.limit, where="kept = true")
    hits = [{"clip_id": r["clip_id"], "score": round(1.0 - r["_distance"], 4), "caption": r["caption"],
             "path": r["path"], "source_name": r["source_name"], "start_s": r["start_s"], "end_s": r["end_s"],
             "tiny_random": r["tiny_random"]} for r in found.to_dicts()]
    if args.json:
        print(json.dumps({"query": args.text, "text_model": text.name, "table": name, "hits": hits}, indent=2))
        return 0
    if not hits:
        print("no curated clips match")
    for hit in hits:
        print(f"{hit['score']:.3f}  {hit['clip_id']}  {hit['source_name']} [{hit['start_s']:.1f}-{hit['end_s']:.1f} s]\n"
              f"       {hit['caption']}\n       {hit['path']}")
    return 0


def show_lineage(args: argparse.Namespace) -> int:
    from cosmos_assets.training.lineage import LineageNotFound, lineage

    _prepare_environment()
    try:
        found = lineage(_storage().store, args.id)
    except LineageNotFound as error:
        print(f"cosmos lineage: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(found, indent=2, default=str))
        return 0
    if found["direction"] == "backward":
        print(f"checkpoint {found['checkpoint']}" + ("  [promoted]" if found["promoted"] else "")
              + ("  [tiny random weights]" if found.get("tiny_random") else ""))
        print(f"  base model: {found['base_model']} ({found['kind']}), {found['steps']} steps")
        print(f"  learned from dataset {found['dataset_version']}: {found['real_samples']} real + {found['synthetic_samples']} synthetic samples")
        for sample in found["samples"]:
            extra = (f"  request {sample.get('request_id', '')[:8]} seed {sample.get('seed')} by {sample.get('generator')}, "
                     f"critic {sample.get('critic')} score {sample.get('score')}") if sample["kind"] == "synthetic" else ""
            print(f"    {sample['kind']:9} {sample['sample_id']}  ← clip {sample.get('source_clip_id')}{extra}")
        print("  source videos:")
        for video in found["source_videos"]:
            print(f"    {video['content_hash'][:16]}  {video['original_name']!r}  batch {video['ingest_batch']}")
    else:
        print(f"{found['kind']} {found['id']}" + (f" ({found['original_name']!r}, batch {found['ingest_batch']})" if found["original_name"] else ""))
        if found.get("scene_id"):
            print(f"  scene {found['scene_id']}, camera {found['camera']}"
                  + (f", scene clip {found['scene_clip_id']}" if found.get("scene_clip_id") else ""))
        if found.get("candidate"):
            candidate = found["candidate"]
            print(f"  round {candidate['round']}, request {candidate['request_id'][:8]} seed {candidate['seed']} "
                  f"({candidate['condition']}): {'accepted' if candidate['accepted'] else candidate['decision']}")
        print(f"  clips: {', '.join(found['clips']) or 'none'}")
        for dataset in found["datasets"]:
            print(f"  dataset {dataset['dataset_version']}: {len(dataset['samples'])} sample(s) ({', '.join(dataset['kinds'])})")
        print(f"  checkpoints: {', '.join(found['checkpoints']) or 'none'}"
              + ("  (the promoted checkpoint uses it)" if found["promoted_checkpoint_uses_it"] else ""))
    return 0


def build_tiny_models(args: argparse.Namespace) -> int:
    from cosmos_assets.models.tiny import build_all_tiny

    paths = CosmosPaths(usable_home(cosmos_home()))
    built = build_all_tiny(paths.models, rebuild=args.rebuild, names=args.only or None)
    for name, path in built.items():
        print(f"{name}: {path}  (tiny random weights: outputs are meaningless)")
    return 0


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse prints the message and exits 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number (at least 1)")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cosmos", description="The Cosmos data flywheel on Dagster.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="land the sample videos and start the Dagster UI with sensors")
    demo_parser.add_argument("--host", default="127.0.0.1", help="address the UI binds to (default 127.0.0.1)")
    demo_parser.add_argument("--port", type=int, default=3000,
                             help="port of the UI (default 3000); pick another when 3000 is in use")
    demo_parser.set_defaults(handler=demo)
    run_parser = commands.add_parser("run", help="evaluate the sensors and materialize what they request, headless")
    run_parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    run_parser.add_argument("--no-wait", action="store_true",
                            help="do not wait for files that are still settling; report them (status 'settling') instead")
    run_parser.add_argument("--max-wait", type=float, default=None, metavar="SECONDS",
                            help="wait at most this long for settling files (default: 3 settle times + 5 s); beside a "
                                 "live daemon, for its runs (default: an hour)")
    run_parser.set_defaults(handler=run)
    search_parser = commands.add_parser("search", help="semantic search over curated clips by text")
    search_parser.add_argument("text")
    search_parser.add_argument("--limit", type=_positive_int, default=10, help="most clips to show (default 10)")
    search_parser.add_argument("--json", action="store_true")
    search_parser.set_defaults(handler=search)
    lineage_parser = commands.add_parser("lineage", help="where a checkpoint, clip or video came from / went")
    lineage_parser.add_argument("id", nargs="?", help="checkpoint, raw video content hash, clip id or sample id, or a "
                                                      "unique prefix of one (at least 4 characters; default: the "
                                                      "promoted checkpoint, else the newest)")
    lineage_parser.add_argument("--json", action="store_true")
    lineage_parser.set_defaults(handler=show_lineage)
    models_parser = commands.add_parser("models", help="model checkpoints")
    model_commands = models_parser.add_subparsers(dest="models_command", required=True)
    tiny_parser = model_commands.add_parser(
        "build-tiny", help="build tiny random-weight checkpoints of every role's real architecture under $COSMOS_HOME/models")
    tiny_parser.add_argument("--rebuild", action="store_true", help="rebuild even if present")
    tiny_parser.add_argument("--only", action="append", metavar="NAME", help="vlm, siglip, predict2, predict2.5, transfer2.5")
    tiny_parser.set_defaults(handler=build_tiny_models)
    paths_parser = commands.add_parser("paths", help="print where state lives")
    paths_parser.set_defaults(handler=show_paths)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SettingsError as error:  # the user's setting, not our bug: what to do, without a traceback
        print(f"cosmos {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
