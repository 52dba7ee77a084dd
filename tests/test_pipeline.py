"""``splatfx run``: the stages in order, and nothing redone when nothing changed.

The shot: the first 8 photos of the demo's South Building capture (real plates, cameras
solved by pycolmap), a very short training, snow, render and comp: every step of the
pipeline except collapse and refine, which tests/test_demo.py covers.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from splatfx.shot.config import config_from_dict, config_to_dict
from splatfx.demo import CAPTURE
from splatfx.core.errors import InputError
from splatfx.shot.manifest import Manifest
from splatfx.pipeline import STEPS, planned_steps, run_shot
from splatfx.shot.folder import Shot, create_shot

FRAMES = 8
ALL_STAGES = ["solve", "orient", "train", "fx.snow", "render", "comp"]


def _configure(shot: Shot, **tables: dict) -> Shot:
    data = config_to_dict(shot.config)
    for table, values in tables.items():
        data[table] = {**data.get(table, {}), **values}
    shot = shot.with_config(config_from_dict(data, shot.toml_path))
    shot.save()
    return shot


@pytest.fixture(scope="module")
def shot(tmp_path_factory: pytest.TempPathFactory) -> Shot:
    """A small real shot, run through once."""
    work = tmp_path_factory.mktemp("pipeline")
    plates = work / "plates"
    plates.mkdir()
    for image in sorted(CAPTURE.glob("*.jpg"))[:FRAMES]:
        (plates / image.name).symlink_to(image)
    created = create_shot(work / "shot", plates, fps=10.0)
    configured = _configure(created, train={"max_steps": 60, "max_minutes": 0.5, "sh_degree": 0},
                            fx={"effects": ["snow"], "snow": {"density": 0.02, "size": 0.1}},
                            comp={"outputs": ["exr", "png", "mp4"]})
    first = run_shot(configured)
    assert [s.stage for s in first.stages] == ALL_STAGES
    assert first.ran == ALL_STAGES
    return Shot.open(work / "shot")


def _output_files(shot: Shot) -> dict[str, int]:
    """Modification times of every file the stages wrote."""
    folders = [shot.solve_dir, shot.scene_dir, shot.fx_dir, shot.render_dir, shot.comp_dir]
    return {str(p): p.stat().st_mtime_ns for folder in folders for p in folder.rglob("*") if p.is_file()}


def test_second_run_skips_every_stage(shot: Shot) -> None:
    runs_before = len(Manifest.load(shot.manifest_path).runs)
    files_before = _output_files(shot)
    again = run_shot(shot)
    assert [s.stage for s in again.stages] == ALL_STAGES
    assert again.ran == []
    assert all(s.reason == "up to date" for s in again.stages)
    assert len(Manifest.load(shot.manifest_path).runs) == runs_before
    assert _output_files(shot) == files_before


def test_changed_setting_reruns_only_the_stages_it_affects(shot: Shot) -> None:
    changed = _configure(shot, comp={"grain": 0.5})
    try:
        rerun = run_shot(changed)
        assert rerun.ran == ["comp"]
        assert Manifest.load(shot.manifest_path).last("comp").config["grain"] == 0.5
    finally:
        _configure(changed, comp={"grain": shot.config.comp.grain})


def test_until_stops_after_the_named_stage(shot: Shot) -> None:
    partial = run_shot(shot, until="train")
    assert [s.stage for s in partial.stages] == ["solve", "orient", "train"]


def test_outputs_and_timings_are_reported(shot: Shot) -> None:
    run = run_shot(shot)
    outputs = run.outputs()
    for label in ("scene", "shot movie", "review movie (plate | comp)", "contact sheet", "manifest"):
        assert outputs[label].exists(), label
    assert run.seconds >= sum(s.seconds for s in run.stages) * 0.99


def test_planned_steps_follow_the_settings(shot: Shot) -> None:
    assert planned_steps(shot) == ["solve", "train", "fx", "render", "comp"]  # no [refine] model: no refine
    with_model = shot.with_config(replace(shot.config, refine=replace(shot.config.refine, model="refine/model")))
    assert planned_steps(with_model) == list(STEPS)
    virtual = shot.with_config(replace(shot.config, render=replace(shot.config.render, camera="virtual",
                                                                    virtual_camera="camera.json")))
    assert planned_steps(virtual) == ["solve", "train", "fx", "render", "comp"]  # comp: the synthetic shot
    assert planned_steps(shot, until="fx") == ["solve", "train", "fx"]
    assert planned_steps(shot, start="render") == ["render", "comp"]
    with pytest.raises(InputError, match="unknown stage .paint."):
        planned_steps(shot, until="paint")


def test_cli_run_reports_up_to_date_stages(shot: Shot) -> None:
    from splatfx.commands.run import command

    result = CliRunner().invoke(command, [str(shot.root)])
    assert result.exit_code == 0, result.output
    assert "comp: up to date" in result.output
    assert "0 of 6 stages ran" in result.output


def test_cli_run_rejects_a_folder_without_shot(tmp_path: Path) -> None:
    from splatfx.commands.run import command

    result = CliRunner().invoke(command, [str(tmp_path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, InputError)
    assert "shot.toml" in str(result.exception)
