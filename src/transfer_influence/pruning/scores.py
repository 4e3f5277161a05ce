"""DP4TL's two source scores, read off one surrogate (Zhang et al. 2023, section 3).

- **Label mapping (LM)**, supervised: the surrogate classifies every *target training* image
  into the *source* classes; a source class scores the number of target images it receives. A
  class nothing in the target resembles receives none and is pruned first.
- **Feature mapping (FM)**, for an unlabelled source: k-means clusters the surrogate's source
  features into ``K`` pseudo-classes; a cluster scores the number of target training images whose
  nearest centroid it is, and pruning removes whole clusters (their member examples).

Higher scores are kept first everywhere in :mod:`transfer_influence.pruning`. Several targets are
combined by summing each target's scores divided by its number of images (each target's scores
then sum to one, so a large target does not drown a small one).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sklearn.cluster import KMeans

from ..counterfactual.experiment import ranking_scores
from ..data.images import LabeledImages
from ..errors import ConfigError
from ..estimators.result import InfluenceResult
from ..influence_functions.experiment import required_influence_function
from ..sweep.plan import SweepPlan
from ..training import extract_features, predict_logits
from .baselines import (
    ScoreTraining,
    el2n_scores,
    forgetting_scores,
    grand_scores,
    moderate_scores,
)
from .surrogate import Surrogate


def require_labels(surrogate: Surrogate, method: str) -> None:
    """Refuse a method that needs source labels when the surrogate setting is unlabelled."""
    if not surrogate.labelled:
        raise ConfigError(
            f"the {method!r} score needs the source labels, but the surrogate is"
            f" self-supervised (pretrain.objective = {surrogate.recipe.objective!r}), i.e. the"
            " source is treated as unlabelled; use the fm or random method, or give"
            " [prune.surrogate.pretrain] a supervised objective."
        )


def label_mapping_scores(surrogate: Surrogate, target_train: LabeledImages) -> np.ndarray:
    """float ``[source classes]``: how many target training images the surrogate predicts as
    each source class."""
    require_labels(surrogate, "lm")
    logits = predict_logits([surrogate.model], target_train,
                            normalization=surrogate.recipe.normalization)[0]
    return np.bincount(logits.argmax(dim=1).numpy(),
                       minlength=surrogate.model.num_classes).astype(np.float64)


def multi_target_scores(per_target: Sequence[np.ndarray], sizes: Sequence[int]) -> np.ndarray:
    """Scores for several targets at once: the sum over targets of ``scores / target size``."""
    if not per_target or len(per_target) != len(sizes):
        raise ConfigError("give one score array and one target size per target (at least one).")
    return np.sum([np.asarray(s, dtype=np.float64) / n for s, n in zip(per_target, sizes)],
                  axis=0)


@dataclass(frozen=True)
class FeatureClusters:
    """FM's pseudo-classes: ``assignment`` int ``[source examples]`` (cluster of each example),
    ``centroids`` ``[K, features]`` and ``scores`` ``[K]`` (target images mapped to each)."""

    assignment: np.ndarray
    centroids: np.ndarray
    scores: np.ndarray

    def example_scores(self) -> np.ndarray:
        """Each source example inherits its cluster's score ``[source examples]``, so pruning
        the lowest-scoring examples removes whole clusters (ties broken within a cluster only)."""
        return self.scores[self.assignment]


KMEANS_ITERATIONS = 40
"""At most this many Lloyd iterations in feature mapping's k-means (fewer once converged)."""


def fit_kmeans(features: np.ndarray, clusters: int, seed: int) -> KMeans:
    """scikit-learn's ``KMeans`` (k-means++ start, seeded) fitted to ``features``. ``benchmarks/pruning_cost.py`` chose it by measurement over
    ``MiniBatchKMeans`` and faiss: at K = 2,000 on 50,000 surrogate features (one thread, 40
    iterations) it took 18.7 s against 15.4 s and 19.1 s, with the lowest mean squared distance
    to the nearest centroid (1.476 against 1.517 and 1.522)."""
    kmeans = KMeans(n_clusters=clusters, n_init=1, max_iter=KMEANS_ITERATIONS,
                    random_state=seed)
    return kmeans.fit(np.asarray(features, dtype=np.float64))


def feature_mapping_scores(surrogate: Surrogate, source: LabeledImages,
                           targets: LabeledImages | Sequence[LabeledImages], *, clusters: int,
                           seed: int) -> FeatureClusters:
    """Cluster the surrogate's source features into ``clusters`` pseudo-classes (k-means,
    seeded) and score each by the target training images nearest to its centroid (several
    ``targets``: combined as in :func:`multi_target_scores`). Uses no source labels."""
    if not 2 <= clusters <= len(source):
        raise ConfigError(
            f"FM needs 2 <= K <= the number of source examples ({len(source)}), got K={clusters};"
            " set [prune] clusters to a smaller number."
        )
    targets = [targets] if isinstance(targets, LabeledImages) else list(targets)
    normalization = surrogate.recipe.normalization

    def features(images: LabeledImages) -> np.ndarray:
        return extract_features([surrogate.model], images,
                                normalization=normalization)[0].double().numpy()

    kmeans = fit_kmeans(features(source), clusters, seed)
    counts = [np.bincount(kmeans.predict(features(t)), minlength=clusters).astype(np.float64)
              for t in targets]
    return FeatureClusters(kmeans.labels_.astype(np.int64), kmeans.cluster_centers_,
                           combine_targets(counts, [len(t) for t in targets]))


def combine_targets(per_target: Sequence[np.ndarray], sizes: Sequence[int]) -> np.ndarray:
    """One target's counts as they are; several combined by :func:`multi_target_scores`."""
    return (np.asarray(per_target[0], dtype=np.float64) if len(per_target) == 1
            else multi_target_scores(per_target, sizes))


PRUNING_METHODS: tuple[str, ...] = ("lm", "lm-reversed", "fm", "random", "random-examples",
                                    "el2n", "grand", "forgetting", "moderate", "influence",
                                    "influence-function", "influence-function-reversed")
"""Methods :func:`score_source` knows; ``random`` prunes classes, ``random-examples`` examples."""

_TRAINED_BASELINES = {"el2n": el2n_scores, "grand": grand_scores,
                      "forgetting": forgetting_scores}


def baseline_training(plan: SweepPlan, surrogate: Surrogate) -> ScoreTraining:
    """The early training EL2N, GraNd and forgetting read their scores from: the surrogate's
    model and recipe, for ``[prune] baseline_epochs`` epochs, one model per seed from the
    surrogate's seed on (``baseline_seeds`` of them)."""
    prune = plan.config.prune
    recipe = surrogate.recipe.model_copy(update={
        "epochs": prune.baseline_epochs,
        "warmup_epochs": min(surrogate.recipe.warmup_epochs, prune.baseline_epochs)})
    first = prune.surrogate.seed
    return ScoreTraining(model=surrogate.model_config, recipe=recipe,
                         seeds=tuple(range(first, first + prune.baseline_seeds)))


@dataclass(frozen=True)
class MethodScores:
    """One method's ranking of the source.

    ``level``: what a unit is (``class``, ``cluster`` or ``example``); ``scores`` ``[units]``,
    higher kept first, or None for random pruning (a fresh draw per seed); ``members``
    ``int [source examples]``: the unit of each source example; ``seconds``: wall time of the
    scoring (the surrogate's training not included); ``settings``: what produced the scores.
    """

    method: str
    level: Literal["class", "cluster", "example"]
    scores: np.ndarray | None
    members: np.ndarray
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    @property
    def num_units(self) -> int:
        """How many units the method ranks."""
        return int(self.members.max()) + 1 if self.level != "example" else self.members.size


def score_source(plan: SweepPlan, method: str, surrogate: Surrogate, *,
                 influence: InfluenceResult | None = None,
                 extra_targets: Sequence[LabeledImages] = ()) -> MethodScores:
    """Score the experiment's source with ``method`` (one of :data:`PRUNING_METHODS`).

    ``extra_targets``: training sets of more targets the pruned source must also serve; LM and FM
    then score for all targets at once (:func:`multi_target_scores`) and are labelled e.g.
    ``lm[2 targets]``. The other methods do not depend on the target.
    """
    source = plan.data.source
    targets = [plan.data.target_train, *extra_targets]
    labels = np.asarray(source.labels)
    examples = np.arange(len(source))
    start = time.perf_counter()
    label = method if not extra_targets else f"{method}[{len(targets)} targets]"
    described = {"surrogate": surrogate.path.name,
                 "targets": [f"{t.name} ({len(t)} images)" for t in targets]}
    if method in ("lm", "lm-reversed"):
        require_labels(surrogate, method)
        counts = [label_mapping_scores(surrogate, t) for t in targets]
        scores = combine_targets(counts, [len(t) for t in targets])
        sign = 1.0 if method == "lm" else -1.0
        return MethodScores(label, "class", sign * scores, labels, time.perf_counter() - start,
                            {**described, "counts": [c.tolist() for c in counts]})
    if method == "fm":
        clusters = plan.config.prune.clusters or source.num_classes
        seed = plan.config.prune.surrogate.seed
        fm = feature_mapping_scores(surrogate, source, targets, clusters=clusters, seed=seed)
        return MethodScores(label, "cluster", fm.scores, fm.assignment,
                            time.perf_counter() - start,
                            {**described, "clusters": clusters, "kmeans_seed": seed,
                             "cluster_sizes": np.bincount(fm.assignment,
                                                          minlength=clusters).tolist()})
    if method in _TRAINED_BASELINES:
        require_labels(surrogate, method)
        training = baseline_training(plan, surrogate)
        scores = _TRAINED_BASELINES[method](source, training)
        return MethodScores(method, "example", scores, examples, time.perf_counter() - start,
                            {"training": training.model_dump(mode="json")})
    if method == "moderate":
        require_labels(surrogate, method)
        features = extract_features([surrogate.model], source,
                                    normalization=surrogate.recipe.normalization)[0].numpy()
        return MethodScores(method, "example", moderate_scores(features, labels), examples,
                            time.perf_counter() - start,
                            {"features": f"surrogate backbone ({surrogate.path.name})"})
    if method == "random":
        return MethodScores(method, "class", None, labels)
    if method == "random-examples":
        return MethodScores(method, "example", None, examples)
    if method == "influence":
        if influence is None:
            raise ConfigError("the influence method ranks the source by the sweep's influence"
                              " estimates, but no sweep store was found; run `transfer-influence"
                              " run CONFIG` first, or drop the influence method.")
        unit = plan.config.sweep.unit
        return MethodScores(method, unit, ranking_scores(plan, influence),
                            labels if unit == "class" else examples, 0.0,
                            {"ranking": f"{influence.variant} {influence.method} influence from"
                                        f" {influence.num_models} models"})
    if method in ("influence-function", "influence-function-reversed"):
        saved = required_influence_function(plan)
        total = saved.total  # positive = harmful
        first = "harmful" if method == "influence-function" else "helpful"  # cleansing: harmful
        return MethodScores(method, "example", -total if first == "harmful" else total,
                            examples, 0.0,
                            {"ranking": f"multi-stage influence on the summed target test loss,"
                                        f" most {first} pruned first",
                             "influence_function": saved.args})
    raise ConfigError(f"unknown pruning method {method!r}; choose from"
                      f" {', '.join(PRUNING_METHODS)}.")
