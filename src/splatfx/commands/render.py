"""``splatfx render``: render a shot's frames and passes, or a trained scene from a
capture's own cameras.

::

    splatfx render SHOT [--force] [--proxy P] [--executor local|ray] [--ray-address ADDR] [--chunk-size N] [--workers N]
    splatfx render --scene scene.ply --data DIR --split test --out DIR   # PNGs of a capture's views

The shot form is the render stage (splatfx.render.stage), its frames spread as ``[farm]`` or
the farm flags say (splatfx.shot.farm); the standalone form writes one
``<frame>.png`` per view of the split, over the capture's background (or --background).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from splatfx.commands.farm_options import farm_options
from splatfx.commands.options import mean_exposure_option, proxy_option
from splatfx.commands.train import background_option
from splatfx.recon.evaluate import exposure_for_capture, render_split
from splatfx.io.formats.ply import read_ply


@click.command(name="render")
@click.argument("shot", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="SHOT: rerender every frame even if up to date.")
@click.option("--scene", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The trained scene (3DGS PLY).")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The capture folder whose cameras are rendered.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "val", "train", "all"]),
              help="Which views to render.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for the PNGs.")
@click.option("--downscale", default=1.0, show_default=True, type=click.FloatRange(min=1),
              help="Render at the capture's size shrunk by this factor.")
@click.option("--background", callback=background_option, help="Background: white, black, grey or R,G,B (default: the capture's).")
@mean_exposure_option
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "gsplat"]),
              help="Rasterizer backend.")
@proxy_option
@farm_options
def command(shot: Path | None, force: bool, scene: Path | None, data: Path | None, split: str, out: Path | None,
            downscale: float, background: tuple | None, mean_exposure: bool, backend: str, proxy: float | None,
            **farm: Any) -> None:
    """Render the shot SHOT (EXR passes per frame), or --scene from every camera of
    --data's split into --out."""
    if shot is not None:
        if scene or data or out or mean_exposure:
            raise click.UsageError("give SHOT, or --scene/--data/--out/--mean-exposure, not both")
        from splatfx.render.stage import render_shot_command

        render_shot_command(shot, force=force, proxy=proxy, **farm)
        return
    if any(value is not None for value in farm.values()) or proxy is not None:
        raise click.UsageError("--proxy/--executor/--ray-address/--chunk-size/--workers apply to SHOT")
    if scene is None or data is None or out is None:
        raise click.UsageError("give SHOT, or all of --scene, --data and --out")
    written = render_split(read_ply(scene), data, split, out, downscale=downscale, background=background,
                           backend=backend, exposure=None if mean_exposure else exposure_for_capture(scene, data))
    Console(stderr=True, highlight=False).print(f"rendered {len(written)} views of the {split} split -> {out}")
