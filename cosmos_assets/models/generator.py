"""The generator role: Cosmos world models that turn a prompt (and source frames or control videos) into video.

Three backends, all diffusers pipelines loaded through their own ``from_pretrained`` from a verified local
checkpoint (``resolve_checkpoint``), safetensors only:

- ``predict2``: ``Cosmos2VideoToWorldPipeline`` (Predict2 Video2World; needs conditioning frames),
- ``predict2.5``: ``Cosmos2_5_PredictBasePipeline`` (Text2World, or Image/Video2World with conditioning frames),
- ``transfer2.5``: ``Cosmos2_5_TransferPipeline`` with a ``CosmosControlNetModel`` per control (edge, blur,
  depth, seg), each ControlNet a checkpoint of its own; a request with several controls runs their ControlNets
  in one denoising loop with the residuals summed by weight (``cosmos_assets.controls.multi_controlnet``).

The licence of the Cosmos weights requires the Cosmos guardrail: real weights run with
``cosmos_guardrail.CosmosSafetyChecker`` or not at all. Only tiny random checkpoints built here (their
marker file says so) run with a pass-through checker, and every output of theirs is labelled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from cosmos_assets.models.catalog import (
    COSMOS3, CONTROLNETS_FOLDER, GENERATOR_KINDS, PIPELINE_CLASSES, PREDICT2, PREDICT25, TRANSFER25, TINY_PREFIX,
    resolve_model,
)
from cosmos_assets.models.checkpoints import TINY_LABEL, Checkpoint, ModelError, resolve_checkpoint
from cosmos_assets.models.runtime import MODELS, choose_device, choose_dtype
from cosmos_assets.models.generator_speedups import (
    GeneratorSpeedups, apply_generator_speedups, approximations, encode_conditioning_only, predict2_frames,
)
from cosmos_assets.models.tiny_generators import TinyPassThroughSafetyChecker

log = logging.getLogger(__name__)
CONTROL_NAMES = ("edge", "blur", "depth", "seg")
ROLE = "generator"
HOW_TO_PROVIDE = ("Build a tiny random checkpoint for tests with `cosmos models build-tiny`, or put a diffusers-format "
                  "Cosmos checkpoint (safetensors) on this machine.")
# Where the diffusers example of Cosmos-Transfer2.5 keeps each control's ControlNet: a branch of the
# pipeline's own Hub repository.
HUB_CONTROLNET_REVISION = "diffusers/controlnet/general/{control}"


class GuardrailMissing(ModelError):
    pass


# ---------------------------------------------------------------------------------------------------------
# Configuration: defaults per kind (cosmos_reference.md, Generation; the pipelines' own defaults otherwise).


@dataclass(frozen=True)
class GenerationDefaults:
    num_frames: int = 93
    fps: int = 16
    steps: int = 35
    guidance_scale: float = 7.0
    height: int = 704  # 720p: 704x1280 (480p: 432x768)
    width: int = 1280
    negative_prompt: str | None = None  # None: the pipeline's own default negative prompt
    max_sequence_length: int = 512


@dataclass(frozen=True)
class Predict2Defaults(GenerationDefaults):
    # Video2World continues from the first frames of a clip (cosmos-predict2 uses 1 or 5). The diffusers
    # pipeline conditions on every frame it is given, so a whole clip would just come back re-encoded.
    num_conditional_frames: int = 5


@dataclass(frozen=True)
class Predict25Defaults(GenerationDefaults):
    steps: int = 36
    num_latent_conditional_frames: int = 2  # Video2World conditions on 1 + 4 * (n - 1) source frames


@dataclass(frozen=True)
class Transfer25Defaults(GenerationDefaults):
    num_frames: int | None = None  # None: as many frames as the control video has
    steps: int = 36
    guidance_scale: float = 3.0
    num_frames_per_chunk: int = 93  # longer videos are generated chunk by chunk
    conditional_frame_timestep: float = 0.1


@dataclass(frozen=True)
class Cosmos3Defaults(GenerationDefaults):
    # Cosmos3OmniPipeline's own defaults (189 frames at 24 fps, 35 steps, guidance 6), at the 480p tier that NVIDIA's
    # model reference names as the default (16:9: 480x832). Generation itself: cosmos_assets.models.cosmos3.
    num_frames: int = 189
    fps: int = 24
    guidance_scale: float = 6.0
    height: int = 480
    width: int = 832
    num_latent_conditional_frames: int = 2  # video-to-video keeps 1 + 4 * (n - 1) source frames


DEFAULTS: dict[str, GenerationDefaults] = {
    PREDICT2: Predict2Defaults(), PREDICT25: Predict25Defaults(), TRANSFER25: Transfer25Defaults(),
    COSMOS3: Cosmos3Defaults(),
}


def defaults_for(kind: str, **overrides) -> GenerationDefaults:
    """The defaults of ``kind`` with the given fields replaced (``None`` values are ignored)."""
    check_kind(kind)
    known = {f.name for f in fields(DEFAULTS[kind])}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown {kind} settings {sorted(unknown)}; known: {sorted(known)}")
    return replace(DEFAULTS[kind], **{k: v for k, v in overrides.items() if v is not None})


def check_kind(kind: str) -> None:
    if kind not in GENERATOR_KINDS:
        raise ValueError(f"generator kind {kind!r}; expected one of {', '.join(GENERATOR_KINDS)}")


# ---------------------------------------------------------------------------------------------------------
# Requests and results.


@dataclass
class GenerationRequest:
    """One video to generate. Fields left ``None`` take the generator's defaults."""

    prompt: str
    seed: int = 0
    negative_prompt: str | None = None
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    # Video2World: uint8 T x H x W x 3 frames of a source clip; the last ones condition the prediction.
    conditioning_frames: np.ndarray | None = None
    # Transfer: control name -> (uint8 T x H x W x 3 control video, weight).
    controls: Mapping[str, tuple[np.ndarray, float]] = field(default_factory=dict)


@dataclass
class GeneratedVideo:
    frames: np.ndarray  # uint8, T x H x W x 3
    fps: int
    settings: dict  # what made it: backend, checkpoint, seed, controls, steps, guidance, tiny_random, ...


# ---------------------------------------------------------------------------------------------------------
# Control videos derived from source frames (the same operation on every frame, so controls do not flicker).


def edge_control(frames: np.ndarray, low_threshold: int = 100, high_threshold: int = 200) -> np.ndarray:
    """Canny edges of every frame, as a uint8 T x H x W x 3 video (edges white on black)."""
    video = _as_video(frames)
    edges = np.stack([cv2.Canny(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), low_threshold, high_threshold)
                      for frame in video])
    return np.repeat(edges[..., None], 3, axis=-1)


def blur_control(frames: np.ndarray, sigma_fraction: float = 0.015) -> np.ndarray:
    """A Gaussian blur of every frame (sigma a fraction of the longer side), uint8 T x H x W x 3."""
    video = _as_video(frames)
    sigma = max(1.0, sigma_fraction * max(video.shape[1:3]))
    return np.stack([cv2.GaussianBlur(frame, (0, 0), sigmaX=sigma, sigmaY=sigma) for frame in video])


def _as_video(frames: np.ndarray) -> np.ndarray:
    video = np.asarray(frames)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames of shape T x H x W x 3, got {video.dtype} {video.shape}")
    return np.ascontiguousarray(video)


def _pil_frames(frames: np.ndarray) -> list[Image.Image]:
    # The pipelines' video processor takes PIL frames as 0..255 images; numpy input would be read as 0..1.
    return [Image.fromarray(frame) for frame in _as_video(frames)]


# ---------------------------------------------------------------------------------------------------------
# Loading.


def safety_checker_for(checkpoint: Checkpoint):
    """The real Cosmos guardrail, or the pass-through for tiny random weights only."""
    if checkpoint.tiny_random:
        log.warning("tiny random weights: safety checker bypassed (%s)", checkpoint.label)
        return TinyPassThroughSafetyChecker()
    try:
        from cosmos_guardrail import CosmosSafetyChecker
    except ImportError:
        raise GuardrailMissing(
            f"{checkpoint.name}: real Cosmos weights run only with the Cosmos guardrail, and the package "
            "`cosmos_guardrail` is not installed. Install it (`pip install cosmos_guardrail`) and put its guardrail "
            "models in the Hugging Face cache on a machine with network access; generation without it is refused."
        ) from None
    try:
        return CosmosSafetyChecker()
    except Exception as error:  # its models are loaded here; any failure means no guardrail
        raise GuardrailMissing(
            f"{checkpoint.name}: the Cosmos guardrail could not be loaded ({error.__class__.__name__}: {error}). "
            "Its models must be in the Hugging Face cache; generation without the guardrail is refused."
        ) from None


def load_pipeline(checkpoint: Checkpoint, kind: str, device: torch.device, dtype: torch.dtype):
    """The diffusers pipeline of ``kind`` from ``checkpoint``, loaded once per process (``MODELS``). Any kind of
    ``PIPELINE_CLASSES``: the video kinds, and Predict2 Text2Image (``cosmos_assets.models.image_generator``)."""
    if kind not in PIPELINE_CLASSES:
        raise ValueError(f"pipeline kind {kind!r}; expected one of {', '.join(PIPELINE_CLASSES)}")

    def load():
        import diffusers

        # The guardrail is settled before any weights load: a refused checkpoint costs nothing.
        safety_checker = safety_checker_for(checkpoint)
        pipeline_class = getattr(diffusers, PIPELINE_CLASSES[kind])
        # Transfer: ControlNets are loaded per control (load_controlnet), never from the pipeline folder.
        extra = {"controlnet": None} if kind == TRANSFER25 else {}
        try:
            pipe = pipeline_class.from_pretrained(
                checkpoint.path, dtype=dtype, use_safetensors=True, local_files_only=True,
                safety_checker=safety_checker, **extra,
            )
        except (OSError, ValueError, KeyError) as error:
            raise ModelError(f"{checkpoint.label}: not a loadable {PIPELINE_CLASSES[kind]} checkpoint "
                             f"({error.__class__.__name__}: {error})") from error
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)

    return MODELS.get(pipeline_key(checkpoint, kind, device, dtype), load)


def pipeline_key(checkpoint: Checkpoint, kind: str, device: torch.device, dtype: torch.dtype) -> tuple:
    return ROLE, kind, str(checkpoint.path), checkpoint.version, str(device), str(dtype)


def load_controlnet(checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype):
    from diffusers import CosmosControlNetModel

    def load():
        try:
            model = CosmosControlNetModel.from_pretrained(checkpoint.path, dtype=dtype, use_safetensors=True,
                                                          local_files_only=True)
        except (OSError, ValueError, KeyError) as error:
            raise ModelError(f"{checkpoint.label}: not a loadable CosmosControlNetModel checkpoint "
                             f"({error.__class__.__name__}: {error})") from error
        return model.to(device)

    return MODELS.get((ROLE, "controlnet", str(checkpoint.path), checkpoint.version, str(device), str(dtype)), load)


@dataclass(frozen=True)
class ControlNetSource:
    """Where one control's ControlNet comes from: a local directory, or a Hub id with a revision."""

    source: str
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> ControlNetSource:
        """``path`` or ``model_id`` or ``model_id@revision`` (a local directory is never split at '@')."""
        if "@" in text and not Path(text).expanduser().is_dir():
            source, revision = text.rsplit("@", 1)
            return cls(source, revision or None)
        return cls(text)


def controlnet_sources(checkpoint: Checkpoint, configured: Mapping[str, str] | None = None) -> dict[str, ControlNetSource]:
    """Every control a Transfer checkpoint can run, by name.

    Configured sources win; then ControlNets stored under ``controlnets/<name>/`` inside the checkpoint (the
    layout of the tiny builds); then, for a Hub checkpoint, the Hub branches the diffusers example names.
    """
    sources: dict[str, ControlNetSource] = {}
    if not Path(checkpoint.name).expanduser().is_dir() and checkpoint.name.count("/") == 1:
        sources.update({name: ControlNetSource(checkpoint.name, HUB_CONTROLNET_REVISION.format(control=name))
                        for name in CONTROL_NAMES})
    folder = checkpoint.path / CONTROLNETS_FOLDER
    if folder.is_dir():
        sources.update({child.name: ControlNetSource(str(child)) for child in sorted(folder.iterdir())
                        if (child / "config.json").is_file()})
    sources.update({name: ControlNetSource.parse(text) for name, text in (configured or {}).items()})
    return sources


# ---------------------------------------------------------------------------------------------------------
# Generation.


class VideoGenerator:
    """A loaded Cosmos pipeline with its defaults; ``generate`` turns one request into one video."""

    def __init__(self, kind: str, checkpoint: Checkpoint, pipeline, device: torch.device, dtype: torch.dtype,
                 defaults: GenerationDefaults | None = None, controlnets: Mapping[str, ControlNetSource] | None = None,
                 speedups: GeneratorSpeedups | None = None):
        """``speedups``: switches of the transformer's fast path (``generator_speedups.GeneratorSpeedups``; its defaults
        when None). The pipeline may be shared: each ``generate`` applies this generator's switches."""
        check_kind(kind)
        self.kind = kind
        self.checkpoint = checkpoint
        self.pipeline = pipeline
        self.device = device
        self.dtype = dtype
        self.defaults = defaults or DEFAULTS[kind]
        self.controlnets = dict(controlnets or {})
        self.speedups = speedups or GeneratorSpeedups()

    @property
    def controls(self) -> tuple[str, ...]:
        """The controls this generator can be asked for (Transfer only)."""
        return tuple(sorted(self.controlnets))

    def generate(self, request: GenerationRequest) -> GeneratedVideo:
        if self.kind == COSMOS3:  # another pipeline interface (no text encoder, video out): its own module
            from cosmos_assets.models import cosmos3

            return cosmos3.generate(self, request)
        d = self.defaults
        controls = self._controls(request) if self.kind == TRANSFER25 else None
        # Transfer without a set length follows its (shortest) control video, as the pipeline itself does.
        num_frames = request.num_frames or d.num_frames or min(len(video) for _, video, _ in controls)
        height, width = request.height or d.height, request.width or d.width
        fps = request.fps or d.fps
        steps = request.steps or d.steps
        guidance = d.guidance_scale if request.guidance_scale is None else request.guidance_scale
        negative_prompt = request.negative_prompt if request.negative_prompt is not None else d.negative_prompt
        self._check_geometry(num_frames, height, width)

        common = dict(prompt=request.prompt, height=height, width=width, num_frames=num_frames,
                      num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                      max_sequence_length=d.max_sequence_length,
                      # Seeded per request: the same request gives the same video, whatever ran before.
                      generator=torch.Generator(self.device).manual_seed(request.seed))
        if negative_prompt is not None:
            common["negative_prompt"] = negative_prompt
        settings: dict = {}
        if self.kind == TRANSFER25:
            pipe, call, settings = self._transfer_call(controls, num_frames, height, width, request.seed)
        else:
            pipe, call, settings = self.pipeline, self._predict_call(request, fps), {}
        apply_generator_speedups(pipe.transformer, self.speedups, self.device)
        frames = self._run(pipe, request, num_frames, {**common, **call})
        if frames.shape != (num_frames, height, width, 3):
            raise RuntimeError(f"{PIPELINE_CLASSES[self.kind]} returned {frames.shape}, "
                               f"expected {(num_frames, height, width, 3)}")
        tiny = self.checkpoint.tiny_random or settings.pop("controlnet_tiny_random", False)
        return GeneratedVideo(frames=frames, fps=fps, settings={
            "backend": self.kind, "pipeline": PIPELINE_CLASSES[self.kind],
            "checkpoint": self.checkpoint.label, "checkpoint_name": self.checkpoint.name,
            "checkpoint_version": self.checkpoint.version, "tiny_random": tiny,
            "label": TINY_LABEL if tiny else "", "seed": request.seed, "steps": steps, "guidance_scale": guidance,
            "num_frames": num_frames, "height": height, "width": width, "fps": fps,
            "negative_prompt": negative_prompt, "conditioning_frames": _frame_count(request.conditioning_frames),
            "controls": {}, "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
            # FP8 products or cached steps (GeneratorSpeedups): the video is not the bf16 path's; empty when off.
            "approximations": approximations(pipe.transformer),
            **settings,
        })

    def _run(self, pipe, request: GenerationRequest, num_frames: int, kwargs: dict) -> np.ndarray:
        """The pipeline call, as uint8 frames; for Predict2 with the switches of ``GeneratorSpeedups`` around it."""
        speedups, conditioning = self.speedups, _frame_count(request.conditioning_frames)
        trim = (self.kind == PREDICT2 and speedups.conditioning_encode and 0 < conditioning < num_frames)
        on_device = self.kind == PREDICT2 and speedups.device_postprocess and pipe.safety_checker is not None
        with encode_conditioning_only(pipe.vae, conditioning, pipe.vae_scale_factor_temporal) if trim else nullcontext():
            output = pipe(**{**kwargs, "output_type": "latent"} if on_device else kwargs)
        if on_device:
            return predict2_frames(pipe, output.frames)
        return np.clip(np.rint(np.asarray(output.frames[0]) * 255.0), 0, 255).astype(np.uint8)

    def _check_geometry(self, num_frames: int, height: int, width: int) -> None:
        # Caught here with a clear message; the pipelines would fail deeper or silently return other sizes.
        temporal = self.pipeline.vae_scale_factor_temporal
        if num_frames < 1 or (self.kind != TRANSFER25 and (num_frames - 1) % temporal):
            raise ValueError(f"num_frames must be 1 + {temporal}k (the VAE compresses time {temporal}x), got {num_frames}")
        if height % 16 or width % 16 or height <= 0 or width <= 0:
            raise ValueError(f"height and width must be positive multiples of 16, got {height}x{width}")

    def _predict_call(self, request: GenerationRequest, fps: int) -> dict:
        frames = request.conditioning_frames
        if self.kind == PREDICT2:
            if frames is None or len(frames) == 0:
                raise ValueError("Predict2 Video2World needs conditioning frames from a source clip")
            return {"video": _pil_frames(frames[: self.defaults.num_conditional_frames]), "fps": fps}
        if frames is None or len(frames) == 0:
            return {}  # Text2World
        # Video2World on the last 1 + 4(n-1) source frames; a shorter clip conditions on its last frame.
        latent_frames = self.defaults.num_latent_conditional_frames
        needed = 1 + self.pipeline.vae_scale_factor_temporal * (latent_frames - 1)
        return {"video": _pil_frames(frames), "num_latent_conditional_frames": latent_frames if len(frames) >= needed else 1}

    def _controls(self, request: GenerationRequest) -> list[tuple[str, np.ndarray, float]]:
        """(name, video, weight) of every control of a Transfer request, in the request's order."""
        if not request.controls:
            raise ValueError(f"Transfer 2.5 needs at least one control video; available: {', '.join(self.controls)}")
        unknown = [name for name in request.controls if name not in self.controlnets]
        if unknown:
            raise ModelError(f"{self.checkpoint.label} has no ControlNet for {unknown}; available: {', '.join(self.controls)}")
        controls = [(name, _as_video(video), float(weight)) for name, (video, weight) in request.controls.items()]
        sizes = {video.shape[1:3] for _, video, _ in controls}
        if len(sizes) > 1:
            raise ValueError(f"control videos of one request differ in size: {sorted(sizes)}")
        return controls

    def _transfer_call(self, controls: list[tuple[str, np.ndarray, float]], num_frames: int, height: int, width: int,
                       seed: int):
        """The pipeline and its call for one control (the plain diffusers pipeline) or several (one ControlNet each in
        the same denoising loop, residuals summed by weight: ``controls.multi_controlnet``)."""
        from cosmos_assets.controls.multi_controlnet import prepare_controls, weighted_pipeline

        for name, video, _ in controls:
            if len(video) < num_frames:
                raise ValueError(f"the {name} control video has {len(video)} frames; {num_frames} were requested")
        loaded = {name: self._controlnet(name) for name, _, _ in controls}
        d = self.defaults
        # A chunk no longer than the video (rounded up to what the VAE decodes, 1 + 4k frames; the pipeline trims
        # the excess): a short video is not generated as a full 93-frame chunk and then cut.
        temporal = self.pipeline.vae_scale_factor_temporal
        chunk = max(min(d.num_frames_per_chunk, 1 + temporal * -(-(num_frames - 1) // temporal)), temporal + 1)
        call = {"num_frames_per_chunk": chunk, "conditional_frame_timestep": d.conditional_frame_timestep}
        base_key = pipeline_key(self.checkpoint, self.kind, self.device, self.dtype)
        if len(controls) == 1:
            (name, video, weight), = controls
            controlnet, checkpoint = loaded[name]
            # The same modules, with this control's ControlNet: a second pipeline object costs no memory.
            pipe = MODELS.get((*base_key, name, str(checkpoint.path), checkpoint.version),
                              lambda: self._with_controlnet(controlnet))
            call.update(controls=_pil_frames(video[:num_frames]), controls_conditioning_scale=weight)
        else:
            key = (*base_key, "weighted", *((name, str(c.path), c.version) for name, (_, c) in loaded.items()))
            pipe = MODELS.get(key, lambda: weighted_pipeline(self.pipeline, {n: model for n, (model, _) in loaded.items()}))
            first = prepare_controls(pipe, [(name, _pil_frames(video[:num_frames]), weight) for name, video, weight in controls],
                                     height=height, width=width, num_frames=num_frames, frames_per_chunk=chunk, seed=seed,
                                     device=self.device)
            call.update(controls=first, controls_conditioning_scale=1.0)  # the weights are applied per ControlNet
        settings = {"controls": {name: weight for name, _, weight in controls},
                    "controlnet": {name: checkpoint.label for name, (_, checkpoint) in loaded.items()},
                    "controlnet_tiny_random": any(checkpoint.tiny_random for _, checkpoint in loaded.values())}
        return pipe, call, settings

    def _controlnet(self, name: str):
        """This control's ControlNet, loaded once per process, and its checkpoint."""
        source = self.controlnets[name]
        checkpoint = resolve_checkpoint(source.source, role=f"{ROLE} {name} ControlNet",
                                        revision=source.revision, how_to_provide=HOW_TO_PROVIDE)
        return load_controlnet(checkpoint, self.device, self.dtype), checkpoint

    def _with_controlnet(self, controlnet):
        pipe = type(self.pipeline)(**{**self.pipeline.components, "controlnet": controlnet})
        pipe.set_progress_bar_config(disable=True)
        return pipe


def _frame_count(frames: np.ndarray | None) -> int:
    return 0 if frames is None else len(frames)


def load_generator(checkpoint: Checkpoint, kind: str, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                   defaults: GenerationDefaults | None = None, controlnets: Mapping[str, str] | None = None,
                   speedups: GeneratorSpeedups | None = None) -> VideoGenerator:
    """A ``VideoGenerator`` for a resolved checkpoint; the pipeline itself is loaded once per process."""
    check_kind(kind)
    device = device if isinstance(device, torch.device) else choose_device(device)
    dtype = dtype if isinstance(dtype, torch.dtype) else choose_dtype(device, dtype)
    pipeline = load_pipeline(checkpoint, kind, device, dtype)
    sources = controlnet_sources(checkpoint, controlnets) if kind == TRANSFER25 else {}
    return VideoGenerator(kind, checkpoint, pipeline, device, dtype, defaults, sources, speedups)


def open_generator(kind: str, model: str, revision: str | None = None, models_root: Path | None = None,
                   device: str = "auto", dtype: str = "auto", controlnets: Mapping[str, str] | None = None,
                   speedups: GeneratorSpeedups | None = None, **default_overrides) -> VideoGenerator:
    """Resolve ``model`` (a directory, a Hub id already in the cache, or ``tiny:<kind>``, built under
    ``models_root``) and load it as a ``kind`` generator."""
    check_kind(kind)
    if model.startswith(TINY_PREFIX):
        checkpoint = resolve_model(model, role=f"{ROLE} ({kind})", models_root=models_root)
    else:
        checkpoint = resolve_checkpoint(model, role=f"{ROLE} ({kind})", revision=revision, how_to_provide=HOW_TO_PROVIDE)
    return load_generator(checkpoint, kind, device, dtype, defaults_for(kind, **default_overrides), controlnets, speedups)


