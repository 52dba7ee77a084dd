"""Forward pass of the CPU rasterizer against the dense float64 reference.

Random scenes (several seeds, two cameras with different intrinsics) and Gaussians built
from fern's real COLMAP points seen by fern's real cameras; images, alpha and depth agree
to 1e-5 (depth relative to its value).
"""

from __future__ import annotations

import pytest
import torch

from raster_checks import assert_close_images, assert_matches_dense, render_cpu, render_dense
from raster_scenes import fern_scene, random_scene
from splatfx.raster.reference import rasterize_dense, rasterize_torch_tiled


@pytest.fixture(scope="module")
def fern(data_dir):
    """All of fern's sparse points as Gaussians; the central 64×48 pixels of two views at 252×189."""
    return fern_scene(data_dir, views=(0, 10), scale=0.5, window=(64, 48))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_scene_rgb_with_background(seed):
    scene = random_scene(seed)
    backgrounds = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]])
    assert_matches_dense(scene, backgrounds=backgrounds)


@pytest.mark.parametrize("render_mode", ["RGB+ED", "D", "ED"])
def test_random_scene_depth_modes(render_mode):
    assert_matches_dense(random_scene(3), render_mode=render_mode)


def test_sh_degree_3_colours():
    assert_matches_dense(random_scene(4, sh_degree=3))


def test_sh_rendered_below_its_degree():
    scene = random_scene(5, sh_degree=3)
    scene.sh_degree = 1  # a degree-3 model shown at degree 1 uses the first 4 coefficients
    assert_matches_dense(scene)


def test_32_extra_channels_with_background():
    scene = random_scene(6, channels=32)
    backgrounds = torch.linspace(-1.0, 1.0, 64).reshape(2, 32)
    assert_matches_dense(scene, backgrounds=backgrounds)


def test_per_camera_features():
    scene = random_scene(7, channels=5)
    scene.features = torch.stack([scene.features, 1.0 - scene.features])  # (C, N, D)
    assert_matches_dense(scene)


def test_antialiased():
    assert_matches_dense(random_scene(8), antialiased=True)


def test_fern_rgb_and_expected_depth(fern):
    images, alphas, _ = render_cpu(fern, render_mode="RGB+ED")
    ref_images, ref_alphas, meta = render_dense(fern, render_mode="RGB+ED")
    assert ref_alphas.mean() > 0.5, "fern scene should cover most of the frame"
    amb = meta["ambiguous"]
    assert_close_images(alphas, ref_alphas, amb, "fern alpha")
    assert_close_images(images[..., :3], ref_images[..., :3], amb, "fern colour")
    assert_close_images(images[..., 3:], ref_images[..., 3:], amb, "fern expected depth", rtol=1e-5)
    depth_d, _, _ = render_cpu(fern, render_mode="D")
    accumulated = ref_images[..., 3:] * ref_alphas  # D = ED · alpha
    assert_close_images(depth_d, accumulated, amb, "fern accumulated depth", rtol=1e-5)


def test_fern_depth_lies_within_the_scene_bounds(fern):
    images, alphas, _ = render_cpu(fern, render_mode="ED")
    covered = alphas[..., 0] > 0.5
    depth = images[..., 0][covered]
    z = torch.einsum("cij,nj->cni", fern.viewmats[:, :3, :3], fern.means) + fern.viewmats[:, None, :3, 3]
    assert depth.min() >= z[..., 2].min() - 1e-3 and depth.max() <= z[..., 2].max() + 1e-3


def test_torch_tiled_reference_equals_dense():
    """The tiled PyTorch fallback gives the dense result (float64, to rounding)."""
    scene = random_scene(9, channels=4).to(torch.float64)
    backgrounds = torch.rand(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for mode in ("RGB+ED", "D"):
        kwargs = dict(render_mode=mode, backgrounds=backgrounds, antialiased=True)
        tiled, tiled_alpha, meta = rasterize_torch_tiled(*scene.args(), **kwargs)
        dense, dense_alpha, _ = rasterize_dense(*scene.args(), **kwargs)
        torch.testing.assert_close(tiled, dense, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(tiled_alpha, dense_alpha, rtol=1e-10, atol=1e-12)
        assert meta["tiles_per_gauss"].sum() == meta["n_isects"] == meta["flatten_ids"].numel() > 0
        assert meta["isect_offsets"].shape == (2, 3, 4) and meta["isect_offsets"][0, 0, 0] == 0


@pytest.mark.parametrize("window", [(0, 16, 64, 16), (5, 7, 33, 29), (40, 0, 24, 48)])
def test_a_window_is_exactly_that_part_of_the_whole_image(fern, window):
    """``window`` renders part of the image (how large frames are rendered in bands with
    bounded memory): on fern's real points, its pixels are the whole image's, and the
    gradients of a loss on the window are the whole image's gradients of the same loss."""
    from splatfx.raster import rasterize

    x0, y0, w, h = window
    inputs = [t.clone().requires_grad_(True) for t in fern.args()[:5]]
    full, full_alpha, _ = rasterize(*inputs, *fern.args()[5:], sh_degree=fern.sh_degree, backend="cpu",
                                    render_mode="RGB+ED")
    part = full[:, y0:y0 + h, x0:x0 + w]
    weights = torch.rand(part.shape, generator=torch.Generator().manual_seed(0))
    expected = torch.autograd.grad((part * weights).sum() + full_alpha[:, y0:y0 + h, x0:x0 + w].sum(), inputs)
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    image, alpha, _ = rasterize(*inputs, *fern.args()[5:], sh_degree=fern.sh_degree, backend="cpu",
                                render_mode="RGB+ED", window=window)
    torch.testing.assert_close(image, part.detach(), atol=2e-6, rtol=1e-5)  # float32 rounding of the offset
    torch.testing.assert_close(alpha, full_alpha[:, y0:y0 + h, x0:x0 + w].detach(), atol=2e-6, rtol=0.0)
    assert float(alpha.detach().mean()) > 0.05  # the window shows something
    got = torch.autograd.grad((image * weights).sum() + alpha.sum(), inputs)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "features"), got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_a_window_outside_the_image_is_refused(fern):
    from splatfx.raster import rasterize

    with pytest.raises(ValueError, match="window"):
        rasterize(*fern.args(), sh_degree=fern.sh_degree, backend="cpu", window=(60, 0, 10, 10))
