"""The LanceDB clip store: upserts by clip id, one writer at a time, an index once it pays, and a
writer killed mid-write loses nothing and duplicates nothing when run again."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cosmos_assets.curation.vector_store import KEY, TEXT_VECTOR, VIDEO_VECTOR, ClipVectorStore, table_name

VIDEO_DIM, TEXT_DIM = 16, 8


def rows(count: int, start: int = 0, caption: str = "first") -> list[dict]:
    rng = np.random.default_rng(start)
    return [{KEY: f"clip-{i:05d}", "batch": "batch-000001-x", "batch_sequence": 1, "caption": caption, "kept": None,
             "video_model": "m", "video_model_version": "1", "tiny_random": False,
             VIDEO_VECTOR: rng.standard_normal(VIDEO_DIM).astype(np.float32).tolist(),
             TEXT_VECTOR: rng.standard_normal(TEXT_DIM).astype(np.float32).tolist()} for i in range(start, start + count)]


def test_table_names_separate_models_and_dimensions():
    assert table_name("google/siglip-so400m-patch14-384", 1152) == "clips__google_siglip_so400m_patch14_384__1152d"
    assert table_name("efficientnet_lite0-imagenet", 1280) != table_name("efficientnet_lite0-imagenet", 768)


def test_upserts_update_rows_in_place(tmp_path):
    store = ClipVectorStore(tmp_path)
    name = table_name("m", VIDEO_DIM)
    assert store.upsert(name, rows(10), VIDEO_DIM, TEXT_DIM, chunk_rows=3) == 10
    assert store.upsert(name, rows(5, start=5, caption="second"), VIDEO_DIM, TEXT_DIM) == 10
    table = store.read(name).sort(KEY)
    assert table[KEY].n_unique() == 10 and store.duplicate_ids(name) == []
    assert table["caption"].to_list() == ["first"] * 5 + ["second"] * 5
    store.mark_kept(name, {"clip-00000", "clip-00001"}, {"clip-00002"})
    kept = dict(store.read(name, [KEY, "kept"]).iter_rows())
    assert kept["clip-00000"] is True and kept["clip-00002"] is False and kept["clip-00009"] is None


def test_a_vector_index_is_built_once_the_table_is_large_enough(tmp_path):
    store = ClipVectorStore(tmp_path, index_min_rows=200)
    name = table_name("m", VIDEO_DIM)
    store.upsert(name, rows(150), VIDEO_DIM, TEXT_DIM)
    assert store.db.open_table(name).list_indices() == []
    store.upsert(name, rows(100, start=150), VIDEO_DIM, TEXT_DIM)
    indexed = {index.columns[0] for index in store.db.open_table(name).list_indices()}
    assert indexed == {VIDEO_VECTOR, TEXT_VECTOR}
    query = np.asarray(rows(150)[7][TEXT_VECTOR], dtype=np.float32)
    assert store.search_text(name, query, limit=1)[KEY].to_list() == ["clip-00007"]


WRITER = """
import sys
from cosmos_assets.curation.vector_store import ClipVectorStore, table_name
sys.path.insert(0, {tests!r})
from test_vector_store import rows, VIDEO_DIM, TEXT_DIM
store = ClipVectorStore(__import__("pathlib").Path({root!r}))
store.upsert(table_name("m", VIDEO_DIM), rows(400), VIDEO_DIM, TEXT_DIM, chunk_rows=1)
"""


def test_a_writer_killed_mid_write_loses_and_duplicates_nothing_when_run_again(tmp_path):
    root = tmp_path / "lancedb"
    script = WRITER.format(tests=os.path.dirname(__file__), root=str(root))
    writer = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    store = ClipVectorStore(root)
    name = table_name("m", VIDEO_DIM)
    deadline = time.time() + 120
    while time.time() < deadline and writer.poll() is None and store.version(name) < 20:
        time.sleep(0.05)
    os.killpg(writer.pid, signal.SIGKILL)
    writer.wait()
    partial = store.read(name, [KEY]).height
    assert 0 < partial < 400, "the writer was not interrupted mid-write"

    assert subprocess.run([sys.executable, "-c", script], timeout=300).returncode == 0  # the same write, again
    table = store.read(name)
    assert table.height == 400 and table[KEY].n_unique() == 400 and store.duplicate_ids(name) == []
