"""Captures for training and evaluation: frames (image + camera), a split, optional sparse points.

:func:`load_dataset` recognises three layouts (see ``docs/data.md``):

* NeRF / nerfstudio / instant-ngp ``transforms.json`` or ``transforms_{train,val,test}.json``;
* a COLMAP project: ``sparse/0`` (or ``sparse``) with cameras and images, photos in ``images/``;
* LLFF: ``poses_bounds.npy`` with photos in ``images_N/`` (``images_8`` by default).

Opening a capture reads only its camera files (and one image header where a size is needed);
pixels are decoded one frame at a time by :meth:`Dataset.load`, through a small LRU cache with a
byte budget, so a capture of a thousand 4K frames never sits in memory. Frames are decoded at the
size the dataset delivers (JPEGs straight at a reduced scale), so a downscaled capture of 12-MP
stills never makes a full-size array.
"""

from __future__ import annotations

import json
import math
import os
import tokenize
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, overload

import numpy as np
from PIL import Image as PILImage

from splatfx.io import colmap
from splatfx.core.camera import Camera
from splatfx.core.errors import ConfigError, InputError, require_dir, require_file
from splatfx.io.formats.ply import read_vertex_table
from splatfx.core.color import from_uint8
from splatfx.io.images import IMAGE_SUFFIXES, JPEG_SUFFIXES, image_size, read_image

PathLike = str | os.PathLike[str]
SPLITS = ("train", "test", "val", "all")
LAYOUTS = ("transforms", "colmap", "llff")
DEFAULT_HOLDOUT_EVERY = 8  # the LLFF / mip-NeRF 360 protocol: sorted names 0, 8, 16, … are test
DEFAULT_CACHE_BYTES = 256 * 2**20
DEFAULT_LLFF_IMAGES = "images_8"
DEFAULT_COLMAP_IMAGES = "images"
SPLIT_FILES = {s: f"transforms_{s}.json" for s in ("train", "val", "test")}
COLMAP_MODEL_DIRS = ("sparse/0", "sparse", ".")
_BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
_ROTATION_TOLERANCE = 1e-3  # float-rounded rotations are fixed up; anything further off is refused


@dataclass(frozen=True)
class Frame:
    """One view: its image file, its camera at the size the dataset delivers, and extras.

    ``source_size`` is the ``(width, height)`` the image file must have; it differs from
    the camera's size only when the dataset downscales on load.
    """

    name: str
    image_path: Path
    camera: Camera
    source_size: tuple[int, int]
    mask_path: Path | None = None  # per-pixel weight image: 0 = ignore the pixel, 1 = use it
    near: float | None = None
    far: float | None = None


@dataclass(frozen=True)
class SparsePoints:
    """Structure-from-motion points: positions (M,3) float32 and colours (M,3) uint8."""

    xyz: np.ndarray
    rgb: np.ndarray

    def __len__(self) -> int:
        return len(self.xyz)


@dataclass(frozen=True)
class FrameImage:
    """Decoded pixels of one frame, all at the camera's size.

    ``rgb`` (H,W,3) float32 is composited onto the dataset's background where the image has
    alpha; ``alpha`` (H,W) is that alpha (None for opaque images); ``mask`` (H,W) is the
    frame's mask file (None when it has none).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    mask: np.ndarray | None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.rgb, self.alpha, self.mask) if a is not None)


class _LRU:
    """Least-recently-used cache of decoded frames, bounded by their total bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.items: OrderedDict[int, FrameImage] = OrderedDict()
        self.used = 0

    def get(self, key: int) -> FrameImage | None:
        item = self.items.get(key)
        if item is not None:
            self.items.move_to_end(key)
        return item

    def put(self, key: int, item: FrameImage) -> None:
        if item.nbytes > self.budget or key in self.items:
            return
        self.items[key] = item
        self.used += item.nbytes
        while self.used > self.budget:
            _, old = self.items.popitem(last=False)
            self.used -= old.nbytes


class Dataset(Sequence[Frame]):
    """The frames of one split of a capture, with lazily decoded images.

    ``dataset[i]`` is a :class:`Frame` (cameras and paths, no pixels); ``dataset.image(i)``
    decodes the picture when asked. Images are returned as stored, only normalised to [0, 1]
    (sRGB-encoded for PNG/JPEG, as 3DGS trains on them); RGBA images are composited onto
    ``background`` and their alpha is kept separately.
    """

    def __init__(self, frames: Sequence[Frame], *, source: PathLike, layout: str, split: str,
                 points: SparsePoints | None = None, background: Sequence[float] = (0.0, 0.0, 0.0),
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.frames = list(frames)
        self.source = Path(source)
        self.layout = layout
        self.split = split
        self.points = points
        self.background = np.asarray(background, dtype=np.float32).reshape(3)
        self._cache = _LRU(cache_bytes)

    # --- sequence ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frames)

    @overload
    def __getitem__(self, i: int) -> Frame: ...

    @overload
    def __getitem__(self, i: slice) -> list[Frame]: ...

    def __getitem__(self, i: int | slice) -> Frame | list[Frame]:
        return self.frames[i]

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)

    @property
    def cameras(self) -> list[Camera]:
        return [f.camera for f in self.frames]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.frames]

    @property
    def plate_names(self) -> list[str]:
        """The frames' image file names: the keys of per-plate tables such as ``exposure.json``."""
        return [f.image_path.name for f in self.frames]

    def camera_extent(self) -> float:
        """1.1 × the largest distance of a camera centre from their mean (3DGS's scene extent)."""
        centers = np.stack([c.center for c in self.cameras])
        return 1.1 * float(np.linalg.norm(centers - centers.mean(axis=0), axis=1).max())

    def summary(self) -> str:
        """One line: where, which layout and split, how many frames, their size, the points."""
        sizes = sorted({(f.camera.width, f.camera.height) for f in self.frames})
        size = ", ".join(f"{w}x{h}" for w, h in sizes) or "no frames"
        points = f", {len(self.points)} sparse points" if self.points is not None else ""
        return f"{self.source}: {self.layout}, {self.split} split, {len(self)} frames, {size}{points}"

    # --- pixels -----------------------------------------------------------------------------
    def load(self, i: int) -> FrameImage:
        """Decode frame ``i`` (or take it from the cache): composited rgb, alpha and mask."""
        cached = self._cache.get(i)
        if cached is not None:
            return cached
        frame = self.frames[i]
        item = _decode_frame(frame, self.background)
        self._cache.put(i, item)
        return item

    def image(self, i: int) -> np.ndarray:
        """Frame ``i``'s pixels, float32 (H,W,3), RGBA composited onto the background."""
        return self.load(i).rgb

    def alpha(self, i: int) -> np.ndarray | None:
        """Frame ``i``'s alpha (H,W) float32, or None when its image is opaque (no alpha)."""
        return self.load(i).alpha

    def mask(self, i: int) -> np.ndarray | None:
        """Frame ``i``'s mask (H,W) float32 in [0, 1], or None when it has no mask file."""
        return self.load(i).mask

    def downscaled(self, factor: float) -> "Dataset":
        """The same frames delivered at 1/``factor`` of their image files' size (cameras
        resized to match), with an empty cache of the same budget."""
        if not factor >= 1:
            raise ConfigError("downscale", f"must be ≥ 1 (images are only ever shrunk), not {factor!r}")
        frames = [_downscaled(f, factor) for f in self.frames]
        return Dataset(frames, source=self.source, layout=self.layout, split=self.split, points=self.points,
                       background=self.background, cache_bytes=self._cache.budget)

    def validate(self) -> None:
        """Check every image and mask header against its camera, without decoding pixels.

        Run this before long work (training): it finds missing, unreadable and odd-sized
        files in seconds rather than hours in.
        """
        for frame in self.frames:
            for path in (frame.image_path, frame.mask_path):
                if path is not None:
                    _check_size(path, image_size(path), frame.source_size)


def _check_size(path: Path, size: tuple[int, int], expected: tuple[int, int]) -> None:
    if size != expected:
        raise InputError(path, f"is {size[0]}x{size[1]} but its camera expects {expected[0]}x{expected[1]}; "
                               "every image of a capture must have its camera's size")


# --------------------------------------------------------------------------- decoding


def _read_pixels(path: Path) -> tuple[np.ndarray, bool]:
    """Float32 (H,W,C) pixels of an image and whether its colour is premultiplied (EXR)."""
    image = read_image(path)
    return image.pixels, image.encoding == "linear"


def _read_jpeg_reduced(path: Path, source_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray | None:
    """A JPEG decoded straight at a reduced scale (libjpeg's 1/2, 1/4 or 1/8 DCT scaling, never
    below ``size``), float32 (H,W,C); None when that does not apply (not a JPEG, not reduced
    by 2 or more, an odd mode, or any decoding trouble, which the full decoder then reports).

    A 12-MP still at a quarter of its size decodes ten times faster this way, and no
    full-size array is ever made (measured in docs/train.md).
    """
    if path.suffix.lower() not in JPEG_SUFFIXES or size[0] * 2 > source_size[0] or size[1] * 2 > source_size[1]:
        return None
    try:
        with PILImage.open(path) as im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L") or im.size != source_size:
                return None
            im.draft(im.mode, size)
            codes = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception:  # noqa: BLE001 - the full decoder names the file and the problem
        return None
    return from_uint8(codes)


def _decode_frame(frame: Frame, background: np.ndarray) -> FrameImage:
    size = (frame.camera.width, frame.camera.height)
    if frame.mask_path is None and (reduced := _read_jpeg_reduced(frame.image_path, frame.source_size, size)) is not None:
        return FrameImage(_resize(reduced, size).astype(np.float32, copy=False), None, None)
    pixels, premultiplied = _read_pixels(frame.image_path)
    _check_size(frame.image_path, (pixels.shape[1], pixels.shape[0]), frame.source_size)
    channels = pixels.shape[2]
    colour = pixels[..., :3] if channels >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    alpha = pixels[..., -1] if channels in (2, 4) else None
    if alpha is not None:
        weight = alpha[..., None]
        colour = (colour if premultiplied else colour * weight) + background * (1.0 - weight)
    mask = None
    if frame.mask_path is not None:
        mask_pixels, _ = _read_pixels(frame.mask_path)
        _check_size(frame.mask_path, (mask_pixels.shape[1], mask_pixels.shape[0]), frame.source_size)
        mask = mask_pixels[..., 0]
    return FrameImage(
        _resize(colour, size).astype(np.float32, copy=False),
        None if alpha is None else _resize(alpha, size).astype(np.float32, copy=False),
        None if mask is None else _resize(mask, size).astype(np.float32, copy=False),
    )


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average (box filter) resample of (H,W) or (H,W,C) float pixels to ``size`` (w, h)."""
    if (pixels.shape[1], pixels.shape[0]) == size:
        return pixels
    planes = pixels[..., None] if pixels.ndim == 2 else pixels
    out = np.stack([np.asarray(PILImage.fromarray(np.ascontiguousarray(planes[..., c], np.float32), mode="F")
                               .resize(size, PILImage.Resampling.BOX)) for c in range(planes.shape[2])], axis=2)
    return out[..., 0] if pixels.ndim == 2 else out


# --------------------------------------------------------------------------- loading


def load_dataset(path: PathLike, split: str = "train", *, background: Sequence[float] | float | str | None = None,
                 images: str | None = None, holdout_every: int = DEFAULT_HOLDOUT_EVERY, downscale: float = 1,
                 layout: str | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES) -> Dataset:
    """Open a capture folder, recognising its layout, and return one split of it.

    ``split`` is "train", "test", "all", or "val" (NeRF-synthetic captures only). Captures
    without split files hold out every ``holdout_every``-th image by sorted name as test (0: none).
    ``images`` names the image folder (COLMAP: "images", LLFF: "images_8" by default);
    ``downscale`` resamples images (and cameras) by that factor on load. ``background``
    ("white", "black", a grey level or an RGB triple) is what RGBA images are composited
    onto; by default white for NeRF-synthetic ``transforms_*.json`` captures, black otherwise.
    """
    root = require_dir(path, "capture folder")
    if split not in SPLITS:
        raise ConfigError("split", f"must be one of {', '.join(SPLITS)}, not {split!r}")
    if not isinstance(holdout_every, int) or holdout_every < 0:
        raise ConfigError("holdout_every", f"must be a whole number ≥ 0 (0: no test images), not {holdout_every!r}")
    if not downscale >= 1:
        raise ConfigError("downscale", f"must be ≥ 1 (images are only ever shrunk), not {downscale!r}")
    layout = detect_layout(root) if layout is None else layout
    if layout not in LAYOUTS:
        raise ConfigError("layout", f"must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    if layout == "transforms":
        if images is not None:
            raise ConfigError("images", "applies to COLMAP and LLFF captures; transforms.json names its images")
        frames, points, synthetic = _load_transforms(root, split, holdout_every)
        default_background = "white" if synthetic else "black"
    elif layout == "colmap":
        frames, points = _load_colmap(root, images or DEFAULT_COLMAP_IMAGES, split, holdout_every)
        default_background = "black"
    else:
        frames, points = _load_llff(root, images or DEFAULT_LLFF_IMAGES, split, holdout_every)
        default_background = "black"
    if downscale != 1:
        frames = [_downscaled(f, downscale) for f in frames]
    bg = parse_background(default_background if background is None else background)
    return Dataset(frames, source=root, layout=layout, split=split, points=points, background=bg,
                   cache_bytes=cache_bytes)


def parse_background(value: Sequence[float] | float | str) -> tuple[float, float, float]:
    """An RGB background from "white"/"black", one grey level, or three values in [0, 1] ("R,G,B" too)."""
    if isinstance(value, str) and "," in value:  # "R,G,B" from a command line or shot.toml
        value = value.split(",")
    if isinstance(value, str):
        if value.lower() not in _BACKGROUNDS:
            raise ConfigError("background", f"must be white, black, a grey level or R,G,B, not {value!r}")
        return _BACKGROUNDS[value.lower()]
    try:
        rgb = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        rgb = np.zeros(0)
    if rgb.size == 1:
        rgb = np.repeat(rgb, 3)
    if rgb.size != 3 or not np.all((rgb >= 0) & (rgb <= 1)):
        raise ConfigError("background", f"must be one grey level or three values in [0, 1], not {value!r}")
    return (float(rgb[0]), float(rgb[1]), float(rgb[2]))


def colmap_model_dir(root: Path) -> Path | None:
    """The first of ``sparse/0``, ``sparse`` or ``root`` that holds COLMAP cameras and images."""
    for rel in COLMAP_MODEL_DIRS:
        if colmap.is_model(root / rel):
            return root / rel  # Path drops "." components
    return None


def detect_layout(root: Path) -> str:
    """"transforms", "colmap" or "llff"; InputError saying what was looked for otherwise."""
    if (root / "transforms.json").is_file() or any((root / f).is_file() for f in SPLIT_FILES.values()):
        return "transforms"
    if colmap_model_dir(root) is not None:
        return "colmap"
    if (root / "poses_bounds.npy").is_file():
        return "llff"
    looked_for = ("transforms.json, transforms_train.json, cameras+images(.bin|.txt) in sparse/0, sparse "
                  "or the folder itself, poses_bounds.npy")
    if _has_images(root):
        raise InputError(root, f"has images but no cameras (looked for {looked_for}); "
                               "run `splatfx solve` to compute them")
    raise InputError(root, f"is not a capture: found none of {looked_for}")


def _has_images(root: Path) -> bool:
    folders = [root, *(p for p in root.iterdir() if p.is_dir() and p.name.startswith("images"))]
    return any(_image_files(d) for d in folders)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _split_indices(names: Sequence[str], split: str, holdout_every: int, source: Path) -> list[int]:
    """Indices, in sorted-name order, of one split: every ``holdout_every``-th sorted name is test."""
    if split == "val":
        raise InputError(source, "has no val split (only NeRF-synthetic transforms_val.json captures do); "
                                 "use train, test or all")
    order = sorted(range(len(names)), key=lambda i: names[i])
    test = set(order[::holdout_every]) if holdout_every > 0 else set()
    if split == "all":
        return order
    return [i for i in order if (i in test) == (split == "test")]


def _downscaled(frame: Frame, factor: float) -> Frame:
    w, h = frame.source_size
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return replace(frame, camera=frame.camera.resized(*size))


def _orthonormalised(camera: Camera, source: Path, what: str) -> Camera:
    """The camera with its rotation snapped to the nearest rotation (poses stored as float32).

    Refuses rotations that are scaled, sheared or mirrored beyond float rounding.
    """
    u, s, vt = np.linalg.svd(camera.R)
    R = u @ vt
    if np.linalg.det(R) < 0 or np.abs(s - 1).max() > _ROTATION_TOLERANCE:
        raise InputError(source, f"{what}: rotation is not orthonormal (singular values {np.round(s, 4).tolist()}, "
                                 f"det {np.linalg.det(camera.R):.3g}); scaled or mirrored poses are not supported")
    return camera.with_pose(R, -R @ camera.center)


def _rescaled_to_images(cameras: list[Camera], first_image: Path, source: Path) -> list[Camera]:
    """Cameras rescaled to the size of the images actually on disk (first image's header)."""
    w, h = image_size(first_image)
    cam = cameras[0]
    if (w, h) == (cam.width, cam.height):
        return cameras
    sx, sy = w / cam.width, h / cam.height
    if abs(sx / sy - 1) > 0.01:
        raise InputError(first_image, f"is {w}x{h} but {source.name} describes {cam.width}x{cam.height} images: "
                                      "the aspect ratios differ, so these are not the same pictures")
    return [c.resized(round(c.width * sx), round(c.height * sy)) for c in cameras]


# --------------------------------------------------------------------------- COLMAP


def _load_colmap(root: Path, images: str, split: str, holdout_every: int
                 ) -> tuple[list[Frame], SparsePoints | None]:
    model_dir = colmap_model_dir(root)
    if model_dir is None:
        raise InputError(root, "has no COLMAP model (cameras and images .bin/.txt in sparse/0 or sparse)")
    model = colmap.read_model_cameras(model_dir)
    if not model.names:
        raise InputError(model.images_file, "has no registered images")
    image_dir = require_dir(root / images, "image folder")
    for name in model.names:
        if not (image_dir / name).is_file():
            raise InputError(model.images_file, f"image {name!r} is not in {image_dir}")
    names = model.names
    cameras = _rescaled_to_images(model.cameras, image_dir / names[0], model.cameras_file)
    frames = [Frame(names[i], image_dir / names[i], cameras[i], (cameras[i].width, cameras[i].height))
              for i in _split_indices(names, split, holdout_every, root)]
    return frames, _colmap_points(model_dir)


def _colmap_points(model_dir: Path) -> SparsePoints | None:
    path = colmap.find_model_file(model_dir, "points3D")
    if path is None:
        return None
    points = colmap.read_points3D(path)
    return SparsePoints(points.xyz.astype(np.float32), points.rgb.copy())


# --------------------------------------------------------------------------- LLFF


def _load_llff(root: Path, images: str, split: str, holdout_every: int) -> tuple[list[Frame], SparsePoints | None]:
    poses_path = root / "poses_bounds.npy"
    poses = _read_poses_bounds(poses_path)
    image_dir = root / images
    if not image_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("images"))
        raise InputError(image_dir, f"image folder does not exist (found: {', '.join(found) or 'none'}; "
                                    "choose one with images=...)")
    files = _image_files(image_dir)
    if len(files) != len(poses):
        raise InputError(poses_path, f"has {len(poses)} poses but {image_dir} has {len(files)} images")
    w, h = image_size(files[0])
    full_h, full_w = poses[0, 4], poses[0, 9]
    if abs((w / full_w) / (h / full_h) - 1) > 0.01:
        raise InputError(files[0], f"is {w}x{h} but {poses_path.name} describes {full_w:g}x{full_h:g} images: "
                                   "the aspect ratios differ")
    names = [f.name for f in files]
    frames = []
    for i in _split_indices(names, split, holdout_every, root):
        try:
            camera = _orthonormalised(Camera.from_llff(poses[i, :15], w, h), poses_path, f"pose {i}")
        except ValueError as exc:  # Camera's checks: size, focal length, finite values
            raise InputError(poses_path, f"pose {i}: {exc}") from None
        frames.append(Frame(names[i], files[i], camera, (w, h), near=float(poses[i, 15]), far=float(poses[i, 16])))
    model_dir = root / "sparse" / "0"
    return frames, _colmap_points(model_dir) if model_dir.is_dir() else None


# What numpy's .npy header parser raises for damaged headers (it tokenizes and literal-evals them).
_NPY_ERRORS = (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError)


def _read_poses_bounds(path: Path) -> np.ndarray:
    """The (N, 17) array, its header checked against the file size before any data is read."""
    try:
        with open(path, "rb") as fh:
            shape, dtype = _npy_header(fh)
            if len(shape) != 2 or shape[1] != 17 or shape[0] < 1:
                raise InputError(path, f"has shape {shape}, expected (N, 17): a 3x5 pose and near, far per image")
            if dtype.kind not in "fiu":
                raise InputError(path, f"holds {dtype} values, expected numbers")
            claimed, available = shape[0] * 17 * dtype.itemsize, os.fstat(fh.fileno()).st_size - fh.tell()
            if claimed > available:
                raise InputError(path, f"is truncated or corrupt: its header claims {shape[0]} rows "
                                       f"({claimed} bytes) but {available} bytes follow it")
            fh.seek(0)
            poses = np.lib.format.read_array(fh, allow_pickle=False)
    except _NPY_ERRORS as exc:
        raise InputError(path, f"is not a readable .npy array: {' '.join(str(exc).split())}") from None
    poses = poses.astype(np.float64)
    if not np.isfinite(poses).all():
        raise InputError(path, "has non-finite values")
    bad = np.flatnonzero((poses[:, [4, 9, 14]] <= 0).any(axis=1))  # hwf: image height, width, focal
    if bad.size:
        raise InputError(path, f"pose {bad[0]}: image height, width and focal length must be positive, "
                               f"got {poses[bad[0], [4, 9, 14]].tolist()}")
    return poses


# --------------------------------------------------------------------------- transforms.json


_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "k3", "p1", "p2",
                   "camera_angle_x", "camera_angle_y", "camera_model")
_UNSUPPORTED_MODELS = ("OPENCV_FISHEYE", "EQUIRECTANGULAR")
_IMAGE_NAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr", ".PNG", ".JPG", ".JPEG", ".EXR")  # file_path may omit it


def _load_transforms(root: Path, split: str, holdout_every: int
                     ) -> tuple[list[Frame], SparsePoints | None, bool]:
    """Frames, points and whether the capture is NeRF-synthetic style (``camera_angle_x``)."""
    if any((root / f).is_file() for f in SPLIT_FILES.values()):
        wanted = ("train", "val", "test") if split == "all" else (split,)
        paths = [root / SPLIT_FILES[s] for s in wanted if split != "all" or (root / SPLIT_FILES[s]).is_file()]
        frames: list[Frame] = []
        metas = []
        for p in paths:
            meta = _read_json(require_file(p, f"{p.stem.split('_')[-1]} split file"))
            metas.append(meta)
            frames += _transforms_frames(p, meta, root)
        return frames, _ply_points(paths[0], metas[0]), "camera_angle_x" in metas[0]
    path = root / "transforms.json"
    meta = _read_json(path)
    frames = _transforms_frames(path, meta, root)
    keep = _split_indices([f.name for f in frames], split, holdout_every, root)
    return [frames[i] for i in keep], _ply_points(path, meta), "camera_angle_x" in meta


def _npy_header(fh: BinaryIO) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` from a .npy header (format 1.0 or 2.0), leaving ``fh`` at the data."""
    version = np.lib.format.read_magic(fh)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported (1.0 or 2.0)")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(fh)
    return shape, dtype


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"malformed JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except UnicodeDecodeError:
        raise InputError(path, "is not UTF-8 text") from None
    except RecursionError:
        raise InputError(path, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise InputError(path, f"malformed JSON: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise InputError(path, 'has no "frames" list')
    return data


def _transforms_frames(path: Path, meta: dict[str, Any], root: Path) -> list[Frame]:
    base = {k: meta[k] for k in _INTRINSIC_KEYS if k in meta}
    first_size: tuple[int, int] | None = None
    frames = []
    for i, entry in enumerate(meta["frames"]):
        if not isinstance(entry, dict) or "file_path" not in entry or "transform_matrix" not in entry:
            raise InputError(path, f"frame {i} needs file_path and transform_matrix")
        image = _resolve_image(path, root, str(entry["file_path"]), i)
        values = {**base, **{k: entry[k] for k in _INTRINSIC_KEYS if k in entry}}
        if "w" in values and "h" in values:
            size = (_number(path, i, values, "w", int), _number(path, i, values, "h", int))
        else:
            first_size = first_size or image_size(image)  # NeRF-synthetic: size from the first image
            size = first_size
        camera = _transforms_camera(path, i, values, size, _matrix(path, i, entry["transform_matrix"]))
        mask = _resolve_image(path, root, str(entry["mask_path"]), i) if entry.get("mask_path") else None
        name = Path(os.path.relpath(image, root)).as_posix()
        frames.append(Frame(name, image, camera, size, mask))
    return frames


def _number(path: Path, i: int, values: dict[str, Any], key: str, kind: type = float) -> Any:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        raise InputError(path, f"frame {i}: {key} must be a finite number, not {_short(value)}")
    return kind(value)


def _finite(value: int | float) -> bool:
    """``math.isfinite`` that says False for integers beyond float range (JSON allows ``10**400``)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about huge values."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _angle(path: Path, i: int, values: dict[str, Any], key: str) -> float:
    """A field of view in radians, strictly between 0 and pi (its tangent gives the focal length)."""
    angle = _number(path, i, values, key)
    if not 0 < angle < math.pi:
        raise InputError(path, f"frame {i}: {key} must be a field of view in radians between 0 and pi, "
                               f"not {angle!r}")
    return angle


def _matrix(path: Path, i: int, value: Any) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: integers beyond float range
        m = np.zeros(0)
    if m.shape not in ((4, 4), (3, 4)) or not np.isfinite(m).all():
        raise InputError(path, f"frame {i}: transform_matrix must be a finite 4x4 (or 3x4) matrix")
    return m


def _transforms_camera(path: Path, i: int, values: dict[str, Any], size: tuple[int, int],
                       c2w: np.ndarray) -> Camera:
    """A camera from merged file- and frame-level intrinsics and an OpenGL camera-to-world."""
    model = values.get("camera_model", "OPENCV")
    if model in _UNSUPPORTED_MODELS:
        raise InputError(path, f"frame {i}: camera_model {model} is not supported (pinhole/OpenCV only)")
    w, h = size
    if "fl_x" in values:
        fx = _number(path, i, values, "fl_x")
        fy = _number(path, i, values, "fl_y") if "fl_y" in values else fx
    elif "camera_angle_x" in values:
        fx = 0.5 * w / math.tan(0.5 * _angle(path, i, values, "camera_angle_x"))
        fy = 0.5 * h / math.tan(0.5 * _angle(path, i, values, "camera_angle_y")) if "camera_angle_y" in values else fx
    else:
        raise InputError(path, f"frame {i}: no focal length (fl_x or camera_angle_x)")
    cx = _number(path, i, values, "cx") if "cx" in values else w / 2.0
    cy = _number(path, i, values, "cy") if "cy" in values else h / 2.0
    dist = np.array([_number(path, i, values, k) if k in values else 0.0 for k in ("k1", "k2", "p1", "p2", "k3")])
    try:
        camera = Camera.from_opengl_c2w(c2w, w, h, fx, fy, cx, cy, dist)
    except ValueError as exc:
        raise InputError(path, f"frame {i}: {exc}") from None
    return _orthonormalised(camera, path, f"frame {i}")


def _resolve_image(path: Path, root: Path, file_path: str, i: int) -> Path:
    """The image a frame's ``file_path`` names, relative to the JSON file; the suffix may be left out."""
    candidate = (path.parent / file_path)
    suffixes = _IMAGE_NAME_SUFFIXES if candidate.name else ()
    try:
        for option in (candidate, *(candidate.with_name(candidate.name + s) for s in suffixes)):
            if option.is_file():
                return option
    except OSError as exc:  # e.g. ENAMETOOLONG, EACCES: is_file() only swallows "not found"
        raise InputError(path, f"frame {i}: image {file_path!r} cannot be looked up ({exc.strerror})") from None
    raise InputError(path, f"frame {i}: image {file_path!r} not found (looked for {candidate} "
                           "with and without an image suffix)")


def _ply_points(path: Path, meta: dict[str, Any]) -> SparsePoints | None:
    """nerfstudio's ``ply_file_path``: sparse points already in the transforms' world frame."""
    rel = meta.get("ply_file_path")
    if not rel:
        return None
    ply_path = require_file(path.parent / str(rel), "ply_file_path point cloud")
    vertices = read_vertex_table(ply_path).data
    missing = [k for k in ("x", "y", "z", "red", "green", "blue") if k not in (vertices.dtype.names or ())]
    if missing:
        raise InputError(ply_path, f"point cloud vertices lack {', '.join(missing)}")
    xyz = np.stack([vertices[k] for k in ("x", "y", "z")], axis=1).astype(np.float32)
    rgb = np.stack([vertices[k] for k in ("red", "green", "blue")], axis=1).astype(np.uint8)
    return SparsePoints(xyz, rgb)
