"""Curation, second half: clip_captions and clip_embeddings per ingest batch, then over the whole
collection deduplicated_clips and the versioned curated_dataset."""


import functools
import io
import json
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import numpy as np
import polars as pl

from cosmos_assets.common.artefacts import ARTEFACTS, table_key
from cosmos_assets.common.files import sha256_of_file
from cosmos_assets.common.pictures import contact_sheet, encode_jpeg, markdown_image, markdown_table, thumbnail_image
from cosmos_assets.common.pod_classes import pod_class
from cosmos_assets.curation import captions as captioning
from cosmos_assets.curation import scenes
from cosmos_assets.curation.assets import GROUP, filtered_clips, ingest_batches
from cosmos_assets.curation.dataset import (
    card_markdown, dataset_members, dataset_recipe, dataset_version, export_dataset, split_of,
)
from cosmos_assets.curation.dedup import DedupConfig, exact_duplicates, semantic_dedup
from cosmos_assets.curation.clip_frames import clip_embedding_inputs, clip_frame_set
from cosmos_assets.curation.frame_hashes import MAX_HAMMING, MIN_MATCHED_SHARE, ClipHashes, near_exact_dedup
from cosmos_assets.curation.parallel import clip_work_pool
from cosmos_assets.curation.vector_store import COLUMNS, KEY, TEXT_VECTOR, VIDEO_VECTOR, ClipVectorStore, table_name
from cosmos_assets.models.frames import pick_samples
from pydantic import Field
from resources import CosmosStorage, EmbedderResource, VisionLanguageResource
from resources.config import config_from
from cosmos_assets.settings import device_pool_limits

CLIP_CAPTIONS = {
    "clip_id": pl.String, "batch": pl.String, "window_index": pl.Int64, "window_start_s": pl.Float64,
    "window_end_s": pl.Float64, "frames": pl.Int64, "captioner": pl.String, "model": pl.String,
    "model_version": pl.String, "prompt_version": pl.String, "prompt_id": pl.String, "caption": pl.String,
    "status": pl.String, "tags": pl.String, "tiny_random": pl.Boolean,
}

EMBEDDING_FRAMES = 8  # frames per clip for the video embedding, spread over the clip

# clip_embeddings' table: the LanceDB row of each clip (vector_store.COLUMNS and both vectors) and its table name.
_POLARS_TYPES = {"string": pl.String, "int64": pl.Int64, "double": pl.Float64, "bool": pl.Boolean}
CLIP_EMBEDDINGS = {name: _POLARS_TYPES[str(kind)] for name, kind in COLUMNS.items()} | {
    VIDEO_VECTOR: pl.List(pl.Float32), TEXT_VECTOR: pl.List(pl.Float32), "lancedb_table": pl.String,
    # Perceptual frame hashes (frame_hashes.ClipHashes.encode), read by deduplicated_clips' near-exact stage;
    # not a LanceDB column (the store's schema takes only COLUMNS and the vectors).
    "frame_hashes": pl.String}


def _table(rows: list[dict], schema: dict) -> pl.DataFrame:
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)


def vector_store(storage: CosmosStorage) -> ClipVectorStore:
    """The clip embeddings, on the same store as everything else."""
    store = storage.store
    return ClipVectorStore(store.lancedb_uri, storage_options=store.lancedb_options)


def _batch_sequence(batch: str) -> int:
    return int(batch.split("-")[1])  # batch-NNNNNN-<digest>: ingest order


class CaptionConfig(dg.Config):
    """Who captions the kept clips, with which prompt, over which windows."""

    captioner: str = Field(
        default="auto", description="vlm: the `vlm` resource; signals: tags and quality signals, no VLM; auto: signals "
                                    "when the configured VLM is a tiny random one, else vlm.")
    prompt_version: str = Field(
        default=captioning.DEFAULT_PROMPT_VERSION,
        description="Name of the prompt; a new version captions every clip again, beside the old captions.")
    prompt: str = Field(default=captioning.DEFAULT_PROMPT, description="The captioning prompt the VLM is given.")
    window_frames: int = Field(
        default=captioning.WINDOW_FRAMES, description="Source frames per caption window; longer clips get several windows.")
    sample_fps: float = Field(default=captioning.SAMPLE_FPS,
                              description="Frames per second sampled from each window for the VLM.")
    batch_size: int = Field(default=4, description="Caption windows per VLM call, of one clip or several.")


@dg.asset(partitions_def=ingest_batches, group_name=GROUP, pool="gpu", kinds={"pytorch", "parquet"}, owners=["team:curation"],
          code_version="captions-2", tags=pod_class("gpu-reason-7b"))  # 2: frames from the clip's proxy, one decode
def clip_captions(
    context: dg.AssetExecutionContext, config: CaptionConfig, vlm: VisionLanguageResource, embedders: EmbedderResource,
    filtered_clips: pl.DataFrame, clip_scores: pl.DataFrame, storage: CosmosStorage,
) -> dg.Output[pl.DataFrame]:
    """Captions of every kept clip over windows of up to 256 source frames sampled at 2 fps, keyed by
    captioner and prompt version. A new prompt version adds captions beside the old ones; clips already
    captioned with this captioner and prompt are not captioned again."""
    use_vlm = config.captioner == "vlm" or (config.captioner == "auto" and not vlm.model.startswith("tiny:"))
    prompt_id = captioning.prompt_id(config.prompt_version, config.prompt)
    if use_vlm:
        model = vlm.get()
        identity = model.identity
        captioner = f"vlm:{identity['model']}"
    else:
        model = embedders.video_signals()
        identity = {"model": model.name, "model_version": model.version, "tiny_random": False}
        captioner = f"signals:{model.name}+motion"
    store = storage.store
    previous = store.read_table("clip_captions", context.partition_key)
    done = set()
    kept_rows = []
    if previous is not None:
        current = previous.filter((pl.col("captioner") == captioner) & (pl.col("prompt_id") == prompt_id)
                                  & (pl.col("model_version") == identity["model_version"]))
        done = set(current["clip_id"])
        kept_rows = previous.to_dicts()  # older prompt versions and other captioners stay readable
    scores = {r["clip_id"]: r for r in clip_scores.to_dicts()}
    clips = [c for c in filtered_clips.filter(pl.col("kept")).to_dicts() if c["clip_id"] not in done]
    new_rows = []
    waiting = []  # (clip, its windows, their frames) not captioned yet

    def caption_waiting() -> None:
        """Caption the waiting clips' windows: a VLM gets windows of several clips per call (a clip's one or two
        windows alone leave its batches mostly empty; bench/GPU_RESULTS.md measured 3.9x)."""
        if use_vlm:
            every = [(f.frames, f.fps) for _, _, frames in waiting for f in frames]
            texts = iter(captioning.vlm_captions(model, every, config.prompt, vlm.caption.settings(), config.batch_size))
        for clip, windows, window_frames in waiting:
            if use_vlm:
                clip_texts, tags = [next(texts) for _ in windows], [None] * len(windows)
            else:
                embedding = model.embed_videos([f.frames for f in window_frames])
                tags = [json.dumps(t) for t in embedding.tags]
                clip_texts = [captioning.signal_caption(t, scores.get(clip["clip_id"], {}), w.end_s - w.start_s)
                              for t, w in zip(embedding.tags, windows)]
            for window, frames, text, tag in zip(windows, window_frames, clip_texts, tags):
                status, caption = captioning.caption_status(text)
                new_rows.append({
                    "clip_id": clip["clip_id"], "batch": clip["batch"], "window_index": window.index,
                    "window_start_s": window.start_s, "window_end_s": window.end_s, "frames": len(frames),
                    "captioner": captioner, "model": identity["model"], "model_version": identity["model_version"],
                    "prompt_version": config.prompt_version if use_vlm else "signals", "prompt_id": prompt_id,
                    "caption": caption, "status": status, "tags": tag, "tiny_random": identity["tiny_random"],
                })
        context.log.info(f"[{len({r['clip_id'] for r in new_rows})}/{len(clips)}] captioned "
                         f"{', '.join(clip['clip_id'][:8] for clip, _, _ in waiting)} ({sum(len(w) for _, w, _ in waiting)} window(s))")
        waiting.clear()

    for clip in clips:
        windows = captioning.caption_windows(clip["duration_s"], clip["fps"], config.window_frames)
        frame_set = clip_frame_set(store, clip)  # one decode of the clip's proxy for all its windows
        waiting.append((clip, windows, [pick_samples(frame_set, config.sample_fps, config.window_frames, w.start_s,
                                                     w.end_s + 1e-3) for w in windows]))
        if not use_vlm or sum(len(w) for _, w, _ in waiting) >= config.batch_size:
            caption_waiting()
    if waiting:
        caption_waiting()
    table = _table(kept_rows + new_rows, CLIP_CAPTIONS)
    statuses = pl.DataFrame(new_rows, schema=CLIP_CAPTIONS)["status"].value_counts() if new_rows else None
    examples = [{"clip_id": r["clip_id"], "status": r["status"], "caption": r["caption"][:160]} for r in new_rows[:8]]
    return dg.Output(table, metadata={
        "captioned": len(clips),
        "reused": len(done),
        "captioner": captioner,
        "prompt_id": prompt_id,
        "tiny_random_weights": bool(identity["tiny_random"]),
        "status_counts": dg.MetadataValue.json({r["status"]: r["count"] for r in statuses.to_dicts()} if statuses is not None else {}),
        "examples": dg.MetadataValue.md(markdown_table(examples, ["clip_id", "status", "caption"]) if examples else "none new"),
    })


def _current_captions(captions: pl.DataFrame) -> dict[str, dict]:
    """Per clip: the newest captioner/prompt's windows joined in order (the latest rows written)."""
    result: dict[str, dict] = {}
    for row in captions.reverse().to_dicts():
        entry = result.setdefault(row["clip_id"], {"key": (row["captioner"], row["prompt_id"]), "windows": {}, "row": row})
        if entry["key"] == (row["captioner"], row["prompt_id"]):
            entry["windows"][row["window_index"]] = row
    return result


class EmbeddingConfig(dg.Config):
    """How clips are sampled and batched for the video embedder."""

    frames_per_clip: int = Field(default=EMBEDDING_FRAMES,
                                 description="Frames spread over each clip for its video embedding.")
    clips_per_batch: int = Field(default=8, description="Clips embedded per model call.")


# code_version 3: frame_hashes also hold each frame's centred crops (frame_hashes.HASH_VERSION 2). Rows written
# by version 2 still decode, as whole-picture hashes: a crop copy among them is found once they are re-embedded.
# code_version 4: and its edge crops, one of top / bottom / left / right cut (HASH_VERSION 3). Rows written by
# version 3 still decode with their centred crops: an edge-cut copy among them is found once they are re-embedded.
# code_version 5: embedding and hash frames come from one decode of the clip's proxy (clip_frames).
@dg.asset(partitions_def=ingest_batches, group_name=GROUP, pool="gpu", kinds={"pytorch", "parquet"}, owners=["team:curation"],
          code_version="embeddings-5", tags=pod_class("gpu-embedder"))
def clip_embeddings(
    context: dg.AssetExecutionContext, config: EmbeddingConfig, embedders: EmbedderResource, storage: CosmosStorage,
    filtered_clips: pl.DataFrame, clip_captions: pl.DataFrame, clip_scores: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """Video and caption embeddings of every kept clip, with the clip's scores, caption, source and path: the
    rows ``deduplicated_clips`` upserts by clip id into the LanceDB table of the video model, and the clip's
    perceptual frame hashes for its near-exact stage. Embedding runs on
    many GPUs at once; LanceDB gets one writer (see vector_store)."""
    # The text model loads on a thread while the first clips' frames are decoded, hashed and embedded: its loading
    # is mostly importing transformers' modelling code, seconds a fresh step process would otherwise wait for.
    loading = ThreadPoolExecutor(1, thread_name_prefix="text-embedder")
    text_model = loading.submit(embedders.text)
    loading.shutdown(wait=False)
    video = embedders.video()
    captions = _current_captions(clip_captions)
    scores = {r["clip_id"]: r for r in clip_scores.to_dicts()}
    clips = filtered_clips.filter(pl.col("kept")).to_dicts()
    rows = []
    store = storage.store
    # One decode of each clip's proxy gives its embedding frames and its hashes. On a GPU node that CPU work runs in
    # a pool of processes ahead of the GPU (bench/GPU_RESULTS.md: 5.6x the one-clip-at-a-time loop on 16 cores).
    inputs_of = functools.partial(clip_embedding_inputs, store, frames_per_clip=config.frames_per_clip)
    pool = clip_work_pool() if device_pool_limits().device != "cpu" and len(clips) > 1 else None
    try:
        inputs = pool.map(inputs_of, clips) if pool else map(inputs_of, clips)
        for start in range(0, len(clips), config.clips_per_batch):
            chunk = clips[start:start + config.clips_per_batch]
            frames, hashes = zip(*[next(inputs) for _ in chunk])
            video_vectors = video.embed_videos(list(frames)).vectors
            chunk_captions = [captions.get(c["clip_id"]) for c in chunk]
            texts = [captioning.join_window_captions([w["caption"] for _, w in sorted(entry["windows"].items())]) if entry else ""
                     for entry in chunk_captions]
            text = text_model.result()
            text_vectors = text.embed_texts(texts)
            for clip, video_vector, text_vector, caption_text, entry, clip_hash in zip(chunk, video_vectors, text_vectors, texts,
                                                                                      chunk_captions, hashes):
                score = scores.get(clip["clip_id"], {})
                caption_row = entry["row"] if entry else {}
                rows.append({
                    KEY: clip["clip_id"], "batch": clip["batch"], "batch_sequence": _batch_sequence(clip["batch"]),
                    "source_hash": clip["source_hash"], "source_name": clip["source_name"], "clip_sha256": sha256_of_file(store.local_path(clip["path"])),
                    "path": clip["path"], "thumbnail_path": clip["thumbnail_path"], "start_s": clip["start_s"], "end_s": clip["end_s"],
                    "duration_s": clip["duration_s"], "motion_global": score.get("motion_global"), "sharpness": score.get("sharpness"),
                    "brightness": score.get("brightness"), "caption": caption_text, "caption_status": caption_row.get("status"),
                    "captioner": caption_row.get("captioner"), "prompt_id": caption_row.get("prompt_id"), "tags": caption_row.get("tags"),
                    "video_model": video.name, "video_model_version": video.version, "text_model": text.name,
                    "text_model_version": text.version, "tiny_random": bool(video.tiny_random or caption_row.get("tiny_random")),
                    "kept": None, VIDEO_VECTOR: video_vector.tolist(), "text_embedding": text_vector.tolist(),
                    "frame_hashes": clip_hash,
                })
            context.log.info(f"embedded {min(start + config.clips_per_batch, len(clips))}/{len(clips)} clips")
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    text = text_model.result()
    name = table_name(video.name, video.dim)
    table = _table([{**row, "lancedb_table": name} for row in rows], CLIP_EMBEDDINGS)
    return dg.Output(table, metadata={
        "embedded": len(rows), "lancedb_table": name, "video_model": f"{video.name}@{video.version}",
        "video_dim": video.dim, "text_model": f"{text.name}@{text.version}",
    })


def _write_embeddings_to_lancedb(storage: CosmosStorage, vectors: ClipVectorStore, name: str, chunk_rows: int) -> int:
    """Upsert into LanceDB table ``name`` the clip_embeddings tables of batches not written yet, or rewritten
    since (a new caption prompt re-embeds a batch). Which batch table was written, as of which modification
    time, is recorded after each batch's upsert: a crash in between repeats only that batch's upsert, and an
    upsert by clip id repeated changes nothing. Returns the number of rows written."""
    store = storage.store
    record_key = f"{ARTEFACTS}/lancedb_written/{name}.json"
    written_as_of = store.read_json_if_exists(record_key) or {}
    rows_written = 0
    for batch in store.table_partitions("clip_embeddings"):
        stamp = store.modified(table_key("clip_embeddings", batch))
        if written_as_of.get(batch) == stamp:
            continue
        table = store.read_parquet(table_key("clip_embeddings", batch))
        if "lancedb_table" in table.columns:
            rows = table.filter(pl.col("lancedb_table") == name).drop("lancedb_table").to_dicts()
            # A batch re-filtered with stricter thresholds embeds fewer clips: the ones it no longer keeps leave
            # the collection, so they never reach the curated dataset.
            vectors.remove_batch_rows_except(name, batch, {r[KEY] for r in rows})
            if rows:
                vectors.upsert(name, rows, len(rows[0][VIDEO_VECTOR]), len(rows[0][TEXT_VECTOR]), chunk_rows)
                rows_written += len(rows)
        written_as_of[batch] = stamp
        store.write_json(record_key, written_as_of)
    return rows_written


class DedupAssetConfig(config_from(DedupConfig, include=("eps", "n_clusters", "seed"))):
    """Semantic de-duplication (``DedupConfig``) and how embeddings are written to LanceDB."""

    write_chunk_rows: int = Field(default=512, description="Rows per LanceDB commit when new embeddings are written.")
    near_exact: bool = Field(default=True, description="Run the near-exact stage (aligned perceptual frame hashes) "
                                                       "between the exact and the semantic stage.")
    near_exact_max_hamming: int = Field(default=MAX_HAMMING, description="Bits (of 256) within which two aligned frames match.")
    near_exact_min_share: float = Field(default=MIN_MATCHED_SHARE, description="Share (0..1) of a clip's frames that must "
                                        "match an earlier kept clip's, at one time offset, for it to be dropped.")


def _frame_hashes(storage: CosmosStorage) -> dict[str, str]:
    """Clip id -> encoded frame hashes, from every batch's clip_embeddings table that has them (batches
    embedded before the near-exact stage existed have none: their clips meet only the other stages)."""
    store = storage.store
    found: dict[str, str] = {}
    for batch in store.table_partitions("clip_embeddings"):
        data = store.read_bytes(table_key("clip_embeddings", batch))
        if "frame_hashes" not in pl.read_parquet_schema(io.BytesIO(data)):
            continue
        table = pl.read_parquet(io.BytesIO(data), columns=[KEY, "frame_hashes"]).drop_nulls()
        found.update(zip(table[KEY].to_list(), table["frame_hashes"].to_list()))
    return found


def _evidence(stage: str, duplicate_of: str, **values) -> str:
    return json.dumps({"stage": stage, **values, "duplicate_of": duplicate_of})


def _pair_sheet(storage: CosmosStorage, rows: list[dict], by_id: dict[str, dict], limit: int = 8) -> str:
    images, labels, store = [], [], storage.store
    for row in rows[:limit]:
        for clip_id in (row["clip_id"], row["duplicate_of"]):
            images.append(thumbnail_image(store, by_id[clip_id]["thumbnail_path"]))
        labels += [f"dropped {row['clip_id'][:8]}", f"dup of {row['duplicate_of'][:8]} ({row['reason']}, {row['similarity']:.3f})"]
    return markdown_image(encode_jpeg(contact_sheet(images, labels, columns=2)), "duplicate pairs")


# video_clips: which multi-camera scene clip each clip belongs to (read from its tables, on the store).
@dg.asset(group_name=GROUP, pool="collection", kinds={"python", "lancedb"}, owners=["team:curation"],
          deps=[clip_embeddings, dg.AssetDep("video_clips", partition_mapping=dg.AllPartitionMapping())],
          code_version="dedup-5", tags=pod_class("cpu-dataset"))  # 5: scene clips as units
def deduplicated_clips(
    context: dg.AssetExecutionContext, config: DedupAssetConfig, embedders: EmbedderResource, storage: CosmosStorage,
) -> dg.Output[pl.DataFrame]:
    """Every embedded clip of the whole collection, kept or dropped as a duplicate of a named kept clip:
    exact duplicates by clip content hash, then near-exact ones by time-aligned perceptual frame hashes
    (a re-encode, rescale, frame-rate change, letterbox, centred crop, one edge cut or trimmed start of the
    same footage), then SemDeDup over the video embeddings. ``reason`` names the stage and ``evidence`` its
    measure (JSON: Hamming distance and share of matched frames, and which clip is a crop of the other if one
    is, with the edge cut for an off-centre one; or cosine) and the clip kept instead. Older clips win, so a clip landing today that duplicates last
    week's is the one dropped. First it writes the new batches' embeddings into LanceDB: this step, one at
    a time in the ``collection`` pool, is LanceDB's only writer."""
    video = embedders.video()
    name = table_name(video.name, video.dim)
    store = vector_store(storage)
    newly_written = _write_embeddings_to_lancedb(storage, store, name, config.write_chunk_rows)
    context.log.info(f"wrote {newly_written} new or updated embedding rows into LanceDB table {name}")
    table = store.read(name)
    # The columns of a result, also when the collection holds no clip yet (curated_dataset reads them all).
    schema = {KEY: pl.String, "batch": pl.String, "source_hash": pl.String, "source_name": pl.String, "start_s": pl.Float64,
              "end_s": pl.Float64, "path": pl.String, "thumbnail_path": pl.String, "caption": pl.String, "captioner": pl.String,
              "prompt_id": pl.String, "video_model": pl.String, "video_model_version": pl.String, "tiny_random": pl.Boolean,
              "kept": pl.Boolean, "duplicate_of": pl.String, "similarity": pl.Float64, "reason": pl.String}
    schema["evidence"] = pl.String  # JSON: the stage, its measure and the clip kept instead
    if table.is_empty():
        return dg.Output(pl.DataFrame(schema=schema), metadata={"kept": 0, "dropped_as_duplicates": 0,
                                                                "lancedb_rows_written": newly_written})
    table = table.sort(["batch_sequence", "source_name", "start_s", KEY])
    ids = table[KEY].to_list()
    priority = np.arange(len(ids))
    exact = exact_duplicates(table["clip_sha256"].to_list(), priority)
    all_vectors = np.asarray(table[VIDEO_VECTOR].to_list(), dtype=np.float32)
    unit = all_vectors / np.maximum(np.linalg.norm(all_vectors, axis=1, keepdims=True), 1e-12)
    duplicate_of, similarity, reason, evidence = [None] * len(ids), [None] * len(ids), [None] * len(ids), [None] * len(ids)
    for index in np.flatnonzero(exact >= 0):
        duplicate_of[index], similarity[index], reason[index] = ids[exact[index]], 1.0, "exact"
        evidence[index] = _evidence("exact", ids[exact[index]], clip_sha256=table["clip_sha256"][int(index)])
    survivors = np.flatnonzero(exact < 0)
    if config.near_exact:
        encoded = _frame_hashes(storage)
        hashes = [ClipHashes.decode(encoded.get(ids[i])) for i in survivors]
        near = near_exact_dedup(hashes, priority[survivors], max_hamming=config.near_exact_max_hamming,
                                min_share=config.near_exact_min_share)
        for local in np.flatnonzero(near.duplicate_of >= 0):
            index, kept_index = survivors[local], survivors[near.duplicate_of[local]]
            duplicate_of[index], reason[index] = ids[kept_index], "near_exact"
            similarity[index] = float(unit[index] @ unit[kept_index])  # the cosine, to compare with the semantic stage's
            evidence[index] = _evidence("near_exact", ids[kept_index], hamming=float(near.hamming[local]),
                                        matched_frames=round(float(near.matched_share[local]), 3),
                                        frames=int(near.matched_frames[local]), cosine=round(similarity[index], 4),
                                        **({"crop": near.crop[local]} if near.crop[local] else {}))
        survivors = survivors[near.duplicate_of < 0]
    dedup_config = config.to_dataclass(DedupConfig)
    semantic = semantic_dedup(all_vectors[survivors], priority[survivors], dedup_config)
    for local, index in enumerate(survivors):
        if not semantic.kept[local]:
            duplicate_of[index] = ids[survivors[semantic.duplicate_of[local]]]
            similarity[index], reason[index] = float(semantic.similarity[local]), "semantic"
            evidence[index] = _evidence("semantic", duplicate_of[index], cosine=round(similarity[index], 4))
    # Multi-camera scenes: views of one scene clip never drop each other, and a scene clip is kept or dropped whole.
    scene_clip_of = {clip: fields["scene_clip_id"] for clip, fields in scenes.scene_clips(storage.store).items()}
    duplicate_of, undone = scenes.unit_dedup(scene_clip_of, ids, duplicate_of)
    for index in (ids.index(clip) for clip in undone):
        evidence[index] = json.dumps({"stage": "kept_with_scene", "was": reason[index], "scene_clip_id": scene_clip_of[ids[index]]})
        similarity[index], reason[index] = None, None
    result = table.select(KEY, "batch", "source_hash", "source_name", "start_s", "end_s", "path", "thumbnail_path", "caption", "captioner",
                          "prompt_id", "video_model", "video_model_version", "tiny_random").with_columns(
        kept=pl.Series([d is None for d in duplicate_of], dtype=pl.Boolean),
        duplicate_of=pl.Series(duplicate_of, dtype=pl.String),
        similarity=pl.Series(similarity, dtype=pl.Float64),
        reason=pl.Series(reason, dtype=pl.String),
        evidence=pl.Series(evidence, dtype=pl.String),
    )
    kept_ids = set(result.filter(pl.col("kept"))[KEY])
    store.mark_kept(name, kept_ids, set(ids) - kept_ids)
    dropped = result.filter(~pl.col("kept")).to_dicts()
    by_id = {r[KEY]: r for r in result.to_dicts()}
    context.log.info(f"kept {len(kept_ids)} of {len(ids)} clips; {len(dropped)} duplicates")
    return dg.Output(result, metadata={
        "lancedb_rows_written": newly_written,
        "lancedb_table_rows": len(ids),
        "kept": len(kept_ids),
        "dropped_as_duplicates": len(dropped),
        "dropped_exact": sum(r["reason"] == "exact" for r in dropped),
        "dropped_near_exact": sum(r["reason"] == "near_exact" for r in dropped),
        "dropped_semantic": sum(r["reason"] == "semantic" for r in dropped),
        "eps": config.eps,
        "duplicate_pairs": dg.MetadataValue.md(_pair_sheet(storage, dropped, by_id) if dropped else "no duplicates"),
    })


class CuratedDatasetConfig(dg.Config):
    """How the dataset is split and sharded; both are part of its version."""

    validation_fraction: float = Field(
        default=0.1, description="Share (0..1) of clips held out for validation, chosen by clip id (stable across versions).")
    shard_max_clips: int = Field(default=1000, description="Most clips per exported shard.")


@dg.asset_check(asset=deduplicated_clips, blocking=True,
                description="No clip id appears twice in any LanceDB embeddings table.")
def lancedb_unique_clip_ids(storage: CosmosStorage) -> dg.AssetCheckResult:
    store = vector_store(storage)
    duplicates = {name: store.duplicate_ids(name) for name in store.table_names()}
    duplicates = {name: ids for name, ids in duplicates.items() if ids}
    return dg.AssetCheckResult(passed=not duplicates, metadata={"duplicated_ids": dg.MetadataValue.json(duplicates)})


def superseded_sources(store) -> set[str]:
    """Content hashes of landed versions a later, completed upload of the same file superseded (raw_videos.supersedes).
    Read from raw_videos' tables on the store, where every step pod sees them, not from the landing ledger."""
    raw = store.read_partitions("raw_videos")
    if raw.is_empty() or "supersedes" not in raw.columns:
        return set()
    return set(raw["supersedes"].drop_nulls().to_list())


# code_version 2: the version hashes the clip files' store keys, not their absolute paths (existing versions get new ids).
# code_version 3: members carry their multi-camera scene columns; the views of a scene clip fall in one split.
@dg.asset(group_name=GROUP, pool="collection", kinds={"python", "parquet"}, owners=["team:curation"], code_version="dataset-3",
          tags=pod_class("cpu-dataset"),
          # raw_videos: which landed versions a completed upload superseded; video_clips: the members' scene columns
          # (both read from their tables, on the store).
          deps=[dg.AssetDep("raw_videos", partition_mapping=dg.AllPartitionMapping()),
                dg.AssetDep("video_clips", partition_mapping=dg.AllPartitionMapping())])
def curated_dataset(
    context: dg.AssetExecutionContext, config: CuratedDatasetConfig, storage: CosmosStorage, deduplicated_clips: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """The kept clips as a versioned dataset: version id from members and config, a deterministic
    train/validation split, a dataset card, the Predict2 training layout and webdataset shards."""
    # A stalled upload's truncated version is left out once the completed file superseded it (raw_videos.supersedes).
    members = dataset_members(deduplicated_clips, superseded_sources(storage.store), KEY)
    # Views of a multi-camera scene clip carry its ids, and fall in one split (chosen by the scene clip).
    members = scenes.with_scene_columns(members, storage.store, KEY)
    split_keys = [scene_clip or clip for clip, scene_clip in zip(members[KEY], members["scene_clip_id"])]
    members = members.with_columns(split=pl.Series([split_of(i, config.validation_fraction) for i in split_keys], dtype=pl.String))
    version = dataset_version(members[KEY].to_list(), dataset_recipe(storage.store, members, config.model_dump()))
    card = {
        "version": version,
        "clips": members.height,
        "train_clips": int((members["split"] == "train").sum()),
        "validation_clips": int((members["split"] == "validation").sum()),
        "hours": round(float((members["end_s"] - members["start_s"]).sum()) / 3600, 4) if members.height else 0.0,
        "dropped_as_duplicates": deduplicated_clips.height - members.height,
        "source_videos": members["source_name"].n_unique(),
        "contains_tiny_random_outputs": bool(members["tiny_random"].any()) if members.height else False,
        "models": {"video_embedder": ", ".join(sorted(set(members["video_model"] + "@" + members["video_model_version"]))),
                   "captioner": ", ".join(sorted(set(members["captioner"].drop_nulls())))},
        "config": {"validation_fraction": config.validation_fraction, "shard_max_clips": config.shard_max_clips},
        "text_embeddings": "not exported: no T5 text encoder configured (Predict2 computes them at training time)",
    }
    export = export_dataset(storage.store, version, members, card, config.shard_max_clips)
    context.log.info(f"dataset {version}: {members.height} clips at {export.root}" + ("" if export.created else " (already written)"))
    return dg.Output(members.with_columns(dataset_version=pl.lit(version)), metadata={
        "dataset_version": version, "clips": members.height, "train_clips": card["train_clips"],
        "validation_clips": card["validation_clips"], "path": str(export.root), "newly_written": export.created,
        "dataset_card": dg.MetadataValue.md(card_markdown(card)),
    })


dataset_job = dg.define_asset_job(
    "dataset_job",
    selection=[deduplicated_clips, curated_dataset],
    description="De-duplicate the whole collection and write the curated dataset version.",
)
