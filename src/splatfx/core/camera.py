"""The ``Camera`` core type and explicit converters between camera conventions.

splatfx's one convention is OpenCV: camera x right, y down, z forward, and extrinsics
stored world-to-camera (``x_cam = R x_world + t``). Other conventions enter and leave
only through the named converters here:

- OpenGL / NeRF / nerfstudio: camera-to-world 4×4, camera x right, y up, looking down −z.
- COLMAP: world-to-camera quaternion ``qvec`` (wxyz) and ``tvec`` — OpenCV axes already.
- LLFF ``poses_bounds.npy``: a 3×5 camera-to-world ``[R | t | hwf]`` whose rotation columns
  are [down, right, backwards], with ``hwf`` for the full-size images, then near/far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from splatfx.core.rotation import quat_to_rotmat, rotmat_to_quat

_GL_TO_CV = np.diag([1.0, -1.0, -1.0])  # flips camera y and z axes (its own inverse)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera with optional OpenCV distortion, world-to-camera in OpenCV axes.

    ``dist`` holds OpenCV coefficients ``(k1, k2, p1, p2[, k3])`` or is None for an ideal
    pinhole. ``R`` (3,3) and ``t`` (3,) are float64.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))
    dist: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "R", np.asarray(self.R, dtype=np.float64).reshape(3, 3))
        object.__setattr__(self, "t", np.asarray(self.t, dtype=np.float64).reshape(3))
        if self.dist is not None:
            dist = np.asarray(self.dist, dtype=np.float64).reshape(-1)
            if dist.size not in (4, 5):
                raise ValueError(f"distortion needs 4 or 5 OpenCV coefficients, got {dist.size}")
            object.__setattr__(self, "dist", None if not dist.any() else dist)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}×{self.height}")
        values = np.array([self.fx, self.fy, self.cx, self.cy, *self.R.ravel(), *self.t])
        if not np.isfinite(values).all():
            raise ValueError("camera has non-finite intrinsics or extrinsics")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    # --- matrices ---------------------------------------------------------------------
    def K(self) -> np.ndarray:
        """Intrinsic matrix (3,3)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def viewmat(self) -> np.ndarray:
        """World-to-camera 4×4 (OpenCV axes), the ``viewmats`` the renderer takes."""
        m = np.eye(4)
        m[:3, :3] = self.R
        m[:3, 3] = self.t
        return m

    def c2w(self) -> np.ndarray:
        """Camera-to-world 4×4 in OpenCV axes."""
        m = np.eye(4)
        m[:3, :3] = self.R.T
        m[:3, 3] = self.center
        return m

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return -self.R.T @ self.t

    @property
    def forward(self) -> np.ndarray:
        """Viewing direction (camera +z) in world coordinates."""
        return self.R[2].copy()

    @property
    def up(self) -> np.ndarray:
        """Image-up direction (camera −y) in world coordinates."""
        return -self.R[1]

    def fov_x(self) -> float:
        return 2.0 * float(np.arctan(self.width / (2.0 * self.fx)))

    def fov_y(self) -> float:
        return 2.0 * float(np.arctan(self.height / (2.0 * self.fy)))

    # --- projection ---------------------------------------------------------------------
    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """Points (N,3) in camera coordinates."""
        return np.asarray(points, dtype=np.float64) @ self.R.T + self.t

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N,2) (pixel centres at +0.5) and depths (N,) of world points.

        Applies the OpenCV distortion model when ``dist`` is set. Points behind the camera
        get depth ≤ 0 and meaningless pixels; callers mask them.
        """
        cam = self.world_to_camera(points)
        z = cam[:, 2]
        safe = np.where(np.abs(z) < 1e-12, 1e-12, z)
        x, y = cam[:, 0] / safe, cam[:, 1] / safe
        if self.dist is not None:
            k1, k2, p1, p2, k3 = (*self.dist, 0.0)[:5]
            r2 = x * x + y * y
            radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 ** 3
            x, y = (
                x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y,
            )
        return np.stack([self.fx * x + self.cx, self.fy * y + self.cy], axis=1), z

    # --- changes --------------------------------------------------------------------------
    def scaled(self, factor: float) -> "Camera":
        """The same camera for images resized by ``factor`` (pixel-centre convention kept)."""
        return replace(
            self,
            width=int(round(self.width * factor)),
            height=int(round(self.height * factor)),
            fx=self.fx * factor,
            fy=self.fy * factor,
            cx=self.cx * factor,
            cy=self.cy * factor,
        )

    def resized(self, width: int, height: int) -> "Camera":
        """The same camera for images resampled to ``width``×``height``."""
        sx, sy = width / self.width, height / self.height
        return replace(self, width=width, height=height, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy)

    def with_pose(self, R: np.ndarray, t: np.ndarray) -> "Camera":
        return replace(self, R=R, t=t)

    # --- OpenGL / NeRF --------------------------------------------------------------------
    @classmethod
    def from_opengl_c2w(cls, c2w: np.ndarray, width: int, height: int, fx: float, fy: float | None = None,
                        cx: float | None = None, cy: float | None = None, dist: np.ndarray | None = None) -> "Camera":
        """From an OpenGL/NeRF camera-to-world matrix (3×4 or 4×4; x right, y up, −z forward)."""
        c2w = np.asarray(c2w, dtype=np.float64)
        rot_c2w = c2w[:3, :3] @ _GL_TO_CV
        R = rot_c2w.T
        t = -R @ c2w[:3, 3]
        return cls(width, height, fx, fx if fy is None else fy, width / 2.0 if cx is None else cx,
                   height / 2.0 if cy is None else cy, R, t, dist)

    def to_opengl_c2w(self) -> np.ndarray:
        """Camera-to-world 4×4 in OpenGL/NeRF axes."""
        m = np.eye(4)
        m[:3, :3] = self.R.T @ _GL_TO_CV
        m[:3, 3] = self.center
        return m

    # --- COLMAP ---------------------------------------------------------------------------
    @classmethod
    def from_colmap(cls, qvec: np.ndarray, tvec: np.ndarray, width: int, height: int, fx: float, fy: float,
                    cx: float, cy: float, dist: np.ndarray | None = None) -> "Camera":
        """From COLMAP's world-to-camera ``qvec`` (wxyz) and ``tvec`` (OpenCV axes already)."""
        qvec = np.asarray(qvec, dtype=np.float64)
        norm = float(np.linalg.norm(qvec))
        if not (math.isfinite(norm) and norm > 0.0):
            raise ValueError(f"camera has a zero or non-finite rotation quaternion (qvec {qvec.tolist()})")
        return cls(width, height, fx, fy, cx, cy, quat_to_rotmat(qvec), tvec, dist)

    def to_colmap(self) -> tuple[np.ndarray, np.ndarray]:
        """COLMAP ``(qvec wxyz, tvec)`` of this camera."""
        return rotmat_to_quat(self.R), self.t.copy()

    # --- LLFF -----------------------------------------------------------------------------
    @classmethod
    def from_llff(cls, pose: np.ndarray, width: int | None = None, height: int | None = None) -> "Camera":
        """From one LLFF 3×5 ``[R | t | hwf]`` (or the first 15 values of a poses_bounds row).

        ``hwf`` describes the full-size images; pass the size of the images actually used
        (e.g. ``images_8``) as ``width``/``height`` and the intrinsics are scaled to it
        (principal point at the image centre, as LLFF assumes).
        """
        pose = np.asarray(pose, dtype=np.float64).reshape(-1)[:15].reshape(3, 5)
        full_h, full_w, focal = pose[:, 4]
        down, right, back, center = pose[:, 0], pose[:, 1], pose[:, 2], pose[:, 3]
        gl_c2w = np.eye(4)
        gl_c2w[:3, :3] = np.stack([right, -down, back], axis=1)  # OpenGL columns: right, up, back
        gl_c2w[:3, 3] = center
        if not (1.0 <= full_w < 1e9 and 1.0 <= full_h < 1e9):
            raise ValueError(f"LLFF image size (hwf) {full_w:g}x{full_h:g} is not a plausible image size")
        width = int(round(full_w)) if width is None else width
        height = int(round(full_h)) if height is None else height
        sx, sy = width / full_w, height / full_h
        return cls.from_opengl_c2w(gl_c2w, width, height, focal * sx, focal * sy, width / 2.0, height / 2.0)

    def to_llff(self, full_width: int | None = None, full_height: int | None = None) -> np.ndarray:
        """LLFF 3×5 ``[R | t | hwf]``; ``hwf`` rescaled to ``full_width``×``full_height`` when given."""
        gl = self.to_opengl_c2w()
        right, up, back = gl[:3, 0], gl[:3, 1], gl[:3, 2]
        full_w = self.width if full_width is None else full_width
        full_h = self.height if full_height is None else full_height
        focal = self.fx * full_w / self.width
        return np.concatenate([np.stack([-up, right, back, gl[:3, 3]], axis=1), [[full_h], [full_w], [focal]]], axis=1)


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray, width: int, height: int, fx: float,
            fy: float | None = None) -> Camera:
    """A camera at ``center`` looking at ``target`` with image-up close to ``up`` (world)."""
    center = np.asarray(center, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - center
    forward /= np.linalg.norm(forward)
    right = np.cross(-np.asarray(up, dtype=np.float64), forward)  # x = y × z in OpenCV axes
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("look_at: up is parallel to the viewing direction")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return Camera(width, height, fx, fx if fy is None else fy, width / 2.0, height / 2.0, R, -R @ center)
