"""Critic evaluation measures and the promotion rule, on cases small enough to check by hand."""

import math

import pytest
from PIL import Image
from scipy import stats

from cosmos_assets.critic_training.labels import make_label
from cosmos_assets.critic_training.metrics import (
    answer_distribution, compare, comparison_table, confusion_pictures, evaluate_predictions, metrics_table,
)


def critiques(scores):
    return [make_label(f"v{i}.mp4", "critique", score=s) for i, s in enumerate(scores)]


def test_score_measures_match_a_hand_count_and_an_unparsed_prediction_is_wrong():
    rows = critiques([1, 2, 3, 4, 5])
    predictions = [1, 3, 3, None, 2]
    metrics = evaluate_predictions(rows, predictions)

    # exact: v0 and v2; within one: v0, v1, v2 (v3 unparsed, v4 off by three)
    assert metrics.measures["critique.exact_accuracy"] == pytest.approx(2 / 5)
    assert metrics.measures["critique.off_by_one_accuracy"] == pytest.approx(3 / 5)
    assert metrics.measures["parse_failure_rate"] == pytest.approx(1 / 5)
    assert metrics.support == {"all": 5, "parse_failures": 1, "critique": 5}
    # correlations over the parsed pairs only
    parsed_refs, parsed_preds = [1, 2, 3, 5], [1, 3, 3, 2]
    assert metrics.measures["critique.pearson"] == pytest.approx(stats.pearsonr(parsed_refs, parsed_preds)[0])
    assert metrics.measures["critique.spearman"] == pytest.approx(stats.spearmanr(parsed_refs, parsed_preds)[0])


def test_spearman_with_ties_agrees_with_scipy_and_a_perfect_ranking_scores_one():
    references = [1, 1, 2, 3, 3, 4, 5, 5]
    predictions = [2, 1, 2, 2, 4, 4, 5, 3]
    metrics = evaluate_predictions(critiques(references), predictions)

    assert metrics.measures["critique.spearman"] == pytest.approx(stats.spearmanr(references, predictions)[0])
    monotone = evaluate_predictions(critiques([1, 2, 3, 4]), [2, 3, 4, 5])
    assert monotone.measures["critique.spearman"] == pytest.approx(1.0)
    assert monotone.measures["critique.exact_accuracy"] == 0 and monotone.measures["critique.off_by_one_accuracy"] == 1


def test_a_critic_that_always_answers_four_gets_zero_correlation_with_a_note_not_a_crash():
    metrics = evaluate_predictions(critiques([1, 2, 4, 5, 4]), [4, 4, 4, 4, 4])

    assert metrics.measures["critique.pearson"] == 0.0 and metrics.measures["critique.spearman"] == 0.0
    assert any("pearson is undefined" in note for note in metrics.notes)
    assert metrics.measures["critique.exact_accuracy"] == pytest.approx(2 / 5)
    assert answer_distribution([4, 4, None]) == {"4": 2, "none": 1}


def test_vqa_accuracy_per_question_type_and_plausibility_accuracy():
    rows = [
        make_label("a.mp4", "vqa", question="Weather?", choices=["sun", "rain"], answer="A", question_type="environment"),
        make_label("b.mp4", "vqa", question="Weather?", choices=["sun", "rain"], answer="B", question_type="environment"),
        make_label("c.mp4", "vqa", question="Lanes?", choices=["1", "2", "3"], answer="C", question_type="road"),
        make_label("d.mp4", "vqa", question="Sign?", answer="Stop"),
        make_label("e.mp4", "plausibility", answer="yes"),
        make_label("f.mp4", "plausibility", answer="no"),
    ]
    metrics = evaluate_predictions(rows, ["A", "A", None, "stop", "yes", "yes"])

    assert metrics.measures["vqa.accuracy"] == pytest.approx(2 / 4)
    assert metrics.measures["vqa.accuracy[environment]"] == pytest.approx(1 / 2)
    assert metrics.measures["vqa.accuracy[road]"] == 0.0 and metrics.measures["vqa.accuracy[unspecified]"] == 1.0
    assert metrics.support["vqa[environment]"] == 2
    assert metrics.measures["plausibility.accuracy"] == pytest.approx(1 / 2)
    assert metrics.measures["parse_failure_rate"] == pytest.approx(1 / 6)
    assert "vqa" not in metrics.confusion  # free-form answers have no classes to tabulate


def test_the_confusion_matrix_counts_each_reference_against_each_prediction_and_draws_it():
    metrics = evaluate_predictions(critiques([1, 2, 2, 5, 5, 5]), [1, 3, 2, 5, None, 4])
    references, predicted, counts = metrics.confusion["critique"]

    assert references == ["1", "2", "3", "4", "5"] and predicted == ["1", "2", "3", "4", "5", "none"]
    assert counts[1] == [0, 1, 1, 0, 0, 0] and counts[4] == [0, 0, 0, 1, 1, 1] and sum(map(sum, counts)) == 6
    picture = confusion_pictures(metrics, "tuned ")["critique"]
    assert isinstance(picture, Image.Image) and picture.width >= 6 * 30 and picture.height >= 5 * 30
    table = metrics_table(metrics)
    assert "`critique.exact_accuracy`" in table and "| 0.5 | 6 |" in table


def test_compare_passes_only_when_tuned_is_no_worse_than_base_by_the_margin_on_every_measure():
    base = {"critique.exact_accuracy": 0.20, "critique.pearson": 0.29, "parse_failure_rate": 0.10}

    better = compare(base, {"critique.exact_accuracy": 0.34, "critique.pearson": 0.40, "parse_failure_rate": 0.05}, 0.02)
    within = compare(base, {"critique.exact_accuracy": 0.19, "critique.pearson": 0.29, "parse_failure_rate": 0.11}, 0.02)
    worse = compare(base, {"critique.exact_accuracy": 0.34, "critique.pearson": 0.26, "parse_failure_rate": 0.13}, 0.02)

    assert better.passed and within.passed
    assert not worse.passed and worse.failed_measures == ["critique.pearson", "parse_failure_rate"]
    assert "worse by more than 0.02" in comparison_table(worse)


def test_compare_treats_undefined_correlations_as_zero_and_a_missing_measure_as_a_failure():
    base = {"critique.pearson": math.nan, "vqa.accuracy": 0.5}
    tuned = {"critique.pearson": 0.1, "vqa.accuracy[road]": 0.7}
    result = compare(base, tuned, 0.0)
    by_measure = {m.measure: m for m in result.measures}

    assert by_measure["critique.pearson"].passed and by_measure["critique.pearson"].base == 0.0
    assert "NaN" in by_measure["critique.pearson"].note
    assert not by_measure["vqa.accuracy"].passed  # the tuned critic was not measured on it
    assert by_measure["vqa.accuracy[road]"].passed and by_measure["vqa.accuracy[road]"].base is None
    assert not result.passed


def test_compare_takes_evaluations_directly():
    rows = critiques([1, 2, 3, 4, 5, 3])
    base = evaluate_predictions(rows, [4, 4, 4, 4, 4, None])  # the answers-4 critic of the cookbook
    tuned = evaluate_predictions(rows, [1, 2, 3, 5, 5, 3])

    assert compare(base, tuned, 0.0).passed
    assert not compare(tuned, base, 0.05).passed
