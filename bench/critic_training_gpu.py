"""Reason critic post-training at real size: LoRA SFT and one GRPO step of the Qwen2.5-VL-7B architecture
(Cosmos-Reason1-7B) with random weights, through the same code the critic_checkpoint asset runs
(``critic_training.reason_tuning.run_sft`` and ``reason_grpo.grpo_step``). Speed does not depend on weight values.

    python bench/critic_training_gpu.py --out $OUT/critic_training.json        # a GPU, bf16
    .venv/bin/python bench/critic_training_gpu.py --tiny                      # the tiny random VLM on the CPU

SFT: examples of ~8k visual tokens (32 frames of 720p at 16 fps within a pixel budget of 16384·28·28) with
~280-token answers, one example per forward pass, gradient accumulation 2; samples/s is measured after the
first step (which pays one-time costs). Several SFT configurations run one after the other on the same loaded base
(``--sft-configs``: SFTSettings overrides, ``;`` between configurations; the adapter is taken off between them), so
old and new settings are compared in one process; each row names every setting that differs between the rows, and
``default`` marks the row that is ``SFTSettings()``'s own. ``--profile`` times one example's phases (encoding the
prompt, the frozen vision tower, the forward, the backward) with CUDA events for the named configurations and writes
torch.profiler's table of device time per operator. GRPO: one prompt, a group of 8 rollouts of 256 new tokens (random
weights rarely sample the end token, so rollouts run to full length), on top of the SFT adapter; the first step
includes the CUDA-graph capture of the decode step, the second is the steady state. Peak memory is
``torch.cuda.max_memory_allocated`` of each phase. Every model here is random: outputs are meaningless.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS: dict = {}


def report(name: str, **values) -> None:
    RESULTS[name] = values
    print(json.dumps({name: values}, default=str), flush=True)


def sync() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def reserved_gib() -> float | None:
    return round(torch.cuda.max_memory_reserved() / 2**30, 1) if torch.cuda.is_available() else None


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def build_vlm(args):
    """The real-size architecture built on the GPU in bf16 (never materialised on the CPU), or the tiny one."""
    from cosmos_assets.models.vlm import TransformersVLM, VideoSizing

    if args.tiny:
        from cosmos_assets.models.checkpoints import resolve_checkpoint
        from cosmos_assets.models.tiny import build_tiny_vlm

        folder = Path(tempfile.mkdtemp(prefix="critic_training_tiny_")) / "vlm"
        build_tiny_vlm(folder)
        return TransformersVLM.load(resolve_checkpoint(str(folder), role="vlm"), torch.device("cpu"), torch.float32,
                                    VideoSizing(total_pixels=8 * 16 * 28 * 28))
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from bench.gpu_backends import random_checkpoint, reason1_7b_config  # the 7B sizes, passed explicitly
    from cosmos_assets.models.tiny_tokenizer import build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer()
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
                                    tokenizer=tokenizer, chat_template=tokenizer.chat_template)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration(reason1_7b_config(tokenizer)).eval()
    torch.set_default_dtype(torch.float32)
    return TransformersVLM(model, processor, random_checkpoint("random Qwen2.5-VL-7B (Cosmos-Reason1-7B architecture)"),
                           VideoSizing(total_pixels=args.total_pixels))


def examples(args, count: int):
    from cosmos_assets.critic_training.reason_tuning import CritiqueExample

    rng = np.random.default_rng(0)
    height, width = (72, 128) if args.tiny else (720, 1280)
    words = ["the", "bottle", "moves", "along", "belt", "and", "its", "shadow", "follows", "smoothly", "no", "warping"]
    out = []
    for index in range(count):
        frames = rng.integers(0, 256, (args.frames, height, width, 3), dtype=np.uint8)
        thinking = " ".join(rng.choice(words, args.answer_words))
        out.append(CritiqueExample.for_critic(frames, 16.0, f"<think>{thinking}</think>\n<answer>{index % 5 + 1}</answer>"))
    return out


# The settings the SFT rows may differ in (the speed switches); the rows' labels name each of them.
SWITCHES = ("gradient_checkpointing", "checkpoint_every_n_layers", "lora_dropout", "adapter_autocast")
# Before issue 15's speed work: every layer recomputed, LoRA dropout 0.05, the adapter computed in float32. Then one
# switch changed per row: dropout off, the adapter in bf16, fewer layers recomputed, none (the default), and dropout
# back on with every second layer recomputed.
OLD = "gradient_checkpointing=1,checkpoint_every_n_layers=1,lora_dropout=0.05,adapter_autocast=0"
DEFAULT_CONFIGS = ";".join([
    OLD,
    "gradient_checkpointing=1,checkpoint_every_n_layers=1,lora_dropout=0,adapter_autocast=0",
    "gradient_checkpointing=1,checkpoint_every_n_layers=1,lora_dropout=0,adapter_autocast=1",
    "gradient_checkpointing=1,checkpoint_every_n_layers=2,lora_dropout=0,adapter_autocast=1",
    "gradient_checkpointing=1,checkpoint_every_n_layers=4,lora_dropout=0,adapter_autocast=1",
    "gradient_checkpointing=0,checkpoint_every_n_layers=1,lora_dropout=0,adapter_autocast=1",
    "gradient_checkpointing=1,checkpoint_every_n_layers=2,lora_dropout=0.05,adapter_autocast=1",
])


def parse_config(text: str) -> dict:
    """``name=value,...`` into SFTSettings overrides, each value converted to the field's type."""
    from dataclasses import fields

    from cosmos_assets.critic_training.reason_tuning import SFTSettings

    types = {f.name: type(f.default) for f in fields(SFTSettings)}
    out = {}
    for item in filter(None, text.split(",")):
        name, value = item.split("=")
        kind = types[name.strip()]
        out[name.strip()] = bool(int(value)) if kind is bool else kind(value)
    return out


def sft_settings(args, overrides: dict):
    from cosmos_assets.critic_training.reason_tuning import SFTSettings

    return SFTSettings(**{**dict(steps=args.sft_steps, grad_accumulation=2, learning_rate=1e-4, warmup_steps=0,
                                 checkpoint_every=0), **overrides})


def config_label(settings) -> str:
    from cosmos_assets.critic_training.reason_tuning import SFTSettings

    default = all(getattr(settings, name) == getattr(SFTSettings(), name) for name in SWITCHES)
    text = ", ".join(f"{name}={getattr(settings, name)}" for name in SWITCHES)
    return text + (" (default)" if default else "")


def clear(vlm) -> None:
    """The base without its adapter and the device's cache emptied, so the next row starts from the same state."""
    import gc

    from cosmos_assets.critic_training.reason_tuning import remove_reason_lora

    remove_reason_lora(vlm.model)
    for parameter in vlm.model.parameters():
        parameter.grad = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def bench_sft(vlm, args) -> None:
    from cosmos_assets.critic_training.reason_tuning import answer_token_ids, run_sft

    data = examples(args, 4)
    inputs = vlm.encode_prompts([data[0].prompt()])
    visual_tokens = int(inputs["video_grid_thw"].prod(-1).sum()) // 4
    report("sft_inputs", visual_tokens=visual_tokens, prompt_tokens=int(inputs["input_ids"].shape[1]),
           answer_tokens=len(answer_token_ids(vlm, data[0].answer_text)), steps=args.sft_steps, grad_accumulation=2)
    rows = []
    for index, text in enumerate(args.sft_configs.split(";")):
        settings = sft_settings(args, parse_config(text))
        times: list[float] = []
        progress = lambda info: times.append(sync())  # noqa: E731
        clear(vlm)
        reset_peak()
        start = sync()
        with tempfile.TemporaryDirectory() as out:
            result = run_sft(vlm, data, settings, Path(out), progress=progress)
        steady = (times[-1] - times[0]) / ((len(times) - 1) * settings.grad_accumulation) if len(times) > 1 else float("nan")
        row = dict(label=config_label(settings), samples_per_s=round(1 / steady, 3), seconds_per_sample=round(steady, 3),
                   first_step_s=round(times[0] - start, 2), peak_GiB=peak_gib(), peak_reserved_GiB=reserved_gib(),
                   losses=[round(x, 4) for x in result.losses], lora_rank=settings.lora_rank,
                   trainable_M=round(sum(p.numel() for n, p in vlm.model.named_parameters() if ".lora_" in n) / 1e6, 1),
                   **{name: getattr(settings, name) for name in SWITCHES})
        report(f"sft_{index}", **row)
        rows.append(row)
    print("\nSFT, one process, same base and data (samples/s after the first step; peak allocated / reserved GiB):")
    for row in rows:
        print(f"  {row['samples_per_s']:6.3f} samples/s  {row['seconds_per_sample']:6.3f} s/sample  "
              f"{row['peak_GiB']} / {row['peak_reserved_GiB']} GiB  {row['label']}", flush=True)


def profile_sft(vlm, args, name: str, overrides: dict) -> None:
    """One example's phases with CUDA events (median of 3 after a warm-up), then torch.profiler's table of one
    example's device time per operator, written to ``--profile-dir``."""
    from cosmos_assets.critic_training.reason_tuning import (
        add_reason_lora, answer_token_ids, completion_batch, completion_logprobs, pad_token_id, training_compute,
    )

    settings = sft_settings(args, overrides)
    example = examples(args, 1)[0]
    answer, pad = answer_token_ids(vlm, example.answer_text), pad_token_id(vlm)
    clear(vlm)
    add_reason_lora(vlm.model, settings.lora, settings.seed)
    phases: dict[str, list[float]] = {"encode_prompt": [], "vision_tower": [], "batch": [], "forward": [], "backward": []}

    def step(timed: bool) -> None:
        marks = [torch.cuda.Event(enable_timing=True) for _ in range(6)]
        marks[0].record()
        inputs = vlm.encode_prompts([example.prompt()])
        marks[1].record()
        with torch.no_grad():
            vlm.model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        marks[2].record()
        batch = completion_batch(vlm, example.prompt(), [answer], pad)  # what run_sft runs: encode + vision again
        marks[3].record()
        with compute():
            loss = -(completion_logprobs(vlm.model, batch) * batch.mask).sum() / len(answer)
        marks[4].record()
        loss.backward()
        marks[5].record()
        torch.cuda.synchronize()
        if timed:
            for key, (a, b) in zip(phases, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]):
                phases[key].append(marks[a].elapsed_time(marks[b]) / 1000)

    with training_compute(vlm.model, settings) as compute:
        vlm.model.train()
        reset_peak()
        for rep in range(4):
            step(rep > 0)
        peak = peak_gib()
        if args.profile_dir:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                step(False)
            averages = prof.key_averages()
            try:
                table = averages.table(sort_by="self_device_time_total", row_limit=40)
            except Exception:  # older torch names the column after CUDA
                table = averages.table(sort_by="self_cuda_time_total", row_limit=40)
            args.profile_dir.mkdir(parents=True, exist_ok=True)
            (args.profile_dir / f"profile_{name}.txt").write_text(config_label(settings) + "\n" + table)
        vlm.model.eval()
    for parameter in vlm.model.parameters():
        parameter.grad = None
    report(f"phases_{name}", label=config_label(settings), peak_GiB=peak,
           **{key: round(float(np.median(values)), 4) for key, values in phases.items()})


def bench_grpo(vlm, args) -> None:
    from cosmos_assets.critic_training.reason_grpo import GRPOSettings, grpo_step
    from cosmos_assets.critic_training.reason_tuning import adapter_parameters, make_optimizer

    data = examples(args, 1)
    settings = GRPOSettings(group_size=8, max_new_tokens=args.new_tokens, prompts_per_step=1, learning_rate=2e-5,
                            update_micro_batch=args.grpo_micro_batch, gradient_checkpointing=True)
    parameters = adapter_parameters(vlm.model)  # GRPO on top of the SFT adapter, as critic_checkpoint runs it
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = make_optimizer(parameters, settings.learning_rate, settings.weight_decay)
    for step in range(args.grpo_steps):
        reset_peak()
        stats = grpo_step(vlm, data, parameters, optimizer, settings, step)
        texts = stats.pop("texts")
        report(f"grpo_step_{step}", **{k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()},
               group=settings.group_size, new_tokens_max=settings.max_new_tokens, texts=len(texts),
               decoder=vlm.decoder.last, peak_GiB=peak_gib())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny random VLM on the CPU (a check of the code path)")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--total-pixels", type=int, default=16384 * 28 * 28)
    parser.add_argument("--answer-words", type=int, default=None)
    parser.add_argument("--sft-steps", type=int, default=None)
    parser.add_argument("--sft-configs", default=DEFAULT_CONFIGS,
                        help="SFTSettings overrides per configuration, name=value with ',' between, ';' between configurations")
    parser.add_argument("--profile", default="",
                        help="phase times of these configurations, name:overrides with '/' between configurations "
                             "(e.g. 'old:gradient_checkpointing=1,...')")
    parser.add_argument("--profile-dir", type=Path, default=None, help="where torch.profiler's tables are written")
    parser.add_argument("--grpo-steps", type=int, default=2)
    parser.add_argument("--grpo-micro-batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--parts", default="sft,grpo", help="sft, profile and grpo, ',' between")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.frames = args.frames or (4 if args.tiny else 32)
    args.answer_words = args.answer_words or (4 if args.tiny else 110)
    args.sft_steps = args.sft_steps or (3 if args.tiny else 5)
    args.new_tokens = args.new_tokens or (16 if args.tiny else 256)
    if args.tiny:
        torch.set_num_threads(1)
    import peft
    import transformers

    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.tiny else "cpu"
    start = time.perf_counter()
    vlm = build_vlm(args)
    report("setup", device=device, torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
           params_B=round(sum(p.numel() for p in vlm.model.parameters()) / 1e9, 3), built_s=round(time.perf_counter() - start, 1),
           dtype=str(vlm.dtype), attn=vlm.model.config.get_text_config()._attn_implementation)
    parts = args.parts.split(",")
    try:
        if "profile" in parts and torch.cuda.is_available():
            for item in filter(None, args.profile.split("/")):
                name, _, overrides = item.partition(":")
                profile_sft(vlm, args, name, parse_config(overrides))
        if "sft" in parts:
            bench_sft(vlm, args)
        if "grpo" in parts:
            if "sft" not in parts:
                from cosmos_assets.critic_training.reason_tuning import SFTSettings, add_reason_lora

                clear(vlm)
                add_reason_lora(vlm.model, SFTSettings().lora)
            bench_grpo(vlm, args)
    finally:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(RESULTS, indent=1, default=str))


if __name__ == "__main__":
    main()
