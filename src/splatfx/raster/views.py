"""Rendering a :class:`~splatfx.core.gaussians.Gaussians` scene through a :class:`~splatfx.core.camera.Camera`.

The helpers every stage shares around :func:`splatfx.raster.rasterize`: where to run
(:func:`resolve_device`), a camera as the renderer's tensors (:func:`camera_tensors`), each
Gaussian's colour from a camera (:func:`sh_colours`) and one view's colour (:func:`render_view`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from splatfx.core.camera import Camera
from splatfx.core.gaussians import Gaussians
from splatfx.core.sh import eval_sh
from splatfx.raster import rasterize


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: the GPU (gsplat) when torch sees one, else the CPU kernels; any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def camera_tensors(cameras: Sequence[Camera], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """World-to-camera matrices (C,4,4) and intrinsics (C,3,3) as float32 tensors: the
    ``viewmats`` and ``Ks`` :func:`~splatfx.raster.rasterize` takes."""
    viewmats = torch.from_numpy(np.stack([c.viewmat() for c in cameras])).float().to(device)
    Ks = torch.from_numpy(np.stack([c.K() for c in cameras])).float().to(device)
    return viewmats, Ks


def sh_colours(gaussians: Gaussians, camera: Camera) -> Tensor:
    """Each Gaussian's SH colour seen from ``camera`` (N,3): ``eval_sh + 0.5``, clamped at 0,
    exactly what the rasterizer computes for SH features."""
    dirs = gaussians.means - torch.tensor(camera.center, dtype=torch.float32)
    return (eval_sh(gaussians.sh_degree, gaussians.sh, dirs) + 0.5).clamp_min(0.0)


@torch.no_grad()
def render_view(gaussians: Gaussians, camera: Camera, background: Tensor, backend: str = "auto") -> Tensor:
    """Colour (H, W, 3) of ``gaussians`` seen by ``camera`` over ``background`` (3,)."""
    viewmats, Ks = camera_tensors([camera], gaussians.device)
    image, _, _ = rasterize(
        gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.sh, viewmats, Ks,
        camera.width, camera.height, backgrounds=background.to(gaussians.device)[None],
        sh_degree=gaussians.sh_degree, backend=backend,
    )
    return image[0]
