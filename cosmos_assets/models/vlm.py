"""The vision-language role (captioner and critic): Qwen2.5-VL / Cosmos-Reason1 through transformers,
or the same role through an OpenAI-compatible chat-completions endpoint (vLLM, NIM).

Both backends take the same ``VideoPrompt`` and ``GenerationSettings`` and return one text per trial;
what the text means (a caption, a critic verdict) is decided by the caller with ``parse_reasoned_answer``.
"""

from __future__ import annotations

import base64
import io
import logging
import random
import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

from cosmos_assets.common.knobs import knob
from cosmos_assets.models.checkpoints import Checkpoint, ModelError
from cosmos_assets.models.frames import fit_pixel_budget
from cosmos_assets.models.runtime import MODELS
from cosmos_assets.models.vlm_speedups import Sampling, StaticDecoder, PhaseClock, batch_vision_windows, fit_frames_on_device

log = logging.getLogger(__name__)

DEFAULT_VLM = "nvidia/Cosmos-Reason1-7B"


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings for one use of the model; each use (caption, critique) has its own in config."""

    temperature: float = knob(0.1, "Sampling temperature; 0 decodes greedily.")
    top_p: float = knob(0.95, "Nucleus sampling: tokens are drawn from the most likely ones whose probabilities add "
                              "up to this (0..1).")
    max_new_tokens: int = knob(256, "Most tokens generated per answer.")
    repetition_penalty: float = knob(1.05, "Penalty on tokens already in the answer (1: none).")
    trials: int = knob(1, "Independent answers to the same prompt and video (the critic's K).")
    seed: int = knob(0, "Seed of the sampling (repeatable answers).")
    min_new_tokens: int = knob(0, "Least tokens generated per answer (benchmarks force full-length answers from "
                                  "random weights).")

    @property
    def sampling(self) -> bool:
        return self.temperature > 0


# cosmos-curate captions at temperature 0.1 with repetition penalty 1.05; the Reason critic samples
# K = 5 trials at temperature 0.6, top-p 0.95 (cosmos_reference.md).
CAPTION_SETTINGS = GenerationSettings(temperature=0.1, repetition_penalty=1.05, max_new_tokens=256, trials=1)
CRITIC_SETTINGS = GenerationSettings(temperature=0.6, top_p=0.95, repetition_penalty=1.0, max_new_tokens=512, trials=5)


@dataclass(frozen=True)
class VideoPrompt:
    """One question about one video: frames already sampled (uint8 T×H×W×3) at ``fps``."""

    frames: np.ndarray
    fps: float
    question: str
    system: str | None = None


@dataclass(frozen=True)
class VideoSizing:
    """How many visual tokens a video may cost: a pixel budget over all frames (the critic uses 8192·28·28)."""

    total_pixels: int = 8192 * 28 * 28
    min_pixels: int = 4 * 28 * 28
    max_pixels: int = 768 * 28 * 28


@dataclass(frozen=True)
class ReasonedAnswer:
    thinking: str
    answer: str
    parsed: bool  # False when the text had no <answer> tag: kept and counted, never silently dropped
    raw: str = field(repr=False, default="")


_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S | re.I)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)


def parse_reasoned_answer(text: str) -> ReasonedAnswer:
    """Split Reason-style output ``<think>…</think> <answer>…</answer>`` into its parts.

    The last complete answer tag wins (models sometimes quote the format before answering).
    """
    thinking = _THINK.search(text)
    answers = _ANSWER.findall(text)
    return ReasonedAnswer(
        thinking=thinking.group(1).strip() if thinking else "",
        answer=answers[-1].strip() if answers else "",
        parsed=bool(answers),
        raw=text,
    )


def _messages(prompt: VideoPrompt, video_part: dict) -> list[dict]:
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    messages.append({"role": "user", "content": [video_part, {"type": "text", "text": prompt.question}]})
    return messages


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in frames])


def _even_frames(frames: np.ndarray) -> np.ndarray:
    # Qwen2.5-VL patches video two frames at a time; repeat the last frame rather than drop one.
    return frames if len(frames) % 2 == 0 else np.concatenate([frames, frames[-1:]])


@dataclass(frozen=True)
class VLMSpeedups:
    """Switches of the transformers path (all on by default; each off gives the path before it).

    - ``share_prefill``: the K trials of a prompt decode from one encode + prefill of the video (off: ``generate``
      with ``num_return_sequences``, which encodes and prefills it K times).
    - ``static_decode``: with ``share_prefill``, decode in a static KV cache with this package's sampling loop
      (``vlm_speedups.StaticDecoder``) instead of ``generate`` continuing from the shared cache.
    - ``cuda_graphs``: with ``static_decode`` on CUDA, the decode step is captured once and replayed per token.
    - ``device_preprocess``: frames are resized, normalised and patchified on the model's device instead of with
      PIL and the processor on the CPU.
    - ``batched_vision``: the vision tower attends all its windows in one call per layer.
    """

    share_prefill: bool = True
    static_decode: bool = True
    cuda_graphs: bool = True
    device_preprocess: bool = True
    batched_vision: bool = True


def load_processor_and_model(model_class, checkpoint: Checkpoint, dtype, device, failure):
    """A transformers vision-language checkpoint and its processor, loaded as real weights load: from its folder
    only, safetensors only, no remote code. ``failure(error)`` is the message of the ModelError a broken one raises."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(checkpoint.path, local_files_only=True, trust_remote_code=False)
        model = model_class.from_pretrained(
            checkpoint.path, dtype=dtype, use_safetensors=True, local_files_only=True, trust_remote_code=False,
        ).to(device).eval()
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(failure(error)) from error
    return processor, model


class TransformersVLM:
    """Qwen2.5-VL-architecture checkpoint (Cosmos-Reason1-7B by default) through transformers."""

    backend = "transformers"

    def __init__(self, model, processor, checkpoint: Checkpoint, sizing: VideoSizing = VideoSizing(), share_prefill: bool = True,
                 speedups: VLMSpeedups | None = None):
        """Wrap a loaded model and processor; ``load`` is how checkpoints become one. The GPU benchmark
        builds real-size random models in memory and wraps them here, so it times this same code."""
        self.model, self.processor, self.checkpoint, self.sizing = model, processor, checkpoint, sizing
        self.device, self.dtype = model.device, model.dtype
        self.processor.tokenizer.padding_side = "left"  # generation appends on the right
        self.video_processor_limits = getattr(self.processor.video_processor, "size", {}) or {}
        self.decoder = StaticDecoder(model)
        self.record_timings = False  # benchmarks: device-synchronised phase times in ``last_timings``
        self.last_timings: dict | None = None
        self.configure(speedups or VLMSpeedups(share_prefill=share_prefill))

    def configure(self, speedups: VLMSpeedups) -> None:
        """Apply a set of switches (the model may be shared: the last configuration wins)."""
        self.speedups = speedups
        self.decoder.cuda_graphs = speedups.cuda_graphs
        batch_vision_windows(self.model, speedups.batched_vision)

    @property
    def share_prefill(self) -> bool:
        return self.speedups.share_prefill

    @share_prefill.setter
    def share_prefill(self, value: bool) -> None:
        self.configure(VLMSpeedups(**{**asdict(self.speedups), "share_prefill": value}))

    @classmethod
    def load(cls, checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype, sizing: VideoSizing = VideoSizing(),
             share_prefill: bool = True, speedups: VLMSpeedups | None = None):
        from transformers import Qwen2_5_VLForConditionalGeneration

        processor, model = load_processor_and_model(
            Qwen2_5_VLForConditionalGeneration, checkpoint, dtype, device,
            lambda error: f"{checkpoint.name}: could not load as a Qwen2.5-VL checkpoint: {error}")
        return cls(model, processor, checkpoint, sizing, share_prefill, speedups)

    @property
    def identity(self) -> dict:
        return {"backend": self.backend, "model": self.checkpoint.name, "model_version": self.checkpoint.version,
                "tiny_random": self.checkpoint.tiny_random}

    def _fit_size(self, frames: np.ndarray) -> tuple[int, int]:
        limits = self.video_processor_limits
        max_pixels = min(self.sizing.max_pixels, limits.get("longest_edge", self.sizing.max_pixels))
        min_pixels = max(self.sizing.min_pixels, limits.get("shortest_edge", 0)) if limits.get("shortest_edge", 0) <= max_pixels else max_pixels
        return fit_pixel_budget(frames.shape[1], frames.shape[2], len(frames), self.sizing.total_pixels,
                                min_pixels=min_pixels, max_pixels=max_pixels)

    def _fit(self, frames: np.ndarray) -> np.ndarray:
        frames = _even_frames(frames)
        return resize_frames(frames, *self._fit_size(frames))

    def _fit_on_device(self, frames: np.ndarray) -> torch.Tensor:
        """As ``_fit``, on the model's device: uint8 T×3×H×W (the processor then works there too)."""
        frames = _even_frames(frames)
        return fit_frames_on_device(frames, *self._fit_size(frames), self.device)

    def _sampling(self, settings: GenerationSettings) -> Sampling:
        # As generate(): top-k from the checkpoint's generation config (transformers' default 50 when unset).
        top_k = getattr(self.model.generation_config, "top_k", None)
        return Sampling(temperature=settings.temperature, top_p=settings.top_p, top_k=50 if top_k is None else top_k,
                        repetition_penalty=settings.repetition_penalty, min_new_tokens=settings.min_new_tokens)

    def _generate_from_shared_prefill(self, inputs, trials: int, generator_kwargs: dict) -> torch.Tensor:
        """K trials of one prompt from one encode and one prefill.

        ``num_return_sequences`` copies the inputs K times before the forward pass, so the video is
        encoded and prefilled K times. Here the prompt minus its last token is prefilled once, the
        cache is copied K times, and sampling continues from it (positions from the stored M-RoPE deltas).
        """
        sequence_keys = [k for k in ("input_ids", "attention_mask", "mm_token_type_ids") if k in inputs]
        prefix = {**inputs, **{k: inputs[k][:, :-1] for k in sequence_keys}}
        cache = self.model(**prefix, use_cache=True).cache
        cache.batch_repeat_interleave(trials)
        language_model = self.model.model
        language_model.rope_deltas = language_model.rope_deltas.repeat_interleave(trials, dim=0)
        expanded = {k: inputs[k].repeat_interleave(trials, dim=0) for k in sequence_keys}
        return self.model.generate(**expanded, cache=cache, **generator_kwargs)

    def encode_prompts(self, prompts: list[VideoPrompt]):
        """The model inputs of ``prompts`` exactly as inference builds them (chat template with the generation
        prompt, frames fitted to the pixel budget, sampling rate in the video metadata), left-padded, on the
        model's device. Training builds its inputs here too, so a tuned model sees what inference will send."""
        from transformers.video_utils import VideoMetadata

        texts = [self.processor.apply_chat_template(_messages(p, {"type": "video"}), tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        on_device = {}
        if self.speedups.device_preprocess:
            videos = [self._fit_on_device(p.frames) for p in prompts]
            on_device = {"device": str(self.device)}
        else:
            videos = [self._fit(p.frames) for p in prompts]
        return self.processor(
            text=texts, videos=videos, padding=True, return_tensors="pt",
            # The sampling rate tells the model how much time each temporal patch spans (its M-RoPE).
            videos_kwargs={"video_metadata": [VideoMetadata(total_num_frames=len(v), fps=p.fps) for v, p in zip(videos, prompts)],
                           "do_resize": False, "cap_pixels_per_frame": True, **on_device},
        ).to(self.device)

    def generate_tokens(self, prompts: list[VideoPrompt], settings: GenerationSettings) -> torch.Tensor:
        """The new token ids, ``[len(prompts)·trials, n]``: the trials of a prompt together, finished rows padded
        with the pad token. ``generate`` decodes them; GRPO scores these very tokens."""
        if settings.trials > 1 and not settings.sampling:  # greedy trials are identical: decode once
            once = self.generate_tokens(prompts, GenerationSettings(**{**asdict(settings), "trials": 1}))
            return once.repeat_interleave(settings.trials, dim=0)
        speedups = self.speedups
        timings: dict | None = {} if self.record_timings else None
        clock = PhaseClock(self.device, timings)
        inputs = self.encode_prompts(prompts)
        clock.lap("preprocess_s")
        generator_kwargs = {}
        if settings.sampling:
            generator_kwargs = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
            torch.manual_seed(settings.seed)
        else:
            generator_kwargs = {"do_sample": False}
        generator_kwargs.update(max_new_tokens=settings.max_new_tokens, min_new_tokens=settings.min_new_tokens,
                                repetition_penalty=settings.repetition_penalty)
        with torch.inference_mode():
            if speedups.share_prefill and speedups.static_decode:
                new_tokens = self.decoder.generate(inputs, settings.trials, self._sampling(settings), settings.max_new_tokens,
                                                   clock)
            else:
                if speedups.share_prefill and settings.trials > 1:
                    output = self._generate_from_shared_prefill(inputs, settings.trials, generator_kwargs)
                else:
                    output = self.model.generate(**inputs, num_return_sequences=settings.trials, **generator_kwargs)
                new_tokens = output[:, inputs["input_ids"].shape[1]:]
                clock.lap("generate_s")
        self._clock, self.last_timings = clock, timings  # ``generate`` adds its detokenising time
        return new_tokens

    def generate(self, prompts: list[VideoPrompt], settings: GenerationSettings) -> list[list[str]]:
        """``settings.trials`` texts for each prompt, the prompts batched into one ``generate`` call."""
        if not prompts:
            return []
        new_tokens = self.generate_tokens(prompts, settings)
        decoded = self.processor.batch_decode(new_tokens.cpu(), skip_special_tokens=True)
        self._clock.lap("detokenize_s")
        return [decoded[i * settings.trials:(i + 1) * settings.trials] for i in range(len(prompts))]


class EndpointError(ModelError):
    pass


def _jpeg_data_uri(frame: np.ndarray, quality: int = 90) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class EndpointVLM:
    """The same role through an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, NIM).

    The video goes as its sampled frames (JPEG data URIs, which every such server accepts); the K
    trials of one prompt go in one request with ``n``; transient failures (connection errors,
    timeouts, 429 and 5xx) are retried with exponential backoff and jitter, honouring Retry-After.
    """

    backend = "endpoint"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0,
                 max_retries: int = 4, backoff_s: float = 1.0, sizing: VideoSizing = VideoSizing(), max_side: int = 448):
        import httpx

        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.max_retries, self.backoff_s, self.sizing, self.max_side = model, max_retries, backoff_s, sizing, max_side
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers)

    @property
    def identity(self) -> dict:
        return {"backend": self.backend, "model": self.model, "model_version": self.url, "tiny_random": False}

    def _payload(self, prompt: VideoPrompt, settings: GenerationSettings, n: int) -> dict:
        frames = _even_frames(prompt.frames)
        height, width = fit_pixel_budget(frames.shape[1], frames.shape[2], len(frames), self.sizing.total_pixels,
                                         min_pixels=self.sizing.min_pixels, max_pixels=self.sizing.max_pixels)
        frames = resize_frames(frames, height, width)
        parts = [{"type": "image_url", "image_url": {"url": _jpeg_data_uri(f)}} for f in frames]
        messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
        messages.append({"role": "user", "content": [*parts, {"type": "text", "text": prompt.question}]})
        payload = {"model": self.model, "messages": messages, "n": n, "max_tokens": settings.max_new_tokens,
                   "temperature": settings.temperature, "top_p": settings.top_p, "seed": settings.seed}
        if settings.repetition_penalty != 1.0:
            payload["repetition_penalty"] = settings.repetition_penalty  # a vLLM extension
        return payload

    def _post(self, payload: dict) -> dict:
        import httpx

        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = self.client.post(self.url, json=payload)
                if response.status_code < 400:
                    return response.json()
                if response.status_code != 429 and response.status_code < 500:
                    raise EndpointError(f"{self.url} refused the request: HTTP {response.status_code}: {response.text[:300]}")
                problem = f"HTTP {response.status_code}"
                retry_after = response.headers.get("retry-after")
            except httpx.TransportError as error:  # connection refused, timeouts, resets
                problem = f"{error.__class__.__name__}: {error}"
            if attempt == self.max_retries:
                raise EndpointError(f"{self.url} failed after {attempt + 1} attempts: {problem}")
            delay = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else self.backoff_s * 2**attempt
            delay *= 1 + 0.25 * random.random()
            log.warning("%s: %s; retrying in %.1f s", self.url, problem, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def generate(self, prompts: list[VideoPrompt], settings: GenerationSettings) -> list[list[str]]:
        results = []
        for prompt in prompts:
            texts: list[str] = []
            # Some servers cap or ignore ``n``: ask again for what is missing.
            while len(texts) < settings.trials:
                body = self._post(self._payload(prompt, settings, settings.trials - len(texts)))
                choices = body.get("choices") or []
                if not choices:
                    raise EndpointError(f"{self.url} answered without choices: {str(body)[:300]}")
                texts.extend((choice.get("message") or {}).get("content") or "" for choice in choices)
            results.append(texts[: settings.trials])
        return results

    def close(self) -> None:
        self.client.close()


def load_transformers_vlm(checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype,
                          sizing: VideoSizing = VideoSizing(), share_prefill: bool = True,
                          speedups: VLMSpeedups | None = None) -> TransformersVLM:
    speedups = speedups or VLMSpeedups(share_prefill=share_prefill)
    key = ("vlm", str(checkpoint.path), checkpoint.version, str(device), str(dtype), repr(asdict(sizing)))
    vlm = MODELS.get(key, lambda: TransformersVLM.load(checkpoint, device, dtype, sizing, speedups=speedups))
    vlm.configure(speedups)
    return vlm
