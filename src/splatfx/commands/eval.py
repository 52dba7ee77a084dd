"""``splatfx eval``: score a trained scene against a capture's held-out photos (PSNR, SSIM).

::

    splatfx eval --scene scene.ply --data DIR [--split test] [--out DIR]

Writes ``metrics.json`` (means and per-view figures) and the renders (``renders/*.png``) to
``--out`` (default: ``eval_<split>/`` beside the scene).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from splatfx.commands.options import mean_exposure_option
from splatfx.commands.train import background_option
from splatfx.recon.evaluate import exposure_for_capture, write_eval
from splatfx.io.formats.ply import read_ply


@click.command(name="eval")
@click.option("--scene", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The trained scene (3DGS PLY).")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The capture folder whose views are scored.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "val", "train", "all"]),
              help="Which views to score.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Where metrics.json and renders/ go (default: eval_<split>/ beside the scene).")
@click.option("--downscale", default=1.0, show_default=True, type=click.FloatRange(min=1),
              help="Score at the capture's size shrunk by this factor (as trained).")
@click.option("--background", callback=background_option, help="Background: white, black, grey or R,G,B (default: the capture's).")
@click.option("--no-images", is_flag=True, help="Only write metrics.json, not the renders.")
@mean_exposure_option
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "gsplat"]),
              help="Rasterizer backend.")
def command(scene: Path, data: Path, split: str, out: Path | None, downscale: float, background: tuple | None,
            no_images: bool, mean_exposure: bool, backend: str) -> None:
    """Render SCENE from the capture's cameras and report PSNR/SSIM against its photos."""
    out = out if out is not None else scene.parent / f"eval_{split}"
    result = write_eval(read_ply(scene), data, split, out, scene_path=scene, downscale=downscale,
                        background=background, backend=backend, write_images=not no_images,
                        exposure=None if mean_exposure else exposure_for_capture(scene, data))
    Console(stderr=True, highlight=False).print(
        f"{split}: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} over {result['views']} views "
        f"-> {out / 'metrics.json'}")
