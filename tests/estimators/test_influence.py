"""estimate_influence streams completed models from a store."""

import numpy as np
import pytest

from transfer_influence.errors import DataError, StoreError
from transfer_influence.estimators import (
    InfluenceResult,
    difference_in_means,
    estimate_influence,
    fit_datamodels,
)
from transfer_influence.outputs import OUTPUT_VARIANTS
from transfer_influence.sweep.store import SweepStore

from .conftest import random_store

MODELS, UNITS, TARGETS, CLASSES = 30, 6, 8, 3


def _store(tmp_path, models: int = MODELS):
    return random_store(tmp_path / "s.zarr", models=models, units=UNITS, targets=TARGETS,
                        classes=CLASSES, unfinished_every=4)


@pytest.fixture
def store(tmp_path):
    return _store(tmp_path)


@pytest.mark.parametrize("variant", OUTPUT_VARIANTS)
@pytest.mark.parametrize("chunk", [4, 1000])
def test_equals_in_memory_estimate_over_completed_models(store, variant, chunk):
    result = estimate_influence(store, variant, chunk_models=chunk)
    expected = difference_in_means(store.read_masks(), store.read_outputs().variant(variant))
    np.testing.assert_allclose(result.influence, expected, rtol=1e-6, atol=1e-6)
    assert result.num_models == store.num_completed == 23
    assert result.variant == variant and result.unit_names == store.unit_names
    np.testing.assert_array_equal(result.counts_with + result.counts_without, 23)
    np.testing.assert_array_equal(result.target_labels, store.target_labels)


def test_empty_store_is_an_error(tmp_path):
    store = SweepStore.create(
        tmp_path / "e.zarr", num_models=2, unit_names=["x", "y"], target_labels=[0],
        target_class_names=["a"], config_hash="h", fingerprints={},
    )
    with pytest.raises(StoreError, match="no completed models"):
        estimate_influence(store)


@pytest.mark.parametrize("method", ["ridge", "lasso"])
def test_datamodel_methods_return_the_fitted_weights(method, tmp_path):
    store = _store(tmp_path, models=100)
    result = estimate_influence(store, "margin", method=method, seed=3)
    fitted = fit_datamodels(store, "margin", method, seed=3)
    np.testing.assert_array_equal(result.influence, fitted.weights)
    assert result.method == method and result.num_models == 75
    assert result.heldout_lds == pytest.approx(fitted.lds)
    result.save(tmp_path / "r.npz")
    loaded = InfluenceResult.load(tmp_path / "r.npz")
    assert (loaded.method, loaded.heldout_lds) == (method, result.heldout_lds)


def test_unknown_method_is_named(store):
    with pytest.raises(DataError, match="unknown estimation method 'ols'.*dim, ridge, lasso"):
        estimate_influence(store, method="ols")
