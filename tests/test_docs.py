"""docs/architecture.md stays true: its plain-zarr snippet reads a real store and reproduces the
package's estimate, and its store tables list every array and attribute a store has."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from transfer_influence.config import load_config
from transfer_influence.estimators import estimate_influence
from transfer_influence.sweep.runners import run_local

from .sweep.conftest import write_sweep_config

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def snippet(text: str, name: str) -> str:
    """The python code block following ``<!-- snippet: name -->``."""
    match = re.search(rf"<!-- snippet: {name} -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, f"no snippet {name!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs")
    return run_local(load_config(write_sweep_config(folder, num_models=10, group_size=5)),
                     quiet=True)


def test_read_store_snippet_matches_the_package(tiny_store):
    code = snippet(ARCHITECTURE.read_text(), "read-store")
    assert '"runs/fashion_digits.zarr"' in code
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = code.replace('"runs/fashion_digits.zarr"', repr(tiny_store.path))
        exec(code, namespace)  # noqa: S102 - the documented snippet
    expected = estimate_influence(tiny_store, "prob_correct")
    np.testing.assert_allclose(namespace["influence"], expected.influence, rtol=1e-5, atol=1e-7)
    best = expected.top(1)[0][0]
    assert printed.getvalue().startswith("10 of 10 models; most helpful overall: " + best)
    np.testing.assert_array_equal(namespace["labels"], tiny_store.target_labels)


def test_store_tables_list_every_array_and_attribute(tiny_store):
    text = ARCHITECTURE.read_text()
    section = text[text.index("## The store format"):text.index("Reading a store with plain")]
    documented = set(re.findall(r"^\| `([\w/]+)` \|", section, re.MULTILINE))
    root = zarr.open_group(tiny_store.path, mode="r")
    arrays = {path for path, node in root.members(max_depth=None) if isinstance(node, zarr.Array)}
    actual = arrays | set(dict(root.attrs))
    assert actual - documented == set(), "store entries missing from docs/architecture.md"
    assert documented - actual == {"outputs/logits"}  # the one optional array
