"""The backdrop: what the collapse uncovers, built once, in 3D.

When a structure is removed, the render's clean pass shows what the reconstruction holds
behind it: what other plates saw. Where no plate saw anything, the comp used to inpaint each
frame on its own, a flat smear that swam from frame to frame. The backdrop is painted once
instead and placed in the scene, so every frame sees the same background, moving with the
camera's parallax:

1. **A reference plate**: the solved plate that sees most of the structure (ties: the one
   nearest the middle of the plates' cameras).
2. **A card**: a plane facing that plate's camera, behind the structure's far side by the
   structure's own depth.
   The card covers every place on that plane that some plate sees through the structure
   (each plate's lines of sight through the structure's points, met with the plane), at no
   more than :data:`MAX_TEXELS` texels (a texel per plate pixel when that fits).
3. **The haze the structure hid**: faint static Gaussians in the structure's silhouette,
   from just before it back to the card, that the selection did not take (the
   reconstruction's semi-transparent shell around a building). They are left out of
   everything below and of the render's clean pass (``hidden``), so they do not veil what
   the collapse uncovers, and they go with the structure once it moves, so they do not veil
   its falling pieces either.
4. **What is known there**: the reference plate outside the structure's footprint where it
   shows the background (not what stands in front of the card, bushes and people, nor their
   soft edges), and the reconstruction without the structure where that render is solid
   (what other plates saw) inside the footprint and, where it is background, beyond the
   plate's edges; then what up to :data:`OTHER_VIEWS` other plates see of the card past the
   structure. The rest is painted (:func:`splatfx.fx.paint.paint_unseen`): sky where sky
   borders it, the plate's own texture elsewhere.
5. **Gaussians**: one flat, opaque Gaussian per texel of the card.

The card is stored with the collapse (``backdrop.*`` arrays of ``fx/collapse.npz``, solve
coordinates; the painted image in ``fx/backdrop.png``) and drawn as part of the static scene
(:class:`splatfx.fx.animation.ShotAnimation`): behind the structure while it stands, in the
clean pass and wherever it has gone once it falls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from splatfx.core.camera import Camera
from splatfx.core.gaussians import Gaussians
from splatfx.core.rotation import rotmat_to_quat
from splatfx.core.sh import SH_C0
from splatfx.fx.animation import FAINT_OPACITY
from splatfx.fx.paint import paint_unseen, sky_mask
from splatfx.raster import rasterize
from splatfx.raster.views import camera_tensors, sh_colours

#: The most texels a card holds (Gaussians added to the scene).
MAX_TEXELS = 300_000
#: The card extends this share of the structure's projected size beyond it on each side.
MARGIN = 0.15
#: Clean-render alpha at which what other plates saw counts as known.
SOLID_ALPHA = 0.95
#: Footprint share above which a texel is the structure's.
FOOTPRINT = 0.05
#: A texel's Gaussian: in-plane sigma and thickness, in texels; its opacity.
TEXEL_SIGMA = 0.55
TEXEL_THICKNESS = 0.05
TEXEL_OPACITY = 0.995
#: The card's depth: the structure's far side (this quantile of its depths in the reference
#: view), and beyond it by this share of the structure's depth, so the dust and debris that
#: roll out behind the structure stay in front of what stood behind it.
FAR_QUANTILE = 0.9
BEHIND = 1.0
#: Structure points whose lines of sight from every plate outline the card.
CARD_POINTS = 20_000
#: Views turned further than this from the reference camera (cosine), or lines of sight
#: reaching the plane beyond this many times a point's distance, are left out of the card.
MAX_TURN_COS = 0.5
MAX_REACH = 4.0
#: Other plates that texture the card where the reference plate does not reach, and the
#: longer side (pixels) they are read at.
OTHER_VIEWS = 12
OTHER_VIEW_SIZE = 640
#: The card's outline is closed over gaps, and grown, by this share of the canvas.
CARD_CLOSE = 0.02
#: Plate pixels nearer than this share of the card's depth stand in front of it (bushes,
#: people): not the background, so not copied onto the card; nor are the pixels within
#: :data:`FOREGROUND_EDGE` of them (their soft edges, which would print their outlines).
NEAR_SHARE = 0.5
FOREGROUND_EDGE = 3
#: The structure's haze: static Gaussians fainter than FAINT_OPACITY (fx.animation) in its
#: silhouette, from HIDDEN_NEAR of its near side's depth back to the card.
HIDDEN_NEAR = 0.8
#: A Gaussian centred this many pixels (at OTHER_VIEW_SIZE) inside a plate's sky is a floater.
SKY_FREE_MARGIN = 3


@dataclass(frozen=True)
class PlateView:
    """A solved plate: its camera (pinhole, solve coordinates) and a reader of its pixels
    (H,W,3 display-encoded 0–1 at the camera's size)."""

    name: str
    camera: Camera
    pixels: Callable[[], np.ndarray]


@dataclass
class Backdrop:
    """A painted card of Gaussians (solve coordinates) and what made it."""

    gaussians: Gaussians
    image: np.ndarray  # (h,w,3) the card's picture, display-encoded
    known: np.ndarray  # (h,w) texels seen by the plate or the reconstruction
    sky: np.ndarray  # (h,w) texels painted as sky
    card: np.ndarray  # (h,w) texels that became Gaussians
    reference: str
    depth: float
    hidden: np.ndarray  # (K,) static scene rows of the structure's haze: out of the clean pass, gone once it moves
    floaters: np.ndarray  # (L,) static scene rows some plate sees the sky through: they hold nothing out

    def figures(self) -> dict:
        painted = self.card & ~self.known
        return {"backdrop_gaussians": len(self.gaussians), "backdrop_reference": self.reference,
                "backdrop_depth": round(self.depth, 3), "backdrop_size": [int(self.image.shape[1]),
                                                                          int(self.image.shape[0])],
                "backdrop_hidden_gaussians": len(self.hidden), "sky_floaters": len(self.floaters),
                "backdrop_painted_share": round(float(painted.sum() / max(self.card.sum(), 1)), 3),
                "backdrop_sky_share": round(float((self.sky & self.card).sum() / max(self.card.sum(), 1)), 3)}

    def arrays(self, prefix: str = "backdrop") -> dict[str, np.ndarray]:
        g = self.gaussians
        return {f"{prefix}.means": g.means.numpy(), f"{prefix}.quats": g.quats.numpy(),
                f"{prefix}.log_scales": g.log_scales.numpy(), f"{prefix}.opacity_logits": g.opacity_logits.numpy(),
                f"{prefix}.sh_dc": g.sh[:, 0].numpy(), f"{prefix}.hidden": self.hidden.astype(np.int64),
                f"{prefix}.floaters": self.floaters.astype(np.int64)}


def choose_reference(structure: np.ndarray, views: Sequence[PlateView]) -> int:
    """The index of the view that sees most of ``structure`` (N,3 points) inside its image;
    among those within 2 % of the best, the one nearest the median of the views' centres."""
    counts = []
    for view in views:
        p, z = view.camera.project(structure)
        inside = (z > 0) & (p[:, 0] >= 0) & (p[:, 0] < view.camera.width) & (p[:, 1] >= 0) & \
            (p[:, 1] < view.camera.height)
        counts.append(int(inside.sum()))
    counts = np.array(counts)
    if counts.max() == 0:
        raise ValueError("no solved plate sees the removed structure")
    centres = np.array([v.camera.center for v in views])
    middle = np.median(centres, axis=0)
    good = np.nonzero(counts >= 0.98 * counts.max())[0]
    return int(good[np.argmin(np.linalg.norm(centres[good] - middle, axis=1))])


def card_plane_points(points: np.ndarray, views: Sequence[PlateView], reference: Camera, depth: float) -> np.ndarray:
    """Where each view's line of sight through each of ``points`` meets the card's plane (at
    ``depth`` in front of ``reference``, facing it), in ``reference`` pixels (K,2): the places
    on the card some plate sees through the structure."""
    normal, offset = reference.R[2], depth - reference.t[2]
    hits = []
    for view in views:
        if view.camera.R[2] @ normal < MAX_TURN_COS:  # looks at the plane edge-on: not its backdrop
            continue
        centre = view.camera.center
        rays = points - centre
        along = rays @ normal
        ahead = along > 1e-9
        step = (offset - centre @ normal) / np.where(ahead, along, 1.0)
        ok = ahead & (step > 0.5) & (step < MAX_REACH)
        hits.append(reference.project(centre + step[ok, None] * rays[ok])[0])
    return np.concatenate(hits) if hits else np.zeros((0, 2))


def card_camera(places: np.ndarray, camera: Camera) -> tuple[Camera, float, tuple[float, float]]:
    """The pinhole camera of the card's canvas: ``camera``'s pose, framing ``places`` (K,2
    plate pixels) plus :data:`MARGIN`, at most :data:`MAX_TEXELS` texels. Also the plate
    pixels per texel and the canvas origin in plate pixels."""
    lo, hi = np.quantile(places, 0.0005, axis=0), np.quantile(places, 0.9995, axis=0)
    grow = MARGIN * (hi - lo) + 8.0
    lo, hi = lo - grow, hi + grow
    scale = max(1.0, math.sqrt(float(np.prod(hi - lo)) / MAX_TEXELS))
    width, height = (int(math.ceil(v)) for v in (hi - lo) / scale)
    canvas = Camera(R=camera.R, t=camera.t, width=max(width, 1), height=max(height, 1), fx=camera.fx / scale,
                    fy=camera.fy / scale, cx=(camera.cx - lo[0]) / scale, cy=(camera.cy - lo[1]) / scale)
    return canvas, scale, (float(lo[0]), float(lo[1]))


def card_region(places: np.ndarray, scale: float, origin: tuple[float, float], size: tuple[int, int],
                reach: float = 0.0) -> np.ndarray:
    """The texels the card needs: those ``places`` fall in, closed over the gaps between them
    and grown by a margin (:data:`CARD_CLOSE` of the canvas) plus ``reach`` plate pixels (the
    structure's Gaussians reach that far beyond their centres)."""
    width, height = size
    cols = np.floor((places[:, 0] - origin[0]) / scale).astype(np.int64)
    rows = np.floor((places[:, 1] - origin[1]) / scale).astype(np.int64)
    ok = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    hit = np.zeros((height, width), np.uint8)
    hit[rows[ok], cols[ok]] = 1
    close = max(2, int(round(CARD_CLOSE * max(width, height))))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * close + 1,) * 2)
    grow = close + int(math.ceil(reach / scale))
    return cv2.dilate(cv2.morphologyEx(hit, cv2.MORPH_CLOSE, disc),
                      cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)).astype(bool)


def _render(gaussians: Gaussians, features: torch.Tensor, camera: Camera) -> tuple[np.ndarray, np.ndarray,
                                                                                  np.ndarray]:
    """Features (H,W,D), alpha and expected depth of ``gaussians`` seen by ``camera``."""
    viewmats, ks = camera_tensors([camera])
    with torch.no_grad():
        image, alpha, _ = rasterize(gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
                                    features.float(), viewmats, ks, camera.width, camera.height,
                                    render_mode="RGB+ED", backend="cpu")
    image = image[0].numpy()
    return image[..., :-1], alpha[0, ..., 0].numpy(), image[..., -1]


def plate_on_canvas(pixels: np.ndarray, scale: float, origin: tuple[float, float], size: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The plate resampled onto the card's canvas (area-averaged when a texel spans several
    pixels) and the mask of texels inside the plate."""
    height, width = pixels.shape[:2]
    small = pixels
    if scale > 1.0:
        small = cv2.resize(pixels, (max(1, round(width / scale)), max(1, round(height / scale))),
                           interpolation=cv2.INTER_AREA)
    sx, sy = small.shape[1] / width, small.shape[0] / height
    cols = (origin[0] + (np.arange(size[0]) + 0.5) * scale) * sx - 0.5
    rows = (origin[1] + (np.arange(size[1]) + 0.5) * scale) * sy - 0.5
    map_x, map_y = np.meshgrid(cols.astype(np.float32), rows.astype(np.float32))
    warped = cv2.remap(small.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= -0.5) & (map_x <= small.shape[1] - 0.5) & (map_y >= -0.5) & (map_y <= small.shape[0] - 0.5)
    return warped, inside


def build_backdrop(scene: Gaussians, removed: np.ndarray, views: Sequence[PlateView], seed: int = 0) -> Backdrop:
    """The backdrop of ``scene`` without rows ``removed`` (see the module doc). ValueError
    when no plate sees the structure or nothing around it is known."""
    mask = np.zeros(len(scene), dtype=bool)
    mask[np.asarray(removed, dtype=np.int64)] = True
    structure = scene[torch.from_numpy(mask)]
    points = structure.means.double().numpy()
    view = views[choose_reference(points, views)]
    depth = structure_far_depth(points, view.camera)
    sample = points[np.random.default_rng(seed).permutation(len(points))[:CARD_POINTS]]
    places = card_plane_points(sample, views, view.camera, depth)
    canvas, scale, origin = card_camera(places, view.camera)
    card = card_region(places, scale, origin, (canvas.width, canvas.height), structure_reach(structure, view.camera))
    flag = torch.from_numpy(mask.astype(np.float32))[:, None]
    footprint = _render(scene, flag, canvas)[0][..., 0]
    grown = cv2.dilate((footprint > FOOTPRINT).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    silhouette = _render(structure, torch.zeros(len(structure), 1), canvas)[1] > FOOTPRINT  # not held out
    silhouette = cv2.dilate(silhouette.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    hidden = hidden_rows(scene, mask, silhouette, canvas, depth)
    static = _static_without(scene, mask, hidden)
    clean, clean_alpha, clean_depth = _render(static, sh_colours(static, canvas), canvas)
    plate, inside = plate_on_canvas(view.pixels(), scale, origin, (canvas.width, canvas.height))
    solid = clean_alpha >= SOLID_ALPHA
    # not what stands in front of the card (the sky is background however near its haze was reconstructed)
    near = with_soft_edge(solid & (clean_depth < NEAR_SHARE * depth) & ~sky_mask(plate, inside & ~grown))
    background = ~near
    # the reconstruction: what other plates saw behind the structure and beyond this plate's edges
    reconstructed = solid & (clean_depth >= NEAR_SHARE * depth) & (grown | (~inside & background))
    known = (inside & ~grown & background) | reconstructed
    colour = np.where(reconstructed[..., None], clean / np.maximum(clean_alpha, 1e-6)[..., None], plate)
    card_points = texel_points(canvas, depth)
    for other in other_views(views, view):
        _add_view(colour, known, card & ~known, card_points, other, scene, mask, static)
    image, sky = paint_unseen(np.clip(colour, 0.0, 1.0).astype(np.float32), known, np.random.default_rng(seed))
    gaussians = card_gaussians(image, card, canvas, depth, scene)
    return Backdrop(gaussians, image, known, sky, card, view.name, depth, hidden, sky_floaters(scene, mask, views))


def _static_without(scene: Gaussians, removed: np.ndarray, hidden: np.ndarray) -> Gaussians:
    """The scene without the structure (``removed``, a mask) and its haze (``hidden`` rows)."""
    kept = ~removed
    kept[hidden] = False
    return scene[torch.from_numpy(kept)]


def with_soft_edge(mask: np.ndarray) -> np.ndarray:
    """``mask`` (what stands in front of the card) with its soft edges: grown by :data:`FOREGROUND_EDGE`."""
    size = 2 * FOREGROUND_EDGE + 1
    return cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)


def pixel_of(points: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pixel (column, row) each of ``points`` (N,3) falls in seen by ``camera``, its depth,
    and whether it lies in front of the camera and inside its image."""
    pixels, z = camera.project(points)
    x, y = np.floor(pixels[:, 0]).astype(np.int64), np.floor(pixels[:, 1]).astype(np.int64)
    inside = (z > 1e-3) & (x >= 0) & (x < camera.width) & (y >= 0) & (y < camera.height)
    return x, y, z, inside


def hidden_rows(scene: Gaussians, removed: np.ndarray, silhouette: np.ndarray, canvas: Camera,
                depth: float) -> np.ndarray:
    """The structure's haze: the faint static rows (sorted; opacity below
    :data:`~splatfx.fx.animation.FAINT_OPACITY`) centred in its ``silhouette`` as ``canvas``
    sees it (not held out by what stands in front), from :data:`HIDDEN_NEAR` of its near
    side's depth back to the card at ``depth``. They are the reconstruction's
    semi-transparent shell in and around the structure, which would veil what the collapse
    uncovers; what is solid (the ground, the structure's base left standing, a wall behind
    it) stays."""
    points = scene.means.double().numpy()
    x, y, z, inside = pixel_of(points, canvas)
    covered = np.zeros(len(points), dtype=bool)
    covered[inside] = silhouette[y[inside], x[inside]]
    structure_z = z[removed & (z > 1e-3)]
    if not len(structure_z):
        return np.zeros(0, np.int64)
    near = np.quantile(structure_z, 1.0 - FAR_QUANTILE)
    faint = torch.sigmoid(scene.opacity_logits).numpy() < FAINT_OPACITY
    return np.nonzero(~removed & covered & faint & (z >= HIDDEN_NEAR * near) & (z < depth))[0]


def sky_floaters(scene: Gaussians, removed: np.ndarray, views: Sequence[PlateView]) -> np.ndarray:
    """The static rows (sorted; not ``removed``) whose centre some plate sees as sky (its
    :func:`~splatfx.fx.paint.sky_mask`, :data:`SKY_FREE_MARGIN` pixels in from its edge, at
    most :data:`OTHER_VIEW_SIZE` across): that plate looks through them at the sky, so they
    are not things but the reconstruction's paint (sky blobs it hangs next to a roof, haze).
    Whatever their opacity, they must not hold out a falling piece."""
    points = scene.means.double().numpy()
    seen = np.zeros(len(points), dtype=bool)
    for view in views:
        camera = _working_camera(view.camera)
        image = _plate_at(view, camera)
        sky = sky_mask(image, np.ones((camera.height, camera.width), dtype=bool))
        sky = cv2.erode(sky.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=SKY_FREE_MARGIN).astype(bool)
        x, y, _, inside = pixel_of(points, camera)
        seen[inside] |= sky[y[inside], x[inside]]
    return np.nonzero(seen & ~removed)[0]


def _working_camera(camera: Camera) -> Camera:
    """``camera`` shrunk to at most :data:`OTHER_VIEW_SIZE` pixels across (itself when smaller):
    the size other plates are read at."""
    factor = max(1.0, max(camera.width, camera.height) / OTHER_VIEW_SIZE)
    return camera.scaled(1.0 / factor) if factor > 1 else camera


def _plate_at(view: PlateView, camera: Camera) -> np.ndarray:
    """``view``'s pixels area-averaged to ``camera``'s size (as they are when it is theirs)."""
    plate = view.pixels()
    if plate.shape[:2] != (camera.height, camera.width):
        plate = cv2.resize(plate, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
    return plate


def structure_reach(structure: Gaussians, camera: Camera) -> float:
    """How far (plate pixels) the structure's Gaussians reach beyond their centres in
    ``camera``: the 90th percentile of their projected 3-sigma radii."""
    z = camera.world_to_camera(structure.means.double().numpy())[:, 2]
    radius = 3.0 * structure.scales.max(dim=1).values.double().numpy() * camera.fx / np.maximum(z, 1e-3)
    return float(np.quantile(radius[z > 1e-3], 0.9)) if (z > 1e-3).any() else 0.0


def texel_points(canvas: Camera, depth: float) -> np.ndarray:
    """The world point of every texel of the card (H,W,3): on the plane at ``depth``."""
    rows, cols = np.mgrid[0:canvas.height, 0:canvas.width]
    rays = np.stack([(cols + 0.5 - canvas.cx) / canvas.fx, (rows + 0.5 - canvas.cy) / canvas.fy,
                     np.ones(rows.shape)], axis=2)
    return (rays * depth - canvas.t) @ canvas.R


def other_views(views: Sequence[PlateView], reference: PlateView) -> list[PlateView]:
    """Up to :data:`OTHER_VIEWS` other plates facing the card, spread evenly over the plates
    in their order (a shot's plates in frame order sweep the camera's path)."""
    facing = [v for v in views if v is not reference and v.camera.R[2] @ reference.camera.R[2] >= MAX_TURN_COS]
    if len(facing) <= OTHER_VIEWS:
        return facing
    return [facing[i] for i in np.linspace(0, len(facing) - 1, OTHER_VIEWS).round().astype(int)]


def _add_view(colour: np.ndarray, known: np.ndarray, wanted: np.ndarray, points: np.ndarray, view: PlateView,
              scene: Gaussians, removed: np.ndarray, static: Gaussians) -> None:
    """Copy into ``colour`` (and mark ``known``) the ``wanted`` texels that ``view`` sees as
    background: inside its plate, off the structure, with nothing nearer in front of the card
    (or sky)."""
    rows, cols = np.nonzero(wanted)
    if not len(rows):
        return
    small = _working_camera(view.camera)
    x, y, z, inside = pixel_of(points[rows, cols], small)
    if not inside.any():
        return
    flag = torch.from_numpy(removed.astype(np.float32))[:, None]
    footprint = _render(scene, flag, small)[0][..., 0]
    _, alpha, depth = _render(static, torch.zeros(len(static), 1), small)
    plate = _plate_at(view, small)
    sky = sky_mask(plate, footprint <= FOOTPRINT)
    x, y, rows, cols, z = x[inside], y[inside], rows[inside], cols[inside], z[inside]
    near = (alpha >= SOLID_ALPHA) & (depth < NEAR_SHARE * float(np.median(z))) & ~sky
    clear = ~with_soft_edge((footprint > FOOTPRINT) | near)[y, x]
    colour[rows[clear], cols[clear]] = plate[y[clear], x[clear]]
    known[rows[clear], cols[clear]] = True


def structure_far_depth(points: np.ndarray, camera: Camera) -> float:
    """The card's depth seen from ``camera``: the structure's far side, plus :data:`BEHIND` of
    its depth."""
    z = camera.world_to_camera(points)[:, 2]
    if not (z > 1e-3).any():
        raise ValueError("the removed structure is behind the reference camera")
    near, far = np.quantile(z[z > 1e-3], [1.0 - FAR_QUANTILE, FAR_QUANTILE])
    return float(far + BEHIND * (far - near))


def card_gaussians(image: np.ndarray, card: np.ndarray, camera: Camera, depth: float, like: Gaussians) -> Gaussians:
    """One flat opaque Gaussian per ``card`` texel of ``image``, on the plane at ``depth``
    facing ``camera``, with the SH degree and extra channels of ``like`` (zeros)."""
    rows, cols = np.nonzero(card)
    rays = np.stack([(cols + 0.5 - camera.cx) / camera.fx, (rows + 0.5 - camera.cy) / camera.fy,
                     np.ones(len(rows))], axis=1)
    means = (rays * depth - camera.t) @ camera.R  # camera to world: R^T (x - t)
    texel = depth / camera.fx
    n = len(rows)
    log_scales = np.log(np.array([TEXEL_SIGMA * texel, TEXEL_SIGMA * texel * camera.fx / camera.fy,
                                  TEXEL_THICKNESS * texel]))
    sh = np.zeros((n, like.sh.shape[1], 3), np.float32)
    sh[:, 0] = (image[rows, cols] - 0.5) / SH_C0
    quat = rotmat_to_quat(camera.R.T)
    arrays = {"means": means, "quats": np.tile(quat, (n, 1)), "log_scales": np.tile(log_scales, (n, 1)),
              "opacity_logits": np.full(n, math.log(TEXEL_OPACITY / (1 - TEXEL_OPACITY))), "sh": sh}
    extras = {k: np.zeros((n,) + tuple(v.shape[1:]), np.float32) for k, v in like.extras.items()}
    return Gaussians.from_arrays(arrays, extras=extras, source="backdrop")

