"""Linear datamodels: agreement with scikit-learn, recovery of planted weights, held-out LDS."""

import numpy as np
import pytest
import scipy.stats
from sklearn.linear_model import Lasso, Ridge, lasso_path

from transfer_influence.errors import DataError
from transfer_influence.estimators.datamodels import (
    Datamodels,
    batched_lasso_path,
    fit_datamodels,
    fit_lasso,
    fit_ridge,
    linear_datamodeling_score,
    split_models,
)
from transfer_influence.sweep.masks import subset_masks

from .conftest import random_store


def _iid_problem(models, units, targets, seed=0, noise=1.0):
    """Independent Bernoulli masks (no exact-count constraint, so the LASSO solution is unique)
    and outputs linear in them plus noise."""
    rng = np.random.default_rng(seed)
    masks = rng.random((models, units)) < 0.5
    weights = rng.normal(size=(units, targets)) * (rng.random((units, targets)) < 0.4)
    return masks, masks @ weights + 3.0 + noise * rng.normal(size=(models, targets))


def _planted(models, units, targets, *, sparse, seed=0, noise=0.3):
    """Sweep-style masks (each keeps exactly half the units) and outputs = masks @ w + b + noise."""
    rng = np.random.default_rng(seed)
    masks = subset_masks(seed, np.arange(models), units, 0.5)
    if sparse:  # 5 non-zero weights per target, of magnitude 1 to 2 and random sign
        w_true = np.zeros((units, targets))
        for t in range(targets):
            w_true[rng.choice(units, 5, replace=False), t] = (
                rng.choice([-1.0, 1.0], 5) * rng.uniform(1, 2, 5))
    else:
        w_true = rng.normal(size=(units, targets))
    bias = rng.normal(size=targets)
    return masks, masks @ w_true + bias + noise * rng.normal(size=(models, targets)), w_true


def test_split_models_partitions_reproducibly():
    split = split_models(200, holdout_fraction=0.15, seed=7)
    parts = np.concatenate(split)
    np.testing.assert_array_equal(np.sort(parts), np.arange(200))  # disjoint and complete
    assert (split.selection.size, split.scoring.size) == (15, 15)
    for part in split:
        np.testing.assert_array_equal(part, np.sort(part))
    again = split_models(200, holdout_fraction=0.15, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(split, again, strict=True))
    other = split_models(200, holdout_fraction=0.15, seed=8)
    assert not np.array_equal(split.scoring, other.scoring)


# --------------------------------------------------------------------------- ridge
@pytest.mark.parametrize("shape", [(150, 12, 5), (40, 120, 4)],
                         ids=["units<models", "units>models"])
@pytest.mark.parametrize("refit", [False, True])
def test_ridge_matches_sklearn_ridge_with_the_chosen_lambda(shape, refit):
    masks, outputs = _iid_problem(*shape)
    grid = np.geomspace(1e-2, 1e3, 8)
    result = fit_ridge(masks, outputs, lambdas=grid, holdout_fraction=0.3, seed=3, refit=refit)
    fit_rows = split_models(shape[0], holdout_fraction=0.3, seed=3).fit
    rows = np.arange(shape[0]) if refit else fit_rows
    for t in range(shape[2]):
        reference = Ridge(alpha=result.regularization[t], fit_intercept=True).fit(
            masks[rows].astype(np.float64), outputs[rows, t])
        np.testing.assert_allclose(result.weights[:, t], reference.coef_, rtol=0, atol=1e-10)
        np.testing.assert_allclose(result.bias[t], reference.intercept_, rtol=1e-12, atol=1e-10)
    assert result.method == "ridge" and result.refit == refit
    assert result.num_models == (shape[0] if refit else fit_rows.size)


def test_ridge_lambda_is_the_heldout_argmin_of_sklearn_fits():
    masks, outputs = _iid_problem(120, 10, 6, noise=3.0)
    grid = np.geomspace(1e-2, 1e4, 7)
    result = fit_ridge(masks, outputs, lambdas=grid, holdout_fraction=0.4, seed=1)
    split = split_models(120, holdout_fraction=0.4, seed=1)
    np.testing.assert_array_equal(result.selection_indices, split.selection)
    np.testing.assert_array_equal(result.heldout_indices, split.scoring)
    errors = np.array([
        ((Ridge(alpha=lam).fit(masks[split.fit], outputs[split.fit]).predict(
            masks[split.selection]) - outputs[split.selection]) ** 2).sum(axis=0)
        for lam in grid
    ])
    np.testing.assert_array_equal(result.regularization, grid[errors.argmin(axis=0)])
    assert len(set(result.regularization)) > 1  # lambda really is chosen per target


def test_default_ridge_grid_is_relative_to_the_design():
    masks, outputs = _iid_problem(300, 20, 3, noise=0.5)
    result = fit_ridge(masks, outputs)
    fit_rows = split_models(300).fit
    centred = masks[fit_rows] - masks[fit_rows].mean(axis=0)
    grid = np.geomspace(1e-4, 1e3, 22) * np.mean(np.linalg.svd(centred, compute_uv=False) ** 2)
    explicit = fit_ridge(masks, outputs, lambdas=grid)
    np.testing.assert_allclose(result.regularization, explicit.regularization, rtol=1e-10)
    np.testing.assert_allclose(result.weights, explicit.weights, rtol=1e-8, atol=1e-12)


# --------------------------------------------------------------------------- LASSO
# One solver, two backends: None is NumPy, "cpu" the same solver in torch (as on a GPU).
LASSO_DEVICES = pytest.mark.parametrize("device", [None, "cpu"], ids=["numpy", "torch"])


def _lasso_objective(x, y, w, alpha):
    return ((y - x @ w) ** 2).sum() / (2 * len(y)) + alpha * np.abs(w).sum()


def _centred(masks, outputs):
    x = masks.astype(np.float64)
    return x - x.mean(axis=0), outputs - outputs.mean(axis=0)


@LASSO_DEVICES
@pytest.mark.parametrize("shape", [(200, 15, 4), (30, 80, 3)], ids=["gram", "units>2models"])
def test_lasso_path_matches_sklearn_lasso_path(shape, device):
    # tol=1e-12 on the relative duality gap for both solvers. A gap g bounds the distance to the
    # optimum by sqrt(2 g / mu) (mu: curvature on the support, ~0.1 here), i.e. ~1e-5 for
    # g = 1e-12 x ||y||^2 / n with ||y||^2 / n ~ 10; observed differences are smaller still.
    x, y = _centred(*_iid_problem(*shape))
    # NumPy's and torch's BLAS may round X^T y differently in the last bit, so the top alpha
    # sits a relative 1e-12 above alpha_max to be at or above the solver's own alpha_max.
    alpha_max = np.abs(x.T @ y).max(axis=0) / shape[0] * (1 + 1e-12)
    table = alpha_max[None, :] * np.geomspace(1, 1e-2, 12)[:, None]
    ours = batched_lasso_path(x, y, table, tol=1e-12, max_iter=100_000, device=device)
    assert ours.shape == (12, shape[1], shape[2]) and ours.dtype == np.float64
    for t in range(shape[2]):
        _, coefs, _ = lasso_path(x, y[:, t], alphas=table[:, t], tol=1e-12, max_iter=100_000)
        np.testing.assert_allclose(ours[:, :, t], coefs.T, rtol=0, atol=1e-5)
    assert np.count_nonzero(ours[0]) == 0  # alpha_max: every weight is zero
    assert np.count_nonzero(ours[-1]) > 0


@LASSO_DEVICES
def test_lasso_path_with_exact_count_masks_matches_sklearn_objective_and_predictions(device):
    # Every sweep mask keeps the same number of units, so the centred design has the all-ones
    # vector in its null space: weights are only identified up to a common shift at small
    # alphas. Objective values and predictions are identified; compare those.
    masks, outputs, _ = _planted(200, 12, 3, sparse=False, noise=1.0)
    x, y = _centred(masks, outputs)
    alphas = np.geomspace(1.0, 1e-3, 10)
    ours = batched_lasso_path(x, y, alphas, tol=1e-12, max_iter=100_000, device=device)
    for t in range(3):
        _, coefs, _ = lasso_path(x, y[:, t], alphas=alphas, tol=1e-12, max_iter=100_000)
        for k, alpha in enumerate(alphas):
            assert _lasso_objective(x, y[:, t], ours[k, :, t], alpha) == pytest.approx(
                _lasso_objective(x, y[:, t], coefs[:, k], alpha), rel=1e-9)
            np.testing.assert_allclose(x @ ours[k, :, t], x @ coefs[:, k], atol=1e-4)


@LASSO_DEVICES
def test_fit_lasso_matches_sklearn_lasso_at_the_heldout_best_alpha(device):
    masks, outputs = _iid_problem(200, 15, 5, noise=2.0)
    result = fit_lasso(masks, outputs, alphas=20, holdout_fraction=0.3, seed=2, tol=1e-12,
                       max_iter=100_000, device=device)
    fit_rows, selection_rows, _ = split_models(200, holdout_fraction=0.3, seed=2)
    x, y = _centred(masks[fit_rows], outputs[fit_rows])
    for t in range(5):
        reference = Lasso(alpha=result.regularization[t], tol=1e-12, max_iter=100_000).fit(
            masks[fit_rows].astype(np.float64), outputs[fit_rows, t])
        np.testing.assert_allclose(result.weights[:, t], reference.coef_, atol=1e-5)
        np.testing.assert_allclose(result.bias[t], reference.intercept_, atol=1e-5)
        # The chosen alpha has the smallest selection-model error on scikit-learn's own path.
        alpha_max = np.abs(x.T @ y[:, t]).max() / len(fit_rows)
        alphas, coefs, _ = lasso_path(x, y[:, t], alphas=alpha_max * np.geomspace(1, 1e-3, 20),
                                      tol=1e-12, max_iter=100_000)
        centred_selection = masks[selection_rows] - masks[fit_rows].mean(axis=0)
        errors = (((centred_selection @ coefs).T + outputs[fit_rows, t].mean()
                   - outputs[selection_rows, t]) ** 2).sum(axis=1)
        assert errors[np.isclose(alphas, result.regularization[t], rtol=1e-12)][0] <= (
            errors.min() * (1 + 1e-6))


@LASSO_DEVICES
def test_lasso_refit_uses_all_models(device):
    masks, outputs = _iid_problem(150, 10, 3, noise=2.0)
    result = fit_lasso(masks, outputs, alphas=15, refit=True, tol=1e-12, max_iter=100_000,
                       device=device)
    for t in range(3):
        reference = Lasso(alpha=result.regularization[t], tol=1e-12, max_iter=100_000).fit(
            masks.astype(np.float64), outputs[:, t])
        np.testing.assert_allclose(result.weights[:, t], reference.coef_, atol=1e-5)
    assert result.num_models == 150 and result.refit


# --------------------------------------------------------------------------- LDS
def test_lds_equals_scipy_spearman_per_target():
    rng = np.random.default_rng(0)
    predicted = rng.normal(size=(40, 6))
    actual = rng.integers(0, 5, size=(40, 6)).astype(np.float64)  # many ties
    actual[:, 2] = 1.5  # constant actual output: undefined
    predicted[:, 4] = 0.0  # constant prediction: no ranking information
    score = linear_datamodeling_score(predicted, actual)
    for t in (0, 1, 3, 5):
        assert score[t] == pytest.approx(scipy.stats.spearmanr(predicted[:, t], actual[:, t])[0],
                                         abs=1e-12)
    assert np.isnan(score[2]) and score[4] == 0.0


@pytest.mark.parametrize("fit", [fit_ridge, fit_lasso])
def test_constant_targets_are_excluded_from_the_mean_and_counted(fit):
    masks, outputs, _ = _planted(300, 10, 4, sparse=False)
    outputs[:, 1] = 0.25
    result = fit(masks, outputs)
    assert result.num_constant_targets == 1 and np.isnan(result.lds_per_target[1])
    assert result.lds == pytest.approx(np.mean(result.lds_per_target[[0, 2, 3]]))
    np.testing.assert_allclose(result.weights[:, 1], 0.0, atol=1e-12)
    assert result.bias[1] == pytest.approx(0.25)


# --------------------------------------------------------------------------- planted problems
@pytest.mark.parametrize("method", ["ridge", "lasso"])
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_planted_weights_are_recovered_with_high_heldout_lds(method, sparse):
    masks, outputs, w_true = _planted(600, 30, 20, sparse=sparse)
    fit = fit_ridge if method == "ridge" else fit_lasso
    result = fit(masks, outputs, seed=1)
    # Only differences between weights are identified (see the module docstring): centre both.
    fitted = result.weights - result.weights.mean(axis=0)
    truth = w_true - w_true.mean(axis=0)
    correlations = [np.corrcoef(fitted[:, t], truth[:, t])[0, 1] for t in range(20)]
    assert min(correlations) > 0.95
    assert np.abs(fitted - truth).max() < 0.2  # weights of order 1; noise sd 0.3
    assert result.lds > 0.8 and result.lds_per_target.shape == (20,)
    # The LDS scores the returned weights on the scoring models, which took no part in the fit.
    scoring = result.heldout_indices
    np.testing.assert_allclose(result.lds_per_target, linear_datamodeling_score(
        result.predict(masks[scoring]), outputs[scoring]), atol=1e-12)
    assert not np.isin(scoring, result.selection_indices).any()
    assert result.num_models == 600 - scoring.size - result.selection_indices.size
    assert result.num_constant_targets == 0
    predicted = result.predict(masks[result.heldout_indices])
    assert np.corrcoef(predicted.ravel(), outputs[result.heldout_indices].ravel())[0, 1] > 0.95
    if method == "lasso" and sparse:
        # Held-out selection favours prediction over sparsity, yet many absent units get an exact
        # zero (about half here) and no planted unit does.
        assert (result.weights[w_true == 0] == 0).mean() > 0.3
        assert not (result.weights[w_true != 0] == 0).any()


@pytest.mark.parametrize("method", ["ridge", "lasso"])
def test_pure_noise_gives_heldout_lds_near_zero(method):
    rng = np.random.default_rng(5)
    masks = subset_masks(5, np.arange(600), 30, 0.5)
    outputs = rng.normal(size=(600, 200))
    fit = fit_ridge if method == "ridge" else fit_lasso
    result = fit(masks, outputs, alphas=30) if method == "lasso" else fit(masks, outputs)
    assert abs(result.lds) < 0.1


@pytest.mark.parametrize("method", ["ridge", "lasso"])
def test_example_level_shape_units_exceed_models(method):
    # Example-level sweeps: far more units (source examples) than models.
    masks, outputs, _ = _planted(120, 400, 3, sparse=True, noise=0.1)
    fit = fit_ridge if method == "ridge" else fit_lasso
    result = fit(masks, outputs, seed=0)
    assert result.weights.shape == (400, 3) and np.isfinite(result.weights).all()
    assert result.lds > 0.2  # 108 models for 400 units: informative, far from perfect


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("masks", "outputs", "match"),
    [
        (np.ones((20, 4)), np.zeros((20, 2)), "must be bool"),
        (np.ones((20, 4), bool), np.zeros((19, 2)), "same number of models"),
        (np.ones((20, 4), bool), np.zeros(20), "same number of models"),
        (np.ones((20, 4), bool), np.full((20, 2), np.nan), "NaN or inf"),
        (np.ones((5, 4), bool), np.zeros((5, 2)), "at least 3"),
        (np.ones((20, 4), bool), np.zeros((20, 2), dtype=complex), "real numbers"),
    ],
)
@pytest.mark.parametrize("device", [None, "cpu"])
@pytest.mark.parametrize("fit", [fit_ridge, fit_lasso])
def test_bad_inputs_raise_data_error(fit, masks, outputs, match, device):
    with pytest.raises(DataError, match=match):
        fit(masks, outputs, device=device)


def test_bad_options_raise_data_error():
    masks, outputs = _iid_problem(80, 5, 2)
    with pytest.raises(DataError, match="unique and lie in"):
        fit_ridge(masks, outputs, heldout=np.array([1, 2, 3, 4, 5, 80]))
    with pytest.raises(DataError, match="holdout_fraction"):
        fit_ridge(masks, outputs, holdout_fraction=1.0)
    with pytest.raises(DataError, match="lambdas must be finite and > 0"):
        fit_ridge(masks, outputs, lambdas=np.array([1.0, 0.0]))
    with pytest.raises(DataError, match="alphas must be"):
        fit_lasso(masks, outputs, alphas=np.ones((3, 5)))
    with pytest.raises(DataError, match="bool"):
        fit_ridge(masks, outputs).predict(masks.astype(int))


# --------------------------------------------------------------------------- from a store
@pytest.fixture
def store(tmp_path):
    # The correct-class logit rises with the first two units: a learnable signal.
    return random_store(tmp_path / "s.zarr", models=60, units=8, targets=12, unfinished_every=5,
                        correct_boost=lambda masks: 2.0 * masks[:, :2].sum(axis=1, keepdims=True))


@pytest.mark.parametrize("method", ["ridge", "lasso"])
def test_fit_datamodels_from_a_store(store, method):
    result = fit_datamodels(store, "margin", method, holdout_fraction=0.2, seed=4)
    assert isinstance(result, Datamodels) and result.weights.shape == (8, 12)
    completed = np.flatnonzero(store.completed())
    held = np.concatenate([result.selection_indices, result.heldout_indices])
    assert np.isin(held, completed).all() and np.unique(held).size == 10
    assert result.num_models == 38
    fit = fit_ridge if method == "ridge" else fit_lasso
    direct = fit(store.read_masks(), store.read_outputs().variant("margin"),
                 holdout_fraction=0.2, seed=4)
    np.testing.assert_array_equal(completed[direct.heldout_indices], result.heldout_indices)
    np.testing.assert_array_equal(completed[direct.selection_indices], result.selection_indices)
    np.testing.assert_allclose(result.weights, direct.weights)
    assert result.weights[:2].mean() > result.weights[2:].mean() + 1.0  # the planted units


def test_fit_datamodels_takes_heldout_sweep_indices(store):
    result = fit_datamodels(store, heldout=np.array([0, 1, 2, 5, 57, 58]))
    np.testing.assert_array_equal(
        np.sort(np.concatenate([result.selection_indices, result.heldout_indices])),
        [0, 1, 2, 5, 57, 58])
    assert result.selection_indices.size == result.heldout_indices.size == 3
    with pytest.raises(DataError, match=r"heldout models \[4\] are not completed"):
        fit_datamodels(store, heldout=np.array([0, 1, 2, 4, 5, 6]))
    with pytest.raises(DataError, match="unknown datamodel method"):
        fit_datamodels(store, method="elastic")
