"""Running a stage: skip it when nothing changed, otherwise run it and record the run.

Every stage (solve, train, fx, render, refine, comp) calls :func:`run_stage` with its
config, its input and output paths and a function doing the work::

    result = run_stage(shot, "train", shot.config.train,
                       inputs={"plates": shot.plate_files(), "solve": shot.solve_dir},
                       outputs=[shot.scene_ply],
                       fn=lambda: train(...), force=force)

The inputs are hashed and compared with the stage's last run in ``manifest.json``; an
unchanged stage prints "up to date" and returns without calling ``fn``. Otherwise the
run is recorded as ``running``, ``fn`` is called, and the record is completed with its
status, timings, versions, seed, config, the outputs' hashes and, when ``fn`` returns
a mapping, those figures (e.g. PSNR, Gaussian count). ``fn`` uses ``seed`` itself.

A stage that makes one output per frame (render, comp) also keeps a :class:`FrameLedger`,
so a rerun redoes only the frames whose inputs changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from splatfx.core.atomic import write_text_atomic
from splatfx.shot.config import config_to_dict
from splatfx.core.errors import OutputError, SplatfxError
from splatfx.shot.manifest import HashCache, Manifest, RunRecord, fingerprint, record_run, stale_reason
from splatfx.shot.folder import PROXY_MARK, Shot

PathLike = str | os.PathLike[str]
Inputs = Sequence[PathLike] | Mapping[str, PathLike | Sequence[PathLike]]

#: Packages whose versions every run records.
VERSIONED_PACKAGES = ("splatfx", "torch", "numpy", "numba")

_console = Console(stderr=True, highlight=False)


class StageError(SplatfxError):
    """A stage finished without producing what it promised."""


@dataclass
class StageResult:
    """What :func:`run_stage` did: ``ran`` (False: skipped as up to date), why, the record,
    and ``fn``'s return value when it ran."""

    stage: str
    ran: bool
    reason: str
    record: RunRecord | None
    value: Any = None


def run_stage(shot: Shot, name: str, config: Any, inputs: Inputs, outputs: Sequence[PathLike],
              fn: Callable[[], Any], force: bool = False, seed: int | None = None) -> StageResult:
    """Run ``fn`` as stage ``name`` unless its last run is up to date (see the module doc).

    ``config``: the stage's settings (a shot.toml table dataclass or a plain mapping).
    ``inputs``: paths (files or folders), or a mapping label → path or list of paths.
    ``outputs``: files or folders ``fn`` must write. ``seed`` defaults to ``[shot] seed``.
    A failure (any exception, Ctrl-C included) is recorded as ``failed`` and re-raised.
    """
    with stage_lock(shot, name):
        return _run_locked(shot, name, config, inputs, outputs, fn, force, seed)


def _run_locked(shot: Shot, name: str, config: Any, inputs: Inputs, outputs: Sequence[PathLike],
                fn: Callable[[], Any], force: bool, seed: int | None) -> StageResult:
    seed = shot.config.shot.seed if seed is None else seed
    cache = HashCache(shot.state_dir / "hashes.json")
    labelled = _labelled(shot, inputs)
    input_prints = {label: fingerprint(paths, cache) for label, paths in labelled.items()}
    output_paths = {shot.relative(p): p for p in outputs}
    plain_config = _plain(config)
    manifest = Manifest.load(shot.manifest_path)
    upstream = upstream_runs(shot, manifest, name, labelled)
    last = manifest.last(name)
    reason = "forced" if force else stale_reason(
        last, input_prints, plain_config, seed, lambda: _current(output_paths, cache))
    cache.save()
    if reason is None:
        if last.upstream != upstream:  # the stages it reads ran again and wrote the same bytes
            last.upstream = upstream
            record_run(shot.manifest_path, last)
        _console.print(f"[bold]{escape(name)}[/]: up to date (last run finished {last.finished})")
        return StageResult(name, ran=False, reason="up to date", record=last)

    _console.print(f"[bold]{escape(name)}[/]: running ({escape(reason)})")
    remove_leftover_temporaries(outputs)
    record = RunRecord(id=f"{name}-{uuid.uuid4().hex[:12]}", stage=name, status="running", started=_now(),
                       inputs=input_prints, config=plain_config, seed=seed, versions=package_versions(),
                       upstream=upstream)
    record_run(shot.manifest_path, record)
    t0 = time.perf_counter()
    try:
        value = fn()
        record.outputs = _output_prints(output_paths, cache)
    except BaseException as exc:
        record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
        _finish(record, t0)
        with contextlib.suppress(OSError):  # the original error matters more than the record
            record_run(shot.manifest_path, record)
            cache.save()
        _console.print(f"[bold]{escape(name)}[/]: [red]failed[/] after {record.seconds:.1f} s")
        raise
    record.status = "ok"
    record.figures = dict(value) if isinstance(value, Mapping) else {}
    _finish(record, t0)
    record_run(shot.manifest_path, record)
    cache.save()
    _console.print(f"[bold]{escape(name)}[/]: done in {record.seconds:.1f} s")
    return StageResult(name, ran=True, reason=reason, record=record, value=value)


# --- one run of a stage at a time ------------------------------------------------------------------
@contextlib.contextmanager
def stage_lock(shot: Shot, name: str) -> Iterator[None]:
    """Hold ``.splatfx/locks/<stage>.lock`` while the stage runs; StageError when another
    process holds it (two runs of one stage on one shot would write the same files)."""
    try:
        import fcntl
    except ImportError:  # Windows: single-user runs only
        yield
        return
    path = shot.state_dir / "locks" / f"{name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:  # a read-only or full shot folder: no stage can write there either
        raise OutputError(shot.root, f"cannot write: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise StageError(f"{shot.root}: another splatfx process (pid {holder}) is running {name} on this "
                             "shot; wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remove_leftover_temporaries(outputs: Sequence[PathLike]) -> list[Path]:
    """Delete the temporary files a killed run of this stage left beside its outputs (the
    ``.<name>.tmp.*`` files of :mod:`splatfx.core.atomic`). Safe under :func:`stage_lock`:
    no other run of the stage is writing them."""
    removed: list[Path] = []
    for output in map(Path, outputs):
        if output.is_dir():
            found = [p for p in output.rglob(".*.tmp.*") if p.is_file()]
        else:
            found = [p for p in output.parent.glob(f".{output.name}.tmp.*") if p.is_file()]
        for leftover in found:
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed.append(leftover)
    if removed:
        _console.print(f"removed {len(removed)} temporary file(s) left by an interrupted run")
    return removed


# --- what a stage reads from other stages ---------------------------------------------------------
#: The command that reruns a stage, for messages.
_COMMANDS = {"orient": "solve", "fx.select": "fx select", "fx.collapse": "fx collapse", "fx.snow": "fx snow",
             "refine-train": "refine --train"}


def _command(stage: str, shot: Shot) -> str:
    """The command line that reruns ``stage`` (``render@proxy-0.5``: ``render SHOT --proxy 0.5``)."""
    base, _, proxy = stage.partition(PROXY_MARK)
    return f"{_COMMANDS.get(base, base)} {shot.root}" + (f" --proxy {proxy}" if proxy else "")


def upstream_runs(shot: Shot, manifest: Manifest, name: str,
                  inputs: Mapping[str, PathLike | Sequence[PathLike]]) -> dict[str, str]:
    """The latest run id of every other stage whose outputs are among ``inputs`` (recorded with
    the run, so that a later stage can tell whether this one is behind its own inputs).

    StageError when one of those stages failed or did not finish in its last run, or is itself
    older than a stage it reads from: the inputs on disk are then not what the shot's settings
    make, and running on them would give stale frames.
    """
    producers = _producers(shot, manifest, name, inputs)
    runs: dict[str, str] = {}
    for stage in sorted(producers):
        last = manifest.last(stage)
        if last.status != "ok":
            state = "did not finish" if last.status == "running" else "failed"
            raise StageError(f"{shot.root}: {stage} {state} in its last run, so its outputs are not current; "
                             f"run `splatfx {_command(stage, shot)}` again before {name}")
        behind = _behind(manifest, last, set())
        if behind is not None:
            raise StageError(f"{shot.root}: {stage} is out of date ({behind} ran since it); run "
                             f"`splatfx {_command(stage, shot)}` (or `splatfx run`) before {name}")
        runs[stage] = last.id
    return runs


def _producers(shot: Shot, manifest: Manifest, name: str,
               inputs: Mapping[str, PathLike | Sequence[PathLike]]) -> set[str]:
    """Stages (other than ``name``) that wrote, in their last successful run, a file or folder
    that is, contains or lies inside one of ``inputs``."""
    wanted = [shot.relative(p) for paths in inputs.values()
              for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    written: dict[str, list[str]] = {}
    for record in manifest.runs:  # the latest successful run of each stage says what it writes
        if record.status == "ok" and record.outputs:
            written[record.stage] = list(record.outputs)
    return {stage for stage, labels in written.items() if stage != name
            and any(_overlap(a, b) for a in wanted for b in labels)}


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _behind(manifest: Manifest, record: RunRecord, seen: set[str]) -> str | None:
    """A stage that ran after ``record`` read its outputs, directly or further up, or None."""
    for stage, run in record.upstream.items():
        last = manifest.last(stage)
        if last is None or stage in seen:
            continue
        if last.id != run:
            return stage
        behind = _behind(manifest, last, seen | {stage})
        if behind is not None:
            return behind
    return None


def package_versions() -> dict[str, str]:
    """Python's and the key packages' versions (read from metadata: nothing is imported)."""
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _labelled(shot: Shot, inputs: Inputs) -> dict[str, PathLike | Sequence[PathLike]]:
    """Inputs keyed by label: given labels, or each path relative to the shot folder."""
    if isinstance(inputs, Mapping):
        return dict(inputs)
    return {shot.relative(p): p for p in inputs}


def _current(output_paths: Mapping[str, PathLike], cache: HashCache) -> dict[str, dict | None]:
    """Fingerprints of the outputs as they are now (None for a missing one)."""
    return {label: fingerprint(p, cache) if os.path.exists(p) else None
            for label, p in output_paths.items()}


def _output_prints(output_paths: Mapping[str, PathLike], cache: HashCache) -> dict[str, dict]:
    """Fingerprints of the outputs just written; StageError if one is missing."""
    missing = [label for label, p in output_paths.items() if not os.path.exists(p)]
    if missing:
        raise StageError(f"the stage finished without writing {', '.join(missing)}")
    return {label: fingerprint(p, cache) for label, p in output_paths.items()}


def _plain(config: Any) -> Any:
    if config is None:
        return None
    if is_dataclass(config) and not isinstance(config, type):
        return config_to_dict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a dataclass or a mapping, got {type(config).__name__}")


def _finish(record: RunRecord, t0: float) -> None:
    record.finished = _now()
    record.seconds = round(time.perf_counter() - t0, 3)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# --- per-frame bookkeeping ------------------------------------------------------------------------
def frame_key(**parts: Any) -> str:
    """A digest of everything that makes one frame's output (inputs, settings, camera …)."""
    text = json.dumps(parts, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    return hashlib.sha256(text.encode()).hexdigest()


class FrameLedger:
    """Per-frame records of a stage (``.splatfx/<stage>_frames.json``): the key of what made
    each frame and the sha256 of the files it wrote, so finished frames are not redone."""

    def __init__(self, shot: Shot, stage: str) -> None:
        self.shot = shot
        self.path = shot.state_dir / f"{stage}_frames.json"
        self.cache = HashCache(shot.state_dir / f"{stage}_hashes.json")
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.entries = dict(json.loads(self.path.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                self.entries = {}  # a damaged ledger only costs re-rendering

    def sha256(self, path: Path) -> str:
        return self.cache.sha256(path)[0]

    def entry(self, frame: int) -> dict:
        return self.entries[str(frame)]

    def is_current(self, frame: int, key: str, files: Sequence[Path]) -> bool:
        """True when ``frame`` was made with ``key`` and all its ``files`` are there, unchanged."""
        entry = self.entries.get(str(frame))
        if not files or entry is None or entry.get("key") != key:
            return False
        recorded = entry.get("files", {})
        return all(p.is_file() and recorded.get(self.shot.relative(p)) == self.sha256(p) for p in files)

    def record(self, frame: int, key: str, files: Sequence[Path], figures: dict | None = None) -> None:
        """Note that ``frame`` was made with ``key`` into ``files`` (saved at once)."""
        self.entries[str(frame)] = {"key": key, "files": {self.shot.relative(p): self.sha256(p) for p in files},
                                    "figures": figures or {}}
        self._save()

    def prune(self, frames: Sequence[int], files_of: Callable[[int], Sequence[Path]]) -> None:
        """Forget frames outside ``frames`` and delete the files they wrote."""
        keep = {str(f) for f in frames}
        for name in [k for k in self.entries if k not in keep]:
            for p in files_of(int(name)):
                p.unlink(missing_ok=True)
            del self.entries[name]
        self._save()

    def _save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.entries, indent=1, sort_keys=True))
        self.cache.save()
