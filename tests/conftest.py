"""Fixtures shared across the test packages."""

import pytest

from transfer_influence.models import registry
from transfer_influence.training import objectives


@pytest.fixture
def clean_registry(monkeypatch):
    """The model and objective registries, restored after the test (for tests that register
    models or objectives); returns the model registry."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(objectives, "_REGISTRY", dict(objectives._REGISTRY))
    return registry
