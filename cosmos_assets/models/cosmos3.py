"""Cosmos 3: one model that generates (the ``cosmos3`` generator kind) and reasons (the ``cosmos3`` critic).

Generation runs diffusers' ``Cosmos3OmniPipeline``, loaded like every other generator (``generator.load_pipeline``:
``from_pretrained`` from a verified local checkpoint, safetensors only, the real ``CosmosSafetyChecker`` for real
weights and the pass-through only for tiny random ones): text-to-video, image-to-video and video-to-video from the
first frames of a source clip, and text-to-image (one frame).

Reasoning does not go through diffusers, because its interface cannot produce any: ``Cosmos3OmniTransformer``
carries the language model (``embed_tokens``, the understanding pathway of every layer, ``lm_head``) but its
``forward`` returns only velocities (vision, sound, action) and never calls ``lm_head``; its understanding
tokens attend causally to the text prefix alone (the vision tokens sit after ``und_len``, in the generation
pathway, which reads the text but is never read by it); and the diffusers checkpoint holds no vision encoder
for understanding. So the text pathway cannot see a video there, and Yes/No logits read from it would be
the same for every candidate: no score. The Reasoner that does see video is the same checkpoint through
transformers (``Cosmos3OmniForConditionalGeneration``: the Qwen3-VL architecture, whose loader drops the
Generator's keys). ``Cosmos3Reasoner`` wraps it behind the interface ``critics.ReasonCritic`` drives, so the
``cosmos3`` critic asks the Reason critic's anomaly question K times and keeps the same record: every trial's
text, its reasoning, the parsed Yes/No, the share of "No", the critic's name and version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cosmos_assets.models.catalog import COSMOS3, DEFAULT_MODELS, TINY_PREFIX, resolve_model
from cosmos_assets.models.checkpoints import TINY_LABEL, Checkpoint, ModelError, resolve_checkpoint
from cosmos_assets.models.frames import fit_pixel_budget
from cosmos_assets.models.generator import GeneratedVideo, GenerationRequest, VideoGenerator
from cosmos_assets.models.runtime import MODELS
from cosmos_assets.models.tiny_cosmos3 import REASONER_FOLDER
from cosmos_assets.models.vlm import (GenerationSettings, VideoPrompt, _even_frames, _messages, load_processor_and_model,
                                     resize_frames)

COSMOS3_CRITIC = "cosmos3"
REASONER_CLASS = "Cosmos3OmniForConditionalGeneration"
# Qwen3-VL sees 16-pixel patches merged 2x2: frame sides are multiples of 32.
REASONER_FACTOR = 32


# ---------------------------------------------------------------------------------------------------------
# Generation.


def _pil(frames: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(frame) for frame in np.ascontiguousarray(frames, dtype=np.uint8)]


def conditioning(frames: np.ndarray | None, num_frames: int, latent_frames: int, temporal: int) -> tuple[dict, str]:
    """The pipeline arguments that condition on a request's source frames, and the mode they make.

    Video-to-video keeps the first ``n`` latent frames clean (1 + 4(n-1) source frames), so the candidate continues
    the clip from its start and lines up with the source in time. ``n`` is at most ``latent_frames`` and always
    leaves one latent frame to generate: conditioning every latent frame would only re-encode the source, the same
    video for every seed. With one latent frame to condition (a short video or a short clip) it is image-to-video on
    the first frame; no frames, or a single output frame, is text-to-video (text-to-image).
    """
    conditioned = min(latent_frames, (num_frames - 1) // temporal)  # the output has (num_frames - 1) // temporal + 1
    if frames is None or len(frames) == 0 or conditioned < 1:
        return {}, "text"
    needed = 1 + temporal * (conditioned - 1)
    if conditioned == 1 or len(frames) < needed:
        return {"image": _pil(frames[:1])[0]}, "image"
    return {"video": _pil(frames[:needed]), "condition_frame_indexes_vision": list(range(conditioned))}, "video"


def generate(generator: VideoGenerator, request: GenerationRequest) -> GeneratedVideo:
    """One video (or image: ``num_frames`` 1) from a ``cosmos3`` ``VideoGenerator``, labelled like the other kinds."""
    d, pipe = generator.defaults, generator.pipeline
    num_frames = request.num_frames or d.num_frames
    height, width = request.height or d.height, request.width or d.width
    fps, steps = request.fps or d.fps, request.steps or d.steps
    guidance = d.guidance_scale if request.guidance_scale is None else request.guidance_scale
    negative_prompt = request.negative_prompt if request.negative_prompt is not None else d.negative_prompt
    generator._check_geometry(num_frames, height, width)
    extra, mode = conditioning(request.conditioning_frames, num_frames, d.num_latent_conditional_frames,
                               pipe.vae_scale_factor_temporal)
    output = pipe(prompt=request.prompt, negative_prompt=negative_prompt, num_frames=num_frames, height=height, width=width,
                  fps=fps, num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                  generator=torch.Generator(generator.device).manual_seed(request.seed), **extra)
    frames = np.clip(np.rint(np.asarray(output.video) * 255.0), 0, 255).astype(np.uint8)
    if frames.shape != (num_frames, height, width, 3):
        raise RuntimeError(f"Cosmos3OmniPipeline returned {frames.shape}, expected {(num_frames, height, width, 3)}")
    checkpoint, tiny = generator.checkpoint, generator.checkpoint.tiny_random
    return GeneratedVideo(frames=frames, fps=fps, settings={
        "backend": COSMOS3, "pipeline": "Cosmos3OmniPipeline", "checkpoint": checkpoint.label,
        "checkpoint_name": checkpoint.name, "checkpoint_version": checkpoint.version, "tiny_random": tiny,
        "label": TINY_LABEL if tiny else "", "seed": request.seed, "steps": steps, "guidance_scale": guidance,
        "num_frames": num_frames, "height": height, "width": width, "fps": fps, "negative_prompt": negative_prompt,
        "mode": mode, "conditioning_frames": len(extra["video"]) if "video" in extra else int("image" in extra),
        "controls": {}, "device": str(generator.device), "dtype": str(generator.dtype).removeprefix("torch."),
    })


# ---------------------------------------------------------------------------------------------------------
# The Reasoner as a critic.


@dataclass(frozen=True)
class ReasonerSizing:
    """The visual tokens one video may cost the Reasoner: a pixel budget over all frames, per-frame bounds."""

    total_pixels: int = 8192 * 32 * 32
    min_pixels: int = 4 * 32 * 32
    max_pixels: int = 768 * 32 * 32


class Cosmos3Reasoner:
    """Cosmos 3's Reasoner through transformers, with the ``generate(prompts, settings)`` that ``ReasonCritic`` uses.

    Each prompt's video goes in as frames fitted to the pixel budget with their sampling rate (the model's
    M-RoPE places each temporal patch in time from it); the K trials are K sampled continuations.
    """

    backend = "transformers"

    def __init__(self, model, processor, checkpoint: Checkpoint, sizing: ReasonerSizing = ReasonerSizing()):
        self.model, self.processor, self.checkpoint, self.sizing = model, processor, checkpoint, sizing
        self.device = model.device
        self.processor.tokenizer.padding_side = "left"  # generation appends on the right

    @classmethod
    def load(cls, checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype,
             sizing: ReasonerSizing = ReasonerSizing()) -> Cosmos3Reasoner:
        from transformers import Cosmos3OmniForConditionalGeneration

        processor, model = load_processor_and_model(
            Cosmos3OmniForConditionalGeneration, checkpoint, dtype, device,
            lambda error: f"{checkpoint.label}: not a loadable {REASONER_CLASS} checkpoint ({error.__class__.__name__}: {error})")
        return cls(model, processor, checkpoint, sizing)

    @property
    def identity(self) -> dict:
        return {"backend": self.backend, "model": self.checkpoint.name, "model_version": self.checkpoint.version,
                "tiny_random": self.checkpoint.tiny_random}

    def _fit(self, frames: np.ndarray) -> np.ndarray:
        frames = _even_frames(frames)  # two frames make one temporal patch
        s = self.sizing
        size = fit_pixel_budget(frames.shape[1], frames.shape[2], len(frames), s.total_pixels, factor=REASONER_FACTOR,
                                min_pixels=s.min_pixels, max_pixels=s.max_pixels)
        return resize_frames(frames, *size)

    def generate(self, prompts: list[VideoPrompt], settings: GenerationSettings) -> list[list[str]]:
        """``settings.trials`` answers per prompt, the prompts in one batch."""
        from transformers.video_utils import VideoMetadata

        if not prompts:
            return []
        texts = [self.processor.apply_chat_template(_messages(p, {"type": "video"}), tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        videos = [self._fit(p.frames) for p in prompts]
        inputs = self.processor(
            text=texts, videos=videos, padding=True, return_tensors="pt",
            # Every frame given is used; their times (index / fps) become the timestamps Qwen3-VL writes into the prompt.
            videos_kwargs={"video_metadata": [VideoMetadata(total_num_frames=len(v), fps=p.fps, frames_indices=list(range(len(v))))
                                              for v, p in zip(videos, prompts)],
                           "do_resize": False, "do_sample_frames": False, "cap_pixels_per_frame": True},
        ).to(self.device)
        sampling = ({"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
                    if settings.sampling else {"do_sample": False})
        if settings.sampling:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            output = self.model.generate(**inputs, num_return_sequences=settings.trials, max_new_tokens=settings.max_new_tokens,
                                         min_new_tokens=settings.min_new_tokens, repetition_penalty=settings.repetition_penalty,
                                         **sampling)
        decoded = self.processor.batch_decode(output[:, inputs["input_ids"].shape[1]:].cpu(), skip_special_tokens=True)
        return [decoded[i * settings.trials:(i + 1) * settings.trials] for i in range(len(prompts))]


def reasoner_checkpoint(checkpoint: Checkpoint) -> Checkpoint:
    """Where a Cosmos 3 checkpoint keeps its Reasoner: ``reasoner/`` in the layout built here, else the folder itself
    (NVIDIA's unified checkpoint, whose root ``config.json`` transformers reads). Verified like any checkpoint."""
    folder = checkpoint.path / REASONER_FOLDER
    if not folder.is_dir():
        config = checkpoint.path / "config.json"
        model_type = json.loads(config.read_text()).get("model_type") if config.is_file() else None
        if model_type != "cosmos3_omni":
            raise ModelError(f"{checkpoint.label}: no Cosmos 3 Reasoner (neither a {REASONER_FOLDER}/ folder nor a "
                             f"cosmos3_omni config.json); the cosmos3 critic needs {REASONER_CLASS} weights")
        folder = checkpoint.path
    reasoner = resolve_checkpoint(str(folder), role="critic (Cosmos 3 Reasoner)")
    return replace(reasoner, name=checkpoint.name)  # named as configured: the same on every machine


def open_reasoner(model: str | None, models_root: Path | None, device: torch.device, dtype: torch.dtype,
                  revision: str | None = None, sizing: ReasonerSizing = ReasonerSizing()) -> Cosmos3Reasoner:
    """The Reasoner of the Cosmos 3 checkpoint ``model`` (a directory, a cached Hub id or ``tiny:cosmos3``),
    loaded once per process."""
    model = model or DEFAULT_MODELS[COSMOS3]
    role = "critic (Cosmos 3)"
    checkpoint = (resolve_model(model, role=role, models_root=models_root) if model.startswith(TINY_PREFIX)
                  else resolve_checkpoint(model, role=role, revision=revision))
    reasoner = reasoner_checkpoint(checkpoint)
    key = ("critic", COSMOS3, str(reasoner.path), reasoner.version, str(device), str(dtype), repr(sizing))
    return MODELS.get(key, lambda: Cosmos3Reasoner.load(reasoner, device, dtype, sizing))
