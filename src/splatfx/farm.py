"""Per-frame work on many cores or many machines: :func:`run_frames`.

Frames are dispatched in *chunks* of consecutive frames, as render farms do (``1001-1010``,
``1011-1020`` …): a chunk is the unit that is scheduled, retried and recorded. Two executors:

* ``"local"``: a process pool on this machine (spawned processes, so the work function must
  be a picklable top-level function or a ``functools.partial`` of one);
* ``"ray"``: Ray tasks on a Ray cluster (``ray_address``; a local one is started when none is
  given and none is running). Needs the optional extra ``splatfx[farm]``.

The work function ``work_fn(frame) -> list of paths`` writes its outputs itself, atomically
(:mod:`splatfx.atomic`), and returns the paths it wrote. A chunk that fails (an exception, or
its worker process dying) is run again, up to ``retries`` more times. With a ``journal`` file
every completed chunk is recorded with its outputs' sizes and hashes, so a run started again
after a crash skips the chunks whose outputs are still there unchanged and does only the rest.

Training and simulation are not farmed out this way: see ``docs/robustness.md``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from splatfx.atomic import write_text_atomic
from splatfx.errors import SplatfxError
from splatfx.manifest import hash_file
from splatfx.progress import make_progress

PathLike = str | os.PathLike[str]
WorkFn = Callable[[int], Sequence[PathLike] | None]
Executor = Literal["local", "ray"]

JOURNAL_FORMAT = "splatfx-farm-journal"
JOURNAL_VERSION = 1


class FarmError(SplatfxError):
    """Frames could not be computed (a chunk failed every attempt, or the executor is unusable)."""


@dataclass(frozen=True)
class Chunk:
    """Consecutive frames scheduled together; ``label`` is their range, e.g. ``1001-1010``."""

    frames: tuple[int, ...]

    @property
    def label(self) -> str:
        first, last = self.frames[0], self.frames[-1]
        return str(first) if first == last else f"{first}-{last}"


@dataclass
class FarmResult:
    """What :func:`run_frames` did.

    ``outputs``: frame → paths its work function wrote (skipped chunks: as recorded);
    ``ran``/``skipped``: chunk labels run now / skipped as already complete;
    ``attempts``: chunk label → how many times it was started in this run.
    """

    outputs: dict[int, list[str]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def retried(self) -> list[str]:
        """Chunks that needed more than one attempt."""
        return [label for label, n in self.attempts.items() if n > 1]


def make_chunks(frames: Iterable[int], chunk_size: int) -> list[Chunk]:
    """Split sorted, de-duplicated ``frames`` into chunks of at most ``chunk_size`` frames."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    ordered = sorted(set(int(f) for f in frames))
    return [Chunk(tuple(ordered[i:i + chunk_size])) for i in range(0, len(ordered), chunk_size)]


def run_chunk(work_fn: WorkFn, frames: Sequence[int]) -> dict[int, list[str]]:
    """Run ``work_fn`` on each frame of a chunk in turn (in the worker); frame → paths written."""
    return {frame: [os.fspath(p) for p in (work_fn(frame) or ())] for frame in frames}


def run_frames(frames: Iterable[int], work_fn: WorkFn, *, executor: Executor = "local",
               chunk_size: int | None = None, workers: int | None = None, ray_address: str | None = None,
               retries: int = 2, journal: PathLike | None = None, job_key: str = "",
               description: str = "frames") -> FarmResult:
    """Compute ``work_fn(frame)`` for every frame, in chunks, on a process pool or a Ray cluster.

    ``chunk_size``: frames per chunk (default: about four chunks per worker). ``workers``:
    processes (local; default: the CPU count) or chunks in flight (Ray; default: the
    cluster's CPUs). ``retries``: extra attempts for a failed chunk. ``journal``: a JSON file
    recording completed chunks, for resuming; ``job_key`` identifies the job's settings, and
    a journal written for another key is ignored. Raises :class:`FarmError` naming every
    chunk that failed all its attempts, after the others have finished and been recorded.
    """
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")
    started = time.perf_counter()
    frame_list = sorted(set(int(f) for f in frames))
    backend = _make_backend(executor, workers, ray_address)
    try:
        size = chunk_size if chunk_size is not None else max(1, math.ceil(len(frame_list) / (4 * backend.slots)))
        chunks = make_chunks(frame_list, size)
        book = Journal.open(journal, job_key)
        result = FarmResult()
        todo = []
        for chunk in chunks:
            recorded = book.completed(chunk)
            if recorded is None:
                todo.append(chunk)
            else:
                result.skipped.append(chunk.label)
                result.outputs.update(recorded)
        failures = _dispatch(backend, work_fn, todo, retries, book, result, len(frame_list), description)
    finally:
        backend.close()
    result.seconds = time.perf_counter() - started
    if failures:
        listed = "; ".join(f"{label}: {error}" for label, error in failures.items())
        raise FarmError(f"{len(failures)} of {len(chunks)} chunks failed after {retries + 1} attempts ({listed})")
    return result


def _dispatch(backend: _Backend, work_fn: WorkFn, todo: list[Chunk], retries: int, book: Journal,
              result: FarmResult, total_frames: int, description: str) -> dict[str, str]:
    """Keep up to ``backend.slots`` chunks in flight until all are done or out of attempts."""
    queue = list(todo)
    failures: dict[str, str] = {}
    with make_progress() as progress:
        bar = progress.add_task(description, total=total_frames, rate="")
        progress.advance(bar, total_frames - sum(len(c.frames) for c in todo))
        while queue or backend.pending:
            while queue and len(backend.pending) < backend.slots:
                chunk = queue.pop(0)
                result.attempts[chunk.label] = result.attempts.get(chunk.label, 0) + 1
                backend.submit(work_fn, chunk)
            for chunk, outputs, error in backend.wait():
                if error is None:
                    book.record(chunk, outputs)
                    result.ran.append(chunk.label)
                    result.outputs.update(outputs)
                    progress.advance(bar, len(chunk.frames))
                elif result.attempts[chunk.label] <= retries:
                    queue.append(chunk)
                else:
                    failures[chunk.label] = error
            speed = progress.tasks[0].speed
            if speed:
                progress.update(bar, rate=f"{speed:.2f}/s")
    return failures


# --- the journal ----------------------------------------------------------------------------------

class Journal:
    """Completed chunks of one job and their outputs' sizes and hashes (a JSON file, or nothing)."""

    def __init__(self, path: Path | None, job_key: str, chunks: dict[str, dict] | None = None) -> None:
        self.path = path
        self.job_key = job_key
        self.chunks = chunks or {}

    @classmethod
    def open(cls, path: PathLike | None, job_key: str) -> Journal:
        """The journal at ``path`` if it belongs to ``job_key``; an empty one otherwise."""
        if path is None:
            return cls(None, job_key)
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            if data.get("format") == JOURNAL_FORMAT and data.get("job_key") == job_key:
                return cls(p, job_key, dict(data["chunks"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no journal yet, or a damaged one: everything runs again
        return cls(p, job_key)

    def completed(self, chunk: Chunk) -> dict[int, list[str]] | None:
        """The chunk's recorded outputs if it completed and every output is still as written."""
        entry = self.chunks.get(chunk.label)
        if entry is None or entry.get("frames") != list(chunk.frames):
            return None
        for path, (size, mtime_ns, digest) in entry["files"].items():
            try:
                st = os.stat(path)
            except OSError:
                return None
            if st.st_size != size or (st.st_mtime_ns != mtime_ns and hash_file(path) != digest):
                return None
        return {int(frame): paths for frame, paths in entry["outputs"].items()}

    def record(self, chunk: Chunk, outputs: dict[int, list[str]]) -> None:
        """Record a completed chunk (and rewrite the journal atomically)."""
        files = {}
        for paths in outputs.values():
            for path in paths:
                st = os.stat(path)
                files[path] = [st.st_size, st.st_mtime_ns, hash_file(path)]
        self.chunks[chunk.label] = {"frames": list(chunk.frames),
                                    "outputs": {str(f): p for f, p in outputs.items()}, "files": files}
        if self.path is not None:
            data = {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, "job_key": self.job_key,
                    "chunks": self.chunks}
            write_text_atomic(self.path, json.dumps(data, indent=1) + "\n")


# --- executors ------------------------------------------------------------------------------------

Done = tuple[Chunk, dict[int, list[str]], str | None]  # chunk, outputs, error (None: success)


class _Backend(ABC):
    """Submits chunks and reports them as they finish; ``slots`` is how many may run at once."""

    slots: int
    pending: dict[Any, Chunk]

    @abstractmethod
    def submit(self, work_fn: WorkFn, chunk: Chunk) -> None:
        """Start one attempt of ``chunk``."""

    @abstractmethod
    def wait(self) -> list[Done]:
        """Block until at least one submitted chunk finishes; report the finished ones."""

    @abstractmethod
    def close(self) -> None:
        """Stop the workers (and a Ray cluster started for this run)."""


class _LocalBackend(_Backend):
    """A spawn-based process pool, rebuilt when a worker process dies."""

    def __init__(self, workers: int | None) -> None:
        self.slots = workers or os.cpu_count() or 1
        self.pending: dict[cf.Future, Chunk] = {}
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=self.slots, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, work_fn: WorkFn, chunk: Chunk) -> None:
        self.pending[self.pool.submit(run_chunk, work_fn, chunk.frames)] = chunk

    def wait(self) -> list[Done]:
        done, _ = cf.wait(self.pending, return_when=cf.FIRST_COMPLETED)
        finished: list[Done] = []
        broken = False
        for future in done:
            chunk = self.pending.pop(future)
            try:
                finished.append((chunk, future.result(), None))
            except cf.process.BrokenProcessPool:
                broken = True
                finished.append((chunk, {}, "a worker process died"))
            except Exception as exc:  # noqa: BLE001 - the work function's failure, reported per chunk
                finished.append((chunk, {}, _describe(exc)))
        if broken:  # every chunk still in the broken pool is lost with it
            finished += [(chunk, {}, "a worker process died") for chunk in self.pending.values()]
            self.pending.clear()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = self._new_pool()
        return finished

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _RayBackend(_Backend):
    """Ray tasks (one per chunk attempt); splatfx retries, so Ray's own retries are off."""

    def __init__(self, workers: int | None, address: str | None) -> None:
        try:
            import ray
        except ImportError:
            raise FarmError("executor 'ray' needs Ray: pip install 'splatfx[farm]'") from None
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self.slots = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.task = ray.remote(max_retries=0)(run_chunk)
        self.pending: dict[Any, Chunk] = {}

    def submit(self, work_fn: WorkFn, chunk: Chunk) -> None:
        self.pending[self.task.remote(work_fn, chunk.frames)] = chunk

    def wait(self) -> list[Done]:
        ready, _ = self.ray.wait(list(self.pending), num_returns=1)
        finished: list[Done] = []
        for ref in ready:
            chunk = self.pending.pop(ref)
            try:
                finished.append((chunk, self.ray.get(ref), None))
            except self.ray.exceptions.RayTaskError as exc:
                finished.append((chunk, {}, _describe(exc.cause or exc)))
            except self.ray.exceptions.RayError as exc:  # worker died, node lost …
                finished.append((chunk, {}, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"))
        return finished

    def close(self) -> None:
        for ref in self.pending:
            self.ray.cancel(ref, force=True)
        if self.started_here:
            self.ray.shutdown()


def _make_backend(executor: str, workers: int | None, address: str | None) -> _Backend:
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if executor == "local":
        return _LocalBackend(workers)
    if executor == "ray":
        return _RayBackend(workers, address)
    raise ValueError(f"executor must be 'local' or 'ray', not {executor!r}")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
