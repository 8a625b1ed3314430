"""Comparing a fine-tuned generator with its base: Fréchet distance between generated and real held-out
clips in an embedder's feature space, critic acceptance, and the promotion rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray, eps: float = 1e-6) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½), the FID formula, on any feature space.

    With fewer samples than dimensions the covariances are singular: ``eps`` on the diagonal keeps the
    matrix square root defined (the distance is then comparable between runs of equal size, not absolute).
    """
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("a Fréchet distance needs at least two samples on each side")
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a = np.cov(a, rowvar=False) + eps * np.eye(a.shape[1])
    cov_b = np.cov(b, rowvar=False) + eps * np.eye(b.shape[1])
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    root = root.real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


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
