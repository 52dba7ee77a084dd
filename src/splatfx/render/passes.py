"""One frame's render passes from the animated Gaussians, in three rasterizer calls.

Every Gaussian carries a feature vector, and :func:`splatfx.raster.rasterize` composites
them front to back with the weights ``w_i = α_i T_i``:

1. **Beauty**, every Gaussian: its SH colour seen from the camera (display-referred, as
   trained), the colour again where it belongs to a solid piece (fragment, fill), its mean's
   pixel motion to the next frame (``project(cam[t+1], x + motion) − project(cam[t], x)``,
   plate pixels, distortion included), 1 for a solid piece, and the expected depth
   ``Σ w z / Σ w`` (render mode ``RGB+ED``).
2. **The effect**, its own Gaussians and the static ones that are things (:func:`holds_out`:
   at least :data:`~splatfx.fx.animation.FAINT_OPACITY` opaque, no floater a plate sees the
   sky through, not the backdrop card; the reconstruction's faint shell stays out): the
   pieces' colour, the other elements' colour, and one matte per element present (fragment,
   fill, debris, dust, snow). Static Gaussians composited with the effect's hold it out, so
   real objects in front of it stay in front.
3. **The solid pieces alone**: their own coverage, whose :data:`SOLID_EDGE` contour is
   their hard, antialiased edge (:func:`solid_edge`); passes 1 and 2 are rescaled to it.

Derived layers:

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

Motion blur (:func:`render_exposure`, ``[render] shutter``): the moving elements are rendered
again at sub-frame times while the shutter is open, over the frame's static things (as pass
2), each sample's pieces made hard, and the samples' average change is added to the colour,
alpha and mattes; pixels nothing moving reaches are left bit for bit, and motion and depth
stay those of the frame's centre.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from splatfx.core.camera import Camera
from splatfx.core.color import srgb_to_linear
from splatfx.fx.animation import ELEMENTS, FAINT_OPACITY, FrameGaussians, ShotAnimation, slerp
from splatfx.core.gaussians import Gaussians
from splatfx.core.rotation import quat_multiply, quat_to_rotmat, rotmat_to_quat, rotmats_to_quats
from splatfx.raster import rasterize
from splatfx.raster.views import camera_tensors, resolve_device, sh_colours
from splatfx.render.cameras import lens_warp
from splatfx.render.layers import PASS_NAMES, frame_channels

#: Element names in id order (``ELEMENT_NAMES[id]``).
ELEMENT_NAMES = tuple(sorted(ELEMENTS, key=ELEMENTS.get))
SCENE = ELEMENTS["scene"]
#: The solid pieces, drawn hard-edged (:func:`solid_edge`).
PIECES = (ELEMENTS["fragment"], ELEMENTS["fill"])
#: A piece's edge is where its own coverage crosses this ...
SOLID_EDGE = 0.4
#: ... ramped over one pixel at the coverage's slope, but never a slope below this (per
#: pixel): a flat, half-transparent stretch of piece is decided solid or gone within ±0.001
#: of the edge's coverage, not left half transparent.
EDGE_SLOPE_MIN = 0.002
#: ``id`` of pixels that nothing covers.
NO_ELEMENT = 255
#: Pixels with less alpha than this are empty: depth +inf, motion 0, id NO_ELEMENT.
ALPHA_EMPTY = 1.0 / 255.0
#: Gaussians closer to the camera than this (solve units) are culled.
NEAR = 0.01
#: Most pixels rasterized in one call (a 1024×1024 image): larger frames are rendered in bands
#: of rows, so the rasterizer's memory does not grow with the frame (:func:`render_features`).
BAND_PIXELS = 1 << 20
#: Band heights are whole rasterizer tiles.
BAND_TILE = 16


@dataclass(frozen=True)
class Crop:
    """A pixel rectangle ``[x0, x0 + width) × [y0, y0 + height)`` of a render canvas."""

    x0: int
    y0: int
    width: int
    height: int

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
    the rest is empty. Large canvases are rasterized in bands of rows (:data:`BAND_PIXELS`).
    """
    warp = lens_warp(camera)
    canvas = warp.pinhole if warp is not None else camera
    region = crop if crop is not None else Crop(0, 0, canvas.width, canvas.height)
    dev = resolve_device()
    d = features.shape[1]
    if len(gaussians) == 0:
        channels = np.zeros((region.height, region.width, d), np.float32)
        alpha = np.zeros((region.height, region.width), np.float32)
        z = np.zeros_like(alpha) if depth else None
    else:
        image, alpha = _rasterize_in_bands(gaussians.to(dev), features.to(dev, torch.float32), canvas, region, depth)
        channels = image[..., :d]
        z = image[..., d] if depth else None
    if crop is not None:
        channels, alpha, z = (_paste(a, crop, canvas) if a is not None else None for a in (channels, alpha, z))
    if warp is not None:
        stacked = warp.apply(np.concatenate([channels, alpha[..., None]], axis=2))
        channels, alpha = stacked[..., :d], stacked[..., d]
        z = warp.apply(z, nearest=True) if z is not None else None
    return Rendered(channels, alpha, z)


def _rasterize_in_bands(g: Gaussians, features: torch.Tensor, canvas: Camera, region: Crop, depth: bool
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Rasterize ``features`` seen by ``canvas`` over its ``region``, in bands of rows of at
    most :data:`BAND_PIXELS` (whole tiles). Each band is the rasterizer's ``window`` of the
    whole canvas, so its pixels are exactly those of one call over the canvas, while the
    rasterizer's buffers (they grow with the Gaussian-tile intersections) stay bounded however
    large the frame. Channels (h,w,X) of the region (depth last when asked) and alpha (h,w).
    On a GPU the region is rendered in one call."""
    rows = max(BAND_TILE, BAND_PIXELS // max(region.width, 1) // BAND_TILE * BAND_TILE)
    if g.means.device.type != "cpu":
        rows = region.height
    image = np.empty((region.height, region.width, features.shape[1] + int(depth)), np.float32)
    alpha = np.empty((region.height, region.width), np.float32)
    viewmats, ks = camera_tensors([canvas], g.means.device)
    for top in range(0, region.height, rows):
        band = slice(top, min(top + rows, region.height))
        window = (region.x0, region.y0 + top, region.width, band.stop - top)
        with torch.no_grad():
            pixels, alphas, _ = rasterize(
                g.means, g.quats, g.scales, g.opacities, features, viewmats, ks, canvas.width, canvas.height,
                near=NEAR, render_mode="RGB+ED" if depth else "RGB", window=window)
        image[band] = pixels[0].cpu().numpy()
        alpha[band] = alphas[0, ..., 0].cpu().numpy()
    return image, alpha


def render_canvas(camera: Camera) -> Camera:
    """The pinhole camera whose image :func:`render_features` rasterizes for ``camera``."""
    warp = lens_warp(camera)
    return warp.pinhole if warp is not None else camera


def _paste(a: np.ndarray, crop: Crop, canvas: Camera) -> np.ndarray:
    full = np.zeros((canvas.height, canvas.width) + a.shape[2:], a.dtype)
    full[crop.slices()] = a
    return full


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
    """Every layer of one frame.

    ``next_camera`` is the camera of frame t+1 (None: the same camera, e.g. on the last
    frame, so motion is the effect's alone). The beauty (colour, alpha, depth, motion) comes
    from every Gaussian; the effect's layers (fx colour, mattes, mask) from the effect and the
    static Gaussians that are things (:func:`holds_out`); the solid pieces are made hard in
    both (:func:`solid_edge`).
    """
    g = frame.gaussians
    element = np.asarray(frame.element)
    present = [e for e in range(len(ELEMENT_NAMES)) if e != SCENE and np.any(element == e)]
    rgb = sh_colours(g, camera)
    piece = torch.from_numpy(np.isin(element, PIECES)).float()[:, None]
    edge = solid_edge(g[piece[:, 0].bool()], camera)
    motion = pixel_motion(g.means.double().numpy(), frame.motion, camera, next_camera or camera)
    # beauty channels: 0-2 colour, 3-5 the pieces' colour, 6-7 motion, 8 the pieces' coverage
    out = render_features(g, torch.cat([rgb, rgb * piece, torch.from_numpy(motion).float(), piece], dim=1), camera,
                          depth=True)
    c, alpha = out.channels, out.alpha
    scales = _solid_scales(edge, c[..., 8], alpha)
    colour, alpha_hard = _hardened(c[..., 0:3], alpha, c[..., 3:6], c[..., 8], scales)
    empty = alpha_hard < ALPHA_EMPTY
    mattes, fx_display, synthetic_share = _effect_layers(frame, rgb, present, camera, edge)
    mattes[ELEMENT_NAMES[SCENE]] = np.clip(alpha_hard - synthetic_share, 0.0, 1.0)
    stack = np.stack([mattes[name] for name in ELEMENT_NAMES], axis=2)
    element_id = np.where(empty, NO_ELEMENT, np.argmax(stack, axis=2)).astype(np.uint32)
    motion_px = np.divide(c[..., 6:8], alpha[..., None], out=np.zeros_like(c[..., 6:8]), where=~empty[..., None])
    depth = np.where(empty, np.float32(np.inf), out.depth).astype(np.float32)
    rgba = np.concatenate([to_linear_premultiplied(colour, alpha_hard), alpha_hard[..., None]], axis=2)
    fx = to_linear_premultiplied(fx_display, synthetic_share)
    return FramePasses(rgba.astype(np.float32), depth, motion_px.astype(np.float32), synthetic_share.astype(np.float32),
                       fx.astype(np.float32), mattes, element_id)


def holds_out(frame: FrameGaussians) -> np.ndarray:
    """Which of ``frame``'s Gaussians take part in the effect's layers: the effect's own and
    the static ones that are things: at least :data:`~splatfx.fx.animation.FAINT_OPACITY`
    opaque, not a floater some plate sees the sky through (``frame.floater``), and of the
    scene (not the backdrop card). The reconstruction's faint shell (floaters near the
    cameras, the veil over the ground, a bush's fringe) and the sky it paints in front of a
    roof are in the plate's picture but not in front of anything, so a piece falling behind
    them stays solid; the card is the far background painted at the structure's back, so a
    piece falling back past it stays in front of it."""
    element = np.asarray(frame.element)
    thing = frame.gaussians.opacities.detach().cpu().numpy().reshape(-1) >= FAINT_OPACITY
    if frame.floater is not None:
        thing &= ~frame.floater
    card = (element == SCENE) & (np.asarray(frame.source_index) < 0)
    return (element != SCENE) | (thing & ~card)


def _effect_layers(frame: FrameGaussians, rgb: torch.Tensor, present: list[int], camera: Camera,
                   edge: SolidEdge | None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The effect's mattes (every element; the scene's left 0), its premultiplied display
    colour (H,W,3) and its coverage (H,W), held out by the static Gaussians that
    :func:`holds_out`, with the pieces drawn hard (``edge``)."""
    shape = (camera.height, camera.width)
    mattes = {name: np.zeros(shape, np.float32) for name in ELEMENT_NAMES}
    if not present:
        return mattes, np.zeros(shape + (3,), np.float32), np.zeros(shape, np.float32)
    rows = holds_out(frame)
    g, rgb = frame.gaussians[torch.from_numpy(rows)], rgb[torch.from_numpy(rows)]
    element = np.asarray(frame.element)[rows]
    piece = torch.from_numpy(np.isin(element, PIECES)).float()[:, None]
    other = torch.from_numpy((element != SCENE) & ~np.isin(element, PIECES)).float()[:, None]
    onehot = torch.from_numpy(np.stack([element == e for e in present], axis=1).astype(np.float32))
    # channels: 0-2 the pieces' colour, 3-5 the other elements' colour, 6… one matte per present element
    out = render_features(g, torch.cat([rgb * piece, rgb * other, onehot], dim=1), camera)
    c = out.channels
    scales = _solid_scales(edge, _pieces_coverage(c[..., 6:], present), out.alpha)
    fx, hard = _hard_effect(c[..., 0:3], c[..., 3:6], c[..., 6:], present, scales)
    for k, e in enumerate(present):
        mattes[ELEMENT_NAMES[e]] = hard[..., k]
    share = np.clip(hard.sum(axis=2), 0.0, 1.0)
    return mattes, fx, share


# --- solid pieces: hard edges ------------------------------------------------------------------------
@dataclass(frozen=True)
class SolidEdge:
    """The solid pieces' (fragment, fill) own coverage per pixel (alone, nothing held out)
    and the hard coverage they are drawn with: 1 inside its :data:`SOLID_EDGE` contour, 0
    outside, antialiased over about one pixel across it."""

    own: np.ndarray
    hard: np.ndarray


def solid_edge(pieces: Gaussians, camera: Camera, crop: Crop | None = None) -> SolidEdge | None:
    """The pieces' :class:`SolidEdge` seen by ``camera`` (None without pieces). A wall is
    hard-edged; a Gaussian's tail is not, and left alone it draws every piece with a rim of
    see-through fuzz several pixels wide (and wider the larger the plate)."""
    if len(pieces) == 0:
        return None
    own = render_features(pieces, torch.zeros((len(pieces), 1)), camera, crop=crop).alpha
    rows, cols = np.gradient(own)
    slope = np.maximum(np.hypot(rows, cols), EDGE_SLOPE_MIN)
    return SolidEdge(own, np.clip(0.5 + (own - SOLID_EDGE) / slope, 0.0, 1.0).astype(np.float32))


def _pieces_coverage(mattes: np.ndarray, present: list[int]) -> np.ndarray:
    """The solid pieces' share of each pixel: the sum of the fragment and fill mattes among
    ``mattes`` (H,W,E, one per ``present`` element)."""
    pieces = [k for k, e in enumerate(present) if e in PIECES]
    return mattes[..., pieces].sum(axis=2) if pieces else np.zeros(mattes.shape[:2], np.float32)


def _solid_scales(edge: SolidEdge | None, pieces: np.ndarray, alpha: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Per pixel, the factor on the pieces' contribution and the one on everything else's
    (coverage ``alpha − pieces``) that draw the pieces hard (``edge``) where their held-out
    coverage is ``pieces``; None without pieces (nothing to change). What stands in front
    held them out by ``T = pieces / own``: it keeps its share (up to ``1 − T`` of the rest)
    and the pieces get ``T · hard``; what lies behind them is seen through ``T (1 − hard)``
    instead of ``T (1 − own)``."""
    if edge is None:
        return None
    one = np.ones_like(pieces)
    rest = np.clip(alpha - pieces, 0.0, 1.0)
    through = np.clip(np.divide(pieces, edge.own, out=np.zeros_like(pieces), where=edge.own > 1e-6), 0.0, 1.0)
    piece_scale = np.divide(np.minimum(through * edge.hard, 1.0), pieces, out=one.copy(), where=pieces > 1e-6)
    front = np.minimum(rest, 1.0 - through)
    behind_scale = np.divide(1.0 - edge.hard, 1.0 - edge.own, out=one.copy(), where=edge.own < 1.0 - 1e-6)
    rest_scale = np.divide(front + (rest - front) * behind_scale, rest, out=one.copy(), where=rest > 1e-6)
    return piece_scale.astype(np.float32), rest_scale.astype(np.float32)


def _hardened(colour: np.ndarray, alpha: np.ndarray, piece_colour: np.ndarray, pieces: np.ndarray,
              scales: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied ``colour`` and ``alpha`` of a render with its pieces (their colour and
    coverage ``pieces``) drawn hard by ``scales`` (:func:`_solid_scales`; None: unchanged)."""
    if scales is None:
        return colour, alpha
    piece_scale, rest_scale = scales
    colour = piece_colour * piece_scale[..., None] + (colour - piece_colour) * rest_scale[..., None]
    alpha = np.clip(pieces * piece_scale + (alpha - pieces) * rest_scale, 0.0, 1.0)
    return colour.astype(np.float32), alpha.astype(np.float32)


def _hard_effect(piece_colour: np.ndarray, other_colour: np.ndarray, mattes: np.ndarray, present: list[int],
                 scales: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """The effect's premultiplied colour (the pieces' plus the other elements') and its
    mattes (H,W,E, one per ``present`` element) with the pieces drawn hard by ``scales``
    (None: as rendered)."""
    if scales is None:
        return (piece_colour + other_colour).astype(np.float32), mattes.astype(np.float32)
    piece_scale, rest_scale = scales
    per_element = np.stack([piece_scale if e in PIECES else rest_scale for e in present], axis=2)
    fx = piece_colour * piece_scale[..., None] + other_colour * rest_scale[..., None]
    return fx.astype(np.float32), (mattes * per_element).astype(np.float32)


# --- motion blur: a film camera's exposure -----------------------------------------------------------
@dataclass(frozen=True)
class Shutter:
    """A rotary shutter: open for ``degrees``/360 of each frame interval, centred on the
    frame's time (180° at 24 fps: 1/48 s). ``max_samples`` caps the sub-frame samples;
    ``spacing_px`` is the largest on-screen step between samples wanted; ``camera``: the
    camera's own move in the exposure blurs the moving elements too (as it blurred the plate)."""

    degrees: float = 180.0
    max_samples: int = 16
    spacing_px: float = 1.0
    camera: bool = True

    @property
    def fraction(self) -> float:
        """The exposure as a share of the frame interval."""
        return self.degrees / 360.0


def shutter_offsets(samples: int, fraction: float) -> np.ndarray:
    """Sub-frame times (frame units, relative to the frame's centre) of ``samples`` samples
    spread evenly over a centred exposure of ``fraction`` of a frame: the middles of equal
    slices, so together they cover the open shutter like a box filter."""
    return ((np.arange(samples) + 0.5) / samples - 0.5) * fraction


def blur_samples(streak_px: float, shutter: Shutter) -> int:
    """Sub-frame samples for a streak of ``streak_px`` pixels: enough that neighbouring
    samples are at most ``shutter.spacing_px`` apart on screen, within ``[1, max_samples]``
    (1: too little motion to blur)."""
    if not np.isfinite(streak_px) or streak_px < 0.5 * shutter.spacing_px:
        return 1
    return int(min(max(math.ceil(streak_px / shutter.spacing_px), 2), shutter.max_samples))


def camera_at(camera: Camera, previous: Camera | None, following: Camera | None, offset: float) -> Camera:
    """The camera ``offset`` frames from ``camera`` (−1 < offset < 1): its rotation slerped
    and its centre lerped toward ``following`` (offset > 0) or ``previous`` (offset < 0);
    where that neighbour is missing, the other interval is extrapolated (held when both are)."""
    if offset == 0:
        return camera
    other, u = (following, offset) if offset > 0 else (previous, -offset)
    if other is None:
        other, u = (previous, -offset) if offset > 0 else (following, offset)
    if other is None:
        return camera
    q = slerp(rotmat_to_quat(camera.R), rotmat_to_quat(other.R), u)
    rotation = quat_to_rotmat(q)
    centre = camera.center + u * (other.center - camera.center)
    return camera.with_pose(rotation, -rotation @ centre)


@dataclass
class Exposure:
    """What :func:`render_exposure` did: the sub-frame samples (1: no blur) and the longest
    streak on screen (pixels) they were chosen for."""

    samples: int
    streak_px: float
    seconds: dict[str, float] = field(default_factory=dict)


def render_exposure(animation: ShotAnimation, index: int, camera: Camera, previous: Camera | None = None,
                    following: Camera | None = None, shutter: Shutter | None = None
                    ) -> tuple[FrameGaussians, FramePasses, Exposure]:
    """Frame ``index``'s passes as a film camera exposes them: the moving elements blurred
    along their true motion while the shutter is open.

    The frame is rendered at its centre (:func:`render_passes`: depth, motion and everything
    else as without blur). When the shutter is open and something moves, the synthetic
    Gaussians are also evaluated at sub-frame times (:meth:`ShotAnimation.at_time`) and seen
    from the camera of that instant (moved into the centre camera's view, so the plate's
    static scene stays sharp: the plate carries its own blur), each sample is rendered over
    the static things of the frame's centre (:func:`holds_out`; they hold it out by depth)
    with its pieces made hard (:func:`solid_edge`), and the samples' average change to the
    colour, fx colour, alpha and mattes is added to the centre's layers. A pixel no moving
    Gaussian reaches gets exactly 0 change: it is bit for bit the unblurred render.
    ``motion.u/v`` and ``depth.Z`` stay those of the frame's centre.
    """
    start = time.perf_counter()
    centre = animation.at(index)
    seconds = {"animate": time.perf_counter() - start}
    start = time.perf_counter()
    passes = render_passes(centre, camera, following)
    seconds["main pass"] = time.perf_counter() - start
    start = time.perf_counter()
    element = np.asarray(centre.element)
    moving = element != SCENE
    if shutter is None or shutter.degrees <= 0 or not np.any(moving):
        return centre, passes, Exposure(1, 0.0, seconds)
    g = centre.gaussians
    step = pixel_motion(g.means[moving].double().numpy(), centre.motion[moving], camera,
                        (following or camera) if shutter.camera else camera)
    streak = _longest_streak(g[torch.from_numpy(moving)], step, camera) * shutter.fraction
    samples = blur_samples(streak, shutter)
    if samples < 2:
        return centre, passes, Exposure(1, streak, seconds)
    removed = centre.removed if centre.removed is not None else np.zeros(0, np.int64)
    static = g[torch.from_numpy(holds_out(centre) & ~moving)]
    static_rgb = sh_colours(static, camera)
    reference = _MovingSample(g[torch.from_numpy(moving)], element[moving], sh_colours(g[torch.from_numpy(moving)], camera))
    offsets = [float(o) for o in shutter_offsets(samples, shutter.fraction)]
    seen_from = [camera_at(camera, previous, following, o) if shutter.camera else camera for o in offsets]
    followed = animation.exposure(index, offsets, centre)
    if followed is not None:  # the same Gaussians in every sample: each is stretched over its gap
        frames = _stretched([_seen_by(s, element[moving], camera, c) for s, c in zip(followed, seen_from)], camera)
    else:
        frames = [_moving_sample(animation.at_time(index + o), removed, camera, c) for o, c in zip(offsets, seen_from)]
    present = [e for e in range(len(ELEMENT_NAMES)) if e != SCENE and
               any(np.any(m.element == e) for m in [reference, *frames])]
    crop = _moving_crop([reference, *frames], camera)
    if crop is None:
        return centre, passes, Exposure(1, streak, seconds)
    base = _exposure_layers(static, static_rgb, reference, present, camera, crop)
    change = np.zeros_like(base)
    for sample in frames:
        layers = _exposure_layers(static, static_rgb, sample, present, camera, crop)
        np.subtract(layers, base, out=layers)
        change += layers
        del layers
    change /= samples
    passes = _with_change(passes, change, present)
    seconds["motion blur"] = time.perf_counter() - start
    return centre, passes, Exposure(samples, streak, seconds)


@dataclass
class _MovingSample:
    """The moving Gaussians at one instant (in the centre camera's view), their element and colour."""

    gaussians: Gaussians
    element: np.ndarray
    rgb: torch.Tensor


def _moving_sample(sample: FrameGaussians, removed: np.ndarray, camera: Camera, seen_from: Camera) -> _MovingSample:
    """The Gaussians of ``sample`` that are animated at the frame's centre (pieces that had
    moved by then, their fill, particles), coloured as ``seen_from`` sees them and moved
    rigidly so that ``camera`` sees them where ``seen_from`` does."""
    element = np.asarray(sample.element)
    source = np.asarray(sample.source_index)
    rows = np.isin(source, removed) | ((source < 0) & (element != SCENE))
    kind = np.where(element[rows] == SCENE, ELEMENTS["fragment"], element[rows]).astype(np.int8)
    return _seen_by(sample.gaussians[torch.from_numpy(rows)], kind, camera, seen_from)


def _seen_by(g: Gaussians, kind: np.ndarray, camera: Camera, seen_from: Camera) -> _MovingSample:
    """Moving Gaussians ``g`` coloured as ``seen_from`` sees them and moved rigidly so that
    ``camera`` sees them where ``seen_from`` does (the camera's own motion in the exposure)."""
    rgb = sh_colours(g, seen_from)
    if seen_from is not camera:
        turn = camera.R.T @ seen_from.R  # seen_from's camera space, read as the centre camera's
        shift = camera.R.T @ (np.asarray(seen_from.t, np.float64) - np.asarray(camera.t, np.float64))
        means = g.means.double().numpy() @ turn.T + shift
        q = torch.from_numpy(rotmat_to_quat(turn)).float()
        g = g.replace(means=torch.from_numpy(means).float(), quats=quat_multiply(q.expand(len(g), 4), g.quats))
    return _MovingSample(g, kind, rgb)


def _longest_streak(moving: Gaussians, step: np.ndarray, camera: Camera) -> float:
    """The longest per-frame pixel motion ``step`` among the moving Gaussians on screen."""
    p, z = render_canvas(camera).project(moving.means.double().numpy())
    canvas = render_canvas(camera)
    on = (z > NEAR) & (p[:, 0] > -0.5 * canvas.width) & (p[:, 0] < 1.5 * canvas.width) & \
        (p[:, 1] > -0.5 * canvas.height) & (p[:, 1] < 1.5 * canvas.height)
    return float(np.linalg.norm(step[on], axis=1).max()) if np.any(on) else 0.0


def _moving_crop(samples: list[_MovingSample], camera: Camera, pad: int = 8) -> Crop | None:
    """The canvas rectangle every sample's moving Gaussians reach (3σ, plus ``pad`` pixels);
    None when none is in front of the camera."""
    canvas = render_canvas(camera)
    lo, hi = np.array([np.inf, np.inf]), np.array([-np.inf, -np.inf])
    for s in samples:
        if len(s.gaussians) == 0:
            continue
        p, z = canvas.project(s.gaussians.means.double().numpy())
        front = z > NEAR
        if not np.any(front):
            continue
        radius = 3.0 * max(canvas.fx, canvas.fy) * s.gaussians.scales.max(dim=1).values.double().numpy()[front] \
            / z[front] + pad
        lo = np.minimum(lo, (p[front] - radius[:, None]).min(axis=0))
        hi = np.maximum(hi, (p[front] + radius[:, None]).max(axis=0))
    if not np.all(np.isfinite(lo)):
        return None
    x0, y0 = (int(max(np.floor(v), 0)) for v in lo)
    x1 = int(min(np.ceil(hi[0]), canvas.width))
    y1 = int(min(np.ceil(hi[1]), canvas.height))
    if x1 <= x0 or y1 <= y0:
        return None
    return Crop(x0, y0, x1 - x0, y1 - y0)


def _exposure_layers(static: Gaussians, static_rgb: torch.Tensor, moving: _MovingSample, present: list[int],
                     camera: Camera, crop: Crop) -> np.ndarray:
    """The blurred layers of one instant (H,W,7+E), float32: scene-linear premultiplied
    ``R,G,B,A``, ``fx.R,G,B`` and one matte per ``present`` element, the moving pieces made
    hard (:func:`solid_edge`)."""
    g = Gaussians.cat([static, moving.gaussians])
    element = np.concatenate([np.full(len(static), SCENE, np.int8), moving.element])
    rgb = torch.cat([static_rgb, moving.rgb], dim=0)
    is_piece = np.isin(element, PIECES)
    piece = torch.from_numpy(is_piece).float()[:, None]
    other = torch.from_numpy((element != SCENE) & ~is_piece).float()[:, None]
    onehot = torch.from_numpy(np.stack([element == e for e in present], axis=1).astype(np.float32))
    # channels: 0-2 colour, 3-5 the pieces' colour, 6-8 the other elements' colour, 9… mattes
    out = render_features(g, torch.cat([rgb, rgb * piece, rgb * other, onehot], dim=1), camera, crop=crop)
    c, alpha = out.channels, out.alpha
    edge = solid_edge(g[torch.from_numpy(is_piece)], camera, crop)
    pieces = _pieces_coverage(c[..., 9:], present)
    scales = _solid_scales(edge, pieces, alpha)
    colour, alpha = _hardened(c[..., 0:3], alpha, c[..., 3:6], pieces, scales)
    fx, mattes = _hard_effect(c[..., 3:6], c[..., 6:9], c[..., 9:], present, scales)
    share = np.clip(mattes.sum(axis=2), 0.0, 1.0)
    return np.concatenate([to_linear_premultiplied(colour, alpha), alpha[..., None],
                           to_linear_premultiplied(fx, share), mattes], axis=2, dtype=np.float32)


def _with_change(passes: FramePasses, change: np.ndarray, present: list[int]) -> FramePasses:
    """``passes`` with the exposure's average ``change`` added to colour, alpha, fx colour and
    the ``present`` elements' mattes; the derived mask, scene matte and id made again (the
    same arithmetic as :func:`render_passes`, so unchanged pixels stay bit for bit)."""
    change = change.astype(np.float32)
    rgba = _add(passes.rgba, change[..., 0:4], 0.0, None)
    rgba[..., 3] = _add(passes.rgba[..., 3], change[..., 3], 0.0, 1.0)
    fx = _add(passes.fx, change[..., 4:7], 0.0, None)
    mattes = dict(passes.mattes)
    for k, e in enumerate(present):
        name = ELEMENT_NAMES[e]
        mattes[name] = _add(mattes[name], change[..., 7 + k], 0.0, 1.0)
    alpha = rgba[..., 3]
    synthetic = np.clip(sum(mattes[ELEMENT_NAMES[e]] for e in present), 0.0, 1.0).astype(np.float32)
    mattes[ELEMENT_NAMES[SCENE]] = np.clip(alpha - synthetic, 0.0, 1.0)
    stack = np.stack([mattes[name] for name in ELEMENT_NAMES], axis=2)
    element_id = np.where(alpha < ALPHA_EMPTY, NO_ELEMENT, np.argmax(stack, axis=2)).astype(np.uint32)
    return replace(passes, rgba=rgba.astype(np.float32), fx=fx.astype(np.float32), synthetic=synthetic,
                   mattes=mattes, element_id=element_id)


def _add(layer: np.ndarray, change: np.ndarray, low: float, high: float | None) -> np.ndarray:
    """``layer + change`` clipped to ``[low, high]`` where ``change`` is not 0; ``layer``
    itself, untouched, where it is."""
    return np.where(change != 0, np.clip(layer + change, low, high), layer).astype(np.float32)


def _stretched(samples: list[_MovingSample], camera: Camera) -> list[_MovingSample]:
    """Each sample's Gaussians drawn out along their motion over the gap ``d`` to the
    neighbouring samples (covariance + d dᵀ/4: a standard deviation of half the gap, so
    neighbours overlap into an even streak, within about 2 %), their opacity lowered by the
    growth of their screen footprint along it, so a few samples render one continuous
    streak instead of separate copies while each Gaussian's coverage stays the same."""
    means = [s.gaussians.means.double().numpy() for s in samples]
    out = []
    for k, s in enumerate(samples):
        before = means[k] - means[k - 1] if k > 0 else None
        after = means[k + 1] - means[k] if k + 1 < len(samples) else None
        gap = before if after is None else after if before is None else 0.5 * (before + after)
        out.append(replace(s, gaussians=_stretch(s.gaussians, gap, camera)))
    return out


def _stretch(g: Gaussians, d: np.ndarray, camera: Camera) -> Gaussians:
    """``g`` with ``d dᵀ/4`` added to each covariance (``d`` (N,3) in world units) and its
    opacity scaled by ``1/sqrt(1 + δᵀ Σ₂⁻¹ δ / 4)``: the screen footprint's growth along
    the on-screen step ``δ`` (``Σ₂`` the projected covariance plus the rasterizer's 0.3 px²)."""
    if len(g) == 0:
        return g
    canvas = render_canvas(camera)
    rot = quat_to_rotmat(g.quats.double().numpy())
    var = g.scales.double().numpy() ** 2
    cov = np.einsum("nij,nj,nkj->nik", rot, var, rot)
    x = g.means.double().numpy() @ canvas.R.T + canvas.t
    z = np.maximum(x[:, 2], NEAR)
    jac = np.zeros((len(g), 2, 3))
    jac[:, 0, 0], jac[:, 1, 1] = canvas.fx / z, canvas.fy / z
    jac[:, 0, 2], jac[:, 1, 2] = -canvas.fx * x[:, 0] / z**2, -canvas.fy * x[:, 1] / z**2
    jw = jac @ canvas.R
    screen = np.einsum("nij,njk,nlk->nil", jw, cov, jw) + 0.3 * np.eye(2)
    step = np.einsum("nij,nj->ni", jw, d)
    growth = 1.0 + np.einsum("ni,nij,nj->n", step, np.linalg.inv(screen), step) / 4.0
    growth = np.where(x[:, 2] > NEAR, growth, 1.0)
    active = np.nonzero((np.linalg.norm(step, axis=1) > 0.05) & (x[:, 2] > NEAR))[0]  # the others stay as they are
    w, v = np.linalg.eigh(cov[active] + np.einsum("ni,nj->nij", d[active], d[active]) / 4.0)
    v[np.linalg.det(v) < 0, :, 2] *= -1.0
    opacity = np.clip(g.opacities.double().numpy()[active] / np.sqrt(growth[active]), 1e-6, 1.0 - 1e-6)
    rows = torch.from_numpy(active)
    quats, log_scales, logits = g.quats.clone(), g.log_scales.clone(), g.opacity_logits.clone()
    quats[rows] = torch.from_numpy(rotmats_to_quats(v)).float()
    log_scales[rows] = torch.from_numpy(0.5 * np.log(np.maximum(w, 1e-20))).float()
    logits[rows] = torch.from_numpy(np.log(opacity / (1.0 - opacity))).float()
    return g.replace(quats=quats, log_scales=log_scales, opacity_logits=logits)
