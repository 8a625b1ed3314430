"""Issue 8's speed-ups compute what the paths before them computed: the fast Cosmos transformer forward against
diffusers' own, the static-cache VLM decode against ``generate``, the batched vision windows against the
per-window loop, the device resize against PIL. Tiny random models on the CPU; the GPU timings are in
bench/GPU_RESULTS.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos_assets.models import generator_speedups, tiny_generators, vlm_speedups
from cosmos_assets.models.checkpoints import resolve_checkpoint
from cosmos_assets.models.frames import sample_frames
from cosmos_assets.models.generator_speedups import GeneratorSpeedups, apply_generator_speedups
from cosmos_assets.models.vlm_speedups import StaticDecoder
from cosmos_assets.models.tiny import build_tiny_vlm
from cosmos_assets.models.vlm import GenerationSettings, VideoPrompt, VideoSizing, VLMSpeedups, load_transformers_vlm

CPU = torch.device("cpu")
ALL_OFF = VLMSpeedups(share_prefill=True, static_decode=False, cuda_graphs=False, device_preprocess=False, batched_vision=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


# --- generator: the Cosmos transformer ---------------------------------------------------------------------


def tiny_transformer(kind: str):
    from diffusers import CosmosTransformer3DModel

    torch.manual_seed(0)
    config = tiny_generators.transformer_config(kind, tiny_generators.TINY, 16, 2)
    return CosmosTransformer3DModel(**config).eval(), config


def transformer_inputs(kind: str, config: dict, per_frame: bool) -> dict:
    generator = torch.Generator().manual_seed(1)
    batch, frames, height, width = 1, 3, 8, 12
    inputs = dict(hidden_states=torch.randn(batch, 16, frames, height, width, generator=generator),
                  timestep=torch.rand(batch, 1, frames, 1, 1, generator=generator) if per_frame else torch.rand(batch, generator=generator),
                  encoder_hidden_states=torch.randn(batch, 7, config["text_embed_dim"] if kind == "predict2" else 32, generator=generator),
                  condition_mask=torch.zeros(batch, 1, frames, height, width), padding_mask=torch.zeros(1, 1, height, width),
                  fps=16, return_dict=False)
    if kind == "transfer2.5":
        inputs["encoder_hidden_states"] = (inputs["encoder_hidden_states"], torch.randn(batch, 4, 8, generator=generator))
        tokens, channels = frames * height * width // 4, config["num_attention_heads"] * config["attention_head_dim"]
        inputs["block_controlnet_hidden_states"] = [0.1 * torch.randn(batch, tokens, channels, generator=generator)
                                                    for _ in range(len(range(0, config["num_layers"], config["controlnet_block_every_n"])))]
    return inputs


@pytest.mark.parametrize("kind", ["predict2", "transfer2.5"])
@pytest.mark.parametrize("per_frame", [True, False], ids=["timestep-per-frame", "timestep-per-sample"])
def test_the_fast_transformer_forward_computes_what_diffusers_computes(kind, per_frame):
    transformer, config = tiny_transformer(kind)
    inputs = transformer_inputs(kind, config, per_frame)
    with torch.no_grad():
        apply_generator_speedups(transformer, GeneratorSpeedups.off(), CPU)
        assert "forward" not in transformer.__dict__  # all off is diffusers' own forward
        reference = transformer(**inputs)[0]
        apply_generator_speedups(transformer, GeneratorSpeedups(), CPU)
        fast = transformer(**inputs)[0]
        apply_generator_speedups(transformer, GeneratorSpeedups(frame_adaln=False, attention="flash"), CPU)
        per_token = transformer(**inputs)[0]
    assert torch.allclose(fast, reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(per_token, reference)  # the per-token layout through the same code is diffusers' arithmetic


def test_compiled_blocks_trace_as_one_graph_shared_by_every_block():
    from torch._dynamo.utils import counters

    transformer, config = tiny_transformer("predict2")
    inputs = transformer_inputs("predict2", config, per_frame=True)
    with torch.no_grad():
        apply_generator_speedups(transformer, GeneratorSpeedups.off(), CPU)
        reference = transformer(**inputs)[0]
        torch._dynamo.reset()
        counters.clear()
        settings = apply_generator_speedups(transformer, GeneratorSpeedups(compile="on", compile_backend="eager"), CPU)
        compiled = transformer(**inputs)[0]
        again = transformer(**inputs)[0]
    state = transformer.__dict__[generator_speedups.STATE]
    assert settings.compile == "on" and state["blocks"] is not None and "compile_error" not in state
    assert counters["stats"]["unique_graphs"] == 1  # four blocks, one traced graph, no graph breaks
    assert torch.allclose(compiled, reference, rtol=1e-5, atol=1e-5) and torch.equal(compiled, again)
    torch._dynamo.reset()


def test_compilation_is_for_cuda_unless_asked_and_cudnn_attention_for_hopper():
    on_cpu = GeneratorSpeedups().resolved(CPU)
    assert on_cpu.compile == "off" and on_cpu.attention == "default" and on_cpu.frame_adaln
    assert GeneratorSpeedups(compile="on").resolved(CPU).compile == "on"
    assert not GeneratorSpeedups.off().resolved(CPU).active


def test_the_generator_gives_the_same_video_with_and_without_the_speedups(tmp_path, samples):
    from cosmos_assets.models.generator import GenerationRequest, defaults_for, load_generator

    path = tiny_generators.build_tiny_predict2(tmp_path / "predict2")
    checkpoint = resolve_checkpoint(str(path), role="generator")
    frames = sample_frames(samples / "dashcam_solid_white_right.mp4", fps=8, max_frames=9, max_side=64).frames
    # Five conditioning frames of nine: the transformer decides the rest of the video.
    request = GenerationRequest(prompt="a car on a highway", seed=3, conditioning_frames=frames[:5])
    videos = []
    for switches in (GeneratorSpeedups.off(), GeneratorSpeedups()):
        generator = load_generator(checkpoint, "predict2", device="cpu", speedups=switches,
                                   defaults=defaults_for("predict2", num_frames=9, height=32, width=32, steps=2))
        videos.append(generator.generate(request).frames.astype(int))
    assert np.abs(videos[0] - videos[1]).max() <= 1


def test_the_flash4_layout_computes_what_the_sdpa_layout_computes(monkeypatch):
    """FlashAttention-4 runs only on Hopper GPUs (its kernel is checked against cuDNN in bench/gpu_speed.py). Here
    the code around it — projections, norms and rotary embedding in the [B, S, H, D] layout — runs with SDPA
    standing in for the kernel, and must give diffusers' numbers."""
    def sdpa_in_bshd_layout(query, key, value):
        out = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (query, key, value)))
        return out.transpose(1, 2)

    transformer, config = tiny_transformer("predict2")
    inputs = transformer_inputs("predict2", config, per_frame=True)
    with torch.no_grad():
        apply_generator_speedups(transformer, GeneratorSpeedups.off(), CPU)
        reference = transformer(**inputs)[0]
        monkeypatch.setattr(generator_speedups, "flash4_attention", sdpa_in_bshd_layout)
        monkeypatch.setattr(generator_speedups, "flash4_available", lambda device: True)
        settings = apply_generator_speedups(transformer, GeneratorSpeedups(attention="flash4"), CPU)
        fast = transformer(**inputs)[0]
    assert settings.attention == "flash4"
    assert torch.allclose(fast, reference, rtol=1e-5, atol=1e-5)


def test_flash4_falls_back_to_sdpa_where_it_cannot_run_and_is_chosen_where_it_can(monkeypatch):
    assert GeneratorSpeedups(attention="flash4").resolved(CPU).attention == "default"
    assert not generator_speedups.flash4_available(CPU)
    monkeypatch.setattr(generator_speedups, "flash4_available", lambda device: True)  # as on a Hopper GPU with the package
    assert GeneratorSpeedups().resolved(CPU).attention == "flash4"
    assert GeneratorSpeedups(attention="cudnn").resolved(CPU).attention == "cudnn"  # an explicit choice stands


def test_the_rotary_embedding_is_computed_once_per_video_shape():
    transformer, config = tiny_transformer("predict2")
    inputs = transformer_inputs("predict2", config, per_frame=True)
    calls = []
    transformer.rope.register_forward_hook(lambda *a: calls.append(1))
    apply_generator_speedups(transformer, GeneratorSpeedups(), CPU)
    with torch.no_grad():
        first = transformer(**inputs)[0]
        again = transformer(**inputs)[0]
        transformer(**{**inputs, "fps": 24})
    assert len(calls) == 2 and torch.equal(first, again)  # a new fps is a new table


def test_encoding_only_the_conditioning_frames_and_postprocessing_on_the_device_change_no_bit(tmp_path, samples):
    from cosmos_assets.models.generator import GenerationRequest, defaults_for, load_generator

    path = tiny_generators.build_tiny_predict2(tmp_path / "predict2")
    checkpoint = resolve_checkpoint(str(path), role="generator")
    frames = sample_frames(samples / "dashcam_solid_white_right.mp4", fps=8, max_frames=9, max_side=64).frames
    encodes = []
    videos = {}
    for label, switches in (("pipeline", GeneratorSpeedups(conditioning_encode=False, device_postprocess=False)),
                            ("around it", GeneratorSpeedups())):
        generator = load_generator(checkpoint, "predict2", device="cpu", speedups=switches,
                                   defaults=defaults_for("predict2", num_frames=13, height=32, width=32, steps=2))
        vae = generator.pipeline.vae
        original = type(vae).encode
        type(vae).encode = lambda self, x, *a, **k: encodes.append(x.shape[2]) or original(self, x, *a, **k)
        try:
            for conditioning in (1, 5, 9):
                request = GenerationRequest(prompt="a car", seed=4, conditioning_frames=frames[:conditioning])
                videos[label, conditioning] = generator.generate(request).frames
        finally:
            type(vae).encode = original
    for conditioning in (1, 5, 9):
        assert np.array_equal(videos["pipeline", conditioning], videos["around it", conditioning])
    assert encodes == [13, 13, 13, 1, 5, 9]  # the padding after the conditioning frames was not encoded


def test_the_generator_resource_passes_its_switches(tmp_path):
    from resources.generator import VideoGeneratorResource

    path = tiny_generators.build_tiny_predict2(tmp_path / "predict2")
    resource = VideoGeneratorResource(kind="predict2", model=str(path), device="cpu", frame_adaln=False,
                                      attention_backend="flash", compile_transformer="off", device_postprocess=False)
    assert resource.get().speedups == GeneratorSpeedups(frame_adaln=False, attention="flash", compile="off",
                                                        device_postprocess=False)
    assert VideoGeneratorResource(kind="predict2", model=str(path)).frame_adaln is True


# --- vision-language model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    root = tmp_path_factory.mktemp("speedup_models")
    build_tiny_vlm(root / "vlm")
    return load_transformers_vlm(resolve_checkpoint(str(root / "vlm"), role="vlm"), CPU, torch.float32,
                                 VideoSizing(total_pixels=8 * 16 * 28 * 28))


@pytest.fixture(scope="module")
def prompts(samples):
    dashcam = sample_frames(samples / "dashcam_solid_white_right.mp4", fps=2, max_frames=8, max_side=320)
    conveyor = sample_frames(samples / "bottle_conveyor.mp4", fps=2, max_frames=5, max_side=320)
    return [VideoPrompt(dashcam.frames, dashcam.fps, "Describe the video.", "Be brief."),
            VideoPrompt(conveyor.frames[:4], conveyor.fps, "Any anomalies?")]  # different lengths: left padding


@pytest.mark.parametrize("settings", [
    GenerationSettings(temperature=0.0, max_new_tokens=12, repetition_penalty=1.05),
    GenerationSettings(temperature=0.6, top_p=0.95, trials=3, max_new_tokens=12, repetition_penalty=1.0, seed=5),
    GenerationSettings(temperature=0.9, top_p=0.8, trials=2, max_new_tokens=10, repetition_penalty=1.05, seed=2, min_new_tokens=10),
], ids=["greedy", "critic-sampling", "penalty-and-min-length"])
def test_the_static_decode_gives_the_texts_generate_gives(vlm, prompts, settings):
    try:
        vlm.configure(ALL_OFF)
        reference = vlm.generate(prompts, settings)
        vlm.configure(VLMSpeedups(device_preprocess=False))
        fast = vlm.generate(prompts, settings)
    finally:
        vlm.configure(VLMSpeedups())
    assert fast == reference
    assert vlm.decoder.last["steps"] <= settings.max_new_tokens and not vlm.decoder.last["cuda_graph"]  # no graphs on the CPU


def test_every_switch_on_still_gives_the_reference_answers(vlm, prompts):
    settings = GenerationSettings(temperature=0.6, trials=3, max_new_tokens=10, seed=1)
    try:
        vlm.configure(ALL_OFF)
        reference = vlm.generate(prompts, settings)
        vlm.configure(VLMSpeedups(share_prefill=False))  # num_return_sequences: K encodes, K prefills
        separate = vlm.generate(prompts, settings)
    finally:
        vlm.configure(VLMSpeedups())
    assert vlm.generate(prompts, settings) == reference == separate


def test_the_decoder_keeps_its_buffers_per_shape(vlm, prompts):
    decoder: StaticDecoder = vlm.decoder
    settings = GenerationSettings(temperature=0.6, trials=2, max_new_tokens=6)
    vlm.generate(prompts[:1], settings)
    state = decoder.states[next(reversed(decoder.states))]
    vlm.generate(prompts[:1], settings)
    assert decoder.states[next(reversed(decoder.states))] is state
    vlm.generate(prompts, settings)
    vlm.generate(prompts, GenerationSettings(temperature=0.6, trials=3, max_new_tokens=6))
    assert len(decoder.states) == 2


def test_batched_vision_windows_equal_the_per_window_loop(vlm, prompts):
    from transformers.video_utils import VideoMetadata

    video = vlm._fit(prompts[0].frames)
    inputs = vlm.processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[video], return_tensors="pt",
                           videos_kwargs={"do_resize": False, "cap_pixels_per_frame": True,
                                          "video_metadata": [VideoMetadata(total_num_frames=len(video), fps=2.0)]})
    visual = vlm.model.model.visual
    outputs = []
    with torch.no_grad():
        for batched in (False, True):
            vlm_speedups.batch_vision_windows(vlm.model, batched)
            outputs.append(visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"]).pooler_output)
    layouts = [layout for module in visual.modules() for _, layout in module.__dict__.get("_window_layouts", {}).values()]
    vlm_speedups.batch_vision_windows(vlm.model, vlm.speedups.batched_vision)
    assert any(index is not None for index, *_ in layouts)  # uneven windows: the padded, masked call ran
    assert any(index is None for index, *_ in layouts)  # the full-attention layer: equal frame pairs, no mask
    assert torch.allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)


def test_frames_resized_on_the_device_match_pil_within_a_grey_level(vlm, prompts):
    frames = prompts[0].frames
    pil = vlm._fit(frames).astype(int)
    device = vlm._fit_on_device(frames).permute(0, 2, 3, 1).numpy().astype(int)
    assert pil.shape == device.shape
    assert np.abs(pil - device).mean() < 0.5 and np.percentile(np.abs(pil - device), 99) <= 2


def test_the_resource_passes_the_vlm_switches(tmp_path):
    from resources.models import VisionLanguageResource

    resource = VisionLanguageResource(home=str(tmp_path), model="tiny:vlm", device="cpu", static_decode=False,
                                      cuda_graphs=False, device_preprocess=False, batched_vision=False)
    assert resource.get().speedups == VLMSpeedups(static_decode=False, cuda_graphs=False, device_preprocess=False,
                                                   batched_vision=False)
