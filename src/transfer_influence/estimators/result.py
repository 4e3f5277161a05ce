"""Influence results: the ``[units, targets]`` matrix with its names, summaries and storage.

Sign and scale: a score is the average change of the output variant (e.g. probability of the
correct class) on a target example when a source unit is included in pretraining versus left
out. Positive = the unit helps, negative = it hurts; the scale is that of the variant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_open
from ..errors import DataError, StoreError
from ..outputs import OutputVariant, output_variants
from ..ranking import top_indices
from .registry import estimator_names

_METADATA_FIELDS = ("unit_names", "target_class_names", "variant", "num_models", "method",
                    "heldout_lds", "num_diverged")


@dataclass(frozen=True, eq=False)  # arrays make field-wise == ambiguous
class InfluenceResult:
    """Influence of source units on target examples.

    ``influence`` is float ``[units, targets]``; ``target_labels`` int ``[targets]`` indexes
    ``target_class_names``; ``counts_with`` / ``counts_without`` ``[units]`` say how many models
    kept / dropped each unit (units with a zero count have NaN influence). ``method`` is the
    estimator's name (``estimators.registry``): ``dim`` (difference in means), ``ridge`` /
    ``lasso`` (linear datamodel weights, whose held-out linear datamodeling score is
    ``heldout_lds``) or one registered in this process; ``variant`` likewise.
    ``num_diverged`` diverged models of the sweep were excluded: the estimate uses only the
    ``num_models`` completed ones.
    """

    influence: np.ndarray
    unit_names: list[str]
    target_labels: np.ndarray
    target_class_names: list[str]
    variant: OutputVariant
    num_models: int
    counts_with: np.ndarray
    counts_without: np.ndarray
    method: str = "dim"
    heldout_lds: float | None = None
    num_diverged: int = 0

    def __post_init__(self) -> None:
        if np.ndim(self.influence) != 2:
            raise DataError(
                f"influence must be a [units, targets] matrix, got shape {np.shape(self.influence)}."
            )
        units, targets = np.shape(self.influence)
        checks = {
            "unit_names": (len(self.unit_names), units),
            "target_labels": (np.shape(self.target_labels)[0], targets),
            "counts_with": (np.shape(self.counts_with)[0], units),
            "counts_without": (np.shape(self.counts_without)[0], units),
        }
        for name, (found, expected) in checks.items():
            if found != expected:
                raise DataError(
                    f"InfluenceResult.{name} has length {found} but influence is"
                    f" [{units} units, {targets} targets]; they must describe the same matrix."
                )
        labels = np.asarray(self.target_labels)
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.target_class_names)):
            raise DataError(
                f"target_labels must lie in [0, {len(self.target_class_names)}) to index"
                f" target_class_names; got range [{labels.min()}, {labels.max()}]."
            )
        if self.method not in estimator_names():
            raise DataError(f"unknown estimation method {self.method!r}; choose one of"
                            f" {', '.join(estimator_names())} (register your own first).")
        if self.variant not in output_variants():
            raise DataError(
                f"unknown output variant {self.variant!r}; choose one of"
                f" {', '.join(output_variants())} (register your own first)."
            )

    def overall(self) -> np.ndarray:
        """``[units]``: mean influence over all target examples."""
        return np.asarray(self.influence).mean(axis=1)

    def per_class(self) -> np.ndarray:
        """``[units, target_classes]``: mean influence over the target examples of each class
        (NaN for classes with no target example)."""
        labels = np.asarray(self.target_labels)
        num_classes = len(self.target_class_names)
        onehot = np.zeros((labels.size, num_classes))
        onehot[np.arange(labels.size), labels] = 1.0
        counts = onehot.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (np.asarray(self.influence) @ onehot) / counts

    def _class_index(self, name: str) -> int:
        try:
            return self.target_class_names.index(name)
        except ValueError:
            raise DataError(
                f"unknown target class {name!r}; valid names are:"
                f" {', '.join(map(repr, self.target_class_names))}."
            ) from None

    def top(
        self, k: int, *, target_class: str | None = None, harmful: bool = False
    ) -> list[tuple[str, float]]:
        """The ``k`` most helpful (or, with ``harmful``, most harmful) units as
        ``(unit_name, score)``, scored over all targets or over one ``target_class``.
        Units with NaN influence are never listed."""
        if k < 1:
            raise DataError(f"k must be >= 1, got {k}.")
        scores = (self.overall() if target_class is None
                  else self.per_class()[:, self._class_index(target_class)])
        return [(self.unit_names[i], float(scores[i]))
                for i in top_indices(scores, k, largest=not harmful)]

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write an ``.npz`` (arrays plus JSON metadata) atomically: a temporary file in the
        same directory is renamed over ``path``, so readers never see a partial file."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise StoreError(
                f"{path} already exists; pass overwrite=True to replace it or choose another path."
            )
        metadata = json.dumps(
            {name: getattr(self, name) for name in _METADATA_FIELDS} | {"format": 1}
        )
        with atomic_open(path, "wb") as file:
            np.savez(
                file,
                influence=np.asarray(self.influence),
                target_labels=np.asarray(self.target_labels),
                counts_with=np.asarray(self.counts_with),
                counts_without=np.asarray(self.counts_without),
                metadata=np.array(metadata),
            )

    @classmethod
    def load(cls, path: str | Path) -> InfluenceResult:
        """Read a result written by :meth:`save`."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                metadata = json.loads(str(data["metadata"]))
                arrays = {name: data[name] for name in
                          ("influence", "target_labels", "counts_with", "counts_without")}
        except (OSError, KeyError, ValueError) as error:
            raise StoreError(
                f"cannot read an influence result from {path} ({error}); recompute it with"
                " transfer-influence estimate."
            ) from error
        return cls(**arrays, **{name: metadata[name] for name in _METADATA_FIELDS
                                if name in metadata})  # results saved before num_diverged

