"""Finding a checkpoint on this machine and checking it is safe to load, before any model code runs.

One path for every role: ``resolve_checkpoint`` turns what the user configured (a local directory or a
Hugging Face model id, optionally with a revision) into a local directory, never touching the network,
and refuses checkpoints that would need pickle or whose safetensors files are damaged. Checkpoints that
``cosmos models build-tiny`` made carry a marker file, so everything they produce can be labelled.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

TINY_MARKER = "cosmos_tiny_random.json"
TINY_LABEL = "tiny random weights (output is meaningless)"

# Files that hold weights; only safetensors may be loaded.
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SAFE_WEIGHT_SUFFIX = ".safetensors"
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class ModelError(Exception):
    """A model could not be provided; the message says which model and what to do."""


class ModelNotAvailable(ModelError):
    pass


class UnsafeCheckpoint(ModelError):
    pass


class CorruptCheckpoint(ModelError):
    pass


class RemoteCodeRefused(ModelError):
    pass


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint directory that passed the checks, with what a table row needs to name it."""

    path: Path
    name: str  # what the user configured (model id or directory)
    version: str  # the Hub revision (commit) when known, else a fingerprint of the files
    tiny_random: bool

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version[:12]}" + (f" [{TINY_LABEL}]" if self.tiny_random else "")


def resolve_checkpoint(source: str, *, role: str, revision: str | None = None, how_to_provide: str = "") -> Checkpoint:
    """A local, verified checkpoint for ``source``: a directory, or a model id already in the HF cache."""
    path = Path(source).expanduser()
    hub_revision = None
    if not path.is_dir():
        if path.is_absolute() or source.startswith((".", "~")) or source.count("/") != 1:
            raise ModelNotAvailable(_missing_message(source, role, how_to_provide, "no such directory"))
        path, hub_revision = _from_hub_cache(source, revision, role, how_to_provide)
    verify_safe_weights(path, source)
    tiny = (path / TINY_MARKER).is_file()
    return Checkpoint(path=path, name=source, version=hub_revision or fingerprint(path), tiny_random=tiny)


def _from_hub_cache(model_id: str, revision: str | None, role: str, how_to_provide: str) -> tuple[Path, str]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        # local_files_only: a missing model is an error to report, never a download to attempt.
        folder = snapshot_download(model_id, revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as error:
        raise ModelNotAvailable(_missing_message(model_id, role, how_to_provide, f"not in the Hugging Face cache ({error.__class__.__name__})")) from None
    folder = Path(folder)
    return folder, folder.name  # snapshot folders are named by the commit hash


def _missing_message(source: str, role: str, how_to_provide: str, why: str) -> str:
    from huggingface_hub import constants

    cache = constants.HF_HUB_CACHE  # the library's own resolution of HF_HUB_CACHE / HF_HOME
    return (
        f"The {role} model {source!r} is not on this machine ({why}). Nothing is downloaded at run time: "
        f"put the checkpoint in a local directory and configure that path, or fetch it into the Hugging Face "
        f"cache ({cache}) on a machine with network access (`hf download {source}`)."
        + (f" {how_to_provide}" if how_to_provide else "")
    )


def weight_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (SAFE_WEIGHT_SUFFIX, *PICKLE_WEIGHT_SUFFIXES))


def verify_safe_weights(path: Path, source: str) -> None:
    """Refuse pickle-only checkpoints and damaged safetensors files with a clear message.

    Checked per folder because a diffusers checkpoint keeps each component's weights in its own folder.
    """
    files = weight_files(path)
    folders: dict[Path, list[Path]] = {}
    for file in files:
        folders.setdefault(file.parent, []).append(file)
    for folder, members in folders.items():
        safe = [f for f in members if f.suffix == SAFE_WEIGHT_SUFFIX]
        if not safe:
            names = ", ".join(f.name for f in members)
            raise UnsafeCheckpoint(
                f"{source}: {folder.relative_to(path) if folder != path else 'the checkpoint'} has weights only in "
                f"pickle formats ({names}); loading them could run arbitrary code. Convert them to safetensors "
                f"(e.g. load them once in a trusted environment and `save_pretrained(..., safe_serialization=True)`)."
            )
        for file in safe:
            check_safetensors_file(file, source)


def check_safetensors_file(file: Path, source: str) -> dict:
    """Parse the header and check the file holds every byte it declares; returns the header."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ValueError("shorter than a safetensors header")
            (header_length,) = struct.unpack("<Q", prefix)
            if header_length > min(_MAX_SAFETENSORS_HEADER, size - 8):
                raise ValueError(f"header length {header_length} does not fit a {size}-byte file")
            header = json.loads(handle.read(header_length))
        data_end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        if 8 + header_length + data_end > size:
            raise ValueError(f"truncated: the header declares {8 + header_length + data_end} bytes, the file has {size}")
        return header
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as error:
        raise CorruptCheckpoint(f"{source}: {file.name} is not a valid safetensors file ({error}). Copy the checkpoint again.") from None


def fingerprint(path: Path) -> str:
    """A cheap content fingerprint: configs whole, weight files by header and sampled bytes.

    Hashing every byte of a 15 GB checkpoint would take minutes on each load; headers plus three
    1 MiB samples per file tell apart any two checkpoints that differ in practice.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = file.relative_to(path).as_posix()
        digest.update(rel.encode() + b"\0")
        size = file.stat().st_size
        with open(file, "rb") as handle:
            if size <= 3 * 1024 * 1024:
                digest.update(handle.read())
                continue
            for offset in (0, size // 2, size - 1024 * 1024):
                handle.seek(offset)
                digest.update(handle.read(1024 * 1024))
        digest.update(str(size).encode())
    return digest.hexdigest()[:16]


def write_tiny_marker(path: Path, role: str, architecture: str, seed: int, **details) -> None:
    """Mark a checkpoint directory as tiny random weights built here; every output of it is labelled."""
    marker = {
        "tiny_random_weights": True,
        "role": role,
        "architecture": architecture,
        "seed": seed,
        "built_by": "cosmos models build-tiny",
        "warning": "Random weights: outputs are meaningless and only exercise the real loading and inference code.",
        **details,
    }
    (path / TINY_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def require_pinned_revision(model: str, trust_remote_code: bool, revision: str | None) -> bool:
    """Remote code runs only from a pinned revision (a full commit hash), so it cannot change under us."""
    if not trust_remote_code:
        return False
    if not revision or len(revision) != 40 or any(c not in "0123456789abcdef" for c in revision.lower()):
        raise RemoteCodeRefused(
            f"{model}: trust_remote_code needs a pinned revision (a 40-character commit hash), got {revision!r}. "
            "Pin the commit you reviewed; remote code from a moving branch is refused."
        )
    return True
