"""Reason critic post-training at real size: LoRA SFT and one GRPO step of the Qwen2.5-VL-7B architecture
(Cosmos-Reason1-7B) with random weights, through the same code the critic_checkpoint asset runs
(``critic_training.reason_tuning.run_sft`` and ``reason_grpo.grpo_step``). Speed does not depend on weight values.

    python bench/critic_training_gpu.py --out $OUT/critic_training.json        # a GPU, bf16
    .venv/bin/python bench/critic_training_gpu.py --tiny                      # the tiny random VLM on the CPU

SFT: examples of ~8k visual tokens (32 frames of 720p at 16 fps within a pixel budget of 16384·28·28) with
~150-token answers, one example per forward pass, gradient accumulation 2; samples/s is measured after the
first step (which pays one-time costs). GRPO: one prompt, a group of 8 rollouts of 256 new tokens (random
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


def bench_sft(vlm, args) -> None:
    from cosmos_assets.critic_training.reason_tuning import SFTSettings, answer_token_ids, run_sft

    data = examples(args, 4)
    inputs = vlm.encode_prompts([data[0].prompt()])
    visual_tokens = int(inputs["video_grid_thw"].prod(-1).sum()) // 4
    settings = SFTSettings(steps=args.sft_steps, grad_accumulation=2, learning_rate=1e-4, warmup_steps=0, checkpoint_every=0,
                           gradient_checkpointing=args.sft_checkpointing)
    times: list[float] = []
    progress = lambda info: times.append(sync())  # noqa: E731
    reset_peak()
    start = sync()
    with tempfile.TemporaryDirectory() as out:
        result = run_sft(vlm, data, settings, Path(out), progress=progress)
    steady = (times[-1] - times[0]) / ((len(times) - 1) * settings.grad_accumulation) if len(times) > 1 else float("nan")
    report("sft", samples_per_s=round(1 / steady, 3), seconds_per_sample=round(steady, 3),
           first_step_s=round(times[0] - start, 2), steps=settings.steps, grad_accumulation=settings.grad_accumulation,
           visual_tokens=visual_tokens, prompt_tokens=int(inputs["input_ids"].shape[1]),
           answer_tokens=len(answer_token_ids(vlm, data[0].answer_text)), losses=[round(x, 4) for x in result.losses],
           gradient_checkpointing=settings.gradient_checkpointing, lora_rank=settings.lora_rank, peak_GiB=peak_gib(),
           trainable_M=round(sum(p.numel() for n, p in vlm.model.named_parameters() if ".lora_" in n) / 1e6, 1))


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
    parser.add_argument("--sft-checkpointing", type=int, default=1)
    parser.add_argument("--grpo-steps", type=int, default=2)
    parser.add_argument("--grpo-micro-batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--parts", default="sft,grpo")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.frames = args.frames or (4 if args.tiny else 32)
    args.answer_words = args.answer_words or (4 if args.tiny else 110)
    args.sft_steps = args.sft_steps or (3 if args.tiny else 8)
    args.new_tokens = args.new_tokens or (16 if args.tiny else 256)
    if args.tiny:
        torch.set_num_threads(1)
    import transformers

    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.tiny else "cpu"
    start = time.perf_counter()
    vlm = build_vlm(args)
    report("setup", device=device, torch=torch.__version__, transformers=transformers.__version__,
           params_B=round(sum(p.numel() for p in vlm.model.parameters()) / 1e9, 3), built_s=round(time.perf_counter() - start, 1),
           dtype=str(vlm.dtype), attn=vlm.model.config.get_text_config()._attn_implementation)
    parts = args.parts.split(",")
    try:
        if "sft" in parts:
            bench_sft(vlm, args)
        if "grpo" in parts:
            if "sft" not in parts:
                from cosmos_assets.critic_training.reason_tuning import add_reason_lora, SFTSettings

                add_reason_lora(vlm.model, SFTSettings().lora)
            bench_grpo(vlm, args)
    finally:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(RESULTS, indent=1, default=str))


if __name__ == "__main__":
    main()
