"""Real spherical harmonics in the 3DGS convention (degree 0–3).

Colour in a direction ``d`` is ``sum_k sh[k] * Y_k(d)``; the renderer adds 0.5 and
clamps at zero (as the original 3DGS and gsplat do). ``sh[:, 0]`` is the DC term, so
``rgb = SH_C0 * sh[:, 0] + 0.5`` for a view-independent colour.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)
MAX_SH_DEGREE = 3


def num_sh_coeffs(degree: int) -> int:
    """Coefficients per colour channel for an SH degree: (d+1)²."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be 0..{MAX_SH_DEGREE}, got {degree}")
    return (degree + 1) ** 2


def sh_degree_from_coeffs(k: int) -> int:
    """The SH degree whose coefficient count is ``k`` (1, 4, 9 or 16)."""
    for degree in range(MAX_SH_DEGREE + 1):
        if (degree + 1) ** 2 == k:
            return degree
    raise ValueError(f"{k} SH coefficients per channel is not (d+1)² for a degree 0..3")


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Basis values ``Y_k(d)`` (..., (degree+1)²) for unit directions ``dirs`` (..., 3)."""
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Evaluate SH colour (..., 3) from coefficients ``sh`` (..., K, 3) along ``dirs`` (..., 3).

    Only the first (degree+1)² coefficients are used, so a degree-3 model can be shown
    at a lower degree while training raises it step by step. ``dirs`` need not be unit
    length; zero-length directions give the DC colour.
    """
    k = num_sh_coeffs(degree)
    if sh.shape[-2] < k:
        raise ValueError(f"degree {degree} needs {k} SH coefficients, got {sh.shape[-2]}")
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(degree, unit)
    return (basis.unsqueeze(-1) * sh[..., :k, :]).sum(dim=-2)


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    """DC coefficient that renders as ``rgb`` (the renderer adds 0.5)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(dc: torch.Tensor) -> torch.Tensor:
    """View-independent colour of a DC coefficient."""
    return dc * SH_C0 + 0.5


@functools.lru_cache(maxsize=1)
def _sample_dirs() -> np.ndarray:
    """Fixed, well-spread unit directions (Fibonacci sphere) for fitting rotation matrices."""
    n = 64
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


@functools.lru_cache(maxsize=MAX_SH_DEGREE + 1)
def _basis_pinv(degree: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The sample directions and, per band ≥ 1, the pseudo-inverse of the basis on them."""
    dirs = torch.from_numpy(_sample_dirs())
    basis = sh_basis(degree, dirs)
    return dirs, [torch.linalg.pinv(basis[:, b * b:(b + 1) ** 2]) for b in range(1, degree + 1)]


def sh_rotation_matrices(rotation: np.ndarray, degree: int) -> list[np.ndarray]:
    """Per-band matrices ``M_l`` that rotate SH coefficients with an object rotation ``R``.

    After rotating a Gaussian by ``R``, its colour seen along ``d`` equals the old colour
    along ``Rᵀd``. Each band l ≥ 1 transforms on its own, ``c'_l = M_l c_l``; ``M_l`` is
    solved exactly (least squares on 64 directions, which over-determines every band) so
    it stays correct for any basis sign convention. The basis pseudo-inverses are cached,
    so each call costs one small matrix product per band.
    """
    dirs, pinvs = _basis_pinv(degree)
    rotated = sh_basis(degree, dirs @ torch.from_numpy(np.asarray(rotation, dtype=np.float64)))  # rows: Y(Rᵀ d)
    # Rows satisfy B(Rᵀd) = B(d) M, so colour(Rᵀd) = B(d) (M c): the new coefficients are M c.
    return [(pinv @ rotated[:, b * b:(b + 1) ** 2]).numpy() for b, pinv in enumerate(pinvs, start=1)]


def rotate_sh(sh: torch.Tensor, rotation: np.ndarray) -> torch.Tensor:
    """Rotate SH coefficients (N, K, 3) by the object rotation ``rotation`` (3, 3)."""
    degree = sh_degree_from_coeffs(sh.shape[1])
    if degree == 0:
        return sh.clone()
    out = sh.clone()
    for band, mat in enumerate(sh_rotation_matrices(rotation, degree), start=1):
        lo, hi = band * band, (band + 1) ** 2
        m = torch.from_numpy(mat).to(sh)
        out[:, lo:hi, :] = torch.einsum("ij,njc->nic", m, sh[:, lo:hi, :])
    return out
