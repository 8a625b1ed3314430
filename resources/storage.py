"""Storage resources: the artefact store under ``COSMOS_HOME`` and the Parquet table IO manager."""


from pathlib import Path

import dagster as dg
import polars as pl

from cosmos_assets.common.files import atomic_path
from cosmos_assets.settings import CosmosPaths


class CosmosStorage(dg.ConfigurableResource):
    """The root folder that holds the landing zone, artefacts and tables (``COSMOS_HOME``)."""

    home: str

    @property
    def paths(self) -> CosmosPaths:
        return CosmosPaths(Path(self.home))


class ParquetTableIOManager(dg.ConfigurableIOManager):
    """Asset values are polars DataFrames stored as one Parquet file per asset and partition.

    Files are written atomically, so a crashed step never leaves a half table for the next one.
    """

    home: str

    def table_path(self, asset_key: dg.AssetKey, partition: str | None) -> Path:
        return CosmosPaths(Path(self.home)).tables.joinpath(*asset_key.path) / f"{partition or 'all'}.parquet"

    def handle_output(self, context: dg.OutputContext, table: pl.DataFrame) -> None:
        if table is None:
            return
        path = self.table_path(context.asset_key, context.partition_key if context.has_partition_key else None)
        with atomic_path(path) as tmp:
            table.write_parquet(tmp)
        context.add_output_metadata({"dagster/row_count": table.height, "table_path": str(path)})

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return pl.read_parquet(self.table_path(context.asset_key, partition))
