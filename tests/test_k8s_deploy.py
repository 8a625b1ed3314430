"""The Kubernetes deployment, checked without a cluster.

For every asset under the ``k8s`` profile, the step Job that ``k8s_job_executor`` would create is
rendered with dagster-k8s's own code (container contexts merged as its step handler merges them,
then ``construct_dagster_k8s_job``) and validated against the Kubernetes schemas with
``kubernetes-validate``; so is the run worker's Job and every manifest under ``deploy/k8s``. GPUs are
requested exactly by GPU assets, every pod follows the "restricted" Pod Security Standard, and the
Helm values, ``deploy/dagster.yaml``, the image and the README agree with the code.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.executor.init import InitExecutorContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import construct_dagster_k8s_job, get_k8s_job_name

from cosmos_assets.common.pod_classes import POD_CLASS_TAG, pod_class
from cosmos_assets.definitions import build_definitions
from postgres_support import offline_kubeconfig, offline_run_launcher, production_instance_config
from resources import k8s
from resources.storage import ParquetTableIOManager

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSION = kubernetes_validate.latest_version()
IMAGE = "registry.example.com/cosmos-flywheel:0.1.0"
RELEASE_NAMESPACE = "cosmos"
GPU = k8s.GPU_RESOURCE

# The "restricted" Pod Security Standard allows only these volume types.
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def to_manifest(model) -> dict:
    """A kubernetes client object as the camelCase dict that the API server receives."""
    return kubernetes.client.ApiClient().sanitize_for_serialization(model)


def validate(manifest: dict) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def restricted_violations(pod_spec: dict) -> list[str]:
    """What in a pod spec (camelCase) breaks the "restricted" Pod Security Standard or has no limits."""
    problems = []
    pod = pod_spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            problems.append(f"pod uses {flag}")
    for volume in pod_spec.get("volumes") or []:
        if extra := set(volume) - {"name"} - RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} is {extra}")
    for container in [*pod_spec["containers"], *(pod_spec.get("initContainers") or [])]:
        name, own = container["name"], container.get("securityContext") or {}
        if own.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if own.get("runAsUser", pod.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        if own.get("allowPrivilegeEscalation") is not False or own.get("privileged"):
            problems.append(f"{name}: may escalate privileges")
        capabilities = own.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []) or set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities not dropped")
        seccomp = (own.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccomp profile is {seccomp}")
        limits = (container.get("resources") or {}).get("limits") or {}
        if not {"cpu", "memory"} <= set(limits):
            problems.append(f"{name}: no cpu/memory limits")
    return problems


def snake_keys(value):
    """camelCase keys (Helm values, Kubernetes manifests) in dagster-k8s's snake_case."""
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower(): snake_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [snake_keys(item) for item in value]
    return value


# ---------------------------------------------------------------------------------------------
# What the chart and the instance give run and step pods


@pytest.fixture(scope="module")
def values() -> dict:
    return load_yaml(DEPLOY / "values.yaml")


@pytest.fixture(scope="module")
def production_config() -> dict:
    return production_instance_config()


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory) -> Path:
    return offline_kubeconfig(tmp_path_factory.mktemp("kube"))


@pytest.fixture(scope="module")
def k8s_instance(production_config, kubeconfig, tmp_path_factory):
    """The production instance (run launcher, monitoring, retries, concurrency) on SQLite storage;
    tests/test_postgres_instance.py loads it with its PostgreSQL storage."""
    overrides = {key: value for key, value in production_config.items() if key != "storage"}
    overrides["run_launcher"] = offline_run_launcher(production_config, kubeconfig)
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path_factory.mktemp("dagster_home"))) as instance:
        yield instance


@pytest.fixture
def k8s_defs(cosmos_env, monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("COSMOS_OBJECT_STORE_URL", "s3://cosmos-flywheel/prod")
    return build_definitions("k8s")


def chart_code_location_context(values: dict) -> dict:
    """The container context the chart gives the code location (``includeConfigInLaunchedRuns``),
    rebuilt from deploy/values.yaml the way the chart's user-deployment template writes it."""
    deployment = values["dagster-user-deployments"]["deployments"][0]
    return {"k8s": {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"dagster-{deployment['name']}-user-env"],
        "env_secrets": [secret["name"] for secret in deployment.get("envSecrets", [])],
        "volume_mounts": deployment.get("volumeMounts", []),
        "volumes": deployment.get("volumes", []),
        "resources": deployment.get("resources", {}),
        "namespace": RELEASE_NAMESPACE,
        "service_account_name": values["global"]["serviceAccountName"],
        "env": deployment.get("env", []),
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }}


def a_run(values: dict, run_id: str = "0f6b4a52-9a1c-4c65-9d0e-1d2b8f7e3a10") -> dg.DagsterRun:
    origin = JobPythonOrigin(
        "curation_job",
        RepositoryPythonOrigin(
            executable_path=sys.executable,
            code_pointer=ModuleCodePointer("cosmos_assets.definitions", "defs", working_directory=None),
            container_image=IMAGE,
            container_context=chart_code_location_context(values),
        ),
    )
    return dg.DagsterRun(job_name="curation_job", run_id=run_id, job_code_origin=origin)


def step_handler(defs: dg.Definitions, instance: dg.DagsterInstance):
    """The step handler that the k8s profile's executor builds, from the job's resolved executor config.
    Every job has the same executor; curation_job's resolves without run config (the global asset job's
    would need inbox_checkpoint's, which checkpoint_sensor fills in)."""
    job = defs.resolve_job_def("curation_job")
    executor_config = ResolvedRunConfig.build(job, {}).execution.execution_engine_config
    executor = job.executor_def.executor_creation_fn(
        InitExecutorContext(job=InMemoryJob(job), executor_def=job.executor_def, executor_config=executor_config, instance=instance)
    )
    return executor._step_handler  # noqa: SLF001 - the real K8sStepHandler, to merge configs its way


def render_step_job(defs, instance, run: dg.DagsterRun, op_name: str) -> dict:
    """The Job ``k8s_job_executor`` would create for ``op_name``: the handler's own merge of run
    launcher, code location, executor and op settings, then ``construct_dagster_k8s_job`` as its
    ``launch_step`` calls it (everything but the API call)."""
    handler = step_handler(defs, instance)
    op = defs.resolve_implicit_global_asset_job_def().graph.node_named(op_name).definition
    context = SimpleNamespace(
        dagster_run=run,
        instance=instance,
        step_tags={op_name: op.tags},
        execute_step_args=SimpleNamespace(step_keys_to_execute=[op_name]),
        get_step_context=lambda key: SimpleNamespace(step=SimpleNamespace(op_name=op_name)),
    )
    container_context = handler._get_container_context(context)  # noqa: SLF001
    job_config = container_context.get_k8s_job_config(None, instance.run_launcher).with_image(IMAGE)
    job_name = f"dagster-step-{get_k8s_job_name(run.run_id, op_name)}"
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name=job_name,
        pod_name=job_name,
        component="step_worker",
        user_defined_k8s_config=container_context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/op": op_name, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name}, {"name": "DAGSTER_RUN_STEP_KEY", "value": op_name}],
    )
    return to_manifest(job)


class RecordingBatchApi:
    """Stands in for the Kubernetes batch API: keeps the Jobs a launcher creates."""

    def __init__(self):
        self.jobs = []

    def create_namespaced_job(self, body, namespace, **_):
        self.jobs.append((namespace, body))


def render_run_job(production_config, kubeconfig, instance, run: dg.DagsterRun) -> tuple[str, dict]:
    """The run worker's Job, made by the real ``K8sRunLauncher`` from the production config."""
    batch_api = RecordingBatchApi()
    launcher = K8sRunLauncher(**offline_run_launcher(production_config, kubeconfig)["config"], k8s_client_batch_api=batch_api)
    launcher.register_instance(instance)
    instance.add_run(run)
    launcher._launch_k8s_job_with_args(f"dagster-run-{run.run_id}", ["dagster", "api", "execute_run"], run)  # noqa: SLF001
    [(namespace, job)] = batch_api.jobs
    return namespace, to_manifest(job)


def op_assets(defs: dg.Definitions) -> dict[str, tuple[list[str], set[str]]]:
    """Op name → (its asset names, its pools), for every op that runs any of the Definitions' assets
    or asset checks (the implicit job that holds them all)."""
    names_by_op = k8s.asset_names_by_op([*(defs.assets or []), *(defs.asset_checks or [])])
    ops = {}
    for node in defs.resolve_implicit_global_asset_job_def().graph.nodes:
        pools = {node.definition.pool} - {None}
        ops[node.name] = (names_by_op.get(node.name, []), pools)
    return ops


def pod_classes_of(defs: dg.Definitions) -> dict[str, str]:
    """Asset name → pod class: what the Definitions' assets declare, with the environment's overrides."""
    return k8s.asset_pod_classes(defs.assets or [])


def gpu_ops_without_pod_settings(defs: dg.Definitions) -> list[str]:
    """GPU-pool ops none of whose assets declares a pod class, or whose class requests no GPU."""
    missing = []
    table = pod_classes_of(defs)
    for op_name, (names, pools) in op_assets(defs).items():
        pod_class = k8s.pod_class_for(names, table)
        if k8s.GPU_POOL in pools and (pod_class is None or pod_class.gpus == 0):
            missing.append(op_name)
    return missing


def gpu_requested(manifest: dict) -> str | None:
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    return container["resources"].get("requests", {}).get(GPU)


# ---------------------------------------------------------------------------------------------
# The pod table covers every asset


def test_every_gpu_pool_asset_of_the_k8s_profile_has_gpu_pod_settings(k8s_defs):
    ops = op_assets(k8s_defs)
    assert "video_clips_and_scores" in ops and ops["video_clips_and_scores"][1] == {"gpu"}
    assert gpu_ops_without_pod_settings(k8s_defs) == [], "tag these ops' assets with a GPU pod_class(...)"
    table = pod_classes_of(k8s_defs)
    for op_name, (names, _) in ops.items():
        classes = {table.get(name) for name in names}
        assert len(classes) <= 1, f"{op_name}: its assets ask for different pod classes {classes}"


def test_a_new_gpu_asset_without_pod_settings_is_caught():
    @dg.asset(pool="gpu")
    def depth_maps() -> None:
        """A GPU asset that is not in the pod table."""

    @dg.asset(name="clip_captions", pool="gpu", tags=pod_class("gpu-reason-7b"))
    def captions() -> None:
        """Declares its class."""

    assert gpu_ops_without_pod_settings(dg.Definitions(assets=[depth_maps, captions])) == ["depth_maps"]


def test_every_asset_declares_the_pod_class_of_the_model_it_runs(k8s_defs):
    planned_gpu = {
        "video_clips": "gpu-shot-detector", "clip_scores": "gpu-shot-detector",
        "clip_captions": "gpu-reason-7b", "critique_scores": "gpu-reason-7b",
        "clip_embeddings": "gpu-embedder", "synthetic_videos": "gpu-predict2-2b",
        "clip_controls": "gpu-embedder",  # depth and segmentation models of embedder size
        "generator_checkpoint": "gpu-train-2b", "checkpoint_evaluation": "gpu-eval",
        # LoRA SFT of the 7B critic needs the training class's 80 GB card; its evaluation runs the 7B model.
        "critic_checkpoint": "gpu-train-2b", "critic_evaluation": "gpu-reason-7b",
        # Text-to-image: Predict2 2B Text2Image makes the images; the Reason critic's image mode judges them.
        "synthetic_images": "gpu-predict2-2b", "image_critique_scores": "gpu-reason-7b",
    }
    planned_cpu = {"raw_videos", "filtered_clips", "deduplicated_clips", "curated_dataset", "generation_prompts",
                   "accepted_videos", "training_dataset", "inbox_checkpoint", "promoted_checkpoint",
                   "critic_labels", "critic_training_set", "promoted_critic",
                   "image_prompts", "accepted_images", "image_detector_export"}
    table = k8s.declared_pod_classes(k8s_defs.assets)
    every_asset = {key.to_user_string() for key in k8s_defs.resolve_asset_graph().get_all_asset_keys()
                   if k8s_defs.resolve_asset_graph().get(key).is_executable}
    assert set(table) == every_asset == set(planned_gpu) | planned_cpu
    assert {asset: table[asset] for asset in planned_gpu} == planned_gpu
    assert all(k8s.POD_CLASSES[table[asset]].gpus == 0 for asset in planned_cpu)
    # One pool slot is one GPU only while every GPU class asks for exactly one.
    assert {c.gpus for c in k8s.POD_CLASSES.values() if c.gpus} == {1}
    assert k8s.POD_CLASSES["gpu-predict2-14b"].min_gpu_memory_gib > k8s.POD_CLASSES["gpu-predict2-2b"].min_gpu_memory_gib


@pytest.mark.parametrize("class_name", sorted(k8s.POD_CLASSES))
def test_every_pod_class_renders_a_valid_restricted_step_job(class_name, values, k8s_instance):
    """Classes no asset declares today too (the 14B generator's): a stand-in asset of that class."""
    pod_class = k8s.POD_CLASSES[class_name]
    asset_name = "stand_in_" + class_name.replace("-", "_")

    @dg.asset(name=asset_name, pool="gpu" if pod_class.gpus else None, tags={POD_CLASS_TAG: class_name})
    def planned() -> None: ...

    defs = dg.Definitions(
        assets=[planned], jobs=[dg.define_asset_job("curation_job", selection=[planned])],
        executor=k8s.kubernetes_step_executor([planned]),
    )
    manifest = render_step_job(defs, k8s_instance, a_run(values), asset_name)
    validate(manifest)
    pod = manifest["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert gpu_requested(manifest) == (str(pod_class.gpus) if pod_class.gpus else None)
    assert pod["containers"][0]["resources"]["requests"]["memory"] == pod_class.memory


# ---------------------------------------------------------------------------------------------
# The k8s profile's step and run pods


def test_the_k8s_profile_runs_every_step_in_its_own_pod(k8s_defs, cosmos_env):
    job = k8s_defs.resolve_job_def("curation_job")
    assert job.executor_def.name == "k8s"
    config = ResolvedRunConfig.build(job, {}).execution.execution_engine_config
    assert set(config["per_step_k8s_config"]) == set(op_assets(k8s_defs))
    assert {"raw_videos", "video_clips_and_scores", "filtered_clips"} <= set(config["per_step_k8s_config"])
    assert config["max_concurrent"] == k8s.DEFAULT_MAX_STEP_PODS_PER_RUN
    # The local profile is untouched: one process per run.
    assert build_definitions("local").resolve_job_def("curation_job").executor_def.name == "in_process"


def test_step_jobs_are_valid_request_gpus_exactly_on_gpu_assets_and_are_restricted(k8s_defs, k8s_instance, values):
    ops = op_assets(k8s_defs)
    run = a_run(values)
    table = pod_classes_of(k8s_defs)
    for op_name, (names, pools) in ops.items():
        manifest = render_step_job(k8s_defs, k8s_instance, run, op_name)
        validate(manifest)
        pod = manifest["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert restricted_violations(pod) == [], op_name
        resources = container["resources"]
        if "gpu" in pools:
            assert resources["requests"][GPU] == resources["limits"][GPU] == "1", op_name
            assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        else:
            assert GPU not in resources["requests"] and GPU not in resources["limits"], op_name
            assert not pod.get("tolerations"), op_name
        assert resources["requests"]["memory"] == resources["limits"]["memory"]
        assert resources["requests"]["ephemeral-storage"] == resources["limits"]["ephemeral-storage"]
        pod_class = k8s.step_pod_class(names, table)
        assert manifest["spec"]["template"]["metadata"]["labels"][k8s.POD_CLASS_LABEL] == pod_class.name
        assert manifest["spec"]["activeDeadlineSeconds"] == pod_class.deadline_hours * 3600
        # From the code location (values.yaml) through the run: volumes, the profile, the store's Secret.
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/cosmos", "/models", k8s.SCRATCH_PATH}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["COSMOS_PROFILE"] == "k8s" and env["TMPDIR"] == env["COSMOS_SCRATCH"] == k8s.SCRATCH_PATH and env["HF_HUB_OFFLINE"] == "1"
        assert {"secretRef": {"name": "cosmos-object-store"}} in container["envFrom"]
        assert "DAGSTER_PG_PASSWORD" in env and not any("password" in (e.get("value") or "").lower() for e in container["env"])
        assert container["image"] == IMAGE


def test_the_run_worker_job_is_valid_and_restricted(production_config, kubeconfig, k8s_instance, values):
    namespace, manifest = render_run_job(production_config, kubeconfig, k8s_instance, a_run(values))
    validate(manifest)
    pod = manifest["spec"]["template"]["spec"]
    assert namespace == RELEASE_NAMESPACE
    assert restricted_violations(pod) == []
    [container] = pod["containers"]
    assert GPU not in container["resources"]["limits"]
    assert container["args"] == ["dagster", "api", "execute_run"]
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 86400


def test_node_placement_comes_from_configuration(k8s_instance, values, monkeypatch, cosmos_env):
    monkeypatch.setenv("COSMOS_OBJECT_STORE_URL", "s3://cosmos-flywheel/prod")
    monkeypatch.setenv("COSMOS_K8S_GPU_NODE_SELECTOR", json.dumps({"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}))
    monkeypatch.setenv("COSMOS_K8S_GPU_TOLERATIONS", json.dumps([{"key": "gpu-pool", "operator": "Equal", "value": "h100", "effect": "NoSchedule"}]))
    monkeypatch.setenv("COSMOS_K8S_CPU_NODE_SELECTOR", json.dumps({"node-pool": "cpu"}))
    monkeypatch.setenv("COSMOS_K8S_GPU_MEMORY_LABEL", "nvidia.com/gpu.memory")
    defs = build_definitions("k8s")
    run = a_run(values)
    gpu_pod = render_step_job(defs, k8s_instance, run, "video_clips_and_scores")["spec"]["template"]["spec"]
    assert gpu_pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert gpu_pod["tolerations"] == [{"key": "gpu-pool", "operator": "Equal", "value": "h100", "effect": "NoSchedule"}]
    [term] = gpu_pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    minimum = k8s.POD_CLASSES["gpu-shot-detector"].min_gpu_memory_gib * 1024
    assert term["matchExpressions"] == [{"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": [str(minimum - 1)]}]
    cpu_manifest = render_step_job(defs, k8s_instance, run, "raw_videos")
    validate(cpu_manifest)
    cpu_pod = cpu_manifest["spec"]["template"]["spec"]
    assert cpu_pod["nodeSelector"] == {"node-pool": "cpu"} and not cpu_pod.get("tolerations") and not cpu_pod.get("affinity")


def test_the_generator_class_is_configurable(monkeypatch):
    @dg.asset(name="synthetic_videos", pool="gpu", tags=pod_class("gpu-predict2-2b"))
    def candidates() -> None: ...

    assert k8s.pod_class_for(["synthetic_videos"], k8s.asset_pod_classes([candidates])).name == "gpu-predict2-2b"
    monkeypatch.setenv("COSMOS_K8S_ASSET_CLASSES", json.dumps({"synthetic_videos": "gpu-predict2-14b"}))
    assert k8s.pod_class_for(["synthetic_videos"], k8s.asset_pod_classes([candidates])).name == "gpu-predict2-14b"
    monkeypatch.setenv("COSMOS_K8S_ASSET_CLASSES", json.dumps({"synthetic_videos": "gpu-predict2-70b"}))
    with pytest.raises(ValueError, match="unknown pod classes"):
        k8s.asset_pod_classes([candidates])
    monkeypatch.setenv("COSMOS_K8S_ASSET_CLASSES", "synthetic_videos=14b")
    with pytest.raises(ValueError, match="must be JSON"):
        k8s.asset_pod_classes([candidates])


# ---------------------------------------------------------------------------------------------
# Helm values, the production instance, manifests, image and README agree


def chart_instance_settings(values: dict) -> dict:
    """The instance settings the chart renders from deploy/values.yaml, in dagster.yaml's terms."""
    daemon, launcher = values["dagsterDaemon"], values["runLauncher"]["config"]["k8sRunLauncher"]
    concurrency = values["concurrency"]
    assert daemon["enabled"] and concurrency["enabled"] and values["runLauncher"]["type"] == "K8sRunLauncher"
    return {
        "run_monitoring": snake_keys(daemon["runMonitoring"]),
        "run_retries": snake_keys(daemon["runRetries"]),
        "concurrency": {"runs": {"max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"]}, "pools": snake_keys(concurrency["pools"])},
        "run_coordinator": snake_keys(daemon["runCoordinator"]["config"]["queuedRunCoordinator"]),
        "sensors": snake_keys(daemon["sensors"]),
        "run_launcher": {
            "load_incluster_config": launcher["loadInclusterConfig"],
            "job_namespace": launcher["jobNamespace"] or RELEASE_NAMESPACE,
            "image_pull_policy": launcher["imagePullPolicy"],
            "fail_pod_on_run_failure": launcher["failPodOnRunFailure"],
            "resources": launcher["resources"],
            "security_context": snake_keys(launcher["securityContext"]),
            "run_k8s_config": snake_keys(launcher["runK8sConfig"]),
            "service_account_name": values["global"]["serviceAccountName"],
            "postgres_password_secret": values["global"]["postgresqlSecretName"],
            "dagster_home": values["global"]["dagsterHome"],
        },
        "telemetry": values["telemetry"],
    }


def test_helm_values_and_the_production_dagster_yaml_describe_the_same_instance(values, production_config):
    chart = chart_instance_settings(values)
    for section in ("run_monitoring", "run_retries", "concurrency", "sensors", "telemetry"):
        assert chart[section] == production_config[section], section
    assert chart["run_coordinator"] == production_config["run_coordinator"]["config"]
    production_launcher = production_config["run_launcher"]["config"]
    for key, value in chart["run_launcher"].items():
        assert production_launcher[key] == value, key
    # Run pods and the code location are sized alike (the chart passes the latter on to runs).
    assert values["dagster-user-deployments"]["deployments"][0]["resources"] == production_launcher["resources"]
    # What the issue asks of the instance.
    assert production_config["run_monitoring"]["max_resume_run_attempts"] >= 1
    assert production_config["run_monitoring"]["max_runtime_seconds"] > 0
    assert production_config["run_retries"]["enabled"] and production_config["run_retries"]["max_retries"] >= 1
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert values["postgresql"]["postgresqlScheme"] == production_config["storage"]["postgres"]["postgres_db"]["scheme"]


SECRET_LIKE = re.compile(r"password|token|secret_?access|api_?key", re.I)
SECRET_NAME_KEYS = {"postgresqlSecretName", "postgres_password_secret"}  # name a Secret, hold no secret


def literal_secrets(node, path="") -> list[str]:
    """Places in parsed YAML where a secret-looking setting has a literal value (not a Secret
    reference or an environment variable)."""
    found = []
    if isinstance(node, dict):
        if SECRET_LIKE.search(str(node.get("name", ""))) and "value" in node:
            found.append(f"{path}: env {node['name']} has a literal value")
        for key, value in node.items():
            if SECRET_LIKE.search(str(key)) and key not in SECRET_NAME_KEYS and isinstance(value, (str, int, float)) \
                    and not isinstance(value, bool):
                found.append(f"{path}.{key}")
            found.extend(literal_secrets(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(literal_secrets(item, f"{path}[{index}]"))
    return found


def test_no_secret_is_written_into_the_deployment_files(production_config):
    postgres = production_config["storage"]["postgres"]["postgres_db"]
    assert all(isinstance(value, dict) and set(value) == {"env"} for key, value in postgres.items() if key != "scheme")
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert literal_secrets(document, path.name) == []


def test_the_production_instance_loads_without_a_cluster(k8s_instance):
    launcher = k8s_instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher) and launcher.job_namespace == RELEASE_NAMESPACE
    assert k8s_instance.run_monitoring_enabled and k8s_instance.run_monitoring_max_resume_run_attempts == 2
    assert k8s_instance.run_retries_enabled and k8s_instance.run_retries_max_retries == 2
    pools = k8s_instance.get_concurrency_config().pool_config
    assert pools.default_pool_limit == 1 and pools.pool_granularity.value == "op"
    assert k8s_instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 20


@pytest.mark.parametrize("manifest_file", sorted(p.name for p in (DEPLOY / "k8s").glob("*.yaml")))
def test_the_cluster_manifests_are_valid_kubernetes(manifest_file):
    for manifest in yaml.safe_load_all((DEPLOY / "k8s" / manifest_file).read_text()):
        validate(manifest)
        if manifest["kind"] == "Job":
            assert restricted_violations(manifest["spec"]["template"]["spec"]) == []
        if manifest["kind"] == "Namespace":
            assert manifest["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_image_is_pinned_cuda_capable_non_root_and_downloads_no_weights():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert re.search(r"^ARG CUDA_BASE=nvidia/cuda:\S+$", dockerfile, re.M)
    assert [line for line in instructions if line.startswith("USER")] == ["USER 10001:10001"]
    assert "--no-deps -r /tmp/requirements.lock" in dockerfile
    runs = " ".join(line for line in instructions if not line.startswith(("ENV", "ARG")))
    assert not re.search(r"hf download|huggingface-cli|from_pretrained|snapshot_download|\.safetensors|wget|curl", runs)
    assert "HF_HUB_OFFLINE=1" in dockerfile
    lock = [line for line in (DEPLOY / "requirements.lock").read_text().splitlines() if not line.startswith("#")]
    assert lock and all(re.fullmatch(r"[a-z0-9-]+==\S+", line) for line in lock)
    pins = dict(line.split("==") for line in lock)
    # The image pins what the tests here ran with.
    from importlib import metadata

    for name in ("dagster", "dagster-k8s", "dagster-postgres", "torch", "torchvision", "av", "polars", "lancedb", "fsspec"):
        assert pins[name] == metadata.version(name), name
    assert "s3fs" in pins and not {"pytest", "playwright"} & set(pins)


def test_the_readme_pod_table_is_the_one_the_assets_declare(k8s_defs):
    assert k8s.pod_settings_markdown(k8s_defs.assets) in (DEPLOY / "README.md").read_text()


# ---------------------------------------------------------------------------------------------
# Object storage (the store itself, on a real S3 server, is specified in tests/test_object_store.py)


def test_the_k8s_profile_needs_an_object_store_and_every_profile_uses_one_when_set(cosmos_env, monkeypatch):
    monkeypatch.delenv("COSMOS_OBJECT_STORE_URL", raising=False)
    with pytest.raises(ValueError, match="COSMOS_OBJECT_STORE_URL"):
        build_definitions("k8s")
    local = build_definitions("local").resources
    assert local["io_manager"].object_store_url is None and local["storage"].object_store_url is None
    monkeypatch.setenv("COSMOS_OBJECT_STORE_URL", "s3://cosmos-flywheel/prod")
    for profile in ("k8s", "local"):
        resources = build_definitions(profile).resources
        assert isinstance(resources["io_manager"], ParquetTableIOManager)
        assert resources["io_manager"].object_store_url == resources["storage"].object_store_url == "s3://cosmos-flywheel/prod"
