"""Video in and out with PyAV: frame-accurate reading and H.264 review movies.

:class:`VideoReader` indexes a file's packet timestamps once (demuxing only, no
decoding) so that ``read(i)`` returns exactly the i-th frame in presentation order:
it seeks to the keyframe at or before that frame and decodes forward to its
timestamp, and it keeps decoding forward without seeking when frames are asked for
in order. Frames come back as float32 H x W x 3 sRGB-encoded values in [0, 1].

:func:`write_mp4` encodes display-referred frames as H.264 (libx264, yuv420p,
BT.709 tagged) into an MP4 written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import bisect
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc, Interpolation

from splatfx.core.atomic import atomic_path
from splatfx.core.color import from_uint8, from_uint16, to_uint8
from splatfx.core.errors import InputError, require_file

PathLike = str | os.PathLike[str]
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mxf"})
# Encoders tried in order for review movies: H.264 first, MPEG-4 Part 2 as a last resort.
_H264_ENCODERS = ("libx264", "libopenh264", "h264")
_FALLBACK_ENCODER = "mpeg4"
# swscale's default YUV<->RGB path rounds coarsely (errors of 2-3 codes on flat colour);
# accurate rounding with full chroma interpolation matches the BT.709 formulas to 1 code.
_CONVERT = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


def _one_line(exc: BaseException) -> str:
    """FFmpeg's reason without errno and file name (the InputError names the file)."""
    reason = exc.strerror if isinstance(exc, av.FFmpegError) and exc.strerror else str(exc)
    return " ".join(reason.split()) or type(exc).__name__


class FrameDecodeError(InputError):
    """One frame of a video does not decode: ``index`` (0-based) and FFmpeg's ``reason``."""

    def __init__(self, path: Path, index: int, reason: str) -> None:
        super().__init__(path, f"cannot decode frame {index}: {reason}")
        self.index = index
        self.reason = reason


class VideoReader:
    """Random and sequential access to the frames of one video file's first video stream."""

    def __init__(self, path: PathLike) -> None:
        self.path = require_file(path, "video")
        try:
            self._container = av.open(str(self.path), mode="r")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise InputError(self.path, f"not a readable video: {_one_line(exc)}") from None
        try:
            if not self._container.streams.video:
                raise InputError(self.path, "contains no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            self._pts, self._key_pts = self._index()
        except BaseException:
            self._container.close()
            raise
        if not self._pts:
            self._container.close()
            raise InputError(self.path, "video stream holds no frames")
        self._decoded: Iterator[av.VideoFrame] | None = None
        self._last_pts: int | None = None

    # ---- what the file is

    @property
    def fps(self) -> Fraction:
        """Frames per second as an exact fraction (e.g. 24000/1001)."""
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        if not rate:
            raise InputError(self.path, "video stream declares no frame rate")
        return Fraction(rate)

    @property
    def width(self) -> int:
        return int(self._stream.codec_context.width)

    @property
    def height(self) -> int:
        return int(self._stream.codec_context.height)

    @property
    def codec(self) -> str:
        return str(self._stream.codec_context.name)

    def __len__(self) -> int:
        return len(self._pts)

    @property
    def frame_count(self) -> int:
        return len(self._pts)

    @property
    def keyframes(self) -> list[int]:
        """Indices of the frames a decoder can start from (seek targets)."""
        index = {pts: i for i, pts in enumerate(self._pts)}
        return [index[pts] for pts in self._key_pts]

    def _index(self) -> tuple[list[int], list[int]]:
        """Presentation timestamps of every frame, and of the keyframes, from packets alone."""
        pts: list[int] = []
        keys: list[int] = []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                if packet.pts is None:
                    raise InputError(self.path, "video packets carry no timestamps; "
                                                "re-wrap it as .mp4/.mov/.mkv")
                pts.append(int(packet.pts))
                if packet.is_keyframe:
                    keys.append(int(packet.pts))
        except av.FFmpegError as exc:
            raise InputError(self.path, f"corrupt video: {_one_line(exc)}") from None
        pts.sort()
        keys.sort()
        return pts, keys

    # ---- reading

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based, presentation order) as float32 H x W x 3 in [0, 1]."""
        if not 0 <= index < len(self._pts):
            raise IndexError(f"{self.path}: frame index {index} outside 0..{len(self._pts) - 1}")
        target = self._pts[index]
        if not self._can_decode_forward_to(target):
            self._seek(target)
        try:
            assert self._decoded is not None
            for frame in self._decoded:
                self._last_pts = frame.pts
                if frame.pts == target:
                    return _to_rgb(frame)
                if frame.pts is None or frame.pts > target:
                    break
        except av.FFmpegError as exc:
            self._decoded = None
            raise FrameDecodeError(self.path, index, _one_line(exc)) from None
        self._decoded = None
        raise FrameDecodeError(self.path, index, f"it could not be decoded exactly (pts {target})")

    def _can_decode_forward_to(self, target: int) -> bool:
        """True when the open decoder is before ``target`` with no keyframe to jump to."""
        if self._decoded is None or self._last_pts is None or self._last_pts >= target:
            return False
        keys_before = bisect.bisect_right(self._key_pts, target)
        # The last keyframe at or before the target is already behind us: no seek pays off.
        return keys_before == 0 or self._key_pts[keys_before - 1] <= self._last_pts

    def _seek(self, target: int) -> None:
        try:
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        except av.FFmpegError as exc:
            raise InputError(self.path, f"cannot seek: {_one_line(exc)}") from None
        self._decoded = self._container.decode(self._stream)
        self._last_pts = None

    def __iter__(self) -> Iterator[np.ndarray]:
        """Every frame in order, decoded once (sequential reads never seek)."""
        for i in range(len(self._pts)):
            yield self.read(i)

    def close(self) -> None:
        self._decoded = None
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """Convert a decoded frame to float32 RGB with the matrix and range it is tagged with."""
    deep = frame.format.components and max(c.bits for c in frame.format.components) > 8
    space = frame.colorspace if frame.colorspace in set(Colorspace) else None
    rng = frame.color_range if frame.color_range in (ColorRange.MPEG, ColorRange.JPEG) else None
    codes = frame.to_ndarray(format="rgb48le" if deep else "rgb24",
                             src_colorspace=space, src_color_range=rng,
                             dst_color_range=ColorRange.JPEG, interpolation=_CONVERT)
    return from_uint16(codes) if deep else from_uint8(codes)


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Movie:
    """What :func:`write_mp4` wrote."""

    path: Path
    frames: int
    width: int  # as encoded: odd sizes are padded to even by repeating the last row/column
    height: int
    fps: Fraction
    encoder: str


def pick_encoder() -> str:
    """The first H.264 encoder PyAV's FFmpeg build has, else ``mpeg4`` (with a warning)."""
    available = av.codecs_available
    for name in _H264_ENCODERS:
        if name in available and _is_encoder(name):
            return name
    warnings.warn("no H.264 encoder in this PyAV build; review movies use MPEG-4 Part 2 "
                  "(mpeg4), which plays in most players but is larger", stacklevel=2)
    return _FALLBACK_ENCODER


def _is_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def write_mp4(path: PathLike, frames: Iterable[np.ndarray], fps: Fraction | float | int,
              crf: int = 18, preset: str = "medium",
              keyframe_interval: int | None = None) -> Movie:
    """Encode display-referred frames (float [0, 1] or uint8, H x W x 3 or grey) as an MP4.

    Frames are consumed one at a time. All must share one size; odd widths/heights are
    padded to even (yuv420p needs it). ``crf`` is libx264's quality (lower is better,
    18 is visually lossless for review); ``keyframe_interval`` caps the GOP length
    (short GOPs scrub faster; None keeps the encoder's default). The file appears only
    once complete.
    """
    rate = Fraction(fps).limit_denominator(1001000)
    if rate <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    encoder = pick_encoder()
    target = Path(path)
    with atomic_path(target, suffix=".mp4") as tmp:
        # faststart: the index goes first so review players can start before the end arrives.
        with av.open(str(tmp), mode="w", format="mp4",
                     options={"movflags": "+faststart"}) as container:
            stream = None
            size: tuple[int, int] | None = None
            count = 0
            for count, pixels in enumerate(frames, start=1):
                rgb = _as_rgb24(pixels)
                if size is None:
                    size = rgb.shape[:2]
                    stream = _add_stream(container, encoder, rate, rgb.shape[1], rgb.shape[0],
                                         crf, preset, keyframe_interval)
                elif rgb.shape[:2] != size:
                    raise ValueError(f"frame {count - 1} is {rgb.shape[1]}x{rgb.shape[0]}, "
                                     f"the first was {size[1]}x{size[0]}")
                container.mux(stream.encode(_yuv_frame(_pad_even(rgb), count - 1)))
            if stream is None:
                raise ValueError("write_mp4 got no frames")
            container.mux(stream.encode(None))
        width, height = stream.codec_context.width, stream.codec_context.height
    return Movie(target, count, int(width), int(height), rate, encoder)


def _add_stream(container: av.container.OutputContainer, encoder: str, rate: Fraction,
                width: int, height: int, crf: int, preset: str,
                keyframe_interval: int | None) -> av.VideoStream:
    stream = container.add_stream(encoder, rate=rate)
    if keyframe_interval is not None:
        stream.codec_context.gop_size = keyframe_interval
    stream.width, stream.height = width + width % 2, height + height % 2
    stream.pix_fmt = "yuv420p"
    ctx = stream.codec_context
    ctx.colorspace, ctx.color_range = Colorspace.ITU709, ColorRange.MPEG
    ctx.color_primaries, ctx.color_trc = ColorPrimaries.BT709, ColorTrc.IEC61966_2_1
    if encoder == "libx264":
        stream.options = {"crf": str(crf), "preset": preset}
    else:
        # No CRF outside x264: aim for about 0.15 bits per pixel, plenty for review.
        stream.bit_rate = int(stream.width * stream.height * float(rate) * 0.15)
    return stream


def _as_rgb24(pixels: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 from float [0, 1] or uint8 grey/RGB input."""
    a = np.asarray(pixels)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3):
        raise ValueError(f"movie frames must be H x W x 3 (or grey); got shape {a.shape} "
                         "(composite RGBA over a background first)")
    codes = a if a.dtype == np.uint8 else to_uint8(a)
    return np.repeat(codes, 3, axis=2) if codes.shape[2] == 1 else codes


def _pad_even(rgb: np.ndarray) -> np.ndarray:
    """Repeat the last row/column so both sides are even (4:2:0 chroma needs pairs)."""
    pad_h, pad_w = rgb.shape[0] % 2, rgb.shape[1] % 2
    if not (pad_h or pad_w):
        return rgb
    return np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _yuv_frame(rgb: np.ndarray, index: int) -> av.VideoFrame:
    """An RGB frame converted to BT.709 limited-range yuv420p, stamped with its index."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    yuv = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709,
                         src_color_range=ColorRange.JPEG, dst_color_range=ColorRange.MPEG,
                         interpolation=_CONVERT | Interpolation.FULL_CHR_H_INP)
    yuv.colorspace, yuv.color_range = Colorspace.ITU709, ColorRange.MPEG
    yuv.pts = index
    return yuv
