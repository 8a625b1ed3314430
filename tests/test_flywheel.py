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


def test_the_checkpoint_pages_show_what_each_checkpoint_learned_from(flywheel):
    paths, first, _ = flywheel
    [key] = trained(first)
    instance = dg.DagsterInstance.from_config(str(paths.dagster_home))
    try:
        for asset in ("generator_checkpoint", "promoted_checkpoint"):
            [record] = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1).records
            metadata = record.asset_materialization.metadata
            lineage = checkpoint_lineage(LocalStore(paths.home), key)
            assert metadata["real_samples"].value == lineage["real_samples"] >= 2
            assert metadata["synthetic_samples"].value == lineage["synthetic_samples"] >= 1
            table_md = metadata["learned_from"].value
            for video in lineage["source_videos"]:  # each source video by name and a hash prefix `cosmos lineage` takes
                assert f"`{video['original_name']}`" in table_md and video["content_hash"][:16] in table_md
            synthetic = next(s for s in lineage["samples"] if s["kind"] == "synthetic")
            assert synthetic["sample_id"] in table_md and synthetic["critic"] in table_md
    finally:
        instance.dispose()


@pytest.mark.slow
def test_the_ui_shows_promoted_checkpoint_lineage_through_both_paths_and_its_samples(flywheel, tmp_path):
    import ui_support as ui

    if not ui.CHROMIUM.exists():
        pytest.skip(f"no chromium at {ui.CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    paths, first, _ = flywheel
    lineage = checkpoint_lineage(LocalStore(paths.home), registry.promoted(LocalStore(paths.home))["checkpoint"])
    server = ui.start_webserver(paths.home)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = ui.launch_chromium(playwright, tmp_path / "chromium-profile")
            try:
                page = browser.new_page()
                page.set_default_timeout(30_000)
                page.goto(f"{server.url}/assets/promoted_checkpoint?view=lineage&lineageScope=upstream&lineageDepth=12")
                ui.dismiss_community_dialog(page)
                for asset in ("training_dataset", "curated_dataset", "accepted_videos", "raw_videos"):
                    expect(page.get_by_text(asset, exact=True).first).to_be_visible(timeout=30_000)
                page.goto(f"{server.url}/assets/promoted_checkpoint")
                ui.dismiss_community_dialog(page, appear_timeout_ms=2_000)
                row = page.locator("tr").filter(has=page.get_by_text("learned_from", exact=True))
                expect(row).to_be_visible(timeout=60_000)
                row.get_by_text("[Show Markdown]").click()
                dialog = page.get_by_role("dialog")
                expect(dialog.get_by_text("Source videos")).to_be_visible()
                for video in lineage["source_videos"]:
                    expect(dialog.get_by_text(video["original_name"], exact=True).first).to_be_visible()
                page.screenshot(path=str(tmp_path / "promoted_checkpoint.png"), full_page=True)
            finally:
                browser.close()
    finally:
        outcome = ui.stop_process_group(server.process)
        assert not outcome["survivors"]


def _drop_checkpoint(paths, source_key, name):
    drop = paths.checkpoint_inbox / name
    shutil.copytree(paths.checkpoints / source_key, drop)
    manifest = json.loads((drop / registry.MANIFEST).read_text())
    (drop / registry.MANIFEST).write_text(json.dumps({**manifest, "note": "trained elsewhere"}))
    for path in [drop, *drop.iterdir()]:
        past = path.stat().st_mtime - 3600
        os.utime(path, (past, past))


class RefusingStore:
    """The real store for reading; any write raises (the sensors' specification: they only decide)."""

    WRITES = {"writing", "folder", "write_bytes", "write_json", "write_parquet", "commit", "remove", "staging_path"}

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        if name in self.WRITES:
            raise AssertionError(f"a sensor wrote to the artefact store ({name})")
        return getattr(self._store, name)


def test_every_sensor_only_decides_it_never_writes_to_the_store(flywheel, monkeypatch, samples):
    paths, first, _ = flywheel
    [key] = trained(first)
    monkeypatch.setenv("COSMOS_HOME", str(paths.home))
    monkeypatch.setenv("DAGSTER_HOME", str(paths.dagster_home))
    from cosmos_assets.definitions import build_definitions
    from resources import CosmosStorage

    class ReadOnlyStorage(CosmosStorage):
        @property
        def store(self):
            return RefusingStore(super().store)

    _drop_checkpoint(paths, key, "from-another-trainer")
    shutil.copy(samples / "asl_again.mkv", paths.landing / "asl_again.mkv")
    os.utime(paths.landing / "asl_again.mkv", (0, 1_000_000_000))
    defs = build_definitions("local")
    storage = ReadOnlyStorage(home=str(paths.home))
    before = sorted(p.relative_to(paths.home) for p in (paths.home / "artefacts").rglob("*"))
    instance = dg.DagsterInstance.from_config(str(paths.dagster_home))
    requested = {}
    try:
        for sensor in defs.sensors:
            with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=None, definitions=defs,
                                         resources={**defs.resources, "storage": storage}) as context:
                tick = sensor.evaluate_tick(context)  # from a fresh cursor: everything in the tables is new to it
            requested[sensor.name] = [r.job_name or sensor.job_name for r in tick.run_requests or []]
    finally:
        instance.dispose()
    assert sorted(p.relative_to(paths.home) for p in (paths.home / "artefacts").rglob("*")) == before
    assert "checkpoint_inbox_job" in requested["checkpoint_sensor"] and "evaluation_job" in requested["checkpoint_sensor"]
    assert set(requested["landing_zone_sensor"]) == {"curation_job"}  # the new file's batch (and, from a fresh cursor, the older ones)
    assert set(requested["retraining_sensor"]) <= {"training_job"}
    assert requested["curated_dataset_sensor"] == ["dataset_job"]


def test_a_checkpoint_dropped_into_the_inbox_is_registered_evaluated_and_promoted_in_a_run(flywheel):
    paths, first, _ = flywheel
    [key] = trained(first)
    _drop_checkpoint(paths, key, "external-run-7")
    summary = cosmos_run(paths, timeout=900)
    inbox_runs = [r for r in summary["runs"] if r["job"] == "checkpoint_inbox_job"]
    assert [r["status"] for r in inbox_runs] == ["SUCCESS"]
    external = inbox_runs[0]["partition"]
    assert external.startswith("inbox-")
    manifest = registry.verified_checkpoint(LocalStore(paths.home), external)
    assert manifest["inbox_name"] == "external-run-7" and manifest["note"] == "trained elsewhere"
    assert (paths.tables / "checkpoint_evaluation" / f"{external}.parquet").is_file()
    again = cosmos_run(paths, timeout=300)
    assert not [r for r in again["runs"] if r["job"] == "checkpoint_inbox_job"], "a drop is registered once"


def test_the_asset_graph_is_the_flywheel():
    from cosmos_assets.definitions import build_definitions

    graph = build_definitions("local").resolve_asset_graph()
    upstream = {k.to_user_string() for k in graph.upstream_key_iterator(dg.AssetKey("promoted_checkpoint"))}
    # The real path (curated clips) and the synthetic path (accepted videos) both reach the landed videos.
    assert {"training_dataset", "curated_dataset", "accepted_videos", "raw_videos", "inbox_checkpoint"} <= upstream
    training_parents = {k.to_user_string() for k in graph.get(dg.AssetKey("training_dataset")).parent_keys}
    assert training_parents == {"curated_dataset", "accepted_videos"}
    assert "curated_dataset" in {k.to_user_string() for k in graph.get(dg.AssetKey("checkpoint_evaluation")).parent_keys}


class RecordingStore:
    """The real store, noting which asset's code read which asset's table (the asset found on the call stack)."""

    def __init__(self, store, asset_names, reads):
        self._store, self._assets, self._reads = store, asset_names, reads

    def _note(self, table: str) -> None:
        import inspect

        reader = next((f.function for f in inspect.stack()[2:] if f.function in self._assets), None)
        if reader is not None:
            self._reads.setdefault(reader, set()).add(table)

    def read_table(self, asset, partition=None):
        self._note(asset)
        return self._store.read_table(asset, partition)

    def read_partitions(self, asset, only=None):
        self._note(asset)
        return self._store.read_partitions(asset, only)

    def table_partitions(self, asset):
        self._note(asset)
        return self._store.table_partitions(asset)

    def read_parquet(self, key, columns=None):
        if key.startswith("tables/"):
            self._note(key.split("/")[1])
        return self._store.read_parquet(key, columns)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_every_asset_declares_the_tables_it_reads(flywheel, monkeypatch):
    """Each job of the flywheel again, in process, on its latest partition, with a store that notes table reads:
    an asset reads its own table, or one of an asset it declares upstream, and nothing else."""
    paths, first, second = flywheel
    monkeypatch.setenv("COSMOS_HOME", str(paths.home))
    monkeypatch.setenv("DAGSTER_HOME", str(paths.dagster_home))
    from cosmos_assets.definitions import build_definitions
    from resources import CosmosStorage

    defs = build_definitions("local")
    graph = defs.resolve_asset_graph()
    names = {key.to_user_string() for key in graph.get_all_asset_keys()}
    functions = names | {"video_clips_and_scores"}  # the multi-asset's function
    reads: dict[str, set[str]] = {}

    class RecordingStorage(CosmosStorage):
        @property
        def store(self):
            return RecordingStore(super().store, functions, reads)

    from dagster._record import replace

    recording = replace(defs, resources={**defs.resources, "storage": RecordingStorage(home=str(paths.home))})
    runs = [r for r in first["runs"] + second["runs"] if r["status"] == "SUCCESS"]
    latest = {r["job"]: r["partition"] for r in runs}
    instance = dg.DagsterInstance.from_config(str(paths.dagster_home))
    try:
        for job_name in ("curation_job", "dataset_job", "generation_job", "critique_job", "training_job", "evaluation_job"):
            job = recording.resolve_job_def(job_name)
            result = job.execute_in_process(instance=instance, partition_key=latest.get(job_name), raise_on_error=False)
            assert result.success, job_name
    finally:
        instance.dispose()
    # (training_dataset reuses its immutable snapshot here, so it reads no table this time)
    assert {"checkpoint_evaluation", "generation_prompts", "deduplicated_clips"} <= reads.keys(), reads
    for reader, tables in reads.items():
        keys = [dg.AssetKey("video_clips"), dg.AssetKey("clip_scores")] if reader == "video_clips_and_scores" else [dg.AssetKey(reader)]
        declared = {reader} | {k.to_user_string() for key in keys for k in graph.get(key).parent_keys} | {k.to_user_string() for k in keys}
        assert tables <= declared, f"{reader} reads {sorted(tables - declared)} without declaring it"
