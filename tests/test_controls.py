"""Controls as assets: extractors (Canny and blur real; depth and segmentation through tiny random-weight checkpoints
of the real architectures, labelled), user-supplied control videos beside the RGB video and their mismatch errors,
several ControlNets in one Transfer 2.5 denoising loop weighted as the arithmetic says, control-fidelity metrics,
and ``clip_controls`` feeding a multi-control round and its critic through Dagster."""

import json
import os
from pathlib import Path

import cv2
import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from cosmos_assets.controls import tiny_models
from cosmos_assets.controls.clip_controls import CONTROL_RECIPES, Window, control_weights, profile_recipe, thumbnail_strip
from cosmos_assets.controls.extractors import ExtractorSettings, depth_video, open_extractor, segmentation_colours
from cosmos_assets.controls.fidelity import depth_si_rmse, segmentation_miou
from cosmos_assets.controls.multi_controlnet import WeightedControlNets, chunk_bounds, prepare_controls, weighted_pipeline
from cosmos_assets.controls.user_controls import (
    ControlLengthMismatch, ControlRateMismatch, ControlSizeMismatch, ControlUnreadable, VideoFacts, check_control,
    control_name_kind, controls_beside, probe_control,
)
from cosmos_assets.curation.landing import LandingLedger
from cosmos_assets.common.drop_zone import scan_drop_zone
from cosmos_assets.models.checkpoints import TINY_LABEL, resolve_checkpoint
from cosmos_assets.models.generator import GenerationRequest, defaults_for, edge_control, load_generator
from cosmos_assets.models.tiny import ensure_tiny
from cosmos_assets.models.tiny_generators import TINY_CONTROLS, build_tiny_transfer25
from cosmos_assets.synthetic.video import read_video, write_mp4

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAMPLE = "dashcam_solid_white_right.mp4"


def frames_of(samples: Path, count: int, width: int, height: int) -> np.ndarray:
    """The first frames of the real dashcam sample, resized (uint8 T x H x W x 3)."""
    frames, _ = read_video(samples / SAMPLE, max_frames=count)
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


@pytest.fixture(scope="module")
def models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("control_models")


@pytest.fixture(scope="module")
def clip(samples) -> np.ndarray:
    return frames_of(samples, 5, 64, 48)


# --- extractors ------------------------------------------------------------------------------------------


def test_edge_control_is_canny_with_configurable_thresholds_and_says_which(clip):
    square = np.zeros((1, 48, 64, 3), np.uint8)
    square[:, 12:36, 16:48] = 200
    edges = open_extractor("edge").extract(square)
    assert edges.shape == square.shape and set(np.unique(edges)) == {0, 255}
    assert edges[0, 10:14, 30, 0].max() == 255 and edges[0, 16:32, 20:44].max() == 0  # on the border, not inside
    low, high = open_extractor("edge", ExtractorSettings(canny_low=20, canny_high=60)), open_extractor("edge")
    assert (low.extract(clip) > 0).sum() > (high.extract(clip) > 0).sum()  # lower thresholds keep weaker edges
    assert low.identity.version == "canny-20-60" and not low.identity.random_weights
    with pytest.raises(ValueError, match="low <= high"):
        open_extractor("edge", ExtractorSettings(canny_low=200, canny_high=100))


def test_blur_control_smooths_every_frame(clip):
    blurred = open_extractor("blur").extract(clip)
    assert blurred.shape == clip.shape
    assert np.abs(np.diff(blurred.astype(float), axis=2)).mean() < 0.5 * np.abs(np.diff(clip.astype(float), axis=2)).mean()


def test_depth_and_segmentation_run_tiny_checkpoints_of_the_real_architectures_and_are_labelled(models_root, clip):
    settings = ExtractorSettings(device="cpu")
    depth, seg = open_extractor("depth", settings, models_root), open_extractor("seg", settings, models_root)
    assert (depth.identity.name, depth.identity.random_weights) == ("tiny:depth", True)
    assert (seg.identity.name, seg.identity.random_weights) == ("tiny:segmentation", True)
    assert "random weights" in depth.identity.label
    assert type(depth.model).__name__ == "DepthAnythingForDepthEstimation"
    assert type(seg.model).__name__ == "SegformerForSemanticSegmentation"
    # Saved as safetensors and marked: loaded exactly as real weights are.
    for name in ("depth", "segmentation"):
        folder = ensure_tiny(models_root, name)
        assert resolve_checkpoint(str(folder), role=name).tiny_random
        assert not list(folder.glob("*.bin")) and list(folder.glob("*.safetensors"))
    grey = depth.extract(clip)
    assert grey.shape == clip.shape and (grey[..., 0] == grey[..., 2]).all()
    assert grey.min() == 0 and grey.max() == 255  # stretched over the clip, not per frame
    labels = seg.labels(clip)
    assert labels.shape == clip.shape[:3] and labels.max() < tiny_models.TINY_SEGMENTATION_CLASSES
    assert np.array_equal(seg.extract(clip), segmentation_colours(labels))


def test_depth_video_keeps_one_scale_for_the_whole_clip():
    depth = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 3.0)])
    video = depth_video(depth)
    assert video[0].max() == 0 and video[1].min() == 255


# --- user-supplied controls ------------------------------------------------------------------------------


def test_the_naming_rule_finds_controls_beside_their_rgb_video_only(tmp_path):
    assert control_name_kind("drive_01.depth.mp4") == (b"drive_01", "depth")
    assert control_name_kind(b"rigs/a.b.SEG.mkv") == (b"a.b", "seg")
    assert control_name_kind("drive_01.mp4") is None and control_name_kind("drive_01.normals.mp4") is None
    zone = tmp_path / "landing"
    (zone / "day").mkdir(parents=True)
    for name in ("drive.mp4", "drive.depth.mp4", "drive.hdmap.mov", "drive2.seg.mp4", "notes.txt"):
        (zone / "day" / name).write_bytes(b"x")
    os.symlink(zone / "day" / "drive.depth.mp4", zone / "day" / "drive.lidar.mp4")  # links are never followed
    assert controls_beside(zone, b"day/drive.mp4") == {"depth": b"day/drive.depth.mp4", "hdmap": b"day/drive.hdmap.mov"}
    assert controls_beside(zone, b"../outside/drive.mp4") == {}  # a name that leaves the zone finds nothing
    assert controls_beside(zone, b"gone/drive.mp4") == {}


def test_control_videos_are_not_ingested_as_raw_videos(tmp_path):
    zone = tmp_path / "landing"
    zone.mkdir()
    for name in ("drive.mp4", "drive.depth.mp4", "drive.seg.mp4"):
        (zone / name).write_bytes(name.encode() * 10)
    ledger = LandingLedger(tmp_path / "ledger.sqlite")
    batches = ledger.plan_batches(zone, scan_drop_zone(zone, settle_seconds=0, now=1e12).settled, 10, 10**9)
    assert [m.name for batch in batches for m in batch.members] == ["drive.mp4"]


def test_a_control_that_does_not_line_up_with_its_rgb_video_gets_a_clear_error_class(tmp_path, clip):
    rgb = VideoFacts(frames=5, width=64, height=48, fps=16.0)
    cases = {"short.mp4": (clip[:3], 16), "small.mp4": (clip[:, :32, :32], 16), "fast.mp4": (clip, 25)}
    for name, (frames, fps) in cases.items():
        write_mp4(tmp_path / name, frames, fps)
    check_control(probe_control(write_mp4(tmp_path / "ok.mp4", clip, 16)), rgb, "depth")  # lined up: no error
    errors = {}
    for name in cases:
        with pytest.raises((ControlLengthMismatch, ControlSizeMismatch, ControlRateMismatch)) as caught:
            check_control(probe_control(tmp_path / name), rgb, "depth")
        errors[name] = caught.value.error_class
    assert errors == {"short.mp4": "ControlLengthMismatch", "small.mp4": "ControlSizeMismatch", "fast.mp4": "ControlRateMismatch"}
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    with pytest.raises(ControlUnreadable):
        probe_control(tmp_path / "broken.mp4")


# --- several ControlNets in one loop ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def transfer(tmp_path_factory):
    checkpoint = resolve_checkpoint(str(build_tiny_transfer25(tmp_path_factory.mktemp("transfer") / "t")), role="generator")
    defaults = defaults_for("transfer2.5", height=48, width=64, steps=2)
    return load_generator(checkpoint, "transfer2.5", device="cpu", defaults=defaults)


def test_the_tiny_transfer_checkpoint_ships_depth_and_segmentation_controlnets(transfer):
    assert set(transfer.controls) == set(TINY_CONTROLS) >= {"edge", "blur", "depth", "seg"}


def test_one_control_at_weight_one_through_the_weighted_loop_is_the_plain_pipeline_bit_for_bit(transfer, clip):
    edge = edge_control(clip)
    controlnet, _ = transfer._controlnet("edge")
    plain = transfer._with_controlnet(controlnet)
    weighted = weighted_pipeline(transfer.pipeline, {"edge": controlnet})
    pil = [Image.fromarray(f) for f in edge]
    common = dict(prompt="a street", height=48, width=64, num_frames=5, num_frames_per_chunk=5, num_inference_steps=2,
                  output_type="latent")
    expected = plain(controls=pil, controls_conditioning_scale=1.0, generator=torch.Generator().manual_seed(3), **common).frames
    first = prepare_controls(weighted, [("edge", pil, 1.0)], height=48, width=64, num_frames=5, frames_per_chunk=5, seed=3,
                             device=torch.device("cpu"))
    got = weighted(controls=first, controls_conditioning_scale=1.0, generator=torch.Generator().manual_seed(3), **common).frames
    assert torch.equal(got, expected)


def test_weights_combine_controlnet_residuals_linearly_at_the_transformer(transfer, clip, monkeypatch):
    edge, depth = edge_control(clip), np.repeat(clip.mean(axis=-1, keepdims=True).astype(np.uint8), 3, axis=-1)
    single = transfer.generate(GenerationRequest(prompt="p", seed=1, controls={"edge": (edge, 1.0)}))
    # A second control at weight 0 adds exact zeros: the same video as the single control.
    zero = transfer.generate(GenerationRequest(prompt="p", seed=1, controls={"edge": (edge, 1.0), "depth": (depth, 0.0)}))
    assert np.array_equal(zero.frames, single.frames)
    # Watch what the weighted loop hands the transformer (the real forward runs; its inputs and output are kept).
    captured = []
    forward = WeightedControlNets.forward

    def watched(self, **kwargs):
        output = forward(self, **kwargs)
        captured.append((self, kwargs, output[0]))
        return output

    monkeypatch.setattr(WeightedControlNets, "forward", watched)
    multi = transfer.generate(GenerationRequest(prompt="p", seed=1, controls={"edge": (edge, 0.7), "depth": (depth, 0.4)}))
    assert not np.array_equal(multi.frames, single.frames)
    assert multi.settings["controls"] == {"edge": 0.7, "depth": 0.4} and set(multi.settings["controlnet"]) == {"edge", "depth"}
    assert multi.settings["tiny_random"] and multi.settings["label"] == TINY_LABEL
    # At the hook: the residuals are a * r_edge + b * r_depth, each r the ControlNet's own at weight 1.
    weighted, kwargs, blocks = captured[0]
    inputs = {k: v for k, v in kwargs.items() if k not in ("controls_latents", "conditioning_scale", "return_dict")}
    with torch.no_grad():
        r_edge = weighted.controlnets["edge"](controls_latents=kwargs["controls_latents"], conditioning_scale=1.0,
                                              return_dict=False, **inputs)[0]
        r_depth = weighted.controlnets["depth"](controls_latents=weighted.plan.latents["depth"], conditioning_scale=1.0,
                                                return_dict=False, **inputs)[0]
    assert len(blocks) == len(r_edge) > 0
    for block, a, b in zip(blocks, r_edge, r_depth):
        torch.testing.assert_close(block, 0.7 * a + 0.4 * b, rtol=1e-5, atol=1e-6)


def test_extra_controls_are_cut_into_the_pipelines_own_chunks(transfer, samples):
    assert chunk_bounds(93, 93) == [(0, 93)]
    assert chunk_bounds(9, 5) == [(0, 5), (4, 9)]  # each chunk after the first repeats the last frame before it
    # A 9-frame request in 5-frame chunks: every chunk gets the extra control's latents of its own frames.
    chunked = load_generator(transfer.checkpoint, "transfer2.5", device="cpu",
                             defaults=defaults_for("transfer2.5", height=48, width=64, steps=2, num_frames_per_chunk=5))
    clip = frames_of(samples, 9, 64, 48)
    edge, blur = edge_control(clip), open_extractor("blur").extract(clip)
    alone = chunked.generate(GenerationRequest(prompt="p", seed=2, controls={"edge": (edge, 1.0)}))
    both = chunked.generate(GenerationRequest(prompt="p", seed=2, controls={"edge": (edge, 1.0), "blur": (blur, 0.8)}))
    zero = chunked.generate(GenerationRequest(prompt="p", seed=2, controls={"edge": (edge, 1.0), "blur": (blur, 0.0)}))
    assert alone.frames.shape == both.frames.shape == (9, 48, 64, 3)
    assert np.array_equal(zero.frames, alone.frames) and not np.array_equal(both.frames, alone.frames)


def test_requests_with_controls_the_generator_cannot_run_are_refused(transfer, clip):
    from cosmos_assets.models.checkpoints import ModelError

    with pytest.raises(ModelError, match="hdmap"):
        transfer.generate(GenerationRequest(prompt="p", controls={"hdmap": (clip, 1.0)}))
    with pytest.raises(ValueError, match="3 frames"):
        transfer.generate(GenerationRequest(prompt="p", num_frames=5, controls={"edge": (clip, 1.0), "depth": (clip[:3], 0.5)}))


# --- fidelity --------------------------------------------------------------------------------------------


def test_depth_error_is_scale_invariant_and_grows_with_wrong_structure():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 10.0, (3, 16, 16))
    assert depth_si_rmse(depth * 3.7, depth) == pytest.approx(0.0, abs=1e-9)
    noisy = depth * rng.uniform(0.5, 1.5, depth.shape)
    assert depth_si_rmse(noisy, depth) > 0.1
    assert depth_si_rmse(depth[:, ::-1], depth) > depth_si_rmse(noisy, depth) > 0


def test_segmentation_agreement_is_one_when_identical_and_lower_when_perturbed():
    labels = np.zeros((2, 8, 8), np.int32)
    labels[:, :, 4:] = 1
    labels[:, 6:] = 2
    assert segmentation_miou(labels, labels) == 1.0
    perturbed = labels.copy()
    perturbed[:, :2, :2] = 2
    assert 0.5 < segmentation_miou(perturbed, labels) < 1.0
    assert segmentation_miou(np.zeros_like(labels), labels) < segmentation_miou(perturbed, labels)


def test_recipes_and_weights():
    assert CONTROL_RECIPES["weather"] == {"depth": 0.9, "seg": 0.9} and CONTROL_RECIPES["cg_to_real"] == {"edge": 0.5, "depth": 0.5}
    assert control_weights(None, None, "edge", 0.9) == {"edge": 0.9}
    assert control_weights("weather", None, "edge", 0.9) == {"depth": 0.9, "seg": 0.9}
    assert control_weights("weather", {"blur": 0.3}, "edge", 0.9) == {"blur": 0.3}
    assert control_weights("single", None, "edge", 0.9) == {"edge": 0.9}
    with pytest.raises(ValueError, match="recipe"):
        control_weights("sunny", None, "edge", 0.9)
    # The cookbook's weather recipe where real depth / segmentation models run; one control on a laptop.
    assert profile_recipe("gpu") == profile_recipe("k8s") == "weather" and profile_recipe("local") is None


def test_thumbnail_strip_shows_frames_side_by_side(clip):
    strip = thumbnail_strip(clip, frames=3, height=24)
    assert strip.shape == (24, 3 * 32, 3)


# --- through Dagster -------------------------------------------------------------------------------------

ROUND = "round-controls"


@pytest.fixture(scope="module")
def controls_world(tmp_path_factory, samples):
    """A COSMOS_HOME whose curated dataset holds one clip cut from a landed RGB video with a user depth control
    (lined up) and a user LiDAR projection (the wrong size) beside it in the landing zone."""
    from cosmos_assets.settings import CosmosPaths

    paths = CosmosPaths(tmp_path_factory.mktemp("controls_world") / "home")
    rgb = frames_of(samples, 24, 96, 64)
    (paths.landing / "rig").mkdir(parents=True)
    raw = write_mp4(paths.home / "raw.mp4", rgb, 16)
    write_mp4(paths.landing / "rig" / "drive.depth.mp4", 255 - rgb, 16)
    write_mp4(paths.landing / "rig" / "drive.lidar.mp4", rgb[:, :32, :48], 16)
    probe = probe_control(raw)
    (paths.tables / "raw_videos").mkdir(parents=True)
    pl.DataFrame([{"content_hash": "rgb-hash", "landing_name": "rig/drive.mp4", "status": "ok", "frames": probe.frames,
                   "width": probe.width, "height": probe.height, "average_fps": probe.fps}]).write_parquet(
        paths.tables / "raw_videos" / "batch-1.parquet")
    clip_row = {"clip_id": "drive-clip-0", "source_name": "rig/drive.mp4", "source_hash": "rgb-hash", "batch": "batch-1",
                "path": str(raw), "caption": "A car on a road.", "start_s": 0.0, "end_s": 1.5, "split": "train",
                "dataset_version": "ds-test", "tiny_random": False}
    (paths.tables / "curated_dataset").mkdir(parents=True)
    pl.DataFrame([clip_row]).write_parquet(paths.tables / "curated_dataset" / "all.parquet")
    with dg.instance_for_test() as instance:
        yield paths, instance


def test_clip_controls_feed_a_multi_control_round_and_its_critic(controls_world, monkeypatch):
    from cosmos_assets.controls.assets import clip_controls
    from cosmos_assets.synthetic.assets import critique_scores, generation_prompts, generation_rounds, synthetic_videos
    from resources import CosmosStorage, VisionLanguageResource
    from resources.generator import VideoGeneratorResource
    from resources.storage import ParquetTableIOManager
    from resources.synthetic import SyntheticSettings

    monkeypatch.setenv("COSMOS_PROFILE", "local")  # tiny depth / segmentation models
    paths, instance = controls_world
    home = str(paths.home)
    instance.add_dynamic_partitions(generation_rounds.name, [ROUND])
    resources = {"io_manager": ParquetTableIOManager(home=home), "storage": CosmosStorage(home=home),
                 "synthetic": SyntheticSettings(), "vlm": VisionLanguageResource(home=home, model="tiny:vlm", device="cpu"),
                 "generator": VideoGeneratorResource(home=home, kind="transfer2.5", model="tiny:transfer2.5", device="cpu", steps=2)}
    run_config = {
        "generation_prompts": {"config": {"conditions": ["rain"], "max_width": 64, "seconds": 0.35, "fps": 16,
                                          "seeds_per_request": 1, "prompt_writer": "template",
                                          "control_weights": {"edge": 0.5, "depth": 0.9, "seg": 0.9}}},
        "clip_controls": {"config": {"extra_kinds": ["lidar"], "device": "cpu"}},
        "synthetic_videos": {"config": {"backend": "generator"}},
    }
    result = dg.materialize(
        [dg.AssetSpec("curated_dataset").with_io_manager_key("io_manager"), dg.AssetSpec("raw_videos"),
         generation_prompts, clip_controls, synthetic_videos, critique_scores],
        selection=[generation_prompts, clip_controls, synthetic_videos, critique_scores], partition_key=ROUND,
        instance=instance, resources=resources, run_config={"ops": run_config}, raise_on_error=False)
    assert result.success
    controls = {r["kind"]: r for r in pl.read_parquet(paths.tables / "clip_controls" / f"{ROUND}.parquet").to_dicts()}
    assert set(controls) == {"edge", "depth", "seg", "lidar"}
    assert (controls["edge"]["origin"], controls["edge"]["extractor"], controls["edge"]["random_weights"]) == \
        ("extracted", "opencv-canny", False)
    assert (controls["depth"]["origin"], controls["depth"]["user_file"]) == ("user", "rig/drive.depth.mp4")
    assert (controls["seg"]["extractor"], controls["seg"]["random_weights"]) == ("tiny:segmentation", True)
    # The wrong-size LiDAR projection is set aside with its error class; everything else went on.
    assert (controls["lidar"]["status"], controls["lidar"]["error_class"]) == ("rejected", "ControlSizeMismatch")
    [request] = pl.read_parquet(paths.tables / "generation_prompts" / f"{ROUND}.parquet").to_dicts()
    window = Window.of_request(request)
    for kind in ("edge", "depth", "seg"):
        video, fps = read_video(controls[kind]["path"])
        assert video.shape == (window.num_frames, window.height, window.width, 3) and fps == window.fps
        assert controls[kind]["window_id"] == window.id and Path(controls[kind]["strip_path"]).is_file()
    # The user's depth is the inverted RGB window (frame for frame with the raw video), not an extraction.
    source, _ = read_video(request["source_path"], max_frames=1)
    depth_frame = read_video(controls["depth"]["path"], max_frames=1)[0][0]
    expected = 255 - cv2.resize(source[0], (window.width, window.height), interpolation=cv2.INTER_AREA)
    assert np.abs(depth_frame.astype(int) - expected.astype(int)).mean() < 12
    metadata = result.asset_materializations_for_node("clip_controls")[0].metadata
    assert metadata["random_weights"].value is True and "data:image/jpeg;base64," in metadata["strip_seg"].value
    assert metadata["rejected_by_error_class"].value == {"ControlSizeMismatch": 1}

    [candidate] = pl.read_parquet(paths.tables / "synthetic_videos" / f"{ROUND}.parquet").to_dicts()
    settings = json.loads(candidate["settings"])
    assert candidate["status"] == "ok" and settings["controls"] == {"edge": 0.5, "depth": 0.9, "seg": 0.9}
    assert set(settings["controlnet"]) == {"edge", "depth", "seg"} and candidate["tiny_random"]

    [score] = pl.read_parquet(paths.tables / "critique_scores" / f"{ROUND}.parquet").to_dicts()
    fidelity = {entry["control"]: entry for entry in json.loads(score["control_fidelity"])}
    assert set(fidelity) == {"edge", "depth", "seg"}
    assert fidelity["edge"]["value"] == score["edge_f1"] and fidelity["edge"]["extractor"]["name"] == "metric-critic canny-f1"
    assert fidelity["depth"]["metric"] == "depth_si_rmse" and fidelity["depth"]["value"] == pytest.approx(score["depth_si_rmse"])
    assert score["depth_si_rmse"] >= 0 and 0 <= score["seg_miou"] <= 1
    # The round's depth was the user's, so the critic names the profile's extractor it measured depth with.
    assert fidelity["depth"]["extractor"] == {"kind": "depth", "name": "tiny:depth",
                                              "version": fidelity["depth"]["extractor"]["version"], "random_weights": True}
    assert fidelity["seg"]["extractor"]["name"] == controls["seg"]["extractor"]
