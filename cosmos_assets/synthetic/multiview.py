"""Cross-view consistency of a generated multi-camera scene: does it keep the source rig's geometry?

For each pair of cameras, ORB features are matched between the two source views (pooled over a few frames of
the window) and a fundamental matrix F is fitted with RANSAC: the source's epipolar geometry. The same pair of
generated views is matched the same way, and each generated match is measured by its Sampson distance under
the source's F (the first-order distance, in pixels, of the match from satisfying x_b^T F x_a = 0). A
generated scene whose views still show one world from the rig's cameras keeps its matches on the source's
epipolar lines (small distances, most under the threshold); views that drift apart (different rain, a
different road, a hallucinated car in one view only) give fewer matches and scattered distances.

Reported per scene candidate (one seed of one scene clip under one condition): per camera pair the match
counts, the median Sampson distance and the share of matches under ``threshold_px``, and the match-count
ratio generated / source; the scene's summary is its worst pair.

The shipped sample's cameras are crops of one video (``samples/ATTRIBUTION.md``): crops share a centre of
projection, so its views are related by a pure image translation (a homography), not by a stereo baseline.
F is then not unique (every F = [e]x H fits the matches of a homography H), RANSAC returns one of that family,
and the measure still holds: generated matches that keep the translation fit it, unrelated matches do not. It
cannot tell depth errors apart, which a real rig's baseline would.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from itertools import combinations

import cv2
import numpy as np

from cosmos_assets.synthetic.generation import request_geometry_of
from cosmos_assets.synthetic.video import read_video, read_window

MIN_MATCHES = 8  # the fewest correspondences a fundamental matrix is fitted to
RATIO = 0.8  # Lowe's ratio test on the two nearest ORB descriptors


@dataclass(frozen=True)
class MultiViewConfig:
    frames: int = 4  # frames of the window sampled per view (spread evenly)
    features: int = 1500  # ORB features per frame
    threshold_px: float = 2.0  # a generated match under this Sampson distance agrees with the source's geometry
    ransac_px: float = 1.5  # RANSAC's inlier distance when F is fitted to the source's matches
    # A pair whose source views share fewer inliers overlaps too little for its F to be trusted (on the sample the
    # left and right crops share 18 % of their width: about 13 inliers, and a 2 px median on the source itself).
    min_source_inliers: int = 30


@dataclass(frozen=True)
class PairConsistency:
    camera_a: str
    camera_b: str
    source_matches: int
    source_inliers: int
    generated_matches: int
    match_ratio: float  # generated / source matches
    median_sampson_px: float | None  # None when the generated views have no match at all
    share_under_threshold: float  # of the generated matches (0 when there are none)


def _gray(frame: np.ndarray) -> np.ndarray:
    return frame if frame.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def sampled(frames: np.ndarray, count: int) -> np.ndarray:
    return frames[np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))]


def matches(frames_a: np.ndarray, frames_b: np.ndarray, config: MultiViewConfig = MultiViewConfig()) -> tuple[np.ndarray, np.ndarray]:
    """ORB correspondences between two views, pooled over their sampled frames (same time in both): (N×2, N×2)."""
    orb = cv2.ORB_create(nfeatures=config.features)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    points_a, points_b = [], []
    for a, b in zip(sampled(frames_a, config.frames), sampled(frames_b, config.frames)):
        keys_a, descriptors_a = orb.detectAndCompute(_gray(a), None)
        keys_b, descriptors_b = orb.detectAndCompute(_gray(b), None)
        if descriptors_a is None or descriptors_b is None or len(keys_a) < 2 or len(keys_b) < 2:
            continue
        for pair in matcher.knnMatch(descriptors_a, descriptors_b, k=2):
            if len(pair) == 2 and pair[0].distance < RATIO * pair[1].distance:
                points_a.append(keys_a[pair[0].queryIdx].pt)
                points_b.append(keys_b[pair[0].trainIdx].pt)
    return np.asarray(points_a, np.float64).reshape(-1, 2), np.asarray(points_b, np.float64).reshape(-1, 2)


def fundamental(points_a: np.ndarray, points_b: np.ndarray, config: MultiViewConfig = MultiViewConfig()):
    """F from a to b (x_b^T F x_a = 0) fitted with RANSAC, and its inlier count; (None, 0) with too few matches."""
    if len(points_a) < MIN_MATCHES:
        return None, 0
    matrix, mask = cv2.findFundamentalMat(points_a, points_b, cv2.FM_RANSAC, config.ransac_px, 0.999)
    if matrix is None or matrix.shape != (3, 3):
        return None, 0
    return matrix, int(mask.sum()) if mask is not None else 0


def sampson_px(matrix: np.ndarray, points_a: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Sampson distance of each correspondence under F, in pixels (the square root of the squared-distance form)."""
    ones = np.ones((len(points_a), 1))
    xa, xb = np.hstack([points_a, ones]), np.hstack([points_b, ones])
    f_xa, ft_xb = xa @ matrix.T, xb @ matrix
    numerator = np.einsum("ij,ij->i", xb, f_xa) ** 2
    denominator = f_xa[:, 0] ** 2 + f_xa[:, 1] ** 2 + ft_xb[:, 0] ** 2 + ft_xb[:, 1] ** 2
    return np.sqrt(numerator / np.maximum(denominator, 1e-12))


def pair_consistency(camera_a: str, camera_b: str, source_a: np.ndarray, source_b: np.ndarray, generated_a: np.ndarray,
                     generated_b: np.ndarray, config: MultiViewConfig = MultiViewConfig()) -> PairConsistency | None:
    """One camera pair; None when the source views share too few matches to fit their geometry."""
    source_points = matches(source_a, source_b, config)
    matrix, inliers = fundamental(*source_points, config)
    if matrix is None or inliers < config.min_source_inliers:
        return None
    generated_points = matches(generated_a, generated_b, config)
    distances = sampson_px(matrix, *generated_points) if len(generated_points[0]) else np.zeros(0)
    return PairConsistency(
        camera_a, camera_b, len(source_points[0]), inliers, len(distances),
        round(len(distances) / len(source_points[0]), 4),
        round(float(np.median(distances)), 4) if len(distances) else None,
        round(float((distances < config.threshold_px).mean()), 4) if len(distances) else 0.0)


def scene_consistency(source: dict[str, np.ndarray], generated: dict[str, np.ndarray],
                      config: MultiViewConfig = MultiViewConfig()) -> dict:
    """Every camera pair of one scene (camera -> frames, source and generated, same cameras and time span) and
    the scene's summary, its worst pair: the largest median Sampson distance, the smallest share under the
    threshold and the smallest match ratio. Pairs the source cannot fit are listed as unmeasured."""
    pairs, unmeasured = [], []
    for a, b in combinations(sorted(source), 2):
        result = pair_consistency(a, b, source[a], source[b], generated[a], generated[b], config)
        (pairs.append(result) if result else unmeasured.append(f"{a}/{b}"))
    medians = [p.median_sampson_px for p in pairs]
    return {
        "pairs": [asdict(p) for p in pairs],
        "unmeasured_pairs": unmeasured,
        "sampson_px": (None if any(m is None for m in medians) else max(medians)) if pairs else None,
        "share_under_threshold": min(p.share_under_threshold for p in pairs) if pairs else None,
        "match_ratio": min(p.match_ratio for p in pairs) if pairs else None,
        "threshold_px": config.threshold_px,
    }


def scene_candidates(candidates: list[dict]) -> dict[tuple, list[dict]]:
    """Candidates of multi-camera scenes grouped into scene candidates: (scene clip, condition, seed) -> its views."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for candidate in candidates:
        if candidate.get("scene_clip_id"):
            groups[(candidate["scene_clip_id"], candidate["condition"], candidate["seed"])].append(candidate)
    return dict(groups)


def measure_scene_candidates(store, candidates: list[dict], requests: dict[str, dict],
                             config: MultiViewConfig = MultiViewConfig()) -> dict[tuple, dict]:
    """``scene_consistency`` of every scene candidate among ``candidates`` (ok ``synthetic_videos`` rows), keyed as
    ``scene_candidates``: each view's source window (at its request's geometry, so pixel coordinates agree) against
    the view generated from it. A scene candidate whose videos cannot be read gets ``{"error": ...}``."""
    windows: dict[str, np.ndarray] = {}
    results = {}
    for key, views in scene_candidates(candidates).items():
        if len({v["camera"] for v in views}) < 2:
            continue
        try:
            source, generated = {}, {}
            for view in views:
                request = requests[view["request_id"]]
                if view["request_id"] not in windows:
                    windows[view["request_id"]] = read_window(store.local_path(request["source_path"]),
                                                              request_geometry_of(request), request["source_start_s"])
                source[view["camera"]] = windows[view["request_id"]]
                generated[view["camera"]] = read_video(store.local_path(view["path"]))[0][: len(source[view["camera"]])]
            results[key] = scene_consistency(source, generated, config)
        except (ValueError, OSError) as error:
            results[key] = {"error": f"{type(error).__name__}: {error}"[:300]}
    return results


def consistency_columns(result: dict | None) -> dict:
    """A scene candidate's summary as the ``cross_view_*`` columns of its views' rows."""
    if not result or "error" in result:
        return {"cross_view_pairs": json.dumps(result) if result else None}
    return {"cross_view_sampson_px": result["sampson_px"], "cross_view_share_under_threshold": result["share_under_threshold"],
            "cross_view_match_ratio": result["match_ratio"], "cross_view_pairs": json.dumps(result["pairs"])}
