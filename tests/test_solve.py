"""The camera solve stage on real captures: solve, refuse, import, re-orient."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from splatfx.io import colmap
from splatfx.commands.solve import command
from splatfx.io.dataset import load_dataset
from splatfx.core.color import srgb_to_linear
from splatfx.core.errors import ConfigError, InputError
from splatfx.io.images import write_image
from splatfx.shot.manifest import Manifest
from splatfx.recon.orient import cameras_mean_up
from splatfx.shot.folder import Shot, create_shot
from splatfx.shot.scene_frame import SceneFrame
from splatfx.recon.solve import (SolveConfig, choose_keyframes, feature_count, image_pairs, import_cameras,
                                 measure_frames, solve_images)

FAST = ["--max-image-size", "512"]  # features on 512-px images keep the test quick


@pytest.fixture(scope="module")
def solved_shot(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A shot of 12 consecutive south_building photos, solved once through the CLI."""
    root = tmp_path_factory.mktemp("solve")
    plates = root / "plates_src"
    plates.mkdir()
    for src in sorted((data_dir / "south_building" / "images").iterdir())[:12]:
        (plates / src.name).symlink_to(src)
    create_shot(root / "sb", plates)
    result = CliRunner().invoke(command, [str(root / "sb"), *FAST])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return root / "sb"


def test_solve_registers_consecutive_photos(solved_shot: Path) -> None:
    solve = solved_shot / "solve"
    report = json.loads((solve / "report.json").read_text())
    assert report["images_total"] == 12 and report["images_registered"] >= 10
    assert report["mean_reprojection_error_px"] < 1.5 and report["points3D"] > 300
    assert [f["frame"] for f in report["frames"]] == list(range(1001, 1013))
    model = colmap.read_model(solve / "sparse" / "0")
    assert {c.model for c in model.cameras.values()} == {"PINHOLE"} and len(model.cameras) == 1
    assert len(model.images) == report["images_registered"] and len(model.points) == report["points3D"]
    assert colmap.read_model(solve / "distorted" / "sparse" / "0").cameras[1].model == "SIMPLE_RADIAL"
    names = sorted(im.name for im in model.images.values())
    assert sorted(p.name for p in (solve / "images").iterdir()) == names  # undistorted images, one per camera
    assert not any(p.name.startswith(".") for p in solved_shot.iterdir() if p.name != ".splatfx")  # no leftovers
    # the solved capture loads as a COLMAP capture for training
    data = load_dataset(solve, "all")
    assert len(data) == len(names) and data.points is not None and all(c.dist is None for c in data.cameras)


def test_solve_orientation_agrees_with_cameras(solved_shot: Path) -> None:
    solve = solved_shot / "solve"
    scene = SceneFrame.load(solve / "scene.json")
    cameras = load_dataset(solve, "all").cameras
    angle = np.degrees(np.arccos(np.clip(scene.up @ cameras_mean_up(cameras), -1, 1)))
    assert angle < 30
    heights = np.array([scene.camera_to_world(c).center[2] for c in cameras])
    assert heights.mean() == pytest.approx(1.6, rel=1e-6)  # the stated assumption, in metres
    assert scene.scale_source == "assumed: mean camera height above the ground is 1.6 m"
    assert np.all(heights > 0)  # every camera above the ground


def test_footage_cut_off_above_the_ground_keeps_a_plausible_scale(solved_shot: Path) -> None:
    """The same solve with every point below the cameras dropped, as when 16:9 frames cut
    the pavement off a 4:3 photo: the scale (from an assumed subject distance) stays within
    a factor 1.6 of the one the visible ground gives, not the solve's arbitrary units."""
    from splatfx.recon.orient import camera_path_up, orient_scene

    solve = solved_shot / "solve"
    full = SceneFrame.load(solve / "scene.json")
    data = load_dataset(solve, "all")
    camera_up = cameras_mean_up(data.cameras)
    reference = camera_path_up(data.cameras, camera_up)  # the up orient searches around
    reference = camera_up if reference is None else reference
    centres = np.array([c.center for c in data.cameras])
    seen = data.points.xyz[data.points.xyz @ reference > (centres @ reference).max()]
    cut = orient_scene(seen, data.cameras)
    assert cut.scale_source.startswith("assumed: the ground is not seen below the cameras")
    assert 1 / 1.6 < cut.scale / full.scale < 1.6, (cut.scale, full.scale)
    heights = np.array([cut.camera_to_world(c).center[2] for c in data.cameras])
    assert heights.mean() == pytest.approx(1.6, rel=1e-6)


def test_shot_stages_skip_and_reorient(solved_shot: Path) -> None:
    before = SceneFrame.load(solved_shot / "solve" / "scene.json")
    images_mtime = (solved_shot / "solve" / "sparse" / "0" / "images.bin").stat().st_mtime_ns
    result = CliRunner().invoke(command, [str(solved_shot), *FAST, "--camera-height", "3.2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    after = SceneFrame.load(solved_shot / "solve" / "scene.json")
    assert after.scale == pytest.approx(2 * before.scale, rel=1e-9)  # only the scale changed
    np.testing.assert_allclose(after.up, before.up)
    assert (solved_shot / "solve" / "sparse" / "0" / "images.bin").stat().st_mtime_ns == images_mtime
    runs = Manifest.load(Shot.open(solved_shot).manifest_path)
    assert runs.last("solve").status == "ok" and runs.last("orient").status == "ok"
    assert runs.last("solve").figures["images_registered"] >= 10


def test_scale_from_an_empty_selection_is_refused(solved_shot: Path) -> None:
    scene_before = (solved_shot / "solve" / "scene.json").read_bytes()
    result = CliRunner().invoke(command, [str(solved_shot), *FAST, "--height", "1e6,1e6,1e6,1e6,1e6,1e6", "2"])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception).startswith("[solve.scale]: the height selection holds 0 points")
    assert (solved_shot / "solve" / "scene.json").read_bytes() == scene_before  # left as it was


def test_images_that_do_not_overlap_are_refused(tmp_path: Path, data_dir: Path) -> None:
    """Six unrelated pictures (lego, fern, two sides of south_building) cannot be solved."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    south = sorted((data_dir / "south_building" / "images").iterdir())
    sources = [data_dir / "lego_200" / "train" / "r_0.png", data_dir / "lego_200" / "train" / "r_50.png",
               data_dir / "fern" / "images_8" / "image000.png", data_dir / "fern" / "images_8" / "image019.png",
               south[0], south[70]]
    for i, src in enumerate(sources):
        Image.open(src).convert("RGB").resize((320, 240)).save(folder / f"img{i}.jpg", quality=95)
    out = tmp_path / "out"
    with pytest.raises(InputError) as caught:
        solve_images(folder, out, SolveConfig(max_image_size=320))
    message = str(caught.value)
    assert message.startswith(str(folder)) and "of 6 images could be registered" in message
    assert "the images do not overlap enough" in message
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # nothing half-written left behind


def test_import_lego_transforms_keeps_cameras(tmp_path: Path, data_dir: Path) -> None:
    lego = data_dir / "lego_200"
    result = CliRunner().invoke(command, ["--import", str(lego / "transforms_train.json"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    expected = {f.name: f.camera for f in load_dataset(lego, "all")}
    model = colmap.read_model(tmp_path / "s" / "sparse" / "0")
    assert len(model.images) == len(expected) == 400
    for image in model.images.values():
        got = colmap.colmap_to_camera(model.cameras[image.camera_id], image)
        want = expected[image.name]
        assert (got.width, got.height) == (want.width, want.height)
        np.testing.assert_allclose([got.fx, got.fy, got.cx, got.cy], [want.fx, want.fy, want.cx, want.cy], atol=1e-6)
        np.testing.assert_allclose(got.R, want.R, atol=1e-6)
        np.testing.assert_allclose(got.t, want.t, atol=1e-6)
        assert (tmp_path / "s" / "images" / image.name).is_file()
    scene = json.loads((tmp_path / "s" / "scene.json").read_text())
    assert scene["up"][2] > 0.99  # lego's world is z-up and its cameras look at it from above


def test_import_llff_keeps_points(tmp_path: Path, data_dir: Path) -> None:
    report = import_cameras(data_dir / "fern", tmp_path / "fern")
    assert report.images_total == 20 and report.points3D > 1000
    data = load_dataset(tmp_path / "fern", "all")
    reference = load_dataset(data_dir / "fern", "all")
    assert data.names == reference.names and len(data.points) == len(reference.points)
    np.testing.assert_allclose(data.cameras[3].center, reference.cameras[3].center, atol=1e-6)


def test_pairs_for_each_matcher() -> None:
    assert len(image_pairs(12, "exhaustive")) == 66
    sequential = image_pairs(100, "sequential", overlap=3)
    assert (0, 1) in sequential and (0, 3) in sequential and (0, 4) in sequential  # 4 = 2² (quadratic)
    assert (0, 5) not in sequential and all(i < j for i, j in sequential)
    closed = image_pairs(100, "sequential", overlap=3, loop_closure=True, loop_keyframes=10)
    assert (0, 99) in closed and (0, 99) not in sequential  # the end is matched with the start
    assert feature_count(SolveConfig(), "exhaustive", 128) == 1024
    assert feature_count(SolveConfig(), "sequential", 500) == 2048
    assert feature_count(SolveConfig(max_features=4096), "exhaustive", 128) == 4096


def test_exr_plates_are_exported_and_solved(tmp_path: Path, data_dir: Path) -> None:
    """Scene-linear EXR plates are written as sRGB JPEGs for COLMAP, named by frame number."""
    plates = tmp_path / "plates"
    plates.mkdir()
    for i, src in enumerate(sorted((data_dir / "south_building" / "images").iterdir())[:8]):
        pixels = np.asarray(Image.open(src).resize((384, 288), Image.BILINEAR), dtype=np.float32) / 255
        write_image(plates / f"sb.{1001 + i:04d}.exr", srgb_to_linear(pixels))
    report = solve_images(plates, tmp_path / "solve", SolveConfig(max_image_size=384))
    assert report.images_registered >= 7 and report.mean_reprojection_error_px < 1.5
    assert [f["image"] for f in report.frames][:2] == ["001001.jpg", "001002.jpg"]
    assert [f["frame"] for f in report.frames] == list(range(1001, 1009))
    assert (tmp_path / "solve" / "images" / "001001.jpg").is_file()


# --- keyframes, registration and interpolation for video-like sequences --------------------------
def _motion_blur(image: np.ndarray, length: int) -> np.ndarray:
    """Horizontal motion blur over ``length`` pixels, as a camera panning during the exposure."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    return cv2.filter2D(image, -1, kernel)


def _video_like(data_dir: Path, folder: Path, photos: int, blurred_copies: set[int], size=(384, 288)) -> list[str]:
    """Consecutive south_building photos as frames ``f.1001.jpg``...; each photo index in
    ``blurred_copies`` is followed by a motion-blurred copy of itself (a smeared video frame)."""
    folder.mkdir()
    frame = 1001
    for i, src in enumerate(sorted((data_dir / "south_building" / "images").iterdir())[:photos]):
        image = cv2.resize(cv2.imread(str(src)), size, interpolation=cv2.INTER_AREA)
        versions = [image] + ([_motion_blur(image, 11)] if i in blurred_copies else [])
        for version in versions:
            cv2.imwrite(str(folder / f"f.{frame:04d}.jpg"), version, [cv2.IMWRITE_JPEG_QUALITY, 95])
            frame += 1
    return sorted(p.name for p in folder.iterdir())


def test_keyframes_skip_blurred_frames(tmp_path: Path, data_dir: Path) -> None:
    """On 24 consecutive photos, blurring 4 that would be keyframes makes the choice move off them."""
    folder = tmp_path / "seq"
    names = _video_like(data_dir, folder, 24, set())
    sharp = choose_keyframes(measure_frames(folder, names), spacing=0.08, max_gap=24)
    assert 6 <= len(sharp) < 24  # consecutive photos move ~2-9 % of the width: about one keyframe per two
    blurred = sharp[1:-1:2][:4]
    for k in blurred:
        image = cv2.imread(str(folder / names[k]))
        cv2.imwrite(str(folder / names[k]), _motion_blur(image, 9), [cv2.IMWRITE_JPEG_QUALITY, 95])
    measures = measure_frames(folder, names)
    assert all(measures.sharpness[k] < 0.6 for k in blurred)  # blur detected (relative to the median)
    assert np.median(np.delete(measures.sharpness, blurred)) > 0.9
    keys = choose_keyframes(measures, spacing=0.08, max_gap=24)
    assert not set(keys) & set(blurred)
    assert keys[0] <= 2 and keys[-1] >= len(names) - 3 and max(np.diff(keys)) <= 5  # spread along the path


def test_sequential_solve_gives_every_frame_a_camera(tmp_path: Path, data_dir: Path) -> None:
    """Ten photos with three heavily smeared frames between them: the photos are solved or
    registered, the smeared frames are interpolated, and report.json says which."""
    folder = tmp_path / "seq"
    names = _video_like(data_dir, folder, 10, {2, 5, 7})
    out = tmp_path / "solve"
    report = solve_images(folder, out, SolveConfig(matcher="sequential", max_image_size=384, max_features=1024,
                                                    keyframe_spacing=0.08))
    assert report.matcher == "sequential" and report.keyframes < len(names)
    rows = {r["image"]: r for r in report.frames}
    smeared = [names[i] for i in (3, 7, 10)]  # the copies follow photos 2, 5 and 7
    assert all(rows[n]["sharpness"] < 0.6 and not rows[n]["keyframe"] for n in smeared)
    assert all(r["camera"] in ("solved", "registered", "interpolated") for r in report.frames)  # every frame
    kinds = [r["camera"] for r in report.frames]
    assert kinds.count("solved") >= 4 and kinds.count("registered") >= 1 and "interpolated" in kinds
    model = colmap.read_model(out / "sparse" / "0")
    in_model = {im.name for im in model.images.values()}
    assert in_model == {n for n, r in rows.items() if r["camera"] in ("solved", "registered")}
    assert report.images_registered == len(in_model) and report.mean_reprojection_error_px < 1.5
    by_name = {im.name: im for im in model.images.values()}
    centre = {r["frame"]: _centre(by_name[n].qvec, by_name[n].tvec) for n, r in rows.items() if n in by_name}
    for row in (r for r in report.frames if r["camera"] == "interpolated"):
        pose = row["pose"]
        here = _centre(np.array(pose["rotation_wxyz"]), np.array(pose["translation"]))
        ends = [centre[f] for f in row["interpolated_from"]]
        if len(ends) == 2:  # on the segment between the neighbours, at its share of the frames
            a, b = row["interpolated_from"]
            expected = ends[0] + (row["frame"] - a) / (b - a) * (ends[1] - ends[0])
            np.testing.assert_allclose(here, expected, atol=1e-6 * (1 + np.linalg.norm(expected)))
        else:
            np.testing.assert_allclose(here, ends[0], atol=1e-6 * (1 + np.linalg.norm(ends[0])))
    for name in (n for n, r in rows.items() if r["camera"] == "registered"):  # posed from real observations
        assert (by_name[name].point3D_ids >= 0).sum() >= 30
    assert json.loads((out / "report.json").read_text())["frames"] == report.frames


def _centre(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """Camera centre of a COLMAP world-to-camera pose (quaternion wxyz, translation)."""
    w, x, y, z = qvec / np.linalg.norm(qvec)
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    return -rotation.T @ tvec


def test_capped_feature_size_keeps_full_size_cameras(tmp_path: Path, data_dir: Path) -> None:
    """Four 3072×2304 photos solved with features at 768 px: the cameras are full size."""
    folder = tmp_path / "full"
    folder.mkdir()
    for src in sorted((data_dir / "south_building_full" / "images").iterdir())[:4]:
        (folder / src.name).symlink_to(src)
    out = tmp_path / "solve"
    report = solve_images(folder, out, SolveConfig(max_image_size=768, max_features=1024))
    assert report.images_registered == 4 and report.max_image_size == 768
    assert report.mean_reprojection_error_px < 1.0  # in full-size pixels, from 768-px features
    distorted = colmap.read_model(out / "distorted" / "sparse" / "0").cameras[1]
    assert (distorted.width, distorted.height) == (3072, 2304)
    assert 0.6 < distorted.params[0] / 3072 < 1.6  # focal length in full-size pixels (a compact's ~35-mm-equiv. lens)
    pinhole = next(iter(colmap.read_model(out / "sparse" / "0").cameras.values()))
    assert pinhole.width >= 3072 * 0.98 and pinhole.height >= 2304 * 0.98
    with Image.open(out / "images" / report.frames[0]["image"]) as im:
        assert im.size == (pinhole.width, pinhole.height)
