"""Every artefact on an object store: the artefact store on a local folder and on a real S3 server
(moto's, over HTTP on 127.0.0.1), LanceDB writers on S3, and the whole flywheel through `cosmos run`
with ``COSMOS_OBJECT_STORE_URL=s3://…`` writing nothing under ``COSMOS_HOME/artefacts``."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import polars as pl
import pytest

from cosmos_assets.common.artefacts import LocalStore, ObjectStore, open_store

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3-compatible HTTP server for this module (moto's), on a free local port."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """Credentials and endpoint the way a deployment gives them (the ``AWS_*`` variables), and a fresh bucket."""
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    bucket = f"cosmos-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    return bucket, client


def bucket_keys(client, bucket: str, prefix: str = "") -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [entry["Key"] for entry in page.get("Contents", [])]
    return sorted(keys)


@pytest.fixture(params=["local folder", "s3"])
def store(request, tmp_path):
    """The same specification holds for both kinds of store."""
    if request.param == "local folder":
        return LocalStore(tmp_path / "home")
    bucket, _ = request.getfixturevalue("s3")
    return ObjectStore(f"s3://{bucket}/prod", scratch=tmp_path / "scratch")


# --- the store ---------------------------------------------------------------------------------------


def test_a_file_is_visible_under_its_key_only_once_it_is_whole(store):
    key = "artefacts/clips/ab/abcdef.mp4"
    with store.writing(key) as tmp:
        tmp.write_bytes(b"half")
        assert not store.exists(key) and store.list("artefacts/") == []
        tmp.write_bytes(b"whole clip")
    assert store.exists(key) and store.read_bytes(key) == b"whole clip"
    assert store.list("artefacts/") == [key]
    reference = store.ref(key)
    assert reference == (f"{store.url}/{key}" if store.remote else str(store.root / key))
    assert store.key_of(reference) == key


def test_a_writer_that_fails_publishes_nothing_and_leaves_no_temporary(store, tmp_path):
    with pytest.raises(RuntimeError):
        with store.writing("artefacts/raw/aa/aaaa.mp4") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crashed mid-write")
    assert not store.exists("artefacts/raw/aa/aaaa.mp4") and store.list("artefacts/") == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_publishing_the_same_key_again_replaces_it_with_no_duplicate(store):
    for _ in range(2):
        store.write_bytes("artefacts/synthetic/candidates/ab/abc.json", b'{"seed": 0}')
    assert store.list("artefacts/synthetic/") == ["artefacts/synthetic/candidates/ab/abc.json"]
    assert store.read_json("artefacts/synthetic/candidates/ab/abc.json") == {"seed": 0}


def test_a_folder_is_published_with_its_marker_last_and_a_failed_one_not_at_all(store):
    with pytest.raises(RuntimeError):
        with store.folder("artefacts/datasets/ds-1", marker="dataset_card.json") as staging:
            (staging / "members.parquet").write_bytes(b"rows")
            raise RuntimeError("crashed mid-export")
    assert store.list("artefacts/") == []
    with store.folder("artefacts/datasets/ds-1", marker="dataset_card.json") as staging:
        (staging / "train" / "videos").mkdir(parents=True)
        (staging / "train" / "videos" / "c.mp4").write_bytes(b"clip")
        (staging / "dataset_card.json").write_text("{}")
    assert store.list("artefacts/datasets/ds-1/") == ["artefacts/datasets/ds-1/dataset_card.json",
                                                       "artefacts/datasets/ds-1/train/videos/c.mp4"]
    assert store.folders("artefacts/datasets") == ["ds-1"]


def test_tables_json_and_partitions_read_back(store):
    first, second = pl.DataFrame({"clip_id": ["a"]}), pl.DataFrame({"clip_id": ["b"], "kept": [True]})
    store.write_parquet("tables/filtered_clips/batch-1.parquet", first)
    store.write_parquet("tables/filtered_clips/batch-2.parquet", second)
    assert store.read_table("filtered_clips", "batch-1").equals(first)
    assert store.read_table("filtered_clips", "batch-3") is None
    assert store.table_partitions("filtered_clips") == ["batch-1", "batch-2"]
    assert store.read_partitions("filtered_clips", only={"batch-2"}).equals(second)
    assert store.read_partitions("filtered_clips").height == 2
    assert store.read_json_if_exists("artefacts/checkpoints/PROMOTED.json") is None


def test_a_stored_file_opens_as_a_local_file_downloaded_once(s3, tmp_path):
    bucket, client = s3
    writer = ObjectStore(f"s3://{bucket}/prod", scratch=tmp_path / "writer")
    reference = writer.write_bytes("artefacts/clips/ab/abc.mp4", b"clip bytes")
    reader = ObjectStore(f"s3://{bucket}/prod", scratch=tmp_path / "reader")  # another pod: its own scratch
    local = reader.local_path(reference)
    assert local.is_relative_to(tmp_path / "reader") and local.read_bytes() == b"clip bytes"
    stamp = local.stat().st_mtime_ns
    time.sleep(0.01)
    assert reader.local_path(reference) == local and local.stat().st_mtime_ns == stamp  # reused, not downloaded again
    client.put_object(Bucket=bucket, Key="prod/artefacts/clips/ab/abc.mp4", Body=b"rewritten clip bytes")
    assert reader.local_path(reference).read_bytes() == b"rewritten clip bytes"  # a changed object is fetched again
    assert not list((tmp_path / "reader").rglob(".tmp-*"))


def test_a_local_store_records_the_paths_the_project_always_recorded(tmp_path):
    store = open_store(tmp_path / "home")
    assert isinstance(store, LocalStore) and store.ref("artefacts/raw/ab/abc.mp4") == str(tmp_path / "home" / "artefacts/raw/ab/abc.mp4")
    assert store.local_path(store.ref("artefacts/raw/ab/abc.mp4")) == tmp_path / "home" / "artefacts/raw/ab/abc.mp4"
    assert store.lancedb_uri == str(tmp_path / "home" / "lancedb")
    assert isinstance(open_store(tmp_path / "home", f"file://{tmp_path}/shared"), LocalStore)
    remote = open_store(tmp_path / "home", "s3://bucket/prod")
    assert isinstance(remote, ObjectStore) and remote.lancedb_uri == "s3://bucket/prod/lancedb"


CRASHING_UPLOAD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from cosmos_assets.common.artefacts import ObjectStore

    ObjectStore.upload_part_bytes = 5 << 20  # S3's smallest part: a long multipart upload to be killed in
    store = ObjectStore(sys.argv[1], scratch=sys.argv[2])
    with store.writing("artefacts/raw/ff/big.mp4") as tmp:
        with open(tmp, "wb") as out:
            for _ in range(24):
                out.write(b"\\x00" * (5 << 20))
        print("uploading", flush=True)
""")


def test_a_crash_mid_upload_leaves_nothing_under_the_key(s3, tmp_path):
    bucket, client = s3
    url, scratch = f"s3://{bucket}/prod", tmp_path / "scratch"
    process = subprocess.Popen([sys.executable, "-c", CRASHING_UPLOAD, url, str(scratch)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "uploading"
    deadline = time.time() + 60
    while time.time() < deadline and not client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "the upload finished before it could be killed"
    assert bucket_keys(client, bucket) == []  # an unfinished multipart upload is no object
    assert not (scratch / "cache" / "artefacts/raw/ff/big.mp4").exists()
    store = ObjectStore(url, scratch=scratch)
    assert not store.exists("artefacts/raw/ff/big.mp4")
    store.write_bytes("artefacts/raw/ff/big.mp4", b"the re-run's file")  # the re-run publishes it whole
    assert bucket_keys(client, bucket) == ["prod/artefacts/raw/ff/big.mp4"]


def embedding_rows(ids: list[str], batch: str, caption: str = "a road") -> pl.DataFrame:
    from cosmos_assets.curation.dataset_assets import CLIP_EMBEDDINGS

    rows = [{"clip_id": i, "batch": batch, "caption": caption, "video_embedding": [1.0, 0.0],
             "text_embedding": [0.0, 1.0], "lancedb_table": "clips__test__2d"} for i in ids]
    return pl.DataFrame([{k: r.get(k) for k in CLIP_EMBEDDINGS} for r in rows], schema=CLIP_EMBEDDINGS)


@pytest.mark.parametrize("where", ["local folder", "s3"])
def test_lancedb_gets_each_batch_once_from_its_one_writer_and_a_rewritten_batch_again(where, request, tmp_path):
    """LanceDB's one writer (deduplicated_clips, one at a time in the collection pool) upserts the
    clip_embeddings tables it has not written yet; racing writers on S3 left duplicate ids, so no other
    step writes it."""
    from cosmos_assets.common.artefacts import table_key
    from cosmos_assets.curation.dataset_assets import _write_embeddings_to_lancedb, vector_store
    from resources import CosmosStorage

    url = None
    if where == "s3":
        bucket, _ = request.getfixturevalue("s3")
        url = f"s3://{bucket}/prod"
    storage = CosmosStorage(home=str(tmp_path / "home"), object_store_url=url)
    store, vectors = storage.store, vector_store(storage)
    store.write_parquet(table_key("clip_embeddings", "batch-000001-a"), embedding_rows(["c1", "c2"], "batch-000001-a"))
    store.write_parquet(table_key("clip_embeddings", "batch-000002-b"), embedding_rows(["c2", "c3"], "batch-000002-b"))

    assert _write_embeddings_to_lancedb(storage, vectors, "clips__test__2d", chunk_rows=1) == 4
    assert _write_embeddings_to_lancedb(storage, vectors, "clips__test__2d", chunk_rows=1) == 0  # nothing new
    rows = vectors.read("clips__test__2d")
    assert sorted(rows["clip_id"]) == ["c1", "c2", "c3"]  # c2 twice in the batches, once in LanceDB

    # A new caption prompt re-embeds batch 1: its rows are updated in place, nothing is added.
    time.sleep(1.1)  # a later modification time, also at S3's one-second resolution
    store.write_parquet(table_key("clip_embeddings", "batch-000001-a"), embedding_rows(["c1", "c2"], "batch-000001-a", "a wet road"))
    assert _write_embeddings_to_lancedb(storage, vectors, "clips__test__2d", chunk_rows=1) == 2
    rows = vectors.read("clips__test__2d")
    assert rows.height == 3 and set(rows.filter(pl.col("clip_id") == "c1")["caption"]) == {"a wet road"}

    # A crash after an upsert and before its record is written repeats that upsert: still one row per clip.
    store.remove("artefacts/lancedb_written/clips__test__2d.json")
    assert _write_embeddings_to_lancedb(storage, vectors, "clips__test__2d", chunk_rows=1) == 4
    assert vectors.duplicate_ids("clips__test__2d") == [] and vectors.read("clips__test__2d").height == 3


# --- the flywheel on S3, end to end -----------------------------------------------------------------------


def cosmos_run_on(home: Path, url: str, *extra, timeout=900) -> dict:
    from test_cosmos_run import COSMOS

    env = {**os.environ, "COSMOS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "COSMOS_SETTLE_SECONDS": "0",
           "COSMOS_OBJECT_STORE_URL": url, "COSMOS_PROFILE": "local"}
    result = subprocess.run([COSMOS, *extra], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout) if "--json" in extra else {"stdout": result.stdout}


@pytest.fixture(scope="module")
def flywheel_on_s3(s3_endpoint, tmp_path_factory, samples):
    """Two real videos landed, then one `cosmos run` with the object store on S3: curation, dataset,
    a generation round, critique, training, evaluation and promotion."""
    import boto3

    with pytest.MonkeyPatch.context() as env:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                            "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint}.items():
            env.setenv(name, value)
        bucket = f"flywheel-{uuid.uuid4().hex[:12]}"
        client = boto3.client("s3")
        client.create_bucket(Bucket=bucket)
        home = tmp_path_factory.mktemp("s3_flywheel") / "home"
        (home / "landing").mkdir(parents=True)
        shutil.copy(samples / "dashcam_solid_white_right.mp4", home / "landing" / "dashcam.mp4")
        shutil.copy(samples / "bottle_conveyor.mp4", home / "landing" / "conveyor.mp4")
        url = f"s3://{bucket}/prod"
        summary = cosmos_run_on(home, url, "run", "--json")
        yield home, url, bucket, client, summary, env


def test_the_whole_flywheel_runs_with_every_artefact_on_s3(flywheel_on_s3):
    home, url, bucket, client, summary, _ = flywheel_on_s3
    jobs = {run["job"] for run in summary["runs"]}
    assert all(run["status"] == "SUCCESS" for run in summary["runs"]), summary["runs"]
    assert {"curation_job", "dataset_job", "generation_job", "critique_job", "training_job", "evaluation_job"} <= jobs
    keys = bucket_keys(client, bucket, "prod/")
    expected_prefixes = ["prod/tables/raw_videos/", "prod/tables/curated_dataset/all.parquet", "prod/artefacts/raw/",
                         "prod/artefacts/clips/", "prod/artefacts/clips/_finished/", "prod/artefacts/thumbnails/",
                         "prod/artefacts/datasets/", "prod/artefacts/synthetic/sources/", "prod/artefacts/synthetic/candidates/",
                         "prod/artefacts/training_datasets/", "prod/artefacts/training_runs/", "prod/artefacts/checkpoints/",
                         "prod/artefacts/checkpoints/PROMOTED.json", "prod/artefacts/checkpoints/history.jsonl", "prod/lancedb/"]
    for prefix in expected_prefixes:
        assert any(k.startswith(prefix) for k in keys), prefix
    # Nothing of what the store holds was written under COSMOS_HOME: only ledgers, models and the instance stay local.
    assert not [p for p in (home / "artefacts").rglob("*") if p.is_file()]
    assert not list((home / "tables").rglob("*.parquet")) and not (home / "lancedb").exists()


def test_tables_record_store_urls_and_every_one_resolves(flywheel_on_s3, tmp_path):
    home, url, bucket, client, summary, env = flywheel_on_s3
    store = ObjectStore(url, scratch=tmp_path)
    clips = store.read_partitions("video_clips")
    curated = store.read_table("curated_dataset")
    assert clips.height >= 2 and curated.height >= 1
    for column in (clips["path"], clips["thumbnail_path"], curated["path"]):
        assert all(reference.startswith(f"{url}/artefacts/") and store.exists(store.key_of(reference)) for reference in column)
    version = curated["dataset_version"][0]
    assert store.exists(f"artefacts/datasets/{version}/dataset_card.json")
    accepted = store.read_partitions("accepted_videos")
    assert accepted.height and all(p.startswith(f"{url}/artefacts/synthetic/candidates/") for p in accepted["path"])
    checkpoint = store.read_partitions("generator_checkpoint")
    assert all(p.startswith(f"{url}/artefacts/checkpoints/") for p in checkpoint["path"])


def test_clip_embeddings_live_in_lancedb_on_s3_once_per_clip(flywheel_on_s3):
    from cosmos_assets.curation.vector_store import ClipVectorStore

    home, url, bucket, client, summary, env = flywheel_on_s3
    lance = ClipVectorStore(f"{url}/lancedb", storage_options={"allow_http": "true"})
    [name] = lance.table_names()
    rows = lance.read(name, ["clip_id", "path", "kept"])
    dedup = summary["assets"]["deduplicated_clips"]
    assert rows.height == dedup["kept"] + dedup["dropped_as_duplicates"] and lance.duplicate_ids(name) == []
    assert rows["kept"].all() and all(p.startswith(f"{url}/artefacts/clips/") for p in rows["path"])


def test_lineage_and_search_read_the_store(flywheel_on_s3):
    home, url, bucket, client, summary, env = flywheel_on_s3
    found = cosmos_run_on(home, url, "lineage", "--json")
    promoted = json.loads(client.get_object(Bucket=bucket, Key="prod/artefacts/checkpoints/PROMOTED.json")["Body"].read())
    assert found["checkpoint"] == promoted["checkpoint"] and found["promoted"]
    assert {v["original_name"] for v in found["source_videos"]} <= {"dashcam.mp4", "conveyor.mp4"} and found["source_videos"]
    hits = cosmos_run_on(home, url, "search", "a car on a road", "--json")["hits"]
    assert hits and all(hit["path"].startswith(f"{url}/artefacts/clips/") for hit in hits)


def test_a_second_run_with_nothing_new_writes_nothing_to_the_store(flywheel_on_s3):
    home, url, bucket, client, summary, env = flywheel_on_s3
    before = {entry["Key"]: entry["ETag"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
              for entry in page.get("Contents", [])}
    again = cosmos_run_on(home, url, "run", "--json")
    assert again["nothing_new"] and again["runs"] == []
    after = {entry["Key"]: entry["ETag"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
             for entry in page.get("Contents", [])}
    assert after == before
