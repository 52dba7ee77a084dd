"""Still images in and out: PNG (8/16-bit), JPEG and OpenEXR (single- and multi-layer).

In memory an image is a float32 ``H x W x C`` array. Readers return samples as
stored, only normalised (8-bit codes / 255, 16-bit codes / 65535, EXR floats as they
are) and say whether the data is sRGB-encoded (``"srgb"``: PNG, JPEG) or scene-linear
(``"linear"``: EXR); converting between the two is the caller's explicit step with
:mod:`splatfx.core.color`. Writers quantise with one rounding rule and never touch colour.

EXR files use the compositor's channel names (``R,G,B,A`` premultiplied colour,
``depth.Z``, ``motion.u``/``motion.v``, ``mask.synthetic``, ``id``) and round-trip
float32 bit for bit; see ``docs/io.md``.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import OpenEXR
import png
from PIL import Image as PILImage

from splatfx.core.atomic import atomic_path
from splatfx.core.color import from_uint8, from_uint16, to_uint8, to_uint16
from splatfx.core.errors import InputError, require_file

Encoding = Literal["srgb", "linear"]
PathLike = str | os.PathLike[str]

PNG_SUFFIXES = frozenset({".png"})
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
EXR_SUFFIXES = frozenset({".exr"})
IMAGE_SUFFIXES = PNG_SUFFIXES | JPEG_SUFFIXES | EXR_SUFFIXES

#: Largest image (width x height, in pixels) any reader decodes: larger headers are refused
#: before decoding, as decompression bombs (a few kB of PNG can claim gigabytes of pixels).
#: It is the size at which Pillow's own check errors (2 x ``PIL.Image.MAX_IMAGE_PIXELS``),
#: 179 MP (e.g. 16384 x 10922; 8K UHD is 33 MP), applied to every format: 16-bit PNG (pypng)
#: and EXR too. Assign a larger value to read larger images (and raise Pillow's limit with it
#: for 8-bit PNG and JPEG).
MAX_IMAGE_PIXELS = 178_956_970

_EXR_MAGIC = b"\x76\x2f\x31\x01"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Exceptions Pillow, pypng and zlib raise for damaged files (Pillow uses SyntaxError
# for malformed PNG chunks and OSError for truncated data).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error,
                  png.Error, PILImage.DecompressionBombError)
# pypng also fails with IndexError/TypeError on some damaged (e.g. interlaced) data.
_PYPNG_ERRORS = (*_DECODE_ERRORS, IndexError, TypeError)


@dataclass(frozen=True)
class Image:
    """Pixels read from a file: ``pixels`` is float32 H x W x C (C = 1, 2, 3 or 4)."""

    pixels: np.ndarray
    encoding: Encoding  # "srgb": display-referred sRGB codes; "linear": scene-linear
    bit_depth: int  # bits per stored sample: 8 or 16 (PNG/JPEG), 16 (half) or 32 (EXR)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])


def _one_line(exc: BaseException) -> str:
    """An exception's message squeezed onto one line (library messages may wrap)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(path, f"unsupported image type {path.suffix!r} "
                               f"(expected one of {', '.join(sorted(IMAGE_SUFFIXES))})")
    return suffix


# --------------------------------------------------------------------------- reading


def read_image(path: PathLike) -> Image:
    """Read a PNG, JPEG or EXR image as float32 H x W x C, normalised but not converted.

    EXR images give their ``R,G,B[,A]`` (or ``Y[,A]``) channels placed in the display
    window; use :func:`read_exr` for every layer.
    """
    p = require_file(path, "image")
    if _suffix(p) in EXR_SUFFIXES:
        return _read_exr_image(p)
    codes = _decode_codes(p)
    if codes.dtype == np.uint16:
        return Image(from_uint16(codes), "srgb", 16)
    return Image(from_uint8(codes), "srgb", 8)


def check_image(path: PathLike) -> tuple[int, int]:
    """Decode every pixel of ``path`` once, as :func:`read_image` would, and return its
    ``(width, height)``; InputError names the file if it is truncated or corrupt.

    PNG and JPEG pixels are neither converted to float nor kept, so checking big stills
    costs little more than the decoding itself."""
    p = require_file(path, "image")
    if _suffix(p) in EXR_SUFFIXES:
        image = _read_exr_image(p)
        return image.width, image.height
    codes = _decode_codes(p)
    return int(codes.shape[1]), int(codes.shape[0])


def _decode_codes(p: Path) -> np.ndarray:
    """A PNG's or JPEG's stored codes: uint16 for a 16-bit PNG, else uint8 (H x W x C)."""
    if p.suffix.lower() in PNG_SUFFIXES:
        _check_png_chunks(p)
        if _png_bit_depth(p) == 16:
            return _read_png16(p)
    return _read_pil8(p)


def image_size(path: PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image from its header alone, without decoding pixels."""
    p = require_file(path, "image")
    if _suffix(p) in EXR_SUFFIXES:
        header = _open_exr(p, header_only=True).header()
        size = _window_size(header["displayWindow"])
    else:
        try:
            with PILImage.open(p) as im:
                size = int(im.width), int(im.height)
        except _DECODE_ERRORS as exc:
            raise InputError(p, f"cannot read image header: {_one_line(exc)}") from None
    _check_pixels(p, *size)
    return size


def _check_pixels(path: Path, width: int, height: int) -> None:
    """Refuse an image above :data:`MAX_IMAGE_PIXELS` before anything is decoded."""
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(path, f"is {width}x{height} = {width * height:,} pixels, more than "
                               f"splatfx.io.images.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,}: refused as a "
                               "possible decompression bomb (raise that limit to read it)")


def _check_png_chunks(path: Path) -> None:
    """Refuse a PNG whose chunk lengths run past the end of the file.

    Pillow and pypng size their read buffers from these lengths: a 3 kB file claiming a
    2 GiB IDAT chunk would make them allocate 2 GiB. Walks the chunk table (8 bytes read
    per chunk) up to IEND; everything else is left to the decoders.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if fh.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
            return  # not a PNG: the decoder says so
        pos = len(_PNG_SIGNATURE)
        while pos + 8 <= size:
            fh.seek(pos)
            length, kind = struct.unpack(">I4s", fh.read(8))
            end = pos + 12 + length  # length, type, data, CRC
            if end > size:
                raise InputError(path, f"is truncated or corrupt: PNG chunk {kind.decode('latin-1')!r} at byte "
                                       f"{pos} claims {length:,} bytes but the file has {size:,}")
            if kind == b"IEND":
                return
            pos = end


def _png_bit_depth(path: Path) -> int:
    """Bit depth from the PNG header (Pillow silently reduces 16-bit colour to 8 bits)."""
    try:
        reader = png.Reader(filename=str(path))
        try:
            reader.preamble()
        finally:
            reader.file.close()
    except _PYPNG_ERRORS as exc:
        raise InputError(path, f"not a readable PNG image: {_one_line(exc)}") from None
    return int(reader.bitdepth)


_PIL_MODES = {"1": "L", "L": "L", "LA": "LA", "La": "LA", "RGB": "RGB", "RGBA": "RGBA",
              "RGBa": "RGBA", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB"}


def _read_pil8(path: Path) -> np.ndarray:
    """Decode an 8-bit PNG or a JPEG to uint8 H x W x C with Pillow."""
    try:
        with PILImage.open(path) as im:
            _check_pixels(path, im.width, im.height)
            im.load()
            if im.mode == "P":
                target = "RGBA" if "transparency" in im.info else "RGB"
            elif im.mode in _PIL_MODES:
                target = _PIL_MODES[im.mode]
            else:
                raise InputError(path, f"unsupported pixel format {im.mode!r}")
            codes = np.asarray(im.convert(target) if im.mode != target else im, dtype=np.uint8)
    except _DECODE_ERRORS as exc:
        raise InputError(path, f"corrupt or unreadable image: {_one_line(exc)}") from None
    return codes[:, :, None] if codes.ndim == 2 else codes


def _read_png16(path: Path) -> np.ndarray:
    """Decode a 16-bit PNG (grey, grey+alpha, RGB or RGBA) to uint16 H x W x C.

    pypng has no pixel limit of its own: the size is checked after the header, before
    ``read()`` (which decompresses interlaced images whole).
    """
    try:
        reader = png.Reader(filename=str(path))
        try:
            reader.preamble()
            _check_pixels(path, reader.width, reader.height)
            width, height, rows, info = reader.read()
            codes = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
        finally:
            reader.file.close()
    except _PYPNG_ERRORS as exc:
        raise InputError(path, f"corrupt or unreadable PNG image: {_one_line(exc)}") from None
    return codes.reshape(height, width, int(info["planes"]))


# --------------------------------------------------------------------------- writing


def _as_hwc(pixels: np.ndarray) -> np.ndarray:
    """View H x W or H x W x C (C <= 4) pixels as H x W x C."""
    a = np.asarray(pixels)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or not 1 <= a.shape[2] <= 4 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"expected an H x W x C image with 1 to 4 channels, got shape {a.shape}")
    return a


#: zlib level of 8-bit PNGs: on photographic frames level 1 is 3x faster than Pillow's
#: default 6 and the files come out no larger (768x576 plate: 35 vs 103 ms, 667 vs 700 kB).
PNG_COMPRESS_LEVEL = 1


def write_png(path: PathLike, pixels: np.ndarray, bit_depth: Literal[8, 16] = 8) -> None:
    """Write [0, 1] pixels (H x W or H x W x 1..4) as an 8- or 16-bit PNG, atomically.

    Values are clipped to [0, 1] and rounded to the nearest code; no colour transform.
    """
    a = _as_hwc(pixels)
    if bit_depth == 8:
        codes = to_uint8(a)
        img = PILImage.fromarray(codes[:, :, 0] if codes.shape[2] == 1 else codes)
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif bit_depth == 16:
        codes = to_uint16(a)
        h, w, c = codes.shape
        writer = png.Writer(w, h, greyscale=c <= 2, alpha=c in (2, 4), bitdepth=16)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            writer.write(fh, codes.reshape(h, w * c))
    else:
        raise ValueError(f"PNG bit depth must be 8 or 16, not {bit_depth}")


def write_jpeg(path: PathLike, pixels: np.ndarray, quality: int = 95) -> None:
    """Write [0, 1] grey or RGB pixels as a JPEG (4:4:4 chroma), atomically."""
    a = _as_hwc(pixels)
    if a.shape[2] not in (1, 3):
        raise ValueError(f"JPEG holds grey or RGB, not {a.shape[2]} channels")
    codes = to_uint8(a)
    img = PILImage.fromarray(codes[:, :, 0] if codes.shape[2] == 1 else codes)
    with atomic_path(path) as tmp:
        img.save(tmp, format="JPEG", quality=quality, subsampling=0)


def write_image(path: PathLike, pixels: np.ndarray, *, bit_depth: Literal[8, 16] = 8,
                quality: int = 95, half: bool = False) -> None:
    """Write pixels in the format named by the suffix (.png, .jpg/.jpeg, .exr).

    PNG/JPEG expect display-referred [0, 1] values; EXR stores them as given under
    ``R,G,B[,A]`` (or ``Y[,A]``).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in PNG_SUFFIXES:
        write_png(p, pixels, bit_depth)
    elif suffix in JPEG_SUFFIXES:
        write_jpeg(p, pixels, quality)
    elif suffix in EXR_SUFFIXES:
        write_exr(p, pack_rgba(pixels), half=half)
    else:
        raise ValueError(f"cannot write {p.name}: unknown image suffix {p.suffix!r}")


# --------------------------------------------------------------------------- EXR

EXR_COMPRESSIONS: dict[str, Any] = {
    "none": OpenEXR.NO_COMPRESSION,
    "rle": OpenEXR.RLE_COMPRESSION,
    "zips": OpenEXR.ZIPS_COMPRESSION,
    "zip": OpenEXR.ZIP_COMPRESSION,
    "piz": OpenEXR.PIZ_COMPRESSION,
}
_COMPRESSION_NAMES = {
    OpenEXR.NO_COMPRESSION: "none", OpenEXR.RLE_COMPRESSION: "rle",
    OpenEXR.ZIPS_COMPRESSION: "zips", OpenEXR.ZIP_COMPRESSION: "zip",
    OpenEXR.PIZ_COMPRESSION: "piz", OpenEXR.PXR24_COMPRESSION: "pxr24",
    OpenEXR.B44_COMPRESSION: "b44", OpenEXR.B44A_COMPRESSION: "b44a",
    OpenEXR.DWAA_COMPRESSION: "dwaa", OpenEXR.DWAB_COMPRESSION: "dwab",
}
_PIXEL_TYPE_NAMES = {np.dtype(np.float16): "half", np.dtype(np.float32): "float",
                     np.dtype(np.uint32): "uint"}
# Attributes every EXR header has (or that write_exr sets itself).
_STANDARD_ATTRIBUTES = frozenset({
    "channels", "compression", "dataWindow", "displayWindow", "lineOrder",
    "pixelAspectRatio", "screenWindowCenter", "screenWindowWidth", "type", "name",
    "tiles", "version", "chunkCount", "frame", "framesPerSecond",
})


@dataclass(frozen=True)
class ExrHeader:
    """What an EXR file says about its pixels, besides the pixels."""

    width: int  # display window size: the frame the compositor sees
    height: int
    data_window: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive: where pixels are stored
    display_window: tuple[int, int, int, int]
    pixel_types: dict[str, str]  # channel name -> "half" | "float" | "uint" as stored
    compression: str
    frame: int | None = None
    fps: Fraction | None = None
    attributes: dict[str, Any] = field(default_factory=dict)  # every other attribute


def write_exr(path: PathLike, channels: Mapping[str, np.ndarray], *,
              half: bool | Collection[str] = False, compression: str = "zip",
              frame: int | None = None, fps: Fraction | float | int | None = None,
              attributes: Mapping[str, str | int | float] | None = None) -> None:
    """Write named H x W channels to one scanline EXR, atomically.

    ``half`` stores every float channel (True) or the named ones as 16-bit half;
    the rest keep float32 (uint32 channels stay uint32). ``frame`` and ``fps`` land
    in the ``frame`` and standard ``framesPerSecond`` attributes, ``attributes``
    (provenance strings, numbers) as custom header attributes.
    """
    arrays = _exr_arrays(channels, half)
    if compression not in EXR_COMPRESSIONS:
        raise ValueError(f"EXR compression must be one of {sorted(EXR_COMPRESSIONS)}, "
                         f"not {compression!r}")
    header: dict[str, Any] = {"compression": EXR_COMPRESSIONS[compression],
                              "type": OpenEXR.scanlineimage}
    if frame is not None:
        header["frame"] = _exr_int("frame", int(frame))
    if fps is not None:
        rate = Fraction(fps).limit_denominator(1001000)
        _exr_int("framesPerSecond", rate.numerator)
        header["framesPerSecond"] = rate
    for key, value in (attributes or {}).items():
        if key in _STANDARD_ATTRIBUTES:
            raise ValueError(f"EXR attribute name {key!r} is reserved")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"EXR attribute {key!r} must be str, int or float, "
                             f"not {type(value).__name__}")
        header[key] = _exr_int(key, value) if isinstance(value, int) else value
    exr = OpenEXR.File(header, {name: OpenEXR.Channel(a) for name, a in arrays.items()})
    encoded = io.BytesIO()  # encoded in memory, so that a disk error keeps its errno (OpenEXR's
    exr.write(encoded)      # own file writes turn ENOSPC into a RuntimeError naming the temporary)
    with atomic_path(path) as tmp:  # OutputError naming ``path`` for a full disk or a read-only folder
        tmp.write_bytes(encoded.getbuffer())


def _exr_int(name: str, value: int) -> int:
    """``value``, checked to fit the 32-bit integer an EXR header stores (it wraps around otherwise)."""
    if not -2**31 <= value < 2**31:
        raise ValueError(f"EXR attribute {name!r} = {value} does not fit a 32-bit integer")
    return value


def _exr_arrays(channels: Mapping[str, np.ndarray],
                half: bool | Collection[str]) -> dict[str, np.ndarray]:
    """Validate channels and cast each to the pixel type it will be stored as."""
    if not channels:
        raise ValueError("an EXR needs at least one channel")
    half_names = set(channels) if half is True else set() if half is False else set(half)
    unknown = half_names - set(channels)
    if unknown:
        raise ValueError(f"half names channels that are not given: {sorted(unknown)}")
    out: dict[str, np.ndarray] = {}
    shape = None
    for name, a in channels.items():
        a = np.asarray(a)
        if a.ndim != 2:
            raise ValueError(f"EXR channel {name!r} must be H x W, got shape {a.shape}")
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise ValueError(f"EXR channel {name!r} is {a.shape}, others are {shape}")
        if a.dtype.kind == "u":
            if half is not True and name in half_names:
                raise ValueError(f"EXR channel {name!r} is integer and cannot be half")
            if a.dtype.itemsize > 4:
                raise ValueError(f"EXR channel {name!r}: uint64 does not fit a uint channel")
            dtype = np.uint32
        elif a.dtype.kind == "f":
            dtype = np.float16 if name in half_names else np.float32
        else:
            raise ValueError(f"EXR channel {name!r} has unsupported dtype {a.dtype}")
        out[name] = np.ascontiguousarray(a, dtype=dtype)
    return out


def read_exr_header(path: PathLike) -> ExrHeader:
    """The header of an EXR's first part, without reading its pixels."""
    p = require_file(path, "EXR image")
    part = _open_exr(p, header_only=True).parts[0]
    return _exr_header(part.header, {name: "" for name in part.channels})


def read_exr(path: PathLike) -> tuple[dict[str, np.ndarray], ExrHeader]:
    """Read every channel of an EXR (all parts) and its header.

    Channels come back as stored over the data window: float32 (half channels are
    widened exactly to float32) or uint32. ``header.pixel_types`` says which were half.
    """
    p = require_file(path, "EXR image")
    parts = _open_exr(p, header_only=True).parts
    expected_parts = len(parts)
    for part in parts:
        _check_pixels(p, *_window_size(part.header["dataWindow"]))
    exr = _open_exr(p, header_only=False)
    # On damaged pixel data the bindings warn and drop the part instead of raising.
    if expected_parts == 0 or len(exr.parts) != expected_parts:
        raise InputError(p, "EXR pixel data is truncated or corrupt")
    channels: dict[str, np.ndarray] = {}
    pixel_types: dict[str, str] = {}
    for part in exr.parts:
        if part.type() not in (OpenEXR.scanlineimage, OpenEXR.tiledimage):
            raise InputError(p, f"deep EXR images are not supported ({part.type().name})")
        for name, channel in part.channels.items():
            if channel.xSampling != 1 or channel.ySampling != 1:
                raise InputError(p, f"channel {name!r} is subsampled, which is not supported")
            if name in channels:
                raise InputError(p, f"channel {name!r} appears in more than one part")
            pixels = np.asarray(channel.pixels)
            pixel_types[name] = _PIXEL_TYPE_NAMES.get(pixels.dtype, str(pixels.dtype))
            channels[name] = pixels.astype(np.float32) if pixels.dtype == np.float16 else pixels
    return channels, _exr_header(exr.parts[0].header, pixel_types)


def _open_exr(path: Path, header_only: bool) -> OpenEXR.File:
    """Open an EXR with the v3 bindings, turning any failure into one InputError line."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != _EXR_MAGIC:
        raise InputError(path, "not an OpenEXR file (bad magic number)")
    try:
        return OpenEXR.File(str(path), separate_channels=True, header_only=header_only)
    except (RuntimeError, ValueError, OSError) as exc:
        raise InputError(path, f"corrupt or unreadable EXR image: {_one_line(exc)}") from None


def _window(window: Any) -> tuple[int, int, int, int]:
    lo, hi = window
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


def _window_size(window: Any) -> tuple[int, int]:
    x0, y0, x1, y1 = _window(window)
    return x1 - x0 + 1, y1 - y0 + 1


def _exr_header(raw: Mapping[str, Any], pixel_types: dict[str, str]) -> ExrHeader:
    width, height = _window_size(raw["displayWindow"])
    fps = raw.get("framesPerSecond")
    frame = raw.get("frame")
    return ExrHeader(
        width=width, height=height,
        data_window=_window(raw["dataWindow"]), display_window=_window(raw["displayWindow"]),
        pixel_types=pixel_types,
        compression=_COMPRESSION_NAMES.get(raw.get("compression"), str(raw.get("compression"))),
        frame=int(frame) if isinstance(frame, (int, np.integer)) else None,
        fps=Fraction(fps) if isinstance(fps, Fraction) else None,
        attributes={k: v for k, v in raw.items() if k not in _STANDARD_ATTRIBUTES},
    )


def _read_exr_image(path: Path) -> Image:
    """An EXR's colour channels as one image in its display window."""
    channels, header = read_exr(path)
    _check_pixels(path, header.width, header.height)  # the display window, allocated below
    try:
        stored = unpack_rgba(channels)
    except KeyError as exc:
        raise InputError(path, f"no colour channels (R,G,B or Y) at the top level: "
                               f"{exc.args[0]}") from None
    out = _place_in_display_window(stored, header)
    colour = [n for n in ("R", "G", "B", "A", "Y") if n in channels]
    depth = 16 if all(header.pixel_types[n] == "half" for n in colour) else 32
    return Image(out, "linear", depth)


def _place_in_display_window(pixels: np.ndarray, header: ExrHeader) -> np.ndarray:
    """Put data-window pixels into the display window (zeros outside, overscan cropped)."""
    if header.data_window == header.display_window:
        return pixels
    dx0, dy0, _, _ = header.data_window
    fx0, fy0, _, _ = header.display_window
    out = np.zeros((header.height, header.width, pixels.shape[2]), dtype=np.float32)
    # Overlap of the data window with the display window, in display coordinates.
    x0, y0 = max(dx0 - fx0, 0), max(dy0 - fy0, 0)
    x1 = min(dx0 - fx0 + pixels.shape[1], header.width)
    y1 = min(dy0 - fy0 + pixels.shape[0], header.height)
    if x1 > x0 and y1 > y0:
        sx, sy = x0 - (dx0 - fx0), y0 - (dy0 - fy0)
        out[y0:y1, x0:x1] = pixels[sy:sy + y1 - y0, sx:sx + x1 - x0]
    return out


# --------------------------------------------------------------------------- channel packing

RGBA_NAMES = ("R", "G", "B", "A")


def pack_rgba(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Split H x W x C pixels into EXR channels.

    C=1 gives ``Y``, 2 ``Y,A``, 3 ``R,G,B`` and 4 ``R,G,B,A``.
    """
    a = _as_hwc(pixels)
    names = {1: ("Y",), 2: ("Y", "A"), 3: RGBA_NAMES[:3], 4: RGBA_NAMES}[a.shape[2]]
    return {name: a[:, :, i] for i, name in enumerate(names)}


def unpack_rgba(channels: Mapping[str, np.ndarray]) -> np.ndarray:
    """Stack the top-level colour channels (``R,G,B[,A]`` or ``Y[,A]``) as float32 H x W x C.

    Raises KeyError naming what is missing.
    """
    if all(n in channels for n in RGBA_NAMES[:3]):
        names: Sequence[str] = RGBA_NAMES if "A" in channels else RGBA_NAMES[:3]
    elif "Y" in channels:
        names = ("Y", "A") if "A" in channels else ("Y",)
    else:
        raise KeyError(f"found {sorted(channels)}")
    return np.stack([np.asarray(channels[n], dtype=np.float32) for n in names], axis=-1)


def pack_layer(layer: str, pixels: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Name each channel of an H x W (x C) array ``layer.name``: e.g.
    ``pack_layer("motion", uv, ("u", "v"))`` gives ``motion.u`` and ``motion.v``."""
    a = np.asarray(pixels)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] != len(names):
        raise ValueError(f"layer {layer!r}: {len(names)} names for pixels of shape {a.shape}")
    return {f"{layer}.{name}": a[:, :, i] for i, name in enumerate(names)}


def unpack_layer(channels: Mapping[str, np.ndarray], layer: str,
                 names: Sequence[str]) -> np.ndarray:
    """Stack ``layer.name`` channels as H x W x len(names) (the inverse of :func:`pack_layer`)."""
    return np.stack([channels[f"{layer}.{n}"] for n in names], axis=-1)


def layers(channel_names: Collection[str]) -> dict[str, list[str]]:
    """Group channel names by layer: ``{"": ["A", "B", ...], "motion": ["u", "v"], ...}``.

    The layer is everything before the last dot, as compositors read it.
    """
    grouped: dict[str, list[str]] = {}
    for name in sorted(channel_names):
        layer, _, short = name.rpartition(".")
        grouped.setdefault(layer, []).append(short)
    return grouped
