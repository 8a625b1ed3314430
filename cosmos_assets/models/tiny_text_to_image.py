"""A tiny random-weight Cosmos-Predict2 Text2Image checkpoint (``Cosmos2TextToImagePipeline``), built on disk.

The same components as ``nvidia/Cosmos-Predict2-2B-Text2Image`` in diffusers' layout: a ``CosmosTransformer3DModel``
that denoises the Wan VAE's 16 latent channels directly (no condition-mask channel: nothing conditions a text-to-image
sample but the text), the Wan 2.1 VAE (``AutoencoderKLWan``), a T5 encoder with its tokenizer, and the flow-matching
Euler scheduler with Karras sigmas. Only the sizes and the weight values differ from the published checkpoint, so
``Cosmos2TextToImagePipeline.from_pretrained`` loads it exactly as it loads the real one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cosmos_assets.models.catalog import PREDICT2, PREDICT2_T2I
from cosmos_assets.models.tiny_generators import (
    LATENT_CHANNELS, TINY, TINY_T5, TinyPassThroughSafetyChecker, _build_atomically, build_t5_tokenizer, save_pipeline,
    t5_text_encoder, tiny_vae, transformer_config,
)

# Differences of the published 2B Text2Image transformer from Video2World (diffusers' Cosmos conversion script):
# latents only in (16 channels, no condition mask) and a larger spatial RoPE extrapolation for image sizes.
TEXT_TO_IMAGE_TRANSFORMER = dict(in_channels=LATENT_CHANNELS, rope_scale=(1.0, 4.0, 4.0))


def text_to_image_transformer_config() -> dict:
    """``CosmosTransformer3DModel`` arguments of the tiny Text2Image transformer."""
    return {**transformer_config(PREDICT2, TINY, TINY_T5.hidden_size, TINY_T5.num_layers), **TEXT_TO_IMAGE_TRANSFORMER}


def build_tiny_predict2_text_to_image(dest: Path, seed: int = 0, overwrite: bool = False) -> Path:
    """A tiny random ``Cosmos2TextToImagePipeline`` checkpoint at ``dest`` (safetensors, marked as tiny random)."""
    from diffusers import Cosmos2TextToImagePipeline, CosmosTransformer3DModel, FlowMatchEulerDiscreteScheduler

    def build(folder: Path) -> dict:
        torch.manual_seed(seed)
        tokenizer = build_t5_tokenizer()
        config = text_to_image_transformer_config()
        pipe = Cosmos2TextToImagePipeline(
            text_encoder=t5_text_encoder(TINY_T5, len(tokenizer)), tokenizer=tokenizer,
            transformer=CosmosTransformer3DModel(**config), vae=tiny_vae(),
            scheduler=FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True),
            safety_checker=TinyPassThroughSafetyChecker(),
        )
        save_pipeline(pipe, folder)
        return {"transformer": config, "text_encoder": "T5EncoderModel"}

    return _build_atomically(dest, PREDICT2_T2I, seed, overwrite, build)
