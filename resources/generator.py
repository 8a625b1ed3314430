"""The video generator (Cosmos Predict2 / Predict 2.5 / Transfer 2.5) as a Dagster resource.

The model code lives in ``cosmos_assets.models.generator``; this resource only carries the configuration
and gives the loaded pipelines back when a run ends.
"""

# No `from __future__ import annotations` here: Dagster reads the field annotations at class creation.

from typing import Optional

import dagster as dg
from pydantic import Field

from cosmos_assets.models.generator import GENERATOR_KINDS, VideoGenerator, open_generator
from cosmos_assets.models.runtime import MODELS


class VideoGeneratorResource(dg.ConfigurableResource):
    """A Cosmos world model from a local checkpoint directory or a Hugging Face id already in the cache."""

    kind: str = Field(default="predict2", description=f"One of {', '.join(GENERATOR_KINDS)}.")
    model: str = Field(description="Checkpoint directory, or a Hugging Face model id already in the local cache.")
    revision: Optional[str] = Field(default=None, description="Hub revision (branch or commit) of `model`.")
    controlnets: Optional[dict[str, str]] = Field(
        default=None,
        description="Transfer 2.5: control name -> ControlNet directory or `model_id@revision`; "
                    "ControlNets inside the checkpoint's controlnets/ folder are found without this.",
    )
    device: str = "auto"
    dtype: str = "auto"
    # Overrides of the kind's defaults (cosmos_assets.models.generator.DEFAULTS); None keeps the default.
    steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    num_frames: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    fps: Optional[int] = None

    def get(self) -> VideoGenerator:
        return open_generator(
            self.kind, self.model, revision=self.revision, device=self.device, dtype=self.dtype,
            controlnets=self.controlnets, steps=self.steps, guidance_scale=self.guidance_scale,
            num_frames=self.num_frames, height=self.height, width=self.width, fps=self.fps,
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # Loaded models are shared per process; a run that ends gives their memory back.
        MODELS.release()
