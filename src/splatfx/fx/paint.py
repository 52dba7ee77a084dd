"""Painting what no plate saw: the unseen part of a backdrop image, filled once.

The backdrop (:mod:`splatfx.fx.backdrop`) is an image of the place behind a removed
structure, seen from one plate's camera. Where a plate or the reconstruction saw that place,
its pixels are known; the rest is painted here, in display-encoded colour (0–1):

* **sky where sky borders the hole.** The sky is the bright, smooth region reached from the
  top of each column. The skyline (the first row below the sky in each column) is read beside
  the hole and drawn straight across it (never above the sky seen in the columns the hole
  cuts); above that line the hole is sky, coloured by a smooth quadratic fit to the sky
  around it with the boundary's own offsets carried in;
* **elsewhere, the plate's own texture.** The broad colour is carried in smoothly from the
  known pixels that are not sky (Telea's method, so the sky does not bleed down into the
  scenery). Detail is laid over it patch by patch: each patch of the hole takes the fine
  detail (the image minus its blur) of the plate patch whose broad colour matches best
  among random candidates from the same region, sky or not, blended with overlapping
  raised-cosine windows (normalised to keep the detail's variance).

Pure numpy, SciPy and OpenCV; deterministic for a given generator.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from splatfx.core.color import luminance
from splatfx.core.inpaint import shrunk_telea

#: Sky: brighter than this quantile of the known pixels' luminance, smoother than this
#: quantile of their gradient magnitude.
SKY_BRIGHT_QUANTILE = 0.5
SKY_SMOOTH_QUANTILE = 0.5
#: Columns beside the hole that give no skyline reading.
SKY_EDGE = 4
#: Rows under a column's first known pixel where its sky may start (the sky mask leaves out
#: the known region's rim, where the gradient sees the unknown beyond).
SKY_RIM = 8
#: The skyline's readings are median-filtered over this share (1/n) of them, so a stray
#: reading does not cut a notch into the sky.
SKYLINE_SPAN = 12
#: The blur (texels) that splits broad colour from fine detail.
DETAIL_SIGMA = 2.0
#: Detail patches: side in texels, and candidates tried per patch.
PATCH = 12
CANDIDATES = 48


def known_blur(image: np.ndarray, known: np.ndarray, sigma: float) -> np.ndarray:
    """The blur of ``image`` over its ``known`` pixels only (normalised convolution); 0
    where no known pixel is near."""
    weight = ndimage.gaussian_filter(known.astype(np.float32), sigma)
    blurred = np.stack([ndimage.gaussian_filter(np.where(known, image[..., c], 0.0).astype(np.float32), sigma)
                        for c in range(image.shape[2])], axis=2)
    return np.where(weight[..., None] > 1e-4, blurred / np.maximum(weight, 1e-4)[..., None], 0.0).astype(np.float32)


def sky_mask(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Known pixels of sky: bright and smooth, in regions that hold a column's topmost known pixel."""
    if not known.any():
        return np.zeros_like(known)
    lum = luminance(image)
    soft = ndimage.gaussian_filter(lum, 1.0)
    gradient = np.hypot(ndimage.sobel(soft, 0), ndimage.sobel(soft, 1))
    inner = ndimage.binary_erosion(known, iterations=2)
    sample = inner if inner.any() else known
    candidate = inner & (lum >= np.quantile(lum[sample], SKY_BRIGHT_QUANTILE)) & \
        (gradient <= np.quantile(gradient[sample], SKY_SMOOTH_QUANTILE))
    candidate = ndimage.binary_opening(candidate, iterations=1)
    labels, count = ndimage.label(candidate)
    if count == 0:
        return np.zeros_like(known)
    first = np.argmax(known, axis=0)  # each column's topmost known row
    columns = np.nonzero(known.any(axis=0))[0]
    tops = set()
    for x in columns:  # the top of a column, or just under the eroded rim
        hit = labels[first[x]:first[x] + SKY_RIM, x]
        tops.update(int(v) for v in hit[hit > 0])
    return np.isin(labels, sorted(tops)) if tops else np.zeros_like(known)


def skyline(sky: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per column, the row where the sky ends. Read where a column shows it: going down from
    the column's first known pixel, the first known pixel that is not sky (the first known
    pixel itself when the column does not start with sky). A column whose sky runs on into
    unknown pixels, or that the unknown pixels cut, gives only a lower bound, when it starts
    with sky: the end of that run of sky. Between readings (and bounds) the line is drawn
    straight; the sky reaches at least its bounds."""
    height, width = sky.shape
    reading, bound = np.full(width, np.nan), np.full(width, np.nan)
    shown = known.any(axis=0)
    tops = np.argmax(known, axis=0)
    bottoms = height - np.argmax(known[::-1], axis=0)
    cut = np.array([shown[x] and not known[tops[x]:bottoms[x], x].all() for x in range(width)])
    cut = ndimage.binary_dilation(cut, iterations=SKY_EDGE)  # the sky mask thins out beside the hole
    for x in np.nonzero(shown)[0]:
        top = int(tops[x])
        if not sky[top:top + SKY_RIM, x].any():
            reading[x] = np.nan if cut[x] else top
            continue
        below = np.nonzero(~sky[top:, x])[0]
        below = below[below >= int(np.argmax(sky[top:top + SKY_RIM, x]))]
        end = top + int(below[0]) if len(below) else height
        unseen = np.nonzero(~known[end:end + SKY_RIM, x])[0]
        if len(unseen):  # the sky runs on into the unseen (its eroded rim at the edge is sky too)
            bound[x] = end + int(unseen[0])
        elif cut[x]:
            bound[x] = end
        else:
            reading[x] = end
    lines = [line for line in (_drawn_line(reading), _drawn_line(bound)) if line is not None]
    return np.maximum.reduce(lines) if lines else np.zeros(width)


def _drawn_line(readings: np.ndarray) -> np.ndarray | None:
    """A row per column through the finite ``readings`` (median-filtered, drawn straight
    between them and flat beyond them); None without any."""
    valid = np.nonzero(np.isfinite(readings))[0]
    if not len(valid):
        return None
    rows = ndimage.median_filter(readings[valid], size=max(5, len(valid) // SKYLINE_SPAN), mode="nearest")
    return np.interp(np.arange(len(readings)), valid, rows)


def _sky_fill(image: np.ndarray, sky: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Colour for the ``region`` of the sky: a quadratic in (x, y) fitted to the known sky,
    plus its residual at the sky's edge carried smoothly inward."""
    height, width = sky.shape
    ys, xs = np.nonzero(sky)
    scale = float(max(height, width))

    def basis(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        u, v = x / scale, y / scale
        return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)

    take = np.linspace(0, len(ys) - 1, min(len(ys), 20000)).astype(np.int64)
    coef, *_ = np.linalg.lstsq(basis(ys[take], xs[take]), image[ys[take], xs[take]], rcond=None)
    gy, gx = np.mgrid[0:height, 0:width]
    model = (basis(gy.ravel().astype(np.float64), gx.ravel().astype(np.float64)) @ coef).reshape(height, width, 3)
    residual = known_blur((image - model).astype(np.float32), sky, 6.0)
    carried = _smooth_fill(residual, sky, region, offset=0.5)
    return np.clip(model + carried, 0.0, 1.0).astype(np.float32)


def _smooth_fill(values: np.ndarray, known: np.ndarray, region: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """``values`` (in ``[-offset, 1 - offset]``) carried from ``known`` into ``region`` by
    Telea's method on a shrunk image (the result is smooth anyway)."""
    factor = max(1, int(np.ceil(max(known.shape) / 256)))
    encoded = np.clip((values + offset) * 255.0, 0, 255).astype(np.float32)
    filled = shrunk_telea(encoded, ~known, factor, 5) / 255.0 - offset
    return np.where(region[..., None], filled, 0.0).astype(np.float32)


def _detail(image: np.ndarray, broad_known: np.ndarray, broad_target: np.ndarray, source: np.ndarray,
            region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fine detail for ``region``: per patch, the detail of the ``source`` patch whose broad
    colour is nearest the target's among :data:`CANDIDATES` random ones, overlap-blended."""
    height, width = region.shape
    detail = np.zeros_like(image)
    if not region.any():
        return detail
    fine = image - broad_known
    whole = ndimage.binary_erosion(source, np.ones((PATCH, PATCH), bool), origin=(-(PATCH // 2), -(PATCH // 2)))
    whole[height - PATCH + 1:] = False
    whole[:, width - PATCH + 1:] = False
    ys, xs = np.nonzero(whole)
    if not len(ys):
        return detail
    mean_broad = np.stack([ndimage.uniform_filter(broad_known[..., c], PATCH, origin=-(PATCH // 2))
                           for c in range(3)], axis=2)
    window = np.outer(np.hanning(PATCH + 2)[1:-1], np.hanning(PATCH + 2)[1:-1]).astype(np.float32)
    acc = np.zeros_like(image)
    weight = np.zeros((height, width), np.float32)
    step = PATCH // 2
    for y in range(-step, height, step):
        for x in range(-step, width, step):
            y0, x0 = max(y, 0), max(x, 0)
            y1, x1 = min(y + PATCH, height), min(x + PATCH, width)
            if y1 <= y0 or x1 <= x0 or not region[y0:y1, x0:x1].any():
                continue
            target = broad_target[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
            pick = rng.integers(0, len(ys), size=min(CANDIDATES, len(ys)))
            best = pick[np.argmin(((mean_broad[ys[pick], xs[pick]] - target) ** 2).sum(axis=1))]
            sy, sx = ys[best] + (y0 - y), xs[best] + (x0 - x)
            w = window[y0 - y:y1 - y, x0 - x:x1 - x]
            acc[y0:y1, x0:x1] += w[..., None] * fine[sy:sy + (y1 - y0), sx:sx + (x1 - x0)]
            weight[y0:y1, x0:x1] += w * w
    # normalised by the root of the summed squared weights, not their sum: overlapping patches
    # are independent, so this keeps the detail's variance where a plain average would halve it
    detail = np.where((weight > 1e-6)[..., None], acc / np.sqrt(np.maximum(weight, 1e-12))[..., None], 0.0)
    return np.where(region[..., None], detail, 0.0).astype(np.float32)


def paint_unseen(image: np.ndarray, known: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (H,W,3, display-encoded 0–1) with every pixel outside ``known`` painted (see
    the module doc), and the mask of those painted as sky. ValueError when nothing is known."""
    if not known.any():
        raise ValueError("nothing of the backdrop is known to paint from")
    hole = ~known
    image = np.where(known[..., None], image, 0.0).astype(np.float32)
    if not hole.any():
        return image, np.zeros_like(known)
    sky = sky_mask(image, known)
    rows = np.arange(known.shape[0])[:, None]
    hole_sky = hole & (rows < skyline(sky, known)[None, :]) if sky.any() else np.zeros_like(hole)
    hole_ground = hole & ~hole_sky
    broad_known = known_blur(image, known, DETAIL_SIGMA)
    ground_source = known & ~sky if (known & ~sky).any() else known
    target = np.zeros_like(image)
    if hole_sky.any():
        target += np.where(hole_sky[..., None], _sky_fill(image, sky, hole_sky), 0.0)
    if hole_ground.any():
        target += _smooth_fill(known_blur(image, ground_source, DETAIL_SIGMA), ground_source, hole_ground)
    painted = target.copy()
    for region, source in ((hole_sky, sky), (hole_ground, ground_source)):
        if region.any() and source.any():
            painted += _detail(image, broad_known, target, source, region, rng)
    out = np.where(hole[..., None], np.clip(painted, 0.0, 1.0), image)
    return out.astype(np.float32), hole_sky
