"""Benchmark of ``splatfx train`` on the reference captures, on a small CPU machine.

Usage::

    python benchmarks/train.py [--only lego|fern] [--quick] [--json FILE] [--out DIR]

Each case runs ``splatfx train`` in a fresh process (so the peak resident memory is that
run's alone) with the settings below, then reads the run's ``metrics.json``:

- ``lego``: lego_200, white background, trained on the 100 train views at 200×200 and
  scored on all 200 test views; time budget 15 minutes of training.
- ``fern``: fern at 504×378 (``images_8``), every 8th image held out (LLFF protocol), points
  from the COLMAP model; time budget 20 minutes.

Printed per case: test PSNR/SSIM, training time, steps, seconds per step, the final number
of Gaussians and peak memory, plus the load average before and after (the machine may be
shared). ``--quick`` runs each case for 2 minutes only, to check the script.
"""

from __future__ import annotations

import argparse
import json
import os
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


def table(results: list[dict]) -> str:
    head = ("| case | test PSNR (dB) | SSIM | train time | steps | s/step | Gaussians | peak memory | load |\n"
            "|---|---|---|---|---|---|---|---|---|")
    rows = [
        f"| {r['case']} | {r['test_psnr']:.2f} (target ≥ {r['target_psnr']:g}) | {r['test_ssim']:.4f} | "
        f"{r['train_seconds'] / 60:.1f} min | {r['steps']} | {r['s_per_step']:.3f} | {r['gaussians']:,} | "
        f"{r['peak_memory_mb']:.0f} MiB | {r['load_before']:.1f} → {r['load_after']:.1f} |"
        for r in results
    ]
    return "\n".join([head, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=[c.name for c in CASES], help="Run one case.")
    parser.add_argument("--quick", action="store_true", help="2 minutes per case (checks the script, not the target).")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    parser.add_argument("--out", type=Path, help="Keep the trained scenes here (default: a temporary folder).")
    args = parser.parse_args()
    cases = [c for c in CASES if args.only in (None, c.name)]
    results = []
    with tempfile.TemporaryDirectory(prefix="splatfx-bench-train-") as tmp:
        root = args.out or Path(tmp)
        for case in cases:
            result = run_case(case, root / case.name, 2.0 if args.quick else case.minutes)
            results.append(result)
            print(f"{case.name}: {result['command']}", flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
