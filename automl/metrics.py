"""Scores computed from class probabilities: the study objective and the evaluation reports.

Every function takes integer labels ``y_true`` of shape ``(n,)`` and a probability matrix of
shape ``(n, C)`` (rows summing to 1, as a softmax returns them); the number of classes ``C`` is
the width of that matrix, so a class that happens to be absent from a fold is still counted.

``accuracy``, ``balanced_accuracy`` and ``macro_f1`` score the predicted class (the argmax of
each row); ``roc_auc`` scores the probabilities themselves. ROC AUC is undefined when a class is
missing from ``y_true``; :func:`compute_metric` then returns ``nan`` and leaves the decision (fail,
prune, or fall back to another metric) to its caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as _sk

from automl.errors import ConfigError

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")
"""Names accepted by :func:`compute_metric` (and by the ``metric:`` key of a study)."""

_DIRECTIONS = {name: "maximize" for name in METRICS}

# Keras' backend epsilon: clipping the same way keeps our log loss comparable with the
# ``loss`` curve Keras reports for categorical cross-entropy.
_LOG_LOSS_EPSILON = 1e-7


def metric_direction(name: str) -> str:
    """Return the Optuna direction of a metric.

    Args:
        name: one of :data:`METRICS`.

    Returns:
        ``"maximize"`` or ``"minimize"`` (every metric in :data:`METRICS` is maximised).

    Raises:
        ConfigError: ``name`` is not a known metric.
    """
    _check_name(name)
    return _DIRECTIONS[name]


def compute_metric(name: str, y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Score class probabilities against the true labels.

    Args:
        name: one of :data:`METRICS`.
        y_true: integer class indices, shape ``(n,)``, each in ``range(C)``.
        probabilities: shape ``(n, C)``; rows sum to 1.

    Returns:
        The score as a Python float. ``roc_auc`` is ``nan`` when some class of ``range(C)`` does
        not occur in ``y_true`` (the score is undefined then).

    Raises:
        ConfigError: ``name`` is not a known metric.
        ValueError: the arrays do not have the shapes above.
    """
    _check_name(name)
    y_true, probabilities = _check_arrays(y_true, probabilities)
    return score_predictions(name, y_true, probabilities.argmax(axis=1), probabilities)


def score_predictions(
    name: str, y_true: np.ndarray, y_pred: np.ndarray, probabilities: np.ndarray
) -> float:
    """Score an ensemble's decision: predicted labels, or probabilities for ``roc_auc``.

    :func:`compute_metric` takes the argmax of ``probabilities``; a majority vote's label need
    not be that argmax, so ``accuracy``, ``balanced_accuracy`` and ``macro_f1`` are computed
    from ``y_pred`` here and ``roc_auc`` from ``probabilities`` (the vote's mean probabilities).

    Args:
        name: one of :data:`METRICS`.
        y_true: integer class indices, shape ``(n,)``.
        y_pred: predicted class indices, shape ``(n,)``.
        probabilities: shape ``(n, C)``.

    Returns:
        The score as a Python float (``nan`` for an undefined ``roc_auc``, as in
        :func:`compute_metric`).

    Raises:
        ConfigError: ``name`` is not a known metric.
        ValueError: the arrays do not have the shapes above.
    """
    _check_name(name)
    y_true, probabilities = _check_arrays(y_true, probabilities)
    y_pred = _check_labels(y_pred, probabilities.shape[1], "y_pred")
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_pred has shape {y_pred.shape}, expected {y_true.shape} like y_true.")
    if name == "accuracy":
        return float(_sk.accuracy_score(y_true, y_pred))
    if name == "balanced_accuracy":
        return _balanced_accuracy(y_true, y_pred)
    if name == "macro_f1":
        return _macro_f1(y_true, y_pred)
    return _roc_auc(y_true, probabilities)


def classification_report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str] | tuple[str, ...],
) -> dict[str, Any]:
    """Summarise predictions in a JSON-ready dictionary.

    ``y_pred`` is passed separately from ``probabilities`` because the predicted label of an
    ensemble (a majority vote) need not be the argmax of its mean probabilities.

    Args:
        y_true: integer class indices, shape ``(n,)``.
        y_pred: predicted class indices, shape ``(n,)``.
        probabilities: shape ``(n, C)``; used for ROC AUC only.
        class_names: ``C`` names, in class-index order.

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``macro_f1`` and ``roc_auc`` (``None`` when
        undefined) as floats; ``n_samples``; ``per_class`` mapping each class name to its
        ``precision``, ``recall``, ``f1`` and ``support``; ``confusion_matrix`` as a list of
        ``C`` lists of ``C`` counts (rows are true classes, columns predicted classes, every class
        has a row even when absent). Only Python ``int``/``float``/``str``/``None`` values.

    Raises:
        ValueError: shapes disagree, or ``class_names`` does not have ``C`` entries.
    """
    y_true, probabilities = _check_arrays(y_true, probabilities)
    y_pred = _check_labels(y_pred, probabilities.shape[1], "y_pred")
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_pred has shape {y_pred.shape}, expected {y_true.shape} like y_true.")
    n_classes = probabilities.shape[1]
    if len(class_names) != n_classes:
        raise ValueError(
            f"class_names has {len(class_names)} entries but probabilities have "
            f"{n_classes} columns; pass one name per class."
        )
    labels = list(range(n_classes))
    precision, recall, f1, support = _sk.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = {
        str(name): {
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "f1": float(f1[index]),
            "support": int(support[index]),
        }
        for index, name in enumerate(class_names)
    }
    confusion = _sk.confusion_matrix(y_true, y_pred, labels=labels)
    roc_auc = _roc_auc(y_true, probabilities)
    return {
        "accuracy": float(_sk.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "macro_f1": _macro_f1(y_true, y_pred),
        "roc_auc": None if np.isnan(roc_auc) else roc_auc,
        "n_samples": int(y_true.shape[0]),
        "per_class": per_class,
        "confusion_matrix": confusion.astype(int).tolist(),
    }


def log_loss_value(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean categorical cross-entropy, for learning curves.

    The probability of the true class is clipped to ``[1e-7, 1]`` (as Keras does), so a
    confident mistake costs at most ``-log(1e-7) ~= 16.1`` instead of infinity.

    Args:
        y_true: integer class indices, shape ``(n,)``.
        probabilities: shape ``(n, C)``.

    Returns:
        The mean loss as a Python float.

    Raises:
        ValueError: the arrays do not have the shapes above.
    """
    y_true, probabilities = _check_arrays(y_true, probabilities)
    true_class = probabilities[np.arange(y_true.shape[0]), y_true]
    return float(-np.log(np.clip(true_class, _LOG_LOSS_EPSILON, 1.0)).mean())


def _check_name(name: str) -> None:
    if name not in _DIRECTIONS:
        raise ConfigError(
            f"metric must be one of {', '.join(METRICS)}, got {name!r}; pick one of those names."
        )


def _check_labels(labels: Any, n_classes: int, what: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{what} must be 1-D class indices, got shape {array.shape}.")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class indices, got dtype {array.dtype}.")
    if array.size and (array.min() < 0 or array.max() >= n_classes):
        raise ValueError(
            f"{what} must hold class indices in 0..{n_classes - 1}, "
            f"got values from {array.min()} to {array.max()}."
        )
    return array.astype(np.int64, copy=False)


def _check_arrays(y_true: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] < 1:
        raise ValueError(
            f"probabilities must have shape (n_samples, n_classes), got {probabilities.shape}."
        )
    if probabilities.shape[0] == 0:
        raise ValueError("cannot score an empty set: probabilities has no rows.")
    y_true = _check_labels(y_true, probabilities.shape[1], "y_true")
    if y_true.shape[0] != probabilities.shape[0]:
        raise ValueError(
            f"y_true has {y_true.shape[0]} labels but probabilities has "
            f"{probabilities.shape[0]} rows; they must describe the same samples."
        )
    return y_true, probabilities


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    # Mean recall over the classes present in y_true. sklearn warns when y_pred holds a class
    # absent from y_true; that is normal for a small fold, so the warning is not raised here.
    recalls = [np.mean(y_pred[y_true == label] == label) for label in np.unique(y_true)]
    return float(np.mean(recalls))


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    # sklearn's default label set (classes in y_true or y_pred): a class that is neither present
    # nor predicted says nothing about the model and must not drag the mean down with an F1 of 0.
    return float(_sk.f1_score(y_true, y_pred, average="macro", zero_division=0))


def _roc_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    n_classes = probabilities.shape[1]
    if n_classes < 2 or np.unique(y_true).size < n_classes:
        return float("nan")
    if n_classes == 2:
        return float(_sk.roc_auc_score(y_true, probabilities[:, 1]))
    # sklearn insists that rows sum to 1 within 1e-5; float32 softmax output can miss that.
    rows = probabilities / probabilities.sum(axis=1, keepdims=True)
    return float(
        _sk.roc_auc_score(
            y_true, rows, multi_class="ovr", average="macro", labels=list(range(n_classes))
        )
    )


#: A class counts as predicted (or present) when it takes at least this share of the images.
COLLAPSE_MIN_SHARE = 0.01


def collapsed_onto(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> str | None:
    """Say so when the predictions collapse onto one or two classes; None when they do not.

    A model that predicts only the largest class (or the two largest) scores that share of
    accuracy and can outvote better models in an ensemble. The predictions collapse when they
    use at most one class (two or three classes in all) or at most two (four or more), while the
    true labels use more; a class is used when it takes at least :data:`COLLAPSE_MIN_SHARE` of
    the images, so a class the labels barely hold does not count either way.
    """
    n_classes = probabilities.shape[1]
    if n_classes < 2 or len(y_true) == 0:
        return None
    limit = 1 if n_classes <= 3 else 2
    predicted = np.bincount(np.argmax(probabilities, axis=1), minlength=n_classes)
    present = np.bincount(np.asarray(y_true), minlength=n_classes)
    floor = COLLAPSE_MIN_SHARE * len(y_true)
    used = np.flatnonzero(predicted >= floor)
    if len(used) > limit or np.count_nonzero(present >= floor) <= limit:
        return None
    shares = ", ".join(
        f"{class_names[i]} {predicted[i] / len(y_true):.0%}"
        for i in sorted(used, key=lambda i: -predicted[i])
    )
    return (
        f"predicts only {len(used)} of {n_classes} classes ({shares} of the images), while the "
        f"labels hold {int(np.count_nonzero(present >= floor))}"
    )
