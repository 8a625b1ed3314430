"""``cosmos models build-tiny``: tiny random-weight checkpoints of every role's real architecture.

Each is saved with ``save_pretrained`` (safetensors) under ``$COSMOS_HOME/models/tiny/<role>`` and
marked as tiny random weights, then loaded back through exactly the ``from_pretrained`` path that
real weights take. They make the real model code run on a laptop CPU and in CI; their outputs mean
nothing, and everything they produce says so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from cosmos_assets.models.checkpoints import TINY_MARKER, write_tiny_marker
from cosmos_assets.models.tiny_tokenizer import build_qwen_tokenizer


def build_tiny_vlm(dest: Path, seed: int = 0) -> None:
    """Qwen2.5-VL (the Cosmos-Reason1 architecture) with a 2-layer text model and 2-block vision tower."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tokenizer = build_qwen_tokenizer()
    token_id = tokenizer.convert_tokens_to_ids
    text_hidden = 64
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": text_hidden,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            # head_dim 16 → 8 rotary pairs split over (time, height, width)
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1_000_000.0},
            "eos_token_id": token_id("<|im_end|>"),
            "pad_token_id": token_id("<|endoftext|>"),
            "bos_token_id": token_id("<|endoftext|>"),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": text_hidden,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = token_id("<|im_end|>")
    model.generation_config.pad_token_id = token_id("<|endoftext|>")
    # Small pixel budgets keep the tiny model's visual token count low on a CPU.
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64),
        video_processor=Qwen2VLVideoProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    model.save_pretrained(dest, safe_serialization=True)
    processor.save_pretrained(dest)
    write_tiny_marker(dest, role="vision-language model", architecture="Qwen2_5_VLForConditionalGeneration", seed=seed)


def build_tiny_siglip(dest: Path, seed: int = 0) -> None:
    """A SigLIP vision tower + image processor (the class of the GPU video embedder)."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=16,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SiglipVisionModel(config).eval()
    model.save_pretrained(dest, safe_serialization=True)
    SiglipImageProcessor(size={"height": 64, "width": 64}).save_pretrained(dest)
    write_tiny_marker(dest, role="video embedder", architecture="SiglipVisionModel", seed=seed)


def tiny_builders() -> dict[str, Callable[[Path, int], None]]:
    """Role directory name → builder. The generator pipelines and the FID / FVD networks come from their own modules."""
    from cosmos_assets.controls import tiny_models as control_models
    from cosmos_assets.models import feature_spaces, tiny_cosmos3, tiny_generators, tiny_text_to_image

    return {
        "depth": control_models.build_tiny_depth,
        "segmentation": control_models.build_tiny_segmentation,
        "vlm": build_tiny_vlm,
        "siglip": build_tiny_siglip,
        "predict2": tiny_generators.build_tiny_predict2,
        "predict2.5": tiny_generators.build_tiny_predict25,
        "transfer2.5": tiny_generators.build_tiny_transfer25,
        "predict2-t2i": tiny_text_to_image.build_tiny_predict2_text_to_image,
        "cosmos3": tiny_cosmos3.build_tiny_cosmos3,
        feature_spaces.TINY_INCEPTION: feature_spaces.build_tiny_inception_fid,
        feature_spaces.TINY_I3D: feature_spaces.build_tiny_i3d,
    }


def tiny_model_dir(models_root: Path, name: str) -> Path:
    return models_root / "tiny" / name


def ensure_tiny(models_root: Path, name: str, *, rebuild: bool = False) -> Path:
    """The tiny checkpoint ``name``, built on first use. Built in a temporary sibling and renamed into
    place, so a crash never leaves a half-written checkpoint that looks complete."""
    dest = tiny_model_dir(models_root, name)
    if (dest / TINY_MARKER).is_file() and not rebuild:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".tmp-{os.getpid()}-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    tiny_builders()[name](staging, 0)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staging, dest)
    return dest


def build_all_tiny(models_root: Path, *, rebuild: bool = False, names: list[str] | None = None) -> dict[str, Path]:
    return {name: ensure_tiny(models_root, name, rebuild=rebuild) for name in (names or tiny_builders())}
