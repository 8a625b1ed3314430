"""Kubernetes pod settings for every asset, in one place (the ``k8s`` profile).

Each asset runs in a pod of a *pod class*: the CPU, memory, GPUs and scratch disk that the model it
runs needs. Each asset declares its class on its decorator (``tags=pod_class("gpu-reason-7b")``, from
``cosmos_assets.common.pod_classes``), so a new asset brings its class with it; ``POD_CLASSES`` here
sizes the classes. The ``k8s_job_executor`` gets one ``per_step_k8s_config`` entry per op, built from
the assets' tags, so no asset decorator carries Kubernetes settings themselves.

Every step pod follows the Kubernetes "restricted" Pod Security Standard (non-root, no privilege
escalation, all capabilities dropped, seccomp RuntimeDefault) and has requests and limits.

Where GPU pods may run is cluster configuration, read from the environment (set on the user code
deployment in ``deploy/values.yaml``; Dagster passes it on to run and step pods):

``COSMOS_K8S_GPU_NODE_SELECTOR`` / ``COSMOS_K8S_CPU_NODE_SELECTOR``
    JSON object, node labels that GPU / CPU step pods must match (default: none; a GPU request alone
    already keeps a pod on nodes that advertise ``nvidia.com/gpu``).
``COSMOS_K8S_GPU_TOLERATIONS`` / ``COSMOS_K8S_CPU_TOLERATIONS``
    JSON list of tolerations (default for GPU pods: the ``nvidia.com/gpu`` taint that managed GPU
    node pools carry; CPU pods tolerate nothing, so they stay off GPU nodes).
``COSMOS_K8S_GPU_MEMORY_LABEL``
    A node label holding the GPU memory in MiB (``nvidia.com/gpu.memory`` from NVIDIA GPU Feature
    Discovery). When set, GPU pods also require a node whose GPUs have the class's minimum memory.
``COSMOS_K8S_ASSET_CLASSES``
    JSON object, asset name → pod class, overriding the assets' tags (e.g. ``{"synthetic_videos":
    "gpu-predict2-14b"}`` when the generator is the 14B model).
``COSMOS_K8S_MAX_STEP_PODS_PER_RUN``
    How many step pods one run may have at once (default 8).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import dagster as dg

from cosmos_assets.common.pod_classes import POD_CLASS_TAG

GPU_RESOURCE = "nvidia.com/gpu"
POD_CLASS_LABEL = POD_CLASS_TAG  # step pods carry their class as a label under the tag's name
GPU_POOL = "gpu"

# The image's user (deploy/Dockerfile); pods run as it even if an image forgot its USER line.
NON_ROOT_UID = 10001

# Step pods write temporary video files here; an emptyDir, so node-local disk sized by the class.
SCRATCH_VOLUME = "scratch"
SCRATCH_PATH = "/scratch"


@dataclass(frozen=True)
class PodClass:
    """What one step pod gets. Memory request = limit (no overcommit: an OOM kill mid-step costs a
    retry of the whole step); CPU may burst to the limit; GPUs are whole devices."""

    name: str
    runs: str  # what runs in it, for people reading the table
    cpu: str
    cpu_limit: str
    memory: str
    gpus: int = 0
    min_gpu_memory_gib: int = 0  # needed per GPU; enforced only with COSMOS_K8S_GPU_MEMORY_LABEL
    scratch: str = "20Gi"  # ephemeral storage: request, limit, and the scratch emptyDir's size
    deadline_hours: int = 12  # Kubernetes stops the step pod after this long (activeDeadlineSeconds)


# Sizes come from the models' parameter counts (bf16 weights = 2 bytes per parameter) plus decode
# buffers and activations; host memory holds a model once more while safetensors are loaded.
# They are estimates to start from, not measurements on a cluster (deploy/README.md says how to tune).
POD_CLASSES: dict[str, PodClass] = {
    c.name: c
    for c in (
        PodClass("cpu-light", "tables only (polars, Parquet)", cpu="500m", cpu_limit="2", memory="2Gi", scratch="5Gi", deadline_hours=4),
        PodClass("cpu-ingest", "probe, hash and copy landed videos (PyAV)", cpu="1", cpu_limit="4", memory="4Gi", scratch="50Gi", deadline_hours=6),
        PodClass("cpu-dataset", "dedup k-NN, dataset shards (LanceDB, polars)", cpu="4", cpu_limit="8", memory="16Gi", scratch="100Gi", deadline_hours=12),
        PodClass("gpu-shot-detector", "TransNetV2 shot detection + libx264 transcoding", cpu="6", cpu_limit="12", memory="12Gi",
                 gpus=1, min_gpu_memory_gib=8, scratch="100Gi", deadline_hours=12),
        PodClass("gpu-embedder", "SigLIP-so400m-class video embedder (0.9B)", cpu="4", cpu_limit="8", memory="16Gi",
                 gpus=1, min_gpu_memory_gib=16, scratch="50Gi", deadline_hours=12),
        PodClass("gpu-reason-7b", "Cosmos-Reason1-7B VLM (Qwen2.5-VL, 8.3B, 17 GB bf16)", cpu="8", cpu_limit="16", memory="48Gi",
                 gpus=1, min_gpu_memory_gib=40, scratch="50Gi", deadline_hours=12),
        PodClass("gpu-predict2-2b", "Cosmos-Predict2 / 2.5 / Transfer2.5 2B + T5 encoder + guardrail (~30 GB bf16)", cpu="8", cpu_limit="16",
                 memory="64Gi", gpus=1, min_gpu_memory_gib=48, scratch="100Gi", deadline_hours=24),
        PodClass("gpu-predict2-14b", "Cosmos-Predict2 14B + T5 encoder + guardrail (~54 GB bf16)", cpu="12", cpu_limit="16",
                 memory="96Gi", gpus=1, min_gpu_memory_gib=80, scratch="100Gi", deadline_hours=24),
        PodClass("gpu-train-2b", "LoRA post-training of the 2B generator or the Reason-7B critic", cpu="16", cpu_limit="24", memory="128Gi",
                 gpus=1, min_gpu_memory_gib=80, scratch="200Gi", deadline_hours=47),
        PodClass("gpu-eval", "2B generator + Reason-7B critic on fixed prompts", cpu="8", cpu_limit="16", memory="80Gi",
                 gpus=1, min_gpu_memory_gib=80, scratch="100Gi", deadline_hours=24),
    )
}

DEFAULT_POD_CLASS = "cpu-light"
DEFAULT_GPU_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
DEFAULT_MAX_STEP_PODS_PER_RUN = 8

# The "restricted" Pod Security Standard, pod level and container level.
POD_SECURITY_CONTEXT = {
    "run_as_non_root": True,
    "run_as_user": NON_ROOT_UID,
    "run_as_group": NON_ROOT_UID,
    "fs_group": NON_ROOT_UID,
    "seccomp_profile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "run_as_non_root": True,
    "allow_privilege_escalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccomp_profile": {"type": "RuntimeDefault"},
}


def _json_env(name: str, default: Any) -> Any:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} must be JSON: {error}") from None


def declared_pod_classes(assets) -> dict[str, str]:
    """Asset name → the pod class its definition declares (the ``POD_CLASS_TAG`` tag), for every
    ``AssetsDefinition`` given, in their order; assets that declare none are left out."""
    table: dict[str, str] = {}
    for assets_def in assets:
        if isinstance(assets_def, dg.AssetsDefinition):
            for spec in assets_def.specs:
                if POD_CLASS_TAG in (spec.tags or {}):
                    table[spec.key.to_user_string()] = spec.tags[POD_CLASS_TAG]
    return table


def asset_pod_classes(assets) -> dict[str, str]:
    """The assets' declared classes with ``COSMOS_K8S_ASSET_CLASSES`` applied; unknown class names are refused."""
    table = {**declared_pod_classes(assets), **_json_env("COSMOS_K8S_ASSET_CLASSES", {})}
    unknown = {asset: name for asset, name in table.items() if name not in POD_CLASSES}
    if unknown:
        raise ValueError(f"unknown pod classes {unknown}; known: {', '.join(POD_CLASSES)}")
    return table


def pod_class_for(asset_names, table: dict[str, str]) -> PodClass | None:
    """The class of an op's assets in ``table`` (``asset_pod_classes``), or None when none has one."""
    classes = {POD_CLASSES[table[name]] for name in asset_names if name in table}
    if not classes:
        return None
    if len(classes) > 1:  # an op runs in one pod: give it the largest class its assets ask for
        return max(classes, key=lambda c: (c.gpus, c.min_gpu_memory_gib, _quantity(c.memory)))
    return classes.pop()


def _quantity(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def _gpu_memory_affinity(pod_class: PodClass) -> dict | None:
    label = os.environ.get("COSMOS_K8S_GPU_MEMORY_LABEL")
    if not (label and pod_class.gpus and pod_class.min_gpu_memory_gib):
        return None
    # GPU Feature Discovery reports MiB; `Gt` compares integers, hence one MiB less than needed.
    needed_mib = pod_class.min_gpu_memory_gib * 1024
    requirement = {"key": label, "operator": "Gt", "values": [str(needed_mib - 1)]}
    return {"node_affinity": {"required_during_scheduling_ignored_during_execution": {
        "node_selector_terms": [{"match_expressions": [requirement]}]}}}


def k8s_config_for(pod_class: PodClass) -> dict:
    """The ``dagster-k8s/config`` value for a step pod of this class (dagster-k8s's schema)."""
    gpu = pod_class.gpus > 0
    requests = {"cpu": pod_class.cpu, "memory": pod_class.memory, "ephemeral-storage": pod_class.scratch}
    limits = {"cpu": pod_class.cpu_limit, "memory": pod_class.memory, "ephemeral-storage": pod_class.scratch}
    if gpu:  # extended resources: request and limit must be equal
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(pod_class.gpus)
    prefix = "COSMOS_K8S_GPU" if gpu else "COSMOS_K8S_CPU"
    pod_spec: dict[str, Any] = {
        "security_context": POD_SECURITY_CONTEXT,
        "node_selector": _json_env(f"{prefix}_NODE_SELECTOR", {}),
        "tolerations": _json_env(f"{prefix}_TOLERATIONS", DEFAULT_GPU_TOLERATIONS if gpu else []),
        "volumes": [{"name": SCRATCH_VOLUME, "empty_dir": {"size_limit": pod_class.scratch}}],
    }
    if affinity := _gpu_memory_affinity(pod_class):
        pod_spec["affinity"] = affinity
    return {
        "container_config": {
            "resources": {"requests": requests, "limits": limits},
            "security_context": CONTAINER_SECURITY_CONTEXT,
            "volume_mounts": [{"name": SCRATCH_VOLUME, "mount_path": SCRATCH_PATH}],
            # COSMOS_SCRATCH: local copies of stored files and work folders go on the pod's own disk.
            "env": [{"name": "TMPDIR", "value": SCRATCH_PATH}, {"name": "COSMOS_SCRATCH", "value": SCRATCH_PATH}],
        },
        "pod_spec_config": pod_spec,
        "pod_template_spec_metadata": {"labels": {POD_CLASS_LABEL: pod_class.name}},
        "job_spec_config": {"active_deadline_seconds": pod_class.deadline_hours * 3600},
    }


def asset_names_by_op(assets) -> dict[str, list[str]]:
    """Op name → the names of the assets it materializes, for every ``AssetsDefinition`` given
    (asset-check ops have no assets: they get the default class)."""
    ops: dict[str, list[str]] = {}
    for assets_def in assets:
        if isinstance(assets_def, dg.AssetsDefinition) and assets_def.is_executable:
            ops.setdefault(assets_def.node_def.name, []).extend(key.to_user_string() for key in assets_def.keys)
    return ops


def step_pod_class(asset_names, table: dict[str, str]) -> PodClass:
    """The class of a step: its assets' class, or ``DEFAULT_POD_CLASS`` for ops with no asset of a
    class (asset checks; an asset without a class fails tests/test_k8s_deploy.py)."""
    return pod_class_for(asset_names, table) or POD_CLASSES[DEFAULT_POD_CLASS]


def per_step_k8s_config(assets) -> dict[str, dict]:
    """One pod configuration per op of the given assets and asset checks."""
    table = asset_pod_classes(assets)
    return {op: k8s_config_for(step_pod_class(names, table)) for op, names in asset_names_by_op(assets).items()}


def kubernetes_step_executor(assets) -> dg.ExecutorDefinition:
    """``k8s_job_executor``: each step its own Kubernetes Job, sized by its asset's pod class. Image,
    namespace, secrets and volumes come from the run launcher and the code location (deploy/)."""
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(
        {
            "max_concurrent": int(os.environ.get("COSMOS_K8S_MAX_STEP_PODS_PER_RUN", DEFAULT_MAX_STEP_PODS_PER_RUN)),
            "per_step_k8s_config": per_step_k8s_config(assets),
        }
    )


def with_kubernetes_executor(defs: dg.Definitions) -> dg.Definitions:
    """``defs`` (built without an executor) with the k8s step executor for its assets."""
    executor = kubernetes_step_executor([*(defs.assets or []), *(defs.asset_checks or [])])
    return dg.Definitions.merge(defs, dg.Definitions(executor=executor))


def pod_settings_markdown(assets) -> str:
    """The asset → pod table as markdown, from the assets' declared classes. deploy/README.md carries
    the project's (``python -m resources.k8s`` prints it); a test keeps them equal."""
    declared = declared_pod_classes(assets)
    lines = [
        "| asset | pod class | runs | CPU request / limit | memory | GPUs | min GPU memory | scratch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    unassigned = [name for name in POD_CLASSES if name not in declared.values()]
    rows = [(f"`{asset}`", name) for asset, name in declared.items()]
    rows += [("any, through `COSMOS_K8S_ASSET_CLASSES`", name) for name in unassigned]
    for asset, name in rows:
        c = POD_CLASSES[name]
        gpu_memory = f"{c.min_gpu_memory_gib} GiB" if c.gpus else "–"
        lines.append(
            f"| {asset} | `{c.name}` | {c.runs} | {c.cpu} / {c.cpu_limit} | {c.memory} | {c.gpus} | {gpu_memory} | {c.scratch} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    from cosmos_assets.definitions import defs  # only here: resources are imported by the assets, not the reverse

    print(pod_settings_markdown(defs.assets))
