"""Hygiene the issue asked to be checked: filesystem-safe result names in one place, one error
class per condition, library errors that are ValueErrors where they are and never name a CLI
option, and Ray/array workers that never write to another config's store."""

import ast
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

import transfer_influence
from transfer_influence.analysis import debug_failures, find_leakage
from transfer_influence.cli import _result_path
from transfer_influence.config import parse_config, safe_name
from transfer_influence.counterfactual import ranking_scores
from transfer_influence.counterfactual.arms import ranked_arms
from transfer_influence.errors import (
    ConfigError,
    DataError,
    ModelError,
    StoreError,
    TrainingError,
    TransferInfluenceError,
)
from transfer_influence.estimators import InfluenceResult
from transfer_influence.ranking import top_indices
from transfer_influence.sweep.plan import SweepPlan
from transfer_influence.sweep.runners import worker_plan

PACKAGE = Path(transfer_influence.__file__).parent
RAW = {"data": {"suite": "planted", "options": {"n_per_class": 16, "target_test_per_class": 6}},
       "model": {"name": "mlp", "options": {"width": 8, "depth": 1}},
       "pretrain": {"epochs": 1, "lr": 0.05, "batch_size": 16}, "sweep": {"num_models": 2}}


@pytest.mark.parametrize("name", ["T-shirt/top", "ankle boot", "..", "a\\b", "50%", "x.y~z"])
def test_safe_names_are_one_component_and_round_trip(name, tmp_path):
    safe = safe_name(name)
    assert re.fullmatch(r"[A-Za-z0-9_%-]+", safe) and unquote(safe) == name
    config = parse_config({**RAW, "sweep": {**RAW["sweep"], "store": str(tmp_path / "s.zarr")}})
    path = config.artifact_path(f"counterfactual-bottom-{safe}.json")
    assert path.parent == tmp_path
    assert _result_path(config, name, name).parent == tmp_path  # variant and method names
    with pytest.raises(ConfigError, match="path separator; build it from safe_name"):
        config.artifact_path("counterfactual-bottom-T-shirt/top.json")


def test_value_errors_are_value_errors():
    for error in (DataError, ConfigError, ModelError):
        assert issubclass(error, ValueError) and issubclass(error, TransferInfluenceError)
    for error in (TrainingError, StoreError):
        assert not issubclass(error, ValueError)


def _raised_text(node: ast.Raise) -> str:
    return " ".join(part.value for part in ast.walk(node)
                    if isinstance(part, ast.Constant) and isinstance(part.value, str))


def test_library_errors_name_no_command_line_option():
    """Outside cli.py, no raised message names a ``--option``: the library's callers may never
    have seen the command line."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and re.search(r"(?<![\w-])--[a-z]", _raised_text(node)):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, found


def test_units_that_differ_are_one_data_error(tmp_path):
    plan = SweepPlan.from_config(parse_config(
        {**RAW, "sweep": {**RAW["sweep"], "store": str(tmp_path / "s.zarr")}}))
    units, targets = len(plan.unit_names), len(plan.data.target_test)
    other = InfluenceResult(np.zeros((units, targets)), [f"x{i}" for i in range(units)],
                            np.array(plan.data.target_test.labels),
                            list(plan.data.target_test.class_names), "margin", 4,
                            np.full(units, 2), np.full(units, 2))
    for attempt in (lambda: ranking_scores(plan, other),
                    lambda: debug_failures(plan, other, examples=[0], seeds=2, quiet=True)):
        with pytest.raises(DataError, match="influence result's units differ"):
            attempt()
    assert not (tmp_path / "s.zarr").exists()  # refused before training anything


def test_worker_plans_keep_each_configs_store(tmp_path):
    """Two configs with one hash (the store is not hashed) share the cached data, never the
    store: a reused Ray worker writes where the current task's config says."""
    first = parse_config({**RAW, "sweep": {**RAW["sweep"], "store": str(tmp_path / "a.zarr")}})
    second = parse_config({**RAW, "sweep": {**RAW["sweep"], "store": str(tmp_path / "b.zarr")}})
    assert first.config_hash() == second.config_hash()
    plan_a, plan_b = worker_plan(first), worker_plan(second)
    assert plan_a.data is plan_b.data
    assert (plan_a.config.store_path(), plan_b.config.store_path()) == (
        str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"))


def test_one_top_k_rule_everywhere():
    """Lists, removal arms and leakage rank with ``top_indices``: best first, ties in index
    order, NaN never ranked (leakage used to count NaN as 0 and list it above negatives)."""
    scores = np.array([-1.0, np.nan, -2.0, 3.0, 3.0])
    np.testing.assert_array_equal(top_indices(scores), [3, 4, 0, 2])
    np.testing.assert_array_equal(top_indices(scores, 2, largest=False), [2, 0])
    names = [f"u{i}" for i in range(5)]
    result = InfluenceResult(scores[:, None], names, np.array([0]), ["a"], "margin", 4,
                             np.full(5, 2), np.full(5, 2))
    assert [name for name, _ in result.top(5)] == ["u3", "u4", "u0", "u2"]
    assert [arm.removed[0] for arm in ranked_arms("bottom", scores, [2], 2)] == [(0, 2)]
    found, = find_leakage(scores[:, None] - 5.0, names, np.array([0]), ["a"], k=2)
    assert [c.source_index for c in found.leaks] == [3, 4]
    assert [c.source_index for c in found.misleading] == [2, 0]
    assert all(not np.isnan(c.score) for c in found.leaks + found.misleading)
    with pytest.raises(DataError, match="one-dimensional"):
        top_indices(np.zeros((2, 2)))
