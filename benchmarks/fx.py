"""Benchmark: collapse of a real reconstructed building.

Fractures the selection of a shot (e.g. the demo shot of South Building: run
``splatfx demo --out DIR`` first) into 200 fragments and simulates 120 frames at 24 fps
(MuJoCo rigid bodies, debris, dust), then evaluates the animation per frame. Prints the
time of each step, the Gaussians per frame and the peak memory. Target: simulation under
60 s on 2 cores.

    python benchmarks/fx.py --shot DIR [--fragments 200] [--frames 120]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from splatfx.fx.animation import ELEMENTS, Fragments, ShotAnimation, load_frame, load_scene, load_selection
from splatfx.fx.debris import DebrisSettings, DustSettings, simulate_debris, simulate_dust
from splatfx.fx.fracture import fill_fracture_faces, voronoi_fracture
from splatfx.fx.rigid import CollapseSettings, simulate_collapse
from splatfx.fx.stage import world_means
from splatfx.shot.folder import Shot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shot", required=True, help="a shot folder with scene.ply, scene.json and fx/selection.npz")
    parser.add_argument("--fragments", type=int, default=200)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--fps", type=float, default=24.0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    shot = Shot.open(args.shot)
    scene, frame, selected = load_scene(shot), load_frame(shot), load_selection(shot)
    points = world_means(scene[selected], frame)
    colors = scene.sh[torch.from_numpy(selected), 0].double().numpy()
    timings = {}

    t = time.perf_counter()
    fracture = voronoi_fracture(points, args.fragments, seed=0)
    fill = fill_fracture_faces(points, colors, fracture, max_count=60_000)
    timings["fracture + fill"] = time.perf_counter() - t
    all_points = np.concatenate([points, fill.points])
    labels = np.concatenate([fracture.labels, fill.labels])
    all_colors = np.concatenate([colors, fill.colors_dc])

    t = time.perf_counter()
    cache = simulate_collapse(all_points, labels, fracture.count, args.frames, args.fps,
                              CollapseSettings(trigger="demolition", trigger_frame=12))
    timings["rigid bodies (MuJoCo)"] = time.perf_counter() - t
    t = time.perf_counter()
    debris = simulate_debris(cache, all_points, labels, all_colors, DebrisSettings())
    dust = simulate_dust(cache, all_points, labels, all_colors, DustSettings())
    timings["debris + dust"] = time.perf_counter() - t
    simulation = sum(timings.values())

    element = np.full(len(selected), ELEMENTS["fragment"], np.int8)
    animation = ShotAnimation(scene, frame, args.frames, args.fps, removed=selected,
                              fragments=Fragments(scene[selected], fracture.labels, element, selected, cache),
                              particles={"debris": debris, "dust": dust})
    t = time.perf_counter()
    counts = [len(animation.at(i).gaussians) for i in range(0, args.frames, 10)]
    per_frame = (time.perf_counter() - t) / len(counts)

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scene {len(scene)} Gaussians, selection {len(selected)}, {fracture.count} fragments, "
          f"{len(fill.points)} fill Gaussians, {args.frames} frames at {args.fps:g} fps")
    for name, seconds in timings.items():
        print(f"  {name:<24} {seconds:8.2f} s")
    print(f"  {'simulation total':<24} {simulation:8.2f} s   (target < 60 s)")
    print(f"  {'animation per frame':<24} {per_frame:8.2f} s   (fragments without fill, debris, dust)")
    print(f"Gaussians per frame: {min(counts)}..{max(counts)}; events: "
          f"{sum(e['kind'] == 'break' for e in cache.events)} breaks, "
          f"{sum(e['kind'] == 'impact' for e in cache.events)} ground impacts; peak memory {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
