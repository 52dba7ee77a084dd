"""Running a stage: skip it when nothing changed, otherwise run it and record the run.

Every stage (solve, train, fx, render, refine, comp) calls :func:`run_stage` with its
config, its input and output paths and a function doing the work::

    result = run_stage(shot, "train", shot.config.train,
                       inputs={"plates": shot.plate_files(), "solve": shot.solve_dir},
                       outputs=[shot.scene_dir / "scene.ply"],
                       fn=lambda: train(...), force=force)

The inputs are hashed and compared with the stage's last run in ``manifest.json``; an
unchanged stage prints "up to date" and returns without calling ``fn``. Otherwise the
run is recorded as ``running``, ``fn`` is called, and the record is completed with its
status, timings, versions, seed, config, the outputs' hashes and, when ``fn`` returns
a mapping, those figures (e.g. PSNR, Gaussian count). ``fn`` uses ``seed`` itself.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, is_dataclass
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.markup import escape

from splatfx.shot.config import config_to_dict
from splatfx.core.errors import SplatfxError
from splatfx.shot.manifest import HashCache, Manifest, RunRecord, fingerprint, record_run, stale_reason
from splatfx.shot.folder import Shot

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
    seed = shot.config.shot.seed if seed is None else seed
    cache = HashCache(shot.state_dir / "hashes.json")
    input_prints = {label: fingerprint(paths, cache) for label, paths in _labelled(shot, inputs).items()}
    output_paths = {shot.relative(p): p for p in outputs}
    plain_config = _plain(config)
    last = Manifest.load(shot.manifest_path).last(name)
    reason = "forced" if force else stale_reason(
        last, input_prints, plain_config, seed, lambda: _current(output_paths, cache))
    cache.save()
    if reason is None:
        _console.print(f"[bold]{escape(name)}[/]: up to date (last run finished {last.finished})")
        return StageResult(name, ran=False, reason="up to date", record=last)

    _console.print(f"[bold]{escape(name)}[/]: running ({escape(reason)})")
    record = RunRecord(id=f"{name}-{uuid.uuid4().hex[:12]}", stage=name, status="running", started=_now(),
                       inputs=input_prints, config=plain_config, seed=seed, versions=package_versions())
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
