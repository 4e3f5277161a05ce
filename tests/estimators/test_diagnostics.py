"""Diagnostics of difference-in-means influence on synthetic sweeps with known structure:
bootstrap standard errors against the analytic formula and the 1/sqrt(m) law, split-half
agreement and knockoff FDR with planted signal versus pure noise, the verdict, and a real store."""

import numpy as np
import pytest

from transfer_influence.errors import DataError, StoreError
from transfer_influence.estimators import difference_in_means
from transfer_influence.estimators.diagnostics import (
    SweepSource,
    bootstrap_se,
    bootstrap_summary,
    diagnose,
    diagnose_store,
    estimate_fdr,
    knockoff_fdr,
    null_threshold,
    spearman_brown,
    split_half_agreement,
)
from transfer_influence.estimators.diagnostics.statistics import _PoissonBootstrap
from transfer_influence.outputs import TargetOutputs
from transfer_influence.sweep.masks import subset_masks
from transfer_influence.sweep.store import SweepStore

from .conftest import random_store


def synthetic(models, units, targets, classes, effects, noise, seed=0):
    """Masks from ``subset_masks`` (alpha 0.5) and linear outputs
    ``0.5 + masks @ effects[:, class of target] + noise``; ``effects`` is ``[units]`` (same on
    every target) or ``[units, classes]``. Targets cycle through the classes."""
    rng = np.random.default_rng(seed)
    masks = subset_masks(seed + 1, range(models), units, 0.5)
    labels = np.arange(targets) % classes
    effects = np.asarray(effects, dtype=float)
    per_target = effects[:, labels] if effects.ndim == 2 else np.tile(effects[:, None], targets)
    outputs = 0.5 + masks @ per_target + noise * rng.normal(size=(models, targets))
    return masks, outputs, labels


def analytic_se(masks, values):
    """``sqrt(var_with / n_with + var_without / n_without)`` per unit and column of ``values``."""
    return np.array([
        np.sqrt(values[m].var(axis=0, ddof=1) / m.sum() + values[~m].var(axis=0, ddof=1)
                / (~m).sum())
        for m in masks.T
    ])


# ----------------------------------------------------------------------------- bootstrap
def test_poisson_replicate_is_the_difference_in_means_of_a_resample():
    masks, outputs, _ = synthetic(40, 5, 3, 1, [0.2, 0, 0, 0, -0.1], 0.3)
    indices = np.arange(40) + 2000  # crosses a weight block; weights depend on the index only
    sums = _PoissonBootstrap(seed=3, replicates=np.array([0, 7]))
    sums.update(indices[:25], masks[:25], outputs[:25])
    sums.update(indices[25:], masks[25:], outputs[25:])
    weights = sums.weights(indices).astype(int)
    assert weights.min() == 0 and weights.max() >= 2  # a genuine resample
    for column, replicate in enumerate(sums.influence()):
        rows = np.repeat(np.arange(40), weights[:, column])
        np.testing.assert_allclose(
            replicate, difference_in_means(masks[rows], outputs[rows]), atol=1e-6
        )


def test_bootstrap_se_matches_the_analytic_se_of_a_difference_of_means():
    masks, outputs, labels = synthetic(300, 6, 8, 2, [0.3, 0, 0, 0, 0, 0.1], 0.2)
    source = SweepSource.from_arrays(masks, outputs, labels)
    ratio = bootstrap_se(source, replicates=400, seed=0) / analytic_se(masks, outputs)
    assert ratio.shape == (6, 8)
    assert 0.9 < np.median(ratio) < 1.1  # observed 0.99
    assert np.abs(ratio - 1).max() < 0.15  # observed 0.09
    # The aggregate route (all replicates at once, on class means) agrees for overall scores.
    summary = bootstrap_summary(source, replicates=400, seed=0)
    overall_ratio = summary.se_overall / analytic_se(masks, outputs.mean(1, keepdims=True))[:, 0]
    assert np.abs(overall_ratio - 1).max() < 0.15  # observed 0.05


def test_standard_error_shrinks_as_one_over_sqrt_models():
    masks, outputs, labels = synthetic(1024, 20, 30, 3, np.zeros(20), 1.0)
    summary = bootstrap_summary(SweepSource.from_arrays(masks, outputs, labels), replicates=100)
    curve = summary.curve
    np.testing.assert_array_equal(curve.num_models, [128, 256, 512, 1024])
    assert np.all(np.diff(curve.mean_se_per_class) < 0)
    assert np.all(np.diff(curve.mean_se_overall) < 0)
    assert -0.65 < curve.slope < -0.35  # observed -0.51
    # The last point of the curve is the full-sample standard error.
    assert curve.mean_se_overall[-1] == pytest.approx(summary.se_overall.mean())
    assert summary.se_per_class.shape == (20, 3)


# ----------------------------------------------------------------------------- split halves
def test_split_half_agreement_is_high_with_planted_signal():
    masks, outputs, labels = synthetic(800, 20, 20, 4, np.linspace(-0.1, 0.1, 20), 0.3)
    split = split_half_agreement(SweepSource.from_arrays(masks, outputs, labels), seed=0)
    assert split.half_sizes == (400, 400)
    assert split.overall > 0.8 and split.mean_per_class > 0.8  # observed 0.93, 0.92
    assert split.overall_full_sample == pytest.approx(spearman_brown(split.overall))
    assert split.overall < split.overall_full_sample < 1


def test_split_half_agreement_is_near_zero_on_noise():
    # 400 units: the Spearman correlation of two independent rankings has sd 0.05.
    masks, outputs, labels = synthetic(200, 400, 20, 4, np.zeros(400), 0.3)
    split = split_half_agreement(SweepSource.from_arrays(masks, outputs, labels), seed=0)
    assert abs(split.overall) < 0.2 and abs(split.mean_per_class) < 0.2  # observed -0.02, -0.03


def test_spearman_brown():
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(0.0) == 0.0 and spearman_brown(1.0) == 1.0


# ----------------------------------------------------------------------------- knockoffs
def test_estimate_fdr_follows_the_documented_formula():
    real = np.array([5.0, 4.0, 3.0, 1.0, -6.0, np.nan])  # 5 defined units
    knockoffs = np.array([3.5, 2.0, 0.5, -1.0, 0.0, 4.5, -0.5, 1.0, 0.2, -3.0])  # 10
    # top-2 helpful: tau = 4; one knockoff >= 4 -> (5 / 10) * 1 / 2.
    assert estimate_fdr(real, knockoffs, 2) == pytest.approx(0.25)
    # top-3 helpful: tau = 3; two knockoffs >= 3 -> (5 / 10) * 2 / 3.
    assert estimate_fdr(real, knockoffs, 3) == pytest.approx(1 / 3)
    # top-1 by magnitude: tau = 6; no knockoff reaches it.
    assert estimate_fdr(real, knockoffs, 1, side="abs") == 0.0
    # top-1 harmful: tau = 6 on negated scores, no knockoff <= -6.
    assert estimate_fdr(real, knockoffs, 1, side="harmful") == 0.0
    assert null_threshold(knockoffs, 5, 1) == pytest.approx(np.quantile(knockoffs, 0.8))
    with pytest.raises(DataError, match="k must lie"):
        estimate_fdr(real, knockoffs, 6)


def test_knockoff_fdr_is_low_for_planted_units():
    effects = np.zeros(100)
    effects[:10] = 0.3
    masks, outputs, labels = synthetic(300, 100, 32, 8, effects, 0.5)
    result = knockoff_fdr(SweepSource.from_arrays(masks, outputs, labels), k=10)
    assert result.alpha == 0.5 and result.num_knockoff_units == 400
    assert result.fdr_overall < 0.2 and result.mean_fdr_per_class < 0.2  # observed 0.00, 0.03
    real = difference_in_means(masks, outputs).mean(1)
    assert np.all(real[:10] > result.null_overall)  # the planted units clear the noise level


def test_knockoff_fdr_is_high_on_noise():
    masks, outputs, labels = synthetic(300, 100, 32, 8, np.zeros(100), 0.5)
    result = knockoff_fdr(SweepSource.from_arrays(masks, outputs, labels), k=10)
    assert result.fdr_overall > 0.5 and result.mean_fdr_per_class > 0.5  # observed 0.90, 0.93
    assert result.fdr_per_class.shape == (8,)


# ----------------------------------------------------------------------------- verdict
def dense_signal(models, seed=0):
    rng = np.random.default_rng(100 + seed)
    effects = rng.normal(scale=0.05, size=(20, 4)) + np.linspace(-0.1, 0.1, 20)[:, None]
    return synthetic(models, 20, 40, 4, effects, 0.2, seed)


def test_verdict_asks_for_more_models_on_noise():
    masks, outputs, labels = synthetic(600, 20, 40, 4, np.zeros((20, 4)), 0.2)
    result = diagnose(SweepSource.from_arrays(masks, outputs, labels), k=5)
    verdict = result.verdict()
    assert result.needs_more_models()
    assert verdict[0].startswith("Train more models: at least 1800 more")
    assert "knockoff FDR" in verdict[0] and "split-half" in verdict[0]


def test_verdict_is_satisfied_by_a_strong_signal_with_many_models():
    masks, outputs, labels = dense_signal(1000)
    result = diagnose(SweepSource.from_arrays(masks, outputs, labels), k=5)
    verdict = result.verdict()
    assert not result.needs_more_models(), verdict
    assert verdict[0].startswith("Enough models (1000)")
    assert result.signal_to_noise() >= 3 and result.knockoffs.fdr_overall <= 0.1
    assert len(result.top_units()) == 5
    # An external near-zero held-out LDS overrides and is named.
    with_lds = result.verdict(lds=0.02)
    assert with_lds[0].startswith("Train more models")
    assert any("noise with respect to the masks" in line for line in with_lds)


def test_verdict_extrapolates_models_with_the_inverse_square_root_law():
    masks, outputs, labels = dense_signal(1000)
    result = diagnose(SweepSource.from_arrays(masks, outputs, labels), k=5)
    ratio = result.signal_to_noise()
    # Asking for twice the current ratio takes four times the models: 3 m more.
    assert result.models_needed(2 * ratio) == pytest.approx(3 * 1000, abs=1)
    assert result.models_needed(ratio / 2) == 0


# ----------------------------------------------------------------------------- store
MODELS, UNITS, TARGETS, CLASSES = 48, 6, 10, 3


@pytest.fixture
def store(tmp_path):
    return random_store(tmp_path / "s.zarr", models=MODELS, units=UNITS, targets=TARGETS,
                        classes=CLASSES, unfinished_every=5,
                        correct_boost=lambda masks: 1.5 * masks[:, :1])


def test_store_and_arrays_give_the_same_diagnostics(store):
    options = {"k": 2, "replicates": 20, "seed": 4, "per_target_se": True}
    from_store = diagnose_store(store, "margin", chunk_models=7, **options)
    done = np.flatnonzero(store.completed())
    from_arrays = diagnose(
        SweepSource.from_arrays(
            store.read_masks(), store.read_outputs().variant("margin"), store.target_labels,
            target_class_names=store.target_class_names, model_indices=done, variant="margin",
        ),
        **options,
    )
    assert from_store.num_models == from_arrays.num_models == done.size
    assert from_store.variant == "margin"
    pairs = [
        (from_store.overall, from_arrays.overall),
        (from_store.per_class, from_arrays.per_class),
        (from_store.split_half.per_class, from_arrays.split_half.per_class),
        (from_store.bootstrap.se_overall, from_arrays.bootstrap.se_overall),
        (from_store.bootstrap.se_per_class, from_arrays.bootstrap.se_per_class),
        (from_store.bootstrap.curve.mean_se_per_class,
         from_arrays.bootstrap.curve.mean_se_per_class),
        (from_store.knockoffs.knockoff_overall, from_arrays.knockoffs.knockoff_overall),
        (from_store.knockoffs.fdr_per_class, from_arrays.knockoffs.fdr_per_class),
        (from_store.influence_se, from_arrays.influence_se),
    ]
    for found, expected in pairs:
        np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-6)
    assert from_store.split_half.overall == pytest.approx(from_arrays.split_half.overall)
    assert from_store.knockoffs.fdr_overall == pytest.approx(from_arrays.knockoffs.fdr_overall)
    assert from_store.verdict() == from_arrays.verdict()
    np.testing.assert_allclose(
        from_store.overall,
        difference_in_means(store.read_masks(), store.read_outputs().variant("margin")).mean(1),
        atol=1e-5,
    )
    assert from_store.influence_se.shape == (UNITS, TARGETS)
    assert np.argmax(from_store.overall) == 0  # the unit planted in the logits


def test_store_source_keeps_the_models_completed_when_it_was_made(store):
    source = SweepSource.from_store(store, chunk_models=10)
    late = TargetOutputs.from_logits(np.zeros((1, TARGETS, CLASSES)), store.target_labels)
    store.write_model(4, subset_masks(0, [4], UNITS, 0.5)[0], late)  # a sweep still running
    seen = np.concatenate([block.indices for block in source.blocks()])
    assert 4 not in seen and seen.size == source.num_models == MODELS - MODELS // 5


# ----------------------------------------------------------------------------- bad input
def test_no_completed_models_is_an_error(tmp_path):
    store = SweepStore.create(
        tmp_path / "e.zarr", num_models=3, unit_names=["x", "y"], target_labels=[0, 1],
        target_class_names=["a", "b"], config_hash="h", fingerprints={},
    )
    with pytest.raises(StoreError, match="no completed models"):
        diagnose_store(store)
    with pytest.raises(DataError, match="no models"):
        SweepSource.from_arrays(np.zeros((0, 2), dtype=bool), np.zeros((0, 2)), [0, 1])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 7}, "k .* must lie in"),
        ({"k": 0}, "k .* must lie in"),
        ({"replicates": 1}, "at least 2 replicates"),
        ({"side": "best"}, "side must be one of"),
        ({"fractions": (0.0, 1.0)}, "fractions must lie"),
    ],
)
def test_bad_options_are_data_errors(options, message):
    masks, outputs, labels = synthetic(40, 6, 4, 2, np.zeros(6), 1.0)
    with pytest.raises(DataError, match=message):
        diagnose(SweepSource.from_arrays(masks, outputs, labels), **options)


def test_bad_arrays_are_data_errors():
    masks, outputs, labels = synthetic(40, 6, 4, 2, np.zeros(6), 1.0)
    with pytest.raises(DataError, match="must be bool"):
        SweepSource.from_arrays(masks.astype(int), outputs, labels)
    with pytest.raises(DataError, match="NaN"):
        SweepSource.from_arrays(masks, np.where(outputs > 1, np.nan, outputs), labels)
    with pytest.raises(DataError, match="target_labels"):
        SweepSource.from_arrays(masks, outputs, labels[:3])
    with pytest.raises(DataError, match="at least 4 completed models"):
        split_half_agreement(SweepSource.from_arrays(masks[:3], outputs[:3], labels))
