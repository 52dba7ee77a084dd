"""Run a nogil numba kernel over an index range on all CPU threads.

The CPU kernels are serial ``@njit(nogil=True, cache=True)`` functions that process the
indices ``start, start+step, …`` below ``stop`` and write only rows they own. Python
threads call them concurrently: numba releases the GIL, so this is real parallelism.

Why not ``@njit(parallel=True)`` with ``prange``: each parfor wrapper re-optimises its
callees and adds 2–4 s of first-call compilation per kernel, and its static split of the
iteration space leaves one core idle when the work is uneven (e.g. an empty sky over a
dense ground). Interleaved tasks on a shared pool balance the load, compile in a fraction
of the time, and, since every index is written by exactly one task, results do not depend
on the schedule.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba

_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
TASKS_PER_THREAD = 4


def num_threads() -> int:
    """Threads used by the CPU kernels (numba's setting: ``NUMBA_NUM_THREADS`` or the core count)."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _pool(size: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _LOCK:
        if _POOL is None or _POOL_SIZE != size:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=size, thread_name_prefix="splatfx-raster")
            _POOL_SIZE = size
        return _POOL


def parallel_for(kernel: Callable[..., None], n: int, *args: Any, interleave: bool = False, grain: int = 1) -> None:
    """Cover ``range(n)`` with calls ``kernel(start, stop, step, *args)`` on the thread pool.

    ``interleave=False`` gives each task one contiguous block (uniform work per index:
    neighbouring rows stay on one thread); ``interleave=True`` gives task ``k`` the
    indices ``k, k+tasks, …`` (uneven work such as image tiles: every task samples the
    whole image). The calling thread works too, and the threads take tasks from a shared
    list as they finish, so a thread that the OS holds back leaves its share to the
    others. With one thread, or fewer than ``2·grain`` indices (not worth waking a
    thread for), the kernel runs inline.
    """
    threads = min(num_threads(), n // max(grain, 1))
    tasks = min(n, threads * TASKS_PER_THREAD)
    if threads <= 1 or tasks <= 1:
        kernel(0, n, 1, *args)
        return
    if interleave:
        calls = [(k, n, tasks) for k in range(tasks)]
    else:
        bounds = [n * k // tasks for k in range(tasks + 1)]
        calls = [(bounds[k], bounds[k + 1], 1) for k in range(tasks)]
    pending = iter(calls)  # next() on a list iterator is atomic under the GIL

    def work() -> None:
        for call in pending:
            kernel(*call, *args)

    pool = _pool(num_threads() - 1)
    futures = [pool.submit(work) for _ in range(threads - 1)]
    try:
        work()
    finally:
        for future in futures:
            future.result()
