"""Probing: every kind of bad input is rejected with a clear error class; odd valid input is accepted."""

import pytest

import media_factory
from cosmos_assets.curation.probe import ProbeLimits, VideoRejected, probe_video


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, samples):
    directory = tmp_path_factory.mktemp("bad")
    return directory, media_factory.build_bad_inputs(directory, samples)


@pytest.fixture(scope="module")
def odd_inputs(tmp_path_factory, samples):
    directory = tmp_path_factory.mktemp("odd")
    return directory, media_factory.build_odd_valid_inputs(directory, samples)


def test_each_bad_input_is_rejected_with_its_error_class_and_a_message(bad_inputs):
    directory, expected = bad_inputs
    for name, error_class in expected.items():
        with pytest.raises(VideoRejected) as rejected:
            probe_video(directory / name)
        assert rejected.value.error_class == error_class, (name, rejected.value)
        assert len(rejected.value.message) > 10


def test_limits_reject_oversized_resolution_duration_and_bytes(samples):
    dashcam = samples / "dashcam_solid_white_right.mp4"  # 960x540, 8.84 s, 2.6 MB
    for limits, error_class in [
        (ProbeLimits(max_width=640), "ResolutionTooLarge"),
        (ProbeLimits(max_height=480), "ResolutionTooLarge"),
        (ProbeLimits(max_duration_s=5), "DurationTooLong"),
        (ProbeLimits(max_file_bytes=1_000_000), "FileTooLarge"),
    ]:
        with pytest.raises(VideoRejected) as rejected:
            probe_video(dashcam, limits)
        assert rejected.value.error_class == error_class


def test_real_samples_probe_with_their_true_properties(samples):
    dashcam = probe_video(samples / "dashcam_solid_white_right.mp4")
    assert (dashcam.codec, dashcam.width, dashcam.height, dashcam.frames) == ("h264", 960, 540, 221)
    assert dashcam.average_fps == 25 and dashcam.audio_streams == 1 and not dashcam.variable_frame_rate
    assert dashcam.duration_s == pytest.approx(8.84, abs=0.05)
    signing = probe_video(samples / "asl_walk.mkv")
    assert signing.container.startswith("matroska") and signing.frames == 89 and signing.average_fps == 30


def test_variable_rate_ten_bit_webm_and_mov_are_accepted_and_described(odd_inputs):
    directory, names = odd_inputs
    probes = {name: probe_video(directory / name) for name in names}
    assert probes["variable_rate.mp4"].variable_frame_rate
    assert not probes["camera.mov"].variable_frame_rate
    assert probes["ten_bit.mp4"].bit_depth == 10 and probes["ten_bit.mp4"].pixel_format == "yuv420p10le"
    assert probes["vp9.webm"].codec == "vp9" and probes["vp9.webm"].container.startswith("matroska")
    assert probes["camera.mov"].container.startswith("mov")
    assert all(p.frames == 75 for p in probes.values())
