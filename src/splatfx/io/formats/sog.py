"""PlayCanvas SOG ("Spatially Ordered Gaussians", version 2): ``meta.json`` + lossless WebP images.

A ``.sog`` file is a ZIP holding ``meta.json`` and the images it names; :func:`read_arrays`
also reads the unbundled layout (a ``meta.json`` path, or the folder that holds it). Every
per-Gaussian image has the same size (W×H ≥ count, row-major from the top left, trailing
pixels ignored); Gaussian ``i`` is pixel ``(i % W, i // W)``:

* ``means_l``/``means_u``: the low and high bytes (RGB) of a 16-bit value per axis, a lerp
  between ``means.mins`` and ``means.maxs`` of the log-transformed position
  ``sign(p)·ln(1 + |p|)``;
* ``quats``: smallest three (w, x, y, z order as in the PLY): RGB the three kept components
  as ``(c·√2·0.5 + 0.5)·255``, A ``252 + index`` of the dropped (largest, made positive) one;
* ``scales``: RGB indices into a 256-entry codebook of log-scales;
* ``sh0``: RGB indices into a 256-entry codebook of SH DC coefficients, A ``sigmoid(opacity)·255``;
* ``shN`` (degree ≥ 1): a palette of ``count`` SH vectors (k-means) in ``shN_centroids``
  (64 entries per row, entry ``n`` coefficient ``c`` at ``((n % 64)·coeffs + c, n // 64)``, RGB
  indices into a shared 256-entry codebook) and a 16-bit palette index per Gaussian in
  ``shN_labels`` (R low byte, G high byte).

Positions are stored in the frame of the 3DGS PLY, as splat-transform reads and writes them.
The writer orders Gaussians along a Morton curve (what makes the images compress), builds
the 256-entry codebooks by 1-D k-means (exact when a quantity has at most 256 distinct
values), clusters the SH vectors by k-means on a seeded sample, and encodes every image as
lossless WebP with ``exact`` (so colour under zero alpha survives). Extras are dropped.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from splatfx.core.atomic import write_bytes_atomic
from splatfx.core.errors import InputError
from splatfx.io.formats import GaussianArrays, opacity_logits_from_u8, opacity_logits_to_u8, quantize_u8

VERSION = 2
CODEBOOK_SIZE = 256
SH_COEFFS = {1: 3, 2: 8, 3: 15}
PALETTE_ROW = 64
MAX_PALETTE = 65536
DEFAULT_MAX_PALETTE = 4096   # CPU k-means; the format allows up to 65536
SH_ITERATIONS = 8
SQRT2 = math.sqrt(2.0)
IMAGE_FILES = {"means": ["means_l.webp", "means_u.webp"], "scales": ["scales.webp"], "quats": ["quats.webp"],
               "sh0": ["sh0.webp"], "shN": ["shN_centroids.webp", "shN_labels.webp"]}
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


# --- reading -----------------------------------------------------------------------------------


def read_arrays(path: str | os.PathLike[str]) -> GaussianArrays:
    """Read a ``.sog`` bundle, a ``meta.json`` or a folder holding one (PLY frame, stored order)."""
    path = Path(path)
    if path.is_dir():
        path = path / "meta.json"
    if not path.is_file():
        raise InputError(path, "no such SOG file")
    if path.suffix.lower() == ".json":
        folder = path.parent
        return decode(lambda name: _read_member(folder / name, path), path.read_bytes(), path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(path, f"not a SOG bundle (not a ZIP archive: {exc})") from None
    with archive:
        names = {Path(info.filename).name: info.filename for info in archive.infolist() if not info.is_dir()}
        if "meta.json" not in names:
            raise InputError(path, "SOG bundle has no meta.json")

        def member(name: str) -> bytes:
            if name not in names:
                raise InputError(path, f"SOG bundle lacks {name}, which meta.json names")
            try:
                return archive.read(names[name])
            except (zipfile.BadZipFile, zlib.error, OSError) as exc:
                raise InputError(path, f"SOG bundle member {name} is corrupt ({exc})") from None

        return decode(member, member("meta.json"), path)


def _read_member(path: Path, source: Path) -> bytes:
    if not path.is_file():
        raise InputError(source, f"SOG image {path.name} (named in meta.json) is missing")
    return path.read_bytes()


def decode(member, meta_bytes: bytes, source) -> GaussianArrays:
    """Arrays from ``meta.json`` bytes and ``member(name) -> bytes`` for the images it names."""
    meta = _meta(meta_bytes, source)
    n = meta["count"]
    lo, hi = (_image(member, name, n, source) for name in _files(meta, "means", 2, source))
    q16 = lo[:, :3].astype(np.uint32) | (hi[:, :3].astype(np.uint32) << 8)
    mins, maxs = (np.asarray(_numbers(meta["means"], key, 3, source), np.float64) for key in ("mins", "maxs"))
    logs = mins + (maxs - mins) * (q16 / 65535.0)
    means = np.sign(logs) * np.expm1(np.abs(logs))
    quats = _decode_quats(_image(member, _files(meta, "quats", 1, source)[0], n, source), source)
    scales = _image(member, _files(meta, "scales", 1, source)[0], n, source)
    log_scales = _lookup(_codebook(meta, "scales", source), scales[:, :3], "scales", source)
    sh0 = _image(member, _files(meta, "sh0", 1, source)[0], n, source)
    degree = 0
    if meta.get("shN") is not None:
        degree = int(meta["shN"].get("bands", 0)) if isinstance(meta["shN"], dict) else -1
        if degree not in SH_COEFFS:
            raise InputError(source, f"SOG shN.bands must be 1, 2 or 3, not {meta['shN'].get('bands')!r}")
    sh = np.zeros((n, (degree + 1) ** 2, 3), np.float32)
    sh[:, 0] = _lookup(_codebook(meta, "sh0", source), sh0[:, :3], "sh0", source)
    if degree:
        sh[:, 1:] = _decode_sh(meta["shN"], member, n, degree, source)
    return GaussianArrays(means=means.astype(np.float32), quats=quats, log_scales=log_scales,
                          opacity_logits=opacity_logits_from_u8(sh0[:, 3]), sh=sh,
                          antialiased=bool(meta.get("antialias", False)))


def _meta(data: bytes, source) -> dict:
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(source, f"SOG meta.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise InputError(source, "SOG meta.json is not a JSON object")
    if "version" not in meta:
        raise InputError(source, "SOG meta.json has no version (the first, unversioned SOG layout is not read)")
    if meta["version"] != VERSION:
        raise InputError(source, f"SOG version {meta['version']!r} is not supported (reads version {VERSION})")
    count = meta.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise InputError(source, f"SOG meta.json count must be a non-negative integer, not {count!r}")
    for key in ("means", "scales", "quats", "sh0"):
        if not isinstance(meta.get(key), dict):
            raise InputError(source, f"SOG meta.json lacks the {key!r} table")
    return meta


def _files(meta: dict, key: str, count: int, source) -> list[str]:
    files = meta[key].get("files")
    if not isinstance(files, list) or len(files) < count or not all(isinstance(f, str) for f in files[:count]):
        raise InputError(source, f"SOG meta.json {key}.files must list {count} image file name(s)")
    return files[:count]


def _numbers(table: dict, key: str, length: int | None, source) -> list[float]:
    values = table.get(key)
    ok = isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not ok or (length is not None and len(values) != length) or not all(map(math.isfinite, values)):
        size = f"{length} " if length else ""
        raise InputError(source, f"SOG meta.json {key} must be {size}finite numbers")
    return values


def _codebook(meta: dict, key: str, source) -> np.ndarray:
    values = _numbers(meta[key], "codebook", None, source)
    if not values:
        raise InputError(source, f"SOG meta.json {key}.codebook is empty")
    return np.asarray(values, np.float32)


def _lookup(codebook: np.ndarray, labels: np.ndarray, what: str, source) -> np.ndarray:
    if labels.size and int(labels.max()) >= len(codebook):
        raise InputError(source, f"SOG {what} index {int(labels.max())} is beyond its {len(codebook)}-entry codebook")
    return codebook[labels]


def _image(member, name: str, n: int | None, source, size: tuple[int, int] | None = None) -> np.ndarray:
    """The image ``name`` as (pixels, 4) uint8, first ``n`` pixels (all when ``n`` is None)."""
    from PIL import Image

    data = member(name)
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("RGBA"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(source, f"SOG image {name} does not decode ({exc})") from None
    h, w = pixels.shape[:2]
    if size is not None and (w, h) != size:
        raise InputError(source, f"SOG image {name} is {w}x{h}, expected {size[0]}x{size[1]}")
    if n is not None and w * h < n:
        raise InputError(source, f"SOG image {name} is {w}x{h} = {w * h} pixels, fewer than the {n} Gaussians")
    flat = pixels.reshape(-1, 4)
    return flat if n is None else flat[:n]


def _decode_quats(pixels: np.ndarray, source) -> np.ndarray:
    tags = pixels[:, 3].astype(np.int64) - 252
    if np.any((tags < 0) | (tags > 3)):
        bad = int(pixels[np.flatnonzero((tags < 0) | (tags > 3))[0], 3])
        raise InputError(source, f"SOG quats alpha {bad} is reserved (must be 252-255)")
    kept = (pixels[:, :3].astype(np.float64) / 255.0 - 0.5) * 2.0 / SQRT2
    quats = np.zeros((len(pixels), 4))
    rows = np.arange(len(pixels))
    slot = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[tags]
    for j in range(3):
        quats[rows, slot[:, j]] = kept[:, j]
    quats[rows, tags] = np.sqrt(np.maximum(0.0, 1.0 - np.square(kept).sum(axis=1)))
    return quats.astype(np.float32)


def _decode_sh(table: dict, member, n: int, degree: int, source) -> np.ndarray:
    coeffs = SH_COEFFS[degree]
    palette = table.get("count")
    if not isinstance(palette, int) or not 1 <= palette <= MAX_PALETTE:
        raise InputError(source, f"SOG shN.count must be 1..{MAX_PALETTE}, not {palette!r}")
    codebook = _numbers(table, "codebook", None, source)
    centroids_name, labels_name = _files({"shN": table}, "shN", 2, source)
    rows = -(-palette // PALETTE_ROW)
    centroids = _image(member, centroids_name, None, source, size=(PALETTE_ROW * coeffs, rows))
    # entry e, coefficient c sits at x = (e % 64)·coeffs + c, y = e // 64: row-major, so flat e·coeffs + c
    entries = centroids[: palette * coeffs, :3].reshape(palette, coeffs, 3)
    values = _lookup(np.asarray(codebook, np.float32), entries, "shN", source)   # (palette, coeffs, rgb)
    labels = _image(member, labels_name, n, source)
    index = labels[:, 0].astype(np.int64) | (labels[:, 1].astype(np.int64) << 8)
    if index.size and int(index.max()) >= palette:
        raise InputError(source, f"SOG shN label {int(index.max())} is beyond the {palette}-entry palette")
    return values[index]


# --- writing -----------------------------------------------------------------------------------


def encode(arrays: GaussianArrays, *, max_palette: int = DEFAULT_MAX_PALETTE, seed: int = 0,
           order: bool = True) -> bytes:
    """A ``.sog`` bundle (ZIP bytes) for the arrays; Gaussians in Morton order unless ``order=False``."""
    files = encode_files(arrays, max_palette=max_palette, seed=seed, order=order)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def encode_files(arrays: GaussianArrays, *, max_palette: int = DEFAULT_MAX_PALETTE, seed: int = 0,
                 order: bool = True) -> dict[str, bytes]:
    """``meta.json`` and the WebP images, by file name (the unbundled layout)."""
    from splatfx import __version__

    if arrays.sh_degree > 3:
        raise ValueError(f"SOG holds SH degree 0-3, not {arrays.sh_degree}")
    perm = morton_order(arrays.means) if order else np.arange(len(arrays))
    a = _permuted(arrays, perm)
    n = len(a)
    width = max(4, math.ceil(math.sqrt(n) / 4) * 4)
    height = max(4, math.ceil(n / width / 4) * 4)

    def image(pixels: np.ndarray) -> bytes:
        full = np.zeros((width * height, 4), np.uint8)
        full[:, 3] = 255
        full[:n] = pixels
        return _webp(full.reshape(height, width, 4))

    files: dict[str, bytes] = {}
    meta: dict = {"version": VERSION, "asset": {"generator": f"splatfx {__version__}"}, "count": n,
                  "antialias": bool(arrays.antialiased)}
    q16, mins, maxs = _encode_means(a.means)
    files["means_l.webp"] = image(_rgba(q16 & 0xFF))
    files["means_u.webp"] = image(_rgba(q16 >> 8))
    meta["means"] = {"mins": mins, "maxs": maxs, "files": IMAGE_FILES["means"]}
    codebook, labels = quantize_1d(a.log_scales)
    files["scales.webp"] = image(_rgba(labels))
    meta["scales"] = {"codebook": _floats(codebook), "files": IMAGE_FILES["scales"]}
    files["quats.webp"] = image(encode_quats(a.quats))
    meta["quats"] = {"files": IMAGE_FILES["quats"]}
    codebook, labels = quantize_1d(a.sh[:, 0])
    files["sh0.webp"] = image(_rgba(labels, alpha=opacity_logits_to_u8(a.opacity_logits)))
    meta["sh0"] = {"codebook": _floats(codebook), "files": IMAGE_FILES["sh0"]}
    if a.sh_degree:
        centroids, palette, codebook, labels = _encode_sh(a.sh[:, 1:], max_palette, seed)
        files["shN_centroids.webp"] = _webp(centroids)
        files["shN_labels.webp"] = image(_rgba(np.stack([labels & 0xFF, labels >> 8, 0 * labels], axis=1)))
        meta["shN"] = {"count": palette, "bands": a.sh_degree, "codebook": _floats(codebook),
                       "files": IMAGE_FILES["shN"]}
    files = {"meta.json": json.dumps(meta, separators=(",", ":")).encode(), **files}
    return files


def _permuted(arrays: GaussianArrays, perm: np.ndarray) -> GaussianArrays:
    return GaussianArrays(means=arrays.means[perm], quats=arrays.quats[perm], log_scales=arrays.log_scales[perm],
                          opacity_logits=arrays.opacity_logits[perm], sh=arrays.sh[perm],
                          antialiased=arrays.antialiased)


def morton_order(means: np.ndarray) -> np.ndarray:
    """The permutation that sorts points along a 3-D Morton (Z-order) curve of 10 bits per axis."""
    if len(means) == 0:
        return np.zeros(0, np.int64)
    lo, hi = means.min(axis=0), means.max(axis=0)
    cells = np.clip((means - lo) / np.maximum(hi - lo, 1e-20) * 1023.0, 0, 1023).astype(np.uint64)
    code = np.zeros(len(means), np.uint64)
    for bit in range(10):
        for axis in range(3):
            code |= ((cells[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return np.argsort(code, kind="stable")


def _encode_means(means: np.ndarray) -> tuple[np.ndarray, list[float], list[float]]:
    logs = np.sign(means.astype(np.float64)) * np.log1p(np.abs(means.astype(np.float64)))
    mins = logs.min(axis=0) if len(logs) else np.zeros(3)
    maxs = logs.max(axis=0) if len(logs) else np.zeros(3)
    span = np.where(maxs > mins, maxs - mins, 1.0)
    q16 = np.clip(np.rint((logs - mins) / span * 65535.0), 0, 65535).astype(np.uint32)
    return q16, [float(v) for v in mins], [float(v) for v in maxs]


def encode_quats(quats: np.ndarray) -> np.ndarray:
    """(n, 4) RGBA pixels for wxyz quaternions: smallest three and ``252 + index`` of the largest."""
    q = quats.astype(np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.divide(q, norm, out=np.tile([1.0, 0.0, 0.0, 0.0], (len(q), 1)), where=norm > 0)
    largest = np.abs(q).argmax(axis=1)
    rows = np.arange(len(q))
    q *= np.where(q[rows, largest] < 0, -1.0, 1.0)[:, None]
    slot = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    kept = np.stack([q[rows, slot[:, j]] for j in range(3)], axis=1)
    pixels = np.empty((len(q), 4), np.uint8)
    pixels[:, :3] = quantize_u8((kept * SQRT2 * 0.5 + 0.5) * 255.0)
    pixels[:, 3] = 252 + largest
    return pixels


def quantize_1d(values: np.ndarray, size: int = CODEBOOK_SIZE, iterations: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A sorted ``size``-entry codebook for all of ``values`` (1-D k-means from quantiles) and each
    value's nearest entry, shaped like ``values``. At most ``size`` distinct values are kept exactly."""
    flat = values.astype(np.float32).ravel()
    unique = np.unique(flat)
    if len(unique) <= size:
        centres = unique.astype(np.float64) if len(unique) else np.zeros(1)
    else:
        data = np.sort(flat.astype(np.float64))
        centres = np.unique(np.quantile(data, (np.arange(size) + 0.5) / size))
        for _ in range(iterations):
            cuts = np.searchsorted(data, (centres[1:] + centres[:-1]) / 2)
            bounds = np.concatenate([[0], cuts, [len(data)]])
            counts = np.diff(bounds)
            sums = np.add.reduceat(data, np.minimum(bounds[:-1], len(data) - 1))
            updated = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
            if np.allclose(updated, centres, rtol=0, atol=0):
                break
            centres = np.unique(updated)
    codebook = np.concatenate([centres, np.full(size - len(centres), centres[-1])]).astype(np.float32)
    labels = nearest_1d(codebook[: len(centres)], flat).reshape(values.shape)
    return codebook, labels


def nearest_1d(sorted_codebook: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of an ascending codebook for each value (uint8)."""
    mids = (sorted_codebook[1:].astype(np.float64) + sorted_codebook[:-1]) / 2
    return np.searchsorted(mids, values.astype(np.float64)).astype(np.uint8)


def palette_size(n: int, max_palette: int = DEFAULT_MAX_PALETTE) -> int:
    """SH palette entries for ``n`` Gaussians: a power of two near n/16, within 1..max_palette."""
    if n == 0:
        return 1
    return int(min(n, max_palette, MAX_PALETTE, 2 ** max(0, int(math.log2(max(n / 16, 1))))))


def _encode_sh(rest: np.ndarray, max_palette: int, seed: int):
    """Palette image, palette size, codebook and per-Gaussian labels for SH (n, coeffs, 3)."""
    n, coeffs, _ = rest.shape
    vectors = np.ascontiguousarray(rest.transpose(0, 2, 1).reshape(n, 3 * coeffs), dtype=np.float32)
    palette = palette_size(n, max_palette)
    centroids, labels = kmeans(vectors, palette, seed=seed)
    codebook, quantised = quantize_1d(centroids)
    entries = quantised.reshape(palette, 3, coeffs).transpose(0, 2, 1)  # (palette, coeffs, rgb)
    rows = -(-palette // PALETTE_ROW)
    image = np.zeros((rows * PALETTE_ROW * coeffs, 4), np.uint8)
    image[:, 3] = 255
    image[: palette * coeffs, :3] = entries.reshape(-1, 3)
    return image.reshape(rows, PALETTE_ROW * coeffs, 4), palette, codebook, labels.astype(np.uint32)


def kmeans(vectors: np.ndarray, k: int, *, seed: int = 0, iterations: int = SH_ITERATIONS,
           sample: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """``k`` centroids (Lloyd's algorithm on a seeded sample, started from distinct sample vectors)
    and every vector's nearest centroid. Torch matrix products, in chunks."""
    import torch

    rng = np.random.default_rng(seed)
    n = len(vectors)
    train_np = vectors[np.sort(rng.choice(n, size=min(n, max(sample, 8 * k)), replace=False))]
    distinct = np.unique(train_np, axis=0)
    start = distinct[np.sort(rng.choice(len(distinct), size=min(k, len(distinct)), replace=False))]
    start = np.concatenate([start, np.repeat(start[-1:], k - len(start), axis=0)])  # fewer distinct than k
    data, train = torch.from_numpy(vectors), torch.from_numpy(np.ascontiguousarray(train_np))
    centroids = torch.from_numpy(np.ascontiguousarray(start))
    train64 = train.double()  # sums in float64: a cluster of equal vectors keeps their exact value
    for _ in range(iterations):
        nearest = _nearest(train, centroids)
        sums = torch.zeros(centroids.shape, dtype=torch.float64).index_add_(0, nearest, train64)
        counts = torch.bincount(nearest, minlength=k).double()[:, None]
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids.double()).float()
    return centroids.numpy(), _nearest(data, centroids).numpy()


def _nearest(points, centroids, chunk: int = 8192):
    import torch

    c2 = (centroids * centroids).sum(dim=1)
    out = torch.empty(len(points), dtype=torch.int64)
    for start in range(0, len(points), chunk):
        block = points[start: start + chunk]
        out[start: start + chunk] = (c2[None, :] - 2.0 * block @ centroids.T).argmin(dim=1)
    return out


def _rgba(channels: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros((len(channels), 4), np.uint8)
    out[:, : channels.shape[1]] = channels
    out[:, 3] = 255 if alpha is None else alpha
    return out


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values, np.float32)]


def _webp(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), "RGBA").save(buffer, "WEBP", lossless=True, exact=True,
                                                               quality=100, method=4)
    return buffer.getvalue()


def write_arrays(arrays: GaussianArrays, path: str | os.PathLike[str]) -> None:
    """Write a ``.sog`` bundle atomically."""
    write_bytes_atomic(path, encode(arrays))


def describe(path: str | os.PathLike[str]) -> str:
    """``sog v2 (bundle), 8 images, SH palette 1024`` from meta.json."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            meta = _meta(archive.read("meta.json"), path)
            members = len(archive.infolist()) - 1
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise InputError(path, f"not a SOG bundle ({exc})") from None
    notes = [f"sog v{meta['version']} (bundle)", f"{members} images"]
    if isinstance(meta.get("shN"), dict):
        notes.append(f"SH palette {meta['shN'].get('count')}")
    if meta.get("antialias"):
        notes.append("antialiased")
    return ", ".join(notes)
