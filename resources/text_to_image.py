"""How the text-to-image loop runs in this profile: which rounds make images, the critic, the prompt inbox.

Read by ``text_to_image_sensor`` (what starts a round) and the text-to-image assets (their defaults; run config on
an asset overrides them per run). ``cosmos_assets.definitions`` sets the per-profile values.
"""

# No `from __future__ import annotations` here: Dagster reads the field annotations at class creation.

from typing import Literal

import dagster as dg
from pydantic import Field


class TextToImageSettings(dg.ConfigurableResource):
    dataset_rounds: bool = Field(
        default=False,
        description="Also make images for every generation round of a new curated dataset version (prompts from the "
                    "clips' captions per condition). Off: only prompt files dropped in $COSMOS_HOME/prompt_inbox start "
                    "image rounds (COSMOS_T2I_DATASET_ROUNDS=1 turns it on).")
    critic: Literal["metric", "reason", "rubric"] = Field(
        default="metric",
        description="metric: sharpness, exposure and noise of each image; reason: the `vlm` resource answering the "
                    "anomaly question about the image K times; rubric: the same model rating it 1-5.")
    prompt_settle_seconds: float = Field(
        default=10.0, description="A prompt file is taken once untouched this long (uploads in progress are not).")
