"""estimate_influence streams completed models from a store."""

import numpy as np
import pytest

from transfer_influence.errors import StoreError
from transfer_influence.estimators import difference_in_means, estimate_influence
from transfer_influence.outputs import OUTPUT_VARIANTS, TargetOutputs
from transfer_influence.sweep.masks import subset_masks
from transfer_influence.sweep.store import SweepStore

MODELS, UNITS, TARGETS, CLASSES = 30, 6, 8, 3


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, size=TARGETS)
    store = SweepStore.create(
        tmp_path / "s.zarr", num_models=MODELS, unit_names=[f"u{i}" for i in range(UNITS)],
        target_labels=labels, target_class_names=["a", "b", "c"], config_hash="h",
        fingerprints={},
    )
    logits = rng.normal(size=(MODELS, TARGETS, CLASSES)).astype(np.float32)
    done = np.array([i for i in range(MODELS) if i % 4 != 3])  # some models never finished
    store.write_models(done, subset_masks(0, done, UNITS, 0.5),
                       TargetOutputs.from_logits(logits[done], labels))
    return store


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
