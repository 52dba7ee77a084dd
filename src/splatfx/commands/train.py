"""``splatfx train``: fit a Gaussian scene to posed images.

Two forms::

    splatfx train SHOT [options]             # SHOT/solve -> SHOT/scene, settings from [train]
    splatfx train --data DIR --out DIR [options]

``DIR`` is any capture :func:`splatfx.io.dataset.load_dataset` reads (NeRF ``transforms*.json``,
COLMAP, LLFF). Options override the shot's ``[train]`` table for one run. See docs/train.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from splatfx.io.dataset import parse_background
from splatfx.core.errors import ConfigError
from splatfx.shot.folder import Shot
from splatfx.commands.options import section_options
from splatfx.recon.train import TrainConfig, config_for_shot, run_train, train
from splatfx.shot.config import TrainSection, override


def background_option(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        return parse_background(value)
    except ConfigError as exc:
        raise click.BadParameter(exc.problem) from None


@click.command(name="train")
@click.argument("shot", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Train on this capture folder instead of a shot's solve; needs --out.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for --data: scene.ply, checkpoints/, metrics.json.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in the output folder.")
@section_options(TrainSection, exclude=("background",))
@click.option("--background", callback=background_option,
              help="Colour behind the scene: white, black, a grey level or R,G,B (default: the capture's; "
                   "overrides the shot.toml key background).")
@click.option("--random-points", type=click.IntRange(min=1),
              help="Captures without SfM points: how many random Gaussians to start from (default 100000).")
@click.option("--absgrad", is_flag=True, default=None, help="ADC: grow by absolute 2D gradients (AbsGS).")
@click.option("--grow-grad2d", type=click.FloatRange(min=0, min_open=True), help="ADC: gradient threshold for growth.")
@click.option("--eval-split", type=click.Choice(["test", "val", "train"]), help="Split scored after training.")
@click.option("--no-eval", is_flag=True, help="Do not evaluate after training.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="Steps between checkpoints.")
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (default: the shot's, else 0).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch.")
@click.option("--backend", type=click.Choice(["auto", "cpu", "gsplat"]), help="Rasterizer backend.")
@click.option("--force", is_flag=True, help="Shot form: train again even if nothing changed.")
def command(shot: Path | None, data: Path | None, out: Path | None, resume: bool, no_eval: bool, force: bool,
            **settings: Any) -> None:
    """Train a 3D Gaussian Splatting scene from SHOT's solve (or from --data into --out).

    Every [train] key of shot.toml has a flag of its name (max_steps: --max-steps); a flag
    given overrides the shot's table (or, with --data, the default) for this run. With
    --data, a capture without split files holds out every 8th image unless --holdout-every
    says otherwise.
    """
    if shot is not None and (data is not None or out is not None):
        raise click.UsageError("give either SHOT or --data with --out, not both")
    if shot is None and (data is None or out is None):
        raise click.UsageError("give SHOT, or --data and --out")
    console = Console(stderr=True, highlight=False)
    opened = Shot.open(shot) if shot is not None else None
    config = override(config_for_shot(opened) if opened else TrainConfig(), "command line", **settings)
    if no_eval:
        config = dataclasses.replace(config, eval_split=None)  # a None flag value would mean "not given"
    if opened is not None:
        result = run_train(opened, config=config, resume=resume, force=force)
        metrics = result.record.figures if result.record is not None else {}
        out = opened.scene_dir
    else:
        metrics = train(data, out, config, resume=resume).metrics
    console.print(summary_line(metrics, out))


def summary_line(metrics: dict, out: Path) -> str:
    """One line: steps, time, Gaussians and test scores of a run, and where it wrote."""
    parts = [f"{metrics.get('steps', '?')} steps"]
    if metrics.get("train_seconds") is not None:
        parts.append(f"{metrics['train_seconds'] / 60:.1f} min")
    if metrics.get("gaussians") is not None:
        parts.append(f"{metrics['gaussians']:,} Gaussians")
    for split in ("test", "val", "train"):
        if f"{split}_psnr" in metrics:
            parts.append(f"{split} PSNR {metrics[f'{split}_psnr']:.2f} dB, SSIM {metrics[f'{split}_ssim']:.4f}")
            if f"{split}_psnr_at_mean_exposure" in metrics:  # scored at each plate's exposure
                parts.append(f"{metrics[f'{split}_psnr_at_mean_exposure']:.2f} dB at the mean exposure")
    return f"trained: {', '.join(parts)} -> {out}"
