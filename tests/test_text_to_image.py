"""Text-to-image (Predict2 Text2Image): prompt sets, candidates, image critique, best-of-N and the detector export.

A prompt file dropped in $COSMOS_HOME/prompt_inbox starts a round through text_to_image_sensor; the round runs on the
local profile with the tiny random-weight Cosmos2TextToImagePipeline built here, through a real Dagster instance.
"""

import json
from pathlib import Path

import cv2
import dagster as dg
import numpy as np
import polars as pl
import pytest
from PIL import Image

from conftest import SAMPLES, age_file
from cosmos_assets.common.artefacts import LocalStore
from cosmos_assets.definitions import build_definitions
from cosmos_assets.models.image_generator import open_image_generator
from cosmos_assets.synthetic.video import read_video
from cosmos_assets.text_to_image import prompts as prompt_sets
from cosmos_assets.text_to_image.critique import ImageMetricCritic
from cosmos_assets.text_to_image.export import write_detector_export
from cosmos_assets.training.lineage import lineage

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [
    {"prompt": "A red bicycle parked at a wet crossroads at dusk", "n": 3, "seed": 7, "class_names": ["bicycle", "car"]},
    {"prompt": "A bus at a snowy stop", "negative_prompt": "blurry", "class_names": ["bus"]},
    {"prompt": "   "},  # MissingPrompt
    {"prompt": "too many", "n": 100},  # BadCount
    {"prompt": "a truck", "seed": "soon"},  # BadSeed
    {"prompt": "a van", "class_names": "van|truck", "n": 1},  # a string of names is split too
    {"prompt": "A red bicycle parked at a wet crossroads at dusk", "n": 3, "seed": 7, "class_names": ["car", "bicycle"]},
]


def _jsonl(rows, extra: str = "") -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n" + extra).encode()


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    return open_image_generator("tiny:predict2-t2i", models_root=tmp_path_factory.mktemp("models"), device="cpu",
                                steps=2, height=32, width=48)


def test_the_tiny_text_to_image_checkpoint_reloads_as_the_real_pipeline_and_its_images_are_labelled(tiny_generator):
    folder = tiny_generator.checkpoint.path
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "Cosmos2TextToImagePipeline" and index["safety_checker"] == [None, None]
    weights = {p.suffix for p in folder.rglob("*") if p.parent.name in ("transformer", "vae", "text_encoder") and p.is_file()}
    assert weights == {".safetensors", ".json"}, "safetensors only"
    # Text2Image denoises latents alone: no condition-mask channel as in Video2World.
    assert tiny_generator.pipeline.transformer.config.in_channels == 16
    made = tiny_generator.generate("a red bicycle at a crossroads", seed=3, negative_prompt="blurry")
    assert made.image.shape == (32, 48, 3) and made.image.dtype == np.uint8
    assert made.settings["tiny_random"] is True and "random" in made.settings["label"]
    assert made.settings["generator"] == "Cosmos2TextToImagePipeline" and made.settings["seed"] == 3
    again = tiny_generator.generate("a red bicycle at a crossroads", seed=3, negative_prompt="blurry")
    other = tiny_generator.generate("a red bicycle at a crossroads", seed=4, negative_prompt="blurry")
    assert np.array_equal(made.image, again.image) and not np.array_equal(made.image, other.image)
    wide = tiny_generator.generate("a red bicycle", seed=3, height=48, width=64)
    assert wide.image.shape == (48, 64, 3)
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny_generator.generate("a red bicycle", seed=3, height=40, width=48)


def test_prompt_files_keep_bad_rows_with_their_error_class_and_the_good_rows_become_requests():
    rows = prompt_sets.parse_prompt_file(_jsonl(PROMPTS, "{broken\n[1, 2]\n"), "drop.jsonl", max_images_per_prompt=16)
    assert [r.error_class for r in rows] == [None, None, "MissingPrompt", "BadCount", "BadSeed", None, None, "BadJson",
                                             "NotAnObject"]
    assert rows[5].class_names == ["van", "truck"]
    settings = prompt_sets.PromptSettings(images_per_prompt=2, base_seed=100)
    paired = prompt_sets.requests_from_rows(rows, settings, width=160, height=96, source_name="drop.jsonl")
    requests = [request for _, request in paired if request]
    assert [r.seeds for r in requests] == [[7, 8, 9], [100, 101], [100]]
    assert requests[0].class_names == ["bicycle", "car"] and requests[0].source == "drop.jsonl:1"
    assert requests[1].negative_prompt == "blurry" and requests[0].negative_prompt == settings.negative_prompt
    # The last row asks for the first row's images again (its classes in another order): set aside, not made twice.
    assert paired[-3][0].error_class == "DuplicatePrompt" and "line 1" in paired[-3][0].error_message

    csv_rows = prompt_sets.parse_prompt_file(
        b"prompt,negative_prompt,n,seed,class_names\nA cyclist in fog,,2,5,bicycle;person\n,,,,\nA car,x,0,,\n", "p.csv")
    assert [(r.prompt, r.n, r.seed, r.class_names, r.error_class) for r in csv_rows] == [
        ("A cyclist in fog", 2, 5, ["bicycle", "person"], None), (None, None, None, [], "MissingPrompt"),
        (None, None, None, [], "BadCount")]
    assert [r.error_class for r in prompt_sets.parse_prompt_file(b"text\nhello\n", "p.csv")] == ["MissingPromptColumn"]
    assert [r.error_class for r in prompt_sets.parse_prompt_file(b"\xff\xfe{", "p.jsonl")] == ["BadEncoding"]
    assert [r.error_class for r in prompt_sets.parse_prompt_file(b"{}", "p.yaml")] == ["UnsupportedFormat"]


def test_captions_become_one_prompt_per_condition_with_the_condition_in_prompt_and_negative_prompt():
    clips = [{"clip_id": "c1", "caption": "A cyclist rides along a city street."}]
    requests = prompt_sets.requests_from_captions(clips, ["rain", "night"], ["bicycle"], prompt_sets.PromptSettings(), 160, 96)
    assert [r.condition for r in requests] == ["rain", "night"]
    assert all(r.prompt.startswith("A cyclist rides along a city street") for r in requests)
    assert "rain" in requests[0].prompt.lower() and "daylight" in requests[1].negative_prompt.lower()
    assert len({r.request_id for r in requests}) == 2 and all(r.source_clip_id == "c1" for r in requests)


def test_the_image_metric_critic_prefers_a_real_frame_to_its_blurred_noisy_or_black_versions():
    frames, _ = read_video(SAMPLES / "dashcam_solid_white_right.mp4", max_width=320)
    real = frames[len(frames) // 2]
    rng = np.random.default_rng(0)
    damaged = {
        "blurred": cv2.GaussianBlur(real, (0, 0), 4),
        "noisy": np.clip(real + rng.normal(0, 25, real.shape), 0, 255).astype(np.uint8),
        "black": np.zeros_like(real),
    }
    scores = ImageMetricCritic().score([real, *damaged.values()], [""] * 4)
    assert scores[0].score > 0.95
    for (name, _), score in zip(damaged.items(), scores[1:]):
        assert score.score < 0.6, name
    assert scores[1].sharpness < 0.2 and scores[2].noise_free < 0.3 and scores[3].exposure == 0.0


def test_the_detector_export_holds_coco_and_yolo_layouts_with_no_boxes(tmp_path):
    store = LocalStore(tmp_path / "home")
    rows = []
    for index, names in enumerate([["bicycle"], ["car", "bicycle"]]):
        reference = store.write_bytes(f"images/{index}.png", b"")
        Image.new("RGB", (48, 32), (index * 90, 60, 30)).save(store.local_path(reference), format="PNG")
        rows.append({"candidate_id": f"cand-{index}", "path": reference, "width": 48, "height": 32, "prompt": f"p{index}",
                     "negative_prompt": "n", "seed": index, "request_id": "r", "round": "prompts-x", "class_names": names,
                     "score": 0.5 + index / 10, "critic": "image-metric", "critic_version": "v", "model": "m",
                     "checkpoint": "c", "tiny_random": True})
    folder = tmp_path / "export"
    folder.mkdir()
    summary = write_detector_export(folder, rows, store.local_path, "prompts-x")
    assert summary["images"] == 2 and summary["categories"] == ["bicycle", "car"] and summary["boxes"] == 0
    coco = json.loads((folder / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["bicycle", "car"] and coco["annotations"] == []
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        ("images/cand-0.png", 48, 32), ("images/cand-1.png", 48, 32)]
    assert all((folder / i["file_name"]).is_file() for i in coco["images"])
    # An empty YOLO label file would say "no object here": the labels folder waits for the user's boxes.
    assert (folder / "labels").is_dir() and not any((folder / "labels").iterdir())
    assert 'names:\n  0: "bicycle"\n  1: "car"' in (folder / "data.yaml").read_text()
    manifest = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert [(m["file"], m["seed"], m["score"], m["class_names"]) for m in manifest] == [
        ("images/cand-0.png", 0, 0.5, ["bicycle"]), ("images/cand-1.png", 1, 0.6, ["car", "bicycle"])]
    readme = (folder / "README.md").read_text()
    assert "Bounding boxes" in readme and "tiny random-weight" in readme


@pytest.fixture(scope="module")
def prompt_round(tmp_path_factory):
    """One prompt file dropped in the prompt inbox, taken by the sensor and run through text_to_image_job."""
    home = tmp_path_factory.mktemp("t2i") / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    patch = pytest.MonkeyPatch()
    for name, value in {"COSMOS_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "COSMOS_PROFILE": "local",
                        "COSMOS_SETTLE_SECONDS": "0"}.items():
        patch.setenv(name, value)
    inbox = prompt_sets.prompt_inbox(home)
    inbox.mkdir(parents=True)
    (inbox / "keyframes.jsonl").write_bytes(_jsonl(PROMPTS))
    (inbox / "same_prompts_again.jsonl").write_bytes(_jsonl(PROMPTS))
    (inbox / "notes.txt").write_text("not a prompt file")
    for path in inbox.iterdir():
        age_file(path)
    defs = build_definitions("local")
    sensor = defs.resolve_sensor_def("text_to_image_sensor")

    def tick(instance, cursor=None):
        with dg.partition_loading_context(dynamic_partitions_store=instance):
            with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor, definitions=defs,
                                         resources=defs.resources) as context:
                return sensor.evaluate_tick(context)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        result = tick(instance)
        [request] = result.run_requests
        [added] = result.dynamic_partitions_requests
        assert added.partitions_def_name == "generation_rounds" and added.partition_keys == [request.partition_key]
        instance.add_dynamic_partitions("generation_rounds", [request.partition_key])
        config = request.run_config
        # Random-weight images: a score threshold means nothing for them; best-of-N keeps one image per prompt.
        config["ops"]["accepted_images"] = {"config": {"rule": "best_of_n"}}
        run = defs.resolve_job_def("text_to_image_job").execute_in_process(
            instance=instance, partition_key=request.partition_key, run_config=config)
        again = tick(instance, result.cursor)
        yield home, request, run, again, instance
    patch.undo()


def _round_table(home: Path, asset: str, partition: str) -> pl.DataFrame:
    return LocalStore(home).read_parquet(f"tables/{asset}/{partition}.parquet")


def test_a_dropped_prompt_file_starts_one_round_named_by_its_content(prompt_round):
    home, request, run, again, _ = prompt_round
    assert request.partition_key.startswith("prompts-") and request.job_name == "text_to_image_job"
    assert run.success
    assert not again.run_requests, "the same file under another name, or on a later tick, starts nothing"
    prompts = _round_table(home, "image_prompts", request.partition_key)
    assert sorted(prompts["error_class"].drop_nulls()) == ["BadCount", "BadSeed", "DuplicatePrompt", "MissingPrompt"]
    landed = list((home / "artefacts" / "synthetic" / "prompt_files").iterdir())
    assert len(landed) == 1 and landed[0].read_bytes() == _jsonl(PROMPTS)


def test_every_candidate_image_records_its_prompt_seed_and_tiny_generator(prompt_round):
    home, request, _, _, _ = prompt_round
    images = _round_table(home, "synthetic_images", request.partition_key)
    assert images.height == 3 + 2 + 1 and set(images["status"]) == {"ok"}
    assert images["tiny_random"].all() and set(images["generator"]) == {"Cosmos2TextToImagePipeline"}
    assert set(images["model"]) == {"tiny:predict2-t2i"}
    bicycle = images.filter(pl.col("prompt").str.contains("bicycle")).sort("seed")
    assert bicycle["seed"].to_list() == [7, 8, 9] and bicycle["class_names"][0].to_list() == ["bicycle", "car"]
    for row in images.to_dicts():
        with Image.open(row["path"]) as picture:  # the local profile's size, as PNG
            assert picture.format == "PNG" and picture.size == (160, 96)
        settings = json.loads(row["settings"])
        assert settings["seed"] == row["seed"] and settings["negative_prompt"] == row["negative_prompt"]


def test_critique_and_best_of_n_accept_the_best_image_of_each_prompt(prompt_round):
    home, request, _, _, instance = prompt_round
    scores = _round_table(home, "image_critique_scores", request.partition_key)
    assert scores.height == 6 and scores["score"].is_not_null().all() and set(scores["critic"]) == {"image-metric"}
    assert scores["text_agreement"].is_not_null().all(), "ImageNet tags compared with each prompt"
    accepted = _round_table(home, "accepted_images", request.partition_key)
    assert accepted.filter(pl.col("accepted")).height == 3, "one per prompt"
    for (_,), group in accepted.group_by("request_id"):
        best = group.sort("score", "candidate_id", descending=[True, False]).row(0, named=True)
        assert group.filter(pl.col("accepted"))["candidate_id"].to_list() == [best["candidate_id"]]
    [record] = instance.fetch_materializations(dg.AssetKey("accepted_images"), limit=1).records
    metadata = record.asset_materialization.metadata
    assert "data:image/jpeg;base64" in metadata["accepted_images"].value and "image/png" in metadata["score_histogram"].value
    assert metadata["tiny_random_weights"].value is True


def test_the_round_exports_its_accepted_images_for_detector_training(prompt_round):
    home, request, run, _, _ = prompt_round
    # The same blocking rates check as the video rounds stands between selection and the export.
    [check] = [e for e in run.get_asset_check_evaluations() if e.check_name == "accepted_images_rates_in_bounds"]
    assert check.passed and check.metadata["acceptance_rate"].value == 0.5  # 3 of 6 candidates
    [export] = _round_table(home, "image_detector_export", request.partition_key).to_dicts()
    folder = Path(export["path"])
    assert export["images"] == 3 and export["boxes"] == 0 and export["tiny_random"] is True
    # One image per prompt, each with its prompt's classes: the categories are their union.
    assert sorted(export["categories"]) == ["bicycle", "bus", "car", "truck", "van"]
    coco = json.loads((folder / "annotations.json").read_text())
    assert len(coco["images"]) == 3 and coco["annotations"] == []
    assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(
        f"{c}.png" for c in _round_table(home, "accepted_images", request.partition_key).filter(pl.col("accepted"))["candidate_id"])


@pytest.mark.parametrize("dataset_rounds", ["0", "1"])
def test_curated_dataset_rounds_make_images_only_when_the_knob_is_on(tmp_path, monkeypatch, dataset_rounds):
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    for name, value in {"COSMOS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "COSMOS_PROFILE": "local",
                        "COSMOS_T2I_DATASET_ROUNDS": dataset_rounds}.items():
        monkeypatch.setenv(name, value)
    defs = build_definitions("local")
    sensor = defs.resolve_sensor_def("text_to_image_sensor")
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "curated_dataset", metadata={"dataset_version": "ds-0123456789ab", "clips": 4}))
        with dg.partition_loading_context(dynamic_partitions_store=instance):
            with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), definitions=defs,
                                         resources=defs.resources) as context:
                tick = sensor.evaluate_tick(context)
    requests = [(r.run_key, r.partition_key, r.job_name) for r in tick.run_requests]
    if dataset_rounds == "1":  # the video round's partition, under a run key of its own
        assert requests == [("t2i-round-ds-0123456789ab", "round-ds-0123456789ab", "text_to_image_job")]
    else:
        assert requests == [] and json.loads(tick.cursor)["after"] is not None, "versions seen while off stay old"


def test_the_reason_critic_judges_one_image_with_k_trials_and_counts_what_it_cannot_parse(tmp_path, tiny_generator):
    from cosmos_assets.models.vlm import GenerationSettings
    from cosmos_assets.text_to_image.critique import ImageReasonCritic
    from resources import VisionLanguageResource

    vlm = VisionLanguageResource(home=str(tmp_path), model="tiny:vlm", device="cpu").get()
    critic = ImageReasonCritic(vlm, GenerationSettings(temperature=0.6, max_new_tokens=6, trials=2), "reason")
    image = tiny_generator.generate("a bicycle", seed=1).image
    [critique] = critic.critique([image])
    assert len(critique.trials) == 2 and critique.parsed + critique.parse_failures == 2
    # Random weights rarely write "<answer>No</answer>": an unparsed trial is counted, never taken as an answer.
    assert critique.score is None or 0.0 <= critique.score <= 1.0
    assert critic.identity["tiny_random"] is True and critic.identity["critic"] == "image-reason:tiny:vlm"


def test_a_dataset_round_writes_one_prompt_per_caption_and_condition_and_makes_its_images(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    for name, value in {"COSMOS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "COSMOS_PROFILE": "local"}.items():
        monkeypatch.setenv(name, value)
    # The curated dataset as curated_dataset writes it (the columns image_prompts reads), one version, two splits.
    LocalStore(home).write_parquet("tables/curated_dataset/all.parquet", pl.DataFrame({
        "clip_id": ["clip-a", "clip-b"], "caption": ["A cyclist waits at a crossing.", "A bus turns left."],
        "split": ["train", "validation"], "dataset_version": ["ds-v1", "ds-v1"]}))
    key = "round-ds-v1"
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        instance.add_dynamic_partitions("generation_rounds", [key])
        run = build_definitions("local").resolve_job_def("text_to_image_job").execute_in_process(
            instance=instance, partition_key=key, run_config={"ops": {"image_prompts": {"config": {
                "conditions": ["fog", "night"], "class_names": ["bicycle"], "images_per_prompt": 1}},
                "accepted_images": {"config": {"rule": "best_of_n"}}}})
    assert run.success
    prompts = _round_table(home, "image_prompts", key)
    # Validation clips stay unseen; the training clip's caption is rewritten for each condition.
    assert prompts["source_clip_id"].to_list() == ["clip-a", "clip-a"] and prompts["condition"].to_list() == ["fog", "night"]
    assert all(p.startswith("A cyclist waits at a crossing") for p in prompts["prompt"])
    images = _round_table(home, "synthetic_images", key)
    assert images.height == 2 and images["source_clip_id"].to_list() == ["clip-a", "clip-a"]
    [export] = _round_table(home, "image_detector_export", key).to_dicts()
    assert export["categories"] == ["bicycle"]


def test_cosmos_lineage_names_an_image_candidates_round_prompt_seed_and_decision(prompt_round):
    home, request, _, _, _ = prompt_round
    accepted = _round_table(home, "accepted_images", request.partition_key).filter(pl.col("accepted")).row(0, named=True)
    # An 8-character prefix, as `cosmos lineage` prints ids, finds it too.
    found = lineage(LocalStore(home), accepted["candidate_id"][:8])
    assert found["kind"] == "synthetic image" and found["id"] == accepted["candidate_id"]
    candidate = found["candidate"]
    assert candidate["round"] == request.partition_key and candidate["seed"] == accepted["seed"]
    assert candidate["prompt"] == accepted["prompt"] and candidate["accepted"] is True
    assert candidate["model"] == "tiny:predict2-t2i" and found["clips"] == [], "a prompt-file image comes from no clip"
