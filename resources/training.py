"""The trainer role: which generator is post-trained (its base checkpoint) and where it runs."""

from typing import Literal

from cosmos_assets.models.catalog import resolve_model
from cosmos_assets.models.generator import load_pipeline
from resources.models import ModelResource


class TrainerResource(ModelResource):
    """A Cosmos 2.5 generator (flow-matching LoRA; Predict2's EDM parameterisation is not trained here)."""

    kind: Literal["predict2.5", "transfer2.5"] = "predict2.5"
    base_model: str = "nvidia/Cosmos-Predict2.5-2B"  # a directory, a cached model id, or tiny:predict2.5
    revision: str | None = None
    # Run sizes per profile (the local profile trains the tiny model for a few steps on the CPU);
    # the assets' own config can override each for one run.
    steps: int = 10_000
    warmup_steps: int = 2000
    save_interval: int = 500
    frames: int = 93
    height: int = 704
    width: int = 1280
    evaluation_steps: int = 35
    evaluation_clips: int = 4

    def pipeline(self):
        """(checkpoint, pipeline) of the base model, loaded once per process."""
        checkpoint = resolve_model(self.base_model, role=f"trainer base ({self.kind})", models_root=self.models_root,
                                   revision=self.revision)
        return checkpoint, load_pipeline(checkpoint, self.kind, self.torch_device(), self.torch_dtype())
