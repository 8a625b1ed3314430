"""Every model backend at its real architecture size with random weights, on one GPU, through the same
classes the assets use (speed does not depend on weight values). Prints one JSON line per measurement
and writes them all to --out. Variants of a backend run side by side in the same process.

    python bench/gpu_backends.py --parts vlm,embedder --out $OUT/gpu_backends.json
    python bench/gpu_backends.py --parts predict2,transfer2.5 --steps 5

Parts: vlm (Reason1-7B = Qwen2.5-VL-7B critique: ~8k visual tokens, 5 trials × 256 new tokens),
embedder (SigLIP so400m over 8-frame clips), predict2 (Predict2-2B Video2World, 480p, 93 frames, CFG),
transfer2.5 (Transfer 2.5-2B with an edge control). Every model here is random: outputs are meaningless.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import numpy as np
import torch

RESULTS: dict = {}


def report(name: str, **values) -> None:
    RESULTS[name] = values
    print(json.dumps({name: values}, default=str), flush=True)


def timed(fn, repeats: int = 1):
    """Best wall time of ``repeats`` calls (seconds) and the last result; the GPU is synchronised."""
    best, result = float("inf"), None
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def random_checkpoint(name: str):
    from cosmos_assets.models.checkpoints import Checkpoint

    return Checkpoint(path=Path("/nonexistent"), name=name, version="random-weights", tiny_random=True)


# --- Reason1-7B critique ------------------------------------------------------------------------------


def reason1_7b_config(tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = tokenizer.convert_tokens_to_ids
    return Qwen2_5_VLConfig(
        text_config={"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                     "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128000,
                     "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
                     "eos_token_id": ids("<|im_end|>"), "pad_token_id": ids("<|endoftext|>"), "bos_token_id": ids("<|endoftext|>")},
        vision_config={"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                       "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )


def bench_vlm(args) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from cosmos_assets.models.tiny_tokenizer import build_qwen_tokenizer
    from cosmos_assets.models.vlm import (CRITIC_SETTINGS, GenerationSettings, TransformersVLM, VideoPrompt, VideoSizing,
                                         VLMSpeedups)

    tokenizer = build_qwen_tokenizer()
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
                                    tokenizer=tokenizer, chat_template=tokenizer.chat_template)
    start = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration(reason1_7b_config(tokenizer)).eval()
    torch.set_default_dtype(torch.float32)
    built = time.perf_counter() - start
    vlm = TransformersVLM(model, processor, random_checkpoint("random Qwen2.5-VL-7B (Cosmos-Reason1-7B architecture)"),
                          VideoSizing(total_pixels=args.vlm_total_pixels))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.vlm_frames, 720, 1280, 3), dtype=np.uint8)  # a 16 fps video
    prompt = VideoPrompt(frames, 16.0, "Does the video contain any anomalies or artifacts? Answer in <answer></answer>.",
                         "You are a video critic.")
    fitted = vlm._fit(frames)
    visual_tokens = len(fitted) // 2 * (fitted.shape[1] // 28) * (fitted.shape[2] // 28)
    settings = GenerationSettings(**{**CRITIC_SETTINGS.__dict__, "max_new_tokens": 256, "min_new_tokens": 256, "trials": 5})
    params = sum(p.numel() for p in model.parameters()) / 1e9
    report("vlm_setup", params_B=round(params, 3), built_s=round(built, 1), visual_tokens=visual_tokens,
           frames=len(fitted), frame_size=list(fitted.shape[1:3]), new_tokens=256, trials=5)
    vlm.generate([prompt], GenerationSettings(temperature=0.6, max_new_tokens=4, trials=2))  # warm-up
    # Each row pins every switch, so its label is exactly what ran (the defaults have all switches on since the
    # speed-up round; an unpinned "shared prefill" row silently measured all of them). Ratios are like for like:
    # the same script, process, model and video.
    only_shared = dict(static_decode=False, cuda_graphs=False, device_preprocess=False, batched_vision=False)
    rows = (("num_return_sequences (encode + prefill per trial), every other switch off",
             VLMSpeedups(share_prefill=False, **only_shared)),
            ("shared prefill only, every other switch off", VLMSpeedups(share_prefill=True, **only_shared)),
            ("default switches (all on)", VLMSpeedups()))
    baseline = None
    for label, speedups in rows:
        vlm.configure(speedups)
        torch.cuda.reset_peak_memory_stats()
        seconds, texts = timed(lambda: vlm.generate([prompt], settings))
        baseline = baseline or seconds
        report(f"vlm_critique[{label}]", seconds=round(seconds, 2), speedup_vs_first_row=round(baseline / seconds, 2),
               trials=len(texts[0]), peak_GiB=round(torch.cuda.max_memory_allocated() / 2**30, 1))
    # One decode step: the floor is reading the 15 GB of weights once (~5 ms at 3 TB/s).
    inputs = processor(text=["hello"], return_tensors="pt").to("cuda")
    step, _ = timed(lambda: model.generate(**inputs, max_new_tokens=65, min_new_tokens=65, do_sample=False), repeats=2)
    first, _ = timed(lambda: model.generate(**inputs, max_new_tokens=1, min_new_tokens=1, do_sample=False), repeats=2)
    report("vlm_decode_step", ms=round((step - first) / 64 * 1000, 1))
    del model, vlm
    torch.cuda.empty_cache()


# --- SigLIP video embedder --------------------------------------------------------------------------


def bench_embedder(args) -> None:
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    from cosmos_assets.models.embedders import SiglipVideoEmbedder

    config = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                                image_size=384, patch_size=14)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = SiglipVisionModel(config).eval()
    torch.set_default_dtype(torch.float32)
    processor = SiglipImageProcessor(size={"height": 384, "width": 384})
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (8, 720, 1280, 3), dtype=np.uint8) for _ in range(args.embed_clips)]
    frames = sum(len(c) for c in clips)
    checkpoint = random_checkpoint("random SigLIP so400m-patch14-384 vision tower")
    naive = SiglipVideoEmbedder(model, processor, checkpoint, batch_frames=8, preprocess="processor")
    batched = SiglipVideoEmbedder(model, processor, checkpoint, batch_frames=128, preprocess="torch")
    naive.embed_videos(clips[:2]), batched.embed_videos(clips[:2])  # warm-up
    seconds_naive, a = timed(lambda: [naive.embed_videos([clip]) for clip in clips])
    seconds_ours, b = timed(lambda: batched.embed_videos(clips))
    agreement = float((np.concatenate([r.vectors for r in a]) * b.vectors).sum(1).min())
    report("embedder", params_B=round(sum(p.numel() for p in model.parameters()) / 1e9, 3), clips=len(clips), frames=frames,
           naive_per_clip_fps=round(frames / seconds_naive, 1), batched_device_preprocess_fps=round(frames / seconds_ours, 1),
           speedup=round(seconds_naive / seconds_ours, 2), min_cosine_between_variants=round(agreement, 4))
    del model
    torch.cuda.empty_cache()


# --- Cosmos generators --------------------------------------------------------------------------------


def bench_generator(kind: str, args) -> None:
    from PIL import Image

    from cosmos_assets.models.generator import GenerationRequest, VideoGenerator, defaults_for, edge_control
    from cosmos_assets.models.tiny_generators import build_random_generator

    start = time.perf_counter()
    pipe = build_random_generator(kind, "2B", "cuda", torch.bfloat16)
    built = time.perf_counter() - start
    params = {name: round(sum(p.numel() for p in m.parameters()) / 1e9, 3)
              for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (93, 432, 768, 3), dtype=np.uint8)
    step_ends: list[float] = []

    def on_step(pipeline, index, timestep, kwargs):
        torch.cuda.synchronize()
        step_ends.append(time.perf_counter())
        return kwargs

    if kind == "transfer2.5":  # the in-memory pipeline holds its ControlNet already: call it as the generator would
        def run():
            return pipe(controls=[Image.fromarray(f) for f in edge_control(frames)], prompt="a car on a highway in the rain",
                        height=432, width=768, num_frames=93, num_frames_per_chunk=93, num_inference_steps=args.steps,
                        output_type="np", generator=torch.Generator("cuda").manual_seed(0),
                        callback_on_step_end=on_step).frames[0]
    else:
        generator = VideoGenerator(kind, random_checkpoint(f"random {kind}-2B"), pipe, torch.device("cuda"), torch.bfloat16,
                                   defaults_for(kind, num_frames=93, height=432, width=768, steps=args.steps))
        original = type(pipe).__call__

        def with_step_timer(self, *a, **kw):
            kw.setdefault("callback_on_step_end", on_step)
            return original(self, *a, **kw)

        type(pipe).__call__ = with_step_timer

        def run():
            return generator.generate(GenerationRequest(prompt="a car on a highway in the rain", seed=0,
                                                        conditioning_frames=frames)).frames
    torch.cuda.reset_peak_memory_stats()
    call_start = time.perf_counter()
    seconds, video = timed(run)
    steps = np.diff([call_start] + step_ends)
    per_step = float(np.median(steps[1:])) if len(steps) > 1 else float(steps[0])
    defaults = defaults_for(kind)
    report(kind, built_s=round(built, 1), params_B=params, steps_run=args.steps, total_s=round(seconds, 2),
           median_step_s=round(per_step, 3), default_steps=defaults.steps,
           estimated_default_video_s=round(seconds + per_step * (defaults.steps - args.steps), 1),
           output_shape=list(np.asarray(video).shape), peak_GiB=round(torch.cuda.max_memory_allocated() / 2**30, 1))
    del pipe
    torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default="vlm,embedder,predict2,transfer2.5")
    parser.add_argument("--out", default="bench/out/gpu_backends.json")
    parser.add_argument("--steps", type=int, default=5, help="denoising steps run per generator (the rest is estimated)")
    parser.add_argument("--vlm-frames", type=int, default=94)
    parser.add_argument("--vlm-total-pixels", type=int, default=2 * 8192 * 28 * 28, help="about 8k visual tokens")
    parser.add_argument("--embed-clips", type=int, default=32)
    args = parser.parse_args()
    report("device", card=torch.cuda.get_device_name(0), torch=torch.__version__,
           transformers=__import__("transformers").__version__, diffusers=__import__("diffusers").__version__)
    parts = {"vlm": bench_vlm, "embedder": bench_embedder,
             "predict2": lambda a: bench_generator("predict2", a), "transfer2.5": lambda a: bench_generator("transfer2.5", a)}
    for name in args.parts.split(","):
        try:
            parts[name](args)
        except Exception as error:  # one broken part must not hide the others' figures
            report(f"{name}_error", error=f"{error.__class__.__name__}: {error}", trace=traceback.format_exc()[-2500:])
        torch.cuda.empty_cache()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(RESULTS, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
