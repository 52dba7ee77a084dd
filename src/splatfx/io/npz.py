"""The one checked reader of the shot's ``.npz`` array files (``fx/selection.npz``,
``fx/collapse.npz``, ``fx/snow.npz``).

A missing, truncated or corrupt file, a missing array or an array of the wrong shape or
kind is an :class:`~splatfx.core.errors.InputError` that names the file and the problem,
never a ``BadZipFile`` or ``IndexError`` from deep inside a stage. Arrays are read
eagerly (a lazily read member could still fail later) and never as pickles.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping

import numpy as np

from splatfx.core.errors import InputError

PathLike = str | os.PathLike[str]

#: What a damaged archive raises inside numpy/zipfile while it is read.
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, MemoryError)


def read_npz(path: PathLike, required: Iterable[str] = (), hint: str = "") -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file at ``path``, checked to hold ``required``.

    ``hint`` says how to make the file again (e.g. "run `splatfx fx select` first"); it
    ends the message of every error.
    """
    advice = f" ({hint})" if hint else ""
    if not os.path.isfile(path):
        raise InputError(path, f"does not exist{advice}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # np.load reads a bare .npy as an array
            raise ValueError("a bare .npy array, not an .npz archive")
        with data:
            arrays = {name: np.asarray(data[name]) for name in data.files}
    except _READ_ERRORS as exc:
        raise InputError(path, f"unreadable: {_reason(exc)}{advice}") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise InputError(path, f"has no {', '.join(missing)} array{'s' if len(missing) > 1 else ''}{advice}")
    return arrays


def check_shapes(path: PathLike, arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int | str, ...]],
                 sizes: Mapping[str, int] | None = None, hint: str = "") -> dict[str, int]:
    """Check each named array's shape against a pattern of ints and named sizes.

    A named size (``"T"``, ``"F"`` …) must be the same wherever it appears and agree with
    ``sizes`` where given there. Returns every named size. Arrays absent from ``arrays``
    are skipped (:func:`read_npz` checks presence).
    """
    advice = f" ({hint})" if hint else ""
    bound = dict(sizes or {})
    for name, pattern in shapes.items():
        if name not in arrays:
            continue
        shape = arrays[name].shape
        ok = len(shape) == len(pattern)
        for dim, want in zip(shape, pattern):
            if not ok:
                break
            if isinstance(want, str):
                ok = bound.setdefault(want, dim) == dim
            else:
                ok = dim == want
        if not ok:
            wanted = "(" + ", ".join(str(bound.get(w, w)) if isinstance(w, str) else str(w) for w in pattern) + ")"
            raise InputError(path, f"array {name} has shape {shape}, expected {wanted}{advice}")
    return bound


def check_indices(path: PathLike, name: str, values: np.ndarray, count: int | None, what: str, hint: str = "",
                  allow_empty: bool = False, unique: bool = False) -> np.ndarray:
    """``values`` as int64 after checking they are a 1-D integer array of indices into
    ``count`` items (``what`` names the items, e.g. "scene Gaussians"; None: any count)."""
    advice = f" ({hint})" if hint else ""
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype.kind not in "iu":
        raise InputError(path, f"array {name} must be a 1-D array of integers, got {values.dtype} {values.shape}{advice}")
    if not len(values) and not allow_empty:
        raise InputError(path, f"array {name} is empty{advice}")
    outside = (values < 0) if count is None else (values < 0) | (values >= count)
    if outside.any():
        where = f"the {count} {what}" if count is not None else f"the {what}"
        raise InputError(path, f"array {name} holds index {values[outside][0]}, outside {where}{advice}")
    if unique and len(np.unique(values)) != len(values):
        raise InputError(path, f"array {name} repeats indices{advice}")
    return values.astype(np.int64, copy=False)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, zipfile.BadZipFile):
        return f"truncated or not an .npz archive ({exc})"
    if isinstance(exc, MemoryError):
        return "an array is larger than the memory available (a damaged header?)"
    return f"damaged ({type(exc).__name__}: {exc})" if str(exc) else f"damaged ({type(exc).__name__})"
