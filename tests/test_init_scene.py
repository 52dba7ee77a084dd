"""``splatfx init SHOT --scene capture``: a shot without plates from someone else's splats (a
trained PLY of the real fern capture, the same scene as .spz and .sog, a USD stage that
``splatfx export`` wrote with its camera), then fx, render and comp on it, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.spatial import cKDTree

from splatfx.cli import cli
from splatfx.commands.init import command
from splatfx.comp.stage import run_comp
from splatfx.core.errors import ConfigError, InputError
from splatfx.fx.stage import run_select, run_snow
from splatfx.io.formats import read_gaussians, write_gaussians
from splatfx.render.layers import read_render_layers
from splatfx.render.stage import run_render
from splatfx.shot.config import config_from_dict, config_to_dict, save_config
from splatfx.shot.folder import Shot
from splatfx.shot.scene_frame import SceneFrame

SPLATFX = Path(sys.executable).parent / "splatfx"


@pytest.fixture(scope="module")
def fern_ply(tmp_path_factory, data_dir) -> Path:
    """A real capture: the fern trained for 150 steps at 1/8 size (≈ 20 s; 800 of its 10,091
    Gaussians opaque), as another 3DGS trainer would hand it over."""
    out = tmp_path_factory.mktemp("fern_capture")
    result = CliRunner().invoke(cli, ["train", "--data", str(data_dir / "fern"), "--out", str(out),
                                      "--max-steps", "150", "--downscale", "8", "--threads", "2"])
    assert result.exit_code == 0, result.output
    return out / "scene.ply"


def init(args: list[str]) -> Shot:
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    return Shot.open(args[0])


def with_settings(shot: Shot, **tables: dict) -> Shot:
    data = config_to_dict(shot.config)
    for name, table in tables.items():
        data.setdefault(name, {}).update(table)
    save_config(config_from_dict(data, shot.toml_path), shot.toml_path)
    return Shot.open(shot.root)


def test_ply_capture_becomes_a_shot_that_selects_snows_renders_and_comps(tmp_path, fern_ply):
    shot = init([str(tmp_path / "fern"), "--scene", str(fern_ply), "--size", "96x72", "--frames", "1001-1003"])
    s = shot.config.shot
    assert (s.plates, s.size, str(s.frames)) == ("", (96, 72), "1001-1003") and not shot.has_plates
    assert (shot.config.render.camera, shot.config.render.virtual_camera) == ("virtual", "virtual_camera.json")
    assert shot.render_size() == (96, 72) and shot.plate_gaps() == []
    with pytest.raises(ConfigError, match=r"\[shot\] plates: is empty: this shot has no plates"):
        shot.open_plates()
    capture, scene = read_gaussians(fern_ply), read_gaussians(shot.scene_dir / "scene.ply")
    assert len(scene) == len(capture) and np.array_equal(scene.means.numpy(), capture.means.numpy())

    # the world frame: -y of the 3DGS frame is up, the opaque Gaussians stand on the ground at z = 0
    frame = SceneFrame.load(shot.scene_json)
    assert frame.up @ np.array([0.0, -1.0, 0.0]) > np.cos(np.radians(20))
    opaque = scene.opacities.numpy() > 0.5
    heights = frame.points_to_world(scene.means.double().numpy()[opaque])[:, 2]
    assert np.percentile(heights, 5) > -0.5 and np.median(heights) > 1.0
    manifest = json.loads(shot.manifest_path.read_text())
    assert [r["stage"] for r in manifest["runs"]] == ["import"] and manifest["runs"][0]["status"] == "ok"

    centre = json.loads((shot.root / "virtual_camera.json").read_text())["center"]
    shot = with_settings(shot, fx={"effects": ["snow"], "select": {"shape": "box", "center": centre,
                                                                  "size": [10.0, 10.0, 10.0]},
                                   "snow": {"density": 0.002, "max_flakes": 50000}},
                         comp={"outputs": ["exr", "png"]})
    selected = run_select(shot).record.figures
    assert 0 < selected["count"] < selected["total"] == len(scene)
    assert run_snow(shot).record.figures["flakes"] > 0
    run_render(shot)
    first, last = (read_render_layers(shot.render_frame(f)) for f in (1001, 1003))
    assert first.alpha.shape == (72, 96) and first.alpha.mean() > 0.5 and first.rgb.std() > 0.02
    assert np.abs(first.rgb - last.rgb).mean() > 0.01  # the camera moves around the scene
    run_comp(shot)
    assert all(shot.comp_frame(f, "png").is_file() for f in shot.frames)


@pytest.mark.parametrize("suffix", [".spz", ".sog"])
def test_spz_and_sog_captures_of_the_same_scene(tmp_path, fern_ply, suffix):
    capture = tmp_path / f"fern{suffix}"
    write_gaussians(read_gaussians(fern_ply), capture)
    shot = init([str(tmp_path / "shot"), "--scene", str(capture), "--size", "64x48", "--frames", "1001-1002"])
    scene, original = read_gaussians(shot.scene_dir / "scene.ply"), read_gaussians(fern_ply)
    np.testing.assert_array_equal(scene.means.numpy(), read_gaussians(capture).means.numpy())
    extent = float(np.ptp(original.means.numpy(), axis=0).max())
    nearest, _ = cKDTree(original.means.numpy()).query(scene.means.numpy())  # .sog reorders the Gaussians
    assert len(scene) == len(original) and nearest.max() < 2e-3 * extent  # within the format's quantisation
    from_ply = init([str(tmp_path / "from_ply"), "--scene", str(fern_ply), "--size", "64x48", "--frames", "1001-1002"])
    a, b = SceneFrame.load(shot.scene_json), SceneFrame.load(from_ply.scene_json)
    assert a.up @ b.up > 0.999 and np.abs(a.translation - b.translation).max() < 0.01 * extent
    run_render(shot)
    assert read_render_layers(shot.render_frame(1001)).alpha.mean() > 0.5


def test_usd_stage_brings_its_camera_frames_and_world(tmp_path, data_dir):
    """A stage ``splatfx export --format usd`` wrote from a small shot: the new shot has its
    frames, rate, image size and render camera, and its first frame renders as the original
    did (the import takes the splats at the first frame, so the collapse later on differs)."""
    pytest.importorskip("pxr")
    from test_comp import make_shot

    from splatfx.export import export_shot
    from splatfx.export.world import camera_to_world, export_cameras, world_similarity
    from splatfx.render.stage import shot_cameras

    original = make_shot(tmp_path / "original", data_dir, frames=3)
    run_render(original)
    stage = tmp_path / "shot.usdc"
    export_shot(original, "usd", stage)
    shot = init([str(tmp_path / "imported"), "--scene", str(stage)])
    assert (shot.frames, shot.config.shot.fps) == (original.frames, original.config.shot.fps)
    assert shot.render_size() == original.render_size()
    assert json.loads((shot.root / "virtual_camera.json").read_text())["source"] == "/World/cameras/plates"
    theirs = export_cameras(original, original.frames, world_similarity(original)[0])[0].cameras
    ours = [camera_to_world(c, world_similarity(shot)[0]) for c in shot_cameras(shot, shot.render_size())]
    for a, b in zip(theirs, ours, strict=True):
        np.testing.assert_allclose(b.center, a.center, atol=1e-6)
        np.testing.assert_allclose(b.R, a.R, atol=1e-6)
        assert b.fx == pytest.approx(a.fx, rel=1e-6) and (b.cx, b.cy) == (a.cx, a.cy)
    run_render(shot)
    errors = []
    for f in (1001, 1003):
        mine, theirs_layers = read_render_layers(shot.render_frame(f)), read_render_layers(original.render_frame(f))
        errors.append(np.abs(mine.rgb - theirs_layers.rgb).mean())
    assert errors[0] < 1e-3 and errors[1] > 3e-3, errors


@pytest.mark.parametrize("make,args,message", [
    (None, ["--scene", "{tmp}/missing.ply"], "missing.ply: does not exist"),
    ("garbage.ply", ["--scene", "{tmp}/garbage.ply"], "garbage.ply: "),
    ("garbage.spz", ["--scene", "{tmp}/garbage.spz"], "garbage.spz: "),
    ("garbage.usda", ["--scene", "{tmp}/garbage.usda"], "garbage.usda: "),
    ("capture.obj", ["--scene", "{tmp}/capture.obj"], "unknown capture format '.obj'"),
    ("garbage.ply", ["--scene", "{tmp}/garbage.ply", "--plates", "{tmp}"], "not both"),
    (None, [], "--plates: is missing"),
    ("garbage.ply", ["--scene", "{tmp}/garbage.ply", "--copy"], "--copy: only applies with --plates"),
])
def test_bad_scene_input_is_one_line_naming_the_problem(tmp_path, make, args, message):
    if make:
        (tmp_path / make).write_bytes(b"#usda 1.0\n(((" if make.endswith(".usda") else b"\x00not a capture" * 8)
    argv = [str(SPLATFX), "init", str(tmp_path / "shot"), *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
        done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "shot").exists()


def test_a_shot_without_plates_needs_its_frames_size_and_a_virtual_camera():
    base = {"shot": {"plates": "", "frames": "1001-1002", "size": [64, 48]},
            "render": {"camera": "virtual", "virtual_camera": "v.json"}}
    assert config_from_dict(base).shot.size == (64, 48)
    for table, key, message in [("shot", "frames", "needs its frame range"), ("shot", "size", "needs its image size")]:
        broken = json.loads(json.dumps(base))
        del broken[table][key]
        with pytest.raises(ConfigError, match=message):
            config_from_dict(broken)
    with pytest.raises(ConfigError, match=r"\[render\] camera: a shot without plates"):
        config_from_dict({**base, "render": {"camera": "plates"}})
    with pytest.raises(InputError):
        config_from_dict({"shot": {"plates": "", "frames": "1001-1002", "size": [0, 48]}})
