"""Static box colliders for the collapse: the rest of the scene, as the falling pieces feel it.

A reconstruction has no solid geometry, so without help the pieces fall through
neighbouring buildings, walls and cars straight onto the ground plane. The artist can
place oriented boxes by hand (``[fx.collapse] colliders``, the same convention as the
``[fx.select]`` box), and :func:`fit_static_boxes` fits boxes automatically: a height map
of the opaque, unselected Gaussians around the selection, one column per grid cell from
the ground up to the local top surface, merged into as few boxes as the heights allow.
Columns never reach into the space the selected pieces occupy at rest, so nothing starts
out buried in a collider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class StaticBox:
    """An oriented box in the physics frame: ``center`` (3,), full edge lengths ``size`` (3,)
    and ``rotation`` (3,3) whose columns are the box axes in world coordinates."""

    center: np.ndarray
    size: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def top_at(self, xy: np.ndarray) -> np.ndarray:
        """Height of the box's upper surface above each ground point (N,2); -inf where a
        vertical line through the point misses the box (for particles landing on it)."""
        return self.span_at(xy)[1]

    def span_at(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Heights (bottom, top) where a vertical line through each ground point (N,2)
        enters and leaves the box; (+inf, -inf) where it misses."""
        rot = np.asarray(self.rotation, dtype=np.float64)
        half = 0.5 * np.asarray(self.size, dtype=np.float64)
        origin = np.column_stack([xy, np.zeros(len(xy))]) - np.asarray(self.center, dtype=np.float64)
        start, step = origin @ rot, rot[2]  # the line (x, y, z) in box coordinates: start + z * step
        lo = np.full(len(xy), -np.inf)
        hi = np.full(len(xy), np.inf)
        for axis in range(3):
            if abs(step[axis]) < 1e-12:  # parallel to this slab: inside it or a miss
                outside = np.abs(start[:, axis]) > half[axis]
                hi[outside] = -np.inf
                continue
            a = (-half[axis] - start[:, axis]) / step[axis]
            b = (half[axis] - start[:, axis]) / step[axis]
            lo, hi = np.maximum(lo, np.minimum(a, b)), np.minimum(hi, np.maximum(a, b))
        hit = hi >= lo
        return np.where(hit, lo, np.inf), np.where(hit, hi, -np.inf)


def fit_static_boxes(scene_points: np.ndarray, fragments: Sequence[np.ndarray], margin: float, cell: float,
                     min_points: int = 4, min_height: float | None = None,
                     clearance: float | None = None) -> list[StaticBox]:
    """Axis-aligned boxes standing on the ground under the scene's surfaces near the fragments.

    ``scene_points`` (N,3): the opaque Gaussians that are not selected, physics frame.
    ``fragments``: each fragment's collision shape at rest (vertex arrays), which the boxes
    keep ``clearance`` away from (default: half a cell). Only points within ``margin`` of
    the fragments' ground footprint count, and only those joined to the ground through
    occupied ``cell``-sized voxels (what floats in the air is not solid down to it). Each
    ``cell`` × ``cell`` ground cell with at least ``min_points`` points becomes a column up
    to the ``min_points``-th highest of them (so a few strays do not make towers); columns
    lower than ``min_height`` (default: a quarter cell) are left to the ground plane. Neighbouring
    columns of equal height (to a quarter cell) are merged into one box, whose sides are
    then pulled in to the raised points it holds (a wall stays where it is, not on the
    grid line).
    """
    if cell <= 0 or margin < 0:
        raise ValueError(f"collider cell must be > 0 and margin >= 0, got {cell} and {margin}")
    clearance = 0.5 * cell if clearance is None else clearance
    min_height = 0.25 * cell if min_height is None else min_height
    shapes = [np.asarray(f, dtype=np.float64) for f in fragments if len(f)]
    if not shapes or not len(scene_points):
        return []
    frag_lo = np.array([s.min(axis=0) for s in shapes]) - clearance
    frag_hi = np.array([s.max(axis=0) for s in shapes]) + clearance
    origin = frag_lo[:, :2].min(axis=0) - margin
    shape = np.maximum(np.ceil((frag_hi[:, :2].max(axis=0) + margin - origin) / cell).astype(int), 1)
    points = np.asarray(scene_points, dtype=np.float64)
    ij = np.floor((points[:, :2] - origin) / cell).astype(int)
    inside = np.all((ij >= 0) & (ij < shape), axis=1)
    points, ij = points[inside], ij[inside]
    # the ceiling of each cell: the lowest fragment whose footprint (plus clearance) covers it
    ceiling = np.full(shape, np.inf)
    first = np.floor((frag_lo[:, :2] - origin) / cell).astype(int)
    last = np.ceil((frag_hi[:, :2] - origin) / cell).astype(int)
    for (i0, j0), (i1, j1), z in zip(first, last, frag_lo[:, 2]):
        ceiling[i0:i1, j0:j1] = np.minimum(ceiling[i0:i1, j0:j1], z)
    below = points[:, 2] < ceiling[ij[:, 0], ij[:, 1]]
    points, ij = points[below], ij[below]
    grounded = _standing_on_ground(points, ij, cell, min_height)
    points, ij = points[grounded], ij[grounded]
    raw = _column_tops(points[:, 2], ij, shape, min_points)
    tops = np.minimum(np.round(raw / (0.25 * cell)) * 0.25 * cell, ceiling)
    tops[~((raw >= min_height) & (tops >= min_height))] = 0.0  # too low (or empty): the ground plane is enough
    raised = points[:, 2] >= min_height
    xy_lo = np.full((*shape, 2), np.inf)
    xy_hi = np.full((*shape, 2), -np.inf)
    np.minimum.at(xy_lo, (ij[raised, 0], ij[raised, 1]), points[raised, :2])
    np.maximum.at(xy_hi, (ij[raised, 0], ij[raised, 1]), points[raised, :2])
    boxes = []
    for lo, hi, top in _merge_equal_cells(tops):
        cell_lo, cell_hi = origin + lo * cell, origin + hi * cell
        box_lo = np.clip(xy_lo[lo[0]:hi[0], lo[1]:hi[1]].reshape(-1, 2).min(axis=0), cell_lo, cell_hi - cell / 4)
        box_hi = np.clip(xy_hi[lo[0]:hi[0], lo[1]:hi[1]].reshape(-1, 2).max(axis=0), box_lo + cell / 4, cell_hi)
        boxes.append(StaticBox(np.array([*(box_lo + box_hi) / 2.0, top / 2.0]), np.array([*(box_hi - box_lo), top])))
    return boxes


def _standing_on_ground(points: np.ndarray, ij: np.ndarray, cell: float, min_height: float) -> np.ndarray:
    """Which points belong to something standing on the ground: their ``cell``-sized voxel
    is joined (26-neighbourhood) through occupied voxels to one within ``min_height`` of
    the ground. A clump floating in the air (a stray cluster, a canopy seen without its
    trunk) then makes no column down to the ground."""
    if not len(points):
        return np.zeros(0, dtype=bool)
    z0 = min(float(points[:, 2].min()), 0.0)
    k = np.floor((points[:, 2] - z0) / cell).astype(int)
    occupied = np.zeros((ij[:, 0].max() + 1, ij[:, 1].max() + 1, k.max() + 1), dtype=bool)
    occupied[ij[:, 0], ij[:, 1], k] = True
    parts, _ = ndimage.label(occupied, structure=np.ones((3, 3, 3), dtype=bool))
    low = int(np.floor((min_height - z0) / cell))
    standing = np.unique(parts[:, :, : low + 1])
    return np.isin(parts[ij[:, 0], ij[:, 1], k], standing[standing > 0])


def _column_tops(z: np.ndarray, ij: np.ndarray, shape: np.ndarray, min_points: int) -> np.ndarray:
    """Per grid cell, the ``min_points``-th highest ``z`` of its points (0 with fewer points)."""
    flat = ij[:, 0] * shape[1] + ij[:, 1]
    order = np.lexsort((z, flat))
    flat, z = flat[order], z[order]
    cells, first, counts = np.unique(flat, return_index=True, return_counts=True)
    tops = np.zeros(int(shape[0] * shape[1]))
    enough = counts >= min_points
    tops[cells[enough]] = z[(first + counts - min_points)[enough]]
    return tops.reshape(shape)


def _merge_equal_cells(heights: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Greedy rectangles of equal, positive height: (lower cell index, upper cell index
    (exclusive), height) each, covering every positive cell exactly once."""
    done = heights <= 0
    boxes = []
    nx, ny = heights.shape
    for i in range(nx):
        for j in range(ny):
            if done[i, j]:
                continue
            h = heights[i, j]
            j_end = j + 1
            while j_end < ny and not done[i, j_end] and heights[i, j_end] == h:
                j_end += 1
            i_end = i + 1
            while i_end < nx and np.all(~done[i_end, j:j_end] & (heights[i_end, j:j_end] == h)):
                i_end += 1
            done[i:i_end, j:j_end] = True
            boxes.append((np.array([i, j]), np.array([i_end, j_end]), float(h)))
    return boxes


class FloorMap:
    """The static boxes as particles meet them: per ground point the height they land on
    (the ground, z = 0, raised to a box's top) and the height span a box fills, rasterised
    once on a fine grid so each lookup is a table read."""

    def __init__(self, boxes: Sequence[StaticBox], max_cells: int = 2048, finest: float = 0.05) -> None:
        self.origin = np.zeros(2)
        self.cell = 1.0
        self.heights = np.zeros((0, 0))
        self.bottoms = np.zeros((0, 0))
        corners = [np.asarray(b.center) + (np.array(np.meshgrid(*[[-0.5, 0.5]] * 3)).reshape(3, -1).T
                                           * np.asarray(b.size)) @ np.asarray(b.rotation).T for b in boxes]
        if not corners:
            return
        every = np.concatenate(corners)
        self.origin = every[:, :2].min(axis=0)
        span = every[:, :2].max(axis=0) - self.origin
        self.cell = max(finest, float(span.max()) / max_cells)
        shape = np.maximum(np.ceil(span / self.cell).astype(int), 1)
        centres = self.origin + (np.stack(np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij"),
                                          -1).reshape(-1, 2) + 0.5) * self.cell
        heights, bottoms = np.zeros(len(centres)), np.full(len(centres), np.inf)
        for box in boxes:
            bottom, top = box.span_at(centres)
            heights, bottoms = np.maximum(heights, top), np.minimum(bottoms, bottom)
        self.heights, self.bottoms = heights.reshape(shape), bottoms.reshape(shape)

    def _lookup(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bottom, top) of the boxes at each particle's ground point ((+inf, 0) where none)."""
        bottom, top = np.full(len(positions), np.inf), np.zeros(len(positions))
        if self.heights.size:
            ij = np.floor((positions[:, :2] - self.origin) / self.cell).astype(int)
            on = np.all((ij >= 0) & (ij < self.heights.shape), axis=1)
            bottom[on], top[on] = self.bottoms[ij[on, 0], ij[on, 1]], self.heights[ij[on, 0], ij[on, 1]]
        return bottom, top

    def __call__(self, positions: np.ndarray, tolerance: float) -> np.ndarray:
        """The floor under each particle (N,3): the box top where the particle is above it
        (within ``tolerance``, for one that just passed through it in a step), else 0."""
        top = self._lookup(positions)[1]
        return np.where(positions[:, 2] >= top - tolerance, top, 0.0)

    def inside(self, positions: np.ndarray, tolerance: float) -> np.ndarray:
        """Which particles (N,3) are inside a box by more than ``tolerance`` below its top:
        they came in through a side, which should have stopped them."""
        bottom, top = self._lookup(positions)
        return (positions[:, 2] > bottom) & (positions[:, 2] < top - tolerance)
