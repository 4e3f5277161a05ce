"""Agreement between the methods: do the cheap and the expensive rankings of the source classes
agree?

Every method is turned into one score per *source class*, oriented so that **higher = more
helpful to the target**, then each pair of methods is compared by Spearman's rank correlation
over the classes both score, with a two-sided permutation p-value (exact when the classes are few
enough to enumerate every ordering, else from seeded random permutations):

- ``influence function`` (method 3, Chen et al. 2020): minus the sum of the example influences
  of a class's pretraining examples on the summed target test loss (eq. 8: the first-order
  effect of up-weighting the whole class; the example influence is positive when harmful, so
  the sign is flipped);
- ``sweep`` (method 1, Jain et al. 2022): the class influence estimated from the sweep, averaged
  over the target test examples (positive = the class raises the output variant, i.e. helps);
- ``lm`` and ``fm`` (method 2, DP4TL): label mapping counts per class, and feature mapping's
  cluster scores averaged over the class's examples (higher = kept first by pruning).

A score that is constant over the classes (e.g. LM giving every class the same count) has no
ranking: its correlations are NaN.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from ..errors import DataError
from ..estimators.result import InfluenceResult
from ..influence_functions.experiment import InfluenceFunctionResult
from ..pruning.scores import score_source
from ..pruning.surrogate import Surrogate
from ..sweep.plan import SweepPlan

METHODS = ("influence function", "sweep", "lm", "fm")
"""The rankings :func:`experiment_agreement` compares, in table order."""

PERMUTATIONS = 9999
"""Random permutations of a p-value when the classes are too many to enumerate."""


def class_sums(example_scores: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[num_classes]``: the sum of ``example_scores`` over each class's examples (eq. 8 of
    Chen et al. 2020: the influence of a set is the sum of its members' influences)."""
    example_scores = np.asarray(example_scores, dtype=np.float64)
    labels = np.asarray(labels)
    if example_scores.shape != labels.shape:
        raise DataError(f"{example_scores.shape[0]} example scores for {labels.shape[0]} labels;"
                        " pass one score per source example.")
    return np.bincount(labels, weights=example_scores, minlength=num_classes)


def class_means(example_scores: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[num_classes]``: the mean of ``example_scores`` over each class (NaN for no example)."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return class_sums(example_scores, labels, num_classes) / counts


@dataclass(frozen=True)
class Agreement:
    """Spearman's ``rho`` between two methods' class scores over ``classes`` classes, with its
    two-sided permutation ``p_value`` (``exact``: every ordering enumerated)."""

    first: str
    second: str
    rho: float
    p_value: float
    classes: int
    exact: bool


def rank_agreement(first: np.ndarray, second: np.ndarray, *, seed: int = 0,
                   permutations: int = PERMUTATIONS) -> tuple[float, float, int, bool]:
    """``(rho, p_value, classes, exact)`` of two score vectors over the entries both have
    (finite). The p-value is the share of reorderings of ``first`` whose rank correlation with
    ``second`` is at least as large in absolute value: every reordering when ``classes!`` is at
    most ``permutations``, else ``permutations`` seeded random ones (counting the observed
    ordering, so it is never 0). NaN when fewer than 3 classes or a score is constant."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.shape != second.shape:
        raise DataError(f"cannot compare rankings of {first.size} and {second.size} classes.")
    both = np.isfinite(first) & np.isfinite(second)
    x, y = stats.rankdata(first[both]), stats.rankdata(second[both])
    n = int(both.sum())
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, n, False
    x, y = x - x.mean(), y - y.mean()
    scale = math.sqrt(float(x @ x) * float(y @ y))
    rho = float(x @ y) / scale
    exact = math.factorial(n) <= permutations
    if exact:
        orderings = np.array(list(itertools.permutations(range(n))))
        null = x[orderings] @ y / scale
        p_value = float(np.mean(np.abs(null) >= abs(rho) - 1e-12))
    else:
        rng = np.random.default_rng([seed, 8])
        null = rng.permuted(np.tile(x, (permutations, 1)), axis=1) @ y / scale
        p_value = float((np.sum(np.abs(null) >= abs(rho) - 1e-12) + 1) / (permutations + 1))
    return rho, p_value, n, exact


@dataclass(frozen=True)
class AgreementTable:
    """The class scores of every available method (``scores[method]``, ``[classes]``, higher =
    more helpful), every pair's :class:`Agreement`, and for each unavailable method why it is
    missing and what to run (``missing[method]``)."""

    class_names: list[str]
    scores: dict[str, np.ndarray]
    rows: list[Agreement]
    missing: dict[str, str] = field(default_factory=dict)

    @classmethod
    def compare(cls, class_names: Sequence[str], scores: Mapping[str, np.ndarray], *,
                missing: Mapping[str, str] | None = None, seed: int = 0,
                permutations: int = PERMUTATIONS) -> AgreementTable:
        """Every pair of ``scores`` (each ``[len(class_names)]``) compared by
        :func:`rank_agreement`, in the order given."""
        for method, values in scores.items():
            if np.shape(values) != (len(class_names),):
                raise DataError(f"the {method!r} scores have shape {list(np.shape(values))}, not"
                                f" one score per source class ({len(class_names)}).")
        rows = [Agreement(a, b, *rank_agreement(scores[a], scores[b], seed=seed,
                                                 permutations=permutations))
                for a, b in itertools.combinations(scores, 2)]
        return cls(list(class_names), {k: np.asarray(v, dtype=np.float64)
                                       for k, v in scores.items()}, rows, dict(missing or {}))


def experiment_agreement(plan: SweepPlan, *, influence_function: InfluenceFunctionResult | None,
                         sweep: InfluenceResult | None = None,
                         surrogate: Surrogate | None = None, config: str = "CONFIG",
                         seed: int = 0) -> AgreementTable:
    """The agreement table of ``plan``'s experiment from whatever has been computed:
    ``influence_function`` (:func:`~transfer_influence.influence_functions.experiment.
    saved_influence_function`), the ``sweep``'s estimate (class units only) and a pruning
    ``surrogate`` (LM and FM, scored as ``transfer-influence prune`` scores them). Methods
    given as None are listed in ``missing`` with the command producing them (``config`` is the
    config path written into it)."""
    source = plan.data.source
    labels, classes = np.asarray(source.labels), source.num_classes
    scores: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    if influence_function is not None:
        scores["influence function"] = -class_sums(influence_function.total, labels, classes)
    else:
        missing["influence function"] = f"transfer-influence influence-function {config}"
    if sweep is not None and plan.config.sweep.unit == "class":
        if list(sweep.unit_names) != list(source.class_names):
            raise DataError("the sweep's units are not this experiment's source classes;"
                            " re-estimate it from this experiment's store.")
        scores["sweep"] = sweep.overall()
    else:
        missing["sweep"] = (f"transfer-influence run {config}" if sweep is None else
                            "a sweep over source classes (its units are examples)")
    if surrogate is not None and surrogate.labelled:
        lm = score_source(plan, "lm", surrogate)
        assert lm.scores is not None  # only random pruning has no scores
        scores["lm"] = lm.scores
    else:
        missing["lm"] = (f"transfer-influence prune {config} --method lm" if surrogate is None
                         else "a supervised surrogate (this one is self-supervised)")
    if surrogate is not None:
        fm = score_source(plan, "fm", surrogate)
        assert fm.scores is not None  # only random pruning has no scores
        scores["fm"] = class_means(fm.scores[fm.members], labels, classes)
    else:
        missing["fm"] = f"transfer-influence prune {config} --method fm"
    return AgreementTable.compare(source.class_names, scores, missing=missing, seed=seed)
