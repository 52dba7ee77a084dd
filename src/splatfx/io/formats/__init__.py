"""Gaussian interchange formats: the 3DGS PLY (INRIA layout), ``.splat``, Niantic ``.spz`` and
PlayCanvas ``.sog``.

Every format module reads into and writes from :class:`GaussianArrays`, a plain-numpy
twin of :class:`splatfx.core.gaussians.Gaussians` that is *not* validated, so that tools
such as ``splatfx ply lint`` can look at broken files. :func:`read_gaussians` and
:func:`write_gaussians` pick the format from the file extension and return or take
validated ``Gaussians``.

Coordinates: all formats are read into (and written from) the frame of the 3DGS PLY,
i.e. the COLMAP/OpenCV world frame of the reconstruction (x right, y down, z forward,
"RDF"). ``.spz`` stores RUB (x right, y up, z back); :mod:`splatfx.io.formats.spz`
converts explicitly. ``.sog`` stores the PLY frame as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from splatfx.core.errors import InputError

# File extension -> format name (and module under splatfx.io.formats).
FORMATS: dict[str, str] = {".ply": "ply", ".splat": "splat", ".spz": "spz", ".sog": "sog"}


@dataclass
class GaussianArrays:
    """N Gaussians as float32 numpy arrays, laid out like ``Gaussians`` (not validated).

    ``means`` (N,3), ``quats`` (N,4) wxyz (unnormalised allowed), ``log_scales`` (N,3),
    ``opacity_logits`` (N,), ``sh`` (N,K,3) with ``sh[:,0]`` the DC term, and ``extras``:
    named channels (N,) or (N,C) in the order they are written. ``antialiased``: the
    splats were trained for antialiased (Mip-Splatting) rendering, as ``.spz`` and ``.sog``
    record it (the PLY has no place for it).
    """

    means: np.ndarray
    quats: np.ndarray
    log_scales: np.ndarray
    opacity_logits: np.ndarray
    sh: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    antialiased: bool = False

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        """SH degree d with (d+1)² = K coefficients per channel."""
        return int(round(np.sqrt(self.sh.shape[1]))) - 1

    def with_sh_degree(self, degree: int) -> "GaussianArrays":
        """A copy truncated to SH ``degree`` (which must not exceed the current one)."""
        if not 0 <= degree <= self.sh_degree:
            raise ValueError(f"cannot change SH degree {self.sh_degree} to {degree}: only lowering is possible")
        return replace(self, sh=self.sh[:, : (degree + 1) ** 2].copy())

    def to_gaussians(self, source: str | os.PathLike[str] = "gaussians"):
        """Validated :class:`~splatfx.core.gaussians.Gaussians` (raises InputError naming ``source``)."""
        from splatfx.core.gaussians import Gaussians

        fields = dict(means=self.means, quats=self.quats, log_scales=self.log_scales,
                      opacity_logits=self.opacity_logits, sh=self.sh)
        return Gaussians.from_arrays(fields, extras=self.extras, source=str(source))

    @classmethod
    def from_gaussians(cls, gaussians) -> "GaussianArrays":
        """Float32 numpy copies of a ``Gaussians``' tensors (moved to the CPU)."""

        def arr(t) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

        return cls(
            means=arr(gaussians.means), quats=arr(gaussians.quats), log_scales=arr(gaussians.log_scales),
            opacity_logits=arr(gaussians.opacity_logits), sh=arr(gaussians.sh),
            extras={name: arr(value) for name, value in gaussians.extras.items()},
        )


def format_of(path: str | os.PathLike[str]) -> str:
    """The format name (``ply``, ``splat``, ``spz``, ``sog``) for a path, from its extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        raise InputError(path, f"unknown Gaussian file extension {suffix or '(none)'!r}; expected one of {known}")
    return FORMATS[suffix]


def read_arrays(path: str | os.PathLike[str]) -> GaussianArrays:
    """Read any supported file into unvalidated arrays (format chosen by extension)."""
    return _module(format_of(path)).read_arrays(path)


def write_arrays(arrays: GaussianArrays, path: str | os.PathLike[str]) -> None:
    """Write arrays atomically in the format chosen by ``path``'s extension."""
    _module(format_of(path)).write_arrays(arrays, path)


def read_gaussians(path: str | os.PathLike[str]):
    """Read a ``.ply``, ``.splat``, ``.spz`` or ``.sog`` file into validated ``Gaussians``."""
    return read_arrays(path).to_gaussians(source=path)


def write_gaussians(gaussians, path: str | os.PathLike[str]) -> None:
    """Write ``Gaussians`` atomically as ``.ply``, ``.splat``, ``.spz`` or ``.sog`` (by extension)."""
    write_arrays(GaussianArrays.from_gaussians(gaussians), path)


def describe(path: str | os.PathLike[str]) -> str:
    """One line naming the file's format and its container details (from the header only)."""
    return _module(format_of(path)).describe(path)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to nearest, halves away from zero (C's ``round``), as the reference encoders do."""
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def quantize_u8(x: np.ndarray) -> np.ndarray:
    """``round(x)`` clamped to 0..255 as uint8 (NaN becomes 0)."""
    return np.clip(np.nan_to_num(round_half_away(x), nan=0.0), 0, 255).astype(np.uint8)


def opacity_logits_from_u8(alpha: np.ndarray) -> np.ndarray:
    """Opacity logits for 8-bit alphas, finite at the ends.

    ``logit(a/255)`` is ∓∞ for a = 0 and 255; those decode to ``logit(0.25/255)`` and
    ``logit(254.75/255)`` instead (about ∓6.9), which encode back to the same byte.
    """
    p = alpha.astype(np.float64) / 255.0
    p = np.where(alpha == 0, 0.25 / 255.0, np.where(alpha == 255, 254.75 / 255.0, p))
    return np.log(p / (1.0 - p)).astype(np.float32)


def opacity_logits_to_u8(logits: np.ndarray) -> np.ndarray:
    """8-bit alphas ``round(sigmoid(logit)·255)``."""
    with np.errstate(over="ignore"):
        return quantize_u8(255.0 / (1.0 + np.exp(-logits.astype(np.float64))))


def _module(name: str):
    import importlib

    return importlib.import_module(f"splatfx.io.formats.{name}")
