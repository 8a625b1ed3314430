"""Concurrency pools describe the machine: without a GPU the `gpu` pool admits one step per core, with one
it admits one step; `collection` (LanceDB's single writer) always admits one. Checked on real Dagster
instances built from the dagster.yaml that `cosmos` writes, through Dagster's own slot claims."""

import os

import dagster as dg
import pytest

from cosmos_assets.settings import (
    EARLIER_LOCAL_INSTANCE_YAMLS,
    CosmosPaths,
    device_pool_limits,
    ensure_local_instance,
    usable_cpus,
)


def claims_granted(instance, pool: str, attempts: int) -> int:
    """How many of ``attempts`` steps of one run Dagster lets into ``pool`` at the same time."""
    storage = instance.event_log_storage
    # What Dagster does before a step claims a slot: a pool without a limit, or one still following an
    # earlier default, gets the instance's default limit; a limit set explicitly (UI, cosmos) is kept.
    limits = {limit.name: limit for limit in storage.get_pool_limits()}
    default = instance.global_op_concurrency_default_limit
    if pool not in limits or (limits[pool].from_default and limits[pool].limit != default):
        storage.initialize_concurrency_limit_to_default(pool)
    granted = sum(storage.claim_concurrency_slot(pool, "run-a", f"step-{n}").is_claimed for n in range(attempts))
    storage.free_concurrency_slots_for_run("run-a")
    return granted


def open_instance(home):
    return dg.DagsterInstance.from_config(str(home))


def test_without_a_gpu_cpu_steps_run_one_per_core_and_the_collection_writer_stays_alone(cosmos_env, monkeypatch):
    monkeypatch.setenv("COSMOS_DEVICE", "cpu")
    cores = usable_cpus()
    instance = open_instance(ensure_local_instance(CosmosPaths(cosmos_env.home)))
    try:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == cores
        assert claims_granted(instance, "gpu", cores + 1) == cores  # shot detection beside an evaluation, no more
        assert claims_granted(instance, "collection", 3) == 1
    finally:
        instance.dispose()


def test_with_a_cuda_device_the_gpu_pool_admits_one_step(cosmos_env):
    cuda = device_pool_limits(requested_device="auto", has_cuda=True, cpus=16)
    assert (cuda.device, cuda.gpu_limit) == ("cuda", 1)
    instance = open_instance(ensure_local_instance(CosmosPaths(cosmos_env.home), pools=cuda))
    try:
        assert claims_granted(instance, "gpu", 3) == 1
        assert claims_granted(instance, "collection", 3) == 1
    finally:
        instance.dispose()


@pytest.mark.parametrize("requested", ["cpu", "auto"])
def test_the_device_decides_the_gpu_pool_limit(requested):
    # COSMOS_DEVICE=cpu is CPU work even where a GPU exists; auto follows what torch finds.
    assert device_pool_limits(requested, has_cuda=False, cpus=6).gpu_limit == 6
    assert device_pool_limits(requested, has_cuda=True, cpus=6).gpu_limit == (6 if requested == "cpu" else 1)


def test_an_instance_written_by_an_earlier_cosmos_is_updated_on_the_next_start(cosmos_env, monkeypatch):
    monkeypatch.setenv("COSMOS_DEVICE", "cpu")
    home = cosmos_env.dagster_home
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(EARLIER_LOCAL_INSTANCE_YAMLS[0])  # `gpu` one at a time, on any machine
    instance = open_instance(home)
    try:
        assert claims_granted(instance, "gpu", 2) == 1  # the pool got its limit from the old default
    finally:
        instance.dispose()
    ensure_local_instance(CosmosPaths(cosmos_env.home))
    instance = open_instance(home)
    try:
        assert claims_granted(instance, "gpu", usable_cpus() + 1) == usable_cpus()
        assert claims_granted(instance, "collection", 2) == 1
    finally:
        instance.dispose()
    # The device changes (the home moves to a GPU machine): the file, still as written, follows it.
    ensure_local_instance(CosmosPaths(cosmos_env.home), pools=device_pool_limits("auto", has_cuda=True, cpus=16))
    instance = open_instance(home)
    try:
        assert claims_granted(instance, "gpu", 2) == 1
    finally:
        instance.dispose()


def test_a_hand_edited_instance_config_is_kept_and_a_limit_set_in_the_ui_survives(cosmos_env, monkeypatch):
    monkeypatch.setenv("COSMOS_DEVICE", "cpu")
    home = ensure_local_instance(CosmosPaths(cosmos_env.home))
    config = home / "dagster.yaml"
    edited = config.read_text().replace("max_concurrent_runs: 4", "max_concurrent_runs: 2")
    config.write_text(edited)
    instance = open_instance(home)
    try:
        instance.event_log_storage.set_concurrency_slots("gpu", 5)  # what the UI's pool page does
    finally:
        instance.dispose()
    ensure_local_instance(CosmosPaths(cosmos_env.home))
    assert config.read_text() == edited
    instance = open_instance(home)
    try:
        assert claims_granted(instance, "gpu", 6) == 5
        # A wrong `collection` limit is put back: two LanceDB writers can duplicate rows.
        instance.event_log_storage.set_concurrency_slots("collection", 3)
    finally:
        instance.dispose()
    ensure_local_instance(CosmosPaths(cosmos_env.home))
    instance = open_instance(home)
    try:
        assert claims_granted(instance, "collection", 3) == 1
    finally:
        instance.dispose()


def test_cosmos_writes_the_instance_where_dagster_home_points(cosmos_env):
    assert ensure_local_instance(CosmosPaths(cosmos_env.home)) == cosmos_env.dagster_home
    assert os.path.isfile(cosmos_env.dagster_home / "dagster.yaml")


def test_each_cpu_step_of_the_pool_keeps_to_its_share_of_the_cores():
    from cosmos_assets.settings import cpu_threads_per_step

    assert cpu_threads_per_step(pool_limit=2, cpus=2) == 1  # two steps side by side, a core each
    assert cpu_threads_per_step(pool_limit=2, cpus=16) == 8
    assert cpu_threads_per_step(pool_limit=1, cpus=16) == 16  # one step at a time (a limit set in the UI)
    assert cpu_threads_per_step(pool_limit=None, cpus=4) == 4  # no pool limit configured
    assert cpu_threads_per_step(pool_limit=5, cpus=2) == 1
