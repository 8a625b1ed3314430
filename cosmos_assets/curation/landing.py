"""The landing zone: settled raw videos grouped into ingest batches, exactly once.

The drop-zone rules (settling, name safety, ledgers) are ``common.drop_zone``'s; here is what is particular
to landed video: content hashes, de-duplication by content, and batches.

The ledger (SQLite beside the tables) is the memory of what has been seen: file identity
(name, size, mtime) → content hash, and content hash → batch. Batches are created in one
transaction under SQLite's write lock, so two evaluators (the daemon's sensor and ``cosmos run``)
can never put the same content in two batches.
"""

from __future__ import annotations

import errno
import hashlib
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cosmos_assets.common.drop_zone import (
    DroppedFile, OutsideDropZone, connect_ledger, hash_dropped_file, open_dropped_file,
)
from cosmos_assets.common.files import display_name
from cosmos_assets.controls.user_controls import is_control_video
from cosmos_assets.curation.scenes import is_scene_manifest, manifest_ledger_hash, scene_unit_of

@dataclass(frozen=True)
class BatchMember:
    relative_path: bytes
    size: int
    content_hash: str | None  # None for entries rejected before reading (symlinks)
    note: str | None = None
    supersedes: str | None = None  # the content hash of an earlier, truncated version of this file (a stalled upload)

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


def batch_sizes(first_batch_files: int, max_files: int) -> Iterator[int]:
    """File caps of one drop's batches in order: ``first_batch_files``, then ``max_files`` for the rest.

    0 (or anything at or above ``max_files``) means every batch may hold ``max_files``. A small first
    batch puts a drop's first clips in front of the user after one short run, while the rest of the drop
    curates beside it as one full-size batch (progress and each video's clips still show per video), so a
    bulk drop costs one partition and one run more than without it. (Doubling batch sizes, 1, 2, 4, ...,
    was measured too: on 2 cores its extra runs, each starting a worker and loading models, made the whole
    demo take longer for the same first result.)
    """
    yield first_batch_files if 0 < first_batch_files < max_files else max_files
    while True:
        yield max_files


def group_members(members: list[BatchMember], max_files: int, max_bytes: int, first_batch_files: int = 0) -> list[list[BatchMember]]:
    """Split members, in the given order, into batches bounded by file count (``batch_sizes``) and bytes.

    Members refused before reading (no content hash: symlinks, paths outside the zone) cost nothing to
    process; they ride along without counting against the file cap. The files of one multi-camera scene folder
    (``curation.scenes``; consecutive in ``members``) stay in one batch, whatever the caps.
    """
    caps = batch_sizes(first_batch_files, max_files)
    unit = scene_unit_of([m.relative_path for m in members])
    groups: list[list[BatchMember]] = []
    cap = files = size = 0
    previous_unit = None
    for member in members:
        counts = member.content_hash is not None
        member_unit = unit(member.relative_path)
        same_scene, previous_unit = member_unit is not None and member_unit == previous_unit, member_unit
        if not groups or (counts and not same_scene and (files >= cap or (files and size + member.size > max_bytes))):
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
                CREATE TABLE IF NOT EXISTS read_failures (
                    relative_path BLOB PRIMARY KEY,
                    size INTEGER NOT NULL,
                    mtime_ns INTEGER NOT NULL,
                    first_failed_at REAL NOT NULL
                );
                """
            )
            if "supersedes" not in [row[1] for row in db.execute("PRAGMA table_info(batch_members)")]:
                try:  # a ledger from before stalled uploads were told apart
                    db.execute("ALTER TABLE batch_members ADD COLUMN supersedes TEXT")
                except sqlite3.OperationalError:  # another process added it meanwhile
                    pass

    def _connect(self):
        return connect_ledger(self.path)

    def known_hash(self, db: sqlite3.Connection, entry: DroppedFile) -> str | None | bool:
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
        settled: Iterable[DroppedFile],
        max_files: int,
        max_bytes: int,
        max_hash_bytes: int | None = None,
        now: float | None = None,
        first_batch_files: int = 0,
        unreadable_after_s: float = 60.0,
    ) -> list[Batch]:
        """Hash new settled files and put the new content into new batches; returns those batches.

        ``max_hash_bytes`` bounds the reading done in one call (a sensor tick has a time limit);
        what is left is picked up by the next call. New content is batched smallest file first, so the
        first batch of a drop is the quickest to curate; ``first_batch_files`` (see ``batch_sizes``)
        makes that first batch small.

        A file that cannot be read is recorded as a rejected member (``UnreadableFile`` in ``raw_videos``),
        never retried unseen forever: at once when the service user may not read it (``EACCES`` / ``EPERM``),
        otherwise once it has kept failing for ``unreadable_after_s`` (the sensor: the settle time, at least 30 s). It is
        looked at again when it changes (size or modification time: fix it, then touch it or land it again).
        """
        now = time.time() if now is None else now
        fresh: list[tuple[DroppedFile, str | None, str | None]] = []
        superseded: dict[bytes, str] = {}  # path -> content hash of the earlier version this one completes
        hashed_bytes = 0
        settled = list(settled)
        scene_of = scene_unit_of([e.relative_path for e in settled])
        with self._connect() as db:
            failures = {bytes(p): (size, mtime, first) for p, size, mtime, first in
                        db.execute("SELECT relative_path, size, mtime_ns, first_failed_at FROM read_failures")}
            failed_now: list[tuple[DroppedFile, float]] = []
            for entry in settled:
                if is_control_video(entry.relative_path):
                    continue  # a control video beside its RGB video (controls.user_controls), read by clip_controls
                if self.known_hash(db, entry) is not None:
                    continue
                if entry.is_symlink:
                    fresh.append((entry, None, "symlinks are not followed"))
                    continue
                if (max_hash_bytes is not None and hashed_bytes and hashed_bytes + entry.size > max_hash_bytes
                        and scene_of(entry.relative_path) is None):  # a scene is hashed whole, in one call
                    continue
                try:
                    content_hash = hash_dropped_file(root, entry.relative_path)
                except OutsideDropZone as error:  # refuse and record it
                    fresh.append((entry, None, f"{type(error).__name__}: {error}"))
                    continue
                except FileNotFoundError:
                    continue  # gone (or replaced) since the scan: the next scan says what is there
                except OSError as error:
                    size, mtime, first = failures.get(entry.relative_path, (None, None, now))
                    first = first if (size, mtime) == (entry.size, entry.mtime_ns) else now
                    if error.errno in (errno.EACCES, errno.EPERM) or now - first >= unreadable_after_s:
                        fresh.append((entry, None, f"{type(error).__name__}: {error.strerror or error} (make it readable "
                                                   "by the service user, then touch it or land it again)"))
                    else:
                        failed_now.append((entry, first))  # maybe transient: tried again next tick, for a while
                    continue
                hashed_bytes += entry.size
                if is_scene_manifest(entry.relative_path):  # one per scene folder, even when two read the same
                    content_hash = manifest_ledger_hash(entry.relative_path, content_hash)
                fresh.append((entry, content_hash, None))
                if (earlier := self._truncated_version(db, root, entry, content_hash)) is not None:
                    superseded[entry.relative_path] = earlier

            db.execute("BEGIN IMMEDIATE")  # serialise batch creation across processes
            try:
                db.executemany("INSERT OR REPLACE INTO read_failures VALUES (?, ?, ?, ?)",
                               [(e.relative_path, e.size, e.mtime_ns, first) for e, first in failed_now])
                db.executemany("DELETE FROM read_failures WHERE relative_path = ?", [(e.relative_path,) for e, _, _ in fresh])
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
                    new_members.append(BatchMember(entry.relative_path, entry.size, content_hash, note,
                                                   superseded.get(entry.relative_path)))
                # Smallest first (then by name, so the plan is the same whatever order the scan had):
                # the first batch's run finishes soonest, and within a batch the first clips come soonest.
                # A scene folder's files stay together, at the place of its smallest file.
                scene_size: dict[bytes, int] = {}
                for m in new_members:
                    if (folder := scene_of(m.relative_path)) is not None:
                        scene_size[folder] = min(scene_size.get(folder, m.size), m.size)
                new_members.sort(key=lambda m: (scene_size.get(scene_of(m.relative_path), m.size),
                                                scene_of(m.relative_path) or m.relative_path, m.size, m.relative_path))
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
                "INSERT INTO batch_members (batch_sequence, relative_path, size, content_hash, note, supersedes) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(sequence, m.relative_path, m.size, m.content_hash, m.note, m.supersedes) for m in group],
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
            "SELECT relative_path, size, content_hash, note, supersedes FROM batch_members "
            "WHERE batch_sequence = ? ORDER BY rowid",
            (sequence,),
        ).fetchall()
        return Batch(sequence, key, tuple(BatchMember(bytes(p), s, h, n, u) for p, s, h, n, u in members))

    @staticmethod
    def _truncated_version(db, root: Path, entry: DroppedFile, content_hash: str) -> str | None:
        """The content hash of an earlier batched version of this path that is a prefix of it, or None.

        A stalled upload (the writer paused longer than the settle time) is taken half-written; when the upload
        completes, the same name settles again, larger, and its first bytes are exactly the earlier version. That
        earlier version is then superseded: recorded on the new member (``raw_videos.supersedes``) and its clips left
        out of the curated dataset. A different file landed later under the same name (not a prefix) supersedes
        nothing: both are kept."""
        rows = db.execute(
            "SELECT content_hash, size FROM batch_members WHERE relative_path = ? AND content_hash IS NOT NULL "
            "AND content_hash != ? AND size < ? ORDER BY rowid DESC", (entry.relative_path, content_hash, entry.size),
        ).fetchall()
        for earlier, size in rows:
            try:
                with open_dropped_file(root, entry.relative_path) as stream:
                    digest = hashlib.sha256()
                    left = size
                    while left > 0 and (chunk := stream.read(min(left, 1 << 20))):
                        digest.update(chunk)
                        left -= len(chunk)
            except OSError:
                return None
            if left == 0 and digest.hexdigest() == earlier:
                return earlier
        return None

    def superseded_hashes(self) -> set[str]:
        """Content hashes of landed versions that a later, completed upload of the same file supersedes."""
        with self._connect() as db:
            return {row[0] for row in db.execute("SELECT supersedes FROM batch_members WHERE supersedes IS NOT NULL")}
