"""Choosing the structure to destroy: an oriented box, an extruded ground polygon, or
votes from 2D masks drawn on a few plates.

Every selector returns a boolean mask over the Gaussians' centres; an empty selection
is an error because nothing downstream can work on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from splatfx.core.camera import Camera
from splatfx.core.errors import ConfigError


def euler_xyz_degrees(angles: tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix of XYZ Euler angles in degrees (x applied first)."""
    ax, ay, az = np.radians(angles)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class BoxSelection:
    """An oriented box: ``center`` (3,), full edge lengths ``size`` (3,), and ``rotation``
    (3,3) whose columns are the box axes in world coordinates."""

    center: Sequence[float]
    size: Sequence[float]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def contains(self, points: np.ndarray) -> np.ndarray:
        local = (np.asarray(points, dtype=np.float64) - np.asarray(self.center)) @ np.asarray(self.rotation)
        return np.all(np.abs(local) <= 0.5 * np.asarray(self.size, dtype=np.float64), axis=1)


@dataclass(frozen=True)
class PolygonSelection:
    """A polygon on the ground (x, y in the physics frame) extruded from ``z_min`` to
    ``z_max`` metres above the ground."""

    polygon: Sequence[Sequence[float]]
    z_min: float
    z_max: float

    def contains(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        inside = _points_in_polygon(points[:, :2], np.asarray(self.polygon, dtype=np.float64))
        return inside & (points[:, 2] >= self.z_min) & (points[:, 2] <= self.z_max)


def _points_in_polygon(xy: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test, vectorised over points."""
    if poly.ndim != 2 or poly.shape[0] < 3 or poly.shape[1] != 2:
        raise ValueError("a selection polygon needs at least 3 (x, y) vertices")
    inside = np.zeros(len(xy), dtype=bool)
    x, y = xy[:, 0], xy[:, 1]
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_at)
    return inside


def select_by_masks(points: np.ndarray, cameras: Sequence[Camera], masks: Sequence[np.ndarray],
                    min_fraction: float = 0.6) -> np.ndarray:
    """Points whose projection falls inside the drawn mask in at least ``min_fraction`` of
    the views that see them (in front of the camera and inside the image).

    ``masks`` are HxW arrays (nonzero = selected) matching each camera's image size.
    """
    points = np.asarray(points, dtype=np.float64)
    votes = np.zeros(len(points))
    seen = np.zeros(len(points))
    for camera, mask in zip(cameras, masks):
        mask = np.asarray(mask)
        if mask.shape[:2] != (camera.height, camera.width):
            raise ValueError(f"mask of size {mask.shape[1]}×{mask.shape[0]} does not match camera {camera.width}×{camera.height}")
        uv, depth = camera.project(points)
        col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        visible = (depth > 0) & (col >= 0) & (col < camera.width) & (row >= 0) & (row < camera.height)
        seen += visible
        hit = np.zeros(len(points), dtype=bool)
        hit[visible] = mask[row[visible], col[visible]] > 0
        votes += hit
    return (seen > 0) & (votes >= min_fraction * np.maximum(seen, 1))


def require_selection(mask: np.ndarray, what: str = "[fx.select]") -> np.ndarray:
    """Return ``mask`` or raise a ConfigError when it selects nothing."""
    if not np.any(mask):
        raise ConfigError(what, "the selection contains no Gaussians: move or enlarge it")
    return mask


def selection_report(points: np.ndarray, mask: np.ndarray) -> dict:
    """Count and axis-aligned bounds of the selected points (for the user and the manifest)."""
    chosen = np.asarray(points)[mask]
    return {
        "count": int(mask.sum()),
        "total": int(len(mask)),
        "bounds_min": chosen.min(axis=0).round(4).tolist(),
        "bounds_max": chosen.max(axis=0).round(4).tolist(),
    }
