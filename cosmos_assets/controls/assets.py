"""``clip_controls``: the control videos of the source windows a generation round works from.

One partition per ``generation_rounds`` key, read by ``synthetic_videos`` (the Transfer generator's control
inputs) and ``critique_scores`` (which extractor made the source's depth and segmentation). The logic is in
``extractors``, ``user_controls`` and ``clip_controls`` beside this file.
"""

import os
from collections import Counter
from typing import Optional

import dagster as dg
import polars as pl
from pydantic import Field

from cosmos_assets.common.artefacts import table_key
from cosmos_assets.common.pictures import contact_sheet, encode_jpeg, markdown_image, markdown_table
from cosmos_assets.common.pod_classes import pod_class
from cosmos_assets.controls.clip_controls import (
    UserControl, Window, identity_version, requested_kinds, store_control, user_controls_of,
)
from cosmos_assets.controls.extractors import (
    DEPTH_MODEL_ENV, EXTRACTED_KINDS, REAL_DEPTH_MODEL, REAL_SEGMENTATION_MODEL, SEGMENTATION_MODEL_ENV, ExtractorSettings,
    open_extractor, profile_models,
)
from cosmos_assets.controls.user_controls import USER_CONTROL_KINDS, ControlVideoError, VideoFacts
from cosmos_assets.models.catalog import TRANSFER25
from cosmos_assets.models.checkpoints import ModelError
from cosmos_assets.synthetic.assets import generation_rounds
from cosmos_assets.synthetic.video import Geometry, read_window
from resources import CosmosStorage
from resources.config import config_from
from resources.generator import VideoGeneratorResource

GROUP = "synthetic"
OWNERS = ["team:synthetic"]

CLIP_CONTROLS = {
    "window_id": pl.String, "round": pl.String, "source_clip_id": pl.String, "source_name": pl.String,
    "source_start_s": pl.Float64, "width": pl.Int64, "height": pl.Int64, "fps": pl.Int64, "num_frames": pl.Int64,
    "kind": pl.String, "origin": pl.String, "extractor": pl.String, "extractor_version": pl.String,
    "random_weights": pl.Boolean, "user_file": pl.String, "path": pl.String, "strip_path": pl.String,
    "reused": pl.Boolean, "status": pl.String, "error_class": pl.String, "error_message": pl.String,
}


class ClipControlsConfig(config_from(ExtractorSettings, unset={
        "depth_model": f"the profile's (tiny:depth locally, {REAL_DEPTH_MODEL} otherwise; {DEPTH_MODEL_ENV} overrides).",
        "segmentation_model": f"the profile's (tiny:segmentation locally, {REAL_SEGMENTATION_MODEL} otherwise; "
                              f"{SEGMENTATION_MODEL_ENV} overrides)."})):
    """Which controls each source window of a round gets, and how they are extracted."""

    kinds: Optional[list[str]] = Field(
        default=None, description=f"Control kinds per source window, from {', '.join(USER_CONTROL_KINDS)}; unset: the "
                                  "kinds the round's requests weight when the `generator` resource is Transfer 2.5 "
                                  "(none for a generator that takes no control).")
    extra_kinds: list[str] = Field(
        default=[], description="Kinds stored in addition (e.g. depth and seg, for fidelity scores of other controls).")
    use_user_controls: bool = Field(
        default=True, description="Use control videos dropped beside the RGB video (<stem>.<kind>.mp4) instead of "
                                  "extracting that kind.")

    def settings(self) -> ExtractorSettings:
        defaults = profile_models()
        return self.to_dataclass(depth_model=self.depth_model or defaults["depth_model"],
                                 segmentation_model=self.segmentation_model or defaults["segmentation_model"])


def _raw_facts(storage: CosmosStorage, clip: dict) -> VideoFacts | None:
    """Frames, size and rate of the raw video a clip was cut from (its raw_videos row), or None."""
    store, key = storage.store, table_key("raw_videos", clip.get("batch"))
    if not clip.get("batch") or not store.exists(key):
        return None
    rows = store.read_parquet(key).filter(pl.col("content_hash") == clip["source_hash"]).to_dicts()
    if not rows:
        return None
    row = rows[0]
    return VideoFacts(int(row["frames"]), int(row["width"]), int(row["height"]), float(row["average_fps"]))


def _window_controls(context, storage: CosmosStorage, settings: ExtractorSettings, window: Window, request: dict,
                     clip: dict | None, kinds: list[str], use_user: bool, extractors: dict) -> list[dict]:
    store = storage.store
    geometry = Geometry(window.width, window.height, window.fps, window.num_frames)
    base = {"window_id": window.id, "round": context.partition_key, "source_clip_id": window.clip_id,
            "source_name": request.get("source_name"), "source_start_s": window.start_s, **geometry.as_dict()}
    user, refused = {}, {}
    if use_user and clip is not None:
        user, refused = user_controls_of(storage.paths.landing, os.fsencode(clip["source_name"]), _raw_facts(storage, clip))
    frames = None
    rows = []
    for kind in kinds:
        row = {**base, "kind": kind}
        try:
            if kind in refused:
                raise refused[kind]
            if kind in user:
                found: UserControl = user[kind]
                # The user's control runs frame for frame with the raw video: the clip's window starts at the clip's start.
                start = float(clip["start_s"]) + window.start_s
                make = lambda found=found, start=start: read_window(found.path, geometry, start)  # noqa: E731
                version = found.sha256[:12]
                row.update(origin="user", extractor=f"user:{kind}", extractor_version=version, random_weights=False,
                           user_file=found.name)
            else:
                if kind not in EXTRACTED_KINDS:
                    raise ControlVideoError(f"no {kind} control video beside {request.get('source_name')!r} and none can "
                                            f"be extracted (extracted kinds: {', '.join(EXTRACTED_KINDS)})")
                if kind not in extractors:
                    extractors[kind] = open_extractor(kind, settings, storage.paths.models)
                extractor = extractors[kind]
                if frames is None:
                    frames = read_window(store.local_path(request["source_path"]), geometry, window.start_s)
                make = lambda extractor=extractor: extractor.extract(frames)  # noqa: E731
                version = identity_version(extractor.identity)
                row.update(origin="extracted", extractor=extractor.identity.name, extractor_version=extractor.identity.version,
                           random_weights=extractor.identity.random_weights)
            path, strip, reused = store_control(store, window, kind, version, make)
            rows.append({**row, "path": path, "strip_path": strip, "reused": reused, "status": "ok"})
        except (ControlVideoError, ModelError, ValueError, OSError) as error:
            error_class = error.error_class if isinstance(error, ControlVideoError) else type(error).__name__
            rows.append({**row, "status": "rejected", "error_class": error_class, "error_message": str(error)[:500]})
            context.log.warning(f"{window.clip_id} {kind}: {error_class}: {error}")
    return rows


def _strip_sheet(storage: CosmosStorage, rows: list[dict], kind: str, limit: int = 4) -> str:
    from PIL import Image

    chosen = [r for r in rows if r["kind"] == kind and r["status"] == "ok"][:limit]
    if not chosen:
        return "none"
    images = [Image.open(storage.store.local_path(r["strip_path"])).convert("RGB") for r in chosen]
    labels = [f"{r['source_name'] or r['source_clip_id'][:8]} ({r['origin']}{', random weights' if r['random_weights'] else ''})"[:60]
              for r in chosen]
    width = max(image.width for image in images)
    return markdown_image(encode_jpeg(contact_sheet(images, labels, columns=1, tile_width=min(width, 480)), quality=70),
                          f"{kind} controls")


@dg.asset(partitions_def=generation_rounds, group_name=GROUP, pool="gpu", kinds={"pytorch", "parquet"}, owners=OWNERS,
          code_version="controls-1", tags=pod_class("gpu-embedder"),
          # A user-supplied control is checked against the raw video its clip was cut from.
          deps=[dg.AssetDep("raw_videos", partition_mapping=dg.AllPartitionMapping())])
def clip_controls(context: dg.AssetExecutionContext, config: ClipControlsConfig, storage: CosmosStorage,
                  generator: VideoGeneratorResource, generation_prompts: pl.DataFrame,
                  curated_dataset: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Control videos (H.264, the request geometry) of every source window of the round, per control kind: edge
    (Canny), blur, depth (Depth Anything V2), segmentation (SegFormer), each versioned by its extractor, or the
    user's own control video dropped beside the RGB video (<stem>.<kind>.mp4), checked frame for frame against it.
    A thumbnail strip per control; random-weight extractors are labelled on every row."""
    requests = generation_prompts.filter(pl.col("error_class").is_null()).to_dicts()
    # Only a Transfer generator reads controls (its configuration is known without loading it).
    weighted = requested_kinds(requests) if generator.kind == TRANSFER25 else []
    kinds = list(dict.fromkeys((config.kinds if config.kinds is not None else weighted) + config.extra_kinds))
    unknown = [k for k in kinds if k not in USER_CONTROL_KINDS]
    if unknown:
        raise dg.Failure(f"unknown control kinds {unknown}; known: {', '.join(USER_CONTROL_KINDS)}")
    clips = {c["clip_id"]: c for c in curated_dataset.to_dicts()} if curated_dataset.height else {}
    windows: dict[str, tuple[Window, dict]] = {}
    for request in requests:
        window = Window.of_request(request)
        windows.setdefault(window.id, (window, request))
    settings, extractors, rows = config.settings(), {}, []
    for number, (window, request) in enumerate(windows.values(), start=1):
        rows += _window_controls(context, storage, settings, window, request, clips.get(window.clip_id), kinds,
                                 config.use_user_controls, extractors)
        context.log.info(f"[{number}/{len(windows)}] controls of {window.clip_id}: {', '.join(kinds) or 'none'}")
    table = pl.DataFrame([{k: r.get(k) for k in CLIP_CONTROLS} for r in rows], schema=CLIP_CONTROLS)
    ok = table.filter(pl.col("status") == "ok")
    random_weights = bool(ok["random_weights"].any()) if ok.height else False
    extractor_rows = ok.unique(["kind", "extractor", "extractor_version"], maintain_order=True).to_dicts()
    return dg.Output(table, metadata={
        "windows": len(windows),
        "controls": ok.height,
        "rejected": table.height - ok.height,
        "rejected_by_error_class": dg.MetadataValue.json(dict(Counter(table.filter(pl.col("status") != "ok")["error_class"].to_list()))),
        "by_origin": dg.MetadataValue.json(dict(Counter(f"{r['kind']}:{r['origin']}" for r in ok.to_dicts()))),
        "kinds": dg.MetadataValue.json(kinds),
        "random_weights": random_weights,
        "label": dg.MetadataValue.md("**random weights**: depth / segmentation from tiny random-weight models"
                                     if random_weights else "real extractors"),
        "extractors": dg.MetadataValue.md(markdown_table(extractor_rows, ["kind", "origin", "extractor", "extractor_version",
                                                                          "random_weights"]) if extractor_rows else "none"),
        **{f"strip_{kind}": dg.MetadataValue.md(_strip_sheet(storage, rows, kind)) for kind in kinds},
        "failures": dg.MetadataValue.md(markdown_table(table.filter(pl.col("status") != "ok").to_dicts(),
                                                       ["source_clip_id", "kind", "error_class", "error_message"])
                                        if table.height > ok.height else "none"),
    })
