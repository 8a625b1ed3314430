"""Transfer 2.5-2B at real size (random weights) with one control against edge + depth + segmentation.

Per denoising step (the median of the timed steps, CFG on: every ControlNet and the transformer run for the prompt
and the negative prompt), 480p (432x768), 93 frames, one chunk. Rows, in one process on one GPU:

- ``plain``: diffusers' ``Cosmos2_5_TransferPipeline`` with the edge ControlNet (what a single-control request runs);
- ``weighted_1``: the same control through ``WeightedControlNets`` (weight 1): its latents are compared with
  ``plain``'s (bit for bit expected: it is the same call);
- ``weighted_3``: edge + depth + seg, three real-size ControlNets in the same loop (weights 0.5 / 0.9 / 0.9).

The ratio ``weighted_3 / plain`` per step is the figure of issue 16 (goal <= 1.6). ``--speedups default`` also
applies the generator's transformer fast path (``GeneratorSpeedups()``: torch.compile etc.) as ``VideoGenerator``
does; the ControlNets run diffusers' own forward either way.

    python bench/multi_control.py --steps 5 --out $OUT/multi_control.json
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
PROMPT = "a car on a highway in the rain"


def report(name: str, **values) -> None:
    RESULTS[name] = values
    print(json.dumps({name: values}, default=str), flush=True)


def control_frames(rng: np.random.Generator, frames: int, height: int, width: int) -> dict:
    """Control videos of the bench's size: Canny edges and blur of a random video, random depth and segmentation."""
    from PIL import Image

    from cosmos_assets.controls.extractors import segmentation_colours
    from cosmos_assets.models.generator import edge_control

    video = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    depth = np.repeat(rng.integers(0, 256, (frames, height, width, 1), dtype=np.uint8), 3, axis=-1)
    labels = rng.integers(0, 19, (frames, height // 16, width // 16))
    seg = segmentation_colours(np.kron(labels, np.ones((16, 16), dtype=labels.dtype)))
    as_pil = lambda v: [Image.fromarray(f) for f in v]  # noqa: E731
    return {"edge": as_pil(edge_control(video)), "depth": as_pil(depth), "seg": as_pil(seg)}


def run_rows(args, speedups_name: str) -> None:
    from diffusers import CosmosControlNetModel

    from cosmos_assets.controls.multi_controlnet import prepare_controls, weighted_pipeline
    from cosmos_assets.models.generator_speedups import GeneratorSpeedups, apply_generator_speedups
    from cosmos_assets.models.tiny_generators import build_random_generator

    start = time.perf_counter()
    device, dtype = (torch.device("cpu"), torch.float32) if args.size == "smoke" else (torch.device("cuda"), torch.bfloat16)
    if args.size == "smoke":  # the same code on this machine's CPU, at the tiny sizes, before spending GPU time
        from cosmos_assets.models.tiny_generators import TINY, TINY_QWEN, TINY_VAE

        pipe = build_random_generator("transfer2.5", device=device, dtype=dtype, generator_size=TINY,
                                      text_encoder_size=TINY_QWEN, vae_config=TINY_VAE)
    else:
        pipe = build_random_generator("transfer2.5", args.size, device, dtype)
    with torch.device(device):
        extra = {name: CosmosControlNetModel.from_config(pipe.controlnet.config).to(dtype).eval()
                 for name in ("depth", "seg")}
    controlnets = {"edge": pipe.controlnet, **extra}
    built = time.perf_counter() - start
    speedups = GeneratorSpeedups() if speedups_name == "default" else GeneratorSpeedups.off()
    resolved = apply_generator_speedups(pipe.transformer, speedups, device)
    weighted = weighted_pipeline(pipe, controlnets)
    frames = control_frames(np.random.default_rng(0), args.frames, args.height, args.width)
    params = {name: round(sum(p.numel() for p in m.parameters()) / 1e9, 3)
              for name, m in {"transformer": pipe.transformer, "controlnet": pipe.controlnet,
                              "text_encoder": pipe.text_encoder}.items()}
    step_ends: list[float] = []

    def on_step(pipeline, index, timestep, kwargs):
        synchronize()
        step_ends.append(time.perf_counter())
        return kwargs

    common = dict(prompt=PROMPT, height=args.height, width=args.width, num_frames=args.frames,
                  num_frames_per_chunk=args.frames, output_type="latent", callback_on_step_end=on_step)

    def call(which: str, steps: int):
        generator = torch.Generator(device).manual_seed(0)
        if which == "plain":
            return pipe(controls=frames["edge"], controls_conditioning_scale=1.0, num_inference_steps=steps,
                        generator=generator, **common).frames
        controls = [("edge", frames["edge"], 1.0)] if which == "weighted_1" else \
            [("edge", frames["edge"], 0.5), ("depth", frames["depth"], 0.9), ("seg", frames["seg"], 0.9)]
        first = prepare_controls(weighted, controls, height=args.height, width=args.width, num_frames=args.frames,
                                 frames_per_chunk=args.frames, seed=0, device=device)
        return weighted(controls=first, controls_conditioning_scale=1.0, num_inference_steps=steps, generator=generator,
                        **common).frames

    warm_start = time.perf_counter()
    call("plain", 2)  # kernels chosen, compiled blocks built: not part of any row
    call("weighted_3", 2)
    warm = time.perf_counter() - warm_start
    latents, per_step = {}, {}
    for which in ("plain", "weighted_1", "weighted_3"):
        step_ends.clear()
        synchronize()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        call_start = time.perf_counter()
        latents[which] = call(which, args.steps)
        synchronize()
        total = time.perf_counter() - call_start
        steps = np.diff(step_ends)  # step k ends at step_ends[k]: the first step also holds the prompt and VAE encodes
        per_step[which] = float(np.median(steps))
        report(f"{speedups_name}_{which}", median_step_s=round(per_step[which], 3),
               steps_s=[round(float(s), 3) for s in steps], total_s=round(total, 2),
               before_first_step_end_s=round(step_ends[0] - call_start, 2),
               peak_GiB=round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.type == "cuda" else None)
    report(f"{speedups_name}_summary", built_s=round(built, 1), warmup_s=round(warm, 1), params_B=params,
           speedups=str(resolved), frames=args.frames, size=f"{args.height}x{args.width}", steps=args.steps,
           ratio_3_controls_per_step=round(per_step["weighted_3"] / per_step["plain"], 3),
           ratio_weighted_1_per_step=round(per_step["weighted_1"] / per_step["plain"], 3),
           weighted_1_equals_plain=bool(torch.equal(latents["plain"], latents["weighted_1"])),
           goal="3 controls <= 1.6x one control per step")


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--frames", type=int, default=93)
    parser.add_argument("--height", type=int, default=432)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--speedups", default="off,default", help="off (diffusers as it is) and/or default (VideoGenerator's)")
    parser.add_argument("--size", default="2B", help="2B or 14B (real sizes, on the GPU), or smoke (tiny, on the CPU)")
    parser.add_argument("--out", default="bench/out/multi_control.json")
    args = parser.parse_args()
    report("device", card=torch.cuda.get_device_name(0) if args.size != "smoke" else "cpu", torch=torch.__version__,
           transformers=__import__("transformers").__version__, diffusers=__import__("diffusers").__version__)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.speedups.split(","):
        failure = attempt(run_rows, args, name)
        if failure:  # one broken row set must not hide the other's figures
            report(f"{name}_error", **failure)
        out.write_text(json.dumps(RESULTS, indent=1, default=str) + "\n")  # after each set: a timeout keeps the rest


def attempt(function, *args) -> dict | None:
    try:
        function(*args)
    except Exception as error:
        return {"error": f"{error.__class__.__name__}: {error}", "trace": traceback.format_exc()[-2500:]}
    finally:
        torch.cuda.empty_cache()
    return None


if __name__ == "__main__":
    main()
