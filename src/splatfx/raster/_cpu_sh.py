"""Spherical-harmonics colour on the CPU: forward and backward in one compiled pass each.

The colour of Gaussian ``g`` seen from camera ``c`` is ``max(Σ_k Y_k(u)·sh[g, k] + 0.5, 0)``
with ``u`` the unit direction from the camera centre to the Gaussian's mean, in the basis of
:mod:`splatfx.core.sh` (the 3DGS convention). In torch this is a dozen (C, N, K, 3) products
and sums kept for autograd; at degree 3 and 200k Gaussians they took a quarter of a training
step, single-threaded. Here each Gaussian is one thread's work: its basis (and the basis's
derivatives in the backward) live in registers, nothing image- or (N, K, 3)-sized is made
but the outputs, and the work spreads over every core (:func:`parallel_for`).

The backward gives the coefficients' gradient and, through the direction, the means'
(the cameras are constants), exactly as autograd of the torch evaluation does
(tests/test_raster_sh.py).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from splatfx.core.sh import SH_C0, SH_C1, SH_C2, SH_C3
from splatfx.raster._cpu_threads import claim, parallel_for

#: Directions shorter than this are scaled as if this long (as the torch evaluation's clamp).
MIN_NORM = 1e-12


@njit(nogil=True, cache=True)
def _basis(x: float, y: float, z: float, count: int, out: np.ndarray) -> None:
    """``Y_k(x, y, z)`` for the first ``count`` (1, 4, 9 or 16) basis functions into ``out``."""
    out[0] = SH_C0
    if count > 1:
        out[1] = -SH_C1 * y
        out[2] = SH_C1 * z
        out[3] = -SH_C1 * x
    if count > 4:
        xx, yy, zz = x * x, y * y, z * z
        out[4] = SH_C2[0] * x * y
        out[5] = SH_C2[1] * y * z
        out[6] = SH_C2[2] * (2.0 * zz - xx - yy)
        out[7] = SH_C2[3] * x * z
        out[8] = SH_C2[4] * (xx - yy)
    if count > 9:
        out[9] = SH_C3[0] * y * (3.0 * xx - yy)
        out[10] = SH_C3[1] * x * y * z
        out[11] = SH_C3[2] * y * (4.0 * zz - xx - yy)
        out[12] = SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy)
        out[13] = SH_C3[4] * x * (4.0 * zz - xx - yy)
        out[14] = SH_C3[5] * z * (xx - yy)
        out[15] = SH_C3[6] * x * (xx - 3.0 * yy)


@njit(nogil=True, cache=True)
def _basis_gradient(x: float, y: float, z: float, count: int, dx: np.ndarray, dy: np.ndarray,
                    dz: np.ndarray) -> None:
    """∂Y_k/∂x, ∂y, ∂z of the first ``count`` basis functions (the direction taken as given)."""
    for k in range(count):
        dx[k] = 0.0
        dy[k] = 0.0
        dz[k] = 0.0
    if count > 1:
        dy[1] = -SH_C1
        dz[2] = SH_C1
        dx[3] = -SH_C1
    if count > 4:
        xx, yy, zz = x * x, y * y, z * z
        dx[4], dy[4] = SH_C2[0] * y, SH_C2[0] * x
        dy[5], dz[5] = SH_C2[1] * z, SH_C2[1] * y
        dx[6], dy[6], dz[6] = -2.0 * SH_C2[2] * x, -2.0 * SH_C2[2] * y, 4.0 * SH_C2[2] * z
        dx[7], dz[7] = SH_C2[3] * z, SH_C2[3] * x
        dx[8], dy[8] = 2.0 * SH_C2[4] * x, -2.0 * SH_C2[4] * y
    if count > 9:
        dx[9], dy[9] = SH_C3[0] * 6.0 * x * y, SH_C3[0] * (3.0 * xx - 3.0 * yy)
        dx[10], dy[10], dz[10] = SH_C3[1] * y * z, SH_C3[1] * x * z, SH_C3[1] * x * y
        dx[11] = SH_C3[2] * -2.0 * x * y
        dy[11] = SH_C3[2] * (4.0 * zz - xx - 3.0 * yy)
        dz[11] = SH_C3[2] * 8.0 * y * z
        dx[12], dy[12] = SH_C3[3] * -6.0 * x * z, SH_C3[3] * -6.0 * y * z
        dz[12] = SH_C3[3] * (6.0 * zz - 3.0 * xx - 3.0 * yy)
        dx[13] = SH_C3[4] * (4.0 * zz - 3.0 * xx - yy)
        dy[13] = SH_C3[4] * -2.0 * x * y
        dz[13] = SH_C3[4] * 8.0 * x * z
        dx[14], dy[14], dz[14] = SH_C3[5] * 2.0 * x * z, SH_C3[5] * -2.0 * y * z, SH_C3[5] * (xx - yy)
        dx[15], dy[15] = SH_C3[6] * (3.0 * xx - 3.0 * yy), SH_C3[6] * -6.0 * x * y


@njit(nogil=True, cache=True)
def _unit(means: np.ndarray, g: int, centres: np.ndarray, c: int) -> tuple:
    """The unit direction from camera ``c``'s centre to Gaussian ``g`` and the length it was divided by."""
    dx = float(means[g, 0]) - centres[c, 0]
    dy = float(means[g, 1]) - centres[c, 1]
    dz = float(means[g, 2]) - centres[c, 2]
    norm = max(math.sqrt(dx * dx + dy * dy + dz * dz), MIN_NORM)
    return dx / norm, dy / norm, dz / norm, norm


@njit(nogil=True, cache=True)
def _seen(means: np.ndarray, g: int, centres: np.ndarray, c: int, per_camera: bool, count: int,
          basis: np.ndarray) -> tuple:
    """Gaussian ``g`` seen from camera ``c``: the basis along its direction into ``basis``; returns
    the unit direction, the length it was divided by, and the row of its coefficients."""
    x, y, z, norm = _unit(means, g, centres, c)
    _basis(x, y, z, count, basis)
    return x, y, z, norm, c * means.shape[0] + g if per_camera else g


@njit(nogil=True, cache=True)
def _shifted_colour(basis: np.ndarray, sh: np.ndarray, row: int, channel: int, count: int) -> float:
    """``Σ_k Y_k·sh[row, k, channel] + 0.5``: one channel's colour before the clamp at 0."""
    value = 0.5
    for k in range(count):
        value += basis[k] * sh[row, k, channel]
    return value


@njit(nogil=True, cache=True)
def _sh_forward_kernel(work: np.ndarray, means: np.ndarray, sh: np.ndarray, per_camera: bool,
                       centres: np.ndarray, count: int, colours: np.ndarray) -> None:
    basis = np.empty(16)
    start, stop = claim(work)
    while start < stop:
        for g in range(start, stop):
            for c in range(centres.shape[0]):
                row = _seen(means, g, centres, c, per_camera, count, basis)[4]
                for channel in range(3):
                    colours[c, g, channel] = max(_shifted_colour(basis, sh, row, channel, count), 0.0)
        start, stop = claim(work)


@njit(nogil=True, cache=True)
def _sh_backward_kernel(work: np.ndarray, means: np.ndarray, sh: np.ndarray, per_camera: bool,
                        centres: np.ndarray, count: int, grad_colours: np.ndarray, grad_means: np.ndarray,
                        grad_sh: np.ndarray) -> None:
    basis, dx, dy, dz = np.empty(16), np.empty(16), np.empty(16), np.empty(16)
    passed = np.empty(3)
    start, stop = claim(work)
    while start < stop:
        for g in range(start, stop):
            for c in range(centres.shape[0]):
                x, y, z, norm, row = _seen(means, g, centres, c, per_camera, count, basis)
                for channel in range(3):  # the gradient through max(·, 0): where the value is ≥ 0
                    clamped = _shifted_colour(basis, sh, row, channel, count) < 0.0
                    passed[channel] = 0.0 if clamped else grad_colours[c, g, channel]
                for k in range(count):
                    for channel in range(3):
                        grad_sh[row, k, channel] += basis[k] * passed[channel]
                if count == 1:
                    continue  # the DC term does not depend on the direction
                _basis_gradient(x, y, z, count, dx, dy, dz)
                gx = gy = gz = 0.0
                for k in range(1, count):
                    along = 0.0
                    for channel in range(3):
                        along += sh[row, k, channel] * passed[channel]
                    gx += dx[k] * along
                    gy += dy[k] * along
                    gz += dz[k] * along
                if norm > MIN_NORM:  # through u = d/|d|: (g − u (u·g)) / |d|
                    radial = x * gx + y * gy + z * gz
                    gx, gy, gz = gx - x * radial, gy - y * radial, gz - z * radial
                grad_means[g, 0] += gx / norm
                grad_means[g, 1] += gy / norm
                grad_means[g, 2] += gz / norm
        start, stop = claim(work)


def sh_forward(means: np.ndarray, sh: np.ndarray, centres: np.ndarray, degree: int) -> np.ndarray:
    """Colours (C, N, 3) float32 of means (N, 3) and SH ``sh`` (N or C·N, K, 3) float32 seen from
    camera centres (C, 3) float64, at ``degree`` (only the first (degree+1)² coefficients are read)."""
    n, cameras = means.shape[0], centres.shape[0]
    colours = np.zeros((cameras, n, 3), dtype=np.float32)
    if n:
        parallel_for(_sh_forward_kernel, n, means, sh, sh.shape[0] != n, centres, (degree + 1) ** 2, colours,
                     grain=4096)
    return colours


def sh_backward(means: np.ndarray, sh: np.ndarray, centres: np.ndarray, degree: int,
                grad_colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the means (N, 3) and of ``sh`` (its shape; zero beyond (degree+1)²) given
    ∂L/∂colours (C, N, 3), all float32."""
    n = means.shape[0]
    grad_means = np.zeros((n, 3), dtype=np.float32)
    grad_sh = np.zeros(sh.shape, dtype=np.float32)
    if n:
        parallel_for(_sh_backward_kernel, n, means, sh, sh.shape[0] != n, centres, (degree + 1) ** 2,
                     grad_colours, grad_means, grad_sh, grain=4096)
    return grad_means, grad_sh
