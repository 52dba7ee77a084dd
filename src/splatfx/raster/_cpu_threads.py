"""Run a nogil numba kernel over an index range on all CPU threads.

The CPU kernels are serial ``@njit(nogil=True, cache=True)`` functions. Each takes a
*work counter* as its first argument and claims indices from it in chunks with an atomic
fetch-and-add (:func:`claim`) until the range is exhausted. :func:`parallel_for` calls
the same kernel on the calling thread and on ``NUMBA_NUM_THREADS − 1`` pool threads at
once (numba releases the GIL, so this is real parallelism); whichever thread is free
takes the next chunk, without going back to Python. Kernels write only rows they own, so
results do not depend on which thread ran what.

Why not ``@njit(parallel=True)`` with ``prange``: each parfor wrapper re-optimises its
callees and adds 2–4 s of first-call compilation per kernel, and its static split of the
iteration space leaves one core idle when the work is uneven (e.g. an empty sky over a
dense ground). Claiming small chunks from a shared counter balances the load to within
one chunk, and a pool thread that wakes late simply claims less.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
from numba import njit, types
from numba.extending import intrinsic

_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
CHUNKS_PER_THREAD = 16  # default chunk size: the range split into this many chunks per thread


def num_threads() -> int:
    """Threads used by the CPU kernels (numba's setting: ``NUMBA_NUM_THREADS`` or the core count)."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


@intrinsic
def _fetch_add(typingctx: Any, counter: Any, value: Any) -> Any:
    """Atomically add ``value`` to ``counter[0]`` (an int64 array) and return the old value."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and isinstance(value, types.Integer)):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        array = context.make_array(signature.args[0])(context, builder, args[0])
        amount = context.cast(builder, args[1], signature.args[1], types.int64)
        return builder.atomic_rmw("add", array.data, amount, "monotonic")

    return types.int64(counter, value), codegen


@njit(nogil=True, cache=True, inline="always")
def claim(work: np.ndarray) -> tuple:
    """The next chunk ``[lo, hi)`` of a work counter ``[next, stop, chunk]`` (``lo ≥ hi`` once all is taken)."""
    lo = _fetch_add(work, work[2])
    return lo, min(lo + work[2], work[1])


def _pool(size: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _LOCK:
        if _POOL is None or _POOL_SIZE != size:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=size, thread_name_prefix="splatfx-raster")
            _POOL_SIZE = size
        return _POOL


def parallel_for(kernel: Callable[..., None], n: int, *args: Any, chunk: int | None = None, grain: int = 1) -> None:
    """Cover ``range(n)`` with ``kernel(work, *args)`` running on every thread at once.

    The kernel loops ``lo, hi = claim(work)`` while ``lo < hi`` and processes indices
    ``lo..hi−1``. ``chunk`` is the number of indices claimed at a time (default: the range
    split into CHUNKS_PER_THREAD chunks per thread; 1 for uneven work such as image
    tiles, best visited heaviest first). With one thread, or fewer than ``2·grain`` indices
    (not worth waking a thread for), the kernel runs on the calling thread alone.
    """
    threads = min(num_threads(), n // max(grain, 1))
    if chunk is None:
        chunk = max(1, -(-n // (max(threads, 1) * CHUNKS_PER_THREAD)))
    work = np.array([0, n, chunk], dtype=np.int64)
    if threads <= 1 or n <= chunk:
        kernel(work, *args)
        return
    futures = [_pool(num_threads() - 1).submit(kernel, work, *args) for _ in range(threads - 1)]
    try:
        kernel(work, *args)
    finally:
        for future in futures:
            future.result()
