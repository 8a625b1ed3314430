"""Rejection sampling: which candidates are kept, by a configurable rule.

- ``best_of_n``: the highest-scoring candidate of each request (Cosmos Predict2 ``video2world_bestofn``),
- ``threshold``: every candidate scoring at least the threshold,
- ``best_of_n_and_threshold``: the best of each request, and only if it reaches the threshold.

Ties are broken by candidate id, so the same scores always select the same candidates. A candidate
without a score (bad input, failed generation, or no critic trial parsed) is never accepted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

RULES = ("best_of_n", "threshold", "best_of_n_and_threshold")

# Score scales differ by critic: the metric critic's good candidates score 0.8-1 and broken ones under 0.6
# (measured on the sample clips, bench/RESULTS.md); the Reason critic's score is the share of "No anomaly"
# trials (a majority); the rubric keeps ratings 4-5 as GR00T-Dreams does ((4 - 1) / 4 = 0.75).
# learned: the promoted feature critic's P(plausible).
DEFAULT_THRESHOLDS = {"metric": 0.7, "reason": 0.5, "rubric": 0.75, "learned": 0.5}

# Why a candidate was not accepted.
BAD_INPUT = "bad_input"
UNSCORED = "unscored"
BELOW_THRESHOLD = "below_threshold"
NOT_BEST = "not_best_in_request"


@dataclass(frozen=True)
class Decision:
    candidate_id: str
    accepted: bool
    rank: int | None  # 1 = best of its request among scored candidates
    reason: str | None  # None when accepted


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"selection rule {rule!r}; expected one of {', '.join(RULES)}")
    return rule


def select(candidates: list[dict], rule: str, threshold: float) -> dict[str, Decision]:
    """``candidates``: dicts with ``candidate_id``, ``request_id``, ``score`` (None when unscored) and ``usable``
    (False for bad input). Returns a decision per candidate id."""
    check_rule(rule)
    decisions: dict[str, Decision] = {}
    by_request: dict[str, list[dict]] = defaultdict(list)
    for candidate in candidates:
        if not candidate.get("usable", True):
            decisions[candidate["candidate_id"]] = Decision(candidate["candidate_id"], False, None, BAD_INPUT)
        elif candidate["score"] is None:
            decisions[candidate["candidate_id"]] = Decision(candidate["candidate_id"], False, None, UNSCORED)
        else:
            by_request[candidate["request_id"]].append(candidate)
    for group in by_request.values():
        ranked = sorted(group, key=lambda c: (-c["score"], c["candidate_id"]))
        for rank, candidate in enumerate(ranked, start=1):
            reason = None
            if rule != "best_of_n" and candidate["score"] < threshold:
                reason = BELOW_THRESHOLD  # named first: a bad candidate is rejected for its score, whatever its rank
            elif rule != "threshold" and rank > 1:
                reason = NOT_BEST
            decisions[candidate["candidate_id"]] = Decision(candidate["candidate_id"], reason is None, rank, reason)
    return decisions
