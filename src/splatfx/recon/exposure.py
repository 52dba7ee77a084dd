"""The per-plate exposure a training run learns (``[train] exposure``), as it is written to
``exposure.json`` beside the scene, and the exposure of a plate training did not see.

Each transform is a 3×4 affine colour matrix ``[M | b]`` that turns a render of the scene (at the
plates' mean exposure) into one plate's: ``rgb' = M·rgb + b``. A held-out plate has no transform
of its own; photographers' and cameras' auto-exposure changes slowly along a capture, so it gets
the transforms of the training plates on either side of it in the capture's order (its names
sorted with their numbers read as numbers: ``r_2`` before ``r_10``), weighted by how close each
stands. That uses where the plate stands in the capture, never its pixels.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from splatfx.core.atomic import write_text_atomic
from splatfx.core.errors import InputError

EXPOSURE_FILE = "exposure.json"
IDENTITY = np.eye(3, 4, dtype=np.float32)

Transforms = Mapping[str, np.ndarray]


def write_exposure(path: str | os.PathLike[str], transforms: Transforms) -> None:
    """``{"plate name": [[m00, m01, m02, b0], …]}``, written atomically."""
    table = {name: np.asarray(value, dtype=np.float64).tolist() for name, value in transforms.items()}
    write_text_atomic(path, json.dumps(table, indent=1) + "\n")


def read_exposure(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The transforms of ``exposure.json`` by plate name; a clear error for a broken file."""
    try:
        table = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InputError(path, f"cannot read the per-plate exposure: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"is not a JSON table of per-plate exposure transforms ({exc})") from None
    if not isinstance(table, dict):
        raise InputError(path, "must hold a table of plate name -> 3x4 colour transform")
    transforms = {}
    for name, value in table.items():
        try:
            matrix = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            matrix = None
        if matrix is None or matrix.shape != (3, 4) or not np.all(np.isfinite(matrix)):
            raise InputError(path, f"the exposure of {name!r} is not a finite 3x4 colour transform")
        transforms[str(name)] = matrix
    return transforms


def exposure_for(name: str, transforms: Transforms, order: Sequence[str] = ()) -> np.ndarray:
    """The 3×4 transform of plate ``name``: its own when training learnt one; else the transforms
    of the nearest learnt plates before and after it in the capture's order, interpolated by
    position (the one neighbour at an end; the identity when nothing was learnt).

    ``order`` names every plate of the capture, learnt or not; positions are counted among them
    in capture order (:func:`capture_order`), so a plate three plates after one neighbour and
    one before the other leans to the latter."""
    if name in transforms:
        return np.asarray(transforms[name], dtype=np.float32)
    if not transforms:
        return IDENTITY.copy()
    position = {plate: i for i, plate in enumerate(capture_order(set(order) | set(transforms) | {name}))}
    learnt = sorted(transforms, key=position.__getitem__)
    here = position[name]
    after = bisect.bisect([position[plate] for plate in learnt], here)
    before_name = learnt[after - 1] if after > 0 else None
    after_name = learnt[after] if after < len(learnt) else None
    if before_name is None or after_name is None:
        return np.asarray(transforms[before_name or after_name], dtype=np.float32)
    weight = (here - position[before_name]) / (position[after_name] - position[before_name])
    blended = (1.0 - weight) * transforms[before_name] + weight * transforms[after_name]
    return np.asarray(blended, dtype=np.float32)


def capture_order(names: Iterable[str]) -> list[str]:
    """``names`` sorted as a capture numbers its plates: digit runs compared as numbers."""
    return sorted(names, key=lambda name: [(0, int(part), "") if part.isdigit() else (1, 0, part)
                                           for part in re.split(r"(\d+)", name) if part])


def apply_exposure(image: Tensor, transform: Tensor) -> Tensor:
    """``image`` (H, W, 3) through one plate's transform (3, 4): ``M·rgb + b``."""
    return image @ transform[:, :3].T + transform[:, 3]


def exposure_beside(scene_path: str | os.PathLike[str], plates: Iterable[str]) -> dict[str, np.ndarray] | None:
    """The transforms training wrote beside a scene (``exposure.json`` in its folder) for a capture
    whose plates are named ``plates``; None when there is none, or when it names none of those
    plates (a scene shown on another capture: its plates' exposures say nothing there)."""
    path = Path(scene_path).parent / EXPOSURE_FILE
    if not path.is_file():
        return None
    transforms = read_exposure(path)
    return transforms if set(transforms) & set(plates) else None
