"""``splatfx view SHOT|scene.ply``: the shot in the browser (see docs/viewer.md)."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console


@click.command(name="view")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on; 0.0.0.0 lets other machines in (and edit shot.toml).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to serve on (the next free one if taken; 0: any free port).")
@click.option("--max-splats", default=None, type=click.IntRange(1), metavar="N",
              help="Most splats sent to the browser; larger scenes are decimated for display [1000000].")
def command(source: Path, host: str, port: int, max_splats: int | None) -> None:
    """Look at a shot (or a .ply/.splat/.spz) in the browser: splats, plate cameras, the
    selection box (saved to shot.toml), the effects' timeline and stage buttons."""
    try:
        from splatfx.viewer.app import DEFAULT_MAX_SPLATS, ShotViewer, is_loopback
    except ImportError as exc:
        raise click.ClickException(f"splatfx view needs viser ({exc}); install it with: pip install 'splatfx[view]'")

    console = Console(stderr=True, highlight=False)
    if not is_loopback(host):
        console.print(f"[yellow]warning[/]: serving on {host}: anyone who can reach it can change shot.toml "
                      "and run stages")
    viewer = ShotViewer(source, host=host, port=port, max_splats=max_splats or DEFAULT_MAX_SPLATS)
    console.print(f"splatfx view: open [bold]{viewer.url}[/] in a browser (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    finally:
        viewer.stop()
