"""Where a training step's time goes, phase by phase, beside the rasterizer's own cost.

Usage::

    python benchmarks/train_step.py [--capture SOLVE] [--downscales 8,4] [--warmup 500] [--steps 100] [--json FILE]

On south_building_full's 24 plates (3072x2304; solved first as a user would, about 1.5 min,
unless ``--capture`` names a solve), with the demo's training settings (``splatfx demo``:
ADC, SH degree 1, 1,500 steps, its schedule), at each downscale (8: the demo's working size
for these plates, 387x289; 4: 774x578):

1. ``--warmup`` ordinary training steps grow the scene as the demo does;
2. ``--steps`` steps of the same training, each split into timed phases (the step below is
   :meth:`splatfx.recon.train.Trainer.train_step` taken apart, backward in two halves:
   the loss's, then the rasterizer's), with the loss in torch (``photometric_loss``, autograd:
   the reference) and then ``--steps`` more with the loss as training computes it
   (``training_loss``: fused compiled kernels on the CPU);
3. ``--steps`` ordinary steps timed whole (the step as trained);
4. ``--steps`` rasterizer forward + backward alone, at the same Gaussians, views and size,
   with a fixed image gradient: what a step is compared with.

Printed: milliseconds per step of each phase with each loss, the share of the step, and the
ratio of the step to the rasterizer's forward + backward.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from splatfx.core.losses import photometric_loss
from splatfx.io.dataset import load_dataset
from splatfx.recon.densify import StepInfo
from splatfx.recon.train import TrainConfig, Trainer, camera_for_step, image_tensor, means_lr_at, training_loss

from train import _solved_full  # benchmarks/train.py: south_building_full solved as a user would

PHASES = ("data", "raster forward", "loss forward", "loss backward", "raster backward", "optimizer",
          "densification", "metrics")


class PhaseTimer:
    """Accumulated seconds per named phase."""

    def __init__(self) -> None:
        self.seconds = {name: 0.0 for name in PHASES}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - start


def demo_config(downscale: float) -> TrainConfig:
    """The demo's [train] settings (splatfx.demo.preset_tables) at ``downscale``, on a 1,500-step
    schedule (about what its budget buys at 774x578)."""
    from splatfx.demo import DemoSettings

    s = DemoSettings()
    return TrainConfig(max_steps=1500, max_gaussians=s.max_gaussians, sh_degree=s.sh_degree,
                       strategy="adc", downscale=downscale, holdout_every=0, eval_split=None, progress=False,
                       checkpoint_every=10**9)


def profiled_step(trainer: Trainer, timer: PhaseTimer, loss_function: Callable = training_loss) -> None:
    """One ``Trainer.train_step`` with each phase timed (its loss computed by ``loss_function``)."""
    config, step = trainer.config, trainer.step
    with timer.phase("data"):
        view = camera_for_step(step, len(trainer.cameras), config.seed)
        target = image_tensor(trainer.dataset, view, trainer.device)
        means_lr = means_lr_at(step, config, trainer.extent)
        trainer.optimizer.param_groups[0]["lr"] = means_lr
    with timer.phase("raster forward"):
        render, _, meta = trainer.render(view, trainer.sh_degree_at(step), trainer.background)
        info = StepInfo(meta, means_lr)
        trainer.strategy.before_backward(info)
    with timer.phase("loss forward"):
        loss, _ = loss_function(render[0], target, config.ssim_weight)
    with timer.phase("loss backward"):
        (image_grad,) = torch.autograd.grad(loss, render)
    with timer.phase("raster backward"):
        render.backward(image_grad)
    with timer.phase("optimizer"):
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    with timer.phase("densification"):
        trainer.strategy.after_step(trainer.params, trainer.optimizer, trainer.state, step, info, trainer.generator)
    trainer.step += 1
    with timer.phase("metrics"):
        with torch.no_grad():
            torch.mean((render[0].detach().clamp(0, 1) - target) ** 2).item()  # the step's PSNR reads this


def rasterizer_alone(trainer: Trainer, steps: int) -> float:
    """Seconds per rasterizer forward + backward (same Gaussians, views, size, SH degree)."""
    generator = torch.Generator().manual_seed(0)
    total = 0.0
    for k in range(steps):
        view = camera_for_step(trainer.step + k, len(trainer.cameras), trainer.config.seed)
        cam = trainer.cameras[view]
        image_grad = torch.randn((1, cam.height, cam.width, 3), generator=generator) * 1e-3
        start = time.perf_counter()
        render, _, _ = trainer.render(view, trainer.sh_degree_at(trainer.step), trainer.background)
        render.backward(image_grad)
        total += time.perf_counter() - start
        for p in trainer.params.values():
            p.grad = None
    return total / steps


def profile(capture: Path, downscale: float, warmup: int, steps: int) -> dict:
    plates = load_dataset(capture, "train", holdout_every=0)
    views = plates.downscaled(downscale)
    for i in range(len(views)):
        views.image(i)  # decoded once, as the trainer's cache holds them after the first epoch
    with tempfile.TemporaryDirectory(prefix="splatfx-step-") as out:
        trainer = Trainer(capture, out, demo_config(downscale), dataset=views)
        trainer.train(until=warmup)
        phases = {}
        for name, loss_function in (("torch loss", photometric_loss), ("fused loss", training_loss)):
            timer = PhaseTimer()
            for _ in range(steps):
                profiled_step(trainer, timer, loss_function)
            phases[name] = {phase: seconds / steps for phase, seconds in timer.seconds.items()}
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        whole = (time.perf_counter() - start) / steps
        raster = rasterizer_alone(trainer, steps)
        gaussians = len(trainer.params["means"])
    size = views.cameras[0].width, views.cameras[0].height
    return {"size": f"{size[0]}x{size[1]}", "downscale": downscale, "gaussians": gaussians,
            "steps": f"{warmup}..{warmup + 3 * steps}", "phases_s": phases,
            "phases_sum_s": {name: sum(p.values()) for name, p in phases.items()},
            "step_s": whole, "raster_fwd_bwd_s": raster, "step_over_raster": whole / raster}


def table(rows: list[dict]) -> str:
    losses = ("torch loss", "fused loss")
    head = "| phase | " + " | ".join(f"{r['size']} ({r['gaussians']:,} G), {loss}: ms | share"
                                     for r in rows for loss in losses) + " |"
    rule = "|---|" + "---:|---:|" * len(rows) * len(losses)

    def cells(value) -> str:
        return " | ".join(value(r, loss) for r in rows for loss in losses)

    body = [f"| {name} | " + cells(lambda r, loss: f"{1e3 * r['phases_s'][loss][name]:.1f} | "
                                                   f"{100 * r['phases_s'][loss][name] / r['phases_sum_s'][loss]:.0f} %")
            + " |" for name in PHASES]
    body.append("| **step (sum of phases)** | " + cells(lambda r, loss: f"**{1e3 * r['phases_sum_s'][loss]:.1f}** | 100 %") + " |")
    body.append("| **step ÷ rasterizer fwd+bwd** | "
                + cells(lambda r, loss: f"**{r['phases_sum_s'][loss] / r['raster_fwd_bwd_s']:.2f}×** | ") + " |")
    body.append("| step as trained, timed whole | " + cells(
        lambda r, loss: f"{1e3 * r['step_s']:.1f} | " if loss == "fused loss" else " | ") + " |")
    body.append("| rasterizer forward + backward alone | " + cells(
        lambda r, loss: f"{1e3 * r['raster_fwd_bwd_s']:.1f} | " if loss == "fused loss" else " | ") + " |")
    return "\n".join([head, rule, *body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, help="a solve of south_building_full to reuse (else solved first)")
    parser.add_argument("--downscales", default="8,4", help="plate downscales, comma-separated")
    parser.add_argument("--warmup", type=int, default=500, help="ordinary steps before profiling")
    parser.add_argument("--steps", type=int, default=100, help="steps per measurement")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="splatfx-bench-step-") as tmp:
        capture = args.capture or _solved_full(Path(tmp))
        rows = []
        for downscale in (float(d) for d in args.downscales.split(",")):
            rows.append(profile(capture, downscale, args.warmup, args.steps))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
