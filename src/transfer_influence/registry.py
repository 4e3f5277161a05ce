"""The one registry type behind every named extension point: models, objectives, output variants
and estimators (see docs/extending.md).

A :class:`Registry` maps names to functions of one kind, in registration order; the built-ins are
registered like a user's own. Registering another function under a taken name needs
``replace=True``, so a typo cannot silently shadow a built-in. A registered name lives in the
process that registered it; a registry with ``import_paths`` also resolves
``"package.module:attribute"``, which processes that start fresh (the command line, Ray workers,
array-job shards) can import by themselves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import TransferInfluenceError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Names -> functions of one ``kind`` (e.g. ``"model"``), registered with ``register_with``
    (named in messages); errors are ``error``s saying what to do. With ``import_paths``, an
    unregistered name ``"package.module:<attribute>"`` is imported."""

    def __init__(self, kind: str, error: type[TransferInfluenceError], register_with: str, *,
                 import_paths: str | None = None) -> None:
        self.kind, self.error, self.register_with = kind, error, register_with
        self.import_paths = import_paths  # what the attribute is called: "builder", "factory"
        self.entries: dict[str, T] = {}

    def register(self, name: str, function: T, *, replace: bool = False) -> None:
        """Make ``function`` available as ``name``."""
        if not name or (self.import_paths and ":" in name):
            rule = " and without ':' (names with ':' are import paths)" if self.import_paths else ""
            raise self.error(f"{self.kind} name {name!r} must be non-empty{rule}.")
        if not callable(function):
            raise self.error(f"{self.register_with}({name!r}, ...) needs a callable, got"
                             f" {type(function).__name__}.")
        if self.entries.get(name, function) is not function and not replace:
            raise self.error(f"{self.kind} {name!r} is already registered; pass replace=True to"
                             " replace it, or choose another name.")
        self.entries[name] = function

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order (built-ins first)."""
        return tuple(self.entries)

    def get(self, name: str) -> T:
        """The function registered as ``name``, or imported from ``"package.module:attr"``."""
        if name in self.entries:
            return self.entries[name]
        if self.import_paths and ":" in name:
            return self._import(name)
        path_hint = (f", or give its import path, package.module:{self.import_paths}"
                     if self.import_paths else "")
        raise self.error(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.entries)},"
                         f" register your own with {self.register_with}(){path_hint}.")

    def _import(self, path: str) -> T:
        module_name, _, attribute = path.partition(":")
        if not module_name or not attribute:
            raise self.error(f"{self.kind} {path!r}: an import path reads"
                             f" package.module:{self.import_paths}.")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise self.error(
                f"{self.kind} {path!r}: cannot import module {module_name!r} ({error}); make it"
                " importable (install it, or add its folder to PYTHONPATH)."
            ) from None
        function = getattr(module, attribute, None)
        if not callable(function):
            raise self.error(f"{self.kind} {path!r}: module {module_name!r} has no function"
                             f" {attribute!r}.")
        return function
