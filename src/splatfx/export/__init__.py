"""The shot in other tools: ``splatfx export SHOT --format FORMAT --out PATH [--frames A-B]``.

Each format is one row of :data:`EXPORTERS`: a name, a line of help, and the writer
(``"module:function"``, imported only when that format is asked for, so that ``pxr`` is
loaded only for USD). A writer takes an :class:`ExportRequest` and returns an
:class:`ExportResult`. To add a format, add a row (its writer may call the splat readers
and writers of :mod:`splatfx.io.formats`).

Everything is exported in the shot's **world frame** (:mod:`splatfx.shot.scene_frame`:
z up, metres, ground at z = 0), see :mod:`splatfx.export.world`.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from splatfx.core.errors import ConfigError, OutputError
from splatfx.shot.config import FrameRange
from splatfx.shot.folder import Shot

#: Sensor width (mm) the cameras' focal lengths and apertures are given for, unless asked otherwise.
DEFAULT_SENSOR_WIDTH_MM = 36.0


@dataclass(frozen=True)
class ExportRequest:
    """What to export: the shot, where to (a file or a folder, as the format says), which
    frames (within the shot's) and the sensor width that turns pixel focal lengths into mm."""

    shot: Shot
    out: Path
    frames: FrameRange
    sensor_width_mm: float = DEFAULT_SENSOR_WIDTH_MM


@dataclass
class ExportResult:
    """The files written and a one-line summary for the console."""

    files: list[Path]
    summary: str
    figures: dict = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files if p.is_file())


@dataclass(frozen=True)
class ExportFormat:
    """One ``--format``: its name, what it writes, and its writer as ``"module:function"``."""

    name: str
    help: str
    writer: str

    def load(self) -> Callable[[ExportRequest], ExportResult]:
        module, _, function = self.writer.partition(":")
        return getattr(importlib.import_module(module), function)


#: ``--format`` name -> format. Extend by adding rows.
EXPORTERS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("usd", "one OpenUSD stage (.usdc, .usda or .usdz by --out's suffix; a folder: SHOT.usdc): "
                        "scene, fragments, particles and cameras, time-sampled",
                 "splatfx.export.usd:export_usd"),
    ExportFormat("ply-seq", "one 3DGS PLY (INRIA layout) per frame of the whole animated scene, "
                            "in the folder --out: SHOT.####.ply",
                 "splatfx.export.plyseq:export_ply_sequence"),
    ExportFormat("chan", "the render camera as a Nuke .chan (--out, or SHOT.chan in a folder) and a .nk "
                         "script beside it that reads the plates and passes and rebuilds the comp",
                 "splatfx.export.nuke:export_nuke"),
    ExportFormat("spz", "Niantic .spz v3 (--out x.spz: the static scene, or the one frame --frames names; "
                        "a folder: SHOT.####.spz per frame), upright for splat viewers",
                 "splatfx.export.splats:export_spz"),
    ExportFormat("sog", "PlayCanvas SOG bundle (--out x.sog: the static scene, or the one frame --frames names; "
                        "a folder: SHOT.####.sog per frame), upright for splat viewers",
                 "splatfx.export.splats:export_sog"),
)}


def export_frames(shot: Shot, frames: str | FrameRange | None) -> FrameRange:
    """The frames to export: all of the shot's, or ``frames`` (``"A-B"``) when inside them."""
    whole = shot.frames
    if frames is None:
        return whole
    try:
        wanted = frames if isinstance(frames, FrameRange) else FrameRange.parse(frames)
    except ValueError as exc:
        raise ConfigError("--frames", str(exc)) from None
    if wanted.start not in whole or wanted.end not in whole:
        raise ConfigError("--frames", f"{wanted} is outside the shot's frames {whole}")
    return wanted


def export_shot(shot: Shot, format: str, out: str | os.PathLike[str], frames: str | FrameRange | None = None,
                sensor_width_mm: float = DEFAULT_SENSOR_WIDTH_MM) -> ExportResult:
    """Export ``shot`` as ``format`` (a key of :data:`EXPORTERS`) to ``out``."""
    if format not in EXPORTERS:
        raise ConfigError("--format", f"unknown format {format!r}; expected one of {', '.join(EXPORTERS)}")
    if not sensor_width_mm > 0:
        raise ConfigError("--sensor-width", f"must be positive, got {sensor_width_mm}")
    request = ExportRequest(shot, Path(out), export_frames(shot, frames), float(sensor_width_mm))
    check_writable(request.out)
    return EXPORTERS[format].load()(request)


def check_writable(out: Path) -> None:
    """OutputError (one line naming ``out``) unless ``out`` can be written or created: its
    nearest existing ancestor must be a folder we may write in (or ``out`` a writable file)."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != out and not existing.is_dir():
        raise OutputError(out, f"cannot write: {existing} is not a folder")
    folder = existing if existing.is_dir() else existing.parent
    if not os.access(folder, os.W_OK | os.X_OK) or (existing.is_file() and not os.access(existing, os.W_OK)):
        raise OutputError(out, f"cannot write: no permission to write in {folder}")
    try:  # what access() cannot tell: read-only or pseudo file systems
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(out, f"cannot write in {folder}: {exc.strerror or exc}") from None
