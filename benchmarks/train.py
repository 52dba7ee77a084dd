"""Benchmark of ``splatfx train`` on the reference captures, on a small CPU machine.

Usage::

    python benchmarks/train.py [--only lego|fern|south_building] [--quick] [--json FILE] [--out DIR]
    python benchmarks/train.py --working-size [--capture DIR] [--json FILE]

Each case runs ``splatfx train`` in a fresh process (so the peak resident memory is that
run's alone) with the settings below, then reads the run's ``metrics.json``:

- ``lego``: lego_200, white background, trained on the 100 train views at 200×200 and
  scored on all 200 test views; time budget 15 minutes of training.
- ``fern``: fern at 504×378 (``images_8``), every 8th image held out (LLFF protocol), points
  from the COLMAP model; time budget 20 minutes.
- ``south_building``: end to end as a user runs it: ``splatfx init`` on the 128 photos
  (768×576), ``splatfx solve`` (cameras from the photos alone), ``splatfx train`` on the
  solve with every 8th plate held out (``[train] holdout_every = 8``), trained at half size
  (384×288); time budget 20 minutes. The solve's wall and CPU time are reported beside it.

Printed per case: test PSNR/SSIM, training time, steps, seconds per step, the final number
of Gaussians and peak memory, plus the load average before and after (the machine may be
shared). ``--quick`` runs each case for 2 minutes only, to check the script.

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
    minutes: float
    args: tuple[str, ...]
    target_psnr: float


CASES = (
    Case("lego", "lego_200", 15.0, (
        "--max-steps", "5000", "--strategy", "mcmc", "--max-gaussians", "40000", "--random-points", "15000",
    ), 30.0),
    Case("fern", "fern", 20.0, (
        "--max-steps", "3000", "--strategy", "mcmc", "--max-gaussians", "50000",
    ), 23.0),
)


SOUTH_BUILDING = Case("south_building", "south_building", 20.0, (
    "--max-steps", "4000", "--strategy", "mcmc", "--max-gaussians", "60000", "--downscale", "2", "--sh-degree", "2",
), 0.0)


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


def run_end_to_end(case: Case, out: Path, minutes: float) -> dict:
    """South Building from its photos alone: init, solve, train with every 8th plate held out."""
    shot = out / "shot"
    log = out / "run.log"
    out.mkdir(parents=True, exist_ok=True)
    _run_logged(_cli("init", str(shot), "--plates", str(DATA / case.data / "images"), "--force"), log, "init")
    toml = shot / "shot.toml"
    toml.write_text(re.sub(r"(?m)^holdout_every = .*$", "holdout_every = 8", toml.read_text()))
    load_before = os.getloadavg()[0]
    cpu0, t0 = _children_cpu(), time.perf_counter()
    _run_logged(_cli("solve", str(shot), "--force"), log, "splatfx solve")
    solve_wall, solve_cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    report = json.loads((shot / "solve" / "report.json").read_text())
    t0 = time.perf_counter()
    _run_logged(_cli("train", str(shot), "--force", "--max-minutes", str(minutes), *case.args), log, "splatfx train")
    metrics = json.loads((shot / "scene" / "metrics.json").read_text())
    metrics.pop("per_view", None)
    metrics.update(case=case.name, command=f"splatfx solve SHOT; splatfx train SHOT --max-minutes {minutes:g} "
                   + " ".join(case.args), wall_seconds=time.perf_counter() - t0, load_before=load_before,
                   load_after=os.getloadavg()[0], target_psnr=case.target_psnr,
                   solve={"wall_seconds": round(solve_wall, 1), "cpu_seconds": round(solve_cpu, 1),
                          "registered": f"{report.get('images_registered')}/{report.get('images_total')}",
                          "reprojection_px": round(report.get("mean_reprojection_error_px") or 0.0, 3)})
    return metrics


def run_case(case: Case, out: Path, minutes: float) -> dict:
    """Train one case in a subprocess; returns its metrics plus wall time and load."""
    cmd = [sys.executable, "-c", "from splatfx.cli import main; main()", "train", "--data", str(DATA / case.data),
           "--out", str(out), "--max-minutes", str(minutes), *case.args]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "120"})
    if proc.returncode != 0:
        raise SystemExit(f"{case.name}: splatfx train failed (exit {proc.returncode}); see {log}")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("per_view", None)
    metrics.update(case=case.name, command=" ".join(["splatfx", *cmd[3:]]), wall_seconds=time.perf_counter() - t0,
                   load_before=load_before, load_after=os.getloadavg()[0], target_psnr=case.target_psnr)
    return metrics


def _target(result: dict) -> str:
    return f" (target ≥ {result['target_psnr']:g})" if result["target_psnr"] else " (report only)"


def table(results: list[dict]) -> str:
    head = ("| case | test PSNR (dB) | SSIM | train time | steps | s/step | Gaussians | peak memory | load |\n"
            "|---|---|---|---|---|---|---|---|---|")
    rows = [
        f"| {r['case']} | {r['test_psnr']:.2f}{_target(r)} | {r['test_ssim']:.4f} | "
        f"{r['train_seconds'] / 60:.1f} min | {r['steps']} | {r['s_per_step']:.3f} | {r['gaussians']:,} | "
        f"{r['peak_memory_mb']:.0f} MiB | {r['load_before']:.1f} → {r['load_after']:.1f} |"
        for r in results
    ]
    solves = [f"{r['case']} solve: {r['solve']['registered']} registered, {r['solve']['reprojection_px']} px, "
              f"{r['solve']['wall_seconds']:.0f} s wall, {r['solve']['cpu_seconds']:.0f} s CPU"
              for r in results if "solve" in r]
    return "\n".join([head, *rows, *solves])


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
    parser.add_argument("--only", choices=[c.name for c in (*CASES, SOUTH_BUILDING)], help="Run one case.")
    parser.add_argument("--quick", action="store_true", help="2 minutes per case (checks the script, not the target).")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    parser.add_argument("--out", type=Path, help="Keep the trained scenes here (default: a temporary folder).")
    parser.add_argument("--working-size", action="store_true", help="Measure the working-size cost model instead.")
    parser.add_argument("--capture", type=Path, help="--working-size: a solve of south_building_full to reuse.")
    args = parser.parse_args()
    if args.working_size:
        with tempfile.TemporaryDirectory(prefix="splatfx-bench-ws-") as tmp:
            rows = measure_step_costs(args.capture or _solved_full(Path(tmp)))
        print(working_size_table(rows))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
        return
    cases = [c for c in (*CASES, SOUTH_BUILDING) if args.only in (None, c.name)]
    results = []
    with tempfile.TemporaryDirectory(prefix="splatfx-bench-train-") as tmp:
        root = args.out or Path(tmp)
        for case in cases:
            run = run_end_to_end if case is SOUTH_BUILDING else run_case
            result = run(case, root / case.name, 2.0 if args.quick else case.minutes)
            results.append(result)
            print(f"{case.name}: {result['command']}", flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
