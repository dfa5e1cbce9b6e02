"""automl.ensemble.voting: the documented majority tie-break, soft vote, vectorisation."""

from __future__ import annotations

import numpy as np
import pytest

from automl.ensemble.voting import Vote, majority_vote, soft_vote, vote
from automl.errors import ConfigError


def _stack(*rows: list[float]) -> np.ndarray:
    """One sample, one probability row per model -> shape (n_models, 1, C)."""
    return np.array(rows, dtype=np.float64)[:, np.newaxis, :]


def _reference_majority(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loop over samples, spelling out the documented rule."""
    n_models, n_samples, n_classes = probabilities.shape
    labels = np.empty(n_samples, dtype=np.int64)
    votes = np.empty(n_samples, dtype=np.int64)
    for sample in range(n_samples):
        counts = [0] * n_classes
        for model in range(n_models):
            counts[int(np.argmax(probabilities[model, sample]))] += 1
        mean = probabilities[:, sample, :].mean(axis=0)
        best = max(counts)
        tied = [label for label in range(n_classes) if counts[label] == best]
        top = max(mean[label] for label in tied)
        labels[sample] = min(label for label in tied if mean[label] == top)
        votes[sample] = best
    return labels, votes


def test_majority_picks_the_most_voted_class() -> None:
    # Two of three models vote class 0 although class 2 has the higher mean probability.
    result = majority_vote(_stack([0.5, 0.1, 0.4], [0.5, 0.1, 0.4], [0.0, 0.0, 1.0]))
    assert result.labels.tolist() == [0]
    assert result.votes.tolist() == [2]
    assert result.n_models == 3
    assert soft_vote(_stack([0.5, 0.1, 0.4], [0.5, 0.1, 0.4], [0.0, 0.0, 1.0])).labels[0] == 2


def test_majority_tie_goes_to_the_higher_mean_probability() -> None:
    # 2 of 4 models vote A (0), 2 vote B (1); B's mean probability is higher -> B.
    probabilities = _stack([0.6, 0.4], [0.55, 0.45], [0.1, 0.9], [0.2, 0.8])
    result = majority_vote(probabilities)
    assert result.labels.tolist() == [1]
    assert result.votes.tolist() == [2]
    # Swapping the class columns swaps the winner: the tie-break does not favour an index.
    assert majority_vote(probabilities[:, :, ::-1]).labels.tolist() == [0]


def test_majority_tie_break_only_considers_tied_classes() -> None:
    # Classes 0 and 1 tie on votes; class 2 has the highest mean but no top vote count.
    # Means: class 0 -> 0.25, class 1 -> 0.3, class 2 -> about 0.45.
    probabilities = _stack([0.45, 0.1, 0.45 - 1e-9], [0.05, 0.5, 0.45])
    result = majority_vote(probabilities)
    assert result.labels.tolist() == [1]
    assert result.votes.tolist() == [1]


def test_majority_exact_tie_goes_to_the_lowest_index() -> None:
    probabilities = _stack([0.0, 0.75, 0.25], [0.0, 0.25, 0.75])
    result = majority_vote(probabilities)
    assert result.labels.tolist() == [1]
    assert result.votes.tolist() == [1]


def test_votes_count_models_choosing_the_winner() -> None:
    probabilities = np.array(
        [
            [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]],
            [[0.8, 0.2], [0.2, 0.8], [0.3, 0.7]],
            [[0.7, 0.3], [0.6, 0.4], [0.2, 0.8]],
        ]
    )
    result = majority_vote(probabilities)
    assert result.labels.tolist() == [0, 1, 1]
    assert result.votes.tolist() == [3, 2, 2]
    np.testing.assert_allclose(result.probabilities, probabilities.mean(axis=0))
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0)


def test_soft_vote_is_argmax_of_the_mean() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(4), size=(5, 200))
    result = soft_vote(probabilities)
    mean = probabilities.mean(axis=0)
    np.testing.assert_array_equal(result.labels, mean.argmax(axis=1))
    np.testing.assert_allclose(result.probabilities, mean)
    expected_votes = (probabilities.argmax(axis=2) == result.labels).sum(axis=0)
    np.testing.assert_array_equal(result.votes, expected_votes)
    assert result.n_models == 5


def test_soft_vote_winner_can_have_fewer_votes() -> None:
    result = soft_vote(_stack([0.55, 0.45], [0.55, 0.45], [0.0, 1.0]))
    assert result.labels.tolist() == [1]
    assert result.votes.tolist() == [1]


def test_vectorised_majority_equals_the_loop_reference() -> None:
    rng = np.random.default_rng(0)
    # Few classes and models make vote ties common; rounding makes exact mean ties occur too.
    probabilities = rng.dirichlet(np.ones(3), size=(4, 3000))
    probabilities[:, :500] = np.round(probabilities[:, :500], 1)
    labels, votes = _reference_majority(probabilities)
    result = majority_vote(probabilities)
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_array_equal(result.votes, votes)


def test_large_input_is_handled() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(8), size=(50, 20_000)).astype(np.float32)
    result = majority_vote(probabilities)
    assert result.labels.shape == result.votes.shape == (20_000,)
    assert result.probabilities.dtype == np.float64
    # Pigeonhole: with 50 models and 8 classes the top class gets at least 7 votes.
    assert (result.votes >= 7).all()
    assert (result.votes <= 50).all()


def test_vote_dispatches_and_rejects_unknown_methods() -> None:
    probabilities = _stack([0.55, 0.45], [0.55, 0.45], [0.0, 1.0])
    assert vote(probabilities, "majority").labels.tolist() == [0]
    assert vote(probabilities, "soft").labels.tolist() == [1]
    with pytest.raises(ConfigError, match="majority, soft"):
        vote(probabilities, "hard")


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [
        (np.ones((3, 2)), "n_models, n_samples, n_classes"),
        (np.ones((0, 3, 2)), "empty"),
        (np.array([[[np.nan, 1.0]]]), "NaN"),
    ],
)
def test_invalid_input_is_rejected(probabilities: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        majority_vote(probabilities)


def test_vote_round_trips_through_a_dict() -> None:
    original = majority_vote(_stack([0.6, 0.4], [0.1, 0.9], [0.3, 0.7]))
    restored = Vote.from_dict(original.to_dict())
    np.testing.assert_array_equal(restored.labels, original.labels)
    np.testing.assert_array_equal(restored.votes, original.votes)
    np.testing.assert_allclose(restored.probabilities, original.probabilities)
    assert restored.n_models == original.n_models


def _dyadic_stack(seed: int, n_models: int, n_samples: int, n_classes: int) -> np.ndarray:
    """Probabilities in multiples of 1/8: sums are exact in float64 in any order, and ties
    between classes (in votes and in mean probability) are frequent."""
    rng = np.random.default_rng(seed)
    eighths = rng.multinomial(8, np.ones(n_classes) / n_classes, size=(n_models, n_samples))
    return eighths / 8.0


@pytest.mark.parametrize("method", ["majority", "soft"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_vote_equals_the_vote_of_repeated_models(method: str, seed: int) -> None:
    probabilities = _dyadic_stack(seed, n_models=4, n_samples=2000, n_classes=3)
    weights = np.random.default_rng(seed + 10).integers(1, 5, size=4)
    weighted = vote(probabilities, method, weights=weights)
    repeated = vote(np.repeat(probabilities, weights, axis=0), method)
    np.testing.assert_array_equal(weighted.labels, repeated.labels)
    np.testing.assert_array_equal(weighted.votes, repeated.votes)
    np.testing.assert_array_equal(weighted.probabilities, repeated.probabilities)
    assert weighted.n_models == repeated.n_models == int(weights.sum())
    assert weighted.votes.dtype == np.int64


def test_weighted_majority_follows_the_documented_rule() -> None:
    # Unweighted: 2 votes for class 0 against 1 for class 1. Weighting the third model 3x
    # turns it into 2 against 3, and the winner's mean probability is the weighted mean.
    probabilities = _stack([0.6, 0.4], [0.7, 0.3], [0.2, 0.8])
    assert majority_vote(probabilities).labels.tolist() == [0]
    result = majority_vote(probabilities, weights=[1, 1, 3])
    assert result.labels.tolist() == [1]
    assert result.votes.tolist() == [3]
    np.testing.assert_allclose(result.probabilities, [[(0.6 + 0.7 + 3 * 0.2) / 5, 3.1 / 5]])


def test_unit_weights_are_the_unweighted_vote_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(5), size=(6, 500))
    for method in ("majority", "soft"):
        plain = vote(probabilities, method)
        ones = vote(probabilities, method, weights=np.ones(6, dtype=int))
        np.testing.assert_array_equal(plain.probabilities, ones.probabilities)
        np.testing.assert_array_equal(plain.labels, ones.labels)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1, 2], "one entry per model \\(3\\)"),
        ([1, 0, 2], "positive integers"),
        ([1, 1.5, 2], "positive integers"),
        ([True, True, True], "positive integers"),
    ],
)
def test_invalid_weights_are_rejected(weights: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        majority_vote(_stack([0.6, 0.4], [0.7, 0.3], [0.2, 0.8]), weights=weights)
