"""The CPU backend's compiled SH colours (splatfx.raster._cpu_sh) against autograd of the torch
evaluation (splatfx.core.sh.eval_sh) in float64: values, the coefficients' gradient and the
means' gradient through the view direction."""

from __future__ import annotations

import pytest
import torch

from splatfx.core.sh import eval_sh
from splatfx.raster._autograd import camera_centers, sh_colors


def reference(means: torch.Tensor, sh: torch.Tensor, degree: int, viewmats: torch.Tensor) -> torch.Tensor:
    """The torch evaluation the kernels replace: clamp(eval_sh + 0.5, 0) along mean − centre."""
    centres = camera_centers(viewmats).to(means.dtype)
    dirs = means.unsqueeze(0) - centres.unsqueeze(1)
    coeffs = sh if sh.dim() == 4 else sh.unsqueeze(0).expand(dirs.shape[0], -1, -1, -1)
    return torch.clamp_min(eval_sh(degree, coeffs, dirs) + 0.5, 0.0)


def scene(seed: int, n: int, cameras: int, k: int, per_camera: bool):
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 2.0
    shape = (cameras, n, k, 3) if per_camera else (n, k, 3)
    sh = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.6  # some colours clamp at 0
    viewmats = torch.eye(4, dtype=torch.float64).repeat(cameras, 1, 1)
    viewmats[:, :3, 3] = torch.randn(cameras, 3, generator=gen, dtype=torch.float64) * 5.0
    weights = torch.randn(cameras, n, 3, generator=gen, dtype=torch.float64)
    return means, sh, viewmats, weights


def gradients(colours_of, means, sh, viewmats, weights, degree, dtype):
    leaves = [means.to(dtype).requires_grad_(True), sh.to(dtype).requires_grad_(True)]
    colours = colours_of(leaves[0], leaves[1], degree, viewmats.to(dtype))
    (colours * weights.to(dtype)).sum().backward()
    return (colours.detach().double(), *(torch.zeros_like(leaf) if leaf.grad is None else leaf.grad.double()
                                         for leaf in leaves))


@pytest.mark.parametrize("degree,k,cameras,per_camera", [
    (0, 1, 1, False), (1, 4, 2, False), (2, 9, 1, False), (3, 16, 3, False),
    (1, 16, 2, False),  # a degree-3 model shown at degree 1: the higher coefficients get no gradient
    (3, 16, 2, True),  # coefficients per camera
])
def test_sh_colours_and_gradients_match_autograd(degree, k, cameras, per_camera) -> None:
    means, sh, viewmats, weights = scene(degree * 10 + k, 500, cameras, k, per_camera)
    ours = gradients(sh_colors, means, sh, viewmats, weights, degree, torch.float32)
    ref = gradients(reference, means, sh, viewmats, weights, degree, torch.float64)
    assert ref[0].eq(0).any() and ref[0].gt(0).any()  # both sides of the clamp are exercised
    for name, got, expected in zip(("colours", "d/d means", "d/d sh"), ours, ref):
        scale = expected.abs().max().item()
        assert scale > 0 or (name == "d/d means" and degree == 0), name
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * max(scale, 1.0)), (
            f"{name}: worst difference {(got - expected).abs().max().item():.3g} (scale {scale:.3g})")
    if k > (degree + 1) ** 2:
        assert ours[2][..., (degree + 1) ** 2:, :].abs().max() == 0


def test_a_mean_at_the_camera_centre_gets_the_dc_colour_and_finite_gradients() -> None:
    means, sh, viewmats, weights = scene(7, 4, 1, 16, False)
    means[2] = camera_centers(viewmats)[0]
    colours, grad_means, grad_sh = gradients(sh_colors, means, sh, viewmats, weights, 3, torch.float32)
    expected = torch.clamp_min(0.28209479177387814 * sh[2, 0] + 0.5, 0.0)
    assert torch.allclose(colours[0, 2], expected, atol=1e-6)
    assert torch.isfinite(grad_means).all() and torch.isfinite(grad_sh).all()
