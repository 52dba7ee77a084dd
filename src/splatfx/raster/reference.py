"""Pure-PyTorch Gaussian rasterizers: a dense ground truth and a tiled slow fallback.

Both follow the semantics of :func:`splatfx.raster.rasterize` (gsplat 1.5.3's
``rasterization()``), written from the maths rather than from any kernel:

- EWA projection: ``Σ = R S Sᵀ Rᵀ``, ``Σ₂ = J W Σ Wᵀ Jᵀ + eps2d·I`` where the pinhole
  Jacobian ``J`` is evaluated at ``x/z, y/z`` clamped to the image plus 30 % of the half
  field of view on each side; ``antialiased`` scales opacity by ``sqrt(det before / det after)``.
- culling: depth outside ``(near, far)``, ``det Σ₂ ≤ 0``, opacity below 1/255, or a
  bounding box outside the image. The box half-size ``ceil(k·sqrt(Σ₂[i,i]))`` uses
  gsplat's opacity-aware ``k = min(3.33, sqrt(2 ln(255·o)))``: nothing outside it can reach
  alpha 1/255, so the box only skips work and never changes a pixel.
- compositing per pixel (centre at ``x+0.5, y+0.5``), front to back by depth, ties by
  Gaussian index: ``alpha = min(ALPHA_MAX, o·exp(-power))``, skipped when below ``ALPHA_MIN``
  or ``power < 0``; a pixel stops before the Gaussian that would bring its transmittance
  below ``T_MIN``; background adds ``T_final·bg``.

:func:`rasterize_dense` evaluates every pixel against every Gaussian and is the reference
the tests trust (run it in float64). :func:`rasterize_torch_tiled` bins Gaussians into 16×16
tiles like the real renderer and composites each tile as one batched tensor operation; it
is differentiable through autograd and serves as the ``backend="torch"`` fallback and the
speed baseline of ``benchmarks/raster.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from splatfx.core.sh import eval_sh

ALPHA_MIN = 1.0 / 255.0  # contributions below this are skipped
ALPHA_MAX = 0.99  # per-Gaussian alpha is clamped to this
T_MIN = 1e-4  # a pixel stops before its transmittance would fall below this
MAX_EXTENT = 3.33  # bounding-box half-size in standard deviations, at most
TILE_SIZE = 16
MAX_RADIUS = 1e9  # radii of absurdly large Gaussians are clamped to fit int32
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


@dataclass
class Projection:
    """Screen-space Gaussians for C cameras; rows of culled pairs are meaningless."""

    means2d: Tensor  # (C, N, 2) pixel coordinates of the centres
    conics: Tensor  # (C, N, 3) inverse 2D covariance (a, b, c) for [[a, b], [b, c]]
    depths: Tensor  # (C, N) camera-space z
    radii: Tensor  # (C, N, 2) int32 bounding-box half-sizes, 0 where culled
    opacities: Tensor  # (C, N) opacity after antialiasing compensation
    visible: Tensor  # (C, N) bool, radii > 0


# --- projection ---------------------------------------------------------------------------


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) of wxyz quaternions (..., 4), normalised first."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World-space covariances (N, 3, 3) ``(R S)(R S)ᵀ``."""
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ m.transpose(-1, -2)


def _jacobian_limits(Ks: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Clamp range of x/z and y/z per camera (C,): the image plus 0.3·tan(fov/2) each side."""
    fx, fy, cx, cy = Ks[:, 0, 0], Ks[:, 1, 1], Ks[:, 0, 2], Ks[:, 1, 2]
    margin_x, margin_y = 0.3 * 0.5 * width / fx, 0.3 * 0.5 * height / fy
    return cx / fx + margin_x, (width - cx) / fx + margin_x, cy / fy + margin_y, (height - cy) / fy + margin_y


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    antialiased: bool = False,
) -> Projection:
    """EWA-project N Gaussians into C cameras (differentiable, any float dtype)."""
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    mean_c = torch.einsum("cij,nj->cni", rot, means) + trans[:, None, :]  # (C, N, 3)
    cov_c = rot[:, None] @ covariance_3d(quats, scales)[None] @ rot[:, None].transpose(-1, -2)
    x, y, z = mean_c.unbind(-1)
    in_depth = (z > near) & (z < far)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled rows finite for autograd

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    x_neg, x_pos, y_neg, y_pos = (lim[:, None] for lim in _jacobian_limits(Ks, width, height))
    tx = z * torch.minimum(torch.maximum(x / z, -x_neg), x_pos)
    ty = z * torch.minimum(torch.maximum(y / z, -y_neg), y_pos)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * tx / z**2, zero, fy / z, -fy * ty / z**2], dim=-1)
    jac = jac.reshape(*z.shape, 2, 3)
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)  # (C, N, 2, 2)

    a, b, c = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det_before = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    safe_det = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / safe_det, -b / safe_det, a / safe_det], dim=-1)
    opac = opacities[None].expand_as(z)
    if antialiased:
        opac = opac * torch.sqrt(torch.clamp(det_before / safe_det, min=0.0))
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    with torch.no_grad():
        alive = in_depth & (det > 0) & (opac >= ALPHA_MIN)
        extent = torch.sqrt(2.0 * torch.log(torch.clamp(opac, min=ALPHA_MIN) / ALPHA_MIN)).clamp(max=MAX_EXTENT)
        radius = torch.ceil(extent[..., None] * torch.sqrt(torch.stack([a, c], dim=-1).clamp(min=0)))
        lo, hi = means2d - radius, means2d + radius
        on_image = (hi[..., 0] > 0) & (lo[..., 0] < width) & (hi[..., 1] > 0) & (lo[..., 1] < height)
        visible = alive & on_image & (radius > 0).all(dim=-1)
        radii = torch.where(visible[..., None], radius.clamp(max=MAX_RADIUS), 0).to(torch.int32)
    return Projection(means2d, conics, mean_c[..., 2], radii, opac, visible)


# --- per-Gaussian values ------------------------------------------------------------------


def camera_centers(viewmats: Tensor) -> Tensor:
    """World positions (C, 3) of the cameras of world-to-camera matrices (C, 4, 4)."""
    return torch.linalg.inv(viewmats)[:, :3, 3]


def gaussian_colors(features: Tensor, means: Tensor, viewmats: Tensor, sh_degree: int | None) -> Tensor:
    """Per-camera channel values (C, N, D): features as given, or SH seen from each camera."""
    n_cams = viewmats.shape[0]
    if sh_degree is None:
        return features if features.dim() == 3 else features[None].expand(n_cams, -1, -1)
    sh = features if features.dim() == 4 else features[None].expand(n_cams, -1, -1, -1)
    dirs = means[None] - camera_centers(viewmats)[:, None, :]
    return torch.clamp_min(eval_sh(sh_degree, sh, dirs) + 0.5, 0.0)


def _channels_for_mode(
    colors: Tensor, depths: Tensor, backgrounds: Tensor | None, render_mode: str
) -> tuple[Tensor, Tensor | None]:
    """Values to composite (C, N, D') and the matching background (C, D'), per render mode."""
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    depth = depths[..., None]
    if render_mode in ("D", "ED"):
        return depth, None
    if render_mode == "RGB":
        return colors, backgrounds
    if backgrounds is not None:
        backgrounds = torch.cat([backgrounds, torch.zeros_like(backgrounds[:, :1])], dim=-1)
    return torch.cat([colors, depth], dim=-1), backgrounds


def _finish_images(
    accum: Tensor, transmittance: Tensor, backgrounds: Tensor | None, render_mode: str
) -> tuple[Tensor, Tensor]:
    """Add the background, turn accumulated depth into expected depth for ``ED`` modes."""
    alphas = 1.0 - transmittance[..., None]  # (C, H, W, 1)
    if backgrounds is not None:
        accum = accum + transmittance[..., None] * backgrounds[:, None, None, :]
    if render_mode.endswith("ED"):
        accum = torch.cat([accum[..., :-1], accum[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)
    return accum, alphas


# --- compositing --------------------------------------------------------------------------


def pixel_alphas(pixels: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor) -> tuple[Tensor, Tensor]:
    """Alpha (P, M) of M depth-sorted Gaussians at P pixel centres, thresholded; also raw alpha.

    The raw value ``o·exp(-power)`` is returned for diagnosing near-threshold decisions.
    """
    d = means2d[None, :, :] - pixels[:, None, :]
    dx, dy = d[..., 0], d[..., 1]
    power = 0.5 * (conics[:, 0] * dx * dx + conics[:, 2] * dy * dy) + conics[:, 1] * dx * dy
    raw = opacities * torch.exp(-power)
    alpha = torch.clamp(raw, max=ALPHA_MAX)
    keep = (power >= 0) & (alpha >= ALPHA_MIN)
    return torch.where(keep, alpha, torch.zeros_like(alpha)), raw


def composite(alpha: Tensor, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Front-to-back blend of depth-sorted alphas (P, M) and values (M, D) with early stop.

    Transmittance only decreases along a ray, so "stop before the Gaussian that would bring
    T below T_MIN" keeps exactly the Gaussians whose inclusive transmittance is ≥ T_MIN.
    Returns the blended values (P, D), final transmittance (P,) and the inclusive
    transmittance (P, M) for diagnostics.
    """
    with torch.no_grad():
        t_inclusive = torch.cumprod(1.0 - alpha, dim=1)
        included = t_inclusive >= T_MIN
    alpha = torch.where(included, alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - alpha
    t_before = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), one_minus[:, :-1]], dim=1), dim=1)
    weights = alpha * t_before[:, : alpha.shape[1]]
    return weights @ values, torch.prod(one_minus, dim=1), t_inclusive


def pixel_centers(width: int, height: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Pixel-centre coordinates (H·W, 2) in row-major order: (x + 0.5, y + 0.5)."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device), torch.arange(width, dtype=dtype, device=device), indexing="ij"
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1) + 0.5


def depth_order(depths: Tensor, visible: Tensor) -> Tensor:
    """Indices of the visible Gaussians of one camera, nearest first, ties by index."""
    ids = torch.nonzero(visible).squeeze(1)
    return ids[torch.sort(depths[ids], stable=True).indices]


# --- public entry points ------------------------------------------------------------------


def _prepare(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, features: Tensor, viewmats: Tensor, Ks: Tensor,
    width: int, height: int, near: float, far: float, backgrounds: Tensor | None, sh_degree: int | None,
    render_mode: str, eps2d: float, antialiased: bool,
) -> tuple[Projection, Tensor, Tensor | None]:
    """Project, evaluate colours and choose the composited channels for every camera."""
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, near, far, eps2d, antialiased)
    colors = gaussian_colors(features, means, viewmats, sh_degree)
    if backgrounds is not None:
        backgrounds = backgrounds.to(colors.dtype).expand(viewmats.shape[0], colors.shape[-1])
    values, bg = _channels_for_mode(colors, proj.depths, backgrounds, render_mode)
    return proj, values, bg


def _meta(proj: Projection, width: int, height: int) -> dict:
    return {
        "means2d": proj.means2d, "conics": proj.conics, "depths": proj.depths, "radii": proj.radii,
        "opacities": proj.opacities, "width": width, "height": height,
    }


def rasterize_dense(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near: float = 0.01,
    far: float = 1e10,
    backgrounds: Tensor | None = None,
    sh_degree: int | None = None,
    render_mode: str = "RGB",
    eps2d: float = 0.3,
    antialiased: bool = False,
    margin: float = 1e-4,
    pixel_chunk: int = 4096,
) -> tuple[Tensor, Tensor, dict]:
    """Render by testing every pixel against every visible Gaussian (readable ground truth).

    Arguments and outputs follow :func:`splatfx.raster.rasterize`: images (C, H, W, D'),
    alphas (C, H, W, 1) and a meta dict. ``meta["ambiguous"]`` (C, H, W) marks pixels where
    a threshold decision (alpha vs ``ALPHA_MIN``, transmittance vs ``T_MIN``) is within a
    relative ``margin`` of flipping, so a float32 renderer may legitimately differ there.
    Memory grows with ``pixel_chunk × N``; meant for small scenes, in float64.
    """
    proj, values, bg = _prepare(
        means, quats, scales, opacities, features, viewmats, Ks, width, height, near, far, backgrounds, sh_degree,
        render_mode, eps2d, antialiased,
    )
    n_cams = viewmats.shape[0]
    pixels = pixel_centers(width, height, values.dtype, values.device)
    accum, trans, ambiguous = [], [], []
    for cam in range(n_cams):
        order = depth_order(proj.depths[cam], proj.visible[cam])
        args = (proj.means2d[cam, order], proj.conics[cam, order], proj.opacities[cam, order])
        cam_accum, cam_trans, cam_amb = [], [], []
        for start in range(0, pixels.shape[0], pixel_chunk):
            alpha, raw = pixel_alphas(pixels[start : start + pixel_chunk], *args)
            color, t_final, t_incl = composite(alpha, values[cam, order])
            cam_accum.append(color)
            cam_trans.append(t_final)
            with torch.no_grad():
                near_alpha = (raw - ALPHA_MIN).abs() <= margin * ALPHA_MIN
                near_stop = (t_incl - T_MIN).abs() <= margin * T_MIN
                cam_amb.append((near_alpha | near_stop).any(dim=1))
        accum.append(torch.cat(cam_accum).reshape(height, width, -1))
        trans.append(torch.cat(cam_trans).reshape(height, width))
        ambiguous.append(torch.cat(cam_amb).reshape(height, width))
    images, alphas = _finish_images(torch.stack(accum), torch.stack(trans), bg, render_mode)
    meta = _meta(proj, width, height)
    meta["ambiguous"] = torch.stack(ambiguous)
    return images, alphas, meta


def tile_bins(proj: Projection, cam: int, width: int, height: int, tile_size: int = TILE_SIZE
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Tile lists of one camera, as gsplat bins them.

    Each visible Gaussian joins every tile its bounding box touches. Returns the non-empty
    tile ids (ascending), the concatenated Gaussian ids of those tiles (each list front to
    back), how many Gaussians each of those tiles holds, and how many tiles each Gaussian
    touches (N,).
    """
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    order = depth_order(proj.depths[cam], proj.visible[cam])
    with torch.no_grad():
        centre = proj.means2d[cam, order].detach()
        radius = proj.radii[cam, order].to(centre.dtype)
        lo = torch.floor((centre - radius) / tile_size).long()
        hi = torch.ceil((centre + radius) / tile_size).long()
        lo[:, 0], hi[:, 0] = lo[:, 0].clamp(0, tiles_x), hi[:, 0].clamp(0, tiles_x)
        lo[:, 1], hi[:, 1] = lo[:, 1].clamp(0, tiles_y), hi[:, 1].clamp(0, tiles_y)
        span = hi - lo
        count = span[:, 0] * span[:, 1]
        owner = torch.repeat_interleave(torch.arange(order.numel(), device=order.device), count)
        first = torch.cumsum(count, 0) - count
        k = torch.arange(owner.numel(), device=order.device) - first[owner]
        tile_x = lo[owner, 0] + k % span[owner, 0]
        tile_y = lo[owner, 1] + torch.div(k, span[owner, 0], rounding_mode="floor")
        tile_ids = tile_y * tiles_x + tile_x
        by_tile = torch.sort(tile_ids, stable=True).indices  # keeps depth order within a tile
        tiles, counts = torch.unique_consecutive(tile_ids[by_tile], return_counts=True)
        tiles_per_gauss = torch.zeros_like(proj.depths[cam], dtype=torch.int32).index_copy(0, order, count.int())
    return tiles, order[owner[by_tile]], counts, tiles_per_gauss


def _tile_meta(bins: list[tuple[Tensor, Tensor, Tensor, Tensor]], n: int, tiles_x: int, tiles_y: int) -> dict:
    """gsplat's tile bookkeeping (non-packed) from per-camera :func:`tile_bins` results."""
    per_tile = torch.zeros(len(bins), tiles_y * tiles_x, dtype=torch.int64)
    for cam, (tiles, _, counts, _) in enumerate(bins):
        per_tile[cam, tiles] = counts
    ends = torch.cumsum(per_tile.reshape(-1), 0)
    return {
        "tile_width": tiles_x, "tile_height": tiles_y,
        "tiles_per_gauss": torch.stack([b[3] for b in bins]) if bins else torch.zeros(0, n, dtype=torch.int32),
        "flatten_ids": torch.cat([b[1] + cam * n for cam, b in enumerate(bins)]).int(),
        "isect_offsets": (ends - per_tile.reshape(-1)).reshape(len(bins), tiles_y, tiles_x).int(),
        "n_isects": int(ends[-1]) if ends.numel() else 0,
    }


def rasterize_torch_tiled(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near: float = 0.01,
    far: float = 1e10,
    backgrounds: Tensor | None = None,
    sh_degree: int | None = None,
    render_mode: str = "RGB",
    eps2d: float = 0.3,
    antialiased: bool = False,
    tile_size: int = TILE_SIZE,
) -> tuple[Tensor, Tensor, dict]:
    """Render tile by tile in plain PyTorch; differentiable through autograd.

    Same arguments and outputs as :func:`rasterize_dense` (without the diagnostics); the
    meta also holds gsplat's tile bookkeeping, and ``meta["means2d"]`` retains its gradient.
    Each 16×16 tile composites only the Gaussians whose bounding box touches it, as one
    (pixels × Gaussians) tensor operation. Slow, but portable and simple.
    """
    proj, values, bg = _prepare(
        means, quats, scales, opacities, features, viewmats, Ks, width, height, near, far, backgrounds, sh_degree,
        render_mode, eps2d, antialiased,
    )
    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    n_cams, channels = viewmats.shape[0], values.shape[-1]
    pixels = pixel_centers(width, height, values.dtype, values.device)
    pixel_ids = torch.arange(height * width, device=values.device).reshape(height, width)
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    accum, trans, bins = [], [], []
    for cam in range(n_cams):
        bins.append(tile_bins(proj, cam, width, height, tile_size))
        tiles, gauss, counts, _ = bins[-1]
        done_ids, done_vals, done_trans = [], [], []
        for tile, ids in zip(tiles.tolist(), torch.split(gauss, counts.tolist())):
            ty, tx = divmod(tile, tiles_x)
            pix = pixel_ids[ty * tile_size : (ty + 1) * tile_size, tx * tile_size : (tx + 1) * tile_size].reshape(-1)
            alpha, _ = pixel_alphas(pixels[pix], proj.means2d[cam, ids], proj.conics[cam, ids], proj.opacities[cam, ids])
            color, t_final, _ = composite(alpha, values[cam, ids])
            done_ids.append(pix)
            done_vals.append(color)
            done_trans.append(t_final)
        cam_accum = values.new_zeros(height * width, channels)
        cam_trans = values.new_ones(height * width)
        if done_ids:
            index = torch.cat(done_ids)
            cam_accum = cam_accum.index_copy(0, index, torch.cat(done_vals))
            cam_trans = cam_trans.index_copy(0, index, torch.cat(done_trans))
        accum.append(cam_accum.reshape(height, width, channels))
        trans.append(cam_trans.reshape(height, width))
    images, alphas = _finish_images(torch.stack(accum), torch.stack(trans), bg, render_mode)
    meta = _meta(proj, width, height) | {"tile_size": tile_size, "n_cameras": n_cams}
    meta |= _tile_meta(bins, means.shape[0], tiles_x, tiles_y)
    return images, alphas, meta
