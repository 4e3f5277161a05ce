"""Counterfactual removal: pretrain without chosen source units and measure target accuracy.

The paper's central check of an influence estimate (Jain et al. 2022, section 4): if the
estimate is right, removing the most harmful source classes raises target accuracy and removing
the most helpful lowers it, while removing random classes does little. For each ``k`` the
experiment retrains ``R`` seeds without the chosen units and reports the mean target accuracy
with a 95% t-interval, and the paired difference from the no-removal baseline (seed ``r`` of
every arm shares its initialisation, so the difference is computed seed by seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import stats

from ..atomic import read_json, write_json
from ..errors import ConfigError, DataError, StoreError
from ..estimators.result import InfluenceResult
from ..sweep.plan import SweepPlan
from ..sweep.store import SweepStore
from .arms import (
    Arm,
    Strategy,
    baseline_arm,
    check_seeds,
    group_arm,
    named_arm,
    random_arms,
    ranked_arms,
)
from .retrain import retrain


def mean_interval(values: npt.ArrayLike, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and its two-sided Student-t confidence interval."""
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if array.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, array.size - 1)
                 * array.std(ddof=1) / math.sqrt(array.size))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class ArmResult:
    """Target accuracy of one arm over its seeds, and its paired difference from the baseline.

    ``removed`` lists the removed unit names per seed; ``accuracies`` the accuracy of each seed;
    ``low``/``high`` and ``diff_low``/``diff_high`` are 95% t-intervals.
    """

    name: str
    k: int
    removed: list[list[str]]
    accuracies: list[float]
    mean: float
    low: float
    high: float
    diff_mean: float
    diff_low: float
    diff_high: float


@dataclass(frozen=True)
class CounterfactualResult:
    """A counterfactual experiment: the baseline and one arm per ``k`` of one strategy.

    ``target_class`` is the target class whose test accuracy is measured (None: all target
    test examples); ``ranking`` says which influence estimate ordered the units;
    ``equal_steps`` whether every model took the optimisation steps of full-source pretraining.
    ``seeds`` counts the seeds compared; ``diverged_seeds`` more were left out because their
    model diverged in some arm (see :func:`paired_seeds`).
    """

    strategy: str
    target_class: str | None
    seeds: int
    ranking: str
    baseline: ArmResult
    arms: list[ArmResult]
    equal_steps: bool = False
    diverged_seeds: int = 0

    @property
    def best(self) -> ArmResult:
        """The arm with the highest mean accuracy (ties: the smaller ``k``)."""
        return max(self.arms, key=lambda arm: (arm.mean, -arm.k))

    def save(self, path: str | Path) -> None:
        """Write JSON atomically (temporary file renamed into place)."""
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> CounterfactualResult:
        """Read a result written by :meth:`save`."""
        def build(raw: dict) -> CounterfactualResult:
            return cls(**{**raw, "baseline": ArmResult(**raw["baseline"]),
                          "arms": [ArmResult(**arm) for arm in raw["arms"]]})

        return read_json(path, build, what="a counterfactual result", command="counterfactual")


def target_selection(plan: SweepPlan, target_class: str | None) -> np.ndarray:
    """bool ``[targets]``: the target test examples whose accuracy is measured."""
    labels = np.asarray(plan.data.target_test.labels)
    if target_class is None:
        return np.ones(labels.size, dtype=bool)
    names = list(plan.data.target_test.class_names)
    if target_class not in names:
        raise ConfigError(f"unknown target class {target_class!r}; valid names are:"
                          f" {', '.join(map(repr, names))}.")
    return labels == names.index(target_class)


def correct_per_seed(store: SweepStore, seeds: np.ndarray | None = None) -> np.ndarray:
    """bool ``[seeds, targets]``: which target test examples each of ``seeds`` (default: every
    completed seed; diverged seeds have no outputs) classifies correctly."""
    return store.read_outputs(seeds).variant("is_correct") > 0.5


def paired_seeds(stores: Sequence[SweepStore]) -> np.ndarray:
    """The seeds completed in every one of ``stores``: a seed whose model diverged in any arm is
    left out of all of them, so arms are still compared seed by seed."""
    paired = np.flatnonzero(np.logical_and.reduce([store.completed() for store in stores]))
    if paired.size == 0:
        raise StoreError("no seed completed in every arm (each diverged somewhere); lower the"
                         " learning rate or use other seeds.")
    return paired


def paired_accuracy(correct: np.ndarray, baseline: np.ndarray
                    ) -> tuple[float, float, float, float, float, float]:
    """``(mean, low, high, diff_mean, diff_low, diff_high)`` of per-seed accuracies ``[seeds]``
    and of their paired differences from the baseline's; accuracy intervals are clipped to
    [0, 1] and differences to [-1, 1], where the true values lie (a t-interval over few seeds
    can overshoot)."""
    mean, low, high = mean_interval(correct)
    diff_mean, diff_low, diff_high = mean_interval(correct - baseline)
    return (mean, max(low, 0.0), min(high, 1.0),
            diff_mean, max(diff_low, -1.0), min(diff_high, 1.0))


def _summarise(arm: Arm, correct: np.ndarray, baseline: np.ndarray, names: Sequence[str]
               ) -> ArmResult:
    return ArmResult(arm.name, arm.k, [[names[i] for i in r] for r in arm.removed],
                     correct.tolist(), *paired_accuracy(correct, baseline))


def check_units(plan: SweepPlan, influence: InfluenceResult) -> None:
    """A :class:`DataError` unless ``influence`` was estimated over ``plan``'s units (in order):
    every analysis that retrains by influence starts with this."""
    if list(influence.unit_names) != list(plan.unit_names):
        raise DataError("the influence result's units differ from this experiment's;"
                        " re-estimate it from this experiment's sweep.")


def ranking_scores(plan: SweepPlan, influence: InfluenceResult,
                   target_class: str | None = None) -> np.ndarray:
    """``[units]``: the influence of each of ``plan``'s units, overall or on ``target_class``,
    to rank units by; refused unless ``influence`` was estimated over the plan's units."""
    check_units(plan, influence)
    if target_class is None:
        return influence.overall()
    return influence.per_class()[:, influence.target_class_names.index(target_class)]


def build_arms(plan: SweepPlan, strategy: Strategy, ks: Sequence[int], seeds: int, *,
               scores: np.ndarray | None = None, classes: Sequence[str] = ()) -> list[Arm]:
    """The arms of ``strategy`` (see :mod:`.arms`); ``scores`` ``[units]`` rank units for
    ``bottom``/``top``, ``classes`` names the units for ``classes``."""
    seeds = check_seeds(seeds)
    if strategy in ("bottom", "top"):
        if scores is None:
            raise ConfigError(f"removal strategy {strategy!r} needs influence scores to rank the"
                              " units.")
        return ranked_arms(strategy, scores, ks, seeds)
    if strategy == "random":
        return random_arms(len(plan.unit_names), ks, seeds, plan.config.sweep.seed)
    if strategy in ("classes", "groups"):
        if not classes:
            raise ConfigError(f"removal strategy {strategy!r} needs at least one unit name.")
        make = named_arm if strategy == "classes" else group_arm
        return [make(plan.unit_names, classes, seeds)]
    raise ConfigError(f"unknown removal strategy {strategy!r}; choose bottom, top, random,"
                      " classes=NAME,NAME,... or groups=NAME,...")


def run_counterfactual(
    plan: SweepPlan,
    strategy: Strategy,
    ks: Sequence[int],
    seeds: int,
    *,
    influence: InfluenceResult | None = None,
    target_class: str | None = None,
    classes: Sequence[str] = (),
    equal_steps: bool = False,
    quiet: bool = False,
    runner: str = "local",
    address: str | None = None,
) -> CounterfactualResult:
    """Retrain (or resume) the baseline and every arm of ``strategy``, return accuracies.

    ``bottom``/``top`` rank units by ``influence`` -- overall, or for ``target_class`` when
    given, in which case accuracy is also measured on that class's test examples only.
    ``equal_steps``: every arm trains as many optimisation steps as the full-source baseline,
    so that removing units removes data, not optimisation (with a fixed number of epochs,
    removing a tenth of the source also removes a tenth of the steps).
    ``runner`` / ``address``: where the models train (see :func:`.retrain.retrain`).
    """
    selection = target_selection(plan, target_class)
    scores = None if influence is None else ranking_scores(plan, influence, target_class)
    arms = build_arms(plan, strategy, ks, seeds, scores=scores, classes=classes)
    base = baseline_arm(check_seeds(seeds))
    stores = retrain(plan, [base, *arms], equal_steps=equal_steps, quiet=quiet, runner=runner,
                     address=address)
    seeds_used = paired_seeds(stores)
    correct = [correct_per_seed(store, seeds_used)[:, selection].mean(axis=1) for store in stores]
    names = plan.unit_names
    ranking = ("none" if influence is None else
               f"{influence.variant} influence from {influence.num_models} models")
    return CounterfactualResult(
        strategy=strategy,
        target_class=target_class,
        seeds=int(seeds_used.size),
        ranking=ranking,
        baseline=_summarise(base, correct[0], correct[0], names),
        arms=[_summarise(arm, acc, correct[0], names) for arm, acc in zip(arms, correct[1:])],
        equal_steps=equal_steps,
        diverged_seeds=base.seeds - int(seeds_used.size),
    )
