"""The 3DGS PLY in the INRIA layout: reading, writing and linting.

Layout written (one binary little-endian float32 record per Gaussian)::

    x y z nx ny nz f_dc_0..2 f_rest_0..(3·((d+1)²−1)−1) opacity scale_0..2 rot_0..3 [extras]

``f_rest`` is channel-major (all R coefficients of degree ≥ 1, then all G, then all B);
``opacity`` is the logit, ``scale_*`` are log-scales, ``rot_*`` is a wxyz quaternion.

Reading accepts binary little/big-endian and ASCII PLY, any numeric property type, files
without normals, SH degrees 0–3, and keeps unknown properties as ``extras`` (written
back after ``rot_3`` in the same order). Non-zero normals are kept as extras ``nx``,
``ny``, ``nz`` and written back in their usual place. The header's vertex count is
checked against the file size before any data is read, so a corrupt count fails fast.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splatfx.core.atomic import atomic_open
from splatfx.core.errors import InputError, require_file
from splatfx.io.formats import GaussianArrays

# PLY scalar type names (both spellings) -> numpy type character.
PLY_TYPES: dict[str, str] = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
FORMAT_BYTE_ORDER = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": "="}
MAX_HEADER_BYTES = 1 << 20  # a 3DGS header is ~2 kB; anything past 1 MiB is not a header

POSITION = ("x", "y", "z")
NORMALS = ("nx", "ny", "nz")
DC = ("f_dc_0", "f_dc_1", "f_dc_2")
SCALES = ("scale_0", "scale_1", "scale_2")
ROTATION = ("rot_0", "rot_1", "rot_2", "rot_3")
REQUIRED = POSITION + DC + ("opacity",) + SCALES + ROTATION
_F_REST = re.compile(r"f_rest_(\d+)$")


# --- header -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlyElement:
    """One ``element`` of a PLY header: its name, count and (name, numpy type) properties."""

    name: str
    count: int
    properties: tuple[tuple[str, str], ...] = ()
    has_list: bool = False

    def dtype(self, byte_order: str) -> np.dtype:
        """The packed structured dtype of one record (scalar properties only)."""
        return np.dtype([(name, byte_order + kind) for name, kind in self.properties])

    @property
    def property_names(self) -> list[str]:
        return [name for name, _ in self.properties]


@dataclass(frozen=True)
class PlyHeader:
    """A parsed PLY header and where its data starts."""

    format: str
    elements: tuple[PlyElement, ...]
    data_offset: int
    comments: tuple[str, ...] = ()

    @property
    def vertex(self) -> PlyElement:
        return next(e for e in self.elements if e.name == "vertex")

    @property
    def byte_order(self) -> str:
        return FORMAT_BYTE_ORDER[self.format]


def read_header(path: str | os.PathLike[str]) -> PlyHeader:
    """Parse the header of a PLY file, raising InputError(path, …) if it is malformed."""
    with open(require_file(path, "PLY file"), "rb") as fh:
        return parse_header(fh.read(MAX_HEADER_BYTES), path)


def parse_header(data: bytes, source: str | os.PathLike[str]) -> PlyHeader:
    """Parse a PLY header from the first bytes of a file (at least the whole header)."""
    if not (data.startswith(b"ply\n") or data.startswith(b"ply\r\n")):
        raise InputError(source, f"not a PLY file (starts with {data[:8]!r}, expected b'ply\\n')")
    end = re.search(rb"(?:^|\n)end_header(?:\r?\n|$)", data)
    if end is None:
        raise InputError(source, "PLY header has no 'end_header' line (truncated or not a PLY file)")
    try:
        text = data[: end.start()].decode("ascii")
    except UnicodeDecodeError:
        raise InputError(source, "PLY header is not ASCII text") from None
    fmt = None
    comments: list[str] = []
    elements: list[dict] = []
    for number, raw in enumerate(text.splitlines()[1:], start=2):
        words = raw.split()
        if not words:
            continue
        keyword = words[0]
        if keyword in ("comment", "obj_info"):
            comments.append(raw.partition(" ")[2])
        elif keyword == "format":
            if len(words) != 3 or words[1] not in FORMAT_BYTE_ORDER:
                raise InputError(source, f"PLY header line {number}: unsupported format {raw.strip()!r}")
            fmt = words[1]
        elif keyword == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise InputError(source, f"PLY header line {number}: bad element line {raw.strip()!r}")
            elements.append({"name": words[1], "count": int(words[2]), "properties": [], "has_list": False})
        elif keyword == "property":
            if not elements:
                raise InputError(source, f"PLY header line {number}: property before any element")
            _add_property(elements[-1], words, raw, number, source)
        else:
            raise InputError(source, f"PLY header line {number}: unexpected {raw.strip()!r}")
    if fmt is None:
        raise InputError(source, "PLY header has no 'format' line")
    parsed = tuple(PlyElement(e["name"], e["count"], tuple(e["properties"]), e["has_list"]) for e in elements)
    if not any(e.name == "vertex" for e in parsed):
        raise InputError(source, "PLY header has no 'vertex' element")
    return PlyHeader(fmt, parsed, end.end(), tuple(comments))


def _add_property(element: dict, words: list[str], raw: str, number: int, source) -> None:
    if len(words) >= 2 and words[1] == "list":
        if len(words) != 5 or words[2] not in PLY_TYPES or words[3] not in PLY_TYPES:
            raise InputError(source, f"PLY header line {number}: bad list property {raw.strip()!r}")
        element["has_list"] = True
        return
    if len(words) != 3 or words[1] not in PLY_TYPES:
        raise InputError(source, f"PLY header line {number}: unsupported property {raw.strip()!r}")
    if words[2] in (name for name, _ in element["properties"]):
        raise InputError(source, f"PLY header line {number}: duplicate property {words[2]!r}")
    element["properties"].append((words[2], PLY_TYPES[words[1]]))


# --- vertex table ---------------------------------------------------------------------------


@dataclass
class VertexTable:
    """The vertex records of a PLY file as a structured array (native byte order).

    ``declared`` is the header's count; ``data`` holds the complete records present
    (fewer than declared only when read with ``allow_truncated``). ``extra_bytes`` is
    what the file holds beyond the declared elements (binary PLY whose vertex element is
    last; ASCII: surplus values), ``missing_bytes`` what a truncated file lacks.
    """

    header: PlyHeader
    data: np.ndarray
    declared: int
    extra_bytes: int = 0
    missing_bytes: int = 0

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.declared


def read_vertex_table(path: str | os.PathLike[str], allow_truncated: bool = False) -> VertexTable:
    """Read the vertex element of a PLY file.

    The header's vertex count is compared with the file size before anything is read;
    a count the file cannot hold raises InputError (or, with ``allow_truncated``, only
    the complete records present are returned).
    """
    path = require_file(path, "PLY file")
    header = read_header(path)
    vertex = header.vertex
    if vertex.has_list:
        raise InputError(path, "PLY vertex element has list properties, which a 3DGS PLY never has")
    size = path.stat().st_size
    if header.format == "ascii":
        return _read_ascii(path, header, size, allow_truncated)
    return _read_binary(path, header, size, allow_truncated)


def _read_binary(path: Path, header: PlyHeader, size: int, allow_truncated: bool) -> VertexTable:
    order = header.byte_order
    offset = header.data_offset
    index = header.elements.index(header.vertex)
    for element in header.elements[:index]:
        if element.has_list:
            raise InputError(path, f"PLY element {element.name!r} before 'vertex' has list properties (unsupported)")
        offset += element.count * element.dtype(order).itemsize
    dtype = header.vertex.dtype(order)
    declared = header.vertex.count
    available = max(size - offset, 0)
    needed = declared * dtype.itemsize
    if needed > available and not allow_truncated:
        raise InputError(
            path,
            f"PLY header declares {declared} vertices ({_human_bytes(needed)}) but the file holds only "
            f"{_human_bytes(available)} of vertex data (truncated or corrupt)",
        )
    count = min(declared, available // dtype.itemsize) if dtype.itemsize else 0
    is_last = index == len(header.elements) - 1
    extra = max(available - needed, 0) if is_last else 0
    data = np.fromfile(path, dtype=dtype, count=count, offset=offset) if count else np.zeros(0, dtype=dtype)
    return VertexTable(header, _native(data), declared, extra, max(needed - available, 0))


def _native(data: np.ndarray) -> np.ndarray:
    """The structured array with every field in native byte order."""
    native = np.dtype([(name, data.dtype[name].newbyteorder("=")) for name in data.dtype.names or ()])
    return data if data.dtype == native else data.astype(native)


def _read_ascii(path: Path, header: PlyHeader, size: int, allow_truncated: bool) -> VertexTable:
    vertex = header.vertex
    names = vertex.property_names
    declared = vertex.count
    body_size = size - header.data_offset
    # Each value takes at least one character and one separator.
    if declared * 2 * max(len(names), 1) > body_size and not allow_truncated:
        raise InputError(
            path,
            f"PLY header declares {declared} vertices but the file holds only {_human_bytes(body_size)} "
            "of ASCII data (truncated or corrupt)",
        )
    with open(path, "rb") as fh:
        fh.seek(header.data_offset)
        lines = [line for line in fh.read().splitlines() if line.strip()]
    skip = sum(e.count for e in header.elements[: header.elements.index(vertex)])
    rows = [line.split() for line in lines[skip: skip + declared]]
    if rows and len(rows[-1]) < len(names) and allow_truncated:
        rows.pop()  # a record cut off by truncation
    for number, row in enumerate(rows):
        if len(row) != len(names):
            raise InputError(path, f"ASCII PLY vertex {number} has {len(row)} values, expected {len(names)}")
    if len(rows) < declared and not allow_truncated:
        raise InputError(path, f"PLY header declares {declared} vertices but the ASCII data holds only {len(rows)}")
    try:
        values = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    except ValueError:
        raise InputError(path, "ASCII PLY vertex data contains a value that is not a number") from None
    data = np.zeros(len(rows), dtype=vertex.dtype("="))
    for column, name in enumerate(names):
        data[name] = values[:, column]
    is_last = header.elements[-1] is vertex
    trailing = sum(len(line.split()) for line in lines[skip + declared:]) if is_last else 0
    return VertexTable(header, data, declared, extra_bytes=trailing, missing_bytes=0)


# --- table <-> arrays -----------------------------------------------------------------------


def sh_degree_for_rest_count(count: int) -> int | None:
    """The SH degree d whose ``f_rest`` count is 3·((d+1)²−1), or None."""
    for degree in range(4):
        if 3 * ((degree + 1) ** 2 - 1) == count:
            return degree
    return None


def rest_names(table_names: list[str], source) -> list[str]:
    """The ``f_rest_*`` property names in index order; InputError if not 0..n−1 of a valid count."""
    indices = sorted(int(m.group(1)) for m in map(_F_REST.match, table_names) if m)
    if indices != list(range(len(indices))):
        raise InputError(source, f"f_rest properties are not numbered 0..{len(indices) - 1} without gaps")
    if sh_degree_for_rest_count(len(indices)) is None:
        raise InputError(
            source, f"has {len(indices)} f_rest properties; a 3DGS PLY has 0, 9, 24 or 45 (SH degree 0–3)"
        )
    return [f"f_rest_{i}" for i in indices]


def inria_names(sh_degree: int) -> list[str]:
    """The INRIA property names, in order, for an SH degree (without extras)."""
    rest = [f"f_rest_{i}" for i in range(3 * ((sh_degree + 1) ** 2 - 1))]
    return [*POSITION, *NORMALS, *DC, *rest, "opacity", *SCALES, *ROTATION]


def arrays_from_table(data: np.ndarray, source: str | os.PathLike[str]) -> GaussianArrays:
    """Gaussian arrays from a structured vertex array (any numeric property types)."""
    names = list(data.dtype.names or ())
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise InputError(source, f"missing 3DGS PLY properties: {', '.join(missing)}")
    rest = rest_names(names, source)
    n, k = len(data), len(rest) // 3 + 1
    sh = np.empty((n, k, 3), dtype=np.float32)
    sh[:, 0, :] = _float_block(data, DC)
    rest_block = _float_block(data, rest)
    for channel in range(3):  # channel-major in the file
        sh[:, 1:, channel] = rest_block[:, channel * (k - 1): (channel + 1) * (k - 1)]
    known = set(REQUIRED) | set(rest)
    extras = {}
    for name in names:
        if name in known:
            continue
        column = np.ascontiguousarray(data[name], dtype=np.float32)
        if name in NORMALS and not column.any():
            continue  # zero normals are the INRIA placeholder; they are written back as zeros
        extras[name] = column
    return GaussianArrays(
        means=np.ascontiguousarray(_float_block(data, POSITION)),
        quats=np.ascontiguousarray(_float_block(data, ROTATION)),
        log_scales=np.ascontiguousarray(_float_block(data, SCALES)),
        opacity_logits=np.ascontiguousarray(_float_block(data, ("opacity",))[:, 0]),
        sh=sh,
        extras=extras,
    )


def _float_block(data: np.ndarray, names: tuple[str, ...] | list[str]) -> np.ndarray:
    """The named fields as an (N, len(names)) float32 array; a view without copying when
    they are consecutive float32 fields (as in every INRIA file), else a gathered copy."""
    if not names:
        return np.zeros((len(data), 0), dtype=np.float32)
    fields = data.dtype.fields
    first = fields[names[0]][1]
    consecutive = all(
        fields[name][0] == np.dtype(np.float32) and fields[name][1] == first + 4 * i for i, name in enumerate(names)
    )
    if consecutive and data.dtype.itemsize % 4 == 0 and first % 4 == 0:
        matrix = data.view(np.uint8).reshape(len(data), data.dtype.itemsize)
        return matrix[:, first: first + 4 * len(names)].view(np.float32)
    return np.stack([np.asarray(data[name], dtype=np.float32) for name in names], axis=1).reshape(len(data), len(names))


def table_from_arrays(arrays: GaussianArrays) -> tuple[list[str], np.ndarray]:
    """Property names and the (N, P) float32 matrix of the INRIA layout plus extras."""
    n = len(arrays)
    degree = arrays.sh_degree
    k = (degree + 1) ** 2
    if arrays.sh.shape != (n, k, 3):
        raise ValueError(f"sh has shape {arrays.sh.shape}, expected ({n}, {k}, 3)")
    extras = _flat_extras(arrays.extras, n)
    normals = [extras.pop(name, np.zeros(n, dtype=np.float32)) for name in NORMALS]
    names = inria_names(degree)
    clash = sorted(set(names) & set(extras))
    if clash:
        raise ValueError(f"extra channels clash with 3DGS PLY properties: {', '.join(clash)}")
    matrix = np.empty((n, len(names) + len(extras)), dtype=np.float32)
    rest = 3 * (k - 1)
    matrix[:, 0:3] = arrays.means
    matrix[:, 3:6] = np.stack(normals, axis=1)
    matrix[:, 6:9] = arrays.sh[:, 0, :]
    matrix[:, 9: 9 + rest] = arrays.sh[:, 1:, :].transpose(0, 2, 1).reshape(n, rest)
    tail = 9 + rest
    matrix[:, tail] = arrays.opacity_logits
    matrix[:, tail + 1: tail + 4] = arrays.log_scales
    matrix[:, tail + 4: tail + 8] = arrays.quats
    for column, value in enumerate(extras.values(), start=tail + 8):
        matrix[:, column] = value
    return names + list(extras), matrix


def _flat_extras(extras: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Extras as single float32 columns: an (N, C) channel ``c`` becomes ``c_0`` … ``c_{C−1}``."""
    flat: dict[str, np.ndarray] = {}
    for name, value in extras.items():
        value = np.asarray(value, dtype=np.float32)
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise ValueError(f"extra channel name {name!r} is not a valid PLY property name")
        if value.shape[:1] != (n,) or value.ndim not in (1, 2):
            raise ValueError(f"extra channel {name!r} has shape {value.shape}, expected ({n},) or ({n}, C)")
        columns = {name: value} if value.ndim == 1 else {f"{name}_{i}": value[:, i] for i in range(value.shape[1])}
        for column_name, column in columns.items():
            if column_name in flat:
                raise ValueError(f"extra channel {column_name!r} appears twice")
            flat[column_name] = column
    return flat


def header_bytes(names: list[str], count: int) -> bytes:
    """The INRIA-style header: binary little-endian, one float property per name."""
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {count}"]
    lines += [f"property float {name}" for name in names]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


# --- public read/write ----------------------------------------------------------------------


def read_arrays(path: str | os.PathLike[str]) -> GaussianArrays:
    """Read a 3DGS PLY into unvalidated arrays (InputError for malformed files)."""
    return arrays_from_table(read_vertex_table(path).data, path)


def write_arrays(arrays: GaussianArrays, path: str | os.PathLike[str]) -> None:
    """Write arrays as a binary little-endian INRIA PLY, atomically."""
    names, matrix = table_from_arrays(arrays)
    with atomic_open(path, "wb") as fh:
        fh.write(header_bytes(names, len(arrays)))
        np.ascontiguousarray(matrix, dtype="<f4").tofile(fh)


def read_ply(path: str | os.PathLike[str]):
    """Read a 3DGS PLY into validated ``Gaussians``."""
    return read_arrays(path).to_gaussians(source=path)


def write_ply(gaussians, path: str | os.PathLike[str]) -> None:
    """Write ``Gaussians`` as a 3DGS PLY (INRIA layout, extras after ``rot_3``), atomically."""
    write_arrays(GaussianArrays.from_gaussians(gaussians), path)


def describe(path: str | os.PathLike[str]) -> str:
    """``PLY <format>, <n> properties`` from the header."""
    header = read_header(path)
    return f"PLY {header.format} 1.0, {len(header.vertex.properties)} vertex properties"


def _human_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    exponent = min(int(math.log(count, 1024)), 5)
    return f"{count / 1024 ** exponent:.1f} {'BKMGTP'[exponent]}iB".replace(" BiB", " bytes")


# --- lint -----------------------------------------------------------------------------------

LOG_SCALE_MAX = 20.0         # exp(20) ≈ 4.9e8: no real scene has a Gaussian that large
SCALE_EXTENT_FACTOR = 1e4    # nor one 10⁴ times larger than the whole scene
OPACITY_LOGIT_MAX = 25.0     # |logit| > 25: opacity within 1e-11 of 0 or 1; a sign of corrupt data
QUAT_NORM_TOLERANCE = 1e-3   # | |q| − 1 | above this is reported (harmless for 3DGS)


@dataclass(frozen=True)
class LintIssue:
    """One kind of problem found by :func:`lint`, with how many values or Gaussians show it."""

    code: str
    severity: str  # "error" or "warning"
    count: int
    message: str
    property: str | None = None


@dataclass
class LintReport:
    """What :func:`lint` found in one file."""

    path: str
    format: str
    declared: int | None = None
    read: int = 0
    sh_degree: int | None = None
    issues: list[LintIssue] = field(default_factory=list)

    @property
    def errors(self) -> list[LintIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def find(self, code: str, property: str | None = None) -> LintIssue | None:
        """The issue with ``code`` (and ``property``), if reported."""
        return next((i for i in self.issues if i.code == code and (property is None or i.property == property)), None)

    def to_dict(self) -> dict:
        return {
            "path": self.path, "format": self.format, "declared": self.declared, "read": self.read,
            "sh_degree": self.sh_degree, "ok": self.ok,
            "issues": [vars(i) for i in self.issues],
        }


def lint(path: str | os.PathLike[str]) -> LintReport:
    """Check a Gaussian file without validating it, reporting every problem with counts.

    PLY files are checked per property (NaN, ±Inf), for truncation and for data beyond
    the declared vertex count; ``.splat`` and ``.spz`` files are decoded and checked the
    same way. Then the Gaussians: absurd scales, zero and non-unit quaternions, opacity
    logits out of range (bounds are the module constants above).
    """
    from splatfx.io.formats import format_of, read_arrays as read_any

    report = LintReport(path=str(path), format=format_of(path))
    if report.format != "ply":
        try:
            arrays = read_any(path)
        except InputError as exc:
            report.issues.append(LintIssue("unreadable", "error", 1, exc.problem))
            return report
        report.read = report.declared = len(arrays)
        report.sh_degree = arrays.sh_degree
        report.issues += _nonfinite_issues(_named_columns(arrays))
        report.issues += lint_arrays(arrays)
        return report
    try:
        table = read_vertex_table(path, allow_truncated=True)
    except InputError as exc:
        report.issues.append(LintIssue("unreadable", "error", 1, exc.problem))
        return report
    report.declared, report.read = table.declared, len(table.data)
    report.issues += _table_issues(table)
    report.issues += _nonfinite_issues({name: table.data[name] for name in table.data.dtype.names})
    try:
        arrays = arrays_from_table(table.data, path)
    except InputError as exc:
        report.issues.append(LintIssue("layout", "error", report.read, exc.problem))
        return report
    report.sh_degree = arrays.sh_degree
    report.issues += lint_arrays(arrays)
    return report


def _table_issues(table: VertexTable) -> list[LintIssue]:
    issues = []
    if table.truncated:
        issues.append(LintIssue(
            "truncated", "error", table.declared - len(table.data),
            f"header declares {table.declared} vertices but the file holds {len(table.data)} complete ones"
            + (f" ({_human_bytes(table.missing_bytes)} missing)" if table.missing_bytes else ""),
        ))
    if table.extra_bytes:
        unit = "values" if table.header.format == "ascii" else "bytes"
        issues.append(LintIssue(
            "count_mismatch", "error", table.extra_bytes,
            f"file holds {table.extra_bytes} {unit} beyond the {table.declared} vertices its header declares",
        ))
    return issues


def _named_columns(arrays: GaussianArrays) -> dict[str, np.ndarray]:
    """The arrays as PLY-named columns, for per-property reports on non-PLY files."""
    names, matrix = table_from_arrays(arrays)
    return {name: matrix[:, i] for i, name in enumerate(names)}


def _nonfinite_issues(columns: dict[str, np.ndarray]) -> list[LintIssue]:
    issues = []
    for name, column in columns.items():
        if column.dtype.kind != "f" or np.isfinite(column).all():
            continue
        nan = int(np.isnan(column).sum())
        neg = int(np.isneginf(column).sum())
        pos = int(np.isposinf(column).sum())
        if nan:
            issues.append(LintIssue("nan", "error", nan, f"{name}: {nan} NaN values", name))
        if neg or pos:
            issues.append(LintIssue("inf", "error", neg + pos, f"{name}: {neg} −Inf and {pos} +Inf values", name))
    return issues


def scene_extent(means: np.ndarray) -> float:
    """Largest side of the box holding the finite means (0 for fewer than two)."""
    finite = means[np.isfinite(means).all(axis=1)]
    if len(finite) < 2:
        return 0.0
    return float((finite.max(axis=0) - finite.min(axis=0)).max())


def lint_arrays(arrays: GaussianArrays) -> list[LintIssue]:
    """Semantic checks on the Gaussians: scales, quaternions and opacities."""
    issues = []
    extent = scene_extent(arrays.means)
    bound = LOG_SCALE_MAX if extent <= 0 else min(LOG_SCALE_MAX, math.log(SCALE_EXTENT_FACTOR * extent))
    with np.errstate(invalid="ignore"):
        big = int((np.where(np.isfinite(arrays.log_scales), arrays.log_scales, -np.inf) > bound).any(axis=1).sum())
        norms = np.linalg.norm(arrays.quats.astype(np.float64), axis=1)
        zero = int((norms == 0).sum())
        off = int((np.isfinite(norms) & (norms > 0) & (np.abs(norms - 1) > QUAT_NORM_TOLERANCE)).sum())
        logits = arrays.opacity_logits
        wild = int((np.isfinite(logits) & (np.abs(logits) > OPACITY_LOGIT_MAX)).sum())
    if big:
        issues.append(LintIssue(
            "scale_too_large", "error", big,
            f"{big} Gaussians have a log-scale above {bound:.2f} (scale {math.exp(bound):.3g}; scene extent {extent:.3g})",
        ))
    if zero:
        issues.append(LintIssue("quat_zero", "error", zero, f"{zero} Gaussians have a zero quaternion (no rotation)"))
    if off:
        issues.append(LintIssue(
            "quat_unnormalised", "warning", off,
            f"{off} quaternions have |q| further than {QUAT_NORM_TOLERANCE} from 1 (normalised when rendering)",
        ))
    if wild:
        issues.append(LintIssue(
            "opacity_range", "error", wild, f"{wild} opacity logits are outside ±{OPACITY_LOGIT_MAX:g}",
        ))
    return issues
