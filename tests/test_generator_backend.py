"""The generator role: Cosmos Predict2 / Predict 2.5 / Transfer 2.5 through diffusers, on tiny random checkpoints.

The checkpoints are built once per session with the real architectures and saved with ``save_pretrained``;
every test loads them through ``resolve_checkpoint`` and the pipelines' own ``from_pretrained``.
"""

import importlib.util
import shutil
from pathlib import Path

import av
import dagster as dg
import numpy as np
import pytest
import torch
from PIL import Image

from cosmos_assets.models import catalog, tiny_generators
from cosmos_assets.models.catalog import GENERATOR_KINDS
from cosmos_assets.models.checkpoints import (
    TINY_MARKER, CorruptCheckpoint, ModelError, ModelNotAvailable, UnsafeCheckpoint, resolve_checkpoint,
)
from cosmos_assets.models.generator import (
    DEFAULTS, GenerationRequest, GuardrailMissing, blur_control, defaults_for, edge_control,
    load_generator, open_generator,
)
from cosmos_assets.models.runtime import MODELS
from resources.generator import VideoGeneratorResource

FRAMES, SIZE, STEPS = 9, 32, 2
TINY_SETTINGS = dict(num_frames=FRAMES, height=SIZE, width=SIZE, steps=STEPS)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_generators")
    return {kind: builder(root / kind.replace(".", "_")) for kind, builder in tiny_generators.TINY_BUILDERS.items()}


@pytest.fixture(scope="session")
def source_frames(samples) -> np.ndarray:
    """The first frames of a real dashcam clip (uint8 T x H x W x 3), small enough for the tiny models."""
    return decode_frames(samples / "dashcam_solid_white_right.mp4", FRAMES, width=64, height=48)


def decode_frames(path: Path, count: int, width: int, height: int) -> np.ndarray:
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(width=width, height=height, format="rgb24"))
            if len(frames) == count:
                break
    return np.stack(frames)


def tiny_generator(checkpoints, kind):
    checkpoint = resolve_checkpoint(str(checkpoints[kind]), role="generator")
    return load_generator(checkpoint, kind, device="cpu", defaults=defaults_for(kind, **TINY_SETTINGS))


def request_for(kind, frames, seed=0, control="edge", weight=1.0, **fields):
    controls = {control: (edge_control(frames) if control == "edge" else blur_control(frames), weight)}
    return GenerationRequest(prompt="a car drives on a highway in the rain", seed=seed, conditioning_frames=frames,
                             controls=controls if kind == "transfer2.5" else {}, **fields)


def copy_checkpoint(source: Path, dest: Path, keep_marker: bool = True) -> Path:
    shutil.copytree(source, dest)
    if not keep_marker:
        (dest / TINY_MARKER).unlink()
    return dest


# ---------------------------------------------------------------------------------------------------------
# Building tiny checkpoints.


@pytest.mark.parametrize("kind", GENERATOR_KINDS)
def test_tiny_checkpoint_is_a_small_marked_diffusers_pipeline_in_safetensors(tiny_checkpoints, kind):
    path = tiny_checkpoints[kind]
    index = (path / "model_index.json").read_text()
    assert catalog.PIPELINE_CLASSES[kind] in index
    assert (path / TINY_MARKER).is_file()
    weights = [p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) < 5 * 1024 * 1024
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "no staging folder is left behind"
    assert resolve_checkpoint(str(path), role="generator").tiny_random


def test_transfer_checkpoint_has_one_marked_controlnet_per_control(tiny_checkpoints):
    folder = tiny_checkpoints["transfer2.5"] / catalog.CONTROLNETS_FOLDER
    assert sorted(p.name for p in folder.iterdir()) == sorted(tiny_generators.TINY_CONTROLS)
    for control in tiny_generators.TINY_CONTROLS:
        assert resolve_checkpoint(str(folder / control), role="controlnet").tiny_random


def test_a_build_that_fails_leaves_nothing_at_the_destination(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tiny_generators, "write_tiny_marker", disk_full)
    with pytest.raises(OSError, match="disk full"):
        tiny_generators.build_tiny_predict25(tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


def test_a_build_never_overwrites_an_existing_checkpoint_unless_asked(tiny_checkpoints, tmp_path):
    dest = copy_checkpoint(tiny_checkpoints["predict2.5"], tmp_path / "ckpt")
    with pytest.raises(FileExistsError):
        tiny_generators.build_tiny_predict25(dest)
    before = (dest / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    tiny_generators.build_tiny_predict25(dest, seed=1, overwrite=True)
    assert (dest / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


# ---------------------------------------------------------------------------------------------------------
# Generating.


@pytest.mark.parametrize("kind", GENERATOR_KINDS)
def test_each_kind_generates_the_requested_frames_and_size_as_labelled_uint8(tiny_checkpoints, source_frames, kind):
    generator = tiny_generator(tiny_checkpoints, kind)
    video = generator.generate(request_for(kind, source_frames))
    assert video.frames.dtype == np.uint8
    assert video.frames.shape == (FRAMES, SIZE, SIZE, 3)
    assert video.frames.std() > 0, "a decoded video, not a constant fill"
    assert video.fps == DEFAULTS[kind].fps
    settings = video.settings
    assert settings["backend"] == kind and settings["tiny_random"] is True
    assert settings["checkpoint_name"] == str(tiny_checkpoints[kind])
    assert settings["checkpoint"] == generator.checkpoint.label and "tiny random" in settings["checkpoint"]
    assert (settings["seed"], settings["steps"]) == (0, STEPS)
    assert settings["guidance_scale"] == DEFAULTS[kind].guidance_scale
    assert settings["controls"] == ({"edge": 1.0} if kind == "transfer2.5" else {})


@pytest.mark.parametrize("kind", GENERATOR_KINDS)
def test_same_seed_gives_the_same_video_and_another_seed_another(tiny_checkpoints, source_frames, kind):
    generator = tiny_generator(tiny_checkpoints, kind)
    first = generator.generate(request_for(kind, source_frames, seed=7)).frames
    again = generator.generate(request_for(kind, source_frames, seed=7)).frames
    other = generator.generate(request_for(kind, source_frames, seed=8)).frames
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_transfer_follows_its_control_video_in_proportion_to_the_weight(tiny_checkpoints, source_frames):
    generator = tiny_generator(tiny_checkpoints, "transfer2.5")
    edges, blurred = edge_control(source_frames), blur_control(source_frames)

    def with_control(video, weight):
        request = GenerationRequest(prompt="a street at night", seed=3, controls={"edge": (video, weight)})
        return generator.generate(request).frames

    assert not np.array_equal(with_control(edges, 1.0), with_control(blurred, 1.0))
    # Weight 0 scales every ControlNet residual to zero: the control video no longer matters.
    assert np.array_equal(with_control(edges, 0.0), with_control(blurred, 0.0))


def test_transfer_runs_the_controlnet_of_the_named_control(tiny_checkpoints, source_frames):
    generator = tiny_generator(tiny_checkpoints, "transfer2.5")
    assert generator.controls == tuple(sorted(tiny_generators.TINY_CONTROLS))
    control = edge_control(source_frames)
    by_edge = generator.generate(GenerationRequest(prompt="p", controls={"edge": (control, 1.0)}))
    by_blur = generator.generate(GenerationRequest(prompt="p", controls={"blur": (control, 1.0)}))
    assert not np.array_equal(by_edge.frames, by_blur.frames)
    assert set(by_blur.settings["controlnet"]) == {"blur"} and "tiny random" in by_blur.settings["controlnet"]["blur"]


def test_transfer_follows_the_control_length_chunk_by_chunk(tiny_checkpoints, source_frames):
    checkpoint = resolve_checkpoint(str(tiny_checkpoints["transfer2.5"]), role="generator")
    # 5-frame chunks: the 9-frame control takes two chunks, the second continuing from the first's last frame.
    defaults = defaults_for("transfer2.5", height=SIZE, width=SIZE, steps=STEPS, num_frames_per_chunk=5)
    generator = load_generator(checkpoint, "transfer2.5", device="cpu", defaults=defaults)
    control = {"edge": (edge_control(source_frames), 1.0)}
    assert generator.generate(GenerationRequest(prompt="p", controls=control)).frames.shape[0] == FRAMES
    assert generator.generate(GenerationRequest(prompt="p", controls=control, num_frames=7)).frames.shape[0] == 7


def test_transfer_refuses_controls_it_cannot_run(tiny_checkpoints, source_frames):
    generator = tiny_generator(tiny_checkpoints, "transfer2.5")
    control = edge_control(source_frames)
    with pytest.raises(ModelError, match=r"no ControlNet for \['hdmap'\]"):
        generator.generate(GenerationRequest(prompt="p", controls={"hdmap": (control, 0.9)}))
    with pytest.raises(ValueError, match="differ in size"):
        generator.generate(GenerationRequest(prompt="p", controls={"edge": (control, 0.5), "blur": (control[:, :16], 0.5)}))
    with pytest.raises(ValueError, match="3 frames"):
        generator.generate(GenerationRequest(prompt="p", controls={"edge": (control[:3], 1.0)}))


def test_predict2_needs_conditioning_frames_and_predict25_can_start_from_text(tiny_checkpoints, source_frames):
    with pytest.raises(ValueError, match="conditioning frames"):
        tiny_generator(tiny_checkpoints, "predict2").generate(GenerationRequest(prompt="p"))
    text_only = tiny_generator(tiny_checkpoints, "predict2.5").generate(GenerationRequest(prompt="p"))
    assert text_only.frames.shape == (FRAMES, SIZE, SIZE, 3) and text_only.settings["conditioning_frames"] == 0


def test_frame_counts_the_vae_cannot_produce_are_refused(tiny_checkpoints, source_frames):
    generator = tiny_generator(tiny_checkpoints, "predict2.5")
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        generator.generate(request_for("predict2.5", source_frames, num_frames=10))
    with pytest.raises(ValueError, match="multiples of 16"):
        generator.generate(request_for("predict2.5", source_frames, height=40))


# ---------------------------------------------------------------------------------------------------------
# Checkpoints that must not load.


@pytest.mark.skipif(importlib.util.find_spec("cosmos_guardrail") is not None, reason="cosmos_guardrail is installed")
def test_real_weights_without_the_cosmos_guardrail_are_refused(tiny_checkpoints, tmp_path):
    # The same files without the tiny marker are, as far as anything can tell, real weights.
    real = copy_checkpoint(tiny_checkpoints["predict2"], tmp_path / "real", keep_marker=False)
    cached = len(MODELS)
    with pytest.raises(GuardrailMissing, match="pip install cosmos_guardrail"):
        open_generator("predict2", str(real), device="cpu")
    assert len(MODELS) == cached, "nothing was loaded"


def test_a_missing_model_is_reported_not_downloaded(tmp_path):
    with pytest.raises(ModelNotAvailable, match="not on this machine"):
        open_generator("predict2.5", str(tmp_path / "absent"))
    with pytest.raises(ModelNotAvailable, match="Hugging Face cache"):
        open_generator("predict2.5", "nvidia/no-such-cosmos-model-here")


def test_a_component_with_only_pickle_weights_is_refused(tiny_checkpoints, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoints["predict2"], tmp_path / "pickled")
    weights = checkpoint / "transformer" / "diffusion_pytorch_model.safetensors"
    torch.save({"weight": torch.zeros(2)}, weights.with_suffix(".bin"))
    weights.unlink()
    with pytest.raises(UnsafeCheckpoint, match="transformer"):
        open_generator("predict2", str(checkpoint), device="cpu")


def test_a_truncated_safetensors_file_is_refused(tiny_checkpoints, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoints["transfer2.5"], tmp_path / "truncated")
    weights = checkpoint / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CorruptCheckpoint, match="truncated"):
        open_generator("transfer2.5", str(checkpoint), device="cpu")


# ---------------------------------------------------------------------------------------------------------
# Control videos.


def test_edge_control_finds_the_edges_of_a_real_frame(samples):
    frames = decode_frames(samples / "dashcam_solid_white_right.mp4", 3, width=256, height=144)
    edges = edge_control(frames)
    assert edges.shape == frames.shape and edges.dtype == np.uint8
    assert set(np.unique(edges)) <= {0, 255}
    assert np.array_equal(edges[..., 0], edges[..., 2]), "one edge map in all three channels"
    assert 0.005 < (edges[..., 0] > 0).mean() < 0.5, "lane markings and cars give edges, not all pixels do"
    assert (edge_control(frames, 1000, 2000)[..., 0] > 0).sum() < (edges[..., 0] > 0).sum(), "thresholds apply"


def test_blur_control_smooths_every_frame_the_same_way(samples):
    frames = decode_frames(samples / "dashcam_solid_white_right.mp4", 3, width=256, height=144)
    blurred = blur_control(frames)
    assert blurred.shape == frames.shape and blurred.dtype == np.uint8

    def detail(video):  # mean absolute difference between horizontal neighbours
        return np.abs(np.diff(video.astype(np.int16), axis=2)).mean()

    assert detail(blurred) < 0.5 * detail(frames)
    repeated = np.repeat(frames[:1], 3, axis=0)
    assert np.array_equal(blur_control(repeated)[0], blur_control(repeated)[2]), "frame-consistent"
    with pytest.raises(ValueError, match="uint8"):
        blur_control(frames.astype(np.float32))


# ---------------------------------------------------------------------------------------------------------
# The Dagster resource and real-size architectures.


def test_resource_generates_in_a_run_and_releases_the_models_afterwards(tiny_checkpoints, source_frames):
    @dg.asset
    def generated_video(generator: VideoGeneratorResource) -> dict:
        loaded = generator.get()
        video = loaded.generate(GenerationRequest(prompt="a robot arm", conditioning_frames=source_frames))
        return {"shape": video.frames.shape, "steps": video.settings["steps"], "cached": len(MODELS)}

    resource = VideoGeneratorResource(kind="predict2.5", model=str(tiny_checkpoints["predict2.5"]), device="cpu",
                                      num_frames=FRAMES, height=SIZE, width=SIZE, steps=STEPS)
    result = dg.materialize([generated_video], resources={"generator": resource})
    output = result.output_for_node("generated_video")
    assert output["shape"] == (FRAMES, SIZE, SIZE, 3) and output["steps"] == STEPS and output["cached"] >= 1
    assert len(MODELS) == 0


def test_real_size_configurations_have_the_published_parameter_counts():
    from diffusers import CosmosControlNetModel, CosmosTransformer3DModel

    def parameters(model):
        return sum(p.numel() for p in model.parameters())

    with torch.device("meta"):  # shapes only: no memory, no time
        predict2 = CosmosTransformer3DModel(**tiny_generators.transformer_config(
            "predict2", tiny_generators.REAL_SIZES["2B"], 1024, 24))
        predict2_14b = CosmosTransformer3DModel(**tiny_generators.transformer_config(
            "predict2", tiny_generators.REAL_SIZES["14B"], 1024, 24))
        transfer_config = tiny_generators.transformer_config("transfer2.5", tiny_generators.REAL_SIZES["2B"], 3584, 28)
        controlnet = CosmosControlNetModel(**tiny_generators.controlnet_config(transfer_config))
    assert predict2.config.in_channels == 17 and predict2.config.num_layers == 28
    assert 1.7e9 < parameters(predict2) < 2.3e9
    assert 12e9 < parameters(predict2_14b) < 16e9
    assert transfer_config["crossattn_proj_in_channels"] == 100352
    assert controlnet.config.n_controlnet_blocks == 4  # blocks 0, 7, 14, 21 of 28 take a control residual


def test_random_generator_builds_the_architecture_in_memory_at_a_reduced_size(source_frames):
    pipe = tiny_generators.build_random_generator(
        "transfer2.5", device="cpu", dtype=torch.float32,
        generator_size=tiny_generators.TINY, text_encoder_size=tiny_generators.TINY_QWEN,
        vae_config=tiny_generators.TINY_VAE)
    assert type(pipe).__name__ == "Cosmos2_5_TransferPipeline" and pipe.controlnet is not None
    output = pipe(controls=[Image.fromarray(frame) for frame in edge_control(source_frames)], prompt="p", height=SIZE, width=SIZE,
                  num_frames=FRAMES, num_frames_per_chunk=FRAMES, num_inference_steps=1, output_type="np",
                  max_sequence_length=64, generator=torch.Generator().manual_seed(0))
    assert output.frames[0].shape == (FRAMES, SIZE, SIZE, 3)


def test_predict2_continues_from_the_first_frames_of_a_clip_not_the_whole_clip(tiny_checkpoints, source_frames):
    generator = tiny_generator(tiny_checkpoints, "predict2")
    kept = generator.defaults.num_conditional_frames
    assert kept < len(source_frames)
    changed_tail = source_frames.copy()
    changed_tail[kept:] = 255 - changed_tail[kept:]  # frames after the conditioning ones must not matter
    first = generator.generate(request_for("predict2", source_frames, seed=3)).frames
    other_tail = generator.generate(request_for("predict2", changed_tail, seed=3)).frames
    assert np.array_equal(first, other_tail)
    changed_head = source_frames.copy()
    changed_head[0] = 255 - changed_head[0]
    assert not np.array_equal(first, generator.generate(request_for("predict2", changed_head, seed=3)).frames)
