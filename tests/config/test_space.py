"""automl.config.space: the ``space:`` section -> Optuna distributions -> resolved params."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FixedTrial

from automl.config.space import SearchSpace, parse_space
from automl.errors import SpaceError

# Conditional on purpose: two backbones with their own sub-spaces, one of them pretrained or
# not; an optimizer whose sgd branch has a momentum; a head of 0-2 layers whose first width is
# fixed and whose second is searched.
CONDITIONAL = """\
    learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    batch_size: {type: categorical, choices: [16, 64, 32]}
    epochs: {type: int, low: 2, high: 12, step: 2}
    backbone:
      type: categorical
      choices:
        custom_cnn: {blocks: {type: int, low: 1, high: 3}, filters: 16}
        mobilenetv3_small:
          weights: {type: categorical, choices: [imagenet, none]}
          unfrozen_layers: {type: int, low: 0, high: 20}
    optimizer:
      type: categorical
      choices:
        adam: {}
        sgd: {momentum: {type: float, low: 0.5, high: 0.99}}
    head:
      layers: {type: int, low: 0, high: 2}
      units: [64, {type: categorical, choices: [16, 32]}]
      dropout: {type: float, low: 0.0, high: 0.5}
    """

CONDITIONAL_NAMES = {
    "learning_rate",
    "batch_size",
    "epochs",
    "backbone",
    "backbone.custom_cnn.blocks",
    "backbone.mobilenetv3_small.weights",
    "backbone.mobilenetv3_small.unfrozen_layers",
    "optimizer",
    "optimizer.sgd.momentum",
    "head.layers",
    "head.units_1",  # head.units_0 is the fixed 64
    "head.dropout_0",
    "head.dropout_1",
}


def space_of(text: str, image_size: int | None = None) -> SearchSpace:
    """Parse a ``space:`` section written as YAML (dedented), the way a file is read."""
    return parse_space(
        yaml.safe_load(textwrap.dedent(text)), source="s.yaml", image_size=image_size
    )


@pytest.fixture
def conditional() -> SearchSpace:
    return space_of(CONDITIONAL)


def fixed_params(**changes: Any) -> dict[str, Any]:
    """A full FixedTrial assignment for CONDITIONAL: custom_cnn, sgd, two head layers."""
    params: dict[str, Any] = {
        "learning_rate": 1.0e-3,
        "batch_size": 32,
        "epochs": 4,
        "backbone": "custom_cnn",
        "backbone.custom_cnn.blocks": 2,
        "optimizer": "sgd",
        "optimizer.sgd.momentum": 0.9,
        "head.layers": 2,
        "head.units_1": 16,
        "head.dropout_0": 0.1,
        "head.dropout_1": 0.2,
    }
    params.update(changes)
    return params


# --- parsing: values and distributions ----------------------------------------------------------


def test_empty_space_is_the_documented_defaults() -> None:
    space = parse_space(None)
    assert space.param_distributions() == {}
    assert space.suggest(FixedTrial({})) == {
        "learning_rate": 1.0e-3,
        "batch_size": 32,
        "epochs": 10,
        "label_smoothing": 0.0,
        "class_weight": "none",
        "schedule": "constant",
        "warmup_epochs": 0,
        "min_lr_ratio": 0.01,
        "augment": {
            "randaugment_magnitude": 0.0,
            "randaugment_ops": 2,
            "flip": "none",
            "rotation": 0.0,
            "mixup_alpha": 0.0,
            "cutmix_alpha": 0.0,
            "mix_probability": 1.0,
            "erasing": 0.0,
        },
        "ema": {"momentum": 0.0},
        "backbone": {
            "name": "custom_cnn",
            "blocks": 3,
            "filters": 32,
            "kernel_size": 3,
            "batchnorm": True,
            "dropout": 0.0,
            "initializer": "he_normal",
            "pooling": "avg",
        },
        "optimizer": {"name": "adam", "beta_1": 0.9, "beta_2": 0.999},
        "head": {"layers": [{"units": 256, "dropout": 0.0}], "batchnorm": False},
    }


def test_distributions_map_one_to_one_onto_optuna() -> None:
    space = space_of(
        """\
        learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        label_smoothing: {type: float, low: 0.0, high: 0.2, step: 0.05}
        epochs: {type: int, low: 2, high: 12, step: 2}
        batch_size: {type: int, low: 8, high: 128, log: true}
        class_weight: {type: categorical, choices: [none, balanced]}
        augment: {rotation: 0.1, flip: {type: categorical, choices: [none, horizontal]}}
        head: {batchnorm: {type: categorical, choices: [true, false]}}
        """
    )
    assert space.param_distributions() == {
        "learning_rate": FloatDistribution(1.0e-4, 1.0e-2, log=True),
        "label_smoothing": FloatDistribution(0.0, 0.2, step=0.05),
        "epochs": IntDistribution(2, 12, step=2),
        "batch_size": IntDistribution(8, 128, log=True),
        "class_weight": CategoricalDistribution(("none", "balanced")),
        "augment.flip": CategoricalDistribution(("none", "horizontal")),
        "head.batchnorm": CategoricalDistribution((True, False)),
    }
    assert space.augment["rotation"] == 0.1


def test_values_are_converted_to_their_kind() -> None:
    space = space_of(
        "epochs: 8.0\nlearning_rate: 1\nbatch_size: {type: categorical, choices: [16.0, 32]}\n"
    )
    assert space.top["epochs"] == 8 and isinstance(space.top["epochs"], int)
    assert space.top["learning_rate"] == 1.0 and isinstance(space.top["learning_rate"], float)
    assert space.top["batch_size"] == CategoricalDistribution((16, 32))


def test_space_must_be_a_mapping() -> None:
    with pytest.raises(
        SpaceError,
        match=r"s\.yaml: space must be a mapping of hyperparameters, got \['learning_rate'\] "
        r"\(list\); see search_spaces/quickstart\.yaml for the form\.",
    ):
        parse_space(["learning_rate"], source="s.yaml")


# --- unknown keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "lr: 0.01\n",
            r"s\.yaml: space\.lr is not a known key; valid keys here: learning_rate, batch_size, "
            r"epochs, label_smoothing, class_weight, schedule, warmup_epochs, min_lr_ratio, ema, "
            r"backbone, optimizer, head, augment\.",
        ),
        (
            "head: {layers: 1, width: 64}\n",
            r"space\.head\.width is not a known key; valid keys here: "
            r"layers, units, dropout, batchnorm\.",
        ),
        (
            "augment: {zoom: 0.1}\n",
            r"space\.augment\.zoom is not a known key; valid keys here: "
            r"randaugment_magnitude, randaugment_ops, flip, rotation, mixup_alpha, cutmix_alpha, "
            r"mix_probability, erasing\.",
        ),
        (
            "backbone: {name: custom_cnn, layers: 3}\n",
            r"space\.backbone\.custom_cnn\.layers is not a known key; valid keys here: blocks, "
            r"filters, kernel_size, batchnorm, dropout, initializer, pooling\.",
        ),
        (
            "backbone: {type: categorical, choices: {convnext_tiny: {blocks: 3}}}\n",
            r"space\.backbone\.convnext_tiny\.blocks is not a known key; valid keys here: "
            r"weights, unfrozen_layers\.",
        ),
        (
            "backbone: {type: categorical, choices: [custom_cnn], default: custom_cnn}\n",
            r"space\.backbone\.default is not a known key; valid keys here: type, choices\.",
        ),
        (
            "optimizer: {name: sgd, beta_1: 0.9}\n",
            r"space\.optimizer\.sgd\.beta_1 is not a known key; valid keys here: "
            r"momentum, nesterov\.",
        ),
        (
            "optimizer: {type: categorical, choices: {adam: {momentum: 0.9}, sgd: {}}}\n",
            r"space\.optimizer\.adam\.momentum is not a known key; valid keys here: "
            r"beta_1, beta_2\.",
        ),
        (
            "learning_rate: {type: float, low: 1.0e-4, hi: 1.0e-2}\n",
            r"space\.learning_rate\.hi is not a known key; valid keys here: "
            r"type, low, high, log, step\.",
        ),
        (
            "batch_size: {type: categorical, choices: [16, 32], log: true}\n",
            r"space\.batch_size\.log is not a known key; valid keys here: type, choices\.",
        ),
    ],
)
def test_unknown_key_is_named_with_the_valid_ones(text: str, match: str) -> None:
    with pytest.raises(SpaceError, match=match):
        space_of(text)


# --- wrong types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "learning_rate: 1e-3\n",
            r"space\.learning_rate must be a number, got '1e-3' \(str\)\. "
            r"YAML reads 1e-3 without a dot as text; write it with a dot",
        ),
        (
            "learning_rate: {type: float, low: 1e-5, high: 1.0e-2, log: true}\n",
            r"space\.learning_rate\.low must be a number, got '1e-5' \(str\)\. "
            r"YAML reads 1e-5 without a dot as text; write it with a dot: 1\.0e-5\.",
        ),
        (
            "optimizer: {name: adamw, weight_decay: {type: float, low: 1.0e-5, high: 1e-2}}\n",
            r"space\.optimizer\.adamw\.weight_decay\.high must be a number, got '1e-2' \(str\)",
        ),
        ("batch_size: '32'\n", r"space\.batch_size must be a number, got '32' \(str\)\."),
        ("epochs: ten\n", r"space\.epochs must be a number, got 'ten' \(str\)\.$"),
        ("epochs: 2.5\n", r"space\.epochs must be an integer, got 2\.5 \(float\)\."),
        (
            "head: {layers: {type: int, low: 0, high: 2.5}}\n",
            r"space\.head\.layers\.high must be an integer, got 2\.5 \(float\)\.",
        ),
        (
            "batch_size: {type: categorical, choices: [16, '32']}\n",
            r"space\.batch_size\.choices\[1\] must be a number, got '32' \(str\)\.",
        ),
        (
            "learning_rate: .nan\n",
            r"space\.learning_rate must be a finite number, got nan; YAML reads \.nan",
        ),
        ("epochs: .inf\n", r"space\.epochs must be a finite number, got inf;"),
        (
            "augment: {flip: no}\n",
            r"space\.augment\.flip must be one of none, horizontal, vertical, "
            r"horizontal_and_vertical, got False \(bool\)\.",
        ),
        (
            "class_weight: {type: categorical, choices: [none, yes]}\n",
            r"space\.class_weight\.choices\[1\] must be one of none, balanced, "
            r"got True \(bool\)\.",
        ),
        (
            "backbone: {name: custom_cnn, pooling: no}\n",
            r"space\.backbone\.custom_cnn\.pooling must be one of avg, flatten, got False",
        ),
        ("head: {batchnorm: 'yes'}\n", r"space\.head\.batchnorm must be true or false, got 'yes'"),
        (
            "optimizer: {name: sgd, nesterov: 1}\n",
            r"nesterov must be true or false, got 1 \(int\)",
        ),
        (
            "backbone: {name: convnext_tiny, weights: 3}\n",
            r"space\.backbone\.convnext_tiny\.weights must be 'imagenet', 'none' or a path to a "
            r"weights file, got 3 \(int\)\.",
        ),
        (
            "learning_rate: 0\n",
            r"space\.learning_rate must be a number in \(0, 10\], got 0\.",
        ),
        ("label_smoothing: 0.7\n", r"space\.label_smoothing must be a number in \[0, 0\.5\]"),
        (
            "head: {dropout: {type: float, low: 0.0, high: 0.99}}\n",
            r"space\.head\.dropout\.high must be a number in \[0, 0\.95\], got 0\.99\.",
        ),
        (
            "head: {layers: {low: 0, high: 2}}\n",
            r"space\.head\.layers must be an integer in \[0, 8\] or a distribution "
            r"\{type: float\|int\|categorical, \.\.\.\}, got a mapping without 'type'",
        ),
        (
            "learning_rate: {type: normal, low: 0.1, high: 0.2}\n",
            r"space\.learning_rate\.type must be float, int or categorical, got 'normal' \(str\)",
        ),
        (
            "epochs: {type: float, low: 1, high: 5}\n",
            r"space\.epochs\.type must suit an integer in \[1, 10000\], got a float "
            r"distribution; use type: int\.",
        ),
        (
            "augment: {flip: {type: int, low: 0, high: 1}}\n",
            r"space\.augment\.flip\.type must suit one of none, .* got a int distribution; "
            r"use type: categorical\.",
        ),
        (
            "learning_rate: {type: float, low: 1.0e-4}\n",
            r"space\.learning_rate is a float distribution without 'high'; add high: <number>\.",
        ),
        (
            "learning_rate: {type: float, low: 1.0e-4, high: 0.1, log: 'yes'}\n",
            r"space\.learning_rate\.log must be true or false, got 'yes' \(str\)\.",
        ),
        (
            "epochs: {type: int, low: 1, high: 9, step: 0}\n",
            r"space\.epochs\.step must be > 0, got 0\.",
        ),
        (
            "batch_size: {type: categorical, choices: []}\n",
            r"space\.batch_size\.choices must be a non-empty list, got \[\] \(list\)\.",
        ),
        (
            "batch_size: {type: categorical, choices: [16, 16]}\n",
            r"space\.batch_size\.choices has duplicates: \[16, 16\]",
        ),
        ("head: 2\n", r"space\.head must be a mapping of settings, got 2 \(int\)\."),
    ],
)
def test_wrong_type_or_value(text: str, match: str) -> None:
    with pytest.raises(SpaceError, match=match):
        space_of(text)


def test_yaml_number_with_a_dot_is_a_float() -> None:
    space = space_of("learning_rate: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}\n")
    assert space.top["learning_rate"] == FloatDistribution(1.0e-5, 1.0e-2, log=True)


# --- ranges -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "epochs: {type: int, low: 5, high: 5}\n",
            r"space\.epochs has an empty range: low == high == 5; write the fixed value 5 "
            r"instead of a distribution\.",
        ),
        (
            "learning_rate: {type: float, low: 0.001, high: 0.001, log: true}\n",
            r"space\.learning_rate has an empty range: low == high == 0\.001",
        ),
        (
            "learning_rate: {type: float, low: 0.1, high: 0.001}\n",
            r"space\.learning_rate has an inverted range: low=0\.1 > high=0\.001; swap them\.",
        ),
        (
            "head: {layers: {type: int, low: 3, high: 1}}\n",
            r"space\.head\.layers has an inverted range: low=3 > high=1; swap them\.",
        ),
        (
            "label_smoothing: {type: float, low: 0.0, high: 0.2, log: true}\n",
            r"space\.label_smoothing\.low must be > 0 with log: true, got 0\.",
        ),
        (
            "head: {layers: {type: int, low: 0, high: 4, log: true}}\n",
            r"space\.head\.layers\.low must be > 0 with log: true, got 0\.",
        ),
        (
            "epochs: {type: int, low: 1, high: 16, log: true, step: 2}\n",
            r"space\.epochs cannot have both log: true and a step \(Optuna forbids it\); "
            r"drop one\.",
        ),
        (
            "learning_rate: {type: float, low: 1.0e-4, high: 0.1, log: true, step: 0.01}\n",
            r"space\.learning_rate cannot have both log: true and a step",
        ),
    ],
)
def test_bad_range(text: str, match: str) -> None:
    with pytest.raises(SpaceError, match=match):
        space_of(text)


# --- backbones and optimizers -------------------------------------------------------------------

BACKBONES = (
    "convnext_tiny, convnext_small, convnext_base, efficientnetv2_b0, efficientnetv2_b1, "
    "efficientnetv2_s, resnet50, resnet50v2, mobilenetv3_small, mobilenetv3_large, vgg16, "
    "custom_cnn, custom_resnet"
)
OPTIMIZERS = "adam, adamw, sgd, rmsprop, lion"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "backbone: resnet18\n",
            rf"space\.backbone has unknown backbone 'resnet18'; valid backbones: {BACKBONES}\.",
        ),
        (
            "backbone: {name: resnet18}\n",
            r"space\.backbone has unknown backbone 'resnet18'; valid backbones: convnext_tiny,",
        ),
        (
            "backbone: {type: categorical, choices: [custom_cnn, vit]}\n",
            r"space\.backbone has unknown backbone 'vit'; valid backbones: convnext_tiny,",
        ),
        (
            "optimizer: adagrad\n",
            rf"space\.optimizer has unknown optimizer 'adagrad'; valid optimizers: {OPTIMIZERS}\.",
        ),
        (
            "optimizer: {type: categorical, choices: {adam: {}, nadam: {}}}\n",
            rf"space\.optimizer has unknown optimizer 'nadam'; valid optimizers: {OPTIMIZERS}\.",
        ),
        (
            "backbone: 5\n",
            r"space\.backbone must be a name, \{name: \.\.\., <settings>\} or "
            r"\{type: categorical, choices: \.\.\.\}, "
            rf"got 5 \(int\); valid names: {BACKBONES}\.",
        ),
        (
            "optimizer: {type: int, low: 0, high: 1}\n",
            r"space\.optimizer\.type must be 'categorical' \(a choice among optimizers\), "
            r"got 'int' \(str\)\.",
        ),
        (
            "optimizer: {type: categorical, choices: []}\n",
            r"space\.optimizer\.choices must be a non-empty list of names or a mapping "
            rf"name -> settings, got \[\] \(list\); valid names: {OPTIMIZERS}\.",
        ),
    ],
)
def test_unknown_backbone_or_optimizer_lists_the_valid_ones(text: str, match: str) -> None:
    with pytest.raises(SpaceError, match=match):
        space_of(text)


def test_branch_forms() -> None:
    named = space_of("backbone: {name: custom_cnn, blocks: 2}\noptimizer: sgd\n")
    assert named.backbone.fixed and named.backbone_names() == ["custom_cnn"]
    assert named.backbone.options["custom_cnn"]["blocks"] == 2
    assert named.optimizer.options == {"sgd": {"momentum": 0.9, "nesterov": False}}

    listed = space_of("optimizer: {type: categorical, choices: [adam, sgd]}\n")
    assert not listed.optimizer.fixed
    assert listed.param_distributions() == {"optimizer": CategoricalDistribution(("adam", "sgd"))}


@pytest.mark.parametrize(
    ("text", "image_size", "match"),
    [
        (
            "backbone: convnext_tiny\n",
            16,
            r"space\.backbone 'convnext_tiny' needs data\.image_size >= 32, got 16; "
            r"raise data\.image_size or use custom_cnn\.",
        ),
        (
            "backbone: {type: categorical, choices: [custom_cnn, efficientnetv2_b0]}\n",
            24,
            r"'efficientnetv2_b0' needs data\.image_size >= 32, got 24",
        ),
        (
            "backbone: {name: custom_cnn, blocks: {type: int, low: 1, high: 5}}\n",
            16,
            r"space\.backbone\.custom_cnn\.blocks allows up to 5 pooling blocks, which need "
            r"images of at least 32 px, got data\.image_size=16; lower blocks\.high or raise "
            r"data\.image_size\.",
        ),
        (
            "backbone: {name: custom_cnn, blocks: 4}\n",
            8,
            r"space\.backbone\.custom_cnn\.blocks allows up to 4 pooling blocks, which need "
            r"images of at least 16 px, got data\.image_size=8",
        ),
        (
            "backbone: {name: custom_resnet, stages: {type: int, low: 2, high: 4}}\n",
            16,
            r"space\.backbone\.custom_resnet\.stages allows 3 halvings of the resolution, "
            r"which need images of at least 32 px, got data\.image_size=16; lower stages\.high",
        ),
        (
            "backbone: {name: custom_resnet, stages: 3, stem_stride: 2}\n",
            16,
            r"custom_resnet\.stages allows 3 halvings .* at least 32 px",
        ),
    ],
)
def test_image_size_too_small_for_the_backbone(text: str, image_size: int, match: str) -> None:
    with pytest.raises(SpaceError, match=match):
        space_of(text, image_size=image_size)
    space_of(text)  # without an image size nothing is checked


@pytest.mark.parametrize(
    ("text", "image_size"),
    [
        ("backbone: convnext_tiny\n", 32),
        ("backbone: {name: custom_cnn, blocks: {type: int, low: 1, high: 4}}\n", 16),
        ("backbone: custom_cnn\n", 8),  # the default 3 blocks need 8 px
    ],
)
def test_image_size_large_enough(text: str, image_size: int) -> None:
    # The smallest size each space needs: accepted, and one pixel less refused.
    space = space_of(text, image_size=image_size)
    assert space == space_of(text)
    with pytest.raises(SpaceError, match=rf"at least {image_size} px|>= {image_size}, got"):
        space_of(text, image_size=image_size - 1)


# --- weights ------------------------------------------------------------------------------------


def test_weights_file_that_exists_is_resolved_to_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "cells.h5").write_bytes(b"\x89HDF\r\n")
    monkeypatch.chdir(tmp_path)
    space = space_of("backbone: {name: convnext_tiny, weights: weights/cells.h5}\n")
    weights = space.backbone.options["convnext_tiny"]["weights"]
    assert Path(weights).is_absolute()
    assert weights == str((tmp_path / "weights" / "cells.h5").resolve())

    choice = space_of(
        "backbone:\n"
        "  name: convnext_tiny\n"
        "  weights: {type: categorical, choices: [imagenet, weights/cells.h5]}\n"
    )
    assert choice.param_distributions()["backbone.convnext_tiny.weights"] == (
        CategoricalDistribution(("imagenet", weights))
    )


@pytest.mark.parametrize("missing", ["missing.h5", "weights"])  # no file / a folder
def test_weights_path_that_is_not_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    (tmp_path / "weights").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        SpaceError,
        match=rf"space\.backbone\.resnet50\.weights must be 'imagenet', 'none' or a path to a "
        rf"weights file, got '{missing}', which is not a file; check the path "
        r"\(relative paths are from the current directory\)\.",
    ):
        space_of(f"backbone: {{name: resnet50, weights: {missing}}}\n")


def test_null_weights_mean_none() -> None:
    space = space_of("backbone: {name: resnet50, weights: null}\n")
    assert space.backbone.options["resnet50"]["weights"] == "none"


# --- per-layer head values ----------------------------------------------------------------------


def test_per_layer_head_values() -> None:
    space = space_of("head: {layers: 2, units: [128, 64], dropout: [0.5, 0.25]}\n")
    params = space.suggest(FixedTrial({}))
    assert params["head"]["layers"] == [
        {"units": 128, "dropout": 0.5},
        {"units": 64, "dropout": 0.25},
    ]


def test_per_layer_list_shorter_than_the_layers() -> None:
    with pytest.raises(
        SpaceError,
        match=r"space\.head\.units lists 2 per-layer values but head\.layers can reach 3; "
        r"give 3 values or one value for every layer\.",
    ):
        space_of("head: {layers: {type: int, low: 1, high: 3}, units: [64, 32]}\n")


def test_per_layer_values_are_checked_one_by_one() -> None:
    with pytest.raises(
        SpaceError, match=r"space\.head\.dropout\[1\] must be a number in \[0, 0\.95\]"
    ):
        space_of("head: {layers: 2, dropout: [0.1, 2.0]}\n")


# --- suggest with Optuna: conditional parameters ------------------------------------------------


def test_param_distributions_lists_every_possible_name(conditional: SearchSpace) -> None:
    distributions = conditional.param_distributions()
    assert set(distributions) == CONDITIONAL_NAMES
    assert distributions["backbone"] == CategoricalDistribution(
        ("custom_cnn", "mobilenetv3_small")
    )
    assert distributions["head.units_1"] == CategoricalDistribution((16, 32))
    assert distributions["head.dropout_1"] == FloatDistribution(0.0, 0.5)


def test_max_epochs_and_batch_size_are_upper_bounds(conditional: SearchSpace) -> None:
    assert conditional.max_epochs() == 12
    assert conditional.max_batch_size() == 64
    assert space_of("epochs: {type: categorical, choices: [3, 7, 5]}\n").max_epochs() == 7
    assert space_of("epochs: 8\n").max_epochs() == 8
    assert space_of("epochs: {type: int, low: 2, high: 11, step: 3}\n").max_epochs() == 11


def test_suggest_on_a_fixed_trial(conditional: SearchSpace) -> None:
    trial = FixedTrial(fixed_params())
    params = conditional.suggest(trial)

    assert params == {
        "learning_rate": 1.0e-3,
        "batch_size": 32,
        "epochs": 4,
        "label_smoothing": 0.0,
        "class_weight": "none",
        "schedule": "constant",
        "warmup_epochs": 0,
        "min_lr_ratio": 0.01,
        "augment": {
            "randaugment_magnitude": 0.0,
            "randaugment_ops": 2,
            "flip": "none",
            "rotation": 0.0,
            "mixup_alpha": 0.0,
            "cutmix_alpha": 0.0,
            "mix_probability": 1.0,
            "erasing": 0.0,
        },
        "ema": {"momentum": 0.0},
        "backbone": {
            "name": "custom_cnn",
            "blocks": 2,
            "filters": 16,
            "kernel_size": 3,
            "batchnorm": True,
            "dropout": 0.0,
            "initializer": "he_normal",
            "pooling": "avg",
        },
        "optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": False},
        "head": {
            "layers": [{"units": 64, "dropout": 0.1}, {"units": 16, "dropout": 0.2}],
            "batchnorm": False,
        },
    }
    assert set(trial.params) == set(fixed_params())


def test_momentum_is_suggested_only_for_sgd(conditional: SearchSpace) -> None:
    params = fixed_params(optimizer="adam")
    del params["optimizer.sgd.momentum"]  # a FixedTrial raises when asked for a missing name
    trial = FixedTrial(params)
    assert conditional.suggest(trial)["optimizer"] == {
        "name": "adam",
        "beta_1": 0.9,
        "beta_2": 0.999,
    }
    assert "optimizer.sgd.momentum" not in trial.params


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_head_parameters_exist_only_for_the_trials_layers(
    conditional: SearchSpace, layers: int
) -> None:
    params = fixed_params(**{"head.layers": layers})
    for i in range(layers, 2):
        params.pop(f"head.units_{i}", None)
        params.pop(f"head.dropout_{i}")
    trial = FixedTrial(params)
    head = conditional.suggest(trial)["head"]["layers"]

    assert len(head) == layers
    assert [layer["units"] for layer in head] == [64, 16][:layers]
    suggested = {name for name in trial.params if name.startswith("head.")}
    assert suggested == {"head.layers"} | {f"head.dropout_{i}" for i in range(layers)} | (
        {"head.units_1"} if layers == 2 else set()
    )


def test_unfrozen_layers_not_suggested_without_pretrained_weights(
    conditional: SearchSpace,
) -> None:
    base = fixed_params(backbone="mobilenetv3_small")
    del base["backbone.custom_cnn.blocks"]

    untrained = FixedTrial({**base, "backbone.mobilenetv3_small.weights": "none"})
    backbone = conditional.suggest(untrained)["backbone"]
    assert backbone == {"name": "mobilenetv3_small", "weights": "none", "unfrozen_layers": -1}
    assert "backbone.mobilenetv3_small.unfrozen_layers" not in untrained.params

    pretrained = FixedTrial(
        {
            **base,
            "backbone.mobilenetv3_small.weights": "imagenet",
            "backbone.mobilenetv3_small.unfrozen_layers": 5,
        }
    )
    backbone = conditional.suggest(pretrained)["backbone"]
    assert backbone == {"name": "mobilenetv3_small", "weights": "imagenet", "unfrozen_layers": 5}


def test_fixed_none_weights_resolve_to_all_layers_trainable() -> None:
    space = space_of("backbone: {name: resnet50, weights: none, unfrozen_layers: 10}\n")
    assert space.suggest(FixedTrial({}))["backbone"] == {
        "name": "resnet50",
        "weights": "none",
        "unfrozen_layers": -1,
    }


def test_suggest_in_a_real_study_follows_the_conditions(conditional: SearchSpace) -> None:
    distributions = conditional.param_distributions()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    resolved: dict[int, dict[str, Any]] = {}

    def objective(trial: optuna.trial.Trial) -> float:
        resolved[trial.number] = conditional.suggest(trial)
        return trial.params["learning_rate"]

    study.optimize(objective, n_trials=80)

    seen: set[str] = set()
    for frozen in study.trials:
        params, out = frozen.params, resolved[frozen.number]
        seen |= set(params)
        for name, dist in frozen.distributions.items():
            assert distributions[name] == dist, name

        assert ("optimizer.sgd.momentum" in params) == (params["optimizer"] == "sgd")
        assert out["optimizer"]["name"] == params["optimizer"]
        cnn = params["backbone"] == "custom_cnn"
        assert ("backbone.custom_cnn.blocks" in params) == cnn
        assert ("backbone.mobilenetv3_small.weights" in params) == (not cnn)
        pretrained = params.get("backbone.mobilenetv3_small.weights") == "imagenet"
        assert ("backbone.mobilenetv3_small.unfrozen_layers" in params) == pretrained
        if not cnn and not pretrained:
            assert out["backbone"]["unfrozen_layers"] == -1

        layers = params["head.layers"]
        assert len(out["head"]["layers"]) == layers
        for i in range(2):
            assert (f"head.dropout_{i}" in params) == (i < layers)
        assert ("head.units_1" in params) == (layers == 2)
        assert all(layer["units"] in (64, 16, 32) for layer in out["head"]["layers"])
        assert out["epochs"] <= conditional.max_epochs()

    assert seen == CONDITIONAL_NAMES


def test_enqueued_names_are_the_suggested_names(conditional: SearchSpace) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial(
        {
            "optimizer": "sgd",
            "optimizer.sgd.momentum": 0.6,
            "head.layers": 2,
            "head.units_1": 32,
            "backbone": "mobilenetv3_small",
            "backbone.mobilenetv3_small.weights": "none",
        }
    )
    resolved: list[dict[str, Any]] = []

    def objective(trial: optuna.trial.Trial) -> float:
        resolved.append(conditional.suggest(trial))
        return 0.0

    study.optimize(objective, n_trials=1)

    params = resolved[0]
    assert params["optimizer"] == {"name": "sgd", "momentum": 0.6, "nesterov": False}
    assert [layer["units"] for layer in params["head"]["layers"]] == [64, 32]
    assert params["backbone"] == {
        "name": "mobilenetv3_small",
        "weights": "none",
        "unfrozen_layers": -1,
    }


# --- training recipe: schedules, weight averaging, batch augmentation, residual backbone --------

RECIPE = """
schedule: {type: categorical, choices: [constant, cosine, cosine_restarts, plateau]}
warmup_epochs: {type: int, low: 0, high: 2}
min_lr_ratio: 0.05
ema: {momentum: {type: categorical, choices: [0.0, 0.99]}}
augment:
  mixup_alpha: {type: float, low: 0.0, high: 0.4}
  cutmix_alpha: 1.0
  mix_probability: 0.5
  erasing: {type: float, low: 0.0, high: 0.25}
backbone:
  type: categorical
  choices:
    custom_cnn: {blocks: 2}
    custom_resnet: {stages: {type: int, low: 2, high: 3}, width: 16, blocks_per_stage: 2}
"""


def test_recipe_keys_are_optuna_parameters_with_their_path_names() -> None:
    space = space_of(RECIPE, image_size=28)
    names = space.param_distributions()
    assert names["schedule"] == CategoricalDistribution(
        ("constant", "cosine", "cosine_restarts", "plateau")
    )
    assert names["ema.momentum"] == CategoricalDistribution((0.0, 0.99))
    assert names["warmup_epochs"] == IntDistribution(0, 2)
    assert {"augment.mixup_alpha", "augment.erasing", "backbone.custom_resnet.stages"} <= set(
        names
    )
    params = space.suggest(
        FixedTrial(
            {
                "schedule": "plateau",
                "warmup_epochs": 1,
                "ema.momentum": 0.99,
                "augment.mixup_alpha": 0.2,
                "augment.erasing": 0.1,
                "backbone": "custom_resnet",
                "backbone.custom_resnet.stages": 3,
            }
        )
    )
    assert params["schedule"] == "plateau" and params["min_lr_ratio"] == 0.05
    assert params["ema"] == {"momentum": 0.99}
    assert params["augment"]["cutmix_alpha"] == 1.0
    assert params["backbone"] == {
        "name": "custom_resnet",
        "stages": 3,
        "width": 16,
        "blocks_per_stage": 2,
        "stem_stride": 1,
        "dropout": 0.0,
    }


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "schedule: linear\n",
            r"space\.schedule must be one of constant, cosine, cosine_restarts, plateau, "
            r"got 'linear' \(str\)\.",
        ),
        ("min_lr_ratio: 1.5\n", r"space\.min_lr_ratio must be a number in \[0, 1\], got 1\.5"),
        (
            "ema: {decay: 0.99}\n",
            r"space\.ema\.decay is not a known key; valid keys here: momentum",
        ),
        ("ema: 0.99\n", r"space\.ema must be a mapping of settings, got 0\.99 \(float\)"),
        ("ema: {momentum: 1.0}\n", r"space\.ema\.momentum must be a number in \[0, 0\.9999\]"),
        ("augment: {erasing: 2}\n", r"space\.augment\.erasing must be a number in \[0, 1\]"),
        ("augment: {mixup_alpha: -0.2}\n", r"space\.augment\.mixup_alpha must be a number"),
        (
            "epochs: 3\nwarmup_epochs: 3\n",
            r"space\.warmup_epochs must be less than epochs \(3\), got 3; lower warmup_epochs",
        ),
        (
            "backbone: {name: custom_resnet, stem_stride: 4}\n",
            r"space\.backbone\.custom_resnet\.stem_stride must be an integer in \[1, 2\], got 4",
        ),
        (
            "backbone: {name: custom_resnet, weights: none}\n",
            r"space\.backbone\.custom_resnet\.weights is not a known key; valid keys here: "
            r"stages, width, blocks_per_stage, stem_stride, dropout",
        ),
    ],
)
def test_recipe_keys_are_checked(text: str, match: str) -> None:
    with pytest.raises(SpaceError, match=match):
        space_of(text)
