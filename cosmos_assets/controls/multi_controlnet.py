"""Several Cosmos ControlNets in one Transfer 2.5 denoising loop, their residuals summed by weight.

diffusers' ``Cosmos2_5_TransferPipeline`` drives one ``CosmosControlNetModel``: at every step (and for the
negative prompt again) it calls ``self.controlnet(controls_latents=..., conditioning_scale=...)`` and hands the
returned per-block residuals to the transformer as ``block_controlnet_hidden_states``. ``WeightedControlNets``
stands in that place. It runs every control's ControlNet on the same latents, timestep and prompt, each with its
own weight as ``conditioning_scale`` (the ControlNet multiplies each block's residual by it), and returns the
block-wise sum. So the transformer sees ``sum_k w_k * r_k``; with one control of weight w it sees exactly what
the plain pipeline gives it, bit for bit (the same call, nothing added).

Control latents: the pipeline encodes the first control's video itself (with the request's generator, as it
always does). The other controls' videos are preprocessed by the pipeline's own video processor, cut into the
pipeline's chunks and encoded by the same VAE and normalisation, each with a generator of its own (seeded from
the request), so the request's noise is the same whatever the other controls are. A new chunk is recognised by a
new ``controls_latents`` tensor (the pipeline makes one per chunk and reuses it for every step of that chunk).

The native Cosmos-Transfer2.5 implementation (multi-control inference in NVIDIA's own repository) could not be
run here, so that this sum matches it is not checked; it is the combination diffusers' maintainers suggest
(run each ControlNet, add the residuals).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

# The pipeline's default for auto-regressive chunks after the first (VideoGenerator leaves it as it is): the
# chunks of the extra controls must be cut exactly where the pipeline cuts the first control's video.
AR_CONDITIONAL_FRAMES = 1


def chunk_bounds(num_frames: int, frames_per_chunk: int, ar_frames: int = AR_CONDITIONAL_FRAMES) -> list[tuple[int, int]]:
    """(start, end) frames of each chunk the Transfer pipeline generates, in its order."""
    stride = frames_per_chunk - ar_frames
    return [(start, min(start + frames_per_chunk, num_frames)) for start in range(0, num_frames - ar_frames, stride)]


@dataclass
class ControlPlan:
    """One request's controls beyond the first: weights in order, their videos, and how to encode a chunk."""

    weights: dict[str, float]  # every control, the first (the one the pipeline encodes) first
    videos: dict[str, torch.Tensor]  # the others: preprocessed [1, 3, T, H, W] in the pipeline's value range
    frames_per_chunk: int
    num_frames: int
    seed: int
    generators: dict[str, torch.Generator] = field(default_factory=dict)  # one per extra control
    latents: dict[str, torch.Tensor] = field(default_factory=dict)  # the extra controls' latents of the current chunk
    _chunk: int = -1
    _seen: object = None  # a weak reference to the first control's latents of the current chunk


class WeightedControlNets(torch.nn.Module):
    """Where the Transfer pipeline expects its ControlNet: every configured control's ControlNet, weighted."""

    def __init__(self, controlnets: Mapping[str, torch.nn.Module]):
        super().__init__()
        if not controlnets:
            raise ValueError("at least one ControlNet is needed")
        self.controlnets = torch.nn.ModuleDict(dict(controlnets))
        self.plan: ControlPlan | None = None
        self._encode = None  # set by ``weighted_pipeline``: chunk video -> normalised latents, with a generator

    # What a diffusers pipeline asks of its model components (to place its own tensors).
    @property
    def device(self) -> torch.device:
        return next(iter(self.controlnets.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.controlnets.values())).dtype

    def forward(self, controls_latents: torch.Tensor, conditioning_scale=1.0, return_dict: bool = False, **inputs):
        plan = self.plan
        if plan is None:
            raise RuntimeError("WeightedControlNets needs a plan (prepare_controls) before the pipeline runs")
        extra = self._chunk_latents(plan, controls_latents)
        total = None
        for index, (name, weight) in enumerate(plan.weights.items()):
            latents = controls_latents if index == 0 else extra[name]
            blocks = self.controlnets[name](controls_latents=latents, conditioning_scale=weight, return_dict=False, **inputs)[0]
            # The first control's residuals are taken as they are: one control adds nothing, so it is the plain path.
            total = list(blocks) if total is None else [sum_ + block for sum_, block in zip(total, blocks)]
        return (total,)

    def _chunk_latents(self, plan: ControlPlan, first: torch.Tensor) -> dict[str, torch.Tensor]:
        if plan._seen is None or plan._seen() is not first:  # a tensor the pipeline made for a new chunk
            plan._seen = weakref.ref(first)
            plan._chunk += 1
            start, end = chunk_bounds(plan.num_frames, plan.frames_per_chunk)[plan._chunk]
            plan.latents = {}
            for name, video in plan.videos.items():
                generator = plan.generators[name]
                latents = self._encode(video[:, :, start:end], plan.frames_per_chunk, generator)
                plan.latents[name] = latents.expand(first.shape[0], *latents.shape[1:])
        return plan.latents


def weighted_pipeline(pipeline, controlnets: Mapping[str, torch.nn.Module]):
    """A Transfer pipeline sharing ``pipeline``'s modules, with ``WeightedControlNets`` as its ControlNet."""
    from diffusers.pipelines.cosmos.pipeline_cosmos2_5_transfer import _maybe_pad_or_trim_video, retrieve_latents

    weighted = WeightedControlNets(controlnets)
    pipe = type(pipeline)(**{**pipeline.components, "controlnet": weighted})
    pipe.set_progress_bar_config(disable=True)

    def encode(video: torch.Tensor, frames_per_chunk: int, generator: torch.Generator) -> torch.Tensor:
        # What the pipeline does to its own control video's chunk, with this control's generator.
        device, vae = generator.device, pipe.vae
        chunk = _maybe_pad_or_trim_video(video, frames_per_chunk).to(device=device, dtype=vae.dtype)
        latents = retrieve_latents(vae.encode(chunk), generator=generator).to(pipe.transformer.dtype)
        mean = pipe.latents_mean.to(dtype=vae.dtype, device=device)
        std = pipe.latents_std.to(dtype=vae.dtype, device=device)
        return (latents - mean) / std

    weighted._encode = encode
    return pipe


def prepare_controls(pipe, controls: Sequence[tuple[str, list, float]], *, height: int, width: int, num_frames: int,
                     frames_per_chunk: int, seed: int, device: torch.device) -> list:
    """Set the plan of ``pipe``'s ``WeightedControlNets`` for one call; returns the first control's frames, which
    the call passes as ``controls`` (the pipeline encodes that one itself).

    ``controls``: (name, PIL frames, weight), the first control first, every video at least ``num_frames`` long."""
    from diffusers.pipelines.cosmos.pipeline_cosmos2_5_transfer import _maybe_pad_or_trim_video

    weighted: WeightedControlNets = pipe.controlnet
    missing = [name for name, _, _ in controls if name not in weighted.controlnets]
    if missing:
        raise ValueError(f"no ControlNet loaded for {missing}; loaded: {sorted(weighted.controlnets)}")
    videos = {}
    for name, frames, _ in controls[1:]:
        video = pipe.video_processor.preprocess_video(frames[:num_frames], height, width)
        videos[name] = _maybe_pad_or_trim_video(video, num_frames)
    weights = {name: float(weight) for name, _, weight in controls}
    # Each extra control's VAE sample draws from its own stream: the request's generator is the pipeline's alone.
    generators = {name: torch.Generator(device).manual_seed(seed + 1 + index) for index, name in enumerate(videos)}
    weighted.plan = ControlPlan(weights=weights, videos=videos, frames_per_chunk=frames_per_chunk, num_frames=num_frames,
                                seed=seed, generators=generators)
    return controls[0][1][:num_frames]
