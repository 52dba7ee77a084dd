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

#: The most opaque share of the Gaussians in view counts as solid surface (a share rather than
#: a threshold, so a short training whose opacities are still low works as well).
SOLID_SHARE = 0.5
#: Share of the middle plate trimmed from each image border (neighbours, trees, sky edges).
FRUSTUM_MARGIN = 0.1
#: Gaussians lower than this (metres above the ground) are ground, bushes, people, cars; the
#: box starts here too, so they stay where they are and the building's base stands as a ruin.
ABOVE_GROUND_M = 2.0
#: Points farther than this multiple of the median depth are background (trees, buildings behind).
MAX_DEPTH_FACTOR = 1.6
#: The box spans these percentiles of the remaining points along each box axis.
PERCENTILES = (3.0, 97.0)
#: ... and its top this percentile of their heights, plus a margin of the height.
TOP_PERCENTILE = 99.0
TOP_MARGIN = 0.05
#: Yaw angles searched (degrees, 0-90 in steps) to align the box with the facades.
YAW_STEP_DEG = 1.0
#: At least this many points must describe the building.
MIN_POINTS = 50


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

def building_points(world: np.ndarray, opacity: np.ndarray, camera_world: Camera) -> np.ndarray:
    """World points (N,3) of solid Gaussians on what the camera looks at (steps 1-4 of the rule).

    ``world``: Gaussian centres in the world frame; ``camera_world``: the middle plate's
    camera with its pose in the world frame (see :meth:`SceneFrame.camera_to_world`).
    """
    cam = world @ camera_world.R.T + camera_world.t
    depth = cam[:, 2]
    ahead = depth > 1e-6
    safe = np.where(ahead, depth, 1.0)
    u = camera_world.fx * cam[:, 0] / safe + camera_world.cx
    v = camera_world.fy * cam[:, 1] / safe + camera_world.cy
    mu, mv = FRUSTUM_MARGIN * camera_world.width, FRUSTUM_MARGIN * camera_world.height
    keep = (ahead & (u >= mu) & (u <= camera_world.width - mu) & (v >= mv) & (v <= camera_world.height - mv)
            & (world[:, 2] >= ABOVE_GROUND_M))
    if keep.sum() < 2 * MIN_POINTS:
        raise PresetError(f"only {int(keep.sum())} Gaussians above the ground in the middle plate's view "
                          f"(at least {2 * MIN_POINTS} are needed to find the building)")
    keep &= opacity >= np.quantile(opacity[keep], 1.0 - SOLID_SHARE)
    keep &= depth <= MAX_DEPTH_FACTOR * np.median(depth[keep])
    return world[keep]


def facade_yaw(points: np.ndarray) -> float:
    """The yaw (degrees, 0-90) whose axes give the smallest percentile footprint: a box
    aligned with the facades of a rectangular building."""
    best, best_area = 0.0, math.inf
    for yaw in np.arange(0.0, 90.0, YAW_STEP_DEG):
        local = _rotate_z(points, -yaw)[:, :2]
        lo, hi = np.percentile(local, PERCENTILES, axis=0)
        area = float(np.prod(hi - lo))
        if area < best_area:
            best, best_area = float(yaw), area
    return best


def building_box(world: np.ndarray, opacity: np.ndarray, camera_world: Camera) -> Box:
    """The preset box around the building the middle plate looks at (rule in ``docs/demo.md``)."""
    points = building_points(world, opacity, camera_world)
    yaw = facade_yaw(points)
    local = _rotate_z(points, -yaw)
    lo, hi = np.percentile(local[:, :2], PERCENTILES, axis=0)
    top = float(np.percentile(points[:, 2], TOP_PERCENTILE))
    top += TOP_MARGIN * top
    bottom = ABOVE_GROUND_M
    centre_local = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (top + bottom) / 2])
    centre = _rotate_z(centre_local[None], yaw)[0]
    size = (float(hi[0] - lo[0]), float(hi[1] - lo[1]), top - bottom)
    return Box((float(centre[0]), float(centre[1]), float(centre[2])), size, yaw)


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
