"""Critic evaluation: a critic's predictions against reference labels, and the base-vs-tuned promotion rule.

Measures (``evaluate_predictions``), all in [0, 1] except correlations in [-1, 1]:

- critique (scores 1–5): exact accuracy, off-by-one accuracy (|predicted − reference| ≤ 1), Pearson and Spearman
  correlation — the numbers the cookbook reports for Reason on VideoPhy-2;
- plausibility (yes / no): accuracy;
- vqa: accuracy overall and per question type (driving-scene Q&A is reported per type);
- all rows: the parse-failure rate. A prediction of None (the critic's text held no usable answer) is a failure
  and counts as wrong in every accuracy. Correlations are taken over parsed predictions only (a missing score has
  no value to correlate); the failure rate is compared beside them, so a critic cannot look good by not answering.

``compare`` is the rule behind the blocking promotion check: the tuned critic must be no worse than its base on
every measure by more than a margin.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from scipy import stats

from cosmos_assets.common.pictures import BACKGROUND, BAR, FOREGROUND, markdown_table
from cosmos_assets.critic_training.labels import LabelRow

LOWER_IS_BETTER = frozenset({"parse_failure_rate"})
SCORE_CLASSES = ("1", "2", "3", "4", "5")
PLAUSIBILITY_CLASSES = ("yes", "no")
UNPARSED = "none"  # the confusion-matrix column of predictions that could not be parsed
UNSPECIFIED_TYPE = "unspecified"


@dataclass
class CriticMetrics:
    """One critic's evaluation: the compared measures, how many rows each rests on, and what to know about them."""

    measures: dict[str, float] = field(default_factory=dict)
    support: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # task → (reference classes, predicted classes incl. UNPARSED, counts[reference][predicted])
    confusion: dict[str, tuple[list[str], list[str], list[list[int]]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"measures": self.measures, "support": self.support, "notes": self.notes,
                "confusion": {task: {"references": r, "predictions": p, "counts": c}
                              for task, (r, p, c) in self.confusion.items()}}


def _correlation(kind: str, references: list[float], predictions: list[float], notes: list[str]) -> float:
    """Pearson or Spearman; undefined (fewer than two pairs, or one side constant: a critic that always answers 4)
    is reported as 0 with a note rather than NaN, so comparisons and tables stay well-defined."""
    if len(references) < 2 or len(set(references)) < 2 or len(set(predictions)) < 2:
        notes.append(f"critique.{kind} is undefined ({len(references)} parsed pairs; constant predictions or "
                     f"references); counted as 0")
        return 0.0
    value = (stats.pearsonr if kind == "pearson" else stats.spearmanr)(references, predictions)[0]
    return 0.0 if math.isnan(value) else float(value)


def _confusion(references: list[str], predictions: list[str | None], classes: Sequence[str]):
    observed = sorted({p for p in predictions if p is not None} - set(classes))
    columns = list(classes) + observed + [UNPARSED]
    counts = [[0] * len(columns) for _ in classes]
    for reference, prediction in zip(references, predictions):
        counts[classes.index(reference)][columns.index(UNPARSED if prediction is None else prediction)] += 1
    return list(classes), columns, counts


def _same_answer(row: LabelRow, prediction) -> bool:
    if prediction is None:
        return False
    if row.task == "critique":
        return int(prediction) == row.score
    return str(prediction).strip().lower() == row.answer.strip().lower()


def evaluate_predictions(rows: Sequence[LabelRow], predictions: Sequence[int | str | None]) -> CriticMetrics:
    """Measures of ``predictions`` (``training_set.parse_prediction`` of each row's critic output, None when
    unparsed) against the labels in ``rows``, one prediction per row."""
    if len(rows) != len(predictions):
        raise ValueError(f"{len(rows)} labels but {len(predictions)} predictions")
    result = CriticMetrics()
    by_task: dict[str, list[tuple[LabelRow, object]]] = defaultdict(list)
    for row, prediction in zip(rows, predictions):
        by_task[row.task].append((row, prediction))
    failures = sum(p is None for p in predictions)
    result.support["all"] = len(rows)
    result.support["parse_failures"] = failures
    result.measures["parse_failure_rate"] = failures / len(rows) if rows else 0.0
    if not rows:
        result.notes.append("no labels to evaluate on")

    if pairs := by_task.get("critique"):
        references = [row.score for row, _ in pairs]
        scored = [None if p is None else int(p) for _, p in pairs]
        parsed = [(r, p) for r, p in zip(references, scored) if p is not None]
        result.support["critique"] = len(pairs)
        result.measures["critique.exact_accuracy"] = sum(r == p for r, p in parsed) / len(pairs)
        result.measures["critique.off_by_one_accuracy"] = sum(abs(r - p) <= 1 for r, p in parsed) / len(pairs)
        for kind in ("pearson", "spearman"):
            result.measures[f"critique.{kind}"] = _correlation(
                kind, [float(r) for r, _ in parsed], [float(p) for _, p in parsed], result.notes)
        result.confusion["critique"] = _confusion([str(r) for r in references],
                                                  [None if p is None else str(p) for p in scored], SCORE_CLASSES)

    if pairs := by_task.get("plausibility"):
        result.support["plausibility"] = len(pairs)
        result.measures["plausibility.accuracy"] = sum(_same_answer(r, p) for r, p in pairs) / len(pairs)
        result.confusion["plausibility"] = _confusion(
            [r.answer for r, _ in pairs], [None if p is None else str(p).lower() for _, p in pairs],
            PLAUSIBILITY_CLASSES)

    if pairs := by_task.get("vqa"):
        result.support["vqa"] = len(pairs)
        result.measures["vqa.accuracy"] = sum(_same_answer(r, p) for r, p in pairs) / len(pairs)
        per_type: dict[str, list[bool]] = defaultdict(list)
        for row, prediction in pairs:
            per_type[row.question_type or UNSPECIFIED_TYPE].append(_same_answer(row, prediction))
        for question_type, correct in sorted(per_type.items()):
            result.measures[f"vqa.accuracy[{question_type}]"] = sum(correct) / len(correct)
            result.support[f"vqa[{question_type}]"] = len(correct)
        if all(row.choices for row, _ in pairs):
            letters = sorted({row.answer for row, _ in pairs})
            result.confusion["vqa"] = _confusion([r.answer for r, _ in pairs],
                                                 [None if p is None else str(p).upper() for _, p in pairs], letters)
    return result


# --- base versus tuned ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MeasureComparison:
    measure: str
    base: float | None
    tuned: float | None
    passed: bool
    note: str = ""


@dataclass
class Comparison:
    """The verdict of ``compare``: passed only when every measure passed."""

    margin: float
    measures: list[MeasureComparison]

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.measures)

    @property
    def failed_measures(self) -> list[str]:
        return [m.measure for m in self.measures if not m.passed]


def _finite(value, side: str, notes: list[str]) -> float | None:
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        notes.append(f"{side} is undefined (NaN), counted as 0")
        return 0.0
    return value


def compare(base: CriticMetrics | Mapping[str, float], tuned: CriticMetrics | Mapping[str, float],
            margin: float) -> Comparison:
    """Whether ``tuned`` is no worse than ``base`` by more than ``margin`` on each measure (absolute difference;
    ``parse_failure_rate`` may rise by at most the margin, the others may fall by at most the margin).

    A measure the base has and the tuned critic lacks fails (the tuned critic was not evaluated on it); one only the
    tuned critic has passes with a note (nothing to be worse than). NaN counts as 0 with a note, never a crash.
    """
    if margin < 0:
        raise ValueError(f"margin {margin}; expected 0 or more")
    base_measures = base.measures if isinstance(base, CriticMetrics) else dict(base)
    tuned_measures = tuned.measures if isinstance(tuned, CriticMetrics) else dict(tuned)
    results = []
    for measure in sorted(set(base_measures) | set(tuned_measures)):
        notes: list[str] = []
        before = _finite(base_measures.get(measure), "base", notes)
        after = _finite(tuned_measures.get(measure), "tuned", notes)
        if after is None:
            results.append(MeasureComparison(measure, before, None, False, "not measured for the tuned critic"))
            continue
        if before is None:
            results.append(MeasureComparison(measure, None, after, True, "no base value to compare with"))
            continue
        # A hair of tolerance: equal measures computed two ways must not fail on float rounding.
        if measure in LOWER_IS_BETTER:
            passed = after <= before + margin + 1e-12
        else:
            passed = after >= before - margin - 1e-12
        results.append(MeasureComparison(measure, before, after, passed, "; ".join(notes)))
    return Comparison(margin, results)


# --- for the UI -----------------------------------------------------------------------------------------------------

def metrics_table(metrics: CriticMetrics) -> str:
    """A markdown table of one critic's measures and the rows each rests on."""
    rows = [{"measure": measure, "value": round(value, 4), "rows": metrics.support.get(support_key(measure))}
            for measure, value in metrics.measures.items()]
    return markdown_table(rows, ["measure", "value", "rows"])


def support_key(measure: str) -> str:
    """``critique.pearson`` rests on the critique rows, ``vqa.accuracy[environment]`` on ``vqa[environment]``."""
    if "." not in measure:
        return "all"
    task, rest = measure.split(".", 1)
    return f"{task}[{rest.split('[', 1)[1]}" if "[" in rest else task


def comparison_table(comparison: Comparison) -> str:
    """A markdown table of base vs tuned per measure, with the verdict of the promotion rule."""
    rows = [{"measure": m.measure, "base": None if m.base is None else round(m.base, 4),
             "tuned": None if m.tuned is None else round(m.tuned, 4),
             "change": None if m.base is None or m.tuned is None else round(m.tuned - m.base, 4),
             "verdict": "ok" if m.passed else f"worse by more than {comparison.margin:g}" if m.tuned is not None
             else "missing", "note": m.note or None} for m in comparison.measures]
    return markdown_table(rows, ["measure", "base", "tuned", "change", "verdict", "note"])


def confusion_matrix_picture(references: Sequence[str], predictions: Sequence[str], counts: Sequence[Sequence[int]],
                             title: str, cell: int = 34) -> Image.Image:
    """A confusion matrix as a small heatmap: one row per reference class, one column per predicted class (the last
    one, ``none``, for unparsed predictions), the count written in each cell and shaded by its share of its row."""
    left, top = 46, 40
    width = left + cell * len(predictions) + 8
    height = top + cell * len(references) + 22
    image = Image.new("RGB", (max(width, 200), height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill=FOREGROUND)
    draw.text((left, 18), "predicted ->", fill=FOREGROUND)
    matrix = np.asarray(counts, dtype=float).reshape(len(references), len(predictions))
    row_totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    shares = matrix / row_totals  # by row: a rare reference class is as readable as a common one
    for column, name in enumerate(predictions):
        draw.text((left + column * cell + 4, top - 12), str(name)[:4], fill=FOREGROUND)
    for row, name in enumerate(references):
        y = top + row * cell
        draw.text((6, y + cell // 2 - 6), str(name)[:5], fill=FOREGROUND)
        for column in range(len(predictions)):
            x = left + column * cell
            share = float(shares[row, column])
            colour = tuple(round(b + (f - b) * share) for b, f in zip(BACKGROUND, BAR))
            draw.rectangle([x + 1, y + 1, x + cell - 1, y + cell - 1], fill=colour, outline=(60, 60, 66))
            draw.text((x + 5, y + cell // 2 - 6), str(int(matrix[row, column])), fill=FOREGROUND)
    draw.text((6, height - 16), "rows: reference; shade: share of the row", fill=FOREGROUND)
    return image


def confusion_pictures(metrics: CriticMetrics, title_prefix: str = "") -> dict[str, Image.Image]:
    """One confusion-matrix picture per task that has one."""
    return {task: confusion_matrix_picture(r, p, c, f"{title_prefix}{task}".strip())
            for task, (r, p, c) in metrics.confusion.items()}


def answer_distribution(predictions: Sequence[int | str | None]) -> dict[str, int]:
    """How often each answer was given (``none`` for unparsed): shows a critic that always answers 4."""
    return dict(sorted(Counter(UNPARSED if p is None else str(p) for p in predictions).items()))
