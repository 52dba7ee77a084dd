"""The ``.splat`` web format: 32 bytes per Gaussian, no header.

Record (little-endian): position 3×float32, scale 3×float32 (the actual scale,
``exp(log_scale)``), colour RGBA 4×uint8 (``rgb = 0.5 + SH_C0·f_dc`` clamped to [0,1],
``a = sigmoid(opacity)``), rotation 4×uint8 wxyz (``q/|q|·128 + 128``).

Lossy by nature: SH degrees above 0 and extras are dropped, colour and opacity have 8
bits, rotations about 1° of precision (see docs/formats.md for the bounds). The encoder
is idempotent: writing what was read from a ``.splat`` reproduces it byte for byte.
Gaussians are written in their given order (no sorting by size).
"""

from __future__ import annotations

import os

import numpy as np

from splatfx.core.atomic import write_bytes_atomic
from splatfx.core.errors import InputError, require_file
from splatfx.io.formats import GaussianArrays, opacity_logits_from_u8, opacity_logits_to_u8, quantize_u8
from splatfx.core.sh import SH_C0

RECORD = np.dtype([("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)), ("rotation", "u1", (4,))])
assert RECORD.itemsize == 32


def decode(data: bytes | np.ndarray, source: str | os.PathLike[str] = "splat") -> GaussianArrays:
    """Arrays from ``.splat`` bytes; rotations decode to ``(b−128)/128`` (not renormalised)."""
    buffer = memoryview(data).cast("B") if not isinstance(data, np.ndarray) else data
    if len(buffer) % RECORD.itemsize:
        raise InputError(
            source, f".splat size {len(buffer)} is not a multiple of {RECORD.itemsize} bytes (truncated or not a .splat)"
        )
    records = np.frombuffer(buffer, dtype=RECORD)
    n = len(records)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_scales = np.log(records["scale"].astype(np.float64)).astype(np.float32)
    rgba = records["rgba"]
    sh = np.zeros((n, 1, 3), dtype=np.float32)
    sh[:, 0, :] = ((rgba[:, :3].astype(np.float64) / 255.0 - 0.5) / SH_C0).astype(np.float32)
    return GaussianArrays(
        means=records["position"].astype(np.float32),
        quats=((records["rotation"].astype(np.float32) - 128.0) / 128.0),
        log_scales=log_scales,
        opacity_logits=opacity_logits_from_u8(rgba[:, 3]),
        sh=sh,
    )


def encode(arrays: GaussianArrays) -> bytes:
    """``.splat`` bytes for arrays (SH beyond DC and extras are dropped)."""
    n = len(arrays)
    records = np.zeros(n, dtype=RECORD)
    records["position"] = arrays.means
    records["scale"] = exp_scales(arrays.log_scales)
    rgb = np.clip(0.5 + SH_C0 * arrays.sh[:, 0, :].astype(np.float64), 0.0, 1.0) * 255.0
    records["rgba"][:, :3] = quantize_u8(rgb)
    records["rgba"][:, 3] = opacity_logits_to_u8(arrays.opacity_logits)
    records["rotation"] = encode_rotations(arrays.quats)
    return records.tobytes()


def exp_scales(log_scales: np.ndarray) -> np.ndarray:
    """float32 ``exp(log_scale)``, nudged by a few ulps where that makes ``log`` give the
    log-scale back exactly, so that reading a written file returns the same log-scales."""
    ls = log_scales.astype(np.float32)
    scales = np.exp(ls.astype(np.float64)).astype(np.float32)
    best = scales.copy()
    wrong = _log32(scales) != ls
    for step in (1, -1, 2, -2, 3, -3, 4, -4):
        if not wrong.any():
            break
        candidate = _step_ulps(scales, step)
        hit = wrong & (_log32(candidate) == ls)
        best[hit] = candidate[hit]
        wrong &= ~hit
    return best


def _log32(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x.astype(np.float64)).astype(np.float32)


def _step_ulps(x: np.ndarray, steps: int) -> np.ndarray:
    """``x`` moved ``steps`` representable float32 values up (or down)."""
    out = x
    for _ in range(abs(steps)):
        out = np.nextafter(out, np.float32(np.inf if steps > 0 else -np.inf))
    return out


def encode_rotations(quats: np.ndarray) -> np.ndarray:
    """uint8 wxyz codes ``round(q̂·128 + 128)``.

    A quaternion that is already on the code grid (as every decoded one is) keeps its
    codes when they point at least as exactly along ``q`` as the normalised rounding
    does; this makes decode→encode the identity.
    """
    q = quats.astype(np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    unit = np.divide(q, norm, out=np.zeros_like(q), where=norm > 0)
    normalised = quantize_u8(unit * 128.0 + 128.0)
    raw = quantize_u8(q * 128.0 + 128.0)
    use_raw = _direction_error(raw, unit) <= _direction_error(normalised, unit) + 1e-12
    return np.where(use_raw[:, None], raw, normalised)


def _direction_error(codes: np.ndarray, unit: np.ndarray) -> np.ndarray:
    v = codes.astype(np.float64) - 128.0
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    direction = np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)
    error = np.sum((direction - unit) ** 2, axis=1)
    return np.where(norm[:, 0] > 0, error, np.inf)


def read_arrays(path: str | os.PathLike[str]) -> GaussianArrays:
    """Read a ``.splat`` file into unvalidated arrays."""
    path = require_file(path, ".splat file")
    return decode(np.fromfile(path, dtype=np.uint8), path)


def write_arrays(arrays: GaussianArrays, path: str | os.PathLike[str]) -> None:
    """Write arrays as ``.splat``, atomically."""
    write_bytes_atomic(path, encode(arrays))


def describe(path: str | os.PathLike[str]) -> str:
    """``.splat`` has no header: report the record size."""
    size = require_file(path, ".splat file").stat().st_size
    whole = "" if size % RECORD.itemsize == 0 else f", {size % RECORD.itemsize} stray bytes"
    return f"splat (headerless {RECORD.itemsize}-byte records{whole})"
