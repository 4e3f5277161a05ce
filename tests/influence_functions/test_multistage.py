"""Multi-stage influence against exact re-optimisation on small problems, a planted mislabeled
pretraining example, and bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from transfer_influence.influence_functions import (
    FixedFeature,
    InfluenceError,
    MultiStageProblem,
    Proximal,
    SolverOptions,
    minimize,
)
from transfer_influence.models.base import TransferModel

from .conftest import linear, linear_problem

CASES = [FixedFeature(l2=0.1, standardize=False), FixedFeature(l2=0.1),
         Proximal(alpha=0.5, decay=1e-2)]


@pytest.mark.parametrize("finetune", CASES, ids=["fixed", "fixed-standardized", "proximal"])
def test_influence_is_the_first_order_change_of_the_test_loss(finetune):
    """Up-weight one pretraining example by eps, retrain both stages exactly, and compare the
    change of the summed test loss / eps with the predicted influence: the relative error
    shrinks in proportion to eps (first order)."""
    problem, x_test, y_test = linear_problem(finetune)
    influence = problem.scores(problem.test_vector(x_test, y_test, SolverOptions("exact")))
    before = problem.test_loss(problem.phi, x_test, y_test)
    for z in (0,):
        errors = []
        for eps in (1e-2, 1e-3, 1e-4):
            weights = torch.ones(problem.m, dtype=torch.float64)
            weights[z] += eps * problem.m
            theta = minimize(lambda t, w=weights: problem.pretrain_objective(t, w), problem.theta,
                             tol=1e-12)
            change = (problem.test_loss(problem.refit(theta, tol=1e-12), x_test, y_test)
                      - before) / eps
            errors.append(float(abs(change - influence[z]) / abs(influence[z])))
        assert errors[0] < 0.2
        assert errors[1] < 0.15 * errors[0] and errors[2] < 0.15 * errors[1], errors


def test_cg_and_exact_give_the_same_influence():
    problem, x_test, y_test = linear_problem(FixedFeature(l2=0.1))
    exact = problem.scores(problem.test_vector(x_test, y_test, SolverOptions("exact")))
    cg = problem.scores(problem.test_vector(x_test, y_test, SolverOptions("cg", tol=1e-12)))
    torch.testing.assert_close(cg, exact, rtol=1e-5, atol=1e-8)


def test_summed_test_set_influence_is_the_sum_of_per_example_influences():
    problem, x_test, y_test = linear_problem(Proximal(alpha=0.5, decay=1e-2))
    options = SolverOptions("exact")
    vectors = torch.stack([problem.test_vector(x_test[i:i + 1], y_test[i:i + 1], options)
                           for i in range(len(x_test))])
    per_test = problem.scores(vectors)
    assert per_test.shape == (problem.m, len(x_test))
    torch.testing.assert_close(problem.scores(problem.test_vector(x_test, y_test, options)),
                               per_test.sum(dim=1))


def blobs_problem(finetune, seed: int) -> tuple[MultiStageProblem, torch.Tensor, torch.Tensor,
                                                 int]:
    """Three Gaussian classes, a tanh MLP backbone, cross-entropy; source example 5 has a wrong
    label; the target is the same task with 3 training examples per class."""
    g = torch.Generator().manual_seed(seed)
    d, k = 6, 3
    centers = 2.0 * torch.randn(k, d, generator=g, dtype=torch.float64)

    def blobs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % k
        return centers[y] + torch.randn(n, d, generator=g, dtype=torch.float64), y

    xs, ys = blobs(60)
    planted = 5
    ys[planted] = (ys[planted] + 1) % k
    xt, yt = blobs(9)
    x_test, y_test = blobs(60)
    pretrained = TransferModel(nn.Sequential(linear(d, 4, g), nn.Tanh()), linear(4, k, g), 4)
    finetuned = TransferModel(copy.deepcopy(pretrained.backbone), linear(4, k, g), 4)
    problem = MultiStageProblem(pretrained, finetuned, xs, ys, xt, yt, finetune,
                                pretrain_decay=1e-3)
    problem.converge(tol=1e-9)
    return problem, x_test, y_test, planted


@pytest.mark.parametrize("finetune", [FixedFeature(l2=1e-2), Proximal(alpha=1.0, decay=1e-3)],
                         ids=["fixed", "proximal"])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_planted_mislabeled_example_is_among_the_most_harmful(finetune, seed):
    problem, x_test, y_test, planted = blobs_problem(finetune, seed)
    influence = problem.scores(problem.test_vector(x_test, y_test, SolverOptions("cg",
                                                                                 tol=1e-8)))
    most_harmful = torch.argsort(influence, descending=True)[:3].tolist()
    assert planted in most_harmful


def test_identity_hessian_ablation_differs_from_the_solve():
    problem, x_test, y_test = linear_problem(FixedFeature(l2=0.1))
    solved = problem.scores(problem.test_vector(x_test, y_test, SolverOptions("exact")))
    ablated = problem.scores(problem.test_vector(x_test, y_test, SolverOptions("identity")))
    assert ablated.shape == solved.shape
    assert not torch.allclose(ablated, solved, rtol=0.1)


def test_a_target_class_missing_from_the_fine_tuning_data_is_rejected():
    problem, _, _, _ = blobs_problem(FixedFeature(l2=1e-2), 0)
    keep = problem.target_y != 2
    with pytest.raises(InfluenceError, match=r"target class\(es\) \[2\]"):
        MultiStageProblem(problem.pretrained, problem.finetuned, problem.source_x,
                          problem.source_y, problem.target_x[keep], problem.target_y[keep],
                          problem.finetune)


def test_batch_norm_model_is_rejected():
    g = torch.Generator().manual_seed(0)
    backbone = nn.Sequential(linear(3, 4, g), nn.BatchNorm1d(4).double())
    model = TransferModel(backbone, linear(4, 2, g), 4)
    x = torch.randn(8, 3, dtype=torch.float64)
    y = torch.arange(8) % 2
    with pytest.raises(InfluenceError, match="batch normalisation"):
        MultiStageProblem(model, copy.deepcopy(model), x, y, x, y, FixedFeature(l2=0.1))


def test_fixed_feature_case_needs_the_pretrained_backbone_and_proximal_needs_alpha():
    problem, _, _, _ = blobs_problem(FixedFeature(l2=1e-2), 0)
    moved = copy.deepcopy(problem.finetuned)
    with torch.no_grad():
        next(moved.backbone.parameters()).add_(0.1)
    args = (problem.source_x, problem.source_y, problem.target_x, problem.target_y)
    with pytest.raises(InfluenceError, match="backbone unchanged"):
        MultiStageProblem(problem.pretrained, moved, *args, FixedFeature(l2=1e-2))
    with pytest.raises(InfluenceError, match="alpha must be > 0"):
        MultiStageProblem(problem.pretrained, moved, *args, Proximal(alpha=0.0))
