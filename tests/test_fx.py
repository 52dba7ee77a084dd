"""Effects: fracture, rigid collapse, debris, dust and snow behave as physics and the issue say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import ConvexHull, cKDTree

from splatfx.fx.animation import ELEMENTS, Fragments, ShotAnimation, Similarity
from splatfx.fx.debris import DebrisSettings, DustSettings, simulate_debris, simulate_dust
from splatfx.fx.fracture import fill_fracture_faces, fill_gaussian_params, voronoi_fracture
from splatfx.fx.rigid import CollapseSettings, fragment_hulls, simulate_collapse
from splatfx.fx.selection import BoxSelection, PolygonSelection, require_selection, select_by_masks
from splatfx.fx.snow import HeightMap, SnowSettings, Volume, simulate_snow
from splatfx.core.camera import look_at
from splatfx.core.errors import ConfigError
from splatfx.core.gaussians import Gaussians


def shell(size=(4.0, 3.0, 6.0), n=6000, seed=0) -> np.ndarray:
    """Points on the walls and roof of a hollow box standing on z = 0 (a building's surfaces)."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform((0, 0, 0), size, (n, 3))
    face = rng.integers(0, 5, n)  # 4 walls + roof
    for i, (axis, value) in enumerate([(0, 0.0), (0, size[0]), (1, 0.0), (1, size[1]), (2, size[2])]):
        pts[face == i, axis] = value
    return pts


@pytest.fixture(scope="module")
def building():
    pts = shell()
    colors = np.random.default_rng(1).normal(size=(len(pts), 3))
    fracture = voronoi_fracture(pts, 24, seed=3)
    fill = fill_fracture_faces(pts, colors, fracture, max_count=6000)
    points = np.concatenate([pts, fill.points])
    labels = np.concatenate([fracture.labels, fill.labels])
    return pts, colors, fracture, fill, points, labels


def test_box_polygon_and_mask_selection():
    pts = np.array([[0, 0, 1.0], [2, 0, 1], [0, 0, 5]])
    box = BoxSelection(center=(0, 0, 1), size=(1, 1, 1))
    assert box.contains(pts).tolist() == [True, False, False]
    rot = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])  # box turned 90° about z: long axis along y
    assert BoxSelection((0, 0, 1), (1, 5, 1), rot).contains(pts).tolist() == [True, True, False]
    square = PolygonSelection([(-1, -1), (3, -1), (3, 1), (-1, 1)], z_min=0, z_max=2)
    assert square.contains(pts).tolist() == [True, True, False]
    cam = look_at([0, -10, 1], [0, 0, 1], [0, 0, 1], 64, 64, 64)
    mask = np.zeros((64, 64))
    mask[24:40, 24:40] = 1  # the middle of the picture
    assert select_by_masks(pts, [cam], [mask]).tolist() == [True, False, False]
    with pytest.raises(ConfigError, match="no Gaussians"):
        require_selection(np.zeros(3, bool))


def test_fracture_partitions_exactly_and_hulls_contain_fragments(building):
    pts, _, fracture, _, _, _ = building
    assert fracture.labels.shape == (len(pts),) and set(np.unique(fracture.labels)) == set(range(fracture.count))
    nearest = cKDTree(fracture.seeds).query(pts)[1]
    assert np.array_equal(nearest, fracture.labels)  # each point in exactly its Voronoi cell
    for f, hull_points in enumerate(fragment_hulls(pts, fracture.labels, fracture.count, 0.05)):
        eq = ConvexHull(hull_points).equations
        own = pts[fracture.labels == f]
        assert np.all(own @ eq[:, :3].T + eq[:, 3] <= 1e-9)


def test_fill_lies_only_on_fracture_faces(building):
    pts, colors, fracture, fill, _, _ = building
    assert len(fill.points) > 500
    dist, idx = cKDTree(fracture.seeds).query(fill.points, k=2)
    assert np.all(dist[:, 1] - dist[:, 0] <= fill.spacing + 1e-9)  # next to a bisector plane
    assert np.array_equal(idx[:, 0], fill.labels)  # on its own fragment's side
    eq = ConvexHull(pts).equations  # inside the structure's volume
    assert np.all(fill.points @ eq[:, :3].T + eq[:, 3] <= fill.spacing)
    params = fill_gaussian_params(fill)
    assert params["means"].shape == fill.points.shape and np.isfinite(params["log_scales"]).all()
    # colour comes from the fragment's own nearest material
    f = fill.labels[0]
    own = np.nonzero(fracture.labels == f)[0]
    near = own[cKDTree(pts[own]).query(fill.points[0], k=8)[1]]
    assert np.allclose(fill.colors_dc[0], colors[near].mean(0))


def test_strong_glue_and_no_trigger_nothing_moves(building):
    *_, points, labels = building
    count = int(labels.max()) + 1
    cache = simulate_collapse(points, labels, count, 12, 24.0, CollapseSettings(trigger="none", glue_strength=1e9))
    drift = np.abs(cache.positions - cache.positions[0]).max()
    assert drift < 5e-3 and cache.visible.all()


def test_demolition_falls_and_comes_to_rest_on_the_ground(building):
    *_, points, labels = building
    count = int(labels.max()) + 1
    cache = simulate_collapse(points, labels, count, 96, 24.0, CollapseSettings(trigger="demolition", trigger_frame=2))
    mass = cache.masses

    kept = cache.visible[-1]  # the fragments that did not crumble away

    def centre_of_mass(t):
        return (cache.positions[t, kept] * mass[kept, None]).sum(0) / mass[kept].sum()

    assert centre_of_mass(95)[2] < centre_of_mass(0)[2] - 0.5
    assert any(e["kind"] == "crumble" for e in cache.events) and any(e["kind"] == "impact" for e in cache.events)
    from splatfx.core.rotation import quat_to_rotmat
    lowest = []
    for f in np.nonzero(cache.visible[-1])[0]:
        own = points[labels == f]
        posed = (own - cache.centroids[f]) @ quat_to_rotmat(cache.quats[-1, f]).T + cache.positions[-1, f]
        lowest.append(posed[:, 2].min())
    assert min(lowest) > -0.05  # nothing sank into the ground
    speed = np.linalg.norm(cache.positions[-1] - cache.positions[-2], axis=1) * 24.0
    assert np.median(speed[cache.visible[-1]]) < 0.2  # the pile has settled


def test_nothing_moves_before_the_trigger_even_when_the_structure_is_loose(building):
    """A scan is rarely one welded piece: a loose, unanchored structure still stands as the
    plates show it until its demolition frame, then falls."""
    *_, points, labels = building
    count = int(labels.max()) + 1
    settings = CollapseSettings(trigger="demolition", trigger_frame=5, anchored=False, glue_strength=0.0)
    cache = simulate_collapse(points + (0.0, 0.0, 0.5), labels, count, 12, 24.0, settings)  # hovering 0.5 m up
    assert np.array_equal(cache.positions[:5], np.broadcast_to(cache.positions[0], cache.positions[:5].shape))
    assert (cache.positions[11, :, 2] < cache.positions[0, :, 2] - 0.05)[cache.visible[11]].all()


def test_same_seed_same_cache_and_fall_time_scales_with_sqrt_height():
    block = np.random.default_rng(0).uniform((0, 0, 0), (0.5, 0.5, 0.5), (400, 3))

    def landing_frame(height: float) -> int:
        pts = block + (0, 0, height)
        cache = simulate_collapse(pts, np.zeros(len(pts), int), 1, 150, 120.0,
                                  CollapseSettings(trigger="none", anchored=False, substeps=4))
        z = cache.positions[:, 0, 2]
        return int(np.argmax(z <= z[-1] + 0.005))  # first frame on the ground

    t1, t4 = landing_frame(1.0), landing_frame(4.0)
    assert t4 / t1 == pytest.approx(2.0, rel=0.06)  # t ∝ √h
    a = simulate_collapse(block + (0, 0, 1), np.zeros(400, int), 1, 10, 24.0, CollapseSettings(trigger="none", anchored=False))
    b = simulate_collapse(block + (0, 0, 1), np.zeros(400, int), 1, 10, 24.0, CollapseSettings(trigger="none", anchored=False))
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.quats, b.quats)


def test_debris_settles_on_the_ground_and_dust_rises_and_fades(building):
    pts, colors, fracture, fill, points, labels = building
    count = fracture.count
    cache = simulate_collapse(points, labels, count, 72, 24.0, CollapseSettings(trigger="demolition", trigger_frame=1))
    dc = np.concatenate([colors, fill.colors_dc])
    debris = simulate_debris(cache, points, labels, dc, DebrisSettings(count=800))
    assert debris.count == 800
    final = debris.positions[-1]
    assert final[:, 2].min() >= debris.sizes[-1].min() - 1e-6
    assert np.mean(np.linalg.norm(debris.velocities[-1], axis=1) == 0) > 0.9
    dust = simulate_dust(cache, points, labels, dc, DustSettings(count=300, lifetime=(1.0, 1.5)))
    born = dust.alive.argmax(axis=0)
    rise = [dust.positions[b + 12, i, 2] - dust.positions[b, i, 2] for i, b in enumerate(born) if b + 12 < 72]
    assert np.mean(rise) > 0.1
    early = born < 72 - 1.5 * 24 - 1  # lifetimes are at most 1.5 s
    assert early.sum() > 10 and dust.opacities[-1, early].max() == 0.0  # those puffs have faded away


def test_snow_falls_at_its_speed_and_settles_on_surfaces():
    rng = np.random.default_rng(0)
    roof = np.column_stack([rng.uniform(0, 2, 2000), rng.uniform(0, 2, 2000), np.full(2000, 3.0)])
    ground = np.column_stack([rng.uniform(-2, 4, 2000), rng.uniform(-2, 4, 2000), np.zeros(2000)])
    scene = np.concatenate([roof, ground])
    volume = Volume.around(scene)
    surfaces = HeightMap(scene, volume, cell=0.25)
    settings = SnowSettings(density=10, speed=1.5, speed_jitter=0.0, wind=(0, 0, 0), turbulence=0.0)
    snow = simulate_snow(48, 24.0, volume, surfaces, settings)
    live = snow.alive[-1]
    inside = (snow.positions[-1] >= volume.lo - 1e-6) & (snow.positions[-1] <= volume.hi + 1e-6)
    assert inside[live].all()
    falling = live & (snow.velocities[-1][:, 2] < 0)
    assert np.allclose(snow.velocities[-1][falling, 2], -1.5)
    settled = live & np.all(snow.velocities[-1] == 0, axis=1) & snow.alive[0]
    assert settled.sum() > 50
    p = snow.positions[-1][settled]
    rest = settings.thickness * snow.sizes[-1][settled]  # a flat flake lies on its face
    assert np.allclose(p[:, 2], surfaces(p[:, :2]) + rest, atol=1e-5)
    on_roof = (p[:, 0] > 0.3) & (p[:, 0] < 1.7) & (p[:, 1] > 0.3) & (p[:, 1] < 1.7)
    assert np.allclose(p[on_roof, 2], 3.0 + rest[on_roof], atol=1e-5) and on_roof.any()


def test_animation_moves_only_the_selection_with_exact_motion(building):
    pts, colors, fracture, fill, points, labels = building
    frame = Similarity(0.5, np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]), np.array([1.0, 2.0, 0.0]))
    rest = np.random.default_rng(5).uniform(-5, 5, (300, 3)) + (10, 0, 0)
    solve_all = frame.to_solve(np.concatenate([rest, pts]))
    n = len(solve_all)
    g = torch.Generator().manual_seed(0)
    scene = Gaussians(torch.from_numpy(solve_all).float(), torch.randn(n, 4, generator=g), torch.full((n, 3), -3.0),
                      torch.zeros(n), torch.randn(n, 4, 3, generator=g))
    selected = np.arange(300, n)
    fill_g = Gaussians.from_arrays({"means": frame.to_solve(fill.points), "quats": np.tile([1.0, 0, 0, 0], (len(fill.points), 1)),
                                    "log_scales": np.full((len(fill.points), 3), -4.0), "opacity_logits": np.zeros(len(fill.points)),
                                    "sh": np.zeros((len(fill.points), 4, 3))})
    cache = simulate_collapse(points, labels, fracture.count, 16, 24.0, CollapseSettings(trigger="demolition", trigger_frame=1))
    frags = Fragments(Gaussians.cat([scene[selected], fill_g]), labels,
                      np.concatenate([np.full(len(pts), ELEMENTS["fragment"]), np.full(len(fill.points), ELEMENTS["fill"])]).astype(np.int8),
                      np.concatenate([selected, np.full(len(fill.points), -1)]), cache)
    anim = ShotAnimation(scene, frame, 16, 24.0, removed=selected, fragments=frags)
    now, nxt = anim.at(8), anim.at(9)
    static = now.element == ELEMENTS["scene"]
    assert torch.equal(now.gaussians.means[torch.from_numpy(static)], scene.means[:300])  # untouched, bit-exact
    assert torch.equal(now.gaussians.sh[torch.from_numpy(static)], scene.sh[:300])
    moving = now.element == ELEMENTS["fragment"]
    assert moving.sum() == (nxt.element == ELEMENTS["fragment"]).sum()
    predicted = now.gaussians.means.numpy()[moving] + now.motion[moving]
    assert np.abs(predicted - nxt.gaussians.means.numpy()[nxt.element == ELEMENTS["fragment"]]).max() < 1e-4
    assert np.abs(now.motion[moving]).max() > 1e-3  # it is really moving


def test_impact_moves_the_struck_side_first_and_a_faster_projectile_does_more(building):
    *_, points, labels = building
    count = int(labels.max()) + 1
    # the projectile flies along +x at the middle of the x = 0 wall; its path is 0.6 m wide
    struck = np.unique(labels[(np.hypot(points[:, 1] - 1.5, points[:, 2] - 3.0) < 0.6) & (points[:, 0] < 0.3)])

    def hit(speed: float):
        settings = CollapseSettings(trigger="impact", trigger_frame=0, impact_point=(2.0, 1.5, 3.0),
                                    impact_direction=(1.0, 0.0, 0.0), impact_speed=speed, glue_strength=10.0)
        return simulate_collapse(points, labels, count, 12, 24.0, settings)

    slow, fast = hit(15.0), hit(45.0)
    rest = fast.positions[0]
    far = rest[:, 0] > 3.0  # the opposite wall
    assert len(struck) >= 2 and far.sum() >= 3
    velocity = (fast.positions[2] - rest) * 12.0  # m/s over the first two frames
    momentum = (fast.masses[struck, None] * velocity[struck]).sum(axis=0)
    assert momentum[0] > 0 and momentum[0] > abs(momentum[1])  # the struck pieces go the projectile's way
    moved = np.linalg.norm(fast.positions - rest, axis=2) > 0.05
    first = np.where(moved.any(axis=0), moved.argmax(axis=0), len(moved))  # frame each piece starts to move
    assert first[struck].mean() < first[far].mean()  # the struck side moves before the far side
    breaks = [sum(e["kind"] == "break" for e in c.events) for c in (slow, fast)]
    shift = [np.linalg.norm(c.positions[-1] - c.positions[0], axis=1).mean() for c in (slow, fast)]
    assert breaks[1] > breaks[0] and shift[1] > shift[0]  # a faster projectile does more


def test_charge_throws_pieces_outward_less_with_distance_and_a_zero_charge_moves_nothing(building):
    *_, points, labels = building
    count = int(labels.max()) + 1
    centre = np.array([2.0, 1.5, 2.0])

    def blast(impulse: float, glue: float = 2.0):
        settings = CollapseSettings(trigger="charge", trigger_frame=0, charge_point=tuple(centre),
                                    charge_impulse=impulse, charge_radius=5.0, glue_strength=glue, substeps=4)
        return simulate_collapse(points, labels, count, 8, 120.0, settings)  # 120 fps: the blast's first 8 ms

    cache = blast(12.0)
    offset = cache.positions[0] - centre
    distance = np.linalg.norm(offset, axis=1)
    velocity = (cache.positions[1] - cache.positions[0]) * 120.0
    radial = (velocity * offset).sum(axis=1) / distance
    assert np.mean(radial > 0.5) >= 0.9  # (nearly) every piece flies away from the charge
    near, far = distance < np.percentile(distance, 33), distance > np.percentile(distance, 67)
    assert radial[near].mean() > 1.5 * radial[far].mean()  # the blast weakens with distance
    assert np.corrcoef(distance, radial)[0, 1] < -0.5
    assert sum(e["kind"] == "break" for e in cache.events) > 0
    for glue in (2.0, 1e9):  # a charge of no strength breaks nothing and moves nothing
        still = blast(0.0, glue)
        assert not any(e["kind"] == "break" for e in still.events)
        assert np.abs(still.positions - still.positions[0]).max() < 5e-3


def test_a_piece_lands_on_a_static_box_and_a_far_box_changes_nothing():
    from dataclasses import replace

    from splatfx.fx.colliders import StaticBox
    from splatfx.core.rotation import quat_to_rotmat

    block = np.random.default_rng(0).uniform((0, 0, 0), (0.5, 0.5, 0.5), (400, 3)) + (0.0, 0.0, 3.0)
    labels = np.zeros(len(block), int)
    plain = CollapseSettings(trigger="none", anchored=False)

    def drop(*boxes: StaticBox):
        return simulate_collapse(block, labels, 1, 72, 24.0, replace(plain, colliders=boxes))

    def lowest(cache) -> float:
        posed = (block - cache.centroids[0]) @ quat_to_rotmat(cache.quats[-1, 0]).T + cache.positions[-1, 0]
        return float(posed[:, 2].min())

    turned = euler_z(30.0)
    table = StaticBox(np.array([0.25, 0.25, 0.75]), np.array([2.0, 2.0, 1.5]), turned)  # top at z = 1.5
    on_table, on_ground = drop(table), drop()
    assert lowest(on_table) == pytest.approx(1.5, abs=0.03)  # on top of the box, not sunk into it
    assert lowest(on_ground) == pytest.approx(0.0, abs=0.03)
    assert np.abs(on_table.positions[-1] - on_table.positions[-2]).max() < 1e-3  # at rest
    landing = [e for e in on_table.events if e["kind"] == "impact"]
    assert landing and landing[0]["speed"] == pytest.approx(np.sqrt(2 * 9.81 * 1.5), rel=0.15)  # hit at √(2gh)
    far_away = drop(StaticBox(np.array([40.0, 0.0, 1.0]), np.array([2.0, 2.0, 2.0])))
    assert np.array_equal(far_away.positions, on_ground.positions) and np.array_equal(far_away.quats, on_ground.quats)


def euler_z(degrees: float) -> np.ndarray:
    """Rotation by ``degrees`` about z."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_auto_colliders_fit_neighbours_not_ground_floaters_or_the_selection(building):
    from splatfx.fx.colliders import FloorMap, fit_static_boxes
    from splatfx.fx.rigid import collision_hulls

    *_, points, labels = building
    hulls = collision_hulls(points, labels, int(labels.max()) + 1)
    rng = np.random.default_rng(0)
    neighbour = shell((3.0, 3.0, 2.0), 3000, seed=1) + (5.0, 0.0, 0.0)  # a lower building 1 m beside it
    ground = np.column_stack([rng.uniform(-8, 12, 8000), rng.uniform(-8, 11, 8000), rng.normal(0, 0.02, 8000)])
    floaters = np.array([[2.0, -3.0, 7.0], [2.1, -3.0, 7.2]])  # stray Gaussians in the air
    clump = rng.normal((-3.0, 5.0, 8.0), 0.3, (60, 3))  # a dense clump floating 8 m up (a canopy without its trunk)
    tower = shell((1.0, 1.0, 10.0), 500, seed=2) + (30.0, 0.0, 0.0)  # beyond the margin
    leftover = rng.uniform((4.02, 0.0, 0.5), (4.2, 3.0, 5.5), (200, 3))  # unselected bits touching the building
    scene = np.concatenate([neighbour, ground, floaters, clump, tower, leftover])
    boxes = fit_static_boxes(scene, hulls, margin=5.0, cell=0.5)
    assert len(boxes) == 1
    (box,) = boxes
    assert np.allclose(box.center, [6.5, 1.5, 1.0], atol=0.05) and np.allclose(box.size, [3.0, 3.0, 2.0], atol=0.1)
    vertices = np.concatenate(hulls)
    assert not np.all(np.abs(vertices - box.center) < box.size / 2, axis=1).any()  # nothing starts inside it
    floor = FloorMap(boxes)  # what debris lands on
    chips = np.array([[6.5, 1.5, 3.0], [6.5, 1.5, 1.9], [6.5, 1.5, 0.5], [2.0, -3.0, 7.5]])
    assert floor(chips, 0.2).tolist() == [2.0, 2.0, 0.0, 0.0]  # on the roof (just reached), inside, elsewhere
    assert floor.inside(chips, 0.2).tolist() == [False, False, True, False]  # came in through a wall
