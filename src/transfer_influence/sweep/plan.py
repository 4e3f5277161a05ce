"""What a sweep is: its data, its units, its groups of models, and the work of one group.

Everything here is a pure function of the experiment config: any process (the in-process runner,
a Ray worker, an array-job shard) rebuilds the same plan and trains model *i* on the same subset
with the same seed, so results never depend on where or in which order models were trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..config import ExperimentConfig
from ..data.build import build_transfer_data
from ..data.convert import ImageDataset, as_labeled_images
from ..data.images import LabeledImages
from ..data.suites import TransferData
from ..devices import resolve_device
from ..errors import ConfigError, StoreError
from ..outputs import TargetOutputs
from ..training import (
    DivergenceLog,
    conv_numerics,
    finetune_group,
    pretrain_group,
    source_builder,
    subset_indices,
    transfer_fixed_feature,
)
from .masks import subset_masks
from .store import OUTPUT_FIELDS, SweepStore


def model_seed(sweep_seed: int, model_index: int) -> int:
    """Seed of model ``model_index``'s initialisation and batch order (not its subset)."""
    return int(np.random.default_rng([sweep_seed, model_index, 1]).integers(2**31 - 1))


@dataclass
class SweepPlan:
    """A sweep ready to run: the config, its loaded data and the derived unit bookkeeping."""

    config: ExperimentConfig
    data: TransferData

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> SweepPlan:
        """Load the config's data (cached per process by the data layer)."""
        if config.data is None:
            raise ConfigError(
                f"experiment {config.name!r} has no [data] section; describe the data there, or"
                " build the plan from your own data with SweepPlan.from_data(config, source,"
                " target_train, target_test)."
            )
        return cls(config, build_transfer_data(config.data, base_dir=config.base_dir))

    def variant(self, *, unit: str | None = None, transfer_mode: str | None = None) -> SweepPlan:
        """The same experiment and loaded data, but removing source ``unit``s of another kind or
        transferring in another ``transfer_mode`` (retraining experiments that prune classes
        and examples, or report both transfer modes). Its config hash differs, so its models are
        stored apart from the sweep's."""
        config = self.config
        sweep, transfer = config.sweep, config.transfer
        if unit is not None:
            if unit not in ("class", "example"):
                raise ConfigError(f"unit must be 'class' or 'example', got {unit!r}.")
            sweep = sweep.model_copy(update={"unit": unit})
        if transfer_mode is not None:
            if transfer_mode not in ("fixed_feature", "finetune"):
                raise ConfigError(f"transfer mode must be 'fixed_feature' or 'finetune', got"
                                  f" {transfer_mode!r}.")
            if transfer_mode == "finetune" and transfer.recipe is None:
                raise ConfigError("full fine-tuning needs a [transfer.recipe] table in the config"
                                  " (the fine-tuning optimiser and schedule); add one.")
            transfer = transfer.model_copy(update={"mode": transfer_mode})
        return SweepPlan(config.model_copy(update={"sweep": sweep, "transfer": transfer}),
                         self.data)

    @classmethod
    def from_data(cls, config: ExperimentConfig, source: LabeledImages | ImageDataset,
                  target_train: LabeledImages | ImageDataset,
                  target_test: LabeledImages | ImageDataset) -> SweepPlan:
        """A sweep over your own data: :class:`LabeledImages` or any indexable dataset of
        ``(image, label)`` pairs (see :func:`~transfer_influence.data.as_labeled_images`).

        ``config`` gives everything else and has no ``data`` section (``data=None``). The
        store records the data's fingerprints, so it cannot be resumed or read with other data.
        Runners that rebuild the plan in other processes (Ray, array jobs) need the data in the
        config; run this plan in-process (``run_local(plan)``).
        """
        if config.data is not None:
            raise ConfigError(
                f"experiment {config.name!r} describes its data in [data]; build the plan with"
                " SweepPlan.from_config(config), or drop the data section to pass your own."
            )
        return cls(config, TransferData(
            source=as_labeled_images(source, name="source"),
            target_train=as_labeled_images(target_train, name="target_train"),
            target_test=as_labeled_images(target_test, name="target_test"),
        ))

    @cached_property
    def unit_names(self) -> list[str]:
        """Names of the units a mask ranges over: source classes, or source examples as
        ``"<class name>#<example index>"``."""
        source = self.data.source
        if self.config.sweep.unit == "class":
            return list(source.class_names)
        return [f"{source.class_names[label]}#{i}" for i, label in enumerate(source.labels)]

    @property
    def num_models(self) -> int:
        """Models in the sweep."""
        return self.config.sweep.num_models

    def groups(self) -> list[np.ndarray]:
        """The fixed partition of model indices into groups of ``group_size`` consecutive models;
        every runner trains exactly these groups, so a group's models always train together."""
        size = self.config.sweep.group_size
        return [np.arange(start, min(start + size, self.num_models))
                for start in range(0, self.num_models, size)]

    def masks(self, indices: np.ndarray) -> np.ndarray:
        """Masks ``[len(indices), units]`` of the given models."""
        sweep = self.config.sweep
        return subset_masks(sweep.seed, indices, len(self.unit_names), sweep.alpha)

    def open_store(self, *, create: bool = True) -> SweepStore:
        """The sweep's store, created if absent (``create``) and checked against this config."""
        if not create:
            return SweepStore.open(self.config.store_path(),
                                   config_hash=self.config.config_hash())
        target = self.data.target_test
        return SweepStore.open_or_create(
            self.config.store_path(),
            num_models=self.num_models,
            unit_names=self.unit_names,
            target_labels=target.labels,
            target_class_names=target.class_names,
            config_hash=self.config.config_hash(),
            fingerprints=self.data.fingerprints(),
            numerics=self.numerics(),
        )

    def numerics(self) -> dict[str, str] | None:
        """How this config's models compute beyond the config (the convolution layout of a CNN,
        see :func:`~transfer_influence.training.conv_numerics`), recorded in and checked against
        every store its models are written to."""
        config = self.config
        return conv_numerics(source_builder(config.model.name, self.data.source,
                                            config.model.options)())

    def read_store(self) -> SweepStore:
        """The sweep's store, read-only, refused unless this config wrote it from the same data
        (results about other images must not be shown next to these)."""
        store = SweepStore.open(self.config.store_path(), config_hash=self.config.config_hash(),
                                read_only=True)
        if store.fingerprints != self.data.fingerprints():
            raise StoreError(
                f"the data changed since the sweep in {store.path} was run (dataset fingerprints"
                " differ); rerun the sweep into a new store, or restore the data it was run on."
            )
        return store

    def train_group(self, indices: np.ndarray
                    ) -> tuple[np.ndarray, TargetOutputs, DivergenceLog | None]:
        """Pretrain models ``indices`` of the sweep on their subsets, transfer them, and return
        their masks ``[G, units]``, target outputs ``[G, targets]`` and divergence log (see
        :meth:`divergence_log`)."""
        masks = self.masks(indices)
        seeds = [model_seed(self.config.sweep.seed, int(i)) for i in indices]
        divergence = self.divergence_log(len(indices))
        return masks, self.train_models(masks, seeds, divergence), divergence

    def divergence_log(self, num_models: int) -> DivergenceLog | None:
        """An empty log to record diverged models in under ``on_divergence = "record"``; None
        (training raises) under ``"stop"``."""
        if self.config.sweep.on_divergence == "stop":
            return None
        return DivergenceLog.empty(num_models)

    def train_models(self, masks: np.ndarray, seeds: list[int],
                     divergence: DivergenceLog | None = None, *, equal_steps: bool = False
                     ) -> TargetOutputs:
        """Pretrain one model per row of ``masks`` (``bool [G, units]``) with its seed, transfer
        each to the target as the config says, and return the outputs ``[G, targets]``.

        ``equal_steps``: every model takes the optimisation steps (and learning-rate schedule)
        of pretraining on the whole source, however many units its mask removes, instead of
        ``epochs`` passes over its own subset.

        The sweep and every retraining experiment (counterfactual removal, failure debugging)
        go through here, so a model with the same mask and seed is the same model everywhere.
        Without ``divergence`` a diverged model raises :class:`TrainingError`; with a log of
        ``G`` models it is recorded there (steps count on from pretraining into fine-tuning),
        is not transferred, and its output rows are NaN (``predicted`` -1).
        Models train and transfer on ``config.device``.
        """
        config = self.config
        device = resolve_device(config.device)
        models = pretrain_group(config.model.name, self.data.source, masks,
                                unit=config.sweep.unit, seeds=seeds, recipe=config.pretrain,
                                model_options=config.model.options, divergence=divergence, device=device,
                                schedule_examples=len(self.data.source) if equal_steps else None)
        kept = np.arange(len(models)) if divergence is None else np.flatnonzero(
            ~divergence.diverged)
        outputs = _empty_outputs(len(models), len(self.data.target_test))
        if kept.size == 0:
            return outputs
        transfer = config.transfer
        if transfer.mode == "fixed_feature":
            transferred = transfer_fixed_feature(
                [models[g] for g in kept], self.data.target_train, self.data.target_test,
                l2=transfer.l2, normalization=config.pretrain.normalization, device=device)
        else:
            assert transfer.recipe is not None  # TransferConfig requires one for finetune
            tuning = None if divergence is None else DivergenceLog.empty(kept.size)
            transferred = finetune_group([models[g] for g in kept], self.data.target_train,
                                         self.data.target_test, recipe=transfer.recipe,
                                         seeds=[seeds[g] for g in kept], divergence=tuning,
                                         device=device, proximal=transfer.proximal)
            if divergence is not None and tuning is not None:
                sizes = ([len(self.data.source)] * kept.size if equal_steps else
                         [len(s) for s in subset_indices(self.data.source, masks[kept],
                                                         config.sweep.unit)])
                pretrain_steps = np.array([config.pretrain.total_steps(n) for n in sizes])
                divergence.merge(tuning, kept, pretrain_steps)
                transferred = transferred.take(~tuning.diverged)
                kept = kept[~tuning.diverged]
        for name in OUTPUT_FIELDS:
            getattr(outputs, name)[kept] = getattr(transferred, name)
        return outputs


def _empty_outputs(num_models: int, num_targets: int) -> TargetOutputs:
    """Outputs ``[models, targets]`` of models that have none: NaN logits, ``predicted`` -1."""
    shape = (num_models, num_targets)
    correct, other, logsumexp = (np.full(shape, np.nan, dtype=np.float32) for _ in range(3))
    return TargetOutputs(correct, other, logsumexp, predicted=np.full(shape, -1, dtype=np.int64))
