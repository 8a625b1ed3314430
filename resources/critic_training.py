"""How the critic is taught: read by ``critic_labels_sensor`` (which labels land, and whether curated clips give
self-supervised ones), ``critic_training_sensor`` (when enough new labels start a run) and the critic assets
(which backend trains and how long). ``cosmos_assets.definitions`` sets the per-profile defaults."""

# No `from __future__ import annotations` here: Dagster reads the field annotations at class creation.

from typing import Literal

import dagster as dg
from pydantic import Field


class CriticTrainingSettings(dg.ConfigurableResource):
    backend: Literal["feature", "reason"] = Field(
        default="feature",
        description="feature: a small critic over packaged EfficientNet-Lite0 features of frames and their differences, "
                    "trained on the CPU (the laptop default); reason: LoRA SFT (and GRPO when grpo_steps > 0) of the "
                    "`vlm` resource's Reason model.")
    min_new_labels: int = Field(
        default=200, description="Labels new since the last critic training run that start the next one.")
    self_supervised: bool = Field(
        default=True,
        description="Derive plausibility labels from each curated dataset version: the clips as they are (plausible) "
                    "and time-reversed, shuffled, frozen, stuttered and speed-jumped versions (implausible).")
    self_supervised_clips: int = Field(
        default=64, description="Most curated clips a dataset version lends to self-supervised labels (each gives "
                                "one plausible and up to five implausible videos).")
    label_settle_seconds: float = Field(
        default=10.0, description="A label file is taken once untouched this long (uploads in progress are not).")
    test_fraction: float = Field(default=0.3, description="Share of videos held out for critic_evaluation.")
    split_salt: str = Field(default="critic-split-1",
                            description="Decides which videos are held out; change it only to draw a new split.")
    grpo_steps: int = Field(default=0, description="GRPO steps after SFT (reason backend); 0: SFT only.")
    promotion_margin: float = Field(
        default=0.02, description="How much worse than its base the tuned critic may be on any measure and still be promoted.")
