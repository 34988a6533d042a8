"""Row-heavy work on both cores: a function mapped over tasks on forked worker processes.

Workers are forked, so they start at once and share what the run holds in memory (master data,
demand) instead of receiving a copy of it; results come back in task order, a few at a time, so
the run's output does not depend on which worker finished first and finished results do not pile
up. Where fork is unavailable, or with one worker, the tasks run in this process, one by one.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

Task = TypeVar("Task")
Result = TypeVar("Result")

_SHARED: Mapping[str, Any] = {}


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def forked_map(fn: Callable[[Mapping[str, Any], Task], Result], tasks: Sequence[Task], *, workers: int,
               shared: Mapping[str, Any]) -> Generator[Result, None, None]:
    """fn(shared, task) for each task, in order; on `workers` forked processes that inherit `shared`.

    Every worker is forked at the first task (a fork copies only the forking thread: the caller
    should start no thread of its own before that). Close the iterator (or use it up) to end them.
    """
    if workers <= 1 or len(tasks) <= 1 or not can_fork():
        for task in tasks:
            yield fn(shared, task)
        return
    global _SHARED
    _SHARED = shared
    # what the run holds is moved out of the collector's sight first: a worker's garbage collection
    # would otherwise write to every object it inherited and copy their pages (copy-on-write)
    gc.freeze()
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)),
                                 mp_context=multiprocessing.get_context("fork")) as pool:
            pending: deque[Future[Result]] = deque()
            try:
                for task in tasks:
                    pending.append(pool.submit(_call, fn, task))
                    if len(pending) > workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()
    finally:
        _SHARED = {}
        gc.unfreeze()


def _call(fn: Callable[[Mapping[str, Any], Task], Result], task: Task) -> Result:
    return fn(_SHARED, task)


__all__ = ["can_fork", "forked_map"]


def give_back_memory() -> None:
    """Return memory freed by the run to the system: Arrow's pool keeps freed blocks, and so does
    glibc's malloc (numpy's arrays) below its adaptive mmap threshold, so a process's footprint would
    stay at its largest transient instead of what it holds."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> Any:
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only; musl has no malloc_trim)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()
