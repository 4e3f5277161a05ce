"""Label projection and consensus predictions against brute force."""

import numpy as np
import pytest

from transfer_influence.analysis import consensus_predictions, default_examples, project_labels
from transfer_influence.errors import DataError
from transfer_influence.estimators import InfluenceResult
from transfer_influence.outputs import TargetOutputs
from transfer_influence.sweep.store import SweepStore


def _result(influence, labels):
    units = influence.shape[0]
    return InfluenceResult(influence=influence, unit_names=[f"u{i}" for i in range(units)],
                           target_labels=np.asarray(labels), target_class_names=["a", "b", "c"],
                           variant="prob_correct", num_models=10,
                           counts_with=np.full(units, 5), counts_without=np.full(units, 5))


def test_projection_lists_the_largest_positive_influences_of_each_example():
    rng = np.random.default_rng(0)
    influence = rng.standard_normal((7, 6))
    influence[3, 2] = np.nan
    result = _result(influence, [0, 0, 1, 1, 2, 2])
    projections = project_labels(result, [2, 5], k=3, predictions=np.array([0, 0, 2, 1, 2, 0]))
    for p, t in zip(projections, [2, 5]):
        column = np.where(np.isnan(influence[:, t]), -np.inf, influence[:, t])
        expected = [f"u{i}" for i in np.argsort(-column)[:3]]
        assert [name for name, _ in p.sources] == expected
        assert [s for _, s in p.sources] == pytest.approx(sorted(column, reverse=True)[:3])
    assert (projections[0].true_class, projections[0].predicted_class) == ("b", "c")
    assert "u3" not in [name for name, _ in projections[0].sources]  # NaN never listed
    assert default_examples(result) == [0, 2, 4]


def test_projection_rejects_bad_examples_and_k():
    result = _result(np.zeros((3, 4)), [0, 1, 2, 0])
    with pytest.raises(DataError, match="out of range.*4 examples"):
        project_labels(result, [4])
    with pytest.raises(DataError, match="k must be"):
        project_labels(result, [0], k=0)


def test_consensus_predictions_are_the_majority_vote(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 9)
    store = SweepStore.create(tmp_path / "s.zarr", num_models=7, unit_names=["x", "y", "z"],
                              target_labels=labels, target_class_names=["a", "b", "c"],
                              config_hash="h", fingerprints={})
    logits = rng.standard_normal((7, 9, 3))
    masks = rng.random((7, 3)) < 0.5
    store.write_models(np.arange(6), masks[:6], TargetOutputs.from_logits(logits[:6], labels))
    votes = logits[:6].argmax(axis=2)  # model 6 is not completed and must not vote
    expected = [np.bincount(votes[:, t], minlength=3).argmax() for t in range(9)]
    np.testing.assert_array_equal(consensus_predictions(store, chunk_models=4), expected)
