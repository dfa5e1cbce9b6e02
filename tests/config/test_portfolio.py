"""automl.config.portfolio: known-good configurations projected into the user's space."""

from __future__ import annotations

import textwrap

import optuna
import pytest
import yaml

from automl.config.portfolio import PORTFOLIO, project, warm_start_trials
from automl.config.space import SearchSpace, parse_space

RESNET = next(entry for entry in PORTFOLIO if entry.name == "resnet_cosine")
CNN = next(entry for entry in PORTFOLIO if entry.name == "cnn")


def space_of(text: str) -> SearchSpace:
    return parse_space(yaml.safe_load(textwrap.dedent(text)), image_size=32)


SMALL_CELLS = """\
    backbone:
      type: categorical
      choices:
        custom_resnet:
          stages: 3
          width: {type: categorical, choices: [24, 48]}
          blocks_per_stage: {type: int, low: 1, high: 2}
        custom_cnn: {blocks: {type: int, low: 2, high: 4}, filters: 64}
    head: {layers: {type: int, low: 0, high: 1}, dropout: {type: float, low: 0.0, high: 0.3}}
    optimizer: {type: categorical, choices: {adam: {}, adamw: {}}}
    learning_rate: {type: float, low: 3.0e-3, high: 1.0e-2, log: true}
    schedule: cosine
    epochs: 6
    """


def test_a_value_the_space_fixes_is_kept_and_a_range_is_clamped() -> None:
    space = space_of(SMALL_CELLS)
    projected = project(RESNET.params, space)
    assert projected is not None
    # stages, stem_stride and schedule are fixed by the space: not enqueued, the space's value
    # stays; the rate 2e-3 is clamped to the range's 3e-3; width 16 becomes the nearest choice.
    assert "backbone.custom_resnet.stages" not in projected
    assert "schedule" not in projected and "warmup_epochs" not in projected
    assert projected["learning_rate"] == pytest.approx(3.0e-3)
    assert projected["backbone.custom_resnet.width"] == 24
    assert projected["backbone"] == "custom_resnet"
    # A trial that takes the projected parameters draws a valid configuration of the space.
    trial = optuna.trial.FixedTrial(projected)
    params = space.suggest(trial)
    assert params["backbone"]["stages"] == 3 and params["schedule"] == "cosine"
    # The CNN's 0.5 dropout lies above the head's 0.3: clamped; its 32 filters are fixed at 64.
    cnn = project(CNN.params, space)
    assert cnn is not None
    assert cnn["head.dropout_0"] == pytest.approx(0.3)
    assert "backbone.custom_cnn.filters" not in cnn


def test_a_choice_the_space_lacks_drops_the_entry() -> None:
    only_cnn = space_of(SMALL_CELLS.replace("adamw: {}", "sgd: {}"))
    assert project(RESNET.params, only_cnn) is not None  # adam is still there
    no_adam = space_of(SMALL_CELLS.replace("adam: {}, adamw: {}", "sgd: {}, adamw: {}"))
    assert project(RESNET.params, no_adam) is None  # the portfolio's adam is missing
    fixed_cnn = space_of(
        """\
        backbone: {name: custom_cnn, blocks: {type: int, low: 1, high: 3}}
        learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        """
    )
    assert project(RESNET.params, fixed_cnn) is None  # the space fixes another backbone
    assert project(CNN.params, fixed_cnn) == {"backbone.custom_cnn.blocks": 3,
                                               "learning_rate": 1.0e-3}  # fmt: skip


def test_the_users_entries_come_first_and_duplicates_are_left_out() -> None:
    space = space_of(SMALL_CELLS)
    mine = ({"backbone": "custom_cnn", "learning_rate": 5.0e-3},)
    trials = warm_start_trials(space, mine, "portfolio")
    assert trials[0].origin == "study.enqueue[0]" and trials[0].params == mine[0]
    origins = [t.origin for t in trials]
    assert "portfolio:resnet_cosine" in origins and "portfolio:cnn" in origins
    # Under a fixed cosine schedule the CNN with and without cosine project to the same trial.
    assert "portfolio:cnn_cosine" not in origins
    assert len({str(sorted(t.params.items())) for t in trials}) == len(trials)
    # No pretrained entry: the space cannot draw those backbones.
    assert not any("convnext" in o or "finetune" in o for o in origins)
    assert warm_start_trials(space, mine, "none") == trials[:1]


def test_a_fixed_space_enqueues_nothing() -> None:
    fixed = space_of("backbone: {name: custom_cnn, blocks: 3}\nlearning_rate: 1.0e-3\n")
    assert warm_start_trials(fixed, (), "portfolio") == []


def test_a_pretrained_space_gets_the_seed_recipe_with_its_head() -> None:
    space = space_of(
        """\
        backbone:
          type: categorical
          choices:
            convnext_tiny: {weights: none, unfrozen_layers: {type: int, low: 0, high: 40}}
            custom_cnn: {}
        head:
          layers: {type: int, low: 1, high: 3}
          units: {type: categorical, choices: [128, 256, 512]}
          dropout: {type: float, low: 0.2, high: 0.5}
        optimizer: {type: categorical, choices: {lion: {}, adam: {}}}
        learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        augment: {randaugment_magnitude: {type: float, low: 0.2, high: 0.45}}
        """
    )
    by_origin = {t.origin: t.params for t in warm_start_trials(space, (), "portfolio")}
    seed = by_origin["portfolio:convnext_seed"]
    assert seed["backbone.convnext_tiny.unfrozen_layers"] == 15
    assert [seed[f"head.units_{i}"] for i in range(3)] == [512, 256, 128]
    assert seed["optimizer"] == "lion" and seed["augment.randaugment_magnitude"] == 0.32
    # The fine-tune entry's fixed-in-space cosine is dropped, its head is clamped into range.
    assert by_origin["portfolio:convnext_tiny_finetune"]["head.dropout_0"] == pytest.approx(0.3)
