"""The landing zone: finding settled files and grouping them into ingest batches, exactly once.

File names in the landing zone are data, never paths we trust. We walk the zone without following
symlinks, open files with ``O_NOFOLLOW``, keep names as raw bytes, and name everything we write
after content hashes, so no name (``..``, absolute, non-UTF-8, colliding after sanitising) can
make us read or write outside the project's folders.

The ledger (SQLite beside the tables) is the memory of what has been seen: file identity
(name, size, mtime) → content hash, and content hash → batch. Batches are created in one
transaction under SQLite's write lock, so two evaluators (the daemon's sensor and ``cosmos run``)
can never put the same content in two batches.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cosmos_assets.common.files import display_name, open_regular_file_no_follow, sha256_of_stream

# Names that upload tools use while a transfer is still running; never ingested.
IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".filepart", "~")


@dataclass(frozen=True)
class LandedFile:
    relative_path: bytes  # raw bytes of the path below the landing root
    size: int
    mtime_ns: int
    is_symlink: bool = False

    @property
    def name(self) -> str:
        return display_name(self.relative_path)


@dataclass(frozen=True)
class ScanResult:
    settled: list[LandedFile]
    unsettled: list[LandedFile]


@dataclass(frozen=True)
class BatchMember:
    relative_path: bytes
    size: int
    content_hash: str | None  # None for entries rejected before reading (symlinks)
    note: str | None = None

    @property
    def name(self) -> str:
        return display_name(self.relative_path)


@dataclass(frozen=True)
class Batch:
    sequence: int
    key: str
    members: tuple[BatchMember, ...]

    @property
    def total_bytes(self) -> int:
        return sum(m.size for m in self.members)


def _ignored(name: bytes) -> bool:
    return name.startswith(b".") or name.lower().endswith(
        tuple(s.encode() for s in IN_PROGRESS_SUFFIXES)
    )


def scan_landing_zone(root: Path, settle_seconds: float, now: float | None = None) -> ScanResult:
    """List files below ``root`` (any depth) and split them into settled and still-changing.

    A file is settled once its size and content have not changed for ``settle_seconds``: every
    write and truncation moves mtime, so an upload in progress always looks recent. (A file renamed
    into place keeps its old mtime, and that is right: a rename is atomic, the file is complete.)
    Symlinks are reported (to be recorded as rejected) but never followed.
    """
    now = time.time() if now is None else now
    root_bytes = os.fsencode(root)
    settled: list[LandedFile] = []
    unsettled: list[LandedFile] = []
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
                settled.append(LandedFile(relative, 0, info.st_mtime_ns, is_symlink=True))
                continue
            if not stat.S_ISREG(info.st_mode):
                continue  # sockets, fifos, devices: nothing to ingest
            entry = LandedFile(relative, info.st_size, info.st_mtime_ns)
            (settled if now - info.st_mtime >= settle_seconds else unsettled).append(entry)
    return ScanResult(settled, unsettled)


def hash_landed_file(root: Path, relative_path: bytes) -> str:
    path = os.path.join(os.fsencode(root), relative_path)
    assert_inside(root, path)
    with open_regular_file_no_follow(path) as stream:
        return sha256_of_stream(stream)[0]


class OutsideLandingZone(PermissionError):
    """A landed name whose real location is outside the landing zone (through a symlinked folder)."""


def assert_inside(root: Path, path: bytes | str) -> None:
    """Refuse a path whose real location (after resolving parent symlinks) leaves ``root``."""
    real_root = os.path.realpath(os.fsencode(root))
    real_parent = os.path.realpath(os.path.dirname(os.fsencode(path)))
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise OutsideLandingZone(f"{display_name(path)!r} resolves outside the landing zone")


def open_landed_file(root: Path, relative_path: bytes):
    path = os.path.join(os.fsencode(root), relative_path)
    assert_inside(root, path)
    return open_regular_file_no_follow(path)


def batch_sizes(first_batch_files: int, max_files: int) -> Iterator[int]:
    """File caps of one drop's batches in order: ``first_batch_files``, then doubling up to ``max_files``.

    0 (or anything at or above ``max_files``) means every batch may hold ``max_files``. A small first
    batch puts a drop's first clips in front of the user after one short run, while doubling keeps a
    bulk drop to a few partitions more than fixed-size batches would make (about log2 of
    ``max_files``): 1, 2, 4, ... 32, then 50 at a time for the default cap.
    """
    cap = first_batch_files if 0 < first_batch_files < max_files else max_files
    while True:
        yield cap
        cap = min(cap * 2, max_files)


def group_members(members: list[BatchMember], max_files: int, max_bytes: int, first_batch_files: int = 0) -> list[list[BatchMember]]:
    """Split members, in the given order, into batches bounded by file count (``batch_sizes``) and bytes.

    Members refused before reading (no content hash: symlinks, paths outside the zone) cost nothing to
    process; they ride along without counting against the file cap.
    """
    caps = batch_sizes(first_batch_files, max_files)
    groups: list[list[BatchMember]] = []
    cap = files = size = 0
    for member in members:
        counts = member.content_hash is not None
        if not groups or (counts and (files >= cap or (files and size + member.size > max_bytes))):
            groups.append([])
            cap, files, size = next(caps), 0, 0
        groups[-1].append(member)
        files += counts
        size += member.size
    return groups


class LandingLedger:
    """What the landing-zone sensor has seen and batched, in a small SQLite file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS seen_files (
                    relative_path BLOB PRIMARY KEY,
                    size INTEGER NOT NULL,
                    mtime_ns INTEGER NOT NULL,
                    content_hash TEXT
                );
                CREATE TABLE IF NOT EXISTS batches (
                    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                    key TEXT UNIQUE NOT NULL,
                    created_at REAL NOT NULL
                );
                CREATE TABLE IF NOT EXISTS batch_members (
                    batch_sequence INTEGER NOT NULL REFERENCES batches(sequence),
                    relative_path BLOB NOT NULL,
                    size INTEGER NOT NULL,
                    content_hash TEXT UNIQUE,
                    note TEXT
                );
                """
            )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def known_hash(self, db: sqlite3.Connection, entry: LandedFile) -> str | None | bool:
        row = db.execute(
            "SELECT size, mtime_ns, content_hash FROM seen_files WHERE relative_path = ?",
            (entry.relative_path,),
        ).fetchone()
        if row and row[0] == entry.size and row[1] == entry.mtime_ns:
            return row[2] if row[2] is not None else True
        return None

    def plan_batches(
        self,
        root: Path,
        settled: Iterable[LandedFile],
        max_files: int,
        max_bytes: int,
        max_hash_bytes: int | None = None,
        now: float | None = None,
        first_batch_files: int = 0,
    ) -> list[Batch]:
        """Hash new settled files and put the new content into new batches; returns those batches.

        ``max_hash_bytes`` bounds the reading done in one call (a sensor tick has a time limit);
        what is left is picked up by the next call. New content is batched smallest file first, so the
        first batch of a drop is the quickest to curate; ``first_batch_files`` (see ``batch_sizes``)
        makes that first batch small and the following ones grow.
        """
        now = time.time() if now is None else now
        fresh: list[tuple[LandedFile, str | None, str | None]] = []
        hashed_bytes = 0
        with self._connect() as db:
            for entry in settled:
                if self.known_hash(db, entry) is not None:
                    continue
                if entry.is_symlink:
                    fresh.append((entry, None, "symlinks are not followed"))
                    continue
                if max_hash_bytes is not None and hashed_bytes and hashed_bytes + entry.size > max_hash_bytes:
                    continue
                try:
                    content_hash = hash_landed_file(root, entry.relative_path)
                except OutsideLandingZone as error:  # refuse and record it
                    fresh.append((entry, None, f"{type(error).__name__}: {error}"))
                    continue
                except OSError:
                    continue  # maybe transient (permissions being fixed, file replaced): try next tick
                hashed_bytes += entry.size
                fresh.append((entry, content_hash, None))

            db.execute("BEGIN IMMEDIATE")  # serialise batch creation across processes
            try:
                batched_hashes = {
                    row[0]
                    for row in db.execute("SELECT content_hash FROM batch_members WHERE content_hash IS NOT NULL")
                } if fresh else set()
                new_members: list[BatchMember] = []
                for entry, content_hash, note in fresh:
                    db.execute(
                        "INSERT OR REPLACE INTO seen_files VALUES (?, ?, ?, ?)",
                        (entry.relative_path, entry.size, entry.mtime_ns, content_hash),
                    )
                    if content_hash is not None and content_hash in batched_hashes:
                        continue  # same bytes under another name, or seen before: ingested once
                    if content_hash is not None:
                        batched_hashes.add(content_hash)
                    new_members.append(BatchMember(entry.relative_path, entry.size, content_hash, note))
                # Smallest first (then by name, so the plan is the same whatever order the scan had):
                # the first batch's run finishes soonest, and within a batch the first clips come soonest.
                new_members.sort(key=lambda m: (m.size, m.relative_path))
                batches = self._insert_batches(db, new_members, max_files, max_bytes, now, first_batch_files)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return batches

    def _insert_batches(self, db, members: list[BatchMember], max_files: int, max_bytes: int, now: float,
                        first_batch_files: int = 0):
        groups = group_members(members, max_files, max_bytes, first_batch_files)
        batches = []
        for group in groups:
            digest = hashlib.sha256(
                "\n".join(m.content_hash or m.relative_path.hex() for m in group).encode()
            ).hexdigest()[:10]
            sequence = db.execute(
                "SELECT COALESCE(MAX(sequence), 0) + 1 FROM batches"
            ).fetchone()[0]
            key = f"batch-{sequence:06d}-{digest}"
            db.execute("INSERT INTO batches VALUES (?, ?, ?)", (sequence, key, now))
            db.executemany(
                "INSERT INTO batch_members VALUES (?, ?, ?, ?, ?)",
                [(sequence, m.relative_path, m.size, m.content_hash, m.note) for m in group],
            )
            batches.append(Batch(sequence, key, tuple(group)))
        return batches

    def batches_after(self, sequence: int) -> list[Batch]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT sequence, key FROM batches WHERE sequence > ? ORDER BY sequence", (sequence,)
            ).fetchall()
            return [self._batch(db, seq, key) for seq, key in rows]

    def batch(self, key: str) -> Batch:
        with self._connect() as db:
            row = db.execute("SELECT sequence, key FROM batches WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(f"no ingest batch {key!r} in {self.path}")
            return self._batch(db, *row)

    def _batch(self, db, sequence: int, key: str) -> Batch:
        members = db.execute(
            "SELECT relative_path, size, content_hash, note FROM batch_members "
            "WHERE batch_sequence = ? ORDER BY rowid",
            (sequence,),
        ).fetchall()
        return Batch(sequence, key, tuple(BatchMember(bytes(p), s, h, n) for p, s, h, n in members))
