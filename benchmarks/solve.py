"""Benchmark of the camera solve ``splatfx.recon.solve.solve_images`` on south_building.

Usage::

    python benchmarks/solve.py [--images DIR] [--threads N] [--out DIR] [--json FILE]

Solves the 128 South Building photos (768×576 JPEG) with the default settings (exhaustive
matching of every pair, SIFT on the CPU, one shared SIMPLE_RADIAL camera, undistortion to
PINHOLE, orientation) and prints the registered count, the mean reprojection error, the
number of 3D points, the wall time of each step, and the load average before and after with the
process's CPU time: on a shared machine other processes inflate the wall time, while CPU time
divided by the threads is what the solve would take on idle cores at best. Target: at least
120 of 128 images registered in under 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

from splatfx.shot.scene_frame import SceneFrame
from splatfx.recon.solve import SolveConfig, solve_images
from splatfx.shot.folder import SCENE_JSON

REPO = Path(__file__).resolve().parents[1]
TARGET_REGISTERED = 120
TARGET_SECONDS = 300.0


def default_images() -> Path:
    data = Path(os.environ.get("SPLATFX_DATA", REPO.parent / "shared" / "data"))
    return data / "south_building" / "images"


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=default_images(), help="folder of photos to solve")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (0: every core)")
    parser.add_argument("--out", type=Path, default=None, help="keep the solve here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="splatfx-solve-bench-") as tmp:
        out = args.out or Path(tmp) / "solve"
        load_before = os.getloadavg()
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = solve_images(args.images, out, SolveConfig(num_threads=args.threads))
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
        load_after = os.getloadavg()
        scene = SceneFrame.load(out / SCENE_JSON)

    figures = {
        "images": str(args.images),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "images_total": report.images_total,
        "images_registered": report.images_registered,
        "unregistered": report.unregistered,
        "mean_reprojection_error_px": round(report.mean_reprojection_error_px, 4),
        "points3D": report.points3D,
        "mean_track_length": round(report.mean_track_length, 3),
        "matcher": report.matcher,
        "image_pairs": report.image_pairs,
        "features_per_image": report.features,
        "seconds": {**report.seconds, "wall": round(wall, 1), "cpu": round(cpu, 1)},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "up_source": scene.up_source,
        "camera_up_angle_deg": round(scene.camera_up_angle_deg, 2),
        "scale_m_per_unit": round(scene.scale, 4),
    }
    passed = report.images_registered >= TARGET_REGISTERED and wall < TARGET_SECONDS
    print(f"registered   {report.images_registered} / {report.images_total}")
    print(f"time         {wall:.1f} s  (" + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items()
                                                   if k != "total") + ")")
    print(f"cpu          {cpu:.1f} s of CPU time: {cpu / max(args.threads, 1):.1f} s on {args.threads} idle cores at best")
    print(f"reprojection {report.mean_reprojection_error_px:.3f} px mean")
    print(f"points       {report.points3D} (mean track length {report.mean_track_length:.2f})")
    print(f"matching     {report.matcher}, {report.image_pairs} pairs, {report.features} features per image")
    print(f"orientation  up from {scene.up_source} ({scene.camera_up_angle_deg:.1f}° from the cameras' mean up), "
          f"{scene.scale:.3g} m per unit")
    print(f"load average {figures['load_average_before'][0]} before, {figures['load_average_after'][0]} after "
          f"({os.cpu_count()} cores; other processes inflate the time)")
    for warning in caught:
        print(f"warning: {warning.message}")
    print(f"target       >= {TARGET_REGISTERED} registered in < {TARGET_SECONDS:.0f} s: {'met' if passed else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
