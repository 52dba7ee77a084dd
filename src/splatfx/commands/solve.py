"""``splatfx solve``: cameras for the plates (or imported known cameras), up and scale.

Two forms::

    splatfx solve SHOT [options]                    # the shot's plates -> SHOT/solve/
    splatfx solve --images DIR --out DIR [options]  # any folder of images (or plates)
    splatfx solve --import PATH (SHOT | --out DIR)  # known cameras instead of a solve

Options override the shot's ``[solve]`` table for one run. See docs/solve.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from splatfx.recon.orient import ScaleMeasure
from splatfx.shot.folder import REPORT_JSON, SCENE_JSON, Shot
from splatfx.shot.scene_frame import SceneFrame
from splatfx.recon.solve import (
    SolveConfig,
    SolveReport,
    config_for_shot,
    import_cameras,
    load_report,
    run_orient,
    run_solve,
    solve_images,
)
from splatfx.shot.config import override

CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")


class NumbersParam(click.ParamType):
    """``count`` comma-separated numbers, e.g. a point ``x,y,z``."""

    def __init__(self, count: int, name: str) -> None:
        self.count = count
        self.name = name

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(float(v) for v in str(value).split(","))
        except ValueError:
            numbers = ()
        if len(numbers) != self.count:
            self.fail(f"expected {self.count} comma-separated numbers ({self.name}), got {value!r}", param, ctx)
        return numbers


POINT = NumbersParam(3, "x,y,z")
BOX = NumbersParam(6, "xmin,ymin,zmin,xmax,ymax,zmax")


@click.command(name="solve")
@click.argument("shot", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", type=click.Path(exists=True, path_type=Path),
              help="Solve this folder of images (or sequence/video) instead of a shot's plates; needs --out.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for --images or --import without a shot.")
@click.option("--import", "import_path", type=click.Path(exists=True, path_type=Path),
              help="Import known cameras instead of solving: a COLMAP model/project, transforms.json or LLFF capture.")
@click.option("--matcher", type=click.Choice(["auto", "exhaustive", "sequential"]),
              help="Image pairs to match: every pair, neighbouring frames, or auto (every pair up to 150 images).")
@click.option("--loop-closure/--no-loop-closure", default=None,
              help="Sequential matcher: also match keyframes pairwise, for plates that revisit a place.")
@click.option("--camera-model", type=click.Choice(CAMERA_MODELS), help="COLMAP lens model to solve for.")
@click.option("--single-camera/--camera-per-image", default=None,
              help="One lens for every image (default) or one per image (zooms, mixed cameras).")
@click.option("--max-features", type=click.IntRange(min=64), help="SIFT features per image.")
@click.option("--max-image-size", type=click.IntRange(min=64), help="Longest side the features are found at.")
@click.option("--up", type=click.Choice(["auto", "cameras"]),
              help="auto: the ground plane; cameras: the cameras' path or mean up vector.")
@click.option("--camera-height", type=click.FloatRange(min=0, min_open=True),
              help="Scale: the cameras' mean height above the ground in metres (assumed 1.6 m).")
@click.option("--distance", type=(POINT, POINT, click.FloatRange(min=0, min_open=True)), default=None,
              metavar="X,Y,Z X,Y,Z METRES", help="Scale: two points in solve coordinates and their distance.")
@click.option("--height", type=(BOX, click.FloatRange(min=0, min_open=True)), default=None,
              metavar="XMIN,YMIN,ZMIN,XMAX,YMAX,ZMAX METRES",
              help="Scale: the solved points in this solve-space box span METRES vertically.")
@click.option("--threads", type=click.IntRange(min=0), help="CPU threads (0: every core).")
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (default: the shot's seed, else 0).")
@click.option("--force", is_flag=True, help="Solve again even if nothing changed.")
@click.option("--verbose", is_flag=True, help="Show COLMAP's own log.")
def command(shot: Path | None, images: Path | None, out: Path | None, import_path: Path | None,
            matcher: str | None, loop_closure: bool | None, camera_model: str | None, single_camera: bool | None,
            max_features: int | None, max_image_size: int | None, up: str | None, camera_height: float | None,
            distance: tuple | None, height: tuple | None, threads: int | None, seed: int | None,
            force: bool, verbose: bool) -> None:
    """Find the cameras of SHOT's plates (or of --images), with up direction and metric scale."""
    if shot is not None and (images is not None or out is not None):
        raise click.UsageError("give either SHOT or --images/--import with --out, not both")
    if shot is None and (out is None or (images is None) == (import_path is None)):
        raise click.UsageError("give SHOT, or --out with exactly one of --images and --import")
    scale = _scale(camera_height, distance, height)
    flags = {"matcher": matcher, "loop_closure": loop_closure, "camera_model": camera_model,
             "single_camera": single_camera, "max_features": max_features, "max_image_size": max_image_size,
             "up": up, "scale": scale, "num_threads": threads, "seed": seed}
    console = Console(stderr=True, highlight=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if shot is not None:
            opened = Shot.open(shot)
            config = override(config_for_shot(opened), "command line", **flags)
            run_solve(opened, config=config, force=force, verbose=verbose, import_path=import_path)
            run_orient(opened, config=config, force=force)
            report_dir = opened.solve_dir
        else:
            config = override(SolveConfig(), "command line", **flags)
            if import_path is not None:
                import_cameras(import_path, out, config, verbose=verbose)
            else:
                solve_images(images, out, config, verbose=verbose)
            report_dir = out
    for warning in caught:
        console.print(f"[yellow]warning:[/] {escape(str(warning.message))}")
    print_report(load_report(report_dir / REPORT_JSON), SceneFrame.load(report_dir / SCENE_JSON), report_dir,
                 Console())


def _scale(camera_height: float | None, distance: tuple | None, height: tuple | None) -> ScaleMeasure | None:
    """The one scale measure given on the command line (None: keep the configured one)."""
    given = [m for m in (camera_height, distance, height) if m is not None]
    if len(given) > 1:
        raise click.UsageError("give at most one of --camera-height, --distance and --height")
    if camera_height is not None:
        return ScaleMeasure("camera_height", camera_height)
    if distance is not None:
        return ScaleMeasure("distance", distance[2], (distance[0], distance[1]))
    if height is not None:
        return ScaleMeasure("height", height[1], box=height[0])
    return None


def print_report(report: SolveReport, scene: SceneFrame, folder: Path, console: Console) -> None:
    """The solve's headline figures and the scene's orientation, for the artist."""
    error = report.mean_reprojection_error_px
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    how = f"{report.source}" + (f", {report.matcher} matching of {report.image_pairs} pairs" if report.matcher else "")
    table.add_row("cameras", f"{report.images_registered} of {report.images_total} images registered ({how})")
    if report.unregistered:
        table.add_row("no camera", f"[yellow]{escape(', '.join(report.unregistered))}[/]")
    table.add_row("accuracy", "n/a (imported)" if error is None else f"mean reprojection error {error:.3f} px")
    table.add_row("points", str(report.points3D))
    table.add_row("up", f"{scene.up_source.replace('_', ' ')} "
                        f"({scene.camera_up_angle_deg:.1f}° from the cameras' mean up)")
    table.add_row("scale", f"{scene.scale:.4g} m per unit ({escape(scene.scale_source)})")
    table.add_row("time", f"{report.seconds.get('total', 0.0):.1f} s")
    table.add_row("written", escape(f"{folder}/ (sparse/0, images, {REPORT_JSON}, {SCENE_JSON})"))
    console.print(table)
