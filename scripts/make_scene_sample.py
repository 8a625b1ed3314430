"""Cut the shipped multi-camera sample (``cosmos_assets/samples/dashcam_rig/``) from the dashcam sample.

No real multi-camera footage with a licence that lets the project ship it was at hand, so the three "cameras"
are overlapping crops of one real wide video (Udacity's MIT-licensed ``solidWhiteRight.mp4``, already shipped
as ``dashcam_solid_white_right.mp4``): left, centre and right windows of the same frames, over the same span.
Crops of one camera share its centre of projection, so the views are related by a translation of the image
(a homography), not by a real stereo baseline; cross-view measures treat them as any calibrated rig would.

    .venv/bin/python scripts/make_scene_sample.py   # rewrites the folder; its bytes are reproducible
"""

import json
from pathlib import Path

import cv2
import numpy as np

from cosmos_assets.synthetic.video import read_video, write_mp4

SAMPLES = Path(__file__).resolve().parents[1] / "cosmos_assets" / "samples"
SOURCE = SAMPLES / "dashcam_solid_white_right.mp4"
RIG = SAMPLES / "dashcam_rig"
START_S, SECONDS, FPS_STEP = 3.0, 2.6, 2  # 2.6 s at half the source rate (12.5 fps): over the 2 s shortest clip
CROP_W, CROP_H, TOP = 528, 432, 54  # of the 960 x 540 source: 55 % of its width, 80 % of its height
OUT_W, OUT_H = 256, 208
CAMERAS = {"front_left": 0, "front_center": 216, "front_right": 432}  # left edge of each window


def main() -> None:
    frames, fps = read_video(SOURCE)
    first = int(START_S * fps)
    span = frames[first:first + int(SECONDS * fps):FPS_STEP]
    RIG.mkdir(exist_ok=True)
    for camera, left in CAMERAS.items():
        view = np.stack([cv2.resize(f[TOP:TOP + CROP_H, left:left + CROP_W], (OUT_W, OUT_H), interpolation=cv2.INTER_AREA)
                         for f in span])
        write_mp4(RIG / f"{camera}.mp4", view, fps / FPS_STEP, crf=30)
    manifest = {
        "scene": "dashcam_rig",
        "cameras": {camera: f"{camera}.mp4" for camera in CAMERAS},
        "reference_camera": "front_center",
        "rig": {"note": "three overlapping crops of one dashcam video (one centre of projection, not a stereo rig)",
                "crop_left_px": CAMERAS, "crop_size_px": [CROP_W, CROP_H], "crop_top_px": TOP,
                "source": "dashcam_solid_white_right.mp4", "source_start_s": START_S},
    }
    (RIG / "scene.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
