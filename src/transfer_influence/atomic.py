"""Atomic file writes (readers see the old file or the complete new one, never a partial one),
and the JSON result files the analysis commands save beside a store."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from .errors import StoreError

T = TypeVar("T")


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (``mode`` ``"w"`` or ``"wb"``); when
    the block ends without an exception it is renamed over ``path``, otherwise deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)  # mkstemp's 0600 would make results private to their writer
    try:
        with os.fdopen(handle, mode) as file:
            yield file
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON, atomically; NaN and infinities become ``null`` (JSON has none)."""
    with atomic_open(path) as file:
        json.dump(_finite_or_none(data), file, indent=1)


def read_json(path: str | Path, build: Callable[[Any], T], *, what: str, command: str) -> T:
    """``build(parsed JSON)`` of the file at ``path``; a missing, corrupt or mis-shaped file is a
    :class:`StoreError` naming ``what`` it should hold and the ``command`` that rewrites it."""
    try:
        return build(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise StoreError(f"cannot read {what} from {path} ({error}); rerun"
                         f" transfer-influence {command}.") from error
