"""``splatfx refine SHOT [--train] [--model DIR] [--proxy P]``: diffusion refinement of the rendered frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from splatfx.commands.farm_options import farm_options, with_farm
from splatfx.commands.options import key_type, proxy_option
from splatfx.shot.config import RefineSection


@click.command(name="refine")
@click.argument("shot", type=click.Path(file_okay=False, path_type=Path))
@click.option("--train", "train", is_flag=True,
              help="Train the built-in per-scene sharpening pass (a small learnt filter: +0.2 dB on lego's held-out views, "
                   "about nothing on real captures; docs/refine.md) on the shot's scene and plates first (resumes its "
                   "checkpoint).")
@click.option("--model", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR|OWNER/NAME",
              help="Model folder (a diffusers pipeline with model_index.json, or a built-in refiner) or, where no such "
                   "folder exists, a Hugging Face hub id owner/name[@revision], fetched once into the Hugging Face "
                   "cache; overrides [refine] model.")
@click.option("--steps", type=key_type(RefineSection, "steps"), default=None, help="Denoising steps (overrides [refine] steps).")
@click.option("--strength", type=key_type(RefineSection, "strength"), default=None,
              help="How far synthetic pixels may move from the render, 0-1 (overrides [refine] strength).")
@click.option("--seed", type=key_type(RefineSection, "seed"), default=None, help="Noise seed (overrides [refine] seed).")
@click.option("--prompt", default=None, help="Text prompt, for text-conditioned models (overrides [refine] prompt).")
@click.option("--negative-prompt", default=None,
              help="Negative prompt, with --guidance above 1 (overrides [refine] negative_prompt).")
@click.option("--guidance", type=key_type(RefineSection, "guidance"), default=None,
              help="Classifier-free guidance scale for text-conditioned models, 1: none (overrides [refine] guidance).")
@click.option("--fill-holes/--no-fill-holes", default=None,
              help="Paint the clean plate's holes (mask.holes) with the model instead of the comp's classical "
                   "inpainting (overrides [refine] fill_holes).")
@click.option("--hole-strength", type=key_type(RefineSection, "hole_strength"), default=None,
              help="Strength in the holes with --fill-holes, 1: from pure noise (overrides [refine] hole_strength).")
@click.option("--feather", type=key_type(RefineSection, "feather"), default=None,
              help="Width in pixels of the blend ramp inside the matte edge (overrides [refine] feather).")
@click.option("--batch", type=key_type(RefineSection, "batch"), default=None,
              help="Frames per model call (overrides [refine] batch).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--train-steps", type=key_type(RefineSection, "train_steps"), default=None,
              help="Training steps of the built-in sharpening pass (overrides [refine] train_steps).")
@click.option("--train-minutes", type=key_type(RefineSection, "train_minutes"), default=None,
              help="Stop training the built-in sharpening pass after this many minutes (overrides [refine] "
                   "train_minutes).")
@click.option("--force", is_flag=True, help="Run even if the outputs are up to date.")
@proxy_option
@farm_options
def command(shot: Path, train: bool, model: Path | None, steps: int | None, strength: float | None,
            seed: int | None, prompt: str | None, negative_prompt: str | None, guidance: float | None,
            fill_holes: bool | None, hole_strength: float | None, feather: float | None, batch: int | None,
            device: str, train_steps: int | None, train_minutes: float | None, force: bool, proxy: float | None, **farm: Any) -> None:
    """Refine the rendered frames of SHOT with a diffusion model, only where they are synthetic.

    Reads render/*.exr, writes refine/*.exr (every channel copied; colour refined where
    mask.synthetic > 0, bit-exact elsewhere). The noise follows the render's motion vectors,
    so the refinement is stable from frame to frame. Settings: shot.toml [refine]. Frames
    can be spread over processes or a Ray cluster (--executor, --workers, [farm]): each
    chunk replays the noise warp over the frames before it, so the noise, and the frames,
    are the same as in one pass.
    """
    from splatfx.refine.stage import run_refine, run_refine_train
    from splatfx.shot.config import override_table
    from splatfx.shot.folder import Shot

    opened = with_farm(Shot.open(shot).with_proxy(proxy), **farm)
    opened = opened.with_config(override_table(
        opened.config, "refine", "command line", steps=steps, strength=strength, seed=seed, prompt=prompt,
        negative_prompt=negative_prompt, guidance=guidance, fill_holes=fill_holes, hole_strength=hole_strength,
        feather=feather, batch=batch, train_steps=train_steps, train_minutes=train_minutes))
    console = Console()
    if train:
        trained = run_refine_train(opened, device=device, force=force)
        if trained.ran and trained.record is not None:
            f = trained.record.figures
            loss = "n/a" if f.get("loss_ema") is None else f"{f['loss_ema']:.5f}"
            console.print(f"per-scene sharpening: {f['steps']} training steps in {f['train_seconds']:.0f} s "
                          f"on {f['pairs']} pairs, loss {loss}")
    result = run_refine(opened, model=model, trained=train, device=device, force=force)
    if result.ran and result.record is not None:
        f = result.record.figures
        console.print(f"refined {f['refined']} of {f['frames']} frames ({f['kept']} already done, "
                      f"{f['untouched']} without synthetic pixels), mean change {f['mean_abs_change']:.4f}")
