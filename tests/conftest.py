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
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(objectives, "_REGISTRY", dict(objectives._REGISTRY))
    monkeypatch.setattr(outputs, "_VARIANTS", dict(outputs._VARIANTS))
    monkeypatch.setattr(estimators, "_REGISTRY", dict(estimators._REGISTRY))
    return registry
