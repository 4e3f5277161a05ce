"""The pruning-ratio sweep: score the source once per method, prune each ratio, retrain, compare.

For every method, ratio and transfer mode, ``R`` seeds are pretrained on the kept source and
transferred to the target, through the same content-addressed, resumable retraining as
counterfactual removal (:func:`transfer_influence.counterfactual.retrain`): seed ``r`` of every
arm shares its initialisation with seed ``r`` of the no-pruning reference, so differences are
paired. Class-level methods prune classes and example-level ones prune examples; the reference
(nothing pruned) is the same model either way and is trained once.

The **winning ratio** of a method (the paper's Tab. 1) is the largest ratio whose paired accuracy
difference from no pruning has a 95% interval reaching 0 or above: pruning that much cannot be
told apart from (or is better than) pretraining on everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TypedDict

import numpy as np

from ..atomic import read_json, write_json
from ..counterfactual.arms import Arm, baseline_arm, check_seeds, retrain_seed
from ..counterfactual.experiment import correct_per_seed, paired_accuracy, paired_seeds
from ..counterfactual.retrain import retrain
from ..data.images import LabeledImages
from ..errors import ConfigError
from ..estimators.result import InfluenceResult
from ..influence_functions.experiment import required_influence_function
from ..sweep.masks import subset_masks
from ..sweep.plan import SweepPlan
from ..sweep.store import SweepStore
from .masks import check_ratios, member_examples, pruned_units, random_pruned_units
from .scores import PRUNING_METHODS, MethodScores, score_source
from .surrogate import train_surrogate

TRANSFER_MODES = ("fixed_feature", "finetune")


@dataclass(frozen=True)
class Accuracy:
    """Target accuracy over seeds, with a 95% t-interval, and its paired difference from the
    no-pruning reference (zero for the reference itself)."""

    accuracies: list[float]
    mean: float
    low: float
    high: float
    diff_mean: float
    diff_low: float
    diff_high: float

    @classmethod
    def of(cls, correct: np.ndarray, reference: np.ndarray) -> Accuracy:
        """Accuracy per seed ``[seeds]`` against the reference's ``[seeds]``, summarised as
        counterfactual arms are (:func:`~..counterfactual.experiment.paired_accuracy`)."""
        return cls([float(c) for c in correct], *paired_accuracy(correct, reference))


@dataclass(frozen=True)
class RatioRow:
    """One method at one ratio in one transfer mode.

    ``pruned_units``: units of the method removed (classes, clusters or examples);
    ``kept_fraction``: the fraction of source examples left, averaged over seeds;
    ``diverged_seeds``: seeds left out because their model diverged here or in the reference.
    """

    transfer: str
    method: str
    ratio: float
    pruned_units: int
    kept_fraction: float
    accuracy: Accuracy
    diverged_seeds: int = 0


class Timing(TypedDict, total=False):
    """Measured wall times of a pruning run, in seconds (the model costs only with
    ``timing``): ``score_seconds`` per method, ``pruned_model_seconds`` per ratio."""

    surrogate_seconds: float
    score_seconds: dict[str, float]
    full_model_seconds: float
    sweep_model_seconds: float
    sweep_seconds: float
    pruned_model_seconds: dict[str, float]
    timed_method: str


@dataclass(frozen=True)
class PruningResult:
    """A pruning run: the reference, every (transfer, method, ratio) row, the pruned classes of
    class-level methods, each method's settings and scoring time, and the measured times."""

    seeds: int
    ratios: list[float]
    reference: dict[str, Accuracy]
    rows: list[RatioRow]
    pruned_classes: dict[str, dict[str, list[str]]]
    methods: dict[str, dict]
    timing: Timing = field(default_factory=lambda: Timing())

    def winning_ratio(self, transfer: str, method: str) -> float | None:
        """Largest ratio whose paired difference interval reaches 0 or above (None: none)."""
        wins = [row.ratio for row in self.rows if row.transfer == transfer
                and row.method == method and row.accuracy.diff_high >= 0.0]
        return max(wins) if wins else None

    def merged_into(self, earlier: PruningResult) -> PruningResult:
        """This result added to an ``earlier`` one of the same experiment and seeds: rows of
        other methods, ratios or transfer modes are kept, this run's rows replace equal ones
        (retraining is content-addressed, so equal rows hold the same models)."""
        if earlier.seeds != self.seeds:
            raise ConfigError(
                f"the saved pruning result used {earlier.seeds} seeds, this run {self.seeds};"
                " rows with different seeds cannot share one reference. Save this result"
                " elsewhere, or rerun with the saved number of seeds."
            )
        mine = {(row.transfer, row.method, row.ratio) for row in self.rows}
        rows = [row for row in earlier.rows if (row.transfer, row.method, row.ratio) not in mine]
        return PruningResult(
            self.seeds, sorted({*earlier.ratios, *self.ratios}),
            {**earlier.reference, **self.reference}, rows + self.rows,
            {**earlier.pruned_classes, **self.pruned_classes},
            {**earlier.methods, **self.methods},
            {**earlier.timing, **self.timing, "score_seconds": {
                **earlier.timing.get("score_seconds", {}), **self.timing.get("score_seconds", {})}})

    def save(self, path: str | Path) -> None:
        """Write JSON atomically."""
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> PruningResult:
        """Read a result written by :meth:`save`."""
        def build(raw: dict) -> PruningResult:
            return cls(**{**raw,
                          "reference": {k: Accuracy(**v) for k, v in raw["reference"].items()},
                          "rows": [RatioRow(**{**row, "accuracy": Accuracy(**row["accuracy"])})
                                   for row in raw["rows"]]})

        return read_json(path, build, what="a pruning result", command="prune")


def _arm(plan: SweepPlan, scores: MethodScores, ratio: float, seeds: int) -> Arm:
    """The retraining arm of one method at one ratio, over the training plan's units."""
    sweep_seed = plan.config.sweep.seed
    num_units = scores.num_units
    if scores.scores is None:  # random: a fresh draw per seed
        per_seed = [random_pruned_units(num_units, ratio, [sweep_seed, 4, int(1e6 * ratio), r])
                    for r in range(seeds)]
    else:
        per_seed = [pruned_units(scores.scores, ratio, [sweep_seed, 5])] * seeds
    if scores.level != "class":  # clusters and examples leave as their member examples
        per_seed = [member_examples(scores.members, units) for units in per_seed]
    removed = tuple(tuple(int(i) for i in units) for units in per_seed)
    return Arm(scores.method, len(removed[0]), removed)


def _time_models(plan: SweepPlan, masks: np.ndarray) -> float:
    """Seconds to pretrain and transfer one model per row of ``masks``, one at a time (mean)."""
    seconds = []
    for row in masks:
        start = time.perf_counter()
        plan.train_models(row[None], [retrain_seed(plan.config.sweep.seed, 0)])
        seconds.append(time.perf_counter() - start)
    return float(np.mean(seconds))


def default_transfers(plan: SweepPlan) -> list[str]:
    """The transfer modes a pruning run measures unless told: the experiment's own, and full
    fine-tuning too when the config has a ``[transfer.recipe]`` (the linear probe and full
    fine-tuning can disagree about what pruning costs)."""
    transfer = plan.config.transfer
    return ["fixed_feature", "finetune"] if transfer.recipe is not None else [transfer.mode]


def _check_request(plan: SweepPlan, methods: Sequence[str], transfers: Sequence[str]) -> None:
    """Everything a pruning run can refuse, refused before any training."""
    if not methods:
        raise ConfigError("give at least one pruning method, e.g. lm and random.")
    unknown = [method for method in methods if method not in PRUNING_METHODS]
    if unknown:
        raise ConfigError(f"unknown pruning method(s) {unknown}; choose from"
                          f" {', '.join(PRUNING_METHODS)}.")
    clusters = plan.config.prune.clusters or plan.data.source.num_classes
    if "fm" in methods and clusters > len(plan.data.source):
        raise ConfigError(f"[prune] clusters = {clusters} exceeds the {len(plan.data.source)}"
                          " source examples; FM needs K <= the number of source examples.")
    for transfer in transfers:
        plan.variant(transfer_mode=transfer)  # an unknown mode or a missing recipe fails here
    if {"influence-function", "influence-function-reversed"} & set(methods):
        required_influence_function(plan)  # missing or foreign scores


def _ratio_rows(plan: SweepPlan, transfer: str, scores: MethodScores, ratios: Sequence[float],
                arms: Sequence[Arm], reference: SweepStore,
                retraining: Callable[[SweepPlan, Sequence[Arm]], list[SweepStore]]
                ) -> list[RatioRow]:
    """Retrain (or resume) one method's arms in one transfer mode and summarise each ratio
    against the reference's store, seed by seed over the seeds completed in both (a seed whose
    model diverged, under ``on_divergence = "record"``, is left out of that comparison)."""
    level_plan = plan.variant(unit="class" if scores.level == "class" else "example",
                              transfer_mode=transfer)
    stores = retraining(level_plan, arms)
    source = plan.data.source
    rows = []
    for ratio, arm, store in zip(ratios, arms, stores):
        kept = arm.masks(len(level_plan.unit_names))
        kept_examples = kept.sum(axis=1) if scores.level != "class" else kept @ source.class_counts()
        pruned = (len(arm.removed[0]) if scores.level != "cluster" else
                  int(np.unique(scores.members[list(arm.removed[0])]).size))
        seeds = paired_seeds([reference, store])
        rows.append(RatioRow(
            transfer, scores.method, ratio, pruned, float(kept_examples.mean() / len(source)),
            Accuracy.of(correct_per_seed(store, seeds).mean(axis=1),
                        correct_per_seed(reference, seeds).mean(axis=1)),
            arm.seeds - int(seeds.size)))
    return rows


def run_pruning(
    plan: SweepPlan,
    methods: Sequence[str],
    ratios: Sequence[float],
    seeds: int,
    *,
    transfers: Sequence[str] | None = None,
    influence: InfluenceResult | None = None,
    extra_targets: Sequence[LabeledImages] = (),
    timing: bool = True,
    quiet: bool = False,
    runner: str = "local",
    address: str | None = None,
) -> PruningResult:
    """Score the source with each of ``methods``, prune each of ``ratios``, retrain ``seeds``
    models per (method, ratio, transfer mode) and measure target test accuracy.

    ``transfers`` defaults to :func:`default_transfers`; ``finetune`` needs a
    ``[transfer.recipe]``. ``influence`` is the sweep's estimate, needed by the ``influence``
    method. ``extra_targets``: training sets of other targets the pruned source must serve too
    (multi-target LM / FM, see :func:`~.scores.score_source`); accuracy is still measured on
    this experiment's target. ``timing`` also times one model on the full source, one on an
    ``alpha`` subset (the sweep's per-model cost) and one per ratio on the first method's kept
    data. Killed runs resume: every trained model is kept in a content-addressed arm store.
    """
    seeds = check_seeds(seeds)
    ratios = check_ratios(ratios)
    transfers = list(dict.fromkeys(transfers or default_transfers(plan)))
    _check_request(plan, methods, transfers)
    surrogate = train_surrogate(plan, quiet=quiet)
    scored = [score_source(plan, method, surrogate, influence=influence,
                           extra_targets=extra_targets) for method in dict.fromkeys(methods)]
    arms = {s.method: [_arm(plan, s, ratio, seeds) for ratio in ratios] for s in scored}

    retraining = partial(retrain, quiet=quiet, runner=runner, address=address)
    reference: dict[str, Accuracy] = {}
    rows: list[RatioRow] = []
    for transfer in transfers:
        (base_store,) = retraining(plan.variant(unit="class", transfer_mode=transfer),
                                   [baseline_arm(seeds)])
        base_correct = correct_per_seed(base_store).mean(axis=1)
        reference[transfer] = Accuracy.of(base_correct, base_correct)
        for s in scored:
            rows += _ratio_rows(plan, transfer, s, ratios, arms[s.method], base_store,
                                retraining)

    names = plan.data.source.class_names
    pruned_classes = {s.method: {f"{ratio:g}": [names[i] for i in arm.removed[0]]
                                 for ratio, arm in zip(ratios, arms[s.method])}
                      for s in scored if s.level == "class" and s.scores is not None}
    times: Timing = {
        "surrogate_seconds": surrogate.train_seconds,
        "score_seconds": {s.method: s.seconds for s in scored},
    }
    if timing:
        times.update(_measure_costs(plan, scored[0], arms[scored[0].method], ratios))
    return PruningResult(seeds, ratios, reference, rows, pruned_classes,
                         {s.method: s.settings for s in scored}, times)


def _measure_costs(plan: SweepPlan, scores: MethodScores, arms: Sequence[Arm],
                   ratios: Sequence[float]) -> Timing:
    """Measured wall times: one model on the full source, on an ``alpha`` subset (times the
    sweep's models: the influence sweep's cost, extrapolated) and on each ratio's kept data."""
    class_plan = plan.variant(unit="class")
    level_plan = plan.variant(unit="class" if scores.level == "class" else "example")
    full = _time_models(class_plan, np.ones((1, plan.data.source.num_classes), dtype=bool))
    sweep = plan.config.sweep
    alpha_mask = subset_masks(sweep.seed, [0], len(plan.unit_names), sweep.alpha)
    per_sweep_model = _time_models(plan, alpha_mask)
    kept = {f"{ratio:g}": _time_models(level_plan, arm.masks(len(level_plan.unit_names))[:1])
            for ratio, arm in zip(ratios, arms)}
    return {"full_model_seconds": full, "sweep_model_seconds": per_sweep_model,
            "sweep_seconds": per_sweep_model * sweep.num_models,
            "pruned_model_seconds": kept, "timed_method": scores.method}
