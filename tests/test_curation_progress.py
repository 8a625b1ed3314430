"""Partial results: each video's clips show up on `video_clips` as soon as that video is split, before the
step's table, with progress through the batch."""

import shutil

import dagster as dg
import polars as pl

from cosmos_assets.common.drop_zone import scan_drop_zone
from cosmos_assets.curation.landing import LandingLedger
from cosmos_assets.curation.pipeline import SplitProgress
from cosmos_assets.definitions import build_definitions


def test_each_video_is_observed_with_its_clips_before_the_batch_is_materialized(cosmos_env, samples):
    for name in ("asl_book.mkv", "asl_again.mkv"):
        shutil.copy(samples / name, cosmos_env.landing / name)
    with dg.instance_for_test() as instance:
        (batch,) = LandingLedger(cosmos_env.landing_ledger).plan_batches(
            cosmos_env.landing, scan_drop_zone(cosmos_env.landing, 0).settled, 50, 10**10)
        instance.add_dynamic_partitions("ingest_batches", [batch.key])
        job = build_definitions().resolve_job_def("curation_job")
        result = job.execute_in_process(
            instance=instance, partition_key=batch.key,
            run_config={"ops": {"video_clips_and_scores": {"config": {"method": "fixed_stride", "stride_s": 1.0, "min_clip_s": 0.5}}}},
        )
        assert result.success
        observations = instance.fetch_observations(dg.AssetKey("video_clips"), limit=10, ascending=True).records
        (materialization,) = instance.fetch_materializations(dg.AssetKey("video_clips"), limit=10).records
        clips = pl.read_parquet(cosmos_env.tables / "video_clips" / f"{batch.key}.parquet")

    assert [o.partition_key for o in observations] == [batch.key, batch.key]
    assert all(o.storage_id < materialization.storage_id for o in observations)  # shown before the table exists
    seen = [o.asset_observation.metadata for o in observations]
    # smallest file first: asl_again (2.6 s) before asl_book (3.7 s)
    assert [m["source_name"].value for m in seen] == ["asl_again.mkv", "asl_book.mkv"]
    assert [m["videos_done"].value for m in seen] == [1, 2] and {m["videos_in_batch"].value for m in seen} == {2}
    for metadata in seen:
        name = metadata["source_name"].value
        assert metadata["clips"].value == clips.filter(pl.col("source_name") == name).height > 0
        assert "data:image/jpeg;base64," in metadata["contact_sheet"].value  # that video's thumbnails
    assert seen[0]["footage_done_s"].value < seen[1]["footage_done_s"].value == seen[1]["footage_in_batch_s"].value
    assert "[1/2] 'asl_again.mkv'" in observations[0].asset_observation.description


def test_progress_estimates_what_is_left_from_the_pace_so_far():
    videos = [{"landing_name": "a.mp4", "duration_s": 10.0}, {"landing_name": "b.mp4", "duration_s": 30.0}]
    progress = SplitProgress(videos)
    line = progress.video_done(videos[0], clips=3, seconds=5.0)
    assert line == "[1/2] 'a.mp4': 3 clips in 5.0 s; 10 of 40 s of footage split, about 15 s to go"
    assert progress.video_done(videos[1], clips=1, seconds=12.0).endswith("40 of 40 s of footage split")
