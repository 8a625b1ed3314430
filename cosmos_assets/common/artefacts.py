"""The artefact store: the one place files, tables and the vector store are written, locally or on an object store.

A store has a root: the local folder ``COSMOS_HOME``, or an fsspec URL (``COSMOS_OBJECT_STORE_URL``,
e.g. ``s3://flywheel/prod``). Below it, by key (``/``-separated): ``artefacts/`` (raw videos, clips,
thumbnails, synthetic videos, dataset exports, training snapshots and state, checkpoints and the
promotion registry), ``tables/`` (asset tables as Parquet) and ``lancedb/`` (clip embeddings).

Tables record a *reference* to each file: its absolute path on a local store (exactly the paths the
project always recorded) and its URL on an object store. Code that decodes or trains opens
``local_path(reference)``: the file itself locally; on an object store a copy downloaded once into a
scratch folder (``COSMOS_SCRATCH``) and reused while its size matches the stored object.

How a file is written, on either kind of store: the producer writes it at ``staging_path(key)``
(atomically: temp name + rename, ``files.atomic_path``) and calls ``commit(key)``; ``writing(key)``
does both. Locally the staging path *is* the final path, so committing does nothing more. On an object
store the staging path is the file's place in the scratch cache and committing uploads it: an object
store shows an upload only once it is complete (a single PUT, or a multipart upload that becomes an
object only when completed), so a crash mid-upload leaves nothing under the key. Folders (dataset
exports, checkpoints, training snapshots) are published with a marker file written last; a folder
whose marker exists is complete, one without it is redone.

Credentials never appear here: s3fs and LanceDB read the standard ``AWS_*`` variables (a Kubernetes
Secret or the pod's cloud identity in the deployment). This module imports no Dagster.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from cosmos_assets.common.files import TEMP_PREFIX, atomic_path

OBJECT_STORE_ENV = "COSMOS_OBJECT_STORE_URL"
SCRATCH_ENV = "COSMOS_SCRATCH"

# Top-level prefixes below a store's root.
ARTEFACTS = "artefacts"
TABLES = "tables"
LANCEDB = "lancedb"

# Artefact folders: the layout under COSMOS_HOME/artefacts the project has always used.
RAW = f"{ARTEFACTS}/raw"
CLIPS = f"{ARTEFACTS}/clips"
THUMBNAILS = f"{ARTEFACTS}/thumbnails"
PROXIES = f"{ARTEFACTS}/proxies"  # each clip's small, few-frames-per-second copy (curation.clips.PROXY_FPS)
DATASETS = f"{ARTEFACTS}/datasets"
SYNTHETIC = f"{ARTEFACTS}/synthetic"
TRAINING_DATASETS = f"{ARTEFACTS}/training_datasets"
TRAINING_RUNS = f"{ARTEFACTS}/training_runs"
CHECKPOINTS = f"{ARTEFACTS}/checkpoints"
CRITIC = f"{ARTEFACTS}/critic"  # landed label files, self-supervised variants, training sets, runs
CRITIC_CHECKPOINTS = f"{ARTEFACTS}/critic_checkpoints"


def raw_key(content_hash: str, container_suffix: str) -> str:
    return f"{RAW}/{content_hash[:2]}/{content_hash}{container_suffix}"


# Clip files sit under their recipe (split + transcode settings): the same clip id encoded with
# other settings is another file, so a finished record of one recipe never points at another's.
def clip_key(clip_id: str, recipe: str) -> str:
    return f"{CLIPS}/{recipe[:8]}/{clip_id[:2]}/{clip_id}.mp4"


def thumbnail_key(clip_id: str, recipe: str) -> str:
    return f"{THUMBNAILS}/{recipe[:8]}/{clip_id[:2]}/{clip_id}.jpg"


def proxy_key(clip_id: str, recipe: str) -> str:
    return f"{PROXIES}/{recipe[:8]}/{clip_id[:2]}/{clip_id}.mp4"


def table_key(asset: str | list[str], partition: str | None) -> str:
    """``tables/<asset>/<partition>.parquet`` (``all`` for an unpartitioned asset)."""
    parts = [asset] if isinstance(asset, str) else list(asset)
    return "/".join([TABLES, *parts, f"{partition or 'all'}.parquet"])


def is_url(reference: str) -> bool:
    return "://" in reference


class ArtefactStore:
    """What both kinds of store do alike; ``LocalStore`` and ``ObjectStore`` say how each works."""

    remote: bool = False

    # Each kind provides: ref, key_of, staging_path, commit, local_path, exists, list (keys of the files
    # below a prefix), folders (names of the folders right below one), read_bytes, modified, remove,
    # lancedb_uri and _publish_folder; an object store also _upload. What a step wrote stays in its
    # scratch folder as the local copy of that key: a step pod's scratch goes with the pod, elsewhere
    # nothing evicts it (delete COSMOS_SCRATCH at will, it is only a cache).

    @property
    def lancedb_options(self) -> dict | None:
        return None

    # -- the same on both -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[Path]:
        """Yield a temporary local path; once the block succeeds the file is published under ``key``."""
        with atomic_path(self.staging_path(key)) as tmp:
            yield tmp
            if self.remote:  # upload before the rename: the cache never holds what the store lacks
                self._upload(tmp, key)

    @contextlib.contextmanager
    def folder(self, key: str, marker: str) -> Iterator[Path]:
        """Yield an empty local folder to build; once the block succeeds it is published under ``key``
        with ``marker`` (a file in it) last, so a folder whose marker exists on the store is complete."""
        final = self.staging_path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f"{TEMP_PREFIX}{os.getpid()}-{final.name}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            yield staging
            if not (staging / marker).is_file():
                raise FileNotFoundError(f"{key}: the folder was built without its marker {marker}")
            self._publish_folder(staging, key, marker)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def write_bytes(self, key: str, data: bytes) -> str:
        with self.writing(key) as tmp:
            tmp.write_bytes(data)
        return self.ref(key)

    def write_json(self, key: str, value, indent: int | None = 2) -> str:
        return self.write_bytes(key, (json.dumps(value, indent=indent, sort_keys=True, default=str) + "\n").encode())

    def read_json(self, key: str):
        return json.loads(self.read_bytes(key))

    def read_json_if_exists(self, key: str):
        return self.read_json(key) if self.exists(key) else None

    def write_parquet(self, key: str, table: pl.DataFrame) -> str:
        with self.writing(key) as tmp:
            table.write_parquet(tmp)
        return self.ref(key)

    def read_parquet(self, key: str, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.read_bytes(key)), columns=columns)

    def read_table(self, asset: str, partition: str | None = None) -> pl.DataFrame | None:
        """An asset's table as its IO manager wrote it, or None when it was never written."""
        key = table_key(asset, partition)
        return self.read_parquet(key) if self.exists(key) else None

    def table_partitions(self, asset: str) -> list[str]:
        """The partitions an asset has tables for (``all`` for an unpartitioned one), sorted."""
        prefix = f"{TABLES}/{asset}/"
        return sorted(k[len(prefix):-len(".parquet")] for k in self.list(prefix) if k.endswith(".parquet") and "/" not in k[len(prefix):])

    def read_partitions(self, asset: str, only: set[str] | None = None) -> pl.DataFrame:
        """Every partition table of an asset (or only the named partitions), as one frame."""
        tables = [self.read_parquet(table_key(asset, p)) for p in self.table_partitions(asset) if only is None or p in only]
        return pl.concat(tables, how="diagonal_relaxed") if tables else pl.DataFrame()

    def _upload(self, local: Path, key: str) -> None:
        raise NotImplementedError


class LocalStore(ArtefactStore):
    """A folder on this machine (or a shared volume): keys are paths below ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        return self.root / key

    def ref(self, key: str) -> str:
        return str(self.path(key))

    def key_of(self, reference: str) -> str:
        return Path(reference).relative_to(self.root).as_posix()

    def staging_path(self, key: str) -> Path:
        return self.path(key)

    def commit(self, key: str) -> str:
        if not self.path(key).is_file():
            raise FileNotFoundError(f"nothing was written at {self.path(key)} to commit")
        return self.ref(key)

    def local_path(self, reference: str) -> Path:
        return Path(reference)

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file() and not any(part.startswith(TEMP_PREFIX) for part in p.relative_to(base).parts))

    def folders(self, prefix: str) -> list[str]:
        base = self.path(prefix.rstrip("/"))
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) if base.is_dir() else []

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def modified(self, key: str) -> float:
        return self.path(key).stat().st_mtime

    def remove(self, key: str) -> None:
        target = self.path(key)
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)

    def _publish_folder(self, staging: Path, key: str, marker: str) -> None:
        # Built beside its destination (one filesystem: hard links and the rename work); a folder left
        # without its marker by a crash is replaced.
        final = self.path(key)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)

    @property
    def lancedb_uri(self) -> str:
        return str(self.path(LANCEDB))


class ObjectStore(ArtefactStore):
    """An fsspec URL (``s3://bucket/prefix``; any fsspec protocol works, which the tests use for
    ``memory://``), with a local scratch folder for the files code must open as files."""

    remote = True
    # Files above twice this size go up as a multipart upload of parts this size (S3's minimum part is 5 MiB).
    upload_part_bytes = 64 << 20

    def __init__(self, url: str, scratch: str | os.PathLike):
        import fsspec

        self.url = url.rstrip("/")
        self.scratch = Path(scratch).expanduser().absolute()
        # No listing cache: other processes and pods write to the same store, so every exists() asks it.
        # (fsspec reuses one filesystem instance per process for the same arguments, and a fresh one after a fork.)
        self.fs, root = fsspec.core.url_to_fs(self.url, use_listings_cache=False)
        self._root = root.rstrip("/")

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r}, scratch={str(self.scratch)!r})"

    def _full(self, key: str) -> str:
        return f"{self._root}/{key.strip('/')}"

    def ref(self, key: str) -> str:
        return f"{self.url}/{key.strip('/')}"

    def key_of(self, reference: str) -> str:
        if not reference.startswith(self.url + "/"):
            raise ValueError(f"{reference!r} is not on the object store {self.url}")
        return reference[len(self.url) + 1:]

    def cache_path(self, key: str) -> Path:
        return self.scratch / "cache" / key

    def staging_path(self, key: str) -> Path:
        return self.cache_path(key)

    def _upload(self, local: Path, key: str) -> None:
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if "s3" in protocols:
            self.fs.put_file(str(local), self._full(key), chunksize=self.upload_part_bytes)
        else:
            self.fs.put_file(str(local), self._full(key))

    def commit(self, key: str) -> str:
        self._upload(self.cache_path(key), key)
        return self.ref(key)

    def local_path(self, reference: str) -> Path:
        """A local copy of a stored file: downloaded once (atomically) and reused while the sizes match;
        a reference that is no URL is a local path already."""
        if not is_url(reference):
            return Path(reference)
        key = self.key_of(reference)
        cached = self.cache_path(key)
        if cached.is_file() and cached.stat().st_size == self.fs.size(self._full(key)):
            return cached
        with atomic_path(cached) as tmp:
            self.fs.get_file(self._full(key), str(tmp))
        return cached

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._full(key))

    def list(self, prefix: str) -> list[str]:
        base = self._full(prefix.rstrip("/"))
        if not self.fs.exists(base):
            return []
        return sorted(path[len(self._root) + 1:] for path in self.fs.find(base))

    def folders(self, prefix: str) -> list[str]:
        base = self._full(prefix.rstrip("/"))
        if not self.fs.exists(base):
            return []
        return sorted(entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in self.fs.ls(base, detail=True)
                      if entry["type"] == "directory")

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self._full(key))

    def modified(self, key: str) -> float:
        stamp = self.fs.modified(self._full(key))
        return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)

    def remove(self, key: str) -> None:
        full = self._full(key)
        if self.fs.exists(full):
            self.fs.rm(full, recursive=True)

    def _publish_folder(self, staging: Path, key: str, marker: str) -> None:
        # Every file, the marker last; then the folder stays as the scratch copy of those keys.
        # Re-uploading after a crash writes the same keys again: nothing is duplicated.
        files = sorted(p for p in staging.rglob("*") if p.is_file() and p.relative_to(staging).as_posix() != marker)
        for path in [*files, staging / marker]:
            self._upload(path, f"{key}/{path.relative_to(staging).as_posix()}")
        final = self.cache_path(key)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)

    @property
    def lancedb_uri(self) -> str:
        return self.ref(LANCEDB)

    @property
    def lancedb_options(self) -> dict | None:
        """LanceDB reads the ``AWS_*`` variables itself (``AWS_ENDPOINT_URL`` included) but refuses a plain
        http endpoint (an S3-compatible server inside the cluster, or the tests') unless told."""
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if not self.url.startswith("s3://") or not endpoint:
            return None
        return {"endpoint": endpoint, **({"allow_http": "true"} if endpoint.startswith("http://") else {})}


def scratch_folder(home: str | os.PathLike) -> Path:
    """``COSMOS_SCRATCH``, else ``COSMOS_HOME/scratch``: local copies of stored files, and work folders."""
    return Path(os.environ.get(SCRATCH_ENV) or Path(home) / "scratch").expanduser().absolute()


def open_store(home: str | os.PathLike, url: str | None = None, scratch: str | os.PathLike | None = None) -> ArtefactStore:
    """The store for ``COSMOS_HOME`` = ``home`` and an optional object store URL: a URL of the local
    filesystem (``file://`` or a plain path) is a local store rooted there, anything else an object store."""
    if not url:
        return LocalStore(home)
    if url.startswith("file://"):
        return LocalStore(url[len("file://"):])
    if not is_url(url):
        return LocalStore(url)
    return ObjectStore(url, scratch or scratch_folder(home))

