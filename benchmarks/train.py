"""Benchmark of ``splatfx train`` on the reference captures, on a small CPU machine.

Usage::

    python benchmarks/train.py [--only lego|fern|south_building] [--budgets 2.5,10,20] [--step-ratio]
                               [--json FILE] [--out DIR]
    python benchmarks/train.py --working-size [--capture DIR] [--json FILE]

Each case trains at each time budget (minutes) with ``splatfx train --max-minutes M`` and
**no other flag**: the recipe a CPU picks by itself (:mod:`splatfx.recon.recipe`: the 3DGS
schedule laid over the budget, a Gaussian cap the budget affords, the working size it buys).
Every run is a fresh process (so the peak resident memory is that run's alone); the figures
come from its ``metrics.json``:

- ``lego``: lego_200, white background, trained on the 100 train views at 200×200 and
  scored on all 200 test views (issue #20's target: 33 dB in 10 minutes).
- ``fern``: fern at 504×378 (``images_8``), every 8th image held out (LLFF protocol), points
  from the COLMAP model.
- ``south_building``: end to end as a user runs it: ``splatfx init`` on the 128 photos
  (768×576), ``splatfx solve`` once (cameras from the photos alone; its wall and CPU time are
  reported), then ``splatfx train`` on the solve at each budget with every 8th plate held out
  (``[train] holdout_every = 8``; issue #20's target: 23 dB in 20 minutes).

Printed per run: held-out PSNR/SSIM, steps, steps per second, the working size, the final
number of Gaussians and peak memory, plus the load average before and after (the machine
may be shared). ``--step-ratio`` also times a training step against the rasterizer's own
forward + backward at the same Gaussians and size (``benchmarks/train_step.py``'s
measurement, on south_building_full's plates at the demo's size and at 774×578).

``--working-size`` measures the cost model behind ``[train] downscale = "auto"``
(:mod:`splatfx.recon.working_size`): seconds per training step at long sides of 384 to
3072 px and 20k to 180k Gaussians on south_building_full's 12-MP plates, and the seconds
to decode a plate at each size; then the least-squares fit of
``fixed + per_mpx·megapixels + per_100k·Gaussians/100k`` beside the constants in use.
``--capture`` names a solved capture of those plates (else they are solved first, ~5 min).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPLATFX_DATA", REPO.parent / "shared" / "data"))


@dataclass(frozen=True)
class Case:
    name: str
    data: str
    targets: dict[float, float]  # minutes -> the PSNR issue #20 asks for at that budget
    end_to_end: bool = False  # solve the photos first, as a user would


CASES = (
    Case("lego", "lego_200", {10.0: 33.0}),
    Case("fern", "fern", {}),
    Case("south_building", "south_building", {20.0: 23.0}, end_to_end=True),
)
BUDGETS = (2.5, 10.0, 20.0)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from splatfx.cli import main; main()", *args]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_logged(cmd: list[str], log: Path, what: str) -> None:
    with open(log, "a") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "120"})
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}); see {log}")


def solve_shot(case: Case, out: Path) -> tuple[Path, dict]:
    """South Building from its photos alone: init and solve, every 8th plate held out for training."""
    shot = out / "shot"
    log = out / "solve.log"
    out.mkdir(parents=True, exist_ok=True)
    _run_logged(_cli("init", str(shot), "--plates", str(DATA / case.data / "images"), "--force"), log, "init")
    toml = shot / "shot.toml"
    toml.write_text(re.sub(r"(?m)^holdout_every = .*$", "holdout_every = 8", toml.read_text()))
    cpu0, t0 = _children_cpu(), time.perf_counter()
    _run_logged(_cli("solve", str(shot), "--force"), log, "splatfx solve")
    report = json.loads((shot / "solve" / "report.json").read_text())
    return shot, {"wall_seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(_children_cpu() - cpu0, 1),
                  "registered": f"{report.get('images_registered')}/{report.get('images_total')}",
                  "reprojection_px": round(report.get("mean_reprojection_error_px") or 0.0, 3)}


def run_budget(case: Case, minutes: float, out: Path, shot: Path | None) -> dict:
    """Train ``case`` for ``minutes`` with no other flag, in a subprocess; its metrics, wall time and load."""
    if shot is not None:
        args = ["train", str(shot), "--force", "--max-minutes", f"{minutes:g}"]
        metrics_path = shot / "scene" / "metrics.json"
    else:
        args = ["train", "--data", str(DATA / case.data), "--out", str(out), "--max-minutes", f"{minutes:g}"]
        metrics_path = out / "metrics.json"
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    _run_logged(_cli(*args), out / "train.log", f"{case.name}: splatfx train")
    metrics = json.loads(metrics_path.read_text())
    metrics.pop("per_view", None)
    metrics.update(case=case.name, minutes=minutes, command="splatfx " + " ".join(args),
                   wall_seconds=time.perf_counter() - t0, load_before=load_before, load_after=os.getloadavg()[0],
                   target_psnr=case.targets.get(minutes))
    return metrics


def _target(result: dict) -> str:
    return f" (target ≥ {result['target_psnr']:g})" if result.get("target_psnr") else ""


def _at_mean_exposure(result: dict) -> str:
    """The held-out PSNR without the plates' own exposure ("-" where none was learnt)."""
    value = result.get("test_psnr_at_mean_exposure")
    return "-" if value is None else f"{value:.2f}"


def table(results: list[dict]) -> str:
    head = ("| case | budget | held-out PSNR (dB) | at the mean exposure | SSIM | steps | steps/s | working size "
            "| Gaussians | peak memory | load |\n|---|---:|---|---:|---:|---:|---:|---|---:|---:|---|")
    rows = [
        f"| {r['case']} | {r['minutes']:g} min | {r['test_psnr']:.2f}{_target(r)} | "
        f"{_at_mean_exposure(r)} | {r['test_ssim']:.4f} | "
        f"{r['steps']:,} | {r['steps'] / r['train_seconds']:.1f} | "
        f"{'x'.join(map(str, r['working_size']['size']))} | {r['gaussians']:,} | "
        f"{r['peak_memory_mb']:.0f} MiB | {r['load_before']:.1f} → {r['load_after']:.1f} |"
        for r in results
    ]
    solves = [f"{r['case']} solve: {r['solve']['registered']} registered, {r['solve']['reprojection_px']} px, "
              f"{r['solve']['wall_seconds']:.0f} s wall, {r['solve']['cpu_seconds']:.0f} s CPU"
              for r in results if "solve" in r]
    return "\n".join([head, *rows, *dict.fromkeys(solves)])


def step_ratios(root: Path, capture: Path | None) -> list[dict]:
    """A training step against the rasterizer's forward + backward (benchmarks/train_step.py's measurement)."""
    from train_step import profile

    capture = capture or _solved_full(root / "full")
    return [profile(capture, downscale, warmup=500, steps=100) for downscale in (8.0, 4.0)]


WS_SIDES = (384, 768, 1536, 3072)
WS_GAUSSIANS = (20_000, 60_000, 180_000)


def _solved_full(root: Path) -> Path:
    """south_building_full's 24 plates solved as a user would (init + solve); returns the solve folder."""
    shot = root / "shot"
    log = root / "solve.log"
    root.mkdir(parents=True, exist_ok=True)
    _run_logged(_cli("init", str(shot), "--plates", str(DATA / "south_building_full" / "images"), "--force"),
                log, "init")
    _run_logged(_cli("solve", str(shot), "--force"), log, "splatfx solve")
    return shot / "solve"


def _gaussians_near_points(points, count: int, seed: int = 0):
    """``count`` Gaussians spread around the capture's SfM points (jittered copies, sized by their neighbours)."""
    import numpy as np

    from splatfx.recon.train import TrainConfig, init_from_points

    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(points), count)
    spread = np.percentile(np.linalg.norm(points.xyz - np.median(points.xyz, axis=0), axis=1), 50) * 0.01
    xyz = points.xyz[pick] + rng.normal(0, spread, (count, 3)).astype(np.float32)
    return init_from_points(xyz, points.rgb[pick].astype(np.float32) / 255.0, TrainConfig(init_opacity=0.5))


def measure_step_costs(capture: Path, steps: int = 3) -> list[dict]:
    """Seconds per training step at each long side and Gaussian count, and the decode time per plate."""
    import torch

    from splatfx.io.dataset import load_dataset
    from splatfx.recon.train import TrainConfig, Trainer, make_optimizer, params_from_gaussians

    plates = load_dataset(capture, "train", holdout_every=0)
    w, h = plates.frames[0].source_size
    rows = []
    for count in WS_GAUSSIANS:
        gaussians = _gaussians_near_points(plates.points, count)
        for side in WS_SIDES:
            factor = max(w, h) / side
            views = plates.downscaled(factor) if factor != 1 else plates
            t0 = time.perf_counter()
            for i in range(steps + 1):
                views.image(i)  # decode the views the steps use, timed apart from the steps
            decode = (time.perf_counter() - t0) / (steps + 1)
            config = TrainConfig(downscale=factor, max_steps=100_000, strategy="mcmc", max_gaussians=count,
                                 progress=False, eval_split=None, checkpoint_every=10**9)
            trainer = Trainer(capture, Path(tempfile.mkdtemp(prefix="splatfx-ws-")), config, dataset=views)
            trainer.params = params_from_gaussians(gaussians, config.sh_degree, trainer.device)
            trainer.optimizer = make_optimizer(trainer.params, config, trainer.extent)
            trainer.state = trainer.strategy.initial_state(count, trainer.extent)
            trainer.step = 50_001  # past the SH warm-up (degree 3), between two refinements
            trainer.train_step()  # warm-up: kernels, allocations
            t0 = time.perf_counter()
            for _ in range(steps):
                trainer.train_step()
            seconds = (time.perf_counter() - t0) / steps
            size = views.cameras[0].width, views.cameras[0].height
            rows.append({"size": f"{size[0]}x{size[1]}", "megapixels": size[0] * size[1] / 1e6, "gaussians": count,
                         "s_per_step": seconds, "decode_s": decode, "load": os.getloadavg()[0]})
            print(f"{rows[-1]['size']:>10} {count:>8,} G  {seconds:7.3f} s/step  decode {decode:.2f} s  "
                  f"load {rows[-1]['load']:.1f}", flush=True)
            del trainer
            torch.set_num_threads(1)
    return rows


def fit_step_cost(rows: list[dict]) -> dict[str, float]:
    """Least-squares ``fixed + per_mpx·MP + per_100k·G/100k`` over the measured rows."""
    import numpy as np

    a = np.array([[1.0, r["megapixels"], r["gaussians"] / 1e5] for r in rows])
    b = np.array([r["s_per_step"] for r in rows])
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    return {"fixed": float(coef[0]), "per_mpx": float(coef[1]), "per_100k": float(coef[2])}


def working_size_table(rows: list[dict]) -> str:
    from splatfx.recon.working_size import CPU_COST

    head = "| size | Gaussians | s/step measured | s/step model | decode s/plate | load |\n|---|---|---|---|---|---|"
    body = [f"| {r['size']} | {r['gaussians']:,} | {r['s_per_step']:.3f} | "
            f"{CPU_COST.step_seconds(round(r['megapixels'] * 1e6), r['gaussians']):.3f} | {r['decode_s']:.2f} | "
            f"{r['load']:.1f} |" for r in rows]
    fit = fit_step_cost(rows)
    return "\n".join([head, *body, "fit: " + ", ".join(f"{k} {v:.4f}" for k, v in fit.items())])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=[c.name for c in CASES], help="Run one case.")
    parser.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS),
                        help="Training budgets in minutes, comma-separated (default: 2.5,10,20).")
    parser.add_argument("--step-ratio", action="store_true",
                        help="Also time a step against the rasterizer's forward + backward.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    parser.add_argument("--out", type=Path, help="Keep the trained scenes here (default: a temporary folder).")
    parser.add_argument("--working-size", action="store_true", help="Measure the working-size cost model instead.")
    parser.add_argument("--capture", type=Path, help="A solve of south_building_full to reuse "
                                                      "(--working-size, --step-ratio).")
    args = parser.parse_args()
    if args.working_size:
        with tempfile.TemporaryDirectory(prefix="splatfx-bench-ws-") as tmp:
            rows = measure_step_costs(args.capture or _solved_full(Path(tmp)))
        print(working_size_table(rows))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
        return
    budgets = [float(b) for b in args.budgets.split(",")]
    results: list[dict] = []
    ratios: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="splatfx-bench-train-") as tmp:
        root = args.out or Path(tmp)
        for case in (c for c in CASES if args.only in (None, c.name)):
            shot, solve = solve_shot(case, root / case.name) if case.end_to_end else (None, None)
            for minutes in budgets:
                result = run_budget(case, minutes, root / case.name / f"{minutes:g}min", shot)
                if solve:
                    result["solve"] = solve
                results.append(result)
                print(f"{case.name}, {minutes:g} min: {result['test_psnr']:.2f} dB, {result['steps']:,} steps "
                      f"({result['command']})", flush=True)
        if args.step_ratio:
            from train_step import table as ratio_table

            ratios = step_ratios(root, args.capture)
            print(ratio_table(ratios))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "step_ratio": ratios}, indent=2) + "\n")


if __name__ == "__main__":
    main()
