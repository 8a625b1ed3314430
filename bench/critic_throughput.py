"""CPU critic throughput: candidates per second of the metric critic on 720p candidates.

    .venv/bin/python bench/critic_throughput.py                 # 10 candidates, 1280x704, 93 frames at 16 fps
    .venv/bin/python bench/critic_throughput.py --frames 29     # 2 s candidates

Builds, once, a 720p source window from the sample dashcam video (960x540, scaled up to 1280x704: the
Cosmos 720p generation size) and candidates from it with the classical generator (five conditions,
two seeds), written as H.264 MP4 like synthetic_videos writes them (bench/out/critic/). Then, in this
one process, per candidate exactly what critique_scores does, in two ways, alternating, best of --repeat:

(a) baseline: decode the candidate at full size, score it against the full-size source window;
(b) ours, as critique_scores does it: decode the candidate straight to luma at the critic's working width
    (320 px, one reused scaler) and score against the source window read at that width (once per request).

Reported per way: decode and scoring seconds, candidates per second, frames per second, and how far
(b)'s scores are from (a)'s (the working width is the same; only where the scaling happens differs).
Building the candidates is not timed (the classical generator at 720p is not what is measured).

Then (``--separation``, on by default) what the scores separate, on 2 s windows (320 px, 16 fps) of each
sample video: the lowest score of the ten good candidates (five conditions, two seeds) against the highest
of broken versions of a good candidate (frozen, shuffled, reversed, blank, black, noise). The default
acceptance threshold of the metric critic sits between the two.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from cosmos_assets.synthetic.augment import augment
from cosmos_assets.synthetic.critics import MetricCritic, align_source
from cosmos_assets.synthetic.selection import DEFAULT_THRESHOLDS
from cosmos_assets.synthetic.video import Geometry, at_most, read_video, read_window, request_geometry, video_size, write_mp4

ROOT = Path(__file__).resolve().parent
SAMPLES = ROOT.parent / "cosmos_assets" / "samples"
SAMPLE = SAMPLES / "dashcam_solid_white_right.mp4"
CONDITIONS = ("rain", "fog", "snow", "night", "dusk")


def build_candidates(folder: Path, geometry: Geometry, seeds: int) -> tuple[Path, list[Path]]:
    """The source window as a video of its own, and the candidates made from it (kept between runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    source_path = folder / f"source_{geometry.width}x{geometry.height}_{geometry.num_frames}.mp4"
    source = None
    if not source_path.is_file():
        source = read_window(SAMPLE, geometry)
        write_mp4(source_path, source, geometry.fps)
    paths = []
    for condition in CONDITIONS:
        for seed in range(seeds):
            path = folder / f"{condition}_{seed}_{geometry.width}x{geometry.height}_{geometry.num_frames}.mp4"
            if not path.is_file():
                source = read_window(SAMPLE, geometry) if source is None else source
                write_mp4(path, augment(source, condition, seed, geometry.fps)[0], geometry.fps)
            paths.append(path)
    return source_path, paths


def critique_all(source_path: Path, candidates: list[Path], geometry: Geometry, max_width: int | None) -> dict:
    """Decode and score every candidate; the source window is read once (candidates share one request's source)."""
    critic = MetricCritic()
    started = time.perf_counter()
    window = at_most(geometry, max_width) if max_width else geometry
    source = read_window(source_path, window)
    decode_s, score_s, scores = time.perf_counter() - started, 0.0, []
    for path in candidates:
        start = time.perf_counter()
        frames, fps = read_video(path, max_width=max_width, gray=max_width is not None)
        middle = time.perf_counter()
        scores.append(critic.score(frames, align_source(source, geometry.fps, len(frames), fps)).score)
        decode_s += middle - start
        score_s += time.perf_counter() - middle
    return {"decode_s": decode_s, "score_s": score_s, "total_s": decode_s + score_s, "scores": np.array(scores),
            "frame_size": frames.shape[1:3]}


def broken_versions(good: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"frozen": np.repeat(good[:1], len(good), axis=0), "shuffled": good[rng.permutation(len(good))],
            "reversed": good[::-1].copy(), "blank": np.full_like(good, 128), "black": np.zeros_like(good),
            "noise": rng.integers(0, 256, good.shape).astype(np.uint8)}


def separation() -> None:
    critic, threshold = MetricCritic(), DEFAULT_THRESHOLDS["metric"]
    print("\n| sample (2 s at 320 px) | lowest good | highest broken (which) | threshold |\n|---|---|---|---|")
    for path in sorted(p for p in SAMPLES.iterdir() if p.suffix in (".mp4", ".mkv")):
        width, height = video_size(path)
        source = read_window(path, request_geometry(width, height, 2.0, 320, 16, 2.0))
        good = [critic.score(augment(source, c, seed, 16)[0], source).score for c in CONDITIONS for seed in (0, 1)]
        broken = {name: critic.score(frames, source).score
                  for name, frames in broken_versions(augment(source, "rain", 0, 16)[0]).items()}
        worst = max(broken, key=broken.get)
        print(f"| {path.name} | {min(good):.3f} | {broken[worst]:.3f} ({worst}) | {threshold} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--frames", type=int, default=93)
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--analysis-width", type=int, default=320)
    parser.add_argument("--separation", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    geometry = Geometry(args.width, args.height, args.fps, args.frames)
    started = time.perf_counter()
    source_path, candidates = build_candidates(ROOT / "out" / "critic", geometry, args.seeds)
    print(f"{len(candidates)} candidates of {args.width}x{args.height}, {args.frames} frames at {args.fps} fps "
          f"(built or found in {time.perf_counter() - started:.1f} s); {os.cpu_count()} CPUs")
    critique_all(source_path, candidates[:1], geometry, args.analysis_width)  # warm-up: imports, codec, caches
    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name, max_width in (("(a) full-size decode", None), ("(b) decode at working width", args.analysis_width)):
            result = critique_all(source_path, candidates, geometry, max_width)
            if name not in best or result["total_s"] < best[name]["total_s"]:
                best[name] = result
    n = len(candidates)
    print("\n| way | decode s | score s | total s | candidates/s | frames/s |\n|---|---|---|---|---|---|")
    for name, r in best.items():
        print(f"| {name} | {r['decode_s']:.2f} | {r['score_s']:.2f} | {r['total_s']:.2f} | {n / r['total_s']:.2f} | "
              f"{n * args.frames / r['total_s']:.0f} |")
    a, b = best["(a) full-size decode"], best["(b) decode at working width"]
    print(f"\n(a)/(b) total: {a['total_s'] / b['total_s']:.2f}x; largest score difference {np.abs(a['scores'] - b['scores']).max():.4f}; "
          f"scores (b): min {b['scores'].min():.3f}, max {b['scores'].max():.3f}")
    if args.separation:
        separation()


if __name__ == "__main__":
    main()
