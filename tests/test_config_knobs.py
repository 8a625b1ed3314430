"""Every knob a user can turn in the launchpad says what it does, and has one source.

The processing modules' dataclasses declare each knob once (name, default, description); the Dagster
``Config`` classes are derived from them, so the launchpad shows the same names, defaults and text."""

import dataclasses

import dagster as dg
import pytest

from cosmos_assets.common.knobs import knob_default, knob_description
from cosmos_assets.curation.assets import FilterConfig, RawVideosConfig, SplitAndTranscodeConfig
from cosmos_assets.curation.clips import TranscodeConfig
from cosmos_assets.curation.dataset_assets import DedupAssetConfig
from cosmos_assets.curation.dedup import DedupConfig
from cosmos_assets.curation.probe import ProbeLimits
from cosmos_assets.curation.scores import FilterThresholds
from cosmos_assets.curation.shots import SplitConfig
from cosmos_assets.definitions import build_definitions
from cosmos_assets.synthetic.assets import CritiqueConfig
from cosmos_assets.synthetic.critics import MetricCriticConfig
from cosmos_assets.training.assets import PostTrainingConfig
from cosmos_assets.training.trainer import TrainingConfig


def _undescribed(config_type, path: str) -> list[str]:
    """Paths of the fields under ``config_type`` (nested shapes, lists, optionals) without a description."""
    missing = []
    for name, field in (getattr(config_type, "fields", None) or {}).items():
        if not (field.description or "").strip():
            missing.append(f"{path}.{name}")
        missing += _undescribed(field.config_type, f"{path}.{name}")
    inner = getattr(config_type, "inner_type", None)
    if inner is not None:
        missing += _undescribed(inner, path)
    return missing


def _node_schemas(defs: dg.Definitions):
    """{op name: config type} of every asset's and asset check's op, as the launchpad shows them."""
    schemas = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        if assets_def.is_executable and assets_def.node_def.config_schema is not None:
            schemas[assets_def.node_def.name] = assets_def.node_def.config_schema.config_type
    return schemas


def test_every_asset_config_field_has_a_description(cosmos_env):
    schemas = _node_schemas(build_definitions("local"))
    assert {"filtered_clips", "video_clips_and_scores", "generator_checkpoint", "synthetic_videos"} <= set(schemas)
    missing = [path for name, config_type in schemas.items() for path in _undescribed(config_type, name)]
    assert not missing, f"run config fields without a description: {missing}"


def test_every_resource_field_has_a_description(cosmos_env):
    defs = build_definitions("local")
    missing = []
    for key, resource in defs.resources.items():
        if isinstance(resource, dg.ConfigurableResource | dg.ConfigurableIOManager):
            schema = resource.get_resource_definition().config_schema
            missing += _undescribed(schema.config_type, key)
    assert not missing, f"resource fields without a description: {missing}"


def test_the_launchpad_shows_the_filter_thresholds_descriptions(cosmos_env):
    defs = build_definitions("local")
    fields = _node_schemas(defs)["filtered_clips"].fields
    described = {f.name: knob_description(f) for f in dataclasses.fields(FilterThresholds)}
    assert "max_bar_fraction" in fields
    for name, text in described.items():
        assert fields[name].description == text


@pytest.mark.parametrize("config, sources", [
    (FilterConfig, [FilterThresholds]),
    (RawVideosConfig, [ProbeLimits]),
    (SplitAndTranscodeConfig, [SplitConfig, TranscodeConfig]),
    (DedupAssetConfig, [DedupConfig]),
    (CritiqueConfig, [MetricCriticConfig]),
])
def test_a_derived_config_and_its_dataclass_agree_on_names_defaults_and_descriptions(config, sources):
    derived = config.model_fields
    for source in sources:
        for field in dataclasses.fields(source):
            if field.name not in derived:
                continue
            default = knob_default(field)
            assert derived[field.name].default == (list(default) if isinstance(default, tuple) else default), field.name
            assert knob_description(field) in derived[field.name].description
        # and back: the run config's defaults make the dataclass's defaults
        assert config().to_dataclass(source) == source()


def test_post_training_sizes_left_unset_come_from_the_trainer_resource():
    from resources.training import TrainerResource

    trainer = TrainerResource(steps=7, warmup_steps=1, save_interval=3, frames=9, height=64, width=96)
    training = PostTrainingConfig(rank=4, width=128).training(trainer)
    assert training == TrainingConfig(rank=4, steps=7, warmup_steps=1, save_interval=3, frames=9, height=64, width=128)
    assert "Unset: the `trainer` resource's" in PostTrainingConfig.model_fields["steps"].description


def test_the_vlm_resource_samples_captions_and_critiques_with_the_modules_settings():
    from cosmos_assets.models.vlm import CAPTION_SETTINGS, CRITIC_SETTINGS
    from resources.models import VisionLanguageResource

    vlm = VisionLanguageResource()
    assert vlm.caption.settings() == CAPTION_SETTINGS
    assert vlm.critique.settings() == CRITIC_SETTINGS
