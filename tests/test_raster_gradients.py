"""Gradients of the CPU rasterizer against autograd through the dense float64 reference.

The loss is a random weighting of every output value, so each pixel and channel carries its
own cotangent. The reference itself is checked against finite differences in float64.
"""

from __future__ import annotations

import pytest
import torch

from raster_scenes import Scene, random_scene
from splatfx.raster.reference import rasterize_dense

PARAMS = ("means", "quats", "scales", "opacities", "features")
GRAD_RTOL = 1e-3  # per element, relative to the reference gradient
GRAD_ATOL = 1e-4  # per element, relative to the largest reference gradient of that input


def _loss_grads(render, scene: Scene, dtype: torch.dtype, names=PARAMS, backgrounds=None, **kwargs) -> dict:
    """Gradients of ``Σ w·images + Σ v·alphas`` w.r.t. ``names`` (and ``backgrounds``)."""
    leaves = scene.leaves(names, dtype)
    inputs = {n: getattr(scene, n).to(dtype) for n in PARAMS} | leaves
    if backgrounds is not None:
        leaves["backgrounds"] = kwargs["backgrounds"] = backgrounds.to(dtype).clone().requires_grad_(True)
    images, alphas, _ = render(
        inputs["means"], inputs["quats"], inputs["scales"], inputs["opacities"], inputs["features"],
        scene.viewmats.to(dtype), scene.Ks.to(dtype), scene.width, scene.height, sh_degree=scene.sh_degree, **kwargs,
    )
    gen = torch.Generator().manual_seed(1234)
    w_images = torch.randn(images.shape, generator=gen, dtype=torch.float64).to(dtype)
    w_alphas = torch.randn(alphas.shape, generator=gen, dtype=torch.float64).to(dtype)
    ((images * w_images).sum() + (alphas * w_alphas).sum()).backward()
    return {n: leaf.grad for n, leaf in leaves.items()}


def _cpu(*args, **kwargs):
    from splatfx.raster import rasterize

    return rasterize(*args, backend="cpu", **kwargs)


def assert_grads_match(scene: Scene, names=PARAMS, backgrounds=None, **kwargs) -> None:
    """float32 CPU-backend gradients equal float64 dense-reference gradients, input by input."""
    ours = _loss_grads(_cpu, scene, torch.float32, names, backgrounds, **kwargs)
    ref = _loss_grads(rasterize_dense, scene, torch.float64, names, backgrounds, **kwargs)
    for name, expected in ref.items():
        got = ours[name]
        assert got is not None, f"no gradient reached {name}"
        assert got.shape == expected.shape, f"{name}: gradient shape {tuple(got.shape)} != {tuple(expected.shape)}"
        scale = expected.abs().max().item()
        assert scale > 0, f"{name}: reference gradient is zero, the test would be vacuous"
        err = (got.double() - expected).abs() - GRAD_RTOL * expected.abs()
        worst = int(err.argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), err.shape))
        assert err.reshape(-1)[worst] <= GRAD_ATOL * scale, (
            f"d loss/d {name}{list(idx)}: got {got[idx].item():.6g}, reference {expected[idx].item():.6g} "
            f"(largest reference gradient {scale:.3g})"
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_rgb_with_background(seed):
    backgrounds = torch.tensor([[0.1, 0.6, 0.3], [0.9, 0.2, 0.5]])
    assert_grads_match(random_scene(seed, n=80), backgrounds=backgrounds)


def test_sh_degree_3():
    assert_grads_match(random_scene(2, n=80, sh_degree=3))


def test_32_extra_channels():
    backgrounds = torch.linspace(0.0, 1.0, 64).reshape(2, 32)
    assert_grads_match(random_scene(3, n=80, channels=32), backgrounds=backgrounds)


def test_expected_depth_and_colour():
    assert_grads_match(random_scene(4, n=80), render_mode="RGB+ED")


def test_antialiased():
    assert_grads_match(random_scene(5, n=80), antialiased=True)


def test_reference_matches_finite_differences():
    """The ground truth's autograd equals central differences in float64 (SH degree 1 colours)."""
    scene = random_scene(6, n=6, width=12, height=10, sh_degree=1).to(torch.float64)
    scene.scales = scene.scales * 4.0  # a few pixels wide at this resolution
    scene.opacities = scene.opacities.clamp(min=0.3)
    backgrounds = torch.tensor([[0.2, 0.4, 0.6], [0.5, 0.5, 0.5]], dtype=torch.float64)

    def render(means, quats, scales, opacities, features, bg):
        images, alphas, _ = rasterize_dense(
            means, quats, scales, opacities, features, scene.viewmats, scene.Ks, scene.width, scene.height,
            sh_degree=1, backgrounds=bg, render_mode="RGB+ED", antialiased=True,
        )
        return images, alphas

    inputs = tuple(t.clone().requires_grad_(True) for t in (*(getattr(scene, n) for n in PARAMS), backgrounds))
    images, alphas = render(*inputs)
    assert alphas.max() > 0.3, "the test scene must be visible"
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
