"""A synthetic transfer problem with planted helpful and harmful source classes.

Influence estimators need a test where the answer is known. :func:`planted_transfer_problem`
builds tiny grey images (8x8 by default) in which one target class ``t`` is easily confused with
another target class ``u``, and the source contains:

* a **helpful** class drawn from exactly ``t``'s distribution. Pretraining with it teaches the
  backbone a detector of ``t``'s pattern, so a linear head on the frozen features separates ``t``
  from ``u`` better: its presence raises target accuracy on ``t``.
* a **harmful** class whose examples are drawn half from ``t``'s and half from ``u``'s
  distribution under one label. Pretraining with it teaches the backbone to map ``t`` and ``u``
  to the same output, i.e. to be invariant to exactly the pattern that tells them apart: its
  presence lowers target accuracy on ``t`` (and ``u``).
* **filler** classes with unrelated random prototypes, which neither help nor hurt ``t``.

Every class is a prototype plus Gaussian pixel noise. ``t`` and ``u`` share a base pattern and
differ by ``+-contrast`` times a random sign pattern, so with few target training examples and
noisy pixels the transferred features decide how well they are told apart. The remaining target
classes have their own random prototypes and are easy. Source classes appear in a seeded random
order, so an estimator cannot rely on their position. A small MLP or CNN trains on it in well
under a second, so a test can train dozens of models.

What has been checked (a 2-layer MLP backbone, 16 features, Adam, then a logistic-regression
head on the frozen features; 4 seeds): adding the helpful class to the filler classes raises the
probability of the correct class on ``t``'s test images by about 0.2 on average. The harmful
class did *not* reliably lower it (effects between -0.08 and +0.08): a class made of ``t`` and
``u`` images also teaches features that tell ``t`` from the other targets, and next to the
helpful class it even teaches ``u`` from ``t``. Invariance, and so harm, needs a backbone that
collapses within-class variation (narrow features, long training). Tests should therefore
assert that the helpful class is the top influencer of ``t`` and the harmful class ranks below
it, and treat "harmful is negative" as a property of the trainer, not of the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .images import LabeledImages
from .suites import TransferData


@dataclass(frozen=True)
class PlantedTruth:
    """What :func:`planted_transfer_problem` planted (class indices into source / target).

    ``target_class`` is ``t``, ``confused_with`` is ``u``; ``target_prototypes`` is
    ``float32 [target classes, 1, H, W]`` in [0, 1], the noise-free class patterns.
    """

    target_class: int
    confused_with: int
    helpful_source_class: int
    harmful_source_class: int
    filler_source_classes: tuple[int, ...]
    target_class_name: str
    helpful_source_name: str
    harmful_source_name: str
    target_prototypes: np.ndarray


def _draw(rng: np.random.Generator, prototype: np.ndarray, n: int, noise: float) -> np.ndarray:
    """``n`` noisy uint8 samples ``[n, 1, H, W]`` of a ``[H, W]`` prototype in [0, 1]."""
    pixels = prototype[None] + noise * rng.standard_normal((n, *prototype.shape))
    return np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)[:, None]


def planted_transfer_problem(
    seed: int,
    *,
    num_target_classes: int = 4,
    num_filler_source_classes: int = 6,
    image_size: int = 8,
    n_per_class: int = 100,
    target_train_per_class: int = 5,
    target_test_per_class: int = 50,
    noise: float = 0.3,
    contrast: float = 0.15,
    spread: float = 0.35,
) -> tuple[TransferData, PlantedTruth]:
    """Build the planted problem (see the module docstring) and its ground truth.

    Args:
        seed: seeds every random choice (prototypes, noise, which classes are planted, order).
        num_target_classes: target classes (at least 2: ``t`` and ``u``).
        num_filler_source_classes: unrelated source classes besides the helpful and harmful one.
        image_size: side of the square single-channel images.
        n_per_class: examples per source class.
        target_train_per_class / target_test_per_class: target examples per class.
        noise: standard deviation of the Gaussian pixel noise (pixels in [0, 1]).
        contrast: half the per-pixel difference between the prototypes of ``t`` and ``u``;
            smaller is harder to separate without good features.
        spread: per-pixel standard deviation of the random prototypes around grey 0.5; it keeps
            every other pair of classes much further apart than ``t`` and ``u``.

    Returns:
        ``(TransferData, PlantedTruth)``; the source has ``num_filler_source_classes + 2`` classes.
    """
    if num_target_classes < 2:
        raise DataError("planted_transfer_problem(): num_target_classes must be >= 2 (t and u).")
    if min(n_per_class, target_train_per_class, target_test_per_class) < 2:
        raise DataError("planted_transfer_problem(): every per-class count must be >= 2.")
    rng = np.random.default_rng(seed)
    shape = (image_size, image_size)

    def random_prototype() -> np.ndarray:
        return np.clip(0.5 + spread * rng.standard_normal(shape), 0.0, 1.0)

    t, u = (int(k) for k in rng.choice(num_target_classes, 2, replace=False))
    prototypes = np.stack([random_prototype() for _ in range(num_target_classes)])
    base = np.clip(prototypes[t], contrast, 1.0 - contrast)
    direction = contrast * rng.choice([-1.0, 1.0], size=shape)
    prototypes[t], prototypes[u] = base + direction, base - direction

    target_names = tuple(f"target{k}" for k in range(num_target_classes))

    def target_split(n: int) -> LabeledImages:
        images = np.concatenate([_draw(rng, p, n, noise) for p in prototypes])
        labels = np.repeat(np.arange(num_target_classes), n)
        return LabeledImages(images, labels, target_names, "planted-target")

    target_train = target_split(target_train_per_class)
    target_test = target_split(target_test_per_class)

    half = n_per_class // 2
    harmful = np.concatenate(
        [
            _draw(rng, prototypes[t], half, noise),
            _draw(rng, prototypes[u], n_per_class - half, noise),
        ]
    )
    helpful_name = f"helpful({target_names[t]})"
    harmful_name = f"harmful({target_names[t]}+{target_names[u]})"
    blocks = {
        helpful_name: _draw(rng, prototypes[t], n_per_class, noise),
        harmful_name: harmful[rng.permutation(n_per_class)],
    }
    for k in range(num_filler_source_classes):
        blocks[f"filler{k}"] = _draw(rng, random_prototype(), n_per_class, noise)
    names = [list(blocks)[k] for k in rng.permutation(len(blocks))]
    source = LabeledImages(
        np.concatenate([blocks[n] for n in names]),
        np.repeat(np.arange(len(names)), n_per_class),
        tuple(names),
        "planted-source",
    )
    truth = PlantedTruth(
        target_class=t,
        confused_with=u,
        helpful_source_class=names.index(helpful_name),
        harmful_source_class=names.index(harmful_name),
        filler_source_classes=tuple(i for i, n in enumerate(names) if n.startswith("filler")),
        target_class_name=target_names[t],
        helpful_source_name=helpful_name,
        harmful_source_name=harmful_name,
        target_prototypes=prototypes.astype(np.float32)[:, None],
    )
    return TransferData(source, target_train, target_test), truth
