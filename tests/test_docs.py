"""The documentation stays true: docs/architecture.md's plain-zarr snippet reads a real store and
reproduces the package's estimate, its store tables list every array and attribute a store has,
and every example of docs/extending.md runs."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from transfer_influence.config import load_config
from transfer_influence.estimators import estimate_influence
from transfer_influence.models import registered_models
from transfer_influence.sweep.runners import run_local
from transfer_influence.training import registered_objectives

from .sweep.conftest import write_sweep_config

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(text: str) -> list[str]:
    """The ```python code blocks of a markdown text, in order."""
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def run_blocks(blocks: list[str], namespace: dict) -> str:
    """Execute ``blocks`` in order in ``namespace``; return what they printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(block, namespace)  # noqa: S102 - the documented examples
    return printed.getvalue()


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs")
    return run_local(load_config(write_sweep_config(folder, num_models=10, group_size=5)),
                     quiet=True)


def test_read_store_snippet_matches_the_package(tiny_store):
    text = (DOCS / "architecture.md").read_text()
    match = re.search(r"<!-- snippet: read-store -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match and '"runs/fashion_digits.zarr"' in match.group(1)
    code = match.group(1).replace('"runs/fashion_digits.zarr"', repr(tiny_store.path))
    namespace: dict = {}
    printed = run_blocks([code], namespace)
    expected = estimate_influence(tiny_store, "prob_correct")
    np.testing.assert_allclose(namespace["influence"], expected.influence, rtol=1e-5, atol=1e-7)
    best = expected.top(1)[0][0]
    assert printed.startswith("10 of 10 models; most helpful overall: " + best)
    np.testing.assert_array_equal(namespace["labels"], tiny_store.target_labels)


def test_store_tables_list_every_array_and_attribute(tiny_store):
    text = (DOCS / "architecture.md").read_text()
    section = text[text.index("## The store format"):text.index("Reading a store with plain")]
    documented = set(re.findall(r"^\| `([\w/]+)` \|", section, re.MULTILINE))
    root = zarr.open_group(tiny_store.path, mode="r")
    arrays = {path for path, node in root.members(max_depth=None) if isinstance(node, zarr.Array)}
    actual = arrays | set(dict(root.attrs))
    assert actual - documented == set(), "store entries missing from docs/architecture.md"
    assert documented - actual == set(), "docs/architecture.md lists entries a store lacks"


@pytest.mark.filterwarnings("ignore:.*kept by every model or by none")  # 16 models, 8 units
def test_extending_page_runs(tmp_path, monkeypatch, clean_registry):
    blocks = python_blocks((DOCS / "extending.md").read_text())
    assert len(blocks) == 8
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "extending"}
    printed = run_blocks(blocks, namespace)
    assert "residual_mlp" in registered_models() and "focal" in registered_objectives()
    assert printed.startswith("torch.Size([4, 8])")
    assert namespace["store"].completed().all() and namespace["my_store"].completed().all()
    # the focal-loss models learned the target far better than chance (4 target classes)
    assert namespace["accuracy"].shape == (4,) and namespace["accuracy"].mean() > 0.4
    # the same data as a torch dataset gives the same sweep
    np.testing.assert_array_equal(namespace["my_store"].read_outputs().correct_logit,
                                  namespace["store"].read_outputs().correct_logit)
    # the own variant, estimator and runner, checked against what they claim
    store = namespace["store"]
    masks, prob = store.read_masks(), store.read_outputs().variant("prob_correct")
    by_unit = estimate_influence(store, "log_prob_correct").influence
    assert np.isclose(by_unit[0, 0], np.log(prob[masks[:, 0], 0]).mean()
                      - np.log(prob[~masks[:, 0], 0]).mean())
    medians = namespace["medians"]
    assert medians.method == "medians" and medians.num_models == 16
    assert np.isclose(medians.influence[2, 5], np.median(prob[masks[:, 2], 5])
                      - np.median(prob[~masks[:, 2], 5]))
    assert "(8, 16)" in printed and namespace["finished"].completed().all()
    np.testing.assert_array_equal(namespace["finished"].read_outputs().correct_logit,
                                  store.read_outputs().correct_logit)
