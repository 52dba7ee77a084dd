"""COLMAP sparse models: read and write ``cameras``, ``images`` and ``points3D``, binary and text.

A model is a folder holding ``cameras.bin|txt``, ``images.bin|txt`` and ``points3D.bin|txt``
(COLMAP ≥ 3.12 also writes ``rigs`` and ``frames``; they are not needed here: ``images`` still
carries every registered image's world-to-camera pose). The reader is our own (``struct`` and
numpy), so it does not depend on a pycolmap version; values round-trip exactly through both
formats. :func:`colmap_to_camera` and :func:`camera_to_colmap` convert to and from
:class:`splatfx.core.camera.Camera`; models whose distortion OpenCV's ``k1,k2,p1,p2,k3`` cannot
express (fisheye, rational, division, thin-prism …) are refused with a clear error.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splatfx.core.atomic import write_bytes_atomic, write_text_atomic
from splatfx.core.camera import Camera
from splatfx.core.errors import InputError, require_dir

PathLike = str | os.PathLike[str]
MODEL_FILES = ("cameras", "images", "points3D")
INVALID_POINT3D_ID = -1  # COLMAP writes uint64 max; read as int64 it is -1


@dataclass(frozen=True)
class CameraModel:
    """One of COLMAP's camera models: its numeric id, name and parameter names."""

    model_id: int
    name: str
    params: tuple[str, ...]


CAMERA_MODELS: dict[str, CameraModel] = {m.name: m for m in (
    CameraModel(0, "SIMPLE_PINHOLE", ("f", "cx", "cy")),
    CameraModel(1, "PINHOLE", ("fx", "fy", "cx", "cy")),
    CameraModel(2, "SIMPLE_RADIAL", ("f", "cx", "cy", "k")),
    CameraModel(3, "RADIAL", ("f", "cx", "cy", "k1", "k2")),
    CameraModel(4, "OPENCV", ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
    CameraModel(5, "OPENCV_FISHEYE", ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4")),
    CameraModel(6, "FULL_OPENCV", ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")),
    CameraModel(7, "FOV", ("fx", "fy", "cx", "cy", "omega")),
    CameraModel(8, "SIMPLE_RADIAL_FISHEYE", ("f", "cx", "cy", "k")),
    CameraModel(9, "RADIAL_FISHEYE", ("f", "cx", "cy", "k1", "k2")),
    CameraModel(10, "THIN_PRISM_FISHEYE", ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "sx1", "sy1")),
    CameraModel(11, "RAD_TAN_THIN_PRISM_FISHEYE", ("fx", "fy", "cx", "cy", "k0", "k1", "k2", "k3", "k4", "k5",
                                                   "p0", "p1", "s0", "s1", "s2", "s3")),
    CameraModel(12, "SIMPLE_DIVISION", ("f", "cx", "cy", "k")),
    CameraModel(13, "DIVISION", ("fx", "fy", "cx", "cy", "k")),
    CameraModel(14, "SIMPLE_FISHEYE", ("f", "cx", "cy")),
    CameraModel(15, "FISHEYE", ("fx", "fy", "cx", "cy")),
    CameraModel(16, "EUCM", ("fx", "fy", "cx", "cy", "alpha", "beta")),
    CameraModel(17, "EQUIRECTANGULAR", ("w", "h")),
)}
_MODELS_BY_ID = {m.model_id: m for m in CAMERA_MODELS.values()}


# --------------------------------------------------------------------------- data


@dataclass
class ColmapCamera:
    """A COLMAP camera (intrinsics) exactly as stored: ``params`` in the model's order."""

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # float64 (n,)

    def __post_init__(self) -> None:
        self.params = np.asarray(self.params, dtype=np.float64).reshape(-1)
        model = CAMERA_MODELS.get(self.model)
        if model is None:
            raise ValueError(f"unknown COLMAP camera model {self.model!r}")
        if self.params.size != len(model.params):
            raise ValueError(f"{self.model} takes {len(model.params)} parameters, got {self.params.size}")


@dataclass
class ColmapImage:
    """A registered image: world-to-camera ``qvec`` (wxyz) and ``tvec``, and its 2D points."""

    image_id: int
    qvec: np.ndarray  # float64 (4,) wxyz
    tvec: np.ndarray  # float64 (3,)
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # float64 (P, 2)
    point3D_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (P,), -1: none

    def __post_init__(self) -> None:
        self.qvec = np.asarray(self.qvec, dtype=np.float64).reshape(4)
        self.tvec = np.asarray(self.tvec, dtype=np.float64).reshape(3)
        self.xys = np.asarray(self.xys, dtype=np.float64).reshape(-1, 2)
        self.point3D_ids = np.asarray(self.point3D_ids, dtype=np.int64).reshape(-1)
        if len(self.xys) != len(self.point3D_ids):
            raise ValueError(f"image {self.name!r}: {len(self.xys)} points2D but "
                             f"{len(self.point3D_ids)} point3D ids")


@dataclass
class ColmapPoints:
    """All 3D points of a model as arrays; ``tracks`` concatenates each point's observations."""

    ids: np.ndarray  # int64 (M,)
    xyz: np.ndarray  # float64 (M, 3)
    rgb: np.ndarray  # uint8 (M, 3)
    errors: np.ndarray  # float64 (M,) mean reprojection error (-1: not computed)
    track_lengths: np.ndarray  # int64 (M,)
    tracks: np.ndarray  # uint32 (sum(track_lengths), 2): (image_id, point2D_idx)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        m = len(self.ids)
        self.xyz = np.asarray(self.xyz, dtype=np.float64).reshape(m, 3)
        self.rgb = np.asarray(self.rgb, dtype=np.uint8).reshape(m, 3)
        self.errors = np.asarray(self.errors, dtype=np.float64).reshape(m)
        self.track_lengths = np.asarray(self.track_lengths, dtype=np.int64).reshape(m)
        self.tracks = np.asarray(self.tracks, dtype=np.uint32).reshape(-1, 2)
        if len(self.tracks) != int(self.track_lengths.sum()):
            raise ValueError(f"tracks hold {len(self.tracks)} observations, lengths sum to "
                             f"{int(self.track_lengths.sum())}")

    @classmethod
    def empty(cls) -> ColmapPoints:
        return cls(np.zeros(0), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros((0, 2)))

    def __len__(self) -> int:
        return len(self.ids)

    def track(self, i: int) -> np.ndarray:
        """Observations ``(image_id, point2D_idx)`` of the ``i``-th point."""
        start = int(self.track_lengths[:i].sum())
        return self.tracks[start:start + int(self.track_lengths[i])]


@dataclass
class ColmapModel:
    """A sparse reconstruction: cameras and images by id, and the 3D points."""

    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: ColmapPoints


# --------------------------------------------------------------------------- finding files


def find_model_file(folder: PathLike, stem: str) -> Path | None:
    """``folder/stem.bin`` or else ``folder/stem.txt``, whichever exists first, or None."""
    for suffix in (".bin", ".txt"):
        p = Path(folder) / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def is_model(folder: PathLike, stems: Sequence[str] = ("cameras", "images")) -> bool:
    """True when ``folder`` holds every named model file (binary or text)."""
    return all(find_model_file(folder, s) is not None for s in stems)


def read_model(folder: PathLike) -> ColmapModel:
    """Read a whole model (binary files preferred when both formats exist)."""
    d = require_dir(folder, "COLMAP model folder")
    paths = {s: find_model_file(d, s) for s in MODEL_FILES}
    missing = [f"{s}.bin/.txt" for s, p in paths.items() if p is None]
    if missing:
        raise InputError(d, f"is not a complete COLMAP model: missing {', '.join(missing)}")
    cameras = read_cameras(paths["cameras"])
    images = read_images(paths["images"])
    for image in images.values():
        if image.camera_id not in cameras:
            raise InputError(paths["images"], f"image {image.name!r} refers to camera {image.camera_id}, "
                                              f"which {paths['cameras'].name} does not define")
    return ColmapModel(cameras, images, read_points3D(paths["points3D"]))


def write_model(model: ColmapModel, folder: PathLike, fmt: str = "bin") -> None:
    """Write ``cameras``, ``images`` and ``points3D`` in ``fmt`` ("bin" or "txt"), each atomically."""
    if fmt not in ("bin", "txt"):
        raise ValueError(f"COLMAP model format must be 'bin' or 'txt', not {fmt!r}")
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    write_cameras(model.cameras, d / f"cameras.{fmt}")
    write_images(model.images, d / f"images.{fmt}")
    write_points3D(model.points, d / f"points3D.{fmt}")


def _by_suffix(path: PathLike) -> tuple[Path, bool]:
    p = Path(path)
    if p.suffix not in (".bin", ".txt"):
        raise ValueError(f"{p}: a COLMAP model file ends in .bin or .txt")
    return p, p.suffix == ".bin"


def read_cameras(path: PathLike) -> dict[int, ColmapCamera]:
    p, binary = _by_suffix(path)
    return _read_cameras_bin(p) if binary else _read_cameras_txt(p)


def read_images(path: PathLike) -> dict[int, ColmapImage]:
    p, binary = _by_suffix(path)
    return _read_images_bin(p) if binary else _read_images_txt(p)


def read_points3D(path: PathLike) -> ColmapPoints:  # noqa: N802 (COLMAP's file name)
    p, binary = _by_suffix(path)
    return _read_points_bin(p) if binary else _read_points_txt(p)


def write_cameras(cameras: Mapping[int, ColmapCamera], path: PathLike) -> None:
    p, binary = _by_suffix(path)
    if binary:
        write_bytes_atomic(p, _cameras_bin(cameras))
    else:
        write_text_atomic(p, _cameras_txt(cameras))


def write_images(images: Mapping[int, ColmapImage], path: PathLike) -> None:
    p, binary = _by_suffix(path)
    if binary:
        write_bytes_atomic(p, _images_bin(images))
    else:
        write_text_atomic(p, _images_txt(images))


def write_points3D(points: ColmapPoints, path: PathLike) -> None:  # noqa: N802
    p, binary = _by_suffix(path)
    if binary:
        write_bytes_atomic(p, _points_bin(points))
    else:
        write_text_atomic(p, _points_txt(points))


# --------------------------------------------------------------------------- binary


class _Bytes:
    """A little-endian cursor over a file's bytes that reports truncation as InputError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def unpack(self, fmt: str) -> tuple:
        fmt = "<" + fmt
        size = struct.calcsize(fmt)
        self._need(size)
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def array(self, dtype: np.dtype | str, count: int) -> np.ndarray:
        dt = np.dtype(dtype)
        self._need(dt.itemsize * count)
        a = np.frombuffer(self.data, dt, count, self.pos)
        self.pos += dt.itemsize * count
        return a

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise InputError(self.path, f"is truncated: unterminated name at byte {self.pos}")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(self.path, f"image name at byte {self.pos} is not UTF-8") from None

    def count(self, what: str, min_record: int) -> int:
        """Read a uint64 record count and check it could fit in the rest of the file."""
        (n,) = self.unpack("Q")
        if n * min_record > len(self.data) - self.pos:
            raise InputError(self.path, f"is truncated or corrupt: says {n} {what} but holds "
                                        f"{len(self.data) - self.pos} bytes after the count")
        return n

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise InputError(self.path, f"has {len(self.data) - self.pos} unexpected bytes after "
                                        f"the last record (corrupt or not a COLMAP file)")

    def _need(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise InputError(self.path, f"is truncated: needs {self.pos + size} bytes, has {len(self.data)}")


def _read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    b = _Bytes(path)
    cameras: dict[int, ColmapCamera] = {}
    for _ in range(b.count("cameras", 24)):
        camera_id, model_id, width, height = b.unpack("iiQQ")
        model = _MODELS_BY_ID.get(model_id)
        if model is None:
            raise InputError(path, f"camera {camera_id} has unknown model id {model_id}")
        params = b.array("<f8", len(model.params)).copy()
        cameras[camera_id] = ColmapCamera(camera_id, model.name, width, height, params)
    b.finish()
    return cameras


_POINT2D = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])  # one images.bin observation


def _read_images_bin(path: Path) -> dict[int, ColmapImage]:
    b = _Bytes(path)
    images: dict[int, ColmapImage] = {}
    for _ in range(b.count("images", 64)):
        (image_id, qw, qx, qy, qz, tx, ty, tz, camera_id) = b.unpack("I7dI")
        name = b.cstring()
        (n_points,) = b.unpack("Q")
        pts = b.array(_POINT2D, n_points)
        xys = np.stack([pts["x"], pts["y"]], axis=1) if n_points else np.zeros((0, 2))
        images[image_id] = ColmapImage(image_id, [qw, qx, qy, qz], [tx, ty, tz], camera_id, name,
                                       xys, pts["id"].copy())
    b.finish()
    return images


# Fixed part of one points3D record: id, xyz, rgb, error, track length (43 + 8 = 51 bytes).
_POINT_HEAD = np.dtype([("id", "<i8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8"), ("n", "<u8")])


def _read_points_bin(path: Path) -> ColmapPoints:
    b = _Bytes(path)
    count = b.count("points", _POINT_HEAD.itemsize)
    starts = np.empty(count, dtype=np.int64)
    lengths = np.empty(count, dtype=np.int64)
    pos, size = b.pos, len(b.data)
    for i in range(count):  # records vary in length: walk them once to find their starts
        if pos + _POINT_HEAD.itemsize > size:
            raise InputError(path, f"is truncated: point {i + 1} of {count} starts at byte {pos}, "
                                   f"file has {size}")
        starts[i] = pos
        length = struct.unpack_from("<Q", b.data, pos + 43)[0]  # uint64: checked before it is stored
        pos += _POINT_HEAD.itemsize + 8 * length
        if pos > size:
            raise InputError(path, f"is truncated or corrupt: point {i + 1} of {count} claims a track of "
                                   f"{length} observations, which ends at byte {pos}; file has {size}")
        lengths[i] = length
    if pos != size:
        raise InputError(path, f"has {size - pos} unexpected bytes after the last point")
    raw = np.frombuffer(b.data, np.uint8)
    heads = raw[starts[:, None] + np.arange(_POINT_HEAD.itemsize)].copy().view(_POINT_HEAD).reshape(count)
    track_starts = np.repeat(starts + _POINT_HEAD.itemsize, lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    track_bytes = raw[(track_starts + 8 * within)[:, None] + np.arange(8)]
    tracks = track_bytes.copy().view("<u4").reshape(-1, 2)
    return ColmapPoints(heads["id"], heads["xyz"], heads["rgb"], heads["error"], lengths, tracks)


def _cameras_bin(cameras: Mapping[int, ColmapCamera]) -> bytes:
    parts = [struct.pack("<Q", len(cameras))]
    for cam in cameras.values():
        model = CAMERA_MODELS[cam.model]
        parts.append(struct.pack("<iiQQ", cam.camera_id, model.model_id, cam.width, cam.height))
        parts.append(cam.params.astype("<f8").tobytes())
    return b"".join(parts)


def _images_bin(images: Mapping[int, ColmapImage]) -> bytes:
    parts = [struct.pack("<Q", len(images))]
    for im in images.values():
        if "\0" in im.name:
            raise ValueError(f"image name {im.name!r} contains a NUL byte")
        parts.append(struct.pack("<I7dI", im.image_id, *im.qvec, *im.tvec, im.camera_id))
        parts.append(im.name.encode("utf-8") + b"\0")
        pts = np.empty(len(im.xys), _POINT2D)
        pts["x"], pts["y"], pts["id"] = im.xys[:, 0], im.xys[:, 1], im.point3D_ids
        parts.append(struct.pack("<Q", len(pts)) + pts.tobytes())
    return b"".join(parts)


def _points_bin(points: ColmapPoints) -> bytes:
    heads = np.empty(len(points), _POINT_HEAD)
    heads["id"], heads["xyz"], heads["rgb"] = points.ids, points.xyz, points.rgb
    heads["error"], heads["n"] = points.errors, points.track_lengths
    tracks = points.tracks.astype("<u4")
    ends = np.cumsum(points.track_lengths)
    parts = [struct.pack("<Q", len(points))]
    for i in range(len(points)):
        parts.append(heads[i].tobytes())
        parts.append(tracks[ends[i] - points.track_lengths[i]:ends[i]].tobytes())
    return b"".join(parts)


# --------------------------------------------------------------------------- text


def _data_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of every line that is not blank or a ``#`` comment."""
    for number, line in enumerate(_text(path).splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "is not a UTF-8 text file (a binary model with a .txt name?)") from None


def _numbers(path: Path, number: int, tokens: Sequence[str], kind: type) -> list:
    try:
        return [kind(t) for t in tokens]
    except ValueError:
        raise InputError(path, f"line {number}: expected numbers, got {' '.join(tokens)!r}") from None


# Ranges of integer fields as the binary format stores them: text values must fit there too.
_UINT32 = (0, 2**32 - 1)  # image and camera ids, track entries (image id, point2D index)
_UINT64 = (0, 2**64 - 1)  # camera width and height
_POINT3D_ID = (INVALID_POINT3D_ID, 2**63 - 1)  # int64 in ColmapImage/ColmapPoints; -1: no 3D point
_COLOUR = (0, 255)  # uint8 RGB


def _integers(path: Path, number: int, tokens: Sequence[str], what: str, bounds: tuple[int, int]) -> list[int]:
    """Whole numbers of one field, each within ``bounds`` (inclusive), so numpy never overflows or wraps."""
    values = _numbers(path, number, tokens, int)
    low, high = bounds
    for value in values:
        if not low <= value <= high:
            raise InputError(path, f"line {number}: {what} {value} is outside {low}..{high}")
    return values


def _read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cameras: dict[int, ColmapCamera] = {}
    for number, line in _data_lines(path):
        tokens = line.split()
        if len(tokens) < 4:
            raise InputError(path, f"line {number}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]")
        model = CAMERA_MODELS.get(tokens[1])
        if model is None:
            raise InputError(path, f"line {number}: unknown camera model {tokens[1]!r}")
        if len(tokens) != 4 + len(model.params):
            raise InputError(path, f"line {number}: {model.name} takes {len(model.params)} parameters "
                                   f"({', '.join(model.params)}), got {len(tokens) - 4}")
        (camera_id,) = _integers(path, number, tokens[:1], "camera id", _UINT32)
        width, height = _integers(path, number, tokens[2:4], "image size", _UINT64)
        params = _numbers(path, number, tokens[4:], float)
        cameras[camera_id] = ColmapCamera(camera_id, model.name, width, height, np.array(params))
    return cameras


def _read_images_txt(path: Path) -> dict[int, ColmapImage]:
    """Two lines per image; the second (its 2D points) may be empty, so it is read unconditionally."""
    lines = _text(path).splitlines()
    images: dict[int, ColmapImage] = {}
    i = 0
    while i < len(lines):
        head = lines[i].strip()
        i += 1
        if not head or head.startswith("#"):
            continue
        tokens = head.split(maxsplit=9)
        if len(tokens) != 10:
            raise InputError(path, f"line {i}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        image_id, camera_id = _integers(path, i, [tokens[0], tokens[8]], "image/camera id", _UINT32)
        pose = _numbers(path, i, tokens[1:8], float)
        points = lines[i].split() if i < len(lines) else []
        i += 1
        if len(points) % 3:
            raise InputError(path, f"line {i}: POINTS2D needs triples (X Y POINT3D_ID), got {len(points)} values")
        xys = np.array(_numbers(path, i, points[0::3] + points[1::3], float)).reshape(2, -1).T
        ids = np.array(_integers(path, i, points[2::3], "POINT3D_ID", _POINT3D_ID), dtype=np.int64)
        images[image_id] = ColmapImage(image_id, pose[:4], pose[4:], camera_id, tokens[9], xys, ids)
    return images


def _read_points_txt(path: Path) -> ColmapPoints:
    ids, xyz, rgb, errors, lengths, tracks = [], [], [], [], [], []
    for number, line in _data_lines(path):
        tokens = line.split()
        if len(tokens) < 8 or (len(tokens) - 8) % 2:
            raise InputError(path, f"line {number}: expected POINT3D_ID X Y Z R G B ERROR TRACK[] "
                                   f"(image id, point2D index pairs)")
        ids.append(_integers(path, number, tokens[:1], "POINT3D_ID", _POINT3D_ID)[0])
        xyz.append(_numbers(path, number, tokens[1:4], float))
        rgb.append(_integers(path, number, tokens[4:7], "colour value", _COLOUR))
        errors.append(_numbers(path, number, tokens[7:8], float)[0])
        track = _integers(path, number, tokens[8:], "track entry (image id, point2D index)", _UINT32)
        lengths.append(len(track) // 2)
        tracks.extend(track)
    if not ids:
        return ColmapPoints.empty()
    return ColmapPoints(np.array(ids), np.array(xyz), np.array(rgb), np.array(errors), np.array(lengths),
                        np.array(tracks, dtype=np.int64).reshape(-1, 2))


def _num(x: float) -> str:
    """Shortest text that reads back as the same float64 (COLMAP parses it with strtod)."""
    return repr(float(x))


def _cameras_txt(cameras: Mapping[int, ColmapCamera]) -> str:
    lines = ["# Camera list with one line of data per camera:",
             "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
             f"# Number of cameras: {len(cameras)}"]
    for c in cameras.values():
        lines.append(" ".join([str(c.camera_id), c.model, str(c.width), str(c.height), *map(_num, c.params)]))
    return "\n".join(lines) + "\n"


def _images_txt(images: Mapping[int, ColmapImage]) -> str:
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)",
             f"# Number of images: {len(images)}"]
    for im in images.values():
        if not im.name or im.name != im.name.strip() or any(ch in im.name for ch in "\r\n"):
            raise ValueError(f"image name {im.name!r} cannot be stored in a COLMAP text model")
        lines.append(" ".join([str(im.image_id), *map(_num, im.qvec), *map(_num, im.tvec),
                               str(im.camera_id), im.name]))
        lines.append(" ".join(f"{_num(x)} {_num(y)} {int(p)}"
                              for (x, y), p in zip(im.xys, im.point3D_ids, strict=True)))
    return "\n".join(lines) + "\n"


def _points_txt(points: ColmapPoints) -> str:
    lines = ["# 3D point list with one line of data per point:",
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
             f"# Number of points: {len(points)}"]
    ends = np.cumsum(points.track_lengths)
    for i in range(len(points)):
        track = points.tracks[ends[i] - points.track_lengths[i]:ends[i]].ravel()
        lines.append(" ".join([str(int(points.ids[i])), *map(_num, points.xyz[i]),
                               *(str(int(v)) for v in points.rgb[i]), _num(points.errors[i]),
                               *(str(int(v)) for v in track)]))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- cameras


def colmap_intrinsics(camera: ColmapCamera, source: PathLike = "COLMAP model"
                      ) -> tuple[float, float, float, float, np.ndarray | None]:
    """``(fx, fy, cx, cy, dist)`` with OpenCV ``dist`` (k1, k2, p1, p2[, k3]) or None.

    Raises InputError for models OpenCV's five coefficients cannot express.
    """
    p = camera.params
    name = camera.model
    if name == "SIMPLE_PINHOLE":
        return p[0], p[0], p[1], p[2], None
    if name == "PINHOLE":
        return p[0], p[1], p[2], p[3], None
    if name == "SIMPLE_RADIAL":
        return p[0], p[0], p[1], p[2], np.array([p[3], 0.0, 0.0, 0.0])
    if name == "RADIAL":
        return p[0], p[0], p[1], p[2], np.array([p[3], p[4], 0.0, 0.0])
    if name == "OPENCV":
        return p[0], p[1], p[2], p[3], p[4:8].copy()
    if name == "FULL_OPENCV" and not p[9:12].any():
        return p[0], p[1], p[2], p[3], p[4:9].copy()
    detail = "its rational terms k4, k5, k6 are not zero" if name == "FULL_OPENCV" else "not a pinhole model"
    raise InputError(source, f"camera {camera.camera_id} uses COLMAP model {name} ({detail}), which splatfx "
                             f"cannot represent; undistort first (colmap image_undistorter) to get PINHOLE cameras")


def colmap_to_camera(camera: ColmapCamera, image: ColmapImage, source: PathLike = "COLMAP model") -> Camera:
    """Our :class:`Camera` for one registered image of a model."""
    fx, fy, cx, cy, dist = colmap_intrinsics(camera, source)
    return Camera.from_colmap(image.qvec, image.tvec, camera.width, camera.height, fx, fy, cx, cy, dist)


@dataclass(frozen=True)
class ModelCameras:
    """The :class:`Camera` of every registered image of a model, in sorted image-name order,
    and the two files they were read from (for error messages)."""

    names: list[str]
    cameras: list[Camera]
    cameras_file: Path
    images_file: Path

    def by_name(self) -> dict[str, Camera]:
        """Image name → camera."""
        return dict(zip(self.names, self.cameras, strict=True))


def read_model_cameras(folder: PathLike) -> ModelCameras:
    """The cameras of the model in ``folder`` (``cameras`` and ``images``, .bin or .txt), as
    solved: lens distortion kept, sizes as COLMAP saw the images.

    InputError names the file when an image refers to an undefined camera or a camera is
    invalid (a model :func:`colmap_intrinsics` refuses, a bad size, focal length or pose).
    """
    cameras_file = find_model_file(folder, "cameras")
    images_file = find_model_file(folder, "images")
    if cameras_file is None or images_file is None:
        raise InputError(folder, "is not a COLMAP model: it needs cameras and images (.bin or .txt)")
    intrinsics = read_cameras(cameras_file)
    registered = sorted(read_images(images_file).values(), key=lambda im: im.name)
    cameras = []
    for im in registered:
        if im.camera_id not in intrinsics:
            raise InputError(images_file, f"image {im.name!r} refers to camera {im.camera_id}, "
                                          f"which {cameras_file.name} does not define")
        try:
            cameras.append(colmap_to_camera(intrinsics[im.camera_id], im, cameras_file))
        except ValueError as exc:  # Camera's checks: size, focal length, finite values
            raise InputError(images_file, f"image {im.name!r} (camera {im.camera_id} of {cameras_file.name}): "
                                          f"{exc}") from None
    return ModelCameras([im.name for im in registered], cameras, cameras_file, images_file)


def camera_to_colmap(camera: Camera, camera_id: int) -> ColmapCamera:
    """The COLMAP intrinsics of ``camera``: PINHOLE, OPENCV, or FULL_OPENCV when k3 is set."""
    size = (camera.width, camera.height)
    k = [camera.fx, camera.fy, camera.cx, camera.cy]
    if camera.dist is None:
        return ColmapCamera(camera_id, "PINHOLE", *size, np.array(k))
    dist = np.concatenate([camera.dist, np.zeros(5 - len(camera.dist))])
    if dist[4] == 0.0:
        return ColmapCamera(camera_id, "OPENCV", *size, np.array([*k, *dist[:4]]))
    return ColmapCamera(camera_id, "FULL_OPENCV", *size, np.array([*k, *dist, 0.0, 0.0, 0.0]))


def model_from_cameras(names: Sequence[str], cameras: Sequence[Camera],
                       points: ColmapPoints | None = None) -> ColmapModel:
    """A model with one image per camera (ids from 1); identical intrinsics share one COLMAP camera."""
    if len(names) != len(cameras):
        raise ValueError(f"{len(names)} names for {len(cameras)} cameras")
    intrinsics: dict[tuple, ColmapCamera] = {}
    images: dict[int, ColmapImage] = {}
    for image_id, (name, cam) in enumerate(zip(names, cameras, strict=True), 1):
        candidate = camera_to_colmap(cam, len(intrinsics) + 1)
        key = (candidate.model, candidate.width, candidate.height, candidate.params.tobytes())
        shared = intrinsics.setdefault(key, candidate)
        qvec, tvec = cam.to_colmap()
        images[image_id] = ColmapImage(image_id, qvec, tvec, shared.camera_id, name)
    return ColmapModel({c.camera_id: c for c in intrinsics.values()}, images,
                       ColmapPoints.empty() if points is None else points)
