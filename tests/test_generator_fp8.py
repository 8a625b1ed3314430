"""Issue 18, item 3: the generator's approximate speed-ups (``GeneratorSpeedups.fp8``, ``step_cache``) on the CPU.

FP8 tensor cores exist only on GPUs of compute capability 8.9+: here ``fp8="auto"`` must change nothing and ``"on"``
must warn and stay in full precision; the FP8 layer's arithmetic itself runs through ``torch._scaled_mm``'s CPU
implementation. The step cache runs on the tiny random Predict2 checkpoint (``tiny:predict2``) and must skip exactly
what it reports. Speed and quality at real size: bench/predict2_fp8.py, bench/GPU_RESULTS.md.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cosmos_assets.models import generator_speedups, tiny_generators
from cosmos_assets.models.generator import GenerationRequest, defaults_for, open_generator
from cosmos_assets.models.generator_speedups import (
    Float8Linear, GeneratorSpeedups, apply_generator_speedups, set_fp8_layers, step_cache_stats,
)
from cosmos_assets.settings import CosmosPaths

CPU = torch.device("cpu")
STEPS = 3
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("fp8_home")


@pytest.fixture(scope="module")
def models_root(home):
    return CosmosPaths(home).models  # where the resource (given `home`) finds tiny:predict2 too


def tiny_generator(models_root, **switches):
    return open_generator("predict2", "tiny:predict2", models_root=models_root, device="cpu",
                          speedups=GeneratorSpeedups(**switches), num_frames=9, height=32, width=32, steps=STEPS)


@pytest.fixture(scope="module")
def request_frames():
    return np.random.default_rng(7).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)


def generate(generator, frames, seed=3):
    return generator.generate(GenerationRequest(prompt="a car on a highway", seed=seed, conditioning_frames=frames))


def calls_of(module) -> list:
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


def tiny_transformer():
    from diffusers import CosmosTransformer3DModel

    torch.manual_seed(0)
    config = tiny_generators.transformer_config("predict2", tiny_generators.TINY, 16, 2)
    return CosmosTransformer3DModel(**config).eval(), config


def transformer_inputs(config: dict) -> dict:
    generator = torch.Generator().manual_seed(1)
    frames, height, width = 3, 8, 12
    return dict(hidden_states=torch.randn(1, 16, frames, height, width, generator=generator),
                timestep=torch.full((1, 1, frames, 1, 1), 0.5),
                encoder_hidden_states=torch.randn(1, 7, config["text_embed_dim"], generator=generator),
                condition_mask=torch.zeros(1, 1, frames, height, width), padding_mask=torch.zeros(1, 1, height, width),
                fps=16, return_dict=False)


def scaled_mm_on_cpu() -> bool:
    try:
        a = torch.ones(16, 16).to(torch.float8_e4m3fn)
        torch._scaled_mm(a, a.t(), scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16), out_dtype=torch.float32)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


# --- FP8 ----------------------------------------------------------------------------------------------------


def test_fp8_auto_is_off_on_the_cpu_and_changes_nothing(models_root, request_frames):
    assert GeneratorSpeedups(fp8="auto").resolved(CPU).fp8 == "off"
    plain = generate(tiny_generator(models_root, step_cache="off"), request_frames)
    auto = tiny_generator(models_root, fp8="auto", step_cache="off")
    video = generate(auto, request_frames)
    assert np.array_equal(video.frames, plain.frames)
    assert video.settings["approximations"] == {} and plain.settings["approximations"] == {}
    assert not any(isinstance(m, Float8Linear) for m in auto.pipeline.transformer.modules())


def test_fp8_on_warns_and_falls_back_where_it_cannot_run(models_root, request_frames, caplog):
    generator_speedups._say_fp8_falls_back.cache_clear()
    with caplog.at_level(logging.WARNING, logger=generator_speedups.__name__):
        assert GeneratorSpeedups(fp8="on").resolved(CPU).fp8 == "off"
    assert any("fp8=on" in r.getMessage() and "bf16" in r.getMessage() for r in caplog.records)
    forced = tiny_generator(models_root, fp8="on", step_cache="off")
    video = generate(forced, request_frames)
    assert np.array_equal(video.frames, generate(tiny_generator(models_root, step_cache="off"), request_frames).frames)
    assert "fp8" not in video.settings["approximations"]
    with pytest.raises(ValueError):
        GeneratorSpeedups(fp8="yes")


@pytest.mark.skipif(not scaled_mm_on_cpu(), reason="this torch has no CPU FP8 matrix product")
def test_the_fp8_layers_compute_the_product_to_fp8_precision_and_come_off_cleanly():
    transformer, config = tiny_transformer()
    inputs = transformer_inputs(config)
    keys = list(transformer.state_dict())
    originals = [block.attn1.to_q for block in transformer.transformer_blocks]
    apply_generator_speedups(transformer, GeneratorSpeedups(), CPU)
    with torch.no_grad():
        reference = transformer(**inputs)[0]
    # Each of the 4 blocks: 4 self-attention projections, the cross-attention's query and output, 2 feed-forward.
    assert set_fp8_layers(transformer, True) == 4 * 8
    assert list(transformer.state_dict()) == keys  # the FP8 copies are not part of the checkpoint
    with torch.no_grad():
        fp8 = transformer(**inputs)[0]
    error = float((fp8 - reference).norm() / reference.norm())
    assert 1e-4 < error < 0.1  # quantized (not the same product), to e4m3's 3 mantissa bits
    with torch.enable_grad():  # no FP8 backward: with grad the original product runs
        assert torch.equal(transformer(**inputs)[0], reference)

    layer = transformer.transformer_blocks[0].attn1.to_q
    x = torch.randn(5, 2, layer.in_features)
    with torch.no_grad():
        before = layer(x)
        layer.weight.mul_(2)  # a weight written in place (e.g. a merged adapter): quantized again
        set_fp8_layers(transformer, True)
        assert torch.allclose(layer(x), 2 * before, rtol=1e-2, atol=1e-3)
        layer.weight.div_(2)
    set_fp8_layers(transformer, False)
    assert [block.attn1.to_q for block in transformer.transformer_blocks] == originals
    with torch.no_grad():
        assert torch.equal(transformer(**inputs)[0], reference)


@pytest.mark.skipif(not scaled_mm_on_cpu(), reason="this torch has no CPU FP8 matrix product")
def test_fp8_linear_scales_each_row_so_its_largest_value_is_representable():
    torch.manual_seed(0)
    weight = torch.randn(32, 64) * torch.logspace(-3, 3, 32).unsqueeze(1)  # rows six decades apart
    x = torch.randn(7, 64) * torch.logspace(-2, 2, 7).unsqueeze(1)
    quantized, scale = generator_speedups.quantize_rows(weight)
    assert quantized.dtype == torch.float8_e4m3fn and scale.shape == (32, 1)
    assert torch.allclose(quantized.float().abs().amax(1), torch.full((32,), 448.0))
    out = generator_speedups.fp8_linear(x, quantized, scale.view(1, -1), None)
    # What the FP8 product must be: the dequantized activations times the dequantized weights (both scaled per row).
    x_quantized, x_scale = generator_speedups.quantize_rows(x)
    dequantized = (x_quantized.float() * x_scale) @ (quantized.float() * scale).t()
    assert torch.allclose(out, dequantized, rtol=1e-5, atol=1e-6 * float(dequantized.abs().max()))
    # Against the exact product: e4m3 keeps 3 mantissa bits (an element rounds by up to 6 %), whatever a row's size.
    relative = (out - x @ weight.t()).norm(dim=1) / (x @ weight.t()).norm(dim=1)
    assert float(relative.max()) < 0.15


# --- step cache ---------------------------------------------------------------------------------------------


def test_the_step_cache_skips_what_it_reports_and_labels_the_video(models_root, request_frames):
    plain = generate(tiny_generator(models_root, step_cache="off"), request_frames)
    always = tiny_generator(models_root, step_cache="first_block", step_cache_threshold=1e9)
    blocks = always.pipeline.transformer.transformer_blocks
    first, second = calls_of(blocks[0].ff), calls_of(blocks[1].ff)
    video = generate(always, request_frames)
    label = video.settings["approximations"]["step_cache"]
    # CFG: two passes a step, each branch with its own cache. The first pass of each branch runs every block; every
    # later pass is served from the cache at this threshold.
    assert label == {"kind": "first_block", "threshold": 1e9, "passes": 2 * STEPS, "skipped": 2 * STEPS - 2}
    assert len(first) == 2 * STEPS and len(second) == 2
    assert not np.array_equal(video.frames, plain.frames)
    again = generate(always, request_frames)  # a new video starts with an empty cache
    assert np.array_equal(again.frames, video.frames) and again.settings["approximations"] == video.settings["approximations"]

    never = tiny_generator(models_root, step_cache="first_block", step_cache_threshold=0.0)
    video = generate(never, request_frames)
    assert video.settings["approximations"]["step_cache"]["skipped"] == 0
    assert np.array_equal(video.frames, plain.frames)  # nothing skipped: the same arithmetic, bit for bit
    stats = step_cache_stats(never.pipeline.transformer)
    assert len(stats["changes"]) == 2 * STEPS and stats["changes"][:2] == [None, None]  # nothing to compare with yet
    assert all(change > 0 for change in stats["changes"][2:])


def test_the_step_cache_is_on_by_default_and_every_video_says_what_it_skipped(models_root, request_frames):
    """The default (bench/GPU_RESULTS.md: within the bf16 noise floor on the random-weight 2B model)."""
    assert (GeneratorSpeedups().step_cache, GeneratorSpeedups().step_cache_threshold) == ("first_block", 0.05)
    assert GeneratorSpeedups.off().step_cache == "off"
    video = generate(tiny_generator(models_root), request_frames)
    label = video.settings["approximations"]["step_cache"]
    assert label["threshold"] == 0.05 and label["passes"] == 2 * STEPS and 0 <= label["skipped"] <= 2 * STEPS - 2


def test_the_same_pass_again_is_computed_again():
    """A timestep no lower than the last one starts a new sampling run: the same inputs twice run every block twice
    (bench/predict2_fp8.py times single passes this way)."""
    transformer, config = tiny_transformer()
    inputs = transformer_inputs(config)
    apply_generator_speedups(transformer, GeneratorSpeedups(step_cache="first_block", step_cache_threshold=1e9), CPU)
    second = calls_of(transformer.transformer_blocks[1].ff)
    with torch.no_grad():
        once = transformer(**inputs)[0]
        twice = transformer(**inputs)[0]
        assert len(second) == 2 and torch.equal(once, twice)
        # The next step of the same branch (same prompt tensor, lower timestep): served from the cache.
        later = transformer(**{**inputs, "timestep": torch.full_like(inputs["timestep"], 0.4)})[0]
    assert len(second) == 2
    assert step_cache_stats(transformer)["skipped"] == 1 and not torch.equal(later, once)


def test_the_generator_resource_passes_the_approximate_switches(home):
    from resources.generator import VideoGeneratorResource

    resource = VideoGeneratorResource(kind="predict2", model="tiny:predict2", home=str(home), device="cpu",
                                      fp8="auto", step_cache="first_block", step_cache_threshold=0.1)
    speedups = resource.get().speedups
    assert (speedups.fp8, speedups.step_cache, speedups.step_cache_threshold) == ("auto", "first_block", 0.1)
    default = VideoGeneratorResource(kind="predict2", model="tiny:predict2")
    assert (default.fp8, default.step_cache, default.step_cache_threshold) == (
        GeneratorSpeedups().fp8, GeneratorSpeedups().step_cache, GeneratorSpeedups().step_cache_threshold)


@pytest.mark.skipif(not scaled_mm_on_cpu(), reason="this torch has no CPU FP8 matrix product")
def test_fp8_blocks_compile_as_one_graph_without_breaks(monkeypatch):
    """On a GPU the FP8 layers run inside the regionally compiled blocks: they must trace with ``fullgraph`` (here
    through the ``aot_eager`` backend, which traces as inductor would, without generating code)."""
    from torch._dynamo.utils import counters

    transformer, config = tiny_transformer()
    inputs = transformer_inputs(config)
    monkeypatch.setattr(generator_speedups, "fp8_unsupported", lambda device: None)  # as on a GPU with FP8 cores
    torch._dynamo.reset()
    counters.clear()
    try:
        apply_generator_speedups(transformer, GeneratorSpeedups(fp8="on"), CPU)
        with torch.no_grad():
            eager = transformer(**inputs)[0]
        settings = apply_generator_speedups(
            transformer, GeneratorSpeedups(compile="on", compile_backend="aot_eager", fp8="on"), CPU)
        with torch.no_grad():
            compiled = transformer(**inputs)[0]
        state = transformer.__dict__[generator_speedups.STATE]
        assert settings.fp8 == "on" and isinstance(transformer.transformer_blocks[0].ff.net[2], Float8Linear)
        assert "compile_error" not in state and counters["stats"]["unique_graphs"] == 1
        assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-5)
    finally:
        torch._dynamo.reset()
