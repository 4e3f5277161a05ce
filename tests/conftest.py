"""Fixtures shared across the test packages."""

import pytest

from transfer_influence.models import registry


@pytest.fixture
def clean_registry(monkeypatch):
    """The model registry, restored after the test (for tests that register models)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry
