"""Near-duplicates that survive a re-encode: recall and precision per transform kind (issue 14).

    .venv/bin/python bench/near_duplicates.py            # corpus in a temporary folder
    .venv/bin/python bench/near_duplicates.py --keep DIR # keep the corpus
    .venv/bin/python bench/near_duplicates.py --scale 20000,100000 [--old-up-to 20000]


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

``--scale``: wall time and peak memory of ``near_exact_dedup`` alone on synthetic hash sets of N clips
(8-24 frames each, frames of a clip correlated as in a static to a fast-moving shot, 1 % planted copies:
bits flipped, or a crop), each size in a fresh process; the previous implementation (a Python band index)
beside it (whole pictures only, as it had no crops) up to ``--old-up-to`` clips.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
from cosmos_assets.curation.frame_hashes import (  # noqa: E402
    CROPS, WORDS, ClipHashes, clip_hashes, compare, is_duplicate, near_exact_dedup)
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


def centred_crop(frames, keep_w: float, keep_h: float):
    h, w = frames[0].shape[:2]
    dy, dx = int(round(h * (1 - keep_h) / 2)), int(round(w * (1 - keep_w) / 2))
    return [f[dy:h - dy, dx:w - dx] for f in frames]


def crop8(frames, fps, crf):  # a zoomed re-upload: 8 % off every side, 71 % of the picture left
    return centred_crop(frames, 0.84, 0.84), fps, crf


def crop4(frames, fps, crf):  # a light zoom: 4 % off every side
    return centred_crop(frames, 0.92, 0.92), fps, crf


def crop_aspect(frames, fps, crf):  # 16:9 cut to 4:3 in the centre (4:3 sources: cut to 16:9)
    h, w = frames[0].shape[:2]
    return (centred_crop(frames, 0.75, 1.0) if w * 9 >= h * 16 else centred_crop(frames, 1.0, 0.75)), fps, crf


def crop_bottom(frames, fps, crf):  # off-centre: the bottom 10 % cut (a burned-in ticker or logo removed)
    h = frames[0].shape[0]
    return [f[:h - int(h * 0.1)] for f in frames], fps, crf


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


SINGLE = {"rescale": [rescale], "fps10": [frame_rate], "crf32": [recompress], "crop4": [crop4], "crop8": [crop8],
          "crop_aspect": [crop_aspect], "crop_bottom": [crop_bottom], "letterbox": [letterbox], "trim": [trim]}
COMBINED = {
    "rescale+fps10+crf32": [rescale, frame_rate, recompress],
    "crop8+crf32": [crop8, recompress],
    "crop_aspect+rescale+crf32": [crop_aspect, rescale, recompress],
    "letterbox+rescale+crf32": [letterbox, rescale, recompress],
    "trim+fps10+crf32": [trim, frame_rate, recompress],
    "trim+crop8+rescale+fps10+crf32": [trim, crop8, rescale, frame_rate, recompress],
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


# --- scale (--scale) ---------------------------------------------------------------------------------

def synthetic_collection(n: int, seed: int, crops: bool) -> tuple[list[ClipHashes], np.ndarray]:
    """n clips of 8-24 frames; each frame is its clip's base hash with each bit flipped with probability
    1/2 (a fast shot) down to 1/32 (a nearly static one). 1 % are copies of an earlier clip: 12 bits
    flipped in every frame and, for half of them when crops are hashed, the earlier clip's 0.88 crop as
    their whole picture. Returns the clips and, per clip, the clip it copies (-1 for none)."""
    rng = np.random.default_rng(seed)
    variants = 1 + len(CROPS) if crops else 1
    frames = rng.integers(8, 25, size=n)
    starts = np.concatenate([[0], np.cumsum(frames)])
    hashes = np.repeat(rng.integers(0, 2**64, size=(n, variants, WORDS), dtype=np.uint64), frames, axis=0)
    speed = np.repeat(rng.integers(1, 6, size=n), frames)  # each bit flips with probability 2^-speed
    for start in range(0, len(hashes), 1 << 20):  # in slices: a million clips' masks at once would not fit
        part = slice(start, start + (1 << 20))
        mask = rng.integers(0, 2**64, size=hashes[part].shape, dtype=np.uint64)
        for extra in range(1, 5):
            mask &= np.where((speed[part] > extra)[:, None, None],
                             rng.integers(0, 2**64, size=mask.shape, dtype=np.uint64), np.uint64(2**64 - 1))
        hashes[part] ^= mask
    clips = [ClipHashes(0.25, hashes[starts[i]:starts[i + 1]], np.ones(int(frames[i]), bool)) for i in range(n)]
    copies = np.full(n, -1)
    # In increasing order, so a clip is copied only once its own content is final.
    for index in np.sort(rng.choice(np.arange(n // 2, n), n // 100, replace=False)).tolist():
        source = int(rng.integers(0, index))
        copied = clips[source].hashes.copy()
        for bit in rng.choice(256, 12, replace=False).tolist():
            copied[..., bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
        if crops and rng.random() < 0.5:
            copied[:, 0] = copied[:, 4]  # the copy is the earlier clip's 0.88 × 0.88 centre
        clips[index], copies[index] = ClipHashes(0.25, copied, np.ones(len(copied), bool)), source
    return clips, copies


def legacy_near_exact_dedup(clips: list[ClipHashes]) -> np.ndarray:
    """The previous candidate search (commit 7770ddc): per frame, a Python dict per 16-bit band of the kept
    clips' whole-picture hashes; a kept clip whose frames share a band with 30 % of the new clip's frames
    is compared (here with today's ``compare``). Returns duplicate_of."""
    duplicate_of = np.full(len(clips), -1)
    buckets: list[dict[int, list[int]]] = [{} for _ in range(16)]
    for index, clip in enumerate(clips):
        bands = np.ascontiguousarray(clip.hashes[clip.valid, 0]).view(np.uint16).reshape(-1, 16).astype(np.int64)
        hits: dict[int, int] = {}
        for frame_bands in bands.tolist():
            hit: set[int] = set()
            for b, value in enumerate(frame_bands):
                members = buckets[b].get(value)
                if members and len(members) <= 4096:
                    hit.update(members)
            for other in hit:
                hits[other] = hits.get(other, 0) + 1
        needed = max(1, int(np.ceil(0.3 * len(bands))))
        best, best_share = -1, -1.0
        for other in sorted(o for o, count in hits.items() if count >= needed):
            match = compare(clip, clips[other])
            if is_duplicate(match) and match.matched_share > best_share:
                best, best_share = other, match.matched_share
        if best >= 0:
            duplicate_of[index] = best
            continue
        for b in range(16):
            for value in np.unique(bands[:, b]).tolist():
                buckets[b].setdefault(value, []).append(index)
    return duplicate_of


def memory_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def scale_one(n: int, implementation: str, crops: bool) -> dict:
    """One measurement, meant to run alone in its process: peak memory is the process's high-water mark."""
    clips, copies = synthetic_collection(n, seed=n, crops=crops)
    before = memory_kib("VmRSS:")
    started = time.perf_counter()
    duplicate_of = near_exact_dedup(clips).duplicate_of if implementation == "new" else legacy_near_exact_dedup(clips)
    seconds = time.perf_counter() - started
    planted = copies >= 0
    return {"clips": n, "frames": int(sum(len(c.valid) for c in clips)), "implementation": implementation,
            "crops": crops, "seconds": round(seconds, 1), "hashes_gib": round(before / 2**20, 2),
            "peak_gib": round(memory_kib("VmHWM:") / 2**20, 2), "planted": int(planted.sum()),
            # A copy of a copy may name the first clip instead: found all the same.
            "planted_found": int(((duplicate_of[planted] == copies[planted]) | ((duplicate_of[planted] >= 0) & (
                duplicate_of[planted] == np.where(copies[copies[planted]] >= 0, copies[copies[planted]], -2)))).sum()),
            "other_drops": int(((duplicate_of >= 0) & ~planted).sum())}


def scale(sizes: list[int], old_up_to: int, whole_only_from: int) -> None:
    print("| clips | frames | crops hashed | implementation | wall s | RSS before (hash sets) GiB | peak RSS GiB | "
          "planted copies found | other drops |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        runs = [("new", n < whole_only_from)] + ([("old", False), ("new", False)] if n <= old_up_to else [])
        for implementation, crops in runs:
            command = [sys.executable, __file__, "--scale-one", str(n), implementation] + (["--crops"] if crops else [])
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            row = json.loads(output.strip().splitlines()[-1])
            print(f"| {row['clips']:,} | {row['frames']:,} | {'yes' if row['crops'] else 'no'} | {implementation} | "
                  f"{row['seconds']} | {row['hashes_gib']} | {row['peak_gib']} | {row['planted_found']}/{row['planted']} | "
                  f"{row['other_drops']} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="build the corpus here and keep it")
    parser.add_argument("--reuse", action="store_true", help="with --keep: use the corpus already there")
    parser.add_argument("--scale", help="comma-separated clip counts: time near_exact_dedup on synthetic hash sets")
    parser.add_argument("--old-up-to", type=int, default=20000, help="with --scale: run the previous search up to this size")
    parser.add_argument("--whole-only-from", type=int, default=1_000_000,
                        help="with --scale: from this size, whole-picture hashes only (crop hashes would not fit in memory)")
    parser.add_argument("--scale-one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--crops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_one:
        print(json.dumps(scale_one(int(args.scale_one[0]), args.scale_one[1], args.crops)))
        return
    if args.scale:
        scale([int(x) for x in args.scale.split(",")], args.old_up_to, args.whole_only_from)
        return
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
