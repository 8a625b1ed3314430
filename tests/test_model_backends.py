"""Model backends: every role loads through its real loading path and returns outputs of the right
type and shape; unsafe, damaged or missing checkpoints fail with errors that say what to do."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from chat_server import ChatCompletionsServer
from cosmos_assets.models.catalog import resolve_model
from cosmos_assets.models.checkpoints import (
    TINY_MARKER,
    CorruptCheckpoint,
    ModelNotAvailable,
    RemoteCodeRefused,
    UnsafeCheckpoint,
    require_pinned_revision,
    resolve_checkpoint,
)
from cosmos_assets.models.embedders import SiglipVideoEmbedder, load_efficientnet, load_minilm, load_siglip
from cosmos_assets.models.frames import sample_frames
from cosmos_assets.models.runtime import MODELS, ModelCache, choose_device, choose_dtype
from cosmos_assets.models.tiny import build_tiny_siglip, build_tiny_vlm
from cosmos_assets.models.vlm import (
    EndpointError,
    EndpointVLM,
    GenerationSettings,
    VideoPrompt,
    VideoSizing,
    load_transformers_vlm,
    parse_reasoned_answer,
)

CPU = torch.device("cpu")
SMALL_VIDEO = VideoSizing(total_pixels=8 * 16 * 28 * 28)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_tiny_vlm(root / "vlm")
    build_tiny_siglip(root / "siglip")
    return root


@pytest.fixture(scope="session")
def tiny_vlm(tiny_models):
    return load_transformers_vlm(resolve_checkpoint(str(tiny_models / "vlm"), role="vlm"), CPU, torch.float32, SMALL_VIDEO)


@pytest.fixture(scope="session")
def clips(samples):
    dashcam = sample_frames(samples / "dashcam_solid_white_right.mp4", fps=2, max_frames=8, max_side=320)
    conveyor = sample_frames(samples / "bottle_conveyor.mp4", fps=2, max_frames=5, max_side=320)
    return dashcam, conveyor


# --- checkpoints --------------------------------------------------------------------------------


def test_tiny_checkpoints_are_marked_and_labelled(tiny_models):
    checkpoint = resolve_checkpoint(str(tiny_models / "vlm"), role="vlm")
    assert checkpoint.tiny_random and (checkpoint.path / TINY_MARKER).is_file()
    assert "tiny random weights" in checkpoint.label
    assert all(p.suffix != ".bin" for p in checkpoint.path.iterdir())
    assert checkpoint.version == resolve_checkpoint(str(tiny_models / "vlm"), role="vlm").version


def test_a_missing_model_names_itself_and_how_to_provide_it_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotAvailable, match=r"nvidia/Cosmos-Reason1-7B.*not in the Hugging Face cache.*hf download"):
        resolve_checkpoint("nvidia/Cosmos-Reason1-7B", role="vision-language")
    with pytest.raises(ModelNotAvailable, match="no such directory"):
        resolve_checkpoint(str(tmp_path / "nowhere"), role="vision-language")


def test_a_pickle_only_checkpoint_is_refused(tiny_models, tmp_path):
    copy = shutil.copytree(tiny_models / "siglip", tmp_path / "pickled")
    state = {k: v for k, v in torch.nn.Linear(2, 2).state_dict().items()}
    torch.save(state, copy / "pytorch_model.bin")
    (copy / "model.safetensors").unlink()
    with pytest.raises(UnsafeCheckpoint, match=r"pickle formats \(pytorch_model.bin\).*safetensors"):
        resolve_checkpoint(str(copy), role="video embedder")


@pytest.mark.parametrize("damage", ["truncate", "garbage_header"])
def test_a_damaged_safetensors_file_is_reported(tiny_models, tmp_path, damage):
    copy = shutil.copytree(tiny_models / "siglip", tmp_path / damage)
    weights = copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\xff" * 64 + data[64:])
    with pytest.raises(CorruptCheckpoint, match="model.safetensors is not a valid safetensors file"):
        resolve_checkpoint(str(copy), role="video embedder")


def test_remote_code_needs_a_pinned_commit():
    assert require_pinned_revision("nvidia/Cosmos-Embed1-448p", False, None) is False
    with pytest.raises(RemoteCodeRefused, match="pinned revision"):
        require_pinned_revision("nvidia/Cosmos-Embed1-448p", True, "main")
    assert require_pinned_revision("nvidia/Cosmos-Embed1-448p", True, "a" * 40) is True


def test_tiny_sources_are_built_on_first_use_and_reused(tmp_path):
    first = resolve_model("tiny:siglip", role="video embedder", models_root=tmp_path)
    marker_mtime = (first.path / TINY_MARKER).stat().st_mtime_ns
    again = resolve_model("tiny:siglip", role="video embedder", models_root=tmp_path)
    assert again.path == first.path and (again.path / TINY_MARKER).stat().st_mtime_ns == marker_mtime
    assert not [p for p in first.path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_device_and_dtype_default_to_the_cpu_in_float32_here():
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert choose_dtype(CPU) == torch.float32
    assert choose_dtype(CPU, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        choose_dtype(CPU, "int3")


def test_a_model_is_loaded_once_per_process_until_released():
    cache, loads = ModelCache(), []
    first = cache.get("key", lambda: loads.append(1) or object())
    assert cache.get("key", lambda: loads.append(1) or object()) is first and loads == [1]
    cache.release()
    assert len(cache) == 0


def test_two_models_load_at_the_same_time_and_one_key_loads_once():
    """A step loads its text model on a thread while it loads its video model: neither waits for the other."""
    import threading

    cache, started, release, loads = ModelCache(), threading.Event(), threading.Event(), []

    def slow():
        started.set()
        release.wait(10)
        loads.append("slow")
        return "slow model"

    threads = [threading.Thread(target=cache.get, args=("slow", slow)) for _ in range(2)]
    for thread in threads:
        thread.start()
    assert started.wait(10)
    assert cache.get("fast", lambda: "fast model") == "fast model"  # while "slow" is still loading
    release.set()
    for thread in threads:
        thread.join(10)
    assert loads == ["slow"] and cache.get("slow", slow) == "slow model"


# --- vision-language model ----------------------------------------------------------------------


def test_reasoned_answers_are_parsed_and_malformed_ones_kept():
    parsed = parse_reasoned_answer("<think>\nThe car moves smoothly.\n</think>\n<answer> No </answer>")
    assert (parsed.thinking, parsed.answer, parsed.parsed) == ("The car moves smoothly.", "No", True)
    quoted = parse_reasoned_answer("Format: <answer>Yes|No</answer>. <think>ok</think><answer>Yes</answer>")
    assert quoted.answer == "Yes"
    broken = parse_reasoned_answer("<think>unfinished reasoning")
    assert (broken.parsed, broken.answer, broken.thinking) == (False, "", "unfinished reasoning")


def test_the_tiny_vlm_answers_batched_video_prompts_with_k_trials_each(tiny_vlm, clips):
    dashcam, conveyor = clips
    prompts = [VideoPrompt(dashcam.frames, dashcam.fps, "Describe the video.", "You are a careful annotator."),
               VideoPrompt(conveyor.frames, conveyor.fps, "Does the video contain anomalies?")]
    answers = tiny_vlm.generate(prompts, GenerationSettings(temperature=0.6, trials=3, max_new_tokens=12))
    assert [len(a) for a in answers] == [3, 3]
    assert all(isinstance(text, str) and text for trial in answers for text in trial)
    # Random weights, real parsing: whatever text comes back is either parsed or counted as unparsed.
    assert all(parse_reasoned_answer(t).parsed in (True, False) for t in answers[0])
    assert tiny_vlm.identity["tiny_random"] is True


def test_sampling_is_seeded_and_greedy_is_deterministic(tiny_vlm, clips):
    dashcam, _ = clips
    prompt = [VideoPrompt(dashcam.frames, dashcam.fps, "Describe the video.")]
    seeded = GenerationSettings(temperature=0.9, trials=2, max_new_tokens=10, seed=7)
    assert tiny_vlm.generate(prompt, seeded) == tiny_vlm.generate(prompt, seeded)
    greedy = GenerationSettings(temperature=0.0, max_new_tokens=10)
    assert tiny_vlm.generate(prompt, greedy) == tiny_vlm.generate(prompt, greedy)


def test_trials_share_one_prefill_and_decode_exactly_as_separate_prefills(tiny_vlm, clips):
    dashcam, conveyor = clips
    prompts = [VideoPrompt(dashcam.frames, dashcam.fps, "Describe the video.", "Be brief."),
               VideoPrompt(conveyor.frames[:4], conveyor.fps, "Any anomalies?")]  # different lengths: left padding
    greedy = tiny_vlm.generate(prompts, GenerationSettings(temperature=0.0, trials=1, max_new_tokens=10, repetition_penalty=1.0))
    # Sampling at a vanishing temperature picks the top token: both paths must then equal greedy decoding.
    near_greedy = GenerationSettings(temperature=1e-5, top_p=1.0, trials=3, max_new_tokens=10, repetition_penalty=1.0)
    try:
        tiny_vlm.share_prefill = True
        shared = tiny_vlm.generate(prompts, near_greedy)
        tiny_vlm.share_prefill = False
        separate = tiny_vlm.generate(prompts, near_greedy)
    finally:
        tiny_vlm.share_prefill = True
    assert shared == separate == [texts * 3 for texts in greedy]


def test_the_video_pixel_budget_bounds_visual_tokens(tiny_models, clips):
    dashcam, _ = clips
    checkpoint = resolve_checkpoint(str(tiny_models / "vlm"), role="vlm")
    small = load_transformers_vlm(checkpoint, CPU, torch.float32, VideoSizing(total_pixels=8 * 4 * 28 * 28))
    fitted = small._fit(dashcam.frames)
    assert fitted.shape[0] % 2 == 0 and fitted.shape[1] % 28 == 0 and fitted.shape[2] % 28 == 0
    assert fitted.shape[0] * fitted.shape[1] * fitted.shape[2] <= 8 * 4 * 28 * 28


# --- the same role through an OpenAI-compatible endpoint ----------------------------------------


def test_the_endpoint_backend_talks_chat_completions_to_a_live_server(tiny_vlm, clips):
    dashcam, _ = clips
    with ChatCompletionsServer(tiny_vlm) as server:
        endpoint = EndpointVLM(server.base_url, "cosmos-reason1", api_key="secret-token", sizing=SMALL_VIDEO, backoff_s=0.01)
        answers = endpoint.generate([VideoPrompt(dashcam.frames, dashcam.fps, "Any anomalies?", "Be terse.")],
                                    GenerationSettings(temperature=0.6, trials=4, max_new_tokens=8))
        endpoint.close()
    assert len(answers) == 1 and len(answers[0]) == 4 and all(isinstance(t, str) for t in answers[0])
    [request] = server.requests
    assert request["authorization"] == "Bearer secret-token"
    body = request["body"]
    assert body["n"] == 4 and body["temperature"] == 0.6 and body["messages"][0] == {"role": "system", "content": "Be terse."}
    images = [p for p in body["messages"][1]["content"] if p["type"] == "image_url"]
    assert len(images) == len(dashcam.frames) and images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_the_endpoint_retries_overload_and_asks_again_for_missing_trials(tiny_vlm, clips):
    dashcam, _ = clips
    with ChatCompletionsServer(tiny_vlm) as server:
        server.fail_next, server.cap_n = 2, 2
        endpoint = EndpointVLM(server.base_url, "m", sizing=SMALL_VIDEO, backoff_s=0.01, max_retries=3)
        [answers] = endpoint.generate([VideoPrompt(dashcam.frames, dashcam.fps, "Any anomalies?")],
                                      GenerationSettings(temperature=0.6, trials=5, max_new_tokens=4))
    assert len(answers) == 5
    # two 503s, then 2 + 2 + 1 trials as the server caps n at 2
    assert [r["body"]["n"] for r in server.requests] == [5, 5, 5, 3, 1]


def test_the_endpoint_gives_up_with_a_clear_error(tiny_vlm, clips):
    dashcam, _ = clips
    prompt = [VideoPrompt(dashcam.frames[:2], dashcam.fps, "?")]
    with ChatCompletionsServer(tiny_vlm) as server:
        server.fail_next = 10
        endpoint = EndpointVLM(server.base_url, "m", sizing=SMALL_VIDEO, backoff_s=0.01, max_retries=2)
        with pytest.raises(EndpointError, match="failed after 3 attempts: HTTP 503"):
            endpoint.generate(prompt, GenerationSettings(max_new_tokens=2))
        server.fail_next, server.hang = 0, True
        impatient = EndpointVLM(server.base_url, "m", sizing=SMALL_VIDEO, timeout_s=0.5, backoff_s=0.01, max_retries=1)
        with pytest.raises(EndpointError, match="ReadTimeout"):
            impatient.generate(prompt, GenerationSettings(max_new_tokens=2))
    with pytest.raises(EndpointError, match="ConnectError"):
        EndpointVLM(server.base_url, "m", backoff_s=0.01, max_retries=0).generate(prompt, GenerationSettings())


# --- embedders ----------------------------------------------------------------------------------


def test_packaged_efficientnet_gives_unit_video_embeddings_and_sensible_imagenet_tags(clips):
    dashcam, conveyor = clips
    embedder = load_efficientnet(CPU)
    result = embedder.embed_videos([dashcam.frames, conveyor.frames])
    assert result.vectors.shape == (2, 1280) and result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    road_words = {"trailer truck", "car mirror", "traffic light", "moving van", "pickup", "minivan", "tow truck", "mobile home"}
    assert road_words & {tag for tag, _ in result.tags[0]}, result.tags[0]
    assert {"water bottle", "pop bottle", "wine bottle", "beer bottle", "candle"} & {tag for tag, _ in result.tags[1]}, result.tags[1]
    # the same video sampled at another rate stays closer to itself than to another scene
    again = embedder.embed_videos([dashcam.frames[::2]]).vectors[0]
    assert again @ result.vectors[0] > again @ result.vectors[1]


def test_tiny_siglip_embeds_videos_through_transformers(tiny_models, clips):
    dashcam, conveyor = clips
    embedder = load_siglip(resolve_checkpoint(str(tiny_models / "siglip"), role="video embedder"), CPU, torch.float32)
    result = embedder.embed_videos([dashcam.frames, conveyor.frames, conveyor.frames[:1]])
    assert result.vectors.shape == (3, embedder.dim) and embedder.tiny_random
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)


def test_siglip_preprocessing_on_the_device_matches_the_image_processor(tiny_models, clips):
    dashcam, conveyor = clips
    checkpoint = resolve_checkpoint(str(tiny_models / "siglip"), role="video embedder")
    on_device = SiglipVideoEmbedder.load(checkpoint, CPU, torch.float32, preprocess="torch")
    reference = SiglipVideoEmbedder.load(checkpoint, CPU, torch.float32, preprocess="processor")
    videos = [dashcam.frames, conveyor.frames]
    similarity = (on_device.embed_videos(videos).vectors * reference.embed_videos(videos).vectors).sum(axis=1)
    assert similarity.min() > 0.99  # bicubic on tensors vs PIL bicubic: the same picture, not the same bits


def test_minilm_text_embeddings_are_384_d_unit_vectors_that_mean_something():
    embedder = load_minilm(CPU)
    vectors = embedder.embed_texts(["a car driving on a highway", "a truck on a road", "bottles on a conveyor belt"])
    assert vectors.shape == (3, 384) and embedder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert embedder.embed_texts([]).shape == (0, 384)


def test_models_are_shared_across_loads_and_released_at_run_end(clips):
    assert load_efficientnet(CPU) is load_efficientnet(CPU)
    MODELS.release()
    assert len(MODELS) == 0
