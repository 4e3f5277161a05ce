"""Example-level pruning baselines: EL2N, GraNd, forgetting events and the moderate coreset.

Each function returns one float score per source **example**, ``float64 [examples]``, with one
convention throughout: **higher = keep first**. A pruning ratio then keeps the top-scoring
examples (the mask is built elsewhere). What each score keeps, as its paper does:

- :func:`el2n_scores` (Paul et al. 2021, "Deep Learning on a Data Diet"): the L2 norm of the error
  vector ``softmax(f(x)) - onehot(y)`` after a few epochs of training, averaged over seeds.
  High = hard or ambiguous; the paper prunes the lowest scores (easy examples) and keeps the hard
  ones.
- :func:`grand_scores` (same paper): the L2 norm of the per-example gradient of the cross-entropy
  with respect to all parameters, after the same early training, averaged over seeds. Same
  direction as EL2N: the largest gradients are kept.
- :func:`forgetting_scores` (Toneva et al. 2019): the number of forgetting events, presentations at
  which an example that the model classified correctly at its previous presentation is now
  misclassified, counted over training, averaged over seeds. Examples never classified correctly
  count as forgotten at every presentation (more than any learned example can be). The paper
  removes the unforgettable examples (zero events) first, so the most forgotten are kept.
- :func:`moderate_scores` (Xia et al. 2023, "Moderate Coreset"): the distance of each example's
  feature to its class's median feature; the coreset keeps the examples whose distance is around
  the median distance, dropping both the easiest (closest) and the hardest (farthest). The score
  is minus the distance of the example's rank from the middle rank, so the top-k scores are the
  band of k examples around the median, as in the authors' selection code.

EL2N, GraNd and forgetting train ordinary supervised models with the group trainer on the full
source (every class kept), one model per seed of a :class:`ScoreTraining`; that configuration is
what to save beside the scores (``config.model_dump_json()``) to reproduce them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.func import functional_call, grad, vmap

from ..config import ModelConfig
from ..data.images import LabeledImages
from ..devices import precise_dtype
from ..errors import ConfigError, DataError
from ..models.base import TransferModel
from ..recipe import Normalization, TrainRecipe
from ..training.objectives import recipe_uses_labels
from ..training.preprocess import to_inputs
from ..training.trainer import Observer, Strategy, pretrain_group
from ..training.transfer import predict_logits

# Per-example float32 gradients held at once in GraNd. Chunks that stay in cache are fastest:
# 6,000 MNIST-size examples through a 784-32-20 MLP (2 shared CPU cores) took 0.9-1.4 s with
# 4-8 MiB, 3.0 s with 32 MiB, 5.9 s with 128 MiB and 4.6 s with 1 MiB (per-call overhead).
_GRADIENT_BUDGET_BYTES = 8 * 2**20


class ScoreTraining(BaseModel):
    """How the models behind EL2N, GraNd or forgetting are trained: one model per seed, on the
    whole source with its labels, with ``recipe`` (its ``epochs`` are the "few early epochs";
    a ``constant`` schedule mimics stopping a longer run early, as the papers do).

    Saved beside the scores it produced (``model_dump_json()``), it reproduces them exactly.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelConfig = Field(default_factory=ModelConfig)
    recipe: TrainRecipe
    seeds: tuple[int, ...] = Field(min_length=1, description="one model per seed")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct (a repeated seed trains the same model"
                             f" twice), got {list(seeds)}.")
        return seeds

    @field_validator("recipe")
    @classmethod
    def _supervised(cls, recipe: TrainRecipe) -> TrainRecipe:
        if not recipe_uses_labels(recipe):
            raise ValueError(f"EL2N, GraNd and forgetting scores need a model trained on the"
                             f" labels, but recipe.objective {recipe.objective!r} does not use"
                             f" them; use 'cross_entropy' (or another labelled objective).")
        return recipe


def train_score_models(source: LabeledImages, config: ScoreTraining, *,
                       strategy: Strategy = "auto", observe: Observer | None = None,
                       device: str | torch.device = "cpu") -> list[TransferModel]:
    """The models of ``config`` (one per seed, in seed order) trained on all of ``source``."""
    masks = np.ones((len(config.seeds), source.num_classes), dtype=bool)
    return pretrain_group(config.model.name, source, masks, unit="class",
                          seeds=list(config.seeds), recipe=config.recipe,
                          model_options=config.model.options, strategy=strategy,
                          observe=observe, device=device)


def el2n_scores(source: LabeledImages, config: ScoreTraining, *,
                device: str | torch.device = "cpu") -> np.ndarray:
    """EL2N of every source example, ``float64 [examples]``, higher = keep first (see module
    docstring): ``mean over seeds of || softmax(f(x)) - onehot(y) ||_2`` on the un-augmented
    images, after training each seed's model with ``config``."""
    models = train_score_models(source, config, device=device)
    logits = predict_logits(models, source, normalization=config.recipe.normalization,
                            device=device).cpu().double()
    error = torch.softmax(logits, dim=2)
    labels = torch.as_tensor(np.array(source.labels))
    error[:, torch.arange(len(labels)), labels] -= 1.0
    return error.norm(dim=2).mean(0).numpy()


def gradient_norms(model: TransferModel, images: np.ndarray, labels: np.ndarray, *,
                   normalization: Normalization | None = None,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """``float64 [N]``: the L2 norm, over all parameters of ``model``, of the gradient of the
    cross-entropy of each single example (uint8 ``images [N, C, H, W]``, ``labels [N]``).

    Per-example gradients come from ``torch.func.vmap(grad(...))`` in chunks whose gradients take
    about 8 MiB (at least one example), so memory does not grow with ``N``.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    size = sum(p.numel() for p in params.values())
    chunk = max(1, _GRADIENT_BUDGET_BYTES // (4 * size))
    norms = []
    for start in range(0, len(images), chunk):
        batch = torch.as_tensor(np.array(images[start:start + chunk]), device=device)
        y = torch.as_tensor(np.array(labels[start:start + chunk]), device=device)
        grads = per_example(params, to_inputs(batch, normalization), y)
        squares = sum(g.flatten(1).to(precise_dtype(device)).square().sum(1)  # float32 on mps
                      for g in grads.values())
        norms.append(squares.sqrt().cpu())
    return torch.cat(norms).numpy()


def grand_scores(source: LabeledImages, config: ScoreTraining, *,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """GraNd of every source example, ``float64 [examples]``, higher = keep first (see module
    docstring): the mean over seeds of :func:`gradient_norms` after training each seed's model
    with ``config``."""
    models = train_score_models(source, config, device=device)
    norms = [gradient_norms(m, source.images, source.labels,
                            normalization=config.recipe.normalization, device=device)
             for m in models]
    return np.mean(norms, axis=0)


def _occurrence(index: np.ndarray) -> np.ndarray:
    """For each position of ``index``, how many earlier positions hold the same value."""
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(index)), 0))
    occurrence = np.empty(len(index), dtype=np.int64)
    occurrence[order] = np.arange(len(index)) - first
    return occurrence


class ForgettingCounter:
    """The trainer observer (:data:`~transfer_influence.training.trainer.Observer`) that counts
    forgetting events of every example for each model of a group.

    At every presentation an example is correct when the model's argmax on its (augmented)
    training input equals its label, judged before the step that trains on it, as in Toneva et
    al.'s code. A forgetting event is a correct presentation followed by an incorrect one. An
    example presented twice in one batch (a batch straddling two epochs) counts as two
    presentations in batch order.
    """

    def __init__(self, labels: np.ndarray, num_models: int) -> None:
        self.labels = np.asarray(labels)
        shape = (num_models, len(self.labels))
        self.events = np.zeros(shape, dtype=np.int64)
        self.presentations = np.zeros(shape, dtype=np.int64)
        self.learned = np.zeros(shape, dtype=bool)
        self.last_correct = np.zeros(shape, dtype=bool)

    def __call__(self, model: int, step: int, index: np.ndarray, logits: torch.Tensor) -> None:
        correct = logits.argmax(1).cpu().numpy() == self.labels[index]
        occurrence = _occurrence(index)
        for k in range(int(occurrence.max()) + 1):
            now = occurrence == k
            examples, hit = index[now], correct[now]
            self.events[model, examples] += self.last_correct[model, examples] & ~hit
            self.last_correct[model, examples] = hit
            self.learned[model, examples] |= hit
            self.presentations[model, examples] += 1

    def counts(self) -> np.ndarray:
        """``int64 [models, examples]``: forgetting events, or the number of presentations for
        examples never classified correctly (a learned example is forgotten at most
        ``(presentations - 1) / 2`` times, so these rank above every learned one)."""
        return np.where(self.learned, self.events, self.presentations)


def forgetting_scores(source: LabeledImages, config: ScoreTraining, *,
                      device: str | torch.device = "cpu") -> np.ndarray:
    """Forgetting events of every source example (:class:`ForgettingCounter`), averaged over the
    seeds' models, ``float64 [examples]``; higher = keep first (see module docstring).

    Trains with the ``loop`` strategy, the one that sees each model's logits at every step (the
    models equal those of the other strategies up to float rounding). Needs
    ``config.recipe.epochs >= 2``: with fewer than two presentations no example can be forgotten.
    """
    if config.recipe.epochs < 2:
        raise ConfigError(f"forgetting scores need at least 2 epochs (every example presented"
                          f" twice), got recipe.epochs = {config.recipe.epochs}; train longer.")
    counter = ForgettingCounter(source.labels, len(config.seeds))
    train_score_models(source, config, strategy="loop", observe=counter, device=device)
    return counter.counts().mean(0).astype(np.float64)


def _check_features(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``float64 [N, D]`` features and integer ``[N]`` labels."""
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2 or len(features) == 0 or features.dtype.kind not in "fiu":
        raise DataError(f"features must be a non-empty numeric array [examples, dims], got dtype"
                        f" {features.dtype} and shape {features.shape}.")
    if not np.isfinite(features).all():
        raise DataError("features contain NaN or infinite values; check the model that"
                        " produced them (a diverged surrogate?).")
    if labels.shape != (len(features),) or labels.dtype.kind not in "iu":
        raise DataError(f"labels must be integer class indices, one per feature row"
                        f" ({len(features)}), got dtype {labels.dtype} and shape {labels.shape}.")
    return features.astype(np.float64), labels


def class_median_distances(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``float64 [N]``: Euclidean distance of each feature row to the coordinate-wise median of
    its class's rows (Xia et al. 2023's class centre, robust to outliers unlike the mean)."""
    features, labels = _check_features(features, labels)
    distances = np.empty(len(features))
    for label in np.unique(labels):
        rows = labels == label
        centre = np.median(features[rows], axis=0)
        distances[rows] = np.linalg.norm(features[rows] - centre, axis=1)
    return distances


def moderate_scores(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Moderate-coreset score of every example, ``float64 [N]``, higher = keep first.

    Examples are ranked by :func:`class_median_distances` over the whole source (ties by index);
    the score is ``-|rank - (N - 1) / 2|``, so keeping the top ``k`` scores keeps the ``k``
    examples ranked around the median distance, dropping the closest and the farthest ones in
    equal numbers (Xia et al. 2023). Two examples equally far from the middle rank tie.

    Args:
        features: ``[N, D]`` features of the source examples (e.g. a surrogate's backbone).
        labels: ``[N]`` integer class of each example.
    """
    distances = class_median_distances(features, labels)
    rank = np.empty(len(distances))
    rank[np.argsort(distances, kind="stable")] = np.arange(len(distances))
    return -np.abs(rank - (len(distances) - 1) / 2)


def class_mean_scores(scores: Sequence[float] | np.ndarray, labels: np.ndarray,
                      num_classes: int) -> np.ndarray:
    """``float64 [num_classes]``: the mean example score of each class, to rank whole classes by
    an example-level score."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise DataError(f"scores {scores.shape} and labels {labels.shape} must both be [examples].")
    if labels.dtype.kind not in "iu" or labels.min(initial=0) < 0 or (
            labels.max(initial=-1) >= num_classes):
        raise DataError(f"labels must be integers in [0, {num_classes}).")
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise DataError(f"classes {np.flatnonzero(counts == 0).tolist()} have no scored example;"
                        " a class mean needs at least one.")
    return np.bincount(labels, weights=scores, minlength=num_classes) / counts
