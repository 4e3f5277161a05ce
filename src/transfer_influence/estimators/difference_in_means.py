"""Difference-in-means influence of source units on target outputs, as streamed matrix products.

For unit ``c`` and target example ``t``::

    Infl[c -> t] = mean_{models i with c} f_i(t) - mean_{models i without c} f_i(t)

A positive score means models that saw unit ``c`` do better on ``t`` (in the units of the output
variant ``f``, e.g. probability of the correct class); a negative score means ``c`` hurts.

Both sums come from one matrix product per block of models: ``with_sum = masks.T @ outputs``
and ``without_sum = column_total - with_sum``, where ``column_total`` is the sum of ``outputs``
over models (a column of ones appended to the masks yields it from the same product). Accumulating over blocks keeps memory at ``O(units x targets)`` whatever the number
of models.

Precision: each block's product runs in float32 (the speed of BLAS sgemm) and is added into
float64 running sums, so rounding error grows with the block size, not with the number of
models. Outputs are centred by the first block's per-target mean before multiplying, which
removes the large common offset (e.g. margins around 5) whose cancellation in
``with_mean - without_mean`` would otherwise cost most of float32's digits.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import DataError

DEFAULT_CHUNK_MODELS = 2048


def check_masks_outputs(masks: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``masks`` as bool ``[models, units]`` and ``outputs`` as ``[models, targets]`` arrays with
    the same number of models, or a :class:`DataError` saying what is wrong."""
    masks = np.asarray(masks)
    outputs = np.asarray(outputs)
    if masks.ndim != 2 or outputs.ndim != 2 or masks.shape[0] != outputs.shape[0]:
        raise DataError(
            f"masks [models, units] and outputs [models, targets] must be 2-D with the same"
            f" number of models; got masks {masks.shape} and outputs {outputs.shape}."
        )
    if masks.dtype != bool:
        raise DataError(f"masks must be bool (True = unit kept), got dtype {masks.dtype}.")
    return masks, outputs


class DifferenceInMeans:
    """Streaming accumulator of difference-in-means influence.

    Feed blocks of models with :meth:`update`, then read :meth:`result` (``[units, targets]``)
    and :attr:`counts_with` / :attr:`counts_without` (``[units]``: how many models kept or
    dropped each unit). A unit kept by every model, or by none, has no "without" (or "with")
    models: its influence is NaN and a warning names it; the counts show why.

    Memory: float64 sums ``[units + 1, targets]`` plus, per block, a float32 copy of the
    block's outputs and the float32 product ``[units + 1, targets]``; :meth:`result` adds two
    float64 ``[units, targets]`` arrays. About 240 MiB at 1,000 units x 10,000 targets with the
    default block of 2,048 models, whatever the number of models.
    """

    def __init__(self) -> None:
        # Row u < units: sum of centred outputs over models keeping u; row `units`: over all.
        self._sums: np.ndarray | None = None  # float64 [units + 1, targets]
        self._offset: np.ndarray | None = None  # float32 [targets], subtracted before products
        self._counts_with: np.ndarray | None = None  # int64 [units]
        self.num_models = 0

    def update(self, masks: np.ndarray, outputs: np.ndarray) -> DifferenceInMeans:
        """Add a block: ``masks`` bool ``[models, units]``, ``outputs`` float ``[models, targets]``."""
        masks, outputs = check_masks_outputs(masks, outputs)
        models, units = masks.shape
        if self._sums is None:
            self._sums = np.zeros((units + 1, outputs.shape[1]))
            self._counts_with = np.zeros(units, dtype=np.int64)
        elif (units + 1, outputs.shape[1]) != self._sums.shape:
            raise DataError(
                f"block has {units} units and {outputs.shape[1]} targets, earlier blocks had"
                f" {self._sums.shape[0] - 1} and {self._sums.shape[1]}; all blocks must come"
                " from the same sweep."
            )
        if models == 0:
            return self
        if self._offset is None:
            self._offset = outputs.mean(axis=0, dtype=np.float64).astype(np.float32)
        # A column of ones makes the same sgemm return the all-model totals in its last row.
        weights = np.empty((models, units + 1), dtype=np.float32)
        weights[:, :units] = masks
        weights[:, units] = 1.0
        centred = np.subtract(outputs, self._offset, dtype=np.float32)
        product = weights.T @ centred
        if not np.isfinite(product[units]).all():
            raise DataError(
                "outputs contain NaN or inf; drop diverged models (or use a bounded output"
                " variant such as prob_correct) before estimating influence."
            )
        self._sums += product
        self._counts_with += masks.sum(axis=0)
        self.num_models += models
        return self

    def _require_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The sums and ``counts_with``, once at least one model was added."""
        if self.num_models == 0 or self._sums is None or self._counts_with is None:
            raise DataError("no models were added; call update() with at least one model.")
        return self._sums, self._counts_with

    @property
    def counts_with(self) -> np.ndarray:
        """int64 ``[units]``: models that kept each unit."""
        return self._require_data()[1].copy()

    @property
    def counts_without(self) -> np.ndarray:
        """int64 ``[units]``: models that dropped each unit."""
        return self.num_models - self._require_data()[1]

    def result(self) -> np.ndarray:
        """float64 ``[units, targets]`` influence; NaN rows for units without a comparison."""
        sums, counts_with = self._require_data()
        with_sum, total = sums[:-1], sums[-1]
        n_with = counts_with[:, None].astype(np.float64)
        n_without = self.num_models - n_with
        undefined = (n_with[:, 0] == 0) | (n_without[:, 0] == 0)
        if undefined.any():
            warnings.warn(
                f"{int(undefined.sum())} unit(s) (indices {np.flatnonzero(undefined)[:10].tolist()}"
                "...) were kept by every model or by none, so their influence is undefined (NaN);"
                " use alpha strictly between 0 and 1 and more models.",
                RuntimeWarning,
                stacklevel=2,
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            # In place where possible: two [units, targets] temporaries instead of four.
            # The centring offset cancels in the difference of means.
            without_mean = total - with_sum
            without_mean /= n_without
            influence = with_sum / n_with
            influence -= without_mean
        influence[undefined] = np.nan  # rounding can leave a tiny nonzero sum over zero models
        return influence


def difference_in_means(
    masks: np.ndarray, outputs: np.ndarray, *, chunk_models: int | None = None
) -> np.ndarray:
    """Influence ``[units, targets]`` of each unit on each target output.

    ``masks`` is bool ``[models, units]``, ``outputs`` float ``[models, targets]``.
    ``chunk_models`` bounds the block of models multiplied at once (default
    ``DEFAULT_CHUNK_MODELS``); the result does not depend on it beyond float rounding.
    """
    masks = np.asarray(masks)
    chunk = DEFAULT_CHUNK_MODELS if chunk_models is None else int(chunk_models)
    if chunk < 1:
        raise DataError(f"chunk_models must be >= 1, got {chunk_models}.")
    accumulator = DifferenceInMeans()
    for start in range(0, max(masks.shape[0], 1), chunk):
        accumulator.update(masks[start:start + chunk], outputs[start:start + chunk])
    return accumulator.result()
