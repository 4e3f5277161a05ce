"""Output variants and estimators by name: a user's own get exactly the store's completed models,
results carry their names, duplicates and unknown names are refused with what to do."""

import numpy as np
import pytest

from transfer_influence.errors import DataError
from transfer_influence.estimators import (
    Estimate,
    InfluenceResult,
    estimate_influence,
    estimator_names,
    register_estimator,
)
from transfer_influence.outputs import (
    OUTPUT_VARIANTS,
    TargetOutputs,
    output_variants,
    register_output_variant,
)

from .conftest import random_store


@pytest.fixture
def store(tmp_path):
    return random_store(tmp_path / "s.zarr", models=30, units=6, targets=5, unfinished_every=4)


def test_own_estimator_sees_the_completed_models_and_names_the_result(store, clean_registry):
    seen = {}

    def recorder(masks, outputs, *, seed, device):
        seen.update(masks=masks, outputs=outputs, seed=seed, device=device)
        return Estimate(masks.T @ outputs, heldout_lds=0.25)  # any [units, targets] matrix

    register_estimator("recorder", recorder)
    assert estimator_names()[:3] == ("dim", "ridge", "lasso") and "recorder" in estimator_names()
    result = estimate_influence(store, "margin", method="recorder", seed=7)
    np.testing.assert_array_equal(seen["masks"], store.read_masks())  # completed models only
    np.testing.assert_array_equal(seen["outputs"], store.read_outputs().variant("margin"))
    assert seen["seed"] == 7 and seen["masks"].shape == (23, 6)
    assert seen["device"] is None  # the default device, the CPU: NumPy
    np.testing.assert_array_equal(result.influence, seen["masks"].T @ seen["outputs"])
    assert (result.method, result.heldout_lds, result.num_models) == ("recorder", 0.25, 23)
    np.testing.assert_array_equal(result.counts_with, seen["masks"].sum(0))


def test_registered_dim_equals_the_streamed_estimate(store):
    from transfer_influence.estimators.registry import get_estimator

    streamed = estimate_influence(store, "prob_correct", chunk_models=4)
    whole = get_estimator("dim")(store.read_masks(), store.read_outputs().variant("prob_correct"),
                                 seed=0, device=None)
    np.testing.assert_allclose(whole.influence, streamed.influence, rtol=1e-5, atol=1e-7)


def test_own_output_variant(store, clean_registry):
    register_output_variant("neg_margin", lambda o: -(o.correct_logit - o.max_other_logit))
    assert output_variants() == (*OUTPUT_VARIANTS, "neg_margin")
    outputs = store.read_outputs()
    np.testing.assert_allclose(outputs.variant("neg_margin"), -outputs.variant("margin"))
    flipped = estimate_influence(store, "neg_margin")
    np.testing.assert_allclose(flipped.influence, -estimate_influence(store, "margin").influence)
    assert flipped.variant == "neg_margin"


def test_duplicates_and_unknown_names_are_refused(store, clean_registry):
    with pytest.raises(DataError, match="'dim' is already registered; pass replace=True"):
        register_estimator("dim", lambda masks, outputs, *, seed, device: Estimate(masks.T @ outputs))
    with pytest.raises(DataError, match="'margin' is already registered"):
        register_output_variant("margin", lambda o: o.correct_logit)
    with pytest.raises(DataError, match="unknown output variant 'logit'.*register_output_variant"):
        TargetOutputs(*(np.zeros((1, 2)),) * 3, np.zeros((1, 2), np.int64)).variant("logit")
    with pytest.raises(DataError, match="unknown estimation method 'ols'.*register_estimator"):
        estimate_influence(store, method="ols")
    result = estimate_influence(store)
    with pytest.raises(DataError, match="unknown estimation method 'mine'"):
        InfluenceResult(result.influence, result.unit_names, result.target_labels,
                        result.target_class_names, "margin", 3, result.counts_with,
                        result.counts_without, method="mine")
