"""Where everything lives: one root, ``COSMOS_HOME`` (default ``./.cosmos``), and the Dagster instance."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cosmos_assets.common import artefacts as keys

DEFAULT_HOME = ".cosmos"
PROFILES = ("local", "gpu", "k8s")


class SettingsError(ValueError):
    """A setting that cannot work, saying what to do; the ``cosmos`` command prints it alone and exits 2."""


def cosmos_home() -> Path:
    return Path(os.environ.get("COSMOS_HOME", DEFAULT_HOME)).expanduser().absolute()


def usable_home(home: Path) -> Path:
    """``home``, created if missing, once it is known to be a folder this process can write; else ``SettingsError``."""
    if home.exists() and not home.is_dir():
        raise SettingsError(f"COSMOS_HOME={home} is a file, not a folder: point COSMOS_HOME at a folder "
                            "(it is created if missing)")
    try:
        home.mkdir(parents=True, exist_ok=True)
        check = home / f".cosmos-write-check-{os.getpid()}"
        check.write_bytes(b"")
        check.unlink()
    except OSError as error:
        raise SettingsError(f"COSMOS_HOME={home} is not a folder this user can write ({error.strerror or error}): "
                            "point COSMOS_HOME at a writable folder") from None
    return home


def cosmos_profile() -> str:
    profile = os.environ.get("COSMOS_PROFILE", "local")
    if profile not in PROFILES:
        raise SettingsError(f"COSMOS_PROFILE={profile!r} is not a profile; expected one of {', '.join(PROFILES)}")
    return profile


@dataclass(frozen=True)
class CosmosPaths:
    """The folders under ``COSMOS_HOME``; everything the product writes goes below ``home``. With an object
    store configured, what lies under ``artefacts``, ``tables`` (except the ledgers) and ``lancedb`` here
    lives there instead (``cosmos_assets.common.artefacts``, whose keys these folders follow)."""

    home: Path

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def artefacts(self) -> Path:
        return self.home / keys.ARTEFACTS

    @property
    def raw_store(self) -> Path:
        return self.home / keys.RAW

    @property
    def clips(self) -> Path:
        return self.home / keys.CLIPS

    @property
    def thumbnails(self) -> Path:
        return self.home / keys.THUMBNAILS

    @property
    def tables(self) -> Path:
        return self.home / keys.TABLES

    @property
    def checkpoints(self) -> Path:
        return self.home / keys.CHECKPOINTS

    @property
    def training_datasets(self) -> Path:
        return self.home / keys.TRAINING_DATASETS

    @property
    def training_runs(self) -> Path:
        return self.home / keys.TRAINING_RUNS  # resumable state per run, and the latent cache beside it

    @property
    def checkpoint_inbox(self) -> Path:
        return self.home / "checkpoint_inbox"

    @property
    def label_inbox(self) -> Path:
        """Where critic labels land (JSONL / CSV / Cosmos RL conversations; videos they name may sit beside them)."""
        return self.home / "label_inbox"

    @property
    def lancedb(self) -> Path:
        return self.home / keys.LANCEDB

    @property
    def datasets(self) -> Path:
        return self.home / keys.DATASETS

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def landing_ledger(self) -> Path:
        return self.tables / "landing_ledger.sqlite"

    @property
    def synthetic(self) -> Path:
        """Synthetic candidates (``candidates/``, ``external/``) and the source windows they came from (``sources/``)."""
        return self.home / keys.SYNTHETIC

    @property
    def synthetic_inbox(self) -> Path:
        """Where external generators drop candidate videos with a manifest."""
        return self.home / "synthetic_inbox"

    @property
    def synthetic_inbox_ledger(self) -> Path:
        return self.tables / "synthetic_inbox_ledger.sqlite"

    @property
    def dagster_home(self) -> Path:
        if os.environ.get("DAGSTER_HOME"):  # Dagster insists on an absolute path
            return Path(os.environ["DAGSTER_HOME"]).expanduser().absolute()
        return self.home / "dagster"

    @property
    def scratch(self) -> Path:
        """Local copies of files on an object store, and work folders (``COSMOS_SCRATCH``)."""
        return keys.scratch_folder(self.home)


# The local instance: SQLite storage (the default when no storage is named), run monitoring so a crashed
# run worker is noticed, and pools that describe the machine (``device_pool_limits``). Dagster's
# dagster.yaml can only name a default pool limit; a pool's own limit lives in the instance database.
# So the default is the `gpu` pool's limit for this device, and `collection` is set to 1 in the
# database (``pin_pool_limits``): it guards LanceDB's single writer and must never follow the default.
# The header's digest says the file is still as cosmos wrote it: then a later start rewrites it when
# the device or the defaults change; once edited by hand it is left alone.
LOCAL_INSTANCE_TEMPLATE = """\
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 30
# A run whose worker died (killed, out of memory or disk) is marked failed by run monitoring and launched
# again by the daemon, up to twice; a run that failed in an asset's own code is not (a retry would fail alike).
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    # {pool_comment}
    # Pools set in the UI keep their own limit; `collection` (LanceDB's one writer) is pinned to 1.
    default_limit: {gpu_limit}
    granularity: op
telemetry:
  enabled: false
"""
MANAGED_HEADER = "# Written by `cosmos` for the local profile ({digest}); edit freely: once edited, it is not rewritten.\n"

# dagster.yaml texts earlier versions of cosmos wrote, byte for byte: recognised as unedited and upgraded.
EARLIER_LOCAL_INSTANCE_YAMLS = (
    """\
# Written by `cosmos` for the local profile; edit freely, it is not overwritten.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 30
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    # Every pool, `gpu` included, admits one step at a time unless set otherwise in the UI.
    default_limit: 1
    granularity: op
telemetry:
  enabled: false
""",
)

# Pools whose limit is a correctness rule, not a property of the machine.
PINNED_POOL_LIMITS = {"collection": 1}


@dataclass(frozen=True)
class DevicePools:
    device: str  # "cuda" or "cpu": where the `gpu` pool's steps run
    gpu_limit: int
    reason: str


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def cuda_available() -> bool:
    import torch  # only here: `cosmos paths` and friends should not pay for it unless asked

    return torch.cuda.is_available()


def device_pool_limits(requested_device: str | None = None, has_cuda: bool | None = None, cpus: int | None = None) -> DevicePools:
    """How many steps the `gpu` pool admits at once on this machine.

    With a CUDA device: 1. Every model of a local run uses the default CUDA device (``COSMOS_DEVICE``
    picks another), so two pool steps would share one GPU's memory. Without one (or with
    ``COSMOS_DEVICE=cpu``) the pool's steps are CPU work: one per core, so curation's shot detection
    runs beside a checkpoint evaluation instead of queueing behind it, and no more than the cores allow.
    """
    requested = (requested_device if requested_device is not None else os.environ.get("COSMOS_DEVICE", "auto")).lower()
    cpus = cpus or usable_cpus()
    if requested.startswith("cpu"):
        return DevicePools("cpu", cpus, f"COSMOS_DEVICE={requested}: GPU-class steps run on the CPU, one per core ({cpus})")
    if has_cuda if has_cuda is not None else cuda_available():
        return DevicePools("cuda", 1, "one CUDA device in use: one GPU-class step at a time")
    return DevicePools("cpu", cpus, f"no CUDA device: GPU-class steps run on the CPU, one per core ({cpus})")


def _digest(body: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()[:16]


def local_instance_yaml(pools: DevicePools) -> str:
    body = LOCAL_INSTANCE_TEMPLATE.format(gpu_limit=pools.gpu_limit, pool_comment=f"`gpu` and other unpinned pools: {pools.reason}.")
    return MANAGED_HEADER.format(digest=_digest(body)) + body


def written_by_cosmos_unedited(text: str) -> bool:
    if text in EARLIER_LOCAL_INSTANCE_YAMLS:
        return True
    header, _, body = text.partition("\n")
    return header + "\n" == MANAGED_HEADER.format(digest=_digest(body))


def pin_pool_limits(dagster_home: Path) -> None:
    """Set the pools whose limit is a rule (``PINNED_POOL_LIMITS``) in the instance database."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for pool, limit in PINNED_POOL_LIMITS.items():
            info = instance.event_log_storage.get_concurrency_info(pool)
            if info.limit != limit or info.using_default_limit:
                instance.event_log_storage.set_concurrency_slots(pool, limit)


def ensure_local_instance(paths: CosmosPaths, pools: DevicePools | None = None) -> Path:
    """Create or update the Dagster home's local ``dagster.yaml`` for this device and pin the rule pools;
    returns the home. A ``dagster.yaml`` edited by hand is kept as it is."""
    home = paths.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    existing = config.read_text() if config.exists() else None
    if existing is None or written_by_cosmos_unedited(existing):
        wanted = local_instance_yaml(pools or device_pool_limits())
        if wanted != existing:
            tmp = config.with_name(".dagster.yaml.tmp")
            tmp.write_text(wanted)
            os.replace(tmp, config)  # a daemon reading it never sees half a file
    pin_pool_limits(home)
    return home


def cpu_threads_per_step(pool_limit: int | None, cpus: int | None = None) -> int:
    """Threads one step of the `gpu` pool should use on the CPU: its share of the cores when the pool
    admits ``pool_limit`` steps at once. Measured in the demo on 2 cores: three curation runs with
    torch's default of a thread per core each split a 2.6 s video in 32 s instead of 1.4 s alone, as
    spinning OpenMP threads of several processes took turns on the same cores."""
    cpus = cpus or usable_cpus()
    return max(1, cpus // max(1, pool_limit or 1))
