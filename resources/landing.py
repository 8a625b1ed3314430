"""How the landing zone is watched and batched: read by ``landing_zone_sensor`` (settle rule, batch
limits) and by ``checkpoint_sensor`` (the same settle rule for the checkpoint inbox)."""

# No `from __future__ import annotations` here: Dagster reads the field annotations at class creation.

import dagster as dg
from pydantic import Field

FIRST_BATCH_FILES_ENV = "COSMOS_FIRST_BATCH_FILES"


class LandingZoneSettings(dg.ConfigurableResource):
    """How the landing zone is watched and batched. New files are batched smallest first."""

    settle_seconds: float = Field(
        default=10.0, description="A file is taken once untouched this long (uploads in progress are not).")
    max_files_per_batch: int = Field(
        default=50, description="Most files in one ingest batch (one dynamic partition of ingest_batches, one curation run).")
    max_bytes_per_batch: int = Field(default=8 * 1024**3, description="Most bytes in one ingest batch.")
    max_hash_bytes_per_tick: int = Field(
        default=4 * 1024**3, description="Bounds one sensor tick's reading; the rest waits for the next tick.")
    first_batch_files: int = Field(
        default=0,
        description=(
            "Files in the first batch of a drop; the rest of the drop is batched up to max_files_per_batch. "
            "Small values show a drop's first clips after one short run while the rest curates beside it, "
            "for one more partition per drop. 0: every batch up to max_files_per_batch "
            f"(the default; env {FIRST_BATCH_FILES_ENV})."
        ),
    )
