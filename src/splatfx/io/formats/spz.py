"""Niantic's ``.spz``: gzip-compressed, quantised Gaussians (read versions 2 and 3, write 3).

After gunzip: a 16-byte little-endian header ``magic 0x5053474e, version u32,
numPoints u32, shDegree u8, fractionalBits u8, flags u8 (0x1 antialiased), reserved u8``,
then per attribute, for all points in turn:

* positions: 3 × 24-bit signed fixed point with ``fractionalBits`` fraction bits;
* alphas: ``round(sigmoid(opacity)·255)``;
* colours: the SH DC term as ``round(f_dc·0.15·255 + 127.5)``;
* scales: log-scales as ``round((log_scale + 10)·16)``;
* rotations: version 3 "smallest three" (2-bit index of the largest component, then the
  other three as sign + 9-bit magnitude scaled by 1/√2, packed in a u32; xyzw order);
  version 2 ``x, y, z`` as ``round(q·127.5 + 127.5)`` with ``w ≥ 0`` implied;
* SH of degree ≥ 1: per point, coefficient-major with RGB innermost, each
  ``round(c·128) + 128`` snapped to a multiple of 8 (degree 1) or 16 (degrees 2–3).

Coordinates: spz stores RUB (x right, y up, z back); splatfx uses the 3DGS PLY frame,
RDF (x right, y down, z forward). The two differ by a 180° turn about x, applied on
read and write: ``(x, y, z) → (x, −y, −z)``, quaternion ``(w, x, y, z) → (w, x, −y, −z)``
(the rotation conjugated by the turn, which leaves every covariance the same) and SH
coefficients negated where their basis function is odd in y·z parity (``SH_FLIP``).

The encoder is idempotent: re-encoding what was decoded reproduces the same bytes.
Positions use 12 fraction bits (≈0.24 mm at metre scale) unless the scene is too large
for 24 bits, in which case fewer are used. Files with vendor extensions (flag 0x2) or
the zstd "NGSP" container of later versions are rejected with a clear message.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from splatfx.core.atomic import write_bytes_atomic
from splatfx.core.errors import InputError, require_file
from splatfx.io.formats import (
    GaussianArrays,
    opacity_logits_from_u8,
    opacity_logits_to_u8,
    quantize_u8,
    round_half_away,
)

MAGIC = 0x5053474E
HEADER = struct.Struct("<IIIBBBB")
READ_VERSIONS = (2, 3)
WRITE_VERSION = 3
FLAG_ANTIALIASED = 0x1
FLAG_EXTENSIONS = 0x2
COLOR_SCALE = 0.15
FRACTIONAL_BITS = 12
SQRT1_2 = np.float32(0.7071067811865476)
SH_BUCKET_DEGREE1 = 8   # 5 bits kept
SH_BUCKET_REST = 16     # 4 bits kept
MAX_SH_DEGREE = 3

# Sign of each SH basis function (3DGS order, degree ≥ 1) under (x, y, z) → (x, −y, −z):
# degree 1: y, z, x; degree 2: xy, yz, 3z²−1, xz, x²−y²;
# degree 3: y(3x²−y²), xyz, y(5z²−1), z(5z²−3), x(5z²−1), z(x²−y²), x(x²−3y²).
SH_FLIP = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=np.float32)
POSITION_FLIP = np.array([1, -1, -1], dtype=np.float32)
QUAT_FLIP = np.array([1, 1, -1, -1], dtype=np.float32)  # wxyz


def _point_bytes(version: int, sh_degree: int) -> int:
    rotation = 4 if version >= 3 else 3
    return 9 + 1 + 3 + 3 + rotation + 3 * ((sh_degree + 1) ** 2 - 1)


def _decompress(data: bytes, source) -> bytes:
    """Gunzip the header, then exactly as much data as the header says is there (+1 byte,
    to notice surplus), so a corrupt point count never makes us inflate a huge stream."""
    if data[:4] == b"NGSP":
        raise InputError(source, "spz version 4 (NGSP container) is not supported; export version 2 or 3")
    if data[:2] != b"\x1f\x8b":
        raise InputError(source, "not an .spz file (no gzip header)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        head = inflater.decompress(data, HEADER.size)
        if len(head) < HEADER.size:
            raise InputError(source, f"spz data ends after {len(head)} bytes, inside the {HEADER.size}-byte header")
        magic, version, count, degree, _, flags, _ = HEADER.unpack(head)
        _check_header(source, magic, version, degree, flags)
        wanted = count * _point_bytes(version, degree) + 1
        body = bytearray()
        pending = inflater.unconsumed_tail
        while len(body) < wanted and (pending or not inflater.eof):
            chunk = inflater.decompress(pending, wanted - len(body))
            pending = inflater.unconsumed_tail
            if not chunk and not pending:
                break
            body += chunk
    except zlib.error as exc:
        raise InputError(source, f"spz gzip stream is corrupt ({exc})") from None
    return head + bytes(body)


def _check_header(source, magic: int, version: int, degree: int, flags: int) -> None:
    if magic != MAGIC:
        raise InputError(source, f"bad spz magic 0x{magic:08x} (expected 0x{MAGIC:08x})")
    if version not in READ_VERSIONS:
        raise InputError(source, f"spz version {version} is not supported (reads {', '.join(map(str, READ_VERSIONS))})")
    if degree > MAX_SH_DEGREE:
        raise InputError(source, f"spz SH degree {degree} is not supported (0..{MAX_SH_DEGREE})")
    if flags & FLAG_EXTENSIONS:
        raise InputError(source, "spz file uses vendor extensions (flag 0x2), which splatfx does not read")


def decode(data: bytes, source: str | os.PathLike[str] = "spz") -> GaussianArrays:
    """Arrays (in the RDF frame) from gzip-compressed ``.spz`` bytes."""
    raw = _decompress(data, source)
    _, version, n, degree, bits, _, _ = HEADER.unpack_from(raw)
    expected = HEADER.size + n * _point_bytes(version, degree)
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise InputError(source, f"spz data is {state}: {n} points need {expected} bytes, found {len(raw)}")
    k = (degree + 1) ** 2 - 1
    sections = _split(np.frombuffer(raw, dtype=np.uint8, offset=HEADER.size), n, version, k)
    means = _decode_positions(sections["positions"], bits) * POSITION_FLIP
    colours = ((sections["colors"].astype(np.float64) / 255.0 - 0.5) / COLOR_SCALE).astype(np.float32)
    rotations = sections["rotations"]
    quats = _decode_smallest_three(rotations) if version >= 3 else _decode_first_three(rotations)
    sh = np.empty((n, k + 1, 3), dtype=np.float32)
    sh[:, 0, :] = colours
    sh[:, 1:, :] = (sections["sh"].astype(np.float32) - 128.0) / 128.0 * SH_FLIP[:k, None]
    return GaussianArrays(
        means=means.astype(np.float32),
        quats=(quats * QUAT_FLIP).astype(np.float32),
        log_scales=(sections["scales"].astype(np.float32) / 16.0 - 10.0),
        opacity_logits=opacity_logits_from_u8(sections["alphas"]),
        sh=sh,
    )


def _split(body: np.ndarray, n: int, version: int, k: int) -> dict[str, np.ndarray]:
    """The attribute sections of the decompressed body, each shaped (n, …)."""
    sizes = [("positions", 9), ("alphas", 1), ("colors", 3), ("scales", 3),
             ("rotations", 4 if version >= 3 else 3), ("sh", 3 * k)]
    out, start = {}, 0
    for name, width in sizes:
        out[name] = body[start: start + n * width].reshape(n, width)
        start += n * width
    out["alphas"] = out["alphas"][:, 0]
    out["sh"] = out["sh"].reshape(n, k, 3)
    return out


def _decode_positions(packed: np.ndarray, bits: int) -> np.ndarray:
    b = packed.reshape(-1, 3, 3).astype(np.int32)
    fixed = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    fixed = (fixed ^ 0x800000) - 0x800000  # sign-extend 24 bits
    return (fixed.astype(np.float64) / (1 << bits)).astype(np.float32)


def _decode_smallest_three(codes: np.ndarray) -> np.ndarray:
    """wxyz quaternions from version-3 rotation codes (n, 4) uint8."""
    comp = codes.astype(np.uint32)
    comp = comp[:, 0] | (comp[:, 1] << 8) | (comp[:, 2] << 16) | (comp[:, 3] << 24)
    return _unpack_smallest_three(comp)


def _unpack_smallest_three(comp: np.ndarray) -> np.ndarray:
    largest = (comp >> 30).astype(np.int64)
    xyzw = np.zeros((len(comp), 4), dtype=np.float32)
    shift = np.zeros(len(comp), dtype=np.uint32)
    for i in (3, 2, 1, 0):  # the highest-index component sits in the lowest bits
        here = largest != i
        word = comp >> shift
        value = SQRT1_2 * (word & 511).astype(np.float32) / np.float32(511)
        value = np.where((word >> 9) & 1 == 1, -value, value)
        xyzw[:, i] = np.where(here, value, 0)
        shift = np.where(here, shift + 10, shift).astype(np.uint32)
    rest = np.square(xyzw).sum(axis=1)
    xyzw[np.arange(len(comp)), largest] = np.sqrt(np.maximum(np.float32(0), np.float32(1) - rest))
    return xyzw[:, [3, 0, 1, 2]]


def _decode_first_three(codes: np.ndarray) -> np.ndarray:
    """wxyz quaternions from version-2 rotation codes (n, 3) uint8 (xyz, w ≥ 0 implied)."""
    xyz = codes.astype(np.float32) / np.float32(127.5) - np.float32(1)
    w = np.sqrt(np.maximum(np.float32(0), np.float32(1) - np.square(xyz).sum(axis=1)))
    return np.concatenate([w[:, None], xyz], axis=1)


def encode(arrays: GaussianArrays, version: int = WRITE_VERSION, antialiased: bool = False,
           target: str | os.PathLike[str] = "spz") -> bytes:
    """Gzip-compressed ``.spz`` bytes (version 3, or 2 for old readers); extras are dropped."""
    if version not in READ_VERSIONS:
        raise ValueError(f"can write spz versions {READ_VERSIONS}, not {version}")
    n, degree = len(arrays), arrays.sh_degree
    means = arrays.means.astype(np.float32) * POSITION_FLIP
    bits = fractional_bits(means, target)
    fixed = round_half_away(means.astype(np.float64) * (1 << bits)).astype(np.int64)
    positions = np.stack([(fixed >> s) & 0xFF for s in (0, 8, 16)], axis=-1).astype(np.uint8)
    quats = arrays.quats.astype(np.float32) * QUAT_FLIP
    rotations = encode_smallest_three(quats) if version >= 3 else _encode_first_three(quats)
    k = (degree + 1) ** 2 - 1
    header = HEADER.pack(MAGIC, version, n, degree, bits, FLAG_ANTIALIASED if antialiased else 0, 0)
    body = [
        positions.reshape(n, 9),
        opacity_logits_to_u8(arrays.opacity_logits),
        quantize_u8(arrays.sh[:, 0, :].astype(np.float64) * (COLOR_SCALE * 255.0) + 127.5),
        quantize_u8((arrays.log_scales.astype(np.float64) + 10.0) * 16.0),
        rotations,
        _encode_sh(arrays.sh[:, 1:, :] * SH_FLIP[:k, None]),
    ]
    raw = header + b"".join(np.ascontiguousarray(part).tobytes() for part in body)
    return gzip.compress(raw, compresslevel=6, mtime=0)  # zlib default, as the reference


def fractional_bits(means: np.ndarray, target) -> int:
    """12 fraction bits, or fewer when the largest coordinate would not fit in 24 bits."""
    largest = float(np.abs(means).max()) if means.size else 0.0
    for bits in range(FRACTIONAL_BITS, -1, -1):
        if round_half_away(np.float64(largest) * (1 << bits)) <= (1 << 23) - 1:
            return bits
    raise InputError(target, f"a coordinate of {largest:.6g} is too large for spz's 24-bit positions")


def encode_smallest_three(quats: np.ndarray) -> np.ndarray:
    """Version-3 codes (n, 4) uint8 for wxyz quaternions.

    Every choice of dropped component is tried and the one that decodes closest to the
    normalised quaternion is kept (usually the largest, as in the reference encoder);
    a decoded quaternion therefore re-encodes to its own code.
    """
    xyzw = quats[:, [1, 2, 3, 0]].astype(np.float64)
    norm = np.linalg.norm(xyzw, axis=1, keepdims=True)
    unit = np.divide(xyzw, norm, out=np.zeros_like(xyzw), where=norm > 0)
    unit[norm[:, 0] == 0] = (0.0, 0.0, 0.0, 1.0)
    candidates = np.stack([_pack_smallest_three(unit, i) for i in range(4)], axis=1)  # (n, 4)
    errors = np.stack([_smallest_three_error(candidates[:, i], unit) for i in range(4)], axis=1)
    comp = candidates[np.arange(len(unit)), errors.argmin(axis=1)]
    return comp.astype("<u4").view(np.uint8).reshape(-1, 4)


def _pack_smallest_three(unit: np.ndarray, largest: int) -> np.ndarray:
    """u32 codes dropping component ``largest`` (made non-negative by flipping the sign)."""
    q = np.where(unit[:, largest: largest + 1] < 0, -unit, unit)
    comp = np.full(len(q), largest, dtype=np.uint32)
    for i in range(4):
        if i == largest:
            continue
        magnitude = np.minimum(np.floor(511.0 * np.abs(q[:, i]) / float(SQRT1_2) + 0.5), 511).astype(np.uint32)
        negative = ((q[:, i] < 0) & (magnitude > 0)).astype(np.uint32)
        comp = (comp << 10) | (negative << 9) | magnitude
    return comp


def _smallest_three_error(comp: np.ndarray, unit: np.ndarray) -> np.ndarray:
    decoded = _unpack_smallest_three(comp)[:, [1, 2, 3, 0]].astype(np.float64)
    return np.minimum(np.sum((decoded - unit) ** 2, axis=1), np.sum((decoded + unit) ** 2, axis=1))


def _encode_first_three(quats: np.ndarray) -> np.ndarray:
    """Version-2 codes (n, 3): normalised xyz with w made non-negative."""
    q = quats.astype(np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    unit = np.divide(q, norm, out=np.zeros_like(q), where=norm > 0)
    unit = np.where(unit[:, :1] < 0, -unit, unit)
    return quantize_u8(unit[:, 1:] * 127.5 + 127.5)


def _encode_sh(rest: np.ndarray) -> np.ndarray:
    """SH coefficients (n, k, 3) of degree ≥ 1 as bucketed bytes, coefficient-major."""
    scaled = rest.astype(np.float32) * np.float32(128)  # exact in float32
    q = np.clip(np.nan_to_num(round_half_away(scaled)) + 128, 0, 255).astype(np.int16)
    bucket = np.full(rest.shape[1], SH_BUCKET_REST, dtype=np.int16)
    bucket[:3] = SH_BUCKET_DEGREE1
    bucket = bucket[None, :, None]
    return np.clip((q + bucket // 2) // bucket * bucket, 0, 255).astype(np.uint8)


def read_header(path: str | os.PathLike[str]) -> dict:
    """The spz header fields (version, points, sh_degree, fractional_bits, antialiased)."""
    path = require_file(path, ".spz file")
    head = _decompress_header(path.read_bytes(), path)
    magic, version, count, degree, bits, flags, _ = HEADER.unpack(head)
    _check_header(path, magic, version, degree, flags)
    return {"version": version, "points": count, "sh_degree": degree, "fractional_bits": bits,
            "antialiased": bool(flags & FLAG_ANTIALIASED)}


def _decompress_header(data: bytes, source) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return _decompress(data, source)  # raises the right error
    try:
        head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, HEADER.size)
    except zlib.error as exc:
        raise InputError(source, f"spz gzip stream is corrupt ({exc})") from None
    if len(head) < HEADER.size:
        raise InputError(source, "spz data ends inside the header")
    return head


def read_arrays(path: str | os.PathLike[str]) -> GaussianArrays:
    """Read a ``.spz`` file into unvalidated arrays (RDF frame)."""
    path = require_file(path, ".spz file")
    return decode(path.read_bytes(), path)


def write_arrays(arrays: GaussianArrays, path: str | os.PathLike[str], version: int = WRITE_VERSION) -> None:
    """Write arrays as ``.spz`` (version 3 by default), atomically."""
    write_bytes_atomic(path, encode(arrays, version=version, target=path))


def describe(path: str | os.PathLike[str]) -> str:
    """``spz v3 (gzip), 12 fractional bits[, antialiased]`` from the header."""
    h = read_header(path)
    aa = ", antialiased" if h["antialiased"] else ""
    return f"spz v{h['version']} (gzip), {h['fractional_bits']} fractional bits{aa}"
