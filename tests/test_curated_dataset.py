"""Curation, second half, end to end through `cosmos run`: captions, embeddings in LanceDB,
de-duplication over the whole collection, and a versioned dataset that Cosmos training reads."""

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

import media_factory
from cosmos_assets.curation import captions as captioning
from cosmos_assets.curation.dataset import dataset_version, split_of
from test_cosmos_run import COSMOS, cosmos_run, curated_first


def reencode_smaller(source: Path, destination: Path) -> Path:
    """The same pictures at another resolution (and so another bitrate): other bytes, the same content."""
    frames = media_factory.read_rgb_frames(source, size=(640, 360))
    return media_factory.write_video(destination, frames, fps=25)


@pytest.fixture(scope="module")
def rounds(tmp_path_factory, samples):
    """Round 1 lands two different videos; round 2 a re-encoded copy of one and a byte-identical copy
    of the other under a new name."""
    from cosmos_assets.settings import CosmosPaths

    paths = CosmosPaths(tmp_path_factory.mktemp("dataset") / "home")
    paths.landing.mkdir(parents=True)
    shutil.copy(samples / "dashcam_solid_white_right.mp4", paths.landing / "dashcam.mp4")
    shutil.copy(samples / "bottle_conveyor.mp4", paths.landing / "conveyor.mp4")
    first = cosmos_run(paths)
    (paths.landing / "week2").mkdir()
    reencode_smaller(samples / "dashcam_solid_white_right.mp4", paths.landing / "week2" / "dashcam_small.mp4")
    shutil.copy(samples / "bottle_conveyor.mp4", paths.landing / "week2" / "conveyor_again.mp4")
    second = cosmos_run(paths)
    return paths, first, second


def dedup_table(paths) -> pl.DataFrame:
    return pl.read_parquet(paths.tables / "deduplicated_clips" / "all.parquet")


def test_each_batch_is_captioned_embedded_and_deduplicated_and_counted(rounds):
    _, first, second = rounds
    assert curated_first(first) and curated_first(second)
    kept_by_filter = first["assets"]["filtered_clips"]["kept"]
    assert first["assets"]["clip_captions"]["captioned"] == kept_by_filter
    assert first["assets"]["clip_embeddings"]["embedded"] == kept_by_filter
    assert first["assets"]["deduplicated_clips"]["kept"] == kept_by_filter
    assert second["assets"]["clip_embeddings"]["embedded"] == second["assets"]["filtered_clips"]["kept"] >= 1
    assert second["assets"]["deduplicated_clips"]["dropped_as_duplicates"] >= 1


def test_a_reencoded_copy_is_dropped_as_a_duplicate_of_last_weeks_original(rounds):
    paths, _, _ = rounds
    table = dedup_table(paths)
    originals = table.filter(pl.col("source_name") == "dashcam.mp4")
    copies = table.filter(pl.col("source_name") == "week2/dashcam_small.mp4")
    assert copies.height >= 1 and not copies["kept"].any() and originals["kept"].all()
    assert set(copies["duplicate_of"]) <= set(originals["clip_id"])
    # The same pictures at another size: the near-exact stage (aligned frame hashes) drops them and says why.
    assert copies["reason"].to_list() == ["near_exact"] * copies.height and copies["similarity"].min() > 0.9
    for row in copies.to_dicts():
        evidence = json.loads(row["evidence"])
        assert evidence["stage"] == "near_exact" and evidence["duplicate_of"] == row["duplicate_of"]
        assert evidence["matched_frames"] >= 0.7 and evidence["hamming"] <= 32
    assert table.filter(pl.col("source_name") == "conveyor.mp4")["kept"].all()  # a different video stays


def test_the_same_bytes_under_another_name_never_become_a_second_clip(rounds):
    paths, _, second = rounds
    batch = next(r["partition"] for r in second["runs"] if r["job"] == "curation_job")
    landed = pl.read_parquet(paths.tables / "raw_videos" / f"{batch}.parquet")
    assert landed["landing_name"].to_list() == ["week2/dashcam_small.mp4"]
    assert "week2/conveyor_again.mp4" not in dedup_table(paths)["source_name"].to_list()


def test_embeddings_live_in_lancedb_once_per_clip_with_their_models(rounds):
    paths, _, _ = rounds
    from cosmos_assets.curation.vector_store import ClipVectorStore

    store = ClipVectorStore(paths.lancedb)
    [name] = store.table_names()
    rows = store.read(name)
    assert rows["clip_id"].n_unique() == rows.height == dedup_table(paths).height
    assert set(rows["video_model"]) == {"efficientnet_lite0-imagenet"}
    assert set(rows["text_model"]) == {"sentence-transformers/all-MiniLM-L6-v2"}
    assert rows["caption"].str.starts_with(captioning.SIGNAL_LABEL).all()  # labelled: not a VLM caption
    instance = dg.DagsterInstance.from_config(str(paths.dagster_home))
    try:
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("deduplicated_clips"), "lancedb_unique_clip_ids")]
        )
        [execution] = check.values()
        assert execution.status.value == "SUCCEEDED"
    finally:
        instance.dispose()


def test_the_curated_dataset_is_versioned_split_and_exported_for_predict2_and_webdataset(rounds):
    paths, first, second = rounds
    members = dedup_table(paths).filter(pl.col("kept"))
    [root] = [p for p in paths.datasets.iterdir() if not p.name.startswith(".")]
    card = json.loads((root / "dataset_card.json").read_text())
    assert card["version"] == root.name and card["clips"] == members.height
    # Round 2 added only a duplicate: the same members, the same version, nothing new written.
    instance = dg.DagsterInstance.from_config(str(paths.dagster_home))
    try:
        events = instance.fetch_materializations(dg.AssetKey("curated_dataset"), limit=10).records
        versions = [e.asset_materialization.metadata["dataset_version"].value for e in events]
        written = [e.asset_materialization.metadata["newly_written"].value for e in events]
    finally:
        instance.dispose()
    assert versions == [root.name, root.name] and written == [False, True]
    exported = {p.stem for p in root.glob("*/videos/*.mp4")}
    assert exported == set(members["clip_id"])
    for video in root.glob("*/videos/*.mp4"):
        split = video.parent.parent.name
        assert split == split_of(video.stem, 0.1)
        assert (root / split / "metas" / f"{video.stem}.txt").read_text().strip()
    keys = set()
    for shard in root.glob("shards/*.tar"):
        with tarfile.open(shard) as tar:
            names = tar.getnames()
        keys |= {n.rsplit(".", 1)[0] for n in names}
        assert len(names) == 3 * len({n.rsplit(".", 1)[0] for n in names})  # mp4 + txt + json per clip
    assert keys == set(members["clip_id"])
    assert (root / "dataset_card.md").read_text().startswith(f"# Curated dataset {root.name}")


def test_semantic_search_finds_the_road_clip_for_a_road_query(rounds):
    paths, _, _ = rounds
    env = {**os.environ, "COSMOS_HOME": str(paths.home), "DAGSTER_HOME": str(paths.dagster_home)}
    result = subprocess.run([COSMOS, "search", "a trailer truck on the road", "--json"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    hits = json.loads(result.stdout)["hits"]
    kept = set(dedup_table(paths).filter(pl.col("kept"))["clip_id"])
    assert hits and {h["clip_id"] for h in hits} <= kept  # the dropped duplicate is never returned
    assert hits[0]["source_name"] == "dashcam.mp4" and Path(hits[0]["path"]).is_file()


def test_a_new_prompt_version_recaptions_without_resplitting_and_keeps_old_captions(rounds, monkeypatch):
    paths, first, _ = rounds
    from cosmos_assets.definitions import build_definitions

    batch = next(r["partition"] for r in first["runs"] if r["job"] == "curation_job")
    clip_files = {p: p.stat().st_mtime_ns for p in paths.clips.rglob("*.mp4")}
    monkeypatch.setenv("COSMOS_HOME", str(paths.home))  # restored after the test: never leak into later tests
    monkeypatch.setenv("DAGSTER_HOME", str(paths.dagster_home))
    defs = build_definitions("local")
    instance = dg.DagsterInstance.from_config(str(paths.dagster_home))
    config = {"ops": {"clip_captions": {"config": {"captioner": "vlm", "prompt_version": "v2", "prompt": "What happens?"}}}}
    try:
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey("clip_captions")})
        results = [job.execute_in_process(instance=instance, partition_key=batch, run_config=config) for _ in range(2)]
    finally:
        instance.dispose()
    captions = pl.read_parquet(paths.tables / "clip_captions" / f"{batch}.parquet")
    vlm_rows = captions.filter(pl.col("captioner").str.starts_with("vlm:"))
    assert set(captions["captioner"]) == {"signals:efficientnet_lite0-imagenet+motion", "vlm:tiny:vlm"}
    assert vlm_rows["prompt_version"].unique().to_list() == ["v2"] and vlm_rows["tiny_random"].all()
    assert set(vlm_rows["status"]) <= {"ok", "empty", "unparseable"}
    assert vlm_rows["clip_id"].n_unique() == captions.filter(~pl.col("captioner").str.starts_with("vlm:"))["clip_id"].n_unique()
    second = results[1].asset_materializations_for_node("clip_captions")[0].metadata
    assert second["captioned"].value == 0 and second["reused"].value == vlm_rows["clip_id"].n_unique()
    assert {p: p.stat().st_mtime_ns for p in paths.clips.rglob("*.mp4")} == clip_files  # nothing re-split


def test_caption_windows_follow_cosmos_curate():
    assert captioning.caption_windows(8.0, 30.0) == [captioning.CaptionWindow(0, 0.0, 8.0)]
    windows = captioning.caption_windows(20.0, 30.0)  # 256 frames at 30 fps = 8.533 s per window
    assert [w.index for w in windows] == [0, 1, 2] and windows[-1].end_s == 20.0
    assert captioning.caption_status("") == ("empty", "")
    assert captioning.caption_status("<think>hmm") == ("unparseable", "<think>hmm")
    assert captioning.caption_status("<think>x</think><answer>A road.</answer>") == ("ok", "A road.")
    assert captioning.prompt_id("v1", "a") != captioning.prompt_id("v1", "b")


def test_dataset_versions_depend_on_members_and_config_only():
    assert dataset_version(["b", "a"], {"x": 1}) == dataset_version(["a", "b"], {"x": 1})
    assert dataset_version(["a", "b"], {"x": 1}) != dataset_version(["a", "b"], {"x": 2})
    assert dataset_version(["a"], {"x": 1}) != dataset_version(["a", "b"], {"x": 1})
    assert {split_of(f"clip-{i}", 0.2) for i in range(50)} == {"train", "validation"}


def test_a_dataset_version_is_the_same_under_any_home_or_bucket(tmp_path, samples):
    """Issue 14.9: the version comes from the clips' content and recipe, never from where the store is."""
    from cosmos_assets.common.artefacts import LocalStore, ObjectStore, clip_key
    from cosmos_assets.curation.dataset import dataset_recipe

    ids = ["3f1c-clip", "9a0b-clip"]
    stores = [LocalStore(tmp_path / "home-a" / "artefacts"), LocalStore(tmp_path / "elsewhere" / "b" / "artefacts"),
              ObjectStore(f"memory://cosmos-{tmp_path.name}/prefix", tmp_path / "scratch")]

    def version_on(store, split_recipe="recipe01"):
        paths = []
        for clip_id, sample in zip(ids, ("dashcam_solid_white_right.mp4", "bottle_conveyor.mp4")):
            key = clip_key(clip_id, split_recipe)
            with store.writing(key) as tmp:
                shutil.copy(samples / sample, tmp)
            paths.append(store.ref(key))
        members = pl.DataFrame({"clip_id": ids, "path": paths, "prompt_id": ["p1", "p1"], "video_model": ["effnet", "effnet"]})
        return dataset_version(ids, dataset_recipe(store, members, {"validation_fraction": 0.1, "shard_max_clips": 1000}))

    versions = {version_on(store) for store in stores}
    assert len(versions) == 1  # two homes and a bucket: one version
    moved = LocalStore(tmp_path / "moved" / "artefacts")  # tables that still name the files under the old home
    members = pl.DataFrame({"clip_id": ids, "path": [stores[0].ref(clip_key(i, "recipe01")) for i in ids],
                            "prompt_id": ["p1", "p1"], "video_model": ["effnet", "effnet"]})
    assert dataset_version(ids, dataset_recipe(moved, members, {"validation_fraction": 0.1, "shard_max_clips": 1000})) in versions
    assert version_on(stores[0], split_recipe="recipe02") not in versions  # clips cut by another recipe: another version


def test_a_collection_with_no_clip_yet_makes_an_empty_dataset_not_a_failure(cosmos_env):
    """E.g. a first batch whose every file was rejected: the dataset job still succeeds, with zero clips."""
    from cosmos_assets.definitions import build_definitions

    defs = build_definitions("local")
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("dataset_job").execute_in_process(instance=instance)
    assert result.success
    metadata = result.asset_materializations_for_node("curated_dataset")[0].metadata
    assert metadata["clips"].value == 0


def test_clips_a_refiltered_batch_no_longer_keeps_leave_the_collection(tmp_path):
    """A stricter threshold re-materialized on a batch: the clips it drops leave LanceDB, so deduplicated_clips
    and the curated dataset no longer hold them."""
    import numpy as np

    from cosmos_assets.curation.vector_store import ClipVectorStore

    store = ClipVectorStore(tmp_path / "lancedb")
    rows = [{"clip_id": f"c{i}", "batch": "batch-1", "video_embedding": (np.ones(4, np.float32) * (i + 1)).tolist(),
             "text_embedding": np.ones(3, np.float32).tolist()} for i in range(3)]
    store.upsert("clips", rows, 4, 3)
    assert store.remove_batch_rows_except("clips", "batch-1", {"c0"}) == 2
    assert sorted(store.read("clips")["clip_id"]) == ["c0"]
    assert store.remove_batch_rows_except("clips", "batch-2", set()) == 0  # another batch's rows are not touched
