"""Comparing a fine-tuned generator with its base: Fréchet distances between generated and real held-out
clips in each available feature space (``cosmos_assets.models.feature_spaces``), critic acceptance, and the
promotion rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# One Fréchet distance for every feature space (EfficientNet, FID's Inception, FVD's I3D).
from cosmos_assets.models.feature_spaces import frechet_distance


def distances_by_feature_space(spaces: Sequence, generated: dict[str, list[np.ndarray]],
                               real: list[np.ndarray]) -> list[dict]:
    """The Fréchet distance of each model's generated videos to the real videos in every feature space given
    (objects with ``space`` and ``features(videos)``): one row per model and space, naming the space, whether
    its network has random weights, and how many feature rows each side had."""
    rows = []
    for space in spaces:
        real_features = space.features(real)
        for model, videos in generated.items():
            features = space.features(videos)
            rows.append({"model": model, "feature_space": space.space.label, "unit": space.space.unit,
                         "random_weights": space.space.random_weights, "frechet_distance": frechet_distance(features, real_features),
                         "samples": len(features), "real_samples": len(real_features)})
    return rows


@dataclass(frozen=True)
class ModelScores:
    acceptance_rate: float  # share of generated clips the critic accepts
    mean_score: float
    frechet_distance: float  # to the real held-out clips; lower is better


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reasons: list[str]


def promotion_decision(base: ModelScores, tuned: ModelScores, margin: float = 0.0) -> PromotionDecision:
    """Fine-tuned must be no worse than base by more than ``margin`` on every measure (relative for the
    Fréchet distance, absolute for rates and scores)."""
    reasons = []
    if tuned.acceptance_rate < base.acceptance_rate - margin:
        reasons.append(f"acceptance rate {tuned.acceptance_rate:.3f} < base {base.acceptance_rate:.3f} - {margin}")
    if tuned.mean_score < base.mean_score - margin:
        reasons.append(f"mean critic score {tuned.mean_score:.3f} < base {base.mean_score:.3f} - {margin}")
    if tuned.frechet_distance > base.frechet_distance * (1 + margin) + 1e-9:
        reasons.append(f"Fréchet distance {tuned.frechet_distance:.4f} > base {base.frechet_distance:.4f} × (1 + {margin})")
    return PromotionDecision(not reasons, reasons)
