"""Drop zones: folders where people and other systems put files for the flywheel to take.

Three of them share these rules: the landing zone (raw video, ``curation.landing``), the synthetic inbox
(candidates with a manifest, ``synthetic.inbox``) and the checkpoint inbox (adapter + manifest folders,
``training.registry``).

- **Settle rule**: a file is taken once it has not changed for ``settle_seconds`` (every write moves its
  mtime); names that upload tools use while a transfer runs (``.part``, ``.crdownload``, ...) and dotfiles
  are never taken.
- **Name safety**: names are data, never trusted paths. Zones are walked without following symlinks, files
  are opened with ``O_NOFOLLOW`` and refused when their real location leaves the zone (``OutsideDropZone``,
  recorded as ``UnsafePath``), names are kept as raw bytes, and everything written is named by content.
- **Manifests** are bounded before they are parsed (size, nesting depth: ``read_manifest``).
- **Ledgers** (small SQLite files beside the tables) remember what was seen; they share ``connect_ledger``.
- **Error classes**: ``error_class`` names a refused drop the same way in every zone.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cosmos_assets.common.files import (
    JsonTooLarge, display_name, open_regular_file_no_follow, parse_bounded_json, sha256_of_stream,
)

MAX_MANIFEST_BYTES = 1 << 20
MAX_MANIFEST_DEPTH = 16  # objects and arrays inside each other; Python's parser recurses once per level

# Names that upload tools use while a transfer is still running; never ingested.
IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".filepart", "~")


@dataclass(frozen=True)
class DroppedFile:
    relative_path: bytes  # raw bytes of the path below the drop zone's root
    size: int
    mtime_ns: int
    is_symlink: bool = False

    @property
    def name(self) -> str:
        return display_name(self.relative_path)


@dataclass(frozen=True)
class ScanResult:
    settled: list[DroppedFile]
    unsettled: list[DroppedFile]


def _ignored(name: bytes) -> bool:
    return name.startswith(b".") or name.lower().endswith(
        tuple(s.encode() for s in IN_PROGRESS_SUFFIXES)
    )


def scan_drop_zone(root: Path, settle_seconds: float, now: float | None = None) -> ScanResult:
    """List files below ``root`` (any depth) and split them into settled and still-changing.

    A file is settled once its size and content have not changed for ``settle_seconds``: every
    write and truncation moves mtime, so an upload in progress always looks recent. (A file renamed
    into place keeps its old mtime, and that is right: a rename is atomic, the file is complete.)
    Symlinks are reported (to be recorded as rejected) but never followed.
    """
    now = time.time() if now is None else now
    root_bytes = os.fsencode(root)
    settled: list[DroppedFile] = []
    unsettled: list[DroppedFile] = []
    if not os.path.isdir(root_bytes):
        return ScanResult(settled, unsettled)
    for directory, dirnames, filenames in os.walk(root_bytes, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _ignored(d))
        # Symlinked directories show up in dirnames; os.walk does not descend into them.
        entries = list(filenames) + [
            d for d in dirnames if os.path.islink(os.path.join(directory, d))
        ]
        for filename in sorted(entries):
            if _ignored(filename):
                continue
            full = os.path.join(directory, filename)
            try:
                info = os.lstat(full)
            except FileNotFoundError:
                continue  # removed while we looked
            relative = os.path.relpath(full, root_bytes)
            if stat.S_ISLNK(info.st_mode):
                settled.append(DroppedFile(relative, 0, info.st_mtime_ns, is_symlink=True))
                continue
            if not stat.S_ISREG(info.st_mode):
                continue  # sockets, fifos, devices: nothing to ingest
            entry = DroppedFile(relative, info.st_size, info.st_mtime_ns)
            (settled if now - info.st_mtime >= settle_seconds else unsettled).append(entry)
    return ScanResult(settled, unsettled)


def hash_dropped_file(root: Path, relative_path: bytes) -> str:
    path = os.path.join(os.fsencode(root), relative_path)
    assert_inside(root, path)
    with open_regular_file_no_follow(path) as stream:
        return sha256_of_stream(stream)[0]


class OutsideDropZone(PermissionError):
    """A dropped name whose real location is outside its drop zone (through a symlinked folder, ``..``, ...)."""


def assert_inside(root: Path, path: bytes | str) -> None:
    """Refuse a path whose real location (after resolving parent symlinks) leaves ``root``."""
    real_root = os.path.realpath(os.fsencode(root))
    real_parent = os.path.realpath(os.path.dirname(os.fsencode(path)))
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise OutsideDropZone(f"{display_name(path)!r} resolves outside the drop zone")


def open_dropped_file(root: Path, relative_path: bytes):
    path = os.path.join(os.fsencode(root), relative_path)
    assert_inside(root, path)
    return open_regular_file_no_follow(path)


def member_path(manifest_relative: bytes, name: str) -> bytes:
    """The zone-relative path of a file a manifest names beside itself; raises ``OutsideDropZone`` for names
    that would leave the manifest's folder (absolute, ``..``, NUL, backslashes)."""
    parts = PurePosixPath(name).parts
    if not name or "\x00" in name or "\\" in name or PurePosixPath(name).is_absolute() or ".." in parts:
        raise OutsideDropZone(f"file name {name!r} leaves the manifest's folder")
    return os.path.join(os.path.dirname(manifest_relative), os.fsencode(name))


@dataclass(frozen=True)
class DroppedFolder:
    """A settled folder directly below a zone's root (a checkpoint drop), and its identity: name and newest
    change, so a folder is looked at again only when something in it changed."""

    name: str
    path: Path
    identity: str


def settled_folders(root: Path, settle_seconds: float, now: float | None = None) -> list[DroppedFolder]:
    """Folders directly below ``root`` none of whose entries changed for ``settle_seconds`` (symlinked folders and
    dot-folders are skipped; entries are not followed). A folder that cannot be listed (no permission) is returned
    once its own mtime has settled, so that reading it fails and is recorded; one removed while we looked is skipped."""
    now = time.time() if now is None else now
    found = []
    if not root.is_dir():
        return found
    for item in sorted(root.iterdir()):
        try:
            if item.name.startswith(".") or item.is_symlink() or not item.is_dir():
                continue
            stamps = [item.lstat().st_mtime]
            try:
                stamps += [entry.lstat().st_mtime for entry in item.iterdir()]
            except PermissionError:
                pass
        except FileNotFoundError:
            continue
        if now - max(stamps) >= settle_seconds:
            found.append(DroppedFolder(item.name, item, f"{item.name}:{max(stamps)}"))
    return found


class ManifestTooLarge(ValueError):
    """A manifest over the size or nesting limits (``MAX_MANIFEST_BYTES``, ``MAX_MANIFEST_DEPTH``)."""


def read_manifest(path: str | os.PathLike | bytes, what: str = "the manifest"):
    """A manifest's JSON, read without following links and refused (``ManifestTooLarge``) past the limits
    before it is parsed; ``ValueError`` when it is not UTF-8 JSON."""
    with open_regular_file_no_follow(path) as stream:
        data = stream.read(MAX_MANIFEST_BYTES + 1)
    return parse_manifest_bytes(data, what)


def parse_manifest_bytes(data: bytes, what: str = "the manifest"):
    try:
        return parse_bounded_json(data, what, MAX_MANIFEST_BYTES, MAX_MANIFEST_DEPTH)
    except JsonTooLarge as error:
        raise ManifestTooLarge(str(error)) from None


def error_class(error: Exception) -> str:
    """The error class recorded for a refused drop: a path that leaves its zone is ``UnsafePath`` everywhere."""
    return "UnsafePath" if isinstance(error, OutsideDropZone) else type(error).__name__


@contextlib.contextmanager
def connect_ledger(path: Path) -> Iterator[sqlite3.Connection]:
    """A ledger connection: WAL (readers never wait for the writer), autocommit (writers say ``BEGIN IMMEDIATE``
    where they batch), and a minute's patience for the write lock (the daemon's sensor and ``cosmos run``)."""
    db = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        yield db
    finally:
        db.close()
