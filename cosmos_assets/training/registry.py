"""Checkpoints on the artefact store: one folder per checkpoint (adapter + manifest, the manifest
published last), the promoted pointer with its history, and the inbox where an external trainer drops
checkpoints with a manifest.

PROMOTED.json and history.jsonl are rewritten whole (read, append, write: a rename locally, a PUT on an
object store). That is safe because their one writer, ``promoted_checkpoint``, runs in the ``collection``
pool, one step at a time; and the checkpoint inbox is scanned only by ``checkpoint_sensor``, whose ticks
never overlap.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from cosmos_assets.common.artefacts import CHECKPOINTS, ArtefactStore
from cosmos_assets.common.files import copy_and_hash_atomically, open_regular_file_no_follow, sha256_of_stream, write_bytes_atomically
from cosmos_assets.models.checkpoints import CorruptCheckpoint, ModelError, check_safetensors_file

ADAPTER = "adapter.safetensors"
MANIFEST = "manifest.json"
REQUIRED_MANIFEST_KEYS = ("kind", "base_model")
PROMOTED = f"{CHECKPOINTS}/PROMOTED.json"
HISTORY = f"{CHECKPOINTS}/history.jsonl"


class CheckpointMissing(ModelError):
    pass


def checkpoint_key(key: str) -> str:
    """The store folder of checkpoint ``key``."""
    return f"{CHECKPOINTS}/{key}"


def checkpoint_keys(store: ArtefactStore) -> list[str]:
    return store.folders(CHECKPOINTS)


def manifest_json(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode()


def verified_checkpoint(store: ArtefactStore, key: str) -> dict:
    """The manifest of a checkpoint whose adapter file exists and is intact, or a clear error."""
    folder = checkpoint_key(key)
    if not store.exists(f"{folder}/{MANIFEST}"):
        raise CheckpointMissing(f"checkpoint {key}: no {MANIFEST} in {store.ref(folder)}")
    manifest = store.read_json(f"{folder}/{MANIFEST}")
    if not store.exists(f"{folder}/{ADAPTER}"):
        raise CheckpointMissing(f"checkpoint {key}: the adapter file {store.ref(f'{folder}/{ADAPTER}')} is missing")
    check_safetensors_file(adapter_path(store, key), f"checkpoint {key}")
    return manifest


def adapter_path(store: ArtefactStore, key: str) -> Path:
    """A local copy of a checkpoint's adapter, for torch to load."""
    return store.local_path(store.ref(f"{checkpoint_key(key)}/{ADAPTER}"))


def promoted(store: ArtefactStore) -> dict | None:
    return store.read_json_if_exists(PROMOTED)


def promote(store: ArtefactStore, key: str, evidence: dict) -> dict:
    """Point PROMOTED.json at ``key`` and append to history.jsonl once (a re-run adds nothing)."""
    entry = {"checkpoint": key, "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "evidence": evidence}
    previous = history(store)
    if previous and previous[-1]["checkpoint"] == key:
        return previous[-1]
    store.write_json(PROMOTED, entry)
    store.write_bytes(HISTORY, "".join(json.dumps(e) + "\n" for e in previous + [entry]).encode())
    return entry


def history(store: ArtefactStore) -> list[dict]:
    return [json.loads(line) for line in store.read_bytes(HISTORY).decode().splitlines()] if store.exists(HISTORY) else []


@dataclass(frozen=True)
class InboxResult:
    registered: list[str]  # checkpoint keys, new this scan
    rejected: list[dict]  # {"item", "error_class", "error_message"}, recorded once


def scan_checkpoint_inbox(inbox: Path, store: ArtefactStore, ledger_path: Path, settle_seconds: float = 10.0) -> InboxResult:
    """Register each settled ``inbox/<name>/`` holding ``manifest.json`` + ``adapter.safetensors``.

    Files are read without following links and copied (hashing as they go) into the store's
    ``checkpoints/inbox-<digest>``;
    the key comes from the adapter's content, so the same checkpoint dropped twice is registered once.
    Bad drops are recorded with their error and never retried until they change.
    """
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    registered, rejected = [], []
    for item in sorted(p for p in inbox.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")) if inbox.is_dir() else []:
        files = [item / MANIFEST, item / ADAPTER]
        stamp = max((f.lstat().st_mtime for f in files if f.exists()), default=item.lstat().st_mtime)
        if time.time() - stamp < settle_seconds:
            continue
        identity = f"{item.name}:{stamp}"
        if identity in ledger:
            continue
        try:
            for f in files:
                if f.is_symlink():
                    raise ModelError(f"{f.name} is a symbolic link; checkpoints are read only from regular files")
                if not f.is_file():
                    raise CheckpointMissing(f"{f.name} is missing")
            manifest = json.loads((item / MANIFEST).read_bytes()[:1_000_000])
            if not isinstance(manifest, dict) or any(k not in manifest for k in REQUIRED_MANIFEST_KEYS):
                raise ValueError(f"{MANIFEST} needs the keys {', '.join(REQUIRED_MANIFEST_KEYS)}")
            check_safetensors_file(item / ADAPTER, f"inbox checkpoint {item.name!r}")
            with open_regular_file_no_follow(item / ADAPTER) as source:
                digest, _ = sha256_of_stream(source)
                key = f"inbox-{digest[:16]}"
                if not store.exists(f"{checkpoint_key(key)}/{MANIFEST}"):  # else: these adapter bytes were registered before
                    source.seek(0)
                    with store.folder(checkpoint_key(key), marker=MANIFEST) as staging:
                        copied, _ = copy_and_hash_atomically(source, staging / ADAPTER)
                        if copied != digest:
                            raise ValueError("the adapter changed while it was being copied")
                        (staging / MANIFEST).write_bytes(manifest_json(
                            {**manifest, "source": "checkpoint_inbox", "inbox_name": item.name, "adapter_sha256": digest}))
                    registered.append(key)
            ledger[identity] = {"key": key}
        except (ModelError, CorruptCheckpoint, ValueError, OSError, UnicodeDecodeError) as error:
            entry = {"item": item.name, "error_class": error.__class__.__name__, "error_message": str(error)}
            ledger[identity] = entry
            rejected.append(entry)
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(ledger_path, json.dumps(ledger, indent=1).encode())
    return InboxResult(registered, rejected)
