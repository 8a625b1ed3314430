"""Checkpoints on the artefact store: one folder per checkpoint (adapter + manifest, the manifest
published last), the promoted pointer with its history, and the inbox where an external trainer drops
checkpoints with a manifest.

PROMOTED.json and history.jsonl are rewritten whole (read, append, write: a rename locally, a PUT on an
object store). That is safe because their one writer, ``promoted_checkpoint``, runs in the ``collection``
pool, one step at a time. The checkpoint inbox is looked at by ``checkpoint_sensor`` (read only) and a drop is
copied into the store by the ``inbox_checkpoint`` asset, in a run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from cosmos_assets.common.artefacts import CHECKPOINTS, ArtefactStore
from cosmos_assets.common.drop_zone import OutsideDropZone, read_manifest
from cosmos_assets.common.files import copy_and_hash_atomically, open_regular_file_no_follow, sha256_of_stream
from cosmos_assets.models.checkpoints import CorruptCheckpoint, ModelError, check_safetensors_file

ADAPTER = "adapter.safetensors"
MANIFEST = "manifest.json"
REQUIRED_MANIFEST_KEYS = ("kind", "base_model")


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


def promoted(store: ArtefactStore, root: str = CHECKPOINTS) -> dict | None:
    """The promoted pointer under ``root`` (the generator's checkpoints by default; the critic's have their own)."""
    return store.read_json_if_exists(f"{root}/PROMOTED.json")


def promote(store: ArtefactStore, key: str, evidence: dict, root: str = CHECKPOINTS) -> dict:
    """Point ``root``/PROMOTED.json at ``key`` and append to its history.jsonl once (a re-run adds nothing)."""
    entry = {"checkpoint": key, "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "evidence": evidence}
    previous = history(store, root)
    if previous and previous[-1]["checkpoint"] == key:
        return previous[-1]
    store.write_json(f"{root}/PROMOTED.json", entry)
    store.write_bytes(f"{root}/history.jsonl", "".join(json.dumps(e) + "\n" for e in previous + [entry]).encode())
    return entry


def history(store: ArtefactStore, root: str = CHECKPOINTS) -> list[dict]:
    path = f"{root}/history.jsonl"
    return [json.loads(line) for line in store.read_bytes(path).decode().splitlines()] if store.exists(path) else []


INBOX_ERRORS = (ModelError, CorruptCheckpoint, ValueError, OSError, UnicodeDecodeError)

# What an adapter in the inbox must be for the evaluation to load it (models/lora.py ``load_lora``): LoRA settings in
# the safetensors metadata, and tensors whose shapes agree with their bytes, with the rank and with sane bounds.
LORA_METADATA_KEYS = ("lora_rank", "lora_alpha", "lora_target_modules")
MAX_LORA_RANK = 4096
MAX_TENSOR_DIMS = 4
MAX_TENSOR_DIM = 1 << 20
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


class InvalidAdapter(CorruptCheckpoint):
    """A well-formed safetensors file that is not a LoRA adapter the evaluation can load (settings missing, or a
    tensor whose shape is absurd or disagrees with its bytes or the rank)."""


def check_lora_adapter(header: dict, source: str) -> int:
    """Check a safetensors header (``check_safetensors_file``'s) as a LoRA adapter; returns its rank."""
    metadata = header.get("__metadata__") or {}
    missing = [k for k in LORA_METADATA_KEYS if k not in metadata]
    if missing:
        raise InvalidAdapter(f"{source}: no LoRA settings in the adapter's metadata (missing {', '.join(missing)}); "
                             "save it with models/lora.py save_lora, or write these keys into the safetensors metadata")
    try:
        rank, alpha = int(metadata["lora_rank"]), float(metadata["lora_alpha"])
        modules = json.loads(metadata["lora_target_modules"])
    except (TypeError, ValueError) as error:
        raise InvalidAdapter(f"{source}: unreadable LoRA settings in the metadata ({error})") from None
    if not 1 <= rank <= MAX_LORA_RANK or not math.isfinite(alpha):
        raise InvalidAdapter(f"{source}: lora_rank {rank} (1..{MAX_LORA_RANK}) or lora_alpha {alpha} is out of range")
    if not isinstance(modules, list) or not modules or not all(isinstance(m, str) and m for m in modules):
        raise InvalidAdapter(f"{source}: lora_target_modules must be a non-empty JSON list of module names")
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    if not tensors:
        raise InvalidAdapter(f"{source}: the adapter holds no tensors")
    for name, entry in tensors.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (TypeError, KeyError, ValueError) as error:
            raise InvalidAdapter(f"{source}: tensor {name[:100]!r} has no dtype, shape and offsets ({error})") from None
        if dtype not in DTYPE_BYTES:
            raise InvalidAdapter(f"{source}: tensor {name[:100]!r} has an unknown dtype {str(dtype)[:20]!r}")
        if (not isinstance(shape, list) or len(shape) > MAX_TENSOR_DIMS
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_TENSOR_DIM for d in shape)):
            raise InvalidAdapter(f"{source}: tensor {name[:100]!r} has an absurd shape {str(shape)[:100]} (at most "
                                 f"{MAX_TENSOR_DIMS} dimensions of at most {MAX_TENSOR_DIM})")
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end) or \
                math.prod(shape) * DTYPE_BYTES[dtype] != end - begin:
            raise InvalidAdapter(f"{source}: tensor {name[:100]!r} of shape {shape} {dtype} does not match its "
                                 f"{end - begin if isinstance(end, int) and isinstance(begin, int) else '?'} bytes")
        if ("lora_A" in name and (not shape or shape[0] != rank)) or ("lora_B" in name and (len(shape) < 2 or shape[1] != rank)):
            raise InvalidAdapter(f"{source}: tensor {name[:100]!r} of shape {shape} does not have lora_rank {rank}")
    return rank


def _inbox_manifest(item: Path) -> dict:
    """A drop's manifest, after the drop-zone checks: both files there, neither a link, the manifest bounded."""
    for f in (item / MANIFEST, item / ADAPTER):
        if f.is_symlink():
            raise OutsideDropZone(f"{f.name} is a symbolic link; checkpoints are read only from regular files")
        if not f.is_file():
            raise CheckpointMissing(f"{f.name} is missing")
    manifest = read_manifest(item / MANIFEST, f"{item.name}/{MANIFEST}")
    if not isinstance(manifest, dict) or any(k not in manifest for k in REQUIRED_MANIFEST_KEYS):
        raise ValueError(f"{MANIFEST} needs the keys {', '.join(REQUIRED_MANIFEST_KEYS)}")
    source = f"inbox checkpoint {item.name!r}"
    check_lora_adapter(check_safetensors_file(item / ADAPTER, source), source)
    return manifest


def inbox_checkpoint_key(item: Path) -> str:
    """The key a dropped checkpoint is registered under, ``inbox-<adapter digest>``, after checking the drop
    (read only). The key comes from the adapter's content: the same adapter dropped twice is one checkpoint.
    Raises one of ``INBOX_ERRORS`` for a drop that cannot be registered."""
    _inbox_manifest(item)
    with open_regular_file_no_follow(item / ADAPTER) as source:
        digest, _ = sha256_of_stream(source)
    return f"inbox-{digest[:16]}"


def register_inbox_checkpoint(store: ArtefactStore, item: Path, key: str) -> dict:
    """Copy a dropped checkpoint into the store as ``checkpoints/<key>`` (once: a published folder is kept)
    and return its manifest. The copy is hashed as it goes and must match ``key``: a drop that changed
    since the key was computed is refused rather than registered under someone else's name."""
    manifest = _inbox_manifest(item)
    if store.exists(f"{checkpoint_key(key)}/{MANIFEST}"):
        return store.read_json(f"{checkpoint_key(key)}/{MANIFEST}")
    with open_regular_file_no_follow(item / ADAPTER) as source:
        with store.folder(checkpoint_key(key), marker=MANIFEST) as staging:
            digest, _ = copy_and_hash_atomically(source, staging / ADAPTER)
            if f"inbox-{digest[:16]}" != key:
                raise ValueError(f"the adapter in {item.name!r} changed after it was seen (now inbox-{digest[:16]}, "
                                 f"expected {key}); it will be registered again once it settles")
            registered = {**manifest, "source": "checkpoint_inbox", "inbox_name": item.name, "adapter_sha256": digest}
            (staging / MANIFEST).write_bytes(manifest_json(registered))
    return registered
