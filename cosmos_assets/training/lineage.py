"""Where a checkpoint's data came from, and where a video's data went.

Backward: checkpoint → dataset version → samples → (synthetic: request, seed, generator, critic, score)
→ source clips → source videos (content hash and original file name) → ingest batches.
Forward: a raw video (content hash), clip or synthetic candidate → every training dataset and checkpoint
that used it. Everything is read from the tables and manifests the assets wrote.
"""

from __future__ import annotations


import polars as pl

from cosmos_assets.common.artefacts import TRAINING_DATASETS, ArtefactStore
from cosmos_assets.training import registry
from cosmos_assets.training.datasets import snapshot_samples


class LineageNotFound(LookupError):
    pass


class AmbiguousIdentifier(LineageNotFound):
    """A prefix that starts more than one identifier; the message lists some of them."""


# Shorter prefixes would match by accident (a single hex digit starts one identifier in sixteen).
MIN_PREFIX = 4
SHOWN_MATCHES = 5


def _checkpoints(store: ArtefactStore) -> dict[str, dict]:
    found = {}
    for key in registry.checkpoint_keys(store):
        manifest = f"{registry.checkpoint_key(key)}/{registry.MANIFEST}"
        if store.exists(manifest):
            found[key] = {**store.read_json(manifest), "mtime": store.modified(manifest)}
    return found


def _raw_videos(store: ArtefactStore) -> dict[str, dict]:
    raw = store.read_partitions("raw_videos")
    return {} if raw.is_empty() else {r["content_hash"]: r for r in raw.filter(pl.col("status") == "ok").to_dicts()}


def _candidates(store: ArtefactStore, table: str = "accepted_videos") -> dict[str, dict]:
    """Synthetic candidates as selection judged them (accepted or not), with their request, seed and scene
    (``accepted_images`` for the text-to-image rounds' candidates)."""
    accepted = store.read_partitions(table)
    return {} if accepted.is_empty() else {r["candidate_id"]: r for r in accepted.to_dicts()}


def _image_candidates(store: ArtefactStore) -> dict[str, dict]:
    return _candidates(store, "accepted_images")


SCENE_FIELDS = ("scene_id", "camera", "scene_clip_id")


def default_checkpoint(store: ArtefactStore) -> str:
    """The promoted checkpoint, else the newest one."""
    if (pointer := registry.promoted(store)) is not None:
        return pointer["checkpoint"]
    checkpoints = _checkpoints(store)
    if not checkpoints:
        raise LineageNotFound("no checkpoint yet: nothing has been trained or dropped into the checkpoint inbox")
    return max(checkpoints, key=lambda k: checkpoints[k]["mtime"])


def checkpoint_lineage(store: ArtefactStore, key: str) -> dict:
    checkpoints = _checkpoints(store)
    if key not in checkpoints:
        raise LineageNotFound(f"no checkpoint {key!r} under {store.ref(registry.CHECKPOINTS)}")
    manifest = checkpoints[key]
    version = manifest.get("dataset_version")
    samples = snapshot_samples(store, str(version))
    samples = pl.DataFrame() if samples is None else samples
    raw = _raw_videos(store)
    videos = {}
    for sample in samples.to_dicts():
        source = sample["source_video_hash"]
        if source and source not in videos:
            row = raw.get(source, {})
            videos[source] = {"content_hash": source, "original_name": row.get("landing_name") or sample["source_video_name"],
                              "ingest_batch": row.get("batch") or sample["batch"]}
    promoted = registry.promoted(store)
    return {
        "checkpoint": key,
        "promoted": bool(promoted and promoted["checkpoint"] == key),
        "base_model": manifest.get("base_model"), "kind": manifest.get("kind"), "steps": manifest.get("steps"),
        "tiny_random": manifest.get("tiny_random"), "source": manifest.get("source"),
        "dataset_version": version,
        "samples": [{k: v for k, v in s.items() if v is not None} for s in samples.to_dicts()],
        "synthetic_samples": int((samples["kind"] == "synthetic").sum()) if samples.height else 0,
        "real_samples": int((samples["kind"] == "real").sum()) if samples.height else 0,
        "source_videos": sorted(videos.values(), key=lambda v: (v["ingest_batch"] or "", v["original_name"] or "")),
        "ingest_batches": sorted({v["ingest_batch"] for v in videos.values() if v["ingest_batch"]}),
    }


def forward_lineage(store: ArtefactStore, identifier: str) -> dict:
    """Everything downstream of a raw video (content hash), a clip id or a sample / candidate id."""
    clips = store.read_partitions("video_clips")
    raw = _raw_videos(store)
    candidates = _candidates(store)
    scene: dict = {}  # the multi-camera scene a raw video, clip or candidate belongs to
    if identifier in raw:
        kind = "raw video"
        clip_ids = set(clips.filter(pl.col("source_hash") == identifier)["clip_id"]) if clips.height else set()
        scene = raw[identifier]
    elif clips.height and identifier in set(clips["clip_id"]):
        kind, clip_ids = "clip", {identifier}
        scene = clips.filter(pl.col("clip_id") == identifier).to_dicts()[0]
    elif identifier in candidates:
        kind, scene = "synthetic candidate", candidates[identifier]
        clip_ids = {scene["source_clip_id"]} if scene.get("source_clip_id") else set()
    elif identifier in (images := _image_candidates(store)):
        # A text-to-image candidate: from a prompt file (no clip) or from a curated clip's caption.
        kind, candidates = "synthetic image", images
        clip_ids = {images[identifier]["source_clip_id"]} if images[identifier].get("source_clip_id") else set()
    else:
        kind, clip_ids = "sample", set()
    datasets, checkpoints = [], []
    manifests = _checkpoints(store)
    for version in store.folders(TRAINING_DATASETS):
        samples = snapshot_samples(store, version)
        if samples is None:
            continue
        used = samples.filter(pl.col("source_clip_id").is_in(list(clip_ids)) | (pl.col("sample_id") == identifier))
        if used.height:
            datasets.append({"dataset_version": version, "samples": used["sample_id"].to_list(),
                             "kinds": sorted(set(used["kind"]))})
            checkpoints += [k for k, m in manifests.items() if m.get("dataset_version") == version]
    if kind == "sample" and not datasets:
        raise LineageNotFound(f"{identifier!r} is no checkpoint, raw video content hash, clip id or training sample")
    promoted = registry.promoted(store)
    info = raw.get(identifier, {})
    candidate = candidates.get(identifier)
    return {"id": identifier, "kind": kind, "original_name": info.get("landing_name"), "ingest_batch": info.get("batch"),
            **{field: scene.get(field) for field in SCENE_FIELDS},
            "candidate": {**{k: candidate.get(k) for k in ("round", "request_id", "seed", "condition", "source_clip_id", "accepted",
                                                            "decision", "score", "cross_view_sampson_px")},
                          **{k: candidate[k] for k in ("prompt", "model", "critic") if k in candidate}} if candidate else None,
            "clips": sorted(clip_ids), "datasets": datasets, "checkpoints": sorted(set(checkpoints)),
            "promoted_checkpoint_uses_it": bool(promoted and promoted["checkpoint"] in checkpoints)}


def known_identifiers(store: ArtefactStore) -> dict[str, str]:
    """Every identifier `lineage` answers for, with its kind: checkpoint keys, raw video content hashes, clip ids
    and training sample ids."""
    known: dict[str, str] = {key: "checkpoint" for key in _checkpoints(store)}
    known.update({content_hash: "raw video" for content_hash in _raw_videos(store) if content_hash not in known})
    clips = store.read_partitions("video_clips")
    if clips.height:
        known.update({clip_id: "clip" for clip_id in clips["clip_id"].unique().to_list() if clip_id not in known})
    known.update({candidate: "synthetic candidate" for candidate in _candidates(store) if candidate not in known})
    known.update({candidate: "synthetic image" for candidate in _image_candidates(store) if candidate not in known})
    for version in store.folders(TRAINING_DATASETS):
        samples = snapshot_samples(store, version)
        if samples is not None and samples.height:
            known.update({sample: "sample" for sample in samples["sample_id"].unique().to_list() if sample not in known})
    return known


def resolve_identifier(store: ArtefactStore, identifier: str) -> str:
    """The full identifier for ``identifier`` or a unique prefix of one (``cosmos lineage`` prints 16-character
    content hashes and 8-character ids; each can be passed back). Raises ``AmbiguousIdentifier`` for a prefix of
    several, ``LineageNotFound`` for one of none."""
    known = known_identifiers(store)
    if identifier in known:
        return identifier
    needle = identifier.strip().lower()
    matches = sorted(k for k in known if len(needle) >= MIN_PREFIX and k.lower().startswith(needle))
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(f"{known[m]} {m}" for m in matches[:SHOWN_MATCHES])
        more = f" and {len(matches) - SHOWN_MATCHES} more" if len(matches) > SHOWN_MATCHES else ""
        raise AmbiguousIdentifier(f"{identifier!r} is a prefix of {len(matches)} identifiers ({shown}{more}); "
                                  "give more characters")
    short = f" (a prefix needs at least {MIN_PREFIX} characters)" if len(needle) < MIN_PREFIX else ""
    raise LineageNotFound(f"{identifier!r} is no checkpoint, raw video content hash, clip id or training sample, "
                          f"nor the start of one{short}")


def lineage(store: ArtefactStore, identifier: str | None = None) -> dict:
    key = resolve_identifier(store, identifier) if identifier else default_checkpoint(store)
    if key in _checkpoints(store):
        return {"direction": "backward", **checkpoint_lineage(store, key)}
    return {"direction": "forward", **forward_lineage(store, key)}
