"""text_to_image_sensor: a new prompt file in $COSMOS_HOME/prompt_inbox → one text-to-image round (a partition of
``generation_rounds`` named by the file's content, ``prompts-<sha256 prefix>``) → one ``text_to_image_job`` run.
With the ``text_to_image`` resource's ``dataset_rounds`` on, each new curated dataset version's round
(``round-<version>``, the video round's partition) gets a text-to-image run too.

It only decides: it lists and hashes dropped files and reads the instance; reading the prompts and everything
after happens in the run. The same file dropped twice (under any name) is one round.
"""

import json

import dagster as dg

from cosmos_assets.common.drop_zone import hash_dropped_file, scan_drop_zone
from cosmos_assets.common.files import display_name
from cosmos_assets.synthetic.assets import generation_rounds
from cosmos_assets.text_to_image.assets import text_to_image_job
from cosmos_assets.text_to_image.prompts import MAX_PROMPT_FILE_BYTES, PROMPT_FILE_SUFFIXES, prompt_inbox, prompt_partition
from resources import CosmosStorage
from resources.text_to_image import TextToImageSettings
from sensors.generation_round import dataset_rounds_since

DATASET_RUN_PREFIX = "t2i-"  # run key of a dataset round's image run: the video run of that round has the bare key


def _prompt_file_requests(context, storage: CosmosStorage, settings: TextToImageSettings, previous: dict, known: set):
    """Run requests for settled prompt files not seen before; the cursor entry per file (size, mtime, digest)
    spares hashing an unchanged file again."""
    root = prompt_inbox(storage.home)
    files, requests = {}, []
    for entry in scan_drop_zone(root, settings.prompt_settle_seconds).settled:
        name, slot = display_name(entry.relative_path), entry.relative_path.hex()
        if not name.lower().endswith(PROMPT_FILE_SUFFIXES):
            continue
        cached = previous.get(slot)
        if entry.is_symlink or entry.size > MAX_PROMPT_FILE_BYTES:
            if cached is None:
                context.log.warning(f"{name}: not taken ({'a symlink' if entry.is_symlink else f'{entry.size} bytes, over {MAX_PROMPT_FILE_BYTES}'})")
            files[slot] = [entry.size, entry.mtime_ns, None]
            continue
        digest = cached[2] if cached and cached[:2] == [entry.size, entry.mtime_ns] and cached[2] else None
        if digest is None:
            try:
                digest = hash_dropped_file(root, entry.relative_path)
            except OSError as error:  # replaced or unreadable: the next tick looks again
                context.log.warning(f"{name}: cannot be read yet ({type(error).__name__}: {error})")
                continue
        files[slot] = [entry.size, entry.mtime_ns, digest]
        key = prompt_partition(digest)
        if key in known:
            continue
        known.add(key)
        requests.append(dg.RunRequest(run_key=key, partition_key=key, job_name=text_to_image_job.name, tags={"cosmos/prompt_file": name[:200]},
                                      run_config={"ops": {"image_prompts": {"config": {"prompt_file_hex": slot}}}}))
    return files, requests


def _dataset_round_requests(context, after: int | None) -> tuple[list[dg.RunRequest], list[str], int | None]:
    keys, last = dataset_rounds_since(context.instance, after)
    requests = [dg.RunRequest(run_key=DATASET_RUN_PREFIX + key, partition_key=key, job_name=text_to_image_job.name)
                for key in keys]
    return requests, keys, last if last is not None else after


@dg.sensor(job=text_to_image_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts a text-to-image round for each new, settled prompt file (JSONL or CSV) in "
                       "$COSMOS_HOME/prompt_inbox/, once per content; and, when the text_to_image resource's "
                       "dataset_rounds is on, for each new curated dataset version.")
def text_to_image_sensor(context: dg.SensorEvaluationContext, storage: CosmosStorage, text_to_image: TextToImageSettings):
    cursor = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(generation_rounds.name))
    files, requests = _prompt_file_requests(context, storage, text_to_image, cursor.get("files", {}), known)
    new_keys = [r.partition_key for r in requests]
    after = cursor.get("after")
    if text_to_image.dataset_rounds:
        dataset_requests, keys, after = _dataset_round_requests(context, after)
        requests += dataset_requests
        new_keys += [k for k in keys if k not in known]
    elif after is None:
        # Off: remember where the datasets stand, so switching it on later starts with new versions only.
        latest = context.instance.fetch_materializations(dg.AssetKey("curated_dataset"), limit=1).records
        after = latest[0].storage_id if latest else None
    return dg.SensorResult(
        run_requests=requests, cursor=json.dumps({"files": files, "after": after}, sort_keys=True),
        dynamic_partitions_requests=[generation_rounds.build_add_request(new_keys)] if new_keys else [],
    )
