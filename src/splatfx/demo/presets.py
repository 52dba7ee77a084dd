"""The demo's presets: shot settings, the building box, and the virtual camera move.

Two things cannot be fixed in advance, because they depend on how the solve came out
(the world frame is z-up metres with the ground at z = 0, but where the building stands
in it is whatever the solve found): the box that selects the building, and the virtual
camera path. Both are derived from the trained scene by :func:`building_box` and
:func:`virtual_path`; the rule is spelled out in ``docs/demo.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from splatfx.core.camera import Camera

PRESETS = ("collapse", "virtual")

#: The most opaque share of the Gaussians above the ground counts as solid surface (a share
#: rather than a threshold, so a short training whose opacities are still low works as well).
SOLID_SHARE = 0.5
#: Gaussians lower than this (metres above the ground) are ground, bushes, people, cars; the
#: box starts here too, so they stay where they are and the building's base stands as a ruin.
ABOVE_GROUND_M = 2.0
#: Solid Gaussians are binned in cubes of this edge (metres) ...
VOXEL_M = 1.0
#: ... and cubes whose centres are this close (metres) belong to one structure, so a wall with
#: holes a metre wide stays one piece while buildings a few metres apart stay apart; or, in a
#: sparse reconstruction (a short training), this many times the median spacing of its points.
LINK_M = 2.0
LINK_SPACINGS = 4.0
#: The middle plate votes for the structure it shows most, each Gaussian weighted by a Gaussian
#: of its distance from the image centre with this standard deviation (share of the image size).
CENTRE_SIGMA = 0.25
#: The box spans these percentiles of the structure's points along each box axis (tighter,
#: 3-97, left slivers of the end walls standing, in front of the falling pieces) ...
PERCENTILES = (1.0, 99.0)
#: ... widened by this margin (metres) on each side,
EDGE_MARGIN_M = 0.5
#: and its top the highest solid point over that footprint that the building's top reaches
#: through points no more than TOP_GAP_M apart in height (a chimney, tower or cupola the
#: structure's points miss would float once the building falls; a floater high above is
#: not the building's), plus TOP_MARGIN of the height. A building's rise is read at
#: TOP_PERCENTILE.
TOP_PERCENTILE = 99.0
TOP_GAP_M = 2.0
TOP_MARGIN = 0.05
#: Yaw angles searched (degrees, 0-90 in steps) to align the box with the facades, by the
#: sharpness of the points' histograms in bins of this width (metres) across the walls.
YAW_STEP_DEG = 1.0
WALL_BIN_M = 0.5
#: At least this many points must describe the building, and it must rise at least
#: MIN_RISE_M above ABOVE_GROUND_M.
MIN_POINTS = 50
MIN_RISE_M = 1.0


@dataclass(frozen=True)
class Box:
    """An upright box in the world frame: centre and edge lengths (metres), yaw (degrees about z)."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw_deg: float

    def select_table(self) -> dict[str, Any]:
        """The ``[fx.select]`` table selecting this box."""
        return {"shape": "box", "center": [round(v, 4) for v in self.center],
                "size": [round(v, 4) for v in self.size], "rotation": [0.0, 0.0, round(self.yaw_deg, 3)]}

    def contains(self, points: np.ndarray) -> np.ndarray:
        local = _rotate_z(np.asarray(points, np.float64) - np.asarray(self.center), -self.yaw_deg)
        return np.all(np.abs(local) <= np.asarray(self.size) / 2.0, axis=1)


class PresetError(ValueError):
    """The scene does not show a building where the preset looks for one."""


# --- the building box ------------------------------------------------------------------------------

def solid_above_ground(world: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    """Which Gaussians are solid surface above the ground (steps 1-2 of the rule): higher than
    :data:`ABOVE_GROUND_M` and in the more opaque :data:`SOLID_SHARE` of those."""
    high = np.asarray(world)[:, 2] >= ABOVE_GROUND_M
    if not high.any():
        return high
    return high & (opacity >= np.quantile(opacity[high], 1.0 - SOLID_SHARE))


def structures(points: np.ndarray) -> np.ndarray:
    """A structure label per point (N,): points whose :data:`VOXEL_M` cubes lie within
    :func:`link_distance` of each other, directly or through other occupied cubes, share a label."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    cells, of_point = np.unique(np.floor(np.asarray(points) / VOXEL_M).astype(np.int64), axis=0,
                                return_inverse=True)
    pairs = cKDTree(cells * VOXEL_M).query_pairs(link_distance(points) + 1e-6, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(cells), len(cells)))
    _, label = connected_components(graph, directed=False)
    return label[of_point.ravel()]


def link_distance(points: np.ndarray) -> float:
    """How close (metres) two occupied cubes must be to join one structure: :data:`LINK_M`, or
    :data:`LINK_SPACINGS` × the median distance from a point to its nearest neighbour when the
    points are that sparse."""
    from scipy.spatial import cKDTree

    if len(points) < 2:
        return LINK_M
    nearest, _ = cKDTree(points).query(points, k=2)
    return max(LINK_M, LINK_SPACINGS * float(np.median(nearest[:, 1])))


def view_weights(world: np.ndarray, camera_world: Camera) -> np.ndarray:
    """How much the camera shows each point: 0 behind it or outside the image, else a Gaussian
    of the distance from the image centre (:data:`CENTRE_SIGMA`)."""
    cam = world @ camera_world.R.T + camera_world.t
    depth = cam[:, 2]
    ahead = depth > 1e-6
    safe = np.where(ahead, depth, 1.0)
    du = (camera_world.fx * cam[:, 0] / safe + camera_world.cx) / camera_world.width - 0.5
    dv = (camera_world.fy * cam[:, 1] / safe + camera_world.cy) / camera_world.height - 0.5
    inside = ahead & (np.abs(du) <= 0.5) & (np.abs(dv) <= 0.5)
    return np.where(inside, np.exp(-0.5 * (du**2 + dv**2) / CENTRE_SIGMA**2), 0.0)


def building_points(solid: np.ndarray, camera_world: Camera) -> np.ndarray:
    """World points (N,3) of the building the camera looks at (steps 1-4 of the rule): the
    solid structure above the ground that the image shows most, near its centre, all of it
    (in view or not, so a facade filmed close or a building seen from a corner is whole).

    ``solid``: the solid Gaussians' centres above the ground in the world frame
    (:func:`solid_above_ground`); ``camera_world``: the middle plate's camera with its pose in
    the world frame (see :meth:`SceneFrame.camera_to_world`). PresetError when nothing in view
    looks like a building.
    """
    weight = view_weights(solid, camera_world) if len(solid) else np.zeros(0)
    seen = int((weight > 0).sum())
    if seen < 2 * MIN_POINTS:
        raise PresetError(f"only {seen} solid Gaussians more than {ABOVE_GROUND_M:g} m above the ground in the "
                          f"middle plate's view (at least {2 * MIN_POINTS} are needed to find a building)")
    label = structures(solid)
    votes = np.bincount(label, weights=weight)
    chosen = solid[label == int(np.argmax(votes))]
    rise = float(np.percentile(chosen[:, 2], TOP_PERCENTILE)) - ABOVE_GROUND_M if len(chosen) else 0.0
    if len(chosen) < MIN_POINTS or rise < MIN_RISE_M:
        raise PresetError(f"what the middle plate shows above the ground is scattered: its main structure holds "
                          f"{len(chosen)} Gaussians rising {rise:.1f} m above {ABOVE_GROUND_M:g} m (a building needs "
                          f"{MIN_POINTS} and {MIN_RISE_M:g} m)")
    return chosen


def facade_yaw(points: np.ndarray) -> float:
    """The yaw (degrees, 0-90) that lines the box axes up with the building's walls (step 5):
    the one whose point histograms along both axes (:data:`WALL_BIN_M` bins) are sharpest
    (least total entropy), as walls parallel to an axis pile up in few bins across it. It
    finds the walls of a rectangle, an L seen from a corner and a lone facade alike, where
    the smallest footprint would turn an L's box to its diagonal."""
    best, best_spread = 0.0, math.inf
    for yaw in np.arange(0.0, 90.0, YAW_STEP_DEG):
        local = _rotate_z(points, -yaw)
        spread = _entropy(local[:, 0]) + _entropy(local[:, 1])
        if spread < best_spread:
            best, best_spread = float(yaw), spread
    return best


def _entropy(values: np.ndarray) -> float:
    """Entropy of the histogram of ``values`` in :data:`WALL_BIN_M` bins (0.5-99.5 percentile range)."""
    lo, hi = np.percentile(values, (0.5, 99.5))
    counts, _ = np.histogram(values, bins=max(int((hi - lo) / WALL_BIN_M), 1), range=(lo, hi))
    p = counts[counts > 0] / max(counts.sum(), 1)
    return float(-(p * np.log(p)).sum())


def building_box(world: np.ndarray, opacity: np.ndarray, camera_world: Camera) -> Box:
    """The preset box around the building the middle plate looks at (rule in ``docs/demo.md``)."""
    world = np.asarray(world, np.float64)
    solid = world[solid_above_ground(world, np.asarray(opacity, np.float64))]
    points = building_points(solid, camera_world)
    yaw = facade_yaw(points)
    local = _rotate_z(points, -yaw)
    lo, hi = np.percentile(local[:, :2], PERCENTILES, axis=0)
    lo, hi = lo - EDGE_MARGIN_M, hi + EDGE_MARGIN_M
    top = building_top(points, solid, yaw, lo, hi)
    top += TOP_MARGIN * top
    bottom = ABOVE_GROUND_M
    centre_local = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (top + bottom) / 2])
    centre = _rotate_z(centre_local[None], yaw)[0]
    size = (float(hi[0] - lo[0]), float(hi[1] - lo[1]), top - bottom)
    return Box((float(centre[0]), float(centre[1]), float(centre[2])), size, yaw)


def building_top(points: np.ndarray, solid: np.ndarray, yaw: float, lo: np.ndarray, hi: np.ndarray) -> float:
    """The height the building reaches: from its own highest point up through the ``solid``
    points over its footprint (``lo``..``hi`` along the axes turned by ``yaw``) while no
    step between them is more than :data:`TOP_GAP_M`."""
    local = _rotate_z(solid, -yaw)
    over = np.all((local[:, :2] >= lo) & (local[:, :2] <= hi), axis=1)
    top = float(points[:, 2].max())
    heights = np.sort(solid[over, 2])
    heights = heights[heights > top]
    steps = np.diff(np.concatenate([[top], heights]))
    reached = len(heights) if not (steps > TOP_GAP_M).any() else int(np.argmax(steps > TOP_GAP_M))
    return float(heights[reached - 1]) if reached else top


def _rotate_z(points: np.ndarray, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return np.asarray(points, np.float64) @ rot.T


# --- the virtual camera ------------------------------------------------------------------------------

#: The virtual camera rides this far above the plates' own heights (metres): a crane move.
RAISE_M = 2.5
#: It aims at this fraction of the box's height.
AIM_HEIGHT = 0.35
#: The move covers the middle share of the plates' path ...
PATH_SHARE = 0.7
#: ... smoothed by a moving average over this many plate positions.
SMOOTHING = 5
KEYFRAMES = 5


def virtual_path(box: Box, camera_centres: np.ndarray, frames: tuple[int, int]) -> dict[str, Any]:
    """A virtual camera file (world frame): a smooth crane move along the plates' own path,
    raised :data:`RAISE_M`, always aimed at the building's lower third.

    It stays where the plates were taken because that is the space the reconstruction has
    seen to be empty and where it looks best; unlike the plates it glides, rises above the
    bushes and keeps the collapse centred. ``camera_centres``: the plate cameras' centres in
    the world frame (N,3), in frame order; ``frames``: the shot's first and last frame.
    """
    centres = np.asarray(camera_centres, np.float64)
    window = min(SMOOTHING, len(centres))
    kernel = np.ones(window) / window
    smooth = np.stack([np.convolve(centres[:, k], kernel, mode="valid") for k in range(3)], axis=1)
    trim = (1.0 - PATH_SHARE) / 2 * (len(smooth) - 1)
    picks = np.linspace(trim, len(smooth) - 1 - trim, KEYFRAMES)
    positions = np.stack([np.interp(picks, np.arange(len(smooth)), smooth[:, k]) for k in range(3)], axis=1)
    positions[:, 2] += RAISE_M
    top = box.center[2] + box.size[2] / 2
    aim = [float(box.center[0]), float(box.center[1]), float(AIM_HEIGHT * top)]
    first, last = frames
    keys = [{"frame": round(first + s * (last - first), 3), "position": [float(v) for v in p], "look_at": aim}
            for s, p in zip(np.linspace(0.0, 1.0, KEYFRAMES), positions)]
    return {"space": "world", "interpolation": "catmull-rom", "keyframes": keys}
