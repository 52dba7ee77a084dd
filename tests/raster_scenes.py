"""Scenes for the rasterizer tests: seeded random Gaussians and real ones from fern's COLMAP points.

The fern scene is built the way 3DGS initialises from structure from motion: one
isotropic Gaussian per sparse point, scale = mean distance to its three nearest
neighbours, colour from the point. Cameras come from fern's ``poses_bounds.npy``, which
shares the COLMAP world frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from splatfx.core.camera import Camera, look_at
from splatfx.io.colmap import read_points3D
from splatfx.raster.views import camera_tensors


@dataclass
class Scene:
    """Raw rasterizer inputs; every tensor float32 unless converted with :meth:`to`."""

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    features: torch.Tensor
    viewmats: torch.Tensor
    Ks: torch.Tensor
    width: int
    height: int
    sh_degree: int | None = None
    extra: dict = field(default_factory=dict)

    def to(self, dtype: torch.dtype) -> "Scene":
        """The same scene with every float tensor converted (e.g. float64 for references)."""
        conv = {k: getattr(self, k).to(dtype) for k in ("means", "quats", "scales", "opacities", "features", "viewmats", "Ks")}
        return replace(self, **conv)

    def args(self) -> tuple:
        """Positional arguments of ``rasterize`` / the references."""
        return (self.means, self.quats, self.scales, self.opacities, self.features, self.viewmats, self.Ks, self.width, self.height)

    def leaves(self, names: tuple[str, ...], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Fresh leaf copies (requires_grad) of the named tensors in ``dtype``."""
        return {n: getattr(self, n).detach().to(dtype).clone().requires_grad_(True) for n in names}


def nearest_neighbour_scales(points: torch.Tensor, k: int = 3, chunk: int = 2048) -> torch.Tensor:
    """Mean distance (N,) from each point to its ``k`` nearest other points."""
    out = []
    for start in range(0, points.shape[0], chunk):
        dist = torch.cdist(points[start : start + chunk], points)
        out.append(dist.topk(k + 1, dim=1, largest=False).values[:, 1:].mean(dim=1))
    return torch.cat(out)


def fern_scene(data_dir: Path, views: tuple[int, ...] = (0, 10), scale: float = 0.25, max_points: int | None = None,
               window: tuple[int, int] | None = None, opacity: float = 0.7, seed: int = 0) -> Scene:
    """Gaussians seeded from fern's sparse points, seen by fern's cameras at ``scale`` × 504×378.

    ``window=(w, h)`` renders only the central w×h pixels of that image (the principal
    point is shifted), which keeps dense references affordable at full point density.
    """
    fern = data_dir / "fern"
    points = read_points3D(fern / "sparse" / "0" / "points3D.bin")
    gen = torch.Generator().manual_seed(seed)
    means = torch.tensor(np.ascontiguousarray(points.xyz), dtype=torch.float32)
    colors = torch.tensor(np.ascontiguousarray(points.rgb), dtype=torch.float32) / 255.0
    if max_points is not None and max_points < means.shape[0]:
        keep = torch.randperm(means.shape[0], generator=gen)[:max_points]
        means, colors = means[keep], colors[keep]
    n = means.shape[0]
    scales = nearest_neighbour_scales(means).clamp(min=1e-3)[:, None].repeat(1, 3)
    poses = np.load(fern / "poses_bounds.npy")
    cameras = [Camera.from_llff(poses[i], 504, 378).scaled(scale) for i in views]
    if window is not None:
        w, h = window
        cameras = [replace(c, width=w, height=h, cx=c.cx - (c.width - w) / 2, cy=c.cy - (c.height - h) / 2)
                   for c in cameras]
    viewmats, ks = camera_tensors(cameras)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    opacities = torch.full((n,), opacity)
    return Scene(means, quats, scales, opacities, colors, viewmats, ks, cameras[0].width, cameras[0].height)


def with_culled_gaussians(scene: Scene) -> Scene:
    """``scene`` plus six Gaussians camera 0 must cull: two behind it, one closer than the near
    plane, two far beyond the sides of the frame and one below 1/255 opacity (appended last)."""
    centre = torch.linalg.inv(scene.viewmats[0])[:3, 3]
    forward, right = scene.viewmats[0, 2, :3], scene.viewmats[0, 0, :3]
    extra = torch.stack([centre - forward, centre - 3 * forward, centre + 0.005 * forward + 0.01 * right,
                         centre + 2 * forward + 40 * right, centre + 2 * forward - 40 * right, centre + 3 * forward])
    n = extra.shape[0]
    gen = torch.Generator().manual_seed(99)
    return replace(
        scene,
        means=torch.cat([scene.means, extra]),
        quats=torch.cat([scene.quats, torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1)]),
        scales=torch.cat([scene.scales, torch.full((n, 3), 0.1)]),
        opacities=torch.cat([scene.opacities, torch.tensor([0.9, 0.9, 0.9, 0.9, 0.9, 0.003])]),
        features=torch.cat([scene.features, torch.rand(n, *scene.features.shape[1:], generator=gen)]),
    )


def random_cameras(width: int = 64, height: int = 48) -> list[Camera]:
    """Two cameras looking at the origin with different focal lengths and principal points."""
    first = look_at(np.array([0.0, 0.0, -4.0]), np.zeros(3), np.array([0.0, -1.0, 0.0]), width, height, 60.0)
    second = look_at(np.array([1.5, -0.8, -3.5]), np.array([0.1, 0.0, 0.2]), np.array([0.0, -1.0, 0.0]), width, height, 80.0)
    first = replace(first, fy=55.0, cx=29.3, cy=25.1)
    second = replace(second, cx=36.0, cy=21.5)
    return [first, second]


def random_scene(seed: int, n: int = 120, channels: int = 3, width: int = 64, height: int = 48,
                 sh_degree: int | None = None) -> Scene:
    """Random anisotropic Gaussians around the origin, some reaching outside the frame.

    Quaternions are left unnormalised and opacities span 0.05–1 so that clamping at
    ``ALPHA_MAX`` and early termination both occur.
    """
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=gen) - 0.5) * torch.tensor([3.0, 2.4, 2.0])
    quats = torch.randn(n, 4, generator=gen) * torch.rand(n, 1, generator=gen).add(0.5)
    scales = torch.exp(torch.empty(n, 3).uniform_(np.log(0.03), np.log(0.35), generator=gen))
    opacities = torch.rand(n, generator=gen) * 0.95 + 0.05
    if sh_degree is None:
        features = torch.rand(n, channels, generator=gen)
    else:
        features = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=gen) * 0.4
    viewmats, ks = camera_tensors(random_cameras(width, height))
    return Scene(means, quats, scales, opacities, features, viewmats, ks, width, height, sh_degree)
