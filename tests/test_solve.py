"""The camera solve stage on real captures: solve, refuse, import, re-orient."""

from __future__ import annotations

import json
from pathlib import Path

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
from splatfx.recon.solve import SolveConfig, feature_count, image_pairs, import_cameras, solve_images

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
