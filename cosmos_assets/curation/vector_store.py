"""Clip embeddings in LanceDB: one table per video-embedding model, rows keyed by clip id.

A table per model because vectors of two models have different sizes and meanings: they can never
meet in one search. Model name and version are columns too, so a table's rows say what made them.
Writes are upserts by clip id, so a re-run after a crash updates rows instead of adding them.

One writer at a time, by construction: the only writer is ``deduplicated_clips``, which runs in the
``collection`` pool (one step at a time) and upserts each batch's embeddings before marking ``kept``.
Concurrent ``merge_insert`` calls are not safe on an object store: S3 has no atomic commit for Lance
without a separate commit lock, and four processes racing upserts of overlapping ids on an S3 server
(moto's, as in the tests) left 15 rows for 6 clip ids. A file lock would only help on one machine, so
there is none.
"""

from __future__ import annotations

from datetime import timedelta
import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

KEY = "clip_id"
TEXT_VECTOR = "text_embedding"
VIDEO_VECTOR = "video_embedding"
INDEX_MIN_ROWS = 50_000  # below this a brute-force scan is faster than building and probing an index

# Everything except the two vectors; the vectors are fixed-size lists sized per model.
COLUMNS = {
    KEY: pa.string(),
    "batch": pa.string(),
    "batch_sequence": pa.int64(),
    "source_hash": pa.string(),
    "source_name": pa.string(),
    "clip_sha256": pa.string(),
    "path": pa.string(),
    "thumbnail_path": pa.string(),
    "start_s": pa.float64(),
    "end_s": pa.float64(),
    "duration_s": pa.float64(),
    "motion_global": pa.float64(),
    "sharpness": pa.float64(),
    "brightness": pa.float64(),
    "caption": pa.string(),
    "caption_status": pa.string(),
    "captioner": pa.string(),
    "prompt_id": pa.string(),
    "tags": pa.string(),
    "video_model": pa.string(),
    "video_model_version": pa.string(),
    "text_model": pa.string(),
    "text_model_version": pa.string(),
    "tiny_random": pa.bool_(),
    "kept": pa.bool_(),  # null until de-duplication has seen the clip; search only returns kept clips
}


def table_name(video_model: str, dim: int) -> str:
    return "clips__" + re.sub(r"[^A-Za-z0-9]+", "_", video_model).strip("_").lower() + f"__{dim}d"


def schema(video_dim: int, text_dim: int) -> pa.Schema:
    return pa.schema([pa.field(name, kind) for name, kind in COLUMNS.items()] + [
        pa.field(VIDEO_VECTOR, pa.list_(pa.float32(), video_dim)),
        pa.field(TEXT_VECTOR, pa.list_(pa.float32(), text_dim)),
    ])


class ClipVectorStore:
    """LanceDB at ``uri``: a local folder, or an object store URL with LanceDB ``storage_options``."""

    def __init__(self, uri: str | Path, index_min_rows: int = INDEX_MIN_ROWS, storage_options: dict | None = None):
        import lancedb

        self.uri, self.index_min_rows = str(uri), index_min_rows
        if "://" not in self.uri:
            Path(self.uri).mkdir(parents=True, exist_ok=True)
        # read_consistency_interval 0: see other processes' commits on every read.
        self.db = lancedb.connect(self.uri, read_consistency_interval=timedelta(0), storage_options=storage_options)

    def table_names(self) -> list[str]:
        names, token = [], None
        while True:
            page = self.db.list_tables(page_token=token)
            names.extend(page.tables)
            token = page.page_token
            if not token:
                return names

    def exists(self, name: str) -> bool:
        return name in self.table_names()

    def upsert(self, name: str, rows: list[dict], video_dim: int, text_dim: int, chunk_rows: int = 512) -> int:
        """Insert or update rows by clip id, ``chunk_rows`` per commit; returns the table's row count."""
        table_schema = schema(video_dim, text_dim)
        table = self.db.create_table(name, schema=table_schema, exist_ok=True)
        for start in range(0, len(rows), chunk_rows):
            data = pa.Table.from_pylist(rows[start:start + chunk_rows], schema=table_schema)
            (table.merge_insert(KEY).when_matched_update_all().when_not_matched_insert_all().execute(data))
        self._index_if_large(table)
        return table.count_rows()

    def _index_if_large(self, table) -> None:
        from lancedb.index import IvfFlat

        # IVF_FLAT: exact vectors, builds in seconds (IVF_PQ took minutes here); built once.
        rows = table.count_rows()
        if rows < self.index_min_rows:
            return
        existing = {index.columns[0] for index in table.list_indices()}
        for column in (VIDEO_VECTOR, TEXT_VECTOR):
            if column not in existing:
                table.create_index(column, config=IvfFlat(distance_type="cosine", num_partitions=max(1, int(rows**0.5))))

    def mark_kept(self, name: str, kept_ids: set[str], dropped_ids: set[str]) -> None:
        """Record de-duplication decisions so search sees only kept clips (re-running repeats them)."""
        table = self.db.open_table(name)
        for value, ids in ((True, kept_ids), (False, dropped_ids)):
            ordered = sorted(ids)
            for start in range(0, len(ordered), 1000):
                listed = ", ".join("'" + i.replace("'", "''") + "'" for i in ordered[start:start + 1000])
                table.update(where=f"{KEY} IN ({listed})", values={"kept": value})

    def remove_batch_rows_except(self, name: str, batch: str, current_ids: set[str]) -> int:
        """Delete the rows of ``batch`` whose clip is no longer among its embedded clips (a re-filtered batch
        keeps fewer clips); returns how many were deleted."""
        if not self.exists(name):
            return 0
        table = self.db.open_table(name)
        rows = pl.from_arrow(table.to_arrow().select([KEY, "batch"]))
        stale = sorted(set(rows.filter(pl.col("batch") == batch)[KEY]) - current_ids)
        for start in range(0, len(stale), 1000):
            listed = ", ".join("'" + i.replace("'", "''") + "'" for i in stale[start:start + 1000])
            table.delete(f"{KEY} IN ({listed})")
        return len(stale)

    def read(self, name: str, columns: list[str] | None = None) -> pl.DataFrame:
        if not self.exists(name):
            return pl.DataFrame()
        return pl.from_arrow(self.db.open_table(name).to_arrow().select(columns) if columns else self.db.open_table(name).to_arrow())

    def duplicate_ids(self, name: str) -> list[str]:
        ids = self.read(name, [KEY])
        if ids.is_empty():
            return []
        return ids.group_by(KEY).len().filter(pl.col("len") > 1)[KEY].to_list()

    def version(self, name: str) -> int:
        return self.db.open_table(name).version if self.exists(name) else 0

    def search_text(self, name: str, query_vector: np.ndarray, limit: int = 10, where: str | None = None) -> pl.DataFrame:
        query = self.db.open_table(name).search(query_vector, vector_column_name=TEXT_VECTOR).distance_type("cosine").limit(limit)
        if where:
            query = query.where(where, prefilter=True)
        found = query.to_arrow()
        return pl.from_arrow(found.drop_columns([VIDEO_VECTOR, TEXT_VECTOR]))
