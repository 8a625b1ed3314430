"""Curation speed on one ~60 s 720p30 H.264 file, every stage side by side in one process.

    .venv/bin/python bench/curation.py [VIDEO]

(a) decode only, (b) transcode only (decode + libx264 at our default preset), (c) TransNetV2 as the
package's reference code runs it, (d) our shot detection on the same 48x27 frames, (e) the full
curation of the file through Dagster (landing + ledger hashing, then the curation run: ingest +
probe, split + transcode + scores, filter) on a fresh COSMOS_HOME and instance; the process's
one-time setup (imports, definitions, creating the instance) is outside the timing, as it is
outside every run of a long-lived daemon. Prints each time, video-seconds per CPU-second for (e), and the
ratios (c)/(d) and (e)/((b)+(d)). Figures from this machine are recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shot_detection import OUT, build_test_video  # noqa: E402

from cosmos_assets.curation import shots  # noqa: E402
from cosmos_assets.models import transnetv2  # noqa: E402
from cosmos_assets.curation.clips import TranscodeConfig  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn, *args):
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn(*args)
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def decode_only(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def transcode_only(path: Path, destination: Path) -> int:
    config = TranscodeConfig()
    with av.open(str(path)) as source, av.open(str(destination), "w") as output:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        rate = Fraction(stream.average_rate)
        video = output.add_stream("libx264", rate=rate, options={"preset": config.preset, "crf": str(config.crf)})
        video.width, video.height, video.pix_fmt = stream.width, stream.height, "yuv420p"
        frames = 0
        for frame in source.decode(stream):
            frame.pts, frame.time_base = frames, 1 / rate
            output.mux(video.encode(frame))
            frames += 1
        output.mux(video.encode(None))
    return frames


def prepare_dagster(home: Path):
    """One-time process setup, outside the timing: imports, definitions, a fresh instance."""
    os.environ["COSMOS_HOME"] = str(home)
    import dagster as dg

    from cosmos_assets.definitions import build_definitions

    instance_context = dg.instance_for_test()
    return instance_context, instance_context.__enter__(), build_definitions().resolve_job_def("curation_job")


def full_curation(path: Path, home: Path, instance, job) -> dict:
    """What one landed file costs: landing → ledger batch (hashing) → the curation run."""
    from cosmos_assets.common.drop_zone import scan_drop_zone
    from cosmos_assets.curation.landing import LandingLedger
    from cosmos_assets.settings import CosmosPaths

    paths = CosmosPaths(home)
    paths.landing.mkdir(parents=True)
    shutil.copy(path, paths.landing / path.name)
    (batch,) = LandingLedger(paths.landing_ledger).plan_batches(
        paths.landing, scan_drop_zone(paths.landing, 0).settled, 50, 10**12
    )
    instance.add_dynamic_partitions("ingest_batches", [batch.key])
    result = job.execute_in_process(instance=instance, partition_key=batch.key)
    assert result.success
    return {"clips": result.output_for_node("video_clips_and_scores", "video_clips").height}


def main() -> None:
    video = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT / "shots_720p30_60s.mp4"
    if not video.exists():
        print(f"building {video} ...", flush=True)
        build_test_video(video)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        seconds = float(stream.frames / stream.average_rate)
        print(f"{video.name}: {stream.width}x{stream.height}, {stream.frames} frames, {seconds:.1f} s, "
              f"{os.cpu_count()} CPUs, torch threads {transnetv2.torch.get_num_threads()}")

    scratch = Path(tempfile.mkdtemp(prefix="cosmos-bench-"))
    try:
        _, a, a_cpu = timed(decode_only, video)
        _, b, b_cpu = timed(transcode_only, video, scratch / "transcoded.mp4")
        frames, _, _ = timed(shots.decode_small_rgb, video)
        detector = transnetv2.TransNetV2ShotDetector()
        # oneDNN builds its kernels on first use: warm both paths up before timing them
        transnetv2.reference_transition_probabilities(detector.model, frames[:200])
        detector.transition_probabilities(frames[:200])
        reference, c, c_cpu = timed(transnetv2.reference_transition_probabilities, detector.model, frames)
        ours, d, d_cpu = timed(detector.transition_probabilities, frames)
        instance_context, instance, job = prepare_dagster(scratch / "home")
        try:
            result, e, e_cpu = timed(full_curation, video, scratch / "home", instance, job)
        finally:
            instance_context.__exit__(None, None, None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    same_cuts = shots.cut_frames(shots.scenes_from_probabilities(reference, 0.4)) == shots.cut_frames(
        shots.scenes_from_probabilities(ours, 0.4)
    )
    rows = [
        ("(a) decode only", a, a_cpu),
        ("(b) transcode only (libx264 " + TranscodeConfig().preset + ")", b, b_cpu),
        ("(c) TransNetV2, package reference path", c, c_cpu),
        ("(d) TransNetV2, ours", d, d_cpu),
        (f"(e) full curation through Dagster ({result['clips']} clips)", e, e_cpu),
    ]
    print("\n| stage | wall s | CPU s |\n|---|---|---|")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")
    print(f"\n(c)/(d) = {c / d:.2f}x   (same cuts: {same_cuts})")
    print(f"(e)/((b)+(d)) = {e / (b + d):.2f}")
    print(f"(e): {seconds / e_cpu:.2f} video-seconds per CPU-second, {seconds / e:.2f} video-seconds per wall second")


if __name__ == "__main__":
    main()
