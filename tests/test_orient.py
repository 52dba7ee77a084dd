"""Ground plane, up direction, metric scale and the z-up world frame (splatfx.recon.orient)."""

from __future__ import annotations

import numpy as np
import pytest

from splatfx.core.camera import look_at
from splatfx.recon.orient import (
    DEFAULT_SUBJECT_DISTANCE_M,
    ScaleMeasure,
    camera_path_up,
    cameras_mean_up,
    estimate_ground,
    median_subject_distance,
    orient_scene,
    scale_from_distance,
    scale_from_height,
)
from splatfx.shot.scene_frame import Plane, SceneFrame


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _synthetic_scene(seed: int = 0):
    """A noisy ground plane z=0 (60 % of points), a wall x=4 (25 %) and clutter, seen by
    cameras 1.5 units above the ground, all rotated and shifted into an arbitrary frame."""
    rng = np.random.default_rng(seed)
    ground = np.c_[rng.uniform(-5, 5, (3000, 2)), rng.normal(0, 0.01, 3000)]
    wall = np.c_[np.full(1300, 4.0) + rng.normal(0, 0.01, 1300), rng.uniform(-5, 5, 1300), rng.uniform(0, 6, 1300)]
    clutter = rng.uniform([-5, -5, 0], [5, 5, 3], (700, 3))
    points = np.concatenate([ground, wall, clutter])
    cameras = [
        look_at([3 * np.cos(a), 3 * np.sin(a), 1.5], [0, 0, 0.5], [0, 0, 1], 320, 240, 300.0)
        for a in np.linspace(0, 1.5 * np.pi, 12)
    ]
    rot, shift = _random_rotation(rng), rng.normal(0, 10, 3)
    moved = [c.with_pose(c.R @ rot.T, c.t - c.R @ rot.T @ shift) for c in cameras]
    return points @ rot.T + shift, moved, rot, shift


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def test_ground_normal_recovered_within_one_degree() -> None:
    points, cameras, rot, _ = _synthetic_scene()
    fit = estimate_ground(points, cameras)
    assert fit.up_source == "ground_plane"
    assert _angle_deg(fit.up, rot @ [0, 0, 1]) < 1.0
    assert 0.5 < fit.inlier_fraction < 0.7  # the ground, not the wall or the clutter


def test_plane_below_cameras_preferred_over_bigger_plane_above() -> None:
    """A ceiling carrying more points than the floor is rejected: it is above the cameras."""
    rng = np.random.default_rng(1)
    floor = np.c_[rng.uniform(-5, 5, (1000, 2)), np.zeros(1000)]
    ceiling = np.c_[rng.uniform(-5, 5, (2000, 2)), np.full(2000, 3.0)]
    cameras = [look_at([x, 0, 1.6], [x, 5, 1.2], [0, 0, 1], 320, 240, 300.0) for x in np.linspace(-3, 3, 7)]
    fit = estimate_ground(np.concatenate([floor, ceiling]), cameras)
    assert _angle_deg(fit.up, np.array([0, 0, 1])) < 0.5
    assert abs(fit.plane.offset) < 1e-6


def test_ground_is_the_lower_envelope_not_the_densest_layer() -> None:
    """A dense layer of bushes above a sparsely textured pavement does not win."""
    rng = np.random.default_rng(6)
    pavement = np.c_[rng.uniform(-8, 8, (600, 2)), rng.normal(0, 0.01, 600)]
    bushes = np.c_[rng.uniform(-8, 8, (3000, 2)), rng.normal(0.6, 0.01, 3000)]
    facade = np.c_[rng.uniform(-8, 8, 3000), np.full(3000, 9.0), rng.uniform(0, 12, 3000)]
    cameras = [look_at([x, -2, 1.6], [x, 9, 4], [0, 0, 1], 320, 240, 300.0) for x in np.linspace(-6, 6, 9)]
    fit = estimate_ground(np.concatenate([pavement, bushes, facade]), cameras)
    assert fit.up_source == "ground_plane"
    assert abs(fit.plane.offset) < 0.03  # z = 0, not the bushes at z = 0.6
    assert _angle_deg(fit.up, np.array([0, 0, 1])) < 1.0


def test_level_camera_path_corrects_tilted_cameras() -> None:
    """Cameras all pitched up 20° on a walk at constant height: the path's plane is level."""
    rng = np.random.default_rng(7)
    cameras = []
    for x, y in rng.uniform(-10, 10, (30, 2)):
        heading = rng.uniform(0.3, 0.7) * np.pi  # all looking roughly along +y
        target = [x + np.cos(heading), y + np.sin(heading), 1.6 + np.tan(np.radians(20))]
        cameras.append(look_at([x, y, 1.6], target, [0, 0, 1], 320, 240, 300.0))
    mean_up = cameras_mean_up(cameras)
    assert _angle_deg(mean_up, np.array([0, 0, 1])) > 15
    path_up = camera_path_up(cameras, mean_up)
    assert path_up is not None and _angle_deg(path_up, np.array([0, 0, 1])) < 1e-6
    fit = estimate_ground(np.zeros((0, 3)), cameras)  # imported cameras: no points
    assert fit.up_source == "camera_path" and fit.plane is None
    assert camera_path_up(cameras[:3], mean_up) is None  # too few to span a plane


def test_falls_back_to_camera_up_without_a_ground_plane() -> None:
    rng = np.random.default_rng(2)
    points = rng.normal(0, 1, (2000, 3))
    cameras = [look_at([x, -6, 0.5], [x, 0, 0], [0, 0, 1], 320, 240, 300.0) for x in np.linspace(-2, 2, 5)]
    fit = estimate_ground(points, cameras, min_inlier_fraction=0.3)
    assert fit.up_source == "camera_up"
    np.testing.assert_allclose(fit.up, cameras_mean_up(cameras))


def test_scale_from_two_points_is_exact() -> None:
    assert scale_from_distance([1, 2, 3], [1, 2, 7], 2.0) == 0.5
    assert scale_from_distance(np.zeros(3), [3, 4, 0], 10.0) == 2.0
    with pytest.raises(ValueError):
        scale_from_distance([1, 1, 1], [1, 1, 1], 1.0)


def test_scale_from_height_of_selection() -> None:
    pts = np.array([[0, 0, 0.5], [1, 1, 2.5], [0.3, 0.2, 1.0]])
    assert scale_from_height(pts, [0, 0, 1], 4.0) == pytest.approx(2.0)


def test_world_frame_is_z_up_metric_with_ground_at_zero() -> None:
    points, cameras, rot, shift = _synthetic_scene(seed=3)
    frame = orient_scene(points, cameras)
    assert frame.scale_source.startswith("assumed: mean camera height above the ground is 1.6 m")
    heights = np.array([frame.camera_to_world(c).center[2] for c in cameras])
    assert heights.mean() == pytest.approx(1.6, rel=1e-6)
    ground_pts = frame.points_to_world(points[:3000])
    assert np.abs(ground_pts[:, 2]).mean() < 0.02 * frame.scale
    assert _angle_deg(frame.camera_to_world(cameras[0]).up, np.array([0, 0, 1])) < 30  # cameras stay upright
    np.testing.assert_allclose(frame.rotation @ frame.rotation.T, np.eye(3), atol=1e-9)


def test_footage_that_shows_no_ground_below_the_cameras_assumes_a_subject_distance() -> None:
    """A wall framed from the cameras' height up (its lower part and the ground cut off by
    the frame): no camera height can be measured, so the scene is taken to lie a median 30 m
    away and the ground 1.6 m below the cameras, not the lowest point seen at eye level."""
    points, cameras, rot, shift = _synthetic_scene(seed=6)
    upright = (points - shift) @ rot  # back in the scene's own frame: z up, ground at 0
    seen = points[upright[:, 2] > 1.5]
    frame = orient_scene(seen, cameras)
    assert frame.scale_source.startswith("assumed: the ground is not seen below the cameras")
    assert "[solve.scale]" in frame.scale_source
    assert frame.scale * median_subject_distance(seen, cameras) == pytest.approx(DEFAULT_SUBJECT_DISTANCE_M)
    heights = np.array([frame.camera_to_world(c).center[2] for c in cameras])
    assert heights.mean() == pytest.approx(1.6, rel=1e-6)
    assert frame.points_to_world(seen)[:, 2].min() > 1.5  # everything seen stands above the ground
    assert _angle_deg(frame.up, rot @ np.array([0.0, 0.0, 1.0])) < 20  # up still from the camera path


def test_world_frame_with_measured_distance_and_json_round_trip(tmp_path) -> None:
    points, cameras, rot, shift = _synthetic_scene(seed=4)
    p1, p2 = rot @ [0, 0, 0] + shift, rot @ [0, 0, 2] + shift  # 2 solve units apart
    frame = orient_scene(points, cameras, ScaleMeasure("distance", 5.0, (tuple(p1), tuple(p2))))
    assert frame.scale == pytest.approx(2.5, rel=1e-12)
    w1, w2 = frame.points_to_world(np.stack([p1, p2]))
    assert np.linalg.norm(w2 - w1) == pytest.approx(5.0, rel=1e-9)
    frame.save(tmp_path / "scene.json")
    loaded = SceneFrame.load(tmp_path / "scene.json")
    np.testing.assert_allclose(loaded.world_from_solve(), frame.world_from_solve())
    assert loaded.scale_source == frame.scale_source
    assert isinstance(loaded.ground, Plane)


def test_camera_transform_keeps_projections() -> None:
    points, cameras, _, _ = _synthetic_scene(seed=5)
    frame = orient_scene(points, cameras)
    cam, world_cam = cameras[2], frame.camera_to_world(cameras[2])
    uv, _ = cam.project(points[:50])
    uv_world, _ = world_cam.project(frame.points_to_world(points[:50]))
    np.testing.assert_allclose(uv_world, uv, atol=1e-6)
