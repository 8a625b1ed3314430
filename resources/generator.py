"""The video generator (Cosmos Predict2 / Predict 2.5 / Transfer 2.5) as a Dagster resource.

The model code lives in ``cosmos_assets.models.generator``; this resource only carries the configuration
and, as every ``ModelResource``, gives the loaded pipelines back when a run ends.
"""

# No `from __future__ import annotations` here: Dagster reads the field annotations at class creation.

from typing import Optional

from pydantic import Field

from cosmos_assets.models.catalog import GENERATOR_KINDS
from cosmos_assets.models.generator import VideoGenerator, open_generator
from cosmos_assets.models.generator_speedups import GeneratorSpeedups
from resources.models import ModelResource


class VideoGeneratorResource(ModelResource):
    """A Cosmos world model from a local checkpoint directory or a Hugging Face id already in the cache."""

    kind: str = Field(default="predict2", description=f"One of {', '.join(GENERATOR_KINDS)}.")
    model: str = Field(description="Checkpoint directory, or a Hugging Face model id already in the local cache.")
    revision: Optional[str] = Field(default=None, description="Hub revision (branch or commit) of `model`.")
    controlnets: Optional[dict[str, str]] = Field(
        default=None,
        description="Transfer 2.5: control name -> ControlNet directory or `model_id@revision`; "
                    "ControlNets inside the checkpoint's controlnets/ folder are found without this.",
    )
    # Overrides of the kind's defaults (cosmos_assets.models.generator.DEFAULTS); None keeps the default.
    steps: Optional[int] = Field(default=None, description="Sampling steps; unset: the kind's default.")
    guidance_scale: Optional[float] = Field(default=None, description="Classifier-free guidance scale; unset: the kind's default.")
    num_frames: Optional[int] = Field(default=None, description="Frames generated; unset: the kind's default.")
    height: Optional[int] = Field(default=None, description="Output height in pixels; unset: the kind's default.")
    width: Optional[int] = Field(default=None, description="Output width in pixels; unset: the kind's default.")
    fps: Optional[int] = Field(default=None, description="Output frames per second; unset: the kind's default.")
    # Speed switches of the transformer (cosmos_assets.models.generator_speedups; bench/GPU_RESULTS.md, "Speed (issue 8)").
    frame_adaln: bool = Field(default=True, description="adaLN conditioning once per latent frame, not per token.")
    attention_backend: str = Field(default="auto", description="Attention kernel: auto (FlashAttention-4 where "
                                                               "installed on Hopper+, else cuDNN first on Hopper), "
                                                               "flash4, default, cudnn, flash or efficient.")
    compile_transformer: str = Field(default="auto", description="Regional torch.compile of the transformer blocks: "
                                                                 "auto (CUDA only), on or off.")
    encode_conditioning_only: bool = Field(default=True, description="Predict2: the VAE encodes the conditioning "
                                                                     "frames, not the padding after them.")
    device_postprocess: bool = Field(default=True, description="Predict2: decoded frames become uint8 on the device.")
    # Approximations: faster, but the video is not the bf16 path's (bench/GPU_RESULTS.md, "Predict2 past the bf16
    # floor": the step cache is within the bf16 noise floor and on; FP8 is not, with it); each video made with one
    # says so in its settings ("approximations").
    fp8: str = Field(default="off", description="FP8 (e4m3, per-row scales) matrix products in the transformer blocks: "
                                                "off, auto (on where the GPU has FP8 tensor cores, compute capability "
                                                "8.9+) or on (warns and stays bf16 where it can't run).")
    step_cache: str = Field(default="first_block", description="first_block: skip the transformer's other blocks on "
                                                               "passes where the first block's residual changed less "
                                                               "than step_cache_threshold since the last full pass "
                                                               "(about half the passes of a 480p Predict2 video); off: "
                                                               "every pass runs every block.")
    step_cache_threshold: float = Field(default=0.05, description="step_cache: relative change (mean |Δ| / mean |r|) "
                                                                  "of the first block's residual under which a pass "
                                                                  "reuses the other blocks' last residual.")

    def get(self) -> VideoGenerator:
        speedups = GeneratorSpeedups(frame_adaln=self.frame_adaln, attention=self.attention_backend,
                                     compile=self.compile_transformer, conditioning_encode=self.encode_conditioning_only,
                                     device_postprocess=self.device_postprocess, fp8=self.fp8,
                                     step_cache=self.step_cache, step_cache_threshold=self.step_cache_threshold)
        return open_generator(
            self.kind, self.model, revision=self.revision, models_root=self.models_root, device=self.device, dtype=self.dtype,
            controlnets=self.controlnets, speedups=speedups, steps=self.steps, guidance_scale=self.guidance_scale,
            num_frames=self.num_frames, height=self.height, width=self.width, fps=self.fps,
        )


class ImageGeneratorResource(ModelResource):
    """Cosmos-Predict2 Text2Image (``Cosmos2TextToImagePipeline``): a checkpoint directory, a Hugging Face id already in
    the cache, or ``tiny:predict2-t2i``. Unset sizes and steps keep the model's defaults (768 x 1360, 35 steps, guidance 7)."""

    model: str = Field(description="Checkpoint directory, a cached Hugging Face id, or tiny:predict2-t2i.")
    revision: Optional[str] = Field(default=None, description="Hub revision (branch or commit) of `model`.")
    steps: Optional[int] = Field(default=None, description="Sampling steps; unset: 35.")
    guidance_scale: Optional[float] = Field(default=None, description="Classifier-free guidance scale; unset: 7.")
    height: Optional[int] = Field(default=None, description="Image height in pixels (a multiple of 16); unset: 768.")
    width: Optional[int] = Field(default=None, description="Image width in pixels (a multiple of 16); unset: 1360.")

    def get(self):
        from cosmos_assets.models.image_generator import open_image_generator

        return open_image_generator(self.model, revision=self.revision, models_root=self.models_root, device=self.device,
                                    dtype=self.dtype, steps=self.steps, guidance_scale=self.guidance_scale,
                                    height=self.height, width=self.width)
