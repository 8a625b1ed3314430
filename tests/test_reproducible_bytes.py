"""Content-addressed artefacts are a function of their inputs: the same frames and settings give the same
bytes in any process, whatever the load. (A regenerated synthetic candidate must reproduce the one it
replaces, and exact de-duplication compares clip bytes.)"""

import hashlib
import json
import subprocess
import sys
import textwrap

from cosmos_assets.common.encoding import h264_options

# Each child process encodes the same real frames several times, with both writers of the project, and
# prints the digests. libx264's default rate control changed about one encode in five (issue 19).
CHILD = textwrap.dedent("""
    import hashlib, json, sys, tempfile
    from pathlib import Path
    from cosmos_assets.curation.clips import cut_clips
    from cosmos_assets.curation.shots import Span
    from cosmos_assets.synthetic.augment import augment
    from cosmos_assets.synthetic.video import read_video, write_mp4

    source = Path(sys.argv[1])
    frames, fps = read_video(source, max_frames=29, max_width=320)
    rain, _ = augment(frames, "rain", 7, fps)
    digest = lambda path: hashlib.sha256(Path(path).read_bytes()).hexdigest()
    out = {"candidate": [], "clip": []}
    with tempfile.TemporaryDirectory() as folder:
        for attempt in range(3):
            out["candidate"].append(digest(write_mp4(Path(folder) / f"c{attempt}.mp4", rain, fps)))
            [clip] = cut_clips(source, [Span(0, 40)], [(Path(folder) / f"k{attempt}.mp4", Path(folder) / f"k{attempt}.jpg")], 25.0)
            out["clip"].append(digest(clip.path))
    print(json.dumps(out))
""")


def test_encoding_the_same_frames_gives_the_same_bytes_in_every_process(samples):
    source = samples / "dashcam_solid_white_right.mp4"
    runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD, str(source)], capture_output=True, text=True,
                                      check=True).stdout.splitlines()[-1]) for _ in range(3)]
    for kind in ("candidate", "clip"):
        digests = {d for run in runs for d in run[kind]}
        assert len(digests) == 1, f"{kind}: {len(digests)} different encodings of the same frames"


def test_the_encoder_settings_pin_what_made_bytes_vary():
    options = h264_options("veryfast", 18)
    assert options["threads"].isdigit(), "a machine-dependent thread count changes x264's motion search range"
    assert "mbtree=0" in options["x264-params"]
