"""Leakage and misleading examples from example-level influence.

With source *examples* as units, a source example with an extreme positive influence on one
target test example is a candidate near-duplicate of it (leakage: the model has, in effect, seen
the test image in pretraining); one with an extreme negative influence is a misleading example
(it pushes the target example towards a wrong class). Jain et al. (2022, section 5.3) find
CIFAR-10 test images duplicated in ImageNet this way. A pixel-space similarity of each candidate
to its target image separates exact or near copies from examples that act alike for other
reasons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.images import LabeledImages
from ..errors import DataError
from ..ranking import top_indices


@dataclass(frozen=True)
class LeakageCandidate:
    """A source example and its influence on a target example.

    ``similarity`` is the pixel-space correlation with the target image (1 = identical up to
    brightness and contrast), None when not computed.
    """

    source_index: int
    source_name: str
    score: float
    similarity: float | None = None


@dataclass(frozen=True)
class TargetLeakage:
    """The most positive (candidate leaks) and most negative (misleading) source examples of
    one target test example."""

    target_index: int
    true_class: str
    leaks: list[LeakageCandidate]
    misleading: list[LeakageCandidate]


def pixel_similarity(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pearson correlation of pixels between each of ``images`` ``[N, C, H, W]`` and one
    ``reference`` ``[C, H, W]`` of the same shape: 1 for a copy (also after a brightness or
    contrast change), about 0 for unrelated images."""
    images = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    if images.shape[1] != reference.size:
        raise DataError(f"images of {images.shape[1]} pixels cannot be compared with a reference"
                        f" of {reference.size}; resize both to one shape first.")
    images = images - images.mean(axis=1, keepdims=True)
    reference = reference - reference.mean()
    norms = np.linalg.norm(images, axis=1) * np.linalg.norm(reference)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, images @ reference / norms, 0.0)


def find_leakage(
    influence: np.ndarray,
    unit_names: Sequence[str],
    target_labels: np.ndarray,
    target_class_names: Sequence[str],
    *,
    k: int = 5,
    targets: Sequence[int] | None = None,
    source: LabeledImages | None = None,
    target_images: LabeledImages | None = None,
) -> list[TargetLeakage]:
    """For each target test example in ``targets`` (default: all), the ``k`` source examples
    with the largest and the ``k`` with the smallest influence.

    ``influence`` is ``[source examples, targets]`` (difference-in-means or datamodel weights of
    an example-level sweep). With ``source`` and ``target_images`` every candidate also gets its
    pixel similarity to the target image.
    """
    influence = np.asarray(influence, dtype=np.float64)
    units, num_targets = influence.shape
    if len(unit_names) != units:
        raise DataError(f"{len(unit_names)} unit names for {units} influence rows.")
    if not 1 <= k <= units:
        raise DataError(f"k must lie in [1, {units}] (the number of source examples), got {k}.")
    if (source is None) != (target_images is None):
        raise DataError("give both source and target_images for the pixel check, or neither.")
    if source is not None and len(source) != units:
        raise DataError(f"the source has {len(source)} examples but the influence has {units}"
                        " rows; leakage needs an example-level sweep (sweep.unit = 'example').")
    chosen = range(num_targets) if targets is None else [int(t) for t in targets]
    bad = [t for t in chosen if not 0 <= t < num_targets]
    if bad:
        raise DataError(f"target indices {bad} are out of range (0 to {num_targets - 1}).")
    found = []
    for t in chosen:
        column = influence[:, t]
        lists = []
        for largest in (True, False):
            picked = top_indices(column, k, largest=largest)
            similarity = (pixel_similarity(source.images[picked], target_images.images[t])
                          if source is not None and target_images is not None
                          else [None] * len(picked))
            lists.append([
                LeakageCandidate(int(u), unit_names[u], float(column[u]),
                                 None if s is None else float(s))
                for u, s in zip(picked, similarity)])
        found.append(TargetLeakage(t, target_class_names[int(target_labels[t])], *lists))
    return found


def recall_at_k(found: Sequence[TargetLeakage], planted: dict[int, int]) -> float:
    """Fraction of planted leaks (target index -> source index) listed among their target's
    candidate leaks."""
    by_target = {item.target_index: {c.source_index for c in item.leaks} for item in found}
    if not planted:
        raise DataError("no planted leaks to score.")
    return float(np.mean([source in by_target.get(t, set()) for t, source in planted.items()]))
