"""Post-training pieces: resumable LoRA training, Fréchet distance, the promotion rule, the checkpoint
registry and its inbox."""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cosmos_assets.models.checkpoints import CorruptCheckpoint
from cosmos_assets.common.artefacts import CHECKPOINTS, LocalStore
from cosmos_assets.common.drop_zone import error_class, settled_folders
from cosmos_assets.training import registry
from cosmos_assets.training.evaluation import ModelScores, frechet_distance, promotion_decision
from cosmos_assets.training.trainer import TrainingConfig, cache_samples, latest_state, train_lora

CONFIG = TrainingConfig(steps=6, save_interval=2, warmup_steps=2, learning_rate=1e-3, frames=9, height=32, width=32)


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    from cosmos_assets.models.checkpoints import resolve_checkpoint
    from cosmos_assets.models.generator import load_pipeline
    from cosmos_assets.models.tiny_generators import build_tiny_predict25

    root = tmp_path_factory.mktemp("trainer")
    build_tiny_predict25(root / "predict2.5")
    checkpoint = resolve_checkpoint(str(root / "predict2.5"), role="trainer base")
    pipeline = load_pipeline(checkpoint, "predict2.5", torch.device("cpu"), torch.float32)
    rng = np.random.default_rng(0)
    samples = [(f"clip-{i}", rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8), f"caption {i}") for i in range(3)]
    cache = cache_samples(pipeline, checkpoint.version, samples, root / "cache", CONFIG, log=lambda _: None)
    return root, checkpoint, pipeline, cache


def test_latents_are_cached_once_per_sample(tiny_pipeline):
    root, checkpoint, pipeline, cache = tiny_pipeline
    stamps = [p.stat().st_mtime_ns for p in cache]
    again = cache_samples(pipeline, checkpoint.version, [(f"clip-{i}", None, "") for i in range(3)], root / "cache", CONFIG)
    assert again == cache and [p.stat().st_mtime_ns for p in again] == stamps  # nothing re-encoded


def resumes_exactly(transformer, cache: list[Path], config: TrainingConfig, folder: Path) -> Path:
    """A 6-step run (saves every 2) stopped after step 3 and resumed from its step-2 save ends with the same losses
    and bit-identical adapter weights as an uninterrupted run. Returns the resumed run's folder."""
    whole = train_lora(transformer, cache, config, folder / "whole", log=lambda _: None)
    first = train_lora(transformer, cache, config, folder / "resumed", log=lambda _: None, stop_after=3)
    assert first.steps == 3 and latest_state(folder / "resumed").name == "state-00000002.safetensors"
    resumed = train_lora(transformer, cache, config, folder / "resumed", log=lambda _: None)
    assert (whole.steps, resumed.steps, resumed.resumed_from) == (6, 6, 2)
    assert resumed.losses == whole.losses and all(np.isfinite(whole.losses))
    a, b = load_file(str(whole.adapter_path)), load_file(str(resumed.adapter_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return folder / "resumed"


def test_a_run_stopped_between_saves_resumes_to_the_same_result(tiny_pipeline, tmp_path):
    _, _, pipeline, cache = tiny_pipeline
    resumes_exactly(pipeline.transformer, cache, CONFIG, tmp_path)
    # the base transformer is untouched: generation keeps using the base weights
    assert not any("lora_" in name for name, _ in pipeline.transformer.named_parameters())


KILLED_TRAINER = """
import sys, torch
sys.path.insert(0, {tests!r})
from pathlib import Path
from cosmos_assets.models.checkpoints import resolve_checkpoint
from cosmos_assets.models.generator import load_pipeline
from cosmos_assets.training.trainer import TrainingConfig, train_lora
torch.set_num_threads(1)
pipeline = load_pipeline(resolve_checkpoint({model!r}, role="t"), "predict2.5", torch.device("cpu"), torch.float32)
config = TrainingConfig(steps=400, save_interval=3, warmup_steps=2, learning_rate=1e-3, frames=9, height=32, width=32)
train_lora(pipeline.transformer, [Path(p) for p in {cache!r}], config, Path({run_dir!r}), log=lambda _: None)
"""


def test_a_killed_training_process_continues_from_its_last_save(tiny_pipeline, tmp_path):
    root, checkpoint, pipeline, cache = tiny_pipeline
    run_dir = tmp_path / "killed"
    script = KILLED_TRAINER.format(tests=os.path.dirname(__file__), model=str(checkpoint.path), cache=[str(p) for p in cache],
                                   run_dir=str(run_dir))
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and latest_state(run_dir) is None:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    saved = latest_state(run_dir)
    assert saved is not None and not (run_dir / "adapter.safetensors").exists()
    saved_step = int(saved.stem.split("-")[1])
    config = TrainingConfig(steps=saved_step + 3, save_interval=3, warmup_steps=2, learning_rate=1e-3, frames=9, height=32, width=32)
    resumed = train_lora(pipeline.transformer, cache, config, run_dir, log=lambda _: None)
    assert resumed.resumed_from == saved_step and resumed.steps == saved_step + 3 and len(resumed.losses) == resumed.steps
    assert not list(run_dir.glob(".*partial"))


def test_frechet_distance_is_zero_for_the_same_set_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(64, 8))
    assert abs(frechet_distance(real, real)) < 1e-6
    near, far = rng.normal(size=(64, 8)), rng.normal(loc=1.0, size=(64, 8))
    assert frechet_distance(real, near) < frechet_distance(real, far)
    with pytest.raises(ValueError, match="two samples"):
        frechet_distance(real[:1], near)


def test_promotion_requires_no_worse_than_base_by_the_margin():
    base = ModelScores(acceptance_rate=0.5, mean_score=0.6, frechet_distance=10.0)
    assert promotion_decision(base, ModelScores(0.5, 0.6, 10.0)).promote
    worse = promotion_decision(base, ModelScores(0.4, 0.6, 12.0))
    assert not worse.promote and len(worse.reasons) == 2
    assert promotion_decision(base, ModelScores(0.45, 0.6, 10.5), margin=0.1).promote


@functools.cache
def _adapter_bytes() -> bytes:
    """A rank-2 LoRA adapter as save_lora writes it (settings in the metadata), made once: safetensors orders the
    metadata differently from one save to the next, and drops of the same adapter must be the same bytes."""
    from safetensors.torch import save

    from cosmos_assets.models.lora import LoraSettings

    return save({"blocks.0.to_q.lora_A.weight": torch.ones(2, 8), "blocks.0.to_q.lora_B.weight": torch.zeros(8, 2)},
                metadata=LoraSettings(rank=2).as_metadata())


def write_adapter(folder: Path, manifest: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / registry.ADAPTER).write_bytes(_adapter_bytes())
    (folder / registry.MANIFEST).write_text(json.dumps(manifest or {"kind": "predict2.5", "base_model": "tiny:predict2.5"}))


def test_a_missing_or_corrupt_checkpoint_is_a_clear_error(tmp_path):
    store = LocalStore(tmp_path)
    checkpoints = tmp_path / CHECKPOINTS
    write_adapter(checkpoints / "good")
    assert registry.verified_checkpoint(store, "good")["kind"] == "predict2.5"
    write_adapter(checkpoints / "corrupt")
    data = (checkpoints / "corrupt" / registry.ADAPTER).read_bytes()
    (checkpoints / "corrupt" / registry.ADAPTER).write_bytes(data[: len(data) - 8])
    with pytest.raises(CorruptCheckpoint, match="not a valid safetensors file"):
        registry.verified_checkpoint(store, "corrupt")
    write_adapter(checkpoints / "missing")
    (checkpoints / "missing" / registry.ADAPTER).unlink()
    with pytest.raises(registry.CheckpointMissing, match="adapter file .* is missing"):
        registry.verified_checkpoint(store, "missing")


def _raw_safetensors(path: Path, tensors: dict, metadata: dict | None, data: bytes) -> None:
    """A safetensors file written byte by byte: what a hostile or broken trainer can put in a header."""
    header = json.dumps({**tensors, **({"__metadata__": metadata} if metadata is not None else {})}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)


def test_an_inbox_adapter_without_lora_settings_or_with_an_absurd_shape_is_refused_at_intake(tmp_path):
    """Issue 14.10a: refused when the sensor looks (read only) and in the run, with InvalidAdapter, not a late KeyError."""
    from cosmos_assets.models.lora import LoraSettings

    inbox, store = tmp_path / "inbox", LocalStore(tmp_path / "home")
    settings = LoraSettings(rank=2).as_metadata()
    write_adapter(inbox / "good")
    write_adapter(inbox / "no-settings")
    save_file({"blocks.0.to_q.lora_A.weight": torch.ones(2, 8)}, str(inbox / "no-settings" / registry.ADAPTER))
    a = {"dtype": "F32", "data_offsets": [0, 64]}
    broken = {
        "absurd-shape": ({"w.lora_A.weight": {**a, "shape": [10**12, 10**12]}}, settings),
        "shape-not-its-bytes": ({"w.lora_A.weight": {**a, "shape": [2, 800]}}, settings),
        "wrong-rank": ({"w.lora_A.weight": {**a, "shape": [4, 4]}}, settings),
        "bad-settings": ({"w.lora_A.weight": {**a, "shape": [2, 8]}}, {**settings, "lora_rank": "lots"}),
        "negative-dim": ({"w.lora_A.weight": {**a, "shape": [-2, -8]}}, settings),
    }
    for name, (tensors, metadata) in broken.items():
        write_adapter(inbox / name)
        _raw_safetensors(inbox / name / registry.ADAPTER, tensors, metadata, bytes(64))
    refused = {}
    for drop in settled_folders(inbox, settle_seconds=0):
        try:
            registry.inbox_checkpoint_key(drop.path)
        except registry.INBOX_ERRORS as error:
            refused[drop.name] = (error_class(error), str(error))
    assert {name: cls for name, (cls, _) in refused.items()} == {name: "InvalidAdapter" for name in ["no-settings", *broken]}
    assert "lora_rank" in refused["no-settings"][1] and "absurd shape" in refused["absurd-shape"][1]
    with pytest.raises(registry.InvalidAdapter):  # and in the run, should the drop change after the sensor looked
        registry.register_inbox_checkpoint(store, inbox / "no-settings", "inbox-0000000000000000")
    assert not (tmp_path / "home" / CHECKPOINTS).exists()
    assert registry.inbox_checkpoint_key(inbox / "good").startswith("inbox-")


def test_promotion_history_is_kept_and_a_rerun_adds_nothing(tmp_path):
    store = LocalStore(tmp_path)
    registry.promote(store, "tds-a", {"base": {}})
    registry.promote(store, "tds-a", {"base": {}})
    registry.promote(store, "tds-b", {"base": {}})
    assert [h["checkpoint"] for h in registry.history(store)] == ["tds-a", "tds-b"]
    assert registry.promoted(store)["checkpoint"] == "tds-b"


def test_the_checkpoint_inbox_keys_good_drops_by_content_and_sets_bad_ones_aside(tmp_path):
    inbox, store = tmp_path / "inbox", LocalStore(tmp_path / "home")
    root = tmp_path / "home" / CHECKPOINTS
    write_adapter(inbox / "run-42")
    write_adapter(inbox / "same-bytes-again")
    write_adapter(inbox / "no-manifest-keys", manifest={"note": "x"})
    (inbox / "symlinked").mkdir(parents=True)
    os.symlink(inbox / "run-42" / registry.ADAPTER, inbox / "symlinked" / registry.ADAPTER)
    shutil.copy(inbox / "run-42" / registry.MANIFEST, inbox / "symlinked" / registry.MANIFEST)
    (inbox / "poison").mkdir()
    write_adapter(inbox / "poison")
    (inbox / "poison" / registry.MANIFEST).write_text("[" * 100_000 + "]" * 100_000)  # deeper than Python's parser goes
    drops = {d.name: d for d in settled_folders(inbox, settle_seconds=0)}
    assert sorted(drops) == ["no-manifest-keys", "poison", "run-42", "same-bytes-again", "symlinked"]
    keys, rejected = {}, {}
    for name, drop in drops.items():
        try:
            keys[name] = registry.inbox_checkpoint_key(drop.path)
        except registry.INBOX_ERRORS as error:
            rejected[name] = error_class(error)
    assert rejected == {"no-manifest-keys": "ValueError", "poison": "ManifestTooLarge", "symlinked": "UnsafePath"}
    assert keys["run-42"] == keys["same-bytes-again"] and keys["run-42"].startswith("inbox-")
    assert not root.exists(), "looking at the inbox writes nothing"
    manifest = registry.register_inbox_checkpoint(store, drops["run-42"].path, keys["run-42"])
    assert manifest["source"] == "checkpoint_inbox" and registry.verified_checkpoint(store, keys["run-42"])["inbox_name"] == "run-42"
    again = registry.register_inbox_checkpoint(store, drops["same-bytes-again"].path, keys["run-42"])
    assert again["inbox_name"] == "run-42", "the same adapter bytes are one checkpoint, registered once"
    with pytest.raises(ValueError, match="changed after it was seen"):
        registry.register_inbox_checkpoint(store, drops["run-42"].path, "inbox-0000000000000000")
    assert registry.checkpoint_keys(store) == [keys["run-42"]] and not list(root.glob(".tmp-*"))

def test_retraining_waits_while_the_curated_dataset_is_being_rewritten(cosmos_env):
    """A dataset_job run in flight rewrites the tables the training mix is planned from: the sensor plans nothing
    until it has finished (a mix planned under it would not be the one its training run finds)."""
    import dagster as dg

    from cosmos_assets.definitions import build_definitions

    defs = build_definitions()
    sensor = defs.resolve_sensor_def("retraining_sensor")
    with dg.instance_for_test() as instance:
        def tick():
            with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
                return sensor.evaluate_tick(context)

        assert "no curated dataset yet" in tick().skip_message
        run = instance.create_run_for_job(defs.resolve_job_def("dataset_job"), status=dg.DagsterRunStatus.STARTED)
        assert f"waiting for dataset_job run {run.run_id[:8]}" in tick().skip_message
        instance.report_run_failed(run)
        assert "no curated dataset yet" in tick().skip_message
