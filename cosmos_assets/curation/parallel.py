"""Splitting a batch's videos concurrently: a bounded pool of worker processes, each cutting one video at a time
with ``pipeline.split_video`` (the same function, rows and files as the sequential ``pipeline.split_videos``).

Why processes: one video's split is a chain of decode, shot detection and libx264 encode that keeps only a few
cores busy (the encoder runs a fixed ``common.encoding.ENCODER_THREADS`` frame threads, the decoder a few more), and
the GPU's shot detector waits while the CPU decodes. Several videos in flight keep every core encoding and let one
worker's detection overlap the others' decoding and encoding.

- Each worker loads its shot detector once (``load_detector``, a picklable zero-argument callable, e.g.
  ``transnet_loader("cuda", True)``; None for ``fixed_stride``). On a GPU node every worker's TransNetV2 shares the
  one GPU: it is small (about 30 MB of weights and a CUDA context per worker).
- A multi-camera scene is one unit of work, split in one worker by ``pipeline.split_videos`` (its reference camera
  first, the other views on the reference's spans), so the scene order rule holds unchanged.
- A worker that dies (killed for memory, a crash in a native decoder) loses only the video it was cutting: that
  video gets a ``SplitWorkerCrashed`` error row, a new worker takes the remaining work, and the unstarted views of
  its scene are cut in another worker on the reference's spans (or get ``SceneReferenceFailed`` when the reference
  itself was lost).
- Results are yielded as each video finishes, ``(video, rows, error, seconds)`` like ``pipeline.split_videos``, in
  completion order, not input order. Longer videos are handed out first so the batch does not wait on one long
  video started last.

The CPU part of embedding clips is per clip and single-threaded too (one decode of the proxy, perceptual hashes):
``clip_embedding_inputs`` is that part for one clip, and ``clip_work_pool`` the processes that run it for many clips
ahead of the GPU.

No Dagster here: the ``video_clips_and_scores`` asset iterates ``split_in_parallel`` as it iterates ``split_videos``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait

import numpy as np

from cosmos_assets.common.artefacts import ArtefactStore
from cosmos_assets.curation.clip_frames import clip_embedding_inputs  # noqa: F401 (run in clip_work_pool)
from cosmos_assets.curation.clips import TranscodeConfig
from cosmos_assets.curation.pipeline import split_video, split_videos
from cosmos_assets.curation.scenes import scene_groups
from cosmos_assets.curation.shots import SplitConfig, Span

WORKER_CRASHED = "SplitWorkerCrashed"
SCENE_REFERENCE_FAILED = "SceneReferenceFailed"  # the class pipeline.split_videos gives views of a failed reference


def default_workers(cores: int | None = None) -> int:
    """Three quarters of the cores. Each worker's encoder and decoder are themselves threaded (4 libx264 frame threads
    plus the decoder's), yet one worker keeps only about two cores busy: on a 16-core H200 node 12 workers split
    10.7 minutes of 720p in 39 s, 8 in 43 s and 4 in 47 s (bench/GPU_RESULTS.md, "GPU curation node")."""
    return max(1, (cores or _cores()) * 3 // 4)


def transnet_loader(device: str = "auto", bf16: bool = True) -> Callable:
    """A picklable ``load_detector`` for the workers: TransNetV2 with its packaged weights on ``device``."""
    from cosmos_assets.models.transnetv2 import TransNetV2ShotDetector

    return functools.partial(TransNetV2ShotDetector, device=device, bf16=bf16)


def clip_work_pool(workers: int | None = None) -> concurrent.futures.ProcessPoolExecutor:
    """Processes for per-clip CPU work (``clip_embedding_inputs``), started from the forkserver like the split's workers
    (never forked from a process that holds CUDA). Its ``map`` keeps the clips' order and runs ahead of the consumer,
    so the GPU embeds one chunk while the next clips are decoded and hashed. On a 16-core node all cores: one
    clip's work is single-threaded."""
    return concurrent.futures.ProcessPoolExecutor(workers or _cores(), mp_context=_context())


def _context(start_method: str | None = None):
    """``forkserver`` where there is one (a clean process that never touched CUDA forks the workers, cheaply), else
    ``spawn``."""
    start_method = start_method or ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload([__name__])  # the forkserver imports av, cv2 and torch once for all workers
    return context


@dataclass
class _Unit:
    """Videos one worker splits in order: one video, a whole scene (reference first), or a scene's views left after
    a crash, with the reference's spans."""

    videos: list[dict]
    spans: list[Span] | None = None
    reported: int = 0  # videos of the unit yielded so far (a worker reports them in order)
    reference_spans: list[Span] | None = None  # a whole scene's, once its reference is cut

    @property
    def frames(self) -> int:
        return sum(v.get("frames") or 0 for v in self.videos)


def _units(videos: list[dict]) -> list[_Unit]:
    grouped, singles = scene_groups(videos)
    units = [_Unit([video]) for video in singles] + [_Unit(views) for views in grouped.values()]
    return sorted(units, key=lambda unit: -unit.frames)  # longest first: the batch ends with short videos


def _error(video: dict, error_class: str, message: str) -> dict:
    return {"content_hash": video["content_hash"], "landing_name": video["landing_name"], "error_class": error_class,
            "error_message": message}


def _split_unit(unit: _Unit, store, split, transcode, detector) -> Iterator[tuple[list[dict], dict | None, float]]:
    if unit.spans is not None:  # the views of a scene left after a crash: cut on the reference's spans
        for video in unit.videos:
            started = time.perf_counter()
            rows, error = split_video(video, store, split, transcode, detector, unit.spans)
            yield rows, error, time.perf_counter() - started
    else:  # split_videos yields a scene's views in the order scene_groups gave them: the unit's order
        for _, rows, error, seconds in split_videos(unit.videos, store, split, transcode, detector):
            yield rows, error, seconds


def _worker(connection, store: ArtefactStore, split: SplitConfig, transcode: TranscodeConfig,
            load_detector: Callable | None, torch_threads: int) -> None:
    """A worker's life: load the detector once, then split the units it is sent until it is sent None."""
    try:
        import torch

        torch.set_num_threads(torch_threads)  # its share of the cores: a CPU detector's threads would spin
        detector = load_detector() if load_detector is not None else None
    except BaseException as error:  # noqa: BLE001 - the parent says why the pool could not start
        connection.send(("broken", f"{type(error).__name__}: {error}"))
        return
    connection.send(("ready", None))
    while (unit := connection.recv()) is not None:
        done = 0
        try:
            for rows, error, seconds in _split_unit(unit, store, split, transcode, detector):
                done += 1
                connection.send(("video", (rows, error, seconds)))
        except Exception as error:  # raised outside split_video's own handling (a store write): record, go on
            for video in unit.videos[done:]:
                connection.send(("video", ([], _error(video, "SplitFailed", f"{type(error).__name__}: {error}"), 0.0)))
        connection.send(("unit_done", None))


@dataclass
class _Worker:
    process: multiprocessing.Process
    connection: object
    unit: _Unit | None = None
    ready: bool = False
    started: float = 0.0  # when its current video began (that video's seconds if the worker dies)


def split_in_parallel(
    videos: list[dict], store: ArtefactStore, split: SplitConfig, transcode: TranscodeConfig,
    load_detector: Callable | None, workers: int | None = None, start_method: str | None = None,
) -> Iterator[tuple[dict, list[dict], dict | None, float]]:
    """``pipeline.split_video`` over a batch's ok videos in ``workers`` processes (default ``default_workers()``),
    yielding (video, clip rows, error or None, seconds) as each video finishes.

    ``load_detector``: a picklable zero-argument callable that builds the shot detector in each worker (None for
    ``fixed_stride``). ``start_method``: multiprocessing's; by default ``forkserver`` where there is one (workers
    start from a clean process that never touched CUDA, and cheaply), else ``spawn``. Raises RuntimeError when a
    worker cannot load its detector (as the sequential split fails when the detector cannot load)."""
    units = deque(_units(videos))
    if not units:
        return
    count = max(1, min(workers or default_workers(), len(units)))
    context = _context(start_method)
    threads = max(1, _cores() // count)

    def start() -> _Worker:
        parent_end, child_end = context.Pipe()
        process = context.Process(target=_worker, args=(child_end, store, split, transcode, load_detector, threads),
                                  daemon=True, name="split-worker")
        process.start()
        child_end.close()  # only the worker holds its end now
        return _Worker(process, parent_end)

    pool = [start() for _ in range(count)]
    try:
        while units or any(w.unit is not None for w in pool):
            for worker in pool:  # a unit for every idle worker that has loaded its detector
                if worker.ready and worker.unit is None and units:
                    worker.unit, worker.started = units.popleft(), time.perf_counter()
                    worker.connection.send(worker.unit)
            wait([w.connection for w in pool] + [w.process.sentinel for w in pool])
            survivors = []
            for worker in pool:
                alive = worker.process.is_alive()  # before draining: what it sent before dying is in the pipe
                yield from _drain(worker)
                if alive:
                    survivors.append(worker)
                    continue
                worker.connection.close()
                if not worker.ready:
                    raise RuntimeError(f"a split worker died before loading its detector (exit code {worker.process.exitcode})")
                if worker.unit is not None:
                    yield from _crashed(worker, units)
                if units:
                    survivors.append(start())
            pool = survivors
    finally:
        for worker in pool:
            try:
                worker.connection.send(None)
            except (OSError, ValueError):  # already gone
                pass
        for worker in pool:
            worker.process.join(timeout=10)
            if worker.process.is_alive():  # the consumer stopped early, or a worker hangs: leave nothing running
                worker.process.terminate()
                worker.process.join()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _drain(worker: _Worker) -> Iterator[tuple[dict, list[dict], dict | None, float]]:
    """Every message a worker has sent so far, as results."""
    while worker.connection.poll():
        try:
            kind, payload = worker.connection.recv()
        except (EOFError, OSError):  # it died: nothing more will come
            return
        if kind == "broken":
            raise RuntimeError(f"a split worker could not load its shot detector: {payload}")
        if kind == "ready":
            worker.ready = True
        elif kind == "video":
            unit = worker.unit
            video = unit.videos[unit.reported]
            rows, error, seconds = payload
            if unit.reported == 0 and unit.spans is None and error is None:  # a scene's reference: its spans
                unit.reference_spans = [Span(r["start_frame"], r["end_frame"]) for r in rows]
            unit.reported += 1
            worker.started = time.perf_counter()
            yield video, rows, error, seconds
        elif kind == "unit_done":
            worker.unit = None


def _crashed(worker: _Worker, units: deque) -> Iterator[tuple[dict, list[dict], dict | None, float]]:
    """A worker died inside a unit: the video it was cutting gets ``SplitWorkerCrashed``; the views of its scene
    not yet started go back to the queue on the reference's spans (or fail with it when it was the one lost)."""
    unit = worker.unit
    worker.unit = None
    video = unit.videos[unit.reported]
    yield video, [], _error(video, WORKER_CRASHED, f"the worker process cutting it died (exit code "
                                                   f"{worker.process.exitcode}); the batch's other videos went on"), \
        time.perf_counter() - worker.started
    rest = unit.videos[unit.reported + 1:]
    spans = unit.spans if unit.spans is not None else unit.reference_spans
    if rest and spans is None:  # the reference itself was lost (or failed): as pipeline.split_videos does
        for view in rest:
            yield view, [], _error(view, SCENE_REFERENCE_FAILED,
                                   f"the reference view of scene {view.get('scene_id')} could not be split"), 0.0
    elif rest:
        units.append(_Unit(rest, spans))
