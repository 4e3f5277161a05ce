"""A synthetic pruning problem with a known answer: which source classes a target needs.

The target has ``num_target_classes`` classes of noisy grey images around random prototypes, with
few training shots and heavy pixel noise, so a linear probe needs features that were *learned* for
those patterns. The source has one **related** class per target class (a near-copy: the target's
prototype plus a small fixed perturbation ``jitter``) and ``num_unrelated`` **unrelated** classes
(prototypes of their own). Pretraining on a related class teaches the backbone the feature its
target class needs; unrelated classes teach nothing useful.

A correct pruning score therefore ranks every related class above every unrelated one; pruning
the unrelated half keeps target accuracy, while pruning a random half usually removes related
classes and lowers it (``tests/pruning/test_planted_pruning.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .images import LabeledImages
from .suites import TransferData
from .synthetic import _draw


@dataclass(frozen=True)
class PlantedPruningTruth:
    """Source class indices of the related classes (``related[k]`` copies target class ``k``)
    and of the unrelated ones."""

    related: tuple[int, ...]
    unrelated: tuple[int, ...]


def planted_pruning_problem(
    seed: int,
    *,
    num_target_classes: int = 4,
    num_unrelated: int = 4,
    image_size: int = 8,
    n_per_class: int = 100,
    target_train_per_class: int = 3,
    target_test_per_class: int = 50,
    noise: float = 0.45,
    spread: float = 0.3,
    jitter: float = 0.05,
) -> tuple[TransferData, PlantedPruningTruth]:
    """Build the problem of the module docstring; every random choice is seeded by ``seed``.

    ``noise`` is the pixel noise (pixels in [0, 1]) of source and target images alike,
    ``spread`` the per-pixel deviation of prototypes from grey 0.5, ``jitter`` how far a related
    source class's prototype lies from its target class's. Source classes appear in a seeded
    random order, so a score cannot rely on their position.
    """
    if num_target_classes < 2 or num_unrelated < 1:
        raise DataError("planted_pruning_problem(): needs >= 2 target classes and >= 1 unrelated"
                        " source class.")
    if min(n_per_class, target_train_per_class, target_test_per_class) < 1 or image_size < 2:
        raise DataError("planted_pruning_problem(): counts must be >= 1 and image_size >= 2.")
    rng = np.random.default_rng(seed)
    shape = (image_size, image_size)

    def prototypes(n: int) -> np.ndarray:
        return np.clip(0.5 + spread * rng.standard_normal((n, *shape)), 0.0, 1.0)

    target_prototypes = prototypes(num_target_classes)
    target_names = tuple(f"target{k}" for k in range(num_target_classes))

    def target_split(n: int) -> LabeledImages:
        labels = np.repeat(np.arange(num_target_classes), n)
        return LabeledImages(_draw(rng, target_prototypes[labels], noise), labels, target_names,
                             "planted-pruning-target")

    target_train, target_test = target_split(target_train_per_class), target_split(
        target_test_per_class)
    related = np.clip(target_prototypes + jitter * rng.standard_normal(target_prototypes.shape),
                      0.0, 1.0)
    blocks = {f"related{k}": related[k] for k in range(num_target_classes)}
    blocks.update({f"unrelated{k}": p for k, p in enumerate(prototypes(num_unrelated))})
    names = [list(blocks)[k] for k in rng.permutation(len(blocks))]
    source = LabeledImages(
        np.concatenate([_draw(rng, np.repeat(blocks[n][None], n_per_class, axis=0), noise)
                        for n in names]),
        np.repeat(np.arange(len(names)), n_per_class), tuple(names), "planted-pruning-source")
    truth = PlantedPruningTruth(
        related=tuple(names.index(f"related{k}") for k in range(num_target_classes)),
        unrelated=tuple(names.index(f"unrelated{k}") for k in range(num_unrelated)))
    return TransferData(source, target_train, target_test), truth
