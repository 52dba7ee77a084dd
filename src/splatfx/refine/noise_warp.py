"""Temporally consistent diffusion noise: N(0,1) noise that moves with the rendered surfaces.

A diffusion model refining a frame sequence with fresh noise per frame flickers; with the
same noise every frame, details stick to the screen while the scene moves. Here each
frame's noise is the previous frame's noise carried along the render stage's motion
vectors, in the way of *How I Warped Your Noise* (Chang et al., 2024) and
*Go-with-the-Flow* (Burgert et al., 2025), so that a pixel's noise follows its surface
while every frame stays exactly i.i.d. N(0,1):

1. **Upsample.** Every noise pixel ``n`` is split into ``k × k`` sub-pixel samples
   ``n/k + (z − mean(z))`` with fresh ``z ~ N(0,1)``: given ``n`` these are i.i.d. N(0,1)
   whose sum is ``k·n`` (the conditional law of white noise given its block sum).
2. **Transport.** Each sub-sample moves with the motion vector of the pixel it lies in and
   lands in the pixel of the next frame that contains its new position. Where a depth is
   given, only the nearest surface's samples are kept in each pixel (occlusion).
3. **Gather.** A pixel of the next frame is the sum of the samples landing in it divided by
   ``sqrt(count)``; a pixel nothing lands in (a disocclusion, or content entering the frame)
   gets fresh N(0,1) noise.

Which samples land where depends only on the motion (and depth), never on the noise
values, and no sample reaches two pixels; so each pixel of the next frame is a normalised
sum of distinct i.i.d. N(0,1) samples — exactly N(0,1) — and different pixels are
independent. Under a whole-pixel translation a pixel receives all ``k²`` samples of its
source pixel and its value is carried over unchanged; under sub-pixel motion it mixes its
sources in proportion to their overlap.

Motion convention (the render stage's ``motion.u``/``motion.v``): for frame ``t`` the
screen displacement, in pixels of that frame, of the surface seen at each pixel from frame
``t`` to frame ``t + 1``; ``u`` to the right, ``v`` down (image rows).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: Sub-pixel samples per pixel side (``k``): 4 resolves motion to a quarter pixel.
DEFAULT_FACTOR = 4
#: A sample survives the depth test if its depth is within this fraction of the nearest.
DEFAULT_DEPTH_TOLERANCE = 0.02
# Sub-samples handled at once (bounds memory on large frames).
_CHUNK_SAMPLES = 1 << 22


def upsample_noise(noise: Tensor, factor: int, generator: torch.Generator) -> Tensor:
    """``(C, H, W)`` N(0,1) noise as ``(C, H·k, W·k)`` i.i.d. N(0,1) sub-samples whose
    ``k × k`` block sums divided by ``k`` give back ``noise`` (conditional upsampling)."""
    c, h, w = noise.shape
    z = torch.randn((c, h, factor, w, factor), generator=generator, dtype=noise.dtype)
    z = z - z.mean(dim=(2, 4), keepdim=True)
    return (noise[:, :, None, :, None] / factor + z).reshape(c, h * factor, w * factor)


def warp_noise(noise: Tensor, motion: Tensor, generator: torch.Generator, *, factor: int = DEFAULT_FACTOR,
               depth: Tensor | None = None, depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE) -> Tensor:
    """The next frame's noise: ``noise`` (C, H, W) carried along ``motion`` (H, W, 2).

    ``motion[y, x] = (u, v)``: where the surface at pixel (x, y) moves by the next frame, in
    pixels (x right, y down). ``depth`` (H, W), optional: the surfaces' depth in this frame
    (``inf`` where there is none); with it, a pixel reached by two surfaces keeps only the
    nearer one's noise. Randomness is drawn from ``generator`` only. See the module doc.
    """
    c, h, w = noise.shape
    _check_fields(noise, motion, depth)
    rows_per_chunk = max(1, _CHUNK_SAMPLES // (w * factor * factor))
    chunks = [(r, min(h, r + rows_per_chunk)) for r in range(0, h, rows_per_chunk)]
    nearest = None
    if depth is not None:
        nearest = torch.full((h * w,), math.inf, dtype=torch.float64)
        for r0, r1 in chunks:
            index, sample_depth = _landing(motion, depth, r0, r1, factor)
            nearest.scatter_reduce_(0, index[index >= 0], sample_depth[index >= 0], reduce="amin")
    sums = torch.zeros((c, h * w), dtype=torch.float64)
    counts = torch.zeros(h * w, dtype=torch.int64)
    for r0, r1 in chunks:
        samples = upsample_noise(noise[:, r0:r1], factor, generator).reshape(c, -1)
        index, sample_depth = _landing(motion, depth, r0, r1, factor)
        keep = index >= 0
        if nearest is not None:
            keep &= sample_depth <= _depth_limit(nearest[index.clamp(min=0)], depth_tolerance)
        index = index[keep]
        sums.index_add_(1, index, samples[:, keep].double())
        counts += torch.bincount(index, minlength=h * w)
    out = (sums / counts.clamp(min=1).double().sqrt()).to(noise.dtype)
    empty = counts == 0
    out[:, empty] = torch.randn((c, int(empty.sum())), generator=generator, dtype=noise.dtype)
    return out.reshape(c, h, w)


def _check_fields(noise: Tensor, motion: Tensor, depth: Tensor | None) -> None:
    if noise.ndim != 3:
        raise ValueError(f"noise must be (C, H, W), got {tuple(noise.shape)}")
    size = tuple(noise.shape[1:])
    if tuple(motion.shape) != (*size, 2):
        raise ValueError(f"motion must be (H, W, 2) = {(*size, 2)}, got {tuple(motion.shape)}")
    if depth is not None and tuple(depth.shape) != size:
        raise ValueError(f"depth must be (H, W) = {size}, got {tuple(depth.shape)}")


def _landing(motion: Tensor, depth: Tensor | None, r0: int, r1: int,
             factor: int) -> tuple[Tensor, Tensor | None]:
    """Flat destination pixel of every sub-sample of rows ``r0:r1`` (−1: off screen), in the
    order :func:`upsample_noise` lays them out, and each sample's source depth."""
    h, w = motion.shape[:2]
    offsets = (torch.arange(factor, dtype=torch.float64) + 0.5) / factor
    ys = (torch.arange(r0, r1, dtype=torch.float64)[:, None] + offsets).reshape(-1)  # rows·k
    xs = (torch.arange(w, dtype=torch.float64)[:, None] + offsets).reshape(-1)  # w·k
    m = motion[r0:r1].double().repeat_interleave(factor, 0).repeat_interleave(factor, 1)
    dest_x = torch.floor(xs[None, :] + m[..., 0])
    dest_y = torch.floor(ys[:, None] + m[..., 1])
    finite = torch.isfinite(dest_x) & torch.isfinite(dest_y)
    inside = finite & (dest_x >= 0) & (dest_x < w) & (dest_y >= 0) & (dest_y < h)
    index = torch.where(inside, dest_y.nan_to_num(0) * w + dest_x.nan_to_num(0), -1.0).long().reshape(-1)
    if depth is None:
        return index, None
    d = depth[r0:r1].double().repeat_interleave(factor, 0).repeat_interleave(factor, 1)
    return index, d.reshape(-1)


def _depth_limit(nearest: Tensor, tolerance: float) -> Tensor:
    """Deepest depth still counted as the nearest surface (``inf`` stays ``inf``)."""
    return torch.where(torch.isfinite(nearest), nearest * (1.0 + tolerance), nearest)


class NoiseWarper:
    """A sequence of N(0,1) noise frames of one shape that follows the rendered motion.

    ``noise`` is the current frame's noise; :meth:`step` moves it to the next frame along
    the current frame's motion, :meth:`reset` starts over with fresh noise (after a cut or a
    gap in the frames). One seed gives one sequence, whatever the batch sizes around it.
    """

    def __init__(self, shape: tuple[int, int, int], seed: int, *, factor: int = DEFAULT_FACTOR,
                 depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE) -> None:
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"noise shape must be (C, H, W) with positive sizes, got {shape}")
        if factor < 1:
            raise ValueError(f"the upsampling factor must be at least 1, got {factor}")
        self.shape = tuple(int(s) for s in shape)
        self.factor = factor
        self.depth_tolerance = depth_tolerance
        self.generator = torch.Generator().manual_seed(int(seed))
        self.noise = self.fresh()

    def fresh(self) -> Tensor:
        """New independent N(0,1) noise of this shape."""
        return torch.randn(self.shape, generator=self.generator)

    def reset(self) -> Tensor:
        """Start over with fresh noise (a cut, or a gap in the frame numbers)."""
        self.noise = self.fresh()
        return self.noise

    def step(self, motion: Tensor, depth: Tensor | None = None) -> Tensor:
        """Advance to the next frame: the noise carried along ``motion`` (H, W, 2) of the current
        frame, at the noise's resolution (see :func:`motion_at` to resize a frame's motion)."""
        self.noise = warp_noise(self.noise, motion, self.generator, factor=self.factor, depth=depth,
                                depth_tolerance=self.depth_tolerance)
        return self.noise


def motion_at(motion: Tensor, size: tuple[int, int], cell: int,
              depth: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """A frame's motion (H, W, 2) and depth (H, W) on a noise grid ``size`` = (h, w) of square
    cells of ``cell`` pixels (a latent model's noise lives on a grid 8 times coarser).

    The frame is first padded at its bottom and right (repeating the last row and column)
    to ``h·cell × w·cell``, as the refiners pad their frames; then each cell takes the mean
    motion of its pixels, in cell units, and the nearest depth."""
    h, w = size
    height, width = motion.shape[:2]
    if h * cell < height or w * cell < width:
        raise ValueError(f"a {h}x{w} grid of {cell}-pixel cells does not cover a {height}x{width} frame")
    if cell == 1 and (h, w) == (height, width):
        return motion, depth
    pad = (0, w * cell - width, 0, h * cell - height)
    grid = F.pad(motion.permute(2, 0, 1)[None].float(), pad, mode="replicate")
    cells = F.avg_pool2d(grid, cell)[0].permute(1, 2, 0) / cell
    if depth is None:
        return cells, None
    d = F.pad(depth[None, None].float(), pad, mode="replicate")
    return cells, -F.max_pool2d(-d, cell)[0, 0]
