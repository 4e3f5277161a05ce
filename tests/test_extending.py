"""docs/extending.md runs: every python block, in order, in one namespace."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

from transfer_influence.models import registry

EXTENDING = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


@pytest.fixture
def clean_registry(monkeypatch):
    """The page registers a model; the registry is restored afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.mark.filterwarnings("ignore:.*kept by every model or by none")  # 16 models, 8 units
def test_extending_page_runs(tmp_path, monkeypatch, clean_registry):
    blocks = re.findall(r"```python\n(.*?)```", EXTENDING.read_text(), re.DOTALL)
    assert len(blocks) == 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "extending"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(block, namespace)  # noqa: S102 - the documented examples
    assert "residual_mlp" in registry.registered_models()
    assert printed.getvalue().startswith("torch.Size([4, 8])")
    assert namespace["store"].completed().all() and namespace["my_store"].completed().all()
    # the focal-loss models learned the target better than chance (4 target classes)
    assert namespace["accuracy"].shape == (4,) and namespace["accuracy"].mean() > 0.4
    # the same data as a torch dataset gives the same sweep
    np.testing.assert_array_equal(namespace["my_store"].read_outputs().correct_logit,
                                  namespace["store"].read_outputs().correct_logit)
