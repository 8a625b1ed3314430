"""Issue 14.1: a poison manifest (valid JSON nested deeper than Python's parser goes) beside a good drop, in the
synthetic inbox and in the checkpoint inbox. Each sensor tick is evaluated as the daemon would: it does not raise,
the good drop is taken, and the poison one is recorded with its error class. So is a drop whose reading fails in a
way nobody foresaw: one bad file never stalls an intake."""

import json
import shutil
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster._core.definitions.partitions.context import partition_loading_context

from conftest import age_file
from cosmos_assets.common.drop_zone import MAX_MANIFEST_BYTES, MAX_MANIFEST_DEPTH
from cosmos_assets.definitions import build_definitions
from cosmos_assets.synthetic import inbox as synthetic_inbox
from cosmos_assets.synthetic.inbox import InboxLedger
from cosmos_assets.training import registry
from test_training import write_adapter

POISON = "[" * 100_000 + "]" * 100_000  # valid JSON, far deeper than the recursion limit, well under 1 MiB


def evaluate(defs, instance, name: str, cursor=None):
    sensor = defs.resolve_sensor_def(name)
    with partition_loading_context(dynamic_partitions_store=instance):
        with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                     definitions=defs, resources=defs.resources) as context:
            return sensor.evaluate_tick(context)


@pytest.fixture
def world(cosmos_env):
    with dg.instance_for_test() as instance:
        yield cosmos_env, build_definitions(), instance


def test_the_bounds_are_what_the_readme_says():
    assert MAX_MANIFEST_BYTES == 1 << 20 and MAX_MANIFEST_DEPTH == 16
    assert len(POISON) < MAX_MANIFEST_BYTES


def _synthetic_drop(paths, samples, folder: str, manifest: str | None = None) -> None:
    drop = paths.synthetic_inbox / folder
    drop.mkdir(parents=True)
    shutil.copy(samples / "dashcam_solid_white_right.mp4", drop / "rain_0.mp4")
    (drop / "manifest.json").write_text(manifest if manifest is not None else json.dumps(
        {"generator": "acme-gen 3.1", "candidates": [
            {"file": "rain_0.mp4", "request_id": "r-17", "seed": 0, "source_clip_id": "c-1", "condition": "rain"}]}))
    for f in drop.iterdir():
        age_file(f, 3600)


def test_a_poison_manifest_in_the_synthetic_inbox_is_recorded_and_the_good_drop_is_taken(world, samples, monkeypatch):
    paths, defs, instance = world
    _synthetic_drop(paths, samples, "good")
    _synthetic_drop(paths, samples, "poison", manifest='{"candidates": ' + POISON + "}")
    _synthetic_drop(paths, samples, "surprise")
    real_parse = synthetic_inbox.parse_manifest

    def parse(data):  # the failure nobody foresaw, for one drop only
        if b'"r-99"' in data:
            raise RecursionError("maximum recursion depth exceeded")
        return real_parse(data)

    (paths.synthetic_inbox / "surprise" / "manifest.json").write_text(json.dumps(
        {"candidates": [{"file": "rain_0.mp4", "request_id": "r-99", "seed": 0, "source_clip_id": "c-1"}]}))
    age_file(paths.synthetic_inbox / "surprise" / "manifest.json", 3600)
    monkeypatch.setattr(synthetic_inbox, "parse_manifest", parse)

    tick = evaluate(defs, instance, "synthetic_batch_sensor")  # does not raise
    ledger = InboxLedger(paths.synthetic_inbox_ledger)
    batches = {ledger.batch(r.run_key).manifest_name.split("/")[0]: ledger.batch(r.run_key) for r in tick.run_requests}
    assert sorted(batches) == ["good", "poison", "surprise"], "every drop is taken, each exactly once"
    assert batches["good"].problem is None and batches["good"].manifest_bytes is not None
    assert batches["poison"].problem.startswith("ManifestTooLarge: ") and "16" in batches["poison"].problem
    assert batches["surprise"].problem.startswith("RecursionError: ")
    assert {r.job_name for r in tick.run_requests} == {"inbox_job"}
    again = evaluate(defs, instance, "synthetic_batch_sensor", tick.cursor)
    assert again.run_requests == [], "a recorded drop is not taken again"

    # The inbox_job run records the poison drop as one rejected row with that class (no candidate is made of it).
    from cosmos_assets.synthetic.assets import _ingest_inbox

    [row] = _ingest_inbox(SimpleNamespace(partition_key=batches["poison"].key), defs.resources["storage"], None)
    assert (row["status"], row["error_class"]) == ("rejected", "ManifestTooLarge")


def test_a_poison_manifest_in_the_checkpoint_inbox_is_recorded_and_the_good_drop_is_taken(world, monkeypatch):
    paths, defs, instance = world
    inbox = paths.checkpoint_inbox
    write_adapter(inbox / "good")
    write_adapter(inbox / "poison")
    (inbox / "poison" / registry.MANIFEST).write_text(POISON)
    write_adapter(inbox / "surprise", manifest={"kind": "predict2.5", "base_model": "tiny:predict2.5", "note": "r-99"})
    real_manifest = registry.read_manifest

    def read(path, what="the manifest"):  # the failure nobody foresaw, for one drop only
        if "surprise" in str(path):
            raise RecursionError("maximum recursion depth exceeded")
        return real_manifest(path, what)

    monkeypatch.setattr(registry, "read_manifest", read)
    for folder in inbox.iterdir():
        for f in [folder, *folder.iterdir()]:
            age_file(f, 3600)

    tick = evaluate(defs, instance, "checkpoint_sensor")  # does not raise
    [request] = tick.run_requests
    assert request.job_name == "checkpoint_inbox_job" and request.tags["cosmos/inbox_item"] == "good"
    assert request.partition_key == registry.inbox_checkpoint_key(inbox / "good")
    seen = json.loads(tick.cursor)["inbox"]
    recorded = {identity.split(":")[0]: value for identity, value in seen.items()}
    assert recorded["poison"].startswith("ManifestTooLarge: ") and "16 are read" in recorded["poison"]
    assert recorded["surprise"].startswith("RecursionError: ")
    again = evaluate(defs, instance, "checkpoint_sensor", tick.cursor)
    assert again.run_requests == [], "set aside until it changes"
