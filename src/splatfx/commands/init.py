"""``splatfx init SHOT --plates PATH``: create a shot folder and its shot.toml.

The plates are checked (every frame's header, then every frame decoded once) and counted;
they are referenced where they are (absolute path) or, with ``--copy``, copied into
``SHOT/plates/``. Frames are numbered from 1001 unless ``--frames`` says otherwise. A frame
that does not decode is refused by name, or with ``--skip-bad-frames`` left out as a gap
(``[shot] skip_frames``). See docs/shot.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from splatfx.commands.options import key_type
from splatfx.shot.config import FrameRange, ShotSection
from splatfx.shot.folder import Shot, SkippedFrameWarning, create_shot


class FrameRangeParam(click.ParamType):
    """A click parameter for ``START-END`` frame ranges."""

    name = "START-END"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> FrameRange:
        if isinstance(value, FrameRange):
            return value
        try:
            return FrameRange.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command(name="init")
@click.argument("shot", type=click.Path(file_okay=False, path_type=Path))
@click.option("--plates", "plates", required=True, type=click.Path(path_type=Path),
              help="The footage: a folder of images, a sequence (plate.####.exr) or a video.")
@click.option("--fps", type=key_type(ShotSection, "fps"), default=24.0, show_default=True,
              help="Frames per second of the plates.")
@click.option("--frames", type=FrameRangeParam(), default=None,
              help="Frame numbers of the plates, e.g. 1001-1096 (default: from 1001, one per plate).")
@click.option("--copy", is_flag=True, help="Copy the plates into SHOT/plates/ instead of referencing them.")
@click.option("--name", default=None, help="Shot name (default: the folder's name).")
@click.option("--force", is_flag=True, help="Overwrite an existing shot.toml (and copied plates).")
@click.option("--skip-bad-frames", is_flag=True,
              help="Leave frames that do not decode (truncated, corrupt) out as gaps instead of refusing them.")
def command(shot: Path, plates: Path, fps: float, frames: FrameRange | None, copy: bool,
            name: str | None, force: bool, skip_bad_frames: bool) -> None:
    """Create the shot folder SHOT and its shot.toml for the footage in --plates."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedFrameWarning)
        created = create_shot(shot, plates, fps=fps, frames=frames, copy=copy, force=force, name=name,
                              skip_bad_frames=skip_bad_frames)
    errors = Console(stderr=True, highlight=False)
    for warning in caught:
        if isinstance(warning.message, SkippedFrameWarning):
            errors.print(f"[yellow]warning:[/] {escape(str(warning.message))}", soft_wrap=True)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    print_summary(created, Console())


def print_summary(shot: Shot, console: Console) -> None:
    """A few lines for the artist: what the shot is made of and what to run next."""
    s = shot.config.shot
    with shot.open_plates() as plates:
        facts = f"{plates.kind}, {len(plates)} frames, {plates.width}x{plates.height}, {plates.encoding}"
        gaps = f", [yellow]{len(plates.missing)} missing frames[/]" if plates.missing else ""
    how = "copied into plates/" if s.plates_mode == "copy" else "referenced in place"
    frames = shot.frames
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("shot", f"{escape(shot.name)}  ({escape(str(shot.root.resolve()))})")
    table.add_row("plates", f"{escape(s.plates)}  ({escape(facts)}{gaps}; {how})")
    table.add_row("frames", f"{frames}  ({len(frames)} frames at {s.fps:g} fps, {len(frames) / s.fps:.2f} s)")
    table.add_row("settings", escape(str(shot.toml_path)))
    table.add_row("next", escape(f"splatfx solve {shot.root}"))
    console.print(table)
