"""A diverging model costs only itself: recorded, final, excluded and explained (issue 15)."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy.stats import fisher_exact

from transfer_influence.config import load_config
from transfer_influence.errors import StoreError, TrainingError
from transfer_influence.estimators import (
    divergence_association,
    divergence_association_store,
    estimate_influence,
    fit_datamodels,
)
from transfer_influence.sweep.plan import SweepPlan, model_seed
from transfer_influence.sweep.runners import run_local
from transfer_influence.sweep.store import OUTPUT_FIELDS, SweepStore
from transfer_influence.training import subset_indices

from .conftest import PLANTED_DIVERGING_UNIT, plant_divergence, write_sweep_config

MODELS = 32


@pytest.fixture()
def diverged_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A 32-model sweep in groups of 4 where every model keeping the planted unit diverges."""
    plant_divergence(monkeypatch)
    config = load_config(write_sweep_config(tmp_path, num_models=MODELS, group_size=4))
    return config, run_local(config, quiet=True)


def test_planted_unit_diverges_is_recorded_and_others_are_unchanged(diverged_sweep):
    config, store = diverged_sweep
    plan = SweepPlan.from_config(config)
    masks = plan.masks(np.arange(MODELS))
    planted = masks[:, PLANTED_DIVERGING_UNIT]
    assert 0 < planted.sum() < MODELS
    np.testing.assert_array_equal(store.diverged(), planted)
    np.testing.assert_array_equal(store.completed(), ~planted)
    assert store.missing().size == 0
    record = store.read_diverged()
    np.testing.assert_array_equal(record.indices, np.flatnonzero(planted))
    np.testing.assert_array_equal(record.masks, masks[planted])
    assert (record.steps >= 0).all() and np.isfinite(record.last_losses).all()
    # no outputs were written for a diverged model: its rows keep their fill values
    raw = zarr.open_group(store.path, mode="r")
    assert np.isnan(raw["outputs/correct_logit"][np.flatnonzero(planted)]).all()
    assert (raw["outputs/predicted"][np.flatnonzero(planted)] == -1).all()
    with pytest.raises(StoreError, match="not completed"):
        store.read_outputs(record.indices[:1])

    # the completed models of mixed groups equal the same models trained without the others
    kept = np.flatnonzero(~planted)
    alone = plan.train_models(masks[kept], [model_seed(config.sweep.seed, int(i)) for i in kept])
    stored = store.read_outputs()
    for field in OUTPUT_FIELDS:
        np.testing.assert_array_equal(getattr(stored, field), getattr(alone, field))


@pytest.mark.filterwarnings("ignore:.*influence is undefined")  # the planted unit: never kept
def test_estimates_are_difference_in_means_over_remaining_models(diverged_sweep):
    _, store = diverged_sweep
    result = estimate_influence(store, "margin")
    completed = np.flatnonzero(store.completed())
    assert result.num_models == completed.size and result.num_diverged == MODELS - completed.size
    masks = store.read_masks(completed)
    outputs = store.read_outputs(completed).variant("margin")
    expected = np.full((store.num_units, store.num_targets), np.nan)
    for u in range(store.num_units):
        with_u = [m for m in range(len(completed)) if masks[m, u]]
        without = [m for m in range(len(completed)) if not masks[m, u]]
        if with_u and without:
            expected[u] = outputs[with_u].mean(axis=0) - outputs[without].mean(axis=0)
    # float32 block products (see difference_in_means.py): the same tolerance as its own test
    np.testing.assert_allclose(result.influence, expected, rtol=1e-5, atol=1e-5)
    assert np.isnan(result.influence[PLANTED_DIVERGING_UNIT]).all()  # never kept by a survivor

    datamodels = fit_datamodels(store, "margin", holdout_fraction=0.5)
    used = np.concatenate([datamodels.selection_indices, datamodels.heldout_indices])
    assert store.completed()[used].all()
    assert datamodels.num_models + used.size == completed.size


def test_diagnose_names_the_diverging_unit(diverged_sweep):
    _, store = diverged_sweep
    association = divergence_association_store(store)
    assert association.num_models == MODELS and association.num_diverged == store.diverged().sum()
    assert association.named() == [store.unit_names[PLANTED_DIVERGING_UNIT]]
    # the vectorised p-values are Fisher's exact test, one-sided
    masks = np.concatenate([store.read_masks(), store.read_diverged().masks])
    flags = np.arange(MODELS) >= store.num_completed
    for u in range(store.num_units):
        table = [[int((masks[:, u] & flags).sum()), int((masks[:, u] & ~flags).sum())],
                 [int((~masks[:, u] & flags).sum()), int((~masks[:, u] & ~flags).sum())]]
        assert association.p_value[u] == pytest.approx(
            fisher_exact(table, alternative="greater").pvalue, rel=1e-9)


def test_association_needs_evidence_and_is_corrected_for_many_units():
    rng = np.random.default_rng(0)
    masks = rng.random((200, 50)) < 0.5
    diverged = rng.random(200) < 0.2  # independent of every unit
    assert divergence_association(masks, diverged, [f"u{i}" for i in range(50)]).named() == []
    diverged = masks[:, 7] & (rng.random(200) < 0.5)
    assert divergence_association(masks, diverged, [f"u{i}" for i in range(50)]).named() == ["u7"]


def test_resumed_sweep_does_not_retrain_diverged_models(diverged_sweep, monkeypatch):
    config, store = diverged_sweep
    trained = []
    original = SweepPlan.train_group
    monkeypatch.setattr(SweepPlan, "train_group",
                        lambda self, indices: trained.append(indices) or original(self, indices))
    resumed = run_local(config, quiet=True)
    assert trained == []
    np.testing.assert_array_equal(resumed.diverged(), store.diverged())

    # switching the policy keeps the store (not hashed) and still never retries them
    stop = config.model_copy(update={"sweep": config.sweep.model_copy(
        update={"on_divergence": "stop"})})
    assert stop.config_hash() == config.config_hash()
    run_local(stop, quiet=True)
    assert trained == []


def test_stop_policy_raises_at_the_first_divergence(tmp_path: Path, monkeypatch):
    plant_divergence(monkeypatch)
    path = write_sweep_config(tmp_path, num_models=MODELS, group_size=4)
    path.write_text(path.read_text() + 'on_divergence = "stop"\n')
    with pytest.raises(TrainingError, match="training diverged at step"):
        run_local(load_config(path), quiet=True)
    store = SweepStore.open(tmp_path / "sweep.zarr", read_only=True)
    assert not store.diverged().any() and store.num_completed < MODELS


def test_half_written_divergence_record_reads_as_missing(tiny_config: Path):
    store = SweepPlan.from_config(load_config(tiny_config)).open_store()
    raw = zarr.open_group(store.path, mode="r+")
    raw["diverged_step"][3] = 5  # a writer died before the flag
    raw["diverged_loss"][3] = 1.5
    assert not store.diverged()[3] and 3 in store.missing()
    store.write_diverged([3], np.zeros((1, store.num_units), bool), [5], [1.5])
    assert store.diverged()[3] and 3 not in store.missing()
    with pytest.raises(StoreError, match="completed"):
        plan = SweepPlan.from_config(load_config(tiny_config))
        masks, outputs, _ = plan.train_group(np.array([0]))
        store.write_models([0], masks, outputs)
        store.write_diverged([0], masks, [1], [np.nan])


def test_store_without_divergence_record_reads_as_none_diverged(tiny_config: Path):
    store = run_local(load_config(tiny_config), quiet=True)
    raw = zarr.open_group(store.path, mode="r+")
    for name in ("diverged", "diverged_step", "diverged_loss"):
        del raw[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = SweepStore.open(store.path)
    assert not old.diverged().any() and old.missing().size == 0
    with pytest.raises(StoreError, match="start a new store"):
        old.write_diverged([0], np.zeros((1, old.num_units), bool), [1], [np.nan])
    config = load_config(tiny_config)
    grown = config.model_copy(update={"sweep": config.sweep.model_copy(
        update={"num_models": config.sweep.num_models + 1})})
    resumed = SweepPlan.from_config(grown).open_store()  # resuming (and growing) adds the record
    new = resumed.num_models - 1
    resumed.write_diverged([new], np.zeros((1, resumed.num_units), bool), [1], [np.nan])
    assert np.flatnonzero(SweepStore.open(store.path).diverged()).tolist() == [new]


def test_divergence_in_fine_tuning_counts_steps_on_from_pretraining(tmp_path: Path):
    path = write_sweep_config(tmp_path, num_models=4, group_size=4)
    path.write_text(path.read_text().replace(
        "[transfer]\nl2 = 0.01\n",
        '[transfer]\nmode = "finetune"\n[transfer.recipe]\nepochs = 2\nlr = 1e12\nbatch_size = 8\n'))
    config = load_config(path)
    store = run_local(config, quiet=True)
    assert store.diverged().all()  # the absurd fine-tuning rate blows every model up
    plan = SweepPlan.from_config(config)
    sizes = [len(s) for s in subset_indices(plan.data.source, plan.masks(np.arange(4)), "class")]
    pretrain_steps = np.array([config.pretrain.total_steps(n) for n in sizes])
    record = store.read_diverged()
    assert (record.steps >= pretrain_steps).all()
    assert np.isfinite(record.last_losses).all()
