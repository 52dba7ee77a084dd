"""Losses and metrics: L1, SSIM (3DGS window), D-SSIM, PSNR, on real photos and known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatfx.io.dataset import load_dataset
from splatfx.core.losses import dssim, gaussian_window_1d, l1, photometric_loss, ssim, ssim_map
from splatfx.recon.metrics import MetricSummary, psnr
from splatfx.recon.metrics import ssim as ssim_metric


def reference_ssim(a: np.ndarray, b: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """SSIM written out pixel by pixel: 2-D Gaussian window, zero padding, mean over pixels and channels."""
    x = np.arange(size) - size // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    h, w, channels = a.shape
    pad = size // 2
    total = 0.0
    for c in range(channels):
        pa = np.pad(a[..., c], pad)
        pb = np.pad(b[..., c], pad)
        for i in range(h):
            for j in range(w):
                wa, wb = pa[i : i + size, j : j + size], pb[i : i + size, j : j + size]
                mu_a, mu_b = (window * wa).sum(), (window * wb).sum()
                var_a = (window * wa * wa).sum() - mu_a**2
                var_b = (window * wb * wb).sum() - mu_b**2
                cov = (window * wa * wb).sum() - mu_a * mu_b
                c1, c2 = 0.01**2, 0.03**2
                total += ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return total / (h * w * channels)


@pytest.fixture(scope="module")
def fern_pair(data_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """Two neighbouring fern photos at 63×47 (real, similar, not identical)."""
    ds = load_dataset(data_dir / "fern", "all", downscale=8)
    return torch.from_numpy(ds.image(0)), torch.from_numpy(ds.image(1))


def test_window_is_the_3dgs_gaussian() -> None:
    w = gaussian_window_1d()
    assert w.shape == (11,)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(w[5] / w[6]) == pytest.approx(math.exp(1 / (2 * 1.5**2)), rel=1e-5)


def test_ssim_of_identical_images_is_one(fern_pair) -> None:
    a, _ = fern_pair
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    assert float(dssim(a, a)) == pytest.approx(0.0, abs=1e-6)


def test_ssim_matches_an_independent_reference_on_real_photos(fern_pair) -> None:
    a, b = (t[:20, :24].double() for t in fern_pair)
    expected = reference_ssim(a.numpy(), b.numpy())
    assert 0.0 < expected < 0.99  # different photos: a meaningful comparison
    assert float(ssim(a, b)) == pytest.approx(expected, abs=1e-9)
    assert float(ssim(a.float(), b.float())) == pytest.approx(expected, abs=1e-4)


def test_ssim_is_symmetric_and_batched(fern_pair) -> None:
    a, b = fern_pair
    assert float(ssim(a, b)) == pytest.approx(float(ssim(b, a)), abs=1e-6)
    batch = ssim_map(torch.stack([a, b]), torch.stack([b, a]))
    assert batch.shape == (2, 3, a.shape[0], a.shape[1])
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(a, b[:-1])


def test_ssim_gradient_matches_finite_differences() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(9, 8, 2, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(9, 8, 2, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: ssim(x, b), (a,))


def test_photometric_loss_is_the_3dgs_mix(fern_pair) -> None:
    a, b = fern_pair
    expected_l1 = float(np.abs(a.numpy().astype(np.float64) - b.numpy()).mean())
    assert float(l1(a, b)) == pytest.approx(expected_l1, rel=1e-5)
    loss, l1_term = photometric_loss(a, b, 0.2)
    assert float(loss) == pytest.approx(0.8 * expected_l1 + 0.2 * (1 - float(ssim(a, b))), rel=1e-5)
    assert float(l1_term) == pytest.approx(expected_l1, rel=1e-5)
    only_l1, _ = photometric_loss(a, b, 0.0)
    assert float(only_l1) == pytest.approx(expected_l1, rel=1e-5)


def test_psnr_known_values(fern_pair) -> None:
    a, b = fern_pair
    assert psnr(a, a) == math.inf
    darker = (a - 0.1).clamp(min=0)
    mse = float(((darker.double() - a.double()) ** 2).mean())
    assert psnr(darker, a) == pytest.approx(-10 * math.log10(mse), rel=1e-9)
    quarter = -10 * math.log10(0.25**2)
    assert psnr(torch.full((4, 4, 3), 0.75), torch.full((4, 4, 3), 0.5)) == pytest.approx(quarter, abs=1e-12)
    # renders are clamped to [0, 1] before scoring
    assert psnr(torch.full((4, 4, 3), 1.5), torch.full((4, 4, 3), 0.75)) == pytest.approx(quarter, abs=1e-12)
    assert 10.0 < psnr(a, b) < 40.0


def test_metric_summary_means(fern_pair) -> None:
    a, b = fern_pair
    summary = MetricSummary()
    summary.add("same", a, a)
    p, s = summary.add("other", b, a)
    assert s == pytest.approx(ssim_metric(b, a))
    out = summary.to_dict()
    assert out["views"] == 2 and out["psnr"] == math.inf
    assert out["ssim"] == pytest.approx((1.0 + s) / 2)
    assert [v["name"] for v in out["per_view"]] == ["same", "other"]


def _reference_loss_and_grad(render: torch.Tensor, target: torch.Tensor, weight: float) -> tuple[float, torch.Tensor]:
    """photometric_loss and its autograd gradient, in float64."""
    x = render.detach().double().requires_grad_(True)
    loss, _ = photometric_loss(x, target.double(), weight)
    loss.backward()
    return float(loss.detach()), x.grad


@pytest.mark.parametrize("weight", [0.2, 0.0, 1.0])
def test_fused_loss_matches_autograd_of_the_reference_on_real_photos(fern_pair, weight: float) -> None:
    """The training loss in compiled kernels: the same value and gradient as autograd through
    photometric_loss (float64), on two real photos and on a render that equals its target in
    places (where L1's gradient is 0)."""
    from splatfx.recon._cpu_loss import fused_photometric_loss

    a, b = fern_pair
    a = a.clone()
    a[10:20, 5:30] = b[10:20, 5:30]
    render = a.clone().requires_grad_(True)
    loss, l1_term = fused_photometric_loss(render, b, weight)
    loss.backward()
    expected, expected_grad = _reference_loss_and_grad(a, b, weight)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(l1_term) == pytest.approx(float(l1(a, b)), rel=1e-5)
    scale = float(expected_grad.abs().max())
    np.testing.assert_allclose(render.grad.double().numpy(), expected_grad.numpy(), rtol=0, atol=1e-4 * scale)
    assert render.grad.dtype == torch.float32 and render.grad.shape == render.shape


@pytest.mark.parametrize("shape", [(5, 7, 3), (12, 40, 1), (97, 33, 3)])
def test_fused_loss_gradient_at_any_size(shape) -> None:
    """Images smaller than the window, one channel, tall: the zero-padded borders match."""
    from splatfx.recon._cpu_loss import fused_photometric_loss

    g = torch.Generator().manual_seed(sum(shape))
    a, b = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    render = a.clone().requires_grad_(True)
    loss, _ = fused_photometric_loss(render, b, 0.2)
    (2.5 * loss).backward()  # the upstream gradient scales it
    expected, expected_grad = _reference_loss_and_grad(a, b, 0.2)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(render.grad.double().numpy(), 2.5 * expected_grad.numpy(), rtol=0,
                               atol=1e-4 * 2.5 * float(expected_grad.abs().max()))


def test_fused_loss_is_deterministic_on_all_threads(fern_pair) -> None:
    """Rows are shared among the kernels' threads; the value and gradient do not depend on it."""
    from splatfx.recon._cpu_loss import fused_photometric_loss

    a, b = fern_pair
    big_a = a.repeat(4, 4, 1).contiguous()  # 252x188: enough rows for every thread
    big_b = b.repeat(4, 4, 1).contiguous()
    results = []
    for _ in range(3):
        render = big_a.clone().requires_grad_(True)
        loss, _ = fused_photometric_loss(render, big_b, 0.2)
        loss.backward()
        results.append((float(loss.detach()), render.grad.numpy().copy()))
    for value, grad in results[1:]:
        assert value == results[0][0]
        assert np.array_equal(grad, results[0][1])
