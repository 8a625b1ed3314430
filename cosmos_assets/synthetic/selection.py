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


SCENE_VIEW_FAILED = "scene_view_not_accepted"  # this view passed, another view of its scene candidate did not
SCENE_INCOMPLETE = "scene_incomplete"  # a camera of the scene has no candidate for this seed


def select_scenes(candidates: list[dict], rule: str, threshold: float) -> dict[str, Decision]:
    """``select`` with multi-camera scenes decided as units. A candidate with a ``scene_key`` (its scene clip and
    condition), a ``seed`` and the scene's camera count ``scene_cameras`` is one view of a scene candidate (that key
    and seed); a scene candidate is scored by its worst view (so the threshold holds for every view), ranked against
    the scene's other seeds, and every view is accepted only when the scene candidate is. Other candidates are
    selected per request, as by ``select``."""
    singles = [c for c in candidates if not c.get("scene_key")]
    decisions = select(singles, rule, threshold)
    views: dict[tuple, list[dict]] = defaultdict(list)
    for candidate in candidates:
        if candidate.get("scene_key"):
            views[(candidate["scene_key"], candidate["seed"])].append(candidate)
    units = []
    for (scene_key, seed), group in views.items():
        complete = len({c["camera"] for c in group}) == group[0]["scene_cameras"]
        scores = [c["score"] for c in group]
        units.append({"candidate_id": f"{scene_key}/{seed}", "request_id": scene_key,
                      "usable": complete and all(c.get("usable", True) for c in group),
                      "score": None if any(s is None for s in scores) else min(scores)})
    unit_decisions = select(units, rule, threshold)
    for (scene_key, seed), group in views.items():
        unit = unit_decisions[f"{scene_key}/{seed}"]
        complete = len({c["camera"] for c in group}) == group[0]["scene_cameras"]
        for candidate in group:
            reason = unit.reason
            if not candidate.get("usable", True):
                reason = BAD_INPUT
            elif candidate["score"] is None:
                reason = UNSCORED
            elif not complete:
                reason = SCENE_INCOMPLETE
            elif unit.reason in (BAD_INPUT, UNSCORED, BELOW_THRESHOLD) and (rule == "best_of_n" or candidate["score"] >= threshold):
                reason = SCENE_VIEW_FAILED  # its own score passes; another view's does not
            decisions[candidate["candidate_id"]] = Decision(candidate["candidate_id"], unit.accepted and reason is None,
                                                            unit.rank, reason)
    return decisions
