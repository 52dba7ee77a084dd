"""The one differentiable Gaussian rasterizer: :func:`rasterize`.

It follows gsplat 1.5.3's ``rasterization()`` (pinhole cameras, non-packed layout) and
runs on one of two backends: compiled CPU kernels (numba, everywhere) or gsplat's CUDA
kernels (where a GPU is present). See ``docs/raster.md`` for the design and profile.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from splatfx.core.errors import InputError
from splatfx.raster._autograd import rasterize_cpu
from splatfx.raster._cpu_checks import count_nonfinite, count_zero_rows
from splatfx.raster._gsplat import gsplat_available, rasterize_gsplat
from splatfx.core.sh import MAX_SH_DEGREE

__all__ = ["rasterize", "RENDER_MODES", "BACKENDS"]

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
BACKENDS = ("auto", "cpu", "gsplat")
_SOURCE = "rasterize"


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,  # noqa: N803 (gsplat's name)
    width: int,
    height: int,
    *,
    near: float = 0.01,
    far: float = 1e10,
    backgrounds: Tensor | None = None,
    sh_degree: int | None = None,
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
    eps2d: float = 0.3,
    antialiased: bool = False,
    absgrad: bool = False,
    backend: Literal["auto", "cpu", "gsplat"] = "auto",
    window: tuple[int, int, int, int] | None = None,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Rasterize N 3D Gaussians into C pinhole images, differentiably.

    Each Gaussian is projected with the EWA approximation (the pinhole Jacobian is taken
    at ``x/z, y/z`` clamped to the image plus 30 % of the half field of view per side,
    as gsplat does), low-pass filtered by adding ``eps2d`` to the 2D covariance, culled
    when its depth is outside ``(near, far)``, its opacity is below 1/255 or its
    opacity-aware 3-sigma box misses the image, and composited front to back per
    16×16 tile. For pixel centre ``p = (x + ½, y + ½)`` and a Gaussian with 2D mean ``μ``
    and conic ``Q = Σ₂⁻¹``: ``σ = ½ (μ−p)ᵀ Q (μ−p)``, ``α = min(0.99, o·exp(−σ))``;
    ``α < 1/255`` (or ``σ < 0``) is skipped, and compositing stops *before* a Gaussian
    that would bring the transmittance ``T`` to ≤ 1e-4. The pixel value is
    ``Σ_i c_i α_i T_i + T·background`` and the alpha is ``1 − T``. Depth ties are broken
    by Gaussian index, so the output is deterministic.

    .. note::
        **Features.** With ``sh_degree=None``, ``features`` are arbitrary channels per
        Gaussian, ``(N, D)``, or per camera and Gaussian, ``(C, N, D)``: colour, depth,
        motion vectors, ids, masks … any D (the CPU backend has no channel limit; gsplat
        renders D > 32 in chunks). With ``sh_degree=d``, ``features`` are SH coefficients
        ``(N, K, 3)`` or ``(C, N, K, 3)`` with ``K ≥ (d+1)²`` (only the first (d+1)² are
        used): colour is evaluated per camera along ``mean − camera centre`` with
        :func:`splatfx.core.sh.eval_sh`, plus 0.5, clamped at 0.

    .. note::
        **Render modes.** ``"RGB"`` renders ``features``; ``"D"`` the accumulated z-depth
        ``Σ w_i z_i``; ``"ED"`` the expected depth ``Σ w_i z_i / Σ w_i`` (divided by
        ``max(alpha, 1e-10)``); ``"RGB+D"`` and ``"RGB+ED"`` append that depth as the last
        channel. Depth channels have a zero background.

    .. note::
        **Antialiasing.** ``antialiased=True`` multiplies each opacity by
        ``sqrt(det Σ₂ / det(Σ₂ + eps2d·I))`` (Mip-Splatting's compensation; ``Σ₂`` before
        the low-pass), which keeps small Gaussians from brightening when blurred.

    .. note::
        **Gradients.** Every floating input except ``viewmats`` and ``Ks`` receives a
        gradient: means, quats, scales, opacities, features (per channel, or through the
        SH evaluation to the coefficients and, via the view direction, to the means) and
        backgrounds. Cameras are treated as constants. ``meta["means2d"]`` is the
        projected mean tensor (C, N, 2) in pixels; when it requires grad, ``retain_grad``
        has been called so ``meta["means2d"].grad`` holds ∂loss/∂means2d after
        ``backward()`` (the densification signal). With ``absgrad=True`` the backward pass
        also sets ``meta["means2d"].absgrad``: the per-pixel gradients summed in absolute
        value (AbsGS), as gsplat does.

    .. note::
        **Backends.** ``"cpu"``: numba kernels (parallel on all cores; float32; inputs
        must be on the CPU). ``"gsplat"``: ``gsplat.rasterization`` (CUDA tensors; needs
        gsplat and a GPU). ``"auto"``: gsplat for CUDA tensors when available, the CPU
        otherwise. The backends agree except that gsplat clamps alpha at 0.999 rather
        than 0.99 and bins with a slightly looser tile rectangle (``tiles_per_gauss``).

    Args:
        means: Gaussian centres in world space. (N, 3)
        quats: Rotations as quaternions (w, x, y, z); normalised inside, must be non-zero. (N, 4)
        scales: Standard deviations along the rotated axes (not log-scales). (N, 3)
        opacities: Opacities in [0, 1] (after the sigmoid). (N,)
        features: Channels (N, D) / (C, N, D), or SH coefficients (N, K, 3) / (C, N, K, 3)
            when ``sh_degree`` is given.
        viewmats: World-to-camera matrices in OpenCV axes (x right, y down, z forward). (C, 4, 4)
        Ks: Pinhole intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels. (C, 3, 3)
        width: Image width in pixels.
        height: Image height in pixels.
        near: Gaussians with camera depth ≤ ``near`` are culled. Default 0.01.
        far: Gaussians with camera depth ≥ ``far`` are culled. Default 1e10.
        backgrounds: Colour behind the Gaussians, per camera, one value per feature
            channel. (C, D). Default None (zero).
        sh_degree: SH degree 0–3 to evaluate, or None when ``features`` are plain channels.
        render_mode: One of ``"RGB"``, ``"D"``, ``"ED"``, ``"RGB+D"``, ``"RGB+ED"``.
        eps2d: Added to the diagonal of every 2D covariance (pixels²). Default 0.3.
        antialiased: Apply the Mip-Splatting opacity compensation. Default False.
        absgrad: Also compute ``meta["means2d"].absgrad`` in backward. Default False.
        backend: ``"auto"``, ``"cpu"`` or ``"gsplat"``.
        window: ``(x0, y0, w, h)``: only this rectangle of the ``width``×``height`` image,
            its pixels exactly as the whole image has them (the projection, its clamp and
            the culling are the whole image's; only binning and compositing are limited to
            the window). The CPU backend's memory then follows the window, so a large image
            can be rendered in bands. The outputs are window-sized. Default None (the image).

    Returns:
        A tuple:

        **images**: Rendered channels, float32. (C, height, width, X) with X = D for
        "RGB", 1 for "D"/"ED", D + 1 for "RGB+D"/"RGB+ED" (3 stands for D with SH).

        **alphas**: Accumulated opacity ``1 − T``, float32. (C, height, width, 1)

        **meta**: Intermediate results (non-packed, as gsplat's ``packed=False``):
        ``radii`` (C, N, 2) int32 (0 where culled), ``means2d`` (C, N, 2), ``depths``
        (C, N), ``conics`` (C, N, 3) = (Q₀₀, Q₀₁, Q₁₁), ``opacities`` (C, N) (after
        compensation), ``compensations`` (C, N) or None, ``tile_size``, ``tile_width``,
        ``tile_height``, ``tiles_per_gauss`` (C, N), ``isect_offsets`` (C, tile_height,
        tile_width), ``flatten_ids`` (n_isects,) (entries ``c·N + g``, per tile front to
        back), ``width``, ``height``, ``n_cameras``, ``n_batches`` (1), ``camera_ids`` and
        ``gaussian_ids`` (None: not packed), and ``backend``.

    Raises:
        InputError: an input holds NaN or infinity, or a quaternion is zero.
        ValueError: shapes do not match, or an argument is out of range.
        RuntimeError: ``backend="gsplat"`` without CUDA and gsplat.

    Example:
        >>> means = torch.tensor([[0.0, 0.0, 2.0]])
        >>> quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
        >>> scales = torch.full((1, 3), 0.05)
        >>> opacities = torch.tensor([0.8])
        >>> colors = torch.tensor([[1.0, 0.5, 0.0]])
        >>> viewmats = torch.eye(4)[None]
        >>> Ks = torch.tensor([[[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]]])
        >>> images, alphas, meta = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, 64, 64)
        >>> images.shape, alphas.shape
        (torch.Size([1, 64, 64, 3]), torch.Size([1, 64, 64, 1]))
    """
    if backend not in BACKENDS:
        raise ValueError(f"rasterize: backend must be one of {BACKENDS}, got {backend!r}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"rasterize: render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    inputs = _validate(
        means, quats, scales, opacities, features, viewmats, Ks, width, height, backgrounds, sh_degree,
        near, far, eps2d,
    )
    if window is not None:
        window = _check_window(window, int(width), int(height))
        if absgrad:
            raise ValueError("rasterize: absgrad is for training on whole images; it does not take a window")
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda and gsplat_available())
    kwargs = dict(
        near=float(near), far=float(far), sh_degree=sh_degree, render_mode=render_mode, eps2d=float(eps2d),
        antialiased=bool(antialiased), absgrad=bool(absgrad),
    )
    if use_gsplat:
        if not gsplat_available():
            raise RuntimeError("rasterize: backend='gsplat' needs the gsplat package and a CUDA GPU; use backend='cpu'")
        devices = {t.device for t in inputs.values() if t is not None}
        if len(devices) != 1 or next(iter(devices)).type != "cuda":
            raise ValueError("rasterize: backend='gsplat' needs every tensor on the same CUDA device")
        images, alphas, meta = rasterize_gsplat(**inputs, width=int(width), height=int(height), **kwargs)
        if window is not None:  # GPU memory is not the bound here: render the image and cut the window
            x0, y0, w, h = window
            images, alphas = images[:, y0:y0 + h, x0:x0 + w], alphas[:, y0:y0 + h, x0:x0 + w]
        return images, alphas, meta
    if any(t is not None and t.device.type != "cpu" for t in inputs.values()):
        if backend == "auto":
            raise RuntimeError("rasterize: GPU tensors need gsplat with CUDA (pip install gsplat), or move them to the CPU")
        raise ValueError("rasterize: backend='cpu' needs CPU tensors (move them with .cpu(), or use backend='gsplat')")
    return rasterize_cpu(**inputs, width=int(width), height=int(height), window=window, **kwargs)


def _check_window(window: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, w, h = (int(v) for v in window)
    if w < 1 or h < 1 or x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        raise ValueError(f"rasterize: window {tuple(window)} must be a non-empty (x0, y0, w, h) inside the "
                         f"{width}x{height} image")
    return x0, y0, w, h


def _validate(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None,
    sh_degree: int | None,
    near: float,
    far: float,
    eps2d: float,
) -> dict[str, Tensor | None]:
    """Check shapes, ranges and finiteness; return the tensors as float32 keyed by argument name."""
    named = {
        "means": means, "quats": quats, "scales": scales, "opacities": opacities, "features": features,
        "viewmats": viewmats, "Ks": ks, "backgrounds": backgrounds,
    }
    for name, t in named.items():
        if t is None and name == "backgrounds":
            continue
        if not isinstance(t, Tensor):
            raise ValueError(f"rasterize: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"rasterize: {name} must be a floating-point tensor, got {t.dtype}")
    for name, value in (("width", width), ("height", height)):
        if int(value) != value or int(value) <= 0:
            raise ValueError(f"rasterize: {name} must be a positive integer, got {value!r}")
    if not (near < far) or eps2d < 0:
        raise ValueError(f"rasterize: need near < far and eps2d ≥ 0, got near={near}, far={far}, eps2d={eps2d}")

    if means.dim() != 2 or means.shape[1] != 3:
        raise ValueError(f"rasterize: means must have shape (N, 3), got {tuple(means.shape)}")
    n = means.shape[0]
    _expect_shape("quats", quats, (n, 4))
    _expect_shape("scales", scales, (n, 3))
    _expect_shape("opacities", opacities, (n,))
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4) or viewmats.shape[0] == 0:
        raise ValueError(f"rasterize: viewmats must have shape (C, 4, 4) with C ≥ 1, got {tuple(viewmats.shape)}")
    c = viewmats.shape[0]
    _expect_shape("Ks", ks, (c, 3, 3))
    if sh_degree is None:
        if not (features.dim() == 2 and features.shape[0] == n) and not (
            features.dim() == 3 and features.shape[:2] == (c, n)
        ):
            raise ValueError(
                f"rasterize: features must have shape (N, D) = ({n}, D) or (C, N, D) = ({c}, {n}, D) "
                f"when sh_degree is None, got {tuple(features.shape)}"
            )
        n_ch = features.shape[-1]
    else:
        if int(sh_degree) != sh_degree or not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"rasterize: sh_degree must be None or 0..{MAX_SH_DEGREE}, got {sh_degree!r}")
        ok = (features.dim() == 3 and features.shape[0] == n) or (features.dim() == 4 and features.shape[:2] == (c, n))
        if not ok or features.shape[-1] != 3:
            raise ValueError(
                f"rasterize: SH features must have shape (N, K, 3) = ({n}, K, 3) or (C, N, K, 3), "
                f"got {tuple(features.shape)}"
            )
        if features.shape[-2] < (sh_degree + 1) ** 2:
            raise ValueError(
                f"rasterize: sh_degree {sh_degree} needs K ≥ {(sh_degree + 1) ** 2} coefficients, got {features.shape[-2]}"
            )
        n_ch = 3
    if backgrounds is not None:
        _expect_shape("backgrounds", backgrounds, (c, n_ch))

    for name, t in named.items():
        if t is not None:
            _require_finite(name, t)
    zero_quats = _count_zero_rows(quats.detach())
    if zero_quats:
        raise InputError(_SOURCE, f"quats contains {zero_quats} zero quaternion{'s' if zero_quats != 1 else ''}")
    return {("ks" if name == "Ks" else name): (None if t is None else t.to(torch.float32)) for name, t in named.items()}


def _numpy_view(t: Tensor) -> np.ndarray | None:
    """A numpy view of a detached CPU float32/float64 tensor (contiguous), or None for other tensors."""
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
        return None
    return t.detach().contiguous().numpy()


def _count_zero_rows(q: Tensor) -> int:
    """Number of all-zero rows of an (N, 4) tensor."""
    a = _numpy_view(q)
    return int((q == 0).all(dim=-1).sum()) if a is None else count_zero_rows(a)


def _require_finite(name: str, t: Tensor) -> None:
    """Raise InputError naming ``name`` and the count when ``t`` holds NaN or ±inf.

    CPU float32/float64 tensors are checked in one compiled pass (no temporaries, no
    torch thread pool); others with torch.
    """
    a = _numpy_view(t)
    bad = int((~torch.isfinite(t.detach())).sum()) if a is None else count_nonfinite(a.reshape(-1))
    if bad:
        raise InputError(_SOURCE, f"{name} contains {bad} non-finite value{'s' if bad != 1 else ''}")


def _expect_shape(name: str, t: Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"rasterize: {name} must have shape {shape}, got {tuple(t.shape)}")
