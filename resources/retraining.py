"""When the generator is post-trained again, and on what mix: read by ``retraining_sensor`` (enough new
samples?) and by ``training_dataset`` (which samples)."""

import dagster as dg
from pydantic import Field

from cosmos_assets.training.datasets import MixConfig


class RetrainingSettings(dg.ConfigurableResource):
    synthetic_share: float = Field(MixConfig.synthetic_share,
                                   description="At most this share of a training mix is accepted synthetic video.")
    min_new_samples: int = Field(MixConfig.min_new_samples,
                                 description="Retrain once this many samples are new since the last checkpoint's dataset.")

    def mix(self) -> MixConfig:
        return MixConfig(self.synthetic_share, self.min_new_samples)
