"""The 3DGS training loss ``(1 − λ)·L1 + λ·(1 − SSIM)`` fused into compiled CPU kernels.

Same definition as :func:`splatfx.core.losses.photometric_loss` (11-tap Gaussian window,
σ = 1.5, zero padding, the 3DGS constants), computed in four passes over image rows, each
run on every CPU thread by :func:`splatfx.raster._cpu_threads.parallel_for`:

1. forward, horizontal: the window along x of the five local statistics x, y, x², y², xy;
2. forward, vertical: the window along y, then per pixel SSIM, |x − y| and the three partial
   derivatives of SSIM the gradient needs (with respect to μx, E[x²] and E[xy]);
3. backward, horizontal and 4. vertical: the window applied to those three maps (the window
   is symmetric and zero padded, so this is the adjoint of the forward window), combined as
   ``dSSIM/dx = w∗∂μx + 2x·(w∗∂E[x²]) + y·(w∗∂E[xy])``.

Autograd through the torch reference evaluates and stores a dozen image-sized
intermediates and convolves the five statistics again in the backward; here the backward
blurs three maps. Row sums are kept per row and added in row order, so the loss does not
depend on which thread ran which row.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import Tensor

from splatfx.core.losses import C1, C2, WINDOW_SIGMA, WINDOW_SIZE, gaussian_window_1d
# The rasterizer's thread team and work claiming: the CPU kernels' one threading layer.
from splatfx.raster._cpu_threads import claim, parallel_for

_ROWS_PER_CHUNK = 4


@njit(nogil=True, cache=True)
def _window_along_x(row: np.ndarray, weights: np.ndarray, channels: int, out: np.ndarray) -> None:
    """``out = window along x of row`` (one image row of W·C values, x stepping by ``channels``,
    zero padded): each tap adds a shifted copy, so the inner loop is contiguous."""
    width = len(row)
    half = len(weights) // 2
    out[:] = 0.0
    for t in range(len(weights)):
        shift = (t - half) * channels
        w = weights[t]
        lo, hi = max(0, -shift), min(width, width - shift)
        target, source = out[lo:hi], row[lo + shift:hi + shift]  # slices: the loop vectorizes (8x)
        for j in range(hi - lo):
            target[j] += w * source[j]


@njit(nogil=True, cache=True)
def _horizontal(work: np.ndarray, maps: np.ndarray, weights: np.ndarray, channels: int, out: np.ndarray) -> None:
    """``out[k, r] = window along x of maps[k, r]`` (maps (K, H, W·C))."""
    lo, hi = claim(work)
    while lo < hi:
        for r in range(lo, hi):
            for k in range(maps.shape[0]):
                _window_along_x(maps[k, r], weights, channels, out[k, r])
        lo, hi = claim(work)


@njit(nogil=True, cache=True)
def _stats_horizontal(work: np.ndarray, x: np.ndarray, y: np.ndarray, weights: np.ndarray, channels: int,
                      out: np.ndarray) -> None:
    """Pass 1: ``out[0..4, r]`` = window along x of x, y, x², y², xy on rows ``r``."""
    width = x.shape[1]
    products = np.empty((3, width), np.float32)
    lo, hi = claim(work)
    while lo < hi:
        for r in range(lo, hi):
            for j in range(width):
                products[0, j] = x[r, j] * x[r, j]
                products[1, j] = y[r, j] * y[r, j]
                products[2, j] = x[r, j] * y[r, j]
            _window_along_x(x[r], weights, channels, out[0, r])
            _window_along_x(y[r], weights, channels, out[1, r])
            for k in range(3):
                _window_along_x(products[k], weights, channels, out[2 + k, r])
        lo, hi = claim(work)


@njit(nogil=True, cache=True)
def _vertical_sum(maps: np.ndarray, weights: np.ndarray, r: int, acc: np.ndarray) -> None:
    """``acc[k] = window along y of maps[k]`` at row ``r`` (zero padded)."""
    count, height, width = maps.shape
    half = len(weights) // 2
    acc[:] = 0.0
    for t in range(len(weights)):
        rr = r + t - half
        if 0 <= rr < height:
            w = weights[t]
            for k in range(count):
                target, source = acc[k], maps[k, rr]
                for j in range(width):
                    target[j] += w * source[j]


@njit(nogil=True, cache=True)
def _ssim_vertical(work: np.ndarray, stats: np.ndarray, x: np.ndarray, y: np.ndarray, weights: np.ndarray,
                   c1: np.float32, c2: np.float32, ssim_rows: np.ndarray, l1_rows: np.ndarray,
                   partials: np.ndarray) -> None:
    """Pass 2: per row, the sums of SSIM and |x − y| and the partials of SSIM with respect to
    μx, E[x²] and E[xy] (``partials[0..2, r]``). float32 throughout, one division a pixel,
    the sums apart (in float64), so the pixel loop vectorizes."""
    width = x.shape[1]
    acc = np.empty((5, width), np.float32)
    ssim = np.empty(width, np.float32)
    two = np.float32(2.0)
    lo, hi = claim(work)
    while lo < hi:
        for r in range(lo, hi):
            _vertical_sum(stats, weights, r, acc)
            d_mean, d_square, d_product = partials[0, r], partials[1, r], partials[2, r]
            for j in range(width):
                mx, my = acc[0, j], acc[1, j]
                a1 = two * mx * my + c1
                a2 = two * (acc[4, j] - mx * my) + c2
                b1 = mx * mx + my * my + c1
                b2 = (acc[2, j] - mx * mx) + (acc[3, j] - my * my) + c2
                inverse = np.float32(1.0) / (b1 * b2)
                value = a1 * a2 * inverse
                ssim[j] = value
                d_mean[j] = two * my * (a2 - a1) * inverse - value * two * mx * (b2 - b1) * inverse
                d_square[j] = -value * b1 * inverse
                d_product[j] = two * a1 * inverse
            s_sum = 0.0
            l1_sum = 0.0
            for j in range(width):
                s_sum += ssim[j]
                l1_sum += abs(x[r, j] - y[r, j])
            ssim_rows[r] = s_sum
            l1_rows[r] = l1_sum
        lo, hi = claim(work)


@njit(nogil=True, cache=True)
def _gradient_vertical(work: np.ndarray, blurred: np.ndarray, x: np.ndarray, y: np.ndarray, weights: np.ndarray,
                       l1_scale: float, ssim_scale: float, grad: np.ndarray) -> None:
    """Pass 4: ``grad = l1_scale·sign(x − y) + ssim_scale·(w∗∂μx + 2x·w∗∂E[x²] + y·w∗∂E[xy])``."""
    width = x.shape[1]
    acc = np.empty((3, width), np.float32)
    lo, hi = claim(work)
    while lo < hi:
        for r in range(lo, hi):
            _vertical_sum(blurred, weights, r, acc)
            for j in range(width):
                d = x[r, j] - y[r, j]
                sign = 1.0 if d > 0 else (-1.0 if d < 0 else 0.0)
                dssim_dx = acc[0, j] + 2.0 * x[r, j] * acc[1, j] + y[r, j] * acc[2, j]
                grad[r, j] = l1_scale * sign + ssim_scale * dssim_dx
        lo, hi = claim(work)


def _rows(image: Tensor) -> np.ndarray:
    """An (H, W, C) float32 image as a contiguous (H, W·C) array (no copy when possible)."""
    array = image.detach().to(torch.float32).contiguous().numpy()
    return array.reshape(array.shape[0], -1)


class FusedPhotometricLoss(torch.autograd.Function):
    """``(1 − λ)·L1 + λ·(1 − SSIM)`` of a render (H, W, C) against its target, on the CPU."""

    @staticmethod
    def forward(ctx, render: Tensor, target: Tensor, ssim_weight: float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        x, y = _rows(render), _rows(target)
        height, width = x.shape
        channels = render.shape[-1]
        weights = gaussian_window_1d(WINDOW_SIZE, WINDOW_SIGMA).to(torch.float32).numpy()
        stats = np.empty((5, height, width), np.float32)
        parallel_for(_stats_horizontal, height, x, y, weights, channels, stats, chunk=_ROWS_PER_CHUNK)
        partials = np.empty((3, height, width), np.float32)
        ssim_rows, l1_rows = np.empty(height, np.float64), np.empty(height, np.float64)
        parallel_for(_ssim_vertical, height, stats, x, y, weights, np.float32(C1), np.float32(C2), ssim_rows,
                     l1_rows, partials, chunk=_ROWS_PER_CHUNK)
        count = x.size
        l1 = float(l1_rows.sum()) / count
        ssim = float(ssim_rows.sum()) / count
        ctx.save_for_backward(render, target)
        ctx.partials, ctx.weights, ctx.channels, ctx.ssim_weight = partials, weights, channels, ssim_weight
        loss = (1.0 - ssim_weight) * l1 + ssim_weight * (1.0 - ssim)
        return render.new_tensor(loss), render.new_tensor(l1)

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_l1: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        render, target = ctx.saved_tensors
        x, y = _rows(render), _rows(target)
        height, width = x.shape
        blurred = np.empty_like(ctx.partials)
        parallel_for(_horizontal, height, ctx.partials, ctx.weights, ctx.channels, blurred, chunk=_ROWS_PER_CHUNK)
        grad = np.empty((height, width), np.float32)
        scale = float(grad_loss) / x.size
        parallel_for(_gradient_vertical, height, blurred, x, y, ctx.weights,
                     (1.0 - ctx.ssim_weight) * scale, -ctx.ssim_weight * scale, grad, chunk=_ROWS_PER_CHUNK)
        return torch.from_numpy(grad).view(render.shape).to(render.dtype), None, None


def fused_photometric_loss(render: Tensor, target: Tensor, ssim_weight: float = 0.2) -> tuple[Tensor, Tensor]:
    """:func:`splatfx.core.losses.photometric_loss` on the CPU in compiled kernels; returns
    (loss, the L1 term detached). Gradients flow to ``render`` only."""
    if render.shape != target.shape or render.dim() != 3:
        raise ValueError(f"expected two images (H,W,C) of one shape, got {tuple(render.shape)} and {tuple(target.shape)}")
    loss, l1 = FusedPhotometricLoss.apply(render, target.detach(), float(ssim_weight))
    return loss, l1.detach()
