"""Tile binning, front-to-back compositing and its backward pass on the CPU (numba).

Data layout: projected Gaussians are flattened over (camera, Gaussian) to ``M = C·N``
entries ``e = c·N + g`` (gsplat's non-packed ``flatten_ids``). The image is cut into
16×16 tiles; a *bin* is one (camera, tile).

Binning (:func:`bin_gaussians`): each visible entry covers the tiles that hold a pixel
centre inside its bounding box (``|x + ½ − u| ≤ r_x`` and likewise in y). Entries are
sorted once by depth (a stable radix sort, so ties stay in entry order, i.e. by Gaussian id
within a camera), then counted and scattered into bins chunk by chunk: every bin lists its
entries front to back, and the result is identical whatever the thread count.
:func:`gather_splats` computes each entry's record; the forward copies them into
intersection order, tile by tile, so a tile reads its splats in sequence.

Compositing (:func:`rasterize_forward`): threads claim bins one at a time, heaviest first
(:meth:`TileBins.heaviest_first`), and walk each bin's list front to back, keeping the
tile's per-pixel state in one workspace of fixed rows (see PANEL, BLOCK). Each splat is
evaluated only on the row pairs of each 8-column panel that its ellipse ``σ ≤ ln(255·o)``
(with a small margin) can reach, every slot there branch-free (selects, an inline float32
exp), which LLVM vectorises 16 lanes at a time. Per pixel, exactly as gsplat:
``σ = ½(a dx² + c dy²) + b dx dy`` with ``(dx, dy) = mean − (x+½, y+½)``; skip ``σ < 0``;
``α = min(0.99, o·exp(−σ))``; skip ``α < 1/255``; stop before a Gaussian that would take
the transmittance to ``≤ 1e-4``. The pixel values do not depend on the loop order. The
forward keeps the final transmittance and the last contributing intersection per pixel,
and for each intersection the BLOCKs where it contributed at all.

Backward (:func:`rasterize_backward`): the same walk back to front, but each splat only over
the BLOCKs where the forward used it; the transmittance is recovered by division
(``T ← T/(1−α)``) and the colour of what lies behind from a running buffer; ``σ`` and
``exp(−σ)`` come from the forward's own function (:func:`_falloff`), so both passes take
identical decisions. A splat's gradients are summed over its pixels in vectorised
(reassociated, but fixed-order) sums and written to that intersection's own row;
:func:`_reduce_rows_kernel` then sums each entry's rows in a fixed order. No two threads
write the same memory, and the result is bit-identical from run to run and for any
thread count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from splatfx.raster._cpu_threads import claim, parallel_for

TILE_SIZE = 16
ALPHA_MAX = np.float32(0.99)  # gsplat's CUDA kernels use 0.999
ALPHA_MIN = np.float32(1.0 / 255.0)
T_MIN = np.float32(1e-4)
HALF = np.float32(0.5)
ONE = np.float32(1.0)
ZERO = np.float32(0.0)
SPAN_MARGIN = 1e-3  # relative slack on the 1/255 power cut when bounding a splat's ellipse
GRAD_ROW = 8  # per-intersection row: d(u, v), d(conic a, b, c), d(opacity), |du|, |dv|, then colours
REC = 8  # per-intersection record: u, v, conic a, b, c, opacity, ellipse half-height, half-width
# Per-tile pixel buffers are split into two 8-column panels, each row-major: pixel (lx, ly)
# of the tile lives at (lx // 8)·128 + ly·8 + lx % 8. A splat's rows within one panel are
# then contiguous, so a small splat is processed 8 pixels per row instead of 16, and two
# rows of a panel (a BLOCK) fill one 16-lane vector.
PANEL = 8
BLOCK = 2 * PANEL
CAP = TILE_SIZE * TILE_SIZE  # buffer slots per tile
_BLOCK_U = np.uint64(BLOCK)
_BLOCK_SHIFT = np.uint64(4)  # log2(BLOCK)
PANEL_BLOCKS = PANEL * TILE_SIZE // BLOCK  # BLOCKs per panel
OPEN_CHECK = 8  # the forward checks every this many splats whether a tile is finished
GATHER_APART = 1 << 16  # intersections from which records are gathered in a pass of their own (see Splats)
FUSED = 4  # channels handled inside the main per-slot loops (zero-padded); further ones take extra passes
# exp(−s) (see _exp_neg): Cephes' expf constants
EXP_CLAMP = np.float32(16.0)
LOG2E = np.float32(1.44269504088896341)
LN2_HI = np.float32(0.693359375)
LN2_LO = np.float32(-2.12194440e-4)
EXP_P0 = np.float32(1.9875691500e-4)
EXP_P1 = np.float32(1.3981999507e-3)
EXP_P2 = np.float32(8.3334519073e-3)
EXP_P3 = np.float32(4.1665795894e-2)
EXP_P4 = np.float32(1.6666665459e-1)
EXP_P5 = np.float32(5.0000001201e-1)


@njit(nogil=True, cache=True)
def _q(lx: int, ly: int) -> np.uint64:
    """Index of tile-local pixel (lx, ly) in a per-tile buffer (see PANEL)."""
    return np.uint64((lx // PANEL) * (PANEL * TILE_SIZE) + ly * PANEL + lx % PANEL)


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

    def heaviest_first(self) -> np.ndarray:
        """Bin indices by decreasing number of intersections (ties by index), the order tiles are handed out in.

        The compositing kernels claim one bin at a time; handing out the long lists first
        leaves only short ones for the end, so the threads finish together.
        """
        return np.argsort(-np.diff(self.tile_offsets), kind="stable")


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
    work: np.ndarray,  # [next, stop, chunk]: claimed with claim() (see parallel_for)
    means2d: np.ndarray,  # (M, 2) float32
    radii: np.ndarray,  # (M, 2) int32
    depth_bits: np.ndarray,  # (M,) uint32: the float32 depths' bit patterns
    width: int,
    height: int,
    tile_size: int,
    rects: np.ndarray,  # out (M, 4) int32: tile x0, x1 (exclusive), y0, y1 (exclusive)
    counts: np.ndarray,  # out (M,) int32
    keys: np.ndarray,  # out (M,) uint32: depth as an unsigned key in the same order (see _depth_key)
) -> None:
    start, stop = claim(work)
    while start < stop:
        for e in range(start, stop):
            counts[e] = 0
            rx, ry = radii[e, 0], radii[e, 1]
            if rx <= 0 or ry <= 0:
                continue
            x0, x1, y0, y1 = _pixel_box(float(means2d[e, 0]), float(means2d[e, 1]), rx, ry, width, height)
            if x0 > x1 or y0 > y1:
                continue
            rects[e, 0] = x0 // tile_size
            rects[e, 1] = x1 // tile_size + 1
            rects[e, 2] = y0 // tile_size
            rects[e, 3] = y1 // tile_size + 1
            counts[e] = (rects[e, 1] - rects[e, 0]) * (rects[e, 3] - rects[e, 2])
            keys[e] = _depth_key(depth_bits[e])
        start, stop = claim(work)


@njit(nogil=True, fastmath=False, cache=True)
def _depth_key(bits: np.uint32) -> np.uint32:
    """An unsigned integer that orders like the float32 with these bits (negatives reversed below positives)."""
    if bits >> np.uint32(31):
        return np.uint32(~bits)
    return np.uint32(bits | np.uint32(0x80000000))


@njit(nogil=True, fastmath=False, cache=True)
def _depth_order(
    keys: np.ndarray, counts: np.ndarray, rects: np.ndarray, gauss_offsets: np.ndarray
) -> tuple:
    """The entries with ``counts > 0`` sorted by ``keys`` (ties by entry id), their rects and first intersections.

    Also fills ``gauss_offsets`` (M+1) with the running sum of ``counts``. The sort is a
    stable least-significant-digit radix sort, 8 bits a pass, skipping passes in which
    every key has the same digit (e.g. the exponent byte of depths within one octave).
    """
    m = counts.shape[0]
    n_vis = 0
    gauss_offsets[0] = 0
    for e in range(m):
        gauss_offsets[e + 1] = gauss_offsets[e] + counts[e]
        n_vis += counts[e] > 0
    ids = np.empty(n_vis, dtype=np.int64)
    key = np.empty(n_vis, dtype=np.uint32)
    j = 0
    for e in range(m):
        if counts[e] > 0:
            ids[j] = e
            key[j] = keys[e]
            j += 1
    ids_tmp = np.empty_like(ids)
    key_tmp = np.empty_like(key)
    hist = np.empty(256, dtype=np.int64)
    for shift in range(0, 32, 8):
        hist[:] = 0
        for j in range(n_vis):
            hist[(key[j] >> np.uint32(shift)) & np.uint32(255)] += 1
        if hist.max() == n_vis:
            continue  # one digit for all: this pass would not move anything
        total = 0
        for d in range(256):
            total, hist[d] = total + hist[d], total
        for j in range(n_vis):
            d = (key[j] >> np.uint32(shift)) & np.uint32(255)
            ids_tmp[hist[d]] = ids[j]
            key_tmp[hist[d]] = key[j]
            hist[d] += 1
        ids, ids_tmp = ids_tmp, ids
        key, key_tmp = key_tmp, key
    sorted_rects = np.empty((n_vis, 4), dtype=np.int32)
    first_isect = np.empty(n_vis, dtype=np.int64)
    for j in range(n_vis):
        e = ids[j]
        for k in range(4):
            sorted_rects[j, k] = rects[e, k]
        first_isect[j] = gauss_offsets[e]
    return ids, sorted_rects, first_isect


@njit(nogil=True, fastmath=False, cache=True)
def _bin_cursors(chunk_counts: np.ndarray, tile_offsets: np.ndarray, cursors: np.ndarray) -> None:
    """Bin offsets (C·T+1) from the per-chunk counts (K, C·T), and each chunk's first slot in each bin."""
    n_chunks, n_bins = chunk_counts.shape
    tile_offsets[0] = 0
    for b in range(n_bins):
        p = tile_offsets[b]
        for k in range(n_chunks):
            cursors[k, b] = p
            p += chunk_counts[k, b]
        tile_offsets[b + 1] = p


@njit(nogil=True, fastmath=False, cache=True)
def _bin_count_kernel(
    work: np.ndarray,  # [next, stop, chunk]: claimed with claim() (see parallel_for)
    sorted_ids: np.ndarray,  # (V,) int64 entries in depth order
    rects: np.ndarray,  # (V, 4) their tile rectangles, in the same order
    n_gauss: int,
    tiles_x: int,
    n_tiles: int,
    chunk_len: int,
    chunk_counts: np.ndarray,  # out (K, C·T) int64, zeroed
) -> None:
    start, stop = claim(work)
    while start < stop:
        for k in range(start, stop):
            for s in range(k * chunk_len, min((k + 1) * chunk_len, sorted_ids.shape[0])):
                e = sorted_ids[s]
                base = (e // n_gauss) * n_tiles
                for ty in range(rects[s, 2], rects[s, 3]):
                    for tx in range(rects[s, 0], rects[s, 1]):
                        chunk_counts[k, base + ty * tiles_x + tx] += 1
        start, stop = claim(work)


@njit(nogil=True, fastmath=False, cache=True)
def _bin_scatter_kernel(
    work: np.ndarray,  # [next, stop, chunk]: claimed with claim() (see parallel_for)
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
    start, stop = claim(work)
    while start < stop:
        for k in range(start, stop):
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
        start, stop = claim(work)


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
    rects = np.empty((m, 4), dtype=np.int32)
    counts = np.empty(m, dtype=np.int32)
    keys = np.empty(m, dtype=np.uint32)
    if m:
        parallel_for(
            _tile_rects_kernel, m, means2d, radii, depths.view(np.uint32), int(width), int(height), int(tile_size),
            rects, counts, keys, grain=16384,
        )
    gauss_offsets = np.empty(m + 1, dtype=np.int64)
    # read in order by the count and scatter passes
    sorted_ids, sorted_rects, first_isect = _depth_order(keys, counts, rects, gauss_offsets)
    n_isects = int(gauss_offsets[-1])
    if n_isects >= 2**31:
        raise ValueError(f"rasterize: {n_isects} tile intersections exceed the CPU backend's int32 indices")
    n_chunks = max(1, min(64, sorted_ids.shape[0] // 4096))
    chunk_len = -(-sorted_ids.shape[0] // n_chunks) if sorted_ids.shape[0] else 1
    chunk_counts = np.zeros((n_chunks, n_bins), dtype=np.int64)
    if sorted_ids.shape[0]:
        parallel_for(
            _bin_count_kernel, n_chunks, sorted_ids, sorted_rects, n_gauss, tiles_x, n_tiles, chunk_len, chunk_counts
        )
    tile_offsets = np.empty(n_bins + 1, dtype=np.int64)
    cursors = np.empty((n_chunks, n_bins), dtype=np.int64)
    _bin_cursors(chunk_counts, tile_offsets, cursors)
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

    ``table`` (M, 8) float32, per entry: u, v, conic a, b, c, opacity, and the half-height
    and half-width of the ellipse ``σ ≤ ln(255·o)`` (−1 when the conic is degenerate), see
    :func:`_half_extents`; ``entry_colors`` (M, D) its channels. ``rec`` (n_isects, 8) and
    ``colors`` (n_isects, max(D, FUSED), zero-padded) are the same per intersection, read
    by both passes. ``gathered`` tells whether they are filled already (large frames: one
    parallel pass, whose tight loop keeps many random reads in flight) or left to the
    forward kernel, which fills them tile by tile just before it composites the tile
    (small frames: no extra hand-off, and the copy is still in cache when it is read).
    """

    table: np.ndarray
    entry_colors: np.ndarray
    rec: np.ndarray
    colors: np.ndarray
    gathered: bool


@njit(nogil=True, fastmath=False, cache=True)
def _half_extents(a: float, b: float, c: float, opacity: float) -> tuple:
    """Half-height and half-width of the region where ``o·exp(−σ) ≥ 1/255`` is possible (−1, −1 if none).

    With ``d = mean − pixel centre``, ``σ = ½(a dx² + c dy²) + b dx dy``; its minimum over
    ``dx`` in a row is ``½ dy² det/a`` (``det = ac − b²``), so rows satisfy
    ``dy² ≤ 2a·cut/det`` (columns likewise with c), ``cut = ln(255·o)`` widened by a
    relative SPAN_MARGIN so that float32 rounding can never make the bound too tight.
    """
    cut = math.log(max(opacity, 1e-30) * 255.0)
    cut += SPAN_MARGIN * (1.0 + abs(cut))
    det = a * c - b * b
    if not (det > 0.0 and a > 0.0 and cut > 0.0):
        return -1.0, -1.0
    return math.sqrt(2.0 * a * cut / det), math.sqrt(2.0 * c * cut / det)


@njit(nogil=True, fastmath=False, cache=True)
def _entry_kernel(
    work: np.ndarray,  # [next, stop, chunk]: claimed with claim() (see parallel_for)
    counts: np.ndarray,  # (M,) int32: tiles per entry (0: not drawn)
    means2d: np.ndarray,
    conics: np.ndarray,
    opacities: np.ndarray,
    table: np.ndarray,  # out (M, REC) float32
) -> None:
    """The record (see :class:`Splats`) of every entry that is drawn."""
    start, stop = claim(work)
    while start < stop:
        for e in range(start, stop):
            if counts[e] == 0:
                continue
            half_h, half_w = _half_extents(float(conics[e, 0]), float(conics[e, 1]), float(conics[e, 2]),
                                           float(opacities[e]))
            table[e, 0] = means2d[e, 0]
            table[e, 1] = means2d[e, 1]
            table[e, 2] = conics[e, 0]
            table[e, 3] = conics[e, 1]
            table[e, 4] = conics[e, 2]
            table[e, 5] = opacities[e]
            table[e, 6] = half_h
            table[e, 7] = half_w
        start, stop = claim(work)


@njit(nogil=True, fastmath=False, cache=True)
def _gather(
    first: int, end: int, flatten_ids: np.ndarray, table: np.ndarray, colors: np.ndarray,
    rec: np.ndarray, rec_col: np.ndarray,
) -> None:
    """Copy the record and zero-padded channels of intersections ``first ≤ p < end`` (sequential writes)."""
    n_ch = colors.shape[1]
    for p in range(first, end):
        e = flatten_ids[p]
        for k in range(REC):
            rec[p, k] = table[e, k]
        for k in range(n_ch):
            rec_col[p, k] = colors[e, k]
        for k in range(n_ch, rec_col.shape[1]):
            rec_col[p, k] = ZERO


def gather_splats(
    bins: TileBins, means2d: np.ndarray, conics: np.ndarray, colors: np.ndarray, opacities: np.ndarray
) -> Splats:
    """The entries' records (M-indexed arrays) and room for them in intersection order (see :class:`Splats`)."""
    table = np.empty((means2d.shape[0], REC), dtype=np.float32)
    if bins.n_isects:
        parallel_for(
            _entry_kernel, means2d.shape[0], bins.tiles_per_gauss, means2d, conics, opacities, table, grain=4096
        )
    rec = np.empty((bins.n_isects, REC), dtype=np.float32)
    rec_col = np.empty((bins.n_isects, max(FUSED, colors.shape[1])), dtype=np.float32)
    gathered = bins.n_isects >= GATHER_APART
    if gathered:
        parallel_for(_gather_kernel, bins.n_isects, bins.flatten_ids, table, colors, rec, rec_col)
    return Splats(table, colors, rec, rec_col, gathered)


@njit(nogil=True, fastmath=False, cache=True)
def _gather_kernel(
    work: np.ndarray,  # [next, stop, chunk]: claimed with claim() (see parallel_for)
    flatten_ids: np.ndarray,
    table: np.ndarray,
    colors: np.ndarray,
    rec: np.ndarray,  # out (n_isects, REC)
    rec_col: np.ndarray,  # out (n_isects, D4)
) -> None:
    """:func:`_gather` over the whole intersection list (the arguments are those of :func:`_gather`)."""
    start, stop = claim(work)
    while start < stop:
        _gather(start, stop, flatten_ids, table, colors, rec, rec_col)
        start, stop = claim(work)


def _offsets(first: int, count: int) -> tuple:
    """``count`` consecutive CAP-sized row offsets from row ``first``, as unsigned constants."""
    return tuple(np.uint64((first + k) * CAP) for k in range(count))


# Per-tile state lives in one float32 workspace of CAP-sized rows at these fixed offsets
# (slot q of row R is ws[R + q]); constant distances between rows let LLVM vectorise the
# per-slot loops without run-time alias checks. Forward rows:
F_T, F_X, F_Y, F_W, F_C = _offsets(0, 5)  # transmittance, pixel centre x, y, weight α·T, channels (D4 rows)
# Backward rows: transmittance, pixel centre x, y, final transmittance, ∂L/∂alpha − bg·∂L/∂image,
# per-slot terms (weight α·T, ∂L/∂α, e^−σ where the gradient passes the clamp, else 0), then per
# channel (D4 of them) a row of the colour behind each slot and a row of ∂L/∂image.
B_T, B_X, B_Y, B_E, B_VA, S_FAC, S_VAL, S_VIS = _offsets(0, 8)
B_CH = np.uint64(8 * CAP)  # channel k: colour behind at B_CH + 2k·CAP, ∂L/∂image at B_CH + (2k+1)·CAP
B_BUF0, B_IMG0, B_BUF1, B_IMG1, B_BUF2, B_IMG2, B_BUF3, B_IMG3 = _offsets(8, 8)
_CAP_U, _CAP2, _CAP3 = np.uint64(CAP), np.uint64(2 * CAP), np.uint64(3 * CAP)


@njit(nogil=True, fastmath=False, cache=True)
def _bin_rect(job: int, n_tiles: int, tiles_x: int, width: int, height: int) -> tuple:
    """Camera, top-left pixel (x0, y0) and size (tw, th) of bin ``job`` = camera·n_tiles + tile."""
    cam = job // n_tiles
    tile = job - cam * n_tiles
    x0 = (tile % tiles_x) * TILE_SIZE
    y0 = (tile // tiles_x) * TILE_SIZE
    return cam, x0, y0, min(TILE_SIZE, width - x0), min(TILE_SIZE, height - y0)


@njit(nogil=True, fastmath=False, cache=True)
def _tile_setup(x0: int, y0: int, tw: int, th: int, ws: np.ndarray, rx: np.uint64, ry: np.uint64,
                rt: np.uint64, last: np.ndarray) -> None:
    """Pixel-centre coordinates of a tile's slots (rows ``rx``, ``ry``), T = 1 on the image's pixels and
    0 on slots outside it (row ``rt``), and no contributor yet."""
    for q in range(CAP):
        lx = (q >> 7) << 3 | (q & 7)
        ly = (q >> 3) & 15
        qu = np.uint64(q)
        ws[rx + qu] = np.float32(x0 + lx) + HALF
        ws[ry + qu] = np.float32(y0 + ly) + HALF
        ws[rt + qu] = ONE if (lx < tw and ly < th) else ZERO
        last[q] = -1


@intrinsic
def _pow2_neg(typingctx: Any, n: Any) -> Any:
    """``2^−n`` in float32 for an int32 ``0 ≤ n ≤ 126``, exactly: the bit pattern ``(127 − n) << 23``.

    Written in LLVM IR because numba widens integer shifts to 64 bits, which turned this
    into ten vector instructions per 16 pixels instead of two.
    """
    if n != types.int32:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        bits = builder.shl(builder.sub(ir.Constant(i32, 127), args[0]), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.int32), codegen


@njit(nogil=True, fastmath={"contract"}, cache=True)
def _exp_neg(s: np.float32) -> np.float32:
    """``exp(−s)`` in float32 for ``s`` clamped to [0, 16]; no branch and no call, so loops vectorise.

    Cephes' ``expf``: ``s = n ln2 + r`` with ``|r| ≤ ½ ln2`` (ln2 split in two so that
    ``n·ln2_hi`` is exact), a degree-7 polynomial for ``e^{−r}`` (fused multiply-adds) and
    the exact scale ``2^{−n}`` from its bit pattern. At most one unit in the last place
    from the exact value (libm's ``expf`` and torch's vectorised exp differ from each other
    in the same way). Beyond 16 the value (≈ 1e-7) is far below the 1/255 cut.
    """
    x = min(max(s, ZERO), EXP_CLAMP)
    n = np.int32(x * LOG2E + HALF)
    fn = np.float32(n)
    y = fn * LN2_HI - x
    y = y + fn * LN2_LO  # y = −r = −(x − n ln2)
    z = y * y
    p = EXP_P0 * y + EXP_P1
    p = p * y + EXP_P2
    p = p * y + EXP_P3
    p = p * y + EXP_P4
    p = p * y + EXP_P5
    p = p * z + y + ONE
    return p * _pow2_neg(n)  # n ≤ 23


@njit(nogil=True, fastmath=False, cache=True)
def _falloff(dx: np.float32, dy: np.float32, ha: np.float32, b: np.float32, hc: np.float32) -> tuple:
    """``σ = ½(a dx² + c dy²) + b dx dy`` (given ``ha = a/2``, ``hc = c/2``: the same bits) and ``exp(−σ)``.

    The one place both passes take σ from, so the backward replays the forward's exact values.
    """
    sigma = ha * dx * dx + hc * dy * dy + b * dx * dy
    return sigma, _exp_neg(sigma)


@njit(nogil=True, fastmath=False, cache=True, inline="always")
def _composite_slots(
    i: int, q0: np.uint64, q1: np.uint64,
    u: np.float32, v: np.float32, ca: np.float32, cb: np.float32, cc: np.float32, op: np.float32,
    c0: np.float32, c1: np.float32, c2: np.float32, c3: np.float32,
    ws: np.ndarray, last: np.ndarray, blocks: np.ndarray, n_ch: int,
) -> tuple:
    """Composite splat ``i`` over the tile slots ``q0 ≤ q < q1``; return the first and last BLOCK (of the tile)
    where it was used (first > last if nowhere).

    Every slot is evaluated with selects instead of branches, so LLVM vectorises the loop
    (16 lanes); the exact per-pixel tests decide what changes. Slots outside the image
    have ``T = 0`` and never change. The first FUSED channels (``c0..c3``) are accumulated
    here; the weight ``α·T`` (0 if unused) is left in row F_W for any further channels.
    """
    lo = np.int32(CAP)
    hi = np.int32(-1)
    ha = HALF * ca
    hc = HALF * cc
    for q in range(q0, q1):
        sigma, vis = _falloff(u - ws[F_X + q], v - ws[F_Y + q], ha, cb, hc)
        alpha = min(ALPHA_MAX, op * vis)
        t = ws[F_T + q]
        next_t = t * (ONE - alpha)
        hit = (sigma >= ZERO) & (alpha >= ALPHA_MIN) & (t > ZERO)
        use = hit & (next_t > T_MIN)
        end = hit & (next_t <= T_MIN)
        w = alpha * t if use else ZERO
        ws[F_T + q] = next_t if use else (-t if end else t)
        last[q] = i if use else last[q]
        ws[F_W + q] = w
        block = blocks[q]  # int32 from a table: computing q >> 4 took eight 64-bit vector instructions
        lo = min(lo, block if use else np.int32(CAP))
        hi = max(hi, block if use else np.int32(-1))
    for q in range(q0, q1):
        w = ws[F_W + q]
        ws[F_C + q] += c0 * w
        ws[F_C + _CAP_U + q] += c1 * w
        ws[F_C + _CAP2 + q] += c2 * w
        if n_ch > 3:
            ws[F_C + _CAP3 + q] += c3 * w
    return lo, hi


@njit(nogil=True, fastmath=False, cache=True)
def _any_open(ws: np.ndarray) -> bool:
    """Whether any pixel of the tile is still open (T > 0 in row F_T)."""
    found = False
    for q in range(CAP):
        found |= ws[F_T + np.uint64(q)] > ZERO
    return found


@njit(nogil=True, fastmath=False, cache=True)
def _blocks(rec: np.ndarray, i: int, x0: int, y0: int, tw: int, th: int) -> tuple:
    """Panels ``p0..p1`` and buffer offsets ``[q0, q1)`` within each panel that splat ``i`` can reach in a tile.

    The tile is ``[x0, x0+tw) × [y0, y0+th)``. Rows are taken in pairs, so ``[q0, q1)``
    is a whole number of BLOCKs (2 rows × 8 columns, one 16-lane vector). Empty
    (``p0 > p1``) when the splat's ellipse misses the tile.
    """
    half_h, half_w = float(rec[i, 6]), float(rec[i, 7])
    if not half_h >= 0.0:
        return 1, 0, np.uint64(0), np.uint64(0)
    fu = float(rec[i, 0]) - 0.5 - x0
    fv = float(rec[i, 1]) - 0.5 - y0
    r0 = max(0.0, math.ceil(fv - half_h))
    r1 = min(th - 1.0, math.floor(fv + half_h))
    c0 = max(0.0, math.ceil(fu - half_w))
    c1 = min(tw - 1.0, math.floor(fu + half_w))
    if r0 > r1 or c0 > c1:
        return 1, 0, np.uint64(0), np.uint64(0)
    return (
        int(c0) // PANEL, int(c1) // PANEL,
        np.uint64((int(r0) // 2) * BLOCK), np.uint64((int(r1) // 2 + 1) * BLOCK),
    )


@njit(nogil=True, fastmath=False, cache=True)
def _raster_forward_kernel(
    work: np.ndarray,  # [next, stop, chunk]: claimed with claim() (see parallel_for)
    order: np.ndarray,  # (C·T,) int64: the bins, heaviest first
    gathered: bool,  # rec and rec_col are filled already (else: filled here from table, tile by tile)
    flatten_ids: np.ndarray,  # (n_isects,) int32
    table: np.ndarray,  # (M, REC) float32: the entries' records (see Splats)
    entry_colors: np.ndarray,  # (M, D) float32
    rec: np.ndarray,  # (n_isects, REC) records in intersection order
    rec_col: np.ndarray,  # (n_isects, D4): channels, zero-padded to at least FUSED
    backgrounds: np.ndarray,  # (C, D) float32
    tile_offsets: np.ndarray,
    width: int,
    height: int,
    tiles_x: int,
    n_tiles: int,
    out_colors: np.ndarray,  # out (C, H, W, D) float32
    t_final: np.ndarray,  # out (C, H, W) float32
    last_ids: np.ndarray,  # out (C, H, W) int32
    spans: np.ndarray,  # out (n_isects, 4) uint8, zeroed: per panel, the BLOCKs where each intersection was used
) -> None:
    n_ch = rec_col.shape[1]
    n_out = out_colors.shape[3]
    # A finished pixel keeps −T in row F_T, so "still open" is T > 0. Indices are unsigned
    # so numba emits no negative-index wraparound.
    ws = np.empty((F_C // _CAP_U + n_ch) * CAP, dtype=np.float32)
    last = np.empty(CAP, dtype=np.int32)
    blocks = np.arange(CAP, dtype=np.int32) // np.int32(BLOCK)  # each slot's BLOCK
    start, stop = claim(work)
    while start < stop:
        for position in range(start, stop):
            job = order[position]
            cam, x0, y0, tw, th = _bin_rect(job, n_tiles, tiles_x, width, height)
            _tile_setup(x0, y0, tw, th, ws, F_X, F_Y, F_T, last)
            ws[int(F_C):] = ZERO
            first = tile_offsets[job]
            if not gathered:
                _gather(first, tile_offsets[job + 1], flatten_ids, table, entry_colors, rec, rec_col)
            for i in range(first, tile_offsets[job + 1]):
                p0, p1, q0, q1 = _blocks(rec, i, x0, y0, tw, th)
                if p0 > p1:
                    continue
                u, v, ca, cb, cc, op = rec[i, 0], rec[i, 1], rec[i, 2], rec[i, 3], rec[i, 4], rec[i, 5]
                c0, c1, c2, c3 = rec_col[i, 0], rec_col[i, 1], rec_col[i, 2], rec_col[i, 3]
                for panel in range(p0, p1 + 1):
                    base = np.uint64(panel * PANEL * TILE_SIZE)
                    lo, hi = _composite_slots(
                        i, base + q0, base + q1, u, v, ca, cb, cc, op, c0, c1, c2, c3, ws, last, blocks, n_out
                    )
                    for k in range(FUSED, n_ch):
                        ck = rec_col[i, k]
                        row = F_C + np.uint64(k) * _CAP_U
                        for q in range(base + q0, base + q1):
                            ws[row + q] += ck * ws[F_W + q]
                    if lo <= hi:
                        spans[i, 2 * panel] = lo - panel * PANEL_BLOCKS
                        spans[i, 2 * panel + 1] = hi + 1 - panel * PANEL_BLOCKS
                if (i - first) % OPEN_CHECK == OPEN_CHECK - 1 and not _any_open(ws):
                    break
            for ly in range(th):
                for lx in range(tw):
                    p = _q(lx, ly)
                    t = abs(ws[F_T + p])
                    for k in range(n_out):
                        channel = ws[F_C + np.uint64(k) * _CAP_U + p]
                        out_colors[cam, y0 + ly, x0 + lx, k] = channel + t * backgrounds[cam, k]
                    t_final[cam, y0 + ly, x0 + lx] = t
                    last_ids[cam, y0 + ly, x0 + lx] = last[p]
        start, stop = claim(work)


def rasterize_forward(
    splats: Splats,
    bins: TileBins,
    backgrounds: np.ndarray,  # (C, D) float32
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Composite every (camera, tile) bin front to back.

    Returns images (C,H,W,D) including ``T·background``, the final transmittance
    (C,H,W) (alpha is ``1 − T``), the last contributing intersection per pixel (C,H,W)
    int32 (−1 where nothing contributed), and per intersection and panel the range of
    BLOCKs where it contributed (n_isects, 4) uint8 (first, end for panel 0, then panel 1);
    the backward pass needs the last two.
    """
    n_cam, n_ch = backgrounds.shape
    out = np.empty((n_cam, height, width, n_ch), dtype=np.float32)
    t_final = np.empty((n_cam, height, width), dtype=np.float32)
    last_ids = np.empty((n_cam, height, width), dtype=np.int32)
    spans = np.zeros((bins.n_isects, 4), dtype=np.uint8)
    n_tiles = bins.tiles_x * bins.tiles_y
    if n_cam * n_tiles:
        parallel_for(
            _raster_forward_kernel, n_cam * n_tiles, bins.heaviest_first(), splats.gathered, bins.flatten_ids,
            splats.table, splats.entry_colors, splats.rec, splats.colors, backgrounds, bins.tile_offsets, int(width),
            int(height), bins.tiles_x, n_tiles, out, t_final, last_ids, spans, chunk=1,
        )
    return out, t_final, last_ids, spans


@njit(nogil=True, fastmath=False, error_model="numpy", cache=True, inline="always")
def _replay(
    i: np.int32, q0: np.uint64, q1: np.uint64,
    u: np.float32, v: np.float32, ca: np.float32, cb: np.float32, cc: np.float32, op: np.float32,
    c0: np.float32, c1: np.float32, c2: np.float32, c3: np.float32,
    ws: np.ndarray, last: np.ndarray, n_ch: int,
) -> None:
    """Undo splat ``i`` at the tile slots ``q0 ≤ q < q1`` and leave its per-slot gradient terms in the S_ rows.

    ``σ``, ``exp(−σ)`` and every decision are computed by the forward's own expressions,
    so they are bit-identical; a slot counts when the forward used splat ``i`` there,
    i.e. ``i ≤ last`` and the alpha tests pass (other slots get zero terms). Branch-free,
    so LLVM vectorises it. The first FUSED channels (``c0..c3``) are handled here; for
    any further ones, row B_T holds T in front of splat i wherever the weight is > 0.
    """
    ha = HALF * ca
    hc = HALF * cc
    for q in range(q0, q1):
        sigma, vis = _falloff(u - ws[B_X + q], v - ws[B_Y + q], ha, cb, hc)
        raw = op * vis
        alpha = min(ALPHA_MAX, raw)
        valid = (last[q] >= i) & (sigma >= ZERO) & (alpha >= ALPHA_MIN)
        ra = ONE / (ONE - alpha) if valid else ZERO
        t = ws[B_T + q] * ra  # transmittance in front of splat i
        ws[B_T + q] = t if valid else ws[B_T + q]
        fac = alpha * t
        # ∂L/∂α: through the alpha output and background, then each channel, where
        # C_behind/(1−α) is what lies behind splat i as seen through it
        v_alpha = ws[B_E + q] * ra * ws[B_VA + q]
        v0 = ws[B_IMG0 + q]
        v_alpha += (c0 * t - ws[B_BUF0 + q] * ra) * v0
        ws[B_BUF0 + q] += c0 * fac
        v1 = ws[B_IMG1 + q]
        v_alpha += (c1 * t - ws[B_BUF1 + q] * ra) * v1
        ws[B_BUF1 + q] += c1 * fac
        v2 = ws[B_IMG2 + q]
        v_alpha += (c2 * t - ws[B_BUF2 + q] * ra) * v2
        ws[B_BUF2 + q] += c2 * fac
        if n_ch > 3:
            v3 = ws[B_IMG3 + q]
            v_alpha += (c3 * t - ws[B_BUF3 + q] * ra) * v3
            ws[B_BUF3 + q] += c3 * fac
        ws[S_FAC + q] = fac
        ws[S_VAL + q] = v_alpha
        ws[S_VIS + q] = vis if valid & (raw <= ALPHA_MAX) else ZERO


@njit(nogil=True, fastmath=False, error_model="numpy", cache=True)
def _replay_channel(q0: np.uint64, q1: np.uint64, ck: np.float32, ws: np.ndarray, buf: np.uint64) -> None:
    """:func:`_replay`'s terms for a channel beyond the first FUSED (colour ``ck``; rows ``buf``, ``buf + CAP``).

    Where the weight ``f = α·T`` is > 0, row B_T holds T, and ``1/(1−α) = T/(T − f)``.
    """
    img = buf + _CAP_U
    for q in range(q0, q1):
        fac = ws[S_FAC + q]
        used = fac > ZERO
        t = ws[B_T + q] if used else ZERO
        ra = t / (t - fac) if used else ZERO
        ws[S_VAL + q] += (ck * t - ws[buf + q] * ra) * ws[img + q]
        ws[buf + q] += ck * fac


@njit(nogil=True, fastmath={"reassoc", "contract"}, error_model="numpy", cache=True)
def _grad_sums(
    q0: np.uint64, q1: np.uint64,
    u: np.float32, v: np.float32, ca: np.float32, cb: np.float32, cc: np.float32, op: np.float32,
    ws: np.ndarray, n_ch: int, absgrad: bool, acc: np.ndarray,
) -> None:
    """Add one splat's gradients from slots ``q0 ≤ q < q1`` (terms left by :func:`_replay`) to ``acc``.

    ``acc`` (GRAD_ROW + D): d(u, v), d(conic a, b, c), d(opacity), |du|, |dv|, d(channels).
    With ``g = ∂L/∂σ`` per slot, ``∂L/∂u = a Σ g dx + b Σ g dy`` and ``∂L/∂v = b Σ g dx + c Σ g dy``,
    so the loop sums ``g dx``, ``g dy`` and their products with ``dx``, ``dy`` (the conic's
    terms) and applies the conic once. Sums are reassociated and multiply-adds fused
    (``fastmath={"reassoc", "contract"}``) so that LLVM vectorises them; the order is fixed
    by the compiled code and the slot range, so results stay deterministic.
    """
    sx = ZERO
    sy = ZERO
    sxx = ZERO
    sxy = ZERO
    syy = ZERO
    go = ZERO
    au = ZERO
    av = ZERO
    g0 = ZERO
    g1 = ZERO
    g2 = ZERO
    g3 = ZERO
    for q in range(q0, q1):
        v_alpha = ws[S_VAL + q]
        vis = ws[S_VIS + q]
        v_sigma = -(op * vis) * v_alpha  # ∂L/∂σ = −o·e^−σ·∂L/∂α
        dx = u - ws[B_X + q]
        dy = v - ws[B_Y + q]
        wx = v_sigma * dx
        wy = v_sigma * dy
        sx += wx
        sy += wy
        sxx += wx * dx
        sxy += wx * dy
        syy += wy * dy
        go += vis * v_alpha
        if absgrad:
            au += abs(ca * wx + cb * wy)
            av += abs(cb * wx + cc * wy)
        fac = ws[S_FAC + q]
        g0 += fac * ws[B_IMG0 + q]
        g1 += fac * ws[B_IMG1 + q]
        g2 += fac * ws[B_IMG2 + q]
        if n_ch > 3:
            g3 += fac * ws[B_IMG3 + q]
    acc[0] += ca * sx + cb * sy
    acc[1] += cb * sx + cc * sy
    acc[2] += HALF * sxx
    acc[3] += sxy
    acc[4] += HALF * syy
    acc[5] += go
    acc[6] += au
    acc[7] += av
    acc[GRAD_ROW] += g0  # acc has room for FUSED channels even when D is smaller
    acc[GRAD_ROW + 1] += g1
    acc[GRAD_ROW + 2] += g2
    acc[GRAD_ROW + 3] += g3
    for k in range(FUSED, n_ch):
        row = B_IMG0 + np.uint64(2 * k) * _CAP_U
        g = ZERO
        for q in range(q0, q1):
            g += ws[S_FAC + q] * ws[row + q]
        acc[GRAD_ROW + k] += g


@njit(nogil=True, fastmath=False, error_model="numpy", cache=True)
def _raster_backward_kernel(
    work: np.ndarray,  # [next, stop, chunk]: claimed with claim() (see parallel_for)
    order: np.ndarray,  # (C·T,) int64: the bins, heaviest first
    rec: np.ndarray,
    rec_col: np.ndarray,  # (n_isects, D4) channels, zero-padded to at least FUSED
    backgrounds: np.ndarray,  # (C, D) float32
    tile_offsets: np.ndarray,
    width: int,
    height: int,
    tiles_x: int,
    n_tiles: int,
    t_final: np.ndarray,  # (C, H, W) float32 from the forward
    last_ids: np.ndarray,  # (C, H, W) int32 from the forward
    spans: np.ndarray,  # (n_isects, 4) uint8 from the forward: where each intersection was used
    v_images: np.ndarray,  # (C, H, W, D) float32
    v_alphas: np.ndarray,  # (C, H, W) float32
    absgrad: bool,  # also sum |∂L/∂u|, |∂L/∂v| (else those columns stay 0)
    rows: np.ndarray,  # out (n_isects, GRAD_ROW + D) float32
) -> None:
    n_ch = rec_col.shape[1]
    n_out = v_images.shape[3]
    ws = np.empty((B_CH // _CAP_U + 2 * n_ch) * CAP, dtype=np.float32)
    last = np.empty(CAP, dtype=np.int32)
    acc = np.empty(GRAD_ROW + n_ch, dtype=np.float32)
    start, stop = claim(work)
    while start < stop:
        for position in range(start, stop):
            job = order[position]
            cam, x0, y0, tw, th = _bin_rect(job, n_tiles, tiles_x, width, height)
            first = tile_offsets[job]
            _tile_setup(x0, y0, tw, th, ws, B_X, B_Y, B_T, last)
            ws[int(B_T) : int(B_T) + CAP] = ZERO
            ws[int(B_E) : int(B_E) + CAP] = ZERO
            ws[int(B_VA) : int(B_VA) + CAP] = ZERO
            ws[int(B_CH):] = ZERO
            max_last = first - 1
            for ly in range(th):
                for lx in range(tw):
                    p = _q(lx, ly)
                    t = t_final[cam, y0 + ly, x0 + lx]
                    ws[B_T + p] = t
                    ws[B_E + p] = t
                    last[p] = last_ids[cam, y0 + ly, x0 + lx]
                    max_last = max(max_last, last[p])
                    # alpha = 1 − T_final, and the background adds T_final·bg to the image
                    bg_dot = ZERO
                    for k in range(n_out):
                        g = v_images[cam, y0 + ly, x0 + lx, k]
                        ws[B_IMG0 + np.uint64(2 * k) * _CAP_U + p] = g
                        bg_dot += backgrounds[cam, k] * g
                    ws[B_VA + p] = v_alphas[cam, y0 + ly, x0 + lx] - bg_dot
            for i in range(max_last + 1, tile_offsets[job + 1]):
                rows[i, :] = ZERO
            for i in range(max_last, first - 1, -1):
                acc[:] = ZERO
                u, v, ca, cb, cc, op = rec[i, 0], rec[i, 1], rec[i, 2], rec[i, 3], rec[i, 4], rec[i, 5]
                c0, c1, c2, c3 = rec_col[i, 0], rec_col[i, 1], rec_col[i, 2], rec_col[i, 3]
                for panel in range(2):
                    base = np.uint64(panel * PANEL * TILE_SIZE)
                    q0 = base + np.uint64(spans[i, 2 * panel]) * _BLOCK_U
                    q1 = base + np.uint64(spans[i, 2 * panel + 1]) * _BLOCK_U
                    if q0 == q1:
                        continue
                    _replay(np.int32(i), q0, q1, u, v, ca, cb, cc, op, c0, c1, c2, c3, ws, last, n_out)
                    for k in range(FUSED, n_ch):
                        _replay_channel(q0, q1, rec_col[i, k], ws, B_CH + np.uint64(2 * k) * _CAP_U)
                    _grad_sums(q0, q1, u, v, ca, cb, cc, op, ws, n_out, absgrad, acc)
                for r in range(GRAD_ROW + n_out):
                    rows[i, r] = acc[r]
        start, stop = claim(work)


@njit(nogil=True, fastmath=False, cache=True)
def _reduce_rows_kernel(
    work: np.ndarray,  # [next, stop, chunk]: claimed with claim() (see parallel_for)
    rows: np.ndarray,  # (n_isects, R) float32
    gauss_offsets: np.ndarray,  # (M+1,) int64
    isect_pos: np.ndarray,  # (n_isects,) int64
    out: np.ndarray,  # out (M, R) float32, zeroed
) -> None:
    n_col = rows.shape[1]
    acc = np.empty(n_col, dtype=np.float64)
    start, stop = claim(work)
    while start < stop:
        for e in range(start, stop):
            first, end = gauss_offsets[e], gauss_offsets[e + 1]
            if first == end:
                continue
            for k in range(n_col):
                acc[k] = 0.0
            for j in range(first, end):
                r = isect_pos[j]
                for k in range(n_col):
                    acc[k] += rows[r, k]
            for k in range(n_col):
                out[e, k] = acc[k]
        start, stop = claim(work)


def rasterize_backward(
    splats: Splats,
    bins: TileBins,
    backgrounds: np.ndarray,  # (C, D) float32
    width: int,
    height: int,
    t_final: np.ndarray,
    last_ids: np.ndarray,
    spans: np.ndarray,
    v_images: np.ndarray,  # (C, H, W, D) float32
    v_alphas: np.ndarray,  # (C, H, W) float32
    n_entries: int,
    absgrad: bool = False,
) -> np.ndarray:
    """Gradients per entry (M, 8 + D) float32: d(u, v), d(conic), d(opacity), |du|, |dv|, d(channels).

    ``|du|, |dv|`` (the per-pixel gradients summed in absolute value) are 0 unless ``absgrad``.

    The gradient w.r.t. the backgrounds is ``Σ_pixels v_image·T_final`` and is left to
    the caller (it needs no per-Gaussian work).
    """
    n_cam, n_ch = backgrounds.shape
    n_tiles = bins.tiles_x * bins.tiles_y
    out = np.zeros((n_entries, GRAD_ROW + n_ch), dtype=np.float32)
    if bins.n_isects:
        rows = np.empty((bins.n_isects, out.shape[1]), dtype=np.float32)
        parallel_for(
            _raster_backward_kernel, n_cam * n_tiles, bins.heaviest_first(), splats.rec, splats.colors, backgrounds,
            bins.tile_offsets, int(width), int(height), bins.tiles_x, n_tiles, t_final, last_ids, spans, v_images,
            v_alphas, bool(absgrad), rows, chunk=1,
        )
        parallel_for(_reduce_rows_kernel, n_entries, rows, bins.gauss_offsets, bins.isect_pos, out, grain=4096)
    return out
