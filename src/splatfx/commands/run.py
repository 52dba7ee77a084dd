"""``splatfx run SHOT``: every stage of the shot that is not up to date, in order (see splatfx.pipeline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from splatfx.commands.farm_options import farm_options, with_farm
from splatfx.commands.options import proxy_option
from splatfx.pipeline import STEPS


@click.command(name="run")
@click.argument("shot", type=click.Path(file_okay=False, path_type=Path))
@click.option("--until", type=click.Choice(STEPS), default=None,
              help="Stop after this stage (default: run through comp).")
@click.option("--force", is_flag=True, help="Rerun every stage even if its outputs are up to date.")
@proxy_option
@farm_options
def command(shot: Path, until: str | None, force: bool, proxy: float | None, **farm: Any) -> None:
    """Run SHOT's stages in order: solve, train, fx, render, refine, comp.

    Each stage is skipped when its inputs and shot.toml settings did not change since its
    last run. fx runs the effects listed in [fx] effects (selecting first); refine runs
    when [refine] model is set (the built-in refiner, "refine/model", is trained first);
    comp is left out for a virtual camera. Prints how long each stage took and where the
    outputs are. The farm flags (--executor, --ray-address, --chunk-size, --workers)
    apply to render, refine and comp, overriding [farm]; so does --proxy, which renders,
    refines and comps at a fraction of full size (overriding [shot] proxy).
    """
    from splatfx.pipeline import run_shot
    from splatfx.shot.folder import Shot

    run_shot(with_farm(Shot.open(shot).with_proxy(proxy), **farm), force=force, until=until)
