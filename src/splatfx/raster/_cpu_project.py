"""EWA projection of 3D Gaussians to 2D screen-space Gaussians, forward and backward (numba).

The arithmetic follows gsplat 1.5.3's ``fully_fused_projection`` (pinhole, non-packed):

- world→camera: ``μ_c = R μ + t``, ``Σ_c = R Σ Rᵀ`` with ``Σ = (R_q S)(R_q S)ᵀ``;
- pinhole Jacobian ``J`` evaluated at ``x/z, y/z`` clamped to the image plus 30 % of the
  half field of view on each side (for a centred principal point: ``±1.3·tan(fov/2)``);
  the projected mean itself uses the unclamped position;
- ``Σ₂ = J Σ_c Jᵀ + eps2d·I``; the conic is ``Σ₂⁻¹``; the antialiasing compensation is
  ``sqrt(det(Σ₂ − eps2d·I) / det Σ₂)``;
- culling: depth outside ``(near, far)``, ``det Σ₂ ≤ 0``, (compensated) opacity below
  1/255, or a bounding box outside the image. The box half-size is
  ``ceil(k·sqrt(Σ₂[i,i]))`` with gsplat's opacity-aware ``k = min(3.33, sqrt(2 ln(255·o)))``,
  which is exactly where ``o·exp(-power)`` falls below 1/255 along each axis, so no pixel
  outside the box can ever receive a contribution.

Everything is computed in float64 per Gaussian and stored as float32. Work is split over
threads by Gaussian (:func:`parallel_for`); each Gaussian's rows are written by one thread
only, so results are deterministic.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from splatfx.raster._cpu_threads import claim, parallel_for

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_RADIUS = 1.0e9  # radii of absurdly large Gaussians are clamped to fit int32

# Small matrices are tuples (row-major): numba keeps them in registers, and the kernels
# touch the input arrays only by element, so threads share no reference counts.


@njit(nogil=True, cache=True)
def _mul33(a: tuple, b: tuple) -> tuple:
    """``a @ b`` for 3×3 row-major tuples."""
    return (
        a[0] * b[0] + a[1] * b[3] + a[2] * b[6], a[0] * b[1] + a[1] * b[4] + a[2] * b[7],
        a[0] * b[2] + a[1] * b[5] + a[2] * b[8],
        a[3] * b[0] + a[4] * b[3] + a[5] * b[6], a[3] * b[1] + a[4] * b[4] + a[5] * b[7],
        a[3] * b[2] + a[4] * b[5] + a[5] * b[8],
        a[6] * b[0] + a[7] * b[3] + a[8] * b[6], a[6] * b[1] + a[7] * b[4] + a[8] * b[7],
        a[6] * b[2] + a[7] * b[5] + a[8] * b[8],
    )


@njit(nogil=True, cache=True)
def _t33(a: tuple) -> tuple:
    """Transpose of a 3×3 row-major tuple."""
    return (a[0], a[3], a[6], a[1], a[4], a[7], a[2], a[5], a[8])


@njit(nogil=True, cache=True)
def _rotmat(w: float, x: float, y: float, z: float) -> tuple:
    """Rotation matrix of the unit quaternion (w, x, y, z)."""
    return (
        1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y),
        2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x),
        2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y),
    )


@njit(nogil=True, cache=True)
def _unit_quat(qw: float, qx: float, qy: float, qz: float) -> tuple:
    """(ŵ, x̂, ŷ, ẑ, |q|)."""
    norm = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
    return qw / norm, qx / norm, qy / norm, qz / norm, norm


@njit(nogil=True, cache=True)
def _scaled_rot(r: tuple, sx: float, sy: float, sz: float) -> tuple:
    """``M = R diag(s)``."""
    return (r[0] * sx, r[1] * sy, r[2] * sz, r[3] * sx, r[4] * sy, r[5] * sz, r[6] * sx, r[7] * sy, r[8] * sz)


@njit(nogil=True, cache=True)
def _camera(viewmats: np.ndarray, ks: np.ndarray, c: int) -> tuple:
    """Rotation (9-tuple), translation and intrinsics of camera ``c``."""
    rot = (
        viewmats[c, 0, 0], viewmats[c, 0, 1], viewmats[c, 0, 2],
        viewmats[c, 1, 0], viewmats[c, 1, 1], viewmats[c, 1, 2],
        viewmats[c, 2, 0], viewmats[c, 2, 1], viewmats[c, 2, 2],
    )
    trans = (viewmats[c, 0, 3], viewmats[c, 1, 3], viewmats[c, 2, 3])
    return rot, trans, ks[c, 0, 0], ks[c, 1, 1], ks[c, 0, 2], ks[c, 1, 2]


@njit(nogil=True, cache=True)
def _fov_limits(fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> tuple:
    """gsplat's clamp range for x/z (+, −) and y/z (+, −): the image plus 0.3·tan(fov/2) per side."""
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    return (
        (width - cx) / fx + 0.3 * tan_fovx,
        cx / fx + 0.3 * tan_fovx,
        (height - cy) / fy + 0.3 * tan_fovy,
        cy / fy + 0.3 * tan_fovy,
    )


@njit(nogil=True, cache=True)
def _jacobian(x: float, y: float, z: float, lims: tuple, fx: float, fy: float) -> tuple:
    """Non-zero entries (J00, J02, J11, J12) of the pinhole Jacobian at the clamped position, and tx, ty."""
    rz = 1.0 / z
    tx = z * min(lims[0], max(-lims[1], x * rz))
    ty = z * min(lims[2], max(-lims[3], y * rz))
    return fx * rz, -fx * tx * rz * rz, fy * rz, -fy * ty * rz * rz, tx, ty


@njit(nogil=True, cache=True)
def _cov2d(cc: tuple, j00: float, j02: float, j11: float, j12: float) -> tuple:
    """(Σ₂₀₀, Σ₂₀₁, Σ₂₁₁) of ``J Σc Jᵀ`` without the low-pass."""
    s00 = j00 * (j00 * cc[0] + j02 * cc[6]) + j02 * (j00 * cc[2] + j02 * cc[8])
    s01 = j11 * (j00 * cc[1] + j02 * cc[7]) + j12 * (j00 * cc[2] + j02 * cc[8])
    s11 = j11 * (j11 * cc[4] + j12 * cc[7]) + j12 * (j11 * cc[5] + j12 * cc[8])
    return s00, s01, s11


@njit(nogil=True, fastmath=False, cache=True)
def _project_forward_kernel(
    work: np.ndarray,  # [next, stop, chunk]: claimed with claim() (see parallel_for)
    means: np.ndarray,
    quats: np.ndarray,
    scales: np.ndarray,
    opacities: np.ndarray,
    viewmats: np.ndarray,
    ks: np.ndarray,
    width: int,
    height: int,
    eps2d: float,
    near: float,
    far: float,
    antialiased: bool,
    radii: np.ndarray,
    means2d: np.ndarray,
    depths: np.ndarray,
    conics: np.ndarray,
    comps: np.ndarray,
) -> None:
    """Project every Gaussian into every camera (outputs pre-zeroed by the caller)."""
    start, stop = claim(work)
    while start < stop:
        for g in range(start, stop):
            w, x, y, z, _ = _unit_quat(float(quats[g, 0]), float(quats[g, 1]), float(quats[g, 2]), float(quats[g, 3]))
            m = _scaled_rot(_rotmat(w, x, y, z), float(scales[g, 0]), float(scales[g, 1]), float(scales[g, 2]))
            cov = _mul33(m, _t33(m))
            mu0, mu1, mu2 = float(means[g, 0]), float(means[g, 1]), float(means[g, 2])
            for c in range(viewmats.shape[0]):
                rot, tr, fx, fy, cx, cy = _camera(viewmats, ks, c)
                mc0 = rot[0] * mu0 + rot[1] * mu1 + rot[2] * mu2 + tr[0]
                mc1 = rot[3] * mu0 + rot[4] * mu1 + rot[5] * mu2 + tr[1]
                mc2 = rot[6] * mu0 + rot[7] * mu1 + rot[8] * mu2 + tr[2]
                if not (mc2 > near and mc2 < far):
                    continue
                j00, j02, j11, j12, _, _ = _jacobian(mc0, mc1, mc2, _fov_limits(fx, fy, cx, cy, width, height), fx, fy)
                s00, s01, s11 = _cov2d(_mul33(_mul33(rot, cov), _t33(rot)), j00, j02, j11, j12)
                det_orig = s00 * s11 - s01 * s01
                s00 += eps2d
                s11 += eps2d
                det = s00 * s11 - s01 * s01
                if not det > 0.0:
                    continue
                comp = math.sqrt(max(0.0, det_orig / det)) if antialiased else 1.0
                opac = float(opacities[g]) * comp
                if opac < ALPHA_THRESHOLD:
                    continue
                extend = min(3.33, math.sqrt(2.0 * math.log(opac / ALPHA_THRESHOLD)))
                rx = min(math.ceil(extend * math.sqrt(s00)), MAX_RADIUS)
                ry = min(math.ceil(extend * math.sqrt(s11)), MAX_RADIUS)
                u = fx * mc0 / mc2 + cx
                v = fy * mc1 / mc2 + cy
                if u + rx <= 0 or u - rx >= width or v + ry <= 0 or v - ry >= height:
                    continue
                radii[c, g, 0] = np.int32(rx)
                radii[c, g, 1] = np.int32(ry)
                means2d[c, g, 0] = u
                means2d[c, g, 1] = v
                depths[c, g] = mc2
                conics[c, g, 0] = s11 / det
                conics[c, g, 1] = -s01 / det
                conics[c, g, 2] = s00 / det
                comps[c, g] = comp
        start, stop = claim(work)


def project_forward(
    means: np.ndarray,
    quats: np.ndarray,
    scales: np.ndarray,
    opacities: np.ndarray,
    viewmats: np.ndarray,
    ks: np.ndarray,
    width: int,
    height: int,
    eps2d: float,
    near: float,
    far: float,
    antialiased: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Project every (camera, Gaussian) pair; culled pairs get radii 0 and zero outputs.

    Inputs: means (N,3), quats (N,4) wxyz of any non-zero norm, scales (N,3), opacities (N,)
    float32 (opacities only decide culling and the box size); viewmats (C,4,4) and
    Ks (C,3,3) float64. Returns radii (C,N,2) int32, means2d (C,N,2), depths (C,N),
    conics (C,N,3) holding (Σ⁻¹₀₀, Σ⁻¹₀₁, Σ⁻¹₁₁), and compensations (C,N) (1 unless
    ``antialiased``; 0 where culled), all float32.
    """
    n, c_count = means.shape[0], viewmats.shape[0]
    radii = np.zeros((c_count, n, 2), dtype=np.int32)
    means2d = np.zeros((c_count, n, 2), dtype=np.float32)
    depths = np.zeros((c_count, n), dtype=np.float32)
    conics = np.zeros((c_count, n, 3), dtype=np.float32)
    comps = np.zeros((c_count, n), dtype=np.float32)
    if n:
        parallel_for(
            _project_forward_kernel, n, means, quats, scales, opacities, viewmats, ks, int(width), int(height),
            float(eps2d), float(near), float(far), bool(antialiased), radii, means2d, depths, conics, comps, grain=1024,
        )
    return radii, means2d, depths, conics, comps


@njit(nogil=True, cache=True)
def _quat_vjp(v_r: tuple, w: float, x: float, y: float, z: float, norm: float) -> tuple:
    """Gradient w.r.t. the un-normalised quaternion, given ∂L/∂R (9-tuple) at q̂ = (w, x, y, z)."""
    g = v_r
    vw = 2.0 * (-z * g[1] + y * g[2] + z * g[3] - x * g[5] - y * g[6] + x * g[7])
    vx = 2.0 * (y * g[1] + z * g[2] + y * g[3] - 2.0 * x * g[4] - w * g[5] + z * g[6] + w * g[7] - 2.0 * x * g[8])
    vy = 2.0 * (-2.0 * y * g[0] + x * g[1] + w * g[2] + x * g[3] + z * g[5] - w * g[6] + z * g[7] - 2.0 * y * g[8])
    vz = 2.0 * (-2.0 * z * g[0] - w * g[1] + x * g[2] + w * g[3] - 2.0 * z * g[4] + y * g[5] + x * g[6] + y * g[7])
    # through q̂ = q / |q|: v_q = (v_q̂ − q̂ (q̂·v_q̂)) / |q|
    dot = w * vw + x * vx + y * vy + z * vz
    return (vw - w * dot) / norm, (vx - x * dot) / norm, (vy - y * dot) / norm, (vz - z * dot) / norm


@njit(nogil=True, cache=True)
def _conic_vjp(
    s00: float, s01: float, s11: float, eps2d: float, antialiased: bool, v_a: float, v_b: float, v_c: float,
    v_comp: float,
) -> tuple:
    """∂L/∂Σ₂ (before the low-pass; symmetric, as (00, 01, 11)) from the conic and compensation gradients.

    ``Σ₂`` here already includes ``eps2d``. conic = Σ₂⁻¹ stores (inv00, inv01, inv11), so
    inv01 and inv10 share ``v_b``: ``∂L/∂Σ₂ = −Σ₂⁻¹ V Σ₂⁻¹`` with ``V = [[v_a, v_b/2], [v_b/2, v_c]]``.
    """
    det = s00 * s11 - s01 * s01
    i00, i01, i11 = s11 / det, -s01 / det, s00 / det
    h = 0.5 * v_b
    # T = inv V
    t00 = i00 * v_a + i01 * h
    t01 = i00 * h + i01 * v_c
    t10 = i01 * v_a + i11 * h
    t11 = i01 * h + i11 * v_c
    g00 = -(t00 * i00 + t01 * i01)
    g01 = -(t00 * i01 + t01 * i11)
    g11 = -(t10 * i01 + t11 * i11)
    if antialiased:
        # comp = sqrt(det(Σ₂ − εI)/det Σ₂): ∂comp/∂Σ = ((1 − comp²) Σ₂⁻¹ − ε det(Σ₂⁻¹) I) / (2 comp)
        det_orig = (s00 - eps2d) * (s11 - eps2d) - s01 * s01
        comp = math.sqrt(max(0.0, det_orig / det))
        if comp > 0.0:
            k = 0.5 * v_comp / comp
            one_m = 1.0 - comp * comp
            det_inv = i00 * i11 - i01 * i01
            g00 += k * (one_m * i00 - eps2d * det_inv)
            g01 += k * one_m * i01
            g11 += k * (one_m * i11 - eps2d * det_inv)
    return g00, g01, g11


@njit(nogil=True, fastmath=False, cache=True)
def _project_backward_kernel(
    work: np.ndarray,  # [next, stop, chunk]: claimed with claim() (see parallel_for)
    means: np.ndarray,
    quats: np.ndarray,
    scales: np.ndarray,
    viewmats: np.ndarray,
    ks: np.ndarray,
    width: int,
    height: int,
    eps2d: float,
    antialiased: bool,
    radii: np.ndarray,
    v_means2d: np.ndarray,
    v_depths: np.ndarray,
    v_conics: np.ndarray,
    v_comps: np.ndarray,
    v_means: np.ndarray,
    v_quats: np.ndarray,
    v_scales: np.ndarray,
) -> None:
    """Gradients of every Gaussian, its cameras summed in order (outputs pre-zeroed by the caller)."""
    start, stop = claim(work)
    while start < stop:
        for g in range(start, stop):
            visible = False
            for c in range(viewmats.shape[0]):
                if radii[c, g, 0] > 0 and radii[c, g, 1] > 0:
                    visible = True
            if not visible:
                continue
            sx, sy, sz = float(scales[g, 0]), float(scales[g, 1]), float(scales[g, 2])
            w, x, y, z, qnorm = _unit_quat(
                float(quats[g, 0]), float(quats[g, 1]), float(quats[g, 2]), float(quats[g, 3])
            )
            rq = _rotmat(w, x, y, z)
            m = _scaled_rot(rq, sx, sy, sz)
            cov = _mul33(m, _t33(m))
            mu0, mu1, mu2 = float(means[g, 0]), float(means[g, 1]), float(means[g, 2])
            vm0 = 0.0
            vm1 = 0.0
            vm2 = 0.0
            v_cov = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
            for c in range(viewmats.shape[0]):
                if radii[c, g, 0] <= 0 or radii[c, g, 1] <= 0:
                    continue
                rot, tr, fx, fy, cx, cy = _camera(viewmats, ks, c)
                px = rot[0] * mu0 + rot[1] * mu1 + rot[2] * mu2 + tr[0]
                py = rot[3] * mu0 + rot[4] * mu1 + rot[5] * mu2 + tr[1]
                pz = rot[6] * mu0 + rot[7] * mu1 + rot[8] * mu2 + tr[2]
                lims = _fov_limits(fx, fy, cx, cy, width, height)
                j00, j02, j11, j12, tx, ty = _jacobian(px, py, pz, lims, fx, fy)
                cc = _mul33(_mul33(rot, cov), _t33(rot))
                s00, s01, s11 = _cov2d(cc, j00, j02, j11, j12)
                g00, g01, g11 = _conic_vjp(
                    s00 + eps2d, s01, s11 + eps2d, eps2d, antialiased,
                    float(v_conics[c, g, 0]), float(v_conics[c, g, 1]), float(v_conics[c, g, 2]), float(v_comps[c, g]),
                )
                # Σ₂ = J Σc Jᵀ with J rows (j00, 0, j02), (0, j11, j12): ∂L/∂Σc = Jᵀ G J
                ja = (j00, 0.0, j02)
                jb = (0.0, j11, j12)
                v_cc = (
                    ja[0] * g00 * ja[0] + (ja[0] * g01 * jb[0]) * 2.0 + jb[0] * g11 * jb[0],
                    ja[0] * g00 * ja[1] + ja[0] * g01 * jb[1] + jb[0] * g01 * ja[1] + jb[0] * g11 * jb[1],
                    ja[0] * g00 * ja[2] + ja[0] * g01 * jb[2] + jb[0] * g01 * ja[2] + jb[0] * g11 * jb[2],
                    ja[1] * g00 * ja[0] + ja[1] * g01 * jb[0] + jb[1] * g01 * ja[0] + jb[1] * g11 * jb[0],
                    ja[1] * g00 * ja[1] + (ja[1] * g01 * jb[1]) * 2.0 + jb[1] * g11 * jb[1],
                    ja[1] * g00 * ja[2] + ja[1] * g01 * jb[2] + jb[1] * g01 * ja[2] + jb[1] * g11 * jb[2],
                    ja[2] * g00 * ja[0] + ja[2] * g01 * jb[0] + jb[2] * g01 * ja[0] + jb[2] * g11 * jb[0],
                    ja[2] * g00 * ja[1] + ja[2] * g01 * jb[1] + jb[2] * g01 * ja[1] + jb[2] * g11 * jb[1],
                    ja[2] * g00 * ja[2] + (ja[2] * g01 * jb[2]) * 2.0 + jb[2] * g11 * jb[2],
                )
                # ∂L/∂J = (G + Gᵀ) J Σc = 2 G J Σc (G symmetric); only J00, J02, J11, J12 depend on the mean.
                gj0 = (g00 * ja[0] + g01 * jb[0], g00 * ja[1] + g01 * jb[1], g00 * ja[2] + g01 * jb[2])
                gj1 = (g01 * ja[0] + g11 * jb[0], g01 * ja[1] + g11 * jb[1], g01 * ja[2] + g11 * jb[2])
                vj00 = 2.0 * (gj0[0] * cc[0] + gj0[1] * cc[3] + gj0[2] * cc[6])
                vj02 = 2.0 * (gj0[0] * cc[2] + gj0[1] * cc[5] + gj0[2] * cc[8])
                vj11 = 2.0 * (gj1[0] * cc[1] + gj1[1] * cc[4] + gj1[2] * cc[7])
                vj12 = 2.0 * (gj1[0] * cc[2] + gj1[1] * cc[5] + gj1[2] * cc[8])
                rz = 1.0 / pz
                rz2 = rz * rz
                rz3 = rz2 * rz
                vu, vv = float(v_means2d[c, g, 0]), float(v_means2d[c, g, 1])
                # u = fx x/z + cx, v = fy y/z + cy (unclamped), plus the depth output z
                vx = fx * rz * vu
                vy = fy * rz * vv
                vz = -(fx * px * vu + fy * py * vv) * rz2 + float(v_depths[c, g])
                # J02 = −fx tx/z², J12 = −fy ty/z²; tx = x inside the clamp range, z·limit outside
                if px * rz <= lims[0] and px * rz >= -lims[1]:
                    vx += -fx * rz2 * vj02
                else:
                    vz += -fx * rz3 * vj02 * tx
                if py * rz <= lims[2] and py * rz >= -lims[3]:
                    vy += -fy * rz2 * vj12
                else:
                    vz += -fy * rz3 * vj12 * ty
                vz += -fx * rz2 * vj00 - fy * rz2 * vj11 + 2.0 * fx * tx * rz3 * vj02 + 2.0 * fy * ty * rz3 * vj12
                # μc = R μ + t ; Σc = R Σ Rᵀ
                vm0 += rot[0] * vx + rot[3] * vy + rot[6] * vz
                vm1 += rot[1] * vx + rot[4] * vy + rot[7] * vz
                vm2 += rot[2] * vx + rot[5] * vy + rot[8] * vz
                d = _mul33(_mul33(_t33(rot), v_cc), rot)
                v_cov = (
                    v_cov[0] + d[0], v_cov[1] + d[1], v_cov[2] + d[2], v_cov[3] + d[3], v_cov[4] + d[4],
                    v_cov[5] + d[5], v_cov[6] + d[6], v_cov[7] + d[7], v_cov[8] + d[8],
                )
            # Σ = M Mᵀ: ∂L/∂M = (G + Gᵀ) M ; M = R_q diag(s)
            sym = (
                2.0 * v_cov[0], v_cov[1] + v_cov[3], v_cov[2] + v_cov[6],
                v_cov[3] + v_cov[1], 2.0 * v_cov[4], v_cov[5] + v_cov[7],
                v_cov[6] + v_cov[2], v_cov[7] + v_cov[5], 2.0 * v_cov[8],
            )
            v_m = _mul33(sym, m)
            v_scales[g, 0] = rq[0] * v_m[0] + rq[3] * v_m[3] + rq[6] * v_m[6]
            v_scales[g, 1] = rq[1] * v_m[1] + rq[4] * v_m[4] + rq[7] * v_m[7]
            v_scales[g, 2] = rq[2] * v_m[2] + rq[5] * v_m[5] + rq[8] * v_m[8]
            v_rq = _scaled_rot(v_m, sx, sy, sz)
            vq = _quat_vjp(v_rq, w, x, y, z, qnorm)
            v_quats[g, 0] = vq[0]
            v_quats[g, 1] = vq[1]
            v_quats[g, 2] = vq[2]
            v_quats[g, 3] = vq[3]
            v_means[g, 0] = vm0
            v_means[g, 1] = vm1
            v_means[g, 2] = vm2
        start, stop = claim(work)


def project_backward(
    means: np.ndarray,
    quats: np.ndarray,
    scales: np.ndarray,
    viewmats: np.ndarray,
    ks: np.ndarray,
    width: int,
    height: int,
    eps2d: float,
    antialiased: bool,
    radii: np.ndarray,
    v_means2d: np.ndarray,
    v_depths: np.ndarray,
    v_conics: np.ndarray,
    v_comps: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vector-Jacobian product of :func:`project_forward` w.r.t. means, quats and scales.

    Parallel over Gaussians; each sums its cameras in order, so the result is deterministic.
    Culled pairs (radii 0) contribute nothing, as in gsplat. Returns float32
    (N,3), (N,4), (N,3).
    """
    n = means.shape[0]
    v_means = np.zeros((n, 3), dtype=np.float32)
    v_quats = np.zeros((n, 4), dtype=np.float32)
    v_scales = np.zeros((n, 3), dtype=np.float32)
    if n:
        parallel_for(
            _project_backward_kernel, n, means, quats, scales, viewmats, ks, int(width), int(height), float(eps2d),
            bool(antialiased), radii, v_means2d, v_depths, v_conics, v_comps, v_means, v_quats, v_scales, grain=1024,
        )
    return v_means, v_quats, v_scales
