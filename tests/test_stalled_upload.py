"""Issue 14.4: a stalled upload. The writer pauses longer than the settle time, so the file is taken half-written
(a truncated but decodable video); when the upload completes, the same name settles again. The completed file's
batch records that it supersedes the truncated version (``raw_videos.supersedes``), and the curated dataset's
members leave the truncated version's clips out. A different file landed later under the same name supersedes
nothing. Built from a real sample, truncated at test time and then completed."""

import polars as pl

from conftest import age_file
from cosmos_assets.common.artefacts import LocalStore
from cosmos_assets.common.drop_zone import scan_drop_zone
from cosmos_assets.curation.dataset import dataset_members
from cosmos_assets.curation.landing import LandingLedger
from cosmos_assets.curation.pipeline import ingest_member
from cosmos_assets.curation.probe import ProbeLimits


def _plan(ledger, landing):
    return ledger.plan_batches(landing, scan_drop_zone(landing, settle_seconds=30).settled, max_files=50,
                               max_bytes=1 << 40)


def test_a_stalled_upload_that_completes_supersedes_its_truncated_version(tmp_path, samples):
    landing, store = tmp_path / "landing", LocalStore(tmp_path / "home")
    (landing / "cam").mkdir(parents=True)
    ledger = LandingLedger(tmp_path / "ledger.sqlite")
    full = (samples / "asl_walk.mkv").read_bytes()
    upload = landing / "cam" / "walk.mkv"

    upload.write_bytes(full[: len(full) * 6 // 10])  # the writer stalls here, longer than the settle time
    age_file(upload, 60)
    [first] = _plan(ledger, landing)
    [truncated] = first.members
    assert truncated.supersedes is None
    row = ingest_member(truncated, first.key, landing, store, ProbeLimits())
    assert row["status"] == "ok" and row["supersedes"] is None, "a truncated MKV decodes: it is taken, with fewer frames"

    with open(upload, "ab") as stream:  # the upload resumes and completes
        stream.write(full[len(full) * 6 // 10:])
    age_file(upload, 30)
    [second] = _plan(ledger, landing)
    [completed] = second.members
    assert completed.supersedes == truncated.content_hash != completed.content_hash
    row2 = ingest_member(completed, second.key, landing, store, ProbeLimits())
    assert row2["status"] == "ok" and row2["supersedes"] == truncated.content_hash
    assert row2["frames"] > row["frames"]
    assert LandingLedger(tmp_path / "ledger.sqlite").superseded_hashes() == {truncated.content_hash}

    # Another recording later under the same name is not a completion of the first: it supersedes nothing.
    upload.write_bytes((samples / "asl_book.mkv").read_bytes())
    age_file(upload, 30)
    [third] = _plan(ledger, landing)
    assert third.members[0].supersedes is None
    assert ledger.superseded_hashes() == {truncated.content_hash}


def test_the_dataset_leaves_a_superseded_version_out_and_keeps_the_completed_copy_of_its_shots():
    old, new, other = "a" * 64, "b" * 64, "c" * 64
    clips = pl.DataFrame({
        "clip_id": ["old-1", "old-2", "new-1", "new-2", "new-3", "other-1", "other-2"],
        "source_hash": [old, old, new, new, new, other, other],
        # new-1 repeats old-1's shot byte for byte (older wins in dedup); other-2 repeats other-1
        "kept": [True, True, False, True, True, True, False],
        "duplicate_of": [None, None, "old-1", None, None, None, "other-1"],
    })
    assert dataset_members(clips, set())["clip_id"].to_list() == ["new-2", "new-3", "old-1", "old-2", "other-1"]
    members = dataset_members(clips, {old})
    assert members["clip_id"].to_list() == ["new-1", "new-2", "new-3", "other-1"]


def test_the_dataset_learns_which_versions_were_superseded_from_raw_videos_on_the_store(tmp_path):
    """curated_dataset reads raw_videos' tables (a declared upstream, visible to every step pod), not the sensor's ledger."""
    from cosmos_assets.common.artefacts import LocalStore, table_key
    from cosmos_assets.curation.dataset_assets import superseded_sources

    store = LocalStore(tmp_path)
    assert superseded_sources(store) == set()
    store.write_parquet(table_key("raw_videos", "batch-000001-a"), pl.DataFrame({"content_hash": ["a" * 64], "supersedes": [None]},
                                                                                 schema={"content_hash": pl.String, "supersedes": pl.String}))
    store.write_parquet(table_key("raw_videos", "batch-000002-b"), pl.DataFrame({"content_hash": ["b" * 64], "supersedes": ["a" * 64]}))
    assert superseded_sources(store) == {"a" * 64}
