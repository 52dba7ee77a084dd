"""Per-frame work on many cores or many machines: :func:`run_frames`.

Frames are dispatched in *chunks* of consecutive frames, as render farms do (``1001-1010``,
``1011-1020`` …): a chunk is the unit that is scheduled, retried and recorded. Two executors:

* ``"local"``: a process pool on this machine (spawned processes, so the work function must
  be a picklable top-level function or a ``functools.partial`` of one);
* ``"ray"``: Ray tasks on a Ray cluster (``ray_address``; a local one is started when none is
  given and none is running). Needs the optional extra ``splatfx[farm]``.

The work function ``work_fn(frame) -> list of paths`` writes its outputs itself, atomically
(:mod:`splatfx.core.atomic`), and returns the paths it wrote, or a :class:`FrameOutput` (the paths
and facts about the frame, e.g. its figures, for the driver to record). With ``per_chunk`` it
is called once per chunk instead, ``work_fn(frames) -> iterable of (frame, output)``, so it
can open what the chunk shares (plates, a model) once and carry state from frame to frame.
A chunk that fails (an exception, or its worker process dying) is run again, up to
``retries`` more times. With a ``journal`` file every completed chunk is recorded with its
outputs' sizes and hashes, so a run started again after a crash skips the chunks whose
outputs are still there unchanged and does only the rest.

The stages render, refine and comp run their frames through :func:`farm_out`, which takes
the ``[farm]`` settings, runs in this process when there is nothing to spread (the local
executor with one worker), and calls back in this process as each frame is complete, so
the stage records it at once (its ledger: resuming after ``kill -9`` still works).

Training and simulation are not farmed out this way: see ``docs/robustness.md``.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import json
import math
import multiprocessing
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

from splatfx.core.atomic import write_text_atomic
from splatfx.core.errors import SplatfxError
from splatfx.shot.manifest import hash_file
from splatfx.core.progress import make_progress, track

if TYPE_CHECKING:
    from splatfx.shot.config import FarmSection
    from splatfx.shot.folder import Shot

PathLike = str | os.PathLike[str]
Output = Union["FrameOutput", Sequence[PathLike], None]
#: ``work_fn(frame)``, or with ``per_chunk`` ``work_fn(frames)`` giving ``(frame, output)`` pairs.
WorkFn = Callable[[Any], Any]
ChunkFn = Callable[[tuple[int, ...]], Iterable[tuple[int, Output]] | Mapping[int, Output]]
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


@dataclass(frozen=True)
class FrameOutput:
    """What a work function did for one frame: the ``paths`` it wrote and ``info`` about the
    frame (figures, provenance: plain, picklable data) for the driver to record."""

    paths: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, output: Output) -> FrameOutput:
        """A work function's return value (a FrameOutput, paths, or None) as a FrameOutput."""
        if isinstance(output, FrameOutput):
            return cls(tuple(os.fspath(p) for p in output.paths), output.info)
        return cls(tuple(os.fspath(p) for p in (output or ())))


@dataclass
class FarmResult:
    """What :func:`run_frames` did.

    ``outputs``: frame → paths its work function wrote (skipped chunks: as recorded);
    ``info``: frame → the ``info`` of its :class:`FrameOutput` (empty for bare paths);
    ``ran``/``skipped``: chunk labels run now / skipped as already complete;
    ``attempts``: chunk label → how many times it was started in this run.
    """

    outputs: dict[int, list[str]] = field(default_factory=dict)
    info: dict[int, dict[str, Any]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0  # processes or chunks in flight
    chunk_size: int = 0

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


def run_chunk(work_fn: WorkFn, frames: Sequence[int], per_chunk: bool = False) -> dict[int, FrameOutput]:
    """Run ``work_fn`` on a chunk (in the worker): on each frame in turn, or with
    ``per_chunk`` once on all of them; frame → what it wrote. Every frame must be answered."""
    frames = tuple(frames)
    if per_chunk:
        pairs = work_fn(frames)
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
    else:
        items = ((frame, work_fn(frame)) for frame in frames)
    done = {int(frame): FrameOutput.of(output) for frame, output in items}
    if sorted(done) != sorted(frames):
        raise FarmError(f"the work function answered frames {sorted(done)} for chunk {Chunk(frames).label}")
    return done


def chunk_length(total: int, slots: int, chunk_size: int | None, multiple: int = 1) -> int:
    """Frames per chunk: ``chunk_size`` (default: about four chunks per slot), rounded up to a
    multiple of ``multiple`` (e.g. refine's batch, so chunks hold whole model batches)."""
    if multiple < 1:
        raise ValueError(f"chunk multiple must be at least 1, got {multiple}")
    size = chunk_size if chunk_size is not None else max(1, math.ceil(total / (4 * slots)))
    return -(-size // multiple) * multiple


def run_frames(frames: Iterable[int], work_fn: WorkFn, *, executor: Executor = "local",
               chunk_size: int | None = None, workers: int | None = None, ray_address: str | None = None,
               retries: int = 2, journal: PathLike | None = None, job_key: str = "",
               description: str = "frames", per_chunk: bool = False, chunk_multiple: int = 1,
               on_chunk: Callable[[Chunk, dict[int, FrameOutput]], None] | None = None) -> FarmResult:
    """Compute ``work_fn(frame)`` for every frame, in chunks, on a process pool or a Ray cluster.

    ``chunk_size``: frames per chunk (default: about four chunks per worker), rounded up to
    a multiple of ``chunk_multiple``. ``workers``: processes (local; default: the CPU count)
    or chunks in flight (Ray; default: the cluster's CPUs). ``per_chunk``: ``work_fn`` takes
    a chunk's frames (see the module doc). ``retries``: extra attempts for a failed chunk.
    ``journal``: a JSON file recording completed chunks, for resuming; ``job_key`` identifies
    the job's settings, and a journal written for another key is ignored. ``on_chunk(chunk,
    outputs)`` is called here as each chunk completes. Raises :class:`FarmError` naming every
    chunk that failed all its attempts, after the others have finished and been recorded.
    """
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")
    started = time.perf_counter()
    frame_list = sorted(set(int(f) for f in frames))
    backend = _make_backend(executor, workers, ray_address)
    try:
        size = chunk_length(len(frame_list), backend.slots, chunk_size, chunk_multiple)
        chunks = make_chunks(frame_list, size)
        book = Journal.open(journal, job_key)
        result = FarmResult(workers=backend.slots, chunk_size=size)
        todo = []
        for chunk in chunks:
            recorded = book.completed(chunk)
            if recorded is None:
                todo.append(chunk)
            else:
                result.skipped.append(chunk.label)
                _collect(result, recorded)
        failures = _dispatch(backend, partial_chunk(work_fn, per_chunk), todo, retries, book, result,
                             len(frame_list), description, on_chunk)
    finally:
        backend.close()
    result.seconds = time.perf_counter() - started
    if failures:
        listed = "; ".join(f"{label}: {error}" for label, error in failures.items())
        raise FarmError(f"{len(failures)} of {len(chunks)} chunks failed after {retries + 1} attempts ({listed})")
    return result


def partial_chunk(work_fn: WorkFn, per_chunk: bool) -> _RunChunk:
    """What a worker runs for one chunk: :func:`run_chunk` with ``work_fn`` (picklable)."""
    return functools.partial(run_chunk, work_fn, per_chunk=per_chunk)


def _collect(result: FarmResult, outputs: dict[int, FrameOutput]) -> None:
    for frame, output in outputs.items():
        result.outputs[frame] = list(output.paths)
        result.info[frame] = output.info


def _dispatch(backend: _Backend, chunk_fn: _RunChunk, todo: list[Chunk],
              retries: int, book: Journal, result: FarmResult, total_frames: int, description: str,
              on_chunk: Callable[[Chunk, dict[int, FrameOutput]], None] | None) -> dict[str, str]:
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
                backend.submit(chunk_fn, chunk)
            for chunk, outputs, error in backend.wait():
                if error is None:
                    book.record(chunk, outputs)
                    result.ran.append(chunk.label)
                    _collect(result, outputs)
                    if on_chunk is not None:
                        on_chunk(chunk, outputs)
                    progress.advance(bar, len(chunk.frames))
                elif result.attempts[chunk.label] <= retries:
                    queue.append(chunk)
                else:
                    failures[chunk.label] = error
            speed = progress.tasks[0].speed
            if speed:
                progress.update(bar, rate=f"{speed:.2f}/s")
    return failures


# --- stages on the farm ----------------------------------------------------------------------------

def runs_in_process(settings: FarmSection, frames: int, multiple: int = 1) -> bool:
    """True when ``settings`` leave nothing to spread out: the local executor with one worker
    (the default), or with every frame in one chunk."""
    if settings.executor != "local":
        return False
    if settings.workers is None or settings.workers == 1:
        return True
    return settings.chunk_size is not None and frames <= chunk_length(frames, settings.workers,
                                                                       settings.chunk_size, multiple)


def farm_out(frames: Iterable[int], work_fn: ChunkFn, settings: FarmSection,
             on_frame: Callable[[int, FrameOutput], None], *, description: str,
             chunk_multiple: int = 1, progress: bool = True) -> dict[str, Any]:
    """Run a stage's per-chunk ``work_fn`` over ``frames`` as the ``[farm]`` ``settings`` say,
    calling ``on_frame(frame, output)`` in this process as each frame is complete; returns
    figures of how it ran (for the manifest).

    When :func:`runs_in_process`, ``work_fn`` runs here on one chunk of every frame and each
    frame is reported as it comes; otherwise through :func:`run_frames` (``per_chunk``,
    ``work_fn`` picklable), frames reported chunk by chunk. ``chunk_multiple``: chunk sizes
    are rounded up to a multiple of it. ``progress``: show a bar when running here.
    A stage's ``work_fn`` writes the same bytes either way.
    """
    frame_list = sorted({int(f) for f in frames})
    if not frame_list:
        return {"executor": "none", "frames": 0}
    started = time.perf_counter()
    if runs_in_process(settings, len(frame_list), chunk_multiple):
        pairs = work_fn(tuple(frame_list))
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        seen = set()
        for frame, output in track(items, description, total=len(frame_list)) if progress else items:
            on_frame(int(frame), FrameOutput.of(output))
            seen.add(int(frame))
        if seen != set(frame_list):
            raise FarmError(f"the work function answered {len(seen)} of {len(frame_list)} frames")
        return {"executor": "in-process", "frames": len(frame_list), "seconds": round(time.perf_counter() - started, 3)}

    def chunk_done(chunk: Chunk, outputs: dict[int, FrameOutput]) -> None:
        for frame in chunk.frames:
            on_frame(frame, outputs[frame])

    result = run_frames(frame_list, work_fn, executor=settings.executor, chunk_size=settings.chunk_size,
                        workers=settings.workers, ray_address=settings.ray_address, description=description,
                        per_chunk=True, chunk_multiple=chunk_multiple, on_chunk=chunk_done)
    return {"executor": settings.executor, "frames": len(frame_list), "workers": result.workers,
            "chunk_size": result.chunk_size, "chunks": len(result.ran), "retried": result.retried,
            "seconds": round(result.seconds, 3)}


def with_farm(shot: Shot, executor: str | None = None, ray_address: str | None = None,
              chunk_size: int | None = None, workers: int | None = None) -> Shot:
    """``shot`` with its ``[farm]`` settings overridden by the command-line flags given (not None)."""
    from splatfx.shot.config import override_table

    return shot.with_config(override_table(shot.config, "farm", "--executor/--ray-address/--chunk-size/--workers",
                                           executor=executor, ray_address=ray_address, chunk_size=chunk_size,
                                           workers=workers))


def for_workers(shot: Shot) -> Shot:
    """``shot`` with an absolute folder path, for a job sent to workers (Ray's run in other
    directories than this process)."""
    return type(shot)(Path(shot.root).resolve(), shot.config)


class ProcessCache:
    """One expensive value kept per process between the chunks it runs (a worker's animated
    scene, a loaded model), loaded again when its key changes. Keys are compared with ``==``:
    use strings, numbers and tuples of them (a path and its inputs' hashes or mtimes)."""

    def __init__(self) -> None:
        self._entry: tuple[Any, Any] | None = None

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        """The value for ``key``: the kept one, or ``load()`` (dropping the previous one first)."""
        if self._entry is None or self._entry[0] != key:
            self._entry = None
            self._entry = (key, load())
        return self._entry[1]

    def clear(self) -> None:
        """Forget the kept value (e.g. a driver that ran a stage in-process, to free memory)."""
        self._entry = None


def folder_stamp(path: PathLike) -> tuple[tuple[str, int, int], ...]:
    """(relative name, size, mtime_ns) of every file under ``path`` (or of ``path`` itself),
    sorted: a cheap :class:`ProcessCache` key that changes when the files do."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    stamps = []
    for file in files:
        st = file.stat()
        stamps.append((file.relative_to(root).as_posix() if file != root else file.name, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


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

    def completed(self, chunk: Chunk) -> dict[int, FrameOutput] | None:
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
        info = entry.get("info", {})
        return {int(frame): FrameOutput(tuple(paths), info.get(frame, {})) for frame, paths in entry["outputs"].items()}

    def record(self, chunk: Chunk, outputs: dict[int, FrameOutput]) -> None:
        """Record a completed chunk (and rewrite the journal atomically; ``info`` must be JSON)."""
        files = {}
        for output in outputs.values():
            for path in output.paths:
                st = os.stat(path)
                files[path] = [st.st_size, st.st_mtime_ns, hash_file(path)]
        self.chunks[chunk.label] = {"frames": list(chunk.frames),
                                    "outputs": {str(f): list(o.paths) for f, o in outputs.items()},
                                    "info": {str(f): o.info for f, o in outputs.items() if o.info}, "files": files}
        if self.path is not None:
            data = {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, "job_key": self.job_key,
                    "chunks": self.chunks}
            write_text_atomic(self.path, json.dumps(data, indent=1) + "\n")


# --- executors ------------------------------------------------------------------------------------

_RunChunk = Callable[[Sequence[int]], dict[int, FrameOutput]]  # what a worker runs for one chunk
Done = tuple[Chunk, dict[int, FrameOutput], str | None]  # chunk, outputs, error (None: success)


class _Backend(ABC):
    """Submits chunks and reports them as they finish; ``slots`` is how many may run at once."""

    slots: int
    pending: dict[Any, Chunk]

    @abstractmethod
    def submit(self, chunk_fn: _RunChunk, chunk: Chunk) -> None:
        """Start one attempt of ``chunk``: ``chunk_fn(frames)`` in a worker."""

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

    def submit(self, chunk_fn: _RunChunk, chunk: Chunk) -> None:
        self.pending[self.pool.submit(chunk_fn, chunk.frames)] = chunk

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
        self.task = ray.remote(max_retries=0)(_call)
        self.pending: dict[Any, Chunk] = {}

    def submit(self, chunk_fn: _RunChunk, chunk: Chunk) -> None:
        self.pending[self.task.remote(chunk_fn, chunk.frames)] = chunk

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


def _call(fn: Callable[[Sequence[int]], Any], frames: Sequence[int]) -> Any:
    """A Ray task's body: ``fn(frames)``."""
    return fn(frames)


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
