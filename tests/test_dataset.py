"""Loading captures: layouts, splits, cameras on real data, lazy images, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from splatfx.io import colmap

from splatfx.io import dataset
from splatfx.io.dataset import load_dataset
from splatfx.core.errors import ConfigError, InputError


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every image the dataset decodes."""
    decoded: list[Path] = []
    original = dataset._read_pixels

    def spy(path: Path):
        decoded.append(path)
        return original(path)

    monkeypatch.setattr(dataset, "_read_pixels", spy)
    return decoded


# --------------------------------------------------------------------------- lego (NeRF-synthetic)


def test_lego_splits_and_intrinsics(data_dir: Path):
    sizes = {s: len(load_dataset(data_dir / "lego_200", s)) for s in ("train", "val", "test", "all")}
    assert sizes == {"train": 100, "val": 100, "test": 200, "all": 400}
    test = load_dataset(data_dir / "lego_200", "test")
    assert test.layout == "transforms" and test.points is None
    assert test.names[:3] == ["test/r_0.png", "test/r_1.png", "test/r_2.png"]  # file order kept
    for cam in test.cameras:
        assert (cam.width, cam.height) == (200, 200)
        assert cam.fx == cam.fy == pytest.approx(277.78, abs=1e-2)
        assert (cam.cx, cam.cy) == (100.0, 100.0)
        assert cam.dist is None


def test_lego_cameras_circle_and_look_at_the_origin(data_dir: Path):
    test = load_dataset(data_dir / "lego_200", "test")
    radii = np.array([np.linalg.norm(c.center) for c in test.cameras])
    assert radii.mean() == pytest.approx(4.03, abs=1e-2)
    assert np.abs(radii - radii.mean()).max() < 1e-2
    for cam in test.cameras:
        uv, depth = cam.project(np.zeros((1, 3)))
        assert depth[0] > 0
        assert np.abs(uv[0] - [100.0, 100.0]).max() < 3.0
    assert test.camera_extent() == pytest.approx(1.1 * 4.03, abs=0.5)


def test_lego_images_composite_onto_white_by_default(data_dir: Path):
    train = load_dataset(data_dir / "lego_200")
    assert train.background.tolist() == [1.0, 1.0, 1.0]
    raw = np.asarray(Image.open(data_dir / "lego_200" / "train" / "r_0.png"), dtype=np.float32) / 255
    rgb, alpha = train.image(0), train.alpha(0)
    assert rgb.shape == (200, 200, 3) and rgb.dtype == np.float32 and alpha.shape == (200, 200)
    np.testing.assert_allclose(alpha, raw[..., 3])
    np.testing.assert_allclose(rgb, raw[..., :3] * raw[..., 3:] + (1 - raw[..., 3:]), atol=1e-6)
    assert 0.0 < alpha.mean() < 0.5 and rgb.min() >= 0 and rgb.max() <= 1
    assert train.mask(0) is None
    black = load_dataset(data_dir / "lego_200", background="black")
    corner = alpha == 0
    assert np.all(black.image(0)[corner] == 0) and np.all(rgb[corner] == 1)
    grey = load_dataset(data_dir / "lego_200", background=(0.5, 0.25, 0.0))
    np.testing.assert_allclose(grey.image(0)[corner][0], [0.5, 0.25, 0.0])


def test_lego_downscale_box_filters_images_and_cameras(data_dir: Path):
    full = load_dataset(data_dir / "lego_200", "test")
    half = load_dataset(data_dir / "lego_200", "test", downscale=2)
    cam = half[5].camera
    assert (cam.width, cam.height, cam.fx, cam.cx) == (100, 100, pytest.approx(277.78 / 2, abs=1e-2), 50.0)
    assert half[5].source_size == (200, 200)
    expected = full.image(5).reshape(100, 2, 100, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(half.image(5), expected, atol=1e-5)
    assert half.alpha(5).shape == (100, 100)


def test_loading_decodes_no_pixels_and_the_cache_is_bounded(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    decoded = count_decodes(monkeypatch)
    one_frame = 200 * 200 * 4 * 4  # rgb + alpha, float32
    data = load_dataset(data_dir / "lego_200", "test", cache_bytes=3 * one_frame)
    data.validate()  # headers only
    assert decoded == []
    first = data.image(0)
    assert data.image(0) is first and len(decoded) == 1  # cached
    for i in range(1, 6):
        data.image(i)
    assert len(decoded) == 6 and data._cache.used <= 3 * one_frame
    data.image(0)  # evicted long ago: decoded again
    assert len(decoded) == 7
    uncached = load_dataset(data_dir / "lego_200", "test", cache_bytes=0)
    uncached.image(0), uncached.image(0)
    assert len(decoded) == 9


# --------------------------------------------------------------------------- fern (LLFF)


def test_fern_llff_cameras_splits_and_bounds(data_dir: Path):
    poses = np.load(data_dir / "fern" / "poses_bounds.npy")
    everything = load_dataset(data_dir / "fern", "all")
    assert everything.layout == "llff" and len(everything) == 20
    for frame, row in zip(everything, poses, strict=True):
        cam = frame.camera
        assert (cam.width, cam.height) == (504, 378) and frame.source_size == (504, 378)
        assert cam.fx == cam.fy == pytest.approx(3260.526 / 8, abs=1e-3)
        assert (cam.cx, cam.cy) == (252.0, 189.0)
        assert (frame.near, frame.far) == (row[15], row[16])
    test = load_dataset(data_dir / "fern", "test")
    train = load_dataset(data_dir / "fern", "train")
    assert test.names == ["image000.png", "image008.png", "image016.png"]
    assert len(train) == 17 and not set(train.names) & set(test.names)
    assert load_dataset(data_dir / "fern", "test", holdout_every=0).frames == []
    assert train.image(0).shape == (378, 504, 3) and train.alpha(0) is None


def test_fern_cameras_face_one_way_and_see_the_sparse_points(data_dir: Path):
    data = load_dataset(data_dir / "fern", "all")
    forward = np.stack([c.forward for c in data.cameras])
    mean = forward.mean(axis=0) / np.linalg.norm(forward.mean(axis=0))
    assert np.degrees(np.arccos(np.clip(forward @ mean, -1, 1))).max() < 15
    points = data.points
    assert points is not None and len(points) == 10091
    assert points.xyz.dtype == np.float32 and points.rgb.dtype == np.uint8
    for cam in data.cameras:
        uv, depth = cam.project(points.xyz)
        inside = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 504) & (uv[:, 1] >= 0) & (uv[:, 1] < 378)
        assert inside.mean() > 0.95


def test_llff_image_folder_choice(data_dir: Path, tmp_path: Path):
    with pytest.raises(InputError, match=r"images_4: image folder does not exist \(found: images_8"):
        load_dataset(data_dir / "fern", images="images_4")
    root = tmp_path / "fern"
    (root / "images_16").mkdir(parents=True)
    shutil.copy(data_dir / "fern" / "poses_bounds.npy", root)
    for src in sorted((data_dir / "fern" / "images_8").iterdir()):
        Image.open(src).resize((252, 189)).save(root / "images_16" / src.name)
    data = load_dataset(root, "all", images="images_16")
    assert (data[0].camera.width, data[0].camera.height) == (252, 189)
    assert data[0].camera.fx == pytest.approx(3260.526 / 16, abs=1e-3)
    assert data.points is None  # no sparse/ copied


def test_llff_count_mismatch_names_poses_file(data_dir: Path, tmp_path: Path):
    root = tmp_path / "fern"
    shutil.copytree(data_dir / "fern" / "images_8", root / "images_8")
    shutil.copy(data_dir / "fern" / "poses_bounds.npy", root)
    (root / "images_8" / "image019.png").unlink()
    with pytest.raises(InputError, match=r"poses_bounds\.npy: has 20 poses but .*images_8 has 19 images"):
        load_dataset(root)
    np.save(root / "poses_bounds.npy", np.zeros((19, 15)))
    with pytest.raises(InputError, match=r"poses_bounds\.npy: has shape \(19, 15\), expected \(N, 17\)"):
        load_dataset(root)


# --------------------------------------------------------------------------- south_building


def test_images_without_cameras_say_run_solve(data_dir: Path):
    with pytest.raises(InputError, match=r"south_building: has images but no cameras \(looked for "
                                         r"transforms\.json.*poses_bounds\.npy\); run `splatfx solve`"):
        load_dataset(data_dir / "south_building")


def test_empty_folder_is_not_a_capture(tmp_path: Path):
    with pytest.raises(InputError, match=r"is not a capture: found none of transforms\.json"):
        load_dataset(tmp_path)


# --------------------------------------------------------------------------- COLMAP layout


def colmap_capture(data_dir: Path, root: Path, n: int = 16, fmt: str = "bin") -> list:
    """A COLMAP project built from lego train views: sparse/0 model plus images/ (RGBA PNGs)."""
    lego = load_dataset(data_dir / "lego_200", "train")
    names = [f"view_{i:03d}.png" for i in range(n)]
    (root / "images").mkdir(parents=True)
    for name, frame in zip(names, lego.frames[:n], strict=False):
        shutil.copy(frame.image_path, root / "images" / name)
    points = colmap.ColmapPoints(np.arange(3), [[0, 0, 0], [0.5, 0, 0], [0, 0, 0.5]], [[255, 0, 0]] * 3,
                                 np.zeros(3), np.zeros(3), np.zeros((0, 2)))
    model = colmap.model_from_cameras(names[::-1], [f.camera for f in lego.frames[:n]][::-1], points)
    colmap.write_model(model, root / "sparse" / "0", fmt)
    return lego.frames[:n]


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_colmap_capture(data_dir: Path, tmp_path: Path, fmt: str):
    originals = colmap_capture(data_dir, tmp_path, fmt=fmt)
    train = load_dataset(tmp_path)
    test = load_dataset(tmp_path, "test")
    assert train.layout == "colmap" and train.background.tolist() == [0.0, 0.0, 0.0]
    assert test.names == ["view_000.png", "view_008.png"] and len(train) == 14
    for frame in test:
        original = originals[int(frame.name[5:8])].camera
        np.testing.assert_allclose(frame.camera.viewmat(), original.viewmat(), atol=1e-12)
        assert frame.camera.fx == original.fx
    assert len(train.points) == 3 and train.points.rgb[0].tolist() == [255, 0, 0]
    assert np.all(test.image(0)[test.alpha(0) == 0] == 0)


def test_colmap_capture_with_smaller_image_folder(data_dir: Path, tmp_path: Path):
    colmap_capture(data_dir, tmp_path, n=4)
    (tmp_path / "images_2").mkdir()
    for p in (tmp_path / "images").iterdir():
        Image.open(p).resize((100, 100)).save(tmp_path / "images_2" / p.name)
    data = load_dataset(tmp_path, "all", images="images_2")
    assert (data[0].camera.width, data[0].camera.fx) == (100, pytest.approx(277.78 / 2, abs=1e-2))
    assert data.image(0).shape == (100, 100, 3)


def test_colmap_errors(data_dir: Path, tmp_path: Path):
    colmap_capture(data_dir, tmp_path, n=4)
    (tmp_path / "images" / "view_002.png").unlink()
    with pytest.raises(InputError, match=r"images\.bin: image 'view_002\.png' is not in .*images"):
        load_dataset(tmp_path)
    shutil.copy(tmp_path / "images" / "view_001.png", tmp_path / "images" / "view_002.png")
    with pytest.raises(InputError, match="has no val split"):
        load_dataset(tmp_path, "val")
    cameras = tmp_path / "sparse" / "0" / "cameras.bin"
    cameras.write_bytes(cameras.read_bytes()[:-5])
    with pytest.raises(InputError, match=r"cameras\.bin: is truncated"):
        load_dataset(tmp_path)


# --------------------------------------------------------------------------- transforms.json errors and variants


def small_lego(data_dir: Path, root: Path, n: int = 4) -> Path:
    """transforms_train.json with the first ``n`` lego train frames and their images."""
    meta = json.loads((data_dir / "lego_200" / "transforms_train.json").read_text())
    meta["frames"] = meta["frames"][:n]
    (root / "train").mkdir(parents=True)
    for frame in meta["frames"]:
        shutil.copy(data_dir / "lego_200" / (frame["file_path"] + ".png"), root / "train")
    path = root / "transforms_train.json"
    path.write_text(json.dumps(meta))
    return path


def test_missing_image_names_json_and_frame(data_dir: Path, tmp_path: Path):
    small_lego(data_dir, tmp_path)
    (tmp_path / "train" / "r_2.png").unlink()
    with pytest.raises(InputError, match=r"transforms_train\.json: frame 2: image '\./train/r_2' not found"):
        load_dataset(tmp_path)


def test_odd_sized_image_found_by_validate(data_dir: Path, tmp_path: Path):
    small_lego(data_dir, tmp_path)
    odd = tmp_path / "train" / "r_3.png"
    Image.open(odd).resize((100, 100)).save(odd)
    data = load_dataset(tmp_path)
    with pytest.raises(InputError, match=r"r_3\.png: is 100x100 but its camera expects 200x200"):
        data.validate()
    data.image(0)
    with pytest.raises(InputError, match=r"r_3\.png: is 100x100 but its camera expects 200x200"):
        data.image(3)


def test_corrupt_image_and_malformed_json(data_dir: Path, tmp_path: Path):
    path = small_lego(data_dir, tmp_path)
    bad = tmp_path / "train" / "r_1.png"
    bad.write_bytes(bad.read_bytes()[:300])
    data = load_dataset(tmp_path)
    with pytest.raises(InputError, match=r"r_1\.png: "):
        data.image(1)
    path.write_text(path.read_text()[:-10])
    with pytest.raises(InputError, match=r"transforms_train\.json: malformed JSON: .* at line 1"):
        load_dataset(tmp_path)
    path.write_text(json.dumps({"camera_angle_x": 0.7}))
    with pytest.raises(InputError, match=r'transforms_train\.json: has no "frames" list'):
        load_dataset(tmp_path)
    with pytest.raises(InputError, match=r"transforms_test\.json: test split file does not exist"):
        load_dataset(tmp_path, "test")


def test_scaled_pose_is_refused(data_dir: Path, tmp_path: Path):
    path = small_lego(data_dir, tmp_path)
    meta = json.loads(path.read_text())
    meta["frames"][1]["transform_matrix"] = (np.array(meta["frames"][1]["transform_matrix"]) * [[2], [2], [2], [1]]).tolist()
    path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"transforms_train\.json: frame 1: rotation is not orthonormal"):
        load_dataset(tmp_path)


def test_nerfstudio_transforms(data_dir: Path, tmp_path: Path):
    """One transforms.json: fl_x/fl_y/cx/cy/w/h/k1.. per file, a per-frame override, masks, points."""
    lego = json.loads((data_dir / "lego_200" / "transforms_train.json").read_text())
    (tmp_path / "images").mkdir()
    frames = []
    for i, frame in enumerate(lego["frames"][:10]):
        shutil.copy(data_dir / "lego_200" / (frame["file_path"] + ".png"), tmp_path / "images" / f"f{i:02d}.png")
        frames.append({"file_path": f"images/f{i:02d}.png", "transform_matrix": frame["transform_matrix"]})
    frames[3]["fl_x"] = 300.0
    frames[3]["file_path"] = "images/f03"  # suffix left out
    Image.fromarray(np.full((200, 200), 255, np.uint8)).save(tmp_path / "images" / "mask.png")
    frames[1]["mask_path"] = "images/mask.png"
    (tmp_path / "sparse_pc.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n"
                                            "property float y\nproperty float z\nproperty uchar red\n"
                                            "property uchar green\nproperty uchar blue\nend_header\n0 0 0 10 20 30\n")
    meta = {"camera_model": "OPENCV", "fl_x": 250.0, "fl_y": 260.0, "cx": 99.5, "cy": 101.0, "w": 200, "h": 200,
            "k1": 0.01, "k2": -0.002, "p1": 0.0, "p2": 0.0, "ply_file_path": "sparse_pc.ply", "frames": frames[::-1]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    train = load_dataset(tmp_path)
    test = load_dataset(tmp_path, "test")
    assert test.names == ["images/f00.png", "images/f08.png"]  # every 8th by sorted name
    assert len(train) == 8 and train.names[0] == "images/f01.png"
    cam = train[0].camera
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (250.0, 260.0, 99.5, 101.0)
    np.testing.assert_array_equal(cam.dist, [0.01, -0.002, 0.0, 0.0, 0.0])
    assert train[2].name == "images/f03.png" and train[2].camera.fx == 300.0
    assert train.background.tolist() == [0.0, 0.0, 0.0]  # not NeRF-synthetic: black
    np.testing.assert_array_equal(train.mask(0), np.ones((200, 200), np.float32))
    assert train.mask(1) is None
    assert train.points.rgb.tolist() == [[10, 20, 30]]
    meta["camera_model"] = "OPENCV_FISHEYE"
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="camera_model OPENCV_FISHEYE is not supported"):
        load_dataset(tmp_path)


def test_bad_settings_are_config_errors(data_dir: Path):
    lego = data_dir / "lego_200"
    with pytest.raises(ConfigError, match="split: must be one of"):
        load_dataset(lego, "training")
    with pytest.raises(ConfigError, match="background"):
        load_dataset(lego, background="purple")
    with pytest.raises(ConfigError, match="background"):
        load_dataset(lego, background=(2, 0, 0))
    with pytest.raises(ConfigError, match="background"):
        load_dataset(lego, background="1,x,0")
    assert dataset.parse_background("0.5, 0.25,0") == (0.5, 0.25, 0.0)
    assert dataset.parse_background(0.5) == (0.5, 0.5, 0.5)
    with pytest.raises(ConfigError, match="downscale"):
        load_dataset(lego, downscale=0.5)
    with pytest.raises(ConfigError, match="images: applies to COLMAP and LLFF"):
        load_dataset(lego, images="images_2")
