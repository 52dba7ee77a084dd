"""The shot render and comp stages on a real-plate shot: EXR layers, the clean plate, depth
holdout, bit-exact plate outside the effect, grain, movies and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
import torch
from conftest import fern_shot
from splatfx.io import colmap
from splatfx.core.camera import Camera
from splatfx.core.color import srgb_to_linear
from splatfx.comp.stage import measure_grain, run_comp
from splatfx.shot.config import config_from_dict, config_to_dict, save_config
from splatfx.core.errors import InputError
from splatfx.io.formats import write_gaussians
from splatfx.fx.stage import run_collapse, run_select
from splatfx.core.gaussians import Gaussians
from splatfx.io.images import read_exr, read_image
from splatfx.shot.scene_frame import Plane, SceneFrame
from splatfx.render.stage import run_render
from splatfx.core.sh import rgb_to_sh
from splatfx.shot.folder import Shot, create_shot
from splatfx.io.video import VideoReader

WIDTH, HEIGHT, FOCAL = 768, 576, 600.0
#: solve (OpenCV camera axes of the first plate) → world z-up: x stays, world y = z, world z = −y.
SOLVE_TO_WORLD = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
GROUND_Y = 1.6  # solve y of the ground (world z = 0)
WALL_COLOUR, STRUCTURE_COLOUR, PILLAR_COLOUR = (0.35, 0.55, 0.35), (0.9, 0.15, 0.1), (0.1, 0.2, 0.85)
PILLAR_X = (0.1, 0.5)  # solve x range of the foreground pillar (depth 3.5, in front of the structure)
GAP = ((-0.9, -0.1), (-2.2, -1.0))  # x, y range of the wall left without Gaussians (never seen)


def grid(x: tuple[float, float], y: tuple[float, float], z: float, step: float) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(x[0], x[1] + 1e-9, step), np.arange(y[0], y[1] + 1e-9, step))
    return np.column_stack([xs.ravel(), ys.ravel(), np.full(xs.size, z)])


def scene_gaussians() -> tuple[Gaussians, np.ndarray]:
    """A wall at depth 12 with a gap, a red box (the structure) at depth 7 and a blue pillar
    at depth 3.5 partly in front of it; returns the Gaussians and which rows are the structure."""
    wall = grid((-9.0, 9.0), (-7.0, GROUND_Y), 12.0, 0.12)
    in_gap = ((wall[:, 0] > GAP[0][0]) & (wall[:, 0] < GAP[0][1]) & (wall[:, 1] > GAP[1][0]) & (wall[:, 1] < GAP[1][1]))
    wall = wall[~in_gap]
    box = np.concatenate([grid((-1.0, 1.0), (-2.5, GROUND_Y), z, 0.06) for z in (6.5, 7.0, 7.5)])
    pillar = np.concatenate([grid(PILLAR_X, (-3.0, GROUND_Y), z, 0.04) for z in (3.5, 3.55)])
    parts = [(wall, WALL_COLOUR, 0.08), (box, STRUCTURE_COLOUR, 0.045), (pillar, PILLAR_COLOUR, 0.03)]
    means = np.concatenate([p for p, _, _ in parts])
    colours = np.concatenate([np.tile(c, (len(p), 1)) for p, c, _ in parts])
    sizes = np.concatenate([np.full(len(p), s) for p, _, s in parts])
    n = len(means)
    sh = np.zeros((n, 4, 3), np.float32)
    sh[:, 0] = rgb_to_sh(torch.tensor(colours, dtype=torch.float32)).numpy()
    g = Gaussians.from_arrays({"means": means, "quats": np.tile([1.0, 0, 0, 0], (n, 1)),
                               "log_scales": np.log(np.repeat(sizes[:, None], 3, axis=1)),
                               "opacity_logits": np.full(n, 4.0), "sh": sh})
    structure = np.zeros(n, bool)
    structure[len(wall):len(wall) + len(box)] = True
    return g, structure


def plate_camera(i: int) -> Camera:
    """Plate cameras moving sideways 4 cm per frame (OpenCV axes, solve coordinates)."""
    return Camera(WIDTH, HEIGHT, FOCAL, FOCAL, WIDTH / 2, HEIGHT / 2, np.eye(3), np.array([-0.04 * i, 0.0, 0.0]))


def make_shot(root: Path, data_dir: Path, frames: int = 3, fx: dict | None = None) -> Shot:
    """A shot of real plates (south_building) with a solve, a scene and an fx selection."""
    plates = root / "plates_src"
    plates.mkdir(parents=True)
    sources = sorted((data_dir / "south_building" / "images").iterdir())[:frames]
    for src in sources:
        (plates / src.name).symlink_to(src)
    shot = create_shot(root / "shot", plates, fps=24.0)
    sparse = shot.solve_dir / "sparse" / "0"
    names = [s.name for s in sources]
    colmap.write_model(colmap.model_from_cameras(names, [plate_camera(i) for i in range(frames)]), sparse)
    report = {"frames": [{"frame": 1001 + i, "image": n, "registered": True} for i, n in enumerate(names)]}
    (shot.solve_dir / "report.json").write_text(json.dumps(report))
    SceneFrame(up=np.array([0, 0, 1.0]), ground=Plane(np.array([0, 0, 1.0]), 0.0), up_source="test",
               ground_inlier_fraction=1.0, camera_up_angle_deg=0.0, scale=1.0, scale_source="test",
               rotation=SOLVE_TO_WORLD, translation=np.array([0.0, 0.0, GROUND_Y])).save(shot.solve_dir / "scene.json")
    g, _ = scene_gaussians()
    shot.scene_dir.mkdir()
    write_gaussians(g, shot.scene_dir / "scene.ply")
    settings = config_to_dict(shot.config)
    settings["fx"] = fx or {
        "effects": ["collapse"],
        # the box spans solve x −1..1, y −2.5..1.6, z 6.5..7.5 → world x −1..1, y 6.5..7.5, z 0..4.1
        "select": {"shape": "box", "center": [0.0, 7.0, 2.05], "size": [2.3, 1.3, 4.3]},
        "collapse": {"fragments": 6, "debris": 0, "dust": 0, "fill": False, "trigger": "charge", "impulse": 30.0,
                     "substeps": 4},
    }
    settings["comp"] = {"outputs": ["exr", "png", "mp4"]}
    # sharp frames: these tests check the layers of one instant (tests/test_motion_blur.py the exposure)
    settings["render"] = {**settings.get("render", {}), "shutter": 0.0}
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    shot = Shot.open(shot.root)
    run_select(shot)
    run_collapse(shot)
    return shot


@pytest.fixture(scope="module")
def shot(tmp_path_factory, data_dir) -> Shot:
    shot = make_shot(tmp_path_factory.mktemp("comp"), data_dir)
    run_render(shot)
    run_comp(shot)
    return shot


def plate_pixels(shot: Shot, frame: int) -> np.ndarray:
    with shot.open_plates() as plates:
        return plates.read(frame)[..., :3]


def footprint_columns(camera: Camera, x: tuple[float, float], depth: float) -> tuple[int, int]:
    (u0, _), (u1, _) = camera.project(np.array([[x[0], 0.0, depth], [x[1], 0.0, depth]]))[0]
    return int(np.ceil(u0)), int(np.floor(u1))


EXPECTED_CHANNELS = {
    "R": "half", "G": "half", "B": "half", "A": "half", "depth.Z": "float", "motion.u": "float", "motion.v": "float",
    "mask.synthetic": "half", "fx.R": "half", "fx.G": "half", "fx.B": "half", "mask.structure": "half",
    "mask.holes": "half", "clean.R": "half", "clean.G": "half", "clean.B": "half", "clean.A": "half", "id": "uint",
    **{f"matte.{e}": "half" for e in ("scene", "fragment", "fill", "debris", "dust", "snow")},
}
_DTYPES = {"half": np.float16, "float": np.float32, "uint": np.uint32}


def test_render_writes_one_multilayer_exr_per_frame(shot):
    assert sorted(p.name for p in shot.render_dir.iterdir()) == [f"frame.{f}.exr" for f in (1001, 1002, 1003)]
    exr = OpenEXR.File(str(shot.render_frame(1002)), separate_channels=True)  # the library, not our reader
    channels = exr.channels()
    assert set(channels) == set(EXPECTED_CHANNELS)
    for name, kind in EXPECTED_CHANNELS.items():
        assert channels[name].pixels.dtype == _DTYPES[kind], name
        assert channels[name].pixels.shape == (HEIGHT, WIDTH), name
    (x0, y0), (x1, y1) = exr.header()["dataWindow"]
    assert (x1 - x0 + 1, y1 - y0 + 1) == (WIDTH, HEIGHT)
    alpha, depth = channels["A"].pixels.astype(np.float32), channels["depth.Z"].pixels
    assert np.isinf(depth[alpha < 0.9 / 255]).all() and np.isfinite(depth[alpha > 1.1 / 255]).all()  # A is half
    assert np.isfinite(channels["motion.u"].pixels).all() and np.isfinite(channels["motion.v"].pixels).all()
    assert set(np.unique(channels["id"].pixels)) <= {0, 1, 255} and (channels["id"].pixels == 1).any()


def test_clean_plate_removes_the_structure(shot):
    from splatfx.render.cleanfill import fill_clean_plate, grow_footprint
    from splatfx.comp.stage import read_layers

    # frame 1002: the charge (at 1001) has set every piece moving, so the whole box is taken out
    layers = read_layers(shot.render_frame(1002))
    wall, structure = srgb_to_linear(np.array(WALL_COLOUR)), srgb_to_linear(np.array(STRUCTURE_COLOUR))
    seen = (layers.structure > 0.95) & (layers.clean[..., 3] > 0.99)
    assert seen.sum() > 5000  # the wall behind the box, rendered where the box stood
    clean = layers.clean[..., :3][seen] / layers.clean[..., 3:][seen]
    assert np.abs(clean - wall).max() < 0.03 and np.linalg.norm(clean - structure, axis=1).min() > 0.5
    # the gap in the wall behind the box was never seen: a hole, filled by inpainting
    channels, _ = read_exr(shot.render_frame(1002))
    cam = plate_camera(1)
    (gx0, gy0), (gx1, gy1) = cam.project(np.array([[GAP[0][0], GAP[1][0], 12.0], [GAP[0][1], GAP[1][1], 12.0]]))[0]
    inner = (slice(int(gy0) + 8, int(gy1) - 8), slice(int(gx0) + 8, int(gx1) - 8))  # blobs reach 4 px in
    assert channels["mask.holes"][inner].min() == 1.0
    plate = srgb_to_linear(plate_pixels(shot, 1002))
    filled = fill_clean_plate(plate, layers.clean, grow_footprint(layers.structure))
    assert np.abs(filled[inner] - wall).max() < 0.06  # continued from the wall around the hole


def test_real_foreground_in_front_of_the_structure_keeps_the_plate(shot):
    for i, frame in ((1, 1002), (2, 1003)):  # the pieces are moving
        channels, _ = read_exr(shot.comp_dir / f"comp.{frame}.exr")
        comp = np.stack([channels[c] for c in "RGB"], axis=2)
        plate = srgb_to_linear(plate_pixels(shot, frame))
        u0, u1 = footprint_columns(plate_camera(i), PILLAR_X, 3.5)
        v0, v1 = int(HEIGHT / 2 - FOCAL * 2.0 / 7.0), int(HEIGHT / 2)  # rows where the box stands behind it
        pillar = (slice(v0, v1), slice(u0 + 5, u1 - 5))
        beside = (slice(v0, v1), slice(u0 - 50, u0 - 20))  # clear of the pillar's soft edge
        assert channels["mask.synthetic"][beside].min() > 0.9  # the effect is there next to the pillar ...
        assert channels["mask.synthetic"][pillar].max() == 0.0  # ... and held out by it
        assert np.array_equal(comp[pillar], plate[pillar])


def test_before_any_piece_moves_the_comp_is_the_plate(shot):
    """On the trigger's own frame no piece has moved yet: the building is the plate's, so
    nothing is synthetic and every pixel is the plate, bit for bit."""
    channels, _ = read_exr(shot.render_frame(1001))
    assert channels["mask.synthetic"].max() == 0 and channels["mask.structure"].max() == 0
    comp, _ = read_exr(shot.comp_dir / "comp.1001.exr")
    plate = plate_pixels(shot, 1001)
    assert np.array_equal(np.stack([comp[c] for c in "RGB"], axis=2), srgb_to_linear(plate))
    assert np.array_equal(read_image(shot.comp_dir / "comp.1001.png").pixels, plate)


def test_outside_the_effect_the_comp_is_the_plate_bit_exact(shot):
    for frame in (1002, 1003):
        channels, header = read_exr(shot.comp_dir / f"comp.{frame}.exr")
        assert header.pixel_types["R"] == "float" and header.frame == frame
        untouched = channels["mask.synthetic"] == 0
        assert 0.5 < untouched.mean() < 0.97
        plate = plate_pixels(shot, frame)
        comp = np.stack([channels[c] for c in "RGB"], axis=2)
        assert np.array_equal(comp[untouched], srgb_to_linear(plate)[untouched])
        png = read_image(shot.comp_dir / f"comp.{frame}.png").pixels
        assert np.array_equal(png[untouched], plate[untouched])  # the same 8-bit codes as the JPEG plate
        assert not np.array_equal(png[~untouched], plate[~untouched])


def test_movies_contact_sheet_and_provenance(shot):
    for name, width in (("shot.mp4", WIDTH), ("review.mp4", 2 * WIDTH)):
        with VideoReader(shot.comp_dir / name) as movie:
            assert (movie.frame_count, movie.fps, movie.width, movie.height) == (3, 24, width, HEIGHT)
            assert movie.codec == "h264"
    sheet = read_image(shot.comp_dir / "contact_sheet.png")
    assert sheet.width > 256 and sheet.height > 150
    record = [r for r in json.loads(shot.manifest_path.read_text())["runs"] if r["stage"] == "comp"][-1]
    per_frame = record["figures"]["per_frame"]
    assert sorted(per_frame) == ["1001", "1002", "1003"]
    _, header = read_exr(shot.comp_dir / "comp.1002.exr")
    assert header.attributes["splatfx/synthetic_share"] == pytest.approx(per_frame["1002"]["synthetic_share"])
    assert per_frame["1001"]["synthetic_share"] == 0  # nothing has moved yet
    assert all(0.02 < per_frame[f]["synthetic_share"] < 0.5 for f in ("1002", "1003"))
    assert all(f["seed"] == 0 for f in per_frame.values())
    assert record["config"]["grain"] == 1.0 and record["seed"] == 0


def test_grain_measurement_recovers_a_known_noise_level(data_dir):
    import cv2

    plate = read_image(sorted((data_dir / "south_building" / "images").iterdir())[5]).pixels
    clean = cv2.GaussianBlur(plate, (0, 0), 3.0)  # the plate without its own noise
    noisy = clean + np.random.default_rng(0).normal(0.0, [0.02, 0.01, 0.03], clean.shape).astype(np.float32)
    assert measure_grain(noisy) == pytest.approx([0.02, 0.01, 0.03], rel=0.15)
    assert measure_grain(clean).max() < 0.003


def test_ocio_config_sets_the_display_encoding(tmp_path):
    ocio = pytest.importorskip("PyOpenColorIO")
    from splatfx.comp.display import DisplayTransform

    path = tmp_path / "config.ocio"
    path.write_text(ocio.Config.CreateFromFile("ocio://default").serialize())  # OCIO's built-in ACES config
    transform = DisplayTransform(path)
    assert "lin_rec709_srgb" in transform.description and "Display" in transform.description
    grey = np.array([[[0.0] * 3, [0.18] * 3, [1.0] * 3, [16.0] * 3]], np.float32)
    shown = transform(grey)[0]
    assert np.allclose(shown, shown[:, :1], atol=1e-4)  # neutral stays neutral
    assert 0 <= shown[0, 0] < shown[1, 0] < shown[2, 0] < shown[3, 0] <= 1.0  # tone-mapped, not clipped
    assert not transform.is_srgb and DisplayTransform().is_srgb
    with pytest.raises(InputError, match="does not exist"):
        DisplayTransform(tmp_path / "missing.ocio")


def test_virtual_orbit_camera_is_built_in_the_world_frame(shot):
    from dataclasses import replace

    from splatfx.render.stage import shot_cameras

    (shot.root / "orbit.json").write_text(json.dumps({"preset": "orbit", "center": [0, 7, 2], "radius": 5,
                                                      "height": 1.0, "degrees": 30}))
    render = replace(shot.config.render, camera="virtual", virtual_camera="orbit.json")
    cams = shot_cameras(shot.with_config(replace(shot.config, render=render)), (WIDTH, HEIGHT))
    centre = np.array([[0.0, -(2.0 - GROUND_Y), 7.0]])  # world (0, 7, 2) in solve coordinates
    assert len(cams) == 3
    for cam in cams:
        assert np.allclose(cam.project(centre)[0][0], [WIDTH / 2, HEIGHT / 2])
        assert np.linalg.norm(cam.center - centre[0]) == pytest.approx(np.hypot(5.0, 1.0))
        assert cam.fx == pytest.approx(FOCAL)  # the lens of the plates' solve


def test_comp_refuses_renders_without_its_layers(shot, tmp_path):
    from splatfx.comp.stage import read_layers
    from splatfx.io.images import write_exr

    channels, _ = read_exr(shot.render_frame(1001))
    bare = tmp_path / "frame.exr"
    write_exr(bare, {k: v for k, v in channels.items() if k in "RGBA"})
    with pytest.raises(InputError, match="mask.synthetic") as err:
        read_layers(bare)
    assert str(bare) in str(err.value) and "[render] passes" in str(err.value)


def test_comp_command_and_resume_redo_only_what_changed(shot):
    from splatfx.cli import main
    from splatfx.render.stage import render_shot_command

    assert not render_shot_command(shot.root).ran  # what `splatfx render SHOT` runs: up to date
    main(["comp", str(shot.root)])  # up to date: returns normally
    before = (shot.comp_dir / "comp.1002.png").read_bytes()
    (shot.comp_dir / "comp.1002.png").unlink()
    result = run_comp(shot)
    assert result.ran and (result.value["composited"], result.value["skipped"]) == (1, 2)
    assert (shot.comp_dir / "comp.1002.png").read_bytes() == before  # deterministic, grain seed included
    shot.render_frame(1003).unlink()
    result = run_render(shot)
    assert result.ran and (result.value["rendered"], result.value["skipped"]) == (1, 2)
    assert not run_comp(shot).ran  # the same frame came back bit for bit


def test_refined_beauty_reaches_the_effect_colour(tmp_path):
    """The refiner's change to R,G,B on synthetic pixels is carried into the comp's fx layer."""
    from splatfx.comp.stage import read_layers, with_refinement
    from splatfx.io.images import write_exr

    h, w = 4, 5
    synthetic = np.zeros((h, w), np.float32)
    synthetic[1:3, 1:4] = 0.8
    base = {c: np.full((h, w), 0.2, np.float32) for c in "RGB"}
    base.update({f"fx.{c}": np.full((h, w), 0.1, np.float32) * (synthetic > 0) for c in "RGB"})
    base["mask.synthetic"] = synthetic
    refined = dict(base)
    refined.update({c: base[c] + 0.05 * (synthetic > 0) for c in "RGB"})
    write_exr(tmp_path / "render.exr", base)
    write_exr(tmp_path / "refined.exr", refined)
    layers = with_refinement(read_layers(tmp_path / "render.exr"), tmp_path / "refined.exr")
    inside = synthetic > 0
    assert np.allclose(layers.fx[inside], 0.15) and np.array_equal(layers.fx[~inside], np.zeros((int((~inside).sum()), 3)))


def test_refined_clean_pass_fills_the_comp_background(tmp_path):
    """Holes the refiner painted in the clean pass (alpha 1 there) replace the classical fill."""
    from splatfx.comp.stage import read_layers, with_refinement
    from splatfx.io.images import write_exr

    h, w = 6, 6
    synthetic = np.zeros((h, w), np.float32)
    structure = np.zeros((h, w), np.float32)
    structure[2:4, 2:4] = 1.0
    base = {c: np.zeros((h, w), np.float32) for c in "RGB"}
    base.update({f"fx.{c}": np.zeros((h, w), np.float32) for c in "RGB"})
    base.update({f"clean.{c}": np.zeros((h, w), np.float32) for c in "RGBA"})
    base.update({"mask.synthetic": synthetic, "mask.structure": structure, "mask.holes": structure.copy()})
    refined = dict(base)
    refined.update({f"clean.{c}": structure * 0.3 for c in "RGB"})
    refined["clean.A"] = structure.copy()
    write_exr(tmp_path / "render.exr", base)
    write_exr(tmp_path / "refined.exr", refined)
    layers = read_layers(tmp_path / "render.exr")
    assert not layers.clean[..., 3].any()
    layers = with_refinement(layers, tmp_path / "refined.exr")
    assert np.array_equal(layers.clean[..., 3], structure)
    assert np.allclose(layers.clean[structure > 0, :3], 0.3)


def test_virtual_camera_shot_is_composited_as_fully_synthetic_frames(tmp_path, data_dir):
    """A virtual camera's comp: the render itself (no plate), every pixel marked synthetic,
    PNG frames that are its display transform, shot.mp4 and a contact sheet, no review movie."""
    from splatfx.core.color import linear_to_srgb

    shot = make_shot(tmp_path, data_dir, frames=2)
    (shot.root / "camera.json").write_text(json.dumps({"keyframes": [
        {"frame": 1001, "position": [0.0, -3.0, 2.0], "look_at": [0.0, 7.0, 2.0]},
        {"frame": 1002, "position": [0.5, -2.5, 2.2], "look_at": [0.0, 7.0, 2.0]}]}))
    settings = config_to_dict(shot.config)
    settings["render"].update({"camera": "virtual", "virtual_camera": "camera.json", "resolution_scale": 0.5})
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    shot = Shot.open(shot.root)
    run_render(shot)
    result = run_comp(shot)
    assert result.ran and result.value["camera"] == "virtual" and result.value["composited"] == 2
    assert sorted(p.name for p in shot.comp_dir.iterdir()) == [
        "comp.1001.exr", "comp.1001.png", "comp.1002.exr", "comp.1002.png", "contact_sheet.png", "shot.mp4"]
    rendered, _ = read_exr(shot.render_frame(1002))
    comp, header = read_exr(shot.comp_dir / "comp.1002.exr")
    assert comp["R"].shape == (HEIGHT // 2, WIDTH // 2)
    for c in "RGBA":
        assert np.array_equal(comp[c].astype(np.float32), rendered[c].astype(np.float32)), c
    assert (comp["mask.synthetic"] == 1).all()
    assert header.attributes["splatfx/synthetic_share"] == 1.0
    assert rendered["A"].mean() > 0.5  # the camera sees the scene, not empty space
    png = read_image(shot.comp_dir / "comp.1002.png").pixels[..., :3]
    srgb = np.clip(linear_to_srgb(np.stack([rendered[c] for c in "RGB"], axis=-1).astype(np.float32)), 0, 1)
    assert np.abs(png - srgb).max() <= 1 / 255 + 1e-6
    with VideoReader(shot.comp_dir / "shot.mp4") as movie:
        assert movie.frame_count == 2
    assert not run_comp(shot).ran


def test_without_an_effect_the_render_reproduces_the_plates_and_the_comp_is_the_plate(data_dir, tmp_path):
    """fern's 20 photos as plates with their known cameras and a short reconstruction: the
    render stage (plate cameras, passes, EXR) reproduces the plates at the reconstruction's
    own quality (as scored by `splatfx eval` on the same views), and with no effect the comp
    is every plate, bit for bit."""
    from click.testing import CliRunner

    from splatfx.cli import cli
    from splatfx.core.color import linear_to_srgb
    from splatfx.recon.evaluate import evaluate_split
    from splatfx.io.formats import read_gaussians

    root = fern_shot(tmp_path / "shot", data_dir, max_steps="150", sh_degree="1", downscale="2.0",
                     outputs='["exr", "png"]')
    runner = CliRunner()
    for args in (["train", str(root), "--threads", "2"], ["render", str(root)], ["comp", str(root)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    shot = Shot.open(root)
    scored = evaluate_split(read_gaussians(shot.scene_dir / "scene.ply"), shot.solve_dir, "all", progress=False)
    psnrs = []
    with shot.open_plates() as plates:
        for frame in shot.frames:
            channels, _ = read_exr(shot.render_frame(frame))
            rgb, alpha = np.stack([channels[c] for c in "RGB"], axis=2), channels["A"][..., None]
            shown = np.clip(linear_to_srgb(rgb / np.maximum(alpha, 1e-6)), 0, 1) * alpha  # over black, as eval
            plate = plates.read(frame)[..., :3]
            psnrs.append(-10 * np.log10(np.mean((shown - plate) ** 2)))
            assert channels["mask.synthetic"].max() == 0
            comp, _ = read_exr(shot.comp_dir / f"comp.{frame}.exr")
            assert np.array_equal(np.stack([comp[c] for c in "RGB"], axis=2), srgb_to_linear(plate))
            assert np.array_equal(read_image(shot.comp_dir / f"comp.{frame}.png").pixels, plate)
    # measured 19.74 dB at full size after 150 steps at half size (the SfM-point
    # initialisation scores ≈ 10.5 dB); `splatfx eval` gives the same to 1e-4 dB
    assert np.mean(psnrs) > 18.5
    assert np.mean(psnrs) == pytest.approx(scored.mean_psnr, abs=0.05)


def test_a_structure_drawn_half_transparent_does_not_ghost_through_the_clean_plate():
    """A short reconstruction draws parts of a building half transparent (its matte 0.5), but
    the plate shows them whole: the footprint takes the plate's building out entirely there,
    and leaves the plate untouched where the structure never was."""
    from splatfx.render.cleanfill import fill_clean_plate, grow_footprint

    structure = np.zeros((60, 80), np.float32)
    structure[10:50, 20:60] = 0.5  # a wall the reconstruction drew half transparent
    plate = np.full((60, 80, 3), 0.2, np.float32)
    plate[10:50, 20:60] = (0.6, 0.3, 0.2)  # the real wall, whole, in the plate
    clean = np.zeros((60, 80, 4), np.float32)
    clean[...] = (0.7, 0.8, 0.9, 1.0)  # the sky behind it, solid
    footprint = grow_footprint(structure)
    background = plate + footprint[..., None] * (fill_clean_plate(plate, clean, footprint) - plate)
    assert np.allclose(background[12:48, 22:58], (0.7, 0.8, 0.9), atol=1e-5)  # no ghost of the wall
    assert np.array_equal(background[:, :14], plate[:, :14])  # the plate where the structure never was
