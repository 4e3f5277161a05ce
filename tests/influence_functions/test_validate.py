"""Leave-one-out validation: predictions correlate with real retraining, and a killed
validation resumes from its checkpoint."""

from __future__ import annotations

import json

import pytest

from transfer_influence.influence_functions import (
    FixedFeature,
    InfluenceError,
    Proximal,
    SolverOptions,
)
from transfer_influence.influence_functions import validate as validate_module
from transfer_influence.influence_functions.validate import validate

from .test_multistage import blobs_problem


@pytest.mark.slow
def test_predictions_correlate_with_real_leave_one_out_retraining():
    for finetune in (FixedFeature(l2=1e-2), Proximal(alpha=1.0, decay=1e-3)):
        problem, x_test, y_test, planted = blobs_problem(finetune, 0)
        result = validate(problem, x_test, y_test, [planted, *range(6, 14)],
                          options=SolverOptions("exact"), tol=1e-10)
        assert result.pearson > 0.9, result.summary()
        # m = 60: one removal is a 1/60 perturbation, beyond first order for a few examples,
        # so ranks agree less than values (Spearman ~0.5 here); the ablation does far worse.
        assert result.pearson > result.ablation_pearson + 0.5
        assert min(result.actual) == result.actual[0]  # removing the mislabeled one helps most


def test_validation_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    problem, x_test, y_test, _ = blobs_problem(FixedFeature(l2=1e-2), 0)
    path = tmp_path / "loo.json"
    first = validate(problem, x_test, y_test, [0, 1, 2], checkpoint=path, tol=1e-10)
    assert sorted(json.loads(path.read_text())) == ["0", "1", "2"]
    calls = []
    original = validate_module.leave_one_out

    def counting(problem, index, *args, **kwargs):
        calls.append(index)
        return original(problem, index, *args, **kwargs)

    monkeypatch.setattr(validate_module, "leave_one_out", counting)
    second = validate(problem, x_test, y_test, [0, 1, 2, 3], checkpoint=path, tol=1e-10)
    assert calls == [3]
    assert second.actual[:3] == first.actual


def test_a_tolerance_too_loose_to_measure_a_removal_is_refused():
    problem, x_test, y_test, _ = blobs_problem(FixedFeature(l2=1e-2), 0)
    with pytest.raises(InfluenceError, match="tighter tolerance"):
        validate_module.leave_one_out(problem, 0, x_test, y_test, tol=1.0)


def test_a_removal_whose_retraining_does_not_converge_is_reported_and_left_out(tmp_path,
                                                                              monkeypatch):
    problem, x_test, y_test, _ = blobs_problem(FixedFeature(l2=1e-2), 0)
    original = validate_module.leave_one_out

    def stalling_on_1(problem, index, *args, **kwargs):
        if index == 1:
            raise validate_module.TrainingNotConvergedError("training did not converge")
        return original(problem, index, *args, **kwargs)

    monkeypatch.setattr(validate_module, "leave_one_out", stalling_on_1)
    path = tmp_path / "loo.json"
    result = validate(problem, x_test, y_test, [0, 1, 2], checkpoint=path, tol=1e-10)
    assert result.indices == [0, 2] and result.not_converged == [1]
    assert len(result.predicted) == len(result.actual) == len(result.ablation) == 2
    assert json.loads(path.read_text())["1"] is None
    again = validate(problem, x_test, y_test, [0, 1, 2], checkpoint=path, tol=1e-10)
    assert again == result  # the recorded failure is not retried at the same tolerance
