"""Niantic's ``.spz``: compressed, quantised Gaussians (read versions 2, 3 and 4; write 3, or 2/4).

Versions 2 and 3 are one gzip stream: a 16-byte little-endian header ``magic 0x5053474e,
version u32, numPoints u32, shDegree u8, fractionalBits u8, flags u8 (0x1 antialiased),
reserved u8``, then each attribute for all points in turn. Version 4 ("NGSP" container) has
a plain 32-byte header ``magic, version, numPoints u32, shDegree, fractionalBits, flags,
numStreams u8, tocByteOffset u32, 12 reserved bytes``, optional vendor extension records
(``u32 type, u32 length, payload``; skipped) up to ``tocByteOffset``, a table of contents of
``numStreams × (compressedSize u64, uncompressedSize u64)``, then one zstd stream per
attribute (an empty SH stream is left out, so degree 0 has 5 streams). The attributes:

* positions: 3 × 24-bit signed fixed point with ``fractionalBits`` fraction bits;
* alphas: ``round(sigmoid(opacity)·255)``;
* colours: the SH DC term as ``round(f_dc·0.15·255 + 127.5)``;
* scales: log-scales as ``round((log_scale + 10)·16)``;
* rotations: versions 3–4 "smallest three" (2-bit index of the largest component, then the
  other three as sign + 9-bit magnitude scaled by 1/√2, packed in a u32; xyzw order);
  version 2 ``x, y, z`` as ``round(q·127.5 + 127.5)`` with ``w ≥ 0`` implied;
* SH of degree ≥ 1: per point, coefficient-major with RGB innermost, each
  ``round(c·128) + 128`` snapped to a multiple of 8 (degree 1) or 16 (degrees 2–4).

Coordinates: spz stores RUB (x right, y up, z back); splatfx uses the 3DGS PLY frame,
RDF (x right, y down, z forward). The two differ by a 180° turn about x, applied on
read and write: ``(x, y, z) → (x, −y, −z)``, quaternion ``(w, x, y, z) → (w, x, −y, −z)``
(the rotation conjugated by the turn, which leaves every covariance the same) and SH
coefficients negated where their basis function is odd in y·z parity (``SH_FLIP``).

The encoder is idempotent: re-encoding what was decoded reproduces the same bytes.
Positions use 12 fraction bits (≈0.24 mm at metre scale) unless the scene is too large
for 24 bits, in which case fewer are used. The antialiased flag is kept in
``GaussianArrays.antialiased``. SH degree 4 (allowed from version 3 on) is read with its
fourth band dropped (splatfx's Gaussians stop at degree 3). Gzip files with vendor
extensions (flag 0x2), whose records cannot be skipped without knowing them, are rejected.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass

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
NGSP_HEADER = struct.Struct("<IIIBBBBI12s")  # version 4: 32 bytes, uncompressed
TOC_ENTRY = struct.Struct("<QQ")
READ_VERSIONS = (2, 3, 4)
WRITE_VERSIONS = (2, 3, 4)
WRITE_VERSION = 3
ZSTD_LEVEL = 12  # the reference library's default for version 4
ATTRIBUTES = ("positions", "alphas", "colors", "scales", "rotations", "sh")
FLAG_ANTIALIASED = 0x1
FLAG_EXTENSIONS = 0x2
COLOR_SCALE = 0.15
FRACTIONAL_BITS = 12
SQRT1_2 = np.float32(0.7071067811865476)
SH_BUCKET_DEGREE1 = 8   # 5 bits kept
SH_BUCKET_REST = 16     # 4 bits kept
MAX_SH_DEGREE = 4       # in files; degree 4 is read as degree 3

# Sign of each SH basis function (3DGS order, degree ≥ 1) under (x, y, z) → (x, −y, −z):
# degree 1: y, z, x; degree 2: xy, yz, 3z²−1, xz, x²−y²;
# degree 3: y(3x²−y²), xyz, y(5z²−1), z(5z²−3), x(5z²−1), z(x²−y²), x(x²−3y²).
SH_FLIP = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=np.float32)
POSITION_FLIP = np.array([1, -1, -1], dtype=np.float32)
QUAT_FLIP = np.array([1, 1, -1, -1], dtype=np.float32)  # wxyz


@dataclass(frozen=True)
class Header:
    """The fields shared by both containers (``streams``/``toc`` only in version 4)."""

    version: int
    points: int
    sh_degree: int
    fractional_bits: int
    flags: int
    streams: int = 0
    toc: int = 0

    @property
    def antialiased(self) -> bool:
        return bool(self.flags & FLAG_ANTIALIASED)


def _attribute_bytes(version: int, n: int, sh_degree: int) -> dict[str, int]:
    """Bytes of each attribute section for ``n`` points."""
    return {"positions": 9 * n, "alphas": n, "colors": 3 * n, "scales": 3 * n,
            "rotations": (4 if version >= 3 else 3) * n, "sh": 3 * ((sh_degree + 1) ** 2 - 1) * n}


def _point_bytes(version: int, sh_degree: int) -> int:
    return sum(_attribute_bytes(version, 1, sh_degree).values())


def _decompress(data: bytes, source) -> bytes:
    """Gunzip the header, then exactly as much data as the header says is there (+1 byte,
    to notice surplus), so a corrupt point count never makes us inflate a huge stream."""
    if data[:2] != b"\x1f\x8b":
        raise InputError(source, "not an .spz file (neither gzip nor an NGSP header)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        head = inflater.decompress(data, HEADER.size)
        if len(head) < HEADER.size:
            raise InputError(source, f"spz data ends after {len(head)} bytes, inside the {HEADER.size}-byte header")
        magic, version, count, degree, _, flags, _ = HEADER.unpack(head)
        _check_header(source, magic, version, degree, flags)
        if version >= 4:
            raise InputError(source, f"spz version {version} must use the NGSP container, not gzip")
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


def _check_header(source, magic: int, version: int, degree: int, flags: int, *, container: bool = False) -> None:
    if magic != MAGIC:
        raise InputError(source, f"bad spz magic 0x{magic:08x} (expected 0x{MAGIC:08x})")
    if version not in READ_VERSIONS:
        raise InputError(source, f"spz version {version} is not supported (reads {', '.join(map(str, READ_VERSIONS))})")
    if degree > MAX_SH_DEGREE or (degree == 4 and version < 3):
        raise InputError(source, f"spz SH degree {degree} is not supported in version {version}")
    if flags & FLAG_EXTENSIONS and not container:
        raise InputError(source, "spz gzip file uses vendor extensions (flag 0x2), which splatfx does not read")


def _ngsp_header(data: bytes, source) -> Header:
    """The version-4 header, checked against the file's size."""
    if len(data) < NGSP_HEADER.size:
        raise InputError(source, f"spz file ends after {len(data)} bytes, inside the {NGSP_HEADER.size}-byte NGSP header")
    magic, version, n, degree, bits, flags, streams, toc, _ = NGSP_HEADER.unpack_from(data)
    if version < 4:
        raise InputError(source, f"spz version {version} in an NGSP header (versions 2 and 3 are gzip files)")
    _check_header(source, magic, version, degree, flags, container=True)
    if not NGSP_HEADER.size <= toc <= len(data) - streams * TOC_ENTRY.size:
        raise InputError(source, f"spz table of contents at byte {toc} ({streams} streams) lies outside the "
                                 f"{len(data)}-byte file")
    return Header(version, n, degree, bits, flags, streams, toc)


def _ngsp_sections(data: bytes, head: Header, source) -> dict[str, bytes]:
    """Each attribute's bytes from the version-4 zstd streams; sizes are checked against the
    header before anything is inflated, and each stream is inflated to at most its size."""
    expected = _attribute_bytes(head.version, head.points, head.sh_degree)
    names = [name for name in ATTRIBUTES if expected[name] or head.streams == len(ATTRIBUTES)]
    if head.streams != len(names):
        raise InputError(source, f"spz has {head.streams} streams; SH degree {head.sh_degree} needs {len(names)}")
    offset = head.toc + head.streams * TOC_ENTRY.size
    sections = {name: b"" for name in ATTRIBUTES}
    for i, name in enumerate(names):
        packed, size = TOC_ENTRY.unpack_from(data, head.toc + i * TOC_ENTRY.size)
        if size != expected[name]:
            raise InputError(source, f"spz {name} stream holds {size} bytes; {head.points} points need {expected[name]}")
        if offset + packed > len(data):
            raise InputError(source, f"spz data is truncated: the {name} stream needs bytes {offset}-{offset + packed} "
                                     f"of a {len(data)}-byte file")
        sections[name] = _unzstd(data[offset: offset + packed], size, f"{name} stream", source)
        offset += packed
    if offset != len(data):
        raise InputError(source, f"spz file has {len(data) - offset} bytes after its last stream")
    return sections


def _unzstd(packed: bytes, size: int, what: str, source) -> bytes:
    import zstandard

    out = bytearray()
    try:
        with zstandard.ZstdDecompressor().stream_reader(packed, read_across_frames=True) as reader:
            while len(out) <= size:
                chunk = reader.read(size + 1 - len(out))
                if not chunk:
                    break
                out += chunk
    except zstandard.ZstdError as exc:
        raise InputError(source, f"spz {what} is corrupt ({exc})") from None
    if len(out) != size:
        raise InputError(source, f"spz {what} inflates to {'more' if len(out) > size else len(out)} bytes, not {size}")
    return bytes(out)


def decode(data: bytes, source: str | os.PathLike[str] = "spz") -> GaussianArrays:
    """Arrays (in the RDF frame) from ``.spz`` bytes of any version read."""
    if data[:4] == b"NGSP":
        head = _ngsp_header(data, source)
        raw = _ngsp_sections(data, head, source)
        sections = {name: np.frombuffer(raw[name], dtype=np.uint8) for name in ATTRIBUTES}
    else:
        raw = _decompress(data, source)
        head = Header(*HEADER.unpack_from(raw)[1:6])
        expected = HEADER.size + head.points * _point_bytes(head.version, head.sh_degree)
        if len(raw) != expected:
            state = "truncated" if len(raw) < expected else "longer than its header says"
            raise InputError(source, f"spz data is {state}: {head.points} points need {expected} bytes, found {len(raw)}")
        body, start, sections = np.frombuffer(raw, dtype=np.uint8, offset=HEADER.size), 0, {}
        for name, size in _attribute_bytes(head.version, head.points, head.sh_degree).items():
            sections[name] = body[start: start + size]
            start += size
    return _arrays(sections, head)


def _arrays(sections: dict[str, np.ndarray], head: Header) -> GaussianArrays:
    """Dequantise the attribute sections (flat uint8) into RDF arrays; SH degree 4 keeps 0–3."""
    n, version = head.points, head.version
    k_file = (head.sh_degree + 1) ** 2 - 1
    degree = min(head.sh_degree, 3)
    k = (degree + 1) ** 2 - 1
    means = _decode_positions(sections["positions"].reshape(n, 9), head.fractional_bits) * POSITION_FLIP
    colours = ((sections["colors"].reshape(n, 3).astype(np.float64) / 255.0 - 0.5) / COLOR_SCALE).astype(np.float32)
    rotations = sections["rotations"].reshape(n, -1) if n else sections["rotations"].reshape(0, 4 if version >= 3 else 3)
    quats = _decode_smallest_three(rotations) if version >= 3 else _decode_first_three(rotations)
    sh = np.empty((n, k + 1, 3), dtype=np.float32)
    sh[:, 0, :] = colours
    coefficients = sections["sh"].reshape(n, k_file, 3)[:, :k]
    sh[:, 1:, :] = (coefficients.astype(np.float32) - 128.0) / 128.0 * SH_FLIP[:k, None]
    return GaussianArrays(
        means=means.astype(np.float32),
        quats=(quats * QUAT_FLIP).astype(np.float32),
        log_scales=(sections["scales"].reshape(n, 3).astype(np.float32) / 16.0 - 10.0),
        opacity_logits=opacity_logits_from_u8(sections["alphas"]),
        sh=sh,
        antialiased=head.antialiased,
    )


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


def encode(arrays: GaussianArrays, version: int = WRITE_VERSION, antialiased: bool | None = None,
           target: str | os.PathLike[str] = "spz") -> bytes:
    """``.spz`` bytes: version 3 (gzip) by default, 2 for old readers, 4 (zstd streams) on
    request; ``antialiased`` defaults to the arrays' flag; extras are dropped."""
    if version not in WRITE_VERSIONS:
        raise ValueError(f"can write spz versions {WRITE_VERSIONS}, not {version}")
    n, degree = len(arrays), arrays.sh_degree
    means = arrays.means.astype(np.float32) * POSITION_FLIP
    bits = fractional_bits(means, target)
    fixed = round_half_away(means.astype(np.float64) * (1 << bits)).astype(np.int64)
    positions = np.stack([(fixed >> s) & 0xFF for s in (0, 8, 16)], axis=-1).astype(np.uint8)
    quats = arrays.quats.astype(np.float32) * QUAT_FLIP
    rotations = encode_smallest_three(quats) if version >= 3 else _encode_first_three(quats)
    k = (degree + 1) ** 2 - 1
    flags = FLAG_ANTIALIASED if (arrays.antialiased if antialiased is None else antialiased) else 0
    body = [
        positions.reshape(n, 9),
        opacity_logits_to_u8(arrays.opacity_logits),
        quantize_u8(arrays.sh[:, 0, :].astype(np.float64) * (COLOR_SCALE * 255.0) + 127.5),
        quantize_u8((arrays.log_scales.astype(np.float64) + 10.0) * 16.0),
        rotations,
        _encode_sh(arrays.sh[:, 1:, :] * SH_FLIP[:k, None]),
    ]
    parts = [np.ascontiguousarray(part).tobytes() for part in body]
    if version >= 4:
        return _ngsp(parts, Header(version, n, degree, bits, flags))
    raw = HEADER.pack(MAGIC, version, n, degree, bits, flags, 0) + b"".join(parts)
    return gzip.compress(raw, compresslevel=6, mtime=0)  # zlib default, as the reference


def _ngsp(parts: list[bytes], head: Header) -> bytes:
    """The version-4 container: header, table of contents, one zstd stream per non-empty part."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, write_checksum=False)
    streams = [(compressor.compress(part), len(part)) for part in parts if part]
    header = NGSP_HEADER.pack(MAGIC, head.version, head.points, head.sh_degree, head.fractional_bits,
                              head.flags, len(streams), NGSP_HEADER.size, bytes(12))
    toc = b"".join(TOC_ENTRY.pack(len(packed), size) for packed, size in streams)
    return header + toc + b"".join(packed for packed, _ in streams)


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
    """The spz header fields (version, points, sh_degree, fractional_bits, antialiased, container)."""
    path = require_file(path, ".spz file")
    data = path.read_bytes()
    if data[:4] == b"NGSP":
        head, container = _ngsp_header(data, path), "zstd"
    else:
        magic, version, count, degree, bits, flags, _ = HEADER.unpack(_decompress_header(data, path))
        _check_header(path, magic, version, degree, flags)
        head, container = Header(version, count, degree, bits, flags), "gzip"
    return {"version": head.version, "points": head.points, "sh_degree": head.sh_degree,
            "fractional_bits": head.fractional_bits, "antialiased": head.antialiased,
            "extensions": bool(head.flags & FLAG_EXTENSIONS), "container": container}


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
    notes = [f"spz v{h['version']} ({h['container']})", f"{h['fractional_bits']} fractional bits"]
    if h["antialiased"]:
        notes.append("antialiased")
    if h["sh_degree"] > 3:
        notes.append(f"SH degree {h['sh_degree']} (read as 3)")
    if h["extensions"]:
        notes.append("vendor extensions (skipped)")
    return ", ".join(notes)
