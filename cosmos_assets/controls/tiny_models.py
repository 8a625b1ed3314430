"""Tiny random-weight depth and segmentation models of the real architectures (``tiny:depth``,
``tiny:segmentation``), saved with ``save_pretrained`` (safetensors) and loaded back through the same
``from_pretrained`` path as real weights. Their control videos mean nothing and are labelled as such.

Depth: ``DepthAnythingForDepthEstimation`` with a DINOv2 backbone (the Depth Anything V2 design: four backbone
stages reassembled by a DPT neck, a relative-depth head), 4 layers of width 32. Segmentation:
``SegformerForSemanticSegmentation`` (a MiT encoder and the all-MLP decoder), two stages, 8 classes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cosmos_assets.models.checkpoints import write_tiny_marker

TINY_SEGMENTATION_CLASSES = 8


def build_tiny_depth(dest: Path, seed: int = 0) -> None:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=32,
                                 neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
                                 depth_estimation_type="relative")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DepthAnythingForDepthEstimation(config).eval()
    model.save_pretrained(dest, safe_serialization=True)
    # The real processor's behaviour (aspect kept, sides a multiple of the patch), at a tiny input size.
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(dest)
    write_tiny_marker(dest, role="depth control extractor", architecture="DepthAnythingForDepthEstimation", seed=seed)


def build_tiny_segmentation(dest: Path, seed: int = 0) -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                             patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=16, num_labels=TINY_SEGMENTATION_CLASSES)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SegformerForSemanticSegmentation(config).eval()
    model.save_pretrained(dest, safe_serialization=True)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(dest)
    write_tiny_marker(dest, role="segmentation control extractor", architecture="SegformerForSemanticSegmentation",
                      seed=seed)
