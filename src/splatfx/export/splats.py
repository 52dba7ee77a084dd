"""The shot as compressed splat files for web viewers and engines: Niantic ``.spz`` (version 3)
and PlayCanvas ``.sog`` (``--format spz|sog``), written by :mod:`splatfx.io.formats`.

What is written: ``--out`` a file (``x.spz`` / ``x.sog``) holds the static reconstruction, or
the animated scene at one frame when ``--frames`` names one (``--frames 1040``); ``--out`` a
folder holds one file per frame of ``--frames`` (default: every frame), ``<shot>.####.spz``.

Frame: the world frame (metres, ground at z = 0, see :mod:`splatfx.export.world`) with its
axes named as the 3DGS PLY names them (x right, y down, z forward: ``(x, y, z)_world ->
(x, −z, y)``), the frame every splat viewer expects of a PLY, so that the scene stands upright
in SuperSplat, the PlayCanvas viewer, Scaniverse and Unreal; ``.spz`` then stores it in its
own RUB frame (y up) as the format requires.
"""

from __future__ import annotations

import time

import numpy as np

from splatfx.core.errors import ConfigError
from splatfx.core.gaussians import Gaussians
from splatfx.export import ExportRequest, ExportResult
from splatfx.export.world import RDF_TO_Z_UP, frame_index, gaussians_to_world, load_shot_animation, world_similarity
from splatfx.fx.animation import load_scene
from splatfx.io.formats import GaussianArrays, write_arrays

#: World (z up) to the PLY's axis names (y down): the inverse of the turn world.py applies.
Z_UP_TO_RDF = RDF_TO_Z_UP.T


def export_spz(request: ExportRequest) -> ExportResult:
    """``--format spz``: Niantic spz version 3 (gzip), RUB inside."""
    return _export(request, ".spz")


def export_sog(request: ExportRequest) -> ExportResult:
    """``--format sog``: a PlayCanvas SOG bundle (version 2)."""
    return _export(request, ".sog")


def _export(request: ExportRequest, suffix: str) -> ExportResult:
    started = time.perf_counter()
    shot, out = request.shot, request.out
    world, _ = world_similarity(shot)
    if out.suffix.lower() == suffix:
        if len(request.frames) == 1:
            frame = request.frames.start
            jobs = [(out, lambda: load_shot_animation(shot).at(frame_index(shot, frame)).gaussians, f"frame {frame}")]
        elif request.frames == shot.frames:
            jobs = [(out, lambda: load_scene(shot), "the static scene")]
        else:
            raise ConfigError("--frames", f"{out.name} holds one frame: give --frames with one frame, "
                                          f"or a folder as --out for {request.frames}")
    elif out.suffix and not out.is_dir():
        raise ConfigError("--out", f"{out}: --format {suffix[1:]} writes a {suffix} file or a folder")
    else:
        animation = load_shot_animation(shot)
        jobs = [(out / f"{shot.name}.{frame:04d}{suffix}",
                 (lambda f=frame: animation.at(frame_index(shot, f)).gaussians), f"frame {frame}")
                for frame in request.frames]
    files, most = [], 0
    for path, gaussians, _ in jobs:
        g = for_viewers(gaussians_to_world(gaussians(), world))
        arrays = GaussianArrays.from_gaussians(g)
        arrays.extras = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_arrays(arrays, path)
        files.append(path)
        most = max(most, len(g))
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in files)
    what = jobs[0][2] if len(jobs) == 1 else f"{len(files)} frames"
    return ExportResult(files, f"wrote {what} as {suffix} to {out} ({size / 1e6:.1f} MB, "
                               f"{most} Gaussians{' at most' if len(files) > 1 else ''}) in {seconds:.1f} s",
                        {"files": len(files), "gaussians_max": most, "seconds": round(seconds, 3), "bytes": size})


def for_viewers(world_gaussians: Gaussians) -> Gaussians:
    """World-frame Gaussians with the PLY's axis names (y down), as splat viewers expect."""
    return world_gaussians.transform(Z_UP_TO_RDF, np.zeros(3), 1.0)
