"""COLMAP models: exact round trips, agreement with pycolmap, camera models, damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycolmap
import pytest

from splatfx.io import colmap
from splatfx.core.camera import Camera
from splatfx.io.colmap import ColmapCamera, ColmapImage, ColmapModel, ColmapPoints
from splatfx.core.errors import InputError
from splatfx.core.rotation import quat_to_rotmat


def random_model(seed: int = 0) -> ColmapModel:
    """Every camera model, images with and without 2D points, points with tracks of length 0-4."""
    rng = np.random.default_rng(seed)
    cameras = {}
    for i, model in enumerate(colmap.CAMERA_MODELS.values(), 1):
        cameras[i] = ColmapCamera(i, model.name, int(rng.integers(1, 5000)), int(rng.integers(1, 5000)),
                                  rng.normal(size=len(model.params)) * 100)
    images = {}
    for image_id in (3, 7, 11):
        n = 0 if image_id == 7 else 5
        q = rng.normal(size=4)
        images[image_id] = ColmapImage(image_id, q / np.linalg.norm(q), rng.normal(size=3), int(rng.integers(1, 19)),
                                       f"sub dir/img_{image_id}é.jpg".replace(" ", "_"), rng.random((n, 2)) * 1000,
                                       rng.choice([-1, 1, 2, 2**40], size=n))
    lengths = np.array([0, 1, 4, 2, 3])
    points = ColmapPoints(np.array([1, 5, 9, 2**33, 12]), rng.normal(size=(5, 3)),
                          rng.integers(0, 256, size=(5, 3)), np.array([-1.0, 0.5, 1e-17, 2.25, 3.0]), lengths,
                          rng.integers(0, 2**32, size=(int(lengths.sum()), 2)))
    return ColmapModel(cameras, images, points)


def assert_models_equal(a: ColmapModel, b: ColmapModel) -> None:
    assert list(a.cameras) == list(b.cameras)
    for ca, cb in zip(a.cameras.values(), b.cameras.values(), strict=True):
        assert (ca.camera_id, ca.model, ca.width, ca.height) == (cb.camera_id, cb.model, cb.width, cb.height)
        np.testing.assert_array_equal(ca.params, cb.params)
    assert list(a.images) == list(b.images)
    for ia, ib in zip(a.images.values(), b.images.values(), strict=True):
        assert (ia.image_id, ia.camera_id, ia.name) == (ib.image_id, ib.camera_id, ib.name)
        for field in ("qvec", "tvec", "xys", "point3D_ids"):
            np.testing.assert_array_equal(getattr(ia, field), getattr(ib, field))
    for field in ("ids", "xyz", "rgb", "errors", "track_lengths", "tracks"):
        np.testing.assert_array_equal(getattr(a.points, field), getattr(b.points, field))


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_write_read_round_trip_is_exact(tmp_path: Path, fmt: str):
    model = random_model()
    colmap.write_model(model, tmp_path, fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{s}.{fmt}" for s in ("cameras", "images", "points3D")]
    back = colmap.read_model(tmp_path)
    assert_models_equal(model, back)
    # a second write of what was read gives the same bytes
    colmap.write_model(back, tmp_path / "again", fmt)
    for stem in colmap.MODEL_FILES:
        assert (tmp_path / f"{stem}.{fmt}").read_bytes() == (tmp_path / "again" / f"{stem}.{fmt}").read_bytes()


def test_fern_points_rewrite_to_identical_bytes(data_dir: Path, tmp_path: Path):
    source = data_dir / "fern" / "sparse" / "0" / "points3D.bin"
    points = colmap.read_points3D(source)
    assert len(points) == 10091
    assert np.isfinite(points.xyz).all() and (points.track_lengths >= 2).all()
    assert len(points.tracks) == points.track_lengths.sum()
    colmap.write_points3D(points, tmp_path / "points3D.bin")
    assert (tmp_path / "points3D.bin").read_bytes() == source.read_bytes()
    colmap.write_points3D(points, tmp_path / "points3D.txt")
    text = colmap.read_points3D(tmp_path / "points3D.txt")
    np.testing.assert_array_equal(text.xyz, points.xyz)
    np.testing.assert_array_equal(text.tracks, points.tracks)
    np.testing.assert_array_equal(points.track(3), text.tracks[points.track_lengths[:3].sum():][:points.track_lengths[3]])


def test_fern_camera_is_simple_radial(data_dir: Path):
    (camera,) = colmap.read_cameras(data_dir / "fern" / "sparse" / "0" / "cameras.bin").values()
    assert (camera.model, camera.width, camera.height) == ("SIMPLE_RADIAL", 4032, 3024)
    fx, fy, cx, cy, dist = colmap.colmap_intrinsics(camera)
    assert fx == fy == pytest.approx(3260.526, abs=1e-3) and (cx, cy) == (2016.0, 1512.0)
    assert dist[0] == pytest.approx(0.01975, abs=1e-5) and not dist[1:].any()


def test_camera_model_table_matches_pycolmap():
    for model in colmap.CAMERA_MODELS.values():
        ref = pycolmap.Camera(model=model.name, width=10, height=10)
        assert int(ref.model) == model.model_id
        assert [p.strip() for p in ref.params_info.split(",")] == list(model.params)
    ours = {m.name for m in colmap.CAMERA_MODELS.values()}
    assert ours == {name for name in pycolmap.CameraModelId.__members__ if name != "INVALID"}


def pycolmap_reconstruction() -> pycolmap.Reconstruction:
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="OPENCV", width=640, height=480, camera_id=1,
                                                    params=[500, 510, 320, 240, 0.01, -0.02, 0.001, 0.002]))
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="SIMPLE_RADIAL", width=320, height=240, camera_id=2,
                                                    params=[300, 160, 120, 0.05]))
    rng = np.random.default_rng(1)
    for i in range(1, 4):
        xyzw = rng.normal(size=4)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(xyzw / np.linalg.norm(xyzw)), rng.normal(size=3))
        image = pycolmap.Image(name=f"frames/img{i}.jpg", keypoints=rng.random((3, 2)) * 100,
                               camera_id=1 if i < 3 else 2, image_id=i)
        rec.add_image_with_trivial_frame(image, pose)
    track = pycolmap.Track()
    track.add_element(1, 0)
    track.add_element(2, 1)
    rec.add_point3D(np.array([0.5, 0.25, 4.0]), track, np.array([10, 20, 30], np.uint8))
    return rec


def assert_matches_pycolmap(ours: ColmapModel, rec: pycolmap.Reconstruction) -> None:
    assert sorted(ours.cameras) == sorted(rec.cameras)
    for camera_id, cam in rec.cameras.items():
        mine = ours.cameras[camera_id]
        assert (mine.model, mine.width, mine.height) == (cam.model.name, cam.width, cam.height)
        np.testing.assert_array_equal(mine.params, cam.params)
    assert sorted(ours.images) == sorted(rec.images)
    for image_id, image in rec.images.items():
        mine = ours.images[image_id]
        assert (mine.name, mine.camera_id) == (image.name, image.camera_id)
        ref = image.cam_from_world()
        np.testing.assert_allclose(quat_to_rotmat(mine.qvec), ref.rotation.matrix(), atol=1e-15)
        np.testing.assert_array_equal(mine.tvec, ref.translation)
        np.testing.assert_array_equal(mine.xys, np.array([p.xy for p in image.points2D]).reshape(-1, 2))
        ids = [p.point3D_id if p.has_point3D() else -1 for p in image.points2D]
        np.testing.assert_array_equal(mine.point3D_ids, ids)
    assert list(ours.points.ids) == sorted(rec.points3D)
    for i, (point_id, point) in enumerate(sorted(rec.points3D.items())):
        np.testing.assert_array_equal(ours.points.xyz[i], point.xyz)
        np.testing.assert_array_equal(ours.points.rgb[i], point.color)
        assert ours.points.errors[i] == point.error
        np.testing.assert_array_equal(ours.points.track(i), [(e.image_id, e.point2D_idx) for e in point.track.elements])


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_reads_models_written_by_pycolmap(tmp_path: Path, fmt: str):
    rec = pycolmap_reconstruction()
    (rec.write_binary if fmt == "bin" else rec.write_text)(str(tmp_path))
    assert_matches_pycolmap(colmap.read_model(tmp_path), rec)


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_pycolmap_reads_what_we_write(tmp_path: Path, fmt: str):
    rec = pycolmap_reconstruction()
    (tmp_path / "ref").mkdir()
    rec.write_binary(str(tmp_path / "ref"))
    colmap.write_model(colmap.read_model(tmp_path / "ref"), tmp_path / "ours", fmt)
    assert_matches_pycolmap(colmap.read_model(tmp_path / "ref"), pycolmap.Reconstruction(str(tmp_path / "ours")))
    if fmt == "bin":  # byte for byte what COLMAP itself writes
        for stem in colmap.MODEL_FILES:
            assert (tmp_path / "ours" / f"{stem}.bin").read_bytes() == (tmp_path / "ref" / f"{stem}.bin").read_bytes()


REPRESENTABLE = {
    "SIMPLE_PINHOLE": [400.0, 310.0, 235.0],
    "PINHOLE": [400.0, 420.0, 310.0, 235.0],
    "SIMPLE_RADIAL": [400.0, 310.0, 235.0, 0.05],
    "RADIAL": [400.0, 310.0, 235.0, 0.05, -0.02],
    "OPENCV": [400.0, 420.0, 310.0, 235.0, 0.05, -0.02, 0.003, -0.002],
    "FULL_OPENCV": [400.0, 420.0, 310.0, 235.0, 0.05, -0.02, 0.003, -0.002, 0.01, 0.0, 0.0, 0.0],
}


@pytest.mark.parametrize("model", sorted(REPRESENTABLE))
def test_camera_models_project_like_pycolmap(model: str):
    """Our Camera (OpenCV distortion) puts pixels where COLMAP's model does."""
    params = REPRESENTABLE[model]
    ref = pycolmap.Camera(model=model, width=640, height=480, params=params)
    image = ColmapImage(1, [1.0, 0, 0, 0], [0.0, 0, 0], 1, "a.jpg")
    camera = colmap.colmap_to_camera(ColmapCamera(1, model, 640, 480, params), image)
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-0.6, 0.6, (200, 2)), np.ones(200)]) * rng.uniform(1, 5, (200, 1))
    uv, depth = camera.project(points)
    np.testing.assert_allclose(uv, ref.img_from_cam(points), atol=1e-9)
    np.testing.assert_allclose(depth, points[:, 2])


@pytest.mark.parametrize("model, params", [
    ("OPENCV_FISHEYE", [400.0, 400, 320, 240, 0.1, 0, 0, 0]),
    ("FULL_OPENCV", [400.0, 400, 320, 240, 0.1, 0, 0, 0, 0, 0.2, 0, 0]),
    ("EQUIRECTANGULAR", [640.0, 480]),
])
def test_unrepresentable_models_are_refused(model: str, params: list[float]):
    camera = ColmapCamera(4, model, 640, 480, params)
    with pytest.raises(InputError, match=rf"cameras\.bin: camera 4 uses COLMAP model {model}.*image_undistorter"):
        colmap.colmap_intrinsics(camera, "cameras.bin")


def test_camera_to_colmap_and_back():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    cams = [
        Camera(640, 480, 500.0, 505.0, 321.5, 239.25, R, rng.normal(size=3)),
        Camera(640, 480, 500.0, 505.0, 321.5, 239.25, R, rng.normal(size=3), dist=[0.1, -0.01, 0.001, 0.002]),
        Camera(640, 480, 500.0, 505.0, 321.5, 239.25, R, rng.normal(size=3), dist=[0.1, -0.01, 0.001, 0.002, 0.03]),
        Camera(640, 480, 500.0, 505.0, 321.5, 239.25, R.T, rng.normal(size=3)),
    ]
    model = colmap.model_from_cameras(["a.png", "b.png", "c.png", "d.png"], cams)
    assert [c.model for c in model.cameras.values()] == ["PINHOLE", "OPENCV", "FULL_OPENCV"]
    assert [im.camera_id for im in model.images.values()] == [1, 2, 3, 1]  # identical intrinsics shared
    for cam, image in zip(cams, model.images.values(), strict=True):
        back = colmap.colmap_to_camera(model.cameras[image.camera_id], image)
        np.testing.assert_allclose(back.R, cam.R, atol=1e-12)
        np.testing.assert_allclose(back.t, cam.t, atol=1e-12)
        assert (back.fx, back.fy, back.cx, back.cy) == (cam.fx, cam.fy, cam.cx, cam.cy)
        np.testing.assert_array_equal(np.zeros(5) if back.dist is None else np.pad(back.dist, (0, 5 - len(back.dist))),
                                      np.zeros(5) if cam.dist is None else np.pad(cam.dist, (0, 5 - len(cam.dist))))


def test_read_model_names_what_is_missing(tmp_path: Path):
    colmap.write_cameras(random_model().cameras, tmp_path / "cameras.txt")
    with pytest.raises(InputError, match=r"not a complete COLMAP model: missing images\.bin/\.txt, points3D\.bin/\.txt"):
        colmap.read_model(tmp_path)


def test_image_with_unknown_camera_is_refused(tmp_path: Path):
    model = random_model()
    model.images[3].camera_id = 99
    colmap.write_model(model, tmp_path, "bin")
    with pytest.raises(InputError, match=r"images\.bin: image 'sub_dir/img_3é\.jpg' refers to camera 99"):
        colmap.read_model(tmp_path)


@pytest.mark.parametrize("stem", colmap.MODEL_FILES)
def test_truncated_binary_files_raise_input_error(tmp_path: Path, stem: str):
    colmap.write_model(random_model(), tmp_path / "good", "bin")
    data = (tmp_path / "good" / f"{stem}.bin").read_bytes()
    reader = {"cameras": colmap.read_cameras, "images": colmap.read_images, "points3D": colmap.read_points3D}[stem]
    bad = tmp_path / f"{stem}.bin"
    for cut in sorted({1, 7, 9, len(data) // 3, len(data) // 2, len(data) - 1}):
        bad.write_bytes(data[:cut])
        with pytest.raises(InputError, match=rf"{stem}\.bin: (is truncated|.*unterminated)"):
            reader(bad)
    bad.write_bytes(data + b"\0\0\0")
    with pytest.raises(InputError, match=rf"{stem}\.bin: has 3 unexpected bytes"):
        reader(bad)


def test_corrupt_binary_and_text_are_input_errors(tmp_path: Path):
    cameras = tmp_path / "cameras.bin"
    cameras.write_bytes(np.array([1], "<u8").tobytes() + np.array([1, 42], "<i4").tobytes()
                        + np.array([10, 10], "<u8").tobytes() + np.zeros(4).tobytes())
    with pytest.raises(InputError, match=r"cameras\.bin: camera 1 has unknown model id 42"):
        colmap.read_cameras(cameras)
    cameras.write_bytes(np.array([2**40], "<u8").tobytes())
    with pytest.raises(InputError, match=r"says 1099511627776 cameras"):
        colmap.read_cameras(cameras)
    text = tmp_path / "cameras.txt"
    text.write_text("# comment\n1 PINHOLE 640 480 500 500 320\n")
    with pytest.raises(InputError, match=r"cameras\.txt: line 2: PINHOLE takes 4 parameters"):
        colmap.read_cameras(text)
    text.write_text("1 WEIRD 640 480 500\n")
    with pytest.raises(InputError, match=r"line 1: unknown camera model 'WEIRD'"):
        colmap.read_cameras(text)
    images = tmp_path / "images.txt"
    images.write_text("1 1 0 0 0 0 0 0 1 a.jpg\n1.5 2.5\n")
    with pytest.raises(InputError, match=r"images\.txt: line 2: POINTS2D needs triples"):
        colmap.read_images(images)
    points = tmp_path / "points3D.txt"
    points.write_text("1 0 0 x 1 2 3 0.5\n")
    with pytest.raises(InputError, match=r"points3D\.txt: line 1: expected numbers"):
        colmap.read_points3D(points)


def test_text_images_without_points_and_names_with_spaces(tmp_path: Path):
    images = tmp_path / "images.txt"
    images.write_text("# header\n1 1 0 0 0 0 0 0 1 my photo.jpg\n\n2 1 0 0 0 1 2 3 1 b.jpg\n")
    read = colmap.read_images(images)
    assert [im.name for im in read.values()] == ["my photo.jpg", "b.jpg"]
    assert all(len(im.xys) == 0 for im in read.values())
    np.testing.assert_array_equal(read[2].tvec, [1, 2, 3])
