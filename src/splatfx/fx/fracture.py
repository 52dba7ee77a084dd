"""Voronoi fracture of a selection, and the solid wall behind its surfaces.

A reconstruction is only surfaces, and soft ones: a wall is several semi-transparent layers
of Gaussians, so a broken piece would show the sky through it and its hollow inside. So
besides partitioning the selected Gaussians into fragments (nearest Voronoi seed), we give
the structure a wall of real thickness (:func:`wall_shell`): an opaque **skin** of flat
Gaussians just behind the reconstructed surface and another on the wall's inner side, and
flat, opaque Gaussians on every Voronoi face where it cuts that wall (the broken core), one
layer on each side of the break so that both pieces look solid. All of them are coloured
from the nearest reconstructed material and broken up with a procedural grain at a physical
scale (:func:`material_colours`); the core is darker and rougher, as exposed masonry.
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
    sizes: np.ndarray | None = None  # (K,) disk size in spacings (None: 1 each)

    def take(self, rows: np.ndarray) -> "FaceFill":
        """The Gaussians at ``rows`` (indices or a mask)."""
        return FaceFill(self.points[rows], self.normals[rows], self.labels[rows], self.colors_dc[rows], self.spacing,
                        None if self.sizes is None else self.sizes[rows])


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
                        spacing: float | None = None, max_count: int = 50_000, seed: int = 0,
                        shell: WallShell | None = None) -> FaceFill:
    """Sample the Voronoi faces between neighbouring fragments inside the selection's hull
    (and, with a ``shell``, only where they cut its wall: the broken core).

    Each face sample becomes two Gaussians, one per side, offset by a quarter spacing
    into its own fragment. ``spacing`` defaults to twice the median nearest-neighbour
    distance of the selected points; the result is subsampled to ``max_count``.
    """
    points = np.asarray(points, dtype=np.float64)
    colors_dc = np.asarray(colors_dc, dtype=np.float64)
    if spacing is None:
        nn = cKDTree(points).query(points, k=2)[0][:, 1]
        spacing = 2.0 * float(np.median(nn)) or 1e-3
    hull = solid_test(points)
    inside = hull if shell is None else (lambda q: hull(q) & shell.contains(q))
    pairs = seed_neighbours(fracture.seeds)
    radius = _fragment_radii(points, fracture)
    coarse = _face_samples(fracture, pairs, radius, 4.0 * spacing, inside)[0]
    area = len(coarse) * (4.0 * spacing) ** 2 / 2.0  # two samples (one per side) per grid point
    spacing = max(spacing, float(np.sqrt(2.0 * area / max_count)) if area and max_count > 0 else spacing)
    pts, nrm, lab = _face_samples(fracture, pairs, radius, spacing, inside)
    if not len(pts) or max_count <= 0:
        return FaceFill(pts[:0], nrm[:0], lab[:0], np.zeros((0, colors_dc.shape[1])), spacing)
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


def fill_gaussian_params(fill: FaceFill, opacity: float = 0.99) -> dict[str, np.ndarray]:
    """Parameters (PLY-style: log-scales, opacity logits, wxyz quats) of flat disks on the faces:
    0.7 spacing across, so that neighbours on the sampling grid overlap into an opaque sheet."""
    n = len(fill.points)
    helper = np.where(np.abs(fill.normals[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    u = np.cross(fill.normals, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    quats = rotmats_to_quats(np.stack([u, np.cross(fill.normals, u), fill.normals], axis=2))
    s = fill.spacing * (np.ones(n) if fill.sizes is None else fill.sizes)[:, None]
    return {
        "means": fill.points,
        "quats": quats,
        "log_scales": np.log(s * np.array([0.7, 0.7, 0.1])),
        "opacity_logits": np.full(n, np.log(opacity / (1 - opacity))),
        "sh_dc": fill.colors_dc,
    }


# --- the wall behind the surface ------------------------------------------------------------------
#: Selected Gaussians whose opacity sums to this in a voxel make it part of the surface.
SURFACE_WEIGHT = 0.25
#: Wall thickness estimated from the selection: this share of its narrower horizontal extent,
#: within :data:`THICKNESS_RANGE` metres (masonry walls are 0.2-0.6 m).
THICKNESS_SHARE = 0.02
THICKNESS_RANGE = (0.2, 0.6)
#: The skin's sampling, in median nearest-neighbour distances of the selected Gaussians.
SKIN_SPACING = 2.0
#: Cells of the voxel grid the shell is found on, at most (it coarsens beyond).
MAX_VOXELS = 16_000_000


@dataclass(frozen=True)
class WallShell:
    """The structure's wall: surface samples (S,3) on a ``spacing`` grid (world frame), their
    outward unit normals, the ``thickness`` of the wall behind them and the ``depth`` of the
    reconstructed shell (how far behind the samples its soft layers reach: the opaque skin
    goes there, so the reconstruction stays in front of it)."""

    points: np.ndarray
    normals: np.ndarray
    spacing: float
    thickness: float
    depth: float

    def contains(self, query: np.ndarray) -> np.ndarray:
        """Which ``query`` points (Q,3) lie inside the wall: behind the nearest surface
        sample by 0 to ``thickness`` and within a spacing of it sideways."""
        query = np.asarray(query, dtype=np.float64)
        if not len(self.points) or not len(query):
            return np.zeros(len(query), dtype=bool)
        reach = float(np.hypot(self.thickness, 1.5 * self.spacing))
        dist, idx = cKDTree(self.points).query(query, k=1, distance_upper_bound=reach)
        out = np.zeros(len(query), dtype=bool)
        near = np.isfinite(dist)
        offset = query[near] - self.points[idx[near]]
        behind = -(offset * self.normals[idx[near]]).sum(axis=1)
        side = np.sqrt(np.maximum((offset ** 2).sum(axis=1) - behind ** 2, 0.0))
        out[near] = (behind >= -0.5 * self.spacing) & (behind <= self.thickness + 0.5 * self.spacing) & \
            (side <= 1.5 * self.spacing)
        return out


    def on_wall(self, query: np.ndarray) -> np.ndarray:
        """Which reconstructed Gaussians (centres ``query``) belong to the wall: within the
        soft shell's depth (and a spacing) of the surface, up to the wall's inner side. The
        rest (floaters, haze) would hang around a falling piece as a translucent halo."""
        query = np.asarray(query, dtype=np.float64)
        if not len(self.points) or not len(query):
            return np.zeros(len(query), dtype=bool)
        idx = cKDTree(self.points).query(query, k=1)[1]
        offset = query - self.points[idx]
        behind = -(offset * self.normals[idx]).sum(axis=1)
        side = np.sqrt(np.maximum((offset ** 2).sum(axis=1) - behind ** 2, 0.0))
        return (behind >= -(self.depth + self.spacing)) & (behind <= self.thickness + self.spacing) & \
            (side <= 2.0 * self.spacing)


def wall_shell(points: np.ndarray, opacities: np.ndarray, spacing: float, thickness: float | None = None) -> WallShell:
    """The wall of a selection of reconstructed Gaussians (centres ``points`` (M,3), world
    frame, z up; ``opacities`` (M,)).

    The surface is found on a voxel grid of ``spacing``: a voxel is surface where the selected
    Gaussians in it are opaque enough together (:data:`SURFACE_WEIGHT`), and a morphological
    closing fills the holes of a sparse reconstruction up to two voxels wide. Each surface
    voxel gives one sample, put on the plane fitted to its neighbourhood (so slanted walls do
    not staircase); the normal of that plane points away from the structure's centre. A
    ``thickness`` of None is estimated (:func:`estimate_wall_thickness`).
    """
    from scipy.ndimage import binary_closing

    points = np.asarray(points, dtype=np.float64)
    weights = np.clip(np.asarray(opacities, dtype=np.float64), 0.0, 1.0)
    lo, hi = points.min(axis=0), points.max(axis=0)
    spacing = max(spacing, float(np.prod(hi - lo + 6 * spacing) / MAX_VOXELS) ** (1 / 3))
    origin = lo - 3 * spacing
    shape = tuple(int(n) for n in np.ceil((hi - origin) / spacing) + 4)
    cells = np.floor((points - origin) / spacing).astype(np.int64)
    flat = np.ravel_multi_index(cells.T, shape)
    weight = np.bincount(flat, weights=weights, minlength=int(np.prod(shape)))
    surface = (weight >= SURFACE_WEIGHT).reshape(shape)
    surface = binary_closing(surface, structure=np.ones((3, 3, 3), bool), iterations=2) | surface
    samples = (np.argwhere(surface) + 0.5) * spacing + origin
    if len(samples) < 4:
        samples = points
    normals, samples = _surface_normals(samples, points.mean(axis=0), spacing)
    depth = _shell_depth(points[weights > 0.1] if (weights > 0.1).sum() >= 4 else points, samples, normals, spacing)
    if thickness is None:
        thickness = estimate_wall_thickness(points, depth, spacing)
    thickness = max(float(thickness), depth + spacing)
    return WallShell(samples, normals, float(spacing), float(thickness), float(depth))


def estimate_wall_thickness(points: np.ndarray, depth: float, spacing: float) -> float:
    """A wall thickness for a selection with no ``wall_thickness`` set: :data:`THICKNESS_SHARE`
    of its narrower horizontal extent, within :data:`THICKNESS_RANGE`, and at least the soft
    shell's own ``depth`` plus two skin spacings (so the wall is thicker than its surface)."""
    extent = np.ptp(np.asarray(points)[:, :2], axis=0)
    estimate = float(np.clip(THICKNESS_SHARE * extent.min(), *THICKNESS_RANGE))
    return max(estimate, depth + 2.0 * spacing)


def _surface_normals(samples: np.ndarray, centre: np.ndarray, spacing: float,
                     k: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Outward normals of the local planes (PCA of the ``k`` nearest samples) and the samples
    moved onto those planes."""
    k = min(k, len(samples))
    idx = cKDTree(samples).query(samples, k=k)[1].reshape(len(samples), k)
    neighbours = samples[idx]
    mean = neighbours.mean(axis=1)
    centred = neighbours - mean[:, None]
    normals = np.linalg.eigh(np.einsum("nki,nkj->nij", centred, centred))[1][:, :, 0]
    flip = ((samples - centre) * normals).sum(axis=1) < 0
    normals[flip] *= -1
    along = ((samples - mean) * normals).sum(axis=1, keepdims=True)
    return normals, samples - np.clip(along, -0.5 * spacing, 0.5 * spacing) * normals


def _shell_depth(points: np.ndarray, samples: np.ndarray, normals: np.ndarray, spacing: float) -> float:
    """How far behind the surface samples the reconstruction's soft layers reach (their 97th
    percentile), at least half a spacing."""
    idx = cKDTree(samples).query(points, k=1)[1]
    behind = -((points - samples[idx]) * normals[idx]).sum(axis=1)
    return max(float(np.percentile(np.maximum(behind, 0.0), 97)), 0.5 * spacing)


def wall_skin(shell: WallShell, fracture: Fracture) -> tuple[FaceFill, np.ndarray]:
    """The opaque skin of the wall and which of it is the inner side: a layer just behind the
    reconstructed surface (at the shell's depth, facing out) and one on the wall's inner side
    (at its thickness, facing in), each sample in the fragment whose Voronoi cell holds it.

    A disk's soft rim would make a piece's edge a wide translucent ramp, so on the rim of each
    sheet (near its cell's boundary or a hole) a disk is split in four of half the size, and
    those that leave the cell are dropped: the piece ends crisply at its break. Colours are
    left at 0 (:func:`material_colours` paints them)."""
    s = shell.spacing
    layers = []
    for depth, sign in ((shell.depth, 1.0), (shell.thickness, -1.0)):
        points = shell.points - depth * shell.normals
        normals = sign * shell.normals
        labels, rim = _skin_rim(points, fracture.seeds, s)
        u, v = _plane_bases(normals[rim])
        quarter = [(a, b) for a in (-0.25, 0.25) for b in (-0.25, 0.25)]
        split = np.concatenate([points[rim] + s * (a * u + b * v) for a, b in quarter])
        split_labels = np.tile(labels[rim], 4)
        own = cKDTree(fracture.seeds).query(split, k=1)[1] == split_labels
        layer = FaceFill(np.concatenate([points[~rim], split[own]]),
                         np.concatenate([normals[~rim], np.tile(normals[rim], (4, 1))[own]]),
                         np.concatenate([labels[~rim], split_labels[own]]).astype(np.int32),
                         np.zeros((int((~rim).sum() + own.sum()), 3)), s,
                         np.concatenate([np.ones(int((~rim).sum())), np.full(int(own.sum()), 0.5)]))
        layers.append(layer)
    inner = np.concatenate([np.zeros(len(layers[0].points), bool), np.ones(len(layers[1].points), bool)])
    skin = FaceFill(*(np.concatenate([getattr(a, k), getattr(b, k)]) for a, b in [layers] for k in
                      ("points", "normals", "labels", "colors_dc")), s,
                    np.concatenate([layers[0].sizes, layers[1].sizes]))
    return skin, inner


def _skin_rim(points: np.ndarray, seeds: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The Voronoi cell of each skin sample, and which samples lie on a sheet's rim: within a
    spacing of their cell's boundary, or with fewer than 7 samples of the layer around them
    (the edge of a hole)."""
    k = min(2, len(seeds))
    dist, idx = cKDTree(seeds).query(points, k=k)
    dist, idx = dist.reshape(len(points), k), idx.reshape(len(points), k)
    labels = idx[:, 0]
    rim = np.zeros(len(points), dtype=bool)
    if k == 2:
        gap = np.linalg.norm(seeds[idx[:, 1]] - seeds[idx[:, 0]], axis=1)
        rim |= (dist[:, 1] ** 2 - dist[:, 0] ** 2) / np.maximum(2 * gap, 1e-12) < spacing
    rim |= cKDTree(points).query_ball_point(points, 1.5 * spacing, return_length=True) < 7
    return labels.astype(np.int32), rim


#: The largest size (sigma, in skin spacings) a moved piece's reconstructed Gaussians keep.
RIM_SCALE = 0.75


def boundary_distance(points: np.ndarray, fracture: Fracture) -> np.ndarray:
    """How far each point (M,3) lies inside its Voronoi cell: the distance to the bisector
    plane of its nearest and second-nearest seeds (inf with a single cell)."""
    if fracture.count < 2:
        return np.full(len(points), np.inf)
    dist, idx = cKDTree(fracture.seeds).query(np.asarray(points, dtype=np.float64), k=2)
    gap = np.linalg.norm(fracture.seeds[idx[:, 1]] - fracture.seeds[idx[:, 0]], axis=1)
    return (dist[:, 1] ** 2 - dist[:, 0] ** 2) / np.maximum(2 * gap, 1e-12)


def rim_log_scales(points: np.ndarray, fracture: Fracture, spacing: float) -> np.ndarray:
    """The largest log-scale (M,) each reconstructed Gaussian of a moved piece may keep: about
    the skin's grain (:data:`RIM_SCALE` spacings, so no soft tail hangs beyond the wall's
    outline) and half its distance to the break (so the piece's edge there is crisp), but no
    less than a quarter spacing."""
    reach = np.minimum(0.5 * boundary_distance(points, fracture), RIM_SCALE * spacing)
    return np.log(np.maximum(reach, 0.25 * spacing))


def _plane_bases(normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane of each normal (N,3)."""
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    u = np.cross(normals, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u, np.cross(normals, u)


def solid_fill(points: np.ndarray, opacities: np.ndarray, colors_dc: np.ndarray, fracture: Fracture,
               max_count: int, thickness: float | None = None, seed: int = 0,
               spacing: float | None = None) -> tuple[FaceFill, np.ndarray, WallShell]:
    """Everything that makes the pieces solid: the wall's skin and the broken core (fracture
    faces inside the wall), within ``max_count`` Gaussians together, textured with the
    material (:func:`material_colours`). Returns the fill, which of its Gaussians are core
    (fracture faces and the wall's inner side) and the wall."""
    points = np.asarray(points, dtype=np.float64)
    if spacing is None:  # the reconstruction's own point spacing: finer shows no detail it lacks
        nn = cKDTree(points).query(points, k=2)[0][:, 1] if len(points) > 1 else np.ones(1)
        spacing = SKIN_SPACING * float(np.median(nn)) or 1e-3
    shell = wall_shell(points, opacities, spacing, thickness)
    budget = int(0.6 * max_count)
    if 2.5 * len(shell.points) > budget > 0:  # coarser skin: its sample count goes with 1/spacing²
        shell = wall_shell(points, opacities, shell.spacing * float(np.sqrt(2.5 * len(shell.points) / budget)),
                           shell.thickness)
    skin, inner = wall_skin(shell, fracture)
    if len(skin.points) > max_count:
        keep = np.sort(np.random.default_rng(seed).choice(len(skin.points), max_count, replace=False))
        skin, inner = skin.take(keep), inner[keep]
    faces = fill_fracture_faces(points, colors_dc, fracture, spacing=shell.spacing,
                                max_count=max_count - len(skin.points), seed=seed, shell=shell)
    core = np.concatenate([inner, np.ones(len(faces.points), bool)])
    all_points = np.concatenate([skin.points, faces.points])
    labels = np.concatenate([skin.labels, faces.labels])
    colours = material_colours(points, opacities, colors_dc, fracture.labels, all_points, labels, core, seed=seed)
    spacing = max(shell.spacing, faces.spacing)
    sizes = np.concatenate([skin.sizes * shell.spacing / spacing, np.full(len(faces.points), faces.spacing / spacing)])
    fill = FaceFill(all_points, np.concatenate([skin.normals, faces.normals]), labels, colours, spacing, sizes)
    return fill, core, shell


# --- the material ---------------------------------------------------------------------------------
#: The grain of masonry: (lattice size in metres along x, y, z, weight) per octave. The finest
#: is flattened along z: brick courses and the bedding of stone and render run horizontally.
GRAIN_OCTAVES = ((0.8, 0.8, 0.8, 0.45), (0.3, 0.3, 0.3, 0.3), (0.12, 0.12, 0.05, 0.25))
#: Brightness variation of the grain on the surface skin and on the core, and the core's shade.
SURFACE_GRAIN, CORE_GRAIN, CORE_SHADE = 0.22, 0.4, 0.75


def material_colours(points: np.ndarray, opacities: np.ndarray, colors_dc: np.ndarray, labels: np.ndarray,
                     query: np.ndarray, query_labels: np.ndarray, core: np.ndarray, seed: int = 0,
                     k: int = 6) -> np.ndarray:
    """SH DC colours (Q,3) for new Gaussians at ``query``: the opacity- and inverse-distance-
    weighted colour of the ``k`` nearest reconstructed Gaussians of the same fragment, times a
    procedural grain (:func:`grain`, a few-percent colour variation besides); ``core`` ones are
    darker and rougher, as exposed masonry."""
    from splatfx.core.sh import SH_C0

    points = np.asarray(points, dtype=np.float64)
    rgb = np.clip(0.5 + SH_C0 * np.asarray(colors_dc, dtype=np.float64), 0.0, 1.0)
    weights = np.clip(np.asarray(opacities, dtype=np.float64), 0.02, 1.0)
    base = np.empty((len(query), 3))
    for fragment in np.unique(query_labels):
        rows = np.nonzero(query_labels == fragment)[0]
        own = np.nonzero(labels == fragment)[0]
        source = own if len(own) else np.arange(len(points))
        kk = min(k, len(source))
        dist, idx = cKDTree(points[source]).query(query[rows], k=kk)
        dist, idx = dist.reshape(len(rows), kk), idx.reshape(len(rows), kk)
        w = weights[source][idx] / (dist + 0.05)
        base[rows] = (rgb[source][idx] * w[..., None]).sum(axis=1) / w.sum(axis=1, keepdims=True)
    core = np.asarray(core, dtype=bool)
    amount = np.where(core, CORE_GRAIN, SURFACE_GRAIN)
    shade = np.where(core, CORE_SHADE, 1.0) * (1.0 + amount * grain(query, seed))
    tint = 1.0 + 0.04 * np.stack([grain(query * 1.7, seed + 1 + c) for c in range(3)], axis=1)
    out = np.clip(base * shade[:, None] * tint, 0.0, 1.0)
    return (out - 0.5) / SH_C0


def grain(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """Fractal value noise in about [-1, 1] at world positions ``points`` (Q,3) in metres, with
    the octaves of :data:`GRAIN_OCTAVES`; the same points and seed give the same grain."""
    points = np.asarray(points, dtype=np.float64)
    total = np.zeros(len(points))
    for octave, (sx, sy, sz, weight) in enumerate(GRAIN_OCTAVES):
        total += weight * (2.0 * _value_noise(points / np.array([sx, sy, sz]), seed * 7919 + octave) - 1.0)
    return total / sum(o[3] for o in GRAIN_OCTAVES) * 1.6


def _value_noise(x: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1] on the integer lattice (trilinear with smoothstep)."""
    cell = np.floor(x)
    f = x - cell
    f = f * f * (3.0 - 2.0 * f)
    cell = cell.astype(np.int64)
    out = np.zeros(len(x))
    for corner in np.ndindex(2, 2, 2):
        c = np.array(corner)
        w = np.prod(np.where(c, f, 1.0 - f), axis=1)
        out += w * _lattice_hash(cell + c, seed)
    return out


def _lattice_hash(cells: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) value per integer lattice point (a splitmix64-style mix)."""
    h = (cells.astype(np.uint64) * np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9],
                                            dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    h ^= np.uint64((seed * 0xD6E8FEB86659FD93) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
