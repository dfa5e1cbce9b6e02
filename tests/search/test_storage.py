"""automl.search.storage through its API: create or resume a study, samplers, the stored config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from automl.config.schema import Config, config_from_dict
from automl.errors import StudyError
from automl.search.attrs import CONFIG_ATTR, CONFIG_MISSING_ATTR
from automl.search.storage import (
    config_from_study,
    create_or_load,
    load_study,
    make_sampler,
    publish_config,
    top_trials,
)


def _config(studies: Path, **study: Any) -> Config:
    raw = {
        "study": {"name": "cells", "n_trials": 4, "seed": 3, "studies_dir": str(studies), **study},
        "data": {"format": "digits", "image_size": 8, "n_folds": 2},
        "space": {
            "backbone": {
                "name": "custom_cnn",
                "blocks": 1,
                "filters": {"type": "categorical", "choices": [4, 8]},
            },
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "epochs": 1,
        },
    }
    return config_from_dict(raw, source="test")


def test_a_second_create_or_load_resumes_without_enqueueing_twice(tmp_path: Path) -> None:
    config = _config(tmp_path, enqueue=[{"learning_rate": 0.01}])
    first = create_or_load(config)
    # The file's entry, then the portfolio's CNN projected into the space (8 filters, 1e-3).
    assert [t.state for t in first.trials] == [TrialState.WAITING] * 2
    queued = [t.system_attrs["fixed_params"] for t in first.trials]
    assert queued == [
        {"learning_rate": 0.01},
        {"backbone.custom_cnn.filters": 8, "learning_rate": 1.0e-3},
    ]
    assert first.metric_names == ["accuracy"]
    again = create_or_load(config)
    assert again.study_name == first.study_name and len(again.trials) == 2
    assert (tmp_path / "cells" / "study.journal").is_file()
    alone = create_or_load(_config(tmp_path / "other", warm_start="none"))
    assert alone.trials == []


def test_the_sampler_seed_moves_with_existing_trials_and_the_worker_salt(tmp_path: Path) -> None:
    config = _config(tmp_path, sampler={"name": "random"})

    def first_draw(**seeding: int) -> float:
        study = optuna.create_study(sampler=make_sampler(config, **seeding))
        return study.ask().suggest_float("x", 0.0, 1.0)

    assert first_draw() == first_draw()  # seeded: a rerun draws the same
    assert first_draw(n_existing_trials=5) != first_draw()  # a resume does not replay
    assert first_draw(salt=1) != first_draw()  # two workers do not draw alike


def test_the_published_config_rebuilds_the_study_elsewhere(tmp_path: Path) -> None:
    config = _config(tmp_path / "machine1")
    study = create_or_load(config)
    publish_config(study, config, {"folds": [[0, 1]]})
    assert study.user_attrs[CONFIG_ATTR]["study"]["storage"] is None  # no password in it
    elsewhere = config_from_study(
        study, storage="postgresql://u:secret@db/automl", studies_dir=tmp_path / "machine2"
    )
    assert elsewhere.space.param_distributions() == config.space.param_distributions()
    assert elsewhere.to_dict()["data"] == config.to_dict()["data"]
    assert elsewhere.study.directory == tmp_path / "machine2" / "cells"
    assert "secret" not in elsewhere.source  # the URL is shown masked


def test_a_study_without_its_config_names_why_and_what_to_copy(tmp_path: Path) -> None:
    study = create_or_load(_config(tmp_path))
    with pytest.raises(StudyError, match="holds no automl configuration"):
        config_from_study(study, storage="sqlite://", studies_dir=tmp_path)
    study.set_user_attr(CONFIG_MISSING_ATTR, "not JSON: a date")
    with pytest.raises(StudyError, match=r"\(not JSON: a date\); copy studies/cells/config.yaml"):
        config_from_study(study, storage="sqlite://", studies_dir=tmp_path)


@pytest.mark.parametrize(
    ("direction", "expected"), [("maximize", [1, 0, 3]), ("minimize", [2, 0, 3])]
)
def test_top_trials_are_the_best_complete_ones_ties_by_number(
    direction: str, expected: list[int]
) -> None:
    study = optuna.create_study(direction=direction)
    for value in (0.5, 0.9, 0.1, 0.5):
        study.add_trial(optuna.trial.create_trial(value=value))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED))
    assert [t.number for t in top_trials(study, 3)] == expected


def test_load_study_names_the_studies_it_knows(tmp_path: Path) -> None:
    config = _config(tmp_path)
    create_or_load(config)
    config.save(config.study.directory / "config.yaml")
    loaded, study = load_study("cells", tmp_path)
    assert study.study_name == "cells" and loaded.study.directory == config.study.directory
    with pytest.raises(StudyError, match=r"known studies in .*: cells\. Run `automl tune"):
        load_study("other", tmp_path)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_database_study_gets_beats_that_survive_a_blip(tmp_path: Path) -> None:
    from automl.search.heartbeat import HeartbeatRDBStorage
    from automl.search.storage import open_storage

    config = _config(tmp_path / "studies", storage=f"sqlite:///{tmp_path / 'study.db'}")
    storage = open_storage(config)
    assert isinstance(storage, HeartbeatRDBStorage)
    assert storage.get_heartbeat_interval() == config.study.heartbeat_interval


def test_trial_counts_are_typed_and_cover_every_state(tmp_path: Path) -> None:
    from automl.search.storage import TrialCounts, counts_by_state

    study = create_or_load(_config(tmp_path / "studies", warm_start="none"))
    study.tell(study.ask(), 0.5)
    study.tell(study.ask(), state=TrialState.PRUNED)
    study.tell(study.ask(), state=TrialState.FAIL)
    study.ask()  # left running
    study.enqueue_trial({"learning_rate": 0.01})
    assert counts_by_state(study) == TrialCounts(
        complete=1, pruned=1, fail=1, running=1, waiting=1
    )
