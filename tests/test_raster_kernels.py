"""Focused tests of the CPU rasterizer kernels: closed forms, gradients, determinism, errors.

The broad comparisons against the dense reference live in the other ``test_raster_*``
files; these pin down the kernels themselves with checks that need no reference.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import torch
from PIL import Image

from splatfx.core.camera import Camera
from splatfx.io.colmap import read_points3D
from splatfx.core.errors import InputError
from splatfx.raster import rasterize
from splatfx.raster.views import camera_tensors

NAMES = ("means", "quats", "scales", "opacities", "features", "backgrounds")


def _pinhole(width: int, height: int, f: float, n_cameras: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras at the origin looking down +z (a small sideways step and turn for each extra one)."""
    viewmats = torch.eye(4).repeat(n_cameras, 1, 1)
    for c in range(1, n_cameras):
        a = 0.05 * c
        viewmats[c, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        viewmats[c, :3, 3] = torch.tensor([0.03 * c, -0.02 * c, 0.05 * c])
    ks = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]]).repeat(n_cameras, 1, 1)
    return viewmats, ks


def _random_scene(n: int, width: int, height: int, n_cameras: int = 2, channels: int = 3, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    f = 0.8 * width
    z = 2.0 + 3.0 * torch.rand(n, generator=gen)
    xy = (torch.rand(n, 2, generator=gen) - 0.5) * 1.2 * torch.tensor([width, height]) / f * z[:, None]
    viewmats, ks = _pinhole(width, height, f, n_cameras)
    return {
        "means": torch.cat([xy, z[:, None]], 1),
        "quats": torch.randn(n, 4, generator=gen),
        "scales": torch.exp(torch.randn(n, 3, generator=gen) * 0.4) * 1.5 * z[:, None] / f,
        "opacities": torch.sigmoid(2 * torch.randn(n, generator=gen) + 1),
        "features": torch.rand(n, channels, generator=gen),
        "viewmats": viewmats,
        "Ks": ks,
        "backgrounds": torch.rand(n_cameras, channels, generator=gen),
    }


def _render(scene: dict, width: int, height: int, **kwargs):
    return rasterize(
        scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["features"], scene["viewmats"],
        scene["Ks"], width, height, backgrounds=scene.get("backgrounds"), backend="cpu", **kwargs,
    )


# --------------------------------------------------------------------------- closed forms


def test_single_gaussian_matches_closed_form():
    """One isotropic Gaussian seen head-on: every pixel is o·exp(−d²/2σ²) over the background."""
    size, f, z, s, o = 33, 100.0, 2.0, 0.05, 0.8
    viewmats, ks = _pinhole(size, size, f)
    color, bg = torch.tensor([[0.9, 0.4, 0.1]]), torch.tensor([[0.2, 0.3, 0.5]])
    images, alphas, meta = rasterize(
        torch.tensor([[0.0, 0.0, z]]), torch.tensor([[2.0, 0.0, 0.0, 0.0]]), torch.full((1, 3), s), torch.tensor([o]),
        color, viewmats, ks, size, size, backgrounds=bg, backend="cpu",
    )
    var = (f * s / z) ** 2 + 0.3  # projected variance plus the eps2d low-pass
    centre = size / 2  # the mean lands on the centre of pixel (16, 16)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    alpha = o * np.exp(-0.5 * ((xx - centre) ** 2 + (yy - centre) ** 2) / var)
    alpha = np.where(alpha < 1 / 255, 0.0, np.minimum(alpha, 0.99))
    expected = alpha[..., None] * color.numpy() + (1 - alpha[..., None]) * bg.numpy()
    np.testing.assert_allclose(alphas[0, ..., 0].numpy(), alpha, rtol=0, atol=2e-7)
    np.testing.assert_allclose(images[0].numpy(), expected, rtol=0, atol=3e-7)
    assert images[0, 16, 16].tolist() == pytest.approx((o * color + (1 - o) * bg)[0].tolist(), abs=1e-7)
    radius = math.ceil(math.sqrt(2 * math.log(255 * o)) * math.sqrt(var))
    assert meta["radii"][0, 0].tolist() == [radius, radius]
    assert meta["conics"][0, 0].tolist() == pytest.approx([1 / var, 0.0, 1 / var], rel=1e-6)
    assert meta["depths"][0, 0].item() == pytest.approx(z)


def test_opaque_stack_stops_at_transmittance_floor():
    """Identical opaque layers: each keeps 1% of the light; the layer that would pass T ≤ 1e-4 is excluded."""
    n = 5
    viewmats, ks = _pinhole(16, 16, 50.0)
    means = torch.tensor([[0.0, 0.0, 2.0 + 0.1 * i] for i in range(n)])
    colors = torch.arange(1.0, n + 1.0)[:, None]
    images, alphas, _ = rasterize(
        means, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.full((n, 3), 1.0), torch.ones(n), colors,
        viewmats, ks, 16, 16, backend="cpu",
    )
    # α is clamped to 0.99: T goes 1 → 1e-2 → 1e-4 (≤ 1e-4: the second layer is refused)
    assert images[0, 8, 8, 0].item() == pytest.approx(0.99 * 1.0, rel=1e-6)
    assert alphas[0, 8, 8, 0].item() == pytest.approx(0.99, rel=1e-6)


# --------------------------------------------------------------------------- gradients


def _smooth_scene(sh_degree: int | None = None) -> tuple[dict, int, int]:
    """Large, half-transparent Gaussians over a tiny image: no pixel sits at a 1/255 cut or the T floor."""
    gen = torch.Generator().manual_seed(3)
    width, height, f, n = 9, 7, 20.0, 4
    viewmats, ks = _pinhole(width, height, f, n_cameras=2)
    means = torch.cat([(torch.rand(n, 2, generator=gen) - 0.5) * 0.3, 2.0 + torch.rand(n, 1, generator=gen)], 1)
    features = torch.rand(n, 3, generator=gen) if sh_degree is None else 0.3 * torch.randn(n, 9, 3, generator=gen)
    scene = {
        "means": means,
        "quats": torch.randn(n, 4, generator=gen),
        "scales": (0.4 + 0.3 * torch.rand(n, 3, generator=gen)) * torch.tensor([1.0, 0.8, 0.5]),
        "opacities": 0.25 + 0.3 * torch.rand(n, generator=gen),
        "features": features,
        "viewmats": viewmats,
        "Ks": ks,
        "backgrounds": torch.rand(2, 3, generator=gen),
    }
    return scene, width, height


@pytest.mark.parametrize("antialiased", [False, True])
@pytest.mark.parametrize("sh_degree", [None, 2])
def test_gradients_match_central_differences(antialiased: bool, sh_degree: int | None):
    """⟨∇L, d⟩ from the hand-written backward equals (L(x+hd) − L(x−hd))/2h for every input."""
    scene, width, height = _smooth_scene(sh_degree)
    gen = torch.Generator().manual_seed(7)
    w_img = torch.randn(2, height, width, 3, generator=gen, dtype=torch.float64)
    w_alpha = torch.randn(2, height, width, 1, generator=gen, dtype=torch.float64)

    def loss(values: dict) -> torch.Tensor:
        images, alphas, _ = _render(values, width, height, antialiased=antialiased, sh_degree=sh_degree)
        return (images.double() * w_img).sum() + (alphas.double() * w_alpha).sum()

    leaves = {k: (v.clone().requires_grad_(k in NAMES)) for k, v in scene.items()}
    loss(leaves).backward()
    steps = {"means": 1e-3, "quats": 1e-3, "scales": 1e-3, "opacities": 1e-3, "features": 1e-2, "backgrounds": 1e-2}
    for name in NAMES:
        direction = torch.randn(scene[name].shape, generator=gen)
        analytic = (leaves[name].grad.double() * direction.double()).sum().item()
        h = steps[name]
        plus = {**scene, name: scene[name] + h * direction}
        minus = {**scene, name: scene[name] - h * direction}
        numeric = ((loss(plus) - loss(minus)) / (2 * h)).item()
        assert numeric == pytest.approx(analytic, rel=3e-3, abs=2e-3), name


def test_means2d_grad_and_absgrad():
    """``meta["means2d"].grad`` is filled for visible Gaussians only; ``absgrad`` bounds it."""
    scene = _random_scene(300, 48, 40)
    scene["means"][:5, 2] = -1.0  # behind the cameras
    leaves = {k: v.clone().requires_grad_(k in NAMES) for k, v in scene.items()}
    images, alphas, meta = _render(leaves, 48, 40, absgrad=True)
    (images.sum() + alphas.sum()).backward()
    grad, absgrad = meta["means2d"].grad, meta["means2d"].absgrad
    visible = (meta["radii"] > 0).all(-1)
    assert grad.shape == absgrad.shape == (2, 300, 2)
    assert torch.all(grad[~visible] == 0) and not visible[:, :5].any()
    assert torch.all(absgrad >= grad.abs() - 1e-6)
    assert (absgrad[visible].sum(-1) > 0).float().mean() > 0.9


# --------------------------------------------------------------------------- determinism, channels


def test_deterministic_and_independent_of_thread_count(monkeypatch):
    """Two runs, a one-thread run and a run that gathers the splats in a pass of its own give
    bit-identical images and gradients."""
    from splatfx.raster import _cpu_raster

    scene = _random_scene(3000, 64, 48, n_cameras=2, channels=5)

    def run() -> list[torch.Tensor]:
        leaves = {k: v.clone().requires_grad_(k in NAMES) for k, v in scene.items()}
        images, alphas, meta = _render(leaves, 64, 48, antialiased=True)
        ((images * torch.linspace(-1, 1, 5)).sum() + alphas.sum()).backward()
        return [images, alphas, meta["means2d"].grad] + [leaves[k].grad for k in NAMES]

    first, second = run(), run()
    monkeypatch.setattr(_cpu_raster, "GATHER_APART", 0)
    apart = run()
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 1)
    single = run()
    for a, b, c, d in zip(first, second, single, apart):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)


def test_many_channels_match_three_at_a_time():
    """40 per-camera channels in one pass equal the same channels rendered three at a time."""
    scene = _random_scene(500, 40, 32, n_cameras=2, channels=3)
    gen = torch.Generator().manual_seed(1)
    features = torch.rand(2, 500, 40, generator=gen)
    full, full_alpha, _ = _render({**scene, "features": features, "backgrounds": None}, 40, 32)
    for lo in range(0, 40, 3):
        part, part_alpha, _ = _render({**scene, "features": features[..., lo : lo + 3], "backgrounds": None}, 40, 32)
        assert torch.equal(part, full[..., lo : lo + 3])
        assert torch.equal(part_alpha, full_alpha)


def test_bins_list_entries_by_depth_then_id():
    """Every bin holds its entries front to back, ties (and repeated depths) by entry id, negative depths first."""
    from splatfx.raster._cpu_raster import bin_gaussians

    rng = np.random.default_rng(5)
    m = 2 * 3000  # two cameras
    depths = rng.choice(np.array([-3.5, -0.25, 0.5, 2.0, 2.0000002, 7.0], np.float32), m)
    depths[::3] = rng.uniform(-2.0, 50.0, m)[::3].astype(np.float32)
    means2d = rng.uniform(-10.0, 74.0, (m, 2)).astype(np.float32)
    radii = rng.integers(0, 24, (m, 2)).astype(np.int32)
    bins = bin_gaussians(means2d, radii, depths, 2, 64, 40)
    ids = bins.flatten_ids.astype(np.int64)
    assert bins.n_isects == bins.tiles_per_gauss.sum() > 0
    assert np.array_equal(np.bincount(ids, minlength=m), bins.tiles_per_gauss)
    for b in range(len(bins.tile_offsets) - 1):
        seg = ids[bins.tile_offsets[b] : bins.tile_offsets[b + 1]]
        assert np.all(seg // 3000 == b // (bins.tiles_x * bins.tiles_y)), "an entry of another camera"
        d = depths[seg]
        assert np.all((d[1:] > d[:-1]) | ((d[1:] == d[:-1]) & (seg[1:] > seg[:-1]))), f"bin {b} out of order"


def test_float32_exp_is_within_one_ulp():
    """The compositing's inline exp(−s) stays within one float32 ulp of the exact value on [0, 16]."""
    from numba import njit

    from splatfx.raster._cpu_raster import _exp_neg

    @njit
    def evaluate(s: np.ndarray, out: np.ndarray) -> None:
        for k in range(s.shape[0]):
            out[k] = _exp_neg(s[k])

    s = np.concatenate([np.linspace(0.0, 16.0, 400_001), [-1.0, 20.0]]).astype(np.float32)
    out = np.empty_like(s)
    evaluate(s, out)
    exact = np.exp(-np.clip(s[:-2].astype(np.float64), 0.0, None))
    ulps = np.abs(out[:-2] - exact) / np.spacing(exact.astype(np.float32))
    assert ulps.max() <= 1.01
    assert out[-2] == 1.0 and 0.0 < out[-1] < 2e-7  # clamped below 0, and at 16 above


def _hit_counter():
    """A parallel_for kernel that adds 1 to ``hits`` at every index it claims."""
    from numba import njit

    from splatfx.raster._cpu_threads import claim

    @njit(nogil=True)
    def count(work: np.ndarray, hits: np.ndarray) -> None:
        lo, hi = claim(work)
        while lo < hi:
            for k in range(lo, hi):
                hits[k] += 1
            lo, hi = claim(work)

    return count


@pytest.mark.parametrize("chunk", [None, 1, 5])
@pytest.mark.parametrize("n", [1, 7, 64, 1000])
def test_parallel_for_covers_every_index_once(monkeypatch, chunk: int | None, n: int):
    from splatfx.raster._cpu_threads import parallel_for

    count = _hit_counter()
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    hits = np.zeros(n, np.int64)
    parallel_for(count, n, hits, chunk=chunk)
    parallel_for(count, n, hits, chunk=chunk, grain=300)
    assert np.all(hits == 2)


def test_parallel_for_raises_a_team_threads_error_and_keeps_working(monkeypatch):
    """An exception in any thread's share reaches the caller; the team serves the next call."""
    from numba import njit

    from splatfx.raster._cpu_threads import claim, parallel_for

    @njit(nogil=True)
    def invert(work: np.ndarray, values: np.ndarray, out: np.ndarray) -> None:
        lo, hi = claim(work)
        while lo < hi:
            for k in range(lo, hi):
                out[k] = 1 // values[k]
            lo, hi = claim(work)

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    values = np.ones(4000, np.int64)
    out = np.zeros(4000, np.int64)
    for bad in (0, 3999):  # in the first chunk (the caller's) and in the last
        values[bad] = 0
        with pytest.raises(ZeroDivisionError):
            parallel_for(invert, 4000, values, out, chunk=1)
        values[bad] = 1
    parallel_for(invert, 4000, values, out, chunk=1)
    assert np.all(out == 1)


def test_parallel_for_works_in_a_forked_child(monkeypatch):
    """A child forked after the team started gets a team of its own (the parent's threads are not there)."""
    import multiprocessing

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    test_parallel_for_covers_every_index_once(monkeypatch, 1, 1000)  # starts the parent's team
    child = multiprocessing.get_context("fork").Process(target=_cover_range_or_exit_1)
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0


def _cover_range_or_exit_1() -> None:
    from splatfx.raster._cpu_threads import parallel_for

    count = _hit_counter()
    hits = np.zeros(1000, np.int64)
    parallel_for(count, 1000, hits, chunk=1)
    raise SystemExit(0 if np.all(hits == 1) else 1)


def test_expected_depth_of_an_opaque_gaussian_is_its_depth():
    viewmats, ks = _pinhole(16, 16, 40.0)
    images, alphas, _ = rasterize(
        torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.5), torch.tensor([0.9]),
        torch.rand(1, 3), viewmats, ks, 16, 16, render_mode="RGB+ED", backend="cpu",
    )
    assert images.shape == (1, 16, 16, 4)
    assert torch.allclose(images[0, :, :, 3][alphas[0, ..., 0] > 0], torch.tensor(3.0), rtol=1e-6)


# --------------------------------------------------------------------------- edge cases and errors


def test_empty_scene_renders_the_background_and_passes_its_gradient():
    viewmats, ks = _pinhole(20, 10, 30.0, n_cameras=2)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], requires_grad=True)
    empty = torch.zeros(0, 3)
    images, alphas, meta = rasterize(
        empty, torch.zeros(0, 4), empty, torch.zeros(0), torch.zeros(0, 3), viewmats, ks, 20, 10, backgrounds=bg,
        backend="cpu",
    )
    assert torch.equal(images, bg[:, None, None, :].expand(2, 10, 20, 3)) and not alphas.any()
    images.sum().backward()
    assert torch.equal(bg.grad, torch.full((2, 3), 200.0))
    assert meta["means2d"].shape == (2, 0, 2) and meta["flatten_ids"].numel() == 0


def test_culled_tiny_and_huge_gaussians():
    """Behind the camera or off-image: culled. Zero scale: an eps2d-wide dot. Huge scale: a flat veil."""
    viewmats, ks = _pinhole(32, 32, 40.0)
    means = torch.tensor([[0.0, 0.0, -2.0], [50.0, 0.0, 2.0], [0.0, 0.0, 2.0], [0.0, 0.0, 4.0]])
    scales = torch.tensor([[0.1] * 3, [0.1] * 3, [0.0] * 3, [1e3] * 3])
    colors = torch.tensor([[0.0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]])  # the dot red, the veil blue
    images, alphas, meta = rasterize(
        means, torch.tensor([[1.0, 0, 0, 0]]).repeat(4, 1), scales, torch.tensor([0.9, 0.9, 0.5, 0.2]), colors,
        viewmats, ks, 32, 32, backend="cpu",
    )
    visible = (meta["radii"][0] > 0).all(-1).tolist()
    assert visible == [False, False, True, True]
    assert torch.isfinite(images).all()
    assert meta["radii"][0, 2].tolist() == [math.ceil(math.sqrt(2 * math.log(255 * 0.5) * 0.3))] * 2
    # the veil is uniform to float precision and sits behind the dot (mean at x = 16, pixel centre 16.5)
    assert torch.allclose(alphas[0, 0, 0], torch.tensor(0.2), rtol=1e-5)
    dot = 0.5 * math.exp(-0.5 * (0.5**2 + 0.5**2) / 0.3)
    assert images[0, 16, 16].tolist() == pytest.approx([dot, 0.0, (1 - dot) * 0.2], rel=1e-5)


def test_non_finite_and_zero_quaternion_inputs_are_refused():
    scene = _random_scene(10, 16, 16)
    bad = scene["means"].clone()
    bad[2, 1], bad[4, 0], bad[5, 2] = float("nan"), float("inf"), float("-inf")
    with pytest.raises(InputError, match=r"^rasterize: means contains 3 non-finite values$"):
        _render({**scene, "means": bad}, 16, 16)
    features = scene["features"].clone()
    features[0, 0] = float("nan")
    with pytest.raises(InputError, match="features contains 1 non-finite value$"):
        _render({**scene, "features": features}, 16, 16)
    quats = scene["quats"].clone()
    quats[3] = 0.0
    with pytest.raises(InputError, match="quats contains 1 zero quaternion"):
        _render({**scene, "quats": quats}, 16, 16)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("quats", torch.zeros(10, 3), r"quats must have shape \(10, 4\)"),
        ("opacities", torch.zeros(10, 1), r"opacities must have shape \(10,\)"),
        ("features", torch.zeros(9, 3), r"features must have shape \(N, D\)"),
        ("backgrounds", torch.zeros(2, 4), r"backgrounds must have shape \(2, 3\)"),
        ("Ks", torch.zeros(1, 3, 3), r"Ks must have shape \(2, 3, 3\)"),
    ],
)
def test_shape_mismatches_raise_value_error(name: str, value: torch.Tensor, message: str):
    scene = _random_scene(10, 16, 16)
    with pytest.raises(ValueError, match=message):
        _render({**scene, name: value}, 16, 16)


def test_gsplat_backend_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    scene = _random_scene(10, 16, 16)
    with pytest.raises(RuntimeError, match="gsplat"):
        rasterize(*(scene[k] for k in ("means", "quats", "scales", "opacities", "features", "viewmats", "Ks")),
                  16, 16, backend="gsplat")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for gsplat")
def test_gsplat_cuda_matches_the_cpu_backend():
    """On a GPU, gsplat's kernels give the CPU backend's images and gradients.

    Opacities stay below 0.9, so neither backend's alpha clamp (0.99 here, 0.999 in
    gsplat) is reached and the two compute the same function.
    """
    pytest.importorskip("gsplat")
    scene = _random_scene(2000, 64, 48, n_cameras=2)
    scene["opacities"] = scene["opacities"] * 0.9
    names = ("means", "quats", "scales", "opacities", "features")
    results = {}
    for backend, device in (("cpu", "cpu"), ("gsplat", "cuda")):
        leaves = {k: v.detach().clone().to(device).requires_grad_(k in names) for k, v in scene.items()}
        images, alphas, meta = rasterize(
            *(leaves[k] for k in (*names, "viewmats", "Ks")), 64, 48, backgrounds=leaves["backgrounds"],
            backend=backend,
        )
        ((images * torch.linspace(-1, 1, 3, device=device)).sum() + alphas.sum()).backward()
        results[backend] = [images, alphas, meta["means2d"].grad] + [leaves[k].grad for k in names]
    ours, theirs = results["cpu"], [t.cpu() for t in results["gsplat"]]
    for a, b in zip(ours[:2], theirs[:2]):  # images, alphas
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)
    for a, b in zip(ours[2:], theirs[2:]):  # gradients: sums over many pixels, in another order
        assert float((b - a).norm() / a.norm()) < 1e-2


# --------------------------------------------------------------------------- real data


def test_fern_sparse_points_render_like_the_photo(data_dir):
    """fern's COLMAP points as small Gaussians, seen from its first LLFF pose, line up with the first photo.

    The splat render correlates with the photo far better than with the photo mirrored,
    which it would not if the projection, the pose convention or the pixel grid were off.
    """
    width, height = 168, 126
    points = read_points3D(data_dir / "fern" / "sparse" / "0" / "points3D.bin")
    xyz = torch.tensor(np.ascontiguousarray(points.xyz), dtype=torch.float32)
    rgb = torch.tensor(np.ascontiguousarray(points.rgb), dtype=torch.float32) / 255.0
    cam = Camera.from_llff(np.load(data_dir / "fern" / "poses_bounds.npy")[0], width, height)
    depth = torch.tensor(cam.world_to_camera(points.xyz)[:, 2], dtype=torch.float32)
    n = len(xyz)
    images, alphas, _ = rasterize(
        xyz, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), (depth / cam.fx).clamp_min(1e-4)[:, None].repeat(1, 3),
        torch.full((n,), 0.9), rgb, *camera_tensors([cam]), width, height, backend="cpu",
    )
    photo = Image.open(sorted((data_dir / "fern" / "images_8").glob("*.png"))[0]).convert("RGB")
    photo = torch.tensor(np.asarray(photo.resize((width, height), Image.BOX)), dtype=torch.float32) / 255.0
    covered = alphas[0, ..., 0] > 0.5
    assert covered.float().mean() > 0.5

    def correlation(reference: torch.Tensor) -> float:
        pair = torch.stack([images[0][covered].mean(-1), reference[covered].mean(-1)])
        return torch.corrcoef(pair)[0, 1].item()

    aligned = correlation(photo)
    assert aligned > 0.4
    assert aligned > max(correlation(photo.flip(0)), correlation(photo.flip(1))) + 0.15


def test_gsplat_backend_maps_the_arguments(monkeypatch):
    """The CUDA path hands gsplat its own argument names, the non-packed layout and the render mode."""
    gsplat = pytest.importorskip("gsplat")
    from splatfx.raster._gsplat import rasterize_gsplat

    seen = {}

    def fake_rasterization(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        means2d = torch.zeros(1, 2, 2, requires_grad=True) * 1.0
        return torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 1), {"means2d": means2d}

    monkeypatch.setattr(gsplat, "rasterization", fake_rasterization)
    scene = _random_scene(2, 4, 4, n_cameras=1)
    tensors = [scene[k] for k in ("means", "quats", "scales", "opacities", "features", "viewmats", "Ks")]
    _, _, meta = rasterize_gsplat(
        *tensors, 4, 4, near=0.5, far=50.0, backgrounds=scene["backgrounds"], sh_degree=None,
        render_mode="RGB+ED", eps2d=0.2, antialiased=True, absgrad=True,
    )
    assert seen["args"][7:] == (4, 4) and all(a is b for a, b in zip(seen["args"], tensors))
    assert seen["kwargs"] == {
        "near_plane": 0.5, "far_plane": 50.0, "eps2d": 0.2, "sh_degree": None, "packed": False,
        "backgrounds": scene["backgrounds"], "render_mode": "RGB+ED", "absgrad": True,
        "rasterize_mode": "antialiased",
    }
    assert meta["backend"] == "gsplat"
