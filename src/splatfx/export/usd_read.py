"""Reading an exported stage back: its splats at a frame, its cameras, and a render of them.

:func:`read_splats` gathers every visible ``ParticleField3DGaussianSplat`` at a time code,
with its prim's local-to-world transform applied (positions, orientations, scales and the
SH coefficients, rotated), into one :class:`~splatfx.core.gaussians.Gaussians` in the
stage's world frame. :func:`read_camera` turns a ``UsdGeom.Camera`` written by
:mod:`splatfx.export.usd` back into a :class:`~splatfx.core.camera.Camera` (lens included).
:func:`render_rgba` draws them as ``splatfx render`` does, which is how the export is
checked against the shot's own render EXRs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from splatfx.core.camera import Camera
from splatfx.core.errors import InputError
from splatfx.core.gaussians import Gaussians
from splatfx.export.usd import LENS_PREFIX, _pxr
from splatfx.raster.views import sh_colours
from splatfx.render.passes import render_features, to_linear_premultiplied

PathLike = str | os.PathLike[str]


def open_stage(path: PathLike):
    """The stage at ``path``; InputError naming it when it cannot be opened."""
    _, _, Usd, _, _, _, _ = _pxr()
    if not Path(path).is_file():
        raise InputError(path, "does not exist")
    try:
        stage = Usd.Stage.Open(str(path))
    except Exception as exc:  # noqa: BLE001 - pxr raises Tf.ErrorException with a multi-line text
        raise InputError(path, f"is not a readable USD stage ({str(exc).splitlines()[-1].strip()})") from None
    if stage is None:
        raise InputError(path, "is not a readable USD stage")
    return stage


def read_splats(stage, frame: float) -> Gaussians:
    """Every visible splat field of ``stage`` at time ``frame``, in world coordinates."""
    Gf, _, Usd, UsdGeom, _, UsdVol, _ = _pxr()
    time = Usd.TimeCode(frame)
    xforms = UsdGeom.XformCache(time)
    parts = []
    for prim in stage.Traverse():
        if not prim.IsA(UsdVol.ParticleField3DGaussianSplat):
            continue
        if UsdGeom.Imageable(prim).ComputeVisibility(time) == UsdGeom.Tokens.invisible:
            continue
        local = field_gaussians(UsdVol.ParticleField3DGaussianSplat(prim), time)
        if len(local):
            parts.append(_transformed(local, np.array(xforms.GetLocalToWorldTransform(prim)).T))
    if not parts:
        return Gaussians.empty()
    degree = max(p.sh_degree for p in parts)
    return Gaussians.cat([_with_degree(p, degree) for p in parts])


def field_gaussians(field, time) -> Gaussians:
    """One splat field's Gaussians in its own space (the schema's arrays turned into
    splatfx's log-scales, opacity logits and (N, K, 3) SH)."""
    positions = np.array(field.GetPositionsAttr().Get(time) or [], np.float32).reshape(-1, 3)
    n = len(positions)
    quats = np.array(field.GetOrientationsAttr().Get(time) or [], np.float32).reshape(-1, 4)
    quats = quats[:, [3, 0, 1, 2]] if len(quats) == n else np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    scales = np.array(field.GetScalesAttr().Get(time) or [], np.float32).reshape(-1, 3)
    scales = scales if len(scales) == n else np.ones((n, 3), np.float32)
    opacities = np.array(field.GetOpacitiesAttr().Get(time) or [], np.float64).reshape(-1)
    opacities = np.clip(opacities if len(opacities) == n else np.ones(n), 1e-7, 1.0 - 1e-7)
    degree = int(field.GetRadianceSphericalHarmonicsDegreeAttr().Get())
    k = (degree + 1) ** 2
    coefficients = np.array(field.GetRadianceSphericalHarmonicsCoefficientsAttr().Get(time) or [],
                              np.float32).reshape(-1, 3)
    sh = coefficients[: n * k].reshape(n, k, 3) if len(coefficients) >= n * k else np.zeros((n, 1, 3), np.float32)
    return Gaussians.from_arrays({"means": positions, "quats": quats, "log_scales": np.log(scales),
                                  "opacity_logits": np.log(opacities / (1.0 - opacities)), "sh": sh},
                                 source=str(field.GetPath()))


def _transformed(g: Gaussians, matrix: np.ndarray) -> Gaussians:
    """``g`` under the 4×4 similarity ``matrix`` (column vectors)."""
    linear = matrix[:3, :3]
    scale = float(np.cbrt(np.linalg.det(linear)))
    rotation = linear / scale
    if np.allclose(rotation, np.eye(3), atol=1e-12) and abs(scale - 1.0) < 1e-12:
        return g.replace(means=g.means + torch.from_numpy(matrix[:3, 3]).to(g.means))
    return g.transform(rotation, matrix[:3, 3], scale)


def _with_degree(g: Gaussians, degree: int) -> Gaussians:
    k = (degree + 1) ** 2
    if g.sh.shape[1] == k:
        return g
    return g.replace(sh=torch.nn.functional.pad(g.sh, (0, 0, 0, k - g.sh.shape[1])))


def read_camera(stage, path: str, frame: float) -> Camera:
    """The camera at prim ``path`` at time ``frame``, at its ``splatfx:imageSize``."""
    Gf, _, Usd, UsdGeom, _, _, _ = _pxr()
    prim = stage.GetPrimAtPath(path)
    if not prim or not prim.IsA(UsdGeom.Camera):
        raise InputError(stage.GetRootLayer().identifier, f"has no camera at {path}")
    time = Usd.TimeCode(frame)
    get = lambda name: float(prim.GetAttribute(name).Get(time))  # noqa: E731
    width, height = (int(v) for v in prim.GetAttribute("splatfx:imageSize").Get())
    focal, h_ap, v_ap = get("focalLength"), get("horizontalAperture"), get("verticalAperture")
    fx, fy = focal * width / h_ap, focal * height / v_ap
    cx = width / 2.0 + get("horizontalApertureOffset") * width / h_ap
    cy = height / 2.0 - get("verticalApertureOffset") * height / v_ap
    c2w = np.array(UsdGeom.XformCache(time).GetLocalToWorldTransform(prim)).T @ np.diag([1.0, -1.0, -1.0, 1.0])
    rotation = c2w[:3, :3].T
    dist = np.array([float(prim.GetAttribute(LENS_PREFIX + k).Get(time) or 0.0) for k in ("k1", "k2", "p1", "p2", "k3")])
    return Camera(width, height, fx, fy, cx, cy, rotation, -rotation @ c2w[:3, 3], dist if dist.any() else None)


def render_rgba(gaussians: Gaussians, camera: Camera) -> np.ndarray:
    """Premultiplied scene-linear RGBA (H, W, 4) of ``gaussians`` through ``camera``, as the
    render stage makes its ``R,G,B,A`` (composite the display-referred radiance, then decode)."""
    out = render_features(gaussians, sh_colours(gaussians, camera), camera)
    return np.concatenate([to_linear_premultiplied(out.channels, out.alpha), out.alpha[..., None]], axis=2)


def validate_stage(path: PathLike) -> list[str]:
    """What ``usdchecker`` reports for the stage at ``path``: every validator registered with
    OpenUSD's validation framework (UsdValidation), one line per error; empty when clean."""
    from pxr import UsdValidation

    stage = open_stage(path)
    validators = UsdValidation.ValidationRegistry().GetOrLoadAllValidators()
    errors = UsdValidation.ValidationContext(validators).Validate(stage)
    return [e.GetErrorAsString() for e in errors]
