"""Difference-in-means influence of source units on target outputs, as streamed matrix products.

For unit ``c`` and target example ``t``::

    Infl[c -> t] = mean_{models i with c} f_i(t) - mean_{models i without c} f_i(t)

A positive score means models that saw unit ``c`` do better on ``t`` (in the units of the output
variant ``f``, e.g. probability of the correct class); a negative score means ``c`` hurts.

Both sums come from one matrix product per block of models: ``with_sum = masks.T @ outputs``
and ``without_sum = column_total - with_sum``, where ``column_total`` is the sum of ``outputs``
over models. Accumulating over blocks keeps memory at ``O(units x targets)`` whatever the number
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

DEFAULT_CHUNK_MODELS = 1024


class DifferenceInMeans:
    """Streaming accumulator of difference-in-means influence.

    Feed blocks of models with :meth:`update`, then read :meth:`result` (``[units, targets]``)
    and :attr:`counts_with` / :attr:`counts_without` (``[units]``: how many models kept or
    dropped each unit). A unit kept by every model, or by none, has no "without" (or "with")
    models: its influence is NaN and a warning names it — the counts show why.
    """

    def __init__(self) -> None:
        self._with_sum: np.ndarray | None = None  # float64 [units, targets], centred outputs
        self._total: np.ndarray | None = None  # float64 [targets], centred outputs
        self._offset: np.ndarray | None = None  # float32 [targets], subtracted before products
        self._counts_with: np.ndarray | None = None  # int64 [units]
        self.num_models = 0

    def update(self, masks: np.ndarray, outputs: np.ndarray) -> DifferenceInMeans:
        """Add a block: ``masks`` bool ``[models, units]``, ``outputs`` float ``[models, targets]``."""
        masks = np.asarray(masks)
        outputs = np.asarray(outputs)
        if masks.ndim != 2 or outputs.ndim != 2 or masks.shape[0] != outputs.shape[0]:
            raise DataError(
                f"masks [models, units] and outputs [models, targets] must be 2-D with the same"
                f" number of models; got masks {masks.shape} and outputs {outputs.shape}."
            )
        if masks.dtype != bool:
            raise DataError(f"masks must be bool (True = unit kept), got dtype {masks.dtype}.")
        if not np.isfinite(outputs).all():
            raise DataError(
                "outputs contain NaN or inf; drop diverged models (or use a bounded output"
                " variant such as prob_correct) before estimating influence."
            )
        if self._with_sum is None:
            units, targets = masks.shape[1], outputs.shape[1]
            self._with_sum = np.zeros((units, targets))
            self._total = np.zeros(targets)
            self._counts_with = np.zeros(units, dtype=np.int64)
            self._offset = (outputs.mean(axis=0, dtype=np.float64).astype(np.float32)
                            if outputs.shape[0] else np.zeros(targets, np.float32))
        elif (masks.shape[1], outputs.shape[1]) != self._with_sum.shape:
            raise DataError(
                f"block has {masks.shape[1]} units and {outputs.shape[1]} targets, earlier blocks"
                f" had {self._with_sum.shape}; all blocks must come from the same sweep."
            )
        centred = outputs.astype(np.float32, copy=True)
        centred -= self._offset
        # float32 {0,1} masks are exact; the product runs in sgemm, accumulation in float64.
        self._with_sum += masks.T.astype(np.float32) @ centred
        self._total += centred.sum(axis=0, dtype=np.float64)
        self._counts_with += masks.sum(axis=0)
        self.num_models += masks.shape[0]
        return self

    def _require_data(self) -> None:
        if self._with_sum is None:
            raise DataError("no models were added; call update() with at least one block.")

    @property
    def counts_with(self) -> np.ndarray:
        """int64 ``[units]``: models that kept each unit."""
        self._require_data()
        return self._counts_with.copy()

    @property
    def counts_without(self) -> np.ndarray:
        """int64 ``[units]``: models that dropped each unit."""
        self._require_data()
        return self.num_models - self._counts_with

    def result(self) -> np.ndarray:
        """float64 ``[units, targets]`` influence; NaN rows for units without a comparison."""
        self._require_data()
        n_with = self._counts_with[:, None].astype(np.float64)
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
            # The centring offset cancels in the difference of means.
            influence = (self._with_sum / n_with
                         - (self._total[None, :] - self._with_sum) / n_without)
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
