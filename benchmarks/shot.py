"""Benchmark of the shot ``render`` and ``comp`` stages on a 48-frame collapse shot.

Usage::

    python benchmarks/shot.py [--work DIR] [--frames 48] [--per-point 10] [--threads 2] [--json FILE]

The shot: the first 48 photos of ``south_building`` (768×576 JPEG, real plates) as a
plate sequence; their cameras solved by ``splatfx solve`` (SIMPLE_RADIAL lens, so renders
go through the distortion warp); the scene: Gaussians grown from that solve's sparse points
(no trained reconstruction of south_building exists yet): each point seen in ≥ 3 images
becomes ``--per-point`` Gaussians jittered by half its nearest-neighbour distance (capped at
the 75th percentile), anisotropic scales of 0.4× that distance, SH degree 3 with the point
colour as DC. A box around the
middle of the building (world frame) is selected and collapsed with ``splatfx fx collapse``
(demolition, fill Gaussians, debris and dust). The solve and the fx caches are made once
and kept in ``--work`` (the solve takes about 5 minutes on 2 cores); only ``render`` and
``comp`` are timed, both forced to redo every frame, with their per-pass breakdown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPLATFX_DATA", REPO.parent / "shared" / "data"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/splatfx-bench-shot"), help="kept between runs")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--per-point", type=int, default=10, help="Gaussians per sparse point")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for numba and torch")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def make_shot(work: Path, frames: int):
    """The shot folder with plates, solve, scene and selection (reused when present)."""
    from splatfx.shot.folder import Shot, create_shot
    from splatfx.recon.solve import run_orient, run_solve

    plates = work / "plates"
    plates.mkdir(parents=True, exist_ok=True)
    for src in sorted((DATA / "south_building" / "images").iterdir())[:frames]:
        if not (plates / src.name).exists():
            (plates / src.name).symlink_to(src)
    root = work / "shot"
    shot = Shot.open(root) if (root / "shot.toml").is_file() else create_shot(root, plates, fps=24.0)
    run_solve(shot)
    run_orient(shot)
    return Shot.open(root)


def grow_scene(shot, per_point: int, seed: int = 0) -> int:
    """scene/scene.ply: Gaussians grown from the solve's sparse points (see the module doc)."""
    import numpy as np
    import torch

    from splatfx.io.colmap import read_points3D
    from splatfx.io.formats import read_gaussians, write_gaussians
    from splatfx.core.gaussians import Gaussians
    from splatfx.core.sh import rgb_to_sh

    path = shot.scene_dir / "scene.ply"
    if path.is_file():
        return len(read_gaussians(path))
    points = read_points3D(shot.sparse_model / "points3D.bin")
    keep = points.track_lengths >= 3  # well-triangulated points only
    xyz = torch.tensor(np.ascontiguousarray(points.xyz[keep]), dtype=torch.float32)
    rgb = torch.tensor(np.ascontiguousarray(points.rgb[keep]), dtype=torch.float32) / 255.0
    nn = torch.cat([torch.cdist(xyz[i:i + 2048], xyz).topk(4, largest=False).values[:, 1:].mean(1)
                    for i in range(0, len(xyz), 2048)])
    nn = nn.clamp_max(torch.quantile(nn, 0.75))  # isolated points must not become huge blobs
    gen = torch.Generator().manual_seed(seed)
    parent = torch.arange(len(xyz)).repeat_interleave(per_point)
    n = len(parent)
    means = xyz[parent] + 0.5 * nn[parent, None] * torch.randn(n, 3, generator=gen)
    scales = 0.4 * nn[parent, None] * torch.exp(0.4 * torch.randn(n, 3, generator=gen))
    sh = torch.randn(n, 16, 3, generator=gen) * 0.05
    sh[:, 0] = rgb_to_sh(rgb[parent])
    g = Gaussians(means, torch.randn(n, 4, generator=gen), torch.log(scales), 1.0 * torch.randn(n, generator=gen) + 2.0,
                  sh)
    shot.scene_dir.mkdir(exist_ok=True)
    write_gaussians(g, path)
    return n


def configure_fx(shot) -> None:
    """A box around the middle of the building, collapsed by demolition (settings in shot.toml)."""
    import numpy as np

    from splatfx.io.colmap import read_points3D
    from splatfx.shot.config import config_from_dict, config_to_dict, save_config
    from splatfx.shot.scene_frame import SceneFrame

    frame = SceneFrame.load(shot.scene_json)
    world = frame.points_to_world(read_points3D(shot.sparse_model / "points3D.bin").xyz)
    above = world[world[:, 2] > 1.0]
    centre = np.median(above, axis=0)
    size = 0.4 * (np.percentile(above, 90, axis=0) - np.percentile(above, 10, axis=0))
    settings = config_to_dict(shot.config)
    settings["fx"] = {"effects": ["collapse"],
                      "select": {"shape": "box", "center": [float(centre[0]), float(centre[1]), float(size[2] / 2 + 1.0)],
                                 "size": [float(size[0]), float(size[1]), float(size[2] + 2.0)]},
                      "collapse": {"fragments": 60, "debris": 1500, "dust": 500, "fill_max": 20000, "substeps": 10}}
    settings["comp"] = {"outputs": ["exr", "png", "mp4"]}
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from splatfx.comp.stage import run_comp
    from splatfx.fx.stage import run_collapse, run_select
    from splatfx.render.stage import run_render
    from splatfx.shot.folder import Shot

    shot = make_shot(args.work, args.frames)
    gaussians = grow_scene(shot, args.per_point)
    configure_fx(shot)
    shot = Shot.open(shot.root)
    run_select(shot)
    run_collapse(shot)

    c0, t0 = time.process_time(), time.perf_counter()
    render = run_render(shot, force=True).value
    c1, t1 = time.process_time(), time.perf_counter()
    comp = run_comp(shot, force=True).value
    c2, t2 = time.process_time(), time.perf_counter()
    n = render["frames"]
    figures = {
        "shot": f"south_building first {n} photos, {render['size'][0]}x{render['size'][1]}, "
                f"{gaussians} scene Gaussians (up to {render['gaussians_max']} per frame with the effect)",
        "threads": args.threads, "frames": n,
        "render_s_per_frame": round((t1 - t0) / n, 3), "comp_s_per_frame": round((t2 - t1) / n, 3),
        "total_s_per_frame": round((t2 - t0) / n, 3), "fps": round(n / (t2 - t0), 3),
        "cpu_s_per_frame": {"render": round((c1 - c0) / n, 3), "comp": round((c2 - c1) / n, 3)},
        "render_breakdown_s_per_frame": {k: round(v / n, 3) for k, v in render["seconds"].items()},
        "comp_breakdown_s_per_frame": {k: round(v / n, 3) for k, v in comp["seconds"].items()},
        "synthetic_share_mean": comp["synthetic_share_mean"],
        "load_average": os.getloadavg()[0],
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main()
