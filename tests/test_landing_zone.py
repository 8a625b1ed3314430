"""The landing zone and its sensor: settle time, content identity, batching, exactly-once, hostile names."""

import json
import os
import shutil
import time

import dagster as dg
import pytest
from dagster._core.definitions.partitions.context import partition_loading_context

from conftest import age_file
from cosmos_assets.common.drop_zone import scan_drop_zone
from cosmos_assets.curation.landing import LandingLedger
from cosmos_assets.definitions import build_definitions


def land(paths, relative: str, data: bytes, age_s: float = 3600):
    path = paths.landing / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age_s:
        age_file(path, age_s)
    return path


def evaluate(defs, instance, cursor=None):
    """One sensor tick, as the daemon would run it."""
    sensor = defs.resolve_sensor_def("landing_zone_sensor")
    with partition_loading_context(dynamic_partitions_store=instance):
        with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources) as context:
            return sensor.evaluate_tick(context)


@pytest.fixture
def sensor_world(cosmos_env, monkeypatch):
    monkeypatch.setenv("COSMOS_SETTLE_SECONDS", "30")
    with dg.instance_for_test() as instance:
        yield cosmos_env, build_definitions(), instance


def test_a_file_is_taken_only_once_it_has_settled(sensor_world):
    paths, defs, instance = sensor_world
    fresh = land(paths, "upload.mp4", b"still being written", age_s=0)
    tick = evaluate(defs, instance)
    assert tick.run_requests == [] and "1 file(s) still settling" in tick.skip_message
    age_file(fresh, 60)  # the upload finished a minute ago
    assert len(evaluate(defs, instance, tick.cursor).run_requests) == 1


def test_in_progress_upload_names_and_dotfiles_are_ignored(sensor_world):
    paths, defs, instance = sensor_world
    land(paths, "big.mp4.part", b"x")
    land(paths, ".sync-tmp", b"x")
    land(paths, "video.mp4.crdownload", b"x")
    tick = evaluate(defs, instance)
    assert tick.run_requests == [] and tick.skip_message == "no new files in the landing zone"


def test_new_files_become_one_partition_with_its_key_as_run_key(sensor_world):
    paths, defs, instance = sensor_world
    land(paths, "a.mp4", b"first")
    land(paths, "site/2026/cam 1/b.mkv", b"second")  # any folder depth
    tick = evaluate(defs, instance)
    (request,) = tick.run_requests
    assert request.run_key == request.partition_key and request.partition_key.startswith("batch-000001-")
    assert instance.get_dynamic_partitions("ingest_batches") == [request.partition_key]
    batch = LandingLedger(paths.landing_ledger).batch(request.partition_key)
    assert sorted(m.name for m in batch.members) == ["a.mp4", "site/2026/cam 1/b.mkv"]


def test_same_bytes_under_two_names_are_ingested_once(sensor_world):
    paths, defs, instance = sensor_world
    land(paths, "one.mp4", b"identical bytes")
    land(paths, "copies/two.mp4", b"identical bytes")
    tick = evaluate(defs, instance)
    batch = LandingLedger(paths.landing_ledger).batch(tick.run_requests[0].partition_key)
    assert len(batch.members) == 1
    land(paths, "later/three.mp4", b"identical bytes")  # and again next week
    assert evaluate(defs, instance, tick.cursor).run_requests == []


def test_batches_are_bounded_by_file_count_and_bytes(cosmos_env):
    ledger = LandingLedger(cosmos_env.landing_ledger)
    for index in range(5):
        land(cosmos_env, f"f{index}.mp4", bytes([index]) * 100)
    settled = scan_drop_zone(cosmos_env.landing, settle_seconds=30).settled
    batches = ledger.plan_batches(cosmos_env.landing, settled, max_files=2, max_bytes=10_000)
    assert [len(b.members) for b in batches] == [2, 2, 1]
    for index in range(5, 9):
        land(cosmos_env, f"f{index}.mp4", bytes([index]) * 100)
    settled = scan_drop_zone(cosmos_env.landing, settle_seconds=30).settled
    batches = ledger.plan_batches(cosmos_env.landing, settled, max_files=10, max_bytes=250)
    assert [len(b.members) for b in batches] == [2, 2]
    assert len({b.key for b in ledger.batches_after(0)}) == 5


def test_exactly_once_across_a_restart_of_the_sensor(sensor_world):
    paths, defs, instance = sensor_world
    land(paths, "a.mp4", b"content a")
    first = evaluate(defs, instance)
    # The daemon restarts and loses the cursor: the batch is requested again under the same run
    # key (which Dagster drops), and no new batch is made for files already batched.
    after_restart = evaluate(build_definitions(), instance, cursor=None)
    assert [r.run_key for r in after_restart.run_requests] == [r.run_key for r in first.run_requests]
    assert len(LandingLedger(paths.landing_ledger).batches_after(0)) == 1
    # With its cursor, the sensor requests nothing more.
    assert evaluate(defs, instance, first.cursor).run_requests == []
    assert json.loads(first.cursor) == {"last_requested_batch": 1}


def test_a_changed_file_is_ingested_again_as_new_content(sensor_world):
    paths, defs, instance = sensor_world
    path = land(paths, "a.mp4", b"version 1")
    first = evaluate(defs, instance)
    path.write_bytes(b"version 2, re-uploaded")
    age_file(path, 3600)
    second = evaluate(defs, instance, first.cursor)
    assert len(second.run_requests) == 1 and second.run_requests[0].run_key != first.run_requests[0].run_key


def test_hostile_names_never_lead_outside_the_landing_zone(sensor_world, tmp_path):
    paths, defs, instance = sensor_world
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"outside the landing zone")
    outside_dir = tmp_path / "outside_dir"
    outside_dir.mkdir()
    (outside_dir / "inner.mp4").write_bytes(b"also outside")
    os.symlink(secret, paths.landing / "link.mp4")
    os.symlink(outside_dir, paths.landing / "linked_dir")
    os.symlink("../../etc/passwd", paths.landing / "relative_link.mp4")
    raw = os.fsencode(paths.landing) + b"/bad\xff\xfename..mp4"  # not UTF-8, with dots
    with open(raw, "wb") as f:
        f.write(b"non-utf8 name")
    os.utime(raw, (time.time() - 3600, time.time() - 3600))
    land(paths, "a b.mp4", b"space")
    land(paths, "a_b.mp4", b"underscore")  # collides with the above after naive sanitising
    land(paths, "x..y...mp4", b"dots")
    tick = evaluate(defs, instance)
    batch = LandingLedger(paths.landing_ledger).batch(tick.run_requests[0].partition_key)
    by_name = {m.name: m for m in batch.members}
    # symlinks are recorded, never read (no content hash), and nothing behind them is batched
    for name in ("link.mp4", "linked_dir", "relative_link.mp4"):
        assert by_name[name].content_hash is None and "symlink" in by_name[name].note
    assert "linked_dir/inner.mp4" not in by_name
    assert by_name["bad\\xff\\xfename..mp4"].content_hash is not None
    assert {"a b.mp4", "a_b.mp4", "x..y...mp4"} <= set(by_name)
    assert len({m.content_hash for m in batch.members if m.content_hash}) == 4


def test_a_drop_is_batched_smallest_file_first(cosmos_env):
    ledger = LandingLedger(cosmos_env.landing_ledger)
    for name, size in (("big.mp4", 300), ("small.mp4", 100), ("medium.mp4", 200)):
        land(cosmos_env, name, b"x" * size)
    settled = scan_drop_zone(cosmos_env.landing, settle_seconds=30).settled
    (batch,) = ledger.plan_batches(cosmos_env.landing, settled, max_files=50, max_bytes=10**9)
    assert [m.name for m in batch.members] == ["small.mp4", "medium.mp4", "big.mp4"]


def test_with_a_small_first_batch_the_demo_samples_start_with_the_smallest_video_alone(samples, sensor_world, monkeypatch):
    paths, _, instance = sensor_world
    monkeypatch.setenv("COSMOS_FIRST_BATCH_FILES", "1")  # what `cosmos demo` sets
    defs = build_definitions()
    for sample in samples.glob("*.m[pk][4v]"):
        land(paths, f"samples/{sample.name}", sample.read_bytes())
    tick = evaluate(defs, instance)
    batches = [LandingLedger(paths.landing_ledger).batch(r.partition_key) for r in tick.run_requests]
    assert [[m.name for m in b.members] for b in batches] == [
        ["samples/asl_again.mkv"],  # 205 kB, 2.6 s: its clips come after one short run
        # the rest curates beside it on the other core, smallest first
        ["samples/asl_walk.mkv", "samples/asl_book.mkv", "samples/bottle_conveyor.mp4", "samples/dashcam_solid_white_right.mp4"],
    ]
    assert [r.partition_key for r in tick.run_requests] == [b.key for b in batches] == instance.get_dynamic_partitions("ingest_batches")


def test_a_small_first_batch_adds_one_partition_to_a_bulk_drop(cosmos_env):
    ledger = LandingLedger(cosmos_env.landing_ledger)
    for index in range(200):
        land(cosmos_env, f"bulk/{index:03d}.mp4", index.to_bytes(2, "big"))
    settled = scan_drop_zone(cosmos_env.landing, settle_seconds=30).settled
    batches = ledger.plan_batches(cosmos_env.landing, settled, max_files=50, max_bytes=10**9, first_batch_files=1)
    assert [len(b.members) for b in batches] == [1, 50, 50, 50, 49]  # 5 partitions instead of 4
    assert sum(len(b.members) for b in batches) == 200


def test_a_file_the_service_user_cannot_read_is_recorded_not_retried_unseen_forever(cosmos_env, samples, monkeypatch):
    """Issue 14.10c. Tests run as root, which no permission stops: the read errors are made where the ledger reads."""
    import errno

    from cosmos_assets.common.artefacts import LocalStore
    from cosmos_assets.curation import landing
    from cosmos_assets.curation.pipeline import ingest_member
    from cosmos_assets.curation.probe import ProbeLimits

    for name in ("denied.mp4", "flaky.mp4", "fine.mkv"):
        land(cosmos_env, name, (samples / ("asl_walk.mkv" if name == "fine.mkv" else "bottle_conveyor.mp4")).read_bytes()[
            : None if name == "fine.mkv" else 20_000 + len(name)])
    errors = {b"denied.mp4": PermissionError(errno.EACCES, "Permission denied"), b"flaky.mp4": OSError(errno.EIO, "I/O error")}
    real_hash = landing.hash_dropped_file

    def hash_or_fail(root, relative_path):
        if relative_path in errors:
            raise errors[relative_path]
        return real_hash(root, relative_path)

    monkeypatch.setattr(landing, "hash_dropped_file", hash_or_fail)
    ledger = LandingLedger(cosmos_env.landing_ledger)
    settled = lambda: scan_drop_zone(cosmos_env.landing, settle_seconds=30).settled  # noqa: E731
    start = time.time()
    (first,) = ledger.plan_batches(cosmos_env.landing, settled(), 50, 10**9, now=start, unreadable_after_s=60)
    # Denied: recorded at once. An I/O error may pass: tried again, and recorded once it has failed for a minute.
    assert {m.name: (m.content_hash is None, bool(m.note)) for m in first.members} == {
        "denied.mp4": (True, True), "fine.mkv": (False, False)}
    assert ledger.plan_batches(cosmos_env.landing, settled(), 50, 10**9, now=start + 30, unreadable_after_s=60) == []
    (second,) = ledger.plan_batches(cosmos_env.landing, settled(), 50, 10**9, now=start + 61, unreadable_after_s=60)
    assert [m.name for m in second.members] == ["flaky.mp4"] and "I/O error" in second.members[0].note
    assert ledger.plan_batches(cosmos_env.landing, settled(), 50, 10**9, now=start + 999, unreadable_after_s=60) == []
    rows = {m.name: ingest_member(m, "b", cosmos_env.landing, LocalStore(cosmos_env.home / "artefacts"), ProbeLimits())
            for m in first.members + second.members}
    assert {n: (r["status"], r["error_class"]) for n, r in rows.items()} == {
        "denied.mp4": ("rejected", "UnreadableFile"), "flaky.mp4": ("rejected", "UnreadableFile"), "fine.mkv": ("ok", None)}
    assert "Permission denied" in rows["denied.mp4"]["error_message"]


def test_a_rejected_hard_link_to_a_file_outside_the_zone_leaves_nothing_in_the_raw_store(cosmos_env, samples, tmp_path):
    """Issue 14.10d: its bytes belong to a file outside the landing zone; a hard-linked video is still taken."""
    from cosmos_assets.common.artefacts import LocalStore
    from cosmos_assets.curation.pipeline import ingest_member
    from cosmos_assets.curation.probe import ProbeLimits

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.mp4").write_bytes((samples / "bottle_conveyor.mp4").read_bytes()[:3000])  # not a usable video
    shutil.copy(samples / "asl_walk.mkv", outside / "walk.mkv")
    for name in ("private.mp4", "walk.mkv"):
        os.link(outside / name, cosmos_env.landing / name)
        age_file(cosmos_env.landing / name)
    land(cosmos_env, "plain_broken.mp4", (samples / "asl_book.mkv").read_bytes()[:3000])
    (batch,) = LandingLedger(cosmos_env.landing_ledger).plan_batches(
        cosmos_env.landing, scan_drop_zone(cosmos_env.landing, 30).settled, 50, 10**9)
    store = LocalStore(cosmos_env.home / "artefacts")
    rows = {m.name: ingest_member(m, batch.key, cosmos_env.landing, store, ProbeLimits()) for m in batch.members}
    assert rows["private.mp4"]["status"] == "rejected" and rows["private.mp4"]["raw_path"] is None
    assert "hard link" in rows["private.mp4"]["error_message"]
    assert rows["walk.mkv"]["status"] == "ok" and os.path.isfile(rows["walk.mkv"]["raw_path"])
    assert rows["plain_broken.mp4"]["status"] == "rejected" and os.path.isfile(rows["plain_broken.mp4"]["raw_path"])
    kept = {p.read_bytes() for p in (cosmos_env.home / "artefacts").rglob("*") if p.is_file()}
    assert (outside / "private.mp4").read_bytes() not in kept
