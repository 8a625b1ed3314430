"""Predict2 (EDM) LoRA post-training: the cookbook recipe for the kind, the EDM denoising loss the Predict2 pipeline
implies, exact resumption, and a Predict2 checkpoint trained and evaluated against its base through the assets
(every feature space, and prompt alignment judged by the VLM).

The generator is the tiny random-weight Predict2 (the real ``Cosmos2VideoToWorldPipeline`` components, built here
and loaded with ``from_pretrained``); training clips are real sample videos encoded by its own VAE and T5.
"""

import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cosmos_assets.models import lora
from cosmos_assets.models.checkpoints import resolve_checkpoint
from cosmos_assets.models.frames import sample_frames
from cosmos_assets.models.generator import load_pipeline
from cosmos_assets.models.tiny_generators import build_tiny_predict2
from cosmos_assets.training.trainer import TrainingConfig, cache_samples, cookbook_defaults, train_lora
from test_training import resumes_exactly  # the resumption check both kinds pass

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

CONFIG = TrainingConfig(kind="predict2", steps=6, save_interval=2, warmup_steps=2, learning_rate=1e-3, frames=9,
                        height=32, width=32)
CLIPS = ("bottle_conveyor.mp4", "asl_walk.mkv")


def clip_frames(samples: Path, name: str, height: int, width: int, count: int = 9) -> np.ndarray:
    frames = sample_frames(samples / name, fps=16.0, max_frames=count).frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in frames])


@pytest.fixture(scope="module")
def predict2(tmp_path_factory, samples):
    """(checkpoint folder, pipeline, cached training samples) of the tiny Predict2."""
    root = tmp_path_factory.mktemp("predict2_lora")
    folder = build_tiny_predict2(root / "predict2")
    checkpoint = resolve_checkpoint(str(folder), role="trainer base")
    pipeline = load_pipeline(checkpoint, "predict2", torch.device("cpu"), torch.float32)
    clips = [(name, clip_frames(samples, name, 32, 32), "a robot arm picks a bottle") for name in CLIPS]
    cache = cache_samples(pipeline, checkpoint.version, clips, root / "cache", CONFIG, log=lambda _: None)
    return folder, pipeline, cache


def fresh_transformer(folder: Path):
    from diffusers import CosmosTransformer3DModel

    return CosmosTransformer3DModel.from_pretrained(folder, subfolder="transformer", use_safetensors=True)


def test_the_predict2_kind_trains_the_cookbook_recipe_on_the_predict2_module_names(predict2):
    from cosmos_assets.training.assets import PostTrainingConfig
    from resources.training import TrainerResource

    recipe = cookbook_defaults("predict2")
    assert (recipe.kind, recipe.rank, recipe.alpha, recipe.learning_rate) == ("predict2", 16, 16.0, 2 ** -14.5)
    assert (recipe.warmup_steps, recipe.steps, recipe.save_interval) == (2000, 10_000, 500)
    # q/k/v/output projections and the MLP, as the cookbook names them, are these modules of the diffusers transformer.
    assert lora.COOKBOOK_TARGETS == {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "output_proj": "to_out.0",
                                     "mlp.layer1": "ff.net.0.proj", "mlp.layer2": "ff.net.2"}
    assert recipe.target_modules == tuple(lora.COOKBOOK_TARGETS.values())
    # A run with no overrides on a predict2 trainer (GPU-profile sizes) is the recipe, trained with the EDM loss.
    assert PostTrainingConfig().training(TrainerResource(kind="predict2")) == recipe
    assert lora.loss_for(recipe.kind) is lora.edm_loss and lora.loss_for("predict2.5") is lora.flow_matching_loss

    transformer = fresh_transformer(predict2[0])
    lora.add_lora(transformer, recipe.rank, recipe.alpha, recipe.target_modules)
    wrapped = {name for name, module in transformer.named_modules() if hasattr(module, "lora_A")}
    expected = {f"transformer_blocks.{i}.{attention}.{projection}" for i in range(transformer.config.num_layers)
                for attention in ("attn1", "attn2") for projection in ("to_q", "to_k", "to_v", "to_out.0")}
    expected |= {f"transformer_blocks.{i}.ff.net.{j}" for i in range(transformer.config.num_layers) for j in ("0.proj", "2")}
    assert wrapped == expected
    with pytest.raises(ValueError, match="no LoRA training objective"):
        cookbook_defaults("predict2-t2i")


def test_the_edm_input_is_what_the_predict2_pipeline_feeds_its_transformer():
    x0 = torch.randn(2048, 16, 4, 1, 1, generator=torch.Generator().manual_seed(1))
    point = lora.denoising_input(lora.TrainingBatch(x0, torch.zeros(2048, 1, 1)), torch.Generator().manual_seed(0),
                                 num_conditional_frames=1)
    sigma = -point.c_out / (1 + point.c_out)  # c_out = -sigma / (1 + sigma)
    # log-normal sigma (P_mean 0, P_std 1), scaled by sqrt(4 latent frames) as Predict2 training scales video noise
    log_sigma = (sigma.flatten() / math.sqrt(4)).log()
    assert abs(log_sigma.mean().item()) < 0.1 and abs(log_sigma.std().item() - 1) < 0.1
    # Frames being generated: the pipeline's c_in = 1 / (1 + sigma) and c_noise = sigma / (1 + sigma).
    assert torch.allclose(point.latents[:, :, 1:], point.noisy[:, :, 1:] / (1 + sigma), atol=1e-5)
    assert torch.allclose(point.timestep[:, :, 1:], (sigma / (1 + sigma)).expand(-1, -1, 3, -1, -1), atol=1e-6)
    # The conditioning frame is given clean at the pipeline's conditioning sigma and is not in the loss.
    assert torch.equal(point.latents[:, :, :1], x0[:, :, :1]) and torch.equal(point.condition_mask[:, :, :1], torch.ones(2048, 1, 1, 1, 1))
    assert torch.allclose(point.timestep[:, :, :1], torch.full((2048, 1, 1, 1, 1), 1e-4 / (1 + 1e-4)))
    assert (point.weight[:, :, :1] == 0).all() and torch.allclose(point.weight[:, :1, 1:2], (sigma ** 2 + 1) / sigma ** 2)
    # Under this preconditioning the denoised estimate is exact when the network outputs the flow velocity e - x0:
    # the same network serves the pipeline's sampler and this loss.
    noise = (point.noisy - x0) / sigma
    assert torch.allclose(point.c_skip * point.noisy + point.c_out * (noise - x0), x0, atol=1e-3)


def test_the_trained_denoiser_is_the_one_the_predict2_pipeline_samples_with(predict2, samples):
    """One sampling step of the real pipeline, watched through a forward hook: the loss's preconditioning of the
    same noisy latents gives the transformer identical inputs, and its denoised estimate reproduces the step."""
    _, pipeline, _ = predict2
    first = Image.fromarray(clip_frames(samples, CLIPS[0], 32, 32, count=1)[0])
    calls, stepped = [], []
    hook = pipeline.transformer.register_forward_hook(
        lambda module, args, kwargs, output: calls.append(kwargs), with_kwargs=True)
    noise = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    try:
        pipeline(video=[first], prompt="a robot arm picks a bottle", height=32, width=32, num_frames=9,
                 num_inference_steps=2, guidance_scale=1.0, latents=noise, output_type="latent", max_sequence_length=32,
                 callback_on_step_end=lambda pipe, i, t, kw: stepped.append(kw["latents"].clone()) or {})
    finally:
        hook.remove()
    seen = calls[0]  # the first step, from sigma_max
    sigma, next_sigma = pipeline.scheduler.sigmas[0].item(), pipeline.scheduler.sigmas[1].item()
    latents = noise * sigma  # the pipeline starts from noise at sigma_max
    x0 = torch.zeros_like(latents)
    x0[:, :, :1] = seen["hidden_states"][:, :, :1]  # the pipeline's clean conditioning latent frame
    point = lora.edm_preconditioned(x0, latents / sigma, torch.tensor([sigma]), num_conditional_frames=1)
    assert torch.equal(point.latents, seen["hidden_states"]) and torch.equal(point.condition_mask, seen["condition_mask"])
    assert torch.allclose(point.timestep, seen["timestep"]) and seen["fps"] == lora.TRAINING_FPS
    batch = lora.prepare_batch(pipeline, np.stack([np.asarray(first)] * 9), "a robot arm picks a bottle", max_sequence_length=32)
    assert torch.equal(batch.text_embeddings, seen["encoder_hidden_states"])  # the cached text is the pipeline's
    with torch.no_grad():
        denoised = lora.predict_denoised(pipeline.transformer, point, batch.text_embeddings)
    euler = latents + (next_sigma - sigma) * (latents - denoised) / sigma  # the scheduler's step with that estimate
    assert torch.allclose(euler[:, :, 1:], stepped[0][:, :, 1:], atol=1e-4)


def test_the_edm_loss_falls_when_a_lora_overfits_one_fixed_batch(predict2):
    folder, _, cache = predict2
    tensors = load_file(str(cache[0]))
    batch = lora.TrainingBatch(tensors["latents"], tensors["text_embeddings"])
    transformer = fresh_transformer(folder)
    lora.add_lora(transformer, rank=8, alpha=8)
    optimizer = torch.optim.AdamW(lora.lora_parameters(transformer), lr=1e-2)
    # The same noise and sigma every step: a fixed objective the adapter can fit.
    losses = [lora.training_step(transformer, optimizer, batch, torch.Generator().manual_seed(0), 1, loss=lora.edm_loss)
              for _ in range(12)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_a_predict2_run_stopped_between_saves_resumes_bit_identically(predict2, tmp_path):
    _, pipeline, cache = predict2
    run = resumes_exactly(pipeline.transformer, cache, CONFIG, tmp_path)
    # The saved state says which kind it trains: a flow-matching run does not pick up an EDM run's state.
    with pytest.raises(ValueError, match="state of a predict2 run"):
        train_lora(pipeline.transformer, cache, replace(CONFIG, kind="predict2.5", steps=8), run, log=lambda _: None)


def test_a_predict2_checkpoint_is_trained_and_evaluated_against_its_base_in_every_feature_space(samples, tmp_path, monkeypatch):
    """generator_checkpoint -> checkpoint_evaluation with the local profile's resources and COSMOS_TRAINER_KIND=predict2,
    FID / FVD networks configured through their weights variables, and the tiny VLM judging prompt alignment."""
    import dagster as dg

    from cosmos_assets.common.artefacts import LocalStore, table_key
    from cosmos_assets.definitions import model_resources
    from cosmos_assets.models import feature_spaces as fs
    from cosmos_assets.training import registry
    from cosmos_assets.training.assets import checkpoint_evaluation, generator_checkpoint, plan_training_mix, training_dataset
    from cosmos_assets.training.datasets import MixConfig
    from resources import CosmosStorage
    from resources.retraining import RetrainingSettings
    from resources.storage import ParquetTableIOManager

    home = tmp_path / "home"
    monkeypatch.setenv("COSMOS_TRAINER_KIND", "predict2")
    monkeypatch.setenv("COSMOS_DEVICE", "cpu")
    monkeypatch.setenv(fs.INCEPTION_WEIGHTS_ENV, f"tiny:{fs.TINY_INCEPTION}")
    monkeypatch.setenv(fs.I3D_WEIGHTS_ENV, f"tiny:{fs.TINY_I3D}")
    store = LocalStore(home)
    (home / "clips").mkdir(parents=True)
    captions = {"bottle_conveyor.mp4": "a robot arm picks a bottle from a conveyor", "asl_walk.mkv": "a person signs walk",
                "asl_book.mkv": "a person signs book", "asl_again.mkv": "a person signs again"}
    clips = []
    for i, (name, caption) in enumerate(captions.items()):
        shutil.copy(samples / name, home / "clips" / name)
        clips.append({"clip_id": f"clip-{i}", "path": str(home / "clips" / name), "caption": caption, "source_hash": f"h{i}",
                      "source_name": name, "batch": "b1", "dataset_version": "cds-1", "tiny_random": False,
                      "split": "train" if i < 2 else "validation"})
    store.write_parquet(table_key("curated_dataset", None), pl.DataFrame(clips))
    version, _ = plan_training_mix(store, MixConfig(), set())
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("training_runs", [version])
    resources = model_resources("local", str(home))
    assert (resources["trainer"].kind, resources["trainer"].base_model) == ("predict2", "tiny:predict2")
    result = dg.materialize(
        [training_dataset, generator_checkpoint, checkpoint_evaluation], partition_key=version, instance=instance,
        resources={"storage": CosmosStorage(home=str(home)), "io_manager": ParquetTableIOManager(home=str(home)),
                   "trainer": resources["trainer"], "embedders": resources["embedders"],
                   "retraining": RetrainingSettings()},
        run_config={"ops": {"checkpoint_evaluation": {"config": {"seeds": [0], "alignment": {"max_new_tokens": 24}}}}})
    assert result.success

    manifest = registry.verified_checkpoint(store, version)
    assert manifest["kind"] == "predict2" and manifest["config"]["kind"] == "predict2" and manifest["steps"] == 4
    assert manifest["tiny_random"] and all(np.isfinite(manifest["losses"]))

    table = store.read_table("checkpoint_evaluation", version)
    assert table["model"].to_list() == ["base", "fine-tuned"] and table["tiny_random"].all()
    # Base and tuned in every feature space: EfficientNet, FID's Inception-v3 and FVD's I3D (random weights, so labelled).
    for column in ("frechet_distance", "fid", "fvd"):
        assert table[column].is_finite().all() and (table[column] > 0).all(), column
    assert table["fid_feature_space"].str.contains(r"\[random_weights\]").all()
    assert table["fvd_feature_space"].str.contains(r"\[random_weights\]").all()
    metadata = result.asset_materializations_for_node("checkpoint_evaluation")[0].metadata
    distances = metadata["frechet_distances"].value
    for space in ("efficientnet_lite0 (packaged)", "inception_v3 pool3 (FID) [random_weights]", "i3d (FVD) [random_weights]"):
        for model in ("base", "fine-tuned"):
            assert f"| `{model}` | `{space}` |" in distances, (model, space)

    # Prompt alignment per evaluation prompt, base and tuned, from the tiny VLM: labelled random weights.
    by_prompt = metadata["prompt_alignment_by_prompt"].value
    assert [row["prompt"] for row in by_prompt] == ["a person signs book", "a person signs again", "mean (all prompts)"]
    assert by_prompt[-1]["videos"] == 4 and all(row["errors"] == 0 for row in by_prompt)
    assert all(row["videos"] == 2 for row in by_prompt[:-1])  # one video per model and seed
    assert metadata["prompt_alignment_random_weights"].value is True
    assert "random" in metadata["prompt_alignment"].value and "| `a person signs book` |" in metadata["prompt_alignment"].value
    assert table["prompt_alignment_vlm"].str.ends_with("[random_weights]").all()
    for model, row in zip(("base", "fine-tuned"), table.to_dicts()):
        # The table's mean is the per-prompt table's mean row (null when the random VLM's answers never parse).
        assert row["prompt_alignment"] == by_prompt[-1][model]


def test_prompt_alignment_can_be_turned_off_and_is_absent_without_a_vlm(tmp_path):
    from cosmos_assets.training.assets import EvaluationConfig, _prompt_alignment
    from resources.models import VisionLanguageResource
    from resources.training import TrainerResource

    with_vlm = TrainerResource(kind="predict2", vlm=VisionLanguageResource(home=str(tmp_path), model="tiny:vlm"))
    off = _prompt_alignment(None, EvaluationConfig(prompt_alignment=False), with_vlm, {"base": []}, 16.0)
    absent = _prompt_alignment(None, EvaluationConfig(), TrainerResource(kind="predict2"), {"base": []}, 16.0)
    assert "turned off" in off.metadata()["prompt_alignment"].value
    assert "no VLM" in absent.metadata()["prompt_alignment"].value
    assert off.columns("base") == absent.columns("base") == {"prompt_alignment": None, "prompt_alignment_vlm": None}


def test_a_video_the_vlm_cannot_read_gets_its_error_in_its_row_and_the_others_are_judged(tmp_path):
    from cosmos_assets.training.alignment import AlignmentSettings, EvaluationVideo, prompt_alignment
    from resources.models import VisionLanguageResource

    vlm = VisionLanguageResource(home=str(tmp_path), device="cpu", model="tiny:vlm").get()
    rng = np.random.default_rng(0)
    good = EvaluationVideo("base", "a robot arm", "clip-0", 0, rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8), 16.0)
    grey = EvaluationVideo("fine-tuned", "a robot arm", "clip-0", 0, np.zeros((9, 32, 48), dtype=np.uint8), 16.0)
    rows = prompt_alignment(vlm, [good, grey], AlignmentSettings(max_new_tokens=8))
    assert rows[0]["error"] is None and rows[0]["parsed"] + rows[0]["parse_failures"] == 1
    assert rows[1]["error"].startswith("RuntimeError: ") and rows[1]["alignment"] is None
    assert all(r["random_weights"] for r in rows)  # the tiny VLM's answers are labelled as such


def test_the_per_prompt_table_averages_each_prompt_over_its_seeds_and_ends_with_each_models_mean():
    from cosmos_assets.training.alignment import alignment_by_prompt

    def row(model, prompt, alignment, failures=0, error=None):
        return {"model": model, "prompt": prompt, "alignment": alignment, "parse_failures": failures, "error": error}

    rows = [row("base", "a", 1.0), row("base", "a", 0.0), row("fine-tuned", "a", 1.0), row("fine-tuned", "a", None, 1),
            row("base", "b", 0.5), row("fine-tuned", "b", None, error="RuntimeError: x")]
    assert alignment_by_prompt(rows) == [
        {"prompt": "a", "base": 0.5, "fine-tuned": 1.0, "videos": 4, "parse_failures": 1, "errors": 0},
        {"prompt": "b", "base": 0.5, "fine-tuned": None, "videos": 2, "parse_failures": 0, "errors": 1},
        {"prompt": "mean (all prompts)", "base": 0.5, "fine-tuned": 1.0, "videos": 6, "parse_failures": 1, "errors": 1},
    ]
