"""``splatfx export``: the shot in other tools (OpenUSD, PLY sequences, Nuke cameras, ...).

::

    splatfx export SHOT --format usd|ply-seq|chan|... --out PATH [--frames A-B] [--sensor-width MM]

The formats are the rows of :data:`splatfx.export.EXPORTERS`; docs/export.md says what each
writes and how to open it in Nuke, Houdini, Blender and SuperSplat.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from splatfx.export import DEFAULT_SENSOR_WIDTH_MM, EXPORTERS, export_shot
from splatfx.shot.folder import Shot


def _formats_help() -> str:
    return "; ".join(f"{name}: {f.help}" for name, f in EXPORTERS.items())


@click.command(name="export", help="Export the shot SHOT for other tools.\n\nFormats: " + _formats_help())
@click.argument("shot", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "format_", required=True, metavar="FORMAT",
              help=f"One of: {', '.join(EXPORTERS)}.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The file or folder to write (as the format says).")
@click.option("--frames", default=None, metavar="A-B", help="Only these frames (within the shot's; default: all).")
@click.option("--sensor-width", default=DEFAULT_SENSOR_WIDTH_MM, show_default=True, type=float,
              help="Camera sensor width in mm, for focal lengths and apertures in mm.")
def command(shot: Path, format_: str, out: Path, frames: str | None, sensor_width: float) -> None:
    result = export_shot(Shot.open(shot), format_, out, frames, sensor_width)
    Console(stderr=True, highlight=False).print(result.summary)
