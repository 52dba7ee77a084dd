"""``splatfx view``: splats in the world frame, decimation, the selection gizmo saved to
shot.toml, the fx timeline, stage buttons, plate | comp — and the page in a real browser."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

pytest.importorskip("viser")

from splatfx import cli
from splatfx.core.camera import look_at
from splatfx.cli import main
from splatfx.io.colmap import model_from_cameras, write_model
from splatfx.core.errors import InputError
from splatfx.io.formats import read_gaussians
from splatfx.fx.animation import ELEMENTS, Similarity
from splatfx.fx.animation import load_frame
from splatfx.fx.stage import run_collapse, run_select, run_snow
from splatfx.core.gaussians import Gaussians
from splatfx.io.images import write_png
from splatfx.core.rotation import quat_to_rotmat
from splatfx.core.sh import SH_C0
from splatfx.shot.folder import Shot
from splatfx.viewer.app import ShotViewer
from splatfx.viewer.content import STAGES, stage_function
from splatfx.viewer.selection import euler_xyz_from_matrix, euler_xyz_matrix
from splatfx.viewer.splats import decimate, display_importance, to_splats

import browser_tools
from test_fx_stage import shot  # noqa: F401  (fixture: a building-like scene and scene.json on real plates)

BUILDING_RGB = (179, 128, 102)  # the fixture's building colour (0.7, 0.5, 0.4) in 8 bits


def add_solved_cameras(target: Shot, radius: float = 11.0) -> list:
    """A COLMAP model in ``solve/`` (cameras on a ring around the building, named like the
    plates, images linked from them), in solve coordinates as a real solve writes them."""
    frame = load_frame(target)
    with target.open_plates() as plates:
        files = [plates.path(f) for f in plates.frames]
    cameras = []
    for i in range(len(files)):
        angle = -np.pi / 2 + 0.6 * (i / len(files) - 0.5)
        world = look_at(np.array([radius * np.cos(angle), radius * np.sin(angle), 1.7]), np.array([0.0, 0.0, 2.5]),
                        np.array([0.0, 0.0, 1.0]), 768, 576, 600.0)
        # x_cam = R_w (s·Rf·x + t) + t_w, divided by s (projection does not see it)
        cameras.append(world.with_pose(world.R @ frame.rotation, (world.R @ frame.translation + world.t) / frame.scale))
    write_model(model_from_cameras([f.name for f in files], cameras), target.solve_dir / "sparse" / "0")
    (target.solve_dir / "images").mkdir()
    for f in files:
        (target.solve_dir / "images" / f.name).symlink_to(f.resolve())
    return cameras


@pytest.fixture()
def fx_shot(shot):  # noqa: F811
    """The fx test shot with solved cameras and its select, collapse and snow caches."""
    add_solved_cameras(shot)
    for stage in (run_select, run_collapse, run_snow):
        stage(shot)
    return Shot.open(shot.root)


# --- conversions ------------------------------------------------------------------------------------
def test_splats_are_the_gaussians_in_the_world_frame():
    rng = np.random.default_rng(0)
    n = 50
    quats = rng.normal(size=(n, 4))
    log_scales = rng.uniform(-3, 0, (n, 3))
    sh = rng.normal(size=(n, 4, 3)) * 0.5
    g = Gaussians.from_arrays({"means": rng.normal(size=(n, 3)), "quats": quats, "log_scales": log_scales,
                               "opacity_logits": rng.normal(size=n), "sh": sh})
    rotation = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    frame = Similarity(2.0, rotation, np.array([1.0, -2.0, 0.5]))
    splats = to_splats(g, frame)
    np.testing.assert_allclose(splats.centers, 2.0 * g.means.double().numpy() @ rotation.T + [1.0, -2.0, 0.5],
                               rtol=1e-5, atol=1e-5)
    # each covariance has the Gaussian's world axes as eigenvectors and (2σ)² as eigenvalues
    axes = rotation @ quat_to_rotmat(quats)
    sigma2 = (2.0 * np.exp(log_scales)) ** 2
    for i in range(n):
        np.testing.assert_allclose(splats.covariances[i] @ axes[i], axes[i] * sigma2[i], rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(splats.rgbs, np.clip(sh[:, 0] * SH_C0 + 0.5, 0, 1), atol=1e-6)
    np.testing.assert_allclose(splats.opacities[:, 0], torch.sigmoid(g.opacity_logits).numpy(), atol=1e-6)


def test_decimation_keeps_the_most_opaque_times_largest_in_order():
    rng = np.random.default_rng(1)
    n = 1000
    g = Gaussians.from_arrays({"means": rng.normal(size=(n, 3)), "quats": np.tile([1.0, 0, 0, 0], (n, 1)),
                               "log_scales": rng.uniform(-5, 0, (n, 3)), "opacity_logits": rng.normal(size=n),
                               "sh": np.zeros((n, 1, 3))})
    importance = torch.sigmoid(g.opacity_logits).double().numpy() * np.exp(g.log_scales.double().numpy().sum(1))
    np.testing.assert_allclose(display_importance(g), importance, rtol=1e-6)
    kept = decimate(g, 100)
    expected = np.sort(np.argsort(-importance)[:100])
    np.testing.assert_array_equal(kept.means.numpy(), g.means.numpy()[expected])
    assert decimate(g, n) is g


def test_euler_angles_round_trip():
    rng = np.random.default_rng(2)
    for angles in rng.uniform((-179, -89, -179), (179, 89, 179), (200, 3)):
        np.testing.assert_allclose(euler_xyz_from_matrix(euler_xyz_matrix(angles)), angles, atol=1e-6)
    # the box's columns are its axes: 90° about z turns the box's x axis onto world y
    np.testing.assert_allclose(euler_xyz_matrix((0, 0, 90))[:, 0], [0, 1, 0], atol=1e-12)


def test_a_stage_whose_module_is_missing_is_named_not_run(monkeypatch):
    monkeypatch.setitem(STAGES, "render", ("splatfx.not_written_yet", "run_render"))
    monkeypatch.setitem(STAGES, "comp", ("splatfx.fx.stage", "run_comp"))
    assert stage_function("render") == "not available yet (splatfx.not_written_yet is not installed)"
    assert stage_function("comp") == "not available yet (splatfx.fx.stage has no run_comp)"
    assert stage_function("fx.select") is run_select


# --- the viewer, driven through its API -------------------------------------------------------------
def test_viewer_shows_the_shot_and_saves_the_selection(fx_shot):
    comp_frame = fx_shot.frames.start + 5
    fx_shot.comp_dir.mkdir()
    write_png(fx_shot.comp_dir / f"comp.{comp_frame}.png", np.full((576, 768, 3), 0.25, np.float32))
    toml_before = fx_shot.toml_path.read_text()
    with ShotViewer(fx_shot, port=0, max_splats=4000) as viewer:  # more than that is decimated, and said so
        assert viewer.static_shown + viewer.dynamic_budget <= 4000 and viewer.static_shown < viewer.static_total
        assert viewer.dynamic_shown <= viewer.dynamic_budget < viewer.dynamic_total
        assert f"{viewer.static_shown + viewer.dynamic_shown:,} of" in viewer.scene_text.content
        assert "decimated" in viewer.scene_text.content
    with ShotViewer(fx_shot, port=0) as viewer:
        assert viewer.url.startswith("http://127.0.0.1:") and viewer.port > 0
        # the untouched scene plus the backdrop card (static, so sent once), all of it shown
        backdrop = len(viewer.animation.backdrop)
        assert backdrop > 0 and viewer.static_shown == viewer.static_total == 3000 + backdrop
        assert "decimated" not in viewer.scene_text.content
        assert len(viewer.cameras) == 24 and viewer.cameras[0].frame == fx_shot.frames.start
        # cameras are in the world frame: on the 11 m ring, 1.7 m up
        centres = np.array([c.position for c in viewer.cameras])
        np.testing.assert_allclose(np.linalg.norm(centres[:, :2], axis=1), 11.0, rtol=1e-6)
        np.testing.assert_allclose(centres[:, 2], 1.7, atol=1e-6)

        # the timeline: the building's pieces fall (world z goes down) between frame 0 and the last
        # (the moving part of the scene is the building's pieces: "scene" while at rest, then "fragment")
        pieces = lambda: np.isin(viewer.dynamic_element, [ELEMENTS["scene"], ELEMENTS["fragment"]])  # noqa: E731
        viewer.set_frame(0)
        z_first = viewer.dynamic_splats.centers[pieces(), 2].mean()
        viewer.set_frame(viewer.frame_count - 1)
        assert viewer.frame_slider.value == fx_shot.frames.end
        assert f"frame **{fx_shot.frames.end}**" in viewer.time_text.content
        z_last = viewer.dynamic_splats.centers[pieces(), 2].mean()
        assert z_last < z_first - 0.2

        # plate | comp for the frame that has a comp, nothing for the others; its plate camera lit
        assert viewer.comp_panel_image is None
        viewer.set_frame(5)
        assert viewer.current_camera == 5 and tuple(viewer._frustums[5].color) == (255, 120, 0)
        panel = viewer.comp_panel_image
        assert panel is not None and panel.shape[1] == 2 * panel.shape[0] * 768 // 576
        assert np.abs(panel[:, panel.shape[1] // 2 + 2:].astype(int) - 64).max() <= 1  # the PNG's codes, as stored

        # stages: the available ones run in the background; the missing ones are disabled
        for name, button in viewer.stage_buttons.items():
            assert button.disabled == isinstance(stage_function(name), str)
        result = viewer.run_stage("fx.select").result(timeout=60)
        assert result.ran is False and viewer.status == "fx.select: up to date"
        assert toml_before == fx_shot.toml_path.read_text()

        # the selection gizmo: a move is written to shot.toml (and nothing else changes)
        box = viewer.selection_box
        box.move(center=(0.5, -0.25, 3.0), size=(2.0, 3.5, 6.5), rotation=(0.0, 0.0, 30.0))
        np.testing.assert_allclose(box.gizmo.position, (0.5, -0.25, 3.0))
        saved = Shot.open(fx_shot.root).config
        assert saved.fx.select.center == (0.5, -0.25, 3.0) and saved.fx.select.size == (2.0, 3.5, 6.5)
        assert saved.fx.select.rotation == (0.0, 0.0, 30.0)
        assert saved.fx.collapse == fx_shot.config.fx.collapse and saved.shot == fx_shot.config.shot
        assert 0 < box.selected() < 4000 and f"**{box.selected():,}**" in box.count_text.content

        # a stage that fails says why, and the buttons come back
        box.move(center=(100.0, 0.0, 3.0))
        with pytest.raises(InputError, match="no Gaussians"):
            viewer.run_stage("fx.select").result(timeout=60)
        assert viewer.status.startswith("fx.select failed") and "[fx.select]" in viewer.status
        assert viewer.running_stage is None and not viewer.stage_buttons["fx.select"].disabled

        # play advances the timeline on its own
        start = viewer.frame_index
        viewer.play(True)
        deadline = time.monotonic() + 20
        while viewer.frame_index == start and time.monotonic() < deadline:
            time.sleep(0.05)
        viewer.play(False)
        assert viewer.frame_index != start and viewer.play_box.value is False

        # looking through a plate camera: its plate behind the scene, the splats faded by the plate opacity
        full = viewer._static_handle.opacities.astype(int)
        viewer.overlay_opacity.value = 0.75
        viewer.look_through(3)
        assert viewer.looking_through == 3 and viewer.camera_choice.value == viewer.cameras[3].name
        assert np.abs(viewer._static_handle.opacities.astype(int) - full / 4).max() <= 1
        forward = quat_to_rotmat(viewer.cameras[3].wxyz)[:, 2]
        plate_depth = (viewer._plate_node.position - viewer.cameras[3].position) @ forward
        assert plate_depth > ((viewer.world_means - viewer.cameras[3].position) @ forward).max()  # behind the scene
        viewer.leave_plate()
        assert viewer._plate_node is None and np.array_equal(viewer._static_handle.opacities, full)


def test_a_lone_gaussian_file_is_shown_in_its_own_coordinates(shot):  # noqa: F811
    with ShotViewer(shot.scene_dir / "scene.ply", port=0) as viewer:
        assert viewer.shot is None and viewer.world_frame is None
        assert viewer.static_shown == viewer.static_total == 7000 and viewer.cameras == []
        on_disk = read_gaussians(shot.scene_dir / "scene.ply").means.double().numpy()
        np.testing.assert_array_equal(viewer.world_means, on_disk)  # no scene.json applied to a lone file
        assert viewer.selection_box is None and all(b.disabled for b in viewer.stage_buttons.values())
        with pytest.raises(InputError, match="shot folder"):
            viewer.run_stage("fx.select")


def test_view_command_names_a_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*dict.fromkeys([*cli.COMMAND_MODULES, "view"])])
    bad = tmp_path / "notes.txt"
    bad.write_text("not a scene")
    with pytest.raises(SystemExit) as done:
        main(["view", str(bad)])
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "Gaussian file" in err


# --- the page in a real browser ----------------------------------------------------------------------
def screen_point(camera, point: np.ndarray) -> tuple[float, float]:
    """Where the browser camera (viser's, OpenCV axes, vertical fov) shows a world point, in CSS pixels."""
    local = quat_to_rotmat(camera.wxyz).T @ (np.asarray(point) - camera.position)
    focal = camera.image_height / 2 / np.tan(camera.fov / 2)
    return camera.image_width / 2 + focal * local[0] / local[2], camera.image_height / 2 + focal * local[1] / local[2]


def test_page_draws_the_splats_follows_the_timeline_and_saves_a_dragged_box(fx_shot):
    browser_tools.require_browser()
    # the browser draws splats in software here: a budget of tens of thousands keeps a frame in seconds
    # (the backdrop card alone is ~200k splats)
    with ShotViewer(fx_shot, port=0, max_splats=30_000) as viewer:
        viewer.show_cameras.value = False  # judge the splats alone
        with browser_tools.open_page(viewer.url + "?fixedDpr=1") as page:
            page.page.wait_for_selector("canvas", timeout=30_000)
            scene = {"x": 0, "y": 0, "width": 620, "height": 640}  # left of the GUI panel
            first = browser_tools.wait_until_still(page, scene)
            assert page.errors == [], page.errors
            assert browser_tools.background_fraction(first) < 0.95
            assert browser_tools.colour_fraction(first, BUILDING_RGB) > 0.01

            viewer.set_frame(viewer.frame_count - 1)  # the building has come down
            last = browser_tools.wait_until_still(page, scene)
            assert browser_tools.difference(first, last) > 0.02

            # drag the gizmo's z arrow up with the mouse: the box rises and shot.toml follows
            camera = next(iter(viewer.server.get_clients().values())).camera
            centre = np.array(viewer.selection_box.center)
            x, y = screen_point(camera, centre + [0.0, 0.0, 0.75 * viewer.selection_box.gizmo.scale])
            mouse = page.page.mouse
            mouse.move(x, y)
            mouse.down()
            mouse.move(x, y - 60, steps=10)
            mouse.up()
            deadline = time.monotonic() + 20
            while Shot.open(fx_shot.root).config.fx.select.center == tuple(centre) and time.monotonic() < deadline:
                time.sleep(0.2)
            saved = Shot.open(fx_shot.root).config.fx.select.center
            assert saved == viewer.selection_box.center
            assert saved[2] > centre[2] + 0.3 and np.allclose(saved[:2], centre[:2], atol=0.05)
            assert page.errors == [], page.errors


def test_viewer_shows_a_shot_whose_structure_sheds_its_haze(shot):  # noqa: F811
    """The haze the structure takes with it (fx.backdrop's hidden rows) is left out of the
    static splats, and every frame of the timeline still draws."""
    from test_backdrop import add_haze_and_collapse

    scene, haze = add_haze_and_collapse(shot)
    with ShotViewer(Shot.open(shot.root), port=0, max_splats=50_000) as viewer:
        animation = viewer.animation
        assert len(animation.hidden) >= haze * 0.95
        assert viewer.static_total == (len(scene) + haze - len(animation.removed) - len(animation.hidden)
                                       + len(animation.backdrop))
        for index in (0, viewer.frame_count - 1):
            viewer.set_frame(index)
            assert viewer.dynamic_shown > 0
