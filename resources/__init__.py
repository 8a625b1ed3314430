"""Dagster resources: where artefacts and tables live, and the models that build them."""

from resources.models import ShotDetectorResource
from resources.storage import CosmosStorage, ParquetTableIOManager

__all__ = ["CosmosStorage", "ParquetTableIOManager", "ShotDetectorResource"]
