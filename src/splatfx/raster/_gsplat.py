"""The CUDA backend: :func:`splatfx.raster.rasterize` forwarded to ``gsplat.rasterization``.

The arguments map one to one (``near``/``far`` → ``near_plane``/``far_plane``,
``antialiased`` → ``rasterize_mode="antialiased"``). gsplat is asked for the non-packed
layout so that ``meta`` has the same (C, N, …) shapes as the CPU backend, and its
``means2d`` carries ``.grad`` (and ``.absgrad``) after backward in the same way.
Differences that remain: gsplat clamps alpha at 0.999 (the CPU backend at 0.99) and bins
with a slightly looser tile rectangle, so ``tiles_per_gauss``/``flatten_ids`` differ;
its ``meta`` has extra keys (``isect_ids`` …).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def gsplat_available() -> bool:
    """True when gsplat can run here: it is installed and CUDA is available."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    ks: Tensor,
    width: int,
    height: int,
    *,
    near: float,
    far: float,
    backgrounds: Tensor | None,
    sh_degree: int | None,
    render_mode: str,
    eps2d: float,
    antialiased: bool,
    absgrad: bool,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render with gsplat's CUDA kernels (inputs already validated, float32, on one CUDA device)."""
    from gsplat import rasterization

    images, alphas, meta = rasterization(
        means,
        quats,
        scales,
        opacities,
        features,
        viewmats,
        ks,
        width,
        height,
        near_plane=near,
        far_plane=far,
        eps2d=eps2d,
        sh_degree=sh_degree,
        packed=False,
        backgrounds=backgrounds,
        render_mode=render_mode,
        absgrad=absgrad,
        rasterize_mode="antialiased" if antialiased else "classic",
    )
    meta["backend"] = "gsplat"
    means2d = meta.get("means2d")
    if isinstance(means2d, Tensor) and means2d.requires_grad:
        means2d.retain_grad()
    return images, alphas, meta
