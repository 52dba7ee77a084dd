"""Photometric losses of 3D Gaussian Splatting: L1, SSIM and D-SSIM.

SSIM follows the original 3DGS code (itself from pytorch-ssim): an 11×11 Gaussian window
with σ = 1.5, zero padding so the map has the image's size, constants ``C1 = 0.01²`` and
``C2 = 0.03²`` for values in [0, 1], averaged over pixels and channels. The window is
separable, so it is applied as two 1-D convolutions over the five local statistics at
once: that keeps the per-step cost small on a CPU.

Images are (H, W, C) or batches (B, H, W, C), the layout the renderer returns.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
C1 = 0.01**2
C2 = 0.03**2


@functools.lru_cache(maxsize=8)
def gaussian_window_1d(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> Tensor:
    """Normalised 1-D Gaussian weights (size,), float64 on the CPU (cached; cast where used)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    w = torch.exp(-(x**2) / (2.0 * sigma**2))
    return w / w.sum()


def _to_nchw(image: Tensor) -> Tensor:
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4:
        raise ValueError(f"expected an image (H,W,C) or a batch (B,H,W,C), got shape {tuple(image.shape)}")
    return image.permute(0, 3, 1, 2)


def _blur(x: Tensor, size: int, sigma: float) -> Tensor:
    """Separable Gaussian blur of every channel of (B, C, H, W), zero padded ("same" size)."""
    channels = x.shape[1]
    w = gaussian_window_1d(size, sigma).to(device=x.device, dtype=x.dtype)
    pad = size // 2
    x = F.conv2d(x, w.view(1, 1, 1, size).expand(channels, 1, 1, size), padding=(0, pad), groups=channels)
    return F.conv2d(x, w.view(1, 1, size, 1).expand(channels, 1, size, 1), padding=(pad, 0), groups=channels)


def ssim_map(a: Tensor, b: Tensor, window_size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> Tensor:
    """Per-pixel, per-channel SSIM (B, C, H, W) of images in [0, 1] (3DGS convention)."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    x, y = _to_nchw(a), _to_nchw(b)
    channels = x.shape[1]
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), window_size, sigma)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(channels, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x, var_y, cov = e_xx - mu_xx, e_yy - mu_yy, e_xy - mu_xy
    return ((2 * mu_xy + C1) * (2 * cov + C2)) / ((mu_xx + mu_yy + C1) * (var_x + var_y + C2))


def ssim(a: Tensor, b: Tensor, window_size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> Tensor:
    """Mean SSIM of two images (or batches) in [0, 1]; 1 for identical images."""
    return ssim_map(a, b, window_size, sigma).mean()


def l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute difference."""
    return (a - b).abs().mean()


def dssim(a: Tensor, b: Tensor) -> Tensor:
    """Structural dissimilarity as the 3DGS loss uses it: ``1 − SSIM`` (0 for identical images).

    (Some texts halve it; 3DGS's code and its λ = 0.2 weight use the unhalved form.)
    """
    return 1.0 - ssim(a, b)


def photometric_loss(render: Tensor, target: Tensor, ssim_weight: float = 0.2) -> tuple[Tensor, Tensor]:
    """The 3DGS loss ``(1 − λ)·L1 + λ·D-SSIM``; returns (loss, the L1 term detached)."""
    l1_term = l1(render, target)
    if ssim_weight <= 0.0:
        return l1_term, l1_term.detach()
    return (1.0 - ssim_weight) * l1_term + ssim_weight * dssim(render, target), l1_term.detach()
