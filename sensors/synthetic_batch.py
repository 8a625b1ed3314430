"""synthetic_batch_sensor: new synthetic candidates → critique and rejection sampling of exactly that batch,
exactly once.

Two sources of batches:

- a new ``synthetic_videos`` materialization of a generation round: one ``critique_job`` run for that partition,
  with the run key ``critique-<partition>-<batch digest>`` (the digest names the set of candidates, so the
  same candidates are never critiqued twice, and a round regenerated with other candidates is a new batch);
- a new manifest in ``$COSMOS_HOME/synthetic_inbox/`` (see ``cosmos_assets.synthetic.inbox``): a new
  ``inbox-NNNNNN-<digest>`` partition and one ``inbox_job`` run (take the files, critique, select), with the
  batch key as run key. The ledger writes a batch before it is requested, and the cursor only says which
  batches were requested, so a crash in between re-requests them and the run key keeps that to one run.
"""

import json

import dagster as dg

from cosmos_assets.synthetic.assets import critique_job, generation_rounds, inbox_job, is_inbox_batch
from cosmos_assets.synthetic.inbox import InboxLedger
from resources import CosmosStorage
from resources.synthetic import SyntheticSettings

MAX_EVENTS_PER_TICK = 100


def critique_run_key(partition: str, digest: str) -> str:
    return f"critique-{partition}-{digest[:12]}"


def _generated_batches(instance: dg.DagsterInstance, after: int | None):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("synthetic_videos"), after_storage_id=after),
        limit=MAX_EVENTS_PER_TICK, ascending=True,
    ).records
    requests = []
    for record in records:
        partition = record.partition_key
        metadata = record.asset_materialization.metadata
        # Inbox batches are critiqued in their own inbox_job run; empty rounds have nothing to critique.
        if partition is None or is_inbox_batch(partition) or not metadata.get("candidates") or not metadata["candidates"].value:
            continue
        key = critique_run_key(partition, metadata["batch_digest"].value)
        requests.append(dg.RunRequest(job_name=critique_job.name, partition_key=partition, run_key=key,
                                      tags={"cosmos/candidates": str(metadata["candidates"].value)}))
    return requests, (records[-1].storage_id if records else after)


@dg.sensor(jobs=[critique_job, inbox_job], minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Critique and rejection sampling for each new batch of candidates: a generated round or an inbox drop.")
def synthetic_batch_sensor(context: dg.SensorEvaluationContext, storage: CosmosStorage, synthetic: SyntheticSettings):
    state = json.loads(context.cursor) if context.cursor else {}
    requests, last_event = _generated_batches(context.instance, state.get("synthetic_videos"))

    paths = storage.paths
    paths.synthetic_inbox.mkdir(parents=True, exist_ok=True)
    ledger = InboxLedger(paths.synthetic_inbox_ledger)
    ledger.plan_batches(paths.synthetic_inbox, synthetic.inbox_settle_seconds, synthetic.inbox_missing_grace_seconds)
    batches = ledger.batches_after(state.get("inbox_batch", 0))
    keys = [batch.key for batch in batches]
    requests += [dg.RunRequest(job_name=inbox_job.name, partition_key=batch.key, run_key=batch.key,
                               tags={"cosmos/manifest": batch.manifest_name[:200]}) for batch in batches]
    cursor = json.dumps({"synthetic_videos": last_event,
                         "inbox_batch": max([state.get("inbox_batch", 0)] + [b.sequence for b in batches])})
    if not requests:
        return dg.SensorResult(skip_reason="no new synthetic candidates", cursor=cursor)
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[generation_rounds.build_add_request(keys)] if keys else [],
        cursor=cursor,
    )
