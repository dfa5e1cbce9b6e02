"""The warm-start portfolio: known-good configurations, projected into the user's space.

A study on small medical images buys tens of trials, not hundreds (a 3-fold trial of a small
residual network on 2 CPU cores, or a 5-fold fine-tune of a pretrained backbone on a GPU, takes
minutes). A sampler's random start-up then spends most of the budget, so what the first trials
are decides the result. ``study.warm_start: portfolio`` (the default) enqueues, after the user's
own ``study.enqueue``, a few configurations that are good across small-image cell and tissue
sets: the seed notebooks' recipes and what ``benchmarks/model_quality.py``'s ablation measured.

Each entry is written in Optuna parameter names (what ``automl validate`` prints and
``study.enqueue`` takes) and is projected into the space before it is enqueued:

- a parameter the space fixes (no distribution) keeps the space's value: the entry's is dropped;
- a number outside a range is clamped into it (and put on its ``step`` grid);
- a number among numeric categorical choices becomes the nearest choice;
- a choice the space lacks (a backbone, an optimizer, a schedule word) drops the whole entry, so
  that no entry turns into a configuration nobody measured;
- a parameter the entry does not name is left to the sampler.

Entries that project to nothing (a fully fixed space) or to the same parameters as an earlier
entry are left out. This module imports no TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from automl.config.backbones import CATALOGUE, CUSTOM_CNN, CUSTOM_RESNET
from automl.config.space import SearchSpace

WARM_STARTS = ("portfolio", "none")
# Balanced class weights were the one recipe factor ahead of the hand-written CNN at 8 and at 24
# epochs in benchmarks/results/model_quality_ablation.md; where classes are even they change
# nothing, and a space that fixes class_weight keeps its own value.
BALANCED = "balanced"


@dataclass(frozen=True)
class PortfolioEntry:
    """One known-good configuration: why it is there, and its Optuna parameters."""

    name: str
    why: str
    params: dict[str, Any]


def _cnn(prefix: str = f"backbone.{CUSTOM_CNN}") -> dict[str, Any]:
    """The hand-written CNN of the notebooks (3 blocks of 32-64-128 filters, batchnorm)."""
    return {
        "backbone": CUSTOM_CNN,
        f"{prefix}.blocks": 3,
        f"{prefix}.filters": 32,
        f"{prefix}.batchnorm": True,
        f"{prefix}.dropout": 0.0,
        "head.layers": 1,
        "head.units_0": 128,
        "head.dropout_0": 0.5,
        "optimizer": "adam",
        "learning_rate": 1.0e-3,
        "class_weight": BALANCED,
    }


def _resnet() -> dict[str, Any]:
    """A small residual network at full resolution in its first stage, with a cosine decay."""
    prefix = f"backbone.{CUSTOM_RESNET}"
    return {
        "backbone": CUSTOM_RESNET,
        f"{prefix}.stages": 3,
        f"{prefix}.width": 16,
        f"{prefix}.blocks_per_stage": 2,
        f"{prefix}.stem_stride": 1,
        f"{prefix}.dropout": 0.1,
        "head.layers": 0,
        "optimizer": "adam",
        "learning_rate": 2.0e-3,
        "schedule": "cosine",
        "warmup_epochs": 1,
        "augment.flip": "horizontal_and_vertical",
        "class_weight": BALANCED,
    }


def _pretrained(backbone: str, unfrozen: int, rate: float) -> dict[str, Any]:
    """A pretrained backbone with its last layers unfrozen under a one-layer head."""
    return {
        "backbone": backbone,
        f"backbone.{backbone}.unfrozen_layers": unfrozen,
        "head.layers": 1,
        "head.units_0": 256,
        "head.dropout_0": 0.3,
        "optimizer": "adam",
        "learning_rate": rate,
        "schedule": "cosine",
        "warmup_epochs": 1,
        "augment.randaugment_magnitude": 0.3,
        "class_weight": BALANCED,
    }


def _convnext_seed() -> dict[str, Any]:
    """The blood-cell seed notebook's best hand-tuned configuration (README: bloodcells.yaml)."""
    return {
        "backbone": "convnext_tiny",
        "backbone.convnext_tiny.unfrozen_layers": 15,
        "head.layers": 3,
        "head.units_0": 512,
        "head.units_1": 256,
        "head.units_2": 128,
        "head.dropout_0": 0.5,
        "head.dropout_1": 0.4,
        "head.dropout_2": 0.3,
        "optimizer": "lion",
        "learning_rate": 1.0e-3,
        "augment.randaugment_magnitude": 0.32,
    }


def _entries() -> list[PortfolioEntry]:
    entries = [
        PortfolioEntry(
            "resnet_cosine",
            "custom_resnet width 16, cosine with 1 warm-up epoch: the best from-scratch recipe "
            "on 28 px blood cells",
            _resnet(),
        ),
        PortfolioEntry(
            "resnet_cosine_wide",
            "the same residual network at width 32, rate 1e-3",
            {**_resnet(), f"backbone.{CUSTOM_RESNET}.width": 32, "learning_rate": 1.0e-3},
        ),
        PortfolioEntry("cnn", "the notebooks' hand-written CNN, Adam 1e-3, constant", _cnn()),
        PortfolioEntry(
            "cnn_cosine",
            "the hand-written CNN with a cosine decay and 1 warm-up epoch",
            {**_cnn(), "schedule": "cosine", "warmup_epochs": 1},
        ),
        PortfolioEntry(
            "convnext_seed",
            "the blood-cell seed notebook: ConvNeXt Tiny, 15 unfrozen layers, Lion 1e-3, "
            "RandAugment 0.32",
            _convnext_seed(),
        ),
    ]
    for backbone in CATALOGUE:
        if backbone not in (CUSTOM_CNN, CUSTOM_RESNET):
            entries.append(
                PortfolioEntry(
                    f"{backbone}_finetune",
                    f"{backbone} with its last 20 weighted layers unfrozen, Adam 5e-4, cosine",
                    _pretrained(backbone, 20, 5.0e-4),
                )
            )
    return entries


PORTFOLIO: tuple[PortfolioEntry, ...] = tuple(_entries())


@dataclass(frozen=True)
class WarmStart:
    """A trial to enqueue before the sampler: where it comes from and its parameters."""

    origin: str  # "study.enqueue[i]" or "portfolio:<entry name>"
    params: dict[str, Any]


def warm_start_trials(
    space: SearchSpace, enqueue: tuple[dict[str, Any], ...], warm_start: str
) -> list[WarmStart]:
    """What a new study enqueues, in order: the user's entries, then the projected portfolio."""
    trials = [WarmStart(f"study.enqueue[{i}]", dict(p)) for i, p in enumerate(enqueue)]
    if warm_start == "none":
        return trials
    distributions = space.param_distributions()
    seen = [t.params for t in trials]
    for entry in PORTFOLIO:
        projected = project(entry.params, space, distributions)
        if projected and projected not in seen:
            seen.append(projected)
            trials.append(WarmStart(f"portfolio:{entry.name}", projected))
    return trials


def project(
    params: dict[str, Any],
    space: SearchSpace,
    distributions: dict[str, BaseDistribution] | None = None,
) -> dict[str, Any] | None:
    """``params`` as the space can draw them, or None when it lacks one of their choices."""
    distributions = space.param_distributions() if distributions is None else distributions
    for branch in (space.backbone, space.optimizer):
        chosen = params.get(branch.name)
        if branch.fixed and chosen is not None and chosen not in branch.options:
            return None  # the space fixes another backbone (optimizer)
    projected: dict[str, Any] = {}
    for name, value in params.items():
        distribution = distributions.get(name)
        if distribution is None:
            continue  # fixed by the space (or a parameter it never draws): the space's value
        inside = _into(distribution, value)
        if inside is _MISSING:
            return None
        projected[name] = inside
    return projected


_MISSING = object()


def _into(distribution: BaseDistribution, value: Any) -> Any:
    """``value`` clamped or snapped into ``distribution``; ``_MISSING`` for an absent choice."""
    if isinstance(distribution, CategoricalDistribution):
        choices = distribution.choices
        if any(type(c) is type(value) and c == value for c in choices):
            return value
        numbers = [c for c in choices if _is_number(c)]
        if _is_number(value) and numbers:
            return min(numbers, key=lambda c: (abs(float(c) - float(value)), float(c)))  # type: ignore[arg-type]  # numbers only
        return _MISSING
    if isinstance(distribution, (FloatDistribution, IntDistribution)) and _is_number(value):
        low, high = distribution.low, distribution.high
        clamped = min(max(float(value), low), high)
        if distribution.step is not None:
            steps = round((clamped - low) / distribution.step)
            clamped = min(low + steps * distribution.step, high)
        if isinstance(distribution, IntDistribution):
            return int(round(clamped))
        return float(round(clamped, 12))
    return _MISSING


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
