"""The trainer role: which generator is post-trained (its base checkpoint) and where it runs."""

from typing import Literal, Optional

from pydantic import Field

from cosmos_assets.models.catalog import resolve_model
from cosmos_assets.models.generator import load_pipeline
from cosmos_assets.training.trainer import TrainingConfig
from resources.config import field_from
from resources.models import ModelResource, VisionLanguageResource


class TrainerResource(ModelResource):
    """The generator that is post-trained (LoRA: Predict2 with its EDM denoising loss, the 2.5 models by flow
    matching), and the VLM that judges whether its evaluation videos match their prompts."""

    kind: Literal["predict2", "predict2.5", "transfer2.5"] = Field(
        default="predict2.5", description="Which Cosmos generator is post-trained: predict2 (EDM), predict2.5 or "
                                          "transfer2.5 (flow matching).")
    base_model: str = Field(default="nvidia/Cosmos-Predict2.5-2B",
                            description="A checkpoint directory of the `kind`, a Hugging Face id already in the cache, "
                                        "or tiny:<kind>.")
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
    vlm: Optional[VisionLanguageResource] = Field(
        default=None, description="The VLM asked, per evaluation prompt, whether each generated video matches it "
                                  "(base and tuned); none: no prompt alignment in the evaluation.")

    def pipeline(self):
        """(checkpoint, pipeline) of the base model, loaded once per process."""
        checkpoint = resolve_model(self.base_model, role=f"trainer base ({self.kind})", models_root=self.models_root,
                                   revision=self.revision)
        return checkpoint, load_pipeline(checkpoint, self.kind, self.torch_device(), self.torch_dtype())
