"""The synthetic loop's model paths through Dagster, on tiny random-weight checkpoints: Cosmos Transfer 2.5
through diffusers as the generator, the Reason critic through transformers (K trials of real generated text,
parsed or counted as unparseable, and the blocking check that stops a batch whose critic does not answer),
and the same VLM role through an OpenAI-compatible endpoint as rubric critic and caption rewriter."""

import json
from pathlib import Path

import av
import dagster as dg
import polars as pl
import pytest
import torch

from chat_server import ChatCompletionsServer
from cosmos_assets.models.catalog import resolve_model
from cosmos_assets.models.checkpoints import TINY_LABEL
from cosmos_assets.models.vlm import VideoSizing, load_transformers_vlm
from cosmos_assets.settings import CosmosPaths
from cosmos_assets.synthetic import conditions
from cosmos_assets.synthetic.assets import (
    accepted_videos, accepted_videos_rates_in_bounds, critique_scores, generation_prompts, generation_rounds, synthetic_videos,
)
from cosmos_assets.synthetic.critics import RUBRIC_SYSTEM_PROMPT, parse_verdict
from resources import CosmosStorage, VisionLanguageResource
from resources.generator import VideoGeneratorResource
from resources.models import GenerationConfig
from resources.storage import ParquetTableIOManager
from resources.synthetic import SyntheticSettings

# Upstream of the round: the table curated_dataset wrote, read through the IO manager.
CURATED_DATASET = dg.AssetSpec("curated_dataset").with_io_manager_key("io_manager")
SMALL_VIDEO = 4 * 16 * 28 * 28  # the VLM's pixel budget per video: a few small frames
CAPTION = "A car drives along a sunny highway behind a trailer truck."


@pytest.fixture(scope="module")
def world(tmp_path_factory, samples):
    """A COSMOS_HOME whose curated dataset holds one real clip (the sample dashcam video), and an instance."""
    paths = CosmosPaths(tmp_path_factory.mktemp("synthetic_models") / "home")
    clip = {"clip_id": "dashcam-clip-0", "source_name": "dashcam.mp4", "path": str(samples / "dashcam_solid_white_right.mp4"),
            "caption": CAPTION, "start_s": 0.0, "end_s": 8.84, "split": "train", "dataset_version": "ds-test",
            "tiny_random": False}
    (paths.tables / "curated_dataset").mkdir(parents=True)
    pl.DataFrame([clip]).write_parquet(paths.tables / "curated_dataset" / "all.parquet")  # what curated_dataset writes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from threads; on a busy 2-core machine they spin-wait
    with dg.instance_for_test() as instance:
        yield paths, instance
    torch.set_num_threads(threads)


def resources(paths, **overrides) -> dict:
    home = str(paths.home)
    return {"io_manager": ParquetTableIOManager(home=home), "storage": CosmosStorage(home=home),
            "synthetic": SyntheticSettings(), "vlm": VisionLanguageResource(home=home, model="tiny:vlm", device="cpu"),
            "generator": VideoGeneratorResource(home=home, kind="transfer2.5", model="tiny:transfer2.5", device="cpu", steps=2), **overrides}


def materialize(world, partition, selection, run_config, extra_assets=(), **resource_overrides):
    paths, instance = world
    instance.add_dynamic_partitions(generation_rounds.name, [partition])
    return dg.materialize(
        [CURATED_DATASET, generation_prompts, synthetic_videos, critique_scores, accepted_videos, accepted_videos_rates_in_bounds,
         *extra_assets],
        selection=selection, partition_key=partition, instance=instance, resources=resources(paths, **resource_overrides),
        run_config={"ops": run_config}, raise_on_error=False,
    )


def table(world, asset, partition):
    return pl.read_parquet(world[0].tables / asset / f"{partition}.parquet")


# 5 frames of 64 x 32: the smallest geometry every Cosmos generator accepts (1 + 4k frames, multiples of 16).
TINY_REQUESTS = {"conditions": ["rain"], "max_width": 64, "seconds": 0.35, "fps": 16}
TRANSFER_ROUND = "round-tiny-transfer"


@pytest.fixture(scope="module")
def transfer_round(world):
    result = materialize(world, TRANSFER_ROUND, [generation_prompts, synthetic_videos],
                         {"generation_prompts": {"config": TINY_REQUESTS}, "synthetic_videos": {"config": {"backend": "generator"}}})
    assert result.success
    return result


def test_transfer_2_5_through_diffusers_makes_labelled_candidates_with_their_controls_and_settings(world, transfer_round):
    candidates = table(world, "synthetic_videos", TRANSFER_ROUND)
    [request] = table(world, "generation_prompts", TRANSFER_ROUND).to_dicts()
    assert (request["width"], request["height"], request["num_frames"]) == (64, 32, 5) and request["seeds"] == [0, 1]
    assert candidates["seed"].to_list() == [0, 1] and set(candidates["status"]) == {"ok"}
    for row in candidates.to_dicts():
        assert (row["backend"], row["generator"], row["model"]) == ("transfer2.5", "Cosmos2_5_TransferPipeline", "tiny:transfer2.5")
        assert row["tiny_random"] and row["label"] == TINY_LABEL and TINY_LABEL in row["checkpoint"]
        assert json.loads(row["controls"]) == {"edge": 0.9}
        settings = json.loads(row["settings"])
        assert (settings["seed"], settings["steps"], settings["num_frames"], settings["controls"]) == (row["seed"], 2, 5, {"edge": 0.9})
        assert TINY_LABEL in settings["controlnet"]["edge"] and settings["negative_prompt"] == request["negative_prompt"]
        with av.open(row["path"]) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 5 and frames[0].shape == (32, 64, 3)
    assert candidates["sha256"].n_unique() == 2  # two seeds, two different videos
    metadata = transfer_round.asset_materializations_for_node("synthetic_videos")[0].metadata
    assert metadata["tiny_random_weights"].value is True and TINY_LABEL in metadata["label"].value
    assert metadata["backend"].value == "transfer2.5" and "data:image/jpeg;base64," in metadata["source_and_candidates"].value


@dg.asset(partitions_def=generation_rounds)
def training_input(accepted_videos: pl.DataFrame) -> pl.DataFrame:
    """Stands for any downstream user of accepted videos (the training mix)."""
    return accepted_videos.filter(pl.col("accepted"))


def test_the_reason_critic_keeps_every_trial_counts_unparseable_ones_and_its_check_blocks_downstream(world, transfer_round):
    vlm = VisionLanguageResource(home=str(world[0].home), model="tiny:vlm", device="cpu", total_pixels=SMALL_VIDEO,
                                 critique=GenerationConfig(temperature=0.6, top_p=0.95, max_new_tokens=24, trials=3, seed=5))
    config = {"critique_scores": {"config": {"critic": "reason", "critic_fps": 8.0, "critic_max_frames": 4}}}
    result = materialize(world, TRANSFER_ROUND, [critique_scores, accepted_videos, training_input], config,
                         extra_assets=[training_input], vlm=vlm)
    scores = table(world, "critique_scores", TRANSFER_ROUND)
    assert scores.height == 2 and set(scores["critic"]) == {"reason:tiny:vlm"} and scores["critic_tiny_random"].all()
    assert scores["critic_version"].n_unique() == 1
    for row in scores.to_dicts():
        trials = json.loads(row["trials"])
        assert row["trials_total"] == len(trials) == 3 and all(t["text"] for t in trials)  # real generated text, kept
        reparsed = [parse_verdict(t["text"]) for t in trials]
        assert [t["parsed"] for t in trials] == [p.parsed for p in reparsed]
        assert row["trials_parsed"] == sum(p.parsed for p in reparsed) and row["parse_failures"] == 3 - row["trials_parsed"]
        answers = [p.answer for p in reparsed if p.parsed]
        assert row["score"] == (round(answers.count("No") / len(answers), 6) if answers else None)
    metadata = result.asset_materializations_for_node("critique_scores")[0].metadata
    assert metadata["parse_failures"].value == int(scores["parse_failures"].sum()) and TINY_LABEL in metadata["label"].value
    # Random weights do not answer in <answer> tags: the parse-failure rate is far out of bounds, the blocking
    # check fails, and nothing downstream of accepted_videos runs on this batch.
    assert metadata["parse_failure_rate"].value > 0.2
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "accepted_videos_rates_in_bounds" and not check.passed and "parse-failure rate" in check.description
    assert not result.success and result.asset_materializations_for_node("training_input") == []
    assert table(world, "accepted_videos", TRANSFER_ROUND)["tiny_random"].all()


def test_the_vlm_endpoint_rewrites_captions_and_rates_candidates_with_the_rubric(world):
    paths, _ = world
    checkpoint = resolve_model("tiny:vlm", role="vlm", models_root=paths.models)
    model = load_transformers_vlm(checkpoint, torch.device("cpu"), torch.float32, VideoSizing(total_pixels=SMALL_VIDEO))
    partition = "round-endpoint"
    with ChatCompletionsServer(model) as server:
        vlm = VisionLanguageResource(home=str(paths.home), backend="endpoint", endpoint_url=server.base_url, model="cosmos-reason1",
                                     total_pixels=SMALL_VIDEO, endpoint_max_retries=0,
                                     caption=GenerationConfig(temperature=0.1, max_new_tokens=16),
                                     critique=GenerationConfig(temperature=0.6, max_new_tokens=16, trials=2))
        result = materialize(world, partition, [generation_prompts, synthetic_videos, critique_scores], {
            # The clip had its requests in the transfer round already; this round asks again on purpose.
            "generation_prompts": {"config": {**TINY_REQUESTS, "conditions": ["night"], "seeds_per_request": 1,
                                              "skip_clips_in_earlier_rounds": False}},
            "critique_scores": {"config": {"critic": "rubric", "critic_fps": 8.0, "critic_max_frames": 4}},
        }, vlm=vlm)
        requests = list(server.requests)
    assert result.success
    [request] = table(world, "generation_prompts", partition).to_dicts()
    assert request["prompt_writer"] == f"vlm:cosmos-reason1@{server.base_url}/chat/completions"
    assert request["prompt_status"] in ("rewritten", "fallback:unparseable", "fallback:too_short")
    if request["prompt_status"].startswith("fallback"):  # a tiny random model rarely answers in the asked format
        assert request["prompt"] == conditions.template_prompt(CAPTION, "night")
    rewrite, critique = requests
    assert CAPTION.rstrip(".") in rewrite["body"]["messages"][-1]["content"][-1]["text"] and rewrite["body"]["n"] == 1
    assert critique["body"]["n"] == 2 and critique["body"]["messages"][0] == {"role": "system", "content": RUBRIC_SYSTEM_PROMPT}
    [row] = table(world, "critique_scores", partition).to_dicts()
    assert (row["critic"], row["critic_mode"], row["trials_total"]) == ("rubric:cosmos-reason1", "rubric", 2)
    assert row["critic_version"].startswith(f"{server.base_url}/chat/completions+") and not row["critic_tiny_random"]
    assert Path(table(world, "synthetic_videos", partition)["path"][0]).is_file()


def test_a_later_round_makes_requests_only_for_clips_no_earlier_round_had(world, transfer_round):
    result = materialize(world, "round-later", [generation_prompts], {"generation_prompts": {"config": TINY_REQUESTS}})
    metadata = result.asset_materializations_for_node("generation_prompts")[0].metadata
    assert result.success and metadata["requests"].value == 0 and metadata["clips_in_earlier_rounds"].value == 1
