"""Cosmos 3 as a generator kind and a critic, on the tiny random-weight checkpoint of its real architecture: the
checkpoint is built with save_pretrained and loaded back with from_pretrained (safetensors only, nothing remote);
the Generator makes videos of the requested shape, labelled as random weights; the Reasoner, which shares the
Generator's language model, answers the Reason critic's question with parsed records; and the synthetic loop runs
with COSMOS_GENERATOR=cosmos3 and COSMOS_CRITIC=cosmos3 through a real Dagster instance."""

import importlib.util
import json
import shutil
from pathlib import Path

import av
import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from cosmos_assets.definitions import model_resources, synthetic_settings
from cosmos_assets.models.checkpoints import TINY_LABEL, TINY_MARKER, UnsafeCheckpoint, resolve_checkpoint
from cosmos_assets.models.cosmos3 import Cosmos3Reasoner, ReasonerSizing, open_reasoner, reasoner_checkpoint
from cosmos_assets.models.generator import GenerationRequest, GuardrailMissing, load_generator, defaults_for, open_generator
from cosmos_assets.models.runtime import MODELS
from cosmos_assets.models.tiny import ensure_tiny
from cosmos_assets.models.tiny_cosmos3 import REASONER_FOLDER, build_tiny_cosmos3
from cosmos_assets.models.vlm import GenerationSettings
from cosmos_assets.settings import CosmosPaths
from cosmos_assets.synthetic.assets import (
    accepted_videos, critique_scores, generation_prompts, generation_rounds, synthetic_videos,
)
from cosmos_assets.synthetic.critics import ReasonCritic, parse_verdict
from resources import CosmosStorage
from resources.storage import ParquetTableIOManager

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

FRAMES, HEIGHT, WIDTH, STEPS = 9, 32, 64, 2
SMALL_VIDEO = 4 * 16 * 32 * 32  # the Reasoner's pixel budget per video: a few small frames
CRITIC_SETTINGS = GenerationSettings(temperature=0.6, top_p=0.95, max_new_tokens=16, trials=3, seed=5)


@pytest.fixture(scope="module")
def models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cosmos3_models")


@pytest.fixture(scope="module")
def checkpoint(models_root) -> Path:
    """tiny:cosmos3, built where the profile builds it (COSMOS_HOME/models/tiny/cosmos3)."""
    return ensure_tiny(models_root, "cosmos3")


@pytest.fixture(scope="module")
def source_frames(samples) -> np.ndarray:
    """The first frames of a real dashcam clip, decoded with PyAV at the tiny size."""
    frames = []
    with av.open(str(samples / "dashcam_solid_white_right.mp4")) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(width=WIDTH, height=HEIGHT, format="rgb24"))
            if len(frames) == FRAMES:
                break
    return np.stack(frames)


def tiny_generator(path: Path):
    tiny = resolve_checkpoint(str(path), role="generator")
    return load_generator(tiny, "cosmos3", device="cpu",
                          defaults=defaults_for("cosmos3", num_frames=FRAMES, height=HEIGHT, width=WIDTH, steps=STEPS))


# --- the checkpoint -------------------------------------------------------------------------------------


def test_the_tiny_checkpoint_is_a_marked_diffusers_pipeline_and_a_transformers_reasoner_in_safetensors(checkpoint):
    assert json.loads((checkpoint / "model_index.json").read_text())["_class_name"] == "Cosmos3OmniPipeline"
    assert json.loads((checkpoint / REASONER_FOLDER / "config.json").read_text())["model_type"] == "cosmos3_omni"
    weights = [p for p in checkpoint.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt")]
    assert len(weights) == 3 and all(p.suffix == ".safetensors" for p in weights)  # transformer, VAE, Reasoner
    assert resolve_checkpoint(str(checkpoint), role="generator").tiny_random
    assert reasoner_checkpoint(resolve_checkpoint(str(checkpoint), role="critic")).tiny_random
    assert not [p for p in checkpoint.parent.iterdir() if p.name.startswith(".")], "no staging folder is left behind"


def test_the_reasoner_language_model_is_the_generators_understanding_pathway(checkpoint):
    """One model that generates and reasons: the Reasoner's language model holds the Generator's own weights."""
    generator = load_file(checkpoint / "transformer" / "diffusion_pytorch_model.safetensors")
    reasoner = load_file(checkpoint / REASONER_FOLDER / "model.safetensors")
    # transformers writes the Reasoner in the unified checkpoint's flat names, which are the Generator's names too.
    shared = set(generator) & set(reasoner)
    assert {"embed_tokens.weight", "lm_head.weight", "norm.weight", "layers.1.self_attn.to_q.weight",
            "layers.1.self_attn.norm_k.weight", "layers.1.mlp.gate_proj.weight"} <= shared
    assert all(torch.equal(reasoner[key], generator[key]) for key in shared)
    assert not any("add_q_proj" in key or "moe_gen" in key for key in reasoner), "no generation pathway in the Reasoner"


def test_a_build_never_overwrites_an_existing_checkpoint(checkpoint):
    with pytest.raises(FileExistsError):
        build_tiny_cosmos3(checkpoint)


# --- generation -----------------------------------------------------------------------------------------


def test_video_to_video_continues_a_real_clip_at_the_requested_shape_labelled_as_random_weights(checkpoint, source_frames):
    video = tiny_generator(checkpoint).generate(GenerationRequest(prompt="a car on a highway in the rain", seed=3,
                                                                  conditioning_frames=source_frames))
    assert video.frames.dtype == np.uint8 and video.frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert video.frames.std() > 0, "a decoded video, not a constant fill"
    settings = video.settings
    assert (settings["backend"], settings["pipeline"], settings["mode"]) == ("cosmos3", "Cosmos3OmniPipeline", "video")
    assert settings["conditioning_frames"] == 5  # two latent frames: 1 + 4 source frames kept clean
    assert settings["tiny_random"] is True and settings["label"] == TINY_LABEL and TINY_LABEL in settings["checkpoint"]
    assert (settings["seed"], settings["steps"], settings["guidance_scale"]) == (3, STEPS, 6.0)


def test_text_to_video_image_to_video_and_text_to_image(checkpoint, source_frames):
    generator = tiny_generator(checkpoint)
    text = generator.generate(GenerationRequest(prompt="fog over a field", seed=0))
    image = generator.generate(GenerationRequest(prompt="fog over a field", seed=0, conditioning_frames=source_frames[:2]))
    still = generator.generate(GenerationRequest(prompt="fog over a field", seed=0, num_frames=1))
    short = generator.generate(GenerationRequest(prompt="fog over a field", seed=0, conditioning_frames=source_frames,
                                                 num_frames=5))
    assert (text.settings["mode"], image.settings["mode"], still.settings["mode"]) == ("text", "image", "text")
    assert short.settings["mode"] == "image", "a 5-frame video conditions on one latent frame and generates the other"
    assert text.frames.shape == image.frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert still.frames.shape == (1, HEIGHT, WIDTH, 3)
    assert not np.array_equal(text.frames, image.frames), "the source frame conditions the video"


def test_same_seed_gives_the_same_video_and_another_seed_another(checkpoint, source_frames):
    generator = tiny_generator(checkpoint)
    request = lambda seed: GenerationRequest(prompt="snow on a street", seed=seed, conditioning_frames=source_frames)  # noqa: E731
    first, again, other = (generator.generate(request(seed)).frames for seed in (7, 7, 8))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


# --- checkpoints that must not load ---------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("cosmos_guardrail") is not None, reason="cosmos_guardrail is installed")
def test_real_weights_without_the_cosmos_guardrail_are_refused(checkpoint, tmp_path):
    real = Path(shutil.copytree(checkpoint, tmp_path / "real"))
    (real / TINY_MARKER).unlink()  # the same files without the marker are, as far as anything can tell, real weights
    cached = len(MODELS)
    with pytest.raises(GuardrailMissing, match="pip install cosmos_guardrail"):
        open_generator("cosmos3", str(real), device="cpu")
    assert len(MODELS) == cached, "nothing was loaded"


@pytest.mark.parametrize("weights", ["transformer/diffusion_pytorch_model.safetensors", f"{REASONER_FOLDER}/model.safetensors"])
def test_pickle_weights_in_either_half_are_refused_by_both_loaders(checkpoint, tmp_path, weights):
    pickled = Path(shutil.copytree(checkpoint, tmp_path / "pickled"))
    torch.save({"weight": torch.zeros(2)}, (pickled / weights).with_suffix(".bin"))
    (pickled / weights).unlink()
    folder = weights.split("/")[0]
    with pytest.raises(UnsafeCheckpoint, match=f"{folder} has weights only in pickle formats"):
        open_generator("cosmos3", str(pickled), device="cpu")
    with pytest.raises(UnsafeCheckpoint, match=f"{folder} has weights only in pickle formats"):
        open_reasoner(str(pickled), None, torch.device("cpu"), torch.float32)


def test_code_shipped_in_a_checkpoint_is_never_run(checkpoint, tmp_path):
    """A checkpoint asking for its own Python (auto_map) still loads the library's classes; its code never runs."""
    shipped = Path(shutil.copytree(checkpoint, tmp_path / "remote"))
    sentinel = tmp_path / "code_ran"
    reasoner = shipped / REASONER_FOLDER
    (reasoner / "custom_cosmos.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n")
    for name, key in (("config.json", "AutoModelForImageTextToText"), ("processor_config.json", "AutoProcessor")):
        config = json.loads((reasoner / name).read_text())
        config["auto_map"] = {key: "custom_cosmos.Anything"}
        (reasoner / name).write_text(json.dumps(config))
    loaded = open_reasoner(str(shipped), None, torch.device("cpu"), torch.float32)
    assert type(loaded.model).__name__ == "Cosmos3OmniForConditionalGeneration" and not sentinel.exists()


# --- the Reasoner as critic -----------------------------------------------------------------------------


def test_the_reasoner_answers_the_reason_critics_question_with_parsed_records(models_root, checkpoint, source_frames):
    reasoner = open_reasoner("tiny:cosmos3", models_root, torch.device("cpu"), torch.float32,
                             sizing=ReasonerSizing(total_pixels=SMALL_VIDEO))
    assert isinstance(reasoner, Cosmos3Reasoner)
    critic = ReasonCritic(reasoner, CRITIC_SETTINGS, "reason")
    critiques = critic.critique([(source_frames, 16.0), (source_frames[::-1].copy(), 16.0)])
    identity = critic.identity
    assert identity["critic"] == "reason:tiny:cosmos3" and identity["critic_model"] == "tiny:cosmos3"
    assert identity["tiny_random"] is True and identity["critic_version"]
    for critique in critiques:
        assert len(critique.trials) == 3 and all(t.text for t in critique.trials)  # real generated text, kept
        reparsed = [parse_verdict(t.text) for t in critique.trials]
        assert [t.answer for t in critique.trials] == [r.answer for r in reparsed]
        answers = [r.answer for r in reparsed if r.parsed]
        assert critique.score == (round(answers.count("No") / len(answers), 6) if answers else None)
    # The video reaches the model: the same question about another video is another prompt.
    inputs = [reasoner.processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[reasoner._fit(v)],
                                 videos_kwargs={"do_resize": False, "do_sample_frames": False, "cap_pixels_per_frame": True},
                                 return_tensors="pt")["pixel_values_videos"] for v in (source_frames, source_frames[::-1].copy())]
    assert not torch.equal(*inputs)


# --- the synthetic loop -----------------------------------------------------------------------------------

CURATED_DATASET = dg.AssetSpec("curated_dataset").with_io_manager_key("io_manager")
TINY_REQUESTS = {"conditions": ["rain"], "max_width": 64, "seconds": 0.35, "fps": 16}  # 5 frames of 64 x 32


def test_the_synthetic_loop_generates_and_critiques_with_cosmos3_through_dagster(tmp_path, samples, monkeypatch):
    monkeypatch.setenv("COSMOS_GENERATOR", "cosmos3")
    monkeypatch.setenv("COSMOS_CRITIC", "cosmos3")
    paths = CosmosPaths(tmp_path / "home")
    clip = {"clip_id": "dashcam-clip-0", "source_name": "dashcam.mp4", "path": str(samples / "dashcam_solid_white_right.mp4"),
            "caption": "A car drives along a sunny highway.", "start_s": 0.0, "end_s": 8.84, "split": "train",
            "dataset_version": "ds-test", "tiny_random": False}
    (paths.tables / "curated_dataset").mkdir(parents=True)
    pl.DataFrame([clip]).write_parquet(paths.tables / "curated_dataset" / "all.parquet")
    home = str(paths.home)
    profile = model_resources("local", home)  # what COSMOS_GENERATOR / the local profile choose
    generator = profile["generator"].model_copy(update={"device": "cpu", "steps": STEPS})
    vlm = profile["vlm"].model_copy(update={"device": "cpu", "total_pixels": SMALL_VIDEO})
    assert (generator.kind, generator.model) == ("cosmos3", "tiny:cosmos3")
    synthetic = synthetic_settings("local")
    assert (synthetic.critic, synthetic.critic_model) == ("cosmos3", "tiny:cosmos3")
    partition = "round-cosmos3"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(generation_rounds.name, [partition])
        result = dg.materialize(
            [CURATED_DATASET, generation_prompts, synthetic_videos, critique_scores, accepted_videos],
            partition_key=partition, instance=instance,
            resources={"io_manager": ParquetTableIOManager(home=home), "storage": CosmosStorage(home=home),
                       "synthetic": synthetic, "vlm": vlm, "generator": generator},
            run_config={"ops": {"generation_prompts": {"config": TINY_REQUESTS},
                                "synthetic_videos": {"config": {"backend": "generator"}},
                                "critique_scores": {"config": {"trials": 2, "critic_fps": 8.0, "critic_max_frames": 4}}}},
            raise_on_error=False,
        )
        assert result.success
    tables = {name: pl.read_parquet(paths.tables / name / f"{partition}.parquet")
              for name in ("synthetic_videos", "critique_scores", "accepted_videos")}
    candidates = tables["synthetic_videos"]
    assert candidates.height == 2 and set(candidates["status"]) == {"ok"} and candidates["sha256"].n_unique() == 2
    for row in candidates.to_dicts():
        assert (row["backend"], row["generator"], row["model"]) == ("cosmos3", "Cosmos3OmniPipeline", "tiny:cosmos3")
        assert row["tiny_random"] and row["label"] == TINY_LABEL
        with av.open(row["path"]) as container:  # a real H.264 file of the requested geometry
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 5 and frames[0].shape == (32, 64, 3)
        # 5 frames are 2 latent frames: the first source frame conditions, the second is generated.
        assert json.loads(row["settings"])["mode"] == "image"
    scores = tables["critique_scores"]
    assert set(scores["critic"]) == {"reason:tiny:cosmos3"} and set(scores["critic_mode"]) == {"reason"}
    assert scores["critic_tiny_random"].all() and (scores["trials_total"] == 2).all()
    assert (scores["trials_parsed"] + scores["parse_failures"] == 2).all()
    assert all(len(json.loads(t)) == 2 for t in scores["trials"])
    assert tables["accepted_videos"]["tiny_random"].all()
