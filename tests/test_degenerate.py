"""No stage dies on a thin or odd shot (issue #16): every stage, driven through the CLI over a
nearly empty, an untrained (nothing opaque) and an empty scene, a selection that holds
nothing, plates of which only some registered, and frame ranges with gaps (a numbered
sequence missing a file, and a frame left out by ``splatfx init --skip-bad-frames``), either
does the sensible thing or stops with one ``error:`` line that names the shot's file, the
stage and what to change, never ``unexpected``.

The plates are real: the demo's South Building photos (384×288) as a numbered sequence; the
cameras and the scene (a wall, a red block and a pillar) are known, so each test runs in
seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from splatfx.cli import main
from splatfx.core.camera import Camera
from splatfx.core.errors import InputError
from splatfx.core.gaussians import Gaussians
from splatfx.demo import CAPTURE
from splatfx.io import colmap
from splatfx.io.formats import write_gaussians
from splatfx.io.video import VideoReader
from splatfx.shot.config import config_from_dict, config_to_dict, save_config
from splatfx.shot.folder import Shot
from splatfx.shot.manifest import Manifest
from splatfx.shot.scene_frame import Plane, SceneFrame

from test_comp import GROUND_Y, SOLVE_TO_WORLD, scene_gaussians
from test_refine import _tiny_pixel_model

WIDTH, HEIGHT, FOCAL = 384, 288, 300.0
FIRST = 1001


def _camera(frame: int) -> Camera:
    """Plate cameras moving sideways 4 cm per frame (solve coordinates, as tests/test_comp.py)."""
    return Camera(WIDTH, HEIGHT, FOCAL, FOCAL, WIDTH / 2, HEIGHT / 2, np.eye(3),
                  np.array([-0.04 * (frame - FIRST), 0.0, 0.0]))


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """Run the CLI; its exit status and its one error line ('' on success)."""
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "unexpected" not in " ".join(errors), errors
    assert len(errors) == (1 if code else 0), errors
    return code, errors[0] if errors else ""


def _make_shot(tmp: Path, capsys, present: list[int], *, bad: list[int] = (), registered: list[int] | None = None,
               scene: Gaussians | None = None, fx: dict | None = None) -> Shot:
    """A shot made with ``splatfx init`` from real plates ``plate.####.jpg`` for the frames in
    ``present`` (frames in ``bad`` are truncated files, left out with --skip-bad-frames), a
    solve whose cameras cover ``registered`` (default: every plate), and ``scene``."""
    source = tmp / "plates"
    source.mkdir()
    images = sorted(CAPTURE.glob("*.jpg"))
    for frame in present:
        target = source / f"plate.{frame:04d}.jpg"
        data = images[frame - FIRST].read_bytes()
        target.write_bytes(data[: len(data) // 3] if frame in bad else data)
    code, line = _run(["init", str(tmp / "shot"), "--plates", str(source), "--fps", "24",
                       *(["--skip-bad-frames"] if bad else [])], capsys)
    assert code == 0, line
    shot = Shot.open(tmp / "shot")
    good = [f for f in present if f not in bad]
    registered = good if registered is None else registered
    names = {f: f"plate.{f:04d}.jpg" for f in good}
    colmap.write_model(colmap.model_from_cameras([names[f] for f in registered], [_camera(f) for f in registered]),
                       shot.solve_dir / "sparse" / "0")
    report = {"frames": [{"frame": f, "image": names[f], "registered": f in registered} for f in good]}
    (shot.solve_dir / "report.json").write_text(json.dumps(report))
    SceneFrame(up=np.array([0, 0, 1.0]), ground=Plane(np.array([0, 0, 1.0]), 0.0), up_source="test",
               ground_inlier_fraction=1.0, camera_up_angle_deg=0.0, scale=1.0, scale_source="test",
               rotation=SOLVE_TO_WORLD, translation=np.array([0.0, 0.0, GROUND_Y])).save(shot.scene_json)
    shot.scene_dir.mkdir()
    write_gaussians(scene_gaussians()[0] if scene is None else scene, shot.scene_dir / "scene.ply")
    settings = config_to_dict(shot.config)
    settings["fx"] = fx or {"effects": ["snow"], "snow": {"density": 2.0, "size": 0.05}}
    settings["comp"] = {"outputs": ["exr", "png", "mp4"], "grain": 0.0}
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    return Shot.open(shot.root)


def _figures(shot: Shot, stage: str) -> dict:
    return Manifest.load(shot.manifest_path).last(stage).figures


# --- frame ranges with gaps, and plates of which only some registered -------------------------------

@pytest.mark.parametrize("how", ["missing file", "skip-bad-frames"])
def test_render_refine_and_comp_skip_a_gap_and_the_movie_holds_over_it(tmp_path, capsys, how):
    frames = [1001, 1002, 1004, 1005] if how == "missing file" else [1001, 1002, 1003, 1004, 1005]
    shot = _make_shot(tmp_path, capsys, frames, bad=[1003] if how == "skip-bad-frames" else [])
    assert shot.config.shot.skip_frames == ((1003,) if how == "skip-bad-frames" else ())
    assert shot.plate_gaps() == [1003] and list(shot.frames) == [1001, 1002, 1003, 1004, 1005]
    model = _tiny_pixel_model(tmp_path / "models")
    for argv in (["fx", "snow"], ["render"], ["refine", "--model", str(model), "--steps", "2"], ["comp"]):
        code, line = _run([*argv, str(shot.root)], capsys)
        assert code == 0, (argv, line)
    present = [1001, 1002, 1004, 1005]
    assert sorted(p.name for p in shot.render_dir.glob("*.exr")) == [f"frame.{f}.exr" for f in present]
    assert sorted(p.name for p in shot.refine_dir.glob("*.exr")) == [f"frame.{f}.exr" for f in present]
    assert sorted(p.name for p in shot.comp_dir.glob("comp.*.png")) == [f"comp.{f}.png" for f in present]
    assert _figures(shot, "render")["gaps"] == [1003] and _figures(shot, "render")["frames"] == 4
    assert _figures(shot, "comp")["gaps"] == [1003] and _figures(shot, "comp")["frames"] == 4
    with VideoReader(shot.comp_dir / "shot.mp4") as movie:  # the shot's timing: 5 frames, 1003 holds 1002
        assert movie.frame_count == 5
        pictures = [frame.astype(np.float32) for frame in movie]
    assert np.abs(pictures[2] - pictures[1]).mean() < 0.25 * np.abs(pictures[3] - pictures[1]).mean()


def test_frames_the_solve_did_not_register_are_rendered_through_interpolated_cameras(tmp_path, capsys):
    shot = _make_shot(tmp_path, capsys, [1001, 1002, 1003, 1004], registered=[1001, 1002, 1004])
    for argv in (["fx", "snow"], ["render"]):
        code, line = _run([*argv, str(shot.root)], capsys)
        assert code == 0, line
    assert _figures(shot, "render")["cameras_interpolated"] == [1003]
    code, _ = _run(["comp", str(shot.root)], capsys)
    assert code == 0
    assert len(list(shot.comp_dir.glob("comp.*.png"))) == 4


# --- thin scenes ---------------------------------------------------------------------------------------

def _gaussians(count: int, opacity_logit: float) -> Gaussians:
    """``count`` Gaussians scattered over the red block of tests/test_comp.py (solve coordinates)."""
    rng = np.random.default_rng(0)
    means = np.column_stack([rng.uniform(-1, 1, count), rng.uniform(-2.5, GROUND_Y, count),
                             rng.uniform(6.5, 7.5, count)])
    sh = np.zeros((count, 4, 3), np.float32)
    sh[:, 0, 0] = 1.0
    return Gaussians.from_arrays({"means": means, "quats": np.tile([1.0, 0, 0, 0], (count, 1)),
                                  "log_scales": np.full((count, 3), -3.0),
                                  "opacity_logits": np.full(count, opacity_logit),
                                  "sh": sh})


COLLAPSE_AND_SNOW = {
    "effects": ["collapse", "snow"],
    "select": {"shape": "box", "center": [0.0, 7.0, 2.05], "size": [2.3, 1.3, 4.3]},
    "collapse": {"fragments": 6, "debris": 20, "dust": 10, "fill": False, "trigger": "charge", "impulse": 30.0,
                 "substeps": 4},
    "snow": {"density": 2.0, "size": 0.05},
}
STAGES = (["fx", "select"], ["fx", "collapse"], ["fx", "snow"], ["render"], ["comp"])


def test_a_nearly_empty_scene_goes_through_every_stage(tmp_path, capsys):
    """20 Gaussians (a training that barely started): every stage does its work."""
    shot = _make_shot(tmp_path, capsys, [1001, 1002, 1003], scene=_gaussians(20, 3.0), fx=COLLAPSE_AND_SNOW)
    for argv in STAGES:
        code, line = _run([*argv, str(shot.root)], capsys)
        assert code == 0, (argv, line)
    assert _figures(shot, "fx.select")["count"] == 20
    assert _figures(shot, "fx.snow")["flakes"] > 0
    assert len(list(shot.comp_dir.glob("comp.*.png"))) == 3


@pytest.mark.parametrize("count, logit, stage, expected", [
    (5000, -6.0, "fx.snow", "none of its 5000 Gaussians is opaque"),  # untrained: opacities still low
    (0, 0.0, "fx.select", "holds no Gaussians"),  # a training that produced nothing
])
def test_an_untrained_or_empty_scene_stops_with_one_line(tmp_path, capsys, count, logit, stage, expected):
    shot = _make_shot(tmp_path, capsys, [1001, 1002], scene=_gaussians(count, logit), fx=COLLAPSE_AND_SNOW)
    outcomes = {}
    for argv in STAGES:
        outcomes[" ".join(argv)] = _run([*argv, str(shot.root)], capsys)
    code, line = outcomes[stage.replace(".", " ")]
    assert code == 1
    assert str(shot.scene_dir / "scene.ply") in line and stage in line and expected in line
    assert "[train]" in line  # what to change
    for command, (code, line) in outcomes.items():  # every later stage says which one to run first
        if code:
            assert str(shot.root) in line, command


def test_a_selection_that_holds_nothing_names_fx_select(tmp_path, capsys):
    fx = {**COLLAPSE_AND_SNOW, "select": {"shape": "polygon", "polygon": [[50, 50], [60, 50], [60, 60]],
                                          "z_min": 0.0, "z_max": 10.0}}
    shot = _make_shot(tmp_path, capsys, [1001, 1002], fx=fx)
    code, line = _run(["fx", "select", str(shot.root)], capsys)
    assert code == 1 and f"{shot.toml_path} [fx.select]" in line and "no Gaussians" in line
    code, line = _run(["fx", "collapse", str(shot.root)], capsys)
    assert code == 1 and "selection.npz" in line and f"splatfx fx select {shot.root}" in line


def test_no_building_for_the_demo_box_says_where_to_place_one(tmp_path, capsys):
    """A scene of ground only: the demo's automatic box names [fx.select] and `splatfx view`."""
    from splatfx.demo import configure_from_scene

    rng = np.random.default_rng(0)
    ground = np.column_stack([rng.uniform(-9, 9, 3000), np.full(3000, GROUND_Y - 0.05), rng.uniform(3, 15, 3000)])
    shot = _make_shot(tmp_path, capsys, [1001, 1002, 1003], scene=_ground_scene(ground))
    with pytest.raises(InputError) as error:
        configure_from_scene(shot, "collapse")
    message = str(error.value)
    assert str(shot.scene_dir / "scene.ply") in message and "no building" in message
    assert f"[fx.select] in {shot.toml_path}" in message and f"splatfx view {shot.root}" in message


def _ground_scene(means: np.ndarray) -> Gaussians:
    count = len(means)
    return Gaussians.from_arrays({"means": means, "quats": np.tile([1.0, 0, 0, 0], (count, 1)),
                                  "log_scales": np.full((count, 3), -3.0), "opacity_logits": np.full(count, 3.0),
                                  "sh": np.zeros((count, 4, 3), np.float32)})


def test_training_on_a_thin_solve(tmp_path, capsys):
    """A solve that registered two of three plates and triangulated no point: training starts
    from random points and writes a scene (a few steps: the cheap part of the check)."""
    shot = _make_shot(tmp_path, capsys, [1001, 1002, 1003], registered=[1001, 1003])
    (shot.solve_dir / "images").mkdir()
    for frame in (1001, 1003):
        shutil.copy(tmp_path / "plates" / f"plate.{frame}.jpg", shot.solve_dir / "images")
    (shot.scene_dir / "scene.ply").unlink()
    code, line = _run(["train", str(shot.root), "--max-steps", "3"], capsys)
    assert code == 0, line
    assert (shot.scene_dir / "scene.ply").is_file()
