"""Dagster resources: where artefacts and tables live, and the models that build them."""

from resources.models import EmbedderResource, ModelResource, ShotDetectorResource, VisionLanguageResource
from resources.storage import CosmosStorage, ParquetTableIOManager

__all__ = [
    "CosmosStorage",
    "EmbedderResource",
    "ModelResource",
    "ParquetTableIOManager",
    "ShotDetectorResource",
    "VisionLanguageResource",
]
