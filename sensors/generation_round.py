"""generation_round_sensor: a new curated dataset version → one generation round (a dynamic partition of
``generation_rounds`` named after the version) → one ``generation_job`` run for it.

The run key is the round's partition key, itself named after the dataset version: re-materializing a dataset
with the same members (the same version) never starts a second round, across restarts too.
"""

import dagster as dg

from cosmos_assets.synthetic.assets import generation_job, generation_rounds, round_key

MAX_EVENTS_PER_TICK = 50


def dataset_rounds_since(instance: dg.DagsterInstance, after: int | None) -> tuple[list[str], int | None]:
    """The rounds of curated dataset versions materialized after the event ``after`` (versions with clips, each
    once), and the last event looked at (None when there was none); text_to_image_sensor follows them too."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("curated_dataset"), after_storage_id=after),
        limit=MAX_EVENTS_PER_TICK, ascending=True,
    ).records
    keys = []
    for record in records:
        metadata = record.asset_materialization.metadata
        version, clips = metadata.get("dataset_version"), metadata.get("clips")
        if version is not None and clips is not None and clips.value > 0:
            keys.append(round_key(version.value))
    return list(dict.fromkeys(keys)), (records[-1].storage_id if records else None)


@dg.sensor(job=generation_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts a generation round for each new curated dataset version.")
def generation_round_sensor(context: dg.SensorEvaluationContext):
    keys, last = dataset_rounds_since(context.instance, int(context.cursor) if context.cursor else None)
    if last is None:
        return dg.SkipReason("no new curated dataset version")
    cursor = str(last)
    if not keys:
        return dg.SensorResult(skip_reason="new dataset materializations hold no clips", cursor=cursor)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=key, partition_key=key) for key in keys],
        dynamic_partitions_requests=[generation_rounds.build_add_request(keys)],
        cursor=cursor,
    )
