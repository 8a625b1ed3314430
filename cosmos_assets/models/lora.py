"""The LoRA trainer role: low-rank adapters (peft) on a Cosmos generator's transformer, trained by flow matching.

The objective is the rectified-flow one the Cosmos 2.5 models are sampled with (their pipelines step a
``flow_prediction`` UniPC scheduler with the transformer's output as velocity): for clean latents ``x0``,
noise ``e`` and ``sigma`` in (0, 1), the transformer sees ``x = (1 - sigma) x0 + sigma e`` at timestep ``sigma``
and is trained to predict ``e - x0``. Predict2 (an EDM-style preconditioned model) is not trained this way.

Adapters are saved as safetensors with their configuration in the file's metadata, so a file alone is
enough to put the adapter back on a transformer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# diffusers' CosmosTransformer3DModel module names (peft matches them as name suffixes): the self- and
# cross-attention projections of every block (attn1 / attn2: to_q, to_k, to_v, to_out.0) and its MLP.
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
ADAPTER_NAME = "default"
CONDITIONAL_FRAME_TIMESTEP = 1e-4  # what the Predict 2.5 pipeline feeds for frames given as conditioning


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: float = 16.0
    target_modules: tuple[str, ...] = LORA_TARGET_MODULES

    def as_metadata(self) -> dict[str, str]:
        return {"lora_rank": str(self.rank), "lora_alpha": str(self.alpha),
                "lora_target_modules": json.dumps(list(self.target_modules))}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> LoraSettings:
        return cls(rank=int(metadata["lora_rank"]), alpha=float(metadata["lora_alpha"]),
                   target_modules=tuple(json.loads(metadata["lora_target_modules"])))


def add_lora(transformer, rank: int = 16, alpha: float = 16.0,
             target_modules: Sequence[str] = LORA_TARGET_MODULES) -> LoraSettings:
    """Freeze ``transformer`` and add a trainable LoRA adapter on ``target_modules``; returns its settings.

    The adapter starts as a no-op (peft's default: B = 0), so the transformer's output is unchanged until it
    is trained.
    """
    from peft import LoraConfig

    settings = LoraSettings(rank, alpha, tuple(target_modules))
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules),
                                       init_lora_weights=True), adapter_name=ADAPTER_NAME)
    return settings


def lora_parameters(transformer) -> list[torch.nn.Parameter]:
    return [p for name, p in transformer.named_parameters() if "lora_" in name and p.requires_grad]


# ---------------------------------------------------------------------------------------------------------
# Training.


@dataclass
class TrainingBatch:
    """Normalised VAE latents (B x 16 x T x h x w) and the pipeline's prompt embeddings (B x L x D)."""

    latents: torch.Tensor
    text_embeddings: torch.Tensor


def prepare_batch(pipeline, frames: np.ndarray, prompt: str, max_sequence_length: int = 512) -> TrainingBatch:
    """Encode one clip (uint8 T x H x W x 3) and its caption the way a Cosmos 2.5 pipeline does at inference."""
    from PIL import Image

    device, vae = pipeline._execution_device, pipeline.vae
    with torch.no_grad():
        video = pipeline.video_processor.preprocess_video([Image.fromarray(f) for f in frames])
        latents = vae.encode(video.to(device, vae.dtype)).latent_dist.mode()
        mean = torch.tensor(vae.config.latents_mean, device=device).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=device).view(1, -1, 1, 1, 1)
        embeddings, _ = pipeline.encode_prompt(prompt, do_classifier_free_guidance=False,
                                               max_sequence_length=max_sequence_length, device=device)
    return TrainingBatch(latents=((latents.float() - mean) / std), text_embeddings=embeddings)


@dataclass
class NoisyInput:
    """One point on the flow path for every sample of a batch, and the velocity to predict there."""

    latents: torch.Tensor  # what the transformer sees
    timestep: torch.Tensor  # B x 1 x T x 1 x 1: sigma, or the conditioning timestep on given frames
    condition_mask: torch.Tensor  # B x 1 x T x h x w: 1 on frames given clean
    target: torch.Tensor  # noise - x0
    weight: torch.Tensor  # 1 where the loss counts (frames being generated)


def noisy_input(batch: TrainingBatch, generator: torch.Generator | None = None,
                num_conditional_frames: int = 0, device: torch.device | str = "cpu") -> NoisyInput:
    """Draw noise and ``sigma`` and place the latents on the path ``(1 - sigma) x0 + sigma e``.

    ``sigma`` is drawn logit-normally (mass in the middle of the path, where the velocity is hardest to
    predict). The first ``num_conditional_frames`` latent frames are given clean, as Video2World gives them.
    """
    x0 = batch.latents.to(device, torch.float32)
    b, _, t, h, w = x0.shape
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    sigma = torch.sigmoid(torch.randn((b,), generator=generator, device=x0.device)).view(b, 1, 1, 1, 1)
    given = torch.zeros(b, 1, t, 1, 1, device=x0.device)
    given[:, :, :num_conditional_frames] = 1.0
    return NoisyInput(
        latents=given * x0 + (1 - given) * ((1 - sigma) * x0 + sigma * noise),
        timestep=given * CONDITIONAL_FRAME_TIMESTEP + (1 - given) * sigma,
        condition_mask=given.expand(b, 1, t, h, w), target=noise - x0, weight=(1 - given).expand_as(x0),
    )


def predict_velocity(transformer, point: NoisyInput, text_embeddings: torch.Tensor) -> torch.Tensor:
    """The transformer's velocity at ``point``, called with the inputs the Cosmos 2.5 pipelines give it."""
    dtype, device = transformer.dtype, transformer.device
    b, _, _, h, w = point.latents.shape
    context = text = text_embeddings.to(device, dtype)
    if transformer.config.img_context_dim_in:  # Transfer: no reference image, zeros as its pipeline feeds
        image = torch.zeros(b, transformer.config.img_context_num_tokens, transformer.config.img_context_dim_in,
                            device=device, dtype=dtype)
        context = (text, image)
    return transformer(
        hidden_states=point.latents.to(device, dtype), timestep=point.timestep.to(device, dtype),
        encoder_hidden_states=context, condition_mask=point.condition_mask.to(device, dtype),
        padding_mask=torch.zeros(1, 1, h, w, device=device, dtype=dtype), return_dict=False,
    )[0].float()


def flow_matching_loss(transformer, batch: TrainingBatch, generator: torch.Generator | None = None,
                       num_conditional_frames: int = 0) -> torch.Tensor:
    """Mean squared error of the predicted velocity on the frames being generated."""
    point = noisy_input(batch, generator, num_conditional_frames, transformer.device)
    error = (predict_velocity(transformer, point, batch.text_embeddings) - point.target) ** 2
    return (error * point.weight).sum() / point.weight.sum().clamp(min=1)


def training_step(transformer, optimizer: torch.optim.Optimizer, batch: TrainingBatch,
                  generator: torch.Generator | None = None, num_conditional_frames: int = 0,
                  max_grad_norm: float | None = 1.0) -> float:
    """One optimiser step on ``batch``; returns the loss before the step."""
    transformer.train()
    optimizer.zero_grad(set_to_none=True)
    loss = flow_matching_loss(transformer, batch, generator, num_conditional_frames)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"flow-matching loss is {loss.item()}; lower the learning rate or check the data")
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(lora_parameters(transformer), max_grad_norm)
    optimizer.step()
    transformer.eval()
    return loss.item()


# ---------------------------------------------------------------------------------------------------------
# Saving and loading.


def lora_state_dict(transformer) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME)


def save_lora(transformer, settings: LoraSettings, path: Path) -> Path:
    """Write the adapter weights (safetensors) with their settings in the file's metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().to("cpu").contiguous() for key, value in lora_state_dict(transformer).items()}
    partial = path.with_name(path.name + ".partial")  # renamed into place: never a half-written adapter
    save_file(state, partial, metadata=settings.as_metadata())
    partial.replace(path)
    return path


def load_lora(transformer, path: Path) -> LoraSettings:
    """Add the adapter saved at ``path`` to ``transformer`` (frozen base, adapter weights exactly as saved)."""
    from peft import set_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        settings = LoraSettings.from_metadata(handle.metadata() or {})
    add_lora(transformer, settings.rank, settings.alpha, settings.target_modules)
    result = set_peft_model_state_dict(transformer, load_file(str(path), device=str(transformer.device)),
                                       adapter_name=ADAPTER_NAME)
    missing = [key for key in result.missing_keys if "lora_" in key]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path}: adapter does not fit this transformer (missing {missing[:3]}, "
                         f"unexpected {list(result.unexpected_keys)[:3]})")
    return settings
