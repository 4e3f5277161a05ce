"""Fixtures shared across the test packages."""

import pytest

from transfer_influence import outputs
from transfer_influence.estimators import registry as estimators
from transfer_influence.models import registry
from transfer_influence.training import objectives


@pytest.fixture
def clean_registry(monkeypatch):
    """The registries (models, objectives, output variants, estimators), restored after the
    test (for tests that register their own); returns the model registry."""
    for named in (registry._MODELS, objectives._OBJECTIVES, outputs._VARIANTS,
                  estimators._ESTIMATORS):
        monkeypatch.setattr(named, "entries", dict(named.entries))
    return registry
