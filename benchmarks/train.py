"""Benchmark of ``splatfx train`` on the reference captures, on a small CPU machine.

Usage::

    python benchmarks/train.py [--only lego|fern|south_building] [--quick] [--json FILE] [--out DIR]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=[c.name for c in (*CASES, SOUTH_BUILDING)], help="Run one case.")
    parser.add_argument("--quick", action="store_true", help="2 minutes per case (checks the script, not the target).")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    parser.add_argument("--out", type=Path, help="Keep the trained scenes here (default: a temporary folder).")
    args = parser.parse_args()
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
