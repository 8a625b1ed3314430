"""Frames larger than the stream header said: every decoding path stops with FrameTooLarge, early.

The inputs are real footage whose header and first frames are 64x64 and whose later frames are 16000x16
(MJPEG in Matroska, where the size is only in each JPEG) or 8000x16 (H.264 in MPEG-TS, a new sequence
header): over the 7680-pixel width limit, yet cheap to build and to refuse.
"""

import pytest

import media_factory
from cosmos_assets.common.artefacts import LocalStore
from cosmos_assets.common.decoding import FrameGuard, FrameLimits, FrameTooLarge, jpeg_size
from cosmos_assets.curation.clips import cut_clips
from cosmos_assets.curation.pipeline import split_video
from cosmos_assets.curation.probe import ProbeLimits, VideoRejected, probe_video
from cosmos_assets.curation.shots import SplitConfig, Span, decode_small_rgb
from cosmos_assets.models.frames import sample_frames
from cosmos_assets.synthetic.video import Geometry, read_video, read_window


@pytest.fixture(scope="module")
def growing(tmp_path_factory, samples):
    directory = tmp_path_factory.mktemp("growing")
    mjpeg = media_factory.write_growing_frames(directory / "grows.mkv", samples)
    h264 = media_factory.write_growing_frames(directory / "grows.ts", samples, codec="libx264", container_format="mpegts",
                                              large_size=(8000, 16))
    return mjpeg, h264


def test_mjpeg_frames_over_the_limit_are_rejected_at_the_probe_without_decoding_them(growing):
    mjpeg, _ = growing
    with pytest.raises(VideoRejected) as rejected:
        probe_video(mjpeg)
    assert rejected.value.error_class == "FrameTooLarge"
    assert "16000x16" in rejected.value.message and "7680x4320" in rejected.value.message


def test_every_decoding_path_stops_at_the_first_frame_over_the_limit(growing, tmp_path):
    _, h264 = growing
    probe = probe_video(h264)  # the header and the first frames are 64x64: the probe cannot know
    assert (probe.width, probe.height) == (64, 64)
    out = tmp_path / "clips"
    with pytest.raises(FrameTooLarge, match="8000x16"):
        cut_clips(h264, [Span(0, 15)], [(out / "c.mp4", out / "c.jpg")], 25.0)
    assert not list(out.rglob("*.mp4")) and not list(out.rglob(".tmp-*")), "no clip, whole or partial"
    for decode in (lambda: decode_small_rgb(h264),
                   lambda: sample_frames(h264, fps=25, max_frames=100),
                   lambda: read_video(h264),
                   lambda: read_window(h264, Geometry(64, 64, 25, 13))):
        with pytest.raises(FrameTooLarge) as raised:
            decode()
        assert raised.value.error_class == "FrameTooLarge"
    assert isinstance(raised.value, ValueError), "callers recording undecodable candidates record it too"
    # Within the limits, the same decode is fine: a legitimate size change is not refused.
    assert len(decode_small_rgb(h264, limits=FrameLimits(max_width=8000))) == 15


def test_a_video_whose_frames_grow_is_recorded_with_its_error_class_and_the_batch_goes_on(growing, samples, tmp_path):
    _, h264 = growing
    store = LocalStore(tmp_path / "artefacts")
    split = SplitConfig(method="fixed_stride", stride_s=0.4, min_clip_s=0.2)
    from cosmos_assets.curation.clips import TranscodeConfig

    rows, error = split_video({"content_hash": "grows", "landing_name": "grows.ts", "batch": "b", "raw_path": str(h264),
                               "average_fps": 25.0, "real_fps": 25.0, "frames": 15, "duration_s": 0.6},
                              store, split, TranscodeConfig(), None)
    assert rows == [] and error["error_class"] == "FrameTooLarge" and "8000x16" in error["error_message"]
    rows, error = split_video({"content_hash": "walk", "landing_name": "asl_walk.mkv", "batch": "b",
                               "raw_path": str(samples / "asl_walk.mkv"), "average_fps": 30.0, "real_fps": 30.0,
                               "frames": 89, "duration_s": 2.97},
                              store, SplitConfig(method="fixed_stride", stride_s=1.0, min_clip_s=0.5), TranscodeConfig(), None)
    assert error is None and len(rows) == 3


def test_pixel_rate_is_held_per_second_of_footage(samples):
    dashcam = samples / "dashcam_solid_white_right.mp4"  # 960x540 at 25 fps: 13 M pixels per second
    with pytest.raises(VideoRejected) as rejected:
        probe_video(dashcam, ProbeLimits(max_pixels_per_second=5e6))
    assert rejected.value.error_class == "PixelRateTooHigh"
    with pytest.raises(FrameTooLarge, match="pixels per second"):
        read_video(dashcam, limits=FrameLimits(max_pixels_per_second=5e6))
    assert len(read_video(dashcam, max_frames=60, limits=FrameLimits(max_pixels_per_second=14e6))[0]) == 60


def test_jpeg_size_reads_the_frame_header(samples, tmp_path):
    import av

    frames = media_factory.read_rgb_frames(samples / "asl_walk.mkv", limit=1, size=(200, 120))
    path = media_factory.write_video(tmp_path / "m.mkv", frames, codec="mjpeg", pix_fmt="yuvj420p")
    with av.open(str(path)) as container:
        packet = next(p for p in container.demux(video=0) if p.size)
    assert jpeg_size(bytes(packet)) == (200, 120)
    assert jpeg_size(b"not a jpeg") is None and jpeg_size(b"\xff\xd8\xff\xda") is None
    FrameGuard(codec="mjpeg").check_packet(packet)  # within the limits: nothing raised



def test_the_split_holds_frames_to_the_limits_the_video_was_accepted_under(growing, samples, tmp_path):
    """A configured limit is not only the probe's: raw_videos records it and the split applies the same one,
    stricter or looser than the defaults."""
    import hashlib

    from cosmos_assets.curation.clips import TranscodeConfig
    from cosmos_assets.curation.landing import BatchMember
    from cosmos_assets.curation.pipeline import ingest_member

    _, to_8000 = growing  # 64x64, then 8000x16 frames: over the default width limit of 7680
    to_640 = media_factory.write_growing_frames(tmp_path / "to_640.ts", samples, codec="libx264",
                                                container_format="mpegts", large_size=(640, 16))
    landing = tmp_path / "landing"
    landing.mkdir()
    store = LocalStore(tmp_path / "artefacts")
    split = SplitConfig(method="fixed_stride", stride_s=0.4, min_clip_s=0.2)
    cases = ((to_640, ProbeLimits(max_width=320), "FrameTooLarge"),  # stricter than the defaults
             (to_8000, ProbeLimits(max_width=8000), None))  # looser than the defaults
    for source, limits, expected_error in cases:
        data = source.read_bytes()
        (landing / source.name).write_bytes(data)
        member = BatchMember(relative_path=source.name.encode(), size=len(data), content_hash=hashlib.sha256(data).hexdigest())
        row = ingest_member(member, "b", landing, store, limits)
        assert row["status"] == "ok", "the header and first frames are 64x64: the probe cannot know"
        assert f'"max_width": {limits.max_width}' in row["frame_limits"]
        rows, error = split_video(row, store, split, TranscodeConfig(), None)
        if expected_error:
            assert rows == [] and error["error_class"] == expected_error and "640x16" in error["error_message"]
        else:
            assert error is None and rows, "accepted under a raised limit: the split does not refuse it by its defaults"
