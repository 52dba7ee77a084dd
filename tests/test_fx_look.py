"""The look of the particle effects: dust lit by a key light and shadowed by itself, the
light read off a reconstruction's shading, debris sizes on a power law, and snow flakes
at the plate camera's scale (see docs/fx.md)."""

from __future__ import annotations

import numpy as np
import pytest

from splatfx.core.rotation import rotmats_to_quats
from splatfx.core.sh import rgb_to_sh
from splatfx.fx.animation import RigidCache
from splatfx.fx.debris import DebrisSettings, DustSettings, light_collapse, simulate_debris, simulate_dust
from splatfx.core.color import REC709_LUMA as LUMA
from splatfx.fx.lighting import KeyLight, dust_light, estimate_key_light, unit
from splatfx.fx.particles import power_law_sizes
from splatfx.fx.snow import Lens, SnowSettings, Volume, simulate_snow

WHITE = np.ones(3)


def _light(direction, key: float = 0.7) -> KeyLight:
    return KeyLight(unit(direction), WHITE, WHITE, key, "test")


def _ball(count: int = 600, radius: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(count, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True) * radius * rng.uniform(0, 1, (count, 1)) ** (1 / 3)


@pytest.mark.parametrize("direction", [(1.0, 0.0, 0.3), (-0.4, 0.8, 0.5), (0.0, 0.0, 1.0)])
def test_the_lit_side_of_a_dust_puff_is_brighter_than_its_shadow_side(direction):
    """A puff of dust particles under a known sun: the half facing the sun gets more light
    than the half away from it (the cloud shadows itself), by a clear margin."""
    points = _ball()
    light = _light(direction)
    shade = dust_light(points, np.full(len(points), 0.5), np.full(len(points), 0.15), light) @ LUMA
    along = points @ light.direction
    lit, dark = shade[along > 0.4].mean(), shade[along < -0.4].mean()
    assert lit > 1.5 * dark
    # a thinner puff lets more light through: less contrast, never more light than the sun and sky
    thin = dust_light(points, np.full(len(points), 0.05), np.full(len(points), 0.15), light) @ LUMA
    assert thin[along < -0.4].mean() > dark and thin.max() <= 1.3 + 1e-9


def _box_scene(light: np.ndarray, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Flat Gaussians on a building's walls and roof, the ground and two trees, coloured
    by a Lambertian sun plus sky, with a random albedo per Gaussian (brick, grass...)."""
    rng = np.random.default_rng(seed)
    faces = []  # (centre, normal, tangent u, tangent v, half sizes)
    for axis, sign in [(0, 1), (0, -1), (1, 1), (1, -1)]:
        n = np.zeros(3)
        n[axis] = sign
        u = np.array([0.0, 0.0, 1.0])
        v = np.cross(n, u)
        faces.append((n * 4.0 + [0, 0, 5.0], n, u, v, (5.0, 4.0)))
    faces.append((np.array([0, 0, 10.0]), np.array([0, 0, 1.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), (4.0, 4.0)))
    means, normals = [], []
    for centre, n, u, v, (hu, hv) in faces:
        a, b = rng.uniform(-1, 1, (2, 3000))
        means.append(centre + a[:, None] * hu * u + b[:, None] * hv * v)
        normals.append(np.tile(n, (3000, 1)))
    ground = np.column_stack([rng.uniform(-20, 20, 8000), rng.uniform(-20, 20, 8000), np.zeros(8000)])
    ground = ground[(np.abs(ground[:, 0]) > 4.5) | (np.abs(ground[:, 1]) > 4.5)]
    means.append(ground)
    normals.append(np.tile([0, 0, 1.0], (len(ground), 1)))
    for centre in ([9.0, 6.0, 3.0], [-8.0, -7.0, 2.5]):  # trees: leaves facing every way
        out = rng.normal(size=(3000, 3))
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        means.append(np.asarray(centre) + 2.0 * out)
        normals.append(out)
    means, normals = np.concatenate(means), np.concatenate(normals)
    normals = normals + rng.normal(scale=0.12, size=normals.shape)  # a reconstruction's Gaussians are tilted
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    cameras = np.array([[30.0 * np.cos(a), 30.0 * np.sin(a), 2.0] for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)])
    nearest = cameras[np.argmin(((means[:, None] - cameras[None]) ** 2).sum(-1), axis=1)]
    seen = ((nearest - means) * normals).sum(axis=1) > 0  # what the cameras saw (a tree's far side: nothing)
    means, normals = means[seen], normals[seen]
    # a Gaussian flat along its normal: rotation whose third column is the normal
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    t1 = np.cross(normals, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    rot = np.stack([t1, np.cross(normals, t1), normals], axis=2)
    quats = rotmats_to_quats(rot)
    log_scales = np.log(np.tile([0.1, 0.1, 0.01], (len(means), 1)))
    albedo = rng.uniform(0.25, 0.8, (len(means), 1)) * np.array([1.0, 0.85, 0.7])
    shading = 0.35 * (1 + normals[:, 2:]) / 2 + 0.65 * np.clip(normals @ light, 0, None)[:, None]
    colours = rgb_to_sh(np.asarray(albedo * shading, np.float32))
    return means, quats, log_scales, np.full(len(means), 0.9), np.asarray(colours, np.float64), cameras


@pytest.mark.parametrize("direction", [(0.6, -0.3, 0.75), (-0.2, 0.9, 0.4)])
def test_the_key_light_is_recovered_from_a_lambertian_reconstruction(direction):
    """Flat Gaussians of a lit building and its ground (varied albedo): the estimate from
    their shortest axes and colours finds the sun within a few degrees, and most of the
    light coming from it."""
    truth = unit(direction)
    light, rms = estimate_key_light(*_box_scene(truth))
    assert np.degrees(np.arccos(np.clip(light.direction @ truth, -1, 1))) < 4.0
    assert light.key > 0.5 and light.source == "estimated"
    assert rms < 0.3


def _crumble_cache(frames: int = 48, fps: float = 24.0, height: float = 10.0) -> tuple[RigidCache, np.ndarray, ...]:
    """A one-piece 'structure' that crumbles at frame 2 and a pair of pieces landing."""
    rng = np.random.default_rng(3)
    points = rng.uniform([-3, -3, 0], [3, 3, height], (2000, 3))
    labels = np.zeros(len(points), int)
    cache = RigidCache(fps, points.mean(axis=0)[None], np.tile(points.mean(axis=0), (frames, 1, 1)),
                       np.tile([1.0, 0, 0, 0], (frames, 1, 1)), np.ones((frames, 1), bool), np.ones(1),
                       [{"frame": 2, "kind": "crumble", "position": [0, 0, 0], "speed": 1.0, "fragment": 0},
                        {"frame": 10, "kind": "impact", "position": [4.0, 0, 0.2], "speed": 6.0, "fragment": -1},
                        {"frame": 6, "kind": "break", "position": [0, 0, 5.0], "speed": 2.0, "fragment": -1}])
    colours = np.asarray(rgb_to_sh(np.full((len(points), 3), 0.6, np.float32)), np.float64)
    return cache, points, labels, colours


def test_debris_sizes_follow_the_power_law():
    """Many small chips, a few large chunks: N(size > s) ∝ s^-D between the smallest and
    largest sizes (checked on the sampler and on a simulated collapse's chips)."""
    rng = np.random.default_rng(0)
    sizes = power_law_sizes(200_000, 0.04, 0.4, 2.5, rng)
    assert sizes.min() >= 0.04 and sizes.max() <= 0.4
    for s in (0.08, 0.16):  # truncated Pareto tail
        expected = ((s / 0.04) ** -2.5 - 10 ** -2.5) / (1 - 10 ** -2.5)
        assert abs((sizes > s).mean() - expected) < 0.01
    cache, points, labels, colours = _crumble_cache()
    debris = simulate_debris(cache, points, labels, colours, DebrisSettings(count=3000, size=0.05), seed=1)
    chips = debris.sizes[-1]
    assert np.median(chips) < 0.05 * 1.4  # most are small
    assert (chips > 0.25).sum() >= 3 and (chips > 0.25).mean() < 0.02  # a few large chunks
    assert debris.axes is not None and (debris.axes[:, 2] < 1.0).all()  # flat, not balls


def test_dust_rolls_out_faster_than_it_rises_and_thins_out():
    cache, points, labels, colours = _crumble_cache(frames=96)
    dust = simulate_dust(cache, points, labels, colours, DustSettings(count=600, height=10.0, lifetime=(2.0, 3.5)), seed=0)
    start = dust.positions[8][dust.alive[8]]
    later = dust.alive[8] & dust.alive[40]
    travel = dust.positions[40][later] - dust.positions[8][later]
    assert np.median(np.linalg.norm(travel[:, :2], axis=1)) > 2.0 * np.median(np.abs(travel[:, 2]))
    assert np.median(start[:, 2]) < 0.1 * 10.0  # born at the base
    young, old = dust.opacities[12][dust.alive[12]].mean(), dust.opacities[80][dust.alive[80]].mean()
    assert old < 0.5 * young
    assert dust.sizes[40][later].mean() > dust.sizes[8][later].mean()  # it spreads


def test_collapse_light_is_baked_per_frame_and_deterministic():
    cache, points, labels, colours = _crumble_cache()
    runs = []
    for _ in range(2):
        debris = simulate_debris(cache, points, labels, colours, DebrisSettings(count=400), seed=2)
        dust = simulate_dust(cache, points, labels, colours, DustSettings(count=300), seed=2)
        light_collapse(debris, dust, _light((1.0, 0.0, 0.5)))
        runs.append((debris.arrays("d"), dust.arrays("u")))
    for a, b in zip(runs[0], runs[1]):
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), key
    dust = runs[0][1]
    assert dust["u.colors"].shape == dust["u.positions"].shape  # per frame, per puff
    live = dust["u.alive"][20]
    assert np.ptp(dust["u.colors"][20][live, 0]) > 0.1  # lit and shadowed puffs, not one flat grey


def _snow(lens: Lens | None, seed: int = 0):
    volume = Volume(np.array([-20.0, -20.0, 0.0]), np.array([20.0, 20.0, 15.0]))
    return simulate_snow(6, 24.0, volume, None, SnowSettings(density=0.4, size=0.01), seed=seed, lens=lens), volume


def test_flakes_are_a_few_pixels_at_the_plates_distance_and_soft_near_the_lens():
    """A camera inside the snow, 25 m from what it films (focal 300 px, 400 px wide,
    focused there), 2 cm flakes: flakes near the focus distance project to a few pixels at
    most and vary in size; flakes near the lens are larger and fainter (each keeps its
    brightness): never opaque discs."""
    centre = np.array([0.0, -15.0, 2.0])
    lens = Lens(centre[None], focal=300.0, focus=25.0, defocus=0.03 * 400, per_frame=False)
    snow, _ = _snow(lens)
    t = 3
    live = snow.alive[t]
    z = np.linalg.norm(snow.positions[t][live] - centre, axis=1)
    sizes, opacity = snow.sizes[t][live], snow.opacities[t][live]
    pixels = 300.0 * sizes / z  # projected standard deviation
    mid = np.abs(z - 25.0) < 5.0
    assert np.percentile(2 * pixels[mid], 99) < 3.0  # a few pixels across, at most
    assert np.percentile(sizes[mid], 90) > 2.0 * np.percentile(sizes[mid], 10)  # varied
    near = z < 2.0
    assert near.sum() > 5
    assert sizes[near].mean() > 2.0 * sizes[mid].mean()
    big = 2 * pixels > 6.0
    assert big.sum() > 0 and opacity[big].max() < 0.35  # large means faint: no opaque discs
    assert opacity.max() <= 0.8 + 1e-6
    assert snow.axes is not None and (snow.axes[:, 2] < 0.5).all()  # flat flakes


def test_snow_with_a_lens_is_deterministic():
    lens = Lens(np.array([[0.0, -30.0, 2.0]]), focal=500.0, focus=30.0, defocus=20.0)
    a, _ = _snow(lens, seed=4)
    b, _ = _snow(lens, seed=4)
    for key, value in a.arrays("s").items():
        assert np.array_equal(value, b.arrays("s")[key]), key


def test_the_animation_draws_the_baked_light_and_the_flat_particles():
    """The render side reads the caches unchanged: frame t's particles carry frame t's baked
    colour, their size ratios and their orientation (turned into solve coordinates)."""
    import torch

    from splatfx.core.gaussians import Gaussians
    from splatfx.fx.animation import ELEMENTS, ShotAnimation, Similarity
    from splatfx.fx.particles import ParticleCache

    scene = Gaussians.from_arrays({"means": np.zeros((2, 3)), "quats": np.tile([1.0, 0, 0, 0], (2, 1)),
                                   "log_scales": np.full((2, 3), -2.0), "opacity_logits": np.zeros(2),
                                   "sh": np.zeros((2, 1, 3), np.float32)})
    frames, n = 3, 4
    colours = np.arange(frames * n * 3, dtype=np.float32).reshape(frames, n, 3) / 10
    axes = np.tile(np.array([1.0, 0.5, 0.25], np.float32), (n, 1))
    quats = np.tile(np.array([np.cos(0.3), 0.0, 0.0, np.sin(0.3)], np.float32), (n, 1))  # about z
    cache = ParticleCache(np.zeros((frames, n, 3), np.float32), np.zeros((frames, n, 3), np.float32),
                          np.ones((frames, n), bool), np.full((frames, n), 0.1, np.float32),
                          np.full((frames, n), 0.5, np.float32), np.zeros((n, 3), np.float32), colours, axes, quats)
    rotation = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    animation = ShotAnimation(scene, Similarity(2.0, rotation, np.zeros(3)), frames, 24.0,
                              particles={"dust": cache})
    drawn = animation.at(2)
    dust = torch.from_numpy(drawn.element == ELEMENTS["dust"])
    assert np.allclose(drawn.gaussians.sh[dust, 0].numpy(), colours[2])
    scales = drawn.gaussians.log_scales[dust].exp().numpy()
    assert np.allclose(scales, 0.1 / 2.0 * axes, rtol=1e-5)
    from splatfx.core.rotation import quat_to_rotmat
    world = rotation @ quat_to_rotmat(drawn.gaussians.quats[dust].double().numpy())
    assert np.allclose(world, quat_to_rotmat(quats.astype(np.float64)), atol=1e-5)
    assert np.allclose(animation.at_time(1.75).gaussians.sh[dust, 0].numpy(), colours[2])  # nearer frame's light
