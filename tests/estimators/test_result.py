"""InfluenceResult summaries against brute force, and save/load."""

import numpy as np
import pytest

from transfer_influence.errors import DataError, StoreError
from transfer_influence.estimators import InfluenceResult


@pytest.fixture
def result():
    rng = np.random.default_rng(0)
    units, targets = 6, 20
    influence = rng.normal(size=(units, targets))
    influence[4] = np.nan  # a unit without comparison models
    return InfluenceResult(
        influence=influence,
        unit_names=[f"source{u}" for u in range(units)],
        target_labels=rng.integers(0, 3, size=targets),
        target_class_names=["ant", "bee", "wasp"],
        variant="margin",
        num_models=50,
        counts_with=np.full(units, 25),
        counts_without=np.full(units, 25),
    )


def test_overall_and_per_class_match_brute_force(result):
    np.testing.assert_allclose(result.overall(), [np.mean(row) for row in result.influence])
    per_class = result.per_class()
    assert per_class.shape == (6, 3)
    for unit in range(6):
        for cls in range(3):
            members = [result.influence[unit, t] for t in range(20)
                       if result.target_labels[t] == cls]
            np.testing.assert_allclose(per_class[unit, cls], np.mean(members))


@pytest.mark.parametrize("harmful", [False, True])
@pytest.mark.parametrize("target_class", [None, "bee"])
def test_top_matches_brute_force(result, harmful, target_class):
    if target_class is None:
        scores = {result.unit_names[u]: np.mean(result.influence[u]) for u in range(6)}
    else:
        keep = result.target_labels == 1
        scores = {result.unit_names[u]: np.mean(result.influence[u, keep]) for u in range(6)}
    ranked = sorted(((n, s) for n, s in scores.items() if not np.isnan(s)),
                    key=lambda item: item[1], reverse=not harmful)
    top = result.top(3, target_class=target_class, harmful=harmful)
    assert [name for name, _ in top] == [name for name, _ in ranked[:3]]
    np.testing.assert_allclose([s for _, s in top], [s for _, s in ranked[:3]])
    assert len(result.top(100)) == 5  # the NaN unit is never listed


def test_unknown_target_class_lists_valid_names(result):
    with pytest.raises(DataError, match="'ant', 'bee', 'wasp'"):
        result.top(2, target_class="hornet")


def test_inconsistent_result_is_rejected(result):
    with pytest.raises(DataError, match="unit_names"):
        InfluenceResult(**{**result.__dict__, "unit_names": ["only one"]})
    with pytest.raises(DataError, match="target_labels must lie"):
        InfluenceResult(**{**result.__dict__, "target_labels": result.target_labels + 3})
    with pytest.raises(DataError, match="variant"):
        InfluenceResult(**{**result.__dict__, "variant": "accuracy"})


def test_save_load_round_trip_and_no_silent_overwrite(result, tmp_path):
    path = tmp_path / "out" / "influence.npz"
    result.save(path)
    loaded = InfluenceResult.load(path)
    np.testing.assert_array_equal(loaded.influence, result.influence)
    np.testing.assert_array_equal(loaded.target_labels, result.target_labels)
    np.testing.assert_array_equal(loaded.counts_with, result.counts_with)
    assert (loaded.unit_names, loaded.target_class_names, loaded.variant, loaded.num_models) == (
        result.unit_names, result.target_class_names, result.variant, result.num_models)
    with pytest.raises(StoreError, match="overwrite=True"):
        result.save(path)
    result.save(path, overwrite=True)
    assert sorted(p.name for p in path.parent.iterdir()) == ["influence.npz"]  # no temp files
    (tmp_path / "broken.npz").write_bytes(b"not an npz")
    with pytest.raises(StoreError, match="recompute"):
        InfluenceResult.load(tmp_path / "broken.npz")
