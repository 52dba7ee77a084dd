"""The fx stages on a real shot folder: select, collapse, snow, and the animation they make."""

from __future__ import annotations

import json

import numpy as np
import pytest
from splatfx.cli import main
from splatfx.shot.config import config_from_dict, config_to_dict, save_config
from splatfx.io.formats import write_gaussians
from splatfx.fx.animation import ELEMENTS, load_animation
from splatfx.core.gaussians import Gaussians
from splatfx.shot.scene_frame import Plane, SceneFrame
from splatfx.shot.folder import Shot, create_shot
from splatfx.core.sh import rgb_to_sh

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
    # before anything moves, the building is the plate's own: drawn as scene, nothing taken out
    assert set(np.unique(first.element)) == {ELEMENTS["scene"], ELEMENTS["snow"]}
    assert len(first.removed) == 0
    scene = first.element == ELEMENTS["scene"]
    assert scene.sum() == 7000 and np.array_equal(np.sort(first.source_index[scene]), np.arange(7000))
    # once pieces break loose they are synthetic, and their rows are taken out of the plate
    moving = last.element == ELEMENTS["fragment"]
    assert moving.any() and set(last.source_index[moving]) <= set(last.removed) and last.removed.max() < 4000
    # fracture-face fill appears only once the pieces have broken loose
    assert ELEMENTS["fill"] not in first.element and ELEMENTS["fill"] in last.element
    assert (last.element == ELEMENTS["debris"]).any()
    # the building's remaining pieces have moved down in the world (world = 2 R x)
    def world_z(fg):
        piece = (fg.source_index >= 0) & (fg.source_index < 4000)
        z = (2.0 * fg.gaussians.means.double().numpy()[piece] @ np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]).T)[:, 2]
        return dict(zip(fg.source_index[piece], z))
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


def _set_collapse(shot: Shot, **collapse) -> Shot:
    """The shot with ``[fx.collapse]`` settings changed (written to shot.toml like an artist would)."""
    settings = config_to_dict(shot.config)
    settings["fx"]["collapse"].update(collapse)
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    return Shot.open(shot.root)


def _rigid_cache(shot: Shot):
    """The collapse cache's rigid poses, and all its arrays."""
    from splatfx.fx.animation import RigidCache

    with np.load(shot.fx_dir / "collapse.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return RigidCache.from_arrays({k[len("rigid."):]: v for k, v in arrays.items() if k.startswith("rigid.")}), arrays


@pytest.mark.parametrize("trigger", ["impact", "charge"])
def test_impact_and_charge_from_shot_toml_act_in_the_world_frame(shot, trigger):
    # the building stands on x in [-2, 2], y in [-1.5, 1.5]; the solve frame is turned and scaled
    if trigger == "impact":  # a projectile along +y into the middle of the y = -1.5 wall
        shot = _set_collapse(shot, trigger="impact", trigger_point=[0.0, 0.0, 3.0], impact_direction=[0.0, 1.0, 0.0],
                             impact_speed=40.0, glue_strength=10.0, fill=False, trigger_frame=1001)
    else:
        shot = _set_collapse(shot, trigger="charge", trigger_point=[0.0, 0.0, 3.0], impulse=15.0, charge_radius=6.0,
                             fill=False, trigger_frame=1001)
    main(["fx", "select", str(shot.root)])
    main(["fx", "collapse", str(shot.root)])
    cache, _ = _rigid_cache(shot)
    moved = cache.positions[3] - cache.positions[0]
    if trigger == "impact":
        push = (cache.masses[:, None] * moved).sum(axis=0)
        assert push[1] > 0 and push[1] > 2 * abs(push[0])  # the pieces go where the projectile went
    else:
        outward = cache.positions[0] - np.array([0.0, 0.0, 3.0])
        radial = (moved * outward).sum(axis=1) / np.linalg.norm(outward, axis=1)
        assert np.mean(radial > 0) > 0.8
    report = json.loads(shot.manifest_path.read_text())["runs"][-1]
    assert report["stage"] == "fx.collapse" and report["config"]["trigger"] == trigger


def _fragment_points(shot: Shot) -> np.ndarray:
    """The selected Gaussians' centres in the world frame (the pieces' points, without fill)."""
    from splatfx.fx.animation import load_frame, load_scene, load_selection
    from splatfx.fx.stage import world_means

    return world_means(load_scene(shot), load_frame(shot))[load_selection(shot)]


def _add_neighbour(shot: Shot) -> None:
    """A lower building (3 × 3 × 2 m) beside the one that collapses, 1 m east of it."""
    from splatfx.io.formats import read_gaussians

    scene = read_gaussians(shot.scene_dir / "scene.ply")
    rotation = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    world = shell((3.0, 3.0, 2.0), 3000, seed=4) + (3.0, -1.5, 0.0)
    n = len(world)
    sh = np.zeros((n, 4, 3), np.float32)
    sh[:, 0] = rgb_to_sh(np.tile([0.5, 0.5, 0.6], (n, 1)))
    neighbour = Gaussians.from_arrays({"means": (world / 2.0) @ rotation, "quats": np.tile([1.0, 0, 0, 0], (n, 1)),
                                       "log_scales": np.full((n, 3), -3.5), "opacity_logits": np.full(n, 3.0),
                                       "sh": sh})
    write_gaussians(Gaussians.cat([scene, neighbour]), shot.scene_dir / "scene.ply")


def test_auto_colliders_let_pieces_land_on_a_neighbouring_building(shot):
    from splatfx.core.rotation import quat_to_rotmat

    _add_neighbour(shot)
    main(["fx", "select", str(shot.root)])
    inside, roof_hits, debris_inside = [], [], []
    for auto in (False, True):  # a charge west of the building throws its pieces east, onto the neighbour
        shot = _set_collapse(shot, trigger="charge", trigger_point=[-3.0, 0.0, 2.0], impulse=9.0, charge_radius=8.0,
                             auto_colliders=auto, collider_cell=0.5, fill=False, trigger_frame=1001)
        main(["fx", "collapse", str(shot.root)])
        cache, arrays = _rigid_cache(shot)
        points, labels = _fragment_points(shot), arrays["labels"]
        posed = np.stack([np.concatenate([(points[labels == f] - cache.centroids[f])
                                          @ quat_to_rotmat(cache.quats[t, f]).T + cache.positions[t, f]
                                          for f in range(len(cache.centroids))]) for t in range(cache.frames)])
        over = (posed[..., 0] > 3.1) & (posed[..., 0] < 5.9) & (np.abs(posed[..., 1]) < 1.4)  # the neighbour
        inside.append(int(np.sum(over & (posed[..., 2] < 1.9))))
        chips = arrays["debris.positions"][-1][arrays["debris.alive"][-1]]
        debris_inside.append(int(np.sum((chips[:, 0] > 3.1) & (chips[:, 0] < 5.9) & (np.abs(chips[:, 1]) < 1.4)
                                        & (chips[:, 2] < 1.9))))
        roof_hits.append([e for e in cache.events if e["kind"] == "impact" and 3.0 < e["position"][0] < 6.0
                          and abs(e["position"][1]) < 1.5 and e["position"][2] > 2.0])
        if auto:
            top = arrays["colliders.centers"][:, 2] + arrays["colliders.sizes"][:, 2] / 2
            assert np.max(top) == pytest.approx(2.0, abs=0.15)  # a box fitted to the neighbour
    assert inside[0] > 0 and inside[1] == 0  # without colliders pieces pass through the neighbour; with, never
    assert not roof_hits[0] and roof_hits[1]  # with them they land on its roof (and raise dust there)
    assert debris_inside[0] > 0 and debris_inside[1] == 0  # and debris chips bounce off it too
    manifest = json.loads(shot.manifest_path.read_text())
    assert manifest["runs"][-1]["figures"]["colliders"] >= 1


def test_bad_colliders_are_one_line_errors_naming_the_setting(shot, capsys):
    main(["fx", "select", str(shot.root)])
    # through the wall at x = 2 (the pieces are walls of a hollow building: a box inside it is fine)
    _set_collapse(shot, colliders=[{"center": [2.0, 0.0, 3.0], "size": [1.0, 1.0, 1.0]}])
    with pytest.raises(SystemExit) as done:
        main(["fx", "collapse", str(shot.root)])
    assert done.value.code == 1
    (line,) = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert "shot.toml [fx.collapse] colliders[0]: overlaps the selected structure" in line
    text = shot.toml_path.read_text()
    shot.toml_path.write_text(text.replace("size = [1.0, 1.0, 1.0], ", ""))  # a collider without its size
    with pytest.raises(SystemExit):
        main(["fx", "collapse", str(shot.root)])
    assert "shot.toml [fx.collapse] colliders[0] size: is required" in capsys.readouterr().err


def _set_snow(shot: Shot, **snow) -> Shot:
    """The shot with ``[fx.snow]`` settings changed in shot.toml."""
    settings = config_to_dict(shot.config)
    settings["fx"]["snow"].update(snow)
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    return Shot.open(shot.root)


def test_snow_flake_limit_is_a_config_error_naming_density_and_what_fits(shot, capsys):
    """Issue #21 case 10: the flake limit was reported as "unexpected ValueError"."""
    _set_snow(shot, max_flakes=2000)
    with pytest.raises(SystemExit) as done:
        main(["fx", "snow", str(shot.root)])
    assert done.value.code == 1
    (line,) = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert "unexpected" not in line
    assert "shot.toml [fx.snow] density: 5 would need" in line and "more than max_flakes = 2000" in line
    fits = float(line.split("the largest density that fits is about ")[1].split()[0])
    assert 0 < fits < 5.0
    _set_snow(shot, density=fits, max_flakes=2000)
    main(["fx", "snow", str(shot.root)])  # the suggested density runs
    assert json.loads(shot.manifest_path.read_text())["runs"][-1]["figures"]["flakes"] <= 2000
