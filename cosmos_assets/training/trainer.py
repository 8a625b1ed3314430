"""Resumable LoRA post-training of a Cosmos generator's transformer on cached latents.

One loop for every kind; only the loss differs (``lora.LOSSES``: Predict2's EDM denoising loss, the 2.5
models' flow matching).

VAE latents and text embeddings are computed once per sample and cached (safetensors), so the
transformer is the only model in the loop. Every ``save_interval`` steps the adapter, the optimiser
state and the loss history are saved together; a killed run continues from the last save. The sample
and the noise of step ``s`` are functions of (seed, s) alone, so a resumed run reaches the same step
count — and on a deterministic device the same weights — as an uninterrupted one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cosmos_assets.common.knobs import knob
from cosmos_assets.models.catalog import PREDICT25
from cosmos_assets.models.lora import (
    LORA_TARGET_MODULES,
    LoraSettings,
    TrainingBatch,
    add_lora,
    lora_parameters,
    lora_state_dict,
    loss_for,
    prepare_batch,
    save_lora,
)

STATE_PREFIX = "state-"


@dataclass(frozen=True)
class TrainingConfig:
    """The cookbook's ITS accident LoRA by default: rank 16, alpha 16, attention + MLP projections,
    lr 2^-14.5 with warm-up, a checkpoint every 500 steps (steps scaled down for a laptop by the caller)."""

    kind: str = knob(PREDICT25, "Generator kind being trained; picks its loss (predict2: EDM denoising; "
                                "predict2.5 / transfer2.5: flow matching).")
    rank: int = knob(16, "LoRA rank: the inner dimension of each low-rank update.")
    alpha: float = knob(16.0, "LoRA alpha: updates are scaled by alpha / rank.")
    target_modules: tuple[str, ...] = knob(LORA_TARGET_MODULES, "Transformer modules that get a LoRA adapter.")
    learning_rate: float = knob(2**-14.5, "Peak learning rate (AdamW), reached after the warm-up.")
    warmup_steps: int = knob(2000, "Optimizer steps of linear learning-rate warm-up.")
    steps: int = knob(10_000, "Optimizer steps of the run.")
    batch_size: int = knob(1, "Samples per micro-batch.")
    gradient_accumulation: int = knob(1, "Micro-batches per optimizer step.")
    save_interval: int = knob(500, "Optimizer steps between saved training states (a crashed run resumes from the last).")
    seed: int = knob(0, "Seed of sample order, noise and LoRA initialisation.")
    num_conditional_frames: int = knob(1, "Leading frames given as conditioning (video-to-world), not denoised.")
    max_grad_norm: float = knob(1.0, "Gradients are clipped to this global norm.")
    frames: int = knob(93, "Frames per training sample (1 + 4k for the Cosmos VAE).")
    height: int = knob(704, "Training sample height in pixels.")
    width: int = knob(1280, "Training sample width in pixels.")


def cookbook_defaults(kind: str) -> TrainingConfig:
    """The cookbook's LoRA recipe for ``kind``. It publishes one, for Predict2 (the ITS accident LoRA); the 2.5
    models take the same recipe, so the kinds differ only in their loss."""
    loss_for(kind)  # an unknown kind fails here, not at the first step
    return TrainingConfig(kind=kind)


@dataclass
class TrainingResult:
    adapter_path: Path
    steps: int
    losses: list[float]
    resumed_from: int  # 0 when the run started from scratch
    settings: LoraSettings = field(default_factory=LoraSettings)


def sample_cache_key(sample_id: str, model_version: str, config: TrainingConfig) -> str:
    shape = f"{config.frames}x{config.height}x{config.width}"
    return hashlib.sha256(f"{sample_id}|{model_version}|{shape}".encode()).hexdigest()[:24]


def cache_samples(pipeline, model_version: str, samples: list[tuple[str, np.ndarray, str]], cache_dir: Path,
                  config: TrainingConfig, log: Callable[[str], None] = print) -> list[Path]:
    """Latents + text embeddings per (sample id, frames uint8 T×H×W×3, caption), computed once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, (sample_id, frames, caption) in enumerate(samples, start=1):
        path = cache_dir / f"{sample_cache_key(sample_id, model_version, config)}.safetensors"
        if not path.is_file():
            batch = prepare_batch(pipeline, frames, caption or "")
            partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
            save_file({"latents": batch.latents.cpu().contiguous(), "text_embeddings": batch.text_embeddings.cpu().contiguous()},
                      str(partial))
            partial.replace(path)
            log(f"cached latents [{number}/{len(samples)}] {sample_id}")
        paths.append(path)
    return paths


def _load_batch(paths: list[Path]) -> TrainingBatch:
    tensors = [load_file(str(p)) for p in paths]
    return TrainingBatch(latents=torch.cat([t["latents"] for t in tensors]),
                         text_embeddings=torch.cat([t["text_embeddings"] for t in tensors]))


def _step_samples(step: int, count: int, batch_size: int, seed: int) -> list[int]:
    """The samples of ``step``: a fresh permutation per epoch, from (seed, epoch) alone."""
    chosen = []
    for slot in range(batch_size):
        position = step * batch_size + slot
        epoch, offset = divmod(position, count)
        chosen.append(int(np.random.default_rng([seed, epoch]).permutation(count)[offset]))
    return chosen


def _learning_rate(step: int, config: TrainingConfig) -> float:
    return config.learning_rate * min(1.0, (step + 1) / max(config.warmup_steps, 1))


def _save_state(run_dir: Path, step: int, transformer, optimizer, losses: list[float], config: TrainingConfig) -> Path:
    tensors = {f"adapter/{k}": v.detach().cpu().contiguous() for k, v in lora_state_dict(transformer).items()}
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for name, value in state.items():
            tensors[f"optimizer/{index}/{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {"step": step, "losses": losses, "config": asdict(config), "param_groups": optimizer_state["param_groups"]}
    partial = run_dir / f".{STATE_PREFIX}{step:08d}.{os.getpid()}.partial"
    save_file(tensors, str(partial), metadata={"training": json.dumps(meta)})
    state = run_dir / f"{STATE_PREFIX}{step:08d}.safetensors"
    partial.replace(state)
    for older in sorted(run_dir.glob(f"{STATE_PREFIX}*.safetensors"))[:-2]:  # keep the last two
        older.unlink()
    return state


def latest_state(run_dir: Path) -> Path | None:
    states = sorted(run_dir.glob(f"{STATE_PREFIX}*.safetensors"))
    return states[-1] if states else None


def _restore_state(path: Path, transformer, optimizer, kind: str) -> tuple[int, list[float]]:
    from peft import set_peft_model_state_dict
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["training"])
    saved_kind = meta["config"].get("kind", PREDICT25)  # states from before kinds were recorded: 2.5 flow matching
    if saved_kind != kind:
        raise ValueError(f"{path.name} is the state of a {saved_kind} run; this run trains {kind}: "
                         "use another run folder or the trainer kind that started it")
    tensors = load_file(str(path))
    adapter = {k[len("adapter/"):]: v for k, v in tensors.items() if k.startswith("adapter/")}
    set_peft_model_state_dict(transformer, {k: v.to(transformer.device) for k, v in adapter.items()})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value.to(transformer.device) if value.dim() else value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["step"], meta["losses"]


def train_lora(base_transformer, sample_paths: list[Path], config: TrainingConfig, run_dir: Path,
               log: Callable[[str], None] = print, stop_after: int | None = None,
               on_save: Callable[[Path], None] | None = None) -> TrainingResult:
    """Train an adapter on a copy of ``base_transformer`` (the base stays untouched for generation and
    evaluation); resume from ``run_dir`` if an earlier run saved state there. ``stop_after`` ends the
    process's work after that many steps in this call (for tests of resumption); ``on_save`` gets each
    saved state file (to publish it where another machine can resume from it)."""
    if not sample_paths:
        raise ValueError("no training samples")
    run_dir.mkdir(parents=True, exist_ok=True)
    transformer = copy.deepcopy(base_transformer).float() if base_transformer.device.type == "cpu" else copy.deepcopy(base_transformer)
    settings = LoraSettings(config.rank, config.alpha, tuple(config.target_modules))
    with torch.random.fork_rng(devices=[transformer.device] if transformer.device.type == "cuda" else []):
        torch.manual_seed(config.seed)  # adapter initialisation from the seed: runs are repeatable
        add_lora(transformer, settings.rank, settings.alpha, settings.target_modules)
    optimizer = torch.optim.AdamW(lora_parameters(transformer), lr=config.learning_rate, weight_decay=0.0)
    loss = loss_for(config.kind)
    step, losses, resumed_from = 0, [], 0
    if (state := latest_state(run_dir)) is not None:
        step, losses = _restore_state(state, transformer, optimizer, config.kind)
        resumed_from = step
        log(f"resuming from step {step} ({state.name})")
    done_here = 0
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)
        step_loss = 0.0
        for micro in range(config.gradient_accumulation):
            picks = _step_samples(step * config.gradient_accumulation + micro, len(sample_paths), config.batch_size, config.seed)
            batch = _load_batch([sample_paths[i] for i in picks])
            generator = torch.Generator(transformer.device).manual_seed(config.seed * 1_000_003 + step * 97 + micro)
            step_loss += _accumulate(transformer, optimizer, batch, generator, config, micro, loss) / config.gradient_accumulation
        losses.append(round(step_loss, 6))
        step += 1
        done_here += 1
        if step % config.save_interval == 0 or step == config.steps:
            state = _save_state(run_dir, step, transformer, optimizer, losses, config)
            if on_save is not None:
                on_save(state)
            log(f"step {step}/{config.steps}: loss {step_loss:.4f} (saved)")
        if stop_after is not None and done_here >= stop_after:
            break
    adapter = save_lora(transformer, settings, run_dir / "adapter.safetensors") if step >= config.steps else run_dir / "unfinished"
    return TrainingResult(adapter, step, losses, resumed_from, settings)


def _accumulate(transformer, optimizer, batch: TrainingBatch, generator, config: TrainingConfig, micro: int, loss) -> float:
    """One micro-batch of ``loss``; the optimiser steps after the last one of the step."""
    transformer.train()
    if micro == 0:
        optimizer.zero_grad(set_to_none=True)
    value = loss(transformer, batch, generator, config.num_conditional_frames)
    if not torch.isfinite(value):
        raise FloatingPointError(f"{loss.__name__} is {value.item()} at micro-batch {micro}; lower the learning rate or check the data")
    (value / config.gradient_accumulation).backward()
    if micro == config.gradient_accumulation - 1:
        torch.nn.utils.clip_grad_norm_(lora_parameters(transformer), config.max_grad_norm)
        optimizer.step()
    transformer.eval()
    return value.item()
