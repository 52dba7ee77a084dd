"""``splatfx export``: the OpenUSD stage (read back with pxr, validated, and rendered against
the shot's own render EXRs), the Nuke .chan/.nk, the PLY sequence, and bad input."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pxr")
from pxr import Gf, Usd, UsdGeom, UsdVol  # noqa: E402

from splatfx.cli import main  # noqa: E402
from splatfx.core.camera import Camera  # noqa: E402
from splatfx.core.errors import ConfigError, OutputError  # noqa: E402
from splatfx.export import EXPORTERS, ExportRequest, export_shot  # noqa: E402
from splatfx.export.nuke import Z_UP_TO_Y_UP, chan_rotation, read_chan  # noqa: E402
from splatfx.export.usd import _camera, camera_film  # noqa: E402
from splatfx.export.usd_read import open_stage, read_camera, read_splats, render_rgba, validate_stage  # noqa: E402
from splatfx.export.world import ShotCamera, export_cameras, world_similarity  # noqa: E402
from splatfx.fx.animation import load_animation  # noqa: E402
from splatfx.render.layers import read_render_layers  # noqa: E402
from splatfx.render.stage import run_render, shot_cameras  # noqa: E402
from test_comp import make_shot  # noqa: E402

FRAMES = (1001, 1002, 1003)
FX = {"effects": ["collapse"],
      "select": {"shape": "box", "center": [0.0, 7.0, 2.05], "size": [2.3, 1.3, 4.3]},
      "collapse": {"fragments": 6, "debris": 60, "dust": 20, "fill": True, "trigger": "charge", "impulse": 30.0,
                   "substeps": 4}}


@pytest.fixture(scope="module")
def shot(tmp_path_factory, data_dir):
    shot = make_shot(tmp_path_factory.mktemp("export"), data_dir, frames=3, fx=FX)
    run_render(shot)
    return shot


@pytest.fixture(scope="module")
def usd_file(shot, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("usd") / "shot.usdc"
    result = export_shot(shot, "usd", out)
    assert result.files == [out] and out.stat().st_size > 0
    return out


def _reference_rgba(shot, frame: int) -> np.ndarray:
    """The shot's own Gaussians of ``frame`` drawn plainly through the render stage's camera.
    (The render's beauty adds what a splat file cannot carry: the solid pieces' hard edges,
    drawn in image space; it stays within 3e-3 of this.)"""
    layers = read_render_layers(shot.render_frame(frame))
    height, width = layers.alpha.shape
    camera = shot_cameras(shot, (width, height))[frame - shot.frames.start]
    plain = render_rgba(load_animation(shot).at(frame - shot.frames.start).gaussians, camera)
    assert np.abs(plain - np.concatenate([layers.rgb, layers.alpha[..., None]], axis=2)).mean() < 3e-3
    return plain


def test_usd_round_trip_renders_the_shot(shot, usd_file):
    """The stage's splats, read back at three frames and rendered through the stage's own
    camera, reproduce render/frame.####.exr: the export is complete and the camera right."""
    stage = open_stage(usd_file)
    for frame in FRAMES:
        splats = read_splats(stage, frame)
        camera = read_camera(stage, "/World/cameras/plates", frame)
        error = np.abs(render_rgba(splats, camera) - _reference_rgba(shot, frame)).mean()
        assert error < 1e-3, (frame, error)
    # the check can fail: the pieces and particles of frame 1001 seen on frame 1003 do not match it
    stale = render_rgba(read_splats(stage, 1001), read_camera(stage, "/World/cameras/plates", 1003))
    assert np.abs(stale - _reference_rgba(shot, 1003)).mean() > 3e-3


def test_usd_stage_layout_and_metadata(shot, usd_file):
    stage = Usd.Stage.Open(str(usd_file))
    assert validate_stage(usd_file) == []
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.z and UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    assert stage.GetTimeCodesPerSecond() == 24.0 and (stage.GetStartTimeCode(), stage.GetEndTimeCode()) == (1001, 1003)
    assert stage.GetDefaultPrim().GetPath() == "/World"
    data = stage.GetRootLayer().customLayerData
    assert data["splatfx:renderCamera"] == "/World/cameras/plates" and "/World/fragments" in data["splatfx:synthetic"]
    assert '"fx.collapse"' in data["splatfx:manifest"] and data["splatfx:frames"] == "1001-1003"
    assert stage.GetPrimAtPath("/World").GetAttribute("colorSpace:name").Get() == "lin_rec709_scene"

    animation = load_animation(shot)
    world, _ = world_similarity(shot)
    scene = UsdVol.ParticleField3DGaussianSplat(stage.GetPrimAtPath("/World/scene"))
    assert len(scene.GetPositionsAttr().Get()) == len(animation.scene) - len(animation.removed)
    # SH at the trained degree, (degree+1)² RGB coefficients per particle, rotated into the world
    degree = animation.scene.sh_degree
    k = (degree + 1) ** 2
    assert degree >= 1 and scene.GetRadianceSphericalHarmonicsDegreeAttr().Get() == degree
    coefficients = np.asarray(scene.GetRadianceSphericalHarmonicsCoefficientsAttr().Get())
    keep = np.setdiff1d(np.arange(len(animation.scene)), animation.removed)
    expected = animation.scene[keep[:5]].transform(world.rotation, world.translation, world.scale).sh.numpy()
    np.testing.assert_allclose(coefficients[: 5 * k].reshape(5, k, 3), expected, atol=1e-6)

    pieces = [p for p in stage.GetPrimAtPath("/World/fragments").GetChildren()]
    assert len(pieces) == len(np.unique(animation.fragments.labels))
    moved = 0
    for piece in pieces:
        splats = UsdVol.ParticleField3DGaussianSplat(piece.GetChild("splats"))
        assert splats.GetPositionsAttr().GetNumTimeSamples() == 0  # written once
        op = UsdGeom.Xformable(piece).GetOrderedXformOps()[0]
        assert op.GetAttr().GetTimeSamples() == list(FRAMES)
        moved += not Gf.IsClose(op.Get(1001), op.Get(1003), 1e-4)
    assert moved > 0
    assert any(p.GetChild("fill") for p in pieces)
    for name in ("debris", "dust"):
        field = UsdVol.ParticleField3DGaussianSplat(stage.GetPrimAtPath(f"/World/particles/{name}"))
        assert field.GetPositionsAttr().GetTimeSamples() == list(FRAMES)
    counts = [len(field.GetPositionsAttr().Get(f)) for f in FRAMES]
    assert counts == [len(field.GetPrim().GetAttribute("splatfx:particleIds").Get(f)) for f in FRAMES]


def test_usd_camera_agrees_with_openusd_projection(shot, usd_file):
    """OpenUSD's own frustum (GfCamera) projects the scene where splatfx's camera does."""
    stage = Usd.Stage.Open(str(usd_file))
    world, _ = world_similarity(shot)
    expected = export_cameras(shot, shot.frames, world)[0].cameras
    prim = stage.GetPrimAtPath("/World/cameras/plates")
    points = np.random.default_rng(0).uniform([-2, 5, 0], [2, 9, 4], size=(50, 3))
    for i, frame in enumerate(FRAMES):
        gf = UsdGeom.Camera(prim).GetCamera(Usd.TimeCode(frame))
        view_proj = gf.frustum.ComputeViewMatrix() * gf.frustum.ComputeProjectionMatrix()
        ndc = np.array([view_proj.Transform(Gf.Vec3d(*p)) for p in points])
        cam = expected[i]
        pixels = np.stack([(ndc[:, 0] + 1) / 2 * cam.width, (1 - ndc[:, 1]) / 2 * cam.height], axis=1)
        ours, depth = cam.project(points)
        assert (depth > 0).all()
        np.testing.assert_allclose(pixels, ours, atol=1e-3)
        back = read_camera(stage, "/World/cameras/plates", frame)
        np.testing.assert_allclose(back.project(points)[0], ours, atol=1e-3)


def test_usd_camera_keeps_lens_distortion_and_principal_point():
    stage = Usd.Stage.CreateInMemory()
    cams = [Camera(640, 480, 500.0 + 10 * i, 505.0, 330.0, 236.0, np.eye(3), [0.1 * i, 0, 0],
                   np.array([-0.12, 0.03, 0.001, -0.002, 0.004])) for i in range(2)]
    _camera(stage, "/cam", ShotCamera("plates", cams, True), [7, 8], 24.0, (0.01, 100.0))
    film = camera_film(cams[0], 24.0)
    assert math.isclose(film["focalLength"], 500.0 * 24.0 / 640) and film["horizontalAperture"] == 24.0
    for frame, cam in zip((7, 8), cams):
        back = read_camera(stage, "/cam", frame)
        assert (back.width, back.height) == (640, 480)
        np.testing.assert_allclose([back.fx, back.fy, back.cx, back.cy], [cam.fx, cam.fy, cam.cx, cam.cy], rtol=1e-6)
        np.testing.assert_allclose(back.dist, cam.dist)
        np.testing.assert_allclose(back.R, cam.R, atol=1e-9)
        np.testing.assert_allclose(back.t, cam.t, atol=1e-9)


def test_usda_and_usdz_by_suffix(shot, tmp_path):
    export_shot(shot, "usd", tmp_path / "a.usda", frames="1002-1003")
    assert (tmp_path / "a.usda").read_text().startswith("#usda 1.0")
    stage = Usd.Stage.Open(str(tmp_path / "a.usda"))
    assert (stage.GetStartTimeCode(), stage.GetEndTimeCode()) == (1002, 1003)
    export_shot(shot, "usd", tmp_path / "b.usdz")
    assert validate_stage(tmp_path / "b.usdz") == []
    assert len(read_splats(open_stage(tmp_path / "b.usdz"), 1002)) > 0
    export_shot(shot, "usd", tmp_path)  # a folder: <shot>.usdc inside
    assert (tmp_path / f"{shot.name}.usdc").is_file()


def _nuke_nodes(text: str) -> list[tuple[str, str]]:
    """Top-level ``Class { body }`` blocks of a .nk, checking the braces balance."""
    depth, nodes, start, name = 0, [], 0, ""
    for match in re.finditer(r"[{}]", text):
        if match.group() == "{":
            if depth == 0:
                name = text[text.rfind("\n", 0, match.start()) + 1: match.start()].strip()
                start = match.end()
            depth += 1
        else:
            depth -= 1
            assert depth >= 0, "unbalanced }"
            if depth == 0:
                nodes.append((name, text[start: match.start()]))
    assert depth == 0, "unbalanced {"
    return nodes


def test_chan_matches_the_cameras_and_nk_is_a_comp(shot, tmp_path):
    export_shot(shot, "chan", tmp_path / "cam.chan")
    rows = read_chan(tmp_path / "cam.chan")
    world, _ = world_similarity(shot)
    cameras = export_cameras(shot, shot.frames, world)[0].cameras
    assert rows.shape == (3, 8) and list(rows[:, 0]) == list(FRAMES)
    for row, cam in zip(rows, cameras):
        np.testing.assert_allclose(row[1:4], Z_UP_TO_Y_UP @ cam.center, atol=1e-6)
        c2w_gl = Z_UP_TO_Y_UP @ cam.R.T @ np.diag([1.0, -1.0, -1.0])  # Nuke: y up, camera looks down -z
        np.testing.assert_allclose(chan_rotation(*row[4:7]), c2w_gl, atol=1e-6)
        rx, ry, rz = np.radians(row[4:7])  # Nuke's ZXY: R = Ry·Rx·Rz, written out by hand
        Rx = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
        Ry = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
        Rz = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
        np.testing.assert_allclose(Ry @ Rx @ Rz, c2w_gl, atol=1e-6)
        assert math.isclose(row[7], math.degrees(cam.fov_y()), rel_tol=1e-7)
    text = (tmp_path / "cam.nk").read_text()
    nodes = _nuke_nodes(text)
    classes = [n for n, _ in nodes]
    for needed in ("Root", "Camera3", "Read", "Shuffle", "Keymix", "Merge2"):
        assert needed in classes, needed
    body = dict(nodes)["Camera3"]
    for knob in ("rot_order ZXY", "translate {{curve x1001", "rotate {{curve x1001", "focal {{curve x1001",
                 "haperture 36", "vaperture"):
        assert knob in body, knob
    reads = [b for n, b in nodes if n == "Read"]
    assert any("frame.####.exr" in b for b in reads) and any("plate.####" in b for b in reads)
    assert "add_layer {fx fx.red fx.green fx.blue}" in text and "alpha mask.synthetic" in text
    links = sorted((tmp_path / "cam_plates").iterdir())
    assert [p.name for p in links] == [f"plate.{f}.jpg" for f in FRAMES] and all(p.resolve().is_file() for p in links)


def test_ply_sequence_holds_each_frame(shot, tmp_path):
    plyfile = pytest.importorskip("plyfile")
    result = export_shot(shot, "ply-seq", tmp_path / "seq", frames="1001-1003")
    assert [p.name for p in result.files] == [f"{shot.name}.{f}.ply" for f in FRAMES]
    animation = load_animation(shot)
    world, _ = world_similarity(shot)
    for i, path in enumerate(result.files):
        vertex = plyfile.PlyData.read(str(path))["vertex"]  # an independent reader
        expected = animation.at(i).gaussians.transform(world.rotation, world.translation, world.scale)
        assert vertex.count == len(expected)
        assert [p.name for p in vertex.properties][:6] == ["x", "y", "z", "nx", "ny", "nz"]
        rest = 3 * ((animation.scene.sh_degree + 1) ** 2 - 1)
        assert len([p for p in vertex.properties if p.name.startswith("f_rest_")]) == rest
        xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
        np.testing.assert_allclose(xyz, expected.means.numpy(), atol=1e-5)


def test_bad_input_is_one_clear_line(shot, tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown format 'fbx'"):
        export_shot(shot, "fbx", tmp_path / "x")
    with pytest.raises(ConfigError, match=r"--frames: 1000-1002 is outside the shot's frames 1001-1003"):
        export_shot(shot, "usd", tmp_path / "x.usdc", frames="1000-1002")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="is not a folder"):
        export_shot(shot, "usd", blocker / "x.usdc")
    with pytest.raises(OutputError, match="cannot write in /proc"):
        export_shot(shot, "usd", Path("/proc/x.usdc"))
    with pytest.raises(ConfigError, match="not a USD file name"):
        export_shot(shot, "usd", tmp_path / "x.abc")
    for args, message in ((["--format", "fbx", "--out", str(tmp_path / "x")], "unknown format 'fbx'"),
                          (["--format", "chan", "--out", str(tmp_path / "c.chan"), "--frames", "1001-1200"],
                           "outside the shot's frames")):
        with pytest.raises(SystemExit) as exit_info:
            main(["export", str(shot.root), *args])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert set(EXPORTERS) >= {"usd", "ply-seq", "chan"}


def test_request_carries_the_sensor_width(shot, tmp_path):
    export_shot(shot, "usd", tmp_path / "s.usda", sensor_width_mm=24.0)
    stage = Usd.Stage.Open(str(tmp_path / "s.usda"))
    prim = stage.GetPrimAtPath("/World/cameras/plates")
    assert prim.GetAttribute("horizontalAperture").Get(1001) == 24.0
    assert ExportRequest(shot, tmp_path, shot.frames).sensor_width_mm == 36.0
