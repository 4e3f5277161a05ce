"""The result store of a sweep: one zarr v3 group holding masks, outputs and completion flags.

Layout (``M`` models, ``U`` units, ``T`` target examples)::

    masks                    bool    [M, U]
    outputs/correct_logit    float32 [M, T]   (NaN until written)
    outputs/max_other_logit  float32 [M, T]
    outputs/logsumexp        float32 [M, T]
    outputs/predicted        int64   [M, T]   (-1 until written)
    target_labels            int64   [T]
    finished_at              float64 [M]      (Unix time a model was written; for ETAs)
    completed                bool    [M]
    diverged_step            int64   [M]      (step its loss became NaN/inf; -1 if it did not;
                                               a diverged model's mask is kept in ``masks``)
    diverged_loss            float64 [M]      (its last finite loss before that, NaN if none)
    diverged                 bool    [M]      (training diverged: final, no outputs written)
    attributes: format, config_hash, fingerprints, versions, numerics, unit_names,
                target_class_names, num_models, created

Concurrency. Several processes (Ray workers, array-job shards) write *disjoint* models into the
same store at once. Zarr writes whole chunks, so two writers touching one chunk would each
read-modify-write it and one would silently lose the other's rows. Every per-model array is
therefore chunked with exactly **one model per chunk** along the models axis (including
``completed``): writers of different models never touch the same object, on a local disk, a
shared file system or an object store alike.

Atomicity. A model counts only once its ``completed`` flag is set, and that flag lives in its
own chunk written *after* all of the model's data chunks. A writer that dies in between leaves
data without a flag: the model is reported by :meth:`SweepStore.missing` and is simply written
again on resume. Readers only ever see completed models.

Growth. A sweep grows to more models (:meth:`SweepStore.grow`): every per-model array is resized
along the models axis (still one model per chunk; the new rows read as fill values, i.e. not
completed), and only then is the ``num_models`` attribute, which readers trust for the number of
models, rewritten in one atomic metadata write. A crash in between leaves some arrays longer than
``num_models``; they are never read past it, and growing again completes the resize.

Divergence. A model whose training diverged (``sweep.on_divergence = "record"``) gets no
outputs; its step and last finite loss are written first and its own ``diverged`` flag chunk
last, so a half-written record is never read as one. A diverged model is final like a completed
one: it is never missing, never retrained, and never read as a completed model. Stores created
before this record existed read as having no diverged models.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import zarr

from ..errors import DataError, StoreError
from ..outputs import TargetOutputs

STORE_FORMAT = 1
OUTPUT_FIELDS: tuple[str, ...] = ("correct_logit", "max_other_logit", "logsumexp", "predicted")
_DIVERGED_FIELDS: dict[str, tuple[npt.DTypeLike, float]] = {
    "diverged_step": ("int64", -1), "diverged_loss": ("float64", np.nan),
    "diverged": (bool, False)}  # in write order: the flag last


class DivergedModels(NamedTuple):
    """The diverged models of a store (see :meth:`SweepStore.read_diverged`)."""

    indices: np.ndarray  # int64 [models]
    masks: np.ndarray  # bool [models, units]
    steps: np.ndarray  # int64 [models]: step at which the loss was first seen NaN or infinite
    last_losses: np.ndarray  # float64 [models]: last finite loss before it (NaN if none)


class ModelChunk(NamedTuple):
    """A block of completed models read from a store."""

    indices: np.ndarray  # int64 [models]: model indices in the sweep
    masks: np.ndarray  # bool [models, units]
    outputs: TargetOutputs  # [models, targets]


def _package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour determines the stored numbers."""
    versions = {}
    for name in ("transfer-influence", "torch", "numpy", "zarr"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _store_location(path: str | Path) -> str:
    """Local path or fsspec URL for zarr; ``file://`` URLs become plain local paths so that
    zarr's local store (which creates directories) is used."""
    text = str(path)
    return text.removeprefix("file://")


def _selection(indices: np.ndarray) -> slice | np.ndarray:
    """``indices`` as a slice when they are one increasing run: zarr reads and writes a slice
    several times faster than a gather of the same rows."""
    if indices.size and np.array_equal(indices, np.arange(indices[0], indices[0] + indices.size)):
        return slice(int(indices[0]), int(indices[0]) + indices.size)
    return indices


def _array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of ``group`` (a group there means the store is not a sweep store)."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{name} in the store at {group.store} is a group, not an array; it is"
                         " not a transfer-influence sweep store. Choose another store path.")
    return node


class SweepStore:
    """Read and write the results of one sweep (see the module docstring for the layout).

    Construct with :meth:`create`, :meth:`open` or :meth:`open_or_create`, not directly.
    """

    def __init__(self, group: zarr.Group, path: str) -> None:
        self._group = group
        self.path = path
        # JSON attributes, with the types create() writes them in.
        attrs: dict[str, Any] = dict(group.attrs)
        if attrs.get("format") != STORE_FORMAT or "completed" not in group:
            raise StoreError(
                f"{path} is not a complete transfer-influence sweep store (format"
                f" {attrs.get('format')!r}, expected {STORE_FORMAT}); its creation may have been"
                " interrupted. Delete it and run the sweep again, or choose another store path."
            )
        self._attrs = attrs
        self._masks = _array(group, "masks")
        self._outputs = {name: _array(group, f"outputs/{name}") for name in OUTPUT_FIELDS}
        self._completed = _array(group, "completed")
        self._finished_at = _array(group, "finished_at")
        self._num_models = int(attrs["num_models"])
        self._diverged = {name: _array(group, name) for name in _DIVERGED_FIELDS if name in group}

    # ----------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        num_models: int,
        unit_names: Sequence[str],
        target_labels: np.ndarray | Sequence[int],
        target_class_names: Sequence[str],
        config_hash: str,
        fingerprints: dict[str, str],
        numerics: dict[str, str] | None = None,
    ) -> SweepStore:
        """Create an empty store; fails if anything already exists at ``path``.

        ``numerics`` records how the models compute where that changes results at float rounding
        but not the config (``{"conv_layout": "channels_last", "conv_threads": "1"}`` for CNNs, see
        :func:`~transfer_influence.training.conv_numerics`); :meth:`open_or_create` refuses to
        add models computed otherwise. Per model and target it keeps the four reduced numbers
        of :class:`TargetOutputs`, from which every output variant is computed.
        """
        location = _store_location(path)
        labels = np.asarray(target_labels)
        unit_names = [str(name) for name in unit_names]
        class_names = [str(name) for name in target_class_names]
        if num_models < 1 or len(unit_names) < 2:
            raise DataError(
                f"a store needs num_models >= 1 and at least 2 units, got num_models={num_models}"
                f" and {len(unit_names)} unit names."
            )
        if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"target_labels must be a non-empty 1-D integer array, got shape {labels.shape}"
                f" and dtype {labels.dtype}."
            )
        if labels.min() < 0 or labels.max() >= len(class_names):
            raise DataError(
                f"target_labels must lie in [0, {len(class_names)}) to index the"
                f" {len(class_names)} target_class_names; got range"
                f" [{labels.min()}, {labels.max()}]."
            )
        try:
            group = zarr.open_group(location, mode="w-")
        except FileExistsError as error:
            raise StoreError(
                f"a store already exists at {location}; open it with SweepStore.open (or"
                " open_or_create to resume), or choose another path. It is never overwritten."
            ) from error
        num_units, num_targets = len(unit_names), int(labels.size)
        group.create_array(
            "masks", shape=(num_models, num_units), chunks=(1, num_units), dtype=bool,
            fill_value=False,
        )
        outputs = group.create_group("outputs")
        for name in OUTPUT_FIELDS:
            is_int = name == "predicted"
            outputs.create_array(
                name, shape=(num_models, num_targets), chunks=(1, num_targets),
                dtype="int64" if is_int else "float32", fill_value=-1 if is_int else np.nan,
            )
        group.create_array("target_labels", data=labels.astype(np.int64))
        group.create_array(
            "finished_at", shape=(num_models,), chunks=(1,), dtype="float64", fill_value=np.nan
        )
        group.create_array(
            "completed", shape=(num_models,), chunks=(1,), dtype=bool, fill_value=False
        )
        for name, (dtype, fill) in _DIVERGED_FIELDS.items():
            group.create_array(name, shape=(num_models,), chunks=(1,), dtype=dtype,
                               fill_value=fill)
        # Attributes last: `format` marks the store as fully created for concurrent openers.
        group.attrs.update(
            {
                "config_hash": str(config_hash),
                "fingerprints": {str(k): str(v) for k, v in fingerprints.items()},
                "versions": _package_versions(),
                "numerics": {str(k): str(v) for k, v in (numerics or {}).items()},
                "unit_names": unit_names,
                "target_class_names": class_names,
                "num_models": int(num_models),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "format": STORE_FORMAT,
            }
        )
        return cls(group, location)

    @classmethod
    def open(
        cls, path: str | Path, *, config_hash: str | None = None, read_only: bool = False
    ) -> SweepStore:
        """Open an existing store; with ``config_hash``, fail unless it was written by that
        configuration."""
        location = _store_location(path)
        try:
            group = zarr.open_group(location, mode="r" if read_only else "r+")
        except FileNotFoundError as error:
            raise StoreError(
                f"no sweep store at {location}; run the sweep first (transfer-influence run) or"
                " check the store path in the experiment configuration."
            ) from error
        store = cls(group, location)
        if config_hash is not None and store.config_hash != config_hash:
            raise StoreError(
                f"the store at {location} was written by another configuration (hash"
                f" {store.config_hash}, this configuration has {config_hash}); use a new store"
                " path or delete the old store."
            )
        return store

    @classmethod
    def open_or_create(
        cls,
        path: str | Path,
        *,
        num_models: int,
        unit_names: Sequence[str],
        target_labels: np.ndarray | Sequence[int],
        target_class_names: Sequence[str],
        config_hash: str,
        fingerprints: dict[str, str],
        numerics: dict[str, str] | None = None,
    ) -> SweepStore:
        """Resume a sweep: open the store at ``path`` if it exists, checking that it belongs to
        this configuration and has the expected shapes, and :meth:`grow` it when ``num_models``
        is larger than the store's; otherwise create it.

        Create the store once (e.g. in the driver) before starting concurrent writers: two
        processes creating the same store at the same instant may see each other's partial
        group, which :meth:`open` reports as an incomplete store.
        """
        try:
            store = cls.open(path, config_hash=config_hash)
        except StoreError as error:
            if not isinstance(error.__cause__, FileNotFoundError):
                raise
            return cls.create(
                path, num_models=num_models, unit_names=unit_names, target_labels=target_labels,
                target_class_names=target_class_names, config_hash=config_hash,
                fingerprints=fingerprints, numerics=numerics,
            )
        expected = {
            "unit names": [str(name) for name in unit_names],
            "target class names": [str(name) for name in target_class_names],
            "target labels": np.asarray(target_labels).tolist(),
            "dataset fingerprints": {str(k): str(v) for k, v in fingerprints.items()},
            "numerics": {str(k): str(v) for k, v in (numerics or {}).items()},
        }
        found = {
            "unit names": store.unit_names,
            "target class names": store.target_class_names,
            "target labels": store.target_labels.tolist(),
            "dataset fingerprints": store.fingerprints,
            "numerics": store.numerics,
        }
        for key, value in expected.items():
            if found[key] != value:
                detail = (f" (the store's models were computed with {found[key] or 'defaults'},"
                          f" this version computes with {value or 'defaults'}, which changes"
                          " results at float rounding)" if key == "numerics" else "")
                raise StoreError(
                    f"the store at {store.path} has the same config hash but different {key}"
                    f"{detail}; the data or code changed since it was written. Use a new store"
                    " path or delete the old store."
                )
        store.add_divergence_record()
        store.grow(num_models)
        return store

    def add_divergence_record(self) -> None:
        """Give a store written before diverged models were recorded its empty record (steps
        and losses first, the flags last), so that resuming it can record them. Done where a
        sweep is resumed (:meth:`open_or_create`), before any concurrent writer starts."""
        for name, (dtype, fill) in _DIVERGED_FIELDS.items():
            if name not in self._diverged:
                self._diverged[name] = self._group.create_array(
                    name, shape=(self.num_models,), chunks=(1,), dtype=dtype, fill_value=fill)

    def grow(self, num_models: int) -> None:
        """Extend the store to ``num_models`` models; the new ones are missing until written.

        Models already written are untouched (model *i* depends only on the sweep seed and *i*),
        so a grown store finished by a resumed sweep equals a sweep run at the larger size from
        the start. Equal ``num_models`` is a no-op; fewer is refused (:class:`StoreError`). Safe
        to rerun after a crash (see the module docstring). Grow before starting concurrent
        writers (``transfer-influence init``), as with creation.
        """
        num_models = int(num_models)
        if num_models < self.num_models:
            raise StoreError(
                f"the store at {self.path} already has {self.num_models} models' rows"
                f" ({self.num_completed} completed) and cannot shrink to {num_models}; set"
                f" num_models >= {self.num_models} in the [sweep] table (estimators use the"
                " completed models, however many), or use a new store path."
            )
        if num_models == self.num_models:
            return
        arrays = [self._masks, self._completed, self._finished_at, *self._outputs.values(),
                  *self._diverged.values()]
        for array in arrays:
            array.resize((num_models, *array.shape[1:]))  # chunks stay one model each
        # Last, in one atomic metadata write: from here on readers see the new size.
        self._group.attrs["num_models"] = num_models
        self._attrs["num_models"] = self._num_models = num_models

    # ----------------------------------------------------------------- metadata
    @property
    def config_hash(self) -> str:
        """Hash of the configuration that created the store."""
        return str(self._attrs["config_hash"])

    @property
    def fingerprints(self) -> dict[str, str]:
        """Dataset fingerprints recorded at creation."""
        return dict(self._attrs["fingerprints"])

    @property
    def versions(self) -> dict[str, str]:
        """Package versions recorded at creation."""
        return dict(self._attrs["versions"])

    @property
    def numerics(self) -> dict[str, str]:
        """How the models compute where it is not in the config (see :meth:`create`); empty for
        models without such settings and for stores written before they were recorded (whose
        CNNs computed in NCHW)."""
        return dict(self._attrs.get("numerics", {}))

    @property
    def created(self) -> str:
        """ISO-8601 UTC creation time."""
        return str(self._attrs["created"])

    @property
    def unit_names(self) -> list[str]:
        """Names of the source units (mask columns)."""
        return list(self._attrs["unit_names"])

    @property
    def target_class_names(self) -> list[str]:
        """Names of the target classes that ``target_labels`` index."""
        return list(self._attrs["target_class_names"])

    @property
    def target_labels(self) -> np.ndarray:
        """int64 ``[targets]`` labels of the target examples."""
        return np.asarray(_array(self._group, "target_labels")[:], dtype=np.int64)

    @property
    def num_models(self) -> int:
        """Number of models the sweep trains (rows of every per-model array that are read)."""
        return self._num_models

    @property
    def num_units(self) -> int:
        """Number of source units."""
        return int(self._masks.shape[1])

    @property
    def num_targets(self) -> int:
        """Number of target examples."""
        return int(self._outputs["correct_logit"].shape[1])

    # ----------------------------------------------------------------- progress
    def completed(self) -> np.ndarray:
        """bool ``[models]``: which models are fully written."""
        return np.asarray(self._completed[: self.num_models], dtype=bool)

    def diverged(self) -> np.ndarray:
        """bool ``[models]``: which models diverged (recorded, final, without outputs)."""
        if "diverged" not in self._diverged:
            return np.zeros(self.num_models, dtype=bool)
        return np.asarray(self._diverged["diverged"][: self.num_models], dtype=bool)

    def read_diverged(self) -> DivergedModels:
        """The diverged models' indices, masks, steps and last finite losses, in index order."""
        idx = np.flatnonzero(self.diverged()).astype(np.int64)
        if idx.size == 0:
            return DivergedModels(idx, np.zeros((0, self.num_units), dtype=bool),
                                  np.zeros(0, dtype=np.int64), np.zeros(0))
        rows = _selection(idx)
        return DivergedModels(
            idx, np.asarray(self._masks.oindex[rows, :], dtype=bool),
            np.asarray(self._diverged["diverged_step"].oindex[rows], dtype=np.int64),
            np.asarray(self._diverged["diverged_loss"].oindex[rows], dtype=np.float64))

    def missing(self) -> np.ndarray:
        """int64 indices of models still to train (never written, or interrupted)."""
        return np.flatnonzero(~(self.completed() | self.diverged())).astype(np.int64)

    @property
    def num_completed(self) -> int:
        """Number of fully written models."""
        return int(self.completed().sum())

    def recent_rate(self, window: int = 64) -> float | None:
        """Models finished per second over the last ``window`` completed models (None until two
        distinct finish times exist); what ``transfer-influence status`` bases its ETA on."""
        finished = np.asarray(self._finished_at[: self.num_models], dtype=np.float64)
        done = self.completed() | self.diverged()
        times = np.sort(finished[done & np.isfinite(finished)])[-window:]
        if times.size < 2 or times[-1] <= times[0]:
            return None
        return float((times.size - 1) / (times[-1] - times[0]))

    def last_finished(self) -> float | None:
        """Unix time the most recent model (completed or diverged) was written, None if none."""
        finished = np.asarray(self._finished_at[: self.num_models], dtype=np.float64)
        finished = finished[(self.completed() | self.diverged()) & np.isfinite(finished)]
        return float(finished.max()) if finished.size else None

    def status(self) -> tuple[int, int]:
        """``(done, total)`` models."""
        return self.num_completed, self.num_models

    # ----------------------------------------------------------------- writing
    def write_model(self, index: int, mask: np.ndarray, outputs: TargetOutputs) -> None:
        """Write one model: ``mask`` ``[units]`` and ``outputs`` of shape ``[1, targets]``."""
        self.write_models(np.array([index]), np.asarray(mask)[None, :], outputs)

    def write_models(
        self, indices: np.ndarray | Sequence[int], masks: np.ndarray, outputs: TargetOutputs,
    ) -> None:
        """Write models ``indices``: their masks ``[n, units]`` and outputs ``[n, targets]``,
        then their ``completed`` flags.

        Rewriting an already completed model is allowed only with identical data (a retried
        task); different data raises :class:`StoreError` and leaves the store unchanged.
        """
        idx, masks, arrays = self._validate_write(indices, masks, outputs)
        done = np.asarray(self._completed.oindex[idx], dtype=bool)  # only these models' flags
        if done.any():
            self._check_identical(idx[done], masks[done], {k: v[done] for k, v in arrays.items()})
            keep = ~done
            idx, masks = idx[keep], masks[keep]
            arrays = {name: value[keep] for name, value in arrays.items()}
        if idx.size == 0:
            return
        order = np.argsort(idx)
        rows = _selection(idx[order])
        self._masks.oindex[rows, :] = masks[order]
        for name, value in arrays.items():
            self._outputs[name].oindex[rows, :] = value[order]
        self._finished_at.oindex[rows] = np.full(idx.size, time.time())
        # Flags strictly after the data: an interruption above leaves these models missing.
        self._completed.oindex[rows] = np.ones(idx.size, dtype=bool)

    def write_diverged(self, indices: np.ndarray | Sequence[int], masks: np.ndarray,
                       steps: np.ndarray, last_losses: np.ndarray) -> None:
        """Record models ``indices`` (masks ``[n, units]``) as diverged at ``steps`` with their
        last finite losses (NaN if none): data chunks first, each model's ``diverged`` flag
        last. Recording an already recorded model again is a no-op; a completed model cannot be
        recorded."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        masks = np.asarray(masks, dtype=bool).reshape(idx.size, self.num_units)
        steps = np.asarray(steps, dtype=np.int64).reshape(-1)
        losses = np.asarray(last_losses, dtype=np.float64).reshape(-1)
        if len(self._diverged) != len(_DIVERGED_FIELDS):
            raise StoreError(
                f"{self.path} was created before diverged models could be recorded; resume it"
                " with `transfer-influence run` (which adds the record), finish it with"
                " sweep.on_divergence = \"stop\", or start a new store."
            )
        if (np.unique(idx).size != idx.size or steps.shape != idx.shape
                or losses.shape != idx.shape or (idx.size and (idx.min() < 0
                                                               or idx.max() >= self.num_models))):
            raise DataError(
                f"give unique model indices in [0, {self.num_models}) and one step and loss per"
                f" model; got indices {idx}, {steps.size} steps and {losses.size} losses."
            )
        if np.asarray(self._completed.oindex[idx], dtype=bool).any():
            raise StoreError(
                f"models {idx.tolist()} include completed models in {self.path}; two runs"
                " disagree about them. Check that every worker uses the same configuration."
            )
        keep = ~np.asarray(self._diverged["diverged"].oindex[idx], dtype=bool)
        idx, masks, steps, losses = idx[keep], masks[keep], steps[keep], losses[keep]
        if idx.size == 0:
            return
        order = np.argsort(idx)
        rows = _selection(idx[order])
        self._masks.oindex[rows, :] = masks[order]
        self._diverged["diverged_step"].oindex[rows] = steps[order]
        self._diverged["diverged_loss"].oindex[rows] = losses[order]
        self._finished_at.oindex[rows] = np.full(idx.size, time.time())
        self._diverged["diverged"].oindex[rows] = np.ones(idx.size, dtype=bool)

    def _validate_write(
        self, indices: np.ndarray | Sequence[int], masks: np.ndarray, outputs: TargetOutputs,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Check shapes, dtypes, index range and finiteness; return arrays ready to write."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = idx.size
        if np.unique(idx).size != n or (n and (idx.min() < 0 or idx.max() >= self.num_models)):
            raise DataError(
                f"model indices must be unique and lie in [0, {self.num_models}); got {idx}."
            )
        masks = np.asarray(masks)
        if masks.shape != (n, self.num_units) or masks.dtype != bool:
            raise DataError(
                f"masks must be bool [{n}, {self.num_units}] (models, units), got {masks.dtype}"
                f" {masks.shape}."
            )
        if outputs.shape != (n, self.num_targets):
            raise DataError(
                f"outputs must have shape [{n}, {self.num_targets}] (models, targets), got"
                f" {outputs.shape}."
            )
        arrays = {
            name: np.asarray(getattr(outputs, name),
                             dtype=np.int64 if name == "predicted" else np.float32)
            for name in OUTPUT_FIELDS
        }
        for name, value in arrays.items():
            if name != "predicted" and not np.isfinite(value).all():
                bad = idx[~np.isfinite(value).all(axis=1)]
                raise DataError(
                    f"outputs.{name} of models {bad.tolist()} contain NaN or inf, so training"
                    " diverged; lower the learning rate or check the data, then rerun them."
                )
        return idx, masks, arrays

    def _check_identical(
        self, idx: np.ndarray, masks: np.ndarray, arrays: dict[str, np.ndarray]
    ) -> None:
        """Raise unless the already completed models ``idx`` hold exactly this data."""
        same = np.array_equal(self._masks.oindex[idx, :], masks)
        for name, value in arrays.items():
            same = same and np.array_equal(self._outputs[name].oindex[idx, :], value)
        if not same:
            raise StoreError(
                f"models {idx.tolist()} are already completed in {self.path} with different"
                " masks or outputs; two runs wrote the same model differently. Check that every"
                " worker uses the same configuration and seed, or start a new store."
            )

    # ----------------------------------------------------------------- reading
    def _completed_indices(self, indices: np.ndarray | Sequence[int] | None) -> np.ndarray:
        """``indices`` (default: every completed model), checked to be completed."""
        completed = self.completed()
        if indices is None:
            return np.flatnonzero(completed).astype(np.int64)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_models):
            raise DataError(f"model indices must lie in [0, {self.num_models}); got {idx}.")
        if not completed[idx].all():
            raise StoreError(
                f"models {idx[~completed[idx]].tolist()[:20]} are not completed in {self.path};"
                " resume the sweep, or read only completed models (indices=None)."
            )
        return idx

    def read_masks(self, indices: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """bool ``[models, units]`` of ``indices`` (default: all completed models, in order)."""
        rows = _selection(self._completed_indices(indices))
        return np.asarray(self._masks.oindex[rows, :], dtype=bool)

    def read_outputs(self, indices: np.ndarray | Sequence[int] | None = None) -> TargetOutputs:
        """:class:`TargetOutputs` ``[models, targets]`` of ``indices`` (default: all completed
        models, in order)."""
        rows = _selection(self._completed_indices(indices))
        return TargetOutputs(
            **{name: np.asarray(self._outputs[name].oindex[rows, :]) for name in OUTPUT_FIELDS}
        )

    def iter_completed_chunks(self, chunk_models: int = 256) -> Iterator[ModelChunk]:
        """Yield the completed models in blocks of at most ``chunk_models``, in index order, so
        estimators stream the store with memory independent of the number of models.

        Each block is one contiguous range of the models axis (contiguous reads are several
        times faster than gathers of single rows); rows not completed are dropped.
        """
        if chunk_models < 1:
            raise DataError(f"chunk_models must be >= 1, got {chunk_models}.")
        completed = self.completed()
        for start in range(0, self.num_models, chunk_models):
            rows = slice(start, min(start + chunk_models, self.num_models))
            keep = completed[rows]
            if keep.any():
                yield ModelChunk(
                    indices=start + np.flatnonzero(keep),
                    masks=np.asarray(self._masks[rows], dtype=bool)[keep],
                    outputs=TargetOutputs(
                        **{name: np.asarray(self._outputs[name][rows])[keep]
                           for name in OUTPUT_FIELDS}
                    ),
                )

    def __reduce__(self) -> tuple[object, tuple[str]]:
        """Pickle as the path (e.g. to send the store to Ray workers); unpickling reopens it."""
        return (SweepStore.open, (self.path,))

    def __repr__(self) -> str:
        done, total = self.status()
        return (
            f"SweepStore({self.path!r}, models={done}/{total}, units={self.num_units},"
            f" targets={self.num_targets}, config_hash={self.config_hash!r})"
        )

