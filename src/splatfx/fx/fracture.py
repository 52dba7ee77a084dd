"""Voronoi fracture of a selection, and solid fill of the new fracture faces.

A reconstruction is only surfaces: broken in two, a wall would show its hollow inside.
So besides partitioning the selected Gaussians into fragments (nearest Voronoi seed),
we put flat, opaque Gaussians on every Voronoi face that lies inside the selection's
volume, coloured from the nearest original material, one layer on each side of the
break so that both pieces look solid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, Delaunay, QhullError, cKDTree

from splatfx.core.rotation import rotmats_to_quats


@dataclass(frozen=True)
class Fracture:
    """Seeds (F,3) and the fragment label (M,) of each selected point."""

    seeds: np.ndarray
    labels: np.ndarray

    @property
    def count(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class FaceFill:
    """New Gaussians on fracture faces: centres, unit normals (pointing out of their
    fragment, into the break), fragment labels, colours (SH DC, (K,3)) and spacing."""

    points: np.ndarray
    normals: np.ndarray
    labels: np.ndarray
    colors_dc: np.ndarray
    spacing: float


#: The fewest selected Gaussians per piece worth asking for (four points span a solid).
MIN_FRAGMENT_POINTS = 4


def largest_fragment_count(points: int) -> int:
    """The most pieces ``points`` selected Gaussians can be broken into usefully."""
    return max(points // MIN_FRAGMENT_POINTS, 1)


def voronoi_fracture(points: np.ndarray, n_fragments: int, seed: int = 0,
                     impact_point: np.ndarray | None = None, impact_radius: float | None = None) -> Fracture:
    """Partition ``points`` (M,3) into up to ``n_fragments`` Voronoi cells.

    Seeds are drawn from the points themselves (so every seed lies inside the selected
    material); with ``impact_point`` the draw is weighted by ``exp(-d/impact_radius)`` so
    fragments are smaller near the impact. Empty cells are dropped and labels renumbered.
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        raise ValueError("cannot fracture an empty selection")
    if n_fragments < 1:
        raise ValueError(f"need at least one fragment, got {n_fragments}")
    rng = np.random.default_rng(seed)
    count = min(n_fragments, len(points))
    weights = np.ones(len(points))
    if impact_point is not None:
        extent = float(np.linalg.norm(points.max(0) - points.min(0))) or 1.0
        radius = impact_radius if impact_radius else 0.25 * extent
        weights = np.exp(-np.linalg.norm(points - np.asarray(impact_point), axis=1) / radius) + 1e-6
    chosen = rng.choice(len(points), size=count, replace=False, p=weights / weights.sum())
    seeds = points[chosen]
    labels = cKDTree(seeds).query(points)[1]
    used, labels = np.unique(labels, return_inverse=True)
    return Fracture(seeds=seeds[used], labels=labels.astype(np.int32))


def merge_fragments(points: np.ndarray, fracture: Fracture, drop: np.ndarray) -> Fracture:
    """The fracture without the cells marked in ``drop`` (bool (F,)): their seeds are
    removed and their points join the nearest remaining seed's cell, so the result is
    again the Voronoi fracture of its seeds (the other cells keep every point). Keeps at
    least one cell."""
    drop = np.asarray(drop, dtype=bool)
    if drop.all():
        drop = drop.copy()
        drop[np.argmax(np.bincount(fracture.labels, minlength=fracture.count))] = False
    if not drop.any():
        return fracture
    seeds = fracture.seeds[~drop]
    labels = cKDTree(seeds).query(np.asarray(points, dtype=np.float64))[1]
    used, labels = np.unique(labels, return_inverse=True)
    return Fracture(seeds=seeds[used], labels=labels.astype(np.int32))


def seed_neighbours(seeds: np.ndarray) -> np.ndarray:
    """Pairs (P,2) of seeds whose Voronoi cells share a face (Delaunay edges)."""
    n = len(seeds)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    try:
        tri = Delaunay(seeds)
    except (QhullError, ValueError):  # too few or coplanar seeds: every pair may touch
        return np.array([(a, b) for a in range(n) for b in range(a + 1, n)], dtype=np.int64)
    edges = set()
    for simplex in tri.simplices:
        for i in range(len(simplex)):
            for j in range(i + 1, len(simplex)):
                a, b = sorted((int(simplex[i]), int(simplex[j])))
                edges.add((a, b))
    return np.array(sorted(edges), dtype=np.int64).reshape(-1, 2)


def solid_test(points: np.ndarray):
    """A function telling which query points lie inside the convex hull of ``points``
    (half-space test against the hull's facets; the bounding box for flat selections)."""
    try:
        equations = ConvexHull(points).equations
    except (QhullError, ValueError):
        lo, hi = points.min(0), points.max(0)
        return lambda q: np.all((q >= lo) & (q <= hi), axis=1)
    normals, offsets = equations[:, :3], equations[:, 3]
    tolerance = 1e-9 * float(np.abs(points).max() + 1.0)

    def inside(query: np.ndarray) -> np.ndarray:
        result = np.empty(len(query), dtype=bool)
        for start in range(0, len(query), 65536):
            chunk = query[start:start + 65536]
            result[start:start + 65536] = np.all(chunk @ normals.T + offsets <= tolerance, axis=1)
        return result

    return inside


def fill_fracture_faces(points: np.ndarray, colors_dc: np.ndarray, fracture: Fracture,
                        spacing: float | None = None, max_count: int = 50_000, seed: int = 0) -> FaceFill:
    """Sample the Voronoi faces between neighbouring fragments inside the selection's hull.

    Each face sample becomes two Gaussians, one per side, offset by a quarter spacing
    into its own fragment. ``spacing`` defaults to twice the median nearest-neighbour
    distance of the selected points; the result is subsampled to ``max_count``.
    """
    points = np.asarray(points, dtype=np.float64)
    colors_dc = np.asarray(colors_dc, dtype=np.float64)
    if spacing is None:
        nn = cKDTree(points).query(points, k=2)[0][:, 1]
        spacing = 2.0 * float(np.median(nn)) or 1e-3
    inside = solid_test(points)
    pairs = seed_neighbours(fracture.seeds)
    radius = _fragment_radii(points, fracture)
    coarse = _face_samples(fracture, pairs, radius, 4.0 * spacing, inside)[0]
    area = len(coarse) * (4.0 * spacing) ** 2 / 2.0  # two samples (one per side) per grid point
    spacing = max(spacing, float(np.sqrt(2.0 * area / max_count)) if area else spacing)
    pts, nrm, lab = _face_samples(fracture, pairs, radius, spacing, inside)
    if not len(pts):
        return FaceFill(pts, nrm, lab, np.zeros((0, colors_dc.shape[1])), spacing)
    if len(pts) > max_count:
        pick = np.sort(np.random.default_rng(seed).choice(len(pts), max_count, replace=False))
        pts, nrm, lab = pts[pick], nrm[pick], lab[pick]
    return FaceFill(pts, nrm, lab, _material_colour(points, colors_dc, fracture.labels, pts, lab), spacing)


def _face_samples(fracture: Fracture, pairs: np.ndarray, radius: np.ndarray, spacing: float,
                  inside) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid samples on every shared Voronoi face inside the solid, one per side of the break."""
    seeds = fracture.seeds
    grids, pair_of = [], []
    for index, (a, b) in enumerate(pairs):
        normal = seeds[b] - seeds[a]
        normal /= np.linalg.norm(normal)
        u, v = _plane_basis(normal)
        steps = np.arange(-(min(radius[a], radius[b]) + spacing), min(radius[a], radius[b]) + spacing + 1e-9, spacing)
        grid = 0.5 * (seeds[a] + seeds[b]) + steps[:, None, None] * u + steps[None, :, None] * v
        grids.append(grid.reshape(-1, 3))
        pair_of.append(np.full(grids[-1].shape[0], index))
    if not grids:
        empty = np.zeros((0, 3))
        return empty, empty, np.zeros(0, np.int32)
    grid, pair_of = np.concatenate(grids), np.concatenate(pair_of)
    nearest = cKDTree(seeds).query(grid, k=1)[1]
    a, b = pairs[pair_of, 0], pairs[pair_of, 1]
    keep = (nearest == a) | (nearest == b)
    grid, a, b = grid[keep], a[keep], b[keep]
    solid = inside(grid)
    grid, a, b = grid[solid], a[solid], b[solid]
    normal = seeds[b] - seeds[a]
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    offset = 0.25 * spacing * normal
    points = np.concatenate([grid - offset, grid + offset])
    normals = np.concatenate([normal, -normal])  # out of each fragment, into the break
    labels = np.concatenate([a, b]).astype(np.int32)
    own_side = cKDTree(seeds).query(points, k=1)[1] == labels  # drop samples pushed into a third cell
    return points[own_side], normals[own_side], labels[own_side]


def _fragment_radii(points: np.ndarray, fracture: Fracture) -> np.ndarray:
    """Distance from each seed to its farthest point: how far its faces can reach."""
    dist = np.linalg.norm(points - fracture.seeds[fracture.labels], axis=1)
    radii = np.zeros(fracture.count)
    np.maximum.at(radii, fracture.labels, dist)
    return radii


def _plane_basis(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([1.0, 0.0, 0.0]) if abs(normal[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(normal, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(normal, u)


def _material_colour(points: np.ndarray, colors_dc: np.ndarray, labels: np.ndarray, query: np.ndarray,
                     query_labels: np.ndarray, k: int = 8) -> np.ndarray:
    """Mean colour of the ``k`` nearest original points of the same fragment (any fragment
    when a fragment has none nearby)."""
    out = np.empty((len(query), colors_dc.shape[1]))
    for fragment in np.unique(query_labels):
        rows = np.nonzero(query_labels == fragment)[0]
        own = np.nonzero(labels == fragment)[0]
        source = own if len(own) else np.arange(len(points))
        kk = min(k, len(source))
        idx = cKDTree(points[source]).query(query[rows], k=kk)[1].reshape(len(rows), kk)
        out[rows] = colors_dc[source][idx].mean(axis=1)
    return out


def fill_gaussian_params(fill: FaceFill, opacity: float = 0.95) -> dict[str, np.ndarray]:
    """Parameters (PLY-style: log-scales, opacity logits, wxyz quats) of flat disks on the faces."""
    n = len(fill.points)
    helper = np.where(np.abs(fill.normals[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    u = np.cross(fill.normals, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    quats = rotmats_to_quats(np.stack([u, np.cross(fill.normals, u), fill.normals], axis=2))
    s = fill.spacing
    return {
        "means": fill.points,
        "quats": quats,
        "log_scales": np.log(np.tile([0.6 * s, 0.6 * s, 0.1 * s], (n, 1))),
        "opacity_logits": np.full(n, np.log(opacity / (1 - opacity))),
        "sh_dc": fill.colors_dc,
    }
