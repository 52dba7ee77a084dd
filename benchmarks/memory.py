"""Peak memory and seconds per frame of render, refine and comp, against the frame size.

Usage::

    python benchmarks/memory.py [--work DIR] [--frames 4] [--sizes 768x576,1536x1152,3072x2304]
                                [--threads 2] [--json FILE]

The shot: ``--frames`` consecutive photos of ``south_building_full`` (3072×2304, straight from
the camera) as plates, resized (area) to each ``--sizes`` entry and saved as PNG (the full
size uses the JPEGs as they are). The cameras come from one ``splatfx solve`` of the same
photos in ``south_building`` (768×576, the same images downsampled), which the render resizes
to each size. The scene is cheap: Gaussians grown from the solve's sparse points (as
``benchmarks/shot.py``), with a box around the building collapsed (demolition, debris, dust),
so every frame has synthetic pixels and a clean pass. Refine runs the built-in refiner
(untrained weights: the same cost as trained ones; 1 step, the setting the built-in model
wants) with the shot's default ``[refine]`` memory budget.

Each stage runs forced (every frame) in its own fresh Python process, which reports its peak
resident set (``VmHWM``: everything it held at its worst moment, interpreter and libraries
included) and its wall time per frame. The solve, the scene and the fx caches are made once
and kept in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPLATFX_DATA", REPO.parent / "shared" / "data"))
STAGES = ("render", "refine", "comp")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/splatfx-bench-memory"), help="kept between runs")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--sizes", default="768x576,1536x1152,3072x2304")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for numba and torch")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--stages", default=",".join(STAGES), help="which of render,refine,comp to measure")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # the child: run one stage
    parser.add_argument("--shot", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


# --- the shots ------------------------------------------------------------------------------------

def photos(frames: int) -> list[Path]:
    return sorted((DATA / "south_building_full" / "images").glob("*.JPG"))[:frames]


def base_shot(work: Path, frames: int):
    """The 768×576 shot: solve, grown scene, collapse (made once, kept in ``work``)."""
    from splatfx.fx.stage import run_collapse, run_select
    from splatfx.recon.solve import run_orient, run_solve
    from splatfx.shot.folder import Shot, create_shot

    sys.path.insert(0, str(REPO / "benchmarks"))
    from shot import grow_scene

    plates = work / "base-plates"
    plates.mkdir(parents=True, exist_ok=True)
    for photo in photos(frames):
        link = plates / photo.name
        if not link.exists():
            link.symlink_to(DATA / "south_building" / "images" / photo.name)
    root = work / "base"
    shot = Shot.open(root) if (root / "shot.toml").is_file() else create_shot(root, plates, fps=24.0)
    run_solve(shot)
    run_orient(shot)
    shot = Shot.open(root)
    grow_scene(shot, per_point=10)
    configure_fx(shot)
    shot = Shot.open(root)
    run_select(shot)
    run_collapse(shot)
    return shot


def configure_fx(shot) -> None:
    """A box around the middle of the solve's points, collapsed by demolition (settings in shot.toml)."""
    import numpy as np

    from splatfx.io.colmap import read_points3D
    from splatfx.shot.config import config_from_dict, config_to_dict, save_config
    from splatfx.shot.scene_frame import SceneFrame

    world = SceneFrame.load(shot.scene_json).points_to_world(read_points3D(shot.sparse_model / "points3D.bin").xyz)
    centre = np.median(world, axis=0)
    size = 0.5 * (np.percentile(world, 90, axis=0) - np.percentile(world, 10, axis=0))
    settings = config_to_dict(shot.config)
    settings["fx"] = {"effects": ["collapse"],
                      "select": {"shape": "box", "center": [float(v) for v in centre], "size": [float(v) for v in size]},
                      "collapse": {"fragments": 60, "debris": 1500, "dust": 500, "fill_max": 20000, "substeps": 10}}
    settings["comp"] = {"outputs": ["exr", "png", "mp4"]}
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)


def sized_shot(work: Path, base, frames: int, size: tuple[int, int]):
    """A shot of the same photos at ``size``, sharing the base shot's solve, scene and fx."""
    import numpy as np
    from PIL import Image

    from splatfx.refine.builtin import BuiltinRefiner
    from splatfx.shot.config import config_from_dict, config_to_dict, save_config
    from splatfx.shot.folder import Shot, create_shot

    width, height = size
    root = work / f"{width}x{height}"
    if (root / "shot.toml").is_file():
        return Shot.open(root)
    plates = work / f"plates-{width}x{height}"
    plates.mkdir(parents=True, exist_ok=True)
    for photo in photos(frames):
        with Image.open(photo) as im:
            if im.size == size:
                (plates / photo.name).symlink_to(photo)
            else:  # area-averaged, as a proxy would be
                small = np.asarray(im.convert("RGB").resize(size, Image.Resampling.BOX))
                Image.fromarray(small).save(plates / f"{photo.stem}.png", compress_level=1)
    shot = create_shot(root, plates, fps=24.0)
    for folder in ("solve", "scene", "fx"):
        shutil.copytree(base.root / folder, root / folder, dirs_exist_ok=True)
    settings = config_to_dict(base.config)
    settings["shot"] = config_to_dict(shot.config)["shot"]
    settings["refine"] = {"model": "refine/model", "steps": 1}  # the rest at the defaults
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    BuiltinRefiner.create(device="cpu").save_pretrained(root / "refine" / "model")
    return Shot.open(root)


# --- one stage in a fresh process -----------------------------------------------------------------

def run_one(stage: str, shot_path: Path) -> dict:
    """Run ``stage`` on the shot (every frame); its figures, wall seconds per frame and the
    process's peak resident set."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _memory import proc_status_mib

    from splatfx.shot.folder import Shot

    shot = Shot.open(shot_path)
    start = time.perf_counter()
    if stage == "render":
        from splatfx.render.stage import run_render

        run_render(shot, force=True)
    elif stage == "refine":
        from splatfx.refine.stage import run_refine

        result = run_refine(shot, force=True, progress=False)
        plan = result.record.figures.get("memory_plan") if result.record else None
    else:
        from splatfx.comp.stage import run_comp

        run_comp(shot, force=True)
    seconds = time.perf_counter() - start
    frames = len(list(shot.frames))
    out = {"stage": stage, "frames": frames, "s_per_frame": seconds / frames,
           "peak_mib": proc_status_mib("VmHWM")}
    if stage == "refine":
        out["plan"] = plan
    return out


def measure(stage: str, shot_path: Path, threads: int) -> dict:
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, __file__, "--stage", stage, "--shot", str(shot_path),
                           "--threads", str(threads)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{stage} at {shot_path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the table ------------------------------------------------------------------------------------

def table(results: dict[str, dict[str, dict]], sizes: list[str]) -> str:
    """Peak MiB and s/frame per stage and size, each with its ratio to the first size, and the
    last size's ratio to the one before (full against half)."""
    lines = ["| stage | size | peak RSS (MiB) | × first | s/frame | × first | × previous size |", "|---|---|---|---|---|---|---|"]
    for stage in results:
        first = results[stage][sizes[0]]
        for i, size in enumerate(sizes):
            r = results[stage][size]
            previous = f"{r['s_per_frame'] / results[stage][sizes[i - 1]]['s_per_frame']:.2f}" if i else ""
            lines.append(f"| {stage} | {size} | {r['peak_mib']:.0f} | {r['peak_mib'] / first['peak_mib']:.2f} | "
                         f"{r['s_per_frame']:.2f} | {r['s_per_frame'] / first['s_per_frame']:.2f} | "
                         f"{previous} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.stage:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_one(args.stage, args.shot)))
        return
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    sizes = args.sizes.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    base = base_shot(args.work, args.frames)
    stages = [stage for stage in args.stages.split(",") if stage]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"--stages: unknown {', '.join(unknown)} (choose from {', '.join(STAGES)})")
    results: dict[str, dict[str, dict]] = {stage: {} for stage in stages}
    for size in sizes:
        width, height = (int(v) for v in size.split("x"))
        shot = sized_shot(args.work, base, args.frames, (width, height))
        for stage in stages:
            results[stage][size] = measure(stage, shot.root, args.threads)
            r = results[stage][size]
            print(f"{stage} {size}: peak {r['peak_mib']:.0f} MiB, {r['s_per_frame']:.2f} s/frame", flush=True)
    print(table(results, sizes))
    figures = {"frames": args.frames, "threads": args.threads, "results": results,
               "load_average": os.getloadavg()[0]}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main()
