"""Independent simulation tasks on worker processes, results in task order.

Why processes: the bootstrap kernels spend their time in numpy calls that hold the GIL (stacked
``matmul``, ``bincount``, ``einsum``); two threads on two cores were measured running one at a
time (CPU time = wall time), so only processes run two tasks at once.

Contract of :func:`ordered_map`: ``ordered_map(fn, items)`` yields ``fn(item)`` for every item,
in the order of ``items``, exactly as ``map`` would; each task must own its random generator
(simulate keys one per rule, gap and size), so the results do not depend on which process ran
which task. Workers are forked (Linux, macOS's ``fork`` start method): they inherit ``fn`` and
``items`` as they are, nothing is pickled on the way in; each result is pickled back. Where
``fork`` does not exist (Windows) or one worker is asked for, the map is serial in this process.

``DOCKET_WORKERS`` (an integer >= 1) sets the number of processes; the default is the number of
CPUs this process may run on, never more than the number of tasks.

BLAS threads: each worker limits its BLAS thread pool (``threadpoolctl``) to
``max(1, cpus // workers)`` threads, so W workers never run more BLAS threads than there are
CPUs. Without the limit every forked worker kept OpenBLAS's default (one thread per CPU) and two
workers on two cores ran four spinning gemm threads: measured with ``benchmarks/simulate.py``
(2026-12-04, 2 cores), 2 workers took 19.45 s wall and 26.9 s CPU against 13.90 s and 20.0 s
with one BLAS thread each. The kernels' results do not depend on the thread count (the integer
comparison gemms are exact in any order; the benchmark checks that serial and parallel results
are identical).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

_T = TypeVar("_T")
_R = TypeVar("_R")

#: (fn, items) of the map being run; set before the workers fork, read by them.
_JOB: tuple[Callable[[Any], Any], Sequence[Any]] | None = None


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def worker_count(tasks: int) -> int:
    """``min(DOCKET_WORKERS or the usable CPU count, tasks)``, at least 1. A malformed
    ``DOCKET_WORKERS`` is a ValueError naming the variable and what was expected (the CLI checks
    it before any work and exits 2 with that message)."""
    raw = os.environ.get("DOCKET_WORKERS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"DOCKET_WORKERS={raw!r}: expected an integer >= 1 (1 = no workers)")
        want = int(raw)
    else:
        want = _usable_cpus()
    return max(1, min(want, tasks))


def _limit_blas(threads: int) -> None:
    """Worker initializer: at most ``threads`` BLAS threads in this process (module docstring).
    The limiter object is kept for the worker's lifetime on purpose: the limit must hold."""
    global _BLAS_LIMIT
    _BLAS_LIMIT = threadpool_limits(limits=threads, user_api="blas")


_BLAS_LIMIT: Any = None


def _run(index: int) -> Any:
    assert _JOB is not None
    fn, items = _JOB
    return fn(items[index])


def ordered_map(fn: Callable[[_T], _R], items: Sequence[_T]) -> Iterator[_R]:
    """``map(fn, items)`` on :func:`worker_count` forked processes (see the module docstring)."""
    global _JOB
    workers = worker_count(len(items))
    if workers == 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(fn, items)
        return
    _JOB = (fn, items)
    try:
        context = multiprocessing.get_context("fork")
        threads = max(1, _usable_cpus() // workers)
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_limit_blas,
            initargs=(threads,),
        ) as pool:
            yield from pool.map(_run, range(len(items)))
    finally:
        _JOB = None
