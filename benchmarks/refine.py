"""Quality benchmark of the built-in refiner (``splatfx.refine.builtin``) on held-out views.

Usage::

    python benchmarks/refine.py [--captures lego_200 fern] [--recon-steps 600] [--refiner-steps 800]
                                [--threads 1] [--work DIR] [--json FILE]

For each capture:

1. **An under-trained reconstruction**: ``splatfx.train`` for ``--recon-steps`` steps on the
   train split (SH degree 1; checkpoints every fifth of the run, kept as the "early
   checkpoints" degradation). Kept in ``--work`` and reused by later runs.
2. **Unrefined**: its renders of the held-out views (lego: the 200 ``test`` views on white;
   fern: every 8th image), PSNR and SSIM against the real images.
3. **The built-in refiner**, trained from scratch on pairs rendered from degraded versions of
   that reconstruction on the *training* views (the scene as trained, early checkpoints,
   30 % of the Gaussians dropped, positions jittered, half resolution) against the training
   images, for ``--refiner-steps`` steps (``--refiner-minutes`` caps the wall time).
4. **Refined**: the held-out renders refined (DDIM, 1 and 4 steps, strengths 0.3 and 1;
   independent noise per view), PSNR and SSIM against the same images.

Prints a table and the load average: the machine may be shared, which inflates the times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from splatfx.checkpoint import list_checkpoints, load_checkpoint
from splatfx.dataset import load_dataset
from splatfx.evaluate import render_view
from splatfx.formats import read_gaussians
from splatfx.metrics import MetricSummary
from splatfx.refine.builtin import BuiltinRefiner, PairSettings, TrainSettings, make_pairs, train_refiner
from splatfx.train import TrainConfig, gaussians_from_params, train

REPO = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    return Path(os.environ.get("SPLATFX_DATA", REPO.parent / "shared" / "data"))


def reconstruct(data: Path, out: Path, steps: int, threads: int) -> dict:
    """Train (or reuse) the under-trained reconstruction; its figures."""
    metrics = out / "metrics.json"
    if (out / "scene.ply").is_file() and metrics.is_file():
        figures = json.loads(metrics.read_text())
        if figures.get("steps") == steps:
            return figures | {"reused": True}
    config = TrainConfig(max_steps=steps, sh_degree=1, checkpoint_every=max(1, steps // 5), keep_checkpoints=5,
                         eval_split=None, threads=threads, random_points=20_000, progress=True)
    t0 = time.perf_counter()
    result = train(data, out, config)
    return result.metrics | {"wall_seconds": time.perf_counter() - t0}


def early_reconstructions(out: Path, most: int = 2) -> list:
    """The checkpoints before the last (earlier, worse reconstructions), newest first."""
    found = list_checkpoints(out / "checkpoints")[:-1]
    return [gaussians_from_params(load_checkpoint(p).params) for _, p in found[::-1][:most]]


def held_out(scene, data: Path) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
    """Renders of the held-out views, their real images, and their names."""
    dataset = load_dataset(data, "test")
    background = torch.from_numpy(dataset.background)
    renders, targets = [], []
    for i in range(len(dataset)):
        renders.append(render_view(scene, dataset.frames[i].camera, background).clamp(0, 1).permute(2, 0, 1))
        targets.append(torch.from_numpy(dataset.image(i)).permute(2, 0, 1))
    return renders, targets, dataset.names


def score(images: list[torch.Tensor], targets: list[torch.Tensor], names: list[str]) -> MetricSummary:
    summary = MetricSummary()
    for name, image, target in zip(names, images, targets):
        summary.add(name, image.permute(1, 2, 0), target.permute(1, 2, 0))
    return summary


def refine_views(model: BuiltinRefiner, renders: list[torch.Tensor], strength: float, steps: int,
                 seed: int) -> list[torch.Tensor]:
    """Each held-out render refined on its own (views are not a sequence: independent noise)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for render in renders:
        h, w = render.shape[-2:]
        noise = torch.randn((1, *model.noise_shape(h, w)), generator=generator)
        out.append(model.refine(render[None], torch.full((1, 1, h, w), strength), noise, steps)[0])
    return out


def bench_capture(name: str, args: argparse.Namespace) -> dict:
    data = args.data / name
    work = args.work / name
    print(f"== {name}: reconstruction ({args.recon_steps} steps)", flush=True)
    recon = reconstruct(data, work / "scene", args.recon_steps, args.threads)
    scene = read_gaussians(work / "scene" / "scene.ply")
    renders, targets, names = held_out(scene, data)
    before = score(renders, targets, names)
    print(f"   unrefined: PSNR {before.mean_psnr:.3f} dB, SSIM {before.mean_ssim:.4f} on {len(names)} views", flush=True)

    print(f"== {name}: training pairs and the built-in refiner ({args.refiner_steps} steps)", flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    train_set = load_dataset(data, "train")
    pairs = make_pairs(scene, train_set, PairSettings(views=args.pair_views), early=early_reconstructions(work / "scene"),
                       seed=0)
    pair_seconds = time.perf_counter() - t0
    settings = TrainSettings(max_steps=args.refiner_steps, max_minutes=args.refiner_minutes, seed=0)
    model, figures = train_refiner(pairs, work / "refiner", work / "refiner-training", settings, resume=False)
    train_seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0

    results = {}
    for strength in args.strength:
        for steps in args.steps:
            t_refine = time.perf_counter()
            refined = refine_views(model, renders, strength, steps, seed=1)
            seconds_per_view = (time.perf_counter() - t_refine) / len(renders)
            after = score(refined, targets, names)
            results[f"strength_{strength:g}_steps_{steps}"] = {
                "strength": strength, "steps": steps, "psnr": after.mean_psnr, "ssim": after.mean_ssim,
                "psnr_gain": after.mean_psnr - before.mean_psnr, "ssim_gain": after.mean_ssim - before.mean_ssim,
                "seconds_per_view": seconds_per_view}
            print(f"   refined (strength {strength:g}, {steps} step{'s' if steps > 1 else ''}): "
                  f"PSNR {after.mean_psnr:.3f} dB ({after.mean_psnr - before.mean_psnr:+.3f}), "
                  f"SSIM {after.mean_ssim:.4f} ({after.mean_ssim - before.mean_ssim:+.4f}), "
                  f"{seconds_per_view:.2f} s/view", flush=True)
    return {
        "capture": name, "held_out_views": len(names),
        "reconstruction": {k: recon.get(k) for k in ("steps", "gaussians", "train_seconds", "reused")},
        "unrefined": {"psnr": before.mean_psnr, "ssim": before.mean_ssim},
        "refined": results,
        "refiner": {"pairs": len(pairs), "pair_seconds": pair_seconds, "steps": figures["steps"],
                    "train_seconds_total": train_seconds, "cpu_seconds_total": cpu_seconds,
                    "loss_ema": figures["loss_ema"], "patch": figures["patch"],
                    "settings": {"channels": list(settings.channels), "batch": settings.batch, "lr": settings.lr}},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="the reference captures")
    parser.add_argument("--captures", nargs="+", default=["lego_200", "fern"])
    parser.add_argument("--recon-steps", type=int, default=600, help="steps of the under-trained reconstruction")
    parser.add_argument("--refiner-minutes", type=float, default=10.0, help="wall-time cap on the refiner's training")
    parser.add_argument("--refiner-steps", type=int, default=800, help="steps of the refiner's training")
    parser.add_argument("--pair-views", type=int, default=64, help="training views rendered for pairs")
    parser.add_argument("--strength", type=float, nargs="+", default=[0.3, 1.0], help="strengths to evaluate")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4], help="DDIM steps to evaluate")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a busy shared machine)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "splatfx-bench-refine",
                        help="reconstructions and models (kept: a second run reuses the reconstructions)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    figures = {"captures": [bench_capture(name, args) for name in args.captures]}
    figures.update({"wall_seconds": time.perf_counter() - t0, "threads": args.threads,
                    "load_before": load_before, "load_after": os.getloadavg()})
    print(f"load average before {load_before[0]:.1f}, after {figures['load_after'][0]:.1f} (2 cores)")
    failed = [c["capture"] for c in figures["captures"]
              if not all(r["psnr_gain"] > 0 and r["ssim_gain"] > 0 for r in c["refined"].values())]
    figures["improved_everywhere"] = not failed
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if failed:
        print(f"the refiner did not improve both PSNR and SSIM on: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
