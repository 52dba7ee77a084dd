"""``splatfx render``: render a trained scene from a capture's own cameras to PNGs.

::

    splatfx render --scene scene.ply --data DIR --split test --out DIR

One ``<frame>.png`` per view of the split, over the capture's background (or --background).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from splatfx.commands.train import background_option
from splatfx.evaluate import render_split
from splatfx.formats.ply import read_ply


@click.command(name="render")
@click.option("--scene", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The trained scene (3DGS PLY).")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The capture folder whose cameras are rendered.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "val", "train", "all"]),
              help="Which views to render.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the PNGs.")
@click.option("--downscale", default=1.0, show_default=True, type=click.FloatRange(min=1),
              help="Render at the capture's size shrunk by this factor.")
@click.option("--background", callback=background_option, help="Background: white, black, grey or R,G,B (default: the capture's).")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "gsplat"]),
              help="Rasterizer backend.")
def command(scene: Path, data: Path, split: str, out: Path, downscale: float, background: tuple | None,
            backend: str) -> None:
    """Render SCENE from every camera of a capture's split into --out."""
    written = render_split(read_ply(scene), data, split, out, downscale=downscale, background=background,
                           backend=backend)
    Console(stderr=True, highlight=False).print(f"rendered {len(written)} views of the {split} split -> {out}")
