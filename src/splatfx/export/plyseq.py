"""The animated shot as a PLY sequence: one standard 3DGS PLY (INRIA layout, written by
:mod:`splatfx.io.formats.ply`) per frame, ``<shot>.####.ply``, holding every Gaussian the
render draws on that frame (``ShotAnimation.at``), in the world frame (z up, metres). For
Blender (KIRI 3DGS add-on), Houdini, Unreal and Arnold, which read a PLY per frame.

Extras are dropped (the INRIA layout only), and so are Gaussians the frame hides, so the
count changes from frame to frame: a sequence, not a fixed topology.
"""

from __future__ import annotations

import time
from pathlib import Path

from splatfx.core.errors import ConfigError
from splatfx.export import ExportRequest, ExportResult
from splatfx.export.world import frame_index, gaussians_to_world, load_shot_animation, world_similarity
from splatfx.io.formats import GaussianArrays
from splatfx.io.formats.ply import write_arrays


def sequence_path(folder: Path, shot_name: str, frame: int) -> Path:
    """``folder/<shot>.<frame:04d>.ply``."""
    return folder / f"{shot_name}.{frame:04d}.ply"


def export_ply_sequence(request: ExportRequest) -> ExportResult:
    """Write one PLY per frame into the folder ``--out`` (``--format ply-seq``)."""
    started = time.perf_counter()
    shot, folder = request.shot, request.out
    if folder.suffix.lower() == ".ply" or (folder.exists() and not folder.is_dir()):
        raise ConfigError("--out", f"{folder}: ply-seq writes a folder of PLY files; give a folder")
    world, _ = world_similarity(shot)
    animation = load_shot_animation(shot)
    files, most = [], 0
    for frame in request.frames:
        g = gaussians_to_world(animation.at(frame_index(shot, frame)).gaussians, world)
        arrays = GaussianArrays.from_gaussians(g)
        arrays.extras = {}
        path = sequence_path(folder, shot.name, frame)
        write_arrays(arrays, path)
        files.append(path)
        most = max(most, len(g))
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in files)
    return ExportResult(files, f"wrote {len(files)} PLY files to {folder} ({size / 1e6:.1f} MB, up to {most} "
                               f"Gaussians per frame) in {seconds:.1f} s",
                        {"frames": len(files), "gaussians_max": most, "seconds": round(seconds, 3), "bytes": size})
