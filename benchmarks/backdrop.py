"""Benchmark of what the collapse uncovers: texture and stability of the uncovered region
(:mod:`splatfx.comp.uncovered`) in a shot's comp, for one or more shots of the same plates
(e.g. the demo made with ``[fx.collapse] backdrop = false`` and with ``true``).

Usage::

    python benchmarks/backdrop.py --shot BEFORE --shot AFTER [--frames 1020-1032] [--strip OUT.png]

Per shot: the settled frames' texture ratio (uncovered region ÷ the plate's ring; the issue
asks ≥ 0.7), the frame-to-frame change of the uncovered region after warping along the
render's motion vectors, and the same change over the plates' own ring (how much a real
background changes under the same warp). ``--strip`` writes the uncovered region of a few
frames side by side, one row per shot (the background the comp builds, with the effect left out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from splatfx.comp.stage import read_layers
from splatfx.comp.uncovered import frame_change, ring, texture_ratio, uncovered
from splatfx.core.color import linear_to_srgb, srgb_to_linear
from splatfx.render.cleanfill import fill_clean_plate, grow_footprint
from splatfx.shot.folder import Shot


def display(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def background(plate: np.ndarray, layers) -> np.ndarray:
    """The comp's background without the effect (display values)."""
    linear = srgb_to_linear(plate)
    footprint = grow_footprint(layers.structure)
    filled = linear + footprint[..., None] * (fill_clean_plate(linear, layers.clean, footprint) - linear)
    return np.clip(linear_to_srgb(np.clip(filled, 0.0, 1.0)), 0.0, 1.0)


def measure(root: Path, frames: list[int]) -> tuple[dict, list[np.ndarray]]:
    shot = Shot.open(root)
    textures, changes, plate_changes, pictures = [], [], [], []
    previous = None
    with shot.open_plates() as plates:
        for frame in frames:
            layers = read_layers(shot.render_frame(frame))
            comp = display(shot.comp_dir / f"comp.{frame}.png")
            plate = display(plates.path(frame))
            ratio = texture_ratio(comp, plate, layers.structure, layers.synthetic)
            if ratio is not None:
                textures.append(ratio)
            here = uncovered(layers.structure, layers.synthetic)
            if previous is not None:
                p_layers, p_comp, p_plate, p_here = previous
                change = frame_change(p_comp, comp, p_layers.motion, p_here, here)
                if change is not None:
                    changes.append(change)
                around = ring(p_layers.structure) & ring(layers.structure)
                own = frame_change(p_plate, plate, p_layers.motion, ring(p_layers.structure), around)
                if own is not None:
                    plate_changes.append(own)
            previous = (layers, comp, plate, here)
            pictures.append(background(plate, layers))
    figures = {"texture_ratio_mean": float(np.mean(textures)) if textures else None,
               "texture_ratio_min": float(np.min(textures)) if textures else None,
               "change_codes_mean": float(np.mean(changes)) if changes else None,
               "plate_ring_change_codes_mean": float(np.mean(plate_changes)) if plate_changes else None,
               "frames_measured": len(textures)}
    return figures, pictures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shot", action="append", required=True, type=Path)
    parser.add_argument("--frames", default=None, help="A-B (default: the shot's last 12 frames)")
    parser.add_argument("--strip", type=Path, default=None)
    parser.add_argument("--strip-frames", type=int, default=4)
    args = parser.parse_args(argv)
    rows = []
    for root in args.shot:
        shot = Shot.open(root)
        if args.frames:
            a, b = (int(v) for v in args.frames.split("-"))
            frames = list(range(a, b + 1))
        else:
            frames = list(shot.frames)[-12:]
        figures, pictures = measure(root, frames)
        print(f"{root}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in figures.items()))
        pick = np.linspace(0, len(pictures) - 1, min(args.strip_frames, len(pictures))).round().astype(int)
        rows.append(np.concatenate([pictures[i] for i in pick], axis=1))
    if args.strip is not None:
        Image.fromarray((np.concatenate(rows, axis=0) * 255 + 0.5).astype(np.uint8)).save(args.strip)
        print(f"strip: {args.strip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
