"""Cosmos generator checkpoints with random weights: tiny ones on disk for tests, real-size ones in memory for timing.

The tiny checkpoints use the real architectures (diffusers ``CosmosTransformer3DModel``, ``AutoencoderKLWan``,
``CosmosControlNetModel``, transformers' T5 encoder and Qwen2.5-VL) and the real scheduler of each pipeline,
shrunk to a few channels and layers, and are saved with ``save_pretrained(..., safe_serialization=True)`` in
the layout the published diffusers checkpoints use. Loading them therefore runs exactly the
``Pipeline.from_pretrained`` path that real weights take; only the sizes and the weight values differ.

Layout of a Transfer 2.5 checkpoint: the pipeline is saved without a ControlNet (as NVIDIA's conversion saves
it), and each control's ControlNet is a checkpoint of its own under ``controlnets/<control>/`` (on the Hub
they are separate revisions of the same repository).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos_assets.models.catalog import COSMOS3, CONTROLNETS_FOLDER, PIPELINE_CLASSES, PREDICT2, PREDICT25, TRANSFER25
from cosmos_assets.models.checkpoints import write_tiny_marker

# Controls the tiny Transfer checkpoint ships: the four of Transfer 2.5. Edge and blur videos come from plain
# image operations, depth and segmentation from the extractors of ``cosmos_assets.controls`` (tiny random
# depth / segmentation models in tests, labelled as such).
TINY_CONTROLS = ("edge", "blur", "depth", "seg")


class TinyPassThroughSafetyChecker:
    """Stands in for ``cosmos_guardrail.CosmosSafetyChecker`` where the weights are tiny and random.

    The output of random weights is noise that no guardrail model can judge, and the real guardrail needs
    multi-GB models. It is never used for real weights (``generator.py`` refuses that). Deliberately not an
    ``nn.Module``: ``save_pretrained`` then records no safety checker in ``model_index.json``, as in the
    published checkpoints, and nothing of it is ever written to disk.
    """

    def check_text_safety(self, prompt: str) -> bool:
        return True

    def check_video_safety(self, frames: np.ndarray) -> np.ndarray:
        return frames

    def to(self, *args, **kwargs) -> TinyPassThroughSafetyChecker:
        return self


# ---------------------------------------------------------------------------------------------------------
# Sizes. Everything not listed here is the real configuration (see diffusers' conversion script for Cosmos).


@dataclass(frozen=True)
class GeneratorSize:
    """The dimensions that make a Cosmos generator tiny or real-size."""

    num_attention_heads: int
    attention_head_dim: int
    num_layers: int
    adaln_lora_dim: int
    text_embed_dim: int  # the width of the text the transformer cross-attends to (T5 d_model for Predict2)
    rope_scale: tuple[float, float, float]
    controlnet_block_every_n: int  # Transfer: a control residual enters every n-th transformer block
    img_context_dim_in: int  # Transfer: image-context features (SigLIP width in the real model)
    img_context_num_tokens: int


TINY = GeneratorSize(
    num_attention_heads=2, attention_head_dim=16, num_layers=4, adaln_lora_dim=8, text_embed_dim=32,
    rope_scale=(1.0, 3.0, 3.0), controlnet_block_every_n=2, img_context_dim_in=8, img_context_num_tokens=4,
)
# Predict2 / Predict2.5 / Transfer2.5: head dim 128, text embed 1024, adaLN-LoRA 256 (cosmos_reference.md).
REAL_SIZES = {
    "2B": GeneratorSize(
        num_attention_heads=16, attention_head_dim=128, num_layers=28, adaln_lora_dim=256, text_embed_dim=1024,
        rope_scale=(1.0, 3.0, 3.0), controlnet_block_every_n=7, img_context_dim_in=1152, img_context_num_tokens=256,
    ),
    "14B": GeneratorSize(
        num_attention_heads=40, attention_head_dim=128, num_layers=36, adaln_lora_dim=256, text_embed_dim=1024,
        rope_scale=(20 / 24, 2.0, 2.0), controlnet_block_every_n=7, img_context_dim_in=1152, img_context_num_tokens=256,
    ),
}

LATENT_CHANNELS = 16  # Wan 2.1 VAE latents
CONTROLNET_IN_CHANNELS = 130  # control latents zero-padded to 128 channels, + condition mask + padding mask


@dataclass(frozen=True)
class TextEncoderSize:
    """Qwen2.5-VL (2.5 models) or T5 encoder (Predict2) sizes."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    head_dim: int  # T5's d_kv; unused by Qwen (hidden / heads)
    vocab_size: int | None  # None: the vocabulary of the tokenizer built alongside
    vision_depth: int
    vision_hidden: int
    vision_heads: int
    vision_intermediate: int
    mrope_section: tuple[int, int, int]


TINY_QWEN = TextEncoderSize(
    hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=32, head_dim=8, vocab_size=None,
    vision_depth=1, vision_hidden=16, vision_heads=2, vision_intermediate=32, mrope_section=(1, 1, 2),
)
REAL_QWEN = TextEncoderSize(  # Qwen2.5-VL-7B / Cosmos-Reason1-7B
    hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, intermediate_size=18944, head_dim=128,
    vocab_size=152064, vision_depth=32, vision_hidden=1280, vision_heads=16, vision_intermediate=3420,
    mrope_section=(16, 24, 24),
)
TINY_T5 = TextEncoderSize(
    hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_size=64, head_dim=8, vocab_size=None,
    vision_depth=0, vision_hidden=0, vision_heads=0, vision_intermediate=0, mrope_section=(0, 0, 0),
)
REAL_T5 = TextEncoderSize(  # the T5-11B encoder
    hidden_size=1024, num_layers=24, num_heads=128, num_kv_heads=128, intermediate_size=65536, head_dim=128,
    vocab_size=32128, vision_depth=0, vision_hidden=0, vision_heads=0, vision_intermediate=0, mrope_section=(0, 0, 0),
)


# ---------------------------------------------------------------------------------------------------------
# Components.


def transformer_config(kind: str, size: GeneratorSize, text_hidden: int, text_layers: int) -> dict:
    """``CosmosTransformer3DModel`` arguments for ``kind`` (video2world: latents + a condition-mask channel)."""
    config = dict(
        in_channels=LATENT_CHANNELS + 1, out_channels=LATENT_CHANNELS,
        num_attention_heads=size.num_attention_heads, attention_head_dim=size.attention_head_dim,
        num_layers=size.num_layers, mlp_ratio=4.0, text_embed_dim=size.text_embed_dim,
        adaln_lora_dim=size.adaln_lora_dim, max_size=(128, 240, 240), patch_size=(1, 2, 2),
        rope_scale=size.rope_scale, concat_padding_mask=True, extra_pos_embed_type=None,
    )
    if kind in (PREDICT25, TRANSFER25):
        # The 2.5 models read every Qwen layer's normalised hidden states, concatenated, through a projection.
        config.update(use_crossattn_projection=True, crossattn_proj_in_channels=text_hidden * text_layers,
                      encoder_hidden_states_channels=size.text_embed_dim)
    if kind == TRANSFER25:
        config.update(controlnet_block_every_n=size.controlnet_block_every_n,
                      img_context_dim_in=size.img_context_dim_in, img_context_num_tokens=size.img_context_num_tokens,
                      img_context_dim_out=size.num_attention_heads * size.attention_head_dim)
    return config


def controlnet_config(transformer: dict) -> dict:
    """``CosmosControlNetModel`` arguments matching a Transfer transformer: one control block per injection."""
    layers, every_n = transformer["num_layers"], transformer["controlnet_block_every_n"]
    return dict(
        n_controlnet_blocks=len(range(0, layers, every_n)), in_channels=CONTROLNET_IN_CHANNELS,
        latent_channels=transformer["in_channels"] + 1,
        model_channels=transformer["num_attention_heads"] * transformer["attention_head_dim"],
        num_attention_heads=transformer["num_attention_heads"], attention_head_dim=transformer["attention_head_dim"],
        mlp_ratio=transformer["mlp_ratio"], text_embed_dim=transformer["text_embed_dim"],
        adaln_lora_dim=transformer["adaln_lora_dim"], patch_size=transformer["patch_size"],
        max_size=transformer["max_size"], rope_scale=transformer["rope_scale"],
        extra_pos_embed_type=transformer["extra_pos_embed_type"],
        img_context_dim_in=transformer["img_context_dim_in"], img_context_dim_out=transformer["img_context_dim_out"],
        use_crossattn_projection=True, crossattn_proj_in_channels=transformer["crossattn_proj_in_channels"],
        encoder_hidden_states_channels=transformer["encoder_hidden_states_channels"],
    )


# Modules a ControlNet duplicates from its transformer (so it can run on its own device); NVIDIA's conversion
# copies their weights across, and so do the tiny builds.
SHARED_CONTROLNET_MODULES = {"patch_embed.": "patch_embed_base.", "time_embed.": "time_embed.",
                             "img_context_proj.": "img_context_proj.", "crossattn_proj.": "crossattn_proj."}


def share_transformer_weights(controlnet, transformer) -> None:
    shared = {}
    for key, value in transformer.state_dict().items():
        for source, target in SHARED_CONTROLNET_MODULES.items():
            if key.startswith(source):
                shared[target + key[len(source):]] = value
    result = controlnet.load_state_dict(shared, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"ControlNet has no modules for transformer weights {result.unexpected_keys}")


# The Wan 2.1 VAE's structure (8x spatial, 4x temporal compression, 16 latent channels) with 8 base channels;
# ``AutoencoderKLWan()`` with no arguments is the real one.
TINY_VAE = dict(base_dim=8, z_dim=LATENT_CHANNELS, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                temperal_downsample=[False, True, True])


def tiny_vae():
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(**TINY_VAE)


def qwen_text_encoder(size: TextEncoderSize, tokenizer, dtype: torch.dtype | None = None):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"))}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=size.vocab_size or len(tokenizer), hidden_size=size.hidden_size,
            intermediate_size=size.intermediate_size, num_hidden_layers=size.num_layers,
            num_attention_heads=size.num_heads, num_key_value_heads=size.num_kv_heads,
            rope_parameters={"rope_type": "default", "mrope_section": list(size.mrope_section), "rope_theta": 1e6},
            bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(depth=size.vision_depth, hidden_size=size.vision_hidden, num_heads=size.vision_heads,
                           intermediate_size=size.vision_intermediate, out_hidden_size=size.hidden_size),
        **ids,
    )
    return Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)


def t5_text_encoder(size: TextEncoderSize, vocab_size: int, dtype: torch.dtype | None = None):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=size.vocab_size or vocab_size, d_model=size.hidden_size, d_kv=size.head_dim,
                      d_ff=size.intermediate_size, num_layers=size.num_layers, num_heads=size.num_heads,
                      pad_token_id=0, eos_token_id=1)
    return T5EncoderModel._from_config(config, dtype=dtype)


# A few prompt-like sentences to learn sub-word pieces from; any text is still encodable (unknown pieces
# become <unk>), which is all a random-weight encoder needs.
_T5_CORPUS = [
    "A car drives along a wet highway at night while rain falls and headlights reflect on the road.",
    "A robot arm lifts a cardboard box from a conveyor belt and places it on a wooden pallet.",
    "Snow covers a quiet street; pedestrians cross at the traffic light as a truck turns left.",
    "Fog rolls over a field at dawn. The camera pans slowly to the right, following a cyclist.",
    "The video captures ugly scenes, static frames, motion blur, low resolution and poor lighting.",
    "A forklift moves between warehouse shelves; a worker in a yellow vest scans packages.",
]


def build_t5_tokenizer(vocab_size: int = 400):
    """An offline ``T5TokenizerFast``: a SentencePiece-style Unigram model trained on the spot.

    T5's id layout is kept (<pad>=0, </s>=1, <unk>=2) and </s> is appended to every sequence, as T5 does.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    trainer_model = Tokenizer(models.Unigram())
    trainer_model.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>",
                                      show_progress=False)
    trainer_model.train_from_iterator(_T5_CORPUS * 4, trainer=trainer)
    vocab = [(piece, score) for piece, score in json.loads(trainer_model.to_str())["model"]["vocab"]]
    if [piece for piece, _ in vocab[:3]] != specials:
        raise RuntimeError(f"unexpected special-token layout {vocab[:3]}")
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


# ---------------------------------------------------------------------------------------------------------
# Tiny checkpoints on disk.


def build_tiny_predict2(dest: Path, seed: int = 0, overwrite: bool = False) -> Path:
    """A tiny random ``Cosmos2VideoToWorldPipeline`` (Predict2 Video2World) checkpoint at ``dest``."""
    from diffusers import Cosmos2VideoToWorldPipeline, CosmosTransformer3DModel, FlowMatchEulerDiscreteScheduler

    def build(folder: Path) -> dict:
        torch.manual_seed(seed)
        tokenizer = build_t5_tokenizer()
        text_encoder = t5_text_encoder(TINY_T5, len(tokenizer))
        config = transformer_config(PREDICT2, TINY, TINY_T5.hidden_size, TINY_T5.num_layers)
        pipe = Cosmos2VideoToWorldPipeline(
            text_encoder=text_encoder, tokenizer=tokenizer, transformer=CosmosTransformer3DModel(**config),
            vae=tiny_vae(), scheduler=FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True),
            safety_checker=TinyPassThroughSafetyChecker(),
        )
        save_pipeline(pipe, folder)
        return {"transformer": config, "text_encoder": "T5EncoderModel"}

    return _build_atomically(dest, PREDICT2, seed, overwrite, build)


def build_tiny_predict25(dest: Path, seed: int = 0, overwrite: bool = False) -> Path:
    """A tiny random ``Cosmos2_5_PredictBasePipeline`` (Predict 2.5) checkpoint at ``dest``."""
    from diffusers import Cosmos2_5_PredictBasePipeline, CosmosTransformer3DModel

    def build(folder: Path) -> dict:
        torch.manual_seed(seed)
        tokenizer, text_encoder, vae, scheduler = _qwen_family_components()
        config = transformer_config(PREDICT25, TINY, TINY_QWEN.hidden_size, TINY_QWEN.num_layers)
        pipe = Cosmos2_5_PredictBasePipeline(
            text_encoder=text_encoder, tokenizer=tokenizer, transformer=CosmosTransformer3DModel(**config),
            vae=vae, scheduler=scheduler, safety_checker=TinyPassThroughSafetyChecker(),
        )
        save_pipeline(pipe, folder)
        return {"transformer": config, "text_encoder": "Qwen2_5_VLForConditionalGeneration"}

    return _build_atomically(dest, PREDICT25, seed, overwrite, build)


def build_tiny_transfer25(dest: Path, seed: int = 0, overwrite: bool = False, controls=TINY_CONTROLS) -> Path:
    """A tiny random ``Cosmos2_5_TransferPipeline`` checkpoint with one ``CosmosControlNetModel`` per control."""
    from diffusers import Cosmos2_5_TransferPipeline, CosmosControlNetModel, CosmosTransformer3DModel

    def build(folder: Path) -> dict:
        torch.manual_seed(seed)
        tokenizer, text_encoder, vae, scheduler = _qwen_family_components()
        config = transformer_config(TRANSFER25, TINY, TINY_QWEN.hidden_size, TINY_QWEN.num_layers)
        transformer = CosmosTransformer3DModel(**config)
        pipe = Cosmos2_5_TransferPipeline(
            text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae, scheduler=scheduler,
            controlnet=None, safety_checker=TinyPassThroughSafetyChecker(),
        )
        save_pipeline(pipe, folder)
        cn_config = controlnet_config(config)
        for index, control in enumerate(controls):
            torch.manual_seed(seed + 1 + index)  # each control its own weights
            controlnet = CosmosControlNetModel(**cn_config)
            share_transformer_weights(controlnet, transformer)
            control_folder = folder / CONTROLNETS_FOLDER / control
            controlnet.save_pretrained(control_folder, safe_serialization=True)
            write_tiny_marker(control_folder, role="generator controlnet", architecture="CosmosControlNetModel",
                              seed=seed + 1 + index, control=control)
        return {"transformer": config, "controlnet": cn_config, "controls": list(controls),
                "text_encoder": "Qwen2_5_VLForConditionalGeneration"}

    return _build_atomically(dest, TRANSFER25, seed, overwrite, build)


def build_tiny_cosmos3(dest: Path, seed: int = 0, overwrite: bool = False) -> Path:
    """A tiny random Cosmos 3 checkpoint (Generator + Reasoner); its layout lives in ``tiny_cosmos3``."""
    from cosmos_assets.models.tiny_cosmos3 import build_tiny_cosmos3 as build  # imported here: it imports this module

    return build(dest, seed, overwrite)


TINY_BUILDERS = {PREDICT2: build_tiny_predict2, PREDICT25: build_tiny_predict25, TRANSFER25: build_tiny_transfer25,
                 COSMOS3: build_tiny_cosmos3}


def _qwen_family_components():
    from diffusers import UniPCMultistepScheduler

    from cosmos_assets.models.tiny_tokenizer import build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer()
    return tokenizer, qwen_text_encoder(TINY_QWEN, tokenizer), tiny_vae(), predict25_scheduler(UniPCMultistepScheduler)


def predict25_scheduler(scheduler_class):
    # The 2.5 models' scheduler configuration, as NVIDIA's diffusers conversion writes it.
    return scheduler_class(use_karras_sigmas=True, use_flow_sigmas=True, prediction_type="flow_prediction",
                           sigma_max=200.0, sigma_min=0.01)


def save_pipeline(pipe, folder: Path) -> None:
    # Published Cosmos checkpoints name no safety checker (and Transfer no ControlNet) in model_index.json:
    # both are passed at load time. Recording them as absent keeps the pass-through object off the disk.
    absent = {name: (None, None) for name, value in pipe.components.items()
              if value is None or isinstance(value, TinyPassThroughSafetyChecker)}
    pipe.register_to_config(**absent)
    pipe.save_pretrained(folder, safe_serialization=True)


def _build_atomically(dest: Path, kind: str, seed: int, overwrite: bool, build) -> Path:
    """Build into a hidden sibling folder and rename it into place, so ``dest`` is never half-written."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass overwrite=True to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.building-{uuid.uuid4().hex[:8]}"
    try:
        details = build(staging)
        write_tiny_marker(staging, role="generator", architecture=PIPELINE_CLASSES[kind], seed=seed, kind=kind,
                          **details)
        if dest.exists():
            retired = dest.parent / f".{dest.name}.retired-{uuid.uuid4().hex[:8]}"
            os.replace(dest, retired)
            os.replace(staging, dest)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


# ---------------------------------------------------------------------------------------------------------
# Real-size random pipelines in memory (GPU timing: speed does not depend on the weight values).


def build_random_generator(kind: str, size: str = "2B", device: str | torch.device = "cuda",
                           dtype: torch.dtype = torch.bfloat16, *, generator_size: GeneratorSize | None = None,
                           text_encoder_size: TextEncoderSize | None = None, vae_config: dict | None = None):
    """The real-size architecture of ``kind`` with random weights, built on ``device`` and never saved.

    ``size`` picks the published dimensions ("2B" or "14B"); ``generator_size`` / ``text_encoder_size`` /
    ``vae_config`` override them (tests use a reduced size: a real-size model does not fit this CPU machine's time budget).
    Transfer 2.5 gets a ControlNet of the real size. The VAE is ``AutoencoderKLWan()`` with its defaults,
    which are the Wan 2.1 VAE's real dimensions. The safety checker is the pass-through: weights are random.
    """
    from diffusers import (AutoencoderKLWan, Cosmos2_5_PredictBasePipeline, Cosmos2_5_TransferPipeline,
                           Cosmos2VideoToWorldPipeline, CosmosControlNetModel, CosmosTransformer3DModel,
                           FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler)

    from cosmos_assets.models.tiny_tokenizer import build_qwen_tokenizer

    if kind not in PIPELINE_CLASSES:
        raise ValueError(f"kind {kind!r}; expected one of {', '.join(PIPELINE_CLASSES)}")
    dims = generator_size or REAL_SIZES[size]
    device = torch.device(device)
    tokenizer = build_t5_tokenizer() if kind == PREDICT2 else build_qwen_tokenizer()
    text_size = text_encoder_size or (REAL_T5 if kind == PREDICT2 else REAL_QWEN)
    config = transformer_config(kind, dims, text_size.hidden_size, text_size.num_layers)
    # Only the networks are created on the device (a 2B transformer and an 8B text encoder initialise in
    # seconds there); schedulers and pipelines keep their CPU bookkeeping tensors (UniPC turns them into numpy).
    with torch.device(device):
        if kind == PREDICT2:
            text_encoder = t5_text_encoder(text_size, len(tokenizer), dtype=dtype)
        else:
            text_encoder = qwen_text_encoder(text_size, tokenizer, dtype=dtype)
        transformer = CosmosTransformer3DModel(**config).to(dtype)
        vae = AutoencoderKLWan(**(vae_config or {})).to(dtype)
        controlnet = CosmosControlNetModel(**controlnet_config(config)).to(dtype) if kind == TRANSFER25 else None
    for network in (text_encoder, transformer, vae, controlnet):  # built in training mode: T5's dropout would be on
        if network is not None:
            network.eval()
    common = dict(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
                  safety_checker=TinyPassThroughSafetyChecker())
    if kind == PREDICT2:
        pipe = Cosmos2VideoToWorldPipeline(scheduler=FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True), **common)
    elif kind == PREDICT25:
        pipe = Cosmos2_5_PredictBasePipeline(scheduler=predict25_scheduler(UniPCMultistepScheduler), **common)
    else:
        pipe = Cosmos2_5_TransferPipeline(scheduler=predict25_scheduler(UniPCMultistepScheduler),
                                          controlnet=controlnet, **common)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
