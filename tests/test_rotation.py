"""A phone's portrait video (a display matrix on landscape frames) is curated upright, everywhere.

The input is a real sample remuxed at test time into an MP4 whose display matrix turns it 90°; every
reader must give what numpy's rotation of the plain decode gives (PyAV's ``frame.rotation`` is the
counter-clockwise angle, like ``np.rot90``).
"""

import av
import cv2
import numpy as np
import pytest

import media_factory
from cosmos_assets.curation.clips import cut_clips
from cosmos_assets.curation.probe import probe_video
from cosmos_assets.curation.shots import Span, decode_small_rgb
from cosmos_assets.models.frames import sample_frames
from cosmos_assets.synthetic.video import read_video, video_size


@pytest.fixture(scope="module")
def dashcam(samples):
    return samples / "dashcam_solid_white_right.mp4"  # 960x540, 25 fps


@pytest.fixture(scope="module")
def rotated(tmp_path_factory, dashcam):
    directory = tmp_path_factory.mktemp("rotated")
    return {degrees: media_factory.remux_with_rotation(dashcam, directory / f"phone{degrees}.mp4", degrees)
            for degrees in (-90, 90)}


def turns(degrees):
    return degrees // 90 % 4


def test_the_probe_records_the_rotation_and_the_upright_size(rotated, dashcam):
    probe = probe_video(rotated[-90])
    assert probe.display_rotation == 270 and (probe.width, probe.height) == (540, 960)
    assert probe_video(rotated[90]).display_rotation == 90
    assert probe_video(dashcam).display_rotation == 0 and probe_video(dashcam).width == 960


@pytest.mark.parametrize("degrees", [-90, 90])
def test_clips_thumbnails_and_scores_are_upright(rotated, dashcam, tmp_path, degrees):
    (clip,) = cut_clips(rotated[degrees], [Span(0, 25)], [(tmp_path / "c.mp4", tmp_path / "c.jpg")], 25.0)
    assert (clip.width, clip.height) == (404, 720) and clip.frames == 25  # 540x960 within 1280x720
    with av.open(str(clip.path)) as container:
        decoded = [f for f in container.decode(video=0)]
    assert decoded[0].rotation == 0, "the clip is upright itself: no display matrix left to apply"
    source = media_factory.read_rgb_frames(dashcam, limit=25)
    for index in (0, 12, 24):
        expected = cv2.resize(np.rot90(source[index], turns(degrees)), (404, 720), interpolation=cv2.INTER_AREA)
        wrong = cv2.resize(np.rot90(source[index], turns(degrees) + 2), (404, 720), interpolation=cv2.INTER_AREA)
        got = decoded[index].to_ndarray(format="rgb24").astype(np.int16)
        assert np.abs(got - expected).mean() < 6 < np.abs(got - wrong).mean()
    thumbnail = cv2.imread(str(clip.thumbnail_path))
    assert thumbnail.shape[:2] == (round(192 * 720 / 404), 192)  # portrait, like the clip
    assert clip.signals.letterbox_fraction < 0.05 and clip.signals.pillarbox_fraction < 0.05


def test_every_reader_gives_the_numpy_rotation_of_the_plain_decode(rotated, dashcam):
    phone = rotated[-90]
    small = decode_small_rgb(phone)  # TransNetV2's 48x27, of the upright picture
    assert small.shape == (221, 27, 48, 3)
    assert np.array_equal(small, np.rot90(decode_small_rgb(dashcam, width=27, height=48), 3, axes=(1, 2)))
    upright = sample_frames(phone, fps=2.0, max_frames=4, max_side=448)
    plain = sample_frames(dashcam, fps=2.0, max_frames=4, max_side=448)
    assert upright.frames.shape[1:] == (448, 252, 3)
    assert np.array_equal(upright.frames, np.rot90(plain.frames, 3, axes=(1, 2)))
    frames, _ = read_video(phone, max_frames=5, max_width=320)
    assert frames.shape == (5, 568, 320, 3)
    assert np.array_equal(frames, np.rot90(read_video(dashcam, max_frames=5, max_width=568)[0], 3, axes=(1, 2)))
    assert video_size(phone) == (540, 960) and video_size(dashcam) == (960, 540)
