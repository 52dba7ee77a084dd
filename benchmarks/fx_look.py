"""Benchmark: the cost of the lit dust, debris and snow, per frame, on a finished shot.

Times, on a shot whose ``fx collapse`` and ``fx snow`` have run (e.g. a copy of the demo
shot): the key-light estimate, the dust and debris simulations, baking the light into
them, the snow simulation with and without the plate cameras' lens, and the render of
one frame's passes with and without each particle element (the difference is that
element's render cost). Prints a table in seconds.

    python benchmarks/fx_look.py --shot DIR [--frames 1016,1024]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from splatfx.fx.animation import RigidCache, load_animation, load_frame, load_scene, load_selection
from splatfx.fx.debris import DebrisSettings, DustSettings, light_collapse, simulate_debris, simulate_dust
from splatfx.fx.snow import HeightMap, Volume, simulate_snow
from splatfx.fx.stage import dust_lifetimes, key_light, snow_lens, snow_settings, world_means
from splatfx.render.passes import render_passes
from splatfx.render.stage import output_size, shot_cameras
from splatfx.shot.folder import Shot


def lap(table: dict[str, float], name: str, t0: float) -> float:
    now = time.perf_counter()
    table[name] = now - t0
    return now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shot", required=True)
    parser.add_argument("--frames", default="1016,1024", help="frames whose render is timed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shot = Shot.open(args.shot)
    section = shot.config.fx.collapse
    frames = len(shot.frames)
    scene, frame = load_scene(shot), load_frame(shot)
    selected = load_selection(shot, len(scene))
    data = dict(np.load(shot.fx_dir / "collapse.npz"))
    cache = RigidCache.from_arrays({k[len("rigid."):]: v for k, v in data.items() if k.startswith("rigid.")})
    points = world_means(scene, frame)[selected]
    colours = scene.sh[torch.from_numpy(selected), 0].double().numpy()
    labels = data["labels"][:len(points)]
    table: dict[str, float] = {}
    t = time.perf_counter()
    light = key_light(shot, scene, frame)
    t = lap(table, "key light estimate (once)", t)
    debris = simulate_debris(cache, points, labels, colours,
                             DebrisSettings(count=section.debris, size=section.debris_size,
                                            size_max=section.debris_size_max, exponent=section.debris_exponent))
    t = lap(table, "debris simulation", t)
    height = float(np.percentile(points[:, 2], 98))
    dust = simulate_dust(cache, points, labels, colours, DustSettings(count=section.dust, height=height,
                                                                      opacity=section.dust_opacity,
                                                                      lifetime=dust_lifetimes(section.dust_lifetime)))
    t = lap(table, "dust simulation", t)
    light_collapse(debris, dust, light)
    t = lap(table, "light baked into dust and debris", t)
    opaque = scene.opacities.numpy() > 0.5
    surface = world_means(scene, frame)[opaque]
    volume = Volume.around(surface)
    heights = HeightMap(surface, volume, max(float(np.ptp(surface[:, :2], axis=0).max()) / 256.0, 0.02))
    simulate_snow(frames, shot.config.shot.fps, volume, heights, snow_settings(shot.config.fx.snow))
    t = lap(table, "snow simulation (no lens)", t)
    simulate_snow(frames, shot.config.shot.fps, volume, heights, snow_settings(shot.config.fx.snow),
                  lens=snow_lens(shot, shot.config.fx.snow, frame, volume))
    lap(table, "snow simulation with the lens", t)
    print(f"{frames} frames; {section.dust} dust puffs, {section.debris} debris chips, {dust.count} dust emitted")
    for name, seconds in table.items():
        per = "" if "once" in name else f"  ({1000 * seconds / frames:.1f} ms/frame)"
        print(f"{name:40s} {seconds:7.2f} s{per}")

    animation = load_animation(shot)
    cameras = shot_cameras(shot, output_size(shot))
    render_passes(animation.at(0), cameras[0])  # warm up
    for number in (int(f) for f in args.frames.split(",")):
        index = number - shot.frames.start
        timings = {}
        for drop in (None, "dust", "debris", "snow"):
            kept = {k: v for k, v in animation.particles.items() if k != drop}
            view = type(animation)(animation.scene, animation.frame, animation.frames, animation.fps,
                                   animation.removed, animation.fragments, kept)
            gaussians = view.at(index)
            t = time.perf_counter()
            for _ in range(5):
                render_passes(gaussians, cameras[index])
            timings[drop] = (time.perf_counter() - t) / 5
        parts = ", ".join(f"{k} {1000 * (timings[None] - timings[k]):.0f} ms" for k in ("dust", "debris", "snow"))
        print(f"render frame {number}: all {1000 * timings[None]:.0f} ms; of which {parts}")


if __name__ == "__main__":
    main()
