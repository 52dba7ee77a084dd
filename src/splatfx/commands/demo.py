"""``splatfx demo [--out DIR] [--preset collapse|virtual] [--plates PATH] [--proxy P]``: the demo shot
(see splatfx.demo)."""

from __future__ import annotations

from pathlib import Path

import click

from splatfx.commands.options import proxy_option
from splatfx.demo.presets import PRESETS


@click.command(name="demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("splatfx-demo"),
              show_default=True, help="The shot folder to make (an existing demo shot is resumed).")
@click.option("--preset", type=click.Choice(PRESETS), default="collapse", show_default=True,
              help="collapse: the building collapses, with dust and snow, composited over the plates; "
                   "virtual: the same effects seen from a synthetic camera move (no plates in the frame).")
@click.option("--plates", type=click.Path(exists=True, path_type=Path), default=None,
              help="Your own footage instead of the packaged capture (a folder of images or a video).")
@click.option("--frames", type=click.IntRange(min=2), default=None,
              help="Use only the first N plates (quicker; default: all).")
@click.option("--train-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Wall-time limit of the 3DGS training (default: 2.5, or 1.5 for frames over 150k pixels).")
@click.option("--force", is_flag=True, help="Rerun every stage even if it is up to date.")
@proxy_option
def command(out: Path, preset: str, plates: Path | None, frames: int | None, train_minutes: float | None,
            force: bool, proxy: float | None) -> None:
    """Run the whole pipeline on a small real capture that ships with splatfx.

    32 photos of COLMAP's South Building (C. Zach) at 384x288: solve the cameras, train
    the Gaussian scene, select the building, collapse it with debris and dust, add snow,
    render, refine with the built-in refiner and composite over the plates. Writes EXR
    and PNG frames, shot.mp4, review.mp4 (plate | comp), a contact sheet and the manifest
    into --out, and prints how long each stage took. Under 10 minutes on 2 CPU cores:
    larger --plates are rendered, refined and composited at a proxy size (the longer side
    at most 800 pixels) unless --proxy says otherwise; set [shot] proxy = 1 in the shot's
    shot.toml and `splatfx run` it for full size.
    """
    from dataclasses import replace

    from splatfx.demo import DemoSettings, run_demo

    settings = DemoSettings()
    if frames is not None:
        settings = replace(settings, frames=frames)
    if train_minutes is not None:
        settings = replace(settings, train_minutes=train_minutes)
    if proxy is not None:
        settings = replace(settings, proxy=proxy)
    run_demo(out, preset=preset, plates=plates, settings=settings, force=force)
