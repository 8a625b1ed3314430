"""Standard FID (Inception-v3 pool3) and FVD (I3D) feature spaces: the tiny random-weight networks are the real
architectures, built by the tiny registry and loaded exactly as user-supplied weights are; unsafe pickles are
refused; the FID path reproduces clean-fid's resize, normalisation and Fréchet distance; the evaluation names
the space of every number."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cosmos_assets.models import feature_spaces as fs
from cosmos_assets.models.checkpoints import ModelNotAvailable, UnsafeCheckpoint, resolve_checkpoint
from cosmos_assets.models.frames import sample_frames
from cosmos_assets.models.tiny import ensure_tiny, tiny_builders

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature_models")


@pytest.fixture(scope="module")
def inception(models_root) -> fs.InceptionFID:
    return fs.load_inception_fid(ensure_tiny(models_root, fs.TINY_INCEPTION))


@pytest.fixture(scope="module")
def i3d(models_root) -> fs.I3DFVD:
    return fs.load_i3d_fvd(ensure_tiny(models_root, fs.TINY_I3D))


def frames_of(samples: Path, name: str, count: int, fps: float = 8.0, max_side: int = 320) -> np.ndarray:
    return sample_frames(samples / name, fps=fps, max_frames=count, max_side=max_side).frames


def test_the_tiny_networks_are_the_real_architectures_and_load_like_user_weights(models_root, inception, i3d, tmp_path):
    assert {fs.TINY_INCEPTION, fs.TINY_I3D} <= tiny_builders().keys()
    for name in (fs.TINY_INCEPTION, fs.TINY_I3D):
        checkpoint = resolve_checkpoint(str(models_root / "tiny" / name), role="feature network")
        assert checkpoint.tiny_random and (checkpoint.path / "model.safetensors").is_file()
    # The FID network's parameters are torchvision's Inception-v3 names and shapes (pytorch-fid's file layout).
    from torchvision.models import Inception3

    reference = Inception3(num_classes=1008, aux_logits=False, init_weights=False).state_dict()
    assert {k: v.shape for k, v in inception.model.state_dict().items()} == {k: v.shape for k, v in reference.items()}
    i3d_state = i3d.model.state_dict()
    assert i3d_state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert i3d_state["Mixed_5c.b1b.conv3d.weight"].shape == (384, 192, 3, 3, 3)
    assert i3d_state["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1) and "logits.conv3d.bias" in i3d_state
    assert sum(p.numel() for p in i3d.model.parameters()) == 12_697_264  # I3D's 12.7 M parameters
    # Both say their weights are random, everywhere their numbers appear.
    assert inception.space.label == "inception_v3 pool3 (FID) [random_weights]"
    assert i3d.space.label == "i3d (FVD) [random_weights]"

    # The same weights as a user's .pth state dict (without BatchNorm's counters, as exported files often are)
    # load through the same loader, give the same features, and are not marked random.
    exported = {k: v for k, v in inception.model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(exported, tmp_path / "pt_inception.pth")
    from_pth = fs.load_inception_fid(tmp_path / "pt_inception.pth")
    frame = np.random.default_rng(0).integers(0, 256, (72, 128, 3), dtype=np.uint8)
    assert np.array_equal(from_pth.frame_features([frame]), inception.frame_features([frame]))
    assert not from_pth.space.random_weights and from_pth.space.label == "inception_v3 pool3 (FID)"

    with pytest.raises(fs.ModelError, match="expected layout"):  # I3D weights are not Inception weights
        fs.load_inception_fid(models_root / "tiny" / fs.TINY_I3D)
    with pytest.raises(ModelNotAvailable, match="Nothing is downloaded"):
        fs.load_i3d_fvd(tmp_path / "rgb_imagenet.pt")


class _RunsCodeWhenUnpickled:
    def __init__(self, trace: Path):
        self.trace = trace

    def __reduce__(self):
        return Path.touch, (self.trace,)  # what a malicious file would do with os.system


def test_a_pth_whose_pickle_would_run_code_is_refused_and_runs_nothing(tmp_path):
    trace = tmp_path / "code-ran"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "payload": _RunsCodeWhenUnpickled(trace)}, tmp_path / "bad.pth")
    with pytest.raises(UnsafeCheckpoint, match="weights_only"):
        fs.load_inception_fid(tmp_path / "bad.pth")
    assert not trace.exists()
    folder = tmp_path / "folder"  # a checkpoint directory with only pickle weights is refused before any load
    folder.mkdir()
    (tmp_path / "bad.pth").rename(folder / "bad.pth")
    with pytest.raises(UnsafeCheckpoint, match="pickle"):
        fs.load_i3d_fvd(folder)
    assert not trace.exists()


def test_fid_matches_clean_fid_resize_normalisation_and_frechet_distance(inception, samples):
    from cleanfid.fid import fid_from_feats, get_batch_features
    from cleanfid.inception_torchscript import InceptionV3W
    from cleanfid.resize import build_resizer
    from torchvision.transforms import ToTensor

    # 12 frames a side: the reference's sqrtm of a 2048×2048 product costs about 30 s on one core whatever the count.
    real = frames_of(samples, "dashcam_solid_white_right.mp4", 12)
    other = frames_of(samples, "bottle_conveyor.mp4", 12)
    assert len(real) == len(other) == 12

    resize = build_resizer("clean")
    for frame in (real[0], other[-1]):
        assert np.array_equal(fs.clean_resize(frame, 299), resize(frame))

    # clean-fid's own feature extractor (its normalisation, then its network's layers), here with our network's
    # layers in place of its TorchScript file, which would have to be downloaded.
    reference = InceptionV3W.__new__(InceptionV3W)
    nn.Module.__init__(reference)
    reference.resize_inside, reference.layers = False, SimpleNamespace(forward=inception.model.pool3)

    def clean_fid_features(frames):
        batch = torch.stack([ToTensor()(resize(frame)) for frame in frames])  # as clean-fid's ResizeDataset does
        return get_batch_features(batch, reference, torch.device("cpu"))

    ref_real, ref_other = clean_fid_features(real), clean_fid_features(other)
    ours_real, ours_other = inception.frame_features(real), inception.frame_features(other)
    assert ours_real.shape == (12, 2048)
    np.testing.assert_allclose(ours_real, ref_real, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours_other, ref_other, rtol=1e-4, atol=1e-5)

    ours = fs.frechet_distance(ours_real, ours_other)
    expected = fid_from_feats(ref_real, ref_other)
    assert ours > 0 and abs(ours - expected) <= 1e-3 * expected
    assert abs(fs.frechet_distance(ours_real, ours_real)) < 1e-6 * ours


def test_fvd_of_real_sample_clips_is_finite_and_zero_for_identical_sets(i3d, samples):
    from cleanfid.fid import frechet_distance as clean_fid_frechet

    signing = [frames_of(samples, name, 16, max_side=256) for name in ("asl_again.mkv", "asl_book.mkv", "asl_walk.mkv")]
    scenes = [frames_of(samples, "dashcam_solid_white_right.mp4", 16, max_side=256),
              frames_of(samples, "bottle_conveyor.mp4", 16, max_side=256),
              frames_of(samples, "dashcam_solid_white_right.mp4", 9, fps=2.0, max_side=256)]  # 9 frames: held to 16
    inputs = fs.fvd_inputs(scenes[2:])
    assert inputs.shape == (1, 3, 16, 224, 224) and -1.0 <= inputs.min() and inputs.max() <= 1.0
    assert torch.equal(inputs[0, :, 8], inputs[0, :, 15])  # the last frame held

    a, b = i3d.features(signing), i3d.features(scenes)
    assert a.shape == b.shape == (3, 400)
    fvd = fs.frechet_distance(a, b)
    assert np.isfinite(fvd) and fvd > 0
    assert abs(fs.frechet_distance(a, a)) < 1e-9 * fvd
    # The standard statistics form (sqrtm, as clean-fid computes it) gives the same number.
    statistics = (*fs.feature_statistics(a), *fs.feature_statistics(b))
    assert fs.frechet_distance_from_statistics(*statistics) == pytest.approx(fvd, rel=1e-6)
    assert clean_fid_frechet(*statistics) == pytest.approx(fvd, rel=1e-6)


def _evaluate_checkpoint(home: Path, samples: Path, **weights):
    """checkpoint_evaluation of a 2-step LoRA of the tiny Predict2.5 on two real held-out clips, one seed."""
    import dagster as dg
    import polars as pl
    import shutil

    from cosmos_assets.common.artefacts import LocalStore, table_key
    from cosmos_assets.models.catalog import resolve_model
    from cosmos_assets.models.generator import load_pipeline
    from cosmos_assets.settings import CosmosPaths
    from cosmos_assets.training import registry
    from cosmos_assets.training.assets import checkpoint_evaluation
    from cosmos_assets.training.trainer import TrainingConfig, cache_samples, train_lora
    from resources import CosmosStorage, EmbedderResource
    from resources.storage import ParquetTableIOManager
    from resources.training import TrainerResource

    store = LocalStore(home)
    if not (home / registry.checkpoint_key("run1")).is_dir():
        clips = []
        for i, name in enumerate(["asl_book.mkv", "asl_walk.mkv"]):
            (home / "clips").mkdir(parents=True, exist_ok=True)
            shutil.copy(samples / name, home / "clips" / name)
            clips.append({"clip_id": f"clip-{i}", "split": "validation", "path": str(home / "clips" / name), "caption": "a person signing"})
        store.write_parquet(table_key("curated_dataset", None), pl.DataFrame(clips))
        geometry = TrainingConfig(steps=2, save_interval=2, warmup_steps=1, frames=9, height=32, width=48)
        checkpoint = resolve_model("tiny:predict2.5", role="trainer base", models_root=CosmosPaths(home).models)
        pipeline = load_pipeline(checkpoint, "predict2.5", torch.device("cpu"), torch.float32)
        rng = np.random.default_rng(0)
        batch = [(f"s{i}", rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8), "a person") for i in range(2)]
        result = train_lora(pipeline.transformer, cache_samples(pipeline, checkpoint.version, batch, home / "cache", geometry),
                            geometry, home / "run", log=lambda _: None)
        folder = home / registry.checkpoint_key("run1")
        folder.mkdir(parents=True)
        shutil.copy(result.adapter_path, folder / registry.ADAPTER)
        (folder / registry.MANIFEST).write_bytes(registry.manifest_json({
            "kind": "predict2.5", "base_model": "tiny:predict2.5", "losses": result.losses, "tiny_random": True,
            "lora": {"rank": geometry.rank, "alpha": geometry.alpha, "target_modules": list(geometry.target_modules)}}))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("training_runs", ["run1"])
    result = dg.materialize([checkpoint_evaluation], partition_key="run1", instance=instance, resources={
        "storage": CosmosStorage(home=str(home)), "io_manager": ParquetTableIOManager(home=str(home)),
        "trainer": TrainerResource(home=str(home), kind="predict2.5", base_model="tiny:predict2.5", device="cpu", frames=9,
                                   height=32, width=48, evaluation_steps=2, evaluation_clips=2),
        "embedders": EmbedderResource(home=str(home), device="cpu", **weights)},
        run_config={"ops": {"checkpoint_evaluation": {"config": {"seeds": [0]}}}})
    return store.read_table("checkpoint_evaluation", "run1"), result.asset_materializations_for_node("checkpoint_evaluation")[0].metadata


def test_the_evaluation_table_names_the_feature_space_of_every_distance(samples, models_root):
    home = models_root.parent / "evaluation_home"
    table, _ = _evaluate_checkpoint(home, samples)
    # Without feature-network weights: the EfficientNet distance alone, and FID / FVD columns that say so (null).
    assert table["model"].to_list() == ["base", "fine-tuned"] and table["frechet_distance"].is_finite().all()
    assert table.select("fid", "fid_feature_space", "fvd", "fvd_feature_space").null_count().row(0) == (2, 2, 2, 2)

    table, metadata = _evaluate_checkpoint(home, samples, inception_weights=f"tiny:{fs.TINY_INCEPTION}",
                                           i3d_weights=f"tiny:{fs.TINY_I3D}")
    for column, space, network in (("fid", "inception_v3 pool3 (FID) [random_weights]", fs.TINY_INCEPTION),
                                   ("fvd", "i3d (FVD) [random_weights]", fs.TINY_I3D)):
        assert table[column].is_finite().all() and (table[column] > 0).all()
        assert all(label.startswith(f"{space}: tiny:{network}@") for label in table[f"{column}_feature_space"])
    distances = metadata["frechet_distances"].value  # the long table: every model in every space
    for model in ("base", "fine-tuned"):
        for space, unit, count in (("efficientnet_lite0 (packaged)", "frame", 9 * 2),
                                   ("inception_v3 pool3 (FID) [random_weights]", "frame", 9 * 2),
                                   ("i3d (FVD) [random_weights]", "16-frame clip", 2)):
            assert f"| `{model}` | `{space}` |" in distances and f"| {count} | {count} | `{unit}` |" in distances
    assert [s["space"] for s in metadata["feature_spaces"].value] == [
        "efficientnet_lite0 (packaged)", "inception_v3 pool3 (FID) [random_weights]", "i3d (FVD) [random_weights]"]
