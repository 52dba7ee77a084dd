"""Property-based fuzzing of every reader splatfx opens files with.

Each reader gets valid seed files built from the real captures in ``/work/shared/data``;
hypothesis mutates them (bit flips, truncations, inserted and deleted bytes, absurd
integers written over header fields, text tokens swapped for hostile values) or
generates structured garbage (PLY headers, PNG chunks, COLMAP lines, JSON, TOML, .npy
headers, spz headers). The property: the reader either succeeds or raises a
:class:`~splatfx.core.errors.SplatfxError` whose one-line message names the file; and the
Python-level memory it allocates (tracemalloc peak) stays bounded by the input's size,
whatever counts the header claims. C libraries (Pillow, OpenEXR) are checked for bounded
memory in a child process (peak RSS).

Every input that once broke a reader is kept in ``tests/fuzz_corpus/`` and replayed by
``test_corpus``; ``CORPUS_ERRORS`` says which clear error each of the fixed bugs' inputs must
now get (see ``docs/robustness.md``).

Profiles: ``SPLATFX_FUZZ=ci`` (default: a fixed, derandomised set of examples per reader,
fast) or ``SPLATFX_FUZZ=long`` (random, many more examples); ``SPLATFX_FUZZ_EXAMPLES=N``
overrides the count of either.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import json
import ntpath
import os
import posixpath
import shutil
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import traceback
import typing
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import data_root
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splatfx.io import colmap

from splatfx.io import images as imageio
from splatfx.shot.config import ShotConfig, config_to_dict, dumps_config, iter_settings, load_config
from splatfx.io.dataset import load_dataset
from splatfx.core.errors import SplatfxError
from splatfx.io.formats import GaussianArrays, describe, read_gaussians, spz, splat
from splatfx.io.formats.ply import lint, table_from_arrays
from splatfx.io.images import (image_size, pack_rgba, read_exr, read_image, write_exr, write_image, write_jpeg,
                             write_png)
from splatfx.io.plates import open_plates

DATA = data_root()
CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"

# --- profiles ---------------------------------------------------------------------------------------

_QUIET = list(HealthCheck)
settings.register_profile("fuzz-ci", max_examples=60, deadline=None, derandomize=True, database=None,
                          suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("fuzz-long", max_examples=1500, deadline=None, database=None, suppress_health_check=_QUIET,
                          print_blob=True)


def fuzz_settings() -> settings:
    """The profile chosen by ``SPLATFX_FUZZ`` (ci|long), with ``SPLATFX_FUZZ_EXAMPLES`` applied."""
    profile = settings.get_profile(f"fuzz-{os.environ.get('SPLATFX_FUZZ', 'ci')}")
    count = os.environ.get("SPLATFX_FUZZ_EXAMPLES")
    return settings(profile, max_examples=int(count)) if count else profile


FUZZ = fuzz_settings()
#: Peak Python allocation a read may make: a fixed allowance plus a multiple of the input size.
MEMORY_FLOOR = 64 << 20
MEMORY_PER_INPUT_BYTE = 64


# --- failures the property reports ------------------------------------------------------------------

class MemoryBoundExceeded(AssertionError):
    """A read allocated far more than its input can justify (header-claimed sizes trusted)."""


class PathEscape(AssertionError):
    """A shot.toml path accepted by the loader points outside the shot folder."""


# --- the property -------------------------------------------------------------------------------------

def check_read(target: Target, root: Path, data: bytes) -> str | None:
    """Write ``data`` as the target's file under ``root`` and read it.

    Returns None when the read succeeds, the message of a clear SplatfxError otherwise;
    raises AssertionError for any other failure, or for a read whose memory is out of bounds.
    """
    path = root / target.filename
    path.write_bytes(data)
    outcome = None
    tracemalloc.start()
    try:
        target.read(path)
    except SplatfxError as exc:
        message = str(exc)
        assert "\n" not in message, f"{target.name}: error message is not one line: {message!r}"
        assert path.name in message or str(root) in message, \
            f"{target.name}: error does not name the file: {message!r}"
        outcome = message
    except Exception as exc:  # noqa: BLE001 - every other failure is a reader bug
        raise AssertionError(f"{target.name}: reader failed with {type(exc).__name__}: {exc}\n"
                             f"{''.join(traceback.format_exception(exc))}") from exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    bound = MEMORY_FLOOR + MEMORY_PER_INPUT_BYTE * len(data)
    if peak > bound:
        raise MemoryBoundExceeded(f"{target.name}: peak {peak / 2**20:.0f} MiB for a {len(data)}-byte input "
                                  f"(bound {bound / 2**20:.0f} MiB)")
    return outcome


# --- mutations ------------------------------------------------------------------------------------------

ABSURD_INTS = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1)
_offset = st.one_of(st.integers(0, 96), st.integers(0, 2**31))  # headers live near the start

byte_mutation = st.one_of(
    st.tuples(st.just("flip"), _offset, st.integers(0, 7)),
    st.tuples(st.just("truncate"), _offset),
    st.tuples(st.just("insert"), _offset, st.binary(min_size=1, max_size=32)),
    st.tuples(st.just("delete"), _offset, st.integers(1, 64)),
    st.tuples(st.just("overwrite"), _offset, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("int"), _offset, st.sampled_from((1, 2, 4, 8)), st.sampled_from(ABSURD_INTS)),
    st.tuples(st.just("repeat"), _offset, st.integers(1, 64), st.integers(1, 8)),
)


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    """Apply byte-level mutations (offsets wrap around the current length)."""
    b = bytearray(data)
    for op, pos, *args in ops:
        n = max(len(b), 1)
        pos %= n + (op in ("insert", "truncate"))
        if op == "flip" and b:
            b[pos] ^= 1 << args[0]
        elif op == "truncate":
            del b[pos:]
        elif op == "insert":
            b[pos:pos] = args[0]
        elif op == "delete":
            del b[pos:pos + args[0]]
        elif op == "overwrite":
            b[pos:pos + len(args[0])] = args[0]
        elif op == "int":
            width, value = args
            b[pos:pos + width] = (value % 256 ** width).to_bytes(width, "little")
        elif op == "repeat":
            b[pos:pos] = bytes(b[pos:pos + args[0]]) * args[1]
    return bytes(b)


HOSTILE_TOKENS = ("", "0", "-1", "1", "nan", "NaN", "inf", "-inf", "1e308", "1e400", "-0", "0x10", "1_000",
                  "99999999999999999999", "-99999999999999999999", "18446744073709551615", "4294967296",
                  "2147483648", "3.5", "ß", "\u00b2", "\x00", "end_header", "format", "element", "property",
                  "PINHOLE", "OPENCV_FISHEYE", "vertex", "list", "uchar", "float", "ascii", "#", "..", "/etc/passwd")

text_mutation = st.one_of(
    st.tuples(st.just("token"), st.integers(0, 2**16), st.sampled_from(HOSTILE_TOKENS)),
    st.tuples(st.just("drop-line"), st.integers(0, 2**16)),
    st.tuples(st.just("dup-line"), st.integers(0, 2**16), st.integers(1, 4)),
    st.tuples(st.just("swap-lines"), st.integers(0, 2**16), st.integers(0, 2**16)),
    st.tuples(st.just("drop-token"), st.integers(0, 2**16)),
    st.tuples(st.just("add-token"), st.integers(0, 2**16), st.sampled_from(HOSTILE_TOKENS)),
)


def mutate_text(data: bytes, ops: list[tuple]) -> bytes:
    """Line- and token-level mutations of a text file (tokens are whitespace-separated)."""
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    for op, i, *args in ops:
        if not lines:
            lines = [""]
        row = i % len(lines)
        words = lines[row].split(" ")
        if op == "token":
            words[(i // len(lines)) % len(words)] = args[0]
            lines[row] = " ".join(words)
        elif op == "drop-token":
            del words[(i // len(lines)) % len(words)]
            lines[row] = " ".join(words)
        elif op == "add-token":
            words.insert((i // len(lines)) % (len(words) + 1), args[0])
            lines[row] = " ".join(words)
        elif op == "drop-line":
            del lines[row]
        elif op == "dup-line":
            lines[row:row] = [lines[row]] * args[0]
        elif op == "swap-lines":
            other = args[0] % len(lines)
            lines[row], lines[other] = lines[other], lines[row]
    return "\n".join(lines).encode("utf-8", "surrogateescape")


# --- seeds from the real captures ---------------------------------------------------------------------

def fern_arrays(count: int = 40) -> GaussianArrays:
    """Gaussians on fern's first sparse points (SH degree 1, one extra channel)."""
    points = colmap.read_points3D(DATA / "fern" / "sparse" / "0" / "points3D.bin")
    xyz = points.xyz[:count].astype(np.float32)
    rng = np.random.default_rng(0)
    sh = np.zeros((count, 4, 3), np.float32)
    sh[:, 0] = (points.rgb[:count] / 255.0 - 0.5) / 0.28209479177387814
    sh[:, 1:] = rng.normal(0, 0.1, (count, 3, 3))
    quats = rng.normal(size=(count, 4)).astype(np.float32)
    return GaussianArrays(means=xyz, quats=quats / np.linalg.norm(quats, axis=1, keepdims=True),
                          log_scales=np.full((count, 3), -3.0, np.float32),
                          opacity_logits=rng.normal(size=count).astype(np.float32), sh=sh,
                          extras={"id": np.arange(count, dtype=np.float32)})


def ply_ascii_bytes(arrays: GaussianArrays) -> bytes:
    """The same Gaussians as an ASCII PLY (mixed property types, as exporters write)."""
    names, matrix = table_from_arrays(arrays)
    types = ["double" if n in ("x", "y", "z") else "float" for n in names]
    header = ["ply", "format ascii 1.0", "comment fuzz seed", f"element vertex {len(matrix)}",
              *(f"property {t} {n}" for t, n in zip(types, names)), "end_header"]
    rows = [" ".join(repr(float(v)) for v in row) for row in matrix]
    return ("\n".join(header + rows) + "\n").encode("ascii")


def fern_model() -> colmap.ColmapModel:
    """fern's real cameras.bin and first sparse points, with images posed from poses_bounds.npy."""
    capture = load_dataset(DATA / "fern", split="all")
    cams = [c.resized(4032, 3024) for c in capture.cameras[:4]]
    model = colmap.model_from_cameras(capture.names[:4], cams)
    model.cameras = colmap.read_cameras(DATA / "fern" / "sparse" / "0" / "cameras.bin")
    points = colmap.read_points3D(DATA / "fern" / "sparse" / "0" / "points3D.bin")
    keep = 12
    lengths = np.minimum(points.track_lengths[:keep], 2)
    tracks = np.array([[1 + (i + j) % 4, j] for i in range(keep) for j in range(lengths[i])], np.uint32)
    model.points = colmap.ColmapPoints(points.ids[:keep], points.xyz[:keep], points.rgb[:keep],
                                       points.errors[:keep], lengths, tracks)
    for image in model.images.values():
        image.camera_id = 1
        image.xys = np.array([[10.5, 20.25], [100.0, 7.0]])
        image.point3D_ids = np.array([int(points.ids[0]), -1])
    return model


def crop_pixels() -> np.ndarray:
    """A 24x32 crop of a real south_building photo, float [0, 1]."""
    photo = read_image(sorted((DATA / "south_building" / "images").iterdir())[0]).pixels
    return photo[200:224, 300:332]


# --- targets --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One reader under test: the file name it reads, how to call it, and its context folder."""

    name: str
    filename: str
    read: Callable[[Path], object]
    seeds: Callable[[], list[bytes]]
    text: bool = False  # also mutate line/token-wise
    context: Callable[[Path], None] | None = None  # builds the folder around the file


def _read_gaussian_file(path: Path) -> None:
    read_gaussians(path)
    lint(path)
    describe(path)


def _read_colmap_model(path: Path) -> None:
    colmap.read_model(path.parent)
    load_dataset(path.parents[2], split="all", layout="colmap")


def _colmap_context(fmt: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        colmap.write_model(fern_model(), root / "sparse" / "0", fmt)
        (root / "images").mkdir(exist_ok=True)
        for image in sorted((DATA / "fern" / "images_8").iterdir())[:4]:
            _link(image, root / "images" / image.name)
    return build


def _colmap_seed(stem: str, fmt: str) -> Callable[[], list[bytes]]:
    def seeds() -> list[bytes]:
        folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"splatfx-fuzz-seed-{os.getpid()}-{fmt}"
        colmap.write_model(fern_model(), folder, fmt)
        data = (folder / f"{stem}.{fmt}").read_bytes()
        shutil.rmtree(folder)
        return [data]
    return seeds


def _link(source: Path, link: Path) -> None:
    if not link.exists():
        link.symlink_to(source)


def _lego_context(root: Path) -> None:
    (root / "train").mkdir(exist_ok=True)
    for i in range(3):
        _link(DATA / "lego_200" / "train" / f"r_{i}.png", root / "train" / f"r_{i}.png")
    points = colmap.read_points3D(DATA / "fern" / "sparse" / "0" / "points3D.bin")
    table = np.zeros(16, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        table[axis] = points.xyz[:16, i]
    for i, channel in enumerate(("red", "green", "blue")):
        table[channel] = points.rgb[:16, i]
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 16\n" + "".join(
        f"property {'float' if n in 'xyz' else 'uchar'} {n}\n" for n in table.dtype.names) + "end_header\n")
    (root / "points.ply").write_bytes(header.encode() + table.tobytes())


def _lego_seed() -> list[bytes]:
    meta = json.loads((DATA / "lego_200" / "transforms_train.json").read_text())
    meta["frames"] = meta["frames"][:3]
    nerfstudio = {"fl_x": 277.0, "fl_y": 277.0, "cx": 100.0, "cy": 100.0, "w": 200, "h": 200, "k1": 0.01,
                  "frames": meta["frames"], "ply_file_path": "points.ply"}
    return [json.dumps(meta, indent=1).encode(), json.dumps(nerfstudio, indent=1).encode()]


def _read_transforms(path: Path) -> None:
    load_dataset(path.parent, split="all", layout="transforms")


def _fern_llff_context(root: Path) -> None:
    _link(DATA / "fern" / "images_8", root / "images_8")


def _read_llff(path: Path) -> None:
    load_dataset(path.parent, split="all", layout="llff")


def _read_shot_toml(path: Path) -> None:
    config = load_config(path)
    check_paths_inside(config, path)


def _shot_seed() -> list[bytes]:
    settings_ = config_to_dict(ShotConfig())
    settings_["shot"].update(frames="1001-1024", plates="plates/plate.####.exr")
    settings_["fx"]["effects"] = ["collapse", "snow"]
    settings_["solve"]["import_cameras"] = "solve/import"
    from splatfx.shot.config import config_from_dict
    return [dumps_config(config_from_dict(settings_)).encode(), b"[shot]\nfps = 25\n"]


def _exr_seed() -> list[bytes]:
    pixels = crop_pixels()
    rgba = np.concatenate([pixels, np.ones_like(pixels[..., :1])], axis=2)
    out = []
    for half, compression in ((False, "zip"), ({"R", "G"}, "piz"), (True, "none")):
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"splatfx-fuzz-seed-{os.getpid()}.exr"
        write_exr(path, {**pack_rgba(rgba), "depth.Z": pixels[..., 0] * 10}, half=half, compression=compression,
                  frame=1001, fps=24)
        out.append(path.read_bytes())
        path.unlink()
    return out


def _image_seed(suffix: str, **kwargs) -> Callable[[], list[bytes]]:
    def seeds() -> list[bytes]:
        pixels = crop_pixels()
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"splatfx-fuzz-seed-{os.getpid()}{suffix}"
        if suffix == ".jpg":
            write_jpeg(path, pixels, quality=90)
        else:
            write_png(path, np.concatenate([pixels, pixels[..., :1]], axis=2), **kwargs)
        data = path.read_bytes()
        path.unlink()
        extra = [(DATA / "lego_200" / "train" / "r_0.png").read_bytes()] if suffix == ".png" and not kwargs else []
        return [data, *extra]
    return seeds


def _read_image_file(path: Path) -> None:
    image_size(path)
    read_image(path)
    if path.suffix == ".exr":
        read_exr(path)
    with open_plates(path.parent) as plates:
        plates.read(plates.first)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("ply_binary", "scene.ply", _read_gaussian_file, lambda: [_ply_bytes(fern_arrays())]),
    Target("ply_ascii", "scene.ply", _read_gaussian_file, lambda: [ply_ascii_bytes(fern_arrays(12))], text=True),
    Target("splat", "scene.splat", _read_gaussian_file, lambda: [splat.encode(fern_arrays())]),
    Target("spz", "scene.spz", _read_gaussian_file,
           lambda: [spz.encode(fern_arrays()), spz.encode(fern_arrays(), version=2)]),
    Target("colmap_cameras_bin", "sparse/0/cameras.bin", _read_colmap_model,
           lambda: [(DATA / "fern" / "sparse" / "0" / "cameras.bin").read_bytes()], context=_colmap_context("bin")),
    Target("colmap_images_bin", "sparse/0/images.bin", _read_colmap_model, _colmap_seed("images", "bin"),
           context=_colmap_context("bin")),
    Target("colmap_points3D_bin", "sparse/0/points3D.bin", _read_colmap_model, _colmap_seed("points3D", "bin"),
           context=_colmap_context("bin")),
    Target("colmap_cameras_txt", "sparse/0/cameras.txt", _read_colmap_model, _colmap_seed("cameras", "txt"),
           text=True, context=_colmap_context("txt")),
    Target("colmap_images_txt", "sparse/0/images.txt", _read_colmap_model, _colmap_seed("images", "txt"),
           text=True, context=_colmap_context("txt")),
    Target("colmap_points3D_txt", "sparse/0/points3D.txt", _read_colmap_model, _colmap_seed("points3D", "txt"),
           text=True, context=_colmap_context("txt")),
    Target("transforms", "transforms.json", _read_transforms, _lego_seed, text=True, context=_lego_context),
    Target("poses_bounds", "poses_bounds.npy", _read_llff,
           lambda: [(DATA / "fern" / "poses_bounds.npy").read_bytes()], context=_fern_llff_context),
    Target("shot_toml", "shot.toml", _read_shot_toml, _shot_seed, text=True),
    Target("exr", "plate.exr", _read_image_file, _exr_seed),
    Target("png", "plate.png", _read_image_file, _image_seed(".png")),
    Target("png16", "plate.png", _read_image_file, _image_seed(".png", bit_depth=16)),
    Target("jpeg", "plate.jpg", _read_image_file, _image_seed(".jpg")),
)}


def _ply_bytes(arrays: GaussianArrays) -> bytes:
    names, matrix = table_from_arrays(arrays)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(matrix)}",
              *(f"property float {n}" for n in names), "end_header"]
    return ("\n".join(header) + "\n").encode() + matrix.astype("<f4").tobytes()


# --- shot.toml paths --------------------------------------------------------------------------------

def path_settings(cls: type = ShotConfig, where: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(table, key) of every setting the schema marks as a path inside the shot folder."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("table"):
            found += path_settings(hints[f.name], (*where, f.name))
        elif f.metadata.get("path"):
            found.append((".".join(where), f.name))
    return found


PATH_KEYS = path_settings()


def check_paths_inside(config: ShotConfig, source: Path) -> None:
    """Every relative path setting stays inside the shot folder under POSIX and Windows rules."""
    for table, key in PATH_KEYS:
        section = config
        for part in table.split("."):
            section = getattr(section, part)
        value = getattr(section, key)
        if not isinstance(value, str) or (table, key) == ("shot", "plates") and _absolute_anywhere(value):
            continue  # [shot] plates may be absolute by design; other keys are never absolute
        for flavour, module, root in (("posix", posixpath, "/shot"), ("windows", ntpath, "C:\\shot")):
            joined = module.normpath(module.join(root, value))
            inside = joined == root or joined.startswith(root + module.sep)
            if not inside:
                raise PathEscape(f"{source} [{table}] {key} = {value!r} escapes the shot folder on {flavour}: "
                                 f"{joined}")


def _absolute_anywhere(value: str) -> bool:
    return posixpath.isabs(value) or ntpath.isabs(value) or value.startswith("~")


# --- the fuzz tests ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdirs(tmp_path_factory) -> dict[str, Path]:
    """One folder per target with its context built (images, other model files)."""
    dirs = {}
    for target in TARGETS.values():
        root = tmp_path_factory.mktemp(target.name)
        (root / target.filename).parent.mkdir(parents=True, exist_ok=True)
        if target.context is not None:
            target.context(root)
        dirs[target.name] = root
    return dirs


@functools.cache
def seeds_of(name: str) -> list[bytes]:
    """The target's seed files, built once per session (not a fixture: hypothesis prints those)."""
    return TARGETS[name].seeds()


@pytest.mark.parametrize("name", list(TARGETS))
def test_seeds_are_valid(name, workdirs):
    """Every seed reads cleanly: mutations start from files the reader accepts."""
    target, root = TARGETS[name], workdirs[name]
    for data in seeds_of(name):
        (root / target.filename).write_bytes(data)
        target.read(root / target.filename)


@pytest.mark.parametrize("name", list(TARGETS))
@FUZZ
@given(data=st.data())
def test_mutated_files(name, workdirs, data):
    """Bit flips, truncations, inserted/deleted bytes and absurd integers in valid files."""
    target = TARGETS[name]
    seed = data.draw(st.sampled_from(seeds_of(name)), label="seed")
    if target.text and data.draw(st.booleans(), label="text-level"):
        blob = mutate_text(seed, data.draw(st.lists(text_mutation, min_size=1, max_size=4), label="text ops"))
    else:
        blob = mutate(seed, data.draw(st.lists(byte_mutation, min_size=1, max_size=4), label="ops"))
    check_read(target, workdirs[name], blob)


@pytest.mark.parametrize("name", ["spz"])
@FUZZ
@given(data=st.data())
def test_mutated_spz_payload(name, workdirs, data):
    """spz is gzip: mutate the decompressed header and body, then compress again."""
    raw = gzip.decompress(data.draw(st.sampled_from(seeds_of(name)), label="seed"))
    ops = data.draw(st.lists(byte_mutation, min_size=1, max_size=4), label="ops")
    check_read(TARGETS[name], workdirs[name], gzip.compress(mutate(raw, ops), mtime=0))


@pytest.mark.parametrize("name", ["ply_binary", "splat", "spz", "colmap_cameras_bin", "colmap_images_bin",
                                  "colmap_points3D_bin", "poses_bounds", "exr", "png", "jpeg"])
@FUZZ
@given(blob=st.binary(max_size=4096))
def test_random_bytes(name, workdirs, blob):
    check_read(TARGETS[name], workdirs[name], blob)


# --- structured garbage ---------------------------------------------------------------------------

_ply_type = st.sampled_from(["float", "double", "uchar", "char", "int", "uint", "short", "float32", "int8",
                             "list uchar int", "list int float", "half", "float64"])
_ply_name = st.sampled_from(["x", "y", "z", "nx", "f_dc_0", "f_dc_1", "f_dc_2", "f_rest_0", "f_rest_8",
                             "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
                             "red", "x", "vertex_indices"])


@st.composite
def ply_files(draw) -> bytes:
    """A PLY with a grammar-generated header (formats, counts, properties, elements) and random data."""
    fmt = draw(st.sampled_from(["binary_little_endian", "binary_big_endian", "ascii", "binary"]))
    lines = ["ply", f"format {fmt} 1.0"]
    for _ in range(draw(st.integers(1, 3))):
        element = draw(st.sampled_from(["vertex", "face", "camera"]))
        count = draw(st.one_of(st.integers(0, 8), st.sampled_from(ABSURD_INTS)))
        lines.append(f"element {element} {count}")
        if draw(st.booleans()):
            lines += [f"property float {n}" for n in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                                                      "scale_0", "scale_1", "scale_2", "rot_0", "rot_1",
                                                      "rot_2", "rot_3")]
        props = draw(st.lists(st.tuples(_ply_type, _ply_name), max_size=6))
        lines += [f"property {t} {n}" for t, n in props]
    lines.append("end_header")
    head = ("\n".join(lines) + "\n").encode()
    if fmt == "ascii":
        values = draw(st.lists(st.sampled_from(HOSTILE_TOKENS[:20] + ("0.5", "1", "-2")), max_size=120))
        return head + " ".join(values).encode("utf-8", "surrogateescape")
    return head + draw(st.binary(max_size=1024))


@FUZZ
@given(blob=ply_files())
def test_structured_ply(workdirs, blob):
    check_read(TARGETS["ply_binary"], workdirs["ply_binary"], blob)


@FUZZ
@given(version=st.sampled_from([0, 1, 2, 3, 4, 2**31]),
       count=st.one_of(st.integers(0, 64), st.sampled_from(ABSURD_INTS)),
       degree=st.integers(0, 255), bits=st.integers(0, 255), flags=st.integers(0, 255),
       magic=st.sampled_from([0x5053474E, 0x5053474F, 0]), body=st.binary(max_size=2048),
       wrap=st.sampled_from(["gzip", "raw", "NGSP"]))
def test_structured_spz(workdirs, version, count, degree, bits, flags, magic, body, wrap):
    raw = struct.pack("<IIIBBBB", magic, version, count % 2**32, degree, bits, flags, 0) + body
    blob = gzip.compress(raw, mtime=0) if wrap == "gzip" else (b"NGSP" + raw if wrap == "NGSP" else raw)
    check_read(TARGETS["spz"], workdirs["spz"], blob)


_colmap_token = st.one_of(st.sampled_from(HOSTILE_TOKENS), st.integers(-5, 5).map(str),
                          st.floats(allow_nan=True).map(repr), st.sampled_from(list(colmap.CAMERA_MODELS)))


@pytest.mark.parametrize("name", ["colmap_cameras_txt", "colmap_images_txt", "colmap_points3D_txt"])
@FUZZ
@given(lines=st.lists(st.lists(_colmap_token, max_size=14).map(" ".join), max_size=8))
def test_structured_colmap_text(name, workdirs, lines):
    check_read(TARGETS[name], workdirs[name], "\n".join(lines).encode("utf-8", "surrogateescape"))


@st.composite
def colmap_binary(draw, stem: str) -> bytes:
    """Binary COLMAP records with random ids, models, sizes, counts and values."""
    count = draw(st.one_of(st.integers(0, 3), st.sampled_from(ABSURD_INTS)))
    parts = [struct.pack("<Q", count % 2**64)]
    for _ in range(min(count, 3)):
        if stem == "cameras":
            parts.append(struct.pack("<iiQQ", draw(st.integers(-2**31, 2**31 - 1)), draw(st.integers(-1, 20)),
                                     draw(st.sampled_from(ABSURD_INTS)), draw(st.sampled_from(ABSURD_INTS))))
            parts += [struct.pack("<d", draw(st.floats())) for _ in range(draw(st.integers(0, 16)))]
        elif stem == "images":
            parts.append(struct.pack("<I7dI", draw(st.integers(0, 2**32 - 1)),
                                     *(draw(st.floats()) for _ in range(7)), draw(st.integers(0, 2**32 - 1))))
            parts.append(draw(st.binary(max_size=12)).replace(b"\0", b"") + draw(st.sampled_from([b"\0", b""])))
            n = draw(st.one_of(st.integers(0, 3), st.sampled_from(ABSURD_INTS)))
            parts.append(struct.pack("<Q", n % 2**64) + draw(st.binary(max_size=72)))
        else:
            parts.append(struct.pack("<q3d3Bd", draw(st.integers(-2**63, 2**63 - 1)),
                                     *(draw(st.floats()) for _ in range(3)),
                                     *(draw(st.integers(0, 255)) for _ in range(3)), draw(st.floats())))
            n = draw(st.one_of(st.integers(0, 3), st.sampled_from(ABSURD_INTS[:-4])))
            parts.append(struct.pack("<Q", n) + draw(st.binary(max_size=32)))
    return b"".join(parts)


@pytest.mark.parametrize("stem", ["cameras", "images", "points3D"])
@FUZZ
@given(data=st.data())
def test_structured_colmap_binary(stem, workdirs, data):
    name = f"colmap_{stem}_bin"
    check_read(TARGETS[name], workdirs[name], data.draw(colmap_binary(stem)))


_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                         st.sampled_from([0, -1, 10**400, -10**400, 2**63, 1e308]), st.text(max_size=8))
_json = st.recursive(_json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                           st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                     max_leaves=20)
_number = st.one_of(st.floats(), st.integers(), st.sampled_from([0, 0.0, -1, 10**400, 1e-320]), _json)
_matrix = st.one_of(
    st.lists(st.lists(_number, min_size=4, max_size=4), min_size=3, max_size=4),
    st.just([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]),
    _json,
)
_frame_keys = st.sampled_from(["fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "p1", "p2", "k3",
                               "camera_angle_x", "camera_angle_y", "camera_model", "mask_path"])


@st.composite
def transforms_json(draw) -> bytes:
    """transforms.json files: right keys, hostile values (and sometimes plain JSON garbage)."""
    if draw(st.integers(0, 9)) == 0:
        return json.dumps(draw(_json)).encode()
    frames = []
    for _ in range(draw(st.integers(0, 3))):
        frame = {"file_path": draw(st.one_of(st.sampled_from(["train/r_0", "./train/r_1.png", "train/r_2",
                                                              "../train/r_0", "", "train", "train/r_0\x00"]), _json)),
                 "transform_matrix": draw(_matrix)}
        frame.update(draw(st.dictionaries(_frame_keys, _number, max_size=4)))
        frames.append(frame)
    meta = {"frames": frames}
    meta.update(draw(st.dictionaries(st.sampled_from(["camera_angle_x", "fl_x", "w", "h", "camera_model",
                                                      "ply_file_path"]), _number, max_size=3)))
    if draw(st.booleans()):
        meta["camera_angle_x"] = draw(st.floats(-4, 4))
    return json.dumps(meta).encode()


@FUZZ
@given(blob=transforms_json())
def test_structured_transforms(workdirs, blob):
    check_read(TARGETS["transforms"], workdirs["transforms"], blob)


@st.composite
def npy_files(draw) -> bytes:
    """.npy files: real arrays of odd shapes/dtypes, or hand-written headers with absurd shapes."""
    if draw(st.booleans()):
        shape = tuple(draw(st.lists(st.integers(0, 20), max_size=3)))
        dtype = draw(st.sampled_from(["<f8", "<f4", ">f8", "<i8", "|u1", "<c16", "|b1", "<U3", "<M8[s]"]))
        buf = io.BytesIO()
        np.save(buf, np.zeros(shape, dtype=dtype))
        return buf.getvalue()
    shape = tuple(draw(st.lists(st.one_of(st.integers(0, 20), st.sampled_from(ABSURD_INTS[6:] + (10**7,))),
                                max_size=3)))
    descr = draw(st.sampled_from(["<f8", "<f4", "|O", "<f16", "x", "[('a', '<f8')]"]))
    order = draw(st.booleans())
    header = f"{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape!r}, }}"
    header = (header + " " * (64 - (10 + len(header) + 1) % 64) + "\n").encode("latin1")
    version = draw(st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"]))
    size = struct.pack("<H", len(header)) if version == b"\x01\x00" else struct.pack("<I", len(header))
    return b"\x93NUMPY" + version + size + header + draw(st.binary(max_size=512))


@FUZZ
@given(blob=npy_files())
def test_structured_npy(workdirs, blob):
    check_read(TARGETS["poses_bounds"], workdirs["poses_bounds"], blob)


_toml_scalar = st.one_of(st.booleans(), st.integers(min_value=-2**63, max_value=2**63 - 1),
                         st.floats(), st.text(max_size=10), st.sampled_from(["..", "../x", "/etc", "~", "a/../..",
                                                                             "\\x", "C:..\\x", "1001-1096"]))
_toml_value = st.one_of(_toml_scalar, st.lists(_toml_scalar, max_size=4),
                        st.lists(st.lists(st.floats(-10, 10), max_size=3), max_size=3))
_SCHEMA = [(info.table, info.key) for info in iter_settings()]


@st.composite
def shot_tomls(draw) -> bytes:
    """shot.toml files using the schema's real tables and keys (plus a stray one) with any values."""
    doc: dict = {}
    for table, key in draw(st.lists(st.sampled_from(_SCHEMA + [("train", "max_stepz"), ("nope", "x")]),
                                    max_size=6)):
        node = doc
        for part in table.split("."):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[key] = draw(_toml_value)
    return tomli_w.dumps(doc).encode()


@FUZZ
@given(blob=shot_tomls())
def test_structured_shot_toml(workdirs, blob):
    check_read(TARGETS["shot_toml"], workdirs["shot_toml"], blob)


_PATH_PARTS = st.sampled_from(["..", ".", "a", "plates", "", "~", "C:", "c:", "\\", "/", "\\\\", "//", "\x00",
                               "..\\", "../", "D:\\", "\u2024\u2024", "%2e%2e", "~user", " ", "...", "a\\..\\.."])


@FUZZ
@given(value=st.lists(_PATH_PARTS, min_size=1, max_size=6).map("".join),
       key=st.sampled_from([("render", "virtual_camera"), ("refine", "model"), ("comp", "ocio"),
                            ("fx.select", "masks"), ("solve", "import_cameras"), ("shot", "plates")]))
def test_shot_paths_cannot_escape(workdirs, value, key):
    """A path accepted from shot.toml never resolves outside the shot folder (POSIX rules; the
    Windows reading is checked too)."""
    table, name = key
    doc: dict = {}
    node = doc
    for part in table.split("."):
        node = node.setdefault(part, {})
    node[name] = value
    check_read(TARGETS["shot_toml"], workdirs["shot_toml"], tomli_w.dumps(doc).encode())


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@st.composite
def png_files(draw) -> bytes:
    """PNGs with valid CRCs and hostile IHDR fields (sizes, depths, colour types) and data."""
    width = draw(st.one_of(st.integers(0, 40), st.sampled_from([2**31 - 1, 2**32 - 1, 65535, 100000])))
    height = draw(st.one_of(st.integers(0, 40), st.sampled_from([2**31 - 1, 2**32 - 1, 65535, 100000])))
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 0, 3, 32]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, draw(st.sampled_from([0, 1, 2])))
    chunks = [_chunk(b"IHDR", ihdr)]
    if colour == 3 or draw(st.booleans()):
        chunks.append(_chunk(b"PLTE", draw(st.binary(max_size=48))))
    if draw(st.booleans()):
        chunks.append(_chunk(b"tRNS", draw(st.binary(max_size=8))))
    rows = draw(st.integers(0, 8))
    row_bytes = min(max(width * max(depth, 8) // 8 * 4, 1), 4096)
    raw = b"".join(bytes([draw(st.integers(0, 5))]) + bytes(row_bytes) for _ in range(rows))
    idat = zlib.compress(raw) if draw(st.booleans()) else draw(st.binary(max_size=256))
    chunks.append(_chunk(b"IDAT", idat))
    if draw(st.booleans()):
        chunks.append(_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


@FUZZ
@given(blob=png_files())
def test_structured_png(workdirs, blob):
    check_read(TARGETS["png"], workdirs["png"], blob)


# --- corpus replay ------------------------------------------------------------------------------------

#: Inputs of the reader bugs found by fuzzing (all fixed): file -> part of the clear error it must get.
CORPUS_ERRORS: dict[str, str] = {
    "colmap_points3D_bin/track_length_2_64_minus_1.bin": "claims a track of 18446744073709551615 observations",
    "colmap_points3D_txt/point_id_beyond_int64.txt": "line 1: POINT3D_ID 99999999999999999999 is outside",
    "colmap_points3D_txt/track_image_id_beyond_int64.txt": "line 1: track entry",
    "colmap_points3D_txt/track_image_id_minus_1.txt": "line 1: track entry (image id, point2D index) -1 is outside",
    "colmap_points3D_txt/rgb_300.txt": "line 1: colour value 300 is outside 0..255",
    "colmap_images_txt/point3D_id_beyond_int64.txt": "line 2: POINT3D_ID 99999999999999999999 is outside",
    "colmap_images_txt/zero_quaternion.txt": "image 'image000.png' (camera 1 of cameras.txt): camera has a zero or non-finite rotation quaternion",
    "colmap_cameras_txt/zero_width.txt": "image size must be positive",
    "colmap_cameras_txt/negative_focal.txt": "focal lengths must be positive",
    "poses_bounds/shape_claims_10_7_rows.npy": "header claims 10000000 rows (1360000000 bytes)",
    "poses_bounds/shape_claims_10_12_rows.npy": "header claims 1000000000000 rows",
    "poses_bounds/header_length_bit_flip.npy": "is not a readable .npy array",
    "poses_bounds/negative_focal.npy": "pose 0: image height, width and focal length must be positive",
    "poses_bounds/zero_pose.npy": "pose 0: image height, width and focal length must be positive",
    "transforms/camera_angle_x_zero.json": "frame 0: camera_angle_x must be a field of view in radians",
    "transforms/integer_beyond_float.json": "must be a finite number, not 1000000000",
    "transforms/matrix_integer_beyond_float.json": "frame 0: transform_matrix must be a finite",
    "transforms/nested_5000_deep.json": "malformed JSON: nested too deeply",
    "transforms/file_path_too_long.json": "cannot be looked up (File name too long)",
    "transforms/ply_file_path_too_long.json": "ply_file_path point cloud cannot be looked up (File name too long)",
    "shot_toml/windows_root_relative_path.toml": "[render] virtual_camera: must be relative to the shot folder",
    "shot_toml/windows_drive_relative_parent.toml": "[comp] ocio: must be relative to the shot folder without a drive",
    "png16/interlaced_empty_idat.png": "corrupt or unreadable PNG image: bytearray index out of range",
    "png/idat_length_2gib.png": "PNG chunk 'IDAT' at byte 33 claims 2,147,483,632 bytes",
}


def corpus_cases() -> list:
    return [pytest.param(path, id=f"{path.parent.name}/{path.name}")
            for path in sorted(CORPUS.glob("*/*")) if path.name != "README.md"]


@pytest.mark.parametrize("path", corpus_cases())
def test_corpus(path, tmp_path):
    """Replay a regression input: its reader succeeds or raises a clear SplatfxError, in bounds;
    the input of a fixed bug gets exactly the error recorded in ``CORPUS_ERRORS``."""
    target = TARGETS[path.parent.name]
    (tmp_path / target.filename).parent.mkdir(parents=True, exist_ok=True)
    if target.context is not None:
        target.context(tmp_path)
    error = check_read(target, tmp_path, path.read_bytes())
    expected = CORPUS_ERRORS.get(f"{path.parent.name}/{path.name}")
    if expected is not None:
        assert error is not None and expected in error, (expected, error)


def test_every_recorded_error_has_its_corpus_file():
    for key in CORPUS_ERRORS:
        assert (CORPUS / key).is_file(), key


# --- absurd sizes: memory stays bounded ---------------------------------------------------------------

ABSURD_PY_CASES = {
    # target: bytes whose header claims far more data than the file holds
    "ply_binary": b"ply\nformat binary_little_endian 1.0\nelement vertex 1099511627776\nproperty float x\nend_header\n"
                  + bytes(64),
    "ply_ascii": b"ply\nformat ascii 1.0\nelement vertex 1099511627776\nproperty float x\nend_header\n1 2 3\n",
    "spz": gzip.compress(struct.pack("<IIIBBBB", 0x5053474E, 3, 2**32 - 1, 3, 12, 0, 0) + bytes(256), mtime=0),
    "colmap_cameras_bin": struct.pack("<Q", 2**63) + bytes(64),
    "colmap_images_bin": struct.pack("<Q", 1) + struct.pack("<I7dI", 1, 1, 0, 0, 0, 0, 0, 0, 1) + b"a\0"
                         + struct.pack("<Q", 2**60) + bytes(48),
    "colmap_points3D_bin": struct.pack("<Q", 2**62) + bytes(51),
}


@pytest.mark.parametrize("name", list(ABSURD_PY_CASES))
def test_absurd_sizes_stay_bounded(name, workdirs):
    """A header claiming terabytes is refused from the file size, without allocating it."""
    target = TARGETS[name]
    assert check_read(target, workdirs[target.name], ABSURD_PY_CASES[name]) is not None


_RSS_CHILD = textwrap.dedent("""
    import json, resource, sys
    from splatfx.core.errors import SplatfxError
    from splatfx.io.images import image_size, read_image
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = {}
    for path in sys.argv[1:]:
        for read in (image_size, read_image):
            try:
                read(path)
                results[f"{path} {read.__name__}"] = "ok"
            except SplatfxError as exc:
                results[f"{path} {read.__name__}"] = "error: " + str(exc)
            except BaseException as exc:
                results[f"{path} {read.__name__}"] = "BUG " + type(exc).__name__ + ": " + str(exc)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"grew_kib": after - before, "results": results}))
""")


def _exr_with_windows(path: Path, box: tuple[int, int, int, int]) -> None:
    """A valid tiny EXR whose dataWindow and displayWindow are rewritten to ``box``."""
    write_exr(path, pack_rgba(np.zeros((2, 2, 3), np.float32)), compression="none")
    data = bytearray(path.read_bytes())
    for attribute in (b"dataWindow\0box2i\0", b"displayWindow\0box2i\0"):
        at = data.index(attribute) + len(attribute) + 4
        data[at:at + 16] = struct.pack("<iiii", *box)
    path.write_bytes(bytes(data))


def _png_header_only(path: Path, width: int, height: int, depth: int) -> None:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    idat = zlib.compress(bytes(4096))  # a few kilobytes of the gigabytes claimed
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def _jpeg_claiming(path: Path, width: int, height: int) -> None:
    write_jpeg(path, crop_pixels())
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))


def test_absurd_image_headers_stay_bounded(tmp_path):
    """PNG, 16-bit PNG, JPEG and EXR headers claiming giant images: a clear error, and the
    child process reading them grows by less than 200 MiB (C allocations included)."""
    files = [tmp_path / "huge8.png", tmp_path / "huge16.png", tmp_path / "huge.jpg",
             tmp_path / "huge.exr", tmp_path / "inverted.exr"]
    _png_header_only(files[0], 2**31 - 1, 2**31 - 1, 8)
    _png_header_only(files[1], 60000, 60000, 16)
    _jpeg_claiming(files[2], 65535, 65535)
    _exr_with_windows(files[3], (0, 0, 2**30, 2**30))
    _exr_with_windows(files[4], (0, 0, -5, -5))
    done = subprocess.run([sys.executable, "-c", _RSS_CHILD, *map(str, files)], capture_output=True, text=True,
                          timeout=120)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report["results"]) == 2 * len(files)
    for key, result in report["results"].items():
        assert result.startswith("error: ") and Path(key.split()[0]).name in result, (key, result)
    assert report["grew_kib"] < 200 * 1024, report


@pytest.mark.parametrize("name", ["bomb.png", "bomb16.png", "bomb.jpg", "bomb.exr"])
def test_every_decoder_refuses_decompression_bombs(name, tmp_path, monkeypatch):
    """One pixel limit, ``imageio.MAX_IMAGE_PIXELS``, for every format and decoder (Pillow,
    pypng, OpenEXR): ``image_size`` and ``read_image`` refuse an image above it (the limit is
    lowered here so the bomb can stay small) and read it once the limit allows."""
    path = tmp_path / name
    pixels = crop_pixels()  # 32 x 24 = 768 pixels
    write_image(path, pixels, bit_depth=16 if "16" in name else 8)
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 767)
    for read in (image_size, read_image):
        with pytest.raises(SplatfxError, match="32x24 = 768 pixels.*decompression bomb") as err:
            read(path)
        assert path.name in str(err.value)
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 768)
    assert read_image(path).pixels.shape[:2] == (24, 32)


def test_dataset_load_refuses_decompression_bombs(tmp_path, monkeypatch):
    """A transforms.json giving ``w``/``h`` skips the header check at open; decoding the frame
    still applies the pixel limit (to a 16-bit PNG, which pypng decodes)."""
    write_png(tmp_path / "r_0.png", crop_pixels(), bit_depth=16)
    c2w = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]
    meta = {"fl_x": 30.0, "w": 32, "h": 24, "frames": [{"file_path": "r_0.png", "transform_matrix": c2w}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    dataset = load_dataset(tmp_path, split="all")
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 767)
    with pytest.raises(SplatfxError, match=r"r_0\.png: is 32x24 = 768 pixels.*decompression bomb"):
        dataset.load(0)
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 768)
    assert dataset.image(0).shape == (24, 32, 3)
