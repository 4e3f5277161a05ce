"""Errors raised by transfer-influence.

Every error the library raises on purpose is a :class:`TransferInfluenceError`; its message says
what is wrong *and what to do about it*. The CLI prints these messages without a traceback and
exits non-zero, so they must stand on their own. They name library arguments and config keys,
never command-line options (the CLI maps its options onto those). Errors about bad values
(:class:`DataError`, :class:`ConfigError`, :class:`ModelError`) are also ``ValueError`` instances.
"""

from __future__ import annotations


class TransferInfluenceError(Exception):
    """Base class of every deliberate error in transfer-influence."""


class DataError(TransferInfluenceError, ValueError):
    """Bad, missing or corrupt data: shapes, dtypes, labels, NaNs, unreadable files."""


class ConfigError(TransferInfluenceError, ValueError):
    """An experiment configuration that does not validate."""


class ModelError(TransferInfluenceError, ValueError):
    """An unknown model name or model options that cannot be built."""


class TrainingError(TransferInfluenceError):
    """Training cannot proceed: empty subsets, diverged losses, inconsistent groups."""


class StoreError(TransferInfluenceError):
    """A result store that is missing, incomplete or belongs to another configuration."""
