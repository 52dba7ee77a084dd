"""Edge cases of the CPU rasterizer: culling, degenerate sizes, empty input, batches, bad input,
determinism."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from raster_checks import assert_matches_dense, render_cpu
from raster_scenes import Scene, fern_scene, random_scene, with_culled_gaussians
from splatfx.core.errors import InputError
from splatfx.raster import rasterize
from splatfx.raster.reference import ALPHA_MAX

INPUTS = ("means", "quats", "scales", "opacities", "features", "viewmats", "Ks")


def _fwd_bwd(scene: Scene, **kwargs) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Images, alphas and the gradients of a fixed weighted sum of the images."""
    leaves = scene.leaves(("means", "quats", "scales", "opacities", "features"))
    images, alphas, _ = rasterize(
        leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"], leaves["features"],
        scene.viewmats, scene.Ks, scene.width, scene.height, sh_degree=scene.sh_degree, backend="cpu", **kwargs,
    )
    weights = torch.linspace(-1.0, 1.0, images.numel()).reshape(images.shape)
    ((images * weights).sum() + alphas.sum()).backward()
    return images.detach(), alphas.detach(), {k: v.grad for k, v in leaves.items()}


def test_culled_gaussians_change_nothing():
    """Gaussians behind the camera, nearer than `near`, off-screen or transparent leave the image
    bit-identical and receive exactly zero (finite) gradient."""
    scene = random_scene(10)
    scene = replace(scene, viewmats=scene.viewmats[:1], Ks=scene.Ks[:1])  # the extras are culled for camera 0
    big = with_culled_gaussians(scene)
    images, alphas, grads = _fwd_bwd(scene)
    big_images, big_alphas, big_grads = _fwd_bwd(big)
    assert torch.equal(big_images, images) and torch.equal(big_alphas, alphas)
    n = scene.means.shape[0]
    for name, grad in big_grads.items():
        assert torch.isfinite(grad).all(), f"{name}: non-finite gradient"
        assert torch.equal(grad[n:], torch.zeros_like(grad[n:])), f"{name}: culled Gaussians got a gradient"
        assert torch.equal(grad[:n], grads[name]), f"{name}: visible Gaussians' gradients changed"


def test_gaussian_just_in_front_of_the_near_plane_matches_dense():
    """A Gaussian barely past `near` covers the whole frame with a huge footprint."""
    scene = random_scene(11, n=30)
    centre = torch.linalg.inv(scene.viewmats[0])[:3, 3]
    scene.means[0] = centre + 0.05 * scene.viewmats[0, 2, :3]
    scene.scales[0] = 0.02
    assert_matches_dense(scene)


def test_zero_scales():
    """Zero scales leave only the eps2d low-pass: a finite one-pixel blob, with finite gradients."""
    scene = random_scene(12, n=40)
    scene.scales[::2] = 0.0
    scene.scales[1::4, 0] = 0.0  # flat disks
    assert_matches_dense(scene)
    assert_matches_dense(scene, antialiased=True)
    _, _, grads = _fwd_bwd(scene)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_huge_scales():
    """Gaussians thousands of times larger than the scene: a nearly uniform veil over the frame."""
    scene = random_scene(13, n=40)
    scene.scales[:3] = torch.tensor([1e4, 1e3, 5e3])
    assert_matches_dense(scene, render_mode="RGB+ED")
    _, alphas, grads = _fwd_bwd(scene)
    assert alphas.min() > 0.5
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_single_gaussian_peak_value():
    """One Gaussian centred on a pixel centre gives exactly min(0.99, o)·colour + (1−alpha)·bg there."""
    scene = random_scene(14, n=1)
    cam = scene.viewmats[0]
    fx, fy, cx, cy = (scene.Ks[0, 0, 0], scene.Ks[0, 1, 1], scene.Ks[0, 0, 2], scene.Ks[0, 1, 2])
    depth, px, py = 3.0, 20.5, 17.5  # pixel (x=20, y=17)
    cam_point = torch.tensor([(px - cx) / fx * depth, (py - cy) / fy * depth, depth], dtype=torch.float64)
    scene.means = ((cam[:3, :3].double().T @ (cam_point - cam[:3, 3].double()))[None]).float()
    background = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 0.0]])
    for opacity in (0.6, 1.0):
        scene.opacities = torch.tensor([opacity])
        images, alphas, meta = render_cpu(scene, backgrounds=background)
        alpha = min(ALPHA_MAX, opacity)
        expected = alpha * scene.features[0] + (1 - alpha) * background[0]
        torch.testing.assert_close(meta["means2d"][0, 0], torch.tensor([px, py]), atol=2e-5, rtol=0)
        torch.testing.assert_close(alphas[0, 17, 20, 0], torch.tensor(alpha), atol=2e-6, rtol=0)
        torch.testing.assert_close(images[0, 17, 20], expected, atol=2e-6, rtol=0)
        assert alphas[0, 17, 20, 0] == alphas[0].max(), "the peak must be at the centre pixel"
    assert_matches_dense(scene, backgrounds=background)


def test_empty_scene():
    scene = random_scene(15, n=0, channels=4)
    background = torch.tensor([[0.5, 0.25, 1.0, -1.0], [0.0, 1.0, 2.0, 3.0]])
    images, alphas, grads = _fwd_bwd(scene, backgrounds=background)
    assert images.shape == (2, 48, 64, 4) and alphas.shape == (2, 48, 64, 1)
    assert torch.equal(alphas, torch.zeros_like(alphas))
    assert torch.equal(images, background[:, None, None, :].expand_as(images))
    assert grads["means"].shape == (0, 3) and grads["features"].shape == (0, 4)


def test_camera_batch_with_different_intrinsics():
    """Three cameras of different focal lengths and principal points rendered together equal
    each rendered alone, and the dense reference."""
    scene = random_scene(16, n=150)
    ks = torch.stack([scene.Ks[0], scene.Ks[1], scene.Ks[0].clone()])
    ks[2, 0, 0], ks[2, 1, 1], ks[2, 0, 2], ks[2, 1, 2] = 35.0, 45.0, 40.0, 20.0
    scene = replace(scene, viewmats=torch.stack([scene.viewmats[0], scene.viewmats[1], scene.viewmats[1]]), Ks=ks)
    images, alphas, _ = render_cpu(scene, render_mode="RGB+ED")
    for c in range(3):
        alone = replace(scene, viewmats=scene.viewmats[c : c + 1], Ks=scene.Ks[c : c + 1])
        one_images, one_alphas, _ = render_cpu(alone, render_mode="RGB+ED")
        assert torch.equal(images[c : c + 1], one_images) and torch.equal(alphas[c : c + 1], one_alphas)
    assert not torch.equal(images[1], images[2]), "different intrinsics must give different images"
    assert_matches_dense(scene, render_mode="RGB+ED")


@pytest.mark.parametrize("name", INPUTS + ("backgrounds",))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_names_the_argument(name, bad):
    scene = random_scene(17, n=5)
    kwargs = {"backgrounds": torch.zeros(2, 3)}
    if name == "backgrounds":
        kwargs["backgrounds"][1, 2] = bad
    else:
        tensor = getattr(scene, name).clone()
        tensor.view(-1)[-1] = bad
        setattr(scene, name, tensor)
    with pytest.raises(InputError, match=rf"\b{name}\b"):
        rasterize(*scene.args(), backend="cpu", **kwargs)


def test_zero_quaternion_is_refused():
    scene = random_scene(18, n=5)
    scene.quats[3] = 0.0
    with pytest.raises(InputError, match=r"\bquats\b"):
        rasterize(*scene.args(), backend="cpu")


def test_deterministic(data_dir):
    """Two runs on a real, overlapping scene give bit-identical images and gradients."""
    scene = fern_scene(data_dir, views=(0, 7), scale=0.25, max_points=3000)
    first = _fwd_bwd(scene, render_mode="RGB+ED")
    second = _fwd_bwd(scene, render_mode="RGB+ED")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    for name in first[2]:
        assert torch.equal(first[2][name], second[2][name]), f"{name}: gradients differ between runs"
