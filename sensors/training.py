"""retraining_sensor: enough new samples since the last checkpoint's dataset → one training run.
checkpoint_sensor: a new checkpoint (trained here, or dropped into checkpoint_inbox/) → its evaluation.

Both only decide: they read tables, the instance and the inbox, and return run requests with the plan in the
run config. Writing the training snapshot and copying an inbox checkpoint into the store happen in the runs
(``training_dataset``, ``inbox_checkpoint``), with logs, retries and lineage.
"""

import json

import dagster as dg

from cosmos_assets.common.drop_zone import error_class, settled_folders
from cosmos_assets.curation.dataset_assets import dataset_job
from cosmos_assets.training import registry
from cosmos_assets.training.assets import (
    checked_accepted_partitions, checkpoint_inbox_job, evaluation_job, plan_training_mix, training_job, training_runs,
)
from cosmos_assets.training.datasets import snapshot_samples
from resources import CosmosStorage
from resources.landing import LandingZoneSettings
from resources.retraining import RetrainingSettings


def last_trained_samples(storage: CosmosStorage, instance: dg.DagsterInstance) -> set[str]:
    records = instance.fetch_materializations(dg.AssetKey("generator_checkpoint"), limit=1).records
    if not records:
        return set()
    samples = snapshot_samples(storage.store, records[0].partition_key)
    return set(samples["sample_id"]) if samples is not None else set()


def dataset_run_in_flight(instance: dg.DagsterInstance) -> str | None:
    """The id of a queued or running ``dataset_job`` run (it rewrites ``curated_dataset``, which the mix reads), if any.
    Runs created but never submitted (NOT_STARTED) never move, so they do not count."""
    records = instance.get_run_records(dg.RunsFilter(job_name=dataset_job.name, statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]), limit=1)
    return records[0].dagster_run.run_id if records else None


@dg.sensor(job=training_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts a training run once enough samples (curated clips + accepted synthetic videos) are new "
                       "since the last checkpoint's dataset; the run key is the planned dataset version.")
def retraining_sensor(context: dg.SensorEvaluationContext, storage: CosmosStorage, retraining: RetrainingSettings):
    if busy := dataset_run_in_flight(context.instance):
        # The curated dataset is being rewritten: a mix planned now would not be the one the run finds.
        return dg.SkipReason(f"waiting for dataset_job run {busy[:8]} to finish before planning the training mix")
    rounds = checked_accepted_partitions(context.instance)
    plan = plan_training_mix(storage.store, retraining.mix(), rounds)
    if plan is None:
        return dg.SkipReason("no curated dataset yet")
    version, samples = plan
    new = set(samples["sample_id"]) - last_trained_samples(storage, context.instance)
    if len(new) < retraining.min_new_samples:
        return dg.SkipReason(f"{len(new)} new sample(s) since the last checkpoint; retraining at {retraining.min_new_samples}")
    # The run key is the dataset version: crossing the threshold with the same data triggers once. The rounds go
    # in the run config, so training_dataset plans the very mix decided on here (and refuses one that moved on).
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=version, partition_key=version, tags={"cosmos/new_samples": str(len(new))},
            run_config={"ops": {"training_dataset": {"config": {"generation_rounds": sorted(rounds)}}}})],
        dynamic_partitions_requests=[training_runs.build_add_request([version])],
    )


def _inbox_requests(context, storage: CosmosStorage, settle_seconds: float, seen: dict) -> tuple[list, list[str]]:
    """Run requests for settled inbox drops not seen before. A drop is looked at once per change (its identity is
    its name and newest modification time, remembered in the cursor); bad drops are logged once, with their class."""
    requests, keys = [], []
    for drop in settled_folders(storage.paths.checkpoint_inbox, settle_seconds):
        if drop.identity in seen:
            continue
        try:
            key = registry.inbox_checkpoint_key(drop.path)
        except Exception as error:  # noqa: BLE001 - INBOX_ERRORS and anything else: one bad drop never stalls the inbox
            seen[drop.identity] = f"{error_class(error)}: {error}"[:500]
            context.log.warning(f"checkpoint inbox: {drop.name!r} set aside: {seen[drop.identity]}")
            continue
        seen[drop.identity] = key
        if key in keys:  # the same adapter dropped twice in one tick: one checkpoint, one run
            continue
        keys.append(key)
        requests.append(dg.RunRequest(
            job_name=checkpoint_inbox_job.name, run_key=f"register-{key}", partition_key=key,
            tags={"cosmos/inbox_item": drop.name[:200]},
            run_config={"ops": {"inbox_checkpoint": {"config": {"inbox_item": drop.name}}}}))
    return requests, keys


@dg.sensor(jobs=[evaluation_job, checkpoint_inbox_job], minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Evaluates each new generator checkpoint against its base; a checkpoint dropped into "
                       "$COSMOS_HOME/checkpoint_inbox/<name>/ is registered, evaluated and promoted in one run.")
def checkpoint_sensor(context: dg.SensorEvaluationContext, storage: CosmosStorage, landing_zone: LandingZoneSettings):
    cursor = json.loads(context.cursor) if context.cursor else {}
    after, seen = cursor.get("after", 0), cursor.get("inbox", {})
    requests = []
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("generator_checkpoint"), after_storage_id=after), limit=100,
    ).records
    for record in records:
        requests.append(dg.RunRequest(job_name=evaluation_job.name, run_key=f"evaluate-{record.partition_key}",
                                      partition_key=record.partition_key))
        after = max(after, record.storage_id)
    inbox_requests, keys = _inbox_requests(context, storage, landing_zone.settle_seconds, seen)
    requests += inbox_requests
    cursor = json.dumps({"after": after, "inbox": seen})
    if not requests:
        return dg.SensorResult(skip_reason="no new checkpoint", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor,
                           dynamic_partitions_requests=[training_runs.build_add_request(keys)] if keys else [])
