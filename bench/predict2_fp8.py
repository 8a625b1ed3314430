"""Issue 18, item 3: Predict2 past the bf16 floor. The bf16 path (the generator's switches with no approximation: the
default before this bench) beside FP8 matrix products (``GeneratorSpeedups.fp8``), the first-block step cache
(``step_cache``, the default since) and both, in one process on one GPU, through ``VideoGenerator`` (the class the
assets use), with the Predict2-2B Video2World architecture and RANDOM weights.

    python bench/predict2_fp8.py --out $OUT/predict2_fp8.json      # --smoke: tiny sizes on the CPU, checks the script

Speed, at 480p (432x768, 93 frames, 35 steps with CFG, 5 conditioning frames):
  one transformer pass per variant (the pipeline's own inputs, median of 3; FP8's error against an fp32 run), and a
  whole video per variant (bf16, cache, fp8, fp8+cache) with a timer on every step and the cache's skipped passes.
  720p (704x1280): one pass and a 2-step video, extrapolated to 35 steps (outside the steps + 35 x the step), bf16 and
  fp8; with --full-720p also a whole 720p video with the resource's default switches (minutes of device time).
Quality, on a reduced fixed set (labelled in the JSON: 8 prompts x 2 seeds, 33 frames at 192x336, the same 35 steps,
  conditioning frames from the packaged sample videos): each variant's videos against the bf16 path's (PSNR over the
  generated frames, mean and min over videos; the Fréchet distance between their frames' EfficientNet-Lite0
  features) and the same numbers for the bf16 path with another attention kernel (the noise floor). A variant can
  become a default only if its mean PSNR is within 3 dB of the floor's.

Phases run in the order that compiles each (switches, shape) once: a change of attention kernel or of FP8 recompiles
the blocks for every shape. The JSON is rewritten after every measurement; past --budget-s the rest is skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gpu_speed  # noqa: E402  (report, wall, errors, peak memory: the helpers of the issue-8 bench)
from bench.gpu_backends import random_checkpoint  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "cosmos_assets" / "samples"
CLIPS = ("dashcam_solid_white_right.mp4", "bottle_conveyor.mp4", "asl_walk.mkv", "asl_book.mkv")
PROMPTS = (
    "A car drives along a wet highway at night, headlights reflecting on the asphalt.",
    "Bottles move along a conveyor belt in a bright factory while a robot arm picks one up.",
    "A person walks across a room and waves at the camera.",
    "A person opens a book on a table and turns a page.",
    "A delivery truck merges onto a busy motorway in light rain.",
    "A robotic gripper places a glass bottle into a crate on a production line.",
    "A person signs slowly in front of a plain wall, hands clearly visible.",
    "A person picks up a book, closes it and puts it back on the shelf.",
)
CONDITIONING = 5  # Predict2 Video2World continues from 5 frames (2 latent frames)
ROWS: list[tuple[str, str]] = []  # (section, line) for the closing table
START = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - START


def report(name: str, **values) -> None:
    gpu_speed.report(name, **values)


def save(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(gpu_speed.RESULTS, indent=1, default=str) + "\n")


def source_frames(index: int, height: int, width: int) -> np.ndarray:
    """The first ``CONDITIONING`` frames of a packaged sample clip (RGB, resized to the video's size): real content
    for the conditioning latents; later prompts start later in the clip."""
    import cv2

    capture = cv2.VideoCapture(str(SAMPLES / CLIPS[index % len(CLIPS)]))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 20 * (index // len(CLIPS)))
    frames = []
    while len(frames) < CONDITIONING:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (width, height), interpolation=cv2.INTER_AREA))
    capture.release()
    if len(frames) < CONDITIONING:
        raise RuntimeError(f"could not read {CONDITIONING} frames of {CLIPS[index % len(CLIPS)]}")
    return np.stack(frames)


@contextmanager
def step_timer(pipe):
    """The pipeline's calls get a device-synchronised timer at the end of every step; yields the list of step ends."""
    ends: list[float] = []
    original = type(pipe).__call__

    def on_step(pipeline, index, timestep, kwargs):
        gpu_speed.sync()
        ends.append(time.perf_counter())
        return kwargs

    def with_step_timer(self, *a, **kw):
        kw.setdefault("callback_on_step_end", on_step)
        return original(self, *a, **kw)

    type(pipe).__call__ = with_step_timer
    try:
        yield ends
    finally:
        type(pipe).__call__ = original


class Bench:
    def __init__(self, args) -> None:
        from cosmos_assets.models import tiny_generators
        from cosmos_assets.models.generator_speedups import GeneratorSpeedups

        self.args = args
        self.device = torch.device(gpu_speed.DEVICE)
        self.dtype = torch.float32 if args.smoke else torch.bfloat16
        start = time.perf_counter()
        torch.manual_seed(0)
        if args.smoke:
            self.pipe = tiny_generators.build_random_generator(
                "predict2", device="cpu", dtype=self.dtype, generator_size=tiny_generators.TINY,
                text_encoder_size=tiny_generators.TINY_T5, vae_config=tiny_generators.TINY_VAE)
        else:
            self.pipe = tiny_generators.build_random_generator("predict2", "2B", self.device, self.dtype)
        self.transformer = self.pipe.transformer
        # The reference: the resource's switches (GeneratorSpeedups' defaults) without the approximations.
        bf16 = replace(GeneratorSpeedups(), fp8="off", step_cache="off")
        resolved = bf16.resolved(self.device)
        # The floor: the bf16 path with another attention kernel (the same arithmetic, other rounding).
        floor_attention = "flash" if resolved.attention in ("cudnn", "flash4") else "efficient"
        thresholds = [float(t) for t in args.cache_thresholds.split(",")]
        cache = dict(step_cache="first_block", step_cache_threshold=thresholds[0])
        self.variants = {"bf16": bf16, "fp8": replace(bf16, fp8="on"), "cache": replace(bf16, **cache),
                         "fp8+cache": replace(bf16, fp8="on", **cache),
                         "floor": replace(bf16, attention=floor_attention),
                         "fp8 fast accumulation": replace(bf16, fp8="on", fp8_fast_accum=True),
                         "resource default": GeneratorSpeedups()}
        self.extra_caches = [f"cache@{t:g}" for t in thresholds[1:]]  # other thresholds: quality and 480p speed
        self.variants.update({name: replace(bf16, step_cache="first_block", step_cache_threshold=t)
                              for name, t in zip(self.extra_caches, thresholds[1:])})
        self.sizes = {"480p": (93, 432, 768), "720p": (93, 704, 1280), "quality": tuple(args.quality_size)}
        if args.smoke:
            self.sizes = {"480p": (9, 48, 64), "720p": (9, 64, 96), "quality": (9, 32, 48)}
        report("predict2_fp8_setup", built_s=round(time.perf_counter() - start, 1), weights="random",
               model="Predict2-2B Video2World architecture" if not args.smoke else "tiny (smoke)",
               bf16_resolved={"attention": resolved.attention, "compile": resolved.compile, "fp8": resolved.fp8},
               floor_attention=floor_attention, cache_thresholds=thresholds, sizes=self.sizes,
               steps=args.steps, guidance_scale=7.0, conditioning_frames=CONDITIONING)
        self.frames = {}
        self.pass_outputs: dict[str, torch.Tensor] = {}
        self.videos: dict[str, list[np.ndarray]] = {}
        self.cache_counts: dict[str, list[tuple[int, int]]] = {}

    def generator(self, speedups, size: str, steps: int | None = None):
        from cosmos_assets.models.generator import VideoGenerator, defaults_for

        frames, height, width = self.sizes[size]
        return VideoGenerator("predict2", random_checkpoint("random Predict2-2B Video2World"), self.pipe, self.device,
                              self.dtype, defaults_for("predict2", num_frames=frames, height=height, width=width,
                                                       steps=steps or self.args.steps,
                                                       max_sequence_length=32 if self.args.smoke else 512),
                              speedups=speedups)

    def request(self, size: str, index: int = 0, seed: int = 0):
        from cosmos_assets.models.generator import GenerationRequest

        _, height, width = self.sizes[size]
        key = (index, height, width)
        if key not in self.frames:
            self.frames[key] = source_frames(index, height, width)
        return GenerationRequest(prompt=PROMPTS[index % len(PROMPTS)], seed=seed, conditioning_frames=self.frames[key])

    def in_budget(self, what: str, needs_s: float) -> bool:
        if elapsed() + needs_s <= self.args.budget_s:
            return True
        report(f"skipped[{what}]", reason=f"{elapsed():.0f} s used, ~{needs_s:.0f} s more needed, budget {self.args.budget_s} s")
        return False

    # --- one transformer pass -----------------------------------------------------------------------------------

    def pass_inputs(self, size: str) -> dict:
        """The inputs of the first conditional transformer pass of a real pipeline call at ``size``."""
        from cosmos_assets.models.generator_speedups import GeneratorSpeedups

        captured = {}

        class Captured(Exception):
            pass

        def grab(module, a, kw):
            captured.update(kw)
            raise Captured

        handle = self.transformer.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.generator(GeneratorSpeedups.off(), size, steps=2).generate(self.request(size))
        except Captured:
            pass
        finally:
            handle.remove()
        inputs = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in captured.items()}
        return {**inputs, "return_dict": False}

    def time_pass(self, label: str, variant: str, inputs: dict, repeats: int = 3) -> dict:
        from cosmos_assets.models.generator_speedups import apply_generator_speedups

        apply_generator_speedups(self.transformer, self.variants[variant], self.device)

        def one_pass():
            with torch.no_grad():
                return self.transformer(**inputs)[0]

        first, _ = gpu_speed.wall(one_pass)  # compiles the blocks for this shape
        times, out = [], None
        for _ in range(repeats):
            seconds, out = gpu_speed.wall(one_pass)
            times.append(seconds * 1000)
        state = self.transformer.__dict__.get("_cosmos_speedups") or {}
        row = {"ms_per_pass": round(statistics.median(times), 1), "first_call_s": round(first, 1),
               "passes_70_s": round(statistics.median(times) * 70 / 1000, 1), "compile_error": state.get("compile_error")}
        self.pass_outputs[label] = out.float()
        return row

    def fp32_reference(self, inputs: dict) -> torch.Tensor:
        from diffusers import CosmosTransformer3DModel

        from cosmos_assets.models.generator_speedups import GeneratorSpeedups, apply_generator_speedups

        apply_generator_speedups(self.transformer, GeneratorSpeedups.off(), self.device)
        with torch.device(self.device):
            reference = CosmosTransformer3DModel(**self.transformer.config).float().eval()
        reference.load_state_dict(self.transformer.state_dict())
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.no_grad():
            out = reference(**{k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                               for k, v in inputs.items()})[0].float()
        torch.backends.cuda.matmul.allow_tf32 = tf32
        del reference
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return out

    # --- whole videos ---------------------------------------------------------------------------------------------

    def video(self, variant: str, size: str = "480p", steps: int | None = None, index: int = 0, seed: int = 0):
        from cosmos_assets.models.generator_speedups import step_cache_stats

        generator = self.generator(self.variants[variant], size, steps)
        with step_timer(self.pipe) as ends:
            gpu_speed.reset_peak()
            begin = time.perf_counter()
            seconds, video = gpu_speed.wall(lambda: generator.generate(self.request(size, index, seed)))
        durations = np.diff([begin] + ends)
        return seconds, durations, video, step_cache_stats(self.transformer)

    def timed_video(self, variant: str, warm: bool = True, size: str = "480p") -> None:
        if warm:  # one-time costs outside the timing (compilation for this shape, VAE kernels)
            self.video(variant, size, steps=1)
        seconds, durations, video, cache = self.video(variant, size)
        row = {"seconds": round(seconds, 2), "median_step_s": round(float(np.median(durations[1:])), 3),
               "first_step_s": round(float(durations[0]), 2),
               "outside_steps_s": round(seconds - float(durations.sum()), 2), "peak_GiB": gpu_speed.peak_gib(),
               "approximations": video.settings["approximations"], "shape": list(video.frames.shape)}
        if cache:
            row["step_cache_changes"] = cache["changes"]
        report(f"video_{size}[{variant}]", **row)
        ROWS.append((f"{size} video", f"{variant}: {seconds:.1f} s" + (f" ({cache['skipped']}/{cache['passes']} passes cached)"
                                                                   if cache else "")))

    def extrapolated_720p(self, variant: str, inputs: dict) -> None:
        """One 720p pass (median of 2 after the compiling one) and a 2-step video, extrapolated to the full steps."""
        row = self.time_pass(f"720p {variant}", variant, inputs, repeats=2)
        seconds, durations, video, _ = self.video(variant, "720p", steps=2)
        step = float(durations[-1])  # the second step: the first also holds the text and conditioning encodes
        outside = seconds - step * len(durations)
        row.update(video_2_steps_s=round(seconds, 2), step_s=round(step, 3), outside_steps_s=round(outside, 2),
                   video_s_extrapolated=round(outside + self.args.steps * step, 1), peak_GiB=gpu_speed.peak_gib(),
                   shape=list(video.frames.shape))
        report(f"video_720p_extrapolated[{variant}]", **row)
        ROWS.append(("720p video (extrapolated)", f"{variant}: {row['video_s_extrapolated']:.1f} s"))

    # --- quality -------------------------------------------------------------------------------------------------

    def quality_set(self, variant: str) -> None:
        """The fixed set (prompts x seeds) at the quality size; keeps the frames for the comparisons."""
        self.video(variant, "quality", steps=1)  # compilation for this shape outside the timing
        videos, counts = [], []
        begin = time.perf_counter()
        for index in range(self.args.prompts):
            for seed in range(self.args.seeds):
                _, _, video, cache = self.video(variant, "quality", index=index, seed=seed)
                videos.append(video.frames)
                if cache:
                    counts.append((cache["skipped"], cache["passes"]))
        self.videos[variant] = videos
        self.cache_counts[variant] = counts
        report(f"quality_set[{variant}]", videos=len(videos), seconds=round(time.perf_counter() - begin, 1),
               cached_passes=f"{sum(s for s, _ in counts)}/{sum(p for _, p in counts)}" if counts else None)

    def compare(self) -> None:
        from cosmos_assets.models.embedders import load_efficientnet
        from cosmos_assets.models.feature_spaces import EFFICIENTNET_SPACE, frechet_distance

        if "bf16" not in self.videos:
            return
        embedder = load_efficientnet(self.device)
        generated = {v: [video[CONDITIONING:] for video in videos] for v, videos in self.videos.items()}
        features = {v: embedder.frame_features(videos) for v, videos in generated.items()}
        reference = self.videos["bf16"]
        seeds = self.args.seeds
        table = {}
        for variant, videos in self.videos.items():
            if variant == "bf16":
                continue
            psnr_generated = [psnr(a[CONDITIONING:], b[CONDITIONING:]) for a, b in zip(videos, reference)]
            psnr_all = [psnr(a, b) for a, b in zip(videos, reference)]
            # Identical videos have no PSNR (infinite): counted apart, the means are over the others.
            finite = [p for p in psnr_generated if np.isfinite(p)]
            finite_all = [p for p in psnr_all if np.isfinite(p)]
            table[variant] = {
                "psnr_db_mean": round(float(np.mean(finite)), 2) if finite else None,
                "psnr_db_min": round(float(np.min(finite)), 2) if finite else None,
                "identical_videos": len(psnr_generated) - len(finite),
                "psnr_db_mean_all_frames": round(float(np.mean(finite_all)), 2) if finite_all else None,
                "mean_abs_grey_levels": round(float(np.mean([np.abs(a.astype(np.int16) - b).mean()
                                                              for a, b in zip(videos, reference)])), 3),
                "frechet_distance": round(frechet_distance(features[variant], features["bf16"]), 4),
                "cached_passes": (f"{sum(s for s, _ in self.cache_counts[variant])}/"
                                  f"{sum(p for _, p in self.cache_counts[variant])}") if self.cache_counts[variant] else None}
        # The scale of a real difference: the bf16 path's seed-0 videos against its seed-1 videos (other samples).
        scale = {}
        if seeds > 1:
            by_seed = [embedder.frame_features([v for i, v in enumerate(generated["bf16"]) if i % seeds == s])
                       for s in (0, 1)]
            scale["frechet_distance_bf16_seed0_vs_seed1"] = round(frechet_distance(*by_seed), 4)
        frames_std = float(np.mean([v[CONDITIONING:].std() for v in reference]))
        floor = table.get("floor")
        verdict = {}
        if floor and floor["psnr_db_mean"] is not None:
            for variant, row in table.items():
                if variant != "floor":
                    within = row["psnr_db_mean"] is None or row["psnr_db_mean"] >= floor["psnr_db_mean"] - 3
                    verdict[variant] = ("within 3 dB of the floor: may be a default" if within else
                                        "more than 3 dB below the floor: stays a switch, off by default")
        frames, height, width = self.sizes["quality"]
        report("quality", against="bf16", feature_space=EFFICIENTNET_SPACE.label, weights="random",
               set=f"{self.args.prompts} prompts x {seeds} seeds, {frames} frames at {height}x{width}, "
                   f"{self.args.steps} steps, CFG 7, {CONDITIONING} conditioning frames from the packaged samples; "
                   f"PSNR and features over the {frames - CONDITIONING} generated frames",
               table=table, reference_scale=scale, bf16_frames_std=round(frames_std, 2), verdict=verdict)
        for variant, row in table.items():
            level = (f"PSNR {row['psnr_db_mean']:.1f} dB (min {row['psnr_db_min']:.1f})" if row["psnr_db_mean"] is not None
                     else "identical")
            ROWS.append(("quality vs bf16", f"{variant}: {level}, FD {row['frechet_distance']:.3f}"
                         + (f", cached {row['cached_passes']}" if row["cached_passes"] else "")))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


def run(bench: Bench, args) -> None:
    from cosmos_assets.models.generator_speedups import fp8_unsupported

    reason = fp8_unsupported(bench.device)
    report("fp8_support", runs_here=reason is None, reason=reason)
    want = set(args.parts.split(","))
    inputs = bench.pass_inputs("480p")
    report("pass_inputs_480p", **{k: list(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor)})

    def phase(name: str, needs_s: float, work) -> None:
        if name.split(":")[0] not in want or not bench.in_budget(name, needs_s):
            return
        try:
            work()
        except Exception as error:  # one failed phase must not hide the others' figures
            report(f"error[{name}]", error=f"{error.__class__.__name__}: {error}", trace=traceback.format_exc()[-2500:])
        save(args.out)

    # A: the bf16 path's compiled blocks (and the cache, which runs them).
    def bf16_pass():
        row = bench.time_pass("bf16", "bf16", inputs)
        report("pass_480p[bf16]", **row)
        ROWS.append(("480p pass", f"bf16: {row['ms_per_pass']:.0f} ms"))
        if args.fp32_reference:  # ~15 s of device time; bf16 against fp32 is in GPU_RESULTS.md (issue 8)
            bench.pass_outputs["fp32"] = bench.fp32_reference(inputs)

    phase("speed:pass bf16", 40, bf16_pass)
    # The cache runs the blocks the bf16 path compiled, FP8 + cache those of FP8: no warm-up of their own.
    phase("speed:videos bf16, cache", 90, lambda: [bench.timed_video("bf16"), bench.timed_video("cache", warm=False)])
    phase("quality:bf16, cache", 70, lambda: [bench.quality_set(v) for v in ("bf16", "cache")])
    for name in bench.extra_caches:
        phase(f"quality:{name}", 30, lambda name=name: bench.quality_set(name))
        phase(f"speed:video {name}", 40, lambda name=name: bench.timed_video(name, warm=False))

    # B: FP8 blocks.
    def fp8_pass(name: str):
        """One pass of an FP8 variant, with its error against bf16 (and fp32, with bf16's own, where measured)."""
        row = bench.time_pass(name, name, inputs)
        out = bench.pass_outputs
        row["vs_bf16"] = gpu_speed.errors(out[name], out["bf16"])
        if "fp32" in out:
            row["vs_fp32"] = gpu_speed.errors(out[name], out["fp32"])
            row["bf16_vs_fp32"] = gpu_speed.errors(out["bf16"], out["fp32"])
        report(f"pass_480p[{name}]", **row)
        ROWS.append(("480p pass", f"{name}: {row['ms_per_pass']:.0f} ms"))

    phase("speed:pass fp8", 40, lambda: fp8_pass("fp8"))
    phase("speed:videos fp8, fp8+cache", 80, lambda: [bench.timed_video("fp8"), bench.timed_video("fp8+cache", warm=False)])
    phase("quality:fp8, fp8+cache", 70, lambda: [bench.quality_set(v) for v in ("fp8", "fp8+cache")])
    # D: the noise floor, another bf16 attention kernel.
    phase("quality:floor", 45, lambda: bench.quality_set("floor"))
    phase("quality:compare", 15, bench.compare)

    # E: 720p, extrapolated from 2 steps (a full video is minutes of device time).
    if "720p" in want and bench.in_budget("720p inputs", 60):
        inputs720 = bench.pass_inputs("720p")
        phase("720p:bf16", 50, lambda: bench.extrapolated_720p("bf16", inputs720))
        phase("720p:fp8", 50, lambda: bench.extrapolated_720p("fp8", inputs720))
        del inputs720
        if args.full_720p:  # the cache's skips need every step: a whole video
            phase("720p:resource default", 150, lambda: bench.timed_video("resource default", size="720p"))

    # C: FP8's fast accumulation mode, one pass.
    phase("speed:pass fp8 fast accumulation", 35, lambda: fp8_pass("fp8 fast accumulation"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/out/predict2_fp8.json")
    parser.add_argument("--parts", default="speed,quality,720p")
    parser.add_argument("--budget-s", type=float, default=500, help="skip what would end past this many seconds")
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--quality-size", type=int, nargs=3, default=[33, 192, 336], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    parser.add_argument("--cache-thresholds", default="0.05,0.1",
                        help="step-cache thresholds: the first everywhere (also with FP8), the others cache-only")
    parser.add_argument("--full-720p", action="store_true", help="a whole 720p video with the resource's defaults")
    parser.add_argument("--fp32-reference", action="store_true", help="also compare one pass with an fp32 run")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (FP8 through the CPU's FP8 product)")
    args = parser.parse_args()
    if args.smoke:
        from cosmos_assets.models import generator_speedups

        gpu_speed.DEVICE = "cpu"
        # The CPU has no FP8 tensor cores, but torch._scaled_mm has a CPU implementation: let the FP8 layers run so
        # that the script's FP8 path is exercised. Timings of a smoke run mean nothing.
        generator_speedups.fp8_unsupported = lambda device: None
    cuda = gpu_speed.DEVICE == "cuda"
    from cosmos_assets.models.generator_speedups import flash4_available

    report("device", card=torch.cuda.get_device_name(0) if cuda else "cpu (smoke)", torch=torch.__version__,
           diffusers=__import__("diffusers").__version__, transformers=__import__("transformers").__version__,
           cudnn=torch.backends.cudnn.version() if cuda else None,
           capability=list(torch.cuda.get_device_capability(0)) if cuda else None,
           flash_attention_4=flash4_available(gpu_speed.DEVICE))
    bench = Bench(args)
    try:
        run(bench, args)
    except Exception as error:
        report("error", error=f"{error.__class__.__name__}: {error}", trace=traceback.format_exc()[-3000:])
    save(args.out)
    for section in dict.fromkeys(section for section, _ in ROWS):
        print(section)
        for s, line in ROWS:
            if s == section:
                print("  " + line)
    print(f"total {elapsed():.0f} s")


if __name__ == "__main__":
    main()
