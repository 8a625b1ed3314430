"""The synthetic loop's definitions: prompts, candidates, critique and acceptance, one partition per round
(merged in ``cosmos_assets.definitions``)."""

import dagster as dg

from cosmos_assets.synthetic.assets import (
    accepted_videos,
    accepted_videos_rates_in_bounds,
    critique_job,
    critique_scores,
    generation_job,
    generation_prompts,
    inbox_job,
    synthetic_videos,
)

defs = dg.Definitions(
    assets=[generation_prompts, synthetic_videos, critique_scores, accepted_videos],
    asset_checks=[accepted_videos_rates_in_bounds],
    jobs=[generation_job, critique_job, inbox_job],
)
