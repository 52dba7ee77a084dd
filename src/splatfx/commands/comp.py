"""``splatfx comp SHOT [--proxy P]``: composite the rendered effect into the plates (see splatfx.comp.stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from splatfx.commands.farm_options import farm_options, with_farm
from splatfx.commands.options import proxy_option, section_options
from splatfx.shot.config import CompSection, override_table
from splatfx.shot.folder import Shot, describe_size


@click.command(name="comp")
@click.argument("shot", type=click.Path(file_okay=False, path_type=Path))
@section_options(CompSection, only=("grain", "light_wrap", "ocio", "outputs"))
@click.option("--force", is_flag=True, help="Composite every frame even if the outputs are up to date.")
@proxy_option
@farm_options
def command(shot: Path, force: bool, grain: float | None, light_wrap: float | None, ocio: str | None,
            outputs: tuple[str, ...] | None, proxy: float | None, **farm: Any) -> None:
    """Composite SHOT's rendered frames over its plates into SHOT/comp/.

    Writes comp.####.exr (scene-linear, with mask.synthetic), comp.####.png (sRGB),
    shot.mp4, review.mp4 (plate | comp) and contact_sheet.png, as [comp] outputs asks.
    Outside the effect the frames are the plates, bit for bit. Frames can be spread over
    processes or a Ray cluster (--executor, --workers, [farm]); the movies and the contact
    sheet are made here once every frame is done.
    """
    from splatfx.comp.stage import run_comp

    opened = with_farm(Shot.open(shot).with_proxy(proxy), **farm)
    opened = opened.with_config(override_table(opened.config, "comp", "--grain/--light-wrap/--ocio/--outputs",
                                               grain=grain, light_wrap=light_wrap, ocio=ocio, outputs=outputs))
    result = run_comp(opened, force=force)
    figures = result.record.figures if result.record else {}
    if result.ran and figures:
        Console(stderr=True).print(
            f"composited {figures['composited']} of {figures['frames']} frames ({figures['skipped']} up to date) "
            f"at {describe_size(figures)}; "
            f"mean synthetic share {figures['synthetic_share_mean']:.1%}; contact sheet {figures['contact_sheet']}")
