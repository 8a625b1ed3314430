"""The one-decode split: shots are found while the clips are encoded, with the same clips a two-pass split cuts,
in bounded memory, and a proxy per clip that every later CPU signal reads instead of the clip."""

import hashlib
import os

import numpy as np
import pytest

import media_factory
from cosmos_assets.curation.clip_frames import clip_frame_set
from cosmos_assets.curation.clips import MAX_BUFFERED_FRAMES, PROXY_FPS, ClipFiles, cut_clips, stream_split
from cosmos_assets.common.artefacts import open_store
from cosmos_assets.curation.frame_hashes import clip_hashes, clip_hashes_of_frames
from cosmos_assets.curation.shots import (
    SplitConfig, Span, StreamingClipPlanner, decode_small_rgb, plan_clips, scenes_from_probabilities,
)
from cosmos_assets.models.frames import pick_samples, sample_frames
from cosmos_assets.models.transnetv2 import TransNetV2ShotDetector

FPS = 25


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory, samples):
    """Seven real shots from three sources, cut at known frames (320x180, 25 fps)."""
    dash, bottle, walk = samples / "dashcam_solid_white_right.mp4", samples / "bottle_conveyor.mp4", samples / "asl_walk.mkv"
    pieces = [(dash, 0, 60), (bottle, 0, 75), (walk, 0, 70), (dash, 150, 65), (bottle, 600, 60), (walk, 5, 80),
              (bottle, 300, 65)]
    path = tmp_path_factory.mktemp("cuts") / "concatenated.mp4"
    return path, media_factory.concatenate_clips(path, pieces)


@pytest.fixture(scope="module")
def detector():
    return TransNetV2ShotDetector(device="cpu", bf16=False)


def _push_in_uneven_pieces(stream, frames, seed=0):
    rng, out, start = np.random.default_rng(seed), [], 0
    while start < len(frames):
        size = int(rng.integers(1, 45))
        out.append(stream.push(frames[start:start + size]))
        start += size
    out.append(stream.finish())
    return np.concatenate(out)


def test_streamed_probabilities_equal_the_whole_video_in_one_window(cut_video, detector):
    frames = decode_small_rgb(cut_video[0])
    whole = TransNetV2ShotDetector(device="cpu", window_frames=len(frames) + 60).transition_probabilities(frames)
    streamed = _push_in_uneven_pieces(detector.stream(), frames)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_windowed_stream_equals_the_batch_path_with_the_same_windows(cut_video, detector):
    """The GPU's path (the model's own forward per window), run here on the CPU: 100 predicted frames per window."""
    frames = decode_small_rgb(cut_video[0])[:300]
    batch = TransNetV2ShotDetector(device="cpu", window_frames=150).transition_probabilities(frames)
    windowed = _push_in_uneven_pieces(detector.stream(window=150, windowed=True), frames, seed=1)
    np.testing.assert_allclose(windowed, batch, atol=1e-4)


def test_streaming_planner_gives_exactly_the_clips_of_plan_clips():
    rng = np.random.default_rng(7)
    for _ in range(400):
        total = int(rng.integers(0, 300))
        probabilities = np.where(rng.random(total) < rng.choice([0.01, 0.05, 0.2]), 0.9, 0.1)
        fps = float(rng.choice([10, 25, 30]))
        config = SplitConfig(min_clip_s=float(rng.choice([0.1, 1.0, 2.0])), max_clip_s=float(rng.choice([1.0, 3.0, 60.0])),
                             trim_at_cuts_s=float(rng.choice([0.0, 0.2, 0.5])))
        planner, events, start = StreamingClipPlanner(0.4, fps, config), [], 0
        while start < total:
            size = int(rng.integers(1, 40))
            events += planner.push(probabilities[start:start + size])
            start += size
        events += planner.finish()
        kept = [Span(e[1], e[2]) for e in events if e[0] == "end" and e[3]]
        assert kept == plan_clips(scenes_from_probabilities(probabilities, 0.4), total, fps, config)
        assert [e[1] for e in events if e[0] != "end"] == list(range(total))  # every frame decided once, in order
        clip_of = {e[1]: e[2] for e in events if e[0] == "frame"}
        assert all(clip_of[f] == span.start_frame for span in kept for f in range(span.start_frame, span.end_frame))


def _files(directory, span: Span) -> ClipFiles:
    name = f"{span.start_frame}-{span.end_frame}"
    return ClipFiles(directory / f"{name}.mp4", directory / f"{name}.jpg", directory / f"{name}.proxy.mp4")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_decode_split_cuts_at_the_real_shots_and_writes_what_cutting_at_those_spans_writes(cut_video, detector, tmp_path):
    path, cuts = cut_video
    config = SplitConfig(min_clip_s=1.0)
    streamed_dir, cut_dir = tmp_path / "streamed", tmp_path / "cut"
    stats: dict = {}
    results = stream_split(path, detector, StreamingClipPlanner(config.threshold, FPS, config),
                           lambda span: _files(streamed_dir, span), FPS, staging=streamed_dir / "staging", stats=stats)
    spans = [r.span for r in results]
    assert len(spans) == len(cuts) + 1  # one clip per shot
    trim = round(config.trim_at_cuts_s * FPS)
    for span in spans:  # no clip crosses a cut, and each keeps the trim away from the cuts it borders
        assert not any(span.start_frame - trim <= cut < span.end_frame + trim - 1 for cut in cuts)
    again = cut_clips(path, spans, [_files(cut_dir, span) for span in spans], FPS)
    for streamed, cut in zip(results, again):
        assert _sha(streamed.path) == _sha(cut.path) and _sha(streamed.proxy_path) == _sha(cut.proxy_path)
        assert streamed.signals == cut.signals and streamed.frames == cut.frames == streamed.span.frames
    assert os.listdir(streamed_dir / "staging") == []  # nothing left under temporary names
    # What waits for the detector is bounded (its delay and the trim, or the cap when it falls behind), not the
    # video (500 frames here).
    assert stats["max_buffered_frames"] <= MAX_BUFFERED_FRAMES < 500


def test_a_clip_the_shot_ends_too_soon_for_is_started_then_thrown_away(cut_video, detector, tmp_path):
    """With a 2 s minimum, only the shots of 2 s or more after trimming keep their clip: the others were started
    once their first frames were decided, and are thrown away when their cut comes too soon."""
    path, cuts = cut_video
    config = SplitConfig(min_clip_s=2.0)
    results = stream_split(path, detector, StreamingClipPlanner(config.threshold, FPS, config),
                           lambda span: _files(tmp_path, span), FPS, staging=tmp_path / "staging")
    assert 0 < len(results) < len(cuts) + 1 and all(r.span.frames >= 2.0 * FPS for r in results)
    kept = {p.name for p in tmp_path.glob("*.mp4")}
    assert kept == {f"{r.span.start_frame}-{r.span.end_frame}{suffix}" for r in results for suffix in (".mp4", ".proxy.mp4")}
    assert os.listdir(tmp_path / "staging") == []


def test_a_video_that_breaks_off_mid_stream_leaves_no_partial_clip(cut_video, detector, tmp_path):
    truncated = media_factory.truncate(cut_video[0], tmp_path / "truncated.mp4", 0.55)
    config = SplitConfig(min_clip_s=1.0)
    try:
        results = stream_split(truncated, detector, StreamingClipPlanner(config.threshold, FPS, config),
                               lambda span: _files(tmp_path / "out", span), FPS, staging=tmp_path / "staging")
    except Exception:  # a decoder error is the caller's to record; what matters is what is left on disk
        results = []
    assert not (tmp_path / "staging").exists() or os.listdir(tmp_path / "staging") == []
    written = sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) if (tmp_path / "out").exists() else []
    assert len(written) == 2 * len(results)


def test_the_proxy_gives_the_readers_the_sample_times_of_the_clip(cut_video, tmp_path):
    path, _ = cut_video
    (clip,) = cut_clips(path, [Span(60, 135)], [_files(tmp_path, Span(60, 135))], FPS)
    proxy = sample_frames(clip.proxy_path, None, 10**6)
    assert proxy.frames.shape[2] <= 448 and len(proxy) == int(np.ceil(clip.frames / FPS * PROXY_FPS))
    frame_set = clip_frame_set(open_store(tmp_path), {"proxy_path": str(clip.proxy_path)})
    # Captions (2 per second) and hashes (4 per second) get exactly the clip's sample times.
    for fps, max_frames, start, end in ((2.0, 256, 0.0, None), (2.0, 256, 1.0, 2.5), (4.0, 480, 0.0, None)):
        from_clip = sample_frames(clip.path, fps, max_frames, start, end, max_side=448)
        picked = pick_samples(frame_set, fps, max_frames, start, end)
        np.testing.assert_allclose(picked.timestamps, from_clip.timestamps, atol=1e-6)
        # the proxy holds the frames before the clip's H.264 encode: close to the decoded clip, not equal
        assert np.abs(picked.frames.astype(int) - from_clip.frames.astype(int)).mean() < 6
    # Other rates (8 embedding frames over a 3 s clip) get a frame within one proxy interval of the clip's.
    from_clip, picked = sample_frames(clip.path, 8 / 3.0, 8), pick_samples(frame_set, 8 / 3.0, 8)
    assert len(picked) == len(from_clip) and np.all(np.abs(picked.timestamps - from_clip.timestamps) < 1 / PROXY_FPS)
    by_file, by_proxy = clip_hashes(clip.path), clip_hashes_of_frames(frame_set, clip.frames / FPS)
    assert by_file.hashes.shape == by_proxy.hashes.shape
    distances = [int(np.unpackbits((a ^ b).view(np.uint8)).sum()) for a, b in zip(by_file.hashes[:, 0], by_proxy.hashes[:, 0])]
    assert max(distances) <= 24  # well within the near-exact stage's match distance
