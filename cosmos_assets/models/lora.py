"""The LoRA trainer role: low-rank adapters (peft) on a Cosmos generator's transformer, and the loss each kind
is trained with.

- Predict 2.5 / Transfer 2.5 (flow matching): their pipelines step a ``flow_prediction`` UniPC scheduler with
  the transformer's output as velocity. For clean latents ``x0``, noise ``e`` and ``sigma`` in (0, 1), the
  transformer sees ``x = (1 - sigma) x0 + sigma e`` at timestep ``sigma`` and is trained to predict ``e - x0``.
- Predict2 (EDM): its pipeline preconditions the transformer as an EDM denoiser with sigma_data 1. At noise
  level ``sigma`` (``x = x0 + sigma e``), with ``t = sigma / (1 + sigma)``: ``c_in = c_skip = 1 - t``,
  ``c_out = -t``, ``c_noise = t``, and the denoised estimate is ``c_skip x + c_out F(c_in x, t)``. It is trained
  on the EDM-weighted squared error of that estimate against ``x0``, ``sigma`` log-normal.

Both keep the leading (conditioning) latent frames clean, as Video2World inference gives them, and leave
them out of the loss. Adapters are saved as safetensors with their configuration in the file's metadata, so
a file alone is enough to put the adapter back on a transformer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos_assets.models.catalog import PREDICT2, PREDICT25, TRANSFER25

# The cookbook's LoRA targets (q/k/v/output projections and the MLP) are named after NVIDIA's own Predict2
# network; every kind here loads diffusers' CosmosTransformer3DModel, whose modules (peft matches them as name
# suffixes, in the self- and the cross-attention of every block) are called:
COOKBOOK_TARGETS = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "output_proj": "to_out.0",
                    "mlp.layer1": "ff.net.0.proj", "mlp.layer2": "ff.net.2"}
LORA_TARGET_MODULES = tuple(COOKBOOK_TARGETS.values())
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
    """Encode one clip (uint8 T x H x W x 3) and its caption the way its Cosmos pipeline (2.5 or Predict2) does at
    inference: normalised VAE latents and the text encoder's prompt embeddings (Qwen layers or T5)."""
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


# ---------------------------------------------------------------------------------------------------------
# Predict2: the EDM denoising loss.

# The Predict2 training recipe (cosmos-predict2's Video2World config): log sigma ~ N(P_MEAN, P_STD), clamped to
# [SIGMA_MIN, SIGMA_MAX], then scaled by sqrt(latent frames) ("adjust_video_noise": a longer video needs more
# noise to hide its content, the frames being correlated); conditioning frames sit at sigma 1e-4 as at inference.
EDM_SIGMA_DATA = 1.0
EDM_P_MEAN, EDM_P_STD = 0.0, 1.0
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.0002, 80.0
EDM_CONDITIONAL_SIGMA = 1e-4  # Cosmos2VideoToWorldPipeline's sigma_conditioning
TRAINING_FPS = 16  # the rate training clips are sampled at, and the fps Predict2 generation feeds the RoPE


@dataclass
class DenoisingInput:
    """One noise level per sample of a batch, with the preconditioning the Predict2 pipeline applies there."""

    latents: torch.Tensor  # what the transformer sees: c_in (x0 + sigma e), clean x0 on conditioning frames
    noisy: torch.Tensor  # x0 + sigma e (what c_skip scales)
    timestep: torch.Tensor  # B x 1 x T x 1 x 1: c_noise, or the conditioning timestep on given frames
    condition_mask: torch.Tensor  # B x 1 x T x h x w: 1 on frames given clean
    c_skip: torch.Tensor  # B x 1 x 1 x 1 x 1
    c_out: torch.Tensor
    target: torch.Tensor  # x0
    weight: torch.Tensor  # EDM weight (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 on generated frames, else 0


def denoising_input(batch: TrainingBatch, generator: torch.Generator | None = None,
                    num_conditional_frames: int = 0, device: torch.device | str = "cpu") -> DenoisingInput:
    """Draw noise and ``sigma`` (log-normal, per sample) and precondition the noisy latents."""
    x0 = batch.latents.to(device, torch.float32) * EDM_SIGMA_DATA  # the pipeline's latents are scaled by sigma_data
    b, _, t, _, _ = x0.shape
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    log_sigma = EDM_P_MEAN + EDM_P_STD * torch.randn((b,), generator=generator, device=x0.device)
    return edm_preconditioned(x0, noise, log_sigma.exp().clamp(EDM_SIGMA_MIN, EDM_SIGMA_MAX) * t ** 0.5, num_conditional_frames)


def edm_preconditioned(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, num_conditional_frames: int = 0) -> DenoisingInput:
    """``x0 + sigma noise`` (``sigma``: one per sample) as the Predict2 pipeline hands it to its transformer: scaled
    by c_in at timestep c_noise, the leading ``num_conditional_frames`` latent frames replaced by clean ``x0``."""
    b, _, t, h, w = x0.shape
    sigma = sigma.to(x0).view(b, 1, 1, 1, 1)
    noisy = x0 + sigma * noise
    c_noise = sigma / (sigma + 1)  # = 1 - c_in = -c_out
    given = torch.zeros(b, 1, t, 1, 1, device=x0.device)
    given[:, :, :num_conditional_frames] = 1.0
    edm_weight = (sigma ** 2 + EDM_SIGMA_DATA ** 2) / (sigma * EDM_SIGMA_DATA) ** 2
    return DenoisingInput(
        latents=given * x0 + (1 - given) * (1 - c_noise) * noisy, noisy=noisy,
        timestep=given * (EDM_CONDITIONAL_SIGMA / (EDM_CONDITIONAL_SIGMA + 1)) + (1 - given) * c_noise,
        condition_mask=given.expand(b, 1, t, h, w), c_skip=1 - c_noise, c_out=-c_noise, target=x0,
        weight=((1 - given) * edm_weight).expand_as(x0),
    )


def predict_denoised(transformer, point: DenoisingInput, text_embeddings: torch.Tensor, fps: int = TRAINING_FPS) -> torch.Tensor:
    """The Predict2 transformer's estimate of ``x0``, called with the inputs its pipeline gives it."""
    dtype, device = transformer.dtype, transformer.device
    h, w = point.latents.shape[-2:]
    output = transformer(
        hidden_states=point.latents.to(device, dtype), timestep=point.timestep.to(device, dtype),
        encoder_hidden_states=text_embeddings.to(device, dtype), fps=fps,
        condition_mask=point.condition_mask.to(device, dtype),
        padding_mask=torch.zeros(1, 1, h, w, device=device, dtype=dtype), return_dict=False,
    )[0].float()
    return point.c_skip * point.noisy + point.c_out * output


def edm_loss(transformer, batch: TrainingBatch, generator: torch.Generator | None = None,
             num_conditional_frames: int = 0) -> torch.Tensor:
    """EDM-weighted squared error of the denoised estimate, averaged over the frames being generated."""
    point = denoising_input(batch, generator, num_conditional_frames, transformer.device)
    error = (predict_denoised(transformer, point, batch.text_embeddings) - point.target) ** 2
    return (error * point.weight).sum() / (point.weight > 0).sum().clamp(min=1)


# The loss each kind is trained with; the training loop is the same for all.
LOSSES = {PREDICT2: edm_loss, PREDICT25: flow_matching_loss, TRANSFER25: flow_matching_loss}


def loss_for(kind: str):
    if kind not in LOSSES:
        raise ValueError(f"no LoRA training objective for generator kind {kind!r}; expected one of {', '.join(LOSSES)}")
    return LOSSES[kind]


def training_step(transformer, optimizer: torch.optim.Optimizer, batch: TrainingBatch,
                  generator: torch.Generator | None = None, num_conditional_frames: int = 0,
                  max_grad_norm: float | None = 1.0, loss=flow_matching_loss) -> float:
    """One optimiser step on ``batch`` with ``loss`` (a function of ``LOSSES``); returns the loss before the step."""
    transformer.train()
    optimizer.zero_grad(set_to_none=True)
    value = loss(transformer, batch, generator, num_conditional_frames)
    if not torch.isfinite(value):
        raise FloatingPointError(f"{loss.__name__} is {value.item()}; lower the learning rate or check the data")
    value.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(lora_parameters(transformer), max_grad_norm)
    optimizer.step()
    transformer.eval()
    return value.item()


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
