"""Curation's definitions: landed files to the versioned curated dataset (merged in ``cosmos_assets.definitions``)."""

import dagster as dg

from cosmos_assets.curation.assets import curation_job, filtered_clips, raw_videos, video_clips_and_scores
from cosmos_assets.curation.dataset_assets import (
    clip_captions,
    clip_embeddings,
    curated_dataset,
    dataset_job,
    deduplicated_clips,
    lancedb_unique_clip_ids,
)

defs = dg.Definitions(
    assets=[raw_videos, video_clips_and_scores, filtered_clips, clip_captions, clip_embeddings, deduplicated_clips,
            curated_dataset],
    asset_checks=[lancedb_unique_clip_ids],
    jobs=[curation_job, dataset_job],
)
