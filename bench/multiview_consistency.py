"""Cross-view consistency (synthetic/multiview.py) of the shipped multi-camera sample under the classical backend.

Each condition is rendered over every view of ``samples/dashcam_rig`` with one seed, as a generation round does, and
measured against the source views' geometry; two references are measured in the same process: the source views
themselves (the best a generated scene can do) and the source with one view replaced by another real video (what
an inconsistent scene looks like). Prints one line per case: the worst pair's median Sampson distance, share of
matches under the threshold, and generated / source match ratio.

    .venv/bin/python bench/multiview_consistency.py
"""

from pathlib import Path

import cv2
import numpy as np

from cosmos_assets.synthetic.augment import augment
from cosmos_assets.synthetic.conditions import CONDITIONS
from cosmos_assets.synthetic.multiview import scene_consistency
from cosmos_assets.synthetic.video import read_video

SAMPLES = Path(__file__).resolve().parents[1] / "cosmos_assets" / "samples"
CAMERAS = ("front_left", "front_center", "front_right")
SEEDS = (0, 1)


def line(name: str, result: dict) -> str:
    return (f"{name:24} sampson_px {result['sampson_px'] if result['sampson_px'] is None else round(result['sampson_px'], 2)!s:>7}"
            f"  share<{result['threshold_px']:.0f}px {result['share_under_threshold']:.3f}  match_ratio {result['match_ratio']:.3f}")


def main() -> None:
    views = {c: read_video(SAMPLES / "dashcam_rig" / f"{c}.mp4") for c in CAMERAS}
    source = {c: frames for c, (frames, _) in views.items()}
    fps = views["front_center"][1]
    print(line("source itself", scene_consistency(source, source)))
    other = read_video(SAMPLES / "bottle_conveyor.mp4", max_frames=len(source["front_right"]))[0]
    swapped = {**source, "front_right": np.stack([cv2.resize(f, source["front_right"].shape[2:0:-1]) for f in other])}
    print(line("one view replaced", scene_consistency(source, swapped)))
    for condition in CONDITIONS:
        for seed in SEEDS:
            generated = {c: augment(frames, condition, seed, fps)[0] for c, frames in source.items()}
            print(line(f"classical {condition} seed {seed}", scene_consistency(source, generated)))


if __name__ == "__main__":
    main()
