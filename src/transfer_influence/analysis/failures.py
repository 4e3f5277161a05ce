"""Failure debugging: find the source class behind a target mistake and test it by retraining.

For a target test example that models pretrained on the whole source get wrong, the source
class with the most negative influence on it is the prime suspect. Retraining without that
class over ``R`` seeds, and counting in how many seeds the example becomes correct, tests the
suspicion; removing a random class instead (a fresh one per seed) is the control. The paper
reports the example fixed in 61.5% of 20 runs (Jain et al. 2022, section 5.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..atomic import read_json, write_json
from ..counterfactual.arms import Arm, baseline_arm, check_seeds
from ..counterfactual.experiment import check_units, correct_per_seed
from ..counterfactual.retrain import retrain
from ..errors import DataError
from ..estimators.result import InfluenceResult
from ..sweep.plan import SweepPlan


@dataclass(frozen=True)
class FailureDebug:
    """One debugged target example.

    ``baseline_correct``, ``fixed_by_removal`` and ``fixed_by_random`` are the fractions of the
    completed ``seeds`` models (diverged ones have no outputs) that classify the example
    correctly when pretrained on the whole source, without ``culprit``, and without one random
    other class.
    """

    target_index: int
    true_class: str
    predicted_class: str
    culprit: str
    culprit_score: float
    seeds: int
    baseline_correct: float
    fixed_by_removal: float
    fixed_by_random: float

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise DataError(f"failure of target example {self.target_index}: seeds must be >= 1.")
        fractions = [self.baseline_correct, self.fixed_by_removal, self.fixed_by_random]
        if not all(0.0 <= f <= 1.0 for f in fractions):
            raise DataError(f"failure of target example {self.target_index}: fractions of seeds"
                            f" must lie in [0, 1], got {fractions}.")


def _random_other(num_units: int, culprit: int, target: int, seeds: int, sweep_seed: int
                  ) -> Arm:
    """Remove one random unit other than ``culprit`` per seed (the control arm)."""
    removed = []
    for r in range(seeds):
        choice = np.random.default_rng([sweep_seed, 4, target, r]).integers(num_units - 1)
        removed.append((int(choice + (choice >= culprit)),))
    return Arm("random", 1, tuple(removed))


def _usual_mistake(predicted: np.ndarray, label: int) -> int:
    """The most common wrong prediction among seeds (the label itself if no seed is wrong)."""
    wrong = predicted[predicted != label]
    return int(np.bincount(wrong).argmax()) if wrong.size else label


def pick_failures(correct: np.ndarray, influence: np.ndarray, count: int) -> list[int]:
    """Target examples most baseline seeds get wrong, those with the most negative single-unit
    influence first (a clear suspect is what a person debugs first).

    ``correct`` is bool ``[seeds, targets]``, ``influence`` ``[units, targets]``.
    """
    wrong = np.flatnonzero(correct.mean(axis=0) < 0.5)
    strongest = np.nanmin(influence[:, wrong], axis=0) if wrong.size else np.array([])
    return [int(i) for i in wrong[np.argsort(strongest, kind="stable")][:count]]


def debug_failures(
    plan: SweepPlan,
    influence: InfluenceResult,
    *,
    examples: Sequence[int] | None = None,
    count: int = 3,
    seeds: int = 10,
    quiet: bool = False,
    runner: str = "local",
    address: str | None = None,
) -> list[FailureDebug]:
    """Debug target ``examples`` (default: ``count`` failures chosen by :func:`pick_failures`
    from a whole-source baseline of ``seeds`` models).

    Trains the baseline, then per example one arm without its most negative unit and one
    without a random other unit, ``seeds`` models each (resumable, see
    :mod:`~transfer_influence.counterfactual.retrain`; ``runner`` / ``address`` say where).
    """
    seeds = check_seeds(seeds)
    check_units(plan, influence)
    scores = np.asarray(influence.influence)
    units, targets = scores.shape
    train = partial(retrain, quiet=quiet, runner=runner, address=address)
    base_store, = train(plan, [baseline_arm(seeds)])
    base_correct = correct_per_seed(base_store)
    if examples is None:
        examples = pick_failures(base_correct, scores, count)
    bad = [int(i) for i in examples if not 0 <= int(i) < targets]
    if bad:
        raise DataError(f"target example indices {bad} are out of range (0 to {targets - 1}).")
    culprits = [int(np.nanargmin(scores[:, int(t)])) for t in examples]
    arms = []
    for t, culprit in zip(examples, culprits):
        arms += [Arm("culprit", 1, ((culprit,),) * seeds),
                 _random_other(units, culprit, int(t), seeds, plan.config.sweep.seed)]
    stores = train(plan, arms)
    predicted = base_store.read_outputs().predicted  # completed seeds: diverged have none
    names = influence.target_class_names
    results = []
    for n, (t, culprit) in enumerate(zip(examples, culprits)):
        t = int(t)
        label = int(influence.target_labels[t])
        fixed, control = (correct_per_seed(store)[:, t].mean() for store in stores[2 * n:2 * n + 2])
        results.append(FailureDebug(
            target_index=t,
            true_class=names[label],
            predicted_class=names[_usual_mistake(predicted[:, t], label)],
            culprit=plan.unit_names[culprit],
            culprit_score=float(scores[culprit, t]),
            seeds=seeds,
            baseline_correct=float(base_correct[:, t].mean()),
            fixed_by_removal=float(fixed),
            fixed_by_random=float(control),
        ))
    return results


def save_failures(path: str | Path, failures: Sequence[FailureDebug]) -> None:
    """Write debugged failures as JSON, atomically."""
    write_json(path, [asdict(f) for f in failures])


def load_failures(path: str | Path) -> list[FailureDebug]:
    """Read failures written by :func:`save_failures`."""
    return read_json(path, lambda raw: [FailureDebug(**item) for item in raw],
                     what="debugged failures", command="debug")
