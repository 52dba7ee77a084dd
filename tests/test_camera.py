"""Camera conventions on real captures: OpenGL (lego), LLFF (fern), COLMAP (pycolmap as referee)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from splatfx.core.camera import Camera

TOL = 1e-9


def nearest_rotation(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    return u @ vt


def lego_c2ws(data_dir: Path) -> list[np.ndarray]:
    """The train poses with their float32-rounded rotations snapped back to exact rotations."""
    meta = json.loads((data_dir / "lego_200" / "transforms_train.json").read_text())
    out = []
    for frame in meta["frames"]:
        m = np.array(frame["transform_matrix"], dtype=np.float64)
        m[:3, :3] = nearest_rotation(m[:3, :3])
        out.append(m)
    return out


def fern_poses(data_dir: Path) -> np.ndarray:
    """LLFF 3x5 poses with exact rotations ([down, right, back] is right-handed)."""
    poses = np.load(data_dir / "fern" / "poses_bounds.npy")[:, :15].reshape(-1, 3, 5).astype(np.float64)
    for p in poses:
        p[:, :3] = nearest_rotation(p[:, :3])
    return poses


def assert_same_camera(a: Camera, b: Camera) -> None:
    np.testing.assert_allclose(a.R, b.R, atol=TOL)
    np.testing.assert_allclose(a.t, b.t, atol=TOL)
    np.testing.assert_allclose([a.fx, a.fy, a.cx, a.cy], [b.fx, b.fy, b.cx, b.cy], rtol=TOL)
    assert (a.width, a.height) == (b.width, b.height)


def test_opengl_axes_on_lego(data_dir: Path):
    """NeRF c2w columns are right, up, backwards and the centre: check each maps where it should."""
    for c2w in lego_c2ws(data_dir):
        cam = Camera.from_opengl_c2w(c2w, 200, 200, 277.78)
        np.testing.assert_allclose(cam.center, c2w[:3, 3], atol=TOL)
        np.testing.assert_allclose(cam.forward, -c2w[:3, 2], atol=TOL)
        np.testing.assert_allclose(cam.up, c2w[:3, 1], atol=TOL)
        np.testing.assert_allclose(cam.R[0], c2w[:3, 0], atol=TOL)  # image x is the camera's right
        # a point one unit ahead of the camera lands on the principal point at depth 1
        uv, z = cam.project((c2w[:3, 3] - c2w[:3, 2])[None])
        np.testing.assert_allclose(uv[0], [100.0, 100.0], atol=1e-9)
        assert z[0] == pytest.approx(1.0)


def test_round_trips_on_lego(data_dir: Path):
    for c2w in lego_c2ws(data_dir):
        cam = Camera.from_opengl_c2w(c2w, 200, 200, 277.78)
        np.testing.assert_allclose(cam.to_opengl_c2w(), c2w, atol=TOL)
        qvec, tvec = cam.to_colmap()
        assert_same_camera(Camera.from_colmap(qvec, tvec, 200, 200, 277.78, 277.78, 100.0, 100.0), cam)
        assert_same_camera(Camera.from_llff(cam.to_llff()), cam)
        back = Camera.from_llff(cam.to_llff(800, 800), 200, 200)  # hwf for 800 px originals
        assert_same_camera(back, cam)
        np.testing.assert_allclose(Camera.from_colmap(qvec, tvec, 200, 200, 277.78, 277.78, 100.0, 100.0)
                                   .to_opengl_c2w(), c2w, atol=TOL)


def test_llff_axes_and_round_trip_on_fern(data_dir: Path):
    """LLFF columns are [down, right, backwards]; to_llff(full size) gives the file's rows back."""
    for pose in fern_poses(data_dir):
        cam = Camera.from_llff(pose, 504, 378)
        np.testing.assert_allclose(cam.R[1], pose[:, 0], atol=TOL)  # camera +y (down) in world
        np.testing.assert_allclose(cam.R[0], pose[:, 1], atol=TOL)  # camera +x (right)
        np.testing.assert_allclose(cam.forward, -pose[:, 2], atol=TOL)
        np.testing.assert_allclose(cam.center, pose[:, 3], atol=TOL)
        assert cam.fx == pytest.approx(pose[2, 4] / 8, rel=TOL) and (cam.cx, cam.cy) == (252.0, 189.0)
        np.testing.assert_allclose(cam.to_llff(4032, 3024), pose, atol=TOL, rtol=TOL)
        np.testing.assert_allclose(Camera.from_opengl_c2w(cam.to_opengl_c2w(), 504, 378, cam.fx).viewmat(),
                                   cam.viewmat(), atol=TOL)
        qvec, tvec = cam.to_colmap()
        assert_same_camera(Camera.from_colmap(qvec, tvec, 504, 378, cam.fx, cam.fy, cam.cx, cam.cy), cam)


def test_colmap_pose_matches_pycolmap(data_dir: Path):
    """Our qvec (wxyz) and tvec mean what COLMAP means: compare with pycolmap's Rigid3d (xyzw)."""
    for c2w in lego_c2ws(data_dir)[:20]:
        cam = Camera.from_opengl_c2w(c2w, 200, 200, 277.78)
        qvec, tvec = cam.to_colmap()
        rigid = pycolmap.Rigid3d(pycolmap.Rotation3d(np.r_[qvec[1:], qvec[0]]), tvec)
        np.testing.assert_allclose(rigid.matrix(), cam.viewmat()[:3], atol=TOL)
        ref = pycolmap.Camera(model="PINHOLE", width=200, height=200, params=[277.78, 277.78, 100.0, 100.0])
        points = np.random.default_rng(0).normal(size=(10, 3))
        uv, _ = cam.project(points)
        np.testing.assert_allclose(uv, ref.img_from_cam(points @ rigid.rotation.matrix().T + tvec), atol=1e-9)


def test_scaled_and_resized_keep_the_view(data_dir: Path):
    """Scaling the image scales where points land (pixel-centre convention kept)."""
    cam = Camera.from_llff(fern_poses(data_dir)[0], 4032, 3024)
    points = cam.center + 30 * cam.forward + np.random.default_rng(0).normal(size=(50, 3))
    uv, _ = cam.project(points)
    for small in (cam.scaled(1 / 8), cam.resized(504, 378)):
        assert (small.width, small.height) == (504, 378)
        np.testing.assert_allclose(small.project(points)[0], uv / 8, atol=1e-9)
