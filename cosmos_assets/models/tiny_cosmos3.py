"""Cosmos 3 checkpoints with random weights: a tiny one on disk for tests, the real-size one in memory for timing.

A Cosmos 3 checkpoint here has two halves, each loaded by the library that publishes it:

- the Generator, a diffusers ``Cosmos3OmniPipeline`` (``Cosmos3OmniTransformer``: a Mixture-of-Transformers
  whose understanding pathway is the language model and whose generation pathway denoises video latents;
  the Wan 2.2 VAE, 16x spatial and 4x temporal compression, 48 latent channels; UniPC; the Qwen tokenizer) in the
  folder itself, as diffusers' ``save_pretrained`` lays it out;
- the Reasoner, transformers' ``Cosmos3OmniForConditionalGeneration`` (the Qwen3-VL architecture: a vision
  tower and the same language model) with its processor, in ``reasoner/``. NVIDIA publishes one unified
  checkpoint that both libraries read (each drops the other's keys); the tiny build writes each half with its own
  library (transformers saves the Reasoner under the same flat names the Generator uses) and gives the Reasoner's
  language model the very weights of the Generator's understanding pathway, so both halves are one model.

Both are saved with ``save_pretrained(..., safe_serialization=True)`` and load through exactly the
``from_pretrained`` calls real weights take; only sizes and weight values differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cosmos_assets.models.catalog import COSMOS3
from cosmos_assets.models.checkpoints import write_tiny_marker
from cosmos_assets.models.tiny_generators import TinyPassThroughSafetyChecker, _build_atomically, save_pipeline

REASONER_FOLDER = "reasoner"


@dataclass(frozen=True)
class Cosmos3Size:
    """The dimensions that make Cosmos 3 tiny or real-size (``Cosmos3OmniTransformer`` arguments)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    latent_channel: int
    rope_axes_dim: tuple[int, int, int]  # temporal, height, width rotary pairs: they sum to head_dim / 2
    rope_theta: float = 5_000_000.0
    vocab_size: int | None = None  # None: the vocabulary of the tokenizer built alongside
    hidden_act: str = "silu"  # silu: Qwen3 text model (Nano, Super); relu2: Nemotron (Edge)
    qk_norm_for_text: bool = True
    use_und_k_norm_for_gen: bool = False


TINY_COSMOS3 = Cosmos3Size(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                           intermediate_size=64, latent_channel=4, rope_axes_dim=(4, 2, 2))
# Cosmos3-Nano, the smallest published variant ("16B" on its model card: two 8B pathways of the Qwen3-VL-8B text
# model). These are the defaults of diffusers' Cosmos3OmniTransformer, which are the Nano configuration.
NANO = Cosmos3Size(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                   intermediate_size=12288, latent_channel=48, rope_axes_dim=(24, 20, 20), vocab_size=151936)
# Cosmos3-Edge ("4B"), the smallest: the Nemotron text model of transformers' Cosmos3EdgeTextConfig defaults (2048
# wide, 28 layers, squared-ReLU MLP, no q/k norm on text; its loader drops the generation pathway's k_norm_und_for_gen,
# so the Generator has one), doubled into diffusers' two pathways. Its VAE is assumed to be Nano's (Wan 2.2, 48 channels).
EDGE = Cosmos3Size(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                   intermediate_size=9216, latent_channel=48, rope_axes_dim=(24, 20, 20), rope_theta=100_000_000.0,
                   vocab_size=131072, hidden_act="relu2", qk_norm_for_text=False, use_und_k_norm_for_gen=True)
REAL_SIZES = {"nano": NANO, "edge": EDGE}
LATENT_PATCH = 2


def transformer_config(size: Cosmos3Size, vocab_size: int) -> dict:
    return dict(
        hidden_size=size.hidden_size, num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads, num_key_value_heads=size.num_key_value_heads,
        head_dim=size.head_dim, intermediate_size=size.intermediate_size, latent_channel=size.latent_channel,
        latent_patch_size=LATENT_PATCH, patch_latent_dim=size.latent_channel * LATENT_PATCH**2,
        rope_axes_dim=list(size.rope_axes_dim), rope_theta=size.rope_theta, vocab_size=size.vocab_size or vocab_size,
        hidden_act=size.hidden_act, qk_norm_for_text=size.qk_norm_for_text, use_und_k_norm_for_gen=size.use_und_k_norm_for_gen,
    )


def vae_config(size: Cosmos3Size) -> dict:
    """The Wan 2.2 VAE (patchified 2x2 input, residual blocks, 16x spatial compression): real channel widths for the
    real latent width, 8 channels for the tiny one. Latent statistics are identity: random weights have no others."""
    real = size.latent_channel == NANO.latent_channel
    return dict(
        base_dim=160 if real else 8, decoder_base_dim=256 if real else 8, z_dim=size.latent_channel,
        dim_mult=[1, 2, 4, 4] if real else [1, 1, 1, 1], num_res_blocks=2 if real else 1,
        temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
        scale_factor_spatial=16, scale_factor_temporal=4,
        latents_mean=[0.0] * size.latent_channel, latents_std=[1.0] * size.latent_channel,
    )


def scheduler():
    from diffusers import UniPCMultistepScheduler

    # Flow matching as the Cosmos 3 pipeline samples it (velocity prediction on flow sigmas).
    return UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=5.0)


def build_pipeline(size: Cosmos3Size, tokenizer, device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
    """A random ``Cosmos3OmniPipeline`` of ``size``; networks created on ``device`` (seconds there at real size)
    directly in ``dtype`` (a 16B model is not first made in float32)."""
    from diffusers import AutoencoderKLWan, Cosmos3OmniPipeline, Cosmos3OmniTransformer

    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype or default_dtype)
    try:
        with torch.device(device):
            transformer = Cosmos3OmniTransformer(**transformer_config(size, len(tokenizer)))
            vae = AutoencoderKLWan(**vae_config(size))
    finally:
        torch.set_default_dtype(default_dtype)
    pipe = Cosmos3OmniPipeline(transformer=transformer.eval(), text_tokenizer=tokenizer, vae=vae.eval(),
                               scheduler=scheduler(), safety_checker=TinyPassThroughSafetyChecker())
    pipe.set_progress_bar_config(disable=True)
    return pipe


# How the understanding pathway of the diffusers transformer names the weights the Reasoner's language model holds.
_UNDERSTANDING_TO_REASONER = {
    "self_attn.to_q.": "self_attn.q_proj.", "self_attn.to_k.": "self_attn.k_proj.", "self_attn.to_v.": "self_attn.v_proj.",
    "self_attn.to_out.": "self_attn.o_proj.", "self_attn.norm_q.": "self_attn.q_norm.", "self_attn.norm_k.": "self_attn.k_norm.",
    "mlp.": "mlp.", "input_layernorm.": "input_layernorm.", "post_attention_layernorm.": "post_attention_layernorm.",
}


def understanding_weights(transformer) -> dict[str, torch.Tensor]:
    """The Generator's understanding pathway under the Reasoner's (Qwen3-VL) names: the language model they share."""
    shared = {}
    for key, value in transformer.state_dict().items():
        if key.startswith("embed_tokens.") or key.startswith("norm."):
            shared[f"model.language_model.{key}"] = value
        elif key.startswith("lm_head."):
            shared[key] = value
        elif key.startswith("layers."):
            _, index, rest = key.split(".", 2)
            for source, target in _UNDERSTANDING_TO_REASONER.items():
                if rest.startswith(source):
                    shared[f"model.language_model.layers.{index}.{target}{rest[len(source):]}"] = value
    return shared


def build_reasoner(size: Cosmos3Size, tokenizer, transformer):
    """``Cosmos3OmniForConditionalGeneration`` whose language model is ``transformer``'s understanding pathway."""
    from transformers import Cosmos3OmniConfig, Cosmos3OmniForConditionalGeneration

    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"))}
    config = Cosmos3OmniConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=size.hidden_size, intermediate_size=size.intermediate_size,
            num_hidden_layers=size.num_hidden_layers, num_attention_heads=size.num_attention_heads,
            num_key_value_heads=size.num_key_value_heads, head_dim=size.head_dim,
            rope_parameters={"rope_type": "default", "rope_theta": size.rope_theta,
                             "mrope_section": list(size.rope_axes_dim), "mrope_interleaved": True},
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
        ),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=size.hidden_size,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, deepstack_visual_indexes=[0],
                           num_position_embeddings=64),
        **ids,
    )
    model = Cosmos3OmniForConditionalGeneration(config).eval()
    result = model.load_state_dict(understanding_weights(transformer), strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"the Reasoner has no parameters for {result.unexpected_keys}")
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def reasoner_processor(tokenizer):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    # Small pixel budgets keep the tiny Reasoner's visual token count low on a CPU.
    budget = {"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 64}
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, size=budget),
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2, size=budget),
        tokenizer=tokenizer, chat_template=tokenizer.chat_template,
    )


def build_tiny_cosmos3(dest: Path, seed: int = 0, overwrite: bool = False) -> Path:
    """A tiny random Cosmos 3 checkpoint at ``dest``: the Generator pipeline, and the Reasoner in ``reasoner/``."""
    from cosmos_assets.models.tiny_tokenizer import build_qwen_tokenizer

    def build(folder: Path) -> dict:
        torch.manual_seed(seed)
        tokenizer = build_qwen_tokenizer()
        pipe = build_pipeline(TINY_COSMOS3, tokenizer)
        save_pipeline(pipe, folder)
        reasoner = build_reasoner(TINY_COSMOS3, tokenizer, pipe.transformer)
        reasoner.save_pretrained(folder / REASONER_FOLDER, safe_serialization=True)
        reasoner_processor(tokenizer).save_pretrained(folder / REASONER_FOLDER)
        write_tiny_marker(folder / REASONER_FOLDER, role="critic (Cosmos 3 Reasoner)",
                          architecture="Cosmos3OmniForConditionalGeneration", seed=seed,
                          shares="the language model of the Generator's understanding pathway")
        return {"transformer": transformer_config(TINY_COSMOS3, len(tokenizer)), "vae": vae_config(TINY_COSMOS3),
                "reasoner": "Cosmos3OmniForConditionalGeneration"}

    return _build_atomically(dest, COSMOS3, seed, overwrite, build)
