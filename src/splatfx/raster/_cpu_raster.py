"""Tile binning, front-to-back compositing and its backward pass on the CPU (numba).

Data layout: projected Gaussians are flattened over (camera, Gaussian) to ``M = C·N``
entries ``e = c·N + g`` (gsplat's non-packed ``flatten_ids``). The image is cut into
16×16 tiles; a *bin* is one (camera, tile).

Binning (:func:`bin_gaussians`): each visible entry covers the tiles that hold a pixel
centre inside its bounding box (``|x + ½ − u| ≤ r_x`` and likewise in y). Entries are
sorted once by depth (ties by entry id, so by Gaussian id within a camera), then counted
and scattered into bins chunk by chunk: every bin lists its entries front to back, and
the result is identical whatever the thread count. :func:`gather_splats` then copies each
intersection's Gaussian into intersection order, so a tile reads its splats in sequence.

Compositing (:func:`rasterize_forward`): one task per bin walks its list front to back.
Each splat touches only the tile rows where its ellipse ``σ ≤ ln(255·o)`` (with a small
margin) lies, and every pixel of those rows is evaluated branch-free (selects, an inline
exp), which LLVM vectorises. Per pixel, exactly as gsplat: ``σ = ½(a dx² + c dy²) + b dx dy``
with ``(dx, dy) = mean − (x+½, y+½)``; skip ``σ < 0``; ``α = min(0.99, o·exp(−σ))``; skip
``α < 1/255``; stop before a Gaussian that would take the transmittance to ``≤ 1e-4``.
The pixel values do not depend on the loop order. The forward keeps the final
transmittance and the index of the last contributing intersection per pixel.

Backward (:func:`rasterize_backward`): the same walk back to front from each pixel's last
contributor, recovering the transmittance by division (``T ← T/(1−α)``) and the colour of
what lies behind from a running buffer; ``σ`` and ``exp(−σ)`` are recomputed by the same
vectorised code as the forward, so both passes take identical decisions. Gradients of one
intersection are summed over its pixels and written to that intersection's own row;
:func:`_reduce_rows_kernel` then sums each entry's rows in a fixed order. No two threads
write the same memory, and the result is bit-identical from run to run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from splatfx.raster._cpu_threads import parallel_for

TILE_SIZE = 16
ALPHA_MAX = np.float32(0.99)  # gsplat's CUDA kernels use 0.999
ALPHA_MIN = np.float32(1.0 / 255.0)
T_MIN = np.float32(1e-4)
HALF = np.float32(0.5)
ONE = np.float32(1.0)
ZERO = np.float32(0.0)
SPAN_MARGIN = 1e-3  # relative slack on the 1/255 power cut when solving a row's span
GRAD_ROW = 8  # per-intersection row: d(u, v), d(conic a, b, c), d(opacity), |du|, |dv|, then colours
REC = 8  # per-intersection record: u, v, conic a, b, c, opacity, power cut, unused
CH_GROUP = 4  # channels are zero-padded to a multiple of this (the backward unrolls groups of 4)
# Per-tile pixel buffers are split into two 8-column panels, each row-major: pixel (lx, ly)
# of the tile lives at (lx // 8)·128 + ly·8 + lx % 8. A splat's rows within one panel are
# then contiguous, so a small splat is processed 8 pixels per row instead of 16.
PANEL = 8
# q → (lx, ly): lx = (q >> 7) << 3 | (q & 7), ly = (q >> 3) & 15, for PANEL = 8 and TILE_SIZE = 16
_P_MASK, _P_SHIFT, _ROW_MASK, _PANEL_SHIFT = np.uint64(7), np.uint64(3), np.uint64(TILE_SIZE - 1), np.uint64(7)


@njit(nogil=True, cache=True)
def _q(lx: int, ly: int) -> np.uint64:
    """Index of tile-local pixel (lx, ly) in a per-tile buffer (see PANEL)."""
    return np.uint64((lx // PANEL) * (PANEL * TILE_SIZE) + ly * PANEL + lx % PANEL)


@njit(nogil=True, cache=True)
def _panel_range(panel: int, ly0: int, ly1: int) -> tuple:
    """Buffer indices ``[q0, q1)`` of rows ``ly0..ly1`` (inclusive) of one panel."""
    base = panel * PANEL * TILE_SIZE
    return np.uint64(base + ly0 * PANEL), np.uint64(base + (ly1 + 1) * PANEL)


@dataclass(frozen=True)
class TileBins:
    """Which projected entries touch which (camera, tile) bin, front to back.

    ``tile_offsets`` (C·T+1,) int64: bin ``b`` holds ``flatten_ids[tile_offsets[b]:tile_offsets[b+1]]``.
    ``flatten_ids`` (n_isects,) int32: entry ids ``c·N + g`` sorted by bin, then depth.
    ``tiles_per_gauss`` (C·N,) int32: number of bins each entry touches.
    ``gauss_offsets`` (C·N+1,) int64 and ``isect_pos`` (n_isects,) int64: for entry ``e``,
    ``isect_pos[gauss_offsets[e]:gauss_offsets[e+1]]`` are the positions of its
    intersections in ``flatten_ids`` (used to sum gradients per entry in a fixed order).
    """

    tile_size: int
    tiles_x: int
    tiles_y: int
    tile_offsets: np.ndarray
    flatten_ids: np.ndarray
    tiles_per_gauss: np.ndarray
    gauss_offsets: np.ndarray
    isect_pos: np.ndarray

    @property
    def n_isects(self) -> int:
        return int(self.flatten_ids.shape[0])


# --------------------------------------------------------------------------- binning


@njit(nogil=True, fastmath=False, cache=True)
def _pixel_box(u: float, v: float, rx: float, ry: float, width: int, height: int) -> tuple:
    """Inclusive pixel range (x0, x1, y0, y1) whose centres lie in the box ``|p − mean| ≤ r``."""
    x0 = max(0, int(math.ceil(u - rx - 0.5)))
    x1 = min(width - 1, int(math.floor(u + rx - 0.5)))
    y0 = max(0, int(math.ceil(v - ry - 0.5)))
    y1 = min(height - 1, int(math.floor(v + ry - 0.5)))
    return x0, x1, y0, y1


@njit(nogil=True, fastmath=False, cache=True)
def _tile_rects_kernel(
    start: int,
    stop: int,
    step: int,
    means2d: np.ndarray,  # (M, 2) float32
    radii: np.ndarray,  # (M, 2) int32
    width: int,
    height: int,
    tile_size: int,
    rects: np.ndarray,  # out (M, 4) int32: tile x0, x1 (exclusive), y0, y1 (exclusive)
    counts: np.ndarray,  # out (M,) int32
) -> None:
    for e in range(start, stop, step):
        rx, ry = radii[e, 0], radii[e, 1]
        if rx <= 0 or ry <= 0:
            counts[e] = 0
            continue
        x0, x1, y0, y1 = _pixel_box(float(means2d[e, 0]), float(means2d[e, 1]), rx, ry, width, height)
        if x0 > x1 or y0 > y1:
            counts[e] = 0
            continue
        rects[e, 0] = x0 // tile_size
        rects[e, 1] = x1 // tile_size + 1
        rects[e, 2] = y0 // tile_size
        rects[e, 3] = y1 // tile_size + 1
        counts[e] = (rects[e, 1] - rects[e, 0]) * (rects[e, 3] - rects[e, 2])


@njit(nogil=True, fastmath=False, cache=True)
def _bin_count_kernel(
    start: int,
    stop: int,
    step: int,
    sorted_ids: np.ndarray,  # (V,) int64 entries in depth order
    rects: np.ndarray,  # (V, 4) their tile rectangles, in the same order
    n_gauss: int,
    tiles_x: int,
    n_tiles: int,
    chunk_len: int,
    chunk_counts: np.ndarray,  # out (K, C·T) int64, zeroed
) -> None:
    for k in range(start, stop, step):
        for s in range(k * chunk_len, min((k + 1) * chunk_len, sorted_ids.shape[0])):
            e = sorted_ids[s]
            base = (e // n_gauss) * n_tiles
            for ty in range(rects[s, 2], rects[s, 3]):
                for tx in range(rects[s, 0], rects[s, 1]):
                    chunk_counts[k, base + ty * tiles_x + tx] += 1


@njit(nogil=True, fastmath=False, cache=True)
def _bin_scatter_kernel(
    start: int,
    stop: int,
    step: int,
    sorted_ids: np.ndarray,
    rects: np.ndarray,  # (V, 4) in sorted order
    first_isect: np.ndarray,  # (V,) int64: gauss_offsets of the sorted entries
    n_gauss: int,
    tiles_x: int,
    n_tiles: int,
    chunk_len: int,
    cursors: np.ndarray,  # (K, C·T) int64: next free slot of each bin for each chunk
    flatten_ids: np.ndarray,  # out (n_isects,) int32
    isect_pos: np.ndarray,  # out (n_isects,) int64
) -> None:
    for k in range(start, stop, step):
        for s in range(k * chunk_len, min((k + 1) * chunk_len, sorted_ids.shape[0])):
            e = sorted_ids[s]
            base = (e // n_gauss) * n_tiles
            j = first_isect[s]
            for ty in range(rects[s, 2], rects[s, 3]):
                for tx in range(rects[s, 0], rects[s, 1]):
                    b = base + ty * tiles_x + tx
                    p = cursors[k, b]
                    cursors[k, b] = p + 1
                    flatten_ids[p] = e
                    isect_pos[j] = p
                    j += 1


def _depth_order(depths: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``ids`` sorted by depth, ties by id: one unique 64-bit key per entry, so any sort is stable."""
    bits = depths[ids].view(np.uint32).astype(np.uint64)
    negative = (bits >> np.uint64(31)) == 1
    bits = np.where(negative, ~bits & np.uint64(0xFFFFFFFF), bits | np.uint64(0x80000000))  # IEEE order
    keys = (bits << np.uint64(32)) | ids.astype(np.uint64)
    keys.sort()
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)


def bin_gaussians(
    means2d: np.ndarray,  # (M, 2) float32
    radii: np.ndarray,  # (M, 2) int32
    depths: np.ndarray,  # (M,) float32
    n_cameras: int,
    width: int,
    height: int,
    tile_size: int = TILE_SIZE,
) -> TileBins:
    """Assign every visible entry to the (camera, tile) bins it touches, front to back per bin."""
    m = means2d.shape[0]
    n_gauss = m // n_cameras if n_cameras else 0
    tiles_x = -(-width // tile_size)
    tiles_y = -(-height // tile_size)
    n_tiles = tiles_x * tiles_y
    n_bins = n_cameras * n_tiles
    rects = np.zeros((m, 4), dtype=np.int32)
    counts = np.zeros(m, dtype=np.int32)
    if m:
        parallel_for(_tile_rects_kernel, m, means2d, radii, int(width), int(height), int(tile_size), rects, counts)
    gauss_offsets = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=gauss_offsets[1:])
    n_isects = int(gauss_offsets[-1])
    if n_isects >= 2**31:
        raise ValueError(f"rasterize: {n_isects} tile intersections exceed the CPU backend's int32 indices")
    sorted_ids = _depth_order(depths, np.flatnonzero(counts))
    sorted_rects = rects[sorted_ids]  # read in order by the count and scatter passes
    first_isect = gauss_offsets[sorted_ids]
    n_chunks = max(1, min(64, sorted_ids.shape[0] // 4096))
    chunk_len = -(-sorted_ids.shape[0] // n_chunks) if sorted_ids.shape[0] else 1
    chunk_counts = np.zeros((n_chunks, n_bins), dtype=np.int64)
    if sorted_ids.shape[0]:
        parallel_for(
            _bin_count_kernel, n_chunks, sorted_ids, sorted_rects, n_gauss, tiles_x, n_tiles, chunk_len, chunk_counts
        )
    tile_offsets = np.zeros(n_bins + 1, dtype=np.int64)
    np.cumsum(chunk_counts.sum(axis=0), out=tile_offsets[1:])
    cursors = tile_offsets[None, :-1] + np.cumsum(chunk_counts, axis=0) - chunk_counts
    flatten_ids = np.empty(n_isects, dtype=np.int32)
    isect_pos = np.empty(n_isects, dtype=np.int64)
    if n_isects:
        parallel_for(
            _bin_scatter_kernel, n_chunks, sorted_ids, sorted_rects, first_isect, n_gauss, tiles_x, n_tiles,
            chunk_len, cursors, flatten_ids, isect_pos,
        )
    return TileBins(tile_size, tiles_x, tiles_y, tile_offsets, flatten_ids, counts, gauss_offsets, isect_pos)


# --------------------------------------------------------------------------- compositing


@dataclass(frozen=True)
class Splats:
    """The projected Gaussians gathered into intersection order, so each tile reads memory in sequence.

    ``rec`` (n_isects, 8) float32: u, v, conic a, b, c, opacity, power cut (see
    :func:`_power_cut`), unused. ``colors`` (n_isects, D4) float32: the entry's channels,
    zero-padded to a multiple of CH_GROUP.
    """

    rec: np.ndarray
    colors: np.ndarray


@njit(nogil=True, fastmath=False, cache=True)
def _power_cut(opacity: float) -> float:
    """Power above which ``o·exp(−σ) < 1/255``, widened by a safety margin for row spans."""
    cut = math.log(max(opacity, 1e-30) * 255.0)
    return cut + SPAN_MARGIN * (1.0 + abs(cut))


@njit(nogil=True, fastmath=False, cache=True)
def _gather_kernel(
    start: int,
    stop: int,
    step: int,
    gauss_offsets: np.ndarray,  # (M+1,) int64
    isect_pos: np.ndarray,  # (n_isects,) int64
    means2d: np.ndarray,
    conics: np.ndarray,
    opacities: np.ndarray,
    colors: np.ndarray,  # (M, D)
    rec: np.ndarray,  # out (n_isects, REC) float32
    rec_col: np.ndarray,  # out (n_isects, D4) float32, zeroed
) -> None:
    """Write entries ``start:stop:step`` to each of their intersections (entry data read once, in order)."""
    n_ch = colors.shape[1]
    for e in range(start, stop, step):
        lo, hi = gauss_offsets[e], gauss_offsets[e + 1]
        if lo == hi:
            continue
        cut = np.float32(_power_cut(float(opacities[e])))
        for j in range(lo, hi):
            p = isect_pos[j]
            rec[p, 0] = means2d[e, 0]
            rec[p, 1] = means2d[e, 1]
            rec[p, 2] = conics[e, 0]
            rec[p, 3] = conics[e, 1]
            rec[p, 4] = conics[e, 2]
            rec[p, 5] = opacities[e]
            rec[p, 6] = cut
            rec[p, 7] = 0.0
            for k in range(n_ch):
                rec_col[p, k] = colors[e, k]


def gather_splats(
    bins: TileBins, means2d: np.ndarray, conics: np.ndarray, colors: np.ndarray, opacities: np.ndarray
) -> Splats:
    """Copy each intersection's Gaussian (M-indexed arrays) into intersection order."""
    padded = -(-max(colors.shape[1], 1) // CH_GROUP) * CH_GROUP
    rec = np.empty((bins.n_isects, REC), dtype=np.float32)
    rec_col = np.zeros((bins.n_isects, padded), dtype=np.float32)
    if bins.n_isects:
        parallel_for(
            _gather_kernel, means2d.shape[0], bins.gauss_offsets, bins.isect_pos, means2d, conics, opacities,
            colors, rec, rec_col,
        )
    return Splats(rec, rec_col)


@njit(nogil=True, fastmath=False, cache=True)
def _ellipse(rec: np.ndarray, i: int, x0: int, x1: int, y0: int, y1: int) -> tuple:
    """Pixel rows and columns of the tile ``[x0, x1) × [y0, y1)`` where splat ``i`` can reach ``σ ≤ cut``.

    With ``d = mean − pixel centre``, ``σ = ½(a dx² + c dy²) + b dx dy``; its minimum over
    ``dx`` in a row is ``½ dy² det/a`` (``det = ac − b²``), so rows satisfy
    ``dy² ≤ 2a·cut/det`` (columns likewise with c). Returns (first row, last row, first
    column, last column, 1/a, det, 2a·cut); empty ranges when the conic is degenerate.
    """
    fa, fb, fc = float(rec[i, 2]), float(rec[i, 3]), float(rec[i, 4])
    cut = float(rec[i, 6])
    det = fa * fc - fb * fb
    if not (det > 0.0 and fa > 0.0 and cut > 0.0):
        return 1, 0, 1, 0, 0.0, 0.0, 0.0
    half_h = math.sqrt(2.0 * fa * cut / det)
    half_w = math.sqrt(2.0 * fc * cut / det)
    fu = float(rec[i, 0]) - 0.5
    fv = float(rec[i, 1]) - 0.5
    return (
        max(y0, int(math.ceil(fv - half_h))), min(y1 - 1, int(math.floor(fv + half_h))),
        max(x0, int(math.ceil(fu - half_w))), min(x1 - 1, int(math.floor(fu + half_w))),
        1.0 / fa, det, 2.0 * fa * cut,
    )


@njit(nogil=True, fastmath=False, cache=True)
def _span(u: float, b: float, dy: float, inv_a: float, det: float, two_a_cut: float, x0: int, x1: int) -> tuple:
    """Inclusive columns in ``[x0, x1)`` of one row where ``σ ≤ cut`` is possible (empty if x0 > x1).

    In a row, ``σ ≤ cut`` ⟺ ``|dx + b dy/a| ≤ sqrt(2a·cut − det dy²)/a``; the pixel
    centre is ``u − dx``.
    """
    disc = two_a_cut - det * dy * dy
    if disc < 0.0:
        return 1, 0
    half_w = math.sqrt(disc) * inv_a
    mid = u - 0.5 + b * dy * inv_a
    return max(x0, int(math.ceil(mid - half_w))), min(x1 - 1, int(math.floor(mid + half_w)))


@njit(nogil=True, fastmath=False, cache=True)
def _exp_neg(s: np.float32) -> np.float32:
    """``exp(−s)`` rounded to float32, for ``s`` clamped to [0, 16]; no branch and no call, so loops vectorise.

    Computed in float64 as ``(e^{−s/64})^64``: a degree-8 Taylor polynomial (relative error
    < 3e-12 after the six squarings), so the float32 result is the correctly rounded value
    except in rare near-ties, where it is one unit in the last place off (libm's ``expf`` and
    torch's vectorised exp differ from each other in the same way). Beyond 16 the value
    (≈ 1e-7) is far below the 1/255 cut whatever the opacity.
    """
    r = min(max(float(s), 0.0), 16.0) * 0.015625
    p = 1.0 + r * (-1.0 + r * (0.5 + r * (-1.0 / 6.0 + r * (1.0 / 24.0 + r * (-1.0 / 120.0 + r * (
        1.0 / 720.0 + r * (-1.0 / 5040.0 + r * (1.0 / 40320.0))))))))
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return np.float32(p)


@njit(nogil=True, fastmath=False, cache=True)
def _splat_rows(
    i: int, q0: np.uint64, q1: np.uint64, x0: int, y0: int, tw: np.uint64,
    u: np.float32, v: np.float32, ca: np.float32, cb: np.float32, cc: np.float32, op: np.float32,
    trans: np.ndarray, last: np.ndarray, wbuf: np.ndarray,
) -> int:
    """Composite splat ``i`` over the tile pixels ``q0 ≤ q < q1`` (whole rows); return how many pixels finished.

    Every pixel of those rows is evaluated with selects instead of branches, so LLVM
    vectorises the loop (8–16 pixels per instruction); the exact per-pixel tests decide
    what changes. Writes the compositing weight ``α·T`` (0 if unused) to ``wbuf``.
    """
    n_end = 0
    fx0 = np.float32(x0) + HALF
    fy0 = np.float32(y0) + HALF
    for q in range(q0, q1):
        lx = ((q >> _PANEL_SHIFT) << _P_SHIFT) | (q & _P_MASK)
        dx = u - (fx0 + np.float32(lx))
        dy = v - (fy0 + np.float32((q >> _P_SHIFT) & _ROW_MASK))
        sigma = HALF * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
        alpha = min(ALPHA_MAX, op * _exp_neg(sigma))
        t = trans[q]
        next_t = t * (ONE - alpha)
        hit = (lx < tw) & (sigma >= ZERO) & (alpha >= ALPHA_MIN) & (t > ZERO)
        use = hit & (next_t > T_MIN)
        end = hit & (next_t <= T_MIN)
        wbuf[q] = alpha * t if use else ZERO
        trans[q] = next_t if use else (-t if end else t)
        last[q] = i if use else last[q]
        n_end += end
    return n_end


@njit(nogil=True, fastmath=False, cache=True)
def _raster_forward_kernel(
    start: int,
    stop: int,
    step: int,
    rec: np.ndarray,
    rec_col: np.ndarray,
    tile_offsets: np.ndarray,
    width: int,
    height: int,
    tiles_x: int,
    n_tiles: int,
    out_colors: np.ndarray,  # out (C, H, W, D4) float32, without background
    t_final: np.ndarray,  # out (C, H, W) float32
    last_ids: np.ndarray,  # out (C, H, W) int32
) -> None:
    n_ch = rec_col.shape[1]
    cap = TILE_SIZE * TILE_SIZE
    # Per-pixel state of one tile in panel order (see PANEL; edge tiles leave columns ≥ tw
    # unused). A finished pixel keeps −T, so "still open" is T > 0. Indices are unsigned
    # so numba emits no negative-index wraparound.
    trans = np.empty(cap, dtype=np.float32)
    acc = np.empty((n_ch, cap), dtype=np.float32)
    last = np.empty(cap, dtype=np.int32)
    wbuf = np.empty(cap, dtype=np.float32)
    for job in range(start, stop, step):
        cam = job // n_tiles
        tile = job - cam * n_tiles
        x0 = (tile % tiles_x) * TILE_SIZE
        y0 = (tile // tiles_x) * TILE_SIZE
        x1 = min(x0 + TILE_SIZE, width)
        y1 = min(y0 + TILE_SIZE, height)
        tw = x1 - x0
        trans[:] = ONE
        last[:] = -1
        acc[:, :] = ZERO
        n_open = tw * (y1 - y0)
        for i in range(tile_offsets[job], tile_offsets[job + 1]):
            ry0, ry1, cx0, cx1, _, _, _ = _ellipse(rec, i, x0, x1, y0, y1)
            if ry0 > ry1 or cx0 > cx1:
                continue
            for panel in range((cx0 - x0) // PANEL, (cx1 - x0) // PANEL + 1):
                q0, q1 = _panel_range(panel, ry0 - y0, ry1 - y0)
                n_open -= _splat_rows(
                    i, q0, q1, x0, y0, np.uint64(tw), rec[i, 0], rec[i, 1], rec[i, 2], rec[i, 3], rec[i, 4],
                    rec[i, 5], trans, last, wbuf,
                )
                for k in range(n_ch):
                    ck = rec_col[i, k]
                    for q in range(q0, q1):
                        acc[k, q] += ck * wbuf[q]
            if n_open == 0:
                break
        for py in range(y0, y1):
            for px in range(x0, x1):
                p = _q(px - x0, py - y0)
                for k in range(n_ch):
                    out_colors[cam, py, px, k] = acc[k, p]
                t_final[cam, py, px] = abs(trans[p])
                last_ids[cam, py, px] = last[p]


def rasterize_forward(
    splats: Splats,
    bins: TileBins,
    backgrounds: np.ndarray,  # (C, D) float32
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composite every (camera, tile) bin front to back.

    Returns images (C,H,W,D) including ``T·background``, the final transmittance
    (C,H,W) (alpha is ``1 − T``) and the last contributing intersection per pixel (C,H,W)
    int32 (−1 where nothing contributed).
    """
    n_cam, n_ch = backgrounds.shape
    out = np.empty((n_cam, height, width, splats.colors.shape[1]), dtype=np.float32)
    t_final = np.empty((n_cam, height, width), dtype=np.float32)
    last_ids = np.empty((n_cam, height, width), dtype=np.int32)
    n_tiles = bins.tiles_x * bins.tiles_y
    if n_cam * n_tiles:
        parallel_for(
            _raster_forward_kernel, n_cam * n_tiles, splats.rec, splats.colors, bins.tile_offsets,
            int(width), int(height), bins.tiles_x, n_tiles, out, t_final, last_ids, interleave=True,
        )
    images = out[..., :n_ch] + t_final[..., None] * backgrounds[:, None, None, :]
    return images, t_final, last_ids


@njit(nogil=True, fastmath=False, cache=True)
def _falloff_rows(
    q0: np.uint64, q1: np.uint64, x0: int, y0: int,
    u: np.float32, v: np.float32, ca: np.float32, cb: np.float32, cc: np.float32,
    sig: np.ndarray, vis: np.ndarray,
) -> None:
    """``σ`` and ``exp(−σ)`` of one splat at the tile pixels ``q0 ≤ q < q1`` (whole rows), vectorised.

    Bit-identical to what :func:`_splat_rows` computes, so the backward replays exactly
    the forward's decisions.
    """
    fx0 = np.float32(x0) + HALF
    fy0 = np.float32(y0) + HALF
    for q in range(q0, q1):
        dx = u - (fx0 + np.float32(((q >> _PANEL_SHIFT) << _P_SHIFT) | (q & _P_MASK)))
        dy = v - (fy0 + np.float32((q >> _P_SHIFT) & _ROW_MASK))
        sigma = HALF * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
        sig[q] = sigma
        vis[q] = _exp_neg(sigma)


@njit(nogil=True, fastmath=False, cache=True)
def _raster_backward_kernel(
    start: int,
    stop: int,
    step: int,
    rec: np.ndarray,
    rec_col: np.ndarray,
    backgrounds: np.ndarray,  # (C, D) float32
    tile_offsets: np.ndarray,
    width: int,
    height: int,
    tiles_x: int,
    n_tiles: int,
    t_final: np.ndarray,  # (C, H, W) float32 from the forward
    last_ids: np.ndarray,  # (C, H, W) int32 from the forward
    v_images: np.ndarray,  # (C, H, W, D) float32
    v_alphas: np.ndarray,  # (C, H, W) float32
    rows: np.ndarray,  # out (n_isects, GRAD_ROW + D4) float32
) -> None:
    n_ch = rec_col.shape[1]
    n_out = v_images.shape[3]
    cap = TILE_SIZE * TILE_SIZE
    trans = np.empty(cap, dtype=np.float32)
    t_end = np.empty(cap, dtype=np.float32)
    buf = np.empty((cap, n_ch), dtype=np.float32)
    v_img = np.empty((cap, n_ch), dtype=np.float32)
    v_a = np.empty(cap, dtype=np.float32)
    last = np.empty(cap, dtype=np.int32)
    g_col = np.empty(n_ch, dtype=np.float64)
    sig = np.empty(cap, dtype=np.float32)
    fall = np.empty(cap, dtype=np.float32)
    for job in range(start, stop, step):
        cam = job // n_tiles
        tile = job - cam * n_tiles
        x0 = (tile % tiles_x) * TILE_SIZE
        y0 = (tile // tiles_x) * TILE_SIZE
        x1 = min(x0 + TILE_SIZE, width)
        y1 = min(y0 + TILE_SIZE, height)
        first = tile_offsets[job]
        max_last = first - 1
        buf[:, :] = ZERO
        v_img[:, :] = ZERO
        for py in range(y0, y1):
            for px in range(x0, x1):
                p = _q(px - x0, py - y0)
                t = t_final[cam, py, px]
                trans[p] = t
                t_end[p] = t
                last[p] = last_ids[cam, py, px]
                max_last = max(max_last, last[p])
                # alpha = 1 − T_final, and the background adds T_final·bg to the image
                bg_dot = ZERO
                for k in range(n_out):
                    v_img[p, k] = v_images[cam, py, px, k]
                    bg_dot += backgrounds[cam, k] * v_img[p, k]
                v_a[p] = v_alphas[cam, py, px] - bg_dot
        for i in range(max_last + 1, tile_offsets[job + 1]):
            rows[i, :] = 0.0
        for i in range(max_last, first - 1, -1):
            u, v = rec[i, 0], rec[i, 1]
            ca, cb, cc = rec[i, 2], rec[i, 3], rec[i, 4]
            op = rec[i, 5]
            gu = 0.0
            gv = 0.0
            ga = 0.0
            gb = 0.0
            gc = 0.0
            go = 0.0
            au = 0.0
            av = 0.0
            g_col[:] = 0.0
            ry0, ry1, cx0, cx1, inv_a, det, two_a_cut = _ellipse(rec, i, x0, x1, y0, y1)
            if cx0 > cx1:
                ry1 = ry0 - 1
            for panel in range((cx0 - x0) // PANEL, (cx1 - x0) // PANEL + 1) if ry0 <= ry1 else range(0):
                q0, q1 = _panel_range(panel, ry0 - y0, ry1 - y0)
                _falloff_rows(q0, q1, x0, y0, u, v, ca, cb, cc, sig, fall)
            for py in range(ry0, ry1 + 1):
                dy = v - (np.float32(py) + HALF)
                sx0, sx1 = _span(float(u), float(cb), float(dy), inv_a, det, two_a_cut, cx0, cx1 + 1)
                for px in range(sx0, sx1 + 1):  # within the panels prepared above
                    p = _q(px - x0, py - y0)
                    if last[p] < i:
                        continue
                    sigma = sig[p]
                    if sigma < ZERO:
                        continue
                    dx = u - (np.float32(px) + HALF)
                    vis = fall[p]
                    alpha = min(ALPHA_MAX, op * vis)
                    if alpha < ALPHA_MIN:
                        continue
                    ra = ONE / (ONE - alpha)
                    t = trans[p] * ra
                    trans[p] = t
                    fac = alpha * t
                    v_alpha = ZERO
                    for k0 in range(0, n_ch, CH_GROUP):
                        for j in range(CH_GROUP):
                            k = np.uint64(k0 + j)
                            g_col[k] += fac * v_img[p, k]
                            v_alpha += (rec_col[i, k] * t - buf[p, k] * ra) * v_img[p, k]
                            buf[p, k] += rec_col[i, k] * fac
                    v_alpha += t_end[p] * ra * v_a[p]
                    if op * vis <= ALPHA_MAX:
                        v_sigma = -op * vis * v_alpha
                        ga += HALF * v_sigma * dx * dx
                        gb += v_sigma * dx * dy
                        gc += HALF * v_sigma * dy * dy
                        du = v_sigma * (ca * dx + cb * dy)
                        dv = v_sigma * (cb * dx + cc * dy)
                        gu += du
                        gv += dv
                        au += abs(du)
                        av += abs(dv)
                        go += vis * v_alpha
            rows[i, 0] = gu
            rows[i, 1] = gv
            rows[i, 2] = ga
            rows[i, 3] = gb
            rows[i, 4] = gc
            rows[i, 5] = go
            rows[i, 6] = au
            rows[i, 7] = av
            for k in range(n_ch):
                rows[i, GRAD_ROW + k] = g_col[k]


@njit(nogil=True, fastmath=False, cache=True)
def _reduce_rows_kernel(
    start: int,
    stop: int,
    step: int,
    rows: np.ndarray,  # (n_isects, R) float32
    gauss_offsets: np.ndarray,  # (M+1,) int64
    isect_pos: np.ndarray,  # (n_isects,) int64
    out: np.ndarray,  # out (M, R) float32, zeroed
) -> None:
    n_col = rows.shape[1]
    acc = np.empty(n_col, dtype=np.float64)
    for e in range(start, stop, step):
        lo, hi = gauss_offsets[e], gauss_offsets[e + 1]
        if lo == hi:
            continue
        for k in range(n_col):
            acc[k] = 0.0
        for j in range(lo, hi):
            r = isect_pos[j]
            for k in range(n_col):
                acc[k] += rows[r, k]
        for k in range(n_col):
            out[e, k] = acc[k]


def rasterize_backward(
    splats: Splats,
    bins: TileBins,
    backgrounds: np.ndarray,  # (C, D) float32
    width: int,
    height: int,
    t_final: np.ndarray,
    last_ids: np.ndarray,
    v_images: np.ndarray,  # (C, H, W, D) float32
    v_alphas: np.ndarray,  # (C, H, W) float32
    n_entries: int,
) -> np.ndarray:
    """Gradients per entry (M, 8 + D) float32: d(u, v), d(conic), d(opacity), |du|, |dv|, d(channels).

    The gradient w.r.t. the backgrounds is ``Σ_pixels v_image·T_final`` and is left to
    the caller (it needs no per-Gaussian work).
    """
    n_cam, n_ch = backgrounds.shape
    n_tiles = bins.tiles_x * bins.tiles_y
    out = np.zeros((n_entries, GRAD_ROW + splats.colors.shape[1]), dtype=np.float32)
    if bins.n_isects:
        rows = np.empty((bins.n_isects, out.shape[1]), dtype=np.float32)
        parallel_for(
            _raster_backward_kernel, n_cam * n_tiles, splats.rec, splats.colors, backgrounds, bins.tile_offsets,
            int(width), int(height), bins.tiles_x, n_tiles, t_final, last_ids, v_images, v_alphas, rows,
            interleave=True,
        )
        parallel_for(_reduce_rows_kernel, n_entries, rows, bins.gauss_offsets, bins.isect_pos, out)
    return out[:, : GRAD_ROW + n_ch]
