"""When the generator is post-trained again, and on what mix: read by ``retraining_sensor`` (enough new
samples?) and by ``training_dataset`` (which samples)."""

import dagster as dg

from cosmos_assets.training.datasets import MixConfig
from resources.config import field_from


class RetrainingSettings(dg.ConfigurableResource):
    synthetic_share: float = field_from(MixConfig, "synthetic_share")
    min_new_samples: int = field_from(MixConfig, "min_new_samples")

    def mix(self) -> MixConfig:
        return MixConfig(self.synthetic_share, self.min_new_samples)
