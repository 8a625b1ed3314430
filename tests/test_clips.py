"""Clips: H.264 MP4 files written atomically with ids, sizes and rates as configured; signals that mean something."""

import av
import numpy as np
import pytest

import media_factory
from cosmos_assets.curation.clips import TranscodeConfig, cut_clips, output_fps, output_size
from cosmos_assets.curation.pipeline import clip_id_for
from cosmos_assets.curation.scores import FilterThresholds, rejection_reasons
from cosmos_assets.curation.shots import Span


def clip_destinations(directory, count):
    return [(directory / f"clip{i}.mp4", directory / f"clip{i}.jpg") for i in range(count)]


def test_clips_are_h264_yuv420p_with_the_planned_frames(tmp_path, samples):
    spans = [Span(0, 50), Span(60, 110), Span(150, 221)]
    results = cut_clips(samples / "dashcam_solid_white_right.mp4", spans, clip_destinations(tmp_path, 3), 25.0)
    assert [r.frames for r in results] == [50, 50, 71]
    for result in results:
        with av.open(str(result.path)) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
            assert (stream.width, stream.height) == (960, 540) and float(stream.average_rate) == 25
            assert sum(1 for _ in container.decode(stream)) == result.frames
        assert result.thumbnail_path.stat().st_size > 1000
    assert not list(tmp_path.glob(".tmp-*")), "no temporary file may be left behind"


def test_resolution_and_frame_rate_are_capped_keeping_the_aspect_ratio(tmp_path, samples):
    config = TranscodeConfig(max_width=480, max_height=480, max_fps=15)
    (result,) = cut_clips(samples / "asl_walk.mkv", [Span(0, 89)], clip_destinations(tmp_path, 1), 30.0, config)
    assert (result.width, result.height) == (480, 360)
    assert result.fps == 15 and result.frames == 45
    assert output_size(1921, 1081, TranscodeConfig()) == (1278, 720)  # even sizes for yuv420p
    assert output_fps(59.94, TranscodeConfig()) == pytest.approx((29.97, 2))


def test_clip_ids_are_deterministic_and_differ_by_span():
    assert clip_id_for("abc", Span(0, 50)) == clip_id_for("abc", Span(0, 50))
    assert clip_id_for("abc", Span(0, 50)) != clip_id_for("abc", Span(0, 51))
    assert clip_id_for("abc", Span(0, 50)) != clip_id_for("abd", Span(0, 50))


def test_a_failing_decode_leaves_no_partial_clip(tmp_path, samples):
    truncated = media_factory.truncate(samples / "bottle_conveyor.mp4", tmp_path / "cut.mp4", 0.5)
    destinations = clip_destinations(tmp_path / "out", 2)
    try:
        results = cut_clips(truncated, [Span(0, 100), Span(900, 1100)], destinations, 29.83)
    except Exception:
        results = []
    for result in results:  # whatever was written is complete and playable
        with av.open(str(result.path)) as container:
            assert sum(1 for _ in container.decode(video=0)) == result.frames
    assert not list((tmp_path / "out").rglob(".tmp-*"))


def signals_of(tmp_path, frames, fps=10):
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = media_factory.write_video(tmp_path / "source.mp4", frames, fps=fps)
    (result,) = cut_clips(source, [Span(0, len(frames))], clip_destinations(tmp_path, 1), fps)
    return {**result.signals.as_row(), "duration_s": result.frames / result.fps}


def test_real_footage_passes_the_default_filter(tmp_path, samples):
    frames = media_factory.read_rgb_frames(samples / "dashcam_solid_white_right.mp4", limit=75, size=(480, 270))
    row = signals_of(tmp_path, frames, fps=25)
    assert rejection_reasons(row, FilterThresholds()) == []
    assert row["motion_global"] > 0.005 and row["sharpness"] > 50


def test_a_frozen_picture_is_rejected_as_static(tmp_path, samples):
    (frame,) = media_factory.read_rgb_frames(samples / "bottle_conveyor.mp4", limit=1, size=(320, 180))
    row = signals_of(tmp_path, [frame] * 30)
    assert row["motion_global"] < 1e-4
    assert [r.split(":")[0] for r in rejection_reasons(row, FilterThresholds())] == ["static"]


def test_dark_letterboxed_and_blurred_clips_are_rejected_with_their_reasons(tmp_path, samples):
    frames = media_factory.read_rgb_frames(samples / "dashcam_solid_white_right.mp4", limit=30, size=(320, 180))
    dark = [(f * 0.05).astype(np.uint8) for f in frames]
    assert "too_dark" in {r.split(":")[0] for r in rejection_reasons(signals_of(tmp_path / "d", dark), FilterThresholds())}
    boxed = [np.pad(f[45:135], ((45, 45), (0, 0), (0, 0))) for f in frames]  # bars: half the height
    row = signals_of(tmp_path / "l", boxed)
    assert row["letterbox_fraction"] == pytest.approx(0.5, abs=0.05) and row["pillarbox_fraction"] < 0.05
    import cv2

    blurred = [cv2.GaussianBlur(f, (0, 0), 6) for f in frames]
    sharp_row, blur_row = signals_of(tmp_path / "s", frames), signals_of(tmp_path / "b", blurred)
    assert blur_row["sharpness"] < sharp_row["sharpness"] / 5
    assert "blurry" in {r.split(":")[0] for r in rejection_reasons(blur_row, FilterThresholds())}


def test_variable_frame_rate_sources_keep_their_real_timing(tmp_path, samples):
    """4 s filmed at 10 fps, then 4 s at 30 fps: clips must last as long as what they show."""
    from fractions import Fraction

    frames = media_factory.read_rgb_frames(samples / "bottle_conveyor.mp4", limit=160, size=(320, 180))
    pts = [i * 100 for i in range(40)] + [4000 + round(i * 1000 / 30) for i in range(120)]
    source = media_factory.write_video(tmp_path / "vfr.mp4", frames, pts=pts, time_base=Fraction(1, 1000))
    average_fps = 160 / 8.0
    slow, fast = cut_clips(source, [Span(0, 40), Span(40, 160)], clip_destinations(tmp_path, 2), average_fps)
    assert (slow.start_s, slow.end_s) == pytest.approx((0.0, 4.0), abs=0.06)
    assert (fast.start_s, fast.end_s) == pytest.approx((4.0, 8.0), abs=0.06)
    for clip in (slow, fast):  # output is constant-rate at the average rate, with the real duration
        assert clip.fps == average_fps
        assert clip.frames / clip.fps == pytest.approx(4.0, abs=0.1)
