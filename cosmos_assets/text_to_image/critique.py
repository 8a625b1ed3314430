"""Image critics: a score in [0, 1] per candidate image, with the critic's identity and version.

- ``ImageMetricCritic`` (the ``local`` profile): the video metric critic's signals that mean something for one
  image with no source to compare against: sharpness (Laplacian energy), sane exposure (the video critic's own
  per-frame measure) and freedom from noise (Immerkær's noise estimate), plus, where the packaged ImageNet tagger
  and text embedder are given, how well the image's tags agree with its prompt. The score is the geometric mean
  of the signals in use, so one broken aspect sinks the image.
- ``ImageReasonCritic`` (``gpu``): the Reason critic asking the anomaly question (or the 1-5 rubric) about one
  image, K trials, parsed exactly as for videos (``synthetic.critics.judge_trials``).

No Dagster here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from cosmos_assets.common.knobs import knob
from cosmos_assets.models.vlm import GenerationSettings, VideoPrompt
# The per-frame exposure measure of the video critic, applied to one frame (the same thresholds mean the same).
from cosmos_assets.synthetic.critics import Critique, _exposure, judge_trials

IMAGE_METRIC_VERSION = "image-metric-critic/1"
IMAGE_COMPONENTS = ("sharpness", "exposure", "noise_free", "text_agreement")


@dataclass(frozen=True)
class ImageCriticConfig:
    """How the image metric critic measures one image."""

    analysis_width: int = knob(512, "Width in pixels at which an image is measured (larger ones are scaled down).")
    sharp_laplacian_var: float = knob(
        100.0, "Variance of the Laplacian (uint8 units, at half the analysis width) at which sharpness scores 1 - 1/e.")
    noise_floor: float = knob(2.0, "Noise (sigma, uint8 units) every camera image has; only noise above it costs.")
    noise_scale: float = knob(8.0, "Noise above the floor (sigma, uint8 units) that costs the score a factor e.")
    min_mean_luma: float = knob(0.03, "Images darker on average (0..1) are black.")
    min_luma_std: float = knob(0.02, "Images with a flatter luma (standard deviation, 0..1) are blank.")
    max_clipped_fraction: float = knob(0.4, "Images with a larger share (0..1) of pixels at 0 or 255 are blown out.")
    use_text_agreement: bool = knob(
        False, "Count the agreement of the image's ImageNet tags with its prompt in the score (always recorded where "
               "the tagger runs; off by default: ImageNet's 1000 classes name objects, not scenes or weather).")
    top_tags: int = knob(5, "ImageNet tags per image compared with the prompt.")

    def version(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"{IMAGE_METRIC_VERSION}+{digest}"


@dataclass(frozen=True)
class ImageScore:
    score: float
    sharpness: float
    exposure: float
    noise_free: float
    text_agreement: float | None  # None where no tagger / text embedder was given
    tags: list[tuple[str, float]] | None = None

    def components(self) -> dict:
        return {name: getattr(self, name) for name in IMAGE_COMPONENTS}


def luma(image: np.ndarray, width: int) -> np.ndarray:
    """uint8 H x W luma of an RGB image, scaled down to at most ``width`` pixels wide."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    if gray.shape[1] > width:
        height = max(8, round(gray.shape[0] * width / gray.shape[1]))
        gray = cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)
    return gray


def sharpness(gray: np.ndarray, scale: float) -> float:
    """1 - exp(-var(Laplacian) / scale), measured at half size so that pixel noise weighs less than edges."""
    half = cv2.resize(gray, (max(4, gray.shape[1] // 2), max(4, gray.shape[0] // 2)), interpolation=cv2.INTER_AREA)
    variance = float(cv2.Laplacian(half.astype(np.float32), cv2.CV_32F).var())
    return float(1.0 - np.exp(-variance / scale))


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def noise_sigma(gray: np.ndarray) -> float:
    """Immerkær's fast noise estimate (Computer Vision and Image Understanding, 1996), in uint8 units: the mask
    cancels smooth structure up to second order, so what it leaves is noise."""
    height, width = gray.shape
    if height < 3 or width < 3:
        return 0.0
    response = cv2.filter2D(gray.astype(np.float32), -1, _NOISE_KERNEL, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(response).sum() / (6.0 * (width - 2) * (height - 2)))


def tag_text_agreement(tags: list[tuple[str, float]], prompt_vector: np.ndarray, tag_vectors: np.ndarray) -> float:
    """How much of the tagger's belief sits on classes the prompt speaks of: the probability-weighted cosine (clipped
    at 0) of the prompt's text embedding with each tag name's, over the tags' total probability."""
    weights = np.array([p for _, p in tags], np.float32)
    if not len(weights) or weights.sum() <= 0:
        return 0.0
    similarity = np.clip(tag_vectors @ prompt_vector, 0.0, 1.0)
    return float((weights * similarity).sum() / weights.sum())


class ImageMetricCritic:
    """Scores images on their own; ``tagger`` (an embedder with ImageNet tags, ``embed_videos``) and
    ``text_embedder`` (``embed_texts``) add the prompt agreement where both are given."""

    mode = "metric"

    def __init__(self, config: ImageCriticConfig = ImageCriticConfig(), tagger=None, text_embedder=None):
        self.config, self.tagger, self.text_embedder = config, tagger, text_embedder

    @property
    def identity(self) -> dict:
        models = [m for m in (getattr(self.tagger, "name", None), getattr(self.text_embedder, "name", None)) if m]
        return {"critic": "image-metric", "critic_version": self.config.version(),
                "critic_model": "+".join(models) or None, "tiny_random": False}

    def _agreements(self, images: list[np.ndarray], prompts: list[str]) -> list[tuple[float | None, list | None]]:
        if self.tagger is None or self.text_embedder is None:
            return [(None, None)] * len(images)
        tags = self.tagger.embed_videos([image[None] for image in images], top_tags=self.config.top_tags).tags
        names = sorted({name for image_tags in tags for name, _ in image_tags})
        name_vectors = dict(zip(names, self.text_embedder.embed_texts(names)))
        prompt_vectors = self.text_embedder.embed_texts(prompts)
        return [(round(tag_text_agreement(t, p, np.stack([name_vectors[n] for n, _ in t])), 6), t)
                for t, p in zip(tags, prompt_vectors)]

    def score(self, images: list[np.ndarray], prompts: list[str]) -> list[ImageScore]:
        """``images``: uint8 H x W x 3; ``prompts``: what each was generated from (for the text agreement)."""
        config = self.config
        results = []
        for image, (agreement, tags) in zip(images, self._agreements(images, prompts)):
            gray = luma(image, config.analysis_width)
            sharp = sharpness(gray, config.sharp_laplacian_var)
            exposure = _exposure(gray[None] / np.float32(255), config)
            noise_free = float(np.exp(-max(0.0, noise_sigma(gray) - config.noise_floor) / config.noise_scale))
            used = [sharp, exposure, noise_free] + ([agreement] if config.use_text_agreement and agreement is not None else [])
            score = float(np.exp(np.log(np.clip(used, 1e-4, 1.0)).mean()))
            results.append(ImageScore(round(score, 6), round(sharp, 6), round(float(exposure), 6), round(noise_free, 6),
                                      agreement, tags))
        return results


# --- the Reason critic's image mode ----------------------------------------------------------------------------

IMAGE_ANOMALY_SYSTEM_PROMPT = (
    "You are a careful image analyst. The image was made by a generator; find its artifacts and anomalies. Look at:\n"
    "* Object shapes and proportions (melted, merged, duplicated or missing parts)\n"
    "* Physical plausibility (support, contact, scale, perspective, shadows and reflections)\n"
    "* Text, signs and fine structure (garbled letters, broken lines, repeated textures)\n"
    "* Material and texture realism, colour and lighting consistency\n\n"
    "First describe the image. Then, for each point above, say what you see and whether it shows an anomaly "
    "(Yes or No). Think inside <think></think> tags, then give the final answer inside <answer></answer> tags."
)
IMAGE_ANOMALY_QUESTION = "Does the image contain any anomalies or artifacts? Answer Yes or No."
IMAGE_RUBRIC_SYSTEM_PROMPT = (
    "You are a careful image analyst who rates how realistic and physically plausible a generated image is.\n"
    "5: indistinguishable from a real photograph; everything is plausible.\n"
    "4: realistic with small flaws that do not change what is shown.\n"
    "3: clear flaws (distorted objects, wrong shadows or scale) but the scene is recognisable.\n"
    "2: major flaws (merged, duplicated or impossible objects).\n"
    "1: incoherent or not a scene at all.\n"
    "Think inside <think></think> tags, then give the rating inside <answer></answer> tags."
)
IMAGE_RUBRIC_QUESTION = "Rate the realism and physical plausibility of this image from 1 to 5."


def image_critic_prompts(mode: str) -> tuple[str, str]:
    if mode == "reason":
        return IMAGE_ANOMALY_SYSTEM_PROMPT, IMAGE_ANOMALY_QUESTION
    if mode == "rubric":
        return IMAGE_RUBRIC_SYSTEM_PROMPT, IMAGE_RUBRIC_QUESTION
    raise ValueError(f"image critic mode {mode!r}; expected reason or rubric")


def image_prompt(mode: str, image: np.ndarray) -> VideoPrompt:
    """One image as the VLM sees it: a still clip of two identical frames. Qwen2.5-VL patches pixels two frames at a
    time, and its image processor itself repeats a single image to fill that pair, so the model sees the same pixels;
    going through the video path keeps one prompt type for both backends (local model and endpoint)."""
    system, question = image_critic_prompts(mode)
    return VideoPrompt(np.stack([image, image]), 1.0, question, system)


class ImageReasonCritic:
    """A vision-language model (``TransformersVLM`` or ``EndpointVLM``) judging images, K trials each."""

    def __init__(self, vlm, settings: GenerationSettings, mode: str = "reason"):
        image_critic_prompts(mode)  # refuses an unknown mode now, not at the first image
        self.vlm, self.settings, self.mode = vlm, settings, mode

    @property
    def identity(self) -> dict:
        model = self.vlm.identity
        recipe = json.dumps({"prompts": image_critic_prompts(self.mode), "settings": asdict(self.settings),
                             "model_version": model["model_version"]}, sort_keys=True)
        return {"critic": f"image-{self.mode}:{model['model']}", "critic_model": model["model"],
                "critic_version": f"{model['model_version']}+{hashlib.sha256(recipe.encode()).hexdigest()[:8]}",
                "tiny_random": bool(model["tiny_random"])}

    def critique(self, images: list[np.ndarray]) -> list[Critique]:
        """One critique per uint8 H x W x 3 image; the images go to the model as one batch."""
        texts = self.vlm.generate([image_prompt(self.mode, image) for image in images], self.settings)
        return [judge_trials(self.mode, trial_texts) for trial_texts in texts]
