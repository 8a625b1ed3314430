"""Critic checkpoints on the artefact store: one folder per critic training run (the critic's weights and a
manifest naming its backend and version), and the promoted pointer ``critique_scores`` follows. No Dagster here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cosmos_assets.common.artefacts import CRITIC_CHECKPOINTS, ArtefactStore
from cosmos_assets.training import registry

FEATURE_CRITIC_FILE = "critic.safetensors"
REASON_ADAPTER_FILE = "adapter.safetensors"
MANIFEST = "manifest.json"


def checkpoint_folder(key: str) -> str:
    return f"{CRITIC_CHECKPOINTS}/{key}"


def weights_file(backend: str) -> str:
    return FEATURE_CRITIC_FILE if backend == "feature" else REASON_ADAPTER_FILE


@dataclass(frozen=True)
class CriticCheckpoint:
    key: str
    backend: str  # feature | reason
    critic_version: str
    manifest: dict

    def weights(self, store: ArtefactStore) -> Path:
        """A local copy of the critic's safetensors file."""
        return store.local_path(store.ref(f"{checkpoint_folder(self.key)}/{weights_file(self.backend)}"))


def read_checkpoint(store: ArtefactStore, key: str) -> CriticCheckpoint:
    manifest = store.read_json(f"{checkpoint_folder(key)}/{MANIFEST}")
    return CriticCheckpoint(key, manifest["backend"], manifest["critic_version"], manifest)


def write_checkpoint(store: ArtefactStore, key: str, backend: str, weights: Path, manifest: dict) -> CriticCheckpoint:
    """Publish the weights, then the manifest (last: a folder with a manifest is complete)."""
    folder = checkpoint_folder(key)
    with store.writing(f"{folder}/{weights_file(backend)}") as tmp:
        tmp.write_bytes(Path(weights).read_bytes())
    manifest = {**manifest, "backend": backend}
    store.write_json(f"{folder}/{MANIFEST}", manifest)
    return CriticCheckpoint(key, backend, manifest["critic_version"], manifest)


def promoted_critic(store: ArtefactStore) -> CriticCheckpoint | None:
    """The critic promoted last, or None before the first promotion."""
    entry = registry.promoted(store, CRITIC_CHECKPOINTS)
    return read_checkpoint(store, entry["checkpoint"]) if entry else None
