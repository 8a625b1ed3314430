"""The image generator role: Cosmos-Predict2 Text2Image (``Cosmos2TextToImagePipeline``) turns a prompt into an image.

Loaded like every Cosmos generator (``generator.load_pipeline``): a verified local checkpoint through the pipeline's
own ``from_pretrained``, safetensors only, with the real ``cosmos_guardrail`` checker for real weights and the
pass-through only for tiny random checkpoints built here (whose every image is labelled).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cosmos_assets.models.catalog import PIPELINE_CLASSES, PREDICT2_T2I, TINY_PREFIX, resolve_model
from cosmos_assets.models.checkpoints import TINY_LABEL, Checkpoint, resolve_checkpoint
from cosmos_assets.models.generator import HOW_TO_PROVIDE, load_pipeline
from cosmos_assets.models.runtime import choose_device, choose_dtype

ROLE = "image generator"


@dataclass(frozen=True)
class ImageDefaults:
    """Predict2 Text2Image's own defaults (the diffusers pipeline's: 768 x 1360, 35 steps, guidance 7)."""

    height: int = 768
    width: int = 1360
    steps: int = 35
    guidance_scale: float = 7.0
    max_sequence_length: int = 512


@dataclass(frozen=True)
class GeneratedImage:
    image: np.ndarray  # uint8 H x W x 3
    settings: dict  # what made it: pipeline, checkpoint, seed, steps, guidance, size, tiny_random, ...


class ImageGenerator:
    """A loaded Text2Image pipeline with its defaults; ``generate`` makes one image per (prompt, seed)."""

    kind = PREDICT2_T2I

    def __init__(self, checkpoint: Checkpoint, pipeline, device: torch.device, dtype: torch.dtype,
                 defaults: ImageDefaults | None = None):
        self.checkpoint, self.pipeline, self.device, self.dtype = checkpoint, pipeline, device, dtype
        self.defaults = defaults or ImageDefaults()

    @property
    def identity(self) -> dict:
        """Who makes the images (the same fields a video candidate records)."""
        tiny = self.checkpoint.tiny_random
        return {"backend": self.kind, "generator": PIPELINE_CLASSES[self.kind], "model": self.checkpoint.name,
                "model_version": self.checkpoint.version, "checkpoint": self.checkpoint.label, "tiny_random": tiny,
                "label": TINY_LABEL if tiny else ""}

    def recipe(self) -> dict:
        """Everything besides prompt and seed that decides an image: the candidate id is derived from it."""
        return {**self.identity, "defaults": asdict(self.defaults)}

    def generate(self, prompt: str, seed: int, negative_prompt: str | None = None, height: int | None = None,
                 width: int | None = None) -> GeneratedImage:
        d = self.defaults
        height, width = height or d.height, width or d.width
        if height <= 0 or width <= 0 or height % 16 or width % 16:
            # Caught here with a clear message; the pipeline's own check raises deep inside the call.
            raise ValueError(f"height and width must be positive multiples of 16, got {height}x{width}")
        kwargs = dict(prompt=prompt, height=height, width=width, num_inference_steps=d.steps, guidance_scale=d.guidance_scale,
                      max_sequence_length=d.max_sequence_length, output_type="np",
                      # Seeded per image: the same prompt and seed give the same image, whatever ran before.
                      generator=torch.Generator(self.device).manual_seed(seed))
        if negative_prompt:
            kwargs["negative_prompt"] = negative_prompt
        with torch.inference_mode():
            images = self.pipeline(**kwargs).images
        image = np.clip(np.rint(np.asarray(images[0]) * 255.0), 0, 255).astype(np.uint8)
        if image.shape != (height, width, 3):
            raise RuntimeError(f"{PIPELINE_CLASSES[self.kind]} returned {image.shape}, expected {(height, width, 3)}")
        return GeneratedImage(image, {
            **self.identity, "seed": seed, "steps": d.steps, "guidance_scale": d.guidance_scale, "height": height,
            "width": width, "negative_prompt": negative_prompt, "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        })


def open_image_generator(model: str, revision: str | None = None, models_root: Path | None = None, device: str = "auto",
                         dtype: str = "auto", **default_overrides) -> ImageGenerator:
    """Resolve ``model`` (a directory, a Hub id already in the cache, or ``tiny:predict2-t2i`` built under
    ``models_root``) and load it; ``default_overrides`` replace ``ImageDefaults`` fields (None keeps the default)."""
    role = f"{ROLE} ({PREDICT2_T2I})"
    if model.startswith(TINY_PREFIX):
        checkpoint = resolve_model(model, role=role, models_root=models_root)
    else:
        checkpoint = resolve_checkpoint(model, role=role, revision=revision, how_to_provide=HOW_TO_PROVIDE)
    torch_device = choose_device(device)
    torch_dtype = choose_dtype(torch_device, dtype)
    pipeline = load_pipeline(checkpoint, PREDICT2_T2I, torch_device, torch_dtype)
    defaults = replace(ImageDefaults(), **{k: v for k, v in default_overrides.items() if v is not None})
    return ImageGenerator(checkpoint, pipeline, torch_device, torch_dtype, defaults)
