"""Which way is up, where the ground is, and how big the solved scene is in metres.

A camera solve has an arbitrary rotation, origin and scale. Physics needs gravity and
metres, so after the solve we estimate:

- the **ground plane**: a robust plane search on the sparse points for the plane most
  points lie on that is *below* the cameras, has (almost) no points below it and tilts at
  most 20° from a reference up: the normal of the camera path when the cameras moved in a
  level plane (a walk, a drone pass), else the cameras' mean up vector (camera −y in
  world). Without such a plane the reference is the up direction;
- the **metric scale**: from one known measure (a distance between two points, or the
  height of a selection of points), or else from the stated assumption that the mean
  camera height above the ground is 1.6 m (hand-held footage). When the footage does not
  show the ground below the cameras (a facade framed from the knees up), that assumption
  has nothing to stand on; the scale then assumes the scene lies at a typical distance
  from the cameras, and the ground 1.6 m below them.

splatfx's world frame is **z-up, in metres**, ground plane at z = 0, origin below the
cameras' centroid, the cameras' mean viewing direction along +y; gravity is −z. The
similarity ``world = scale · R · solve + t`` that takes solve coordinates there is a
:class:`~splatfx.shot.scene_frame.SceneFrame`, stored in ``solve/scene.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from splatfx.core.camera import Camera
from splatfx.shot.scene_frame import Plane, SceneFrame

#: Mean camera height above the ground assumed when nothing was measured (hand-held).
DEFAULT_CAMERA_HEIGHT_M = 1.6
#: How far the cameras are assumed to film the scene (:func:`median_subject_distance`) when
#: the ground below them is not seen: between what the camera-height rule gives on the South
#: Building captures (21 m on 12 photos close to it, 34 m on the 24 full-size photos, 41 m on
#: the demo's 128), a street's width or two. A guess good to about 1.5×: measure when it matters.
DEFAULT_SUBJECT_DISTANCE_M = 30.0
#: The camera-height rule is trusted only when the ground it finds lies at least this
#: fraction of the subject distance below the cameras (0.3 m at 30 m); closer, the lowest
#: points seen are not the ground but whatever the frame's lower edge cut through.
MIN_CAMERA_HEIGHT_TO_DISTANCE = 0.01


@dataclass(frozen=True)
class GroundFit:
    """A ground-plane estimate: the plane (or None), how it was found, and its support."""

    up: np.ndarray
    plane: Plane | None
    up_source: str  # "ground_plane", "camera_path" (level camera path) or "camera_up"
    inlier_fraction: float
    camera_up_angle_deg: float | None  # angle between ``up`` and the cameras' mean up


# --- up direction and ground ----------------------------------------------------------------
def cameras_mean_up(cameras: Sequence[Camera]) -> np.ndarray:
    """Unit mean of the cameras' image-up directions (camera −y) in world coordinates."""
    if not cameras:
        raise ValueError("cameras_mean_up needs at least one camera")
    up = np.mean([c.up for c in cameras], axis=0)
    norm = np.linalg.norm(up)
    if norm < 1e-9:
        raise ValueError("the cameras' up vectors cancel out: no mean up direction")
    return up / norm


def fit_plane(points: np.ndarray) -> Plane:
    """Least-squares plane through points (N≥3,3) (normal = least principal direction)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    centroid = points.mean(axis=0)
    normal = np.linalg.svd(points - centroid, full_matrices=False)[2][-1]
    return Plane(normal, -float(normal @ centroid))


def find_ground(
    points: np.ndarray,
    reference_up: np.ndarray,
    camera_centers: np.ndarray | None = None,
    *,
    tolerance: float = 0.01,
    max_tilt_deg: float = 20.0,
    max_below: float = 0.01,
    step_deg: float = 1.0,
    max_points: int = 20000,
    seed: int = 0,
) -> tuple[Plane, np.ndarray] | None:
    """The ground: the plane most points lie on among the planes that could be the ground.

    A plane could be the ground when its normal is within ``max_tilt_deg`` of
    ``reference_up``, the ``camera_centers`` are above it (all but 10 %) and at most
    ``max_below`` of the points lie clearly below it (deeper than three inlier
    distances): the ground carries the scene, so it is its lower envelope. Without that
    last rule the densest layer wins, which in real footage is often bushes or cars.

    Random point triples (RANSAC) rarely hit a ground that carries only a few percent of
    the points, so the search is exhaustive instead: every direction on a ``step_deg``
    grid in the cone (then a finer grid around the best), every admissible height along
    it. ``tolerance`` is the inlier distance as a fraction of the points' robust extent
    (median distance to the median point). The winner is refined by least squares on its
    inliers. Returns the plane (normal pointing up) and the inlier mask, or None.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) < 3:
        return None
    up = np.asarray(reference_up, dtype=np.float64) / np.linalg.norm(reference_up)
    extent = float(np.median(np.linalg.norm(points - np.median(points, axis=0), axis=1)))
    threshold = tolerance * max(extent, 1e-12)
    rng = np.random.default_rng(seed)
    sample = points if len(points) <= max_points else points[rng.choice(len(points), max_points, replace=False)]
    centers = None if camera_centers is None else np.asarray(camera_centers, dtype=np.float64).reshape(-1, 3)
    coarse = _cone(up, up, max_tilt_deg, step_deg)
    best = _best_level(sample, coarse, threshold, max_below, centers)
    if best is None:
        return None
    fine = _cone(coarse[best[0]], up, max_tilt_deg, step_deg / 8, radius_deg=step_deg)
    best = _best_level(sample, fine, threshold, max_below, centers) or (0, best[1], best[2])
    plane = Plane(fine[best[0]], -best[1])
    for _ in range(3):  # refine: least squares on inliers, then re-select inliers
        inliers = np.abs(plane.height(points)) < threshold
        if inliers.sum() < 3:
            return None
        refined = fit_plane(points[inliers])
        plane = refined if refined.normal @ plane.normal > 0 else refined.flipped()
    return plane, np.abs(plane.height(points)) < threshold


def _cone(axis: np.ndarray, up: np.ndarray, max_tilt_deg: float, step_deg: float,
          radius_deg: float | None = None) -> np.ndarray:
    """Unit directions on a ``step_deg`` grid within ``radius_deg`` of ``axis`` (all of the
    cone if None) and within ``max_tilt_deg`` of ``up``; ``axis`` itself comes first."""
    radius = max_tilt_deg if radius_deg is None else radius_deg
    helper = np.eye(3)[int(np.argmin(np.abs(axis)))]
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    ticks = np.radians(np.arange(-radius, radius + 1e-9, step_deg))
    a, b = (g.ravel() for g in np.meshgrid(ticks, ticks))
    inside = np.hypot(a, b) <= np.radians(radius) + 1e-12
    dirs = axis + np.tan(a[inside])[:, None] * e1 + np.tan(b[inside])[:, None] * e2
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    dirs = dirs[dirs @ up >= np.cos(np.radians(max_tilt_deg)) - 1e-12]
    return np.concatenate([axis[None], dirs])


def _best_level(points: np.ndarray, directions: np.ndarray, threshold: float, max_below: float,
                centers: np.ndarray | None) -> tuple[int, float, int] | None:
    """(direction index, height, inlier count) of the admissible plane with most inliers."""
    allowed_below = int(max_below * len(points))
    best: tuple[int, float, int] | None = None
    for start in range(0, len(directions), 64):
        heights = np.sort(points @ directions[start:start + 64].T, axis=0)
        for j in range(heights.shape[1]):
            h = heights[:, j]
            top = h[min(allowed_below, len(h) - 1)] + 3 * threshold  # at most max_below deeper
            if centers is not None and len(centers):
                top = min(top, float(np.percentile(centers @ directions[start + j], 10)) - threshold)
            levels = h[: np.searchsorted(h, top, side="right")]
            if not len(levels):
                continue
            counts = np.searchsorted(h, levels + threshold) - np.searchsorted(h, levels - threshold)
            k = int(np.argmax(counts))
            if best is None or counts[k] > best[2]:
                best = (start + j, float(levels[k]), int(counts[k]))
    return best


def camera_path_up(cameras: Sequence[Camera], camera_up: np.ndarray, flatness: float = 0.05,
                   max_tilt_deg: float = 45.0) -> np.ndarray | None:
    """Normal of the plane the camera centres move in (oriented along ``camera_up``), or None.

    Hand-held walks and drone passes keep a roughly constant height, so when the centres
    spread in two directions (second extent ≥ 0.2 × first) but hardly in the third
    (≤ ``flatness`` × second), their plane is level and its normal is a better up than
    the cameras' mean up, which tilts with how the operator held the camera.
    """
    centers = np.array([c.center for c in cameras], dtype=np.float64)
    if len(centers) < 4:
        return None
    spread, axes = np.linalg.svd(centers - centers.mean(axis=0), full_matrices=False)[1:]
    if spread[1] < 0.2 * spread[0] or spread[2] > flatness * spread[1]:
        return None
    normal = axes[2] if axes[2] @ camera_up > 0 else -axes[2]
    return normal if normal @ camera_up >= np.cos(np.radians(max_tilt_deg)) else None


def estimate_ground(
    points: np.ndarray,
    cameras: Sequence[Camera],
    *,
    tolerance: float = 0.01,
    max_tilt_deg: float = 20.0,
    min_inlier_fraction: float = 0.02,
    use_plane: bool = True,
    seed: int = 0,
) -> GroundFit:
    """The ground plane from sparse points, searched near a reference up direction.

    The reference is the level plane of the camera path when the cameras moved in one
    (:func:`camera_path_up`), else the cameras' mean up. Ground candidates may tilt at
    most ``max_tilt_deg`` from it (see :func:`find_ground`). Without a plane carrying
    ``min_inlier_fraction`` of the points (or with ``use_plane`` off) the reference is
    the up direction and the ground lies at the 2nd percentile of the points' heights.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    camera_up = cameras_mean_up(cameras)
    path_up = camera_path_up(cameras, camera_up)
    reference, source = (camera_up, "camera_up") if path_up is None else (path_up, "camera_path")
    centers = np.array([c.center for c in cameras])
    found = None if not use_plane else find_ground(
        points, reference, centers, tolerance=tolerance, max_tilt_deg=max_tilt_deg, seed=seed)
    if found is not None and found[1].mean() >= min_inlier_fraction and found[1].sum() >= 10:
        plane, inliers = found
        return GroundFit(plane.normal, plane, "ground_plane", float(inliers.mean()), _angle_deg(plane.normal, camera_up))
    if len(points) == 0:
        return GroundFit(reference, None, source, 0.0, _angle_deg(reference, camera_up))
    offset = -float(np.percentile(points @ reference, 2.0))
    return GroundFit(reference, Plane(reference, offset), source, 0.0, _angle_deg(reference, camera_up))


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b, -1.0, 1.0))))


# --- metric scale ------------------------------------------------------------------------------
def scale_from_distance(p1: np.ndarray, p2: np.ndarray, metres: float) -> float:
    """Metres per solve unit when the solve-space points ``p1``, ``p2`` are ``metres`` apart."""
    distance = float(np.linalg.norm(np.asarray(p1, dtype=np.float64) - np.asarray(p2, dtype=np.float64)))
    if not metres > 0 or distance <= 0:
        raise ValueError(f"scale needs two distinct points and a positive distance (got {distance}, {metres} m)")
    return metres / distance


def scale_from_height(points: np.ndarray, up: np.ndarray, metres: float) -> float:
    """Metres per solve unit when the selected points span ``metres`` along ``up`` (max − min)."""
    heights = np.asarray(points, dtype=np.float64).reshape(-1, 3) @ (np.asarray(up) / np.linalg.norm(up))
    if len(heights) < 2:
        raise ValueError(f"the height selection holds {len(heights)} points; it needs at least 2")
    span = float(np.ptp(heights))
    if not metres > 0 or span <= 0:
        raise ValueError(f"scale needs a selection with some height and a positive measure (got {span}, {metres} m)")
    return metres / span


def scale_from_camera_height(cameras: Sequence[Camera], ground: Plane, metres: float = DEFAULT_CAMERA_HEIGHT_M) -> float:
    """Metres per solve unit when the cameras' mean height above ``ground`` is ``metres``."""
    mean_height = float(np.mean(ground.height(np.array([c.center for c in cameras]))))
    if mean_height <= 0 or not metres > 0:
        raise ValueError(f"cameras are not above the ground (mean height {mean_height:.3g})")
    return metres / mean_height


def median_subject_distance(points: np.ndarray, cameras: Sequence[Camera]) -> float:
    """How far the cameras film the scene (solve units): per camera, the median distance to
    the points in its view; the median over the cameras (all points, for a camera that sees
    none)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) > 20000:
        points = points[np.random.default_rng(0).choice(len(points), 20000, replace=False)]
    distances = []
    for camera in cameras:
        pixels, depth = camera.project(points)
        inside = (depth > 0) & np.all((pixels >= 0) & (pixels < [camera.width, camera.height]), axis=1)
        seen = points[inside] if inside.any() else points
        distances.append(float(np.median(np.linalg.norm(seen - camera.center, axis=1))))
    return float(np.median(distances))


def ground_seen(cameras: Sequence[Camera], ground: GroundFit, subject_distance: float) -> bool:
    """Whether ``ground`` lies far enough below the cameras (:data:`MIN_CAMERA_HEIGHT_TO_DISTANCE`
    of ``subject_distance``, see :func:`median_subject_distance`) for the camera-height rule to
    stand on it."""
    if ground.plane is None:
        return False
    height = float(np.mean(ground.plane.height(np.array([c.center for c in cameras]))))
    return height >= MIN_CAMERA_HEIGHT_TO_DISTANCE * subject_distance


def unseen_ground_frame(cameras: Sequence[Camera], ground: GroundFit, subject_distance: float
                        ) -> tuple[float, GroundFit]:
    """Scale and ground when the ground below the cameras is not seen: the scene at
    :data:`DEFAULT_SUBJECT_DISTANCE_M` (``subject_distance`` in solve units), the ground
    :data:`DEFAULT_CAMERA_HEIGHT_M` below the cameras' mean height (or lower, where points
    were seen lower)."""
    scale = DEFAULT_SUBJECT_DISTANCE_M / subject_distance
    centroid = np.mean([c.center for c in cameras], axis=0)
    offset = -float(ground.up @ centroid) + DEFAULT_CAMERA_HEIGHT_M / scale
    if ground.plane is not None:
        offset = max(offset, ground.plane.offset)
    return scale, GroundFit(ground.up, Plane(ground.up, offset), ground.up_source, ground.inlier_fraction,
                            ground.camera_up_angle_deg)


@dataclass(frozen=True)
class ScaleMeasure:
    """One known measure of the scene. ``kind`` is "camera_height" (the default
    assumption, ``metres`` = mean camera height), "distance" (``points`` = two points)
    or "height" (``points`` = the selection whose extent along up is ``metres``)."""

    kind: str = "camera_height"
    metres: float = DEFAULT_CAMERA_HEIGHT_M
    points: tuple[tuple[float, float, float], ...] = ()
    box: tuple[float, ...] = ()  # "height" from the sparse points inside this solve-space box

    def describe(self) -> str:
        if self.kind == "camera_height":
            assumed = "assumed" if self.metres == DEFAULT_CAMERA_HEIGHT_M else "given"
            return f"{assumed}: mean camera height above the ground is {self.metres:g} m"
        if self.kind == "distance":
            return f"given: distance between {list(self.points[0])} and {list(self.points[1])} is {self.metres:g} m"
        if self.kind == "height":
            return f"given: height of the selection {list(self.box) or 'of points'} is {self.metres:g} m"
        raise ValueError(f"unknown scale measure {self.kind!r}")


def measured_scale(measure: ScaleMeasure, points: np.ndarray, cameras: Sequence[Camera], ground: GroundFit) -> float:
    """Metres per solve unit from ``measure`` (see :class:`ScaleMeasure`)."""
    if measure.kind == "distance":
        if len(measure.points) != 2:
            raise ValueError("a distance measure needs exactly two points")
        return scale_from_distance(measure.points[0], measure.points[1], measure.metres)
    if measure.kind == "height":
        selection = np.asarray(measure.points, dtype=np.float64).reshape(-1, 3)
        if measure.box:
            lo, hi = np.asarray(measure.box[:3]), np.asarray(measure.box[3:])
            inside = np.all((points >= np.minimum(lo, hi)) & (points <= np.maximum(lo, hi)), axis=1)
            selection = points[inside]
        return scale_from_height(selection, ground.up, measure.metres)
    if measure.kind == "camera_height":
        if ground.plane is None:
            raise ValueError("no ground: the camera-height assumption cannot set the scale")
        return scale_from_camera_height(cameras, ground.plane, measure.metres)
    raise ValueError(f"unknown scale measure {measure.kind!r}")


# --- the world frame ------------------------------------------------------------------------------
def world_rotation(up: np.ndarray, cameras: Sequence[Camera]) -> np.ndarray:
    """Rotation taking ``up`` to +z and the cameras' mean horizontal view direction to +y."""
    z = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    candidates = [np.mean([c.forward for c in cameras], axis=0), *(c.forward for c in cameras), np.eye(3)[0], np.eye(3)[1]]
    for forward in candidates:
        y = forward - (forward @ z) * z
        if np.linalg.norm(y) > 1e-3:
            break
    y /= np.linalg.norm(y)
    return np.stack([np.cross(y, z), y, z])


def orient_scene(
    points: np.ndarray,
    cameras: Sequence[Camera],
    measure: ScaleMeasure | None = None,
    *,
    tolerance: float = 0.01,
    max_tilt_deg: float = 20.0,
    use_ground_plane: bool = True,
    seed: int = 0,
) -> SceneFrame:
    """The z-up metric :class:`SceneFrame` of a solved scene (sparse points, cameras).

    Without a measure the scale assumes a mean camera height of 1.6 m; without points
    (imported cameras) the cameras' mean up is used and the units are kept.
    ``use_ground_plane=False`` takes up from the cameras alone.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    measure = measure or ScaleMeasure()
    ground = estimate_ground(points, cameras, tolerance=tolerance, max_tilt_deg=max_tilt_deg,
                             use_plane=use_ground_plane, seed=seed)
    defaulted = measure.kind == "camera_height" and len(points) > 0
    subject_distance = median_subject_distance(points, cameras) if defaulted else 0.0
    if defaulted and not ground_seen(cameras, ground, subject_distance):
        scale, ground = unseen_ground_frame(cameras, ground, subject_distance)
        source = (f"assumed: the ground is not seen below the cameras, so the scene is taken to lie a median "
                  f"{DEFAULT_SUBJECT_DISTANCE_M:g} m from them and the ground {DEFAULT_CAMERA_HEIGHT_M:g} m below "
                  f"them; measure it with [solve.scale]")
    else:
        try:
            scale, source = measured_scale(measure, points, cameras, ground), measure.describe()
        except ValueError as exc:
            if measure.kind != "camera_height":
                raise
            scale, source = 1.0, f"unknown: {exc}; the solve's units are taken as metres"
    rotation = world_rotation(ground.up, cameras)
    centroid = np.mean([c.center for c in cameras], axis=0)
    origin = centroid if ground.plane is None else centroid - ground.plane.height(centroid[None])[0] * ground.up
    return SceneFrame(
        up=ground.up, ground=ground.plane, up_source=ground.up_source, ground_inlier_fraction=ground.inlier_fraction,
        camera_up_angle_deg=ground.camera_up_angle_deg, scale=scale, scale_source=source,
        rotation=rotation, translation=-scale * rotation @ origin,
    )
