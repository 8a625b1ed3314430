"""LoRA supervised fine-tuning of the Reason critic (Qwen2.5-VL architecture), and its adapters.

A training example is asked exactly as inference asks: the prompt goes through
``TransformersVLM.encode_prompts`` (the chat template with the generation prompt, frames fitted to the same
``VideoSizing`` pixel budget, the sampling rate in the video metadata) and critic examples take their system
prompt and question from ``critics.critic_prompt``. The answer's tokens are appended after the prompt as the
model would generate them, closed by ``<|im_end|>``; the loss is on those tokens alone.

Why a loop of our own rather than TRL's SFT trainer: TRL is not a dependency here, and its collator builds
the conversation and video inputs its own way (its own frame sampling and processor call), so a critic tuned
through it would see at training time something other than what ``TransformersVLM`` sends at inference. The
loop is small: one example per forward pass, gradient accumulation, AdamW on the adapter, a linear warm-up.

Speed at real size (bench/GPU_RESULTS.md, issue 15): the base is frozen, so its backward needs input gradients only;
what else a step costs is the adapter's. On a bf16 base the adapter computes in bf16 under autocast
(``adapter_autocast``) while its weights, gradients and AdamW state stay float32 -- peft would otherwise cast every
adapted projection's input to float32 (seven full copies of the activations per layer, and float32 outputs the size
of the projections'). LoRA dropout is off by default: with it on, each adapted projection keeps a dropped-out copy
of its input and a mask for the backward. With both, the 7B critic at ~8k visual tokens trains without activation
checkpointing within an 80 GB card; where memory is shorter, checkpointing can recompute every
``checkpoint_every_n_layers``-th language-model layer only, trading the recompute against the memory of the layers
that keep their activations.

Adapters are peft LoRA layers injected in place (``peft.inject_adapter_in_model``; transformers' own
``add_adapter`` wants a newer peft than the 0.21 installed), so the model keeps its class and
``TransformersVLM`` (shared prefill, static decode, CUDA graphs) generates with it unchanged. The vision
tower stays frozen; the adapter targets the language model's attention and MLP projections only.

Training is deterministic given the seed (the example order is a function of seed and epoch, LoRA dropout
draws from the torch generator, which checkpoints carry) and resumable: every ``checkpoint_every`` steps the
adapter, the optimiser state, the step, the loss curve and the RNG state are written (safetensors only), and
a resumed run ends with the same adapter as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cosmos_assets.common.knobs import knob
from cosmos_assets.models.checkpoints import Checkpoint, ModelError
from cosmos_assets.models.vlm import TransformersVLM, VideoPrompt, VideoSizing, VLMSpeedups

ADAPTER_FILE = "adapter.safetensors"
TRAINING_STATE_FILE = "training_state.safetensors"
ADAPTER_FORMAT = "cosmos-reason-lora/1"
ADAPTER_NAME = "default"
END_OF_TURN = "<|im_end|>"  # Qwen's chat template closes every turn, the assistant's too, with this token

# Qwen2.5-VL's language-model projections; the vision tower's MLP uses the same names, so targets are matched
# under ``language_model`` only (see ``target_pattern``).
LANGUAGE_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class AdapterMismatch(ModelError):
    """An adapter was trained on another base checkpoint, or is not a Reason critic adapter."""


class ResumeMismatch(ValueError):
    """A checkpoint in the output folder belongs to a run with other settings, data or base."""


# ---------------------------------------------------------------------------------------------------------
# Examples.


@dataclass(frozen=True)
class CritiqueExample:
    """One supervised example: frames (uint8 T×H×W×3) sampled at ``fps``, the question asked about them, and the
    answer text the model should give (for the critic ``<think>…</think><answer>4</answer>``)."""

    frames: np.ndarray
    fps: float
    question: str
    answer_text: str
    system: str | None = None

    @classmethod
    def for_critic(cls, frames: np.ndarray, fps: float, answer_text: str, mode: str = "rubric") -> CritiqueExample:
        """An example asked with the critic's own prompt in ``mode`` (``reason`` or ``rubric``)."""
        from cosmos_assets.synthetic.critics import critic_prompt

        prompt = critic_prompt(mode, frames, fps)
        return cls(frames, fps, prompt.question, answer_text, prompt.system)

    @classmethod
    def from_video(cls, path: str | os.PathLike, answer_text: str, *, fps: float, max_frames: int, mode: str | None = "rubric",
                   question: str | None = None, system: str | None = None) -> CritiqueExample:
        """Frames sampled from a file as ``critique_scores`` samples them (``sample_frames`` at the critic's fps)."""
        from cosmos_assets.models.frames import sample_frames

        sampled = sample_frames(path, fps, max_frames)
        if question is None:
            return cls.for_critic(sampled.frames, sampled.fps, answer_text, mode or "rubric")
        return cls(sampled.frames, sampled.fps, question, answer_text, system)

    def prompt(self) -> VideoPrompt:
        return VideoPrompt(self.frames, self.fps, self.question, self.system)


def examples_fingerprint(examples: Sequence[CritiqueExample]) -> str:
    """Content hash of a training set (frames, rate, prompts, answers): a resumed run must see the same data."""
    digest = hashlib.sha256()
    for example in examples:
        frames = np.ascontiguousarray(example.frames)
        digest.update(repr((frames.shape, str(frames.dtype), example.fps, example.question, example.system,
                            example.answer_text)).encode())
        digest.update(hashlib.sha256(frames.tobytes()).digest())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------
# Settings.


@dataclass(frozen=True)
class ReasonLoraSettings:
    """Where the adapter sits and how large it is."""

    rank: int = knob(16, "LoRA rank of every adapted projection.")
    alpha: float = knob(32.0, "LoRA alpha: the adapter's update is scaled by alpha / rank.")
    dropout: float = knob(0.0, "Dropout on the adapter's input while training (0..1).")
    target_modules: tuple[str, ...] = knob(LANGUAGE_PROJECTIONS,
                                           "Language-model projections that get an adapter (the vision tower stays frozen).")

    def target_pattern(self) -> str:
        """peft matches a string target as a full-name regex: the projections of the language model's layers."""
        names = "|".join(sorted(set(self.target_modules)))
        return rf".*language_model\.layers\.\d+\.(self_attn|mlp)\.({names})"


@dataclass(frozen=True)
class SFTSettings:
    """How the critic is fine-tuned (LoRA SFT)."""

    lora_rank: int = knob(16, "LoRA rank of every adapted projection.")
    lora_alpha: float = knob(32.0, "LoRA alpha: the adapter's update is scaled by alpha / rank.")
    lora_dropout: float = knob(0.0, "Dropout on the adapter's input while training (0..1). Off by default: with "
                               "it on, every adapted projection keeps a dropped-out copy of its input and a mask for "
                               "the backward (bench/GPU_RESULTS.md has the cost at real size).")
    lora_targets: tuple[str, ...] = knob(LANGUAGE_PROJECTIONS, "Language-model projections that get an adapter.")
    steps: int = knob(200, "Optimiser steps.")
    grad_accumulation: int = knob(8, "Examples whose gradients are summed into one optimiser step (one per forward pass).")
    learning_rate: float = knob(1e-4, "AdamW learning rate of the adapter after warm-up.")
    warmup_steps: int = knob(10, "Steps over which the learning rate rises linearly from 0.")
    weight_decay: float = knob(0.0, "AdamW weight decay of the adapter.")
    max_grad_norm: float = knob(1.0, "Gradients are clipped to this global norm (0: no clipping).")
    seed: int = knob(0, "Seed of the example order, the adapter's initialisation and its dropout.")
    checkpoint_every: int = knob(50, "Steps between resumable checkpoints (0: only the final adapter).")
    keep_checkpoints: int = knob(2, "Most recent resumable checkpoints kept on disk.")
    gradient_checkpointing: bool = knob(False, "Recompute activations in the backward pass (less memory, slower). Off, "
                                        "the 7B critic at ~8k visual tokens peaks at 64 GiB (fits an 80 GB card); on, "
                                        "at 20 GiB and 0.79 samples/s against 1.04 (bench/GPU_RESULTS.md).")
    checkpoint_every_n_layers: int = knob(1, "With gradient_checkpointing, recompute only every n-th language-model "
                                          "layer (1: all; 2: half of them, faster, more memory).")
    adapter_autocast: bool = knob(True, "On a bf16/fp16 base, compute the adapter in the base's dtype under autocast "
                                  "(its weights, gradients and AdamW state stay float32); off, peft casts every adapted "
                                  "projection's input to float32. No effect on a float32 base.")

    @property
    def lora(self) -> ReasonLoraSettings:
        return ReasonLoraSettings(self.lora_rank, self.lora_alpha, self.lora_dropout, tuple(self.lora_targets))


# ---------------------------------------------------------------------------------------------------------
# The adapter on a model.


def add_reason_lora(model, lora: ReasonLoraSettings, seed: int = 0) -> list[torch.nn.Parameter]:
    """Freeze ``model`` and inject a trainable LoRA adapter into its language model; returns the adapter's
    parameters. It starts as a no-op (B = 0), so the model answers as the base until trained. The adapter's
    weights are kept in float32 whatever the base's dtype: AdamW updates of bf16 weights lose small steps."""
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_pattern(),
                        init_lora_weights=True, bias="none")
    with torch.random.fork_rng(devices=[]):  # A's random init is part of the run's seed, not the caller's RNG
        torch.manual_seed(seed)
        inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    parameters = adapter_parameters(model)
    if not parameters:
        raise ValueError(f"no module of the model matches the LoRA targets {lora.target_modules}")
    for parameter in parameters:
        parameter.data = parameter.data.float()
        parameter.requires_grad_(True)
    return parameters


def adapter_parameters(model) -> list[torch.nn.Parameter]:
    return [p for name, p in model.named_parameters() if ".lora_" in name]


@contextlib.contextmanager
def adapter_disabled(model) -> Iterator[None]:
    """The frozen base model, through the same modules: peft's layers skip their adapter inside this block
    (no second copy of the weights is needed for the reference model of the KL penalty)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    trainable = [p for p in adapter_parameters(model) if p.requires_grad]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)
        for parameter in trainable:  # peft's toggle also switches requires_grad: give back what was trainable
            parameter.requires_grad_(True)


def adapter_state(model) -> dict[str, torch.Tensor]:
    """The adapter's weights by their module names (``….q_proj.lora_A.default.weight``)."""
    return {name: p.detach().to("cpu").contiguous() for name, p in model.named_parameters() if ".lora_" in name}


def base_identity(checkpoint: Checkpoint) -> dict[str, str]:
    return {"base_model": checkpoint.name, "base_version": checkpoint.version,
            "random_weights": json.dumps(bool(checkpoint.tiny_random))}


def adapter_metadata(checkpoint: Checkpoint, lora: ReasonLoraSettings, sizing: VideoSizing, *, stage: str, steps: int,
                     training_set_version: str, seed: int, extra: dict | None = None) -> dict[str, str]:
    """What a saved adapter says about itself (safetensors metadata: strings only)."""
    return {
        "format": ADAPTER_FORMAT, **base_identity(checkpoint), "stage": stage, "steps": str(steps), "seed": str(seed),
        "training_set_version": training_set_version, "lora_rank": str(lora.rank), "lora_alpha": str(lora.alpha),
        "lora_dropout": str(lora.dropout), "lora_target_modules": json.dumps(list(lora.target_modules)),
        "video_sizing": json.dumps(asdict(sizing)), **{k: str(v) for k, v in (extra or {}).items()},
    }


def save_adapter(model, path: Path, metadata: dict[str, str]) -> Path:
    """The adapter's weights as safetensors with ``metadata``; written beside and renamed into place."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(adapter_state(model), str(partial), metadata=metadata)
    partial.replace(path)
    return path


def read_adapter_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
    if metadata.get("format") != ADAPTER_FORMAT:
        raise AdapterMismatch(f"{path}: not a Reason critic adapter (format {metadata.get('format')!r}, "
                              f"expected {ADAPTER_FORMAT!r})")
    return metadata


def lora_from_metadata(metadata: dict[str, str]) -> ReasonLoraSettings:
    return ReasonLoraSettings(int(metadata["lora_rank"]), float(metadata["lora_alpha"]), float(metadata["lora_dropout"]),
                              tuple(json.loads(metadata["lora_target_modules"])))


def _load_adapter_weights(model, path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(path), device="cpu")
    own = dict(model.named_parameters())
    missing = [name for name in own if ".lora_" in name and name not in state]
    unexpected = [name for name in state if name not in own]
    wrong = [name for name in state if name in own and own[name].shape != state[name].shape]
    if missing or unexpected or wrong:
        raise AdapterMismatch(f"{path}: adapter does not fit this model (missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}, other shapes {wrong[:3]})")
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value)


def apply_adapter(vlm: TransformersVLM, path: Path) -> dict[str, str]:
    """Put the adapter saved at ``path`` on ``vlm``'s model, after checking it was trained on this very base
    checkpoint (name and content fingerprint); returns the adapter's metadata. Refuses with ``AdapterMismatch``."""
    path = Path(path)
    metadata = read_adapter_metadata(path)
    base = vlm.checkpoint
    if metadata["base_version"] != base.version:
        raise AdapterMismatch(
            f"{path}: this adapter was trained on {metadata['base_model']!r} (version {metadata['base_version']}), "
            f"but the loaded base is {base.name!r} (version {base.version}). An adapter only means something on the "
            f"exact weights it was trained on: load that base checkpoint, or train the critic again on this one.")
    add_reason_lora(vlm.model, lora_from_metadata(metadata))
    _load_adapter_weights(vlm.model, path)
    vlm.model.requires_grad_(False)
    return metadata


def adapter_fingerprint(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def load_tuned_vlm(base_checkpoint: Checkpoint, adapter_path: Path, device: torch.device, dtype: torch.dtype,
                   sizing: VideoSizing | None = None, speedups: VLMSpeedups | None = None) -> TransformersVLM:
    """A ``TransformersVLM`` of ``base_checkpoint`` with the tuned adapter on it, ready for ``ReasonCritic``.

    Loaded as a model of its own (never the cached base the untuned critic shares). Its identity names the
    adapter, so every row it scores says which tuned critic scored it; its pixel budget is the one the adapter
    was trained with unless ``sizing`` says otherwise.
    """
    adapter_path = Path(adapter_path)
    metadata = read_adapter_metadata(adapter_path)
    if sizing is None:
        sizing = VideoSizing(**json.loads(metadata["video_sizing"]))
    vlm = TransformersVLM.load(base_checkpoint, device, dtype, sizing, speedups=speedups)
    apply_adapter(vlm, adapter_path)
    vlm.checkpoint = Checkpoint(path=base_checkpoint.path, name=f"{base_checkpoint.name}+{metadata['stage']}-lora",
                                version=f"{base_checkpoint.version}+lora-{adapter_fingerprint(adapter_path)}",
                                tiny_random=base_checkpoint.tiny_random)
    vlm.adapter_metadata = metadata
    return vlm


# ---------------------------------------------------------------------------------------------------------
# Inputs and log-probabilities of completions, as inference encodes the prompt.


@dataclass
class CompletionBatch:
    """Rows of one prompt followed by completions (right-padded), ready for a forward pass."""

    model_inputs: dict
    targets: torch.Tensor  # [rows, n] completion token ids
    mask: torch.Tensor  # [rows, n] 1.0 on real completion tokens


def completion_batch(vlm: TransformersVLM, prompt: VideoPrompt, completions: Sequence[Sequence[int]] | torch.Tensor,
                     pad_id: int) -> CompletionBatch:
    """``prompt`` encoded by ``vlm.encode_prompts`` (what inference sends) and one row per completion.

    The video is encoded once by the frozen vision tower and its features are shared by the rows, so a group of
    completions costs one vision pass, not one per row.
    """
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    inputs = vlm.encode_prompts([prompt])
    rows = len(completions)
    lengths = [len(c) for c in completions]
    n = max(lengths)
    targets = torch.full((rows, n), pad_id, dtype=torch.long, device=vlm.device)
    mask = torch.zeros((rows, n), dtype=torch.float32, device=vlm.device)
    for row, completion in enumerate(completions):
        targets[row, :lengths[row]] = torch.as_tensor(completion, dtype=torch.long, device=vlm.device)
        mask[row, :lengths[row]] = 1.0
    prompt_ids = inputs["input_ids"].expand(rows, -1)
    model_inputs = {
        "input_ids": torch.cat([prompt_ids, targets], dim=1),
        "attention_mask": torch.cat([inputs["attention_mask"].expand(rows, -1), mask.long()], dim=1),
        "video_grid_thw": inputs["video_grid_thw"].repeat(rows, 1),
    }
    if "mm_token_type_ids" in inputs:
        types = inputs["mm_token_type_ids"]
        model_inputs["mm_token_type_ids"] = torch.cat([types.expand(rows, -1), torch.zeros_like(targets, dtype=types.dtype)], 1)
    if "second_per_grid_ts" in inputs:
        model_inputs["second_per_grid_ts"] = inputs["second_per_grid_ts"].repeat(rows)
    with torch.no_grad():  # the vision tower is frozen: nothing to learn there, no activations to keep
        video = vlm.model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    features = video.pooler_output[0].detach()
    model_inputs["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=(features,) * rows)}
    return CompletionBatch(model_inputs, targets, mask)


def completion_logprobs(model, batch: CompletionBatch) -> torch.Tensor:
    """Log-probability of every completion token given the prompt and the tokens before it, ``[rows, n]``.

    Only the last n + 1 positions go through the LM head (the prompt's thousands of positions never become
    vocabulary-sized logits); the cross-entropy kernel gives the log-probabilities without a full log-softmax copy.
    """
    n = batch.targets.shape[1]
    out = model(**batch.model_inputs, use_cache=False, logits_to_keep=n + 1)
    logits = out.logits[:, :n].float()
    return -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1),
                            reduction="none").view_as(batch.targets)


def answer_token_ids(vlm: TransformersVLM, answer_text: str) -> list[int]:
    """The answer's tokens as the model would generate them after the prompt, closed by the end-of-turn token."""
    tokenizer = vlm.processor.tokenizer
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    return tokenizer(answer_text, add_special_tokens=False)["input_ids"] + [end]


def pad_token_id(vlm: TransformersVLM) -> int:
    return vlm.decoder.special_tokens()[1]


# ---------------------------------------------------------------------------------------------------------
# Resumable training state.


def _json_safe(value):
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_json_safe(v) for v in value]
    return value


def save_training_state(folder: Path, model, optimizer: torch.optim.Optimizer, *, step: int, curve: list,
                        run_key: str, adapter_meta: dict[str, str]) -> Path:
    """A resumable checkpoint ``folder/step-NNNNNN``: the adapter, the optimiser state, the step, the curve and
    the torch RNG state, all in safetensors (no pickle). Written under a temporary name and renamed."""
    from safetensors.torch import save_file

    final = Path(folder) / f"step-{step:06d}"
    partial = Path(folder) / f".step-{step:06d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_adapter(model, partial / ADAPTER_FILE, adapter_meta)
    optimizer_state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    scalars: dict[str, dict] = {}
    for index, state in optimizer_state["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: _json_safe(v) for k, v in group.items()} for group in optimizer_state["param_groups"]]
    save_file(tensors, str(partial / TRAINING_STATE_FILE), metadata={
        "step": str(step), "run_key": run_key, "curve": json.dumps(curve), "param_groups": json.dumps(groups),
        "optimizer_scalars": json.dumps(scalars)})
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    return final


def latest_training_state(folder: Path) -> Path | None:
    folder = Path(folder)
    done = sorted(p for p in folder.glob("step-*") if (p / TRAINING_STATE_FILE).is_file() and (p / ADAPTER_FILE).is_file())
    return done[-1] if done else None


def restore_training_state(checkpoint: Path, model, optimizer: torch.optim.Optimizer, run_key: str) -> tuple[int, list]:
    """Load a checkpoint written by ``save_training_state`` into ``model`` and ``optimizer``; (step, curve)."""
    from safetensors import safe_open

    with safe_open(str(checkpoint / TRAINING_STATE_FILE), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    if metadata["run_key"] != run_key:
        raise ResumeMismatch(
            f"{checkpoint} belongs to another run (other settings, training set or base model). Resume only with what "
            f"it was started with, or train into a new folder.")
    _load_adapter_weights(model, checkpoint / ADAPTER_FILE)
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, scalars in json.loads(metadata["optimizer_scalars"]).items():
        state.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return int(metadata["step"]), json.loads(metadata["curve"])


def prune_training_states(folder: Path, keep: int) -> None:
    done = sorted(Path(folder).glob("step-*"))
    for old in done[:-max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)


def run_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def warmup_lr(step: int, learning_rate: float, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then constant; a function of the step alone, so resuming needs no
    scheduler state."""
    return learning_rate * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else learning_rate


def example_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The examples' order in ``epoch``: a permutation drawn from (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def activation_checkpointing(model, enable: bool, every_n_layers: int = 1) -> None:
    """Recompute layers' activations in the backward pass (transformers renamed the switch in 5.x); with
    ``every_n_layers`` > 1 only every n-th language-model layer recomputes and the others keep their activations."""
    if every_n_layers < 1:
        raise ValueError(f"every_n_layers must be >= 1, not {every_n_layers}")
    kwargs = {"use_reentrant": False}  # the reentrant variant needs inputs that require grad; ours do not
    if not hasattr(model, "activation_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs) if enable else model.gradient_checkpointing_disable()
    elif enable:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.activation_checkpointing_disable()
    if enable and every_n_layers > 1:
        # transformers sets the flag on every checkpointable layer and each layer reads its own flag at call time,
        # so clearing it on some layers leaves those to the ordinary autograd graph.
        for index, layer in language_model_layers(model):
            layer.gradient_checkpointing = index % every_n_layers == 0


def language_model_layers(model) -> list[tuple[int, torch.nn.Module]]:
    """The language model's decoder layers with their indices (``….language_model.layers.<i>``)."""
    layers = []
    for name, module in model.named_modules():
        head, _, index = name.rpartition(".")
        if head.endswith("language_model.layers") and index.isdigit():
            layers.append((int(index), module))
    return layers


def lora_layers(model) -> list[torch.nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def adapter_autocast_dtype(model, enable: bool) -> torch.dtype | None:
    """The dtype the adapter computes in under ``adapter_autocast``, or None where it would change nothing (off, or a
    float32 base: the CPU tests' runs keep their bits)."""
    dtype = next(model.parameters()).dtype
    return dtype if enable and dtype in (torch.bfloat16, torch.float16) else None


@contextlib.contextmanager
def training_compute(model, settings: SFTSettings) -> Iterator[Callable[[], contextlib.AbstractContextManager]]:
    """How ``model`` computes while ``settings`` train it; yields a factory of the context each forward runs in.

    Checkpointing is switched on for the whole block. With the adapter computed in the base's dtype, peft's cast
    of every projection's input to the adapter's float32 is turned off for the whole block too, not only around the
    forward: checkpointed layers recompute inside the backward and must see the same inputs as the first time.
    Autocast casts the float32 adapter weights to bf16 for the products (their gradients come back float32).
    """
    dtype = adapter_autocast_dtype(model, settings.adapter_autocast)
    layers = lora_layers(model) if dtype is not None else []
    casting = [getattr(layer, "cast_input_dtype_enabled", True) for layer in layers]
    if settings.gradient_checkpointing:
        activation_checkpointing(model, True, settings.checkpoint_every_n_layers)
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    device_type = next(model.parameters()).device.type
    try:
        if dtype is None:
            yield contextlib.nullcontext
        else:
            yield lambda: torch.autocast(device_type, dtype=dtype)
    finally:
        for layer, value in zip(layers, casting):
            layer.cast_input_dtype_enabled = value
        if settings.gradient_checkpointing:
            activation_checkpointing(model, False)


def remove_reason_lora(model) -> None:
    """Take the adapter off ``model`` again (each adapted projection becomes its base layer), leaving the base frozen
    as it was: a model can then be trained afresh, e.g. by a benchmark comparing settings on one loaded base."""
    adapted = {id(layer) for layer in lora_layers(model)}
    for name, module in list(model.named_modules()):
        if id(module) in adapted:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.base_layer)
    # peft keeps the adapter's config on the model; left there, the next injection takes the model for one that
    # already has an adapter of that name
    model.__dict__.pop("peft_config", None)
    model.requires_grad_(False)


def make_optimizer(parameters: list[torch.nn.Parameter], learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    # foreach=False: the single-tensor path updates each parameter in place in one fixed order on every device
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, foreach=False)


# ---------------------------------------------------------------------------------------------------------
# SFT.


@dataclass
class SFTResult:
    adapter_path: Path
    steps: int
    losses: list[float]  # mean answer-token loss of every optimiser step, from step 0
    resumed_from: int | None
    seconds: float
    samples_per_s: float
    metadata: dict[str, str] = field(default_factory=dict)


def run_sft(vlm: TransformersVLM, examples: Sequence[CritiqueExample], settings: SFTSettings, out_dir: Path, *,
            training_set_version: str = "", resume: bool = True,
            progress: Callable[[dict], None] | None = None) -> SFTResult:
    """LoRA SFT of ``vlm``'s model in place (an adapter is added to it); the adapter is written to
    ``out_dir/adapter.safetensors`` and resumable checkpoints to ``out_dir/checkpoints``.

    ``progress`` gets a dict per optimiser step (an exception raised there stops the run, as a crash would;
    the next call with ``resume`` continues from the last checkpoint).
    """
    if not examples:
        raise ValueError("no training examples")
    out_dir = Path(out_dir)
    model = vlm.model
    lora = settings.lora
    parameters = add_reason_lora(model, lora, settings.seed)
    optimizer = make_optimizer(parameters, settings.learning_rate, settings.weight_decay)
    key = run_key("sft", asdict(settings), base_identity(vlm.checkpoint), examples_fingerprint(examples),
                  asdict(vlm.sizing), training_set_version)
    meta = lambda step: adapter_metadata(vlm.checkpoint, lora, vlm.sizing, stage="sft", steps=step,  # noqa: E731
                                         training_set_version=training_set_version, seed=settings.seed)
    states = out_dir / "checkpoints"
    start, curve, resumed_from = 0, [], None
    if resume and (latest := latest_training_state(states)) is not None:
        start, curve = restore_training_state(latest, model, optimizer, key)
        resumed_from = start
    else:
        torch.manual_seed(settings.seed)  # LoRA dropout draws from here
    answers = [answer_token_ids(vlm, e.answer_text) for e in examples]
    pad = pad_token_id(vlm)
    began, seen = time.perf_counter(), 0
    with training_compute(model, settings) as compute:
        for step in range(start, settings.steps):
            picks = []
            for slot in range(settings.grad_accumulation):
                position = step * settings.grad_accumulation + slot
                epoch, within = divmod(position, len(examples))
                picks.append(int(example_order(len(examples), settings.seed, epoch)[within]))
            tokens = sum(len(answers[i]) for i in picks)
            for group in optimizer.param_groups:
                group["lr"] = warmup_lr(step, settings.learning_rate, settings.warmup_steps)
            model.train()
            step_loss = 0.0
            for index in picks:
                batch = completion_batch(vlm, examples[index].prompt(), [answers[index]], pad)
                with compute():
                    # Summed over the step's answer tokens, then divided by their count: every token weighs the same
                    # whatever example it is in (long and short answers are not averaged per example).
                    loss = -(completion_logprobs(model, batch) * batch.mask).sum() / tokens
                loss.backward()
                # Read after the backward is queued, so the device is not left idle while the host waits for the
                # value; a non-finite loss still stops the run before the optimiser step uses its gradients.
                value = loss.item()
                if not math.isfinite(value):
                    raise FloatingPointError(f"SFT loss is {value} at step {step}; lower the learning rate or check the data")
                step_loss += value
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            model.eval()
            curve.append(step_loss)
            seen += len(picks)
            done = step + 1
            if progress is not None:
                progress({"step": done, "steps": settings.steps, "loss": step_loss, "lr": optimizer.param_groups[0]["lr"]})
            if settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < settings.steps:
                save_training_state(states, model, optimizer, step=done, curve=curve, run_key=key, adapter_meta=meta(done))
                prune_training_states(states, settings.keep_checkpoints)
    seconds = time.perf_counter() - began
    model.eval()
    metadata = {**meta(settings.steps), "final_loss": f"{curve[-1]:.6f}"}
    adapter_path = save_adapter(model, out_dir / ADAPTER_FILE, metadata)
    return SFTResult(adapter_path=adapter_path, steps=settings.steps, losses=curve, resumed_from=resumed_from,
                     seconds=seconds, samples_per_s=seen / seconds if seconds > 0 else math.nan, metadata=metadata)


def train_reason_sft(base_checkpoint: Checkpoint, examples: Sequence[CritiqueExample], settings: SFTSettings,
                     out_dir: Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     sizing: VideoSizing = VideoSizing(), training_set_version: str = "", resume: bool = True,
                     progress: Callable[[dict], None] | None = None) -> SFTResult:
    """LoRA SFT of the Reason VLM at ``base_checkpoint`` on ``examples``; see ``run_sft``.

    The base is loaded as a model of its own (not the cached one critics share), with the pixel budget
    ``sizing`` that the critic will use at inference.
    """
    vlm = TransformersVLM.load(base_checkpoint, torch.device(device), dtype, sizing)
    return run_sft(vlm, examples, settings, out_dir, training_set_version=training_set_version, resume=resume,
                   progress=progress)
