"""The training mix: curated real clips plus accepted synthetic videos, with a content-derived version.

Planned from the tables (``retraining_sensor`` decides with the plan, ``training_dataset`` writes it, once, as
a snapshot named by its content-derived version), so the training run learns from exactly the samples that
triggered it, whatever lands in between.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
import polars as pl

from cosmos_assets.common.artefacts import TRAINING_DATASETS, ArtefactStore
from cosmos_assets.common.knobs import knob
from cosmos_assets.common.pictures import markdown_table

SAMPLES = {
    "sample_id": pl.String, "kind": pl.String, "path": pl.String, "caption": pl.String, "source_clip_id": pl.String,
    "source_video_hash": pl.String, "source_video_name": pl.String, "batch": pl.String, "curated_version": pl.String,
    "request_id": pl.String, "seed": pl.Int64, "condition": pl.String, "generator": pl.String, "generator_model": pl.String,
    "critic": pl.String, "critic_version": pl.String, "score": pl.Float64, "generation_round": pl.String, "tiny_random": pl.Boolean,
}


@dataclass(frozen=True)
class MixConfig:
    synthetic_share: float = knob(0.5, "At most this share (0..1) of a training mix is accepted synthetic video.")
    min_new_samples: int = knob(2, "Retrain once this many samples are new since the last checkpoint's dataset.")


def _rank(sample_id: str) -> str:
    return hashlib.sha256(sample_id.encode()).hexdigest()


def plan_training_dataset(real: pl.DataFrame, synthetic: pl.DataFrame, config: MixConfig) -> tuple[str, pl.DataFrame]:
    """(version, samples): every real training clip, and accepted synthetic videos up to the share,
    chosen by a hash of their id (a stable choice as more arrive)."""
    real_rows = [r for r in real.to_dicts() if r.get("split", "train") == "train"]
    limit = int(len(real_rows) * config.synthetic_share / max(1e-9, 1 - config.synthetic_share)) if config.synthetic_share < 1 else None
    synthetic_rows = sorted(synthetic.to_dicts(), key=lambda r: _rank(r["sample_id"]))[:limit]
    rows = [{**{k: None for k in SAMPLES}, **{k: v for k, v in r.items() if k in SAMPLES}} for r in real_rows + synthetic_rows]
    samples = pl.DataFrame(rows, schema=SAMPLES).sort("sample_id")
    digest = hashlib.sha256(json.dumps({"samples": samples["sample_id"].to_list(), "mix": asdict(config)}).encode())
    return "tds-" + digest.hexdigest()[:16], samples


def real_samples(curated: pl.DataFrame) -> pl.DataFrame:
    """Curated dataset members as samples (clip → source video → ingest batch)."""
    if curated.is_empty():
        return pl.DataFrame(schema={**SAMPLES, "split": pl.String})
    return curated.select(
        pl.col("clip_id").alias("sample_id"), pl.lit("real").alias("kind"), "path", "caption",
        pl.col("clip_id").alias("source_clip_id"), pl.col("source_hash").alias("source_video_hash"),
        pl.col("source_name").alias("source_video_name"), "batch", pl.col("dataset_version").alias("curated_version"),
        "tiny_random", "split",
    )


def write_snapshot(store: ArtefactStore, version: str, samples: pl.DataFrame, config: MixConfig) -> str:
    """``artefacts/training_datasets/<version>/samples.parquet`` + ``plan.json`` (last), written once (the
    version names the content); returns the folder's reference."""
    folder = f"{TRAINING_DATASETS}/{version}"
    if not store.exists(f"{folder}/plan.json"):
        with store.folder(folder, marker="plan.json") as staging:
            samples.write_parquet(staging / "samples.parquet")
            (staging / "plan.json").write_text(json.dumps({"version": version, "mix": asdict(config), "samples": samples.height}, indent=2))
    return store.ref(folder)


def _first_present(table: pl.DataFrame, names: tuple[str, ...]) -> pl.Expr:
    for name in names:
        if name in table.columns:
            return pl.col(name)
    return pl.lit(None)


def synthetic_samples(accepted: pl.DataFrame, real: pl.DataFrame) -> pl.DataFrame:
    """Accepted synthetic candidates as samples, their source video and batch taken from the source clip."""
    if accepted.is_empty():
        return pl.DataFrame(schema=SAMPLES)
    if "accepted" in accepted.columns:
        accepted = accepted.filter(pl.col("accepted"))
    rows = accepted.select(
        _first_present(accepted, ("candidate_id",)).alias("sample_id"), pl.lit("synthetic").alias("kind"),
        _first_present(accepted, ("path", "candidate_path")).alias("path"),
        _first_present(accepted, ("prompt", "caption")).alias("caption"),
        _first_present(accepted, ("source_clip_id",)).alias("source_clip_id"),
        _first_present(accepted, ("request_id",)).alias("request_id"),
        _first_present(accepted, ("seed",)).cast(pl.Int64).alias("seed"),
        _first_present(accepted, ("condition",)).alias("condition"),
        _first_present(accepted, ("generator", "backend")).alias("generator"),
        _first_present(accepted, ("generator_model", "model", "checkpoint")).alias("generator_model"),
        _first_present(accepted, ("critic",)).alias("critic"),
        _first_present(accepted, ("critic_version",)).alias("critic_version"),
        _first_present(accepted, ("score",)).cast(pl.Float64).alias("score"),
        _first_present(accepted, ("generation_round", "round", "batch")).cast(pl.String).alias("generation_round"),
        _first_present(accepted, ("tiny_random",)).cast(pl.Boolean).alias("tiny_random"),
    )
    sources = real.select(pl.col("sample_id").alias("source_clip_id"), "source_video_hash", "source_video_name", "batch",
                          "curated_version") if not real.is_empty() else None
    if sources is not None:
        rows = rows.join(sources, on="source_clip_id", how="left")
    return pl.DataFrame([{**{k: None for k in SAMPLES}, **r} for r in rows.to_dicts()], schema=SAMPLES)


def snapshot_samples(store: ArtefactStore, version: str) -> pl.DataFrame | None:
    """The samples of a training dataset snapshot, or None when there is none."""
    key = f"{TRAINING_DATASETS}/{version}/samples.parquet"
    return store.read_parquet(key) if store.exists(key) else None


def sample_counts(samples: pl.DataFrame) -> dict:
    """How many samples of each kind a training mix holds, and from how many source videos."""
    return {"samples": samples.height,
            "real": int((samples["kind"] == "real").sum()),
            "synthetic": int((samples["kind"] == "synthetic").sum()),
            "source_videos": samples["source_video_hash"].drop_nulls().n_unique()}


MAX_LISTED_SAMPLES = 200  # rows of the per-sample table shown in the UI; `cosmos lineage --json` has them all


def samples_markdown(samples: pl.DataFrame, checkpoint: str | None = None) -> str:
    """What a checkpoint learned from, for its page in the UI: the counts, one row per source video (name, content
    hash, its clips and the synthetic videos made from them), and one row per sample with its lineage. Hash
    prefixes and ids can be passed to ``cosmos lineage`` as they are shown."""
    counts = sample_counts(samples)
    head = (f"**Learned from {counts['real']} real clip(s) and {counts['synthetic']} accepted synthetic video(s), "
            f"from {counts['source_videos']} source video(s).**")
    if not samples.height:
        return head
    videos = (samples.filter(pl.col("source_video_hash").is_not_null())
              .group_by("source_video_hash")
              .agg(pl.col("source_video_name").drop_nulls().first().alias("source_video"),
                   pl.col("source_clip_id").filter(pl.col("kind") == "real").n_unique().alias("real_clips"),
                   (pl.col("kind") == "synthetic").sum().alias("synthetic_samples"),
                   pl.col("source_clip_id").drop_nulls().unique().sort().str.slice(0, 8).str.join(", ").alias("clips"))
              .sort("source_video"))
    video_rows = [{**r, "content_hash": r["source_video_hash"][:16]} for r in videos.to_dicts()]
    listed = samples.sort(["kind", "source_video_name", "sample_id"], nulls_last=True).head(MAX_LISTED_SAMPLES)
    sample_rows = [{**r, "sample": r["sample_id"], "source_video_hash": (r["source_video_hash"] or "")[:16],
                    "source_clip": (r["source_clip_id"] or "")[:8],
                    "score": None if r["score"] is None else round(r["score"], 3)} for r in listed.to_dicts()]
    more = samples.height - listed.height
    search = f"`cosmos lineage {checkpoint} --json`" if checkpoint else "`cosmos lineage <checkpoint> --json`"
    return "\n\n".join([
        head,
        "**Source videos**\n\n" + markdown_table(video_rows, ["source_video", "content_hash", "real_clips", "synthetic_samples", "clips"]),
        "**Samples**\n\n" + markdown_table(sample_rows, ["kind", "sample", "source_video_name", "source_video_hash", "source_clip",
                                                           "condition", "generator", "generator_model", "seed", "critic", "score",
                                                           "generation_round"]),
        (f"… and {more} more: {search} lists every sample. " if more else "")
        + "Any id or hash prefix above can be passed to `cosmos lineage` to follow it forward.",
    ])
