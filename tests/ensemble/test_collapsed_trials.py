"""A trial whose out-of-fold predictions collapse onto one or two classes is flagged and left out.

On scikit-learn's digits (real handwritten scans, 10 classes). A custom CNN of one filter with
no head, at a rate of 1e-9, keeps its initial weights and sees each image as one number: its
logits are ``w_c * f + b_c`` with ``f >= 0`` and zero biases, so every image goes to the class
of the largest ``w_c`` (or to class 0 where ``f`` is 0). That trial collapses by construction;
a CNN that learns does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import optuna_dashboard
import pytest
from optuna.trial import TrialState

from automl.config.schema import load_config
from automl.ensemble.build import run_ensemble
from automl.errors import StudyError
from automl.metrics import collapsed_onto
from automl.search.attrs import COLLAPSED
from automl.search.tune import run_tune

STUDY = """
study:
  name: collapse
  n_trials: {n_trials}
  seed: 5
  sampler: {{name: random}}
  pruner: {{name: none}}
  studies_dir: {studies}
  warm_start: none
  enqueue: {enqueue}
data: {{format: digits, image_size: 16, n_folds: 2, holdout_fraction: 0.2}}
space:
  backbone:
    name: custom_cnn
    blocks: 1
    filters: {{type: categorical, choices: [1, 16]}}
    batchnorm: false
  head: {{layers: 0}}
  learning_rate: {{type: float, low: 1.0e-9, high: 1.0e-2, log: true}}
  batch_size: 32
  epochs: 2
ensemble: {{selection: top_k, top_k: 2, vote: soft}}
"""
COLLAPSING = "{backbone.custom_cnn.filters: 1, learning_rate: 1.0e-9}"
LEARNING = "{backbone.custom_cnn.filters: 16, learning_rate: 5.0e-3}"


def _config(tmp_path: Path, enqueue: str, n_trials: int):
    path = tmp_path / "collapse.yaml"
    text = STUDY.format(n_trials=n_trials, studies=tmp_path / "studies", enqueue=enqueue)
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_a_collapsed_trial_is_flagged_and_never_enters_the_ensemble(tmp_path: Path) -> None:
    config = _config(tmp_path, f"[{COLLAPSING}, {LEARNING}]", n_trials=2)
    study = run_tune(config, progress=False).study
    collapsed, learning = study.trials
    assert collapsed.state == learning.state == TrialState.COMPLETE
    assert "predicts only" in collapsed.user_attrs[COLLAPSED]
    assert COLLAPSED not in learning.user_attrs  # no false alarm on a model that learned
    note = optuna_dashboard.get_note(optuna.trial.Trial(study, collapsed._trial_id))
    assert "**Collapsed:** out-of-fold it predicts only" in note
    # top_k 2 would take both trials; the collapsed one is neither a member nor the best trial.
    result = run_ensemble(config, study)
    assert [m.trial for m in result.members] == [learning.number]
    assert result.holdout is not None
    assert result.holdout.best_single_trial.trial == learning.number


def test_a_study_of_collapsed_trials_alone_is_one_clear_error(tmp_path: Path) -> None:
    config = _config(tmp_path, f"[{COLLAPSING}]", n_trials=1)
    study = run_tune(config, progress=False).study
    with pytest.raises(StudyError, match=r"every completed trial .* predicts only one or two"):
        run_ensemble(config, study)


def test_the_collapse_check_flags_a_one_class_vote_and_not_real_predictions(
    shared_data: Path,
) -> None:
    # Precision on a whole real set: the 12-class labels of all 19,871 chula_rbc12 crops, with
    # a prediction that gets 70% of every class right and spreads the rest: not collapsed; the
    # majority-class vote and a two-class vote are.
    import pandas as pd

    manifest = pd.read_csv(shared_data / "chula_rbc12" / "manifest.csv")
    labels = manifest["class_code"].to_numpy()
    names = tuple(manifest.sort_values("class_code")["class_name"].unique())
    rng = np.random.default_rng(0)
    guessed = np.where(rng.random(len(labels)) < 0.7, labels, rng.integers(0, 12, len(labels)))
    assert collapsed_onto(labels, np.eye(12)[guessed], names) is None
    majority = np.eye(12)[np.zeros(len(labels), dtype=int)]
    assert collapsed_onto(labels, majority, names) == (
        "predicts only 1 of 12 classes (normal_cell 100% of the images), while the labels hold 11"
    )
    two = np.eye(12)[np.where(labels == 1, 1, 0)]
    assert "predicts only 2 of 12 classes" in collapsed_onto(labels, two, names)
