"""Batched multinomial logistic regression against scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from transfer_influence.errors import TrainingError
from transfer_influence.training import fit_linear_heads
from transfer_influence.training.linear_heads import _loss_and_grad

G, N, D, C = 3, 240, 12, 4
L2 = 0.02


def make_problem(conditioned: bool):
    """Features with class signal in the first C columns; unless ``conditioned``, badly scaled
    and offset columns plus one constant column (what standardisation is for)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, C, N)
    scales = rng.uniform(0.1, 10.0, (G, 1, D)) if not conditioned else np.ones((G, 1, D))
    offsets = rng.normal(size=(G, 1, D)) * 5 if not conditioned else np.zeros((G, 1, D))
    features = rng.normal(size=(G, N, D)) * scales + offsets
    features[:, :, :C] += np.eye(C)[labels] * scales[:, :, :C]
    if not conditioned:
        features[1, :, -1] = 3.0
    return features, labels


@pytest.fixture(scope="module")
def problem():
    return make_problem(conditioned=False)


def sklearn_head(x, y):
    """scikit-learn's solution of the same problem: C = 1 / (l2 N) (see module docstring)."""
    model = LogisticRegression(C=1.0 / (L2 * len(y)), tol=1e-12, max_iter=20000).fit(x, y)
    return model.coef_, model.intercept_ - model.intercept_.mean()


@pytest.mark.parametrize("standardize", [True, False])
def test_matches_sklearn(standardize):
    features, labels = make_problem(conditioned=not standardize)
    w, b = fit_linear_heads(torch.tensor(features), torch.tensor(labels), C, l2=L2, tol=1e-9,
                            standardize=standardize)
    assert w.shape == (G, C, D) and b.shape == (G, C)
    for g in range(G):
        if standardize:
            scaler = StandardScaler().fit(features[g])
            coef, intercept = sklearn_head(scaler.transform(features[g]), labels)
            coef = coef / scaler.scale_
            intercept = intercept - coef @ scaler.mean_
            intercept -= intercept.mean()
        else:
            coef, intercept = sklearn_head(features[g], labels)
        np.testing.assert_allclose(w[g].numpy(), coef, atol=1e-5 * np.abs(coef).max())
        np.testing.assert_allclose(b[g].numpy(), intercept, atol=1e-4)
        ours = features[g] @ w[g].numpy().T + b[g].numpy()
        theirs = features[g] @ coef.T + intercept
        np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))


def test_gradient_is_small_at_solution():
    features, labels = make_problem(conditioned=True)
    x = torch.tensor(features)
    w, b = fit_linear_heads(x, torch.tensor(labels), C, l2=L2, tol=1e-9, standardize=False)
    onehot = torch.nn.functional.one_hot(torch.tensor(labels), C).double().expand(G, -1, -1)
    _, grad_w, grad_b = _loss_and_grad(x, onehot, w, b, L2)
    assert grad_w.abs().max() < 1e-8 and grad_b.abs().max() < 1e-8


def test_models_are_independent(problem):
    features, labels = problem
    x, y = torch.tensor(features), torch.tensor(labels)
    w_all, b_all = fit_linear_heads(x, y, C, l2=L2, tol=1e-10)
    w_one, b_one = fit_linear_heads(x[1:2], y, C, l2=L2, tol=1e-10)
    torch.testing.assert_close(w_all[1:2], w_one, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(b_all[1:2], b_one, atol=1e-7, rtol=1e-6)


def test_bad_inputs(problem):
    features, labels = problem
    x, y = torch.tensor(features), torch.tensor(labels)
    with pytest.raises(TrainingError, match="l2 must be"):
        fit_linear_heads(x, y, C, l2=0.0)
    with pytest.raises(TrainingError, match="labels must lie"):
        fit_linear_heads(x, y, 2, l2=L2)
    with pytest.raises(TrainingError, match="NaN"):
        fit_linear_heads(x * float("nan"), y, C, l2=L2)
