"""Writing artefacts atomically and hashing content: the one way files are produced here.

Every artefact is written under a temporary name beside its destination and renamed into place,
so a crash leaves either the old file, the new file, or a ``.tmp-*`` leftover that is never read,
and never a half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

CHUNK_BYTES = 1 << 20
_UMASK = os.umask(0)
os.umask(_UMASK)
TEMP_PREFIX = ".tmp-"

# Namespace for deterministic ids (clip ids, ...): uuid5 of a stable description.
COSMOS_NAMESPACE = uuid.UUID("6f1d2a8e-3c57-4b7e-9a55-2f0c3c9a1e42")


def stable_id(*parts: object) -> str:
    """A deterministic UUID5 string for the given parts (same parts, same id, on every machine)."""
    return str(uuid.uuid5(COSMOS_NAMESPACE, "\x1f".join(str(p) for p in parts)))


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place only on success."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid in the name lets a later run tell a crashed writer's leftovers from live ones.
    fd, tmp_name = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=destination.suffix, dir=destination.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; artefacts are read by other processes
    try:
        yield tmp
        os.replace(tmp, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomically(destination: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(destination) as tmp:
        tmp.write_bytes(data)
    return Path(destination)


def sha256_of_stream(stream, limit_bytes: int | None = None) -> tuple[str, int]:
    """Hash a binary stream in chunks; returns (hex digest, bytes read)."""
    digest = hashlib.sha256()
    total = 0
    while True:
        chunk = stream.read(CHUNK_BYTES)
        if not chunk:
            break
        total += len(chunk)
        if limit_bytes is not None and total > limit_bytes:
            raise ValueError(f"stream is larger than {limit_bytes} bytes")
        digest.update(chunk)
    return digest.hexdigest(), total


def open_regular_file_no_follow(path: str | os.PathLike):
    """Open a file for reading, refusing symlinks and anything that is not a regular file.

    ``O_NOFOLLOW`` closes the race where a file is swapped for a symlink between the scan and the read.
    """
    # O_NONBLOCK: opening a FIFO swapped in for a file must not hang waiting for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"not a regular file: {display_name(path)!r}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_of_file(path: str | os.PathLike) -> str:
    with open_regular_file_no_follow(path) as f:
        return sha256_of_stream(f)[0]


def copy_and_hash_atomically(source, destination: str | os.PathLike) -> tuple[str, int]:
    """Copy an open binary stream to ``destination`` atomically, hashing what was copied."""
    digest = hashlib.sha256()
    total = 0
    with atomic_path(destination) as tmp, open(tmp, "wb") as out:
        while True:
            chunk = source.read(CHUNK_BYTES)
            if not chunk:
                break
            digest.update(chunk)
            total += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
        out.close()
    return digest.hexdigest(), total


def _writer_alive(temp_name: str) -> bool:
    try:
        pid = int(temp_name[len(TEMP_PREFIX) :].split("-", 1)[0])
        os.kill(pid, 0)
        return True
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def remove_stale_temporaries(directory: str | os.PathLike, max_age_s: float = 6 * 3600) -> int:
    """Delete ``.tmp-*`` leftovers of writers that died (or are too old to be alive); returns how many."""
    removed = 0
    root = Path(directory)
    if not root.exists():
        return 0
    now = time.time()
    for path in root.rglob(f"{TEMP_PREFIX}*"):
        try:
            if _writer_alive(path.name) and now - path.stat().st_mtime < max_age_s:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def display_name(raw: bytes | str) -> str:
    """A printable, lossless-enough rendering of a file name that may not be UTF-8."""
    if isinstance(raw, str):
        raw = os.fsencode(raw)
    return raw.decode("utf-8", errors="backslashreplace")


class JsonTooLarge(ValueError):
    """A JSON document beyond the size or nesting depth this project reads from a drop zone."""


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (outside strings), without parsing it: Python's
    parser recurses once per level, so a hostile document thousands of levels deep must be refused first."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_bounded_json(data: bytes, what: str, max_bytes: int = 1_000_000, max_depth: int = 16):
    """``data`` as JSON, refused with ``JsonTooLarge`` past ``max_bytes`` or ``max_depth`` levels of nesting,
    or ``ValueError`` when it is not UTF-8 JSON. ``what`` names the document in the message."""
    if len(data) > max_bytes:
        raise JsonTooLarge(f"{what} is larger than {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} is not UTF-8: {error}") from None
    if (depth := json_depth(text)) > max_depth:
        raise JsonTooLarge(f"{what} nests {depth} levels deep; at most {max_depth} are read")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} is not valid JSON: {error}") from None
