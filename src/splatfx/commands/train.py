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

import click
from rich.console import Console

from splatfx.io.dataset import parse_background
from splatfx.core.errors import ConfigError
from splatfx.shot.folder import Shot
from splatfx.recon.train import TrainConfig, config_from_section, train, train_shot


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
@click.option("--max-steps", type=click.IntRange(min=1), help="Optimisation steps (schedules scale with it).")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True),
              help="Time budget: stop cleanly, save and evaluate after this many minutes of training.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in the output folder.")
@click.option("--strategy", type=click.Choice(["adc", "mcmc"]),
              help="Densification: adaptive density control (3DGS) or MCMC (count held at --max-gaussians).")
@click.option("--max-gaussians", type=click.IntRange(min=1), help="Upper bound on the number of Gaussians.")
@click.option("--sh-degree", type=click.IntRange(0, 3), help="Spherical-harmonic degree of the colours.")
@click.option("--random-points", type=click.IntRange(min=1),
              help="Captures without SfM points: how many random Gaussians to start from (default 100000).")
@click.option("--downscale", type=click.FloatRange(min=1), help="Train on images shrunk by this factor.")
@click.option("--background", callback=background_option,
              help="Colour behind the scene: white, black, a grey level or R,G,B (default: the capture's).")
@click.option("--random-background", is_flag=True, default=None, help="A random background each step (RGBA images).")
@click.option("--absgrad", is_flag=True, default=None, help="ADC: grow by absolute 2D gradients (AbsGS).")
@click.option("--grow-grad2d", type=click.FloatRange(min=0, min_open=True), help="ADC: gradient threshold for growth.")
@click.option("--test-every", type=click.IntRange(min=0),
              help="Captures without split files: hold out every Nth image as test (0: none).")
@click.option("--eval-split", type=click.Choice(["test", "val", "train"]), help="Split scored after training.")
@click.option("--no-eval", is_flag=True, help="Do not evaluate after training.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="Steps between checkpoints.")
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (default: the shot's, else 0).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch.")
@click.option("--backend", type=click.Choice(["auto", "cpu", "gsplat"]), help="Rasterizer backend.")
@click.option("--force", is_flag=True, help="Shot form: train again even if nothing changed.")
def command(shot: Path | None, data: Path | None, out: Path | None, max_steps: int | None,
            max_minutes: float | None, resume: bool, strategy: str | None, max_gaussians: int | None,
            sh_degree: int | None, random_points: int | None, downscale: float | None, background: tuple | None,
            random_background: bool | None, absgrad: bool | None, grow_grad2d: float | None,
            test_every: int | None, eval_split: str | None, no_eval: bool, checkpoint_every: int | None,
            seed: int | None, threads: int | None, backend: str | None, force: bool) -> None:
    """Train a 3D Gaussian Splatting scene from SHOT's solve (or from --data into --out)."""
    if shot is not None and (data is not None or out is not None):
        raise click.UsageError("give either SHOT or --data with --out, not both")
    if shot is None and (data is None or out is None):
        raise click.UsageError("give SHOT, or --data and --out")
    overrides = {k: v for k, v in {
        "max_steps": max_steps, "max_minutes": max_minutes, "strategy": strategy, "max_gaussians": max_gaussians,
        "sh_degree": sh_degree, "random_points": random_points, "downscale": downscale, "background": background,
        "random_background": random_background, "absgrad": absgrad, "grow_grad2d": grow_grad2d,
        "test_every": test_every, "eval_split": eval_split, "checkpoint_every": checkpoint_every, "seed": seed,
        "threads": threads, "backend": backend}.items() if v is not None}
    if no_eval:
        overrides["eval_split"] = None
    console = Console(stderr=True, highlight=False)
    if shot is not None:
        opened = Shot.open(shot)
        config = config_from_section(opened.config.train, opened.config.shot.seed, **overrides)
        result = train_shot(opened, config, resume=resume, force=force)
        metrics = result.record.figures if result.record is not None else {}
        out = opened.scene_dir
    else:
        config = dataclasses.replace(TrainConfig(), **overrides)
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
    return f"trained: {', '.join(parts)} -> {out}"
