"""``splatfx fx select|collapse|snow SHOT``: the effects stages (see splatfx.fx.stage)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from splatfx.shot.folder import Shot

_shot_argument = click.argument("shot", type=click.Path(file_okay=False, path_type=Path))
_force_option = click.option("--force", is_flag=True, help="Run even if the outputs are up to date.")


@click.group(name="fx")
def command() -> None:
    """Effects on the reconstruction: select the structure, collapse it, add snow.

    Settings live in shot.toml under [fx.select], [fx.collapse] and [fx.snow]; the
    world frame is z-up in metres with the ground at z = 0 (solve/scene.json).
    """


@command.command(name="select")
@_shot_argument
@_force_option
def select(shot: Path, force: bool) -> None:
    """Choose the Gaussians the effects act on (box, ground polygon or plate masks)."""
    from splatfx.fx.stage import run_select

    result = run_select(Shot.open(shot), force=force)
    report = result.record.figures if result.record else {}
    if report:
        Console().print(f"selected {report['count']} of {report['total']} Gaussians, "
                        f"bounds {report['bounds_min']} .. {report['bounds_max']} m")


@command.command(name="collapse")
@_shot_argument
@_force_option
def collapse(shot: Path, force: bool) -> None:
    """Fracture the selection, simulate its collapse, and emit debris and dust."""
    from splatfx.fx.stage import run_collapse

    result = run_collapse(Shot.open(shot), force=force)
    if result.record and result.record.figures:
        Console().print(", ".join(f"{k}: {v}" for k, v in result.record.figures.items()))


@command.command(name="snow")
@_shot_argument
@_force_option
def snow(shot: Path, force: bool) -> None:
    """Simulate snowfall that settles on the scene's surfaces."""
    from splatfx.fx.stage import run_snow

    result = run_snow(Shot.open(shot), force=force)
    if result.record and result.record.figures:
        Console().print(", ".join(f"{k}: {v}" for k, v in result.record.figures.items()))
