"""Speed-ups of the video generator (diffusers ``CosmosTransformer3DModel``; Predict2, Predict 2.5 and Transfer 2.5
all use it), each switchable, each on the code path the CPU tests run:

- ``frame_adaln``: the pipelines give one timestep per latent frame (``[B, 1, T, 1, 1]``) and diffusers
  expands the conditioning to every token, so the adaLN MLPs (three per block and the output norm) run on all
  31,104 tokens of a 480p video. Here they run once per latent frame and the modulation is broadcast over the
  frame's tokens: the same arithmetic on T rows instead of T·H·W.
- ``attention``: which attention kernel runs. ``auto`` is FlashAttention-4 on Hopper or newer where the
  ``flash-attn-4`` package is installed (the deployment image has it), else cuDNN's SDPA kernel first on Hopper
  (faster than SDPA's flash kernel at these sequence lengths); same bf16 inputs and fp32 accumulation.
- ``compile``: regional ``torch.compile`` of the transformer block (the 28 blocks share one compiled graph),
  which fuses the elementwise work around the matrix products. ``auto``: on CUDA only.
- ``attention="flash4"``: the video self-attention through FlashAttention-4's CuTe kernels (the optional
  ``flash-attn-4`` package) in the ``[B, S, H, D]`` layout the projections produce, no transposes; cuDNN's order
  where it is not installed or the GPU is older than Hopper.
- The rotary embedding of a video shape is computed once, not on every pass (same values).
- Predict2 around the transformer: the VAE encodes the conditioning frames, not the padding repeated after them
  (``encode_conditioning_only``), and the decoded frames become uint8 on the device (``predict2_frames``).

Two switches change the video beyond bf16 rounding; every video made with one says so (``approximations``).
bench/GPU_RESULTS.md, "Predict2 past the bf16 floor", has their speed and quality against the noise floor of two bf16
attention kernels (a switch may be a default only within 3 dB of that floor's PSNR):

- ``step_cache="first_block"`` (the default; threshold 0.05): on each pass, the first block runs; if its residual
  (output − input) changed by less than ``step_cache_threshold`` (mean absolute change over mean absolute value) since
  the last pass that ran every block, the other blocks are skipped and their summed residual from that pass is added
  instead. The conditional and unconditional (CFG) passes keep separate caches; passes with ControlNet residuals are
  never cached. The test adapts to the model: where the features change faster, fewer passes are skipped. Measured
  (random-weight Predict2-2B, H200): half the passes skipped, 41.7 → 22.7 s per 480p video, 0.6 dB under the floor.
- ``fp8``: the blocks' large matrix products (attention projections, feed-forward) in FP8 e4m3 with one scale per
  row — per token for the activations, computed on each call, per output channel for the weights, computed once —
  through ``torch._scaled_mm`` (fp32 accumulation on the tensor cores). Needs a GPU with FP8 tensor cores (compute
  capability 8.9+): ``auto`` is off elsewhere, ``on`` warns and stays in bf16 there. Off by default: 6 % per video,
  at the edge of the floor alone and past it with the step cache.

The vision-language model's speed-ups are in ``vlm_speedups``.
"""

from __future__ import annotations

import functools
import logging
import types
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

STATE = "_cosmos_speedups"  # attribute on patched modules holding their settings and compiled blocks


# ---------------------------------------------------------------------------------------------------------
# Attention backend.


def resolve_attention(name: str, device: torch.device | str) -> str:
    """``auto``: FlashAttention-4 where it can run, else cuDNN first on Hopper or newer GPUs, else the PyTorch
    default order. ``flash4`` where FlashAttention-4 can't run (CPU, pre-Hopper GPUs, package not installed) falls
    back to SDPA as ``auto`` would, with a warning."""
    device = torch.device(device)
    if name in ("auto", "flash4") and flash4_available(device):
        return "flash4"
    if name == "flash4":
        log.warning("attention=flash4: FlashAttention-4 can't run on %s here; using SDPA", device)
        name = "auto"
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_available():
        major, _ = torch.cuda.get_device_capability(device)
        if major >= 9:
            _say_flash4_is_missing(str(device))
        return "cudnn" if major >= 9 else "default"
    return "default"


@functools.lru_cache(maxsize=None)
def _say_flash4_is_missing(device: str) -> None:
    """Once per device: a Hopper GPU without FlashAttention-4 runs ~5 % slower (bench/GPU_RESULTS.md)."""
    log.warning("FlashAttention-4 is not installed (pip install '.[gpu]'); the generator's attention on %s uses "
                "cuDNN through SDPA, about 5 %% slower per video", device)


def flash4_available(device: torch.device | str) -> bool:
    """FlashAttention-4 (``flash_attn.cute``) runs on Hopper and Blackwell GPUs, when the package is installed."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available() or torch.cuda.get_device_capability(device)[0] < 9:
        return False
    return _flash4_importable()


@functools.lru_cache(maxsize=1)
def _flash4_importable() -> bool:
    # Once per process: every generate resolves its settings, and a failed import would search sys.path again.
    try:
        import flash_attn.cute  # noqa: F401
    except Exception:  # not installed, or built for another CUDA / torch
        return False
    return True


@torch.library.custom_op("cosmos::flash4_attention", mutates_args=())
def flash4_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Non-causal attention of ``[B, S, H, D]`` tensors through FlashAttention-4. A custom op, so that a compiled
    block calls it as one opaque kernel (dynamo can't trace the CuTe DSL)."""
    from flash_attn.cute import flash_attn_func

    out = flash_attn_func(query, key, value)
    return out[0] if isinstance(out, tuple) else out


@flash4_attention.register_fake
def _flash4_attention_shape(query, key, value):
    return torch.empty_like(query)


@contextmanager
def attention_backend(name: str):
    """SDPA kernels in this order of preference (falling back down the list where a kernel can't run)."""
    if name in (None, "default"):
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    orders = {
        "cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
        "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH],
        "cudnn-only": [SDPBackend.CUDNN_ATTENTION],  # no fallback: fails where cuDNN can't run the call
    }
    if name == "flash4":  # the video self-attention calls FlashAttention-4; the text cross-attention stays on SDPA
        name = "cudnn"
    if name not in orders:
        raise ValueError(f"attention backend {name!r}; expected auto, default or one of {', '.join(orders)}")
    try:
        context = sdpa_kernel(orders[name], set_priority=True)
    except TypeError:  # older torch: no priorities, only the allowed set
        context = sdpa_kernel(orders[name])
    with context:
        yield


# ---------------------------------------------------------------------------------------------------------
# FP8 matrix products.

FP8_MAX = 448.0  # the largest finite float8_e4m3fn
FP8_STATE = "_cosmos_fp8"  # attribute on the transformer: the layers replaced and their originals
# The products that see every video token (M = 31k rows at 480p): self-attention projections, the cross-attention's
# query and output, the feed-forward. The text keys/values (512 rows) and the per-frame adaLN stay in bf16.
FP8_LAYERS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_out.0",
              "ff.net.0.proj", "ff.net.2")


def fp8_unsupported(device: torch.device | str) -> str | None:
    """Why FP8 matrix products can't run on ``device``, or None where they can."""
    device = torch.device(device)
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return f"torch {torch.__version__} has no FP8 matrix product"
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"FP8 tensor cores need a CUDA GPU, not {device}"
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        return f"FP8 tensor cores need compute capability 8.9 or newer (Ada, Hopper, Blackwell); {device} has {capability}"
    return None


def resolve_fp8(name: str, device: torch.device | str) -> str:
    """``auto``: on where FP8 can run, else off; ``on`` where it can't: off, with a warning."""
    if name == "off":
        return "off"
    reason = fp8_unsupported(device)
    if reason is None:
        return "on"
    if name == "on":
        _say_fp8_falls_back(reason)
    return "off"


@functools.lru_cache(maxsize=None)
def _say_fp8_falls_back(reason: str) -> None:
    log.warning("fp8=on: %s; the generator's matrix products stay in bf16", reason)


def quantize_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 e4m3 values and the fp32 scale of each row (its largest magnitude maps to 448): ``values ≈ q * scale``."""
    scale = values.detach().abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    quantized = (values.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return quantized, scale


def fp8_linear(x: torch.Tensor, weight_fp8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None,
               fast_accum: bool = False) -> torch.Tensor:
    """``x @ W.T + b`` with ``x`` quantized per row (token) here and ``W`` per row (output channel) beforehand."""
    rows = x.reshape(-1, x.shape[-1])
    quantized, scale = quantize_rows(rows)
    out = torch._scaled_mm(quantized, weight_fp8.t(), scale_a=scale, scale_b=weight_scale, out_dtype=x.dtype,
                           use_fast_accum=fast_accum)
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], out.shape[-1])


class Float8Linear(torch.nn.Module):
    """A ``torch.nn.Linear`` whose product runs in FP8 (``fp8_linear``) under ``no_grad``; with grad enabled it is the
    original bf16 product (no FP8 backward here). The original weight stays its parameter, so ``state_dict`` is
    unchanged; its FP8 copy is a non-persistent buffer, made again when the weight changes (``refresh``)."""

    def __init__(self, linear: torch.nn.Linear, fast_accum: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.fast_accum = fast_accum
        self.register_buffer("weight_fp8", None, persistent=False)
        self.register_buffer("weight_scale", None, persistent=False)
        self._quantized_from = None
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Quantize the weight again if it was replaced or written to since the last time."""
        source = (self.weight.data_ptr(), self.weight._version)
        if source != self._quantized_from:
            quantized, scale = quantize_rows(self.weight)
            self.weight_fp8, self.weight_scale = quantized, scale.view(1, -1)
            self._quantized_from = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        return fp8_linear(x, self.weight_fp8, self.weight_scale, self.bias, self.fast_accum)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 per-row, fast_accum={self.fast_accum}"


def set_fp8_layers(transformer, on: bool, fast_accum: bool = False) -> int:
    """Put ``Float8Linear`` in place of the blocks' ``FP8_LAYERS`` (``on``) or the original layers back; returns how
    many layers are FP8. Layers whose sizes are not multiples of 16 (the FP8 kernels' tiles) stay as they are."""
    installed = transformer.__dict__.get(FP8_STATE)
    if installed is not None and (not on or installed["fast_accum"] != fast_accum):
        for parent, name, original, _ in installed["layers"]:
            setattr(parent, name, original)
        transformer.__dict__.pop(FP8_STATE)
        installed = None
    if not on:
        return 0
    if installed is not None:
        for *_, layer in installed["layers"]:
            layer.refresh()
        return len(installed["layers"])
    layers = []
    for block in transformer.transformer_blocks:
        for path in FP8_LAYERS:
            parent_path, _, name = path.rpartition(".")
            try:
                parent = block.get_submodule(parent_path)
            except AttributeError:
                continue
            original = getattr(parent, name, None)
            if (type(original) is not torch.nn.Linear or original.in_features % 16 or original.out_features % 16):
                continue
            layer = Float8Linear(original, fast_accum)
            setattr(parent, name, layer)
            layers.append((parent, name, original, layer))
    transformer.__dict__[FP8_STATE] = {"fast_accum": fast_accum, "layers": layers}
    return len(layers)


# ---------------------------------------------------------------------------------------------------------
# Generator: the Cosmos transformer.


@dataclass(frozen=True)
class GeneratorSpeedups:
    """Switches of the generator's transformer; the defaults are what the generator resource uses."""

    frame_adaln: bool = True
    attention: str = "auto"  # auto | default | cudnn | flash | efficient | flash4
    compile: Literal["auto", "on", "off"] = "auto"
    compile_fullgraph: bool = True
    compile_backend: str = "inductor"  # tests trace with "eager" (no code generation)
    # Predict2 around the transformer (the same frames, bit for bit):
    conditioning_encode: bool = True  # the VAE encodes the conditioning frames, not the padding repeated after them
    device_postprocess: bool = True  # the VAE decode's conversion to uint8 frames on the device, not in numpy
    # Approximations (the video changes beyond bf16 rounding; measured in bench/predict2_fp8.py):
    fp8: Literal["off", "auto", "on"] = "off"  # FP8 matrix products in the blocks (GPUs of compute capability 8.9+)
    fp8_fast_accum: bool = False  # the FP8 products' faster, less exact accumulation mode on Hopper
    step_cache: Literal["off", "first_block"] = "first_block"
    step_cache_threshold: float = 0.05  # relative change of the first block's residual under which a pass is cached

    def __post_init__(self) -> None:
        if self.fp8 not in ("off", "auto", "on"):
            raise ValueError(f"fp8 {self.fp8!r}; expected off, auto or on")
        if self.step_cache not in ("off", "first_block"):
            raise ValueError(f"step_cache {self.step_cache!r}; expected off or first_block")
        if not self.step_cache_threshold >= 0:
            raise ValueError(f"step_cache_threshold must be >= 0, got {self.step_cache_threshold}")

    @classmethod
    def off(cls) -> GeneratorSpeedups:
        """The plain diffusers path."""
        return cls(frame_adaln=False, attention="default", compile="off", conditioning_encode=False, device_postprocess=False,
                   fp8="off", step_cache="off")

    def resolved(self, device: torch.device | str) -> GeneratorSpeedups:
        device = torch.device(device)
        compile_on = self.compile == "on" or (self.compile == "auto" and device.type == "cuda")
        return replace(self, attention=resolve_attention(self.attention, device), compile="on" if compile_on else "off",
                       fp8=resolve_fp8(self.fp8, device))

    @property
    def active(self) -> bool:
        return (self.frame_adaln or self.attention != "default" or self.compile == "on" or self.fp8 == "on"
                or self.step_cache != "off")


def apply_generator_speedups(transformer, speedups: GeneratorSpeedups, device: torch.device | str) -> GeneratorSpeedups:
    """Install (or remove) the fast forward on one ``CosmosTransformer3DModel``; returns the resolved settings.

    Idempotent: the same settings again change nothing (compiled blocks are kept); other settings replace them.
    """
    from diffusers import CosmosTransformer3DModel

    if not isinstance(transformer, CosmosTransformer3DModel):
        raise TypeError(f"generator speed-ups patch CosmosTransformer3DModel, not {type(transformer).__name__}")
    settings = speedups.resolved(device)
    set_fp8_layers(transformer, settings.fp8 == "on", settings.fp8_fast_accum)
    state = transformer.__dict__.get(STATE)
    if state is not None and state["settings"] == settings:
        state.pop("step_cache", None)  # each video starts without cached passes
        return settings
    if not settings.active:
        transformer.__dict__.pop("forward", None)  # back to the class's (diffusers') forward
        transformer.__dict__.pop(STATE, None)
        return settings
    blocks = None
    if settings.compile == "on":
        # Compiled blocks are kept across switching off and on again (no second compilation). The SDPA kernel
        # choice is baked in when a block is traced, so another attention backend gets freshly compiled blocks;
        # so do FP8 layers (other modules inside the blocks).
        key = (settings.attention, settings.compile_fullgraph, settings.compile_backend, settings.fp8,
               settings.fp8_fast_accum)
        kept = transformer.__dict__.get("_cosmos_compiled")
        if kept is not None and kept[0] == key:
            blocks = kept[1]
        else:
            if kept is not None:
                torch._dynamo.reset()
            blocks = [_CompiledBlock(block, settings.attention == "flash4") for block in transformer.transformer_blocks]
            for block in blocks:
                block.compile(dynamic=False, fullgraph=settings.compile_fullgraph, backend=settings.compile_backend)
            transformer.__dict__["_cosmos_compiled"] = (key, blocks)
    transformer.__dict__[STATE] = {"settings": settings, "blocks": blocks}
    transformer.forward = types.MethodType(_fast_transformer_forward, transformer)
    return settings


def _run_block(state: dict, index: int, block, args):
    compiled = state["blocks"]
    if compiled is None:
        return _block_forward(block, *args, flash4=state["settings"].attention == "flash4")
    if state.get("verified"):
        return compiled[index](*args)
    try:  # the first pass compiles; if compilation fails here, the same blocks run eagerly
        return compiled[index](*args)
    except Exception as error:
        log.warning("torch.compile of the transformer blocks failed; running them eagerly: %s: %s",
                    error.__class__.__name__, error)
        state["blocks"], state["compile_error"] = None, f"{error.__class__.__name__}: {error}"[:500]
        return _block_forward(block, *args, flash4=state["settings"].attention == "flash4")


def _blocks_with_step_cache(transformer, state: dict, hidden_states, rest: tuple, timestep, branch: torch.Tensor):
    """Every block, or the first one plus the other blocks' summed residual from the last full pass of this branch
    (first-block cache; ``GeneratorSpeedups.step_cache``). One device sync per pass reads the decision."""
    settings: GeneratorSpeedups = state["settings"]
    blocks = transformer.transformer_blocks
    first = _run_block(state, 0, blocks[0], (hidden_states, *rest, None))
    first_residual = first - hidden_states
    caches = state.setdefault("step_cache", {})
    stats = caches.setdefault("stats", {"passes": 0, "skipped": 0, "changes": []})
    key = (branch.data_ptr(), tuple(branch.shape), tuple(hidden_states.shape))
    entry = caches.get(key)
    noise_level = timestep.detach().float().amax()  # the pass's largest timestep: falls from step to step
    if entry is not None:
        reference = entry["first_residual"]
        change = ((first_residual - reference).abs().mean(dtype=torch.float32)
                  / reference.abs().mean(dtype=torch.float32).clamp_min(1e-12))
        change, level = torch.stack([change, noise_level]).tolist()
    else:
        change, level = None, float(noise_level)
    # A timestep no lower than the last one is a new sampling run (or the same pass again): start over.
    if entry is not None and level < entry["level"] and change < settings.step_cache_threshold:
        out = first + entry["tail"]
        entry["level"] = level
        stats["skipped"] += 1
    else:
        out = first
        for index in range(1, len(blocks)):
            out = _run_block(state, index, blocks[index], (out, *rest, None))
        caches[key] = {"first_residual": first_residual, "tail": out - first, "level": level}
    stats["passes"] += 1
    stats["changes"].append(None if change is None else round(change, 5))
    return out


def step_cache_stats(transformer) -> dict | None:
    """Passes run and skipped since the last ``apply_generator_speedups`` (one video), with each pass's measured
    change of the first block's residual; None when the step cache is off."""
    state = transformer.__dict__.get(STATE)
    if state is None or state["settings"].step_cache == "off":
        return None
    stats = state.get("step_cache", {}).get("stats", {"passes": 0, "skipped": 0, "changes": []})
    return {"threshold": state["settings"].step_cache_threshold, **stats}


def approximations(transformer) -> dict:
    """What made the last video differ from the bf16 path beyond rounding (for the video's settings): FP8 layers and
    the step cache's skipped passes. Empty when neither is on."""
    state = transformer.__dict__.get(STATE)
    if state is None:
        return {}
    settings: GeneratorSpeedups = state["settings"]
    found = {}
    if settings.fp8 == "on":
        found["fp8"] = {"format": "e4m3, per-row scales", "layers": len(transformer.__dict__.get(FP8_STATE, {}).get("layers", ())),
                        "fast_accum": settings.fp8_fast_accum}
    stats = step_cache_stats(transformer)
    if stats is not None:
        found["step_cache"] = {"kind": settings.step_cache, "threshold": stats["threshold"],
                               "passes": stats["passes"], "skipped": stats["skipped"]}
    return found


class _CompiledBlock(torch.nn.Module):
    """One transformer block through ``_block_forward``; compiled per instance, traced once for all of them."""

    def __init__(self, block, flash4: bool) -> None:
        super().__init__()
        self.block, self.flash4 = block, flash4

    def forward(self, *args):
        return _block_forward(self.block, *args, flash4=self.flash4)


def _modulation(norm, embedded, temb):
    """adaLN(-Zero) parameters per conditioning row: ``embedded`` [B, G, C] -> chunks of [B, G, C]."""
    values = norm.linear_2(norm.linear_1(norm.activation(embedded)))
    if temb is not None:
        values = values + temb[..., : values.shape[-1]]
    return values.chunk(values.shape[-1] // embedded.shape[-1], dim=-1)


def _modulate(layer_norm, x, shift, scale):
    """``norm(x) * (1 + scale) + shift`` with one row of ``shift``/``scale`` per group of consecutive tokens."""
    batch, tokens, channels = x.shape
    groups = shift.shape[1]
    normed = layer_norm(x).view(batch, groups, tokens // groups, channels)
    return (normed * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)).view(batch, tokens, channels)


def _gated_add(x, gate, update):
    batch, tokens, channels = x.shape
    groups = gate.shape[1]
    shape = (batch, groups, tokens // groups, channels)
    return (x.view(shape) + gate.unsqueeze(2) * update.view(shape)).view(batch, tokens, channels)


def _attention(attn, x, context=None, mask=None, rotary=None, flash4=False):
    """``CosmosAttnProcessor2_0`` (self- and text cross-attention) without its copies; other processors as they are."""
    from diffusers.models.transformers.transformer_cosmos import CosmosAttnProcessor2_0

    if flash4 and context is None and mask is None and isinstance(attn.processor, CosmosAttnProcessor2_0):
        return _flash4_self_attention(attn, x, rotary)

    if not isinstance(attn.processor, CosmosAttnProcessor2_0):
        if context is None:
            return attn(x, image_rotary_emb=rotary)
        return attn(x, encoder_hidden_states=context, attention_mask=mask)
    from diffusers.models.embeddings import apply_rotary_emb

    source = x if context is None else context
    query = attn.norm_q(attn.to_q(x).unflatten(2, (attn.heads, -1)).transpose(1, 2))
    key = attn.norm_k(attn.to_k(source).unflatten(2, (attn.heads, -1)).transpose(1, 2))
    value = attn.to_v(source).unflatten(2, (attn.heads, -1)).transpose(1, 2)
    if rotary is not None:
        query = apply_rotary_emb(query, rotary, use_real=True, use_real_unbind_dim=-2)
        key = apply_rotary_emb(key, rotary, use_real=True, use_real_unbind_dim=-2)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
    out = out.transpose(1, 2).flatten(2, 3).type_as(query)
    return attn.to_out[1](attn.to_out[0](out))


def _flash4_self_attention(attn, x, rotary):
    """The video self-attention in the ``[B, S, H, D]`` layout the projections give and FlashAttention-4 takes:
    the same arithmetic as ``_attention`` without the two transposes in and the one out."""
    from diffusers.models.embeddings import apply_rotary_emb

    query = attn.norm_q(attn.to_q(x).unflatten(2, (attn.heads, -1)))
    key = attn.norm_k(attn.to_k(x).unflatten(2, (attn.heads, -1)))
    value = attn.to_v(x).unflatten(2, (attn.heads, -1))
    if rotary is not None:
        query = apply_rotary_emb(query, rotary, use_real=True, use_real_unbind_dim=-2, sequence_dim=1)
        key = apply_rotary_emb(key, rotary, use_real=True, use_real_unbind_dim=-2, sequence_dim=1)
    out = flash4_attention(query.contiguous(), key.contiguous(), value.contiguous())
    return attn.to_out[1](attn.to_out[0](out.flatten(2, 3).type_as(query)))


def _block_forward(block, x, context, embedded, temb, rotary, extra_pos, mask, residual, flash4=False):
    """``CosmosTransformerBlock.forward`` with conditioning per group of tokens (a latent frame, or the whole video)."""
    if extra_pos is not None:
        x = x + extra_pos
    shift, scale, gate = _modulation(block.norm1, embedded, temb)
    x = _gated_add(x, gate, _attention(block.attn1, _modulate(block.norm1.norm, x, shift, scale), rotary=rotary,
                                       flash4=flash4))
    shift, scale, gate = _modulation(block.norm2, embedded, temb)
    x = _gated_add(x, gate, _attention(block.attn2, _modulate(block.norm2.norm, x, shift, scale), context, mask))
    shift, scale, gate = _modulation(block.norm3, embedded, temb)
    x = _gated_add(x, gate, block.ff(_modulate(block.norm3.norm, x, shift, scale)))
    if residual is not None:
        x = x + residual
    return x


def _rotary_embedding(transformer, state: dict, hidden_states: torch.Tensor, fps):
    """``transformer.rope`` depends only on the video's shape, the fps and the device: computed once per video shape
    (the pipeline's 70 passes otherwise rebuild the same 31k-row tables each time)."""
    key = (tuple(hidden_states.shape[2:]), fps, hidden_states.device)
    cached = state.get("rope")
    if cached is None or cached[0] != key:
        state["rope"] = cached = (key, transformer.rope(hidden_states, fps=fps))
    return cached[1]


def _fast_transformer_forward(self, hidden_states, timestep, encoder_hidden_states, block_controlnet_hidden_states=None,
                              attention_mask=None, fps=None, condition_mask=None, padding_mask=None, return_dict=True):
    """``CosmosTransformer3DModel.forward`` (diffusers 0.42) with the switches of ``GeneratorSpeedups``."""
    from diffusers.models.modeling_outputs import Transformer2DModelOutput
    from torchvision import transforms

    state = self.__dict__[STATE]
    settings: GeneratorSpeedups = state["settings"]
    if (torch.is_grad_enabled() and self.gradient_checkpointing) or timestep.ndim not in (1, 5) or any(
            b.before_proj is not None or b.after_proj is not None for b in self.transformer_blocks[:1]):
        return type(self).forward(self, hidden_states, timestep, encoder_hidden_states, block_controlnet_hidden_states,
                                  attention_mask, fps, condition_mask, padding_mask, return_dict)
    with attention_backend(settings.attention):
        batch_size, _, num_frames, height, width = hidden_states.shape
        if condition_mask is not None:
            hidden_states = torch.cat([hidden_states, condition_mask], dim=1)
        if self.config.concat_padding_mask:
            padding_mask_resized = transforms.functional.resize(
                padding_mask, list(hidden_states.shape[-2:]), interpolation=transforms.InterpolationMode.NEAREST)
            hidden_states = torch.cat(
                [hidden_states, padding_mask_resized.unsqueeze(2).repeat(batch_size, 1, num_frames, 1, 1)], dim=1)
        if attention_mask is not None:
            attention_mask = attention_mask.unsqueeze(1).unsqueeze(1)  # [B, 1, 1, S]
        image_rotary_emb = _rotary_embedding(self, state, hidden_states, fps)
        extra_pos_emb = self.learnable_pos_embed(hidden_states) if self.config.extra_pos_embed_type else None

        p_t, p_h, p_w = self.config.patch_size
        post_t, post_h, post_w = num_frames // p_t, height // p_h, width // p_w
        hidden_states = self.patch_embed(hidden_states).flatten(1, 3)  # [B, T·H·W, C]
        tokens = hidden_states.shape[1]

        # Conditioning rows: one per sample ([B] timesteps) or one per latent frame ([B, 1, T, 1, 1]).
        if timestep.ndim == 1:
            temb, embedded = (x.unsqueeze(1) for x in self.time_embed(hidden_states, timestep))
        else:
            if timestep.shape != (batch_size, 1, num_frames, 1, 1) or p_t != 1:
                raise ValueError(f"Expected timestep of shape [B, 1, T, 1, 1] with temporal patch 1, got {tuple(timestep.shape)}")
            temb, embedded = (x.view(batch_size, post_t, -1) for x in self.time_embed(hidden_states, timestep.flatten()))
            if not settings.frame_adaln:  # diffusers' layout: the per-frame rows copied to every token
                temb, embedded = (x.unsqueeze(2).expand(-1, -1, tokens // post_t, -1).reshape(batch_size, tokens, -1)
                                  for x in (temb, embedded))

        text_context, img_context = (encoder_hidden_states if isinstance(encoder_hidden_states, tuple)
                                     else (encoder_hidden_states, None))
        if self.config.use_crossattn_projection:
            text_context = self.crossattn_proj(text_context)
        if img_context is not None and self.config.img_context_dim_in:
            img_context = self.img_context_proj(img_context)
        context = (text_context, img_context) if isinstance(encoder_hidden_states, tuple) else text_context

        residuals = {}
        if block_controlnet_hidden_states is not None:
            every = self.config.controlnet_block_every_n
            residuals = {block_idx: block_controlnet_hidden_states[i]
                         for i, block_idx in enumerate(range(0, len(self.transformer_blocks), every))}

        rest = (context, embedded, temb, image_rotary_emb, extra_pos_emb, attention_mask)
        if settings.step_cache == "first_block" and not residuals:
            # The pipelines pass the same prompt tensor on every step: the conditional and unconditional passes of CFG
            # are told apart by it (before any projection, which makes a new tensor on each pass).
            branch = encoder_hidden_states[0] if isinstance(encoder_hidden_states, tuple) else encoder_hidden_states
            hidden_states = _blocks_with_step_cache(self, state, hidden_states, rest, timestep, branch)
        else:  # ControlNet residuals change every step and enter blocks a cached pass would skip: never cached
            for index, block in enumerate(self.transformer_blocks):
                hidden_states = _run_block(state, index, block, (hidden_states, *rest, residuals.get(index)))
        state["verified"] = True

        norm = self.norm_out
        shift, scale = _modulation(norm, embedded, temb)
        hidden_states = self.proj_out(_modulate(norm.norm, hidden_states, shift, scale))
        hidden_states = hidden_states.unflatten(2, (p_h, p_w, p_t, -1))
        hidden_states = hidden_states.unflatten(1, (post_t, post_h, post_w))
        hidden_states = hidden_states.permute(0, 7, 1, 6, 2, 4, 3, 5)  # diffusers' (correct) unpatchify order
        hidden_states = hidden_states.flatten(6, 7).flatten(4, 5).flatten(2, 3)
    if not return_dict:
        return (hidden_states,)
    return Transformer2DModelOutput(sample=hidden_states)


# ---------------------------------------------------------------------------------------------------------
# Generator: around the transformer (Predict2 Video2World).


@contextmanager
def encode_conditioning_only(vae, conditioning_frames: int, temporal: int = 4):
    """While active, ``vae.encode`` of a video whose frames after the first ``conditioning_frames`` repeat the last
    of them (the Video2World pipeline's padding to the output length) encodes only those frames and pads the latent
    distribution's parameters to the full length.

    The Wan VAE is causal in time, so the conditioning latents are the same bits; the padded latent frames are
    multiplied by a zero condition indicator in the pipeline, and sampling the distribution draws the same noise
    (same shape), so the video is the same. Any other input is encoded as it is.
    """
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from diffusers.models.modeling_outputs import AutoencoderKLOutput

    original = vae.encode
    keep = 1 + temporal * -(-(max(conditioning_frames, 1) - 1) // temporal)  # whole causal chunks: 1 + 4k frames

    def encode(x, return_dict: bool = True):
        frames = x.shape[2]
        tail = x[:, :, keep:]
        if keep >= frames or not torch.equal(tail, x[:, :, keep - 1:keep].expand_as(tail)):
            return original(x, return_dict=return_dict)
        parameters = original(x[:, :, :keep]).latent_dist.parameters
        missing = (frames - 1) // temporal + 1 - parameters.shape[2]
        padded = torch.cat([parameters, parameters[:, :, -1:].expand(-1, -1, missing, -1, -1)], dim=2)
        posterior = DiagonalGaussianDistribution(padded)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    vae.encode = encode
    try:
        yield
    finally:
        vae.__dict__.pop("encode", None)


def predict2_frames(pipe, latents: torch.Tensor) -> np.ndarray:
    """uint8 T×H×W×3 frames of ``Cosmos2VideoToWorldPipeline``'s final latents, as the pipeline makes them with its
    safety checker (diffusers 0.42): un-normalise, VAE decode, ``(x * 0.5 + 0.5).clamp(0, 1)`` in the VAE's dtype,
    ``* 255`` in float32 truncated to uint8 — here on the device, then the checker on the uint8 frames."""
    with torch.no_grad():  # outside the pipeline's own no_grad: without it the decode would keep its activations
        return _predict2_frames(pipe, latents)


def _predict2_frames(pipe, latents: torch.Tensor) -> np.ndarray:
    config = pipe.vae.config
    mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    std = torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    latents = latents * std / pipe.scheduler.config.sigma_data + mean
    video = pipe.vae.decode(latents.to(pipe.vae.dtype), return_dict=False)[0]
    video = (video * 0.5 + 0.5).clamp(0, 1)
    frames = (video[0].permute(1, 2, 3, 0).float() * 255).to(torch.uint8).cpu().numpy()
    return np.asarray(pipe.safety_checker.check_video_safety(frames))
