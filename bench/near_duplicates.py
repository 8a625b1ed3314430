"""Near-duplicates that survive a re-encode: recall and precision per transform kind (issue 14).

    .venv/bin/python bench/near_duplicates.py            # corpus in a temporary folder
    .venv/bin/python bench/near_duplicates.py --keep DIR # keep the corpus

Builds a corpus at run time from the sample videos (cosmos_assets/samples/): shots cut from each
source at fixed times (the originals; several shots of one camera are the distinct-shot negatives),
then copies of every shot under single transforms (rescale, frame-rate change, re-compression at
CRF 32, crop, letterbox / pillarbox, trimmed start) and combinations. Each clip gets the pipeline's
video embedding (EfficientNet-Lite0, 8 frames, as clip_embeddings) and its frame hashes
(cosmos_assets.curation.frame_hashes). Then, per transform kind, over the originals plus that kind's
copies (originals first: the older clip wins), and once over everything together:

(a) today's semantic stage alone (``semantic_dedup``, default eps 0.01);
(b) the near-exact stage on frame hashes, then the semantic stage on its survivors.

A dropped copy is correct when the clip it names is a version of the same shot; recall = correct
drops / copies; precision = correct drops / all drops; a dropped original is a distinct shot merged.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_assets.curation.dedup import DedupConfig, semantic_dedup  # noqa: E402
from cosmos_assets.curation.frame_hashes import clip_hashes, compare, near_exact_dedup  # noqa: E402
from cosmos_assets.models.frames import sample_frames  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "cosmos_assets" / "samples"
# (file, [(start_s, end_s), ...]): distinct shots of one camera, with gaps between them.
SHOTS = [
    ("asl_again.mkv", [(0.0, 2.6)]),
    ("asl_book.mkv", [(0.0, 3.6)]),
    ("asl_walk.mkv", [(0.0, 2.9)]),
    ("dashcam_solid_white_right.mp4", [(0.0, 4.2), (4.6, 8.8)]),
    ("bottle_conveyor.mp4", [(5.0 * i, 5.0 * i + 4.5) for i in range(8)]),
]
ORIGINAL_CRF = 20


def read_segment(path: Path, start: float, end: float) -> tuple[list[np.ndarray], float]:
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        for frame in container.decode(stream):
            t = float(frame.pts * frame.time_base)
            if start <= t < end:
                frames.append(frame.to_ndarray(format="rgb24"))
            elif t >= end:
                break
    return frames, fps


def write(path: Path, frames: list[np.ndarray], fps: float, crf: int) -> Path:
    height, width = (s - s % 2 for s in frames[0].shape[:2])
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=int(round(fps)), options={"crf": str(crf), "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return path


# Each transform maps (frames, fps, crf) to (frames, fps, crf).
def rescale(frames, fps, crf):
    h, w = frames[0].shape[:2]
    size = (480, 270) if w * 9 >= h * 16 else (360, 270)
    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames], fps, crf


def frame_rate(frames, fps, crf):
    step = fps / 10.0
    return [frames[int(i * step)] for i in range(int(len(frames) / step))], 10.0, crf


def recompress(frames, fps, crf):
    return frames, fps, 32


def crop(frames, fps, crf):
    h, w = frames[0].shape[:2]
    dy, dx = int(h * 0.08), int(w * 0.08)  # 8 % off every side: 70 % of the picture left
    return [f[dy:h - dy, dx:w - dx] for f in frames], fps, crf


def letterbox(frames, fps, crf):
    h, w = frames[0].shape[:2]
    if w * 9 >= h * 16:  # wide: letterbox into 4:3
        canvas_h, canvas_w = w * 3 // 4, w
    else:  # 4:3: pillarbox into 16:9
        canvas_h, canvas_w = h, h * 16 // 9
    out = []
    for f in frames:
        canvas = np.full((canvas_h, canvas_w, 3), 16, dtype=np.uint8)
        y, x = (canvas_h - h) // 2, (canvas_w - w) // 2
        canvas[y:y + h, x:x + w] = f
        out.append(canvas)
    return out, fps, crf


def trim(frames, fps, crf):
    return frames[int(round(0.8 * fps)):], fps, crf


SINGLE = {"rescale": [rescale], "fps10": [frame_rate], "crf32": [recompress], "crop": [crop],
          "letterbox": [letterbox], "trim": [trim]}
COMBINED = {
    "rescale+fps10+crf32": [rescale, frame_rate, recompress],
    "crop+crf32": [crop, recompress],
    "letterbox+rescale+crf32": [letterbox, rescale, recompress],
    "trim+fps10+crf32": [trim, frame_rate, recompress],
    "trim+crop+rescale+fps10+crf32": [trim, crop, rescale, frame_rate, recompress],
    "letterbox+trim+rescale+fps10+crf32": [trim, letterbox, rescale, frame_rate, recompress],
}
KINDS = SINGLE | COMBINED


def build(directory: Path):
    """Originals and copies: lists of (group, kind, path)."""
    clips = []
    group = 0
    for name, shots in SHOTS:
        for start, end in shots:
            frames, fps = read_segment(SAMPLES / name, start, end)
            clips.append((group, "original", write(directory / f"g{group}_original.mp4", frames, fps, ORIGINAL_CRF)))
            for kind, steps in KINDS.items():
                f, r, crf = frames, fps, ORIGINAL_CRF
                for step in steps:
                    f, r, crf = step(f, r, crf)
                clips.append((group, kind, write(directory / f"g{group}_{kind}.mp4", f, r, crf)))
            group += 1
    return clips


def embed(paths: list[Path]) -> np.ndarray:
    from cosmos_assets.models.embedders import load_efficientnet

    model = load_efficientnet(torch.device("cpu"))
    vectors = []
    for start in range(0, len(paths), 8):
        frames = []
        for path in paths[start:start + 8]:
            with av.open(str(path)) as c:
                duration = float(c.duration / 1e6)
            frames.append(sample_frames(path, max(8 / max(duration, 1e-3), 0.1), 8, max_side=448).frames)
        vectors.append(np.asarray(model.embed_videos(frames).vectors, dtype=np.float32))
    return np.concatenate(vectors)


def decide(members: np.ndarray, vectors, hashes, with_near_exact: bool):
    """duplicate_of (global index or -1) and stage per member, visited in the order given."""
    n = len(members)
    duplicate_of = np.full(n, -1)
    stage = [None] * n
    survivors = np.arange(n)
    if with_near_exact:
        near = near_exact_dedup([hashes[m] for m in members])
        duplicate_of[near.duplicate_of >= 0] = near.duplicate_of[near.duplicate_of >= 0]
        for i in np.flatnonzero(near.duplicate_of >= 0):
            stage[i] = "near_exact"
        survivors = np.flatnonzero(near.duplicate_of < 0)
    semantic = semantic_dedup(vectors[members[survivors]], None, DedupConfig())
    for local, i in enumerate(survivors):
        if not semantic.kept[local]:
            duplicate_of[i] = survivors[semantic.duplicate_of[local]]
            stage[i] = "semantic"
    return duplicate_of, stage


def evaluate(clips, vectors, hashes, kinds: list[str], with_near_exact: bool) -> dict:
    originals = [i for i, c in enumerate(clips) if c[1] == "original"]
    copies = [i for i, c in enumerate(clips) if c[1] in kinds]
    members = np.array(originals + copies)
    duplicate_of, stage = decide(members, vectors, hashes, with_near_exact)
    groups = np.array([clips[m][0] for m in members])
    is_copy = np.array([clips[m][1] != "original" for m in members])
    dropped = duplicate_of >= 0
    correct = dropped & (groups == np.where(dropped, groups[np.maximum(duplicate_of, 0)], -1))
    by_stage = {}
    for i in np.flatnonzero(dropped & is_copy):
        by_stage[stage[i]] = by_stage.get(stage[i], 0) + 1
    return {"copies": int(is_copy.sum()), "caught": int((correct & is_copy).sum()), "drops": int((dropped & is_copy).sum()),
            "originals_merged": int((dropped & ~is_copy).sum()), "by_stage": by_stage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="build the corpus here and keep it")
    parser.add_argument("--reuse", action="store_true", help="with --keep: use the corpus already there")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if args.reuse and args.keep:
            clips = [(int(p.name[1:].split("_", 1)[0]), p.stem.split("_", 1)[1], p) for p in directory.glob("g*_*.mp4")]
            clips.sort(key=lambda c: (c[0], c[1] != "original", list(KINDS).index(c[1]) if c[1] in KINDS else -1))
        else:
            clips = build(directory)
        built = time.perf_counter()
        hashes = [clip_hashes(path) for _, _, path in clips]
        hashed = time.perf_counter()
        vectors = embed([path for _, _, path in clips])
        embedded = time.perf_counter()
    originals = [i for i, c in enumerate(clips) if c[1] == "original"]
    print(f"corpus: {len(originals)} distinct shots from {len(SHOTS)} sources, {len(clips) - len(originals)} copies "
          f"in {len(KINDS)} transform kinds; build {built - started:.1f} s, hashing {hashed - built:.1f} s "
          f"({(hashed - built) / len(clips):.2f} s/clip), embedding {embedded - hashed:.1f} s")

    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    print("\nper kind: cosine to its original (min), near-exact evidence against its original (min share, max median "
          "Hamming), best share against any other shot")
    for kind in KINDS:
        rows = [i for i, c in enumerate(clips) if c[1] == kind]
        cos, shares, hams, other_share = [], [], [], []
        for i in rows:
            group = clips[i][0]
            o = originals[group]
            cos.append(float(unit[i] @ unit[o]))
            m = compare(hashes[i], hashes[o])
            shares.append(m.matched_share if m else 0.0)
            hams.append(m.median_hamming if m else float("nan"))
            others = [compare(hashes[i], hashes[j]) for j in originals if j != o]
            other_share.append(max((x.matched_share for x in others if x), default=0.0))
        print(f"  {kind:38s} cos min {min(cos):.3f}  share min {min(shares):.2f}  hamming max {max((h for h in hams if h == h), default=float('nan')):5.1f}  "
              f"other-shot share max {max(other_share):.2f}")
    negatives = []
    for a in originals:
        for b in originals:
            if a != b:
                m = compare(hashes[a], hashes[b])
                negatives.append((m.matched_share if m else 0.0, float(unit[a] @ unit[b]), clips[a][0], clips[b][0]))
    worst = max(negatives)
    print(f"  distinct shots: best matched share {worst[0]:.2f} (shots {worst[2]}, {worst[3]}); "
          f"highest cosine {max(n[1] for n in negatives):.3f}")

    print("\n| transform kind | copies | (a) semantic: recall | precision | (b) near-exact + semantic: recall | precision | "
          "dropped by stage | distinct shots merged (a) / (b) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, kinds in [(k, [k]) for k in KINDS] + [("all kinds together", list(KINDS))]:
        a = evaluate(clips, vectors, hashes, kinds, False)
        b = evaluate(clips, vectors, hashes, kinds, True)

        def ratio(x, y):
            return f"{x / y:.3f}" if y else "–"
        stages = ", ".join(f"{k} {v}" for k, v in sorted(b["by_stage"].items()))
        print(f"| {label} | {a['copies']} | {ratio(a['caught'], a['copies'])} | {ratio(a['caught'], a['drops'])} | "
              f"{ratio(b['caught'], b['copies'])} | {ratio(b['caught'], b['drops'])} | {stages} | "
              f"{a['originals_merged']} / {b['originals_merged']} |")


if __name__ == "__main__":
    main()
