"""Control-video extractors: the same operation on every frame of a clip, with the extractor's identity.

- ``edge``: Canny edges (thresholds are knobs), white on black;
- ``blur``: a Gaussian blur, sigma a fraction of the longer side;
- ``depth``: a depth model through transformers' ``DepthAnythingForDepthEstimation`` (the Depth Anything V2
  architecture), relative depth (near is bright) normalised over the whole clip, so depth does not flicker;
- ``seg``: a semantic segmentation model through transformers' ``SegformerForSemanticSegmentation``, each class
  in a fixed colour. SegFormer rather than Mask2Former: it gives per-pixel class logits in one pass with no
  query decoding or mask post-processing, and a tiny build of it runs on a laptop CPU in milliseconds per frame,
  while Mask2Former needs a Swin backbone, a pixel decoder and a transformer decoder before its first mask.

Model-based extractors load like every other model (a local folder or the Hugging Face cache, verified
safetensors, ``from_pretrained`` with ``local_files_only``); ``tiny:depth`` / ``tiny:segmentation`` are tiny
random-weight checkpoints of the same architectures (``controls.tiny_models``), and their identity says so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos_assets.common.knobs import knob
from cosmos_assets.models.catalog import resolve_model
from cosmos_assets.models.checkpoints import Checkpoint, ModelError
from cosmos_assets.models.generator import _as_video, blur_control, edge_control
from cosmos_assets.models.runtime import MODELS, choose_device

EDGE, BLUR, DEPTH, SEG = "edge", "blur", "depth", "seg"
EXTRACTED_KINDS = (EDGE, BLUR, DEPTH, SEG)
# What the real-weight profiles use unless configured otherwise (both publish safetensors weights).
REAL_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
REAL_SEGMENTATION_MODEL = "nvidia/segformer-b0-finetuned-ade-512-512"
TINY_DEPTH_MODEL, TINY_SEGMENTATION_MODEL = "tiny:depth", "tiny:segmentation"


@dataclass(frozen=True)
class ExtractorSettings:
    """How control videos are extracted from a clip."""

    canny_low: int = knob(100, "Canny lower hysteresis threshold (0..255 gradient) of the edge control.")
    canny_high: int = knob(200, "Canny upper hysteresis threshold (0..255 gradient) of the edge control.")
    blur_sigma_fraction: float = knob(0.015, "Gaussian sigma of the blur control, as a fraction of the longer side.")
    depth_model: str = knob(TINY_DEPTH_MODEL, "Depth model (Depth Anything V2 architecture): a folder, a cached Hub id, "
                                              "or tiny:depth (random weights, labelled).")
    segmentation_model: str = knob(TINY_SEGMENTATION_MODEL, "Segmentation model (SegFormer architecture): a folder, a "
                                                            "cached Hub id, or tiny:segmentation (random weights, labelled).")
    model_batch_size: int = knob(8, "Frames per forward pass of the depth and segmentation models.")
    device: str = knob("auto", "Device of the depth and segmentation models (auto: CUDA when present).")


DEPTH_MODEL_ENV, SEGMENTATION_MODEL_ENV = "COSMOS_DEPTH_MODEL", "COSMOS_SEGMENTATION_MODEL"


def profile_models(profile: str | None = None) -> dict[str, str]:
    """The depth and segmentation models of a profile: tiny random ones on a laptop (``local``), the real ones
    elsewhere; COSMOS_DEPTH_MODEL / COSMOS_SEGMENTATION_MODEL point them at a folder or a cached Hub id."""
    import os

    from cosmos_assets.settings import cosmos_profile

    local = (profile or cosmos_profile()) == "local"
    return {"depth_model": os.environ.get(DEPTH_MODEL_ENV, TINY_DEPTH_MODEL if local else REAL_DEPTH_MODEL),
            "segmentation_model": os.environ.get(SEGMENTATION_MODEL_ENV,
                                                 TINY_SEGMENTATION_MODEL if local else REAL_SEGMENTATION_MODEL)}


@dataclass(frozen=True)
class ExtractorIdentity:
    """Which extractor made a control video: on every row that holds one, and on every fidelity score."""

    kind: str
    name: str  # the operation or the model as configured
    version: str  # parameters digest, or the checkpoint's revision / fingerprint
    random_weights: bool

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version[:12]}" + (" [random weights]" if self.random_weights else "")


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


class EdgeExtractor:
    kind = EDGE

    def __init__(self, low: int = 100, high: int = 200):
        if not 0 <= low <= high:
            raise ValueError(f"Canny thresholds must satisfy 0 <= low <= high, got {low}, {high}")
        self.low, self.high = low, high
        self.identity = ExtractorIdentity(EDGE, "opencv-canny", f"canny-{low}-{high}", False)

    def extract(self, frames: np.ndarray) -> np.ndarray:
        return edge_control(frames, self.low, self.high)


class BlurExtractor:
    kind = BLUR

    def __init__(self, sigma_fraction: float = 0.015):
        self.sigma_fraction = sigma_fraction
        self.identity = ExtractorIdentity(BLUR, "opencv-gaussian-blur", f"sigma-{sigma_fraction:g}", False)

    def extract(self, frames: np.ndarray) -> np.ndarray:
        return blur_control(frames, self.sigma_fraction)


class _ModelExtractor:
    """A transformers vision model run over a clip in batches; its processor makes the model's inputs."""

    kind = ""
    model_class = ""

    def __init__(self, checkpoint: Checkpoint, device: torch.device, batch_size: int = 8):
        self.checkpoint, self.device, self.batch_size = checkpoint, device, max(1, batch_size)
        self.identity = ExtractorIdentity(self.kind, checkpoint.name, checkpoint.version, checkpoint.tiny_random)
        self.model, self.processor = MODELS.get(("control-extractor", self.kind, str(checkpoint.path), checkpoint.version,
                                                 str(device)), self._load)

    def _load(self):
        import transformers

        model_class = getattr(transformers, self.model_class)
        try:
            model = model_class.from_pretrained(self.checkpoint.path, local_files_only=True, use_safetensors=True)
            processor = transformers.AutoImageProcessor.from_pretrained(self.checkpoint.path, local_files_only=True)
        except (OSError, ValueError, KeyError) as error:
            raise ModelError(f"{self.checkpoint.label}: not a loadable {self.model_class} checkpoint "
                             f"({error.__class__.__name__}: {error})") from error
        return model.to(self.device).eval(), processor

    @torch.no_grad()
    def _outputs(self, frames: np.ndarray):
        """Per batch of frames: the model's dense output resized to the frames' size (float32, on the CPU)."""
        video = _as_video(frames)
        height, width = video.shape[1:3]
        for start in range(0, len(video), self.batch_size):
            batch = list(video[start:start + self.batch_size])
            inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
            dense = self._dense(self.model(pixel_values=inputs["pixel_values"]))
            yield torch.nn.functional.interpolate(dense.float(), size=(height, width), mode="bilinear",
                                                  align_corners=False).cpu()

    def _dense(self, output) -> torch.Tensor:
        raise NotImplementedError


class DepthExtractor(_ModelExtractor):
    """Relative depth (larger is nearer, as Depth Anything predicts it) per pixel."""

    kind = DEPTH
    model_class = "DepthAnythingForDepthEstimation"

    def _dense(self, output) -> torch.Tensor:
        return output.predicted_depth.unsqueeze(1)

    def depth(self, frames: np.ndarray) -> np.ndarray:
        """float32 T x H x W relative depth at the frames' size."""
        return torch.cat([dense[:, 0] for dense in self._outputs(frames)]).numpy()

    def extract(self, frames: np.ndarray) -> np.ndarray:
        return depth_video(self.depth(frames))


class SegmentationExtractor(_ModelExtractor):
    """A class id per pixel (the argmax of SegFormer's logits upsampled to the frame)."""

    kind = SEG
    model_class = "SegformerForSemanticSegmentation"

    def _dense(self, output) -> torch.Tensor:
        return output.logits

    def labels(self, frames: np.ndarray) -> np.ndarray:
        """int32 T x H x W class ids at the frames' size."""
        return torch.cat([dense.argmax(dim=1) for dense in self._outputs(frames)]).numpy().astype(np.int32)

    def extract(self, frames: np.ndarray) -> np.ndarray:
        return segmentation_colours(self.labels(frames))


def depth_video(depth: np.ndarray) -> np.ndarray:
    """Relative depth as a grey video (near bright), stretched over the whole clip's range, not per frame."""
    low, high = float(np.min(depth)), float(np.max(depth))
    scaled = np.zeros_like(depth) if high - low < 1e-12 else (depth - low) / (high - low)
    grey = np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


# One fixed colour per class id, the same in every clip and every run (a seeded palette, class 0 black).
_PALETTE = np.random.default_rng(20240916).integers(32, 256, (1024, 3), dtype=np.uint8)
_PALETTE[0] = 0


def segmentation_colours(labels: np.ndarray) -> np.ndarray:
    """uint8 ... x 3 colours of integer class ids."""
    return _PALETTE[np.asarray(labels) % len(_PALETTE)]


def open_extractor(kind: str, settings: ExtractorSettings = ExtractorSettings(), models_root: Path | None = None):
    """The extractor of ``kind`` configured by ``settings`` (models resolved and loaded once per process)."""
    if kind == EDGE:
        return EdgeExtractor(settings.canny_low, settings.canny_high)
    if kind == BLUR:
        return BlurExtractor(settings.blur_sigma_fraction)
    if kind in (DEPTH, SEG):
        source = settings.depth_model if kind == DEPTH else settings.segmentation_model
        checkpoint = resolve_model(source, role=f"{kind} control extractor", models_root=models_root)
        extractor = DepthExtractor if kind == DEPTH else SegmentationExtractor
        return extractor(checkpoint, choose_device(settings.device), settings.model_batch_size)
    raise ValueError(f"no extractor for control {kind!r}; extracted controls: {', '.join(EXTRACTED_KINDS)} "
                     "(others, e.g. hdmap or lidar, come only as user-supplied videos)")
