"""Issue #21 cases 4, 5 and 8 on a real shot folder: damaged fx caches, fragment counts an
artist asks for, and settings that would not fit in memory.

Every failure is one line naming the file or setting and the problem, never "unexpected".
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from splatfx.cli import main
from splatfx.core.errors import ConfigError, InputError
from splatfx.shot.config import config_from_dict, config_to_dict, save_config
from splatfx.shot.folder import Shot

from test_fx_stage import shot  # noqa: F401  (the fixture: real plates, a building-like scene)


def _configure(shot: Shot, frames: str = "1001-1003", **collapse) -> Shot:
    """The shot with a few frames (the trigger on the second) and ``[fx.collapse]`` changed."""
    settings = config_to_dict(shot.config)
    settings["shot"]["frames"] = frames
    settings["fx"]["collapse"].update({"trigger_frame": 1002, "fill": False, **collapse})
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    return Shot.open(shot.root)


def _error_line(capsys) -> str:
    (line,) = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert "unexpected" not in line
    return line


def _last_run(shot: Shot) -> dict:
    return json.loads(shot.manifest_path.read_text())["runs"][-1]


# --- case 8: damaged or hand-made shot files --------------------------------------------------------
@pytest.mark.parametrize("name", ["selection.npz", "collapse.npz", "snow.npz"])
def test_truncated_fx_cache_names_the_file(shot, name):
    from splatfx.fx.animation import load_animation

    shot = _configure(shot)
    for argv in (["fx", "select"], ["fx", "collapse"], ["fx", "snow"]):
        main([*argv, str(shot.root)])
    path = shot.fx_dir / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError) as error:
        load_animation(shot)
    assert str(path) in str(error.value) and "truncated" in str(error.value)


@pytest.mark.parametrize("arrays, problem", [
    ({"other": np.arange(3)}, "has no indices array"),
    ({"indices": np.zeros(0, np.int64)}, "array indices is empty"),
    ({"indices": np.array([0, 5, 10**6])}, "holds index 1000000, outside the 7000 scene Gaussians"),
    ({"indices": np.array([-1, 5])}, "holds index -1"),
    ({"indices": np.array([0.5, 2.0])}, "must be a 1-D array of integers"),
])
def test_hand_made_selection_is_checked(shot, capsys, arrays, problem):
    shot = _configure(shot)
    shot.fx_dir.mkdir(exist_ok=True)
    np.savez(shot.fx_dir / "selection.npz", **arrays)
    with pytest.raises(SystemExit) as done:
        main(["fx", "collapse", str(shot.root)])
    assert done.value.code == 1
    line = _error_line(capsys)
    assert "selection.npz" in line and problem in line


@pytest.mark.parametrize("name, cut, problem", [
    ("rigid.quats", np.s_[..., :3], "array rigid.quats has shape (3, 16, 3), expected (3, 16, 4)"),
    ("labels", np.s_[:-1], "has 3999 labels for 4000 selected and 0 fill Gaussians"),
    ("debris.alive", np.s_[:2], "array debris.alive has shape (2, 300), expected (3, 300)"),
])
def test_collapse_cache_of_the_wrong_shape_names_the_array(shot, name, cut, problem):
    from splatfx.fx.animation import load_animation

    shot = _configure(shot)
    for argv in (["fx", "select"], ["fx", "collapse"], ["fx", "snow"]):
        main([*argv, str(shot.root)])
    path = shot.fx_dir / "collapse.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays[name] = arrays[name][cut]
    np.savez(path, **arrays)
    with pytest.raises(InputError) as error:
        load_animation(shot)
    assert str(error.value).startswith(f"{path}: {problem}")


# --- case 5: the fragment counts an artist asks for ------------------------------------------------
def test_hundreds_of_fragments_simulate(shot):
    """600 pieces of a 4000-Gaussian building: many cells hold one or two Gaussians on a wall
    (flat hulls the solver refused); they are merged into their neighbours."""
    shot = _configure(shot, fragments=600)
    main(["fx", "select", str(shot.root)])
    main(["fx", "collapse", str(shot.root)])
    run = _last_run(shot)
    assert run["status"] == "ok"
    assert 500 < run["figures"]["fragments"] <= 600


def test_more_fragments_than_the_selection_holds_are_clamped(shot, capsys):
    settings = config_to_dict(shot.config)  # a small selection: the top of one wall (a few hundred Gaussians)
    settings["fx"]["select"].update({"center": [0.0, -1.5, 5.0], "size": [4.5, 0.5, 2.0]})
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    shot = _configure(Shot.open(shot.root), fragments=10**9)
    main(["fx", "select", str(shot.root)])
    selected = json.loads((shot.fx_dir / "selection.json").read_text())["count"]
    main(["fx", "collapse", str(shot.root)])
    err = capsys.readouterr().err
    assert f"fragments: 1000000000 is more than the {selected} selected Gaussians can hold" in err
    run = _last_run(shot)
    assert run["status"] == "ok" and run["figures"]["fragments_asked"] == 10**9
    assert 0 < run["figures"]["fragments"] <= selected // 4


def test_merging_keeps_a_fracture_without_small_pieces_unchanged():
    from splatfx.fx.fracture import voronoi_fracture
    from splatfx.fx.rigid import solvable_fracture
    from test_fx import shell

    points = shell()
    fracture = voronoi_fracture(points, 24, seed=3)
    assert solvable_fracture(points, fracture) is fracture


# --- case 4: settings that would exhaust the machine --------------------------------------------------
@pytest.mark.parametrize("setting", ["debris", "dust"])
def test_particle_count_beyond_memory_is_refused_and_recorded(shot, capsys, monkeypatch, setting):
    import splatfx.core.memory as memory

    monkeypatch.setattr(memory, "_mem_available", lambda: 2 * 2**30)  # a 2 GiB machine
    shot = _configure(shot, **{setting: 10**9})
    main(["fx", "select", str(shot.root)])
    with pytest.raises(SystemExit) as done:
        main(["fx", "collapse", str(shot.root)])
    assert done.value.code == 1
    line = _error_line(capsys)
    assert f"shot.toml [fx.collapse] {setting}: 1000000000 would need about" in line
    largest = int(line.rsplit("the largest value that fits is ", 1)[1])
    assert 10**5 < largest < 10**8
    run = _last_run(shot)
    assert run["stage"] == "fx.collapse" and run["status"] == "failed"  # never left "running"


def test_largest_value_that_fits_fits(monkeypatch):
    import splatfx.core.memory as memory
    from splatfx.fx.budget import require_collapse_memory
    from splatfx.shot.config import CollapseSection

    monkeypatch.setattr(memory, "_mem_available", lambda: 2**30)
    with pytest.raises(ConfigError) as error:
        require_collapse_memory(CollapseSection(debris=10**8), 96, "shot.toml [fx.collapse]", selected=5000)
    largest = int(str(error.value).rsplit(" ", 1)[1])
    require_collapse_memory(CollapseSection(debris=largest), 96, "shot.toml [fx.collapse]", selected=5000)
    with pytest.raises(ConfigError):
        require_collapse_memory(CollapseSection(debris=largest + 1000), 96, "shot.toml [fx.collapse]", selected=5000)


def test_snow_beyond_memory_is_refused(shot, capsys, monkeypatch):
    import splatfx.core.memory as memory

    monkeypatch.setattr(memory, "_mem_available", lambda: 2**30)
    settings = config_to_dict(shot.config)
    settings["fx"]["snow"].update({"density": 1e6, "max_flakes": 10**12})
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    with pytest.raises(SystemExit):
        main(["fx", "snow", str(shot.root)])
    line = _error_line(capsys)
    assert "shot.toml [fx.snow] density: 1000000.0 would need about" in line and "largest value that fits" in line
    assert _last_run(Shot.open(shot.root))["status"] == "failed"


def test_available_memory_respects_the_address_space_limit():
    """Under RLIMIT_AS (a container's cap, or ``ulimit -v``) the room left is what counts."""
    script = ("import resource; from splatfx.core.memory import available_memory, _address_space;"
              "used = _address_space(); resource.setrlimit(resource.RLIMIT_AS, (used + 2**30, resource.RLIM_INFINITY));"
              "print(available_memory())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert 0 < int(out) <= 2**30
