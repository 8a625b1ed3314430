"""Curation speed on one ~60 s 720p30 H.264 file, every stage side by side in one process.

    .venv/bin/python bench/curation.py [VIDEO]

(a) decode only, (b) transcode only (decode + libx264 at our default preset), (c) TransNetV2 as the
package's reference code runs it, (d) our shot detection on the same 48x27 frames, (e) the full
curation of the file through Dagster (landing + ledger hashing, then the curation run: ingest +
probe, split + transcode + scores, filter, captions, embeddings) on a fresh COSMOS_HOME and instance; the
process's one-time setup (imports, definitions, creating the instance) is outside the timing, as it is
outside every run of a long-lived daemon; (e1..) the run's steps as Dagster timed them. Then the split step
alone, each in a fresh process (so its peak memory is its own), through ``pipeline.split_video``'s code:
(f) the one-decode streaming split (what the asset runs), (g) the earlier two-decode split (48x27 decode and
shots first, then ``cut_clips`` at the planned spans). Prints each time, video-seconds per CPU-second for (e), and
the ratios (c)/(d), (e)/((b)+(d)), (f)/((b)+(d)) and (g)/((b)+(d)). Figures from this machine are recorded in
bench/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
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
    steps = {event.step_key: event.event_specific_data.duration_ms / 1000 for event in result.get_step_success_events()}
    return {"clips": result.output_for_node("video_clips_and_scores", "video_clips").height, "steps": steps}


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def reset_peak_rss() -> float:
    """Start the peak resident set over (Linux: ``clear_refs`` 5), so the peak read later is the split's own on
    top of what the process already held (imports, the model); returns what it holds now, in MiB."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    return _status_mib("VmHWM")


def split_alone(video: Path, mode: str) -> dict:
    """The split step on one file in this (fresh) process: ``stream`` is ``split_video`` as the asset runs it,
    ``two_pass`` the earlier split (shots from a 48x27 decode first, then one pass cutting at the planned spans).
    Returns wall and CPU seconds of the split, clips, the look-behind buffer's most frames and the peak RSS."""
    from cosmos_assets.common.artefacts import open_store
    from cosmos_assets.curation import pipeline
    from cosmos_assets.curation.clips import ClipFiles, cut_clips
    from cosmos_assets.curation.probe import ProbeLimits, probe_video
    from cosmos_assets.curation.shots import SplitConfig

    scratch = Path(tempfile.mkdtemp(prefix="cosmos-bench-split-"))
    try:
        detector = transnetv2.TransNetV2ShotDetector()
        detector.transition_probabilities(shots.decode_small_rgb(video)[:200])  # oneDNN kernels built before timing
        store = open_store(scratch)
        probe = probe_video(video, ProbeLimits())
        fps = probe.average_fps or probe.real_fps
        split, transcode = SplitConfig(), TranscodeConfig()
        stats: dict = {}
        resident_before = reset_peak_rss()
        before_wall, before_cpu = time.perf_counter(), cpu_seconds()
        if mode == "stream":
            from cosmos_assets.curation.clips import stream_split
            planner = shots.StreamingClipPlanner(split.threshold, fps, split)
            results = stream_split(video, detector, planner, lambda span: ClipFiles(
                scratch / f"{span.start_frame}.mp4", scratch / f"{span.start_frame}.jpg", scratch / f"{span.start_frame}.p.mp4"),
                fps, transcode, staging=scratch / "staging", stats=stats)
        else:
            spans = pipeline.plan_spans(video, probe.frames, fps, split, detector)
            results = cut_clips(video, spans, [(scratch / f"{s.start_frame}.mp4", scratch / f"{s.start_frame}.jpg")
                                               for s in spans], fps, transcode)
        wall, cpu = time.perf_counter() - before_wall, cpu_seconds() - before_cpu
        return {"mode": mode, "wall_s": wall, "cpu_s": cpu, "clips": len(results),
                "max_buffered_frames": stats.get("max_buffered_frames"),
                "rss_before_mib": resident_before, "peak_rss_mib": peak_rss_mib()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def split_in_fresh_process(video: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--split-alone", mode, str(video)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--split-alone":
        print(json.dumps(split_alone(Path(sys.argv[3]), sys.argv[2])))
        return
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
        streamed = split_in_fresh_process(video, "stream")
        two_pass = split_in_fresh_process(video, "two_pass")
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
        *[(f"(e{i}) step {step}", seconds, float("nan")) for i, (step, seconds) in enumerate(result["steps"].items(), 1)],
        (f"(f) split step alone, one decode, streaming ({streamed['clips']} clips)", streamed["wall_s"], streamed["cpu_s"]),
        (f"(g) split step alone, two decodes as before ({two_pass['clips']} clips)", two_pass["wall_s"], two_pass["cpu_s"]),
    ]
    print("\n| stage | wall s | CPU s |\n|---|---|---|")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")
    print(f"\n(c)/(d) = {c / d:.2f}x   (same cuts: {same_cuts})")
    print(f"(e)/((b)+(d)) = {e / (b + d):.2f}   (goal <= 1.3)")
    print(f"(f)/((b)+(d)) = {streamed['wall_s'] / (b + d):.2f}   (goal <= 1.15)")
    print(f"(g)/((b)+(d)) = {two_pass['wall_s'] / (b + d):.2f}   (g)/(f) = {two_pass['wall_s'] / streamed['wall_s']:.2f}")
    print(f"peak RSS during the split: (f) {streamed['peak_rss_mib']:.0f} MiB, {streamed['rss_before_mib']:.0f} MiB held "
          f"before it (look-behind buffer at most {streamed['max_buffered_frames']} frames); (g) "
          f"{two_pass['peak_rss_mib']:.0f} MiB, {two_pass['rss_before_mib']:.0f} MiB before")
    print(f"(e): {seconds / e_cpu:.2f} video-seconds per CPU-second, {seconds / e:.2f} video-seconds per wall second")


if __name__ == "__main__":
    main()
