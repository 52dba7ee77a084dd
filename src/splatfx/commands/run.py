"""``splatfx run SHOT``: every stage of the shot that is not up to date, in order (see splatfx.pipeline)."""

from __future__ import annotations

from pathlib import Path

import click

from splatfx.pipeline import STEPS


@click.command(name="run")
@click.argument("shot", type=click.Path(file_okay=False, path_type=Path))
@click.option("--until", type=click.Choice(STEPS), default=None,
              help="Stop after this stage (default: run through comp).")
@click.option("--force", is_flag=True, help="Rerun every stage even if its outputs are up to date.")
def command(shot: Path, until: str | None, force: bool) -> None:
    """Run SHOT's stages in order: solve, train, fx, render, refine, comp.

    Each stage is skipped when its inputs and shot.toml settings did not change since its
    last run. fx runs the effects listed in [fx] effects (selecting first); refine runs
    when [refine] model is set (the built-in refiner, "refine/model", is trained first);
    comp is left out for a virtual camera. Prints how long each stage took and where the
    outputs are.
    """
    from splatfx.pipeline import run_shot
    from splatfx.shot import Shot

    run_shot(Shot.open(shot), force=force, until=until)
