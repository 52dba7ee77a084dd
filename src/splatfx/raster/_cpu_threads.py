"""Run a nogil numba kernel over an index range on all CPU threads.

The CPU kernels are serial ``@njit(nogil=True, cache=True)`` functions. Each takes a
*work counter* as its first argument and claims indices from it in chunks with an atomic
fetch-and-add (:func:`claim`) until the range is exhausted. :func:`parallel_for` calls
the same kernel on the calling thread and on ``NUMBA_NUM_THREADS − 1`` team threads at
once (numba releases the GIL, so this is real parallelism); whichever thread is free
takes the next chunk, without going back to Python. Kernels write only rows they own, so
results do not depend on which thread ran what.

Hand-off. A render calls a handful of kernels a few hundred microseconds apart. Waking a
sleeping thread costs 30–60 µs on a virtual machine, as much as some kernels take, so
team threads wait for the next job by spinning in native code (without the GIL) for
about a millisecond before they go to sleep, as OpenMP runtimes do; the caller likewise
spins until the team has finished. A team thread starts on a job only once the caller is
inside its own kernel (it has claimed work, so the GIL is free), and signals completion
from native code, so neither side waits for the GIL while the other holds it.

Why not ``@njit(parallel=True)`` with ``prange``: each parfor wrapper re-optimises its
callees and adds 2–4 s of first-call compilation per kernel, and its static split of the
iteration space leaves one core idle when the work is uneven (e.g. an empty sky over a
dense ground). Claiming small chunks from a shared counter balances the load to within
one chunk, and a team thread that arrives late simply claims less.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, types
from numba.extending import intrinsic

CHUNKS_PER_THREAD = 16  # default chunk size: the range split into this many chunks per thread
IDLE_SPINS = 1 << 21  # atomic loads (≈ 1 ms) a team thread spins for its next job before it sleeps
DONE_SPINS = 1 << 21  # atomic loads (≈ 1 ms) the caller spins for the team before it polls with sleeps
# Team mailbox (int64): job generation, finished (thread, job) pairs, then the job's work counter.
_GEN, _DONE, _WORK = 0, 1, 2


def num_threads() -> int:
    """Threads used by the CPU kernels (numba's setting: ``NUMBA_NUM_THREADS`` or the core count)."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _int64_pointer(context: Any, builder: Any, array_type: Any, array: Any, index: Any) -> Any:
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [index])


@intrinsic
def _fetch_add(typingctx: Any, counter: Any, index: Any, value: Any) -> Any:
    """Atomically add ``value`` to ``counter[index]`` (an int64 array) and return the old value."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and isinstance(value, types.Integer)):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        pointer = _int64_pointer(context, builder, signature.args[0], args[0], args[1])
        amount = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", pointer, amount, "seq_cst")

    return types.int64(counter, types.intp, value), codegen


@intrinsic
def _load(typingctx: Any, counter: Any, index: Any) -> Any:
    """``counter[index]`` (an int64 array) read atomically, so a spin loop sees other threads' writes."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        pointer = _int64_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(pointer, "acquire", 8)

    return types.int64(counter, types.intp), codegen


@njit(nogil=True, cache=True, inline="always")
def claim(work: np.ndarray) -> tuple:
    """The next chunk ``[lo, hi)`` of a work counter ``[next, stop, chunk]`` (``lo ≥ hi`` once all is taken)."""
    lo = _fetch_add(work, 0, work[2])
    return lo, min(lo + work[2], work[1])


@njit(nogil=True, cache=True)
def _finish_and_wait(mailbox: np.ndarray, finished: bool, seen: int, spins: int) -> int:
    """Count a finished job (if ``finished``), then spin for a generation after ``seen`` (``seen`` on timeout).

    Having seen a new generation it spins on until the job's work counter shows a claim:
    the caller is then inside its own kernel and has let go of the GIL, which this thread
    needs to start the job.
    """
    if finished:
        _fetch_add(mailbox, _DONE, 1)
    for _ in range(spins):
        generation = _load(mailbox, _GEN)
        if generation != seen:
            for _ in range(spins):
                if _load(mailbox, _WORK) != 0:
                    break
            return generation
    return seen


@njit(nogil=True, cache=True)
def _wait_done(mailbox: np.ndarray, target: int, spins: int) -> bool:
    """Spin until ``target`` (thread, job) pairs have finished; False if ``spins`` loads pass first."""
    for _ in range(spins):
        if _load(mailbox, _DONE) >= target:
            return True
    return False


class _Team:
    """``size`` daemon threads that run each job of :func:`parallel_for` alongside the caller."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.mailbox = np.zeros(_WORK + 3, dtype=np.int64)
        self.work = self.mailbox[_WORK:]  # the current job's [next, stop, chunk]
        self.job: tuple = ()
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()  # one caller at a time
        self.wake = threading.Condition()
        for k in range(size):
            threading.Thread(target=self._serve, name=f"splatfx-raster-{k}", daemon=True).start()

    def _serve(self) -> None:
        seen, finished = 0, False
        while True:
            generation = _finish_and_wait(self.mailbox, finished, seen, IDLE_SPINS)
            if generation == seen:  # idle for a while: sleep until the next job
                with self.wake:
                    while self.mailbox[_GEN] == seen:
                        self.wake.wait()
                    generation = int(self.mailbox[_GEN])
            seen = generation
            kernel, args = self.job
            try:
                kernel(self.work, *args)
            except Exception as error:  # noqa: BLE001 (handed to the caller, which raises it)
                self.errors.append(error)
            finished = True

    def run(self, kernel: Callable[..., None], n: int, chunk: int, args: tuple) -> None:
        """Run ``kernel(work, *args)`` over ``range(n)`` on the caller and every team thread, until all are done."""
        self.job = (kernel, args)
        self.work[:] = (0, n, chunk)
        self.errors.clear()  # a team thread's error from a job whose caller raised its own
        generation = int(self.mailbox[_GEN]) + 1
        with self.wake:
            self.mailbox[_GEN] = generation
            self.wake.notify_all()
        try:
            kernel(self.work, *args)
        finally:
            target = generation * self.size
            if not _wait_done(self.mailbox, target, DONE_SPINS):
                while self.mailbox[_DONE] < target:  # a team thread was held back: stop spinning
                    time.sleep(50e-6)
        if self.errors:
            raise self.errors[0]


_TEAM: _Team | None = None
_TEAM_LOCK = threading.Lock()


def _team(size: int) -> _Team:
    global _TEAM
    with _TEAM_LOCK:
        if _TEAM is None or _TEAM.size != size:
            _TEAM = _Team(size)  # a replaced team's threads stay asleep (daemons)
        return _TEAM


def _forget_team() -> None:
    """In a forked child the team's threads do not exist: start a new team on first use."""
    global _TEAM, _TEAM_LOCK
    _TEAM = None
    _TEAM_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_team)


def parallel_for(kernel: Callable[..., None], n: int, *args: Any, chunk: int | None = None, grain: int = 1) -> None:
    """Cover ``range(n)`` with ``kernel(work, *args)`` running on every thread at once.

    The kernel loops ``lo, hi = claim(work)`` while ``lo < hi`` and processes indices
    ``lo..hi−1``. ``chunk`` is the number of indices claimed at a time (default: the range
    split into CHUNKS_PER_THREAD chunks per thread; 1 for uneven work such as image
    tiles, best visited heaviest first). With one thread, fewer than ``2·grain`` indices
    (not worth the hand-off), or while another Python thread is using the team, the
    kernel runs on the calling thread alone.
    """
    threads = min(num_threads(), n // max(grain, 1))
    if chunk is None:
        chunk = max(1, -(-n // (max(threads, 1) * CHUNKS_PER_THREAD)))
    if threads > 1 and n > chunk:
        team = _team(num_threads() - 1)
        if team.lock.acquire(blocking=False):
            try:
                team.run(kernel, n, chunk, args)
            finally:
                team.lock.release()
            return
    kernel(np.array([0, n, chunk], dtype=np.int64), *args)
