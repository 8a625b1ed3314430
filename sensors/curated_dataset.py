"""curated_dataset_sensor: new clip embeddings anywhere in the collection → one de-duplication and
dataset run. Several batches finishing close together are covered by one run."""


import dagster as dg

from cosmos_assets.curation.dataset_assets import dataset_job


def latest_materialization_id(instance: dg.DagsterInstance, asset: str) -> int | None:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
    return records[0].storage_id if records else None


@dg.sensor(job=dataset_job, minimum_interval_seconds=10, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Rebuilds the de-duplicated clips and the curated dataset once new clip embeddings land "
                       "(several batches finishing together share one run).")
def curated_dataset_sensor(context: dg.SensorEvaluationContext):
    latest = latest_materialization_id(context.instance, "clip_embeddings")
    if latest is None or str(latest) == context.cursor:
        return dg.SkipReason("no new clip embeddings since the last dataset run")
    context.update_cursor(str(latest))
    # The run key names the newest embeddings event: the same event never starts two runs.
    return dg.RunRequest(run_key=f"clip-embeddings-{latest}")
