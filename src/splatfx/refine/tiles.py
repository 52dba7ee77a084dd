"""Refining frames of any size: overlapping tiles, feathered together, in batches fitted to a budget.

A diffusion model's working memory grows with the pixels it sees at once (the built-in
refiner: about 1.3 KB per pixel; 7 GB for one 3072×2304 frame). Frames larger than
``[refine] tile`` are therefore cut into square tiles that overlap by :func:`overlap_for`
pixels; every tile with a synthetic pixel goes to the model (tiles of plate only are
skipped: the stage keeps those pixels' bits anyway), and the results are blended back with
weights that ramp linearly across each overlap, normalised to sum to 1 (no seams). A
frame's noise is cut into the same tiles, so a tile is denoised with exactly the noise the
whole frame would have had there (warped noise stays consistent across tiles).

A frame no larger than one tile is refined whole, exactly as without tiling (same model
calls, same bits). :func:`fit_batch` chooses how many frames the stage holds and how many
tiles (or whole frames) go to one model call, from ``[refine] memory``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from splatfx.core.errors import ConfigError
from splatfx.refine.base import Refiner, pad_frames

#: Bytes held per pixel of a frame waiting in a batch, besides its EXR channels (4 B each):
#: premultiplied colour (12), display colour (12), the blend of its tiles (12 + 4), slack (8).
HELD_BYTES_PER_PIXEL = 48
#: Bytes per pixel of the temporaries of the frame being read, warped and blended (the noise
#: warp's float64 sums and counts, the colour conversions), on top of the frames held.
TRANSIENT_BYTES_PER_PIXEL = 96
#: What the noise warp allocates per chunk of sub-samples, whatever the frame size.
TRANSIENT_FIXED_BYTES = 0.4 * 2**30

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Tile:
    """A tile's rows ``y0:y1`` and columns ``x0:x1`` of the (padded) frame, and its blend weight."""

    y0: int
    y1: int
    x0: int
    x1: int
    weight: np.ndarray  # (y1 - y0, x1 - x0) float32

    def cut(self, image: np.ndarray | torch.Tensor, scale: int = 1) -> np.ndarray | torch.Tensor:
        """The tile of ``image`` (``..., H, W`` at ``1/scale`` of the frame's resolution)."""
        return image[..., self.y0 // scale:self.y1 // scale, self.x0 // scale:self.x1 // scale]


def overlap_for(tile: int, multiple: int) -> int:
    """The overlap between neighbouring tiles: an eighth of the tile, a multiple of ``multiple``."""
    return max(multiple, math.ceil(tile / 8 / multiple) * multiple)


def tile_side(tile: int, multiple: int) -> int:
    """``tile`` rounded down to the model's size multiple (at least one multiple)."""
    return max(multiple, tile // multiple * multiple)


def axis_tiles(length: int, tile: int, overlap: int, multiple: int) -> tuple[list[int], int]:
    """Starts and length of the fewest tiles of at most ``tile`` pixels covering ``length``
    (a multiple of ``multiple``) with about ``overlap`` pixels shared by neighbours: the tiles
    are shrunk to share no more than that (model work is not spent twice on wide overlaps),
    evenly spread, starts and length multiples of ``multiple``."""
    if length <= tile:
        return [0], length
    count = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, math.ceil((length + (count - 1) * overlap) / count / multiple) * multiple)
    step = (length - size) / (count - 1)
    return [min(length - size, round(i * step / multiple) * multiple) for i in range(count)], size


def _ramps(starts: Sequence[int], tile: int, length: int) -> list[np.ndarray]:
    """Per tile along one axis: weights that ramp up across the overlap with the previous tile
    and down across the next's (1 elsewhere, and at the frame's edges)."""
    if len(starts) == 1:
        return [np.ones(min(tile, length), np.float32)]
    k = np.arange(tile, dtype=np.float32) + 0.5
    out = []
    for i, s in enumerate(starts):
        w = np.ones(tile, np.float32)
        if i > 0:
            w = np.minimum(w, k / (starts[i - 1] + tile - s))
        if i < len(starts) - 1:
            w = np.minimum(w, (tile - k) / (s + tile - starts[i + 1]))
        out.append(w)
    return out


def tile_grid(height: int, width: int, tile: int, overlap: int, multiple: int) -> list[Tile]:
    """The tiles of a ``height`` × ``width`` frame (multiples of ``multiple``), row by row."""
    (ys, th), (xs, tw) = axis_tiles(height, tile, overlap, multiple), axis_tiles(width, tile, overlap, multiple)
    wy, wx = _ramps(ys, th, height), _ramps(xs, tw, width)
    return [Tile(y, y + th, x, x + tw, np.outer(ay, ax)) for y, ay in zip(ys, wy) for x, ax in zip(xs, wx)]


# --- the batch plan -------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchPlan:
    """How a sequence of ``height`` × ``width`` frames is refined within the memory budget."""

    height: int
    width: int
    frames: int  # frames held and refined together
    per_call: int  # tiles (or whole frames) per model call
    tile: int  # tile side in pixels (the frame's padded size when it is refined whole)
    overlap: int
    tiles: int  # tiles per frame (1: whole)
    bytes: float  # estimated working set

    @property
    def whole(self) -> bool:
        return self.tiles == 1

    def describe(self) -> str:
        size = f"{self.width}x{self.height} frames"
        if self.whole:
            return f"{size} whole, {self.frames} per model call, about {self.bytes / 2**30:.2f} GiB"
        return (f"{size} in {self.tiles} tiles of {self.tile} px ({self.overlap} px overlap), {self.per_call} tiles "
                f"per model call, one frame at a time, about {self.bytes / 2**30:.2f} GiB")


def frame_bytes(height: int, width: int, channels: int) -> tuple[float, float]:
    """(held, transient) bytes of one frame of ``channels`` EXR channels (4 bytes each as
    read): what a frame waiting in a batch holds, and the temporaries of reading one more."""
    pixels = height * width
    return pixels * (4 * channels + HELD_BYTES_PER_PIXEL), pixels * TRANSIENT_BYTES_PER_PIXEL + TRANSIENT_FIXED_BYTES


def fit_batch(refiner: Refiner, height: int, width: int, channels: int, batch: int, tile: int,
              memory_gib: float, where: str = "[refine]") -> BatchPlan:
    """The plan for frames of ``height`` × ``width`` with ``channels`` EXR channels: frames no
    larger than one ``tile`` go to the model whole, up to ``batch`` per call; larger ones one at
    a time, their tiles batched. Both are fitted to ``memory_gib``. ConfigError naming
    ``where`` ``memory`` (the least that fits) or ``tile`` when not even one frame or tile fits."""
    budget = memory_gib * 2**30
    m = refiner.size_multiple
    ph, pw = refiner.padded_size(height, width)
    side = tile_side(tile, m)
    held, transient = frame_bytes(height, width, channels)
    per_pixel = refiner.bytes_per_pixel()
    if ph <= side and pw <= side:
        unit = held + ph * pw * per_pixel
        fits = int((budget - transient) // unit)
        if fits < 1:
            largest = tile_side(int(math.sqrt(max(budget - transient - held, 0) / per_pixel)), m)
            if largest >= 64:
                raise ConfigError(f"{where} tile", f"{tile} px refines {width}x{height} frames whole, which needs about "
                                                   f"{(unit + transient) / 2**30:.2f} GiB, more than {where} memory = "
                                                   f"{memory_gib:g} GiB; the largest tile that fits is {largest}")
            raise ConfigError(f"{where} memory", f"{memory_gib:g} GiB cannot hold one {width}x{height} frame "
                                                 f"(about {(unit + transient) / 2**30:.2f} GiB); set at least "
                                                 f"{math.ceil((unit + transient) / 2**30 * 10) / 10:g}")
        frames = min(batch, fits)
        return BatchPlan(height, width, frames, frames, max(ph, pw), 0, 1, transient + frames * unit)
    overlap = overlap_for(side, m)
    count = len(tile_grid(ph, pw, side, overlap, m))
    per_tile = side * side * per_pixel
    room = budget - transient - held
    fits = int(room // per_tile)
    if fits < 1:
        largest = tile_side(int(math.sqrt(max(room, 0) / per_pixel)), m)
        if largest >= 64:
            raise ConfigError(f"{where} tile", f"{tile} px tiles need about {per_tile / 2**30:.2f} GiB each, more than "
                                               f"{where} memory = {memory_gib:g} GiB leaves beside one {width}x{height} "
                                               f"frame; the largest tile that fits is {largest}")
        need = (transient + held + 64 * 64 * per_pixel) / 2**30
        raise ConfigError(f"{where} memory", f"{memory_gib:g} GiB cannot hold one {width}x{height} frame and a tile "
                                             f"(about {need:.2f} GiB); set at least {math.ceil(need * 10) / 10:g}")
    per_call = min(count, fits)
    return BatchPlan(height, width, 1, per_call, side, overlap, count, transient + held + per_call * per_tile)


# --- refining in tiles ----------------------------------------------------------------------------

@dataclass
class TileJob:
    """One frame to refine: display colour (H, W, 3) in [0, 1], strength (H, W), noise
    (C, h, w) of ``refiner.noise_shape(H, W)``."""

    colour: np.ndarray
    strength: np.ndarray
    noise: torch.Tensor


def refine_whole(refiner: Refiner, jobs: Sequence[TileJob], steps: int, per_call: int,
                 progress: Progress | None = None) -> list[np.ndarray]:
    """Refined colour (H, W, 3) of frames refined whole, ``per_call`` frames per model call."""
    out: list[np.ndarray] = []
    for start in range(0, len(jobs), per_call):
        part = jobs[start:start + per_call]
        images = torch.stack([torch.from_numpy(j.colour).permute(2, 0, 1) for j in part])
        strength = torch.stack([torch.from_numpy(j.strength)[None] for j in part])
        noise = torch.stack([j.noise for j in part])
        out.extend(refiner.refine(images, strength, noise, steps).permute(0, 2, 3, 1).numpy())
        if progress:
            progress(len(part))
    return out


def refine_tiles(refiner: Refiner, job: TileJob, steps: int, plan: BatchPlan,
                 progress: Progress | None = None) -> np.ndarray:
    """Refined colour (H, W, 3) of one frame, in ``plan``'s tiles: tiles with any strength go
    to the model ``plan.per_call`` at a time, with the frame's noise cut to them; the results
    are blended with each tile's feathered weight. Pixels no refined tile covers keep
    ``job.colour``."""
    h, w = job.strength.shape
    ph, pw = refiner.padded_size(h, w)
    colour = _pad(torch.from_numpy(job.colour).permute(2, 0, 1), ph, pw)
    strength = _pad(torch.from_numpy(job.strength)[None], ph, pw)
    tiles = [t for t in tile_grid(ph, pw, plan.tile, plan.overlap, refiner.size_multiple)
             if bool((t.cut(strength) > 0).any())]
    total = np.zeros((ph, pw, 3), np.float32)
    weight = np.zeros((ph, pw), np.float32)
    scale = refiner.noise_scale
    for start in range(0, len(tiles), plan.per_call):
        part = tiles[start:start + plan.per_call]
        refined = refiner.refine(torch.stack([t.cut(colour) for t in part]), torch.stack([t.cut(strength) for t in part]),
                                 torch.stack([t.cut(job.noise, scale) for t in part]), steps)
        for t, r in zip(part, refined.permute(0, 2, 3, 1).numpy()):
            total[t.y0:t.y1, t.x0:t.x1] += r * t.weight[..., None]
            weight[t.y0:t.y1, t.x0:t.x1] += t.weight
        if progress:
            progress(len(part))
    covered = weight[:h, :w] > 0
    out = job.colour.copy()
    out[covered] = total[:h, :w][covered] / weight[:h, :w][covered][:, None]
    return out


def count_tiles(refiner: Refiner, strength: np.ndarray, plan: BatchPlan) -> int:
    """How many tiles of a frame with ``strength`` (H, W) go to the model (1 when whole)."""
    if plan.whole:
        return 1
    ph, pw = refiner.padded_size(*strength.shape)
    padded = _pad(torch.from_numpy(strength)[None], ph, pw)
    return sum(bool((t.cut(padded) > 0).any()) for t in tile_grid(ph, pw, plan.tile, plan.overlap,
                                                                  refiner.size_multiple))


def _pad(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, H, W) padded at the bottom and right by repeating the edge, as the refiners pad."""
    return pad_frames(image[None], height, width)[0]
