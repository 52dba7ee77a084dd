"""Benchmark: the cost and look of motion blur on a finished shot (e.g. the demo).

Copies the shot twice (without its refine/ and comp/), sets ``[render] shutter`` to 0 in one
copy and to ``--shutter`` in the other, runs ``splatfx render COPY --force`` in each, and
prints the render's seconds per frame (wall, from the manifest's stage record, and the
per-step breakdown) with and without blur. With ``--crops`` it writes a before/after PNG of
the frame and place where the blur changed the synthetic elements most (a falling piece).

    python benchmarks/motion_blur.py --shot DIR [--shutter 180] [--no-camera-blur] [--work DIR]
        [--crops docs/images/motion_blur.png]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from splatfx.core.color import linear_to_srgb
from splatfx.io.images import read_exr, write_image
from splatfx.render.layers import matte_channel


def copy_with_shutter(source: Path, target: Path, degrees: float, camera_blur: bool = True) -> None:
    """``source`` copied to ``target`` (render kept, refine and comp left out) with
    ``[render] shutter = degrees`` and ``camera_blur``."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("refine", "comp", "proxy"))
    toml = target / "shot.toml"
    text = re.sub(r"(?m)^(shutter|camera_blur) = .*\n", "", toml.read_text(encoding="utf-8"))
    text = re.sub(r"(?m)^\[render\]\n", f"[render]\nshutter = {degrees!r}\ncamera_blur = {str(camera_blur).lower()}\n",
                  text, count=1)
    toml.write_text(text, encoding="utf-8")


def render(shot: Path) -> dict:
    """Run ``splatfx render SHOT --force``; its wall time and the stage record's figures."""
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("splatfx")), "render", str(shot), "--force"], check=True)
    wall = time.perf_counter() - start
    runs = json.loads((shot / "manifest.json").read_text(encoding="utf-8"))["runs"]
    record = [r for r in runs if r.get("stage") == "render"][-1]
    return {"wall": wall, "stage_seconds": record["seconds"], "figures": record["figures"]}


def display(rgb: np.ndarray) -> np.ndarray:
    """Scene-linear premultiplied colour (over black) as display values in [0, 1]."""
    return np.clip(linear_to_srgb(np.clip(rgb, 0.0, None)), 0.0, 1.0)


def crops(sharp: Path, blurred: Path, out: Path, size: tuple[int, int] = (160, 120), zoom: int = 2) -> str:
    """The before/after PNG at ``out``: the frame and window where the fragments' colour
    changed most with blur, sharp on the left, blurred on the right; returns what it shows."""
    best = None
    for path in sorted((sharp / "render").glob("frame.*.exr")):
        a, _ = read_exr(path)
        b, _ = read_exr(blurred / "render" / path.name)
        change = sum(np.abs(a[c] - b[c]) for c in ("R", "G", "B")) * (a[matte_channel("fragment")] > 0.05)
        if best is None or change.sum() > best[0]:
            best = (float(change.sum()), path.name, change, a, b)
    _, name, change, a, b = best
    w, h = size
    height, width = change.shape
    w, h = min(w, width), min(h, height)
    # the window holding the most change
    integral = np.pad(change, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = integral[h:, w:] - integral[:-h, w:] - integral[h:, :-w] + integral[:-h, :-w]
    y0, x0 = np.unravel_index(np.argmax(sums), sums.shape)
    window = (slice(y0, y0 + h), slice(x0, x0 + w))
    tiles = [display(np.stack([img[c] for c in ("R", "G", "B")], axis=2)[window]) for img in (a, b)]
    gap = np.ones((h, 4, 3))
    strip = np.concatenate([tiles[0], gap, tiles[1]], axis=1).repeat(zoom, 0).repeat(zoom, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_image(out, strip)
    return f"{name}, x {x0}-{x0 + w}, y {y0}-{y0 + h}, shown {zoom}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shot", required=True, type=Path, help="a finished shot folder (fx caches and solve)")
    parser.add_argument("--shutter", type=float, default=180.0)
    parser.add_argument("--work", type=Path, default=None, help="where the two copies go (default: a temporary folder)")
    parser.add_argument("--crops", type=Path, default=None, help="write the before/after PNG here")
    parser.add_argument("--no-camera-blur", action="store_true", help="[render] camera_blur = false in the blurred copy")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="splatfx-blur-"))
    results = {}
    for degrees in (0.0, args.shutter):
        copy = work / f"shutter_{degrees:g}"
        copy_with_shutter(args.shot, copy, degrees, camera_blur=not args.no_camera_blur)
        results[degrees] = render(copy)
    for degrees, r in results.items():
        frames = r["figures"]["rendered"]
        steps = ", ".join(f"{k} {v / frames:.3f}" for k, v in r["figures"]["seconds"].items())
        print(f"shutter {degrees:g}°: {r['stage_seconds'] / frames:.3f} s per frame ({frames} frames at "
              f"{'x'.join(map(str, r['figures']['size']))}, most samples {r['figures'].get('blur_samples_max', 1)}; "
              f"{steps})")
    if args.crops:
        shown = crops(work / "shutter_0", work / f"shutter_{args.shutter:g}", args.crops)
        print(f"wrote {args.crops}: {shown}")


if __name__ == "__main__":
    main()
