"""Approximate nearest neighbours on the audit's real descriptors (chula_rbc12 crops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from automl.data.audit.fingerprints import compute_features
from automl.data.audit.neighbours import nearest_neighbours


@pytest.fixture(scope="module")
def descriptors(shared_data: Path) -> np.ndarray:
    """Tone histograms of 3,000 real crops, reduced as the audit reduces them."""
    files = sorted((shared_data / "chula_rbc12").glob("*/*.jpg"))[::6][:3000]
    features = compute_features(len(files), lambda i: Image.open(files[i]))
    tones = features.tones[:, 0].astype(np.float32)
    return PCA(24, random_state=0).fit_transform(tones)


def test_finds_most_true_neighbours(descriptors: np.ndarray) -> None:
    found = nearest_neighbours(descriptors, 5)
    exact = NearestNeighbors(n_neighbors=6).fit(descriptors).kneighbors(descriptors)[1][:, 1:]
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found, exact, strict=True)])
    assert recall >= 0.95
    # Nearest first: each row's distances do not decrease.
    gaps = np.linalg.norm(descriptors[found] - descriptors[:, None], axis=2)
    assert (np.diff(gaps, axis=1) >= -1e-5).all()


def test_rows_hold_distinct_other_points(descriptors: np.ndarray) -> None:
    found = nearest_neighbours(descriptors, 7, n_trees=2, leaf_size=16, refine=0)
    assert found.shape == (len(descriptors), 7)
    assert not (found == np.arange(len(descriptors))[:, None]).any()
    assert all(len(set(row)) == len(row) for row in found.tolist())


def test_small_sets_pad_with_minus_one() -> None:
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    found = nearest_neighbours(points, 4)
    assert found.tolist() == [[1, 2, -1, -1], [0, 2, -1, -1], [0, 1, -1, -1]]
    assert nearest_neighbours(points[:1], 3).tolist() == [[-1, -1, -1]]
