"""generation_round_sensor: a new curated dataset version → one generation round (a dynamic partition of
``generation_rounds`` named after the version) → one ``generation_job`` run for it.

The run key is the round's partition key, itself named after the dataset version: re-materializing a dataset
with the same members (the same version) never starts a second round, across restarts too.
"""

import dagster as dg

from cosmos_assets.synthetic.assets import generation_job, generation_rounds, round_key

MAX_EVENTS_PER_TICK = 50


@dg.sensor(job=generation_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts a generation round for each new curated dataset version.")
def generation_round_sensor(context: dg.SensorEvaluationContext):
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("curated_dataset"), after_storage_id=after),
        limit=MAX_EVENTS_PER_TICK, ascending=True,
    ).records
    if not records:
        return dg.SkipReason("no new curated dataset version")
    keys = []
    for record in records:
        metadata = record.asset_materialization.metadata
        version, clips = metadata.get("dataset_version"), metadata.get("clips")
        if version is not None and clips is not None and clips.value > 0:
            keys.append(round_key(version.value))
    keys = list(dict.fromkeys(keys))
    cursor = str(records[-1].storage_id)
    if not keys:
        return dg.SensorResult(skip_reason="new dataset materializations hold no clips", cursor=cursor)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=key, partition_key=key) for key in keys],
        dynamic_partitions_requests=[generation_rounds.build_add_request(keys)],
        cursor=cursor,
    )
