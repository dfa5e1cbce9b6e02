"""The ``space:`` section: fixed values and distributions -> Optuna suggestions -> hyperparameters.

Every place that takes a value also takes a distribution, written the way Optuna spells them::

    learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    batch_size: {type: categorical, choices: [32, 64]}
    epochs: {type: int, low: 5, high: 20, step: 5}

Conditional parameters come from *branches*: ``backbone`` and ``optimizer`` choose one option,
and each option has its own sub-space, suggested only when that option is drawn::

    optimizer:
      type: categorical
      choices:
        adam: {}
        sgd: {momentum: {type: float, low: 0.5, high: 0.99}}

Optuna parameter names are flat and spell the path: ``optimizer``, ``optimizer.sgd.momentum``,
``backbone.convnext_tiny.unfrozen_layers``, ``head.units_0``. A dense head's per-layer width and
dropout (``head.units_<i>``, ``head.dropout_<i>``) exist only for the layers the trial has, and
``unfrozen_layers`` only when the trial's weights are pretrained. These names are what
``study.enqueue`` entries use.

``suggest(trial)`` returns the nested, fully resolved hyperparameters that ``nn/models.py`` and
``nn/fit.py`` consume; it goes through ``trial.suggest_*`` only, so Optuna's own checks apply.
This module imports no TensorFlow.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from automl.config.backbones import CATALOGUE, CUSTOM_CNN, CUSTOM_RESNET
from automl.errors import SpaceError

WEIGHTS_IMAGENET = "imagenet"
WEIGHTS_NONE = "none"
FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")
CLASS_WEIGHTS = ("none", "balanced")
# Learning-rate schedules (see ``nn/schedules.py``): every one takes ``warmup_epochs``.
SCHEDULES = ("constant", "cosine", "cosine_restarts", "plateau")
INITIALIZERS = ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal")


@dataclass(frozen=True)
class Leaf:
    """What one hyperparameter accepts: its type, bounds or allowed words, and its default."""

    kind: str  # "float", "int", "bool", "str" or "weights"
    default: Any
    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    words: tuple[str, ...] = ()
    description: str = ""

    def expected(self) -> str:
        """Human phrase for error messages."""
        if self.words:
            return "one of " + ", ".join(self.words)
        if self.kind == "weights":
            return "'imagenet', 'none' or a path to a weights file"
        if self.kind == "bool":
            return "true or false"
        bounds = ""
        if self.low is not None and self.high is not None:
            left = "(" if self.low_exclusive else "["
            bounds = f" in {left}{_fmt(self.low)}, {_fmt(self.high)}]"
        elif self.low is not None:
            bounds = f" > {_fmt(self.low)}" if self.low_exclusive else f" >= {_fmt(self.low)}"
        return ("an integer" if self.kind == "int" else "a number") + bounds


def _fmt(value: float) -> str:
    return f"{value:g}"


TOP_LEAVES: dict[str, Leaf] = {
    "learning_rate": Leaf("float", 1.0e-3, 0.0, 10.0, low_exclusive=True),
    "batch_size": Leaf("int", 32, 1, 4096),
    "epochs": Leaf("int", 10, 1, 10_000),
    "label_smoothing": Leaf("float", 0.0, 0.0, 0.5),
    "class_weight": Leaf("str", "none", words=CLASS_WEIGHTS),
    "schedule": Leaf("str", "constant", words=SCHEDULES),
    # Linear warm-up from ~0 to learning_rate over the first epochs, before any schedule.
    "warmup_epochs": Leaf("int", 0, 0, 1_000),
    # Where cosine (and each restart's cycle) ends, and plateau's floor, as a share of the rate.
    "min_lr_ratio": Leaf("float", 0.01, 0.0, 1.0),
}
EMA_LEAVES: dict[str, Leaf] = {
    # Weight averaging through the Keras optimizer's own EMA; 0 switches it off.
    "momentum": Leaf("float", 0.0, 0.0, 0.9999),
}
AUGMENT_LEAVES: dict[str, Leaf] = {
    # RandAugment's ``factor``: 0 switches RandAugment off.
    "randaugment_magnitude": Leaf("float", 0.0, 0.0, 1.0),
    "randaugment_ops": Leaf("int", 2, 1, 10),
    "flip": Leaf("str", "none", words=FLIP_MODES),
    # Fraction of a full turn, as keras.layers.RandomRotation takes it.
    "rotation": Leaf("float", 0.0, 0.0, 0.5),
    # Batch augmentation on the training batches (soft labels): 0 switches each off.
    "mixup_alpha": Leaf("float", 0.0, 0.0, 10.0),
    "cutmix_alpha": Leaf("float", 0.0, 0.0, 10.0),
    # Share of training batches that are mixed (MixUp or CutMix, half each when both are on).
    "mix_probability": Leaf("float", 1.0, 0.0, 1.0),
    # RandomErasing: share of images that get one random rectangle replaced by noise.
    "erasing": Leaf("float", 0.0, 0.0, 1.0),
}
HEAD_LEAVES: dict[str, Leaf] = {
    "layers": Leaf("int", 1, 0, 8),
    "units": Leaf("int", 256, 1, 16_384),
    "dropout": Leaf("float", 0.0, 0.0, 0.95),
    "batchnorm": Leaf("bool", False),
}
PER_LAYER_HEAD_KEYS = ("units", "dropout")

APPLICATION_LEAVES: dict[str, Leaf] = {
    "weights": Leaf("weights", WEIGHTS_IMAGENET),
    # Last N backbone layers that hold weights train; -1 = all, 0 = frozen feature extractor.
    "unfrozen_layers": Leaf("int", 0, -1, 10_000),
}
CUSTOM_CNN_LEAVES: dict[str, Leaf] = {
    "blocks": Leaf("int", 3, 1, 8),
    "filters": Leaf("int", 32, 1, 1024),
    "kernel_size": Leaf("int", 3, 1, 11),
    "batchnorm": Leaf("bool", True),
    "dropout": Leaf("float", 0.0, 0.0, 0.9),
    "initializer": Leaf("str", "he_normal", words=INITIALIZERS),
    # How the last feature map becomes a vector: "avg" (global average pooling) or "flatten"
    # (keeps where things are, as the classic small CNNs do; more head parameters).
    "pooling": Leaf("str", "avg", words=("avg", "flatten")),
}
CUSTOM_RESNET_LEAVES: dict[str, Leaf] = {
    # Stages of basic residual blocks; the width doubles and the resolution halves per stage
    # after the first.
    "stages": Leaf("int", 3, 1, 5),
    "width": Leaf("int", 32, 1, 1024),
    "blocks_per_stage": Leaf("int", 2, 1, 8),
    # 1 keeps every pixel of a 28-64 px input for the first stage; 2 halves it (larger images).
    "stem_stride": Leaf("int", 1, 1, 2),
    "dropout": Leaf("float", 0.0, 0.0, 0.9),
}
OPTIMIZER_LEAVES: dict[str, dict[str, Leaf]] = {
    "adam": {
        "beta_1": Leaf("float", 0.9, 0.0, 1.0, low_exclusive=True),
        "beta_2": Leaf("float", 0.999, 0.0, 1.0, low_exclusive=True),
    },
    "adamw": {
        "weight_decay": Leaf("float", 0.004, 0.0, 1.0),
        "beta_1": Leaf("float", 0.9, 0.0, 1.0, low_exclusive=True),
        "beta_2": Leaf("float", 0.999, 0.0, 1.0, low_exclusive=True),
    },
    "sgd": {
        "momentum": Leaf("float", 0.9, 0.0, 1.0),
        "nesterov": Leaf("bool", False),
    },
    "rmsprop": {
        "rho": Leaf("float", 0.9, 0.0, 1.0),
        "momentum": Leaf("float", 0.0, 0.0, 1.0),
    },
    "lion": {
        "beta_1": Leaf("float", 0.9, 0.0, 1.0, low_exclusive=True),
        "beta_2": Leaf("float", 0.99, 0.0, 1.0, low_exclusive=True),
        "weight_decay": Leaf("float", 0.0, 0.0, 1.0),
    },
}
SPACE_KEYS = (*TOP_LEAVES, "ema", "backbone", "optimizer", "head", "augment")

# A node is either a fixed Python value or an Optuna distribution.
Node = Any


@dataclass(frozen=True)
class Branch:
    """A categorical choice whose options carry their own sub-spaces (backbone, optimizer)."""

    name: str
    options: dict[str, dict[str, Node]]

    @property
    def fixed(self) -> bool:
        return len(self.options) == 1


@dataclass(frozen=True)
class SearchSpace:
    """The parsed ``space:`` section. Build it with :func:`parse_space`."""

    top: dict[str, Node]
    augment: dict[str, Node]
    ema: dict[str, Node]
    head: dict[str, Node | list[Node]]
    backbone: Branch
    optimizer: Branch
    raw: dict[str, Any]

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Draw one configuration through ``trial.suggest_*`` and return it fully resolved."""
        params: dict[str, Any] = {k: _draw(trial, k, node) for k, node in self.top.items()}
        params["augment"] = {k: _draw(trial, f"augment.{k}", n) for k, n in self.augment.items()}
        params["ema"] = {k: _draw(trial, f"ema.{k}", n) for k, n in self.ema.items()}
        params["backbone"] = _draw_branch(trial, self.backbone)
        params["optimizer"] = _draw_branch(trial, self.optimizer)
        n_layers = int(_draw(trial, "head.layers", self.head["layers"]))
        layers = []
        for i in range(n_layers):
            layer = {}
            for key in PER_LAYER_HEAD_KEYS:
                node = self.head[key]
                if isinstance(node, list):
                    node = node[i]
                layer[key] = _draw(trial, f"head.{key}_{i}", node)
            layers.append(layer)
        params["head"] = {
            "layers": layers,
            "batchnorm": bool(_draw(trial, "head.batchnorm", self.head["batchnorm"])),
        }
        return params

    def max_epochs(self) -> int:
        """Largest number of epochs any trial can run (the step stride of intermediate reports)."""
        return int(_upper(self.top["epochs"]))

    def max_batch_size(self) -> int:
        return int(_upper(self.top["batch_size"]))

    def param_distributions(self) -> dict[str, BaseDistribution]:
        """Every Optuna parameter this space can suggest, by name (for ``enqueue`` checks)."""
        out: dict[str, BaseDistribution] = {}

        def add(name: str, node: Node) -> None:
            if isinstance(node, BaseDistribution):
                out[name] = node

        for key, node in self.top.items():
            add(key, node)
        for key, node in self.augment.items():
            add(f"augment.{key}", node)
        for key, node in self.ema.items():
            add(f"ema.{key}", node)
        for branch in (self.backbone, self.optimizer):
            if not branch.fixed:
                out[branch.name] = CategoricalDistribution(tuple(branch.options))
            for option, sub in branch.options.items():
                for key, node in sub.items():
                    add(f"{branch.name}.{option}.{key}", node)
        add("head.layers", self.head["layers"])
        add("head.batchnorm", self.head["batchnorm"])
        for i in range(int(_upper(self.head["layers"]))):
            for key in PER_LAYER_HEAD_KEYS:
                node = self.head[key]
                add(f"head.{key}_{i}", node[i] if isinstance(node, list) else node)
        return out

    def backbone_names(self) -> list[str]:
        return list(self.backbone.options)


def _upper(node: Node) -> float:
    if isinstance(node, (FloatDistribution, IntDistribution)):
        return node.high
    if isinstance(node, CategoricalDistribution):
        node = max(node.choices)  # type: ignore[type-var]  # numeric choices where this is asked
    if isinstance(node, (int, float)):
        return node
    raise TypeError(f"expected a number or a numeric distribution, got {node!r}")


def _draw(trial: optuna.trial.BaseTrial, name: str, node: Node) -> Any:
    if isinstance(node, FloatDistribution):
        return trial.suggest_float(name, node.low, node.high, log=node.log, step=node.step)
    if isinstance(node, IntDistribution):
        return trial.suggest_int(name, node.low, node.high, log=node.log, step=node.step)
    if isinstance(node, CategoricalDistribution):
        return trial.suggest_categorical(name, node.choices)
    return node


def _draw_branch(trial: optuna.trial.BaseTrial, branch: Branch) -> dict[str, Any]:
    names = list(branch.options)
    option = names[0] if branch.fixed else trial.suggest_categorical(branch.name, names)
    sub = branch.options[option]
    out: dict[str, Any] = {"name": option}
    for key, node in sub.items():  # "weights" comes before "unfrozen_layers" in the leaves
        if key == "unfrozen_layers" and out.get("weights") == WEIGHTS_NONE:
            continue  # a randomly initialised backbone always trains whole
        out[key] = _draw(trial, f"{branch.name}.{option}.{key}", node)
    if out.get("weights") == WEIGHTS_NONE:
        out["unfrozen_layers"] = -1
    return out


# --------------------------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------------------------


class _Where:
    """Builds error messages that start with ``<file>: space.<key path>``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str) -> SpaceError:
        return SpaceError(f"{self.source}: space.{key} {message}")


def parse_space(
    raw: Any, *, source: str = "<space>", image_size: int | None = None
) -> SearchSpace:
    """Validate the ``space:`` mapping and build a :class:`SearchSpace`.

    Args:
        raw: the mapping under ``space:`` (``yaml.safe_load`` output).
        source: file name used at the start of every error message.
        image_size: when given, backbones that need larger inputs are rejected.

    Raises:
        SpaceError: one line naming the key, what was expected, what was found and a fix.
    """
    where = _Where(source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpaceError(
            f"{source}: space must be a mapping of hyperparameters, got {_show(raw)}; "
            "see search_spaces/quickstart.yaml for the form."
        )
    _reject_unknown(where, "", raw, SPACE_KEYS)
    top = {
        k: _parse_node(where, k, raw.get(k, leaf.default), leaf) for k, leaf in TOP_LEAVES.items()
    }
    augment_raw = _mapping(where, "augment", raw.get("augment"))
    _reject_unknown(where, "augment.", augment_raw, AUGMENT_LEAVES)
    augment = {
        k: _parse_node(where, f"augment.{k}", augment_raw.get(k, leaf.default), leaf)
        for k, leaf in AUGMENT_LEAVES.items()
    }
    ema_raw = _mapping(where, "ema", raw.get("ema"))
    _reject_unknown(where, "ema.", ema_raw, EMA_LEAVES)
    ema = {
        k: _parse_node(where, f"ema.{k}", ema_raw.get(k, leaf.default), leaf)
        for k, leaf in EMA_LEAVES.items()
    }
    head = _parse_head(where, _mapping(where, "head", raw.get("head")))
    backbone = _parse_branch(
        where, "backbone", raw.get("backbone", "custom_cnn"), _backbone_leaves, CATALOGUE
    )
    optimizer = _parse_branch(
        where, "optimizer", raw.get("optimizer", "adam"), OPTIMIZER_LEAVES.get, OPTIMIZER_LEAVES
    )
    if image_size is not None:
        for name in backbone.options:
            entry = CATALOGUE[name]
            if name == CUSTOM_CNN:
                blocks = int(_upper(backbone.options[name]["blocks"]))
                if image_size < 2**blocks:
                    raise where.error(
                        f"backbone.{name}.blocks",
                        f"allows up to {blocks} pooling blocks, which need images of at least "
                        f"{2**blocks} px, got data.image_size={image_size}; lower blocks.high or "
                        "raise data.image_size.",
                    )
            elif name == CUSTOM_RESNET:
                sub = backbone.options[name]
                # Every stage after the first halves the resolution, as a stride-2 stem does.
                halvings = int(_upper(sub["stages"])) - 1 + int(_upper(sub["stem_stride"])) - 1
                if image_size < 2 ** (halvings + 2):
                    raise where.error(
                        f"backbone.{name}.stages",
                        f"allows {halvings} halvings of the resolution, which need images of at "
                        f"least {2 ** (halvings + 2)} px, got data.image_size={image_size}; "
                        "lower stages.high or stem_stride, or raise data.image_size.",
                    )
            elif image_size < entry.min_image_size:
                raise where.error(
                    "backbone",
                    f"'{name}' needs data.image_size >= {entry.min_image_size}, got "
                    f"{image_size}; raise data.image_size or use custom_cnn.",
                )
    raw = copy.deepcopy(raw)
    if "backbone" in raw:
        raw["backbone"] = _absolute_weights(raw["backbone"])
    _check_warmup(where, top)
    return SearchSpace(top, augment, ema, head, backbone, optimizer, raw)


def _check_warmup(where: _Where, top: dict[str, Node]) -> None:
    """Warm-up must leave at least one epoch for the schedule (fixed values only; a searched
    warm-up is shortened per trial, see ``nn/schedules.py``)."""
    warmup, epochs = top["warmup_epochs"], top["epochs"]
    if isinstance(warmup, BaseDistribution) or isinstance(epochs, BaseDistribution):
        return
    if warmup >= epochs:
        raise where.error(
            "warmup_epochs",
            f"must be less than epochs ({epochs}), got {warmup}; lower warmup_epochs or "
            "raise epochs.",
        )


def _absolute_weights(node: Any, under_weights: bool = False) -> Any:
    """Copy of a raw backbone section with weights file paths made absolute.

    The saved configuration must work from any directory, so relative paths cannot stay.
    """
    if isinstance(node, dict):
        return {
            k: v if k == "type" else _absolute_weights(v, under_weights or k == "weights")
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_absolute_weights(v, under_weights) for v in node]
    if under_weights and isinstance(node, str) and node not in (WEIGHTS_IMAGENET, WEIGHTS_NONE):
        return str(Path(node).expanduser().resolve())
    return node


def _backbone_leaves(name: str) -> dict[str, Leaf] | None:
    if name not in CATALOGUE:
        return None
    if name == CUSTOM_CNN:
        return CUSTOM_CNN_LEAVES
    if name == CUSTOM_RESNET:
        return CUSTOM_RESNET_LEAVES
    return APPLICATION_LEAVES


def _parse_branch(
    where: _Where, key: str, raw: Any, leaves_of: Any, known: dict[str, Any]
) -> Branch:
    """Accept ``name``, ``{name: X, ...sub}``, or a categorical over names / name->sub mappings."""
    valid = ", ".join(known)
    if isinstance(raw, str):
        options: dict[str, Any] = {raw: {}}
    elif isinstance(raw, dict) and "type" in raw:
        if raw.get("type") != "categorical":
            raise where.error(
                f"{key}.type",
                f"must be 'categorical' (a choice among {key}s), got {_show(raw.get('type'))}.",
            )
        _reject_unknown(where, f"{key}.", raw, ("type", "choices"))
        choices = raw.get("choices")
        if isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices):
            options = {c: {} for c in choices}
        elif isinstance(choices, dict) and choices:
            options = {str(k): v if v is not None else {} for k, v in choices.items()}
        else:
            raise where.error(
                f"{key}.choices",
                f"must be a non-empty list of names or a mapping name -> settings, got "
                f"{_show(choices)}; valid names: {valid}.",
            )
    elif isinstance(raw, dict) and "name" in raw:
        sub = dict(raw)
        options = {str(sub.pop("name")): sub}
    else:
        raise where.error(
            key,
            f"must be a name, {{name: ..., <settings>}} or {{type: categorical, choices: ...}}, "
            f"got {_show(raw)}; valid names: {valid}.",
        )
    parsed: dict[str, dict[str, Node]] = {}
    for option, sub in options.items():
        leaves = leaves_of(option)
        if leaves is None:
            raise where.error(key, f"has unknown {key} '{option}'; valid {key}s: {valid}.")
        sub = _mapping(where, f"{key}.{option}", sub)
        _reject_unknown(where, f"{key}.{option}.", sub, leaves)
        parsed[option] = {
            k: _parse_node(where, f"{key}.{option}.{k}", sub.get(k, leaf.default), leaf)
            for k, leaf in leaves.items()
        }
    return Branch(key, parsed)


def _parse_head(where: _Where, raw: dict[str, Any]) -> dict[str, Node | list[Node]]:
    _reject_unknown(where, "head.", raw, HEAD_LEAVES)
    head: dict[str, Node | list[Node]] = {}
    for key, leaf in HEAD_LEAVES.items():
        value = raw.get(key, leaf.default)
        if key in PER_LAYER_HEAD_KEYS and isinstance(value, list):
            head[key] = [
                _parse_node(where, f"head.{key}[{i}]", v, leaf) for i, v in enumerate(value)
            ]
        else:
            head[key] = _parse_node(where, f"head.{key}", value, leaf)
    max_layers = int(_upper(head["layers"]))
    for key in PER_LAYER_HEAD_KEYS:
        node = head[key]
        if isinstance(node, list) and len(node) < max_layers:
            raise where.error(
                f"head.{key}",
                f"lists {len(node)} per-layer values but head.layers can reach {max_layers}; "
                f"give {max_layers} values or one value for every layer.",
            )
    return head


def _mapping(where: _Where, key: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise where.error(key, f"must be a mapping of settings, got {_show(raw)}.")
    return raw


def _reject_unknown(where: _Where, prefix: str, raw: dict[str, Any], valid: Any) -> None:
    for key in raw:
        if key not in valid:
            raise where.error(
                f"{prefix}{key}",
                f"is not a known key; valid keys here: {', '.join(valid)}.",
            )


def _parse_node(where: _Where, key: str, raw: Any, leaf: Leaf) -> Node:
    """A fixed value, or a ``{type: ...}`` mapping -> Optuna distribution, checked by ``leaf``."""
    if not (isinstance(raw, dict) and "type" in raw):
        if isinstance(raw, dict):
            raise where.error(
                key,
                f"must be {leaf.expected()} or a distribution "
                "{type: float|int|categorical, ...}, "
                f"got a mapping without 'type': {_show(raw)}.",
            )
        return _check_value(where, key, raw, leaf)
    kind = raw["type"]
    if kind == "categorical":
        _reject_unknown(where, f"{key}.", raw, ("type", "choices"))
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise where.error(f"{key}.choices", f"must be a non-empty list, got {_show(choices)}.")
        checked = [
            _check_value(where, f"{key}.choices[{i}]", c, leaf) for i, c in enumerate(choices)
        ]
        if len(set(map(repr, checked))) != len(checked):
            raise where.error(f"{key}.choices", f"has duplicates: {_show(choices)}.")
        return CategoricalDistribution(tuple(checked))
    if kind not in ("float", "int"):
        raise where.error(f"{key}.type", f"must be float, int or categorical, got {_show(kind)}.")
    if leaf.kind not in ("float", "int") or (kind == "float" and leaf.kind == "int"):
        raise where.error(
            f"{key}.type",
            f"must suit {leaf.expected()}, got a {kind} distribution; "
            + ("use type: int." if leaf.kind == "int" else "use type: categorical."),
        )
    _reject_unknown(where, f"{key}.", raw, ("type", "low", "high", "log", "step"))
    for bound in ("low", "high"):
        if bound not in raw:
            raise where.error(
                key, f"is a {kind} distribution without '{bound}'; add {bound}: <number>."
            )
    low = _check_value(where, f"{key}.low", raw["low"], leaf, as_kind=kind)
    high = _check_value(where, f"{key}.high", raw["high"], leaf, as_kind=kind)
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise where.error(f"{key}.log", f"must be true or false, got {_show(log)}.")
    step = raw.get("step")
    if step is not None:
        step = _number(where, f"{key}.step", step, kind)
        if step <= 0:
            raise where.error(f"{key}.step", f"must be > 0, got {_fmt(step)}.")
        if log:
            raise where.error(
                key, "cannot have both log: true and a step (Optuna forbids it); drop one."
            )
    if low > high:
        raise where.error(
            key,
            f"has an inverted range: low={_fmt(low)} > high={_fmt(high)}; swap them.",
        )
    if low == high:
        raise where.error(
            key,
            f"has an empty range: low == high == {_fmt(low)}; write the fixed value {_fmt(low)} "
            "instead of a distribution.",
        )
    if log and low <= 0:
        raise where.error(f"{key}.low", f"must be > 0 with log: true, got {_fmt(low)}.")
    try:
        if kind == "float":
            return FloatDistribution(float(low), float(high), log=log, step=step)
        return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
    except ValueError as exc:  # Optuna's own consistency checks, reworded with the key path
        raise where.error(key, f"is not a valid {kind} distribution: {exc}") from exc


def yaml_number_hint(raw: Any) -> str:
    """How to fix a number that YAML read as text (``1e-5``: PyYAML wants a dot), or ``""``."""
    if not isinstance(raw, str):
        return ""
    match = re.fullmatch(r"\s*([-+]?\d+)([eE][-+]?\d+)\s*", raw)
    if match:
        return (
            f" YAML reads {raw} without a dot as text; write it with a dot: "
            f"{match[1]}.0{match[2]}."
        )
    try:
        number = float(raw)
    except ValueError:
        return ""
    if not math.isfinite(number):  # --timeout nan arrives as the text NaN
        return " It is not a finite number; write a finite one."
    return " It is quoted, so YAML reads it as text; remove the quotes."


def number_problem(raw: Any) -> str | None:
    """Why ``raw`` is not a usable number, worded "must be ..., got ...", or None when it is.

    The one number check of the configuration (``schema.py`` and this module): a boolean is
    not a number, text gets :func:`yaml_number_hint`, and NaN or infinity (YAML's ``.nan``,
    ``.inf``) is refused, because every comparison with NaN is false, so NaN would pass any
    bound (``holdout_fraction: .nan`` would mean no hold-out, ``timeout: .nan`` no timeout).
    """
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return f"must be a number, got {_show(raw)}.{yaml_number_hint(raw)}"
    if not math.isfinite(raw):
        return (
            f"must be a finite number, got {raw!r}; YAML reads .nan and .inf as not-a-number "
            "and infinity, which no setting means: write a finite number."
        )
    return None


def _number(where: _Where, key: str, raw: Any, kind: str) -> float:
    problem = number_problem(raw)
    if problem is not None:
        raise where.error(key, problem)
    if kind == "int" and not float(raw).is_integer():
        raise where.error(key, f"must be an integer, got {_show(raw)}.")
    return int(raw) if kind == "int" else float(raw)


def _check_value(where: _Where, key: str, raw: Any, leaf: Leaf, as_kind: str | None = None) -> Any:
    kind = as_kind or leaf.kind
    if kind == "bool":
        if not isinstance(raw, bool):
            raise where.error(key, f"must be true or false, got {_show(raw)}.")
        return raw
    if kind == "weights":
        if raw is None:
            return WEIGHTS_NONE
        if not isinstance(raw, str) or not raw:
            raise where.error(key, f"must be {leaf.expected()}, got {_show(raw)}.")
        if raw in (WEIGHTS_IMAGENET, WEIGHTS_NONE):
            return raw
        path = Path(raw).expanduser().resolve()
        if not path.is_file():
            raise where.error(
                key,
                f"must be {leaf.expected()}, got '{raw}', which is not a file; check the path "
                "(relative paths are from the current directory).",
            )
        return str(path)
    if kind == "str":
        if raw is None and "none" in leaf.words:
            return "none"
        if raw not in leaf.words:
            raise where.error(key, f"must be {leaf.expected()}, got {_show(raw)}.")
        return raw
    value = _number(where, key, raw, kind)
    too_low = leaf.low is not None and (
        value <= leaf.low if leaf.low_exclusive else value < leaf.low
    )
    too_high = leaf.high is not None and value > leaf.high
    if too_low or too_high:
        raise where.error(key, f"must be {leaf.expected()}, got {_fmt(value)}.")
    return value


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"
