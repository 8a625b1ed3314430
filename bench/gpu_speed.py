"""Issue 8 (GPU speed): each speed-up of the generator and the VLM critic side by side with the default path, in
one process on one GPU, at real architecture size with random weights (speed does not depend on weight values),
through the classes the assets use (``VideoGenerator``, ``TransformersVLM``) with their switches.

    python bench/gpu_speed.py --parts vlm,predict2 --out $OUT/gpu_speed.json

Prints one JSON line per measurement (the last lines are a summary table) and writes them all to --out.

vlm       Reason1-7B (= Qwen2.5-VL-7B) critique of one 94-frame 720p video (~7k visual tokens), 5 trials x 256
          new tokens: default (shared prefill through ``generate``), then each switch added in turn; then 4 videos
          in one call. Numerics: the static decode's logits (CUDA graph) against one full forward of the same tokens.
predict2  Predict2-2B Video2World, 480p (432x768), 93 frames, 35 steps with CFG: one transformer pass per variant
          (median of 3), its output against the default's and against an fp32 run of the default; then whole
          videos through ``VideoGenerator`` with all switches on and with all off, frames compared.
cosmos3   Issue 17: the Cosmos 3 Generators (Cosmos3-Edge, the smallest, and Cosmos3-Nano) through diffusers'
          Cosmos3OmniPipeline as it is, text-to-video at their default setting (480p tier 480x832, 189 frames at 24 fps,
          35 steps, guidance 6 with CFG), beside Predict2-2B Video2World (480p 432x768, 93 frames, 35 steps, guidance 7)
          through its plain pipeline in the same process. Each runs --cosmos3-steps steps with a timer on every step;
          a 35-step video is extrapolated as the time outside the steps (VAE encode / decode) + 35 x the median step
          after the first.
"""

from __future__ import annotations

import argparse
import gc
import json
from dataclasses import replace
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_backends import random_checkpoint, reason1_7b_config  # noqa: E402

RESULTS: dict = {}
START = time.perf_counter()


def report(name: str, **values) -> None:
    RESULTS[name] = values
    print(json.dumps({name: values}, default=str), flush=True)


def elapsed() -> float:
    return time.perf_counter() - START


DEVICE = "cuda"  # --smoke: "cpu" with tiny sizes, to check this script without a GPU


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def wall(fn):
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - start, result


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 1) if DEVICE == "cuda" else None


def reset_peak() -> None:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def errors(out: torch.Tensor, ref: torch.Tensor) -> dict:
    out, ref = out.double(), ref.double()
    return {"rel_l2": float((out - ref).norm() / ref.norm()), "max_abs_over_max_ref": float((out - ref).abs().max() / ref.abs().max()),
            "finite": bool(torch.isfinite(out).all())}


# --- VLM critic ------------------------------------------------------------------------------------------


def bench_vlm(args) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from cosmos_assets.models.tiny_tokenizer import build_qwen_tokenizer
    from cosmos_assets.models.vlm import (CRITIC_SETTINGS, GenerationSettings, TransformersVLM, VideoPrompt, VideoSizing,
                                          VLMSpeedups)

    tokenizer = build_qwen_tokenizer()
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
                                    tokenizer=tokenizer, chat_template=tokenizer.chat_template)
    torch.manual_seed(0)
    if args.smoke:
        from cosmos_assets.models.tiny_generators import TINY_QWEN, qwen_text_encoder

        model = qwen_text_encoder(TINY_QWEN, tokenizer).eval()
    else:
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda"):
            model = Qwen2_5_VLForConditionalGeneration(reason1_7b_config(tokenizer)).eval()
        torch.set_default_dtype(torch.float32)
    vlm = TransformersVLM(model, processor, random_checkpoint("random Qwen2.5-VL-7B (Cosmos-Reason1-7B architecture)"),
                          VideoSizing(total_pixels=args.vlm_total_pixels))
    vlm.record_timings = True
    rng = np.random.default_rng(0)
    height, width = (720, 1280) if not args.smoke else (72, 128)
    videos = [rng.integers(0, 256, (args.vlm_frames, height, width, 3), dtype=np.uint8) for _ in range(args.vlm_batch)]
    question = "Does the video contain any anomalies or artifacts? Answer in <answer></answer>."
    prompts = [VideoPrompt(v, 16.0, question, "You are a video critic.") for v in videos]
    fitted = vlm._fit(videos[0])
    new = 256 if not args.smoke else 16
    settings = GenerationSettings(**{**CRITIC_SETTINGS.__dict__, "max_new_tokens": new, "min_new_tokens": new, "trials": 5})
    report("vlm_setup", params_B=round(sum(p.numel() for p in model.parameters()) / 1e9, 3), frames=len(fitted),
           frame_size=list(fitted.shape[1:3]), visual_tokens=len(fitted) // 2 * (fitted.shape[1] // 28) * (fitted.shape[2] // 28),
           trials=5, new_tokens=256, attn=model.config.get_text_config()._attn_implementation,
           vision_attn=model.config.vision_config._attn_implementation)
    off = VLMSpeedups(share_prefill=True, static_decode=False, cuda_graphs=False, device_preprocess=False, batched_vision=False)
    vlm.configure(off)
    vlm.generate(prompts[:1], GenerationSettings(temperature=0.6, max_new_tokens=4, trials=2))  # warm-up
    steps = [("default (shared prefill, generate)", off),
             ("+ device preprocessing", VLMSpeedups(static_decode=False, cuda_graphs=False, batched_vision=False)),
             ("+ batched vision windows", VLMSpeedups(static_decode=False, cuda_graphs=False)),
             ("+ static-cache decode (eager)", VLMSpeedups(cuda_graphs=False)),
             ("+ CUDA graph decode (all on)", VLMSpeedups())]
    table = []
    for label, switches in steps:
        vlm.configure(switches)
        # The default runs twice: its first long decode pays one-time costs. The graph's first run includes its capture.
        runs = 2 if (switches.cuda_graphs or switches == off) else 1
        first = None
        for run in range(runs):
            reset_peak()
            seconds, texts = wall(lambda: vlm.generate(prompts[:1], settings))
            first = seconds if first is None else first
        row = dict(seconds=round(seconds, 2), first_call_s=round(first, 2), trials=len(texts[0]), phases=vlm.last_timings,
                   decoder=vlm.decoder.last if switches.static_decode else None,
                   peak_GiB=peak_gib())
        if switches.static_decode and vlm.last_timings:
            row["decode_step_ms"] = round(vlm.last_timings["decode_s"] / (new - 1) * 1000, 2)
        report(f"vlm[{label}]", **row)
        table.append((label, seconds))
    decode_breakdown(vlm, settings)
    if args.vlm_batch > 1:
        vlm.configure(VLMSpeedups())
        for run in range(2):
            seconds, texts = wall(lambda: vlm.generate(prompts, settings))
        report(f"vlm[{args.vlm_batch} videos in one call, all on]", seconds=round(seconds, 2),
               per_video_s=round(seconds / args.vlm_batch, 2), texts=[len(t) for t in texts], phases=vlm.last_timings,
               decoder=vlm.decoder.last)
        table.append((f"{args.vlm_batch} videos in one call, per video", seconds / args.vlm_batch))
    base = table[0][1]
    report("vlm_summary", **{label: f"{s:.2f} s ({base / s:.2f}x)" for label, s in table})
    vlm_numerics(vlm, prompts[0], settings)
    del vlm, model
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def decode_breakdown(vlm, settings) -> None:
    """Where a decode step's time goes: the captured model step alone, and the sampling alone."""
    from cosmos_assets.models.vlm_speedups import _next_tokens

    state = vlm.decoder.states[next(reversed(vlm.decoder.states))]
    row = {"rows": state.rows, "cache_length": state.length}
    with torch.inference_mode():
        position = state.kv.position.clone()
        if state.graph is not None:
            seconds, _ = wall(lambda: [state.graph.replay() for _ in range(32)])
            row["graph_replay_ms"] = round(seconds / 32 * 1000, 2)
        state.kv.position.copy_(position)
        eos = torch.tensor([0], device=DEVICE)
        logits = state.logits.clone()
        sampling = vlm._sampling(settings)
        seconds, _ = wall(lambda: [_next_tokens(logits, None, sampling, 300, eos) for _ in range(32)])
        row["sampling_ms"] = round(seconds / 32 * 1000, 2)
    report("vlm_decode_breakdown", **row)


def vlm_numerics(vlm, prompt, settings) -> None:
    """Teacher-forced check: logits of the static, graph-captured decode step for 24 fixed tokens against one full
    forward of prompt + tokens; and the prefill logits with and without the device preprocessing / batched windows."""
    from transformers.video_utils import VideoMetadata

    from cosmos_assets.models.vlm_speedups import _DecodeState
    from cosmos_assets.models.vlm import VLMSpeedups, _messages

    model, processor = vlm.model, vlm.processor
    text = processor.apply_chat_template(_messages(prompt, {"type": "video"}), tokenize=False, add_generation_prompt=True)

    def inputs_for(switches):
        vlm.configure(switches)
        video = vlm._fit_on_device(prompt.frames) if switches.device_preprocess else vlm._fit(prompt.frames)
        extra = {"device": DEVICE} if switches.device_preprocess else {}
        return processor(text=[text], videos=[video], return_tensors="pt", videos_kwargs={
            "video_metadata": [VideoMetadata(total_num_frames=len(video), fps=prompt.fps)], "do_resize": False,
            "cap_pixels_per_frame": True, **extra}).to(DEVICE)

    with torch.inference_mode():
        plain = inputs_for(VLMSpeedups(device_preprocess=False, batched_vision=False))
        ref_first = model(**plain, logits_to_keep=1).logits[:, -1].float()
        vlm.configure(VLMSpeedups(device_preprocess=False, batched_vision=True))
        windows_first = model(**plain, logits_to_keep=1).logits[:, -1].float()
        on_device = inputs_for(VLMSpeedups())
        device_first = model(**on_device, logits_to_keep=1).logits[:, -1].float()
        pixel_gap = (plain["pixel_values_videos"].float() - on_device["pixel_values_videos"].float()).abs()
        report("vlm_numerics_prefill", batched_windows_vs_per_window=errors(windows_first, ref_first),
               device_preprocess_vs_pil=errors(device_first, ref_first),
               pixel_values_mean_abs_gap=float(pixel_gap.mean()), pixel_values_max_abs_gap=float(pixel_gap.max()))

        # Teacher forcing through the decode step (static cache, masks, M-RoPE positions, graph replay).
        sentence = processor.tokenizer(" The car drives on a wet road at night; nothing in the video looks wrong or unusual.",
                                       add_special_tokens=False)["input_ids"]
        forced = torch.tensor([(sentence * 24)[:24]], device=DEVICE)
        full = {**plain, "input_ids": torch.cat([plain["input_ids"], forced], 1),
                "attention_mask": torch.cat([plain["attention_mask"], torch.ones_like(forced)], 1)}
        if "mm_token_type_ids" in plain:
            full["mm_token_type_ids"] = torch.cat([plain["mm_token_type_ids"], torch.zeros_like(forced)], 1)
        ref = model(**full, logits_to_keep=25).logits[0].float()  # row i+1: the prediction after forced token i
        out = model(**plain, use_cache=True, logits_to_keep=1)
        prompt_mask = plain["attention_mask"]
        start = prompt_mask.long().sum(-1) + model.model.rope_deltas.view(-1)
        results = {}
        for graph in ((False, True) if DEVICE == "cuda" else (False,)):
            state = _DecodeState(model, 1, 8192 + 512, use_graph=graph)
            state.load(out.cache, 1, prompt_mask, start)
            logits = []
            for i in range(24):
                state.ids.copy_(forced[:, i:i + 1])
                state.step()
                logits.append(state.logits[0].clone())
            got = torch.stack(logits)
            results["cuda_graph" if graph else "eager"] = {
                **errors(got, ref[1:]), "captured": state.graph is not None, "graph_error": state.graph_error}
            del state
        other_rows = errors(ref[2:], ref[1:-1])  # how far apart two different positions' logits are: the scale of a real error
        report("vlm_numerics_decode", static_vs_full_forward=results, logits_of_neighbouring_positions=other_rows)


# --- Predict2 generator -------------------------------------------------------------------------------------


def attention_diagnostic(heads: int, tokens: int, head_dim: int, dtype) -> str:
    """Each SDPA kernel on one self-attention of the transformer (its layout: [B, S, H, D] transposed), with
    why a kernel could not run; returns the fastest choice whose output agrees with flash."""
    import warnings

    from torch.nn.attention import SDPBackend, sdpa_kernel

    from cosmos_assets.models.generator_speedups import attention_backend

    generator = torch.Generator(DEVICE).manual_seed(0)
    q, k, v = (torch.randn(1, tokens, heads, head_dim, device=DEVICE, dtype=dtype, generator=generator).transpose(1, 2)
               for _ in range(3))
    flops = 4 * tokens * tokens * head_dim * heads
    from contextlib import nullcontext

    candidates = {"torch default order": nullcontext,
                  "flash": lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION]),
                  "efficient": lambda: sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]),
                  "cudnn-only": lambda: sdpa_kernel([SDPBackend.CUDNN_ATTENTION]),
                  "cudnn": lambda: attention_backend("cudnn")}
    row, times = {}, {}
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        reference = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        cudnn_out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for name, context in candidates.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with context():
                    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
                    seconds, _ = wall(lambda: [torch.nn.functional.scaled_dot_product_attention(q, k, v) for _ in range(5)])
                reference = out if name == "flash" else reference
                ms = seconds / 5 * 1000
                times[name] = ms
                row[name] = {"ms": round(ms, 2), "TFLOPs": round(flops / ms / 1e9, 0), "vs_flash": errors(out.float(), reference.float()),
                             "same_bits_as_cudnn": bool(torch.equal(out, cudnn_out))}
            except Exception as error:
                row[name] = {"error": f"{error.__class__.__name__}: {str(error)[:300]}"}
            if caught:
                row[name]["warnings"] = [str(w.message)[:400] for w in caught][:4]
    from cosmos_assets.models import generator_speedups

    if generator_speedups.flash4_available(DEVICE):  # FlashAttention-4 in the [B, S, H, D] layout it takes
        try:
            q4, k4, v4 = (t.transpose(1, 2).contiguous() for t in (q, k, v))
            first, out = wall(lambda: generator_speedups.flash4_attention(q4, k4, v4))  # the first call compiles its kernel
            seconds, _ = wall(lambda: [generator_speedups.flash4_attention(q4, k4, v4) for _ in range(5)])
            ms = seconds / 5 * 1000
            out = out.transpose(1, 2)
            row["flash4"] = {"ms": round(ms, 2), "TFLOPs": round(flops / ms / 1e9, 0), "first_call_s": round(first, 1),
                             "vs_flash": errors(out.float(), reference.float()),
                             "vs_cudnn": errors(out.float(), cudnn_out.float())}
        except Exception as error:
            row["flash4"] = {"error": f"{error.__class__.__name__}: {str(error)[:600]}", "trace": traceback.format_exc()[-1500:]}
    else:
        row["flash4"] = {"error": "flash_attn.cute is not installed here"}
    try:
        direct = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, False, 0.0, False, False)[0]
        seconds, _ = wall(lambda: [torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, False, 0.0, False, False)
                                   for _ in range(5)])
        row["aten cudnn op"] = {"ms": round(seconds / 5 * 1000, 2), "vs_flash": errors(direct.float(), reference.float())}
    except Exception as error:
        row["aten cudnn op"] = {"error": f"{error.__class__.__name__}: {str(error)[:300]}"}
    import inspect

    row["set_priority_supported"] = "set_priority" in inspect.signature(sdpa_kernel).parameters
    row["cudnn_sdp_enabled"] = torch.backends.cuda.cudnn_sdp_enabled()
    usable = {name: ms for name, ms in times.items() if name in ("cudnn", "cudnn-only", "flash")
              and row[name].get("vs_flash", {}).get("rel_l2", 1) < 2e-2}
    best = min(usable, key=usable.get) if usable else "flash"
    row["chosen"] = best
    report("attention_kernels_one_self_attention", **row)
    return best



class _Captured(Exception):
    pass


def bench_predict2(args) -> None:
    from cosmos_assets.models.generator import GenerationRequest, VideoGenerator, defaults_for
    from cosmos_assets.models.generator_speedups import GeneratorSpeedups, apply_generator_speedups
    from cosmos_assets.models.tiny_generators import build_random_generator

    from cosmos_assets.models import tiny_generators

    start = time.perf_counter()
    torch.manual_seed(0)
    if args.smoke:
        pipe = build_random_generator("predict2", device="cpu", dtype=torch.float32, generator_size=tiny_generators.TINY,
                                      text_encoder_size=tiny_generators.TINY_T5, vae_config=tiny_generators.TINY_VAE)
    else:
        pipe = build_random_generator("predict2", "2B", "cuda", torch.bfloat16)
    dtype = torch.float32 if args.smoke else torch.bfloat16
    num_frames, height, width = (9, 48, 64) if args.smoke else (93, 432, 768)
    report("predict2_setup", built_s=round(time.perf_counter() - start, 1),
           params_B={k: round(sum(p.numel() for p in m.parameters()) / 1e9, 3) for k, m in pipe.components.items()
                     if isinstance(m, torch.nn.Module)})
    transformer = pipe.transformer
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    request = GenerationRequest(prompt="a car on a highway in the rain", seed=0, conditioning_frames=frames)

    def generator(speedups, steps=35):
        return VideoGenerator("predict2", random_checkpoint("random predict2-2B"), pipe, torch.device(DEVICE), dtype,
                              defaults_for("predict2", num_frames=num_frames, height=height, width=width, steps=steps,
                                           max_sequence_length=512 if not args.smoke else 32), speedups=speedups)

    # The inputs of one real transformer pass (the first conditional pass of a video).
    captured = {}

    def grab(module, a, kw):
        captured.update(kw)
        raise _Captured

    handle = transformer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        generator(GeneratorSpeedups.off(), steps=2).generate(request)
    except _Captured:
        pass
    finally:
        handle.remove()
    inputs = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in captured.items()}
    inputs["return_dict"] = False
    report("predict2_pass_inputs", **{k: (list(v.shape), str(v.dtype)) for k, v in inputs.items() if isinstance(v, torch.Tensor)})

    def one_pass():
        with torch.no_grad():  # as in the pipelines (a different grad mode would recompile the blocks)
            return transformer(**inputs)[0]

    def time_passes(repeats=3):
        one_pass()  # warm-up (and compilation)
        times = []
        for _ in range(repeats):
            seconds, out = wall(one_pass)
            times.append(seconds * 1000)
        return statistics.median(times), out

    config = transformer.config
    best = attention_diagnostic(config.num_attention_heads, inputs["hidden_states"][0, 0].numel() // 4,
                                config.attention_head_dim, dtype) if DEVICE == "cuda" else "default"
    from cosmos_assets.models.generator_speedups import flash4_available

    fast = GeneratorSpeedups()  # what the generator resource uses on a GPU
    # ``fast`` (attention "auto") runs FlashAttention-4 where it is installed; the cuDNN row is the path without it.
    flash4 = fast if flash4_available(DEVICE) else None
    cudnn = replace(fast, attention="cudnn")
    variants = [
        ("default (diffusers)", GeneratorSpeedups.off()),
        ("per-frame adaLN", GeneratorSpeedups(frame_adaln=True, attention="default", compile="off")),
        ("per-frame adaLN + compile, cuDNN attention", cudnn),
    ] + ([("all on: + FlashAttention-4 (the resource's GPU default)", flash4)] if flash4 else [])
    # The conditional and unconditional rows of one step as one batch of two: measured, and not worth doing (the
    # products are already large enough to fill the GPU; see GPU_RESULTS.md).
    pair_inputs = {k: (torch.cat([v, v]) if k in ("hidden_states", "timestep", "encoder_hidden_states", "condition_mask")
                       else v) for k, v in inputs.items()}

    def one_pair():
        with torch.no_grad():
            return transformer(**pair_inputs)[0]
    outputs, table = {}, []
    for label, speedups in variants:
        try:
            apply_generator_speedups(transformer, speedups, DEVICE)
            compile_s = None
            if speedups.resolved(DEVICE).compile == "on":
                compile_s, _ = wall(one_pass)
            ms, out = time_passes()
            state = transformer.__dict__.get("_cosmos_speedups") or {}
            outputs[label] = out.float()
            row = dict(ms_per_pass=round(ms, 1), video_estimate_s=round(ms * 70 / 1000, 1), first_call_s=
                       round(compile_s, 1) if compile_s else None, compile_error=state.get("compile_error"))
            if label != variants[0][0]:
                row["vs_default"] = errors(outputs[label], outputs[variants[0][0]])
            if speedups.compile != "off" or label == variants[-1][0]:  # both rows at once, for the compiled paths
                wall(one_pair)  # compiles the batch-of-two graph
                pair_times = [wall(one_pair)[0] * 1000 for _ in range(3)]
                row["ms_per_pair_as_batch_of_two"] = round(statistics.median(pair_times), 1)
                row["ms_per_pair_as_two_passes"] = round(2 * ms, 1)
            report(f"predict2_pass[{label}]", **row)
            table.append((label, ms))
        except Exception as error:
            report(f"predict2_pass_error[{label}]", error=f"{error.__class__.__name__}: {error}", trace=traceback.format_exc()[-2000:])
    base = table[0][1]
    report("predict2_pass_summary", **{label: f"{ms:.0f} ms ({base / ms:.2f}x)" for label, ms in table})

    # bf16 tolerance: the default's own distance to an fp32 run, against the fast path's.
    try:
        from diffusers import CosmosTransformer3DModel

        apply_generator_speedups(transformer, GeneratorSpeedups.off(), DEVICE)
        with torch.device(DEVICE):
            reference = CosmosTransformer3DModel(**transformer.config).float().eval()
        reference.load_state_dict(transformer.state_dict())
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.no_grad():
            ref = reference(**{k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                               for k, v in inputs.items()})[0].float()
        torch.backends.cuda.matmul.allow_tf32 = tf32
        del reference
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        report("predict2_numerics_vs_fp32", **{label: errors(out, ref) for label, out in outputs.items()})
    except Exception as error:
        report("predict2_numerics_error", error=f"{error.__class__.__name__}: {error}")
    outputs.clear()

    # The VAE decode of a video's latents, with cuDNN's convolution autotuning off and on.
    if DEVICE == "cuda":
        try:
            vae = pipe.vae
            latents = torch.randn(1, 16, (num_frames - 1) // 4 + 1, height // 8, width // 8, device=DEVICE, dtype=dtype)
            row = {}
            for benchmark in (False, True):
                torch.backends.cudnn.benchmark = benchmark
                with torch.no_grad():
                    first, _ = wall(lambda: vae.decode(latents, return_dict=False)[0])
                    again, _ = wall(lambda: vae.decode(latents, return_dict=False)[0])
                row[f"cudnn_benchmark={benchmark}"] = {"first_s": round(first, 2), "second_s": round(again, 2)}
            torch.backends.cudnn.benchmark = False
            with torch.no_grad():
                plain = vae.decode(latents, return_dict=False)[0]
                vae.to(memory_format=torch.channels_last_3d)
                first, _ = wall(lambda: vae.decode(latents, return_dict=False)[0])
                again, last = wall(lambda: vae.decode(latents, return_dict=False)[0])
                vae.to(memory_format=torch.contiguous_format)
            row["channels_last_3d"] = {"first_s": round(first, 2), "second_s": round(again, 2),
                                       "vs_contiguous": errors(last.float(), plain.float())}
            del plain, last
            video = torch.randn(1, 3, num_frames, height, width, device=DEVICE, dtype=dtype)
            with torch.no_grad():
                for n in (num_frames, 5):
                    seconds, _ = wall(lambda: vae.encode(video[:, :, :n]))
                    row[f"encode_{n}_frames_s"] = round(seconds, 2)
            report("predict2_vae_decode", **row)
        except Exception as error:
            report("predict2_vae_error", error=f"{error.__class__.__name__}: {error}")

    # Whole videos through VideoGenerator: all switches on (the resource's GPU default), then all off.
    step_ends: list[float] = []

    def on_step(pipeline, index, timestep, kwargs):
        sync()
        step_ends.append(time.perf_counter())
        return kwargs

    original = type(pipe).__call__

    def with_step_timer(self, *a, **kw):
        kw.setdefault("callback_on_step_end", on_step)
        return original(self, *a, **kw)

    type(pipe).__call__ = with_step_timer
    videos = {}
    # Video2World from the last 5 frames of a clip (2 latent frames), so that the transformer decides the other 22.
    request = GenerationRequest(prompt="a car on a highway in the rain", seed=0, conditioning_frames=frames[:5])
    configurations = {"flash4": ("all on (FlashAttention-4; the resource's GPU default)", flash4),
                      "cudnn": ("all on but cuDNN attention", cudnn),
                      "pipeline": ("cuDNN attention, the pipeline's own encode and postprocessing",
                                   replace(cudnn, conditioning_encode=False, device_postprocess=False)),
                      "off": ("default (all off)", GeneratorSpeedups.off())}
    configurations = [configurations[key] for key in args.videos.split(",") if configurations[key][1] is not None]
    for label, speedups in configurations:
        if label != configurations[0][0] and elapsed() > args.budget_s - 75:
            report("predict2_video_skipped", label=label, reason=f"{elapsed():.0f} s used of a {args.budget_s} s budget")
            continue
        if speedups.compile != "off":  # compilation (or a recompilation for another kernel) outside the timing
            warm, _ = wall(lambda: generator(speedups, steps=2).generate(request))
            report(f"predict2_video_warmup[{label}]", seconds=round(warm, 2))
        step_ends.clear()
        reset_peak()
        begin = time.perf_counter()
        seconds, video = wall(lambda: generator(speedups).generate(request))
        steps = np.diff([begin] + step_ends)
        videos[label] = video.frames
        report(f"predict2_video[{label}]", seconds=round(seconds, 2), median_step_s=round(float(np.median(steps[1:])), 3),
               first_step_s=round(float(steps[0]), 2), outside_steps_s=round(seconds - float(steps.sum()), 2),
               peak_GiB=peak_gib(), shape=list(video.frames.shape))
    type(pipe).__call__ = original
    labels = [label for label, _ in configurations]
    for first, second in zip([labels[0]] * (len(labels) - 1), labels[1:]):
        if first in videos and second in videos:
            a, b = videos[first].astype(np.int16), videos[second].astype(np.int16)
            mse = float(((a - b) ** 2).mean())
            report(f"predict2_video_frames[{first} vs {second}]", identical=bool(np.array_equal(a, b)),
                   mean_abs=float(np.abs(a - b).mean()), max_abs=int(np.abs(a - b).max()),
                   psnr_db=round(10 * np.log10(255**2 / mse), 1) if mse else None, std_of_frames=float(b.std()))
    del pipe


def timed_steps(pipe, steps: int, **call) -> dict:
    """One pipeline call of ``steps`` steps with a device-synchronised timer at the end of every step: the median
    step after the first, the time outside the steps, and the 35-step video they extrapolate to."""
    ends: list[float] = []

    def on_step(pipeline, index, timestep, kwargs):
        sync()
        ends.append(time.perf_counter())
        return kwargs

    reset_peak()
    sync()
    begin = time.perf_counter()
    pipe(num_inference_steps=steps, callback_on_step_end=on_step, **call)
    sync()
    total = time.perf_counter() - begin
    durations = np.diff([begin] + ends)
    median = float(np.median(durations[1:])) if len(durations) > 1 else float(durations[0])
    # The first step also carries the work before the loop (tokenising, VAE encode): counted as outside the steps.
    outside = total - median * len(durations)
    return {"steps_run": steps, "call_s": round(total, 2), "median_step_s": round(median, 3),
            "first_step_s": round(float(durations[0]), 2), "outside_steps_s": round(outside, 2),
            "video_35_steps_s_extrapolated": round(outside + 35 * median, 1), "peak_GiB": peak_gib()}


def bench_cosmos3(args) -> None:
    from PIL import Image

    from cosmos_assets.models import tiny_cosmos3, tiny_generators
    from cosmos_assets.models.tiny_tokenizer import build_qwen_tokenizer

    dtype = torch.float32 if args.smoke else torch.bfloat16
    steps = 2 if args.smoke else args.cosmos3_steps
    prompt = "a car drives along a wet highway at night while rain falls"
    variants = {"smoke": tiny_cosmos3.TINY_COSMOS3} if args.smoke else {
        name: tiny_cosmos3.REAL_SIZES[name] for name in args.cosmos3_variants.split(",")}
    frames, height, width = (9, 32, 64) if args.smoke else (189, 480, 832)
    for name, size in variants.items():
        start = time.perf_counter()
        torch.manual_seed(0)
        pipe = tiny_cosmos3.build_pipeline(size, build_qwen_tokenizer(), device=DEVICE, dtype=dtype)
        built = round(time.perf_counter() - start, 1)
        params = {k: round(sum(p.numel() for p in m.parameters()) / 1e9, 3) for k, m in pipe.components.items()
                  if isinstance(m, torch.nn.Module)}
        row = timed_steps(pipe, steps, prompt=prompt, num_frames=frames, height=height, width=width, fps=24,
                          guidance_scale=6.0, output_type="np", generator=torch.Generator(DEVICE).manual_seed(0))
        report(f"cosmos3_{name}", built_s=built, params_B=params, frames=frames, height=height, width=width, fps=24,
               dtype=str(dtype), weights="random", **row)
        del pipe
        gc.collect()  # the pipeline's modules hold reference cycles: without this its weights stay allocated
        if DEVICE == "cuda":
            torch.cuda.empty_cache()

    start = time.perf_counter()
    torch.manual_seed(0)
    if args.smoke:
        pipe = tiny_generators.build_random_generator(
            "predict2", device="cpu", dtype=dtype, generator_size=tiny_generators.TINY,
            text_encoder_size=tiny_generators.TINY_T5, vae_config=tiny_generators.TINY_VAE)
    else:
        pipe = tiny_generators.build_random_generator("predict2", "2B", DEVICE, dtype)
    built = round(time.perf_counter() - start, 1)
    frames, height, width = (9, 48, 64) if args.smoke else (93, 432, 768)
    source = np.random.default_rng(0).integers(0, 256, (5, height, width, 3), dtype=np.uint8)
    row = timed_steps(pipe, steps, prompt=prompt, video=[Image.fromarray(f) for f in source], num_frames=frames,
                      height=height, width=width, fps=16, guidance_scale=7.0, output_type="np",
                      generator=torch.Generator(DEVICE).manual_seed(0))
    report("cosmos3_beside_predict2_2b", built_s=built, frames=frames, height=height, width=width, fps=16,
           dtype=str(dtype), weights="random", conditioning_frames=5, **row)
    del pipe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default="vlm,predict2")
    parser.add_argument("--out", default="bench/out/gpu_speed.json")
    parser.add_argument("--budget-s", type=float, default=540, help="skip the default whole video past this")
    parser.add_argument("--vlm-frames", type=int, default=94)
    parser.add_argument("--vlm-batch", type=int, default=4)
    parser.add_argument("--vlm-total-pixels", type=int, default=2 * 8192 * 28 * 28)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks this script, times nothing")
    parser.add_argument("--cosmos3-steps", type=int, default=4, help="steps timed per model (extrapolated to 35)")
    parser.add_argument("--cosmos3-variants", default="edge,nano", help="Cosmos 3 sizes to time: edge, nano")
    parser.add_argument("--videos", default="flash4,cudnn,off",
                        help="whole videos to time, in order: flash4 (where installed), cudnn, pipeline, off")
    args = parser.parse_args()
    global DEVICE
    if args.smoke:
        DEVICE = "cpu"
        args.vlm_frames, args.vlm_total_pixels = 8, 8 * 16 * 28 * 28
    report("device", card=torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (smoke)", torch=torch.__version__,
           transformers=__import__("transformers").__version__, diffusers=__import__("diffusers").__version__,
           cudnn=torch.backends.cudnn.version() if DEVICE == "cuda" else None)
    parts = {"vlm": bench_vlm, "predict2": bench_predict2, "cosmos3": bench_cosmos3}
    for name in args.parts.split(","):
        try:
            parts[name](args)
        except Exception as error:  # one broken part must not hide the others' figures
            report(f"{name}_error", error=f"{error.__class__.__name__}: {error}", trace=traceback.format_exc()[-3000:])
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(RESULTS, indent=1, default=str) + "\n")
    for key in ("vlm_summary", "predict2_pass_summary"):
        if key in RESULTS:
            print(key, json.dumps(RESULTS[key], indent=1))
    print(f"total {elapsed():.0f} s")


if __name__ == "__main__":
    main()
