"""The project loads as one Definitions object with the contract names, and Dagster's own checks pass."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from cosmos_assets.definitions import build_definitions
from cosmos_assets.settings import CosmosPaths, device_pool_limits, ensure_local_instance

ROOT = Path(__file__).resolve().parents[1]
CURATION_ASSETS = {"raw_videos", "video_clips", "clip_scores", "filtered_clips"}


def test_contract_assets_sensors_and_job_exist(cosmos_env):
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert CURATION_ASSETS <= keys
    assert defs.resolve_sensor_def("landing_zone_sensor").job_name == "curation_job"
    for key in CURATION_ASSETS:
        node = graph.get(dg.AssetKey(key))
        assert node.group_name == "curation" and node.description and node.kinds
        assert node.partitions_def.name == "ingest_batches"
    assert graph.get(dg.AssetKey("filtered_clips")).parent_keys == {dg.AssetKey("video_clips"), dg.AssetKey("clip_scores")}


def test_the_local_instance_has_run_monitoring_retries_and_a_gpu_pool_limit(cosmos_env):
    home = ensure_local_instance(CosmosPaths(cosmos_env.home))
    assert home == cosmos_env.dagster_home
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        # A run whose worker died (disk full, killed) is marked failed by monitoring and launched again by the
        # daemon; one that failed in an asset's code is not retried (it would fail alike).
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert instance.run_retries_max_retries == 2 and not instance.run_retries_retry_on_asset_or_op_failure
        # 1 with a GPU, one per core without (tests/test_pools.py specifies it)
        assert instance.get_concurrency_config().pool_config.default_pool_limit == device_pool_limits().gpu_limit
        assert instance.storage_directory().startswith(str(home))
    finally:
        instance.dispose()
    graph = build_definitions().resolve_asset_graph()
    assert graph.get(dg.AssetKey("video_clips")).pools == {"gpu"}


def _run(command, cosmos_env):
    env = {**os.environ, "COSMOS_HOME": str(cosmos_env.home), "DAGSTER_HOME": str(cosmos_env.dagster_home)}
    cosmos_env.dagster_home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_dagster_definitions_validate_passes(cosmos_env):
    result = _run([str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"], cosmos_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_dg_check_defs_passes(cosmos_env):
    result = _run([str(Path(sys.executable).with_name("dg")), "check", "defs"], cosmos_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr
