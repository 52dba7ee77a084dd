"""Projection (means2d, conics, depths, radii, opacities) against gsplat's own PyTorch code.

gsplat's ``_fully_fused_projection`` runs on the CPU in float64 and gives the screen-space
Gaussians; the radii follow gsplat's CUDA kernel (opacity-aware box, culled below 1/255
opacity), rebuilt here from gsplat's ``_persp_proj`` covariances. Both the CPU backend and
the dense reference's projection must agree with it.
"""

from __future__ import annotations

import math

import pytest
import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _persp_proj, _quat_scale_to_covar_preci, _world_to_cam

from raster_scenes import Scene, fern_scene, random_scene, with_culled_gaussians
from splatfx.raster.reference import project_gaussians

EPS2D, NEAR, FAR = 0.3, 0.01, 1e10


def gsplat_projection(scene: Scene, antialiased: bool) -> dict[str, torch.Tensor]:
    """Expected meta (float64) from gsplat's reference PyTorch projection."""
    s = scene.to(torch.float64)
    covars, _ = _quat_scale_to_covar_preci(s.quats, s.scales, compute_preci=False)
    _, means2d, depths, conics, comps = _fully_fused_projection(
        s.means, covars, s.viewmats, s.Ks, s.width, s.height, eps2d=EPS2D, near_plane=NEAR, far_plane=FAR,
        calc_compensations=True,
    )
    means_c, covars_c = _world_to_cam(s.means, covars, s.viewmats)
    _, cov2d = _persp_proj(means_c, covars_c, s.Ks, s.width, s.height)
    var = torch.stack([cov2d[..., 0, 0], cov2d[..., 1, 1]], dim=-1) + EPS2D
    det = var[..., 0] * var[..., 1] - cov2d[..., 0, 1] ** 2
    opacities = s.opacities[None] * (comps if antialiased else torch.ones_like(depths))
    extend = torch.sqrt(2.0 * torch.log(opacities.clamp(min=1 / 255) * 255.0)).clamp(max=3.33)
    radius = torch.ceil(extend[..., None] * var.sqrt())
    lo, hi = means2d - radius, means2d + radius
    visible = (
        (depths > NEAR) & (depths < FAR) & (det > 0) & (opacities >= 1 / 255) & (radius > 0).any(-1)
        & (hi[..., 0] > 0) & (lo[..., 0] < s.width) & (hi[..., 1] > 0) & (lo[..., 1] < s.height)
    )
    radii = torch.where(visible[..., None], radius, 0).to(torch.int32)
    return {"means2d": means2d, "conics": conics, "depths": depths, "radii": radii, "opacities": opacities}


def assert_projection_matches(meta: dict, expected: dict, rtol: float) -> None:
    """Same culling and radii exactly; positions, conics, depths and opacities to ``rtol``."""
    radii = meta["radii"]
    assert radii.shape == expected["radii"].shape, f"radii shape {tuple(radii.shape)}"
    visible = (expected["radii"] > 0).all(-1)
    culled_differently = ((radii > 0).all(-1) != visible).sum().item()
    assert culled_differently == 0, f"{culled_differently} (camera, Gaussian) pairs culled differently from gsplat"
    mismatch = (radii.long() != expected["radii"].long()).any(-1)
    assert not mismatch.any(), f"radii differ for {mismatch.sum().item()} pairs, first {torch.nonzero(mismatch)[0].tolist()}"
    for key in ("means2d", "conics", "depths", "opacities"):
        got, want = meta[key].double()[visible], expected[key][visible]
        scale = want.abs().max().item()
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale, msg=lambda m, k=key: f"{k}: {m}")


@pytest.fixture(scope="module")
def fern_full(data_dir):
    return with_culled_gaussians(fern_scene(data_dir, views=(0, 5, 19), scale=0.5))


def _scenes(fern_full):
    return {"random": with_culled_gaussians(random_scene(0, n=300)), "fern": fern_full}


@pytest.mark.parametrize("antialiased", [False, True])
@pytest.mark.parametrize("which", ["random", "fern"])
def test_cpu_projection_matches_gsplat(fern_full, which, antialiased):
    from splatfx.raster import rasterize

    scene = _scenes(fern_full)[which]
    with torch.no_grad():
        _, _, meta = rasterize(*scene.args(), antialiased=antialiased, eps2d=EPS2D, near=NEAR, far=FAR, backend="cpu")
    expected = gsplat_projection(scene, antialiased)
    assert (expected["radii"] > 0).all(-1).float().mean() > 0.5, "most Gaussians should be visible"
    assert not (expected["radii"][:, -6:] > 0).all(-1)[0].any(), "the added Gaussians must be culled in camera 0"
    assert_projection_matches(meta, expected, rtol=1e-5)


@pytest.mark.parametrize("antialiased", [False, True])
@pytest.mark.parametrize("which", ["random", "fern"])
def test_reference_projection_matches_gsplat(fern_full, which, antialiased):
    scene = _scenes(fern_full)[which].to(torch.float64)
    proj = project_gaussians(scene.means, scene.quats, scene.scales, scene.opacities, scene.viewmats, scene.Ks,
                             scene.width, scene.height, NEAR, FAR, EPS2D, antialiased)
    meta = {k: getattr(proj, k) for k in ("means2d", "conics", "depths", "radii", "opacities")}
    assert_projection_matches(meta, gsplat_projection(scene, antialiased), rtol=1e-10)


def test_jacobian_clamp_applies_off_screen():
    """A wide Gaussian beyond the clamp margin keeps gsplat's clamped footprint, in both renderers."""
    from splatfx.raster import rasterize

    scene = random_scene(0, n=1)
    scene.means = torch.tensor([[3.6, 0.0, 0.0]])
    scene.scales = torch.tensor([[3.0, 0.1, 0.1]])
    scene.opacities = torch.tensor([0.99])
    cam = scene.viewmats[0, :3, :3] @ scene.means[0] + scene.viewmats[0, :3, 3]
    fx, cx = scene.Ks[0, 0, 0], scene.Ks[0, 0, 2]
    assert cam[0] / cam[2] > (scene.width - cx) / fx + 0.3 * 0.5 * scene.width / fx, "x/z must be clamped"
    expected = gsplat_projection(scene, False)
    assert expected["radii"][0, 0].min() > 0, "the Gaussian must reach into camera 0's image"
    d = scene.to(torch.float64)
    proj = project_gaussians(d.means, d.quats, d.scales, d.opacities, d.viewmats, d.Ks, d.width, d.height)
    assert math.isclose(proj.conics[0, 0, 0].item(), expected["conics"][0, 0, 0].item(), rel_tol=1e-10)
    with torch.no_grad():
        _, _, meta = rasterize(*scene.args(), backend="cpu")
    assert math.isclose(meta["conics"][0, 0, 0].item(), expected["conics"][0, 0, 0].item(), rel_tol=1e-5)
