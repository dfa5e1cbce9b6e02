"""Threshold choice for a target recall, on out-of-fold-like probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from automl.ensemble.thresholds import apply_threshold, choose_threshold, rates_at


def test_threshold_reaches_the_target_recall_and_is_the_highest_that_does() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.35 * y + rng.normal(0.35, 0.2, 500), 0, 1)
    chosen = choose_threshold(y, p, positive_index=1, positive_class="tumour", target_recall=0.95)
    assert chosen.recall >= 0.95
    higher = np.nextafter(chosen.threshold, 1.0)
    assert rates_at(y, p, 1, higher)[0] < 0.95  # any higher cut-off misses the target
    assert chosen.precision == pytest.approx(rates_at(y, p, 1, chosen.threshold)[1])


def test_apply_threshold_picks_the_positive_class_at_or_above() -> None:
    p = np.array([0.1, 0.5, 0.9])
    assert apply_threshold(p, 0.5, positive_index=1).tolist() == [0, 1, 1]
    assert apply_threshold(p, 0.5, positive_index=0).tolist() == [1, 0, 0]


def test_no_positive_sample_is_an_error() -> None:
    with pytest.raises(ValueError, match="no sample of the positive class 'b'"):
        choose_threshold(
            np.zeros(4, int),
            np.full(4, 0.3),
            positive_index=1,
            positive_class="b",
            target_recall=0.9,
        )


def test_one_positive_class_rule_the_second_class_unless_chosen() -> None:
    from automl.ensemble.thresholds import positive_class

    assert positive_class(("normal", "tumour")) == "tumour"  # README: default the second class
    assert positive_class(("normal", "tumour"), "normal") == "normal"
