"""The errors a run stops with. Each carries the one-line reason the user sees; the CLI maps them to
exit codes (1 the run could not be done, 75 a plant's lock is held) and the DAG to retries."""

from __future__ import annotations


class SourceError(RuntimeError):
    """A landing table cannot be read; the message is the one-line reason.

    `transient` is true when trying again later may succeed (a database that could not be reached).
    """

    transient: bool = False


class WarehouseError(RuntimeError):
    """The warehouse cannot be written or read; the message is the one-line reason."""


class LockError(WarehouseError):
    """Another run holds the lock of a plant."""
