"""GRPO of the Reason critic's LoRA adapter, over the project's own generation path.

TRL's GRPO trainer takes images, not video with its timing, and samples through its own ``generate``; here the
rollouts come from ``TransformersVLM.generate_tokens`` (shared prefill, static KV cache, CUDA graphs on a GPU),
the exact tokens it sampled are scored, and the prompt is encoded as inference encodes it.

One step, for each of ``prompts_per_step`` prompts: sample a group of G completions at the configured
temperature; reward each (the score reward: 1 for the reference rating, 0.5 one off, else 0, parsed with the
critic's own ``parse_rating``; plus a format reward for ``<think>…</think><answer>…</answer>``); normalise the
rewards within the group (advantage = (r - mean) / (std + eps)); then minimise the clipped policy-ratio objective
with a KL penalty (k3 estimator, weight ``beta``) to the frozen base, whose log-probabilities come from the same
model with its adapter switched off (no second copy). With one update per rollout the old policy is the current
one (ratio 1, the clipped objective is the plain policy gradient); more updates per rollout use the ratio and
its clipping. Rollouts are seeded by (seed, step), so a run is repeatable and resumes exactly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from cosmos_assets.common.knobs import knob
from cosmos_assets.critic_training.reason_tuning import (
    ADAPTER_FILE, LANGUAGE_PROJECTIONS, AdapterMismatch, CritiqueExample, ReasonLoraSettings, _load_adapter_weights,
    activation_checkpointing, adapter_disabled,
    adapter_fingerprint, adapter_metadata, add_reason_lora, base_identity, completion_batch, completion_logprobs,
    example_order, examples_fingerprint, latest_training_state, lora_from_metadata, make_optimizer, pad_token_id,
    prune_training_states, read_adapter_metadata, restore_training_state, run_key, save_adapter, save_training_state,
)
from cosmos_assets.models.checkpoints import Checkpoint
from cosmos_assets.models.vlm import GenerationSettings, TransformersVLM, VideoSizing, parse_reasoned_answer


@dataclass(frozen=True)
class GRPOSettings:
    """How the critic is trained by group-relative policy optimisation."""

    steps: int = knob(100, "Optimiser steps (one rollout of every prompt of the step each).")
    prompts_per_step: int = knob(2, "Prompts (videos) per step; each gets its own group of completions.")
    group_size: int = knob(8, "Completions sampled per prompt (G); advantages are relative to the group.")
    temperature: float = knob(1.0, "Sampling temperature of the rollouts.")
    top_p: float = knob(1.0, "Nucleus sampling of the rollouts (1: off).")
    max_new_tokens: int = knob(256, "Most tokens per completion.")
    learning_rate: float = knob(2e-5, "AdamW learning rate of the adapter.")
    weight_decay: float = knob(0.0, "AdamW weight decay of the adapter.")
    epsilon: float = knob(0.2, "Clipping of the policy ratio to [1 - epsilon, 1 + epsilon].")
    beta: float = knob(0.05, "Weight of the KL penalty to the frozen base (the recipe found 0.05 essential).")
    updates_per_rollout: int = knob(1, "Optimiser updates on one step's completions (above 1 the ratio clipping acts).")
    format_weight: float = knob(1.0, "Weight of the format reward next to the score reward (each in [0, 1]).")
    max_grad_norm: float = knob(1.0, "Gradients are clipped to this global norm (0: no clipping).")
    update_micro_batch: int = knob(8, "Completions per forward pass of the update (memory bound; the gradient is the same).")
    seed: int = knob(0, "Seed of the prompt order, the rollouts and a fresh adapter's initialisation.")
    checkpoint_every: int = knob(25, "Steps between resumable checkpoints (0: only the final adapter).")
    keep_checkpoints: int = knob(2, "Most recent resumable checkpoints kept on disk.")
    gradient_checkpointing: bool = knob(False, "Recompute activations in the backward pass (less memory).")
    lora_rank: int = knob(16, "LoRA rank of a fresh adapter (an SFT adapter to start from brings its own).")
    lora_alpha: float = knob(32.0, "LoRA alpha of a fresh adapter.")
    lora_targets: tuple[str, ...] = knob(LANGUAGE_PROJECTIONS, "Language-model projections of a fresh adapter.")


# ---------------------------------------------------------------------------------------------------------
# Rewards.

_FORMAT = re.compile(r"^\s*<think>.+?</think>\s*<answer>.+?</answer>\s*$", re.S | re.I)


@dataclass(frozen=True)
class Reward:
    score: float  # 1 exact, 0.5 off by one (ratings), else 0
    format: float  # 1 when the text is exactly <think>…</think><answer>…</answer>
    total: float


def reference_answer(answer_text: str) -> str:
    """The reference an example's answer text holds: the content of its ``<answer>`` tag, or the text itself."""
    reasoned = parse_reasoned_answer(answer_text)
    return reasoned.answer if reasoned.parsed else answer_text.strip()


def _normalised(answer: str) -> str:
    return re.sub(r"[\s.!)]+$", "", answer.strip().lower())


def score_reward(text: str, reference: str) -> float:
    """A rating reference (1-5) is read with the critic's ``parse_rating``: 1 exact, 0.5 off by one, else 0.
    Any other reference (Yes/No, a multiple-choice letter) must match the answer tag exactly, case aside."""
    from cosmos_assets.synthetic.critics import parse_rating

    if re.fullmatch(r"[1-5]", reference.strip()):
        trial = parse_rating(text)
        if not trial.parsed:
            return 0.0
        distance = abs(int(trial.answer) - int(reference))
        return 1.0 if distance == 0 else 0.5 if distance == 1 else 0.0
    reasoned = parse_reasoned_answer(text)
    return 1.0 if reasoned.parsed and _normalised(reasoned.answer) == _normalised(reference) else 0.0


def format_reward(text: str) -> float:
    return 1.0 if _FORMAT.match(text) else 0.0


def critique_reward(text: str, reference: str, format_weight: float = 1.0) -> Reward:
    score, form = score_reward(text, reference), format_reward(text)
    return Reward(score, form, score + format_weight * form)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``[prompts, G]`` rewards -> advantages normalised within each group (a group that agrees gives zeros)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False) if rewards.shape[1] > 1 else torch.zeros_like(mean)
    return (rewards - mean) / (std + eps)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, epsilon: float, beta: float) -> tuple[torch.Tensor, dict]:
    """Per-token clipped surrogate plus ``beta`` times the k3 KL estimate to the reference, averaged over each
    completion's tokens and then over completions; returns the loss and its parts (detached)."""
    ratio = torch.exp(logp - old_logp)
    advantage = advantages[:, None]
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - epsilon, 1 + epsilon) * advantage)
    log_ratio_ref = ref_logp - logp
    kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1
    per_token = -surrogate + beta * kl
    lengths = mask.sum(dim=1).clamp(min=1)
    loss = ((per_token * mask).sum(dim=1) / lengths).mean()
    clipped = ((ratio - 1).abs() > epsilon).float()
    parts = {"kl": float(((kl.detach() * mask).sum(dim=1) / lengths).mean()),
             "clip_fraction": float((clipped * mask).sum() / mask.sum().clamp(min=1))}
    return loss, parts


# ---------------------------------------------------------------------------------------------------------
# The loop.


@dataclass
class GRPOResult:
    adapter_path: Path
    steps: int
    stats: list[dict]  # per step: reward_mean, score_mean, format_mean, kl, loss, rollout_s, scoring_s, update_s, ...
    resumed_from: int | None
    metadata: dict[str, str] = field(default_factory=dict)


def _sync(vlm: TransformersVLM) -> float:
    if vlm.device.type == "cuda":
        torch.cuda.synchronize(vlm.device)
    return time.perf_counter()


def _completions(tokens: torch.Tensor, eos: list[int], vision: set[int] = frozenset()) -> list[list[int]]:
    """Each sampled row up to and including its first end token (the rest is padding). A row also ends just before
    a vision placeholder token (image / video pad, vision start / end): scored again with the prompt, such a token
    would be taken for a frame slot and the model would splice visual features into it."""
    rows = []
    for row in tokens.tolist():
        end = next((i for i, t in enumerate(row) if t in eos), None)
        row = row if end is None else row[: end + 1]
        cut = next((i for i, t in enumerate(row) if t in vision), None)
        rows.append(row if cut is None else row[:cut] + [eos[0]])
    return [row or [eos[0]] for row in rows]  # an empty completion still scores its end token


def vision_token_ids(config) -> set[int]:
    """The placeholder token ids of a Qwen2.5-VL config (a random-weight model samples them like any other)."""
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return {getattr(config, name) for name in names if isinstance(getattr(config, name, None), int)}


RewardFunction = Callable[[str, str], Reward]


def grpo_step(vlm: TransformersVLM, examples: Sequence[CritiqueExample], parameters: list[torch.nn.Parameter],
              optimizer: torch.optim.Optimizer, settings: GRPOSettings, step: int,
              reward_fn: RewardFunction | None = None) -> dict:
    """One GRPO step on ``examples`` (one group each); returns its statistics, times and the sampled texts.
    ``reward_fn(text, reference)`` defaults to the critic reward (``critique_reward`` with the format weight)."""
    reward_fn = reward_fn or (lambda text, reference: critique_reward(text, reference, settings.format_weight))
    model, tokenizer = vlm.model, vlm.processor.tokenizer
    eos, pad = vlm.decoder.special_tokens()
    eos = eos or [pad]
    group = settings.group_size
    began = _sync(vlm)
    model.eval()
    sampling = GenerationSettings(temperature=settings.temperature, top_p=settings.top_p, repetition_penalty=1.0,
                                  max_new_tokens=settings.max_new_tokens, trials=group, seed=settings.seed * 1_000_003 + step)
    tokens = vlm.generate_tokens([e.prompt() for e in examples], sampling)
    rolled = _sync(vlm)
    completions = _completions(tokens, eos, vision_token_ids(model.config))
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)  # what is scored is what is rewarded
    rewards = [reward_fn(text, reference_answer(examples[i // group].answer_text)) for i, text in enumerate(texts)]
    totals = torch.tensor([r.total for r in rewards], dtype=torch.float32).view(len(examples), group)
    advantages = group_advantages(totals).to(vlm.device)
    scored = _sync(vlm)

    chunks = []  # (example, rows) pieces of at most update_micro_batch completions
    for index, example in enumerate(examples):
        rows = list(range(index * group, (index + 1) * group))
        for start in range(0, group, settings.update_micro_batch):
            chunks.append((example, rows[start:start + settings.update_micro_batch]))
    references, olds = [], []
    with torch.no_grad():
        for example, rows in chunks:
            batch = completion_batch(vlm, example.prompt(), [completions[r] for r in rows], pad)
            with adapter_disabled(model):
                references.append(completion_logprobs(model, batch))
            olds.append(completion_logprobs(model, batch) if settings.updates_per_rollout > 1 else None)
    if settings.gradient_checkpointing:
        activation_checkpointing(model, True)
    losses, kls, clips = [], [], []
    total_rows = len(completions)
    for update in range(settings.updates_per_rollout):
        model.train()
        update_loss = 0.0
        for (example, rows), ref_logp, old_logp in zip(chunks, references, olds):
            batch = completion_batch(vlm, example.prompt(), [completions[r] for r in rows], pad)
            logp = completion_logprobs(model, batch)
            old = logp.detach() if old_logp is None else old_logp
            loss, parts = grpo_loss(logp, old, ref_logp, advantages.view(-1)[rows], batch.mask, settings.epsilon,
                                    settings.beta)
            # Each chunk's mean is weighted by its share of the step's completions: the sum is the step's mean.
            (loss * len(rows) / total_rows).backward()
            update_loss += loss.item() * len(rows) / total_rows
            if update == 0:
                kls.append(parts["kl"] * len(rows) / total_rows)
            clips.append(parts["clip_fraction"])
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(update_loss)
    model.eval()
    if settings.gradient_checkpointing:
        activation_checkpointing(model, False)
    updated = _sync(vlm)
    return {
        "step": step + 1, "reward_mean": float(totals.mean()), "reward_std": float(totals.std(unbiased=False)),
        "score_mean": sum(r.score for r in rewards) / len(rewards),
        "format_mean": sum(r.format for r in rewards) / len(rewards),
        "kl": sum(kls), "loss": losses[0], "clip_fraction": sum(clips) / len(clips),
        "completion_tokens_mean": sum(len(c) for c in completions) / len(completions),
        "rollout_s": rolled - began, "scoring_s": scored - rolled, "update_s": updated - scored,
        "step_s": updated - began, "texts": texts,
    }


def run_grpo(vlm: TransformersVLM, examples: Sequence[CritiqueExample], settings: GRPOSettings, out_dir: Path, *,
             init_adapter: Path | None = None, training_set_version: str = "", resume: bool = True,
             progress: Callable[[dict], None] | None = None, reward_fn: RewardFunction | None = None) -> GRPOResult:
    """GRPO of ``vlm``'s model in place; ``init_adapter`` (an SFT adapter of the same base) is where the
    adapter starts, else a fresh one. Each example's ``answer_text`` holds the reference (``<answer>4</answer>``
    or ``4``). Writes ``out_dir/adapter.safetensors`` and resumable checkpoints as SFT does; ``progress`` gets each
    step's statistics with its sampled ``texts``."""
    if not examples:
        raise ValueError("no training examples")
    out_dir = Path(out_dir)
    model = vlm.model
    start_from = None
    if init_adapter is not None:
        metadata = read_adapter_metadata(Path(init_adapter))
        if metadata["base_version"] != vlm.checkpoint.version:
            raise AdapterMismatch(f"{init_adapter}: trained on {metadata['base_model']!r} ({metadata['base_version']}), "
                                  f"not on the loaded base {vlm.checkpoint.name!r} ({vlm.checkpoint.version})")
        # Rollout log-probabilities must be those of the policy that is updated: no dropout in GRPO.
        lora = replace(lora_from_metadata(metadata), dropout=0.0)
        start_from = adapter_fingerprint(Path(init_adapter))
    else:
        lora = ReasonLoraSettings(settings.lora_rank, settings.lora_alpha, 0.0, tuple(settings.lora_targets))
    parameters = add_reason_lora(model, lora, settings.seed)
    if init_adapter is not None:
        _load_adapter_weights(model, Path(init_adapter))
    optimizer = make_optimizer(parameters, settings.learning_rate, settings.weight_decay)
    key = run_key("grpo", asdict(settings), base_identity(vlm.checkpoint), examples_fingerprint(examples),
                  asdict(vlm.sizing), training_set_version, start_from)
    meta = lambda step: adapter_metadata(vlm.checkpoint, lora, vlm.sizing, stage="grpo", steps=step,  # noqa: E731
                                         training_set_version=training_set_version, seed=settings.seed,
                                         extra={"init_adapter": start_from or "", "grpo_beta": settings.beta})
    states = out_dir / "checkpoints"
    start, stats, resumed_from = 0, [], None
    if resume and (latest := latest_training_state(states)) is not None:
        start, stats = restore_training_state(latest, model, optimizer, key)
        resumed_from = start
    for step in range(start, settings.steps):
        picks = [int(example_order(len(examples), settings.seed, position // len(examples))[position % len(examples)])
                 for position in range(step * settings.prompts_per_step, (step + 1) * settings.prompts_per_step)]
        result = grpo_step(vlm, [examples[i] for i in picks], parameters, optimizer, settings, step, reward_fn)
        texts = result.pop("texts")
        stats.append(result)
        if progress is not None:
            progress({**result, "steps": settings.steps, "texts": texts})
        done = step + 1
        if settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < settings.steps:
            save_training_state(states, model, optimizer, step=done, curve=stats, run_key=key, adapter_meta=meta(done))
            prune_training_states(states, settings.keep_checkpoints)
    metadata = {**meta(settings.steps), "final_reward_mean": f"{stats[-1]['reward_mean']:.4f}" if stats else ""}
    adapter_path = save_adapter(model, out_dir / ADAPTER_FILE, metadata)
    return GRPOResult(adapter_path, settings.steps, stats, resumed_from, metadata)


def train_reason_grpo(base_checkpoint: Checkpoint, examples: Sequence[CritiqueExample], settings: GRPOSettings,
                      out_dir: Path, *, init_adapter: Path | None = None, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32, sizing: VideoSizing = VideoSizing(),
                      training_set_version: str = "", resume: bool = True,
                      progress: Callable[[dict], None] | None = None) -> GRPOResult:
    """GRPO of the Reason VLM at ``base_checkpoint`` (loaded as a model of its own); see ``run_grpo``."""
    vlm = TransformersVLM.load(base_checkpoint, torch.device(device), dtype, sizing)
    return run_grpo(vlm, examples, settings, out_dir, init_adapter=init_adapter, training_set_version=training_set_version,
                    resume=resume, progress=progress)

