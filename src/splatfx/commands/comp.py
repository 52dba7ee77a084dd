"""``splatfx comp SHOT``: composite the rendered effect into the plates (see splatfx.comp.stage)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from splatfx.commands.farm_options import farm_options, with_farm
from splatfx.shot.config import override
from splatfx.shot.folder import Shot


@click.command(name="comp")
@click.argument("shot", type=click.Path(file_okay=False, path_type=Path))
@click.option("--grain", type=float, default=None, help="Plate-matched grain strength (0: none); overrides [comp].")
@click.option("--light-wrap", "light_wrap", type=float, default=None,
              help="How much plate light bleeds over synthetic edges, 0-1; overrides [comp].")
@click.option("--ocio", default=None, help="OCIO config inside the shot folder for the display encoding.")
@click.option("--outputs", default=None, help='Comma-separated outputs among exr, png, mp4 (e.g. "exr,png,mp4").')
@click.option("--force", is_flag=True, help="Composite every frame even if the outputs are up to date.")
@farm_options
def command(shot: Path, grain: float | None, light_wrap: float | None, ocio: str | None, outputs: str | None,
            force: bool, **farm: Any) -> None:
    """Composite SHOT's rendered frames over its plates into SHOT/comp/.

    Writes comp.####.exr (scene-linear, with mask.synthetic), comp.####.png (sRGB),
    shot.mp4, review.mp4 (plate | comp) and contact_sheet.png, as [comp] outputs asks.
    Outside the effect the frames are the plates, bit for bit. Frames can be spread over
    processes or a Ray cluster (--executor, --workers, [farm]); the movies and the contact
    sheet are made here once every frame is done.
    """
    from splatfx.comp.stage import run_comp

    opened = with_farm(Shot.open(shot), **farm)
    listed = None if outputs is None else tuple(o.strip() for o in outputs.split(",") if o.strip())
    section = override(opened.config.comp, "--grain/--light-wrap/--ocio/--outputs", grain=grain,
                       light_wrap=light_wrap, ocio=ocio, outputs=listed)
    result = run_comp(opened.with_config(replace(opened.config, comp=section)), force=force)
    figures = result.record.figures if result.record else {}
    if result.ran and figures:
        Console(stderr=True).print(
            f"composited {figures['composited']} of {figures['frames']} frames ({figures['skipped']} up to date); "
            f"mean synthetic share {figures['synthetic_share_mean']:.1%}; contact sheet {figures['contact_sheet']}")
