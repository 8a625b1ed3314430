"""The synthetic inbox: candidate videos dropped by an external generator, with a manifest.

An external generator writes its videos into ``$COSMOS_HOME/synthetic_inbox/`` (any folder depth) and then
a manifest, a small JSON file beside them::

    {"generator": "acme-gen 3.1",
     "candidates": [{"file": "rain_0.mp4", "request_id": "r-17", "seed": 0, "source_clip_id": "<clip id>",
                     "condition": "rain", "prompt": "...", "sha256": "<optional>"}]}

(a manifest may also be one such candidate object on its own). Each new drop (a manifest's folder and bytes
together) becomes one batch, exactly once, in a SQLite ledger (the same rules as the landing zone: a file is
taken once it has settled; the inbox is walked without following symlinks; files are opened with
``O_NOFOLLOW``; names in a manifest are data, checked to stay inside the inbox and never used to name
anything we write). The manifest's bytes are
kept in the ledger, so the batch is the manifest as it was when taken. Bad input is recorded per candidate
with an error class and message, and the rest of the batch goes on; a request's seed names one candidate, so
an entry that repeats an earlier entry's request id and seed is recorded as a ``DuplicateEntry``.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cosmos_assets.common.artefacts import ArtefactStore
from cosmos_assets.common.drop_zone import (
    MAX_MANIFEST_BYTES, DroppedFile, ManifestTooLarge, OutsideDropZone, connect_ledger, error_class, member_path,
    open_dropped_file, parse_manifest_bytes, scan_drop_zone,
)
from cosmos_assets.common.files import copy_and_hash_atomically, display_name, sha256_of_stream
from cosmos_assets.curation.probe import ProbeLimits, VideoRejected, probe_video

INBOX_PREFIX = "inbox-"
MANIFEST_SUFFIX = ".json"
# Errors that say the manifest was replaced or removed while it was read, or that the file system is busy: worth
# another look next tick. Every other error (no permission, an I/O error, a folder under a manifest's name) will
# not go away by waiting, so the manifest is recorded with it instead of being retried unseen forever.
TRANSIENT_ERRNOS = frozenset({errno.ENOENT, errno.ESTALE, errno.EAGAIN, errno.EINTR, errno.EBUSY})
REQUIRED_FIELDS = ("file", "request_id", "seed", "source_clip_id")


class ManifestInvalid(ValueError):
    """A manifest that is not a JSON object with candidates."""


@dataclass(frozen=True)
class ManifestEntry:
    index: int
    file: str | None
    request_id: str | None
    seed: int | None
    source_clip_id: str | None
    condition: str | None = None
    prompt: str | None = None
    sha256: str | None = None
    source_start_s: float = 0.0
    error_class: str | None = None  # set when the entry itself is unusable
    error_message: str | None = None


@dataclass(frozen=True)
class Manifest:
    generator: str
    entries: list[ManifestEntry]


def _entry(index: int, item) -> ManifestEntry:
    if not isinstance(item, dict):
        return ManifestEntry(index, None, None, None, None, error_class="ManifestEntryInvalid",
                             error_message=f"candidate {index} is a {type(item).__name__}, not an object")
    missing = [f for f in REQUIRED_FIELDS if item.get(f) in (None, "")]
    problems = [f"missing {', '.join(missing)}"] if missing else []
    seed = item.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        problems.append(f"seed {seed!r} is not an integer")
    texts = {f: item.get(f) for f in ("file", "request_id", "source_clip_id", "condition", "prompt", "sha256")}
    problems += [f"{f} is not a string" for f, v in texts.items() if v is not None and not isinstance(v, str)]
    start = item.get("source_start_s", 0.0)
    if isinstance(start, bool) or not isinstance(start, (int, float)) or start < 0:
        problems.append(f"source_start_s {start!r} is not a non-negative number")
        start = 0.0
    if problems:
        return ManifestEntry(index, *(str(texts[f]) if texts[f] is not None else None for f in ("file", "request_id")),
                             None, str(texts["source_clip_id"]) if texts["source_clip_id"] is not None else None,
                             error_class="ManifestEntryInvalid", error_message="; ".join(problems))
    return ManifestEntry(index, texts["file"], texts["request_id"], seed, texts["source_clip_id"], texts["condition"],
                         texts["prompt"], texts["sha256"], float(start))


def parse_manifest(data: bytes) -> Manifest:
    """The candidates of a manifest; raises ``ManifestInvalid`` when there are none to read."""
    try:
        document = parse_manifest_bytes(data)
    except ManifestTooLarge as error:  # e.g. nested deeper than the parser may go: refused before parsing
        raise ManifestInvalid(str(error)) from None
    except ValueError as error:
        raise ManifestInvalid(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ManifestInvalid(f"the manifest is a JSON {type(document).__name__}, not an object")
    items = document.get("candidates") if "candidates" in document else [document] if "file" in document else None
    if not isinstance(items, list) or not items:
        raise ManifestInvalid("no candidates: expected a `candidates` list, or one candidate object with `file`")
    generator = document.get("generator")
    return Manifest(str(generator) if generator else "external", _mark_duplicates([_entry(i, item) for i, item in enumerate(items)]))


def _mark_duplicates(entries: list[ManifestEntry]) -> list[ManifestEntry]:
    """A request's seed names one candidate: a later entry with the same request id and seed as an earlier usable
    one is recorded as a ``DuplicateEntry`` (never a second candidate), whatever file it names."""
    first: dict[tuple[str, int], int] = {}
    marked = []
    for entry in entries:
        key = (entry.request_id, entry.seed)
        if entry.error_class is None and key in first:
            entry = dataclasses.replace(entry, error_class="DuplicateEntry", error_message=(
                f"request {entry.request_id!r} seed {entry.seed} is already candidate {first[key]} of this manifest"))
        elif entry.error_class is None:
            first[key] = entry.index
        marked.append(entry)
    return marked


# --- the ledger ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxBatch:
    sequence: int
    key: str
    manifest_path: bytes
    manifest_hash: str | None
    manifest_bytes: bytes | None  # None when the manifest itself could not be read
    problem: str | None  # why the manifest could not be read ("<ErrorClass>: message")

    @property
    def manifest_name(self) -> str:
        return display_name(self.manifest_path)


class InboxLedger:
    """Which manifests were taken into which batch, in a small SQLite file (one writer transaction at a time)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS seen_manifests (
                    relative_path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL
                );
                CREATE TABLE IF NOT EXISTS batches (
                    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                    key TEXT UNIQUE NOT NULL,
                    manifest_path BLOB NOT NULL,
                    manifest_hash TEXT,
                    manifest_bytes BLOB,
                    problem TEXT,
                    created_at REAL NOT NULL,
                    drop_digest TEXT UNIQUE
                );
                """
            )
            self._migrate(db)

    @staticmethod
    def _migrate(db) -> None:
        """A ledger from before drops were told apart by their folder (``manifest_hash`` was unique, so identical
        manifest bytes in a second folder were never taken): rebuilt once with each batch's drop digest."""
        if "drop_digest" in [row[1] for row in db.execute("PRAGMA table_info(batches)")]:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            if "drop_digest" in [row[1] for row in db.execute("PRAGMA table_info(batches)")]:
                db.execute("COMMIT")  # another process migrated it while we waited for the lock
                return
            db.execute("ALTER TABLE batches RENAME TO batches_before_drop_digest")
            db.execute("""CREATE TABLE batches (
                sequence INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE NOT NULL, manifest_path BLOB NOT NULL,
                manifest_hash TEXT, manifest_bytes BLOB, problem TEXT, created_at REAL NOT NULL, drop_digest TEXT UNIQUE)""")
            for row in db.execute("SELECT sequence, key, manifest_path, manifest_hash, manifest_bytes, problem, created_at "
                                  "FROM batches_before_drop_digest ORDER BY sequence").fetchall():
                path, data = bytes(row[2]), row[4]
                digest = drop_digest(path, bytes(data)) if row[3] is not None and data is not None else None
                db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*row, digest))
            db.execute("DROP TABLE batches_before_drop_digest")
            # Manifests seen but never a batch were skipped as "the same bytes": looked at again, a second folder's
            # drop is taken now, a copy beside its original is still one batch.
            db.execute("DELETE FROM seen_manifests WHERE relative_path NOT IN (SELECT manifest_path FROM batches)")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _connect(self):
        return connect_ledger(self.path)

    def _seen(self, db, entry: DroppedFile) -> bool:
        row = db.execute("SELECT size, mtime_ns FROM seen_manifests WHERE relative_path = ?", (entry.relative_path,)).fetchone()
        return bool(row) and row[0] == entry.size and row[1] == entry.mtime_ns

    def plan_batches(self, root: Path, settle_seconds: float, missing_grace_seconds: float,
                     now: float | None = None) -> list[InboxBatch]:
        """Take every new, settled manifest whose files are there (or have been missing for longer than the grace
        period) into a batch of its own; returns the new batches."""
        now = time.time() if now is None else now
        scan = scan_drop_zone(root, settle_seconds, now)
        settled = {f.relative_path: f for f in scan.settled}
        unsettled = {f.relative_path for f in scan.unsettled}
        taken: list[tuple[DroppedFile, str | None, bytes | None, str | None]] = []
        with self._connect() as db:
            for entry in scan.settled:
                if not entry.relative_path.lower().endswith(MANIFEST_SUFFIX.encode()) or self._seen(db, entry):
                    continue
                if entry.is_symlink:
                    taken.append((entry, None, None, "UnsafePath: symlinks are not followed"))
                    continue
                try:
                    data = _read_manifest(root, entry)
                    problem = _manifest_problem(data)
                    if problem is None and not self._files_ready(entry, data, settled, unsettled, now, missing_grace_seconds):
                        continue
                except (OutsideDropZone, ManifestTooLarge) as error:
                    taken.append((entry, None, None, f"{error_class(error)}: {error}"))
                    continue
                except OSError as error:
                    if error.errno not in TRANSIENT_ERRNOS:  # waiting will not make it readable: recorded
                        taken.append((entry, None, None, f"UnreadableFile: {error.strerror or error}"))
                    continue  # else transient (replaced or removed while we looked): the next tick decides
                except Exception as error:  # noqa: BLE001 - one bad manifest never stalls the inbox: recorded, the rest goes on
                    taken.append((entry, None, None, f"{error_class(error)}: {str(error)[:300]}"))
                    continue
                taken.append((entry, hashlib.sha256(data).hexdigest(), data, problem))
            db.execute("BEGIN IMMEDIATE")  # one evaluator at a time creates batches
            try:
                batches = []
                for entry, digest, data, problem in taken:
                    db.execute("INSERT OR REPLACE INTO seen_manifests VALUES (?, ?, ?)",
                               (entry.relative_path, entry.size, entry.mtime_ns))
                    drop = drop_digest(entry.relative_path, data) if digest is not None else None
                    if drop is not None and db.execute("SELECT 1 FROM batches WHERE drop_digest = ?", (drop,)).fetchone():
                        continue  # the same manifest again in the same folder (touched, or copied beside itself): one batch
                    sequence = db.execute("SELECT COALESCE(MAX(sequence), 0) + 1 FROM batches").fetchone()[0]
                    key = f"{INBOX_PREFIX}{sequence:06d}-{(drop or hashlib.sha256(entry.relative_path).hexdigest())[:10]}"
                    db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (sequence, key, entry.relative_path, digest, data, problem, now, drop))
                    batches.append(InboxBatch(sequence, key, entry.relative_path, digest, data, problem))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return batches

    @staticmethod
    def _files_ready(entry: DroppedFile, data: bytes, settled: dict, unsettled: set, now: float, grace: float) -> bool:
        try:
            manifest = parse_manifest(data)
        except ManifestInvalid:
            return True  # recorded as an invalid manifest straight away: waiting will not fix it
        waited = now - entry.mtime_ns / 1e9
        for item in manifest.entries:
            if item.file is None or item.error_class:
                continue
            try:
                path = member_path(entry.relative_path, item.file)
            except OutsideDropZone:
                continue  # refused when ingested
            if path in unsettled:
                return False  # still being written
            if path not in settled and waited < grace:
                return False  # not there yet: the generator may write the manifest first
        return True

    def batches_after(self, sequence: int) -> list[InboxBatch]:
        with self._connect() as db:
            rows = db.execute("SELECT sequence, key, manifest_path, manifest_hash, manifest_bytes, problem FROM batches "
                              "WHERE sequence > ? ORDER BY sequence", (sequence,)).fetchall()
        return [InboxBatch(s, k, bytes(p), h, bytes(d) if d is not None else None, e) for s, k, p, h, d, e in rows]

    def batch(self, key: str) -> InboxBatch:
        with self._connect() as db:
            row = db.execute("SELECT sequence, key, manifest_path, manifest_hash, manifest_bytes, problem FROM batches "
                             "WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"no inbox batch {key!r} in {self.path}")
        s, k, p, h, d, e = row
        return InboxBatch(s, k, bytes(p), h, bytes(d) if d is not None else None, e)


def drop_digest(manifest_path: bytes, data: bytes) -> str:
    """What identifies a drop: the manifest's folder and its bytes together. The names in a manifest are relative to
    its folder, so identical manifest bytes in two folders name different videos (two drops), while the same bytes
    touched again, or copied beside themselves, in one folder name the same files (one drop)."""
    folder = os.path.dirname(manifest_path)
    return hashlib.sha256(b"inbox-drop\0" + folder + b"\0" + data).hexdigest()


def _manifest_problem(data: bytes) -> str | None:
    """Why a manifest cannot be read, recorded as its batch's problem when it is taken, so its error class is in the
    ledger from the first tick: over the bounds (``ManifestTooLarge``, e.g. nested deeper than ``MAX_MANIFEST_DEPTH``),
    or whatever else its parse raised. None for a readable one, and for one that is not a manifest (``ValueError``:
    the run records it as ``ManifestInvalid`` with the parser's message)."""
    try:
        parse_manifest_bytes(data)
        parse_manifest(data)
    except ManifestTooLarge as error:
        return f"ManifestTooLarge: {error}"
    except ValueError:
        return None
    except Exception as error:  # noqa: BLE001 - never raised out of a sensor tick
        return f"{error_class(error)}: {str(error)[:300]}"
    return None


def _read_manifest(root: Path, entry: DroppedFile) -> bytes:
    if entry.size > MAX_MANIFEST_BYTES:
        raise ManifestTooLarge(f"{entry.size} bytes; a manifest may have at most {MAX_MANIFEST_BYTES}")
    with open_dropped_file(root, entry.relative_path) as stream:
        data = stream.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestTooLarge(f"more than {MAX_MANIFEST_BYTES} bytes")
    return data


# --- ingesting one candidate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestedFile:
    sha256: str
    path: str  # the video's reference on the artefact store
    probe: dict


def ingest_file(root: Path, relative_path: bytes, store: ArtefactStore, key_for, expected_sha256: str | None = None,
                limits: ProbeLimits = ProbeLimits()) -> IngestedFile:
    """Copy one dropped video into the artefact store under ``key_for(its content hash)`` and probe it.

    Raises ``VideoRejected`` (with the landing zone's error classes, plus ``UnsafePath``, ``MissingFile``,
    ``ChecksumMismatch`` and ``FileChangedWhileReading``) for anything that cannot be used; such a file is
    probed before it is published, so the store keeps usable videos only."""
    try:
        stream = open_dropped_file(root, relative_path)  # O_NOFOLLOW, and refused outside the inbox
    except OutsideDropZone as error:
        raise VideoRejected("UnsafePath", str(error)) from None
    except FileNotFoundError:
        raise VideoRejected("MissingFile", "the manifest names a file that is not in the inbox") from None
    except OSError as error:
        if os.path.islink(os.path.join(os.fsencode(root), relative_path)):
            raise VideoRejected("UnsafePath", "symlinks are not followed") from None
        raise VideoRejected("UnreadableFile", f"{error.__class__.__name__}: {error.strerror or error}") from None
    with stream:
        size = os.fstat(stream.fileno()).st_size
        if size > limits.max_file_bytes:
            raise VideoRejected("FileTooLarge", f"{size} bytes is over the configured limit of {limits.max_file_bytes}")
        digest, _ = sha256_of_stream(stream)
        if expected_sha256 and digest != expected_sha256.lower():
            raise VideoRejected("ChecksumMismatch", f"the manifest says sha256 {expected_sha256}, the file has {digest}")
        key = key_for(digest)
        if store.exists(key):
            return IngestedFile(digest, store.ref(key), probe_video(store.local_path(store.ref(key)), limits).as_row())
        stream.seek(0)
        # Leaving the block by raising publishes nothing.
        with store.writing(key) as tmp:
            copied, _ = copy_and_hash_atomically(stream, tmp)
            if copied != digest:  # written to while we read it: never keep a file that is not what was hashed
                raise VideoRejected("FileChangedWhileReading", "the file changed while it was being copied")
            probe = probe_video(tmp, limits)
    return IngestedFile(digest, store.ref(key), probe.as_row())
