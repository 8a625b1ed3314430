"""Column types of the curation tables, fixed so that every partition reads back alike.

Without them polars infers ``Null`` for a column that happens to be empty in one batch (all files
ok → no error class), and partitions then refuse to concatenate.
"""

import polars as pl

RAW_VIDEOS = {
    "content_hash": pl.String,
    "landing_name": pl.String,
    "batch": pl.String,
    "size_bytes": pl.Int64,
    "status": pl.String,
    "error_class": pl.String,
    "error_message": pl.String,
    "raw_path": pl.String,
    "container": pl.String,
    "codec": pl.String,
    "pixel_format": pl.String,
    "bit_depth": pl.Int64,
    "width": pl.Int64,
    "height": pl.Int64,
    "average_fps": pl.Float64,
    "real_fps": pl.Float64,
    "variable_frame_rate": pl.Boolean,
    "frames": pl.Int64,
    "duration_s": pl.Float64,
    "video_streams": pl.Int64,
    "audio_streams": pl.Int64,
    "display_rotation": pl.Int64,  # counter-clockwise degrees that show the frames upright; width/height are upright
    "supersedes": pl.String,  # content hash of an earlier, truncated version of this file (a stalled upload completed)
    # The frame limits the file was accepted under (JSON of common.decoding.FrameLimits): the split decodes
    # the same file and holds every frame to the same limits, whatever the split step's own defaults.
    "frame_limits": pl.String,
    # Multi-camera scenes (curation.scenes): the content-derived scene id and camera of a view, the manifest's
    # scene name, and whether the view is the reference camera the scene's clips are cut by.
    "scene_id": pl.String,
    "camera": pl.String,
    "scene_name": pl.String,
    "scene_reference": pl.Boolean,
}

VIDEO_CLIPS = {
    "clip_id": pl.String,
    "source_hash": pl.String,
    "source_name": pl.String,
    "batch": pl.String,
    "start_frame": pl.Int64,
    "end_frame": pl.Int64,
    "start_s": pl.Float64,
    "end_s": pl.Float64,
    "duration_s": pl.Float64,
    "width": pl.Int64,
    "height": pl.Int64,
    "fps": pl.Float64,
    "frames": pl.Int64,
    "path": pl.String,
    "thumbnail_path": pl.String,
    # The clip's proxy (curation.clips.PROXY_FPS frames per second, PROXY_MAX_SIDE pixels): what captions,
    # embeddings and frame hashes decode instead of the clip. Null on rows split before proxies existed.
    "proxy_path": pl.String,
    "split_method": pl.String,
    "shot_model": pl.String,
    "shot_model_version": pl.String,
    "scene_id": pl.String,
    "camera": pl.String,
    "scene_clip_id": pl.String,  # shared by the clips of every view of a scene that cover the same frames
}

CLIP_SCORES = {
    "clip_id": pl.String,
    "duration_s": pl.Float64,
    "motion_global": pl.Float64,
    "motion_patch_min": pl.Float64,
    "sharpness": pl.Float64,
    "brightness": pl.Float64,
    "dark_fraction": pl.Float64,
    "bright_fraction": pl.Float64,
    "letterbox_fraction": pl.Float64,
    "pillarbox_fraction": pl.Float64,
    "samples": pl.Int64,
}


def table(rows: list[dict], schema: dict) -> pl.DataFrame:
    """Rows as a DataFrame with exactly ``schema``'s columns and types (missing values are null)."""
    return pl.DataFrame([{name: row.get(name) for name in schema} for row in rows], schema=schema)
