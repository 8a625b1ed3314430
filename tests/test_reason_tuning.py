"""Reason critic post-training on the tiny random-weight Qwen2.5-VL (built by the project's builder, loaded as
real weights are): LoRA SFT learns, its adapter reloads onto the base it was trained on (and only that one) and
changes what the critic answers, an interrupted run resumes to the very same adapter, and a GRPO step samples
through the critic's generation path, scores what it sampled and moves the adapter away from the base.

The tiny model's frozen LM head cannot make confident predictions, so its loss falls but stays high and it never
writes a well-formed critique: rewards of the critic's own form are checked on real samples (all zero there) and
on hand-written strings, and the GRPO update is driven, on real samples, by a reward those samples vary in.
"""

from __future__ import annotations

import string

import numpy as np
import pytest
import torch
from safetensors import safe_open

from cosmos_assets.critic_training.reason_grpo import (
    GRPOSettings, Reward, critique_reward, format_reward, group_advantages, reference_answer, run_grpo, score_reward,
)
from cosmos_assets.critic_training.reason_tuning import (
    ADAPTER_FILE, AdapterMismatch, CritiqueExample, SFTSettings, adapter_state, load_tuned_vlm, run_sft,
)
from cosmos_assets.models.checkpoints import resolve_checkpoint
from cosmos_assets.models.frames import sample_frames
from cosmos_assets.models.tiny import build_tiny_vlm
from cosmos_assets.models.vlm import GenerationSettings, TransformersVLM, VideoSizing
from cosmos_assets.synthetic.critics import RUBRIC_QUESTION, RUBRIC_SYSTEM_PROMPT, ReasonCritic

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

CPU = torch.device("cpu")
SIZING = VideoSizing(total_pixels=4 * 16 * 28 * 28)  # four small frames: a few dozen visual tokens
GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=12, repetition_penalty=1.0)
# Few steps at a high rate, one example per step and no dropout: the loss must move within seconds.
QUICK = SFTSettings(steps=6, grad_accumulation=2, learning_rate=1e-2, warmup_steps=0, checkpoint_every=2, lora_dropout=0.0)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("reason_tuning_models")
    build_tiny_vlm(root / "vlm")
    return resolve_checkpoint(str(root / "vlm"), role="vlm")


@pytest.fixture(scope="module")
def examples(samples):
    clip = sample_frames(samples / "dashcam_solid_white_right.mp4", fps=2, max_frames=4, max_side=160)
    return [CritiqueExample.for_critic(clip.frames, clip.fps, "<think>The car holds its lane.</think><answer>5</answer>"),
            CritiqueExample.for_critic(clip.frames[::-1].copy(), clip.fps,
                                       "<think>The road runs backwards.</think><answer>1</answer>")]


def fresh(base) -> TransformersVLM:
    """A model of its own for each run: training adds an adapter to the model in place."""
    return TransformersVLM.load(base, CPU, torch.float32, SIZING)


@pytest.fixture(scope="module")
def trained(base, examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    return run_sft(fresh(base), examples, QUICK, out, training_set_version="set-1"), out


def test_examples_are_asked_with_the_critics_own_prompt(examples):
    assert (examples[0].system, examples[0].question) == (RUBRIC_SYSTEM_PROMPT, RUBRIC_QUESTION)
    assert examples[0].prompt().frames is examples[0].frames


def test_sft_loss_falls_on_a_fixed_batch(trained):
    result, _ = trained
    assert len(result.losses) == QUICK.steps and all(np.isfinite(result.losses))
    assert result.losses[-1] < result.losses[0] - 0.2, result.losses


def test_the_adapter_is_safetensors_that_names_its_base_and_settings(trained, base):
    result, out = trained
    assert result.adapter_path == out / ADAPTER_FILE
    with safe_open(str(result.adapter_path), framework="pt") as handle:
        metadata, keys = handle.metadata(), list(handle.keys())
    assert metadata["base_version"] == base.version and metadata["random_weights"] == "true"
    assert (metadata["lora_rank"], metadata["lora_alpha"], metadata["training_set_version"]) == ("16", "32.0", "set-1")
    assert metadata["stage"] == "sft" and metadata["steps"] == "6"
    assert keys and all("language_model" in key and ".lora_" in key for key in keys)  # the vision tower is untouched


def test_the_tuned_adapter_reloads_and_changes_the_critics_answers(trained, base, examples):
    result, _ = trained
    prompts = [e.prompt() for e in examples]
    plain = fresh(base)
    tuned = load_tuned_vlm(base, result.adapter_path, CPU, torch.float32)
    assert tuned.sizing == SIZING  # the pixel budget it was trained with
    assert tuned.generate(prompts, GREEDY) != plain.generate(prompts, GREEDY)
    plain_critic, tuned_critic = ReasonCritic(plain, GREEDY, "rubric"), ReasonCritic(tuned, GREEDY, "rubric")
    assert tuned_critic.identity["critic_version"] != plain_critic.identity["critic_version"]
    assert tuned_critic.identity["tiny_random"] and len(tuned_critic.critique([(examples[0].frames, examples[0].fps)])) == 1


def test_an_adapter_is_refused_on_another_base(trained, tmp_path):
    build_tiny_vlm(tmp_path / "other", seed=1)
    other = resolve_checkpoint(str(tmp_path / "other"), role="vlm")
    with pytest.raises(AdapterMismatch, match="trained on"):
        load_tuned_vlm(other, trained[0].adapter_path, CPU, torch.float32)


def test_a_run_interrupted_after_a_checkpoint_resumes_to_the_same_adapter(trained, base, examples, tmp_path):
    uninterrupted, _ = trained

    def crash_at_step_3(info):
        if info["step"] == 3:  # step 3 is done but lost; the last checkpoint is step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sft(fresh(base), examples, QUICK, tmp_path, training_set_version="set-1", progress=crash_at_step_3)
    assert not (tmp_path / ADAPTER_FILE).exists()
    resumed = run_sft(fresh(base), examples, QUICK, tmp_path, training_set_version="set-1")
    assert resumed.resumed_from == 2 and resumed.losses == uninterrupted.losses
    ours, theirs = adapter_state_of(resumed.adapter_path), adapter_state_of(uninterrupted.adapter_path)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)  # bit for bit


def adapter_state_of(path):
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def test_rewards_on_hand_checked_strings():
    assert critique_reward("<think>steady</think><answer>4</answer>", "4") == Reward(1.0, 1.0, 2.0)
    assert critique_reward("<think>a glitch</think> <answer>Score: 3/5</answer>", "4") == Reward(0.5, 1.0, 1.5)
    assert critique_reward("<answer>2</answer>", "4") == Reward(0.0, 0.0, 0.0)  # two off, and no <think>
    assert score_reward("I'd say 4", "4") == 0.0  # no answer tag: the critic could not parse it either
    assert score_reward("<think>x</think><answer>3 or 4</answer>", "4") == 0.0  # two ratings: unparsed
    assert format_reward("<think>x</think><answer>4</answer> and more") == 0.0
    assert score_reward("<think>x</think><answer>b.</answer>", "B") == 1.0  # a multiple-choice reference
    assert reference_answer("<think>why</think><answer>5</answer>") == "5" and reference_answer(" 3 ") == "3"
    advantages = group_advantages(torch.tensor([[2.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    assert torch.allclose(advantages[0], torch.tensor([1.4142, -1.4142, 0.0, 0.0]), atol=1e-3)
    assert torch.equal(advantages[1], torch.zeros(4))  # a group that agrees teaches nothing


GRPO = GRPOSettings(steps=2, prompts_per_step=1, group_size=4, max_new_tokens=8, temperature=1.0, learning_rate=5e-2,
                    checkpoint_every=0, lora_rank=8, lora_alpha=16.0)


def test_a_grpo_step_scores_its_own_samples_with_the_critic_reward(base, examples, tmp_path):
    seen = []
    result = run_grpo(fresh(base), examples, GRPOSettings(**{**GRPO.__dict__, "steps": 1}), tmp_path, progress=seen.append)
    step, texts = result.stats[0], seen[0]["texts"]
    assert len(texts) == GRPO.group_size and len(set(texts)) > 1  # sampled, not greedy
    rewards = [critique_reward(t, "5").total for t in texts] + [critique_reward(t, "1").total for t in texts]
    assert step["reward_mean"] in {np.mean(rewards[:4]), np.mean(rewards[4:])}
    assert step["kl"] == 0.0  # a fresh adapter is the base
    assert {"rollout_s", "scoring_s", "update_s", "loss"} <= step.keys()


def letters_reward(text: str, reference: str) -> Reward:
    """Share of ASCII letters in a sample: real random samples differ in it, so groups have advantages."""
    share = sum(c in string.ascii_letters for c in text) / max(len(text), 1)
    return Reward(share, 0.0, share)


def test_grpo_moves_the_adapter_and_the_kl_to_the_base_follows(base, examples, tmp_path):
    vlm = fresh(base)
    result = run_grpo(vlm, examples, GRPO, tmp_path, reward_fn=letters_reward)
    first, second = result.stats
    assert first["reward_std"] > 0  # the group disagreed: there was something to learn
    assert first["kl"] == 0.0 and second["kl"] > 0.0  # the base and the policy part after the first update
    moved = [v for k, v in adapter_state(vlm.model).items() if "lora_B" in k]
    assert any(v.abs().max() > 0 for v in moved)  # B starts at zero
    with safe_open(str(result.adapter_path), framework="pt") as handle:
        assert handle.metadata()["stage"] == "grpo" and handle.metadata()["grpo_beta"] == "0.05"


def test_a_sampled_vision_placeholder_ends_the_completion_before_it():
    """A random-weight model samples any token; a video pad inside a completion would be taken for a frame slot
    when the completion is scored with its prompt (the model then finds more slots than frames)."""
    import torch

    from cosmos_assets.critic_training.reason_grpo import _completions

    eos, video = 2, 151656
    rows = torch.tensor([[5, 6, eos, 9], [5, video, 7, eos], [video, 1, 1, 1], [5, 6, 7, 8]])
    assert _completions(rows, [eos], {video}) == [[5, 6, eos], [5, eos], [eos], [5, 6, 7, 8]]
