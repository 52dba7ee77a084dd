"""One frame's render passes from the animated Gaussians, all in one rasterizer pass.

Every Gaussian carries a feature vector, and one call of :func:`splatfx.raster.rasterize`
composites them all front to back with the same weights ``w_i = α_i T_i``:

==============  ==========================================================================
channels        per-Gaussian feature
==============  ==========================================================================
colour (3)      its SH colour seen from the camera (display-referred, as trained)
fx colour (3)   the colour again where the Gaussian is synthetic (element ≠ scene), else 0
motion (2)      its mean's pixel motion to the next frame: ``project(cam[t+1], x + motion)
                − project(cam[t], x)`` (plate pixels, distortion included)
mattes (E)      1 for each non-scene element present (fragment, fill, debris, dust, snow)
depth           expected depth ``Σ w z / Σ w`` (render mode ``RGB+ED``)
==============  ==========================================================================

Because static Gaussians are composited together with the effect's, real objects in
front of the effect hold it out automatically. Derived layers:

* ``R,G,B,A``: premultiplied colour, converted to scene-linear (unpremultiply, sRGB decode,
  premultiply: the reconstruction was fitted to sRGB-encoded plates, so it renders
  display-referred values).
* ``mask.synthetic``: Σ of the non-scene mattes, i.e. how much of the pixel is not in the plate.
* ``fx.R,G,B``: the synthetic elements' own premultiplied colour (alpha ``mask.synthetic``).
* ``motion.u``, ``motion.v``: Σ w·motion / alpha, in pixels, u to the right and v **down**
  (image rows), from frame t to t+1; 0 where alpha < :data:`ALPHA_EMPTY`.
* ``depth.Z``: expected camera z of the pixel's Gaussians (not premultiplied by alpha, so
  edges are not darkened towards 0); +inf where alpha < :data:`ALPHA_EMPTY`.
* ``matte.<element>`` and ``id``: per-element coverage (scene = alpha − Σ others) and the
  element with the most coverage (:data:`NO_ELEMENT` where alpha < :data:`ALPHA_EMPTY`).

The channels are named and written by :mod:`splatfx.render.layers`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from splatfx.core.camera import Camera
from splatfx.core.color import srgb_to_linear
from splatfx.fx.animation import ELEMENTS, FrameGaussians
from splatfx.core.gaussians import Gaussians
from splatfx.raster import rasterize
from splatfx.raster.views import camera_tensors, resolve_device
from splatfx.core.sh import eval_sh
from splatfx.render.cameras import lens_warp
from splatfx.render.layers import PASS_NAMES, frame_channels

#: Element names in id order (``ELEMENT_NAMES[id]``).
ELEMENT_NAMES = tuple(sorted(ELEMENTS, key=ELEMENTS.get))
SCENE = ELEMENTS["scene"]
#: ``id`` of pixels that nothing covers.
NO_ELEMENT = 255
#: Pixels with less alpha than this are empty: depth +inf, motion 0, id NO_ELEMENT.
ALPHA_EMPTY = 1.0 / 255.0
#: Gaussians closer to the camera than this (solve units) are culled.
NEAR = 0.01


@dataclass(frozen=True)
class Crop:
    """A pixel rectangle ``[x0, x0 + width) × [y0, y0 + height)`` of a render canvas."""

    x0: int
    y0: int
    width: int
    height: int

    def camera(self, camera: Camera) -> Camera:
        """The camera that renders only this rectangle of ``camera``'s image."""
        return replace(camera, width=self.width, height=self.height, cx=camera.cx - self.x0, cy=camera.cy - self.y0)

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y0 + self.height), slice(self.x0, self.x0 + self.width)


@dataclass
class Rendered:
    """Raw rasterizer output at the output camera's size: feature channels (H,W,D) composited
    with weights (premultiplied), alpha (H,W) and, when asked, expected depth (H,W)."""

    channels: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray | None = None


def render_features(gaussians: Gaussians, features: torch.Tensor, camera: Camera, *, depth: bool = False,
                    crop: Crop | None = None) -> Rendered:
    """Composite per-Gaussian ``features`` (N,D) seen by ``camera``.

    A camera with lens distortion is rendered as a pinhole on an overscan canvas and
    resampled onto its distorted pixels (:class:`splatfx.render.cameras.LensWarp`). ``crop``
    (in pinhole-canvas pixels, see :func:`render_canvas`) renders only that rectangle;
    the rest is empty.
    """
    warp = lens_warp(camera)
    canvas = warp.pinhole if warp is not None else camera
    cam = crop.camera(canvas) if crop is not None else canvas
    dev = resolve_device()
    d = features.shape[1]
    if len(gaussians) == 0:
        channels = np.zeros((cam.height, cam.width, d), np.float32)
        alpha = np.zeros((cam.height, cam.width), np.float32)
        z = np.zeros_like(alpha) if depth else None
    else:
        g = gaussians.to(dev)
        with torch.no_grad():
            image, alphas, _ = rasterize(
                g.means, g.quats, g.scales, g.opacities, features.to(dev, torch.float32),
                *camera_tensors([cam], dev), cam.width, cam.height,
                near=NEAR, render_mode="RGB+ED" if depth else "RGB")
        image = image[0].cpu().numpy()
        channels, alpha = image[..., :d], alphas[0, ..., 0].cpu().numpy()
        z = image[..., d] if depth else None
    if crop is not None:
        channels, alpha, z = (_paste(a, crop, canvas) if a is not None else None for a in (channels, alpha, z))
    if warp is not None:
        stacked = warp.apply(np.concatenate([channels, alpha[..., None]], axis=2))
        channels, alpha = stacked[..., :d], stacked[..., d]
        z = warp.apply(z, nearest=True) if z is not None else None
    return Rendered(channels, alpha, z)


def render_canvas(camera: Camera) -> Camera:
    """The pinhole camera whose image :func:`render_features` rasterizes for ``camera``."""
    warp = lens_warp(camera)
    return warp.pinhole if warp is not None else camera


def _paste(a: np.ndarray, crop: Crop, canvas: Camera) -> np.ndarray:
    full = np.zeros((canvas.height, canvas.width) + a.shape[2:], a.dtype)
    full[crop.slices()] = a
    return full


def colours(gaussians: Gaussians, camera: Camera) -> torch.Tensor:
    """Each Gaussian's SH colour seen from ``camera`` (N,3): ``eval_sh + 0.5``, clamped at 0,
    exactly what the rasterizer computes for SH features."""
    dirs = gaussians.means - torch.tensor(camera.center, dtype=torch.float32)
    return (eval_sh(gaussians.sh_degree, gaussians.sh, dirs) + 0.5).clamp_min(0.0)


def pixel_motion(means: np.ndarray, motion: np.ndarray, camera: Camera, next_camera: Camera) -> np.ndarray:
    """Pixel displacement (N,2) of each point from ``camera`` to ``next_camera`` after moving by
    ``motion``; 0 for points behind either camera."""
    p0, z0 = camera.project(means)
    p1, z1 = next_camera.project(np.asarray(means, np.float64) + motion)
    d = p1 - p0
    d[(z0 <= NEAR) | (z1 <= NEAR)] = 0.0
    return d


def to_linear_premultiplied(premultiplied: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Display-referred premultiplied colour (H,W,3) as scene-linear premultiplied colour."""
    a = alpha[..., None]
    straight = np.divide(premultiplied, a, out=np.zeros_like(premultiplied), where=a > 1e-6)
    return srgb_to_linear(np.clip(straight, 0.0, None)) * a


@dataclass
class FramePasses:
    """One frame's layers at the output size (see the module doc)."""

    rgba: np.ndarray  # (H,W,4) premultiplied scene-linear
    depth: np.ndarray  # (H,W) camera z, +inf where empty
    motion: np.ndarray  # (H,W,2) pixels to the next frame (u right, v down)
    synthetic: np.ndarray  # (H,W) share of the pixel that is not in the plate
    fx: np.ndarray  # (H,W,3) synthetic elements' premultiplied scene-linear colour
    mattes: dict[str, np.ndarray]  # element name -> (H,W) coverage
    element_id: np.ndarray  # (H,W) uint32 dominant element

    def channels(self, passes: tuple[str, ...] = PASS_NAMES) -> dict[str, np.ndarray]:
        """The EXR channels of the chosen ``passes`` (:data:`splatfx.render.layers.PASS_NAMES`)."""
        return frame_channels(passes, rgba=self.rgba, depth=self.depth, motion=self.motion, synthetic=self.synthetic,
                              fx=self.fx, mattes=self.mattes, element_id=self.element_id)


def render_passes(frame: FrameGaussians, camera: Camera, next_camera: Camera | None = None) -> FramePasses:
    """Every layer of one frame in one rasterizer call.

    ``next_camera`` is the camera of frame t+1 (None: the same camera, e.g. on the last
    frame, so motion is the effect's alone).
    """
    g = frame.gaussians
    element = np.asarray(frame.element)
    present = [e for e in range(len(ELEMENT_NAMES)) if e != SCENE and np.any(element == e)]
    rgb = colours(g, camera)
    synthetic = torch.from_numpy(element != SCENE).float()[:, None]
    motion = pixel_motion(g.means.double().numpy(), frame.motion, camera, next_camera or camera)
    onehot = torch.from_numpy(np.stack([element == e for e in present], axis=1).astype(np.float32)) if present \
        else torch.zeros((len(g), 0))
    # channels: 0-2 colour, 3-5 fx colour, 6-7 motion, 8… one matte per present non-scene element
    features = torch.cat([rgb, rgb * synthetic, torch.from_numpy(motion).float(), onehot], dim=1)
    out = render_features(g, features, camera, depth=True)
    c, alpha = out.channels, out.alpha
    empty = alpha < ALPHA_EMPTY
    mattes = {name: np.zeros_like(alpha) for name in ELEMENT_NAMES}
    for k, e in enumerate(present):
        mattes[ELEMENT_NAMES[e]] = c[..., 8 + k]
    synthetic_share = np.clip(sum(mattes[ELEMENT_NAMES[e]] for e in present) if present else np.zeros_like(alpha),
                              0.0, 1.0)
    mattes[ELEMENT_NAMES[SCENE]] = np.clip(alpha - synthetic_share, 0.0, 1.0)
    stack = np.stack([mattes[name] for name in ELEMENT_NAMES], axis=2)
    element_id = np.where(empty, NO_ELEMENT, np.argmax(stack, axis=2)).astype(np.uint32)
    motion_px = np.divide(c[..., 6:8], alpha[..., None], out=np.zeros_like(c[..., 6:8]), where=~empty[..., None])
    depth = np.where(empty, np.float32(np.inf), out.depth).astype(np.float32)
    rgba = np.concatenate([to_linear_premultiplied(c[..., 0:3], alpha), alpha[..., None]], axis=2)
    fx = to_linear_premultiplied(c[..., 3:6], synthetic_share)
    return FramePasses(rgba.astype(np.float32), depth, motion_px.astype(np.float32), synthetic_share.astype(np.float32),
                       fx.astype(np.float32), mattes, element_id)
