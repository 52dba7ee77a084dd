"""``splatfx init SHOT --plates PATH | --scene CAPTURE``: create a shot folder and its shot.toml.

The plates are checked (every frame's header, then every frame decoded once) and counted;
they are referenced where they are (absolute path) or, with ``--copy``, copied into
``SHOT/plates/``. Frames are numbered from 1001 unless ``--frames`` says otherwise. A frame
that does not decode is refused by name, or with ``--skip-bad-frames`` left out as a gap
(``[shot] skip_frames``). With ``--scene`` the shot starts from someone else's splats (a PLY,
SPZ, SOG or USD capture) without plates, rendered through a virtual camera
(:mod:`splatfx.export.capture`). See docs/shot.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from splatfx.commands.options import key_type
from splatfx.io.plates import VideoPlates
from splatfx.core.errors import ConfigError
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


class SizeParam(click.ParamType):
    """A click parameter for ``WIDTHxHEIGHT`` image sizes."""

    name = "WIDTHxHEIGHT"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().split("x")
        if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            width, height = (int(p) for p in parts)
            if 1 <= width <= 65536 and 1 <= height <= 65536:
                return width, height
        self.fail(f"{value!r} is not an image size WIDTHxHEIGHT (e.g. 1920x1080, each side 1 to 65536)", param, ctx)


@click.command(name="init")
@click.argument("shot", type=click.Path(file_okay=False, path_type=Path))
@click.option("--plates", "plates", default=None, type=click.Path(path_type=Path),
              help="The footage: a folder of images, a sequence (plate.####.exr) or a video.")
@click.option("--scene", "scene", default=None, type=click.Path(path_type=Path),
              help="Start from a capture instead of plates: .ply, .splat, .spz, .sog or a USD stage "
                   "(.usd/.usda/.usdc/.usdz, with its camera when it has one).")
@click.option("--size", type=SizeParam(), default=None,
              help="--scene: image size WIDTHxHEIGHT (default: the USD camera's, else 1920x1080).")
@click.option("--up", type=click.Choice(["+x", "-x", "+y", "-y", "+z", "-z"]), default=None,
              help="--scene: the capture's up axis in its 3DGS coordinates (default: -y, the 3DGS convention; "
                   "a USD stage's upAxis).")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="--scene: metres per capture unit (default: 1, or a USD stage's metersPerUnit).")
@click.option("--usd-camera", default=None, help="--scene: the USD camera prim to import (default: the "
                                                  "stage's render camera, else its first camera).")
@click.option("--fps", type=key_type(ShotSection, "fps"), default=None,
              help="Frames per second of the shot (default: a video's own rate, else 24). A video is numbered "
                   "at this rate: each frame shows the source frame nearest its time (see plates.json).")
@click.option("--frames", type=FrameRangeParam(), default=None,
              help="Frame numbers of the plates, e.g. 1001-1096 (default: from 1001, one per plate).")
@click.option("--copy", is_flag=True, help="Copy the plates into SHOT/plates/ instead of referencing them.")
@click.option("--name", default=None, help="Shot name (default: the folder's name).")
@click.option("--force", is_flag=True, help="Overwrite an existing shot.toml (and copied plates).")
@click.option("--skip-bad-frames", is_flag=True,
              help="Leave frames that do not decode (truncated, corrupt) out as gaps instead of refusing them.")
def command(shot: Path, plates: Path | None, scene: Path | None, size: tuple[int, int] | None, up: str | None,
            scale: float | None, usd_camera: str | None, fps: float | None, frames: FrameRange | None, copy: bool,
            name: str | None, force: bool, skip_bad_frames: bool) -> None:
    """Create the shot folder SHOT and its shot.toml for the footage in --plates, or from the
    capture in --scene."""
    if (plates is None) == (scene is None):
        raise ConfigError("--scene" if scene else "--plates", "give either --plates (footage) or --scene "
                          "(a capture), not both" if scene else "is missing: give the footage (--plates) or a capture "
                          "to start from (--scene)")
    scene_only = {"--size": size, "--up": up, "--scale": scale, "--usd-camera": usd_camera}
    plates_only = {"--copy": copy or None, "--skip-bad-frames": skip_bad_frames or None}
    wrong = [flag for flag, value in (plates_only if scene else scene_only).items() if value is not None]
    if wrong:
        raise ConfigError(wrong[0], f"only applies with {'--plates' if scene else '--scene'}")
    if scene is not None:
        from splatfx.export.capture import create_shot_from_scene

        created = create_shot_from_scene(shot, scene, fps=fps, frames=frames, size=size, up=up, scale=scale,
                                         camera=usd_camera, name=name, force=force)
        print_scene_summary(created, Console())
        return
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
        video = plates.video_summary() if isinstance(plates, VideoPlates) else None
    how = "copied into plates/" if s.plates_mode == "copy" else "referenced in place"
    frames = shot.frames
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("shot", f"{escape(shot.name)}  ({escape(str(shot.root.resolve()))})")
    table.add_row("plates", f"{escape(s.plates)}  ({escape(facts)}{gaps}; {how})")
    table.add_row("frames", f"{frames}  ({len(frames)} frames at {s.fps:g} fps, {len(frames) / s.fps:.2f} s)")
    if video is not None:
        table.add_row("video", f"{escape(video)}  (report: {escape(str(shot.plates_report))})")
    table.add_row("settings", escape(str(shot.toml_path)))
    table.add_row("next", escape(f"splatfx solve {shot.root}"))
    console.print(table)


def print_scene_summary(shot: Shot, console: Console) -> None:
    """What the capture became: the scene, its world frame, the camera, and what to run next."""
    from splatfx.shot.manifest import Manifest

    s = shot.config.shot
    record = Manifest.load(shot.manifest_path).last("import")
    facts = record.figures if record is not None else {}
    frames = shot.frames
    lo, hi = facts.get("bounds_world", [[0, 0, 0], [0, 0, 0]])
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("shot", f"{escape(shot.name)}  ({escape(str(shot.root.resolve()))}; no plates)")
    table.add_row("scene", escape(f"scene/scene.ply  ({facts.get('gaussians')} Gaussians from "
                                  f"{record.config.get('scene') if record else '?'}, SH degree {facts.get('sh_degree')})"))
    table.add_row("world", escape(f"up: {facts.get('up')}; scale: {facts.get('scale')}; bounds (1-99 %) x "
                                  f"{lo[0]:g}..{hi[0]:g}, y {lo[1]:g}..{hi[1]:g}, z {lo[2]:g}..{hi[2]:g} m"))
    table.add_row("camera", escape(f"{facts.get('camera')} -> {shot.config.render.virtual_camera}"))
    table.add_row("frames", f"{frames}  ({len(frames)} frames at {s.fps:g} fps), {s.size[0]}x{s.size[1]}")
    table.add_row("settings", escape(str(shot.toml_path)))
    table.add_row("next", escape(f"splatfx fx select {shot.root}  (set the [fx.select] box inside the bounds above)"))
    console.print(table)
