"""`cosmos run`'s bookkeeping of runs on a real DagsterInstance, with a tiny partitioned job (fast):

- issue 14.5: a run key is claimed before its run is looked for and executed, so a second `cosmos run` on the
  same home skips a key the first one holds instead of executing it a second time."""

import dagster as dg
import pytest

from cosmos_assets import headless

PARTITIONS = dg.StaticPartitionsDefinition(["p1", "p2"])
EXECUTED: list[tuple[str, str]] = []


class Note(dg.Config):
    note: str = "default"


@dg.asset(partitions_def=PARTITIONS)
def tiny(context: dg.AssetExecutionContext, config: Note) -> None:
    EXECUTED.append((context.partition_key, config.note))


tiny_job = dg.define_asset_job("tiny_job", selection=[tiny])


@dg.sensor(job=tiny_job)
def tiny_sensor(context):
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key="tiny-p1", partition_key="p1",
                                                       run_config={"ops": {"tiny": {"config": {"note": "planned"}}}})],
                           cursor="advanced")


DEFS = dg.Definitions(assets=[tiny], jobs=[tiny_job], sensors=[tiny_sensor])


@pytest.fixture
def instance(tmp_path):
    EXECUTED.clear()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def _summary():
    return {"runs": [], "assets": {}, "runs_succeeded": 0, "runs_failed": 0, "waiting_on": []}


def test_a_run_key_claimed_by_another_cosmos_run_is_not_executed_twice(instance):
    sensor = DEFS.resolve_sensor_def("tiny_sensor")
    other = {}  # the first `cosmos run`, between checking for the key's run and finishing it
    assert headless._claim_run_key(instance, "tiny_sensor", "tiny-p1", other)
    summary = _summary()
    assert headless._evaluate_and_execute(instance, DEFS, sensor, summary, lambda *_: None) == 0
    assert EXECUTED == [] and summary["waiting_on"] == [{"partition": "p1", "run_id": None, "status": "CLAIMED"}]
    assert instance.get_runs() == []
    headless._release_claims(other)  # it finished (or died: the lock goes with its process)
    summary = _summary()
    assert headless._evaluate_and_execute(instance, DEFS, sensor, summary, lambda *_: None) == 1
    assert EXECUTED == [("p1", "planned")] and summary["runs_succeeded"] == 1
    again = _summary()
    headless._evaluate_and_execute(instance, DEFS, sensor, again, lambda *_: None)
    assert EXECUTED == [("p1", "planned")], "a key with a successful run is never run again"
