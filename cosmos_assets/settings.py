"""Where everything lives: one root, ``COSMOS_HOME`` (default ``./.cosmos``), and the Dagster instance."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
    """The folders under ``COSMOS_HOME``; everything the product writes goes below ``home``."""

    home: Path

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def artefacts(self) -> Path:
        return self.home / "artefacts"

    @property
    def raw_store(self) -> Path:
        return self.artefacts / "raw"

    @property
    def clips(self) -> Path:
        return self.artefacts / "clips"

    @property
    def thumbnails(self) -> Path:
        return self.artefacts / "thumbnails"

    @property
    def tables(self) -> Path:
        return self.home / "tables"

    @property
    def checkpoints(self) -> Path:
        return self.artefacts / "checkpoints"

    @property
    def training_datasets(self) -> Path:
        return self.artefacts / "training_datasets"

    @property
    def training_runs(self) -> Path:
        return self.artefacts / "training_runs"  # resumable state per run, and the latent cache beside it

    @property
    def checkpoint_inbox(self) -> Path:
        return self.home / "checkpoint_inbox"

    @property
    def lancedb(self) -> Path:
        return self.home / "lancedb"

    @property
    def datasets(self) -> Path:
        return self.artefacts / "datasets"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def landing_ledger(self) -> Path:
        return self.tables / "landing_ledger.sqlite"

    @property
    def synthetic(self) -> Path:
        """Synthetic candidates (``candidates/``, ``external/``) and the source windows they came from (``sources/``)."""
        return self.artefacts / "synthetic"

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

    def raw_path(self, content_hash: str, container_suffix: str) -> Path:
        return self.raw_store / content_hash[:2] / f"{content_hash}{container_suffix}"

    # Clip files sit under their recipe (split + transcode settings): the same clip id encoded with
    # other settings is another file, so a finished record of one recipe never points at another's.
    def clip_path(self, clip_id: str, recipe: str) -> Path:
        return self.clips / recipe[:8] / clip_id[:2] / f"{clip_id}.mp4"

    def thumbnail_path(self, clip_id: str, recipe: str) -> Path:
        return self.thumbnails / recipe[:8] / clip_id[:2] / f"{clip_id}.jpg"


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
