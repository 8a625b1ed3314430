"""Is an H.264 encode a function of its frames? Distinct digests and encode time per libx264 setting.

Each setting encodes the same real frames (the dashcam sample, 2 s of a rain candidate at 320 px, and 93 frames
at 960x540) several times in several fresh processes; a reproducible setting gives one digest per input.
Settings alternate within each process, so load hits them alike. Prints one row per setting, with the time
ratio against the project's setting (``common.encoding.h264_options``).

    .venv/bin/python bench/h264_determinism.py [--processes 4] [--encodes 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosmos_assets.common.encoding import h264_options  # noqa: E402

SAMPLE = ROOT / "cosmos_assets" / "samples" / "dashcam_solid_white_right.mp4"
PROJECT = h264_options("veryfast", 18)
SETTINGS = {
    "x264 defaults (threads auto, mbtree on)": {"preset": "veryfast", "crf": "18"},
    "threads=1, mbtree on": {"preset": "veryfast", "crf": "18", "threads": "1"},
    "threads=4, mbtree=0 (the project's)": PROJECT,
    "threads=4, mbtree=0, asm=0 (plain C)": {**PROJECT, "x264-params": "mbtree=0:asm=0"},
}


def _encode(frames, fps, options, path) -> tuple[str, float]:
    import av
    import numpy as np
    from fractions import Fraction

    start = time.perf_counter()
    with av.open(str(path), "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = options
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest(), time.perf_counter() - start


def child(encodes: int) -> None:
    from cosmos_assets.synthetic.augment import augment
    from cosmos_assets.synthetic.video import read_video

    small, fps = read_video(SAMPLE, max_frames=29, max_width=320)
    inputs = {"320x176x29 rain": (augment(small, "rain", 7, fps)[0], 16.0),
              "960x540x93": (read_video(SAMPLE, max_frames=93)[0], 16.0)}
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(encodes):
            for name, options in SETTINGS.items():
                for label, (frames, rate) in inputs.items():
                    digest, seconds = _encode(frames, rate, options, Path(folder) / "x.mp4")
                    entry = out.setdefault(name, {}).setdefault(label, {"digests": [], "seconds": 0.0})
                    entry["digests"].append(digest)
                    entry["seconds"] += seconds
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--encodes", type=int, default=3)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        return child(args.encodes)
    results = [json.loads(subprocess.run([sys.executable, __file__, "--child", "--encodes", str(args.encodes)],
                                         capture_output=True, text=True, check=True).stdout.splitlines()[-1])
               for _ in range(args.processes)]
    total = args.processes * args.encodes
    base = {label: sum(r[next(iter(s for s in SETTINGS if SETTINGS[s] is PROJECT))][label]["seconds"] for r in results)
            for label in results[0][next(iter(SETTINGS))]}
    print(f"{args.processes} processes x {args.encodes} encodes per setting and input ({total} encodes each)")
    print(f"| setting | input | distinct digests of {total} | encode s each | time vs the project's |")
    print("|---|---|---|---|---|")
    for name in SETTINGS:
        for label in base:
            digests = {d for r in results for d in r[name][label]["digests"]}
            seconds = sum(r[name][label]["seconds"] for r in results)
            print(f"| {name} | {label} | {len(digests)} | {seconds / total:.2f} | {seconds / base[label]:.2f}x |")


if __name__ == "__main__":
    main()
