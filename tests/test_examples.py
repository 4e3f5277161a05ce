"""The examples in examples/ run: a model defined outside the package (examples/my_models.py),
named by import path in examples/my_model.toml."""

from pathlib import Path

import numpy as np
import pytest
import torch

import transfer_influence as ti
from transfer_influence.config import read_toml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example_config(name: str, store: Path, **sweep):
    """``examples/<name>`` with a smaller sweep writing to ``store``."""
    raw = read_toml((EXAMPLES / name).read_text(), source=name)
    raw["sweep"] |= {"store": str(store), **sweep}
    raw["pretrain"]["epochs"] = 2
    return ti.parse_config(raw, source=name, base_dir=EXAMPLES)


@pytest.fixture
def examples_importable(monkeypatch):
    """examples/ on sys.path, as ``PYTHONPATH=examples`` does for the CLI."""
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.mark.filterwarnings("ignore:.*kept by every model or by none")  # 6 models: expected
def test_my_model_example_runs_a_reproducible_sweep(tmp_path, examples_importable):
    config = example_config("my_model.toml", tmp_path / "a.zarr", num_models=6, group_size=3)
    assert config.model.name == "my_models:dropout_cnn"
    assert config.model.options == {"width": 8, "dropout": 0.2, "activation": "gelu"}
    torch.manual_seed(0)
    store = ti.run_local(config, quiet=True)
    assert store.completed().all()
    result = ti.estimate_influence(store, "prob_correct")
    masks = store.read_masks()
    mixed = masks.any(0) & ~masks.all(0)  # units some models saw and some did not
    assert result.num_models == 6 and result.influence.shape == (8, 200)
    assert mixed.sum() >= 4 and np.isfinite(result.influence[mixed]).all()
    # dropout and the custom layer's initialisation are seeded per model: another global seed
    # and another grouping give the same store
    torch.manual_seed(1)
    again = ti.run_local(example_config("my_model.toml", tmp_path / "b.zarr", num_models=6,
                                        group_size=2), quiet=True)
    a, b = store.read_outputs(), again.read_outputs()
    np.testing.assert_array_equal(a.correct_logit, b.correct_logit)
    np.testing.assert_array_equal(a.predicted, b.predicted)
