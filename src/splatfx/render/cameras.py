"""Cameras for a shot's frames: the plates' solved (match-moved) cameras, or a virtual
camera path, plus the lens warp that puts a pinhole render onto a distorted plate.

* **Match-moved** (``[render] camera = "plates"``): frame ``f`` gets the camera COLMAP
  solved for the plate image of frame ``f`` (``solve/report.json`` maps frames to image
  names). The lens is taken from ``solve/distorted/sparse/0`` when present, so renders
  line up with the plates as shot, distortion included; frames the solve could not
  register are interpolated from their neighbours along the path below.
* **Virtual** (``[render] camera = "virtual"``): a JSON file of keyframes, or an ``orbit`` /
  ``dolly`` preset (format in ``docs/render_comp.md``). Positions follow Catmull-Rom or
  natural cubic splines; orientations are slerped between keyframe rotations (4×4
  ``transform_matrix`` keyframes) or, for ``position`` + ``look_at`` keyframes, aim at a
  target that follows the same spline; focal lengths are interpolated linearly.

The rasterizer is pinhole only. A camera with distortion is rendered through
:class:`LensWarp`: a pinhole render on an enlarged canvas (overscan) resampled onto the
plate's distorted pixel grid.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation, Slerp

from splatfx.io import colmap
from splatfx.core.camera import Camera, look_at
from splatfx.shot.config import FrameRange
from splatfx.core.errors import InputError
from splatfx.fx.animation import Similarity

PathLike = str | os.PathLike[str]
Interpolation = Literal["catmull-rom", "cubic", "linear"]
INTERPOLATIONS = ("catmull-rom", "cubic", "linear")
#: Horizontal field of view of a virtual camera when neither the file nor a solve gives one.
DEFAULT_FOV_X_DEG = 50.0
#: Overscan is limited to this fraction of the plate size per side (extreme fisheyes are refused).
MAX_OVERSCAN = 0.5


# --- interpolation ---------------------------------------------------------------------------------
def interpolate_positions(times: np.ndarray, points: np.ndarray, query: np.ndarray,
                          method: Interpolation = "catmull-rom") -> np.ndarray:
    """Positions (Q,3) at ``query`` times through keyframes ``points`` (K,3) at ``times`` (K,).

    ``catmull-rom``: cubic Hermite segments with tangents ``(p[i+1] − p[i−1]) / (t[i+1] − t[i−1])``
    (one-sided at the ends), which pass through every keyframe without overshooting far;
    ``cubic``: a natural cubic spline (C² smooth); ``linear``. Outside the keyframes the
    first or last position is held.
    """
    times, points = np.asarray(times, np.float64), np.asarray(points, np.float64)
    q = np.clip(np.asarray(query, np.float64), times[0], times[-1])
    if len(times) == 1:
        return np.repeat(points, len(q), axis=0)
    if method == "linear" or len(times) == 2 and method == "cubic":
        return np.stack([np.interp(q, times, points[:, k]) for k in range(points.shape[1])], axis=1)
    if method == "cubic":
        return CubicSpline(times, points, axis=0, bc_type="natural")(q)
    if method != "catmull-rom":
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {method!r}")
    tangents = np.empty_like(points)
    tangents[1:-1] = (points[2:] - points[:-2]) / (times[2:] - times[:-2])[:, None]
    tangents[0] = (points[1] - points[0]) / (times[1] - times[0])
    tangents[-1] = (points[-1] - points[-2]) / (times[-1] - times[-2])
    seg = np.clip(np.searchsorted(times, q, side="right") - 1, 0, len(times) - 2)
    dt = times[seg + 1] - times[seg]
    s = ((q - times[seg]) / dt)[:, None]
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return (h00 * points[seg] + h10 * dt[:, None] * tangents[seg]
            + h01 * points[seg + 1] + h11 * dt[:, None] * tangents[seg + 1])


def interpolate_rotations(times: np.ndarray, rotations: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Rotation matrices (Q,3,3) at ``query`` by spherical linear interpolation (slerp)
    between keyframe rotations (K,3,3); the first or last is held outside the keyframes."""
    times = np.asarray(times, np.float64)
    q = np.clip(np.asarray(query, np.float64), times[0], times[-1])
    if len(times) == 1:
        return np.repeat(np.asarray(rotations, np.float64), len(q), axis=0)
    return Slerp(times, Rotation.from_matrix(rotations))(q).as_matrix()


@dataclass(frozen=True)
class CameraPath:
    """Keyframed cameras: ``times`` (K,) in frame numbers, ``cameras`` (K) sharing one image size."""

    times: np.ndarray
    cameras: tuple[Camera, ...]
    interpolation: Interpolation = "catmull-rom"

    def __post_init__(self) -> None:
        if len(self.times) == 0 or len(self.times) != len(self.cameras):
            raise ValueError(f"a camera path needs as many times as cameras (≥ 1), got {len(self.times)} "
                             f"and {len(self.cameras)}")
        if np.any(np.diff(self.times) <= 0):
            raise ValueError("camera path keyframe times must increase strictly")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")

    def at(self, frames: Sequence[float]) -> list[Camera]:
        """The cameras at ``frames`` (any real frame numbers)."""
        query = np.asarray(frames, np.float64)
        centres = interpolate_positions(self.times, np.stack([c.center for c in self.cameras]), query,
                                        self.interpolation)
        c2w = interpolate_rotations(self.times, np.stack([c.R.T for c in self.cameras]), query)
        intrinsics = np.array([[c.fx, c.fy, c.cx, c.cy] for c in self.cameras])
        lens = np.stack([np.interp(query, self.times, intrinsics[:, k]) for k in range(4)], axis=1)
        first = self.cameras[0]
        out = []
        for centre, rot, (fx, fy, cx, cy) in zip(centres, c2w, lens, strict=True):
            R = rot.T
            out.append(Camera(first.width, first.height, fx, fy, cx, cy, R, -R @ centre, first.dist))
        return out


# --- presets ----------------------------------------------------------------------------------------
def orbit_cameras(frames: int, center: Sequence[float], radius: float, height: float, *, start_deg: float = 0.0,
                  degrees: float = 360.0, up: Sequence[float] = (0.0, 0.0, 1.0), width: int, image_height: int,
                  fx: float) -> list[Camera]:
    """``frames`` cameras circling ``center`` at ``radius``, ``height`` above it along ``up``,
    sweeping ``degrees`` from ``start_deg`` (measured from +x, counter-clockwise seen from
    above) and always
    looking at ``center``. The last frame lands exactly on ``start_deg + degrees``."""
    up = _unit(np.asarray(up, np.float64))
    center = np.asarray(center, np.float64)
    axis = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    a = _unit(axis - np.dot(axis, up) * up)  # angle 0: along x (projected off up)
    b = np.cross(up, a)
    angles = np.radians(start_deg + degrees * np.linspace(0.0, 1.0, frames) if frames > 1 else [start_deg])
    return [look_at(center + radius * (math.cos(t) * a + math.sin(t) * b) + height * up, center, up, width,
                    image_height, fx) for t in angles]


def dolly_cameras(frames: int, start: Sequence[float], end: Sequence[float], target: Sequence[float] | None = None,
                  *, ease: bool = True, up: Sequence[float] = (0.0, 0.0, 1.0), width: int, image_height: int,
                  fx: float) -> list[Camera]:
    """``frames`` cameras moving on a straight line from ``start`` to ``end`` (eased in and
    out with smoothstep unless ``ease`` is False), looking at ``target`` (default: straight
    ahead along the move, i.e. a push-in)."""
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    if target is None and np.linalg.norm(end - start) < 1e-12:
        raise ValueError("dolly: start and end coincide, so a target is needed")
    s = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    if ease:
        s = s * s * (3 - 2 * s)
    cams = []
    for k in s:
        position = start + k * (end - start)
        aim = position + (end - start) if target is None else np.asarray(target, np.float64)
        cams.append(look_at(position, aim, up, width, image_height, fx))
    return cams


# --- virtual camera files ---------------------------------------------------------------------------
def load_virtual_cameras(path: PathLike, frames: FrameRange, space: Similarity | None, width: int, height: int,
                         fx: float) -> list[Camera]:
    """The cameras of every frame of ``frames`` from a virtual camera file, in solve coordinates.

    ``space`` links solve coordinates to the world frame (z-up, metres) in which the file's
    positions are given unless it says ``"space": "solve"`` (None: the shot has no world
    frame). ``width``/``height``/``fx`` are the image size and the default focal length.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(p, "virtual camera file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(p, f"is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(p, "must hold a JSON object (keyframes or a preset)")
    try:
        return _virtual_cameras(data, frames, space, width, height, fx)
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InputError(p, f"bad virtual camera: {detail}") from None


def _virtual_cameras(data: dict[str, Any], frames: FrameRange, space: Similarity | None, width: int, height: int,
                     fx: float) -> list[Camera]:
    in_solve = data.get("space", "world") == "solve"
    if data.get("space", "world") not in ("world", "solve"):
        raise ValueError(f"space must be 'world' or 'solve', got {data['space']!r}")
    if space is None and not in_solve:
        raise ValueError('positions are in the world frame but the shot has no solve/scene.json (run `splatfx '
                         'solve`, or give "space": "solve")')
    to_solve = Similarity() if in_solve else space
    fx = _focal(data, width, fx)
    up = _unit(np.asarray(data.get("up", (0.0, -1.0, 0.0)), np.float64) if in_solve else
               to_solve.vector_to_solve(np.array([0.0, 0.0, 1.0])))
    n = len(frames)
    preset = data.get("preset")
    if preset == "orbit":
        return orbit_cameras(n, to_solve.to_solve(_vec3(data["center"], "center")),
                             float(data["radius"]) / to_solve.scale, float(data.get("height", 0.0)) / to_solve.scale,
                             start_deg=float(data.get("start_deg", 0.0)), degrees=float(data.get("degrees", 360.0)),
                             up=up, width=width, image_height=height, fx=fx)
    if preset == "dolly":
        target = data.get("target")
        return dolly_cameras(n, to_solve.to_solve(_vec3(data["start"], "start")),
                             to_solve.to_solve(_vec3(data["end"], "end")),
                             None if target is None else to_solve.to_solve(_vec3(target, "target")),
                             ease=bool(data.get("ease", True)), up=up, width=width, image_height=height, fx=fx)
    if preset is not None:
        raise ValueError(f"preset must be 'orbit' or 'dolly', got {preset!r}")
    keys = data.get("keyframes", data.get("frames"))
    if not isinstance(keys, list) or not keys:
        raise ValueError("needs a non-empty 'keyframes' list or a 'preset'")
    times = np.array([float(k["frame"]) if "frame" in k else frames.start + i * (n - 1) / max(len(keys) - 1, 1)
                      for i, k in enumerate(keys)])
    order = np.argsort(times, kind="stable")
    keys, times = [keys[i] for i in order], times[order]
    method = data.get("interpolation", "catmull-rom")
    if all("position" in k and "look_at" in k for k in keys):
        return _aimed_cameras(keys, times, list(frames), method, to_solve, up, width, height, fx)
    cams = tuple(_keyframe_camera(k, i, to_solve, up, width, height, fx) for i, k in enumerate(keys))
    return CameraPath(times, cams, method).at(list(frames))


def _aimed_cameras(keys: list[dict[str, Any]], times: np.ndarray, frames: list[int], method: Interpolation,
                   to_solve: Similarity, up: np.ndarray, width: int, height: int, fx: float) -> list[Camera]:
    """Position + look-at keyframes: both points follow the spline and the camera aims at the
    target on every frame (so a held target stays centred), level with ``up``."""
    if np.any(np.diff(times) <= 0):
        raise ValueError("keyframe frames must increase strictly")
    positions = to_solve.to_solve(np.stack([_vec3(k["position"], f"keyframe {i} position") for i, k in enumerate(keys)]))
    targets = to_solve.to_solve(np.stack([_vec3(k["look_at"], f"keyframe {i} look_at") for i, k in enumerate(keys)]))
    focals = np.array([_focal(k, width, fx) for k in keys])
    query = np.asarray(frames, np.float64)
    p = interpolate_positions(times, positions, query, method)
    t = interpolate_positions(times, targets, query, method)
    f = np.interp(query, times, focals)
    return [look_at(p[i], t[i], up, width, height, f[i]) for i in range(len(frames))]


def _keyframe_camera(key: dict[str, Any], index: int, to_solve: Similarity, up: np.ndarray, width: int, height: int,
                     fx: float) -> Camera:
    """One keyframe: ``position`` + ``look_at``, or a 4×4 OpenGL ``transform_matrix`` (camera-to-world)."""
    fx = _focal(key, width, fx)
    if "transform_matrix" in key:
        gl = np.asarray(key["transform_matrix"], np.float64)
        if gl.shape not in ((4, 4), (3, 4)):
            raise ValueError(f"keyframe {index}: transform_matrix must be 4x4, got shape {gl.shape}")
        cam = Camera.from_opengl_c2w(gl, width, height, fx)
        rot = cam.R @ to_solve.rotation
        centre = to_solve.to_solve(cam.center[None])[0]
        return cam.with_pose(rot, -rot @ centre)
    position = to_solve.to_solve(_vec3(key["position"], f"keyframe {index} position")[None])[0]
    target = to_solve.to_solve(_vec3(key["look_at"], f"keyframe {index} look_at")[None])[0]
    return look_at(position, target, up, width, height, fx)


def _focal(values: dict[str, Any], width: int, default: float) -> float:
    if "fl_x" in values:
        return float(values["fl_x"])
    if "fov_x_deg" in values:
        return width / (2.0 * math.tan(math.radians(float(values["fov_x_deg"])) / 2.0))
    return default


def _vec3(value: Any, what: str) -> np.ndarray:
    v = np.asarray(value, np.float64).reshape(-1)
    if v.shape != (3,) or not np.isfinite(v).all():
        raise ValueError(f"{what} must be three finite numbers, got {value!r}")
    return v


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# --- match-moved plate cameras -------------------------------------------------------------------
def plate_cameras(solve_dir: PathLike, frames: FrameRange, plate_names: dict[int, str] | None = None,
                  size: tuple[int, int] | None = None) -> list[Camera]:
    """The solved camera of every frame in ``frames`` (lens distortion included when the
    solve kept it), resized to ``size`` = (width, height) when given.

    Frames map to image names through ``report.json``; an import without frame numbers
    is matched by the plates' file names (``plate_names``) or, failing that, in order.
    Frames without a registered image are interpolated between their neighbours.
    """
    solve = Path(solve_dir)
    model_dir = solve / "distorted" / "sparse" / "0"
    if not colmap.is_model(model_dir):
        model_dir = solve / "sparse" / "0"
    if not colmap.is_model(model_dir):
        raise InputError(solve, "has no COLMAP model in sparse/0 (run `splatfx solve` first)")
    model = colmap.read_model_cameras(model_dir)
    cameras_file, images_file = model.cameras_file, model.images_file
    by_name = model.by_name()
    names = _frame_images(solve / "report.json", frames, plate_names, sorted(by_name))
    known = {f: by_name[n] for f, n in names.items() if n in by_name}
    if not known:
        raise InputError(images_file, f"holds no camera for any frame of {frames}")
    if size is not None:
        known = {f: _resized(c, size, images_file) for f, c in known.items()}
    lenses = {(c.width, c.height, c.fx, c.fy, c.cx, c.cy, None if c.dist is None else tuple(c.dist)): c
              for c in known.values()}
    for camera in lenses.values():
        try:
            lens_warp(camera)
        except ValueError as exc:
            raise InputError(cameras_file, str(exc)) from None
    keys = sorted(known)
    missing = [f for f in frames if f not in known]
    filled = dict(zip(missing, CameraPath(np.asarray(keys, float), tuple(known[f] for f in keys)).at(missing)))
    return [known[f] if f in known else filled[f] for f in frames]


def _frame_images(report_path: Path, frames: FrameRange, plate_names: dict[int, str] | None,
                  model_names: list[str]) -> dict[int, str]:
    """Frame number → image name of the solve."""
    entries: list[dict] = []
    if report_path.is_file():
        try:
            entries = list(json.loads(report_path.read_text(encoding="utf-8")).get("frames", []))
        except (json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise InputError(report_path, f"is not a splatfx solve report ({exc})") from None
    numbered = {int(e["frame"]): str(e["image"]) for e in entries if e.get("frame") is not None}
    if numbered:
        return numbered
    if plate_names:
        model = set(model_names)
        matched = {f: n for f, n in plate_names.items() if n in model}
        if matched:
            return matched
    if len(model_names) == len(frames):
        return dict(zip(frames, model_names))
    raise InputError(report_path, f"cannot tell which solved image belongs to which frame: {len(model_names)} "
                                  f"images for {len(frames)} frames and no frame numbers or matching names")


def _resized(camera: Camera, size: tuple[int, int], source: Path) -> Camera:
    width, height = size
    if (camera.width, camera.height) == (width, height):
        return camera
    if abs(camera.width / camera.height - width / height) > 0.01 * width / height:
        raise InputError(source, f"solved images are {camera.width}x{camera.height} but the output is "
                                 f"{width}x{height}: the aspect ratios differ")
    return camera.resized(width, height)


# --- lens distortion ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LensWarp:
    """How to render a distorted camera: render ``pinhole`` (no distortion, overscan canvas),
    then :meth:`apply` resamples it onto the distorted image (``size`` = width, height)."""

    pinhole: Camera
    size: tuple[int, int]
    map_x: np.ndarray  # (H,W) float32: pinhole pixel column (centre-at-integer) per output pixel
    map_y: np.ndarray

    def apply(self, image: np.ndarray, nearest: bool = False) -> np.ndarray:
        """``image`` (pinhole canvas, H'×W'[×C]) on the distorted pixel grid (bilinear or nearest)."""
        interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        out = cv2.remap(np.ascontiguousarray(image), self.map_x, self.map_y, interp,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out.reshape(out.shape[:2] + image.shape[2:])


def lens_warp(camera: Camera) -> LensWarp | None:
    """The warp that renders ``camera`` through a pinhole, or None when it has no distortion."""
    if camera.dist is None:
        return None
    width, height = camera.width, camera.height
    x, y = _undistorted_grid(width, height, camera.fx, camera.fy, camera.cx, camera.cy, tuple(camera.dist.tolist()))
    px, py = camera.fx * x + camera.cx, camera.fy * y + camera.cy  # pinhole pixels (centre at +0.5), same K
    pad_l, pad_r = _pad(-px.min(), width), _pad(px.max() - width, width)
    pad_t, pad_b = _pad(-py.min(), height), _pad(py.max() - height, height)
    pinhole = Camera(width + pad_l + pad_r, height + pad_t + pad_b, camera.fx, camera.fy, camera.cx + pad_l,
                     camera.cy + pad_t, camera.R, camera.t)
    return LensWarp(pinhole, (width, height), (px + (pad_l - 0.5)).astype(np.float32),
                    (py + (pad_t - 0.5)).astype(np.float32))


def _pad(extent: float, size: int) -> int:
    if extent > MAX_OVERSCAN * size:
        raise ValueError(f"lens distortion needs {extent:.0f} px of overscan (> {MAX_OVERSCAN:.0%} of {size} px)")
    return max(0, math.ceil(extent)) + 2


@lru_cache(maxsize=8)
def _undistorted_grid(width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                      dist: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised undistorted coordinates of every pixel centre of the distorted image,
    by fixed-point iteration of OpenCV's model (inverse of :meth:`Camera.project`)."""
    k1, k2, p1, p2, k3 = (*dist, 0.0)[:5]
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    xd, yd = (u - cx) / fx, (v - cy) / fy
    x, y = xd.copy(), yd.copy()
    for _ in range(30):
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 ** 3
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        x, y = (xd - dx) / radial, (yd - dy) / radial
    return x, y
