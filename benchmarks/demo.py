"""Time ``splatfx demo --plates`` stage by stage on footage of any size.

Usage::

    python benchmarks/demo.py --plates DIR_OR_CLIP --out SHOT [--json FILE]
    python benchmarks/demo.py --clip-1080p --out SHOT          # a 1080p H.264 clip of south_building_full

``--clip-1080p`` first makes a landscape 1920x1080 H.264 clip (``SHOT.mov`` beside the shot
folder, kept between runs) from the 24 photos of ``south_building_full`` (3072x2304), each
scaled to cover 1920x1080 and centre-cropped, one photo per frame at 10 fps (the demo's rate), encoded with
PyAV as a camera records (yuv420p, CRF 20). Then ``splatfx demo --plates … --out SHOT`` runs
in a child process (a fresh ``--out`` each time: the folder is removed first), and the script
prints the wall time of the whole run, its CPU time and peak resident set (``getrusage`` of
the child), and each stage's seconds and working size from the shot's manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPLATFX_DATA", REPO.parent / "shared" / "data"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--plates", type=Path, help="a folder of images or a video clip")
    source.add_argument("--clip-1080p", action="store_true", help="make and use a 1080p clip of south_building_full")
    parser.add_argument("--out", type=Path, required=True, help="the demo's shot folder (removed first)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def make_1080p_clip(path: Path) -> Path:
    """south_building_full's photos as a 1920x1080, 10 fps H.264 clip (made once)."""
    if path.is_file():
        return path
    width, height = 1920, 1080
    tmp = path.with_suffix(".tmp.mov")
    with av.open(str(tmp), "w", format="mov") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, 10)
        stream.options = {"crf": "20", "preset": "veryfast"}
        for i, photo in enumerate(sorted((DATA / "south_building_full" / "images").glob("*.JPG"))):
            image = Image.open(photo).convert("RGB")
            scale = max(width / image.width, height / image.height)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
            left, top = (image.width - width) // 2, (image.height - height) // 2
            frame = av.VideoFrame.from_ndarray(np.asarray(image.crop((left, top, left + width, top + height))),
                                               format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    tmp.replace(path)
    return path


def stage_rows(shot: Path) -> list[dict]:
    """Each stage run of the shot's manifest: name, seconds, working size."""
    runs = json.loads((shot / "manifest.json").read_text())["runs"]
    rows = []
    for run in runs:
        figures = run.get("figures") or {}
        size = figures.get("size")
        rows.append({"stage": run["stage"], "seconds": run.get("seconds"),
                     "size": f"{size[0]}x{size[1]}" if size else ""})
    return rows


def main() -> None:
    args = parse_args()
    plates = make_1080p_clip(args.out.with_suffix(".mov")) if args.clip_1080p else args.plates
    if args.out.exists():
        shutil.rmtree(args.out)
    command = [str(Path(sys.executable).parent / "splatfx"), "demo", "--plates", str(plates), "--out", str(args.out)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = stage_rows(args.out)
    print("| stage | seconds | working size |\n|---|---|---|")
    for row in rows:
        print(f"| {row['stage']} | {row['seconds']:.1f} | {row['size']} |")
    figures = {"plates": str(plates), "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
               "peak_mib": round(usage.ru_maxrss / 1024), "stages": rows}
    print(f"| **whole demo** | **{wall:.0f} s wall** | CPU {figures['cpu_s']:.0f} s, peak {figures['peak_mib']} MiB |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
