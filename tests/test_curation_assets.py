"""Dagster-level: the curation assets on one batch partition, with run config, re-run safety and landing cleanup."""

import os
import shutil

import dagster as dg
import polars as pl

from cosmos_assets.common.drop_zone import scan_drop_zone
from cosmos_assets.curation.landing import LandingLedger
from cosmos_assets.definitions import build_definitions

FIXED_STRIDE = {"method": "fixed_stride", "stride_s": 2.0, "min_clip_s": 1.0}


def make_batch(paths, instance):
    ledger = LandingLedger(paths.landing_ledger)
    (batch,) = ledger.plan_batches(paths.landing, scan_drop_zone(paths.landing, 0).settled, 50, 10**10)
    instance.add_dynamic_partitions("ingest_batches", [batch.key])
    return batch


def run_curation(instance, partition, raw_config=None, split_config=None, filter_config=None):
    job = build_definitions().resolve_job_def("curation_job")
    ops = {"video_clips_and_scores": {"config": split_config or FIXED_STRIDE}}
    if raw_config:
        ops["raw_videos"] = {"config": raw_config}
    if filter_config:
        ops["filtered_clips"] = {"config": filter_config}
    return job.execute_in_process(instance=instance, partition_key=partition, run_config={"ops": ops})


def test_rematerializing_a_batch_gives_the_same_clips_without_duplicates(cosmos_env, samples):
    shutil.copy(samples / "asl_walk.mkv", cosmos_env.landing / "walk.mkv")
    with dg.instance_for_test() as instance:
        batch = make_batch(cosmos_env, instance)
        first = run_curation(instance, batch.key)
        clips_first = pl.read_parquet(cosmos_env.tables / "video_clips" / f"{batch.key}.parquet")
        files_first = sorted(cosmos_env.clips.rglob("*.mp4"))
        second = run_curation(instance, batch.key)
        clips_second = pl.read_parquet(cosmos_env.tables / "video_clips" / f"{batch.key}.parquet")
        assert first.success and second.success
        assert clips_first.equals(clips_second)
        assert sorted(cosmos_env.clips.rglob("*.mp4")) == files_first
        # fixed stride of 2 s over a 2.97 s video: one 2 s clip, and the 0.97 s tail is dropped
        assert clips_first.select("start_frame", "end_frame", "split_method").rows() == [(0, 60, "fixed_stride")]


def test_thresholds_are_run_config_and_rejections_carry_reasons(cosmos_env, samples):
    shutil.copy(samples / "asl_walk.mkv", cosmos_env.landing / "walk.mkv")
    with dg.instance_for_test() as instance:
        batch = make_batch(cosmos_env, instance)
        result = run_curation(instance, batch.key, filter_config={"min_sharpness": 1e9})
        table = result.output_for_node("filtered_clips")
        assert table["kept"].to_list() == [False]
        assert table["rejection_reasons"].to_list()[0][0].startswith("blurry: sharpness")
        metadata = result.asset_materializations_for_node("filtered_clips")[0].metadata
        assert metadata["rejections_by_reason"].data == {"blurry": 1}


def test_landed_files_are_removed_only_once_recorded_when_asked(cosmos_env, samples):
    shutil.copy(samples / "asl_walk.mkv", cosmos_env.landing / "walk.mkv")
    (cosmos_env.landing / "broken.mp4").write_text("not a video")
    with dg.instance_for_test() as instance:
        batch = make_batch(cosmos_env, instance)
        late = cosmos_env.landing / "arrived_later.mp4"
        shutil.copy(samples / "asl_book.mkv", late)  # not part of the batch: must stay
        result = run_curation(instance, batch.key, raw_config={"remove_from_landing": True})
        assert result.success
        raw = result.output_for_node("raw_videos")
        assert sorted(raw["status"].to_list()) == ["ok", "rejected"]
        assert sorted(p.name for p in cosmos_env.landing.rglob("*") if p.is_file()) == ["arrived_later.mp4"]
        # the rejected file's bytes are kept in the raw store, so nothing is lost
        rejected = raw.filter(pl.col("status") == "rejected").row(0, named=True)
        assert rejected["error_class"] == "NotAVideo" and open(rejected["raw_path"]).read() == "not a video"


def test_file_names_show_verbatim_in_ui_tables_never_as_markdown():
    from cosmos_assets.common.pictures import markdown_table

    hostile = "x](http://evil.example/a.png) ![y](http://evil.example/b.png)\n| injected | row |"
    rendered = markdown_table([{"landing_name": hostile, "width": 640}], ["landing_name", "width"])
    row = rendered.splitlines()[2]
    assert row.startswith("| `") and row.count("`") == 2 and "\n" not in row.strip()
    assert "\\| injected \\| row \\|" in row and row.endswith("| 640 |")


def test_other_transcode_settings_make_other_files_and_keep_the_first(cosmos_env, samples):
    shutil.copy(samples / "asl_walk.mkv", cosmos_env.landing / "walk.mkv")
    with dg.instance_for_test() as instance:
        batch = make_batch(cosmos_env, instance)
        first = run_curation(instance, batch.key).output_for_node("video_clips_and_scores", "video_clips")
        second = run_curation(instance, batch.key, split_config={**FIXED_STRIDE, "max_width": 320, "max_height": 240})
        smaller = second.output_for_node("video_clips_and_scores", "video_clips")
        assert first["clip_id"].to_list() == smaller["clip_id"].to_list()  # same clip, same id
        assert first["path"].to_list() != smaller["path"].to_list()
        assert smaller["width"].to_list() == [320] and first["width"].to_list() == [640]
        assert all(os.path.exists(p) for p in first["path"].to_list() + smaller["path"].to_list())
