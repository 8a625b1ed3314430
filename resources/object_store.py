"""Object storage for the ``k8s`` profile: tables, artefacts and LanceDB under one URL, through fsspec.

``COSMOS_OBJECT_STORE_URL`` (e.g. ``s3://flywheel/prod``) names the store; below it live ``tables/``
(asset tables, the same layout as ``ParquetTableIOManager`` under ``COSMOS_HOME``), ``artefacts/``
(content-addressed files) and ``lancedb/`` (LanceDB opens the URL natively). Credentials never appear
here: s3fs and LanceDB read the standard ``AWS_*`` variables, which the deployment takes from a
Kubernetes Secret (or from the pod's cloud identity).

Steps that work on files (decoding, transcoding) do so in a local scratch folder and move whole
files in and out with ``get_file`` / ``put_file``. Any fsspec URL works, which is how the tests run
this code offline (``memory://``, local folders); ``s3://`` needs the ``s3fs`` package, which the
deployment image installs.
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import fsspec
import polars as pl

from cosmos_assets.common.files import atomic_path
from resources.storage import ParquetTableIOManager

OBJECT_STORE_ENV = "COSMOS_OBJECT_STORE_URL"


@dataclass(frozen=True)
class ObjectStore:
    """One store root; keys are ``/``-separated paths below it."""

    url: str

    def _filesystem(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, root = fsspec.core.url_to_fs(self.url)
        return fs, root.rstrip("/")

    def url_for(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key.lstrip('/')}"

    @property
    def lancedb_uri(self) -> str:
        """Where LanceDB tables live: on the same store, beside tables and artefacts."""
        return self.url_for("lancedb")

    def _target(self, key: str) -> tuple[fsspec.AbstractFileSystem, str, bool]:
        fs, root = self._filesystem()
        local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        return fs, f"{root}/{key.lstrip('/')}", local

    def exists(self, key: str) -> bool:
        fs, target, _ = self._target(key)
        return fs.exists(target)

    def put_file(self, local_path: str | os.PathLike, key: str) -> str:
        """Upload a finished local file. Object stores make an upload visible only once complete;
        on a local or mounted folder the file is written under a temporary name and renamed."""
        fs, target, local = self._target(key)
        if local:
            with atomic_path(target) as tmp:
                shutil.copyfile(local_path, tmp)
        else:
            fs.put_file(str(local_path), target)
        return self.url_for(key)

    def get_file(self, key: str, local_path: str | os.PathLike) -> Path:
        """Download to a local path, atomically: a crash leaves no half file under the real name."""
        fs, source, _ = self._target(key)
        with atomic_path(local_path) as tmp:
            fs.get_file(source, str(tmp))
        return Path(local_path)

    def write_parquet(self, table: pl.DataFrame, key: str) -> str:
        fs, target, local = self._target(key)
        if local:
            with atomic_path(target) as tmp:
                table.write_parquet(tmp)
        else:
            buffer = io.BytesIO()
            table.write_parquet(buffer)
            fs.pipe_file(target, buffer.getvalue())
        return self.url_for(key)

    def read_parquet(self, key: str) -> pl.DataFrame:
        fs, source, _ = self._target(key)
        with fs.open(source, "rb") as stream:
            return pl.read_parquet(stream)


def table_key(asset_key: dg.AssetKey, partition: str | None) -> str:
    """``tables/<asset>/<partition>.parquet``: the layout ``ParquetTableIOManager`` uses locally."""
    return "/".join(["tables", *asset_key.path, f"{partition or 'all'}.parquet"])


class ObjectStoreTableIOManager(dg.ConfigurableIOManager):
    """Asset tables as Parquet on an fsspec store, so step pods hand tables to each other through
    object storage instead of a shared disk."""

    url: str

    @property
    def store(self) -> ObjectStore:
        return ObjectStore(self.url)

    def handle_output(self, context: dg.OutputContext, table: pl.DataFrame) -> None:
        if table is None:
            return
        key = table_key(context.asset_key, context.partition_key if context.has_partition_key else None)
        url = self.store.write_parquet(table, key)
        context.add_output_metadata({"dagster/row_count": table.height, "table_path": url})

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return self.store.read_parquet(table_key(context.asset_key, partition))


def table_io_manager(profile: str, home: str) -> dg.ConfigurableIOManager:
    """The k8s profile keeps tables on the object store when ``COSMOS_OBJECT_STORE_URL`` is set;
    everything else (and k8s without a store) keeps them under ``COSMOS_HOME``."""
    url = os.environ.get(OBJECT_STORE_ENV)
    if profile == "k8s" and url:
        return ObjectStoreTableIOManager(url=url)
    return ParquetTableIOManager(home=home)
