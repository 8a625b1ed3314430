"""How the synthetic loop runs in this profile: generator backend, critic, candidate size, the inbox.

Run config on the assets overrides any of these per run; this resource holds the profile's defaults
(``cosmos_assets.definitions`` sets them per ``COSMOS_PROFILE``).
"""

# No `from __future__ import annotations` here: Dagster reads the field annotations at class creation.

from typing import Literal, Optional

import dagster as dg
from pydantic import Field


class SyntheticSettings(dg.ConfigurableResource):
    generator_backend: Literal["classical", "generator"] = Field(
        default="classical",
        description="classical: weather and lighting rendered over the source clip on the CPU; generator: the "
                    "`generator` resource (Cosmos Transfer 2.5 / Predict2 / Predict 2.5 through diffusers).")
    critic: Literal["metric", "reason", "rubric", "cosmos3"] = Field(
        default="metric",
        description="metric: structure, motion, flicker and exposure measured against the source clip; reason: the "
                    "`vlm` resource answering the anomaly question K times; rubric: the same model rating 1-5; "
                    "cosmos3: the Reasoner of the Cosmos 3 checkpoint `critic_model` asked the anomaly question.")
    critic_model: Optional[str] = Field(
        default=None, description="cosmos3 critic: the Cosmos 3 checkpoint (directory, cached Hub id or tiny:cosmos3); "
                                  "unset: nvidia/Cosmos3-Nano.")
    use_promoted_critic: bool = Field(
        default=True,
        description="Once the critic loop has promoted a critic, critique_scores uses it (a feature critic scores "
                    "P(plausible); a Reason adapter is applied to the `vlm` model) unless a run names its critic.")
    max_width: int = Field(default=320, description="Candidate width (the source's aspect ratio is kept; multiples of 16).")
    seconds: float = Field(default=2.0, description="Candidate length in seconds (1 + 4k frames at `fps`).")
    fps: int = Field(default=16, description="Candidate frames per second.")
    inbox_settle_seconds: float = Field(default=10.0, description="How long inbox files must be untouched before they are taken.")
    inbox_missing_grace_seconds: float = Field(
        default=300.0, description="How long a manifest waits for the files it names before they are recorded as missing.")
