"""The CPU backend as torch autograd Functions, and the pipeline that chains them.

Two Functions mirror gsplat's split so that ``means2d`` is a real intermediate tensor
whose ``.grad`` (and ``.absgrad``) densification strategies can read:

- :class:`ProjectGaussians`: (means, quats, scales) → means2d, conics, depths,
  compensations (per camera), with a hand-written backward.
- :class:`RasterizeToPixels`: (means2d, conics, colours, opacities, backgrounds) → images,
  alphas, with a hand-written backward through the compositing.

SH colours are a third Function, :class:`ShColours` (compiled forward and backward,
:mod:`._cpu_sh`). Everything else between them (opacity × compensation, the depth channel,
expected depth) is plain torch, so autograd carries those gradients. Viewmats and Ks
receive no gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from splatfx.raster._cpu_project import project_backward, project_forward
from splatfx.raster._cpu_raster import (
    GRAD_ROW,
    TileBins,
    bin_gaussians,
    gather_splats,
    rasterize_backward,
    rasterize_forward,
)
from splatfx.raster._cpu_sh import sh_backward, sh_forward


def _np32(t: Tensor) -> np.ndarray:
    """A contiguous float32 numpy view (or copy) of a detached CPU tensor."""
    return t.detach().to(torch.float32).contiguous().numpy()


class ProjectGaussians(torch.autograd.Function):
    """EWA projection of N Gaussians into C pinhole cameras (see :mod:`._cpu_project`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        means: Tensor,
        quats: Tensor,
        scales: Tensor,
        opacities: Tensor,
        viewmats: np.ndarray,
        ks: np.ndarray,
        width: int,
        height: int,
        eps2d: float,
        near: float,
        far: float,
        antialiased: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        arrays = (_np32(means), _np32(quats), _np32(scales))
        radii, means2d, depths, conics, comps = project_forward(
            *arrays, _np32(opacities), viewmats, ks, width, height, eps2d, near, far, antialiased
        )
        ctx.arrays = arrays
        ctx.radii = radii
        ctx.settings = (viewmats, ks, width, height, eps2d, antialiased)
        radii_t = torch.from_numpy(radii)
        ctx.mark_non_differentiable(radii_t)
        return radii_t, torch.from_numpy(means2d), torch.from_numpy(depths), torch.from_numpy(conics), torch.from_numpy(comps)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, _v_radii: Tensor, v_means2d: Tensor, v_depths: Tensor, v_conics: Tensor, v_comps: Tensor
    ) -> tuple[Tensor | None, ...]:
        viewmats, ks, width, height, eps2d, antialiased = ctx.settings
        v_means, v_quats, v_scales = project_backward(
            *ctx.arrays, viewmats, ks, width, height, eps2d, antialiased, ctx.radii,
            _np32(v_means2d), _np32(v_depths), _np32(v_conics), _np32(v_comps),
        )
        return (torch.from_numpy(v_means), torch.from_numpy(v_quats), torch.from_numpy(v_scales)) + (None,) * 9


class RasterizeToPixels(torch.autograd.Function):
    """Front-to-back compositing of projected Gaussians into C images (see :mod:`._cpu_raster`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        means2d: Tensor,  # (C, N, 2)
        conics: Tensor,  # (C, N, 3)
        colors: Tensor,  # (C, N, D)
        opacities: Tensor,  # (C, N)
        backgrounds: Tensor,  # (C, D)
        bins: TileBins,
        width: int,
        height: int,
        absgrad: bool,
    ) -> tuple[Tensor, Tensor]:
        n_cam, n, n_ch = colors.shape
        splats = gather_splats(
            bins,
            _np32(means2d).reshape(n_cam * n, 2),
            _np32(conics).reshape(n_cam * n, 3),
            _np32(colors).reshape(n_cam * n, n_ch),
            _np32(opacities).reshape(n_cam * n),
        )
        bg = _np32(backgrounds)
        images, t_final, last_ids, spans = rasterize_forward(splats, bins, bg, width, height)
        ctx.state = (splats, bins, bg, width, height, t_final, last_ids, spans, absgrad)
        ctx.save_for_backward(means2d)
        return torch.from_numpy(images), torch.from_numpy(1.0 - t_final).unsqueeze(-1)

    @staticmethod
    def backward(ctx: Any, v_images: Tensor, v_alphas: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (means2d,) = ctx.saved_tensors
        splats, bins, bg, width, height, t_final, last_ids, spans, absgrad = ctx.state
        n_cam, n = means2d.shape[:2]
        grads = rasterize_backward(
            splats, bins, bg, width, height, t_final, last_ids, spans,
            _np32(v_images), _np32(v_alphas).reshape(t_final.shape), n_cam * n, absgrad,
        )
        grads_t = torch.from_numpy(grads).reshape(n_cam, n, grads.shape[1])
        if absgrad:
            means2d.absgrad = grads_t[..., 6:8]
        v_backgrounds = None
        if ctx.needs_input_grad[4]:
            v_backgrounds = (v_images.to(torch.float32) * torch.from_numpy(t_final).unsqueeze(-1)).sum(dim=(1, 2))
        return (
            grads_t[..., 0:2],
            grads_t[..., 2:5],
            grads_t[..., GRAD_ROW:],
            grads_t[..., 5],
            v_backgrounds,
        ) + (None,) * 4


def camera_centers(viewmats: Tensor) -> Tensor:
    """World positions (C, 3) of world-to-camera matrices: ``−Rᵀ t``."""
    rot, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    return -(rot.transpose(1, 2) @ t.unsqueeze(-1)).squeeze(-1)


class ShColours(torch.autograd.Function):
    """SH colours of N Gaussians seen from C camera centres (see :mod:`._cpu_sh`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, means: Tensor, sh: Tensor, centres: np.ndarray, degree: int
    ) -> Tensor:
        n = means.shape[0]
        flat = sh.reshape(-1, *sh.shape[-2:])  # (N or C·N, K, 3)
        arrays = (_np32(means), _np32(flat))
        ctx.arrays, ctx.centres, ctx.degree, ctx.sh_shape = arrays, centres, degree, sh.shape
        return torch.from_numpy(sh_forward(*arrays, centres, degree)).reshape(centres.shape[0], n, 3)

    @staticmethod
    def backward(ctx: Any, grad_colours: Tensor) -> tuple:  # type: ignore[override]
        grad_means, grad_sh = sh_backward(*ctx.arrays, ctx.centres, ctx.degree, _np32(grad_colours))
        return torch.from_numpy(grad_means), torch.from_numpy(grad_sh).reshape(ctx.sh_shape), None, None


def sh_colors(means: Tensor, sh: Tensor, sh_degree: int, viewmats: Tensor) -> Tensor:
    """Per-camera colours (C, N, 3) from SH (N | C, N, K, 3), + 0.5 and clamped at 0 like gsplat."""
    centres = camera_centers(viewmats).to(means.dtype).detach().to(torch.float64).contiguous().numpy()
    return ShColours.apply(means, sh, centres, sh_degree)


def rasterize_cpu(
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
    window: tuple[int, int, int, int] | None = None,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """The CPU pipeline behind :func:`splatfx.raster.rasterize` (inputs already validated, float32).
    With ``window`` (x0, y0, w, h) the projection is the whole image's and the binning and
    compositing cover the window only, its pixels addressed from its own corner."""
    n_cam, n = viewmats.shape[0], means.shape[0]
    vm = viewmats.detach().to(torch.float64).contiguous().numpy()
    kk = ks.detach().to(torch.float64).contiguous().numpy()
    radii, means2d, depths, conics, comps = ProjectGaussians.apply(
        means, quats, scales, opacities, vm, kk, width, height, eps2d, near, far, antialiased
    )
    if means2d.requires_grad:
        means2d.retain_grad()
    opac = opacities.unsqueeze(0) * comps if antialiased else opacities.unsqueeze(0).expand(n_cam, n)

    if sh_degree is not None:
        colors = sh_colors(means, features, sh_degree, viewmats)
    else:
        colors = features if features.dim() == 3 else features.unsqueeze(0).expand(n_cam, -1, -1)
    if render_mode in ("D", "ED"):
        colors = depths.unsqueeze(-1)
        backgrounds = None
    elif render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, depths.unsqueeze(-1)], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(n_cam, 1)], dim=-1)
    if backgrounds is None:
        backgrounds = colors.new_zeros(n_cam, colors.shape[-1])

    radii_np = radii.numpy()
    on_screen, out_w, out_h = means2d, width, height
    if window is not None:
        x0, y0, out_w, out_h = window
        on_screen = means2d - means2d.new_tensor([float(x0), float(y0)])
    bins = bin_gaussians(
        on_screen.detach().numpy().reshape(-1, 2), radii_np.reshape(-1, 2), depths.detach().numpy().reshape(-1),
        n_cam, out_w, out_h,
    )
    images, alphas = RasterizeToPixels.apply(on_screen, conics, colors, opac, backgrounds, bins, out_w, out_h,
                                             absgrad)
    if render_mode in ("ED", "RGB+ED"):
        images = torch.cat([images[..., :-1], images[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)

    meta: dict[str, Any] = {
        "backend": "cpu",
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opac,
        "compensations": comps if antialiased else None,
        "tile_size": bins.tile_size,
        "tile_width": bins.tiles_x,
        "tile_height": bins.tiles_y,
        "tiles_per_gauss": torch.from_numpy(bins.tiles_per_gauss.reshape(n_cam, n)),
        "isect_offsets": torch.from_numpy(bins.tile_offsets[:-1].astype(np.int32).reshape(n_cam, bins.tiles_y, bins.tiles_x)),
        "flatten_ids": torch.from_numpy(bins.flatten_ids),
        "width": width,
        "height": height,
        "window": window,
        "n_cameras": n_cam,
        "n_batches": 1,
    }
    return images, alphas, meta
