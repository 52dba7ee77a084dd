"""The fx stages on a real shot folder: select, collapse, snow, and the animation they make."""

from __future__ import annotations

import json

import numpy as np
import pytest
from splatfx.cli import main
from splatfx.config import config_from_dict, config_to_dict, save_config
from splatfx.formats import write_gaussians
from splatfx.fx.animation import ELEMENTS
from splatfx.fx.stage import load_animation
from splatfx.gaussians import Gaussians
from splatfx.orient import Plane, SceneFrame
from splatfx.shot import Shot, create_shot
from splatfx.sh import rgb_to_sh

from test_fx import shell


@pytest.fixture()
def shot(tmp_path, data_dir):
    """A 24-frame shot of real plates with a building-like scene and a z-up scene frame
    whose solve coordinates are rotated and scaled (as a real solve would be)."""
    plates = tmp_path / "plates_src"
    plates.mkdir()
    for src in sorted((data_dir / "south_building" / "images").iterdir())[:24]:
        (plates / src.name).symlink_to(src)
    shot = create_shot(tmp_path / "shot", plates, fps=24.0)
    rotation = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # solve y-down/z-forward → world z-up
    frame = SceneFrame(up=np.array([0, 0, 1.0]), ground=Plane(np.array([0, 0, 1.0]), 0.0), up_source="test",
                       ground_inlier_fraction=1.0, camera_up_angle_deg=0.0, scale=2.0, scale_source="test",
                       rotation=rotation, translation=np.zeros(3))
    shot.solve_dir.mkdir()
    frame.save(shot.solve_dir / "scene.json")
    rng = np.random.default_rng(0)
    building = shell((4.0, 3.0, 6.0), 4000) + (-2.0, -1.5, 0.0)
    ground = np.column_stack([rng.uniform(-8, 8, 6000), rng.uniform(-8, 8, 6000), np.zeros(6000)])
    ground = ground[(np.abs(ground[:, 0]) > 2.5) | (np.abs(ground[:, 1]) > 2.0)][:3000]  # around the building
    world = np.concatenate([building, ground])
    solve = (world / 2.0) @ rotation  # inverse of world = 2 R x
    n = len(world)
    sh = np.zeros((n, 4, 3), np.float32)
    sh[:, 0] = rgb_to_sh(np.where(np.arange(n)[:, None] < len(building), [0.7, 0.5, 0.4], [0.3, 0.4, 0.3]))
    g = Gaussians.from_arrays({"means": solve, "quats": np.tile([1.0, 0, 0, 0], (n, 1)), "log_scales": np.full((n, 3), -3.5),
                               "opacity_logits": np.full(n, 3.0), "sh": sh})
    shot.scene_dir.mkdir()
    write_gaussians(g, shot.scene_dir / "scene.ply")
    settings = config_to_dict(shot.config)
    settings["fx"] = {
        "effects": ["collapse", "snow"],
        "select": {"shape": "box", "center": [0.0, 0.0, 3.2], "size": [4.5, 3.5, 6.5]},
        "collapse": {"fragments": 16, "debris": 300, "dust": 100, "fill_max": 3000, "trigger_frame": 1002,
                     "substeps": 10},
        "snow": {"density": 5.0},
    }
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    return Shot.open(shot.root)


def test_fx_stages_make_a_collapse_and_snow_animation(shot):
    for argv in (["fx", "select", str(shot.root)], ["fx", "collapse", str(shot.root)], ["fx", "snow", str(shot.root)]):
        main(argv)  # returns normally on success (errors exit non-zero)
    report = json.loads((shot.fx_dir / "selection.json").read_text())
    assert report["count"] == 4000 and report["total"] == 7000  # exactly the building
    anim = load_animation(Shot.open(shot.root))
    first, last = anim.at(0), anim.at(23)
    assert {ELEMENTS["scene"], ELEMENTS["fragment"], ELEMENTS["snow"]} <= set(np.unique(first.element))
    # fracture-face fill appears only once the pieces have broken loose
    assert ELEMENTS["fill"] not in first.element and ELEMENTS["fill"] in last.element
    ground = first.element == ELEMENTS["scene"]
    assert ground.sum() == 3000 and np.array_equal(first.source_index[ground], np.arange(4000, 7000))
    assert (last.element == ELEMENTS["debris"]).any()
    # the building's remaining pieces have moved down in the world (world = 2 R x)
    def world_z(fg):
        moved = fg.element == ELEMENTS["fragment"]
        z = (2.0 * fg.gaussians.means.double().numpy()[moved] @ np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]).T)[:, 2]
        return dict(zip(fg.source_index[moved], z))
    before, after = world_z(first), world_z(last)
    common = sorted(set(before) & set(after))
    assert len(common) > 1000
    assert np.mean([after[i] for i in common]) < np.mean([before[i] for i in common]) - 0.2
    manifest = json.loads(shot.manifest_path.read_text())
    assert [r["stage"] for r in manifest["runs"]][-3:] == ["fx.select", "fx.collapse", "fx.snow"]


def test_empty_selection_is_a_clear_error(shot, capsys):
    text = shot.toml_path.read_text().replace("center = [0.0, 0.0, 3.2]", "center = [100.0, 0.0, 3.2]")
    shot.toml_path.write_text(text)
    with pytest.raises(SystemExit) as done:
        main(["fx", "select", str(shot.root)])
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert "[fx.select]" in err and "no Gaussians" in err
