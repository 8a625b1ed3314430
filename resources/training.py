"""The trainer role: which generator is post-trained (its base checkpoint) and where it runs."""

from typing import Literal

from pydantic import Field

from cosmos_assets.models.catalog import resolve_model
from cosmos_assets.models.generator import load_pipeline
from cosmos_assets.training.trainer import TrainingConfig
from resources.config import field_from
from resources.models import ModelResource


class TrainerResource(ModelResource):
    """A Cosmos 2.5 generator (flow-matching LoRA; Predict2's EDM parameterisation is not trained here)."""

    kind: Literal["predict2.5", "transfer2.5"] = Field(
        default="predict2.5", description="Which Cosmos 2.5 generator is post-trained: predict2.5 or transfer2.5.")
    base_model: str = Field(default="nvidia/Cosmos-Predict2.5-2B",
                            description="A checkpoint directory, a Hugging Face id already in the cache, or tiny:predict2.5.")
    revision: str | None = Field(default=None, description="Hub revision (branch or commit) of `base_model`.")
    # Run sizes per profile (the local profile trains the tiny model for a few steps on the CPU);
    # the assets' own config can override each for one run.
    steps: int = field_from(TrainingConfig, "steps")
    warmup_steps: int = field_from(TrainingConfig, "warmup_steps")
    save_interval: int = field_from(TrainingConfig, "save_interval")
    frames: int = field_from(TrainingConfig, "frames")
    height: int = field_from(TrainingConfig, "height")
    width: int = field_from(TrainingConfig, "width")
    evaluation_steps: int = Field(default=35, description="Sampling steps per generation when a checkpoint is evaluated.")
    evaluation_clips: int = Field(default=4, description="Validation clips a checkpoint is evaluated on.")

    def pipeline(self):
        """(checkpoint, pipeline) of the base model, loaded once per process."""
        checkpoint = resolve_model(self.base_model, role=f"trainer base ({self.kind})", models_root=self.models_root,
                                   revision=self.revision)
        return checkpoint, load_pipeline(checkpoint, self.kind, self.torch_device(), self.torch_dtype())
