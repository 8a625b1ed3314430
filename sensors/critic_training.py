"""critic_labels_sensor: a new label file in the label inbox, or a curated dataset version without self-supervised
labels → one ``critic_labels`` run each (a partition of ``label_drops``).
critic_training_sensor: enough labels new since the last critic training run → ``critic_training_job``.

Both only decide: they read the inbox, the instance and tables, and return run requests and the partitions they
add. Copying a label file into the store, making variant videos and training happen in the runs.

A label file's partition is its content hash (``file-<sha256 prefix>``): the same file landed under two names, or
again later, is one partition and is never counted twice.
"""

import hashlib
import json

import dagster as dg

from cosmos_assets.common.drop_zone import hash_dropped_file, scan_drop_zone
from cosmos_assets.common.files import display_name
from cosmos_assets.critic_training.assets import (
    LABEL_SUFFIXES, MAX_LABEL_FILE_BYTES, critic_labels_job, critic_training_job, critic_training_runs, label_drops,
    label_partition_for_dataset, label_partition_for_file,
)
from resources import CosmosStorage
from resources.critic_training import CriticTrainingSettings


def _latest_dataset_version(instance: dg.DagsterInstance) -> tuple[str, int] | None:
    records = instance.fetch_materializations(dg.AssetKey("curated_dataset"), limit=1).records
    if not records:
        return None
    metadata = records[0].asset_materialization.metadata
    version = metadata.get("dataset_version")
    clips = metadata.get("clips")
    return (version.value, clips.value if clips else 0) if version else None


@dg.sensor(job=critic_labels_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Takes each new, settled label file in $COSMOS_HOME/label_inbox/ (JSONL, CSV, VideoPhy-2 CSV, "
                       "multiple-choice VQA or Cosmos RL conversations) into a critic_labels run, once per content; and, "
                       "when self-supervised labels are on, each new curated dataset version.")
def critic_labels_sensor(context: dg.SensorEvaluationContext, storage: CosmosStorage, critic_training: CriticTrainingSettings):
    root = storage.paths.label_inbox
    known = set(context.instance.get_dynamic_partitions(label_drops.name))
    # The cursor remembers each file's (size, mtime) and content hash, so an unchanged file is not hashed again.
    previous = json.loads(context.cursor) if context.cursor else {}
    cursor, requests, new_keys = {}, [], []
    for entry in scan_drop_zone(root, critic_training.label_settle_seconds).settled:
        name = display_name(entry.relative_path)
        if not entry.relative_path.lower().endswith(LABEL_SUFFIXES):
            continue  # videos the labels name may sit beside them
        if entry.is_symlink or entry.size > MAX_LABEL_FILE_BYTES:
            if entry.relative_path.hex() not in previous:
                context.log.warning(f"{name}: not taken ({'a symlink' if entry.is_symlink else f'{entry.size} bytes, over {MAX_LABEL_FILE_BYTES}'})")
            cursor[entry.relative_path.hex()] = [entry.size, entry.mtime_ns, None]
            continue
        cached = previous.get(entry.relative_path.hex())
        if cached and cached[:2] == [entry.size, entry.mtime_ns] and cached[2]:
            digest = cached[2]
        else:
            try:
                digest = hash_dropped_file(root, entry.relative_path)
            except OSError as error:  # replaced or unreadable: the next tick looks again
                context.log.warning(f"{name}: cannot be read yet ({type(error).__name__}: {error})")
                continue
        cursor[entry.relative_path.hex()] = [entry.size, entry.mtime_ns, digest]
        key = label_partition_for_file(digest)
        if key in known or key in new_keys:
            if cached is None:
                context.log.info(f"{name}: the same content as an earlier label file ({key}); not taken twice")
            continue
        new_keys.append(key)
        requests.append(dg.RunRequest(run_key=key, partition_key=key, job_name=critic_labels_job.name,
                                      run_config={"ops": {"critic_labels": {"config": {"label_file_hex": entry.relative_path.hex()}}}}))
    if critic_training.self_supervised and (latest := _latest_dataset_version(context.instance)):
        version, clips = latest
        key = label_partition_for_dataset(version)
        if clips and key not in known:
            new_keys.append(key)
            requests.append(dg.RunRequest(run_key=key, partition_key=key, job_name=critic_labels_job.name))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True),
                           dynamic_partitions_requests=[label_drops.build_add_request(new_keys)] if new_keys else [])


def labels_ready(storage: CosmosStorage, instance: dg.DagsterInstance) -> tuple[list[str], int]:
    """(label partitions materialized, labels among them not in the last critic training set)."""
    partitions = sorted(instance.get_materialized_partitions(dg.AssetKey("critic_labels")))
    if not partitions:
        return [], 0
    labels = storage.store.read_partitions("critic_labels", set(partitions))
    ok = set(labels.filter(labels["error_class"].is_null())["label_id"]) if labels.height else set()
    records = instance.fetch_materializations(dg.AssetKey("critic_training_set"), limit=1).records
    trained: set[str] = set()
    if records:
        last = storage.store.read_partitions("critic_training_set", {records[0].partition_key})
        trained = set(last["label_id"]) if last.height else set()
    return partitions, len(ok - trained)


@dg.sensor(job=critic_training_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts critic training (training set, checkpoint, evaluation against the base, promotion behind "
                       "a blocking check) once enough labels are new since the last run; the run key names the label "
                       "partitions it learns from.")
def critic_training_sensor(context: dg.SensorEvaluationContext, storage: CosmosStorage, critic_training: CriticTrainingSettings):
    partitions, new = labels_ready(storage, context.instance)
    if new < critic_training.min_new_labels:
        return dg.SkipReason(f"{new} new label(s) since the last critic training run; training at {critic_training.min_new_labels}")
    key = "critic-" + hashlib.sha256("\n".join(partitions).encode()).hexdigest()[:12]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=key, partition_key=key, tags={"cosmos/new_labels": str(new)},
                                    run_config={"ops": {"critic_training_set": {"config": {"label_partitions": partitions}}}})],
        dynamic_partitions_requests=[critic_training_runs.build_add_request([key])],
    )
