"""Shot cameras: spline and slerp paths, orbit and dolly presets, virtual camera files,
match-moved plate cameras from a solve, and rendering through lens distortion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from splatfx.io import colmap
from splatfx.core.camera import Camera, look_at
from splatfx.shot.config import FrameRange
from splatfx.core.errors import InputError
from splatfx.fx.animation import Similarity
from splatfx.core.gaussians import Gaussians
from splatfx.render.passes import render_features
from splatfx.render.cameras import (CameraPath, dolly_cameras, interpolate_positions, interpolate_rotations, lens_warp,
                             load_virtual_cameras, orbit_cameras, plate_cameras)
from scipy.spatial.transform import Rotation

KEY_TIMES = np.array([1001.0, 1005.0, 1013.0, 1016.0])
KEY_POINTS = np.array([[0.0, 0, 0], [1.0, 2, 0], [3.0, 2, 1], [4.0, 0, 1]])


@pytest.mark.parametrize("method", ["catmull-rom", "cubic", "linear"])
def test_paths_pass_through_their_keyframes_and_hold_outside(method):
    assert np.allclose(interpolate_positions(KEY_TIMES, KEY_POINTS, KEY_TIMES, method), KEY_POINTS)
    held = interpolate_positions(KEY_TIMES, KEY_POINTS, [990.0, 1030.0], method)
    assert np.allclose(held, KEY_POINTS[[0, -1]])


@pytest.mark.parametrize("method", ["catmull-rom", "cubic"])
def test_spline_paths_are_smooth_at_keyframes(method):
    eps = 1e-4
    for t in KEY_TIMES[1:-1]:
        before = interpolate_positions(KEY_TIMES, KEY_POINTS, [t - eps, t], method)
        after = interpolate_positions(KEY_TIMES, KEY_POINTS, [t, t + eps], method)
        assert np.allclose((before[1] - before[0]) / eps, (after[1] - after[0]) / eps, atol=1e-2)
    linear = interpolate_positions(KEY_TIMES, KEY_POINTS, [1005 - eps, 1005, 1005 + eps], "linear")
    assert not np.allclose(linear[1] - linear[0], linear[2] - linear[1], atol=1e-7)  # the kink splines remove


def test_catmull_rom_uses_neighbour_differences_as_tangents():
    eps = 1e-5
    p = interpolate_positions(KEY_TIMES, KEY_POINTS, [1005 - eps, 1005 + eps], "catmull-rom")
    expected = (KEY_POINTS[2] - KEY_POINTS[0]) / (KEY_TIMES[2] - KEY_TIMES[0])
    assert np.allclose((p[1] - p[0]) / (2 * eps), expected, atol=1e-4)


def test_slerp_turns_at_a_constant_rate_on_the_shortest_arc():
    a, b = np.eye(3), Rotation.from_euler("y", 90, degrees=True).as_matrix()
    mids = interpolate_rotations(np.array([0.0, 4.0]), np.stack([a, b]), [1.0, 2.0, 3.0])
    angles = [Rotation.from_matrix(m).magnitude() for m in mids]
    assert np.allclose(np.degrees(angles), [22.5, 45.0, 67.5])
    assert np.allclose(Rotation.from_matrix(mids[1]).as_rotvec(), [0, np.pi / 4, 0])


def test_camera_path_reproduces_keyframe_cameras():
    cams = tuple(look_at(p + [0, 0, -5], p, [0, -1, 0], 320, 240, 300.0) for p in KEY_POINTS)
    path = CameraPath(KEY_TIMES, cams)
    for cam, got in zip(cams, path.at(KEY_TIMES)):
        assert np.allclose(got.R, cam.R) and np.allclose(got.t, cam.t) and got.fx == pytest.approx(cam.fx)
    middle = path.at([1009.0])[0]
    assert np.linalg.det(middle.R) == pytest.approx(1.0) and np.allclose(middle.R @ middle.R.T, np.eye(3))


def test_orbit_circles_its_centre_and_keeps_it_in_the_middle_of_the_frame():
    centre = np.array([1.0, 2.0, 0.5])
    cams = orbit_cameras(25, centre, 4.0, 1.5, start_deg=10.0, degrees=90.0, width=320, image_height=240, fx=300.0)
    assert len(cams) == 25
    for cam in cams:
        offset = cam.center - centre
        assert np.hypot(offset[0], offset[1]) == pytest.approx(4.0) and offset[2] == pytest.approx(1.5)
        pixel, depth = cam.project(centre[None])
        assert np.allclose(pixel[0], [160.0, 120.0]) and depth[0] > 0
        assert cam.up[2] > 0.9  # level: image up is world up
    first, last = (np.degrees(np.arctan2(*(c.center - centre)[[1, 0]])) for c in (cams[0], cams[-1]))
    assert (first, last) == (pytest.approx(10.0), pytest.approx(100.0))


def test_dolly_moves_from_start_to_end_easing_in_and_out():
    cams = dolly_cameras(11, [0, -10, 1.5], [0, -4, 1.5], [0, 0, 1.5], width=320, image_height=240, fx=300.0)
    assert np.allclose(cams[0].center, [0, -10, 1.5]) and np.allclose(cams[-1].center, [0, -4, 1.5])
    steps = np.diff([c.center[1] for c in cams])
    assert steps[0] < steps[5] and steps[-1] < steps[5]  # slow, fast, slow
    assert all(np.allclose(c.project(np.array([[0, 0, 1.5]]))[0][0], [160, 120]) for c in cams)


def test_virtual_camera_file_in_world_metres_lands_in_solve_coordinates(tmp_path):
    space = Similarity(2.0, Rotation.from_euler("x", 90, degrees=True).as_matrix(), np.array([1.0, 0.0, 0.5]))
    path = tmp_path / "camera.json"
    path.write_text(json.dumps({"interpolation": "cubic", "keyframes": [
        {"frame": 1001, "position": [0, -10, 2], "look_at": [0, 0, 2]},
        {"frame": 1005, "position": [5, -8, 2], "look_at": [0, 0, 2], "fov_x_deg": 40},
        {"frame": 1009, "position": [8, -3, 3], "look_at": [0, 0, 2]}]}))
    cams = load_virtual_cameras(path, FrameRange(1001, 1009), space, 320, 240, 300.0)
    assert len(cams) == 9
    assert np.allclose(space.to_world(cams[0].center[None])[0], [0, -10, 2])
    assert np.allclose(space.to_world(cams[8].center[None])[0], [8, -3, 3])
    target = space.to_solve(np.array([[0.0, 0.0, 2.0]]))
    for cam in cams:
        assert np.allclose(cam.project(target)[0][0], [160, 120], atol=1e-6)
    assert cams[4].fx == pytest.approx(160 / np.tan(np.radians(20)))
    world_up = space.vector_to_solve(np.array([0, 0, 1.0]))
    assert np.dot(cams[0].up, world_up / np.linalg.norm(world_up)) > 0.99  # level in the world

    first, last = look_at([0, 0, 0], [0, 0, 5], [0, -1, 0], 320, 240, 300), look_at([2, 0, 0], [5, 0, 3], [0, -1, 0], 320, 240, 300)
    path.write_text(json.dumps({"space": "solve", "keyframes": [
        {"frame": 1, "transform_matrix": first.to_opengl_c2w().tolist()},
        {"frame": 5, "transform_matrix": last.to_opengl_c2w().tolist()}]}))
    slerped = load_virtual_cameras(path, FrameRange(1, 5), None, 320, 240, 300.0)
    assert np.allclose(slerped[0].R, first.R) and np.allclose(slerped[4].t, last.t)
    turn = Rotation.from_matrix(last.R.T @ first.R).magnitude()
    assert Rotation.from_matrix(slerped[2].R.T @ first.R).magnitude() == pytest.approx(turn / 2)

    path.write_text(json.dumps({"preset": "orbit", "center": [0, 0, 1], "radius": 6}))
    orbit = load_virtual_cameras(path, FrameRange(1, 5), space, 320, 240, 300.0)
    world = space.to_world(np.stack([c.center for c in orbit]))
    assert np.allclose(np.hypot(world[:, 0], world[:, 1]), 6.0)


def test_bad_virtual_camera_files_name_the_file_and_the_problem(tmp_path):
    path = tmp_path / "camera.json"
    for content, words in (("{", "not valid JSON"), ('{"keyframes": []}', "keyframes"),
                           ('{"preset": "crane"}', "orbit"), ('{"keyframes": [{"frame": 1}]}', "position")):
        path.write_text(content)
        with pytest.raises(InputError, match=words) as err:
            load_virtual_cameras(path, FrameRange(1, 3), Similarity(), 64, 48, 50.0)
        assert str(path) in str(err.value)


def test_plate_cameras_use_the_distorted_solve_and_fill_unregistered_frames(tmp_path):
    solve = tmp_path / "solve"
    cams = [Camera(400, 300, 350.0, 350.0, 200, 150, np.eye(3), [0.1 * i, 0.0, 0.0], dist=[-0.1, 0.02, 0, 0])
            for i in range(5)]
    names = [f"img{i}.jpg" for i in range(5)]
    keep = [0, 1, 3, 4]  # frame 1003 was not registered
    colmap.write_model(colmap.model_from_cameras([names[i] for i in keep], [cams[i] for i in keep]),
                       solve / "distorted" / "sparse" / "0")
    pinhole = [Camera(410, 310, 340.0, 340.0, 205, 155, c.R, c.t) for c in cams]
    colmap.write_model(colmap.model_from_cameras([names[i] for i in keep], [pinhole[i] for i in keep]),
                       solve / "sparse" / "0")
    report = {"frames": [{"frame": 1001 + i, "image": n, "registered": i in keep} for i, n in enumerate(names)]}
    (solve / "report.json").write_text(json.dumps(report))
    got = plate_cameras(solve, FrameRange(1001, 1005))
    assert len(got) == 5 and all(g.dist is not None and g.width == 400 for g in got)
    assert np.allclose(got[2].center, cams[2].center, atol=1e-9)  # halfway between its neighbours
    doubled = plate_cameras(solve, FrameRange(1001, 1005), size=(800, 600))
    assert doubled[0].fx == pytest.approx(700.0) and doubled[0].width == 800
    with pytest.raises(InputError, match="aspect"):
        plate_cameras(solve, FrameRange(1001, 1005), size=(800, 800))


def test_renders_through_lens_distortion_land_where_the_distorted_camera_projects():
    cam = Camera(320, 240, 260.0, 260.0, 161.0, 118.0, np.eye(3), np.zeros(3), dist=[-0.25, 0.08, 0.001, -0.002])
    warp = lens_warp(cam)
    assert warp.pinhole.width > 320 and warp.pinhole.dist is None  # barrel distortion needs overscan
    points = np.array([[-1.3, -0.9, 2.0], [1.2, 0.8, 2.0], [0.0, 0.0, 3.0], [1.1, -0.85, 2.0]])
    n = len(points)
    g = Gaussians.from_arrays({"means": points, "quats": np.tile([1.0, 0, 0, 0], (n, 1)),
                               "log_scales": np.full((n, 3), np.log(0.01)), "opacity_logits": np.full(n, 5.0),
                               "sh": np.zeros((n, 1, 3), np.float32)})
    out = render_features(g, torch.ones(n, 1), cam)
    assert out.alpha.shape == (240, 320)
    expected, _ = cam.project(points)
    yy, xx = np.mgrid[0:240, 0:320] + 0.5
    for x, y in expected:
        near = np.hypot(xx - x, yy - y) < 8
        weight = out.alpha * near
        assert weight.sum() > 1.0
        centroid = [(weight * xx).sum() / weight.sum(), (weight * yy).sum() / weight.sum()]
        assert np.allclose(centroid, [x, y], atol=0.15)
