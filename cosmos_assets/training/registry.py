"""Checkpoints on disk: one folder per checkpoint (adapter + manifest), the promoted pointer with its
history, and the inbox where an external trainer drops checkpoints with a manifest."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cosmos_assets.common.files import copy_and_hash_atomically, open_regular_file_no_follow, write_bytes_atomically
from cosmos_assets.models.checkpoints import CorruptCheckpoint, ModelError, check_safetensors_file

ADAPTER = "adapter.safetensors"
MANIFEST = "manifest.json"
REQUIRED_MANIFEST_KEYS = ("kind", "base_model")


class CheckpointMissing(ModelError):
    pass


def checkpoint_dir(root: Path, key: str) -> Path:
    return root / key


def write_manifest(folder: Path, manifest: dict) -> None:
    write_bytes_atomically(folder / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode())


def verified_checkpoint(folder: Path) -> dict:
    """The manifest of a checkpoint whose adapter file exists and is intact, or a clear error."""
    if not (folder / MANIFEST).is_file():
        raise CheckpointMissing(f"checkpoint {folder.name}: no {MANIFEST} in {folder}")
    manifest = json.loads((folder / MANIFEST).read_text())
    adapter = folder / ADAPTER
    if not adapter.is_file():
        raise CheckpointMissing(f"checkpoint {folder.name}: the adapter file {adapter} is missing")
    check_safetensors_file(adapter, f"checkpoint {folder.name}")
    return manifest


def promoted(root: Path) -> dict | None:
    pointer = root / "PROMOTED.json"
    return json.loads(pointer.read_text()) if pointer.is_file() else None


def promote(root: Path, key: str, evidence: dict) -> dict:
    """Point PROMOTED.json at ``key`` and append to history.jsonl once (a re-run adds nothing)."""
    entry = {"checkpoint": key, "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "evidence": evidence}
    history = root / "history.jsonl"
    previous = [json.loads(line) for line in history.read_text().splitlines()] if history.is_file() else []
    if previous and previous[-1]["checkpoint"] == key:
        return previous[-1]
    write_bytes_atomically(root / "PROMOTED.json", json.dumps(entry, indent=2).encode())
    with open(history, "a") as handle:
        handle.write(json.dumps(entry) + "\n")
    return entry


def history(root: Path) -> list[dict]:
    path = root / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@dataclass(frozen=True)
class InboxResult:
    registered: list[str]  # checkpoint keys, new this scan
    rejected: list[dict]  # {"item", "error_class", "error_message"}, recorded once


def scan_checkpoint_inbox(inbox: Path, root: Path, ledger_path: Path, settle_seconds: float = 10.0) -> InboxResult:
    """Register each settled ``inbox/<name>/`` holding ``manifest.json`` + ``adapter.safetensors``.

    Files are read without following links and copied (hashing as they go) into ``root/inbox-<digest>``;
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
            staging = root / f".tmp-{os.getpid()}-{item.name.encode().hex()[:32]}"
            with open_regular_file_no_follow(item / ADAPTER) as source:
                digest, _ = copy_and_hash_atomically(source, staging / ADAPTER)
            key = f"inbox-{digest[:16]}"
            target = checkpoint_dir(root, key)
            if target.exists():  # the same adapter bytes were registered before
                shutil.rmtree(staging)
            else:
                write_manifest(staging, {**manifest, "source": "checkpoint_inbox", "inbox_name": item.name, "adapter_sha256": digest})
                os.replace(staging, target)
                registered.append(key)
            ledger[identity] = {"key": key}
        except (ModelError, CorruptCheckpoint, ValueError, OSError, UnicodeDecodeError) as error:
            entry = {"item": item.name, "error_class": error.__class__.__name__, "error_message": str(error)}
            ledger[identity] = entry
            rejected.append(entry)
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(ledger_path, json.dumps(ledger, indent=1).encode())
    return InboxResult(registered, rejected)
