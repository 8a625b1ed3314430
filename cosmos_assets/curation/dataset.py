"""The curated dataset: a content-derived version, a deterministic split, a dataset card, and exports
in the layout Cosmos Predict2 training reads and as webdataset tar shards.

A version id is a digest of the member clip ids and the curation recipe (never where the store is), so
re-materializing with nothing changed, under any ``COSMOS_HOME`` or bucket, names the same version — and finds it already written, writing nothing. The export is
built in a local folder and published to the artefact store with its dataset card last.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cosmos_assets.common.artefacts import CLIPS, DATASETS, ArtefactStore
from cosmos_assets.common.files import atomic_path


def dataset_members(deduplicated: pl.DataFrame, superseded_sources: set[str], key: str = "clip_id") -> pl.DataFrame:
    """The clips a dataset version is made of: the kept ones, except those cut from a superseded source (a stalled
    upload's truncated version, replaced by the completed file under the same name). A clip dropped only as the
    duplicate of such a clip takes its place (the completed file's copy of the same shot); sorted by ``key``."""
    if not superseded_sources or deduplicated.is_empty():
        return deduplicated.filter(pl.col("kept")).sort(key)
    gone = pl.col("source_hash").is_in(list(superseded_sources))
    ousted = set(deduplicated.filter(pl.col("kept") & gone)[key])
    heirs = ~pl.col("kept") & pl.col("duplicate_of").is_in(list(ousted)) & ~gone
    return deduplicated.filter((pl.col("kept") & ~gone) | heirs).sort(key)


def dataset_version(member_ids: list[str], config: dict) -> str:
    digest = hashlib.sha256()
    for clip_id in sorted(member_ids):
        digest.update(clip_id.encode() + b"\n")
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    return "ds-" + digest.hexdigest()[:16]


def dataset_recipe(store: ArtefactStore, members: pl.DataFrame, export_config: dict) -> dict:
    """What a version is made from besides its member ids: the export settings, the clip files as store keys
    (the key names the clip id and the split/transcode recipe that cut it), the captioners and the video
    embedder. Keys, never references: where ``COSMOS_HOME`` or the bucket is must not change a version."""
    return {"export": export_config, "clip_files": sorted(_clip_file_key(store, path) for path in members["path"].to_list()),
            "captioners": sorted(set(members["prompt_id"].drop_nulls())), "video_model": sorted(set(members["video_model"]))}


def _clip_file_key(store: ArtefactStore, reference: str) -> str:
    try:
        return store.key_of(reference)
    except ValueError:  # recorded under another home or bucket (a copied or moved COSMOS_HOME): the key it ends with
        start = reference.rfind(f"/{CLIPS}/")
        return reference[start + 1:] if start >= 0 else reference


def split_of(clip_id: str, validation_fraction: float, seed: str = "cosmos-split-v1") -> str:
    """Train or validation from a hash of the clip id: stable as the dataset grows."""
    bucket = int.from_bytes(hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()[:8], "big") / 2**64
    return "validation" if bucket < validation_fraction else "train"


CARD = "dataset_card.json"  # written last: a version whose card exists is complete


@dataclass(frozen=True)
class ExportResult:
    root: str  # the export's reference on the store (a local path, or a URL)
    created: bool  # False when this version was already on the store


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # the same bytes, no second copy on one filesystem
    except OSError:
        shutil.copy2(source, target)


def export_dataset(store: ArtefactStore, version: str, members: pl.DataFrame, card: dict, shard_max_clips: int = 1000) -> ExportResult:
    """Write ``artefacts/datasets/<version>/``: ``videos/*.mp4`` + ``metas/*.txt`` per split (the Predict2
    layout), ``shards/<split>-NNNNNN.tar`` (webdataset: ``<key>.mp4``, ``<key>.txt``, ``<key>.json``),
    ``members.parquet`` and ``dataset_card.{json,md}``. A version exported before is not written again;
    one left without its card by a crash is written again whole."""
    key = f"{DATASETS}/{version}"
    if store.exists(f"{key}/{CARD}"):
        return ExportResult(store.ref(key), created=False)
    with store.folder(key, marker=CARD) as staging:
        for split, rows in members.sort("clip_id").group_by("split", maintain_order=True):
            split_name = split[0]
            videos, metas = staging / split_name / "videos", staging / split_name / "metas"
            videos.mkdir(parents=True)
            metas.mkdir(parents=True)
            records = [{**r, "local_path": store.local_path(r["path"])} for r in rows.to_dicts()]
            for record in records:
                _link_or_copy(record["local_path"], videos / f"{record['clip_id']}.mp4")
                (metas / f"{record['clip_id']}.txt").write_text(record["caption"] or "")
            _write_shards(staging / "shards", split_name, records, shard_max_clips)
        members.write_parquet(staging / "members.parquet")
        (staging / "dataset_card.md").write_text(card_markdown(card))
        (staging / CARD).write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n")
    return ExportResult(store.ref(key), created=True)


def _write_shards(folder: Path, split: str, records: list[dict], shard_max_clips: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, len(records), shard_max_clips)):
        with atomic_path(folder / f"{split}-{number:06d}.tar") as temporary, tarfile.open(temporary, "w") as tar:
            for record in records[start:start + shard_max_clips]:
                key = record["clip_id"]
                tar.add(record["local_path"], arcname=f"{key}.mp4")
                meta = {k: v for k, v in record.items() if k not in ("path", "thumbnail_path", "local_path")}
                for suffix, payload in (("txt", (record["caption"] or "").encode()),
                                        ("json", json.dumps(meta, sort_keys=True, default=str).encode())):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(payload)
                    info.mtime = 0  # identical members ⇒ identical shards
                    tar.addfile(info, io.BytesIO(payload))


def card_markdown(card: dict) -> str:
    lines = [f"# Curated dataset {card['version']}", ""]
    lines += [f"- **{key.replace('_', ' ')}**: {value}" for key, value in card.items() if not isinstance(value, dict)]
    for key, value in card.items():
        if isinstance(value, dict):
            lines += ["", f"## {key.replace('_', ' ')}", ""] + [f"- {k}: {v}" for k, v in value.items()]
    return "\n".join(lines) + "\n"
