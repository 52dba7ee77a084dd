"""Quaternion and rotation-matrix helpers (quaternions are wxyz, Hamilton product)."""

from __future__ import annotations

import numpy as np
import torch


def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix (..., 3, 3) of quaternions (..., 4) wxyz (normalised first)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def rotmat_to_quat(r: np.ndarray) -> np.ndarray:
    """Unit quaternion wxyz with w ≥ 0 of a rotation matrix (3, 3) (Shepperd's method)."""
    r = np.asarray(r, dtype=np.float64)
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = np.array([0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s])
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = np.array([(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s])
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = np.array([(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = np.array([(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s])
    q = q / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a ⊗ b`` of wxyz quaternions (broadcasting over leading dims)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def is_rotation(r: np.ndarray, tol: float = 1e-6) -> bool:
    """True when ``r`` is a proper rotation matrix (orthonormal, determinant +1)."""
    r = np.asarray(r, dtype=np.float64)
    return r.shape == (3, 3) and np.allclose(r @ r.T, np.eye(3), atol=tol) and abs(np.linalg.det(r) - 1) < tol


def rotmats_to_quats(r: np.ndarray) -> np.ndarray:
    """Unit quaternions (N,4) wxyz with w ≥ 0 of rotation matrices (N,3,3), vectorised."""
    r = np.asarray(r, dtype=np.float64)
    m00, m11, m22 = r[:, 0, 0], r[:, 1, 1], r[:, 2, 2]
    q = np.stack(
        [
            np.sqrt(np.maximum(0.0, 1 + m00 + m11 + m22)),
            np.sqrt(np.maximum(0.0, 1 + m00 - m11 - m22)),
            np.sqrt(np.maximum(0.0, 1 - m00 + m11 - m22)),
            np.sqrt(np.maximum(0.0, 1 - m00 - m11 + m22)),
        ],
        axis=1,
    ) / 2.0
    q[:, 1] = np.copysign(q[:, 1], r[:, 2, 1] - r[:, 1, 2])
    q[:, 2] = np.copysign(q[:, 2], r[:, 0, 2] - r[:, 2, 0])
    q[:, 3] = np.copysign(q[:, 3], r[:, 1, 0] - r[:, 0, 1])
    return q / np.linalg.norm(q, axis=1, keepdims=True)
