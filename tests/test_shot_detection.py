"""Shot detection and clip planning: TransNetV2 finds real cuts; spans follow cosmos-curate's rules."""

import pytest

import media_factory
from cosmos_assets.curation.pipeline import plan_spans
from cosmos_assets.curation.shots import SplitConfig, Span, plan_clips, plan_fixed_stride
from resources.models import ShotDetectorResource

TOLERANCE_FRAMES = 2


def precision_recall(found: list[int], truth: list[int], tolerance: int) -> tuple[float, float]:
    unmatched = list(truth)
    hits = 0
    for cut in found:
        match = next((t for t in unmatched if abs(t - cut) <= tolerance), None)
        if match is not None:
            unmatched.remove(match)
            hits += 1
    return hits / max(1, len(found)), hits / max(1, len(truth))


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory, samples):
    """Eleven real shots from four sources, alternating scenes, cut at known frames."""
    dash, bottle = samples / "dashcam_solid_white_right.mp4", samples / "bottle_conveyor.mp4"
    walk, book, again = samples / "asl_walk.mkv", samples / "asl_book.mkv", samples / "asl_again.mkv"
    pieces = [
        (dash, 0, 60), (bottle, 0, 55), (walk, 0, 70), (dash, 150, 65), (bottle, 600, 60), (book, 20, 75),
        (bottle, 1100, 50), (again, 0, 70), (dash, 80, 60), (bottle, 300, 65), (walk, 10, 60),
    ]
    path = tmp_path_factory.mktemp("cuts") / "concatenated.mp4"
    return path, media_factory.concatenate_clips(path, pieces)


def test_transnetv2_finds_known_cuts_with_precision_and_recall_of_at_least_0_9(cut_video):
    path, truth = cut_video
    detector = ShotDetectorResource().get()
    from cosmos_assets.curation.shots import cut_frames, decode_small_rgb, scenes_from_probabilities

    probabilities = detector.transition_probabilities(decode_small_rgb(path))
    found = cut_frames(scenes_from_probabilities(probabilities, SplitConfig().threshold))
    precision, recall = precision_recall(found, truth, TOLERANCE_FRAMES)
    print(f"cuts: truth {truth}, found {found}; precision {precision:.2f}, recall {recall:.2f}")
    assert precision >= 0.9 and recall >= 0.9


def test_clip_spans_are_trimmed_at_cuts_and_respect_minimum_length(cut_video):
    path, truth = cut_video
    split = SplitConfig(min_clip_s=1.0)  # the test shots are 2-3 s long
    spans = plan_spans(str(path), frames=0, fps=25, split=split, detector=ShotDetectorResource().get())
    trim = round(0.5 * 25)
    assert spans[0].start_frame == 0  # no trim at the start of the video
    assert len(spans) == len(truth) + 1 and all(span.frames >= 25 for span in spans)
    # no clip crosses a cut, and every clip keeps half a second away from the cuts it borders
    for span in spans:
        assert not any(span.start_frame <= cut < span.end_frame - 1 for cut in truth)
        assert all(abs(span.start_frame - (cut + 1)) >= trim - TOLERANCE_FRAMES for cut in truth if span.start_frame > 0)


def test_plan_clips_follows_cosmos_curate_defaults():
    config = SplitConfig()  # min 2 s, max 60 s, 0.5 s trimmed at cuts
    fps = 10
    scenes = [Span(0, 100), Span(102, 117), Span(119, 119 + 1300)]
    clips = plan_clips(scenes, total_frames=1419, fps=fps, config=config)
    assert clips[0] == Span(0, 95)  # start of video untrimmed, 5 frames trimmed before the cut
    # the 1.5 s shot is dropped; the 130 s shot becomes 60 s + 60 s + the 9.5 s remainder
    assert [c.frames for c in clips[1:]] == [600, 600, 95]
    assert clips[1].start_frame == 124 and clips[-1].end_frame == 1419  # end of video untrimmed


def test_fixed_stride_makes_10_s_clips_and_drops_a_short_tail():
    clips = plan_fixed_stride(total_frames=251, fps=10, config=SplitConfig(method="fixed_stride"))
    assert clips == [Span(0, 100), Span(100, 200), Span(200, 251)]
    assert plan_fixed_stride(total_frames=215, fps=10, config=SplitConfig()) == [Span(0, 100), Span(100, 200)]


def test_loading_transnetv2_leaves_global_torch_state_alone():
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    state = torch.random.get_rng_state()
    ShotDetectorResource(device="cpu", dtype="float32").get()
    assert torch.are_deterministic_algorithms_enabled() == before
    assert torch.equal(torch.random.get_rng_state(), state)
