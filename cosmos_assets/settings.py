"""Where everything lives: one root, ``COSMOS_HOME`` (default ``./.cosmos``), and the Dagster instance."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cosmos_assets.common import artefacts as keys

DEFAULT_HOME = ".cosmos"
PROFILES = ("local", "gpu", "k8s")


def cosmos_home() -> Path:
    return Path(os.environ.get("COSMOS_HOME", DEFAULT_HOME)).expanduser().absolute()


def cosmos_profile() -> str:
    profile = os.environ.get("COSMOS_PROFILE", "local")
    if profile not in PROFILES:
        raise ValueError(f"COSMOS_PROFILE={profile!r}; expected one of {', '.join(PROFILES)}")
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


# The local instance: SQLite storage (the default when no storage is named), run monitoring so
# a crashed run worker is noticed, and a `gpu` pool so GPU steps never oversubscribe one GPU.
LOCAL_INSTANCE_YAML = """\
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
"""


def ensure_local_instance(paths: CosmosPaths) -> Path:
    """Create the Dagster home with the local ``dagster.yaml`` unless one exists; returns it."""
    home = paths.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(LOCAL_INSTANCE_YAML)
    return home
