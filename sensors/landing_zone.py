"""``landing_zone_sensor``: new settled files in ``$COSMOS_HOME/landing`` → one curation run per batch."""


import json

import dagster as dg

from cosmos_assets.curation.assets import curation_job, ingest_batches
from cosmos_assets.common.drop_zone import scan_drop_zone
from cosmos_assets.curation.landing import LandingLedger
from cosmos_assets.curation.scenes import hold_back_unsettled_scenes
from resources import CosmosStorage
from resources.landing import LandingZoneSettings


def evaluate_landing_zone(storage: CosmosStorage, settings: LandingZoneSettings, cursor: str | None):
    """One evaluation, shared by the daemon's sensor and ``cosmos run``.

    Returns (batches to request, new cursor, files still settling). Batches are written to the ledger
    before they are requested; the cursor only says which ledger batches were already requested, so a
    crash between the two re-requests them and the run key (the batch key) keeps that to one run.
    """
    paths = storage.paths
    paths.landing.mkdir(parents=True, exist_ok=True)
    ledger = LandingLedger(paths.landing_ledger)
    scan = scan_drop_zone(paths.landing, settings.settle_seconds)
    ledger.plan_batches(
        paths.landing,
        hold_back_unsettled_scenes(scan),  # a scene folder is batched once all of it has settled
        max_files=settings.max_files_per_batch,
        max_bytes=settings.max_bytes_per_batch,
        max_hash_bytes=settings.max_hash_bytes_per_tick,
        first_batch_files=settings.first_batch_files,
        unreadable_after_s=max(settings.settle_seconds, 30.0),  # a read error for longer is recorded, not retried unseen
    )
    last_requested = json.loads(cursor)["last_requested_batch"] if cursor else 0
    batches = ledger.batches_after(last_requested)
    new_cursor = json.dumps({"last_requested_batch": max([last_requested] + [b.sequence for b in batches])})
    return batches, new_cursor, len(scan.unsettled)


@dg.sensor(
    job=curation_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Groups new, settled landing-zone files into an ingest batch and starts its curation run.",
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, storage: CosmosStorage, landing_zone: LandingZoneSettings):
    batches, cursor, settling = evaluate_landing_zone(storage, landing_zone, context.cursor)
    if not batches:
        context.update_cursor(cursor)
        return dg.SkipReason(
            f"{settling} file(s) still settling" if settling else "no new files in the landing zone"
        )
    keys = [batch.key for batch in batches]
    # Added here as well as requested below, so the run requests validate in any evaluator
    # (the daemon applies the request; `cosmos run` and tests evaluate the tick directly).
    context.instance.add_dynamic_partitions(ingest_batches.name, keys)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=batch.key,
                partition_key=batch.key,
                tags={"cosmos/batch_files": str(len(batch.members)), "cosmos/batch_bytes": str(batch.total_bytes)},
            )
            for batch in batches
        ],
        dynamic_partitions_requests=[ingest_batches.build_add_request(keys)],
        cursor=cursor,
    )
