"""The backdrop behind a removed structure (splatfx.fx.backdrop, splatfx.fx.paint) and the
measures of the uncovered region (splatfx.comp.uncovered)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splatfx.comp.uncovered import frame_change, gradient
from splatfx.core.color import linear_to_srgb
from splatfx.core.gaussians import Gaussians
from splatfx.fx.backdrop import SKY_FREE_MARGIN, PlateView, build_backdrop, sky_floaters
from splatfx.fx.paint import paint_unseen, sky_mask, skyline
from splatfx.io.images import read_image
from splatfx.render.cleanplate import render_clean_pass
from test_comp import FOCAL, HEIGHT, WIDTH, plate_camera, scene_gaussians
from test_fx_stage import shot  # noqa: F401  (fixture: a building-like scene on real plates)


def _sky_over_texture(seed: int = 1) -> np.ndarray:
    """A bright smooth sky (rows < 40) over a noisy green texture, 120×160."""
    rng = np.random.default_rng(seed)
    image = np.zeros((120, 160, 3), np.float32)
    image[:40] = np.array([0.85, 0.9, 0.95]) - np.linspace(0, 0.1, 40)[:, None, None]
    image[40:] = np.array([0.2, 0.35, 0.15]) + rng.normal(0, 0.08, (80, 160, 1)).astype(np.float32)
    return np.clip(image, 0, 1)


def test_the_hole_is_painted_with_sky_above_the_skyline_and_the_plates_texture_below():
    image = _sky_over_texture()
    known = np.ones(image.shape[:2], bool)
    known[20:100, 50:110] = False  # the removed structure: through the skyline
    painted, sky = paint_unseen(image, known, np.random.default_rng(0))
    assert sky_mask(image, known)[5:35, :50].mean() > 0.9  # the plate's sky is found ...
    hole_sky, hole_ground = ~known & (np.arange(120)[:, None] < 36), ~known & (np.arange(120)[:, None] >= 46)
    assert sky[hole_sky].mean() > 0.9 and not sky[hole_ground].any()  # ... and continued to the skyline
    assert np.abs(painted[hole_sky] - image[hole_sky]).max() < 0.06  # the sky's own colour and gradient
    # below it, the texture of the plate: as rough as the ground around, and of its colour
    rough = gradient(painted)[hole_ground].mean() / gradient(image)[known & (np.arange(120)[:, None] >= 46)].mean()
    assert 0.7 < rough < 1.3
    assert np.abs(painted[hole_ground].mean(axis=0) - image[40:].mean(axis=(0, 1))).max() < 0.05
    again, _ = paint_unseen(image, known, np.random.default_rng(0))
    assert np.array_equal(painted, again)  # painted once, the same every time
    assert np.array_equal(painted[known], image[known])  # what is known is kept


def test_nothing_known_is_a_clear_error():
    with pytest.raises(ValueError, match="nothing of the backdrop is known"):
        paint_unseen(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), bool), np.random.default_rng(0))


@pytest.fixture(scope="module")
def scene_and_views(data_dir):
    """test_comp's scene (a wall with a gap behind a box, solve coordinates) and real plates
    (south_building) as its views."""
    g, structure = scene_gaussians()
    paths = sorted((data_dir / "south_building" / "images").iterdir())[:3]
    views = [PlateView(p.name, plate_camera(i), (lambda p=p: read_image(p).pixels[..., :3].astype(np.float32)))
             for i, p in enumerate(paths)]
    return g, np.nonzero(structure)[0], views


def test_the_backdrop_fills_every_hole_and_holds_still_from_frame_to_frame(scene_and_views):
    scene, removed, views = scene_and_views
    backdrop = build_backdrop(scene, removed, views, seed=3)
    assert len(backdrop.gaussians) == int(backdrop.card.sum()) > 1000
    assert np.isfinite(backdrop.gaussians.means.numpy()).all()
    depths = views[0].camera.world_to_camera(backdrop.gaussians.means.double().numpy())[:, 2]
    assert np.allclose(depths, backdrop.depth, rtol=1e-4)  # a card facing the reference plate ...
    box = views[0].camera.world_to_camera(scene.means.double().numpy()[removed])[:, 2]
    assert backdrop.depth > box.max()  # ... behind the structure
    passes = [render_clean_pass(scene, removed, v.camera, backdrop.gaussians) for v in views]
    without = render_clean_pass(scene, removed, views[1].camera)
    assert without.holes.sum() > 1000  # the gap in the wall that nothing saw ...
    for p in passes:
        assert p.holes.sum() == 0  # ... is filled in every frame by the backdrop
    # the same background, moved by the camera's parallax: frame 2 seen from frame 1 along
    # the card's motion (the cameras move 4 cm sideways per frame, the card is a plane)
    shift = 0.04 * FOCAL / backdrop.depth
    colour = [linear_to_srgb(np.clip(p.rgba[..., :3], 0, 1)) for p in passes]
    motion = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    motion[..., 0] = -shift
    gap = (without.holes > 0)
    change = frame_change(colour[1], colour[2], motion, gap, np.ones_like(gap))
    assert change is not None and change < 3.0  # 8-bit codes: resampling only


def test_the_backdrop_is_drawn_as_static_scene_in_every_frame(scene_and_views):
    from splatfx.fx.animation import ELEMENTS, ShotAnimation, Similarity

    scene, removed, views = scene_and_views
    backdrop = build_backdrop(scene, removed, views, seed=3).gaussians
    animation = ShotAnimation(scene, Similarity(), 4, 24.0, removed=removed, backdrop=backdrop)
    for t in (0, 3):
        g = animation.at(t)
        rows = slice(len(scene) - len(removed), len(scene) - len(removed) + len(backdrop))
        assert torch.equal(g.gaussians.means[rows], backdrop.means)
        assert (g.element[rows] == ELEMENTS["scene"]).all() and not g.motion[rows].any()


def test_the_haze_inside_the_structure_is_left_out_of_the_clean_pass(scene_and_views):
    """The reconstruction's semi-transparent haze hangs inside a structure (static Gaussians
    the selection did not take): it must not veil what the collapse uncovers, while what
    stands in front of the structure (the pillar) and behind it (the wall) stays."""
    scene, removed, views = scene_and_views
    rng = np.random.default_rng(0)
    n = 200
    haze_means = np.column_stack([rng.uniform(-0.9, 0.9, n), rng.uniform(-2.4, 0.8, n), rng.uniform(6.6, 7.4, n)])
    sh = np.zeros((n, 4, 3), np.float32)
    sh[:, 0] = 1.2  # near white
    haze = Gaussians.from_arrays({"means": haze_means, "quats": np.tile([1.0, 0, 0, 0], (n, 1)),
                                  "log_scales": np.full((n, 3), np.log(0.25)), "opacity_logits": np.full(n, -1.0),
                                  "sh": sh})
    hazy = Gaussians.cat([scene, haze])
    backdrop = build_backdrop(hazy, removed, views, seed=3)
    assert np.array_equal(backdrop.hidden, np.arange(len(scene), len(hazy)))  # the haze, and nothing else
    camera = views[1].camera
    veiled = render_clean_pass(hazy, removed, camera, backdrop.gaussians)
    cleared = render_clean_pass(hazy, removed, camera, backdrop.gaussians, backdrop.hidden)
    clear = render_clean_pass(scene, removed, camera, backdrop.gaussians)
    uncovered = veiled.structure > 0.5
    assert np.abs(cleared.rgba - clear.rgba)[uncovered].max() < 1e-6  # as if the haze had never been
    assert np.abs(veiled.rgba - clear.rgba)[uncovered].mean() > 0.05  # (which veiled it)
    assert np.array_equal(cleared.structure, veiled.structure)  # the haze is not the structure


def add_haze_and_collapse(shot) -> tuple[Gaussians, int]:
    """Hang 300 faint Gaussians just in front of test_fx_stage's building (outside its selection
    box), solve cameras on real plates, run select, collapse and snow; the scene before the
    haze and the haze's count."""
    from splatfx.fx.stage import run_collapse, run_select, run_snow
    from splatfx.io.formats import read_gaussians, write_gaussians
    from test_viewer import add_solved_cameras

    scene = read_gaussians(shot.scene_ply)
    rng = np.random.default_rng(1)
    n = 300
    world = np.column_stack([rng.uniform(-1.5, 1.5, n), rng.uniform(-2.2, -1.9, n), rng.uniform(1.0, 5.0, n)])
    rotation = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # the fixture's scene frame: world = 2 R x
    sh = np.zeros((n, 4, 3), np.float32)
    sh[:, 0] = 1.0
    haze = Gaussians.from_arrays({"means": (world / 2.0) @ rotation, "quats": np.tile([1.0, 0, 0, 0], (n, 1)),
                                  "log_scales": np.full((n, 3), -2.0), "opacity_logits": np.full(n, -1.0), "sh": sh})
    write_gaussians(Gaussians.cat([scene, haze]), shot.scene_ply)
    add_solved_cameras(shot)
    for stage in (run_select, run_collapse, run_snow):
        stage(shot)
    return scene, n


def test_the_structures_haze_goes_with_it_once_it_moves(shot):  # noqa: F811
    """fx collapse on real plates: faint Gaussians hanging just in front of the building (outside
    the selection box) are the structure's haze; they stay while it stands and go with it."""
    from splatfx.fx.animation import load_animation

    scene, n = add_haze_and_collapse(shot)
    animation = load_animation(shot)
    haze_rows = np.arange(len(scene), len(scene) + n)
    assert animation.backdrop is not None and np.isin(haze_rows, animation.hidden).mean() > 0.95
    assert (animation.hidden >= len(scene)).all()  # nothing else: the ground and the building's base stay
    first, last = animation.at(0), animation.at(animation.frames - 1)
    assert np.isin(haze_rows, first.source_index).all()  # while it stands, the plate's own picture
    assert not np.isin(animation.hidden, last.source_index).any()  # once it falls, gone with it


def test_sky_seen_only_above_a_hole_that_cuts_every_column_still_bounds_the_skyline():
    """Other plates often see the sky through a structure only in patches, with the unseen
    below them in every column: no column shows where the sky ends. The sky reaches at least
    as low as the sky they saw (without these bounds there was no skyline, and no sky painted)."""
    image = _sky_over_texture()
    known = np.zeros(image.shape[:2], bool)
    known[:12] = True  # the sky along the top ...
    known[12:32, 20:60] = True  # ... seen lower through one part of the structure
    known[60:] = True  # and the ground below
    sky = sky_mask(np.where(known[..., None], image, 0.0), known)
    line = skyline(sky, known)
    assert np.all(line >= 11) and np.all(line[25:55] >= 31)  # the lowest sky seen, column by column
    assert np.all(line <= 33)  # and no lower: nothing says the sky goes on down
    _, painted_sky = paint_unseen(image, known, np.random.default_rng(0))
    assert painted_sky[12:30, 25:55].sum() == 0  # seen there, not painted
    assert not painted_sky[40:].any()  # no sky painted over the ground


def test_a_gaussian_a_plate_sees_the_sky_through_is_a_floater_and_one_on_the_wall_is_not(scene_and_views):
    """Centres along the rays of one real plate's pixels, 6 m out: deep in its sky (a plate
    looks through them at the sky, whatever their opacity), on the building, and just inside
    the sky's edge (within SKY_FREE_MARGIN: left alone, the edge may be the roof)."""
    _, _, views = scene_and_views
    view = views[0]
    image = view.pixels()
    sky = sky_mask(image, np.ones(image.shape[:2], bool))
    assert sky.mean() > 0.05 and (~sky).mean() > 0.3
    from scipy.ndimage import binary_erosion, distance_transform_edt
    inside = distance_transform_edt(sky)
    deep = np.argwhere(inside > 3 * SKY_FREE_MARGIN + 2)[::97][:40]
    edge = np.argwhere(sky & (inside <= 1))[::37][:40]
    wall = np.argwhere(binary_erosion(~sky, iterations=10))[::997][:40]
    pixels = np.concatenate([deep, edge, wall])[:, ::-1] + 0.5  # (x, y) pixel centres
    camera = view.camera
    rays = np.column_stack([(pixels[:, 0] - camera.cx) / camera.fx, (pixels[:, 1] - camera.cy) / camera.fy,
                            np.ones(len(pixels))])
    means = (rays * 6.0 - camera.t) @ camera.R
    n = len(means)
    scene = Gaussians.from_arrays({"means": means, "quats": np.tile([1.0, 0, 0, 0], (n, 1)),
                                   "log_scales": np.full((n, 3), np.log(0.05)), "opacity_logits": np.full(n, 4.0),
                                   "sh": np.zeros((n, 1, 3), np.float32)})
    floaters = sky_floaters(scene, np.zeros(n, bool), [view])
    assert np.array_equal(floaters, np.arange(len(deep)))
    taken = np.zeros(n, bool)
    taken[:5] = True  # the structure's own rows are never floaters
    assert np.array_equal(sky_floaters(scene, taken, [view]), np.arange(5, len(deep)))
