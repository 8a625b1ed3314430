"""retraining_sensor: enough new samples since the last checkpoint's dataset → one training run.
checkpoint_sensor: a new checkpoint (trained here, or dropped into checkpoint_inbox/) → its evaluation."""


import json

import dagster as dg
import polars as pl

from cosmos_assets.training import registry
from cosmos_assets.training.assets import evaluation_job, training_job, training_runs
from cosmos_assets.training.datasets import (
    MixConfig, plan_training_dataset, real_samples, snapshot_samples, synthetic_samples, write_snapshot,
)
from resources import CosmosStorage
from sensors.curated_dataset import latest_materialization_id
from sensors.landing_zone import LandingZoneSettings


class RetrainingSettings(dg.ConfigurableResource):
    synthetic_share: float = 0.5
    min_new_samples: int = 2

    def mix(self) -> MixConfig:
        return MixConfig(self.synthetic_share, self.min_new_samples)


def checked_accepted_partitions(instance: dg.DagsterInstance) -> set[str]:
    """Generation rounds whose latest accepted_videos came from a successful run: its blocking rate check
    passed. A round that failed the check never reaches a training mix."""
    latest: dict[str, object] = {}
    records = instance.fetch_materializations(dg.AssetKey("accepted_videos"), limit=10_000).records
    for record in records:  # newest first
        latest.setdefault(record.partition_key, record)
    passed = set()
    for partition, record in latest.items():
        run = instance.get_run_by_id(record.run_id)
        if run is not None and run.status == dg.DagsterRunStatus.SUCCESS:
            passed.add(partition)
    return passed


def plan_from_tables(storage: CosmosStorage, mix: MixConfig, instance: dg.DagsterInstance) -> tuple[str, pl.DataFrame] | None:
    store = storage.store
    curated = store.read_table("curated_dataset")
    if curated is None:
        return None
    real = real_samples(curated)
    rounds = checked_accepted_partitions(instance)
    accepted = store.read_partitions("accepted_videos", only=rounds)
    return plan_training_dataset(real, synthetic_samples(accepted, real), mix)


def last_trained_samples(storage: CosmosStorage, instance: dg.DagsterInstance) -> set[str]:
    records = instance.fetch_materializations(dg.AssetKey("generator_checkpoint"), limit=1).records
    if not records:
        return set()
    samples = snapshot_samples(storage.store, records[0].partition_key)
    return set(samples["sample_id"]) if samples is not None else set()


@dg.sensor(job=training_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def retraining_sensor(context: dg.SensorEvaluationContext, storage: CosmosStorage, retraining: RetrainingSettings):
    plan = plan_from_tables(storage, retraining.mix(), context.instance)
    if plan is None:
        return dg.SkipReason("no curated dataset yet")
    version, samples = plan
    new = set(samples["sample_id"]) - last_trained_samples(storage, context.instance)
    if len(new) < retraining.min_new_samples:
        return dg.SkipReason(f"{len(new)} new sample(s) since the last checkpoint; retraining at {retraining.min_new_samples}")
    write_snapshot(storage.store, version, samples, retraining.mix())
    # The partition exists before the request names it (Dagster validates requested keys).
    context.instance.add_dynamic_partitions(training_runs.name, [version])
    # The run key is the dataset version: crossing the threshold with the same data triggers once.
    return dg.RunRequest(run_key=version, partition_key=version, tags={"cosmos/new_samples": str(len(new))})


@dg.sensor(job=evaluation_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def checkpoint_sensor(context: dg.SensorEvaluationContext, storage: CosmosStorage, landing_zone: LandingZoneSettings):
    cursor = json.loads(context.cursor) if context.cursor else {"after": 0}
    requests = []
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("generator_checkpoint"), after_storage_id=cursor["after"]), limit=100,
    ).records
    for record in records:
        requests.append(dg.RunRequest(run_key=f"evaluate-{record.partition_key}", partition_key=record.partition_key))
        cursor["after"] = max(cursor["after"], record.storage_id)
    inbox = registry.scan_checkpoint_inbox(storage.paths.checkpoint_inbox, storage.store,
                                           storage.paths.tables / "checkpoint_inbox_ledger.json", landing_zone.settle_seconds)
    for rejected in inbox.rejected:
        context.log.warning(f"checkpoint inbox: {rejected['item']!r} set aside: {rejected['error_class']}: {rejected['error_message']}")
    if inbox.registered:
        context.instance.add_dynamic_partitions(training_runs.name, inbox.registered)
    for key in inbox.registered:
        requests.append(dg.RunRequest(run_key=f"evaluate-{key}", partition_key=key))
    if not requests:
        return dg.SensorResult(skip_reason="no new checkpoint", cursor=json.dumps(cursor))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))
