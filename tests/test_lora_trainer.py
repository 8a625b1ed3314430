"""The LoRA trainer role: peft adapters on a Cosmos 2.5 transformer, trained by flow matching, saved as safetensors.

The transformer is the tiny random Predict 2.5 one, loaded with ``from_pretrained`` from a checkpoint built
here; training batches are encoded from real sample frames by that checkpoint's own VAE and text encoder.
"""

import av
import numpy as np
import pytest
import torch
from safetensors import safe_open

from cosmos_assets.models import lora
from cosmos_assets.models.checkpoints import resolve_checkpoint
from cosmos_assets.models.generator import load_pipeline
from cosmos_assets.models.tiny_generators import build_tiny_predict25


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_tiny_predict25(tmp_path_factory.mktemp("lora") / "predict25")


@pytest.fixture(scope="module")
def batch(checkpoint, samples) -> lora.TrainingBatch:
    frames = []
    with av.open(str(samples / "bottle_conveyor.mp4")) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(width=32, height=32, format="rgb24"))
            if len(frames) == 9:
                break
    pipeline = load_pipeline(resolve_checkpoint(str(checkpoint), role="generator"), "predict2.5",
                             torch.device("cpu"), torch.float32)
    return lora.prepare_batch(pipeline, np.stack(frames), "a robot arm picks a bottle", max_sequence_length=32)


def fresh_transformer(checkpoint):
    from diffusers import CosmosTransformer3DModel

    return CosmosTransformer3DModel.from_pretrained(checkpoint, subfolder="transformer", use_safetensors=True)


def velocity(transformer, batch, seed=0) -> torch.Tensor:
    """The transformer's output at one fixed noisy input (what an adapter changes)."""
    point = lora.noisy_input(batch, torch.Generator().manual_seed(seed), num_conditional_frames=1)
    with torch.no_grad():
        return lora.predict_velocity(transformer, point, batch.text_embeddings)


def adapter_copy(transformer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lora.lora_state_dict(transformer).items()}


def test_batch_has_latent_and_text_shapes(batch):
    assert batch.latents.shape == (1, 16, 3, 4, 4)  # 9 frames -> 3 latent frames, 32 px -> 4 latent px
    assert batch.text_embeddings.shape == (1, 32, 2 * 16)  # every Qwen layer's hidden states, concatenated
    assert torch.isfinite(batch.latents).all() and torch.isfinite(batch.text_embeddings).all()


def test_lora_wraps_every_attention_projection_and_mlp_and_freezes_the_rest(checkpoint, batch):
    transformer = fresh_transformer(checkpoint)
    before = velocity(transformer, batch)
    settings = lora.add_lora(transformer, rank=4, alpha=8)
    wrapped = {name for name, module in transformer.named_modules() if hasattr(module, "lora_A")}
    blocks = transformer.config.num_layers
    expected = {f"transformer_blocks.{i}.{attn}.{proj}" for i in range(blocks) for attn in ("attn1", "attn2")
                for proj in ("to_q", "to_k", "to_v", "to_out.0")}
    expected |= {f"transformer_blocks.{i}.ff.net.{j}" for i in range(blocks) for j in ("0.proj", "2")}
    assert wrapped == expected
    trainable = {name for name, p in transformer.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert (settings.rank, settings.alpha) == (4, 8.0)
    assert torch.equal(velocity(transformer, batch), before), "a new adapter is a no-op until trained"


def test_a_training_step_has_a_finite_loss_and_moves_only_the_adapter(checkpoint, batch):
    transformer = fresh_transformer(checkpoint)
    base = {k: v.clone() for k, v in transformer.state_dict().items()}
    lora.add_lora(transformer, rank=4, alpha=4)
    adapter = adapter_copy(transformer)
    optimizer = torch.optim.AdamW(lora.lora_parameters(transformer), lr=1e-3)
    loss = lora.training_step(transformer, optimizer, batch, torch.Generator().manual_seed(0), num_conditional_frames=1)
    assert np.isfinite(loss) and loss > 0
    assert any(not torch.equal(adapter[k], v) for k, v in lora.lora_state_dict(transformer).items())
    for key, value in transformer.state_dict().items():
        if "lora_" not in key:
            assert torch.equal(value, base[key.replace(".base_layer", "")]), key


def test_repeated_steps_on_one_batch_lower_its_loss(checkpoint, batch):
    transformer = fresh_transformer(checkpoint)
    lora.add_lora(transformer, rank=8, alpha=8)
    optimizer = torch.optim.AdamW(lora.lora_parameters(transformer), lr=1e-2)
    # The same noise and sigma every step: a fixed objective the adapter can fit.
    losses = [lora.training_step(transformer, optimizer, batch, torch.Generator().manual_seed(0)) for _ in range(8)]
    assert losses[-1] < 0.9 * losses[0]


def test_saved_adapter_reloads_exactly_and_changes_the_output_from_the_base(checkpoint, batch, tmp_path):
    trained = fresh_transformer(checkpoint)
    settings = lora.add_lora(trained, rank=4, alpha=8)
    optimizer = torch.optim.AdamW(lora.lora_parameters(trained), lr=1e-2)
    for seed in range(3):
        lora.training_step(trained, optimizer, batch, torch.Generator().manual_seed(seed))
    path = lora.save_lora(trained, settings, tmp_path / "adapters" / "cosmos_lora.safetensors")

    assert [p.name for p in path.parent.iterdir()] == ["cosmos_lora.safetensors"]
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata()["lora_rank"] == "4" and all("lora_" in key for key in handle.keys())

    reloaded = fresh_transformer(checkpoint)
    assert lora.load_lora(reloaded, path) == settings
    saved, loaded = lora.lora_state_dict(trained), lora.lora_state_dict(reloaded)
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert torch.equal(velocity(reloaded, batch), velocity(trained, batch))
    assert not torch.equal(velocity(reloaded, batch), velocity(fresh_transformer(checkpoint), batch))


def test_an_adapter_for_another_architecture_is_refused(checkpoint, tmp_path):
    transformer = fresh_transformer(checkpoint)
    settings = lora.add_lora(transformer, rank=4, alpha=4, target_modules=("to_q",))
    path = lora.save_lora(transformer, settings, tmp_path / "q_only.safetensors")
    from cosmos_assets.models.checkpoints import check_safetensors_file
    from cosmos_assets.training.registry import check_lora_adapter

    assert check_lora_adapter(check_safetensors_file(path, "saved"), "saved") == 4  # what the checkpoint inbox takes
    with safe_open(str(path), framework="pt") as handle:
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    from safetensors.torch import save_file

    state["transformer_blocks.99.attn1.to_q.lora_A.weight"] = torch.zeros(4, 32)
    save_file(state, tmp_path / "foreign.safetensors", metadata=settings.as_metadata())
    with pytest.raises(ValueError, match="does not fit"):
        lora.load_lora(fresh_transformer(checkpoint), tmp_path / "foreign.safetensors")
