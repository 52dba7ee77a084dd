"""The demo shot: the packaged capture, the preset rules, and a reduced demo end to end.

The end-to-end run uses the real packaged photos (the first 10) through every stage —
solve, train, select, collapse, snow, render, built-in refiner, comp — with small counts
and short trainings, and checks the deliverables: EXR channels, movie frame counts,
manifest records, and that every pixel the effect does not touch is the plate's.
"""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest
from PIL import Image

from splatfx.core.camera import look_at
from splatfx.render.cleanfill import grow_footprint
from splatfx.demo import ATTRIBUTION, CAPTURE, FIRST_FRAME, DemoSettings, run_demo
from splatfx.demo.presets import ABOVE_GROUND_M, Box, PresetError, building_box, virtual_path
from splatfx.io.images import read_exr, read_image
from splatfx.shot.manifest import Manifest
from splatfx.pipeline import run_shot
from splatfx.shot.folder import Shot
from splatfx.io.video import VideoReader

FRAMES = 10
REDUCED = DemoSettings(frames=FRAMES, train_steps=150, train_minutes=0.5, max_gaussians=20_000, fragments=12,
                       debris=200, dust=150, substeps=5, trigger_frame=2, snow_density=0.004,
                       refiner_steps=10, refiner_minutes=0.2, refiner_views=4, refine_steps=1)
STAGES = ["solve", "orient", "train", "fx.select", "fx.collapse", "fx.snow", "render", "refine-train", "refine",
          "comp"]


# --- the packaged capture ------------------------------------------------------------------------------

def test_capture_ships_with_the_package() -> None:
    packaged = resources.files("splatfx.demo") / "data" / "south_building"
    images = sorted(p.name for p in packaged.iterdir() if p.name.endswith(".jpg"))
    assert images == [f"P1180{n}.jpg" for n in range(189, 221)]
    sizes = {Image.open(CAPTURE / name).size for name in images}
    assert sizes == {(384, 288)}
    assert sum((CAPTURE / name).stat().st_size for name in images) < 3 * 2**20
    text = ATTRIBUTION.read_text(encoding="utf-8")
    assert "C. Zach" in text and "Schönberger" in text and "BSD" in text


# --- the preset rules on a synthetic street ------------------------------------------------------------

def _building(rng: np.random.Generator, centre: tuple[float, float], size: tuple[float, float, float],
              yaw_deg: float, n: int = 4000) -> np.ndarray:
    """Points in the four walls (0.1-0.4 m thick) of an upright box standing on the ground."""
    w, d, h = size
    s = rng.uniform(-0.45, 0.45, n)
    z = rng.uniform(0.0, h, n)
    inset = rng.uniform(0.1, 0.4, n)
    wall = rng.integers(0, 4, n)
    x = np.where(wall < 2, s * w, np.where(wall == 2, -w / 2 + inset, w / 2 - inset))
    y = np.where(wall == 0, -d / 2 + inset, np.where(wall == 1, d / 2 - inset, s * d))
    a = math.radians(yaw_deg)
    return np.stack([centre[0] + x * math.cos(a) - y * math.sin(a), centre[1] + x * math.sin(a) + y * math.cos(a), z], 1)


def _street(rng: np.random.Generator):
    """A building 24 × 12 × 15 m at (0, 40) turned by 30°, the ground, bushes at its foot,
    a tree far behind it, and faint floaters; the camera 1.6 m up at the origin looking at it."""
    building = _building(rng, (0.0, 40.0), (24.0, 12.0, 15.0), 30.0)
    ground = np.column_stack([rng.uniform(-40, 40, 3000), rng.uniform(0, 90, 3000), rng.normal(0, 0.05, 3000)])
    bushes = np.column_stack([rng.uniform(-10, 10, 500), rng.uniform(28, 32, 500), rng.uniform(0, 1.5, 500)])
    tree = np.column_stack([rng.normal(5, 3, 800), rng.normal(95, 3, 800), rng.uniform(2, 20, 800)])
    floaters = np.column_stack([rng.uniform(-30, 30, 600), rng.uniform(5, 60, 600), rng.uniform(2, 30, 600)])
    world = np.concatenate([building, ground, bushes, tree, floaters])
    opacity = np.concatenate([rng.uniform(0.6, 1.0, len(building) + len(ground) + len(bushes) + len(tree)),
                              rng.uniform(0.0, 0.1, len(floaters))])
    camera = look_at(np.array([0.0, 0.0, 1.6]), np.array([0.0, 40.0, 7.0]), np.array([0.0, 0.0, 1.0]), 384, 288, 250.0)
    parts = {"building": slice(0, len(building)), "ground": slice(len(building), len(building) + len(ground)),
             "bushes": slice(len(building) + len(ground), len(building) + len(ground) + len(bushes)),
             "tree": slice(len(world) - len(floaters) - len(tree), len(world) - len(floaters))}
    return world, opacity, camera, parts


def test_demo_trains_longer_when_its_frames_are_small(tmp_path) -> None:
    """The packaged 384x288 capture leaves training the time a 768x576 proxy spends on render,
    refine and comp: 2.5 minutes against 1.5 for large frames, the schedule laid over them
    (max_steps "auto"); what the settings ask for wins."""
    from splatfx.demo import demo_training_minutes, prepare_shot

    assert demo_training_minutes(384, 288) == demo_training_minutes(480, 270) == 2.5
    assert demo_training_minutes(768, 576) == 1.5
    shot = prepare_shot(tmp_path / "demo", None, "collapse", DemoSettings())
    assert shot.plate_size() == (384, 288)
    assert (shot.config.train.max_steps, shot.config.train.max_minutes) == ("auto", 2.5)
    asked = prepare_shot(tmp_path / "asked", None, "collapse", DemoSettings(train_steps=700, train_minutes=4.0))
    assert (asked.config.train.max_steps, asked.config.train.max_minutes) == (700, 4.0)


def test_building_box_fits_the_building_the_middle_plate_sees() -> None:
    world, opacity, camera, parts = _street(np.random.default_rng(0))
    box = building_box(world, opacity, camera)
    assert box.yaw_deg == pytest.approx(30.0, abs=2.0)
    assert box.center[:2] == pytest.approx((0.0, 40.0), abs=1.0)
    assert sorted(box.size[:2]) == pytest.approx([12.0, 24.0], rel=0.12)
    assert box.center[2] - box.size[2] / 2 == pytest.approx(ABOVE_GROUND_M)
    assert box.center[2] + box.size[2] / 2 == pytest.approx(15.0, rel=0.08)
    inside = box.contains(world)
    building = world[parts["building"]]
    upper = building[:, 2] > ABOVE_GROUND_M + 0.5
    assert inside[parts["building"]][upper].mean() > 0.85
    for other in ("ground", "bushes", "tree"):
        assert not inside[parts[other]].any(), other
    table = box.select_table()
    assert table["shape"] == "box" and table["rotation"][:2] == [0.0, 0.0]


def test_building_box_refuses_a_view_without_a_building() -> None:
    rng = np.random.default_rng(1)
    ground = np.column_stack([rng.uniform(-40, 40, 2000), rng.uniform(0, 90, 2000), rng.normal(0, 0.05, 2000)])
    camera = look_at(np.array([0.0, 0.0, 1.6]), np.array([0.0, 40.0, 7.0]), np.array([0.0, 0.0, 1.0]), 384, 288, 250.0)
    with pytest.raises(PresetError, match="above the ground"):
        building_box(ground, np.ones(len(ground)), camera)


def test_virtual_path_glides_along_the_plates_path_aimed_at_the_building() -> None:
    box = Box((0.0, 40.0, 8.5), (24.0, 12.0, 13.0), 30.0)
    rng = np.random.default_rng(2)
    x = np.linspace(-40.0, 40.0, 32)
    centres = np.column_stack([x, 0.02 * x**2 + rng.normal(0, 1.0, 32), 1.6 + rng.normal(0, 0.1, 32)])  # a shaky walk
    path = virtual_path(box, centres, (1001, 1032))
    keys = path["keyframes"]
    assert path["space"] == "world" and keys[0]["frame"] == 1001 and keys[-1]["frame"] == 1032
    positions = np.array([k["position"] for k in keys])
    nearest = np.min(np.linalg.norm(positions[:, None, :2] - centres[None, :, :2], axis=2), axis=1)
    assert np.all(nearest < 3.0)  # where plates were taken
    assert np.all(np.diff(positions[:, 0]) > 0) and positions[0, 0] > -40 and positions[-1, 0] < 40  # middle part
    assert positions[:, 2] == pytest.approx(1.6 + 2.5, abs=0.2)  # raised, level
    assert all(k["look_at"] == keys[0]["look_at"] for k in keys)
    assert keys[0]["look_at"][:2] == [0.0, 40.0]


# --- the reduced demo, end to end --------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("demo") / "shot"
    run = run_demo(out, settings=REDUCED)
    return Shot.open(out), run


def test_demo_runs_every_stage_and_records_it(demo) -> None:
    shot, run = demo
    assert [s.stage for s in run.stages] == STAGES
    assert run.ran == STAGES
    manifest = Manifest.load(shot.manifest_path)
    for stage in STAGES:
        record = manifest.last(stage)
        assert record is not None and record.status == "ok", stage
        assert record.seconds > 0 and record.outputs, stage
    assert manifest.last("fx.collapse").figures["fragments"] == REDUCED.fragments
    assert manifest.last("refine").figures["frames"] == FRAMES


def test_demo_writes_frames_with_the_expected_channels(demo) -> None:
    shot, _ = demo
    frames = list(shot.frames)
    assert len(frames) == FRAMES
    for frame in frames:
        render, _ = read_exr(shot.render_dir / f"frame.{frame:04d}.exr")
        assert {"R", "G", "B", "A", "depth.Z", "motion.u", "motion.v", "mask.synthetic", "id"} <= set(render)
        assert render["R"].shape == (288, 384)
        refined, _ = read_exr(shot.refine_dir / f"frame.{frame:04d}.exr")
        assert set(refined) == set(render)
        comp, _ = read_exr(shot.comp_dir / f"comp.{frame:04d}.exr")
        assert {"R", "G", "B", "mask.synthetic"} <= set(comp)
        assert all(np.isfinite(comp[c]).all() for c in "RGB")
        assert (shot.comp_dir / f"comp.{frame:04d}.png").is_file()


def test_demo_movies_have_every_frame(demo) -> None:
    shot, _ = demo
    with VideoReader(shot.comp_dir / "shot.mp4") as movie:
        assert len(movie) == FRAMES and (movie.width, movie.height) == (384, 288)
    with VideoReader(shot.comp_dir / "review.mp4") as review:
        assert len(review) == FRAMES and review.width == 2 * 384
    sheet = read_image(shot.comp_dir / "contact_sheet.png")
    assert sheet.pixels.shape[0] > 100


def test_demo_changes_only_the_building(demo) -> None:
    """Where neither the effect (mask.synthetic) nor the removed building's footprint
    reaches, the comp is the plate bit for bit; inside, the effect shows."""
    shot, _ = demo
    changed_somewhere = False
    with shot.open_plates() as plates:
        for frame in shot.frames:
            plate = np.asarray(Image.open(plates.path(frame)).convert("RGB"))
            comp = np.asarray(Image.open(shot.comp_dir / f"comp.{frame:04d}.png").convert("RGB"))
            render, _ = read_exr(shot.render_dir / f"frame.{frame:04d}.exr")
            synthetic = np.clip(render["mask.synthetic"].astype(np.float32), 0, 1)
            footprint = grow_footprint(render.get("mask.structure", np.zeros_like(synthetic)).astype(np.float32))
            affected = 1.0 - (1.0 - synthetic) * (1.0 - footprint) > 0
            # before the building falls only the ash touches the plate; once it falls, the dust that
            # rolls out along the ground reaches (faintly) over nearly all of this small view
            if frame < FIRST_FRAME + REDUCED.trigger_frame:
                assert (~affected).mean() > 0.1, frame
            np.testing.assert_array_equal(comp[~affected], plate[~affected], err_msg=f"frame {frame}")
            changed_somewhere |= bool(np.any(comp[affected] != plate[affected]))
    assert changed_somewhere


def test_demo_box_selects_part_of_the_scene(demo) -> None:
    shot, _ = demo
    select = shot.config.fx.select
    assert select.shape == "box"
    assert select.center[2] - select.size[2] / 2 == pytest.approx(ABOVE_GROUND_M, abs=1e-3)
    report = json.loads((shot.fx_dir / "selection.json").read_text())
    assert 0 < report["count"] < report["total"]


def test_demo_again_and_run_are_up_to_date(demo) -> None:
    shot, _ = demo
    again = run_demo(shot.root, settings=REDUCED)
    assert again.ran == []
    assert [s.stage for s in again.stages] == STAGES
    # The demo's refiner budget went into shot.toml ([refine] train_*), which `splatfx run` reads.
    trained = Manifest.load(shot.manifest_path).last("refine-train").config
    assert (trained["training"]["max_steps"], trained["pairs"]["views"]) == (REDUCED.refiner_steps,
                                                                              REDUCED.refiner_views)
    assert Shot.open(shot.root).config.refine.train_steps == REDUCED.refiner_steps
    assert run_shot(Shot.open(shot.root)).ran == []
