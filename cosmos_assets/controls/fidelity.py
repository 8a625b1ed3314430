"""Control fidelity of a generated video: does it keep the structure its controls asked for?

The candidate's depth and segmentation are extracted with the same extractor as the source window's and
compared with them:

- depth: scale-invariant RMSE of log depth (Eigen et al. 2014): ``sqrt(mean(d^2) - mean(d)^2)`` with
  ``d = log(candidate) - log(source)`` per frame, averaged over frames. A depth map off by a constant factor
  (relative depth has no scale) scores 0; larger is worse.
- segmentation: mean intersection over union of the class maps, over the classes present in either video
  (pooled over frames); 1 when identical, lower for every mislabelled pixel.

Edge and blur fidelity are the metric critic's Canny-F1 and blur SSIM (``synthetic.critics``); their rows name
the critic's own edge operator as the extractor.
"""

from __future__ import annotations

import numpy as np

DEPTH_FLOOR = 1e-6  # relative depth is >= 0; the log needs a floor for the farthest (zero) pixels


def depth_si_rmse(candidate: np.ndarray, source: np.ndarray) -> float:
    """Scale-invariant RMSE of log depth, T x H x W (or H x W) float arrays of the same shape."""
    candidate, source = np.asarray(candidate, np.float64), np.asarray(source, np.float64)
    if candidate.shape != source.shape:
        raise ValueError(f"depth maps differ in shape: {candidate.shape} vs {source.shape}")
    frames_c = candidate.reshape(-1, *candidate.shape[-2:])
    frames_s = source.reshape(-1, *source.shape[-2:])
    errors = []
    for c, s in zip(frames_c, frames_s):
        d = np.log(np.maximum(c, DEPTH_FLOOR)) - np.log(np.maximum(s, DEPTH_FLOOR))
        errors.append(np.sqrt(max(0.0, float(np.mean(d * d) - np.mean(d) ** 2))))
    return float(np.mean(errors))


def segmentation_miou(candidate: np.ndarray, source: np.ndarray) -> float:
    """Mean IoU of two integer class maps of the same shape, over the classes either one uses."""
    candidate, source = np.asarray(candidate), np.asarray(source)
    if candidate.shape != source.shape:
        raise ValueError(f"segmentations differ in shape: {candidate.shape} vs {source.shape}")
    ious = []
    for label in np.union1d(np.unique(candidate), np.unique(source)):
        in_c, in_s = candidate == label, source == label
        ious.append(np.logical_and(in_c, in_s).sum() / np.logical_or(in_c, in_s).sum())
    return float(np.mean(ious)) if ious else 1.0


def model_fidelity(kind: str, extractor, candidate: np.ndarray, source: np.ndarray) -> dict:
    """Depth or segmentation fidelity of ``candidate`` against ``source`` (uint8 RGB T x H x W x 3, same shape),
    both seen by ``extractor``: a row fragment with the metric, its value and the extractor's identity."""
    if kind == "depth":
        metric, value = "depth_si_rmse", depth_si_rmse(extractor.depth(candidate), extractor.depth(source))
    elif kind == "seg":
        metric, value = "seg_miou", segmentation_miou(extractor.labels(candidate), extractor.labels(source))
    else:
        raise ValueError(f"no model fidelity for control {kind!r}")
    return {"metric": metric, "value": round(value, 6), "extractor": extractor.identity.as_dict()}


# The metric critic's own measures of the classical controls (``synthetic.critics``): its Canny on normalised
# luma and SSIM of blurred frames. Named here so every fidelity row says what measured it.
CRITIC_MEASURES = {"edge": ("edge_f1", "metric-critic canny-f1"), "blur": ("blur_ssim", "metric-critic blur-ssim")}
FIDELITY_COLUMNS = ("depth_si_rmse", "seg_miou", "control_fidelity")


class ControlFidelity:
    """Per candidate, the fidelity of every control it was generated with, each with the identity of what measured it.

    Depth and segmentation use the extractor that made the round's stored control (``clip_controls``), so the
    source and the candidate are seen by the same model; where the round's control was user-supplied (or none is
    stored), the profile's extractor is used and named."""

    def __init__(self, store, partition: str, models_root, critic_version: str, device: str = "auto"):
        from cosmos_assets.controls.clip_controls import round_controls

        self.stored = round_controls(store, partition)
        self.models_root, self.critic_version, self.device = models_root, critic_version, device
        self._extractors: dict[tuple, object] = {}

    def _extractor(self, kind: str, request: dict):
        from cosmos_assets.controls.clip_controls import Window
        from cosmos_assets.controls.extractors import ExtractorSettings, open_extractor, profile_models

        models = profile_models()
        row = self.stored.get((Window.of_request(request).id, kind))
        if row is not None and row["origin"] == "extracted":
            models[{"depth": "depth_model", "seg": "segmentation_model"}[kind]] = row["extractor"]
        key = (kind, models["depth_model"], models["segmentation_model"])
        if key not in self._extractors:
            self._extractors[key] = open_extractor(kind, ExtractorSettings(device=self.device, **models), self.models_root)
        return self._extractors[key]

    def row(self, candidate: dict, request: dict, components: dict, candidate_rgb, source_rgb: np.ndarray) -> dict:
        """``candidate_rgb``: a callable giving the candidate's RGB frames (decoded only when a model needs them);
        ``source_rgb``: the source frames shown at the same times."""
        import json

        import cv2

        used = list(json.loads(candidate.get("controls") or "{}"))
        entries, values = [], {"depth_si_rmse": None, "seg_miou": None}
        frames = None
        for kind in used:
            if kind in CRITIC_MEASURES:
                metric, name = CRITIC_MEASURES[kind]
                entries.append({"control": kind, "metric": metric, "value": components.get(metric),
                                "extractor": {"kind": kind, "name": name, "version": self.critic_version, "random_weights": False}})
            elif kind in ("depth", "seg"):
                if frames is None:
                    frames = candidate_rgb()
                    height, width = frames.shape[1:3]
                    source = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA)
                                       for f in source_rgb[: len(frames)]])
                entry = model_fidelity(kind, self._extractor(kind, request), frames[: len(source)], source)
                values[entry["metric"]] = entry["value"]
                entries.append({"control": kind, **entry})
            else:  # hdmap, lidar: no extractor sees them in a generated video
                entries.append({"control": kind, "metric": None, "value": None, "extractor": None})
        return {**values, "control_fidelity": json.dumps(entries, sort_keys=True)}
