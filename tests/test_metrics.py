"""Tests for automl.metrics: agreement with scikit-learn, undefined ROC AUC, the report form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as sk

from automl.errors import ConfigError
from automl.metrics import (
    METRICS,
    classification_report,
    compute_metric,
    log_loss_value,
    metric_direction,
)

# Three classes, eight samples; the argmax is wrong on samples 2, 5 and 7.
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 2, 2])
PROBABILITIES = np.array(
    [
        [0.8, 0.1, 0.1],
        [0.6, 0.3, 0.1],
        [0.2, 0.7, 0.1],
        [0.1, 0.8, 0.1],
        [0.3, 0.4, 0.3],
        [0.1, 0.2, 0.7],
        [0.1, 0.1, 0.8],
        [0.5, 0.2, 0.3],
    ]
)
Y_PRED = PROBABILITIES.argmax(axis=1)
CLASS_NAMES = ["Basophil", "Eosinophil", "Erythroblast"]


@pytest.mark.parametrize("name", METRICS)
def test_each_metric_rises_with_better_predictions_and_is_maximised(name: str) -> None:
    # The study's direction must match what the metric rewards: perfect > noisy > inverted.
    n_classes = PROBABILITIES.shape[1]
    perfect = np.eye(n_classes)[Y_TRUE]
    inverted = np.roll(perfect, 1, axis=1)
    noisy = 0.6 * perfect + 0.4 * inverted
    noisy[::3] = inverted[::3]
    scores = [compute_metric(name, Y_TRUE, p) for p in (perfect, noisy, inverted)]
    assert scores[0] > scores[1] > scores[2]
    assert metric_direction(name) == "maximize"


def test_unknown_metric_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="accuracy, balanced_accuracy, macro_f1, roc_auc"):
        metric_direction("f1")
    with pytest.raises(ValueError, match="got 'auc'"):
        compute_metric("auc", Y_TRUE, PROBABILITIES)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("accuracy", sk.accuracy_score(Y_TRUE, Y_PRED)),
        ("balanced_accuracy", sk.balanced_accuracy_score(Y_TRUE, Y_PRED)),
        ("macro_f1", sk.f1_score(Y_TRUE, Y_PRED, average="macro")),
        ("roc_auc", sk.roc_auc_score(Y_TRUE, PROBABILITIES, multi_class="ovr")),
    ],
)
def test_metrics_agree_with_sklearn(name: str, expected: float) -> None:
    value = compute_metric(name, Y_TRUE, PROBABILITIES)
    assert isinstance(value, float)
    assert value == pytest.approx(expected)


def test_balanced_accuracy_ignores_predicted_classes_absent_from_truth() -> None:
    # Class 2 is predicted but never true: mean recall over classes 0 and 1 only, like sklearn.
    y_true = np.array([0, 0, 1, 1])
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1]]
    )
    with pytest.warns(UserWarning):
        expected = sk.balanced_accuracy_score(y_true, probabilities.argmax(axis=1))
    assert compute_metric("balanced_accuracy", y_true, probabilities) == pytest.approx(expected)
    assert expected == pytest.approx(0.75)


def test_binary_roc_auc_scores_the_second_column() -> None:
    y_true = np.array([0, 0, 1, 1, 0, 1])
    positive = np.array([0.1, 0.6, 0.35, 0.8, 0.4, 0.9])
    probabilities = np.column_stack([1 - positive, positive])
    expected = sk.roc_auc_score(y_true, positive)
    assert compute_metric("roc_auc", y_true, probabilities) == pytest.approx(expected)
    # A ranking metric: it differs from accuracy on the same predictions.
    assert expected != pytest.approx(compute_metric("accuracy", y_true, probabilities))


def test_multiclass_roc_auc_tolerates_float32_rounding() -> None:
    probabilities = PROBABILITIES.astype(np.float32) * np.float32(1.00003)
    expected = sk.roc_auc_score(Y_TRUE, PROBABILITIES, multi_class="ovr")
    assert compute_metric("roc_auc", Y_TRUE, probabilities) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("y_true", "probabilities"),
    [
        (np.array([1, 1, 1]), np.array([[0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])),
        (Y_TRUE[:6], PROBABILITIES[:6]),  # class 2 absent
    ],
    ids=["binary-one-class", "multiclass-absent-class"],
)
def test_roc_auc_is_nan_when_a_class_is_absent(
    y_true: np.ndarray, probabilities: np.ndarray
) -> None:
    assert math.isnan(compute_metric("roc_auc", y_true, probabilities))
    # The other metrics stay defined on the same data.
    assert not math.isnan(compute_metric("accuracy", y_true, probabilities))


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match="8 rows"):
        compute_metric("accuracy", Y_TRUE[:5], PROBABILITIES)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        compute_metric("accuracy", Y_TRUE + 1, PROBABILITIES)


def test_report_is_json_ready_and_agrees_with_sklearn() -> None:
    report = classification_report(Y_TRUE, Y_PRED, PROBABILITIES, CLASS_NAMES)
    assert json.loads(json.dumps(report)) == report
    assert report["n_samples"] == len(Y_TRUE)
    assert report["accuracy"] == pytest.approx(sk.accuracy_score(Y_TRUE, Y_PRED))
    assert report["macro_f1"] == pytest.approx(sk.f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert report["roc_auc"] == pytest.approx(compute_metric("roc_auc", Y_TRUE, PROBABILITIES))
    assert list(report["per_class"]) == CLASS_NAMES
    recall = sk.recall_score(Y_TRUE, Y_PRED, average=None)
    for index, name in enumerate(CLASS_NAMES):
        entry = report["per_class"][name]
        assert entry["recall"] == pytest.approx(recall[index])
        assert entry["support"] == int((Y_TRUE == index).sum())
    assert report["confusion_matrix"] == sk.confusion_matrix(Y_TRUE, Y_PRED).tolist()


def test_report_keeps_a_row_for_an_absent_class() -> None:
    y_true, probabilities = Y_TRUE[:6], PROBABILITIES[:6]
    y_pred = np.array([0, 0, 1, 1, 1, 1])
    report = classification_report(y_true, y_pred, probabilities, CLASS_NAMES)
    confusion = np.array(report["confusion_matrix"])
    assert confusion.shape == (3, 3)
    assert confusion[2].sum() == 0
    assert confusion.sum() == report["n_samples"] == 6
    assert report["roc_auc"] is None
    assert report["per_class"]["Erythroblast"]["support"] == 0


def test_report_needs_one_name_per_class() -> None:
    with pytest.raises(ValueError, match="class_names has 2 entries"):
        classification_report(Y_TRUE, Y_PRED, PROBABILITIES, CLASS_NAMES[:2])


def test_log_loss_matches_sklearn_and_stays_finite() -> None:
    expected = sk.log_loss(Y_TRUE, PROBABILITIES, labels=[0, 1, 2])
    assert log_loss_value(Y_TRUE, PROBABILITIES) == pytest.approx(expected)
    certain_and_wrong = np.array([[1.0, 0.0], [0.0, 1.0]])
    loss = log_loss_value(np.array([1, 0]), certain_and_wrong)
    assert math.isfinite(loss)
    assert loss == pytest.approx(-math.log(1e-7))
