"""Storage resources: where artefacts and tables live (``COSMOS_HOME``, or the object store named by
``COSMOS_OBJECT_STORE_URL``), and the Parquet table IO manager on the same store."""


from pathlib import Path
from typing import Optional

import dagster as dg
import polars as pl
from pydantic import Field

from cosmos_assets.common.artefacts import ArtefactStore, open_store, table_key
from cosmos_assets.settings import CosmosPaths

HOME_DESCRIPTION = ("COSMOS_HOME: the folder of the landing zone, the inboxes and their ledgers, models and the Dagster "
                    "instance; artefacts and tables too unless object_store_url is set.")
OBJECT_STORE_DESCRIPTION = ("Object store for artefacts, tables and LanceDB, e.g. s3://bucket/prefix (COSMOS_OBJECT_STORE_URL); "
                            "unset: below home.")


class CosmosStorage(dg.ConfigurableResource):
    """``home`` (``COSMOS_HOME``) holds the landing zone, the inboxes and their ledgers, models and the
    Dagster instance; artefacts, tables and LanceDB live in ``store``: below ``home`` too, unless
    ``object_store_url`` names an object store (then ``home/scratch``, or ``COSMOS_SCRATCH``, caches them)."""

    home: str = Field(description=HOME_DESCRIPTION)
    object_store_url: Optional[str] = Field(default=None, description=OBJECT_STORE_DESCRIPTION)

    @property
    def paths(self) -> CosmosPaths:
        return CosmosPaths(Path(self.home))

    @property
    def store(self) -> ArtefactStore:
        return open_store(self.home, self.object_store_url)


class ParquetTableIOManager(dg.ConfigurableIOManager):
    """Asset values are polars DataFrames stored as one Parquet file per asset and partition, at
    ``tables/<asset>/<partition>.parquet`` of the store: step processes (or pods) hand tables to each
    other through it. Written atomically (temp name + rename, or an upload that shows only once
    complete), so a crashed step never leaves a half table for the next one."""

    home: str = Field(description=HOME_DESCRIPTION)
    object_store_url: Optional[str] = Field(default=None, description=OBJECT_STORE_DESCRIPTION)

    @property
    def store(self) -> ArtefactStore:
        return open_store(self.home, self.object_store_url)

    def handle_output(self, context: dg.OutputContext, table: pl.DataFrame) -> None:
        if table is None:
            return
        key = table_key(context.asset_key.path, context.partition_key if context.has_partition_key else None)
        reference = self.store.write_parquet(key, table)
        context.add_output_metadata({"dagster/row_count": table.height, "table_path": reference})

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return self.store.read_parquet(table_key(context.asset_key.path, partition))
