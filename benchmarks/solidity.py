"""Measure: are the falling pieces solid in a shot's rendered frames?

Reads ``render/frame.####.exr`` of a shot (the ``matte.*`` layers, named by
``splatfx.render.layers``) and prints, per frame and overall, the share of the pieces'
silhouette pixels that the synthetic elements cover at least 0.95 opaque
(:mod:`splatfx.fx.solidity`: ≥ 90 % on average, ≥ 75 % in every frame).

    python benchmarks/solidity.py --shot DIR [--frames 1004-1032] [--cost N]

``--strip BEFORE_SHOT FRAMES OUT.png`` writes a before/after strip: for each frame (comma
separated), the beauty of BEFORE_SHOT above this shot's, cropped to the pieces' silhouettes,
with the synthetic coverage beside each (white: opaque).

``--cost N`` also times, on N frames after the trigger, what the solid pieces cost per frame:
evaluating the animation (``ShotAnimation.at``) and rasterizing its Gaussians from the plate
camera (CPU backend, colour only), with the Gaussian count.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from splatfx.fx.solidity import COVER_ELEMENTS, Solidity, solidity
from splatfx.io.images import read_exr
from splatfx.render.layers import matte_channel
from splatfx.shot.folder import Shot


def shot_solidity(shot: Shot, frames: range | None = None) -> Solidity:
    """The measure over the rendered frames of ``shot`` (all of its frames by default)."""
    numbers = list(frames if frames is not None else shot.frames)
    mattes = []
    for number in numbers:
        channels, _ = read_exr(shot.render_frame(number))
        mattes.append({e: channels[matte_channel(e)] for e in COVER_ELEMENTS if matte_channel(e) in channels})
    return solidity(numbers, mattes)


def frame_cost(shot: Shot, count: int) -> dict[str, float]:
    """Mean seconds per frame to evaluate the animation and rasterize it, and Gaussians per
    frame, over ``count`` frames spread over the second half of the shot (pieces moving)."""
    from splatfx.fx.animation import load_animation
    from splatfx.raster import rasterize
    from splatfx.render.cameras import plate_cameras

    animation = load_animation(shot)
    cameras = plate_cameras(shot.solve_dir, shot.frames)
    picks = np.linspace(animation.frames // 3, animation.frames - 1, count).astype(int)
    evaluate = draw = gaussians = 0.0
    for t in picks:
        start = time.perf_counter()
        g = animation.at(int(t)).gaussians
        evaluate += time.perf_counter() - start
        camera = cameras[int(t)]
        start = time.perf_counter()
        rasterize(g.means, g.quats, g.scales, g.opacities, g.sh[None], torch.from_numpy(camera.viewmat()).float()[None],
                  torch.from_numpy(camera.K()).float()[None], camera.width, camera.height,
                  sh_degree=g.sh_degree, backend="cpu")
        draw += time.perf_counter() - start
        gaussians += len(g)
    return {"animate_s": evaluate / count, "rasterize_s": draw / count, "gaussians": gaussians / count}


def strip(before: Shot, after: Shot, frames: list[int], out: str) -> None:
    """The before/after PNG strip (see the module doc)."""
    import cv2

    columns = []
    for number in frames:
        rows, boxes = [], []
        layers = [read_exr(s.render_frame(number))[0] for s in (before, after)]
        for channels in layers:
            piece = channels[matte_channel("fragment")] + channels[matte_channel("fill")]
            ys, xs = np.nonzero(piece > 0.05)
            boxes.append((ys.min(), ys.max(), xs.min(), xs.max()))
        y0, y1 = min(b[0] for b in boxes), max(b[1] for b in boxes) + 1
        x0, x1 = min(b[2] for b in boxes), max(b[3] for b in boxes) + 1
        for channels in layers:
            rgb = np.stack([channels[c] for c in ("R", "G", "B")], axis=-1)[y0:y1, x0:x1]
            srgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.clip(rgb, 0.0031308, None) ** (1 / 2.4) - 0.055)
            cover = sum(channels.get(matte_channel(e), 0.0) for e in COVER_ELEMENTS)[y0:y1, x0:x1]
            rows.append(np.concatenate([srgb, np.repeat(np.clip(cover, 0, 1)[..., None], 3, axis=2)], axis=1))
        column = np.concatenate(rows, axis=0)
        columns.append(cv2.resize(column, (int(column.shape[1] * 300 / column.shape[0]), 300),
                                  interpolation=cv2.INTER_NEAREST))
    image = np.concatenate([np.pad(c, ((0, 0), (0, 4), (0, 0)), constant_values=1.0) for c in columns], axis=1)
    cv2.imwrite(out, (np.clip(image, 0, 1)[..., ::-1] * 255).round().astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shot", required=True, help="a rendered shot folder")
    parser.add_argument("--frames", help="first-last (default: the shot's frames)")
    parser.add_argument("--strip", nargs=3, metavar=("BEFORE_SHOT", "FRAMES", "OUT"), help="before/after PNG strip")
    parser.add_argument("--cost", type=int, default=0, help="also time the animation and rasterizer on N frames")
    args = parser.parse_args()
    shot = Shot.open(args.shot)
    frames = None
    if args.frames:
        first, last = (int(x) for x in args.frames.split("-"))
        frames = range(first, last + 1)
    result = shot_solidity(shot, frames)
    for frame, share, pixels in zip(result.frames, result.shares, result.pixels):
        print(f"{frame}: {'-' if pixels == 0 else f'{100 * share:5.1f} %'} of {pixels} px")
    print(result.summary())
    if args.strip:
        strip(Shot.open(args.strip[0]), shot, [int(f) for f in args.strip[1].split(",")], args.strip[2])
    if args.cost:
        torch.set_num_threads(1)
        cost = frame_cost(shot, args.cost)
        print(f"per frame: animation {cost['animate_s']:.3f} s, rasterize {cost['rasterize_s']:.3f} s, "
              f"{cost['gaussians']:.0f} Gaussians")


if __name__ == "__main__":
    main()
