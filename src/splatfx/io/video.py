"""Video in and out with PyAV: frame-accurate reading and H.264 review movies.

:class:`VideoReader` indexes a file's packet timestamps once (demuxing only, no
decoding) so that ``read(i)`` returns exactly the i-th frame in presentation order:
it seeks to the keyframe at or before that frame and decodes forward to its
timestamp, and it keeps decoding forward without seeking when frames are asked for
in order. Frames come back as float32 H x W x 3 sRGB-encoded values in [0, 1], turned
upright as the stream's display matrix says (phone video shot in portrait); sources
deeper than 8 bits (HEVC Main 10, ProRes) are converted straight to float.

:func:`map_frames` maps a video's presentation times, constant or variable rate, onto
frame numbers at a chosen rate: each frame takes the source frame nearest its time, and
the :class:`FrameMap` counts the source frames dropped and doubled on the way.

:func:`write_mp4` encodes display-referred frames as H.264 (libx264, yuv420p,
BT.709 tagged) into an MP4 written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import bisect
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc, Interpolation

from splatfx.core.atomic import atomic_path
from splatfx.core.color import from_uint8, to_uint8
from splatfx.core.errors import InputError, require_file

PathLike = str | os.PathLike[str]
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mxf"})
# Encoders tried in order for review movies: H.264 first, MPEG-4 Part 2 as a last resort.
_H264_ENCODERS = ("libx264", "libopenh264", "h264")
_FALLBACK_ENCODER = "mpeg4"
# swscale's default YUV<->RGB path rounds coarsely (errors of 2-3 codes on flat colour);
# accurate rounding with full chroma interpolation matches the BT.709 formulas to 1 code.
_CONVERT = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
#: Rates cameras record at; a video's median frame interval within 1.5% of one is taken as it.
STANDARD_RATES = tuple(Fraction(r) for r in (Fraction(24000, 1001), 24, 25, Fraction(30000, 1001), 30, 48, 50,
                                             Fraction(60000, 1001), 60, 100, Fraction(120000, 1001), 120, 240))


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
            self._pts, self._key_pts, self._last_duration = self._index()
            if not self._pts:
                raise InputError(self.path, "video stream holds no frames")
            self._decoded: Iterator[av.VideoFrame] | None = None
            self._last_pts: int | None = None
            self._cached: tuple[int, av.VideoFrame] | None = None  # the last frame read (doubled frames)
            self.orientation = self._read_orientation()
        except BaseException:
            self._container.close()
            raise

    # ---- what the file is

    @property
    def fps(self) -> Fraction:
        """Frames per second as an exact fraction (e.g. 24000/1001)."""
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        if not rate:
            raise InputError(self.path, "video stream declares no frame rate")
        return Fraction(rate)

    @property
    def nominal_fps(self) -> Fraction:
        """The rate the camera was set to: from the median frame interval, snapped to the
        nearest standard rate (23.976 ... 240) within 1.5%; the average rate if no interval."""
        return nominal_rate(self.intervals) or self.fps

    @property
    def width(self) -> int:
        """Upright width (after the display matrix's rotation)."""
        return self.coded_height if self.orientation.transpose else self.coded_width

    @property
    def height(self) -> int:
        """Upright height (after the display matrix's rotation)."""
        return self.coded_width if self.orientation.transpose else self.coded_height

    @property
    def coded_width(self) -> int:
        """Width as stored in the stream, before rotation."""
        return int(self._stream.codec_context.width)

    @property
    def coded_height(self) -> int:
        return int(self._stream.codec_context.height)

    @property
    def pixel_format(self) -> str:
        """The stream's pixel format, e.g. ``yuv420p`` or ``yuv420p10le``."""
        return str(self._stream.codec_context.pix_fmt)

    @property
    def bit_depth(self) -> int:
        """Bits per sample of the stored pixels (8, 10, 12...)."""
        fmt = self._stream.codec_context.format
        return max((c.bits for c in fmt.components), default=8) if fmt is not None else 8

    @property
    def colour_tags(self) -> dict[str, str]:
        """The colour matrix, transfer, primaries and range the stream declares (FFmpeg names)."""
        ctx = self._stream.codec_context
        return {"matrix": _tag(Colorspace, ctx.colorspace), "transfer": _tag(ColorTrc, ctx.color_trc),
                "primaries": _tag(ColorPrimaries, ctx.color_primaries), "range": _tag(ColorRange, ctx.color_range)}

    @property
    def times(self) -> list[Fraction]:
        """Every frame's presentation time in seconds, from the first frame (exact)."""
        base, first = Fraction(self._stream.time_base), self._pts[0]
        return [(pts - first) * base for pts in self._pts]

    @property
    def intervals(self) -> list[Fraction]:
        """Seconds between consecutive frames' presentation times."""
        times = self.times
        return [b - a for a, b in zip(times, times[1:])]

    @property
    def duration(self) -> Fraction:
        """Seconds from the first frame's start to the last frame's end."""
        base = Fraction(self._stream.time_base)
        last = self._last_duration * base
        if last <= 0:  # no packet duration: the typical interval, else one frame at the declared rate
            intervals = sorted(self.intervals)
            last = intervals[len(intervals) // 2] if intervals else 1 / self.fps
        return (self._pts[-1] - self._pts[0]) * base + last

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

    def _index(self) -> tuple[list[int], list[int], int]:
        """Presentation timestamps of every frame and of the keyframes, and the duration of the
        last frame shown (in stream ticks, 0 if not stored), from packets alone."""
        pts: list[int] = []
        keys: list[int] = []
        durations: dict[int, int] = {}
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                if packet.pts is None:
                    raise InputError(self.path, "video packets carry no timestamps; "
                                                "re-wrap it as .mp4/.mov/.mkv")
                pts.append(int(packet.pts))
                durations[int(packet.pts)] = int(packet.duration or 0)
                if packet.is_keyframe:
                    keys.append(int(packet.pts))
        except av.FFmpegError as exc:
            raise InputError(self.path, f"corrupt video: {_one_line(exc)}") from None
        pts.sort()
        keys.sort()
        return pts, keys, durations[pts[-1]] if pts else 0

    def _read_orientation(self) -> Orientation:
        """How to turn frames upright: from the display matrix of the first frame that decodes
        (trying the first few keyframes; a video none of which decode is left as stored)."""
        for key in self._key_pts[:3] or self._pts[:1]:
            self._seek(key)
            try:
                frame = next(self._decoded, None)  # type: ignore[arg-type]
            except av.FFmpegError:
                continue
            if frame is None:
                continue
            self._last_pts = frame.pts
            if frame.pts == self._pts[0]:
                self._cached = (0, frame)  # reading frame 0 next costs no second decode
            matrix = frame.side_data.get(SideDataType.DISPLAYMATRIX)
            if matrix is None:
                return UPRIGHT
            try:
                return Orientation.from_display_matrix(np.frombuffer(bytes(matrix), "<i4")[:9].tolist())
            except ValueError as exc:
                raise InputError(self.path, str(exc)) from None
        return UPRIGHT

    # ---- reading

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based, presentation order) as float32 H x W x 3 in [0, 1]."""
        if not 0 <= index < len(self._pts):
            raise IndexError(f"{self.path}: frame index {index} outside 0..{len(self._pts) - 1}")
        if self._cached is not None and self._cached[0] == index:  # a doubled frame: no re-decode
            return self.orientation.apply(_to_rgb(self._cached[1]))
        target = self._pts[index]
        if not self._can_decode_forward_to(target):
            self._seek(target)
        try:
            assert self._decoded is not None
            for frame in self._decoded:
                self._last_pts = frame.pts
                if frame.pts == target:
                    self._cached = (index, frame)
                    return self.orientation.apply(_to_rgb(frame))
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
    """Convert a decoded frame to float32 RGB with the matrix and range it is tagged with
    (8-bit sources through 8-bit RGB codes, deeper ones straight to float)."""
    deep = frame.format.components and max(c.bits for c in frame.format.components) > 8
    space = frame.colorspace if frame.colorspace in set(Colorspace) else None
    rng = frame.color_range if frame.color_range in (ColorRange.MPEG, ColorRange.JPEG) else None
    convert = dict(src_colorspace=space, src_color_range=rng, dst_color_range=ColorRange.JPEG,
                   interpolation=_CONVERT)
    if deep:
        # Straight to float (swscale's planar float RGB): 10/12-bit samples never pass through
        # 8 bits, nor through rgb48, whose full-chroma bilinear path mixes up the channels.
        return np.clip(frame.to_ndarray(format="gbrpf32le", **convert), 0.0, 1.0).astype(np.float32, copy=False)
    return from_uint8(frame.to_ndarray(format="rgb24", **convert))


def _tag(kind: type, value: object) -> str:
    """An FFmpeg colour tag's name in lower case (``unspecified`` for values PyAV does not name)."""
    try:
        return str(kind(value).name).lower()  # type: ignore[call-arg]
    except ValueError:
        return "unspecified"


# --------------------------------------------------------------------------- orientation


@dataclass(frozen=True)
class Orientation:
    """How a stored frame is turned upright: transpose, then flip rows and/or columns.

    ``degrees`` is the counter-clockwise rotation the display matrix applies (FFmpeg's
    ``av_display_rotation_get``, e.g. -90 for a phone held upright) and ``mirrored`` says
    it also flips; both describe the turn for reports.
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    degrees: int = 0
    mirrored: bool = False

    @classmethod
    def from_display_matrix(cls, matrix: Sequence[int]) -> Orientation:
        """From FFmpeg's 3x3 display matrix (16.16 fixed point, row-vector convention: a stored
        pixel (x, y) is shown at (a x + c y, b x + d y) with a, b, c, d = m[0], m[1], m[3], m[4]).
        ValueError unless it turns by a multiple of 90 degrees, as cameras write it."""
        a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
        scale = max(abs(a), abs(b), abs(c), abs(d))
        if scale == 0:
            raise ValueError("has a degenerate display matrix (all zero)")
        a, b, c, d = (v / scale for v in (a, b, c, d))
        degrees = -math.degrees(math.atan2(b, a))
        mirrored = a * d - b * c < 0
        straight = abs(b) < 1e-3 and abs(c) < 1e-3 and abs(abs(a) - 1) < 1e-3 and abs(abs(d) - 1) < 1e-3
        turned = abs(a) < 1e-3 and abs(d) < 1e-3 and abs(abs(b) - 1) < 1e-3 and abs(abs(c) - 1) < 1e-3
        if not (straight or turned):
            raise ValueError(f"its display matrix turns the picture by {degrees:.1f} degrees or skews it; "
                             "only multiples of 90 degrees (as cameras and phones write) are supported")
        whole = int(round(degrees)) % 360
        whole = whole - 360 if whole > 180 else whole
        if turned:  # x' depends on y (sign of c), y' on x (sign of b)
            return cls(True, flip_rows=b < 0, flip_cols=c < 0, degrees=whole, mirrored=mirrored)
        return cls(False, flip_rows=d < 0, flip_cols=a < 0, degrees=whole, mirrored=mirrored)

    @property
    def is_upright(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` (H x W x C) turned upright, as a new contiguous array when turned."""
        if self.is_upright:
            return pixels
        out = pixels.transpose(1, 0, *range(2, pixels.ndim)) if self.transpose else pixels
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def describe(self) -> str:
        """E.g. ``rotated -90 degrees (display matrix)`` or ``upright``."""
        if self.is_upright:
            return "upright"
        turn = f"rotated {self.degrees} degrees" if self.degrees else "not rotated"
        return f"{turn}{', mirrored' if self.mirrored else ''} (display matrix)"


UPRIGHT = Orientation()


# --------------------------------------------------------------------------- frame rate


def nominal_rate(intervals: Sequence[Fraction]) -> Fraction | None:
    """The rate a camera was set to, from its frame intervals (seconds): one over the median
    interval, snapped to the nearest standard rate within 1.5% (None without intervals).

    The median ignores the long and short gaps of variable-rate phone video, and snapping
    absorbs timestamps rounded to a coarse clock (e.g. 33 and 34 ms for 30 fps in a 1/1000
    time base)."""
    positive = sorted(i for i in intervals if i > 0)
    if not positive:
        return None
    rate = 1 / positive[len(positive) // 2]
    nearest = min(STANDARD_RATES, key=lambda r: abs(r - rate))
    return nearest if abs(nearest - rate) <= Fraction(15, 1000) * nearest else rate.limit_denominator(1001)


@dataclass(frozen=True)
class FrameMap:
    """Which source frame each output frame shows when a video is numbered at ``fps``.

    ``source[n]`` is the index (presentation order, from 0) of the source frame whose
    time is nearest ``n / fps`` seconds after the first frame (ties go to the earlier frame,
    the one on screen at that time). Source frames no output frame shows are *dropped*;
    ones shown by more than one output frame are *doubled*.
    """

    fps: Fraction
    source: tuple[int, ...]
    source_frames: int
    duration: Fraction  # seconds, first frame's start to last frame's end
    interval_mean: Fraction | None  # seconds between consecutive source frames
    interval_min: Fraction | None
    interval_max: Fraction | None

    def __len__(self) -> int:
        return len(self.source)

    @property
    def dropped(self) -> int:
        """Source frames that no output frame shows."""
        return self.source_frames - len(set(self.source))

    @property
    def doubled(self) -> int:
        """Source frames shown by two or more output frames."""
        return sum(1 for uses in Counter(self.source).values() if uses > 1)

    @property
    def repeats(self) -> int:
        """Output frames that repeat the previous output frame's source frame."""
        return len(self.source) - len(set(self.source))

    @property
    def one_to_one(self) -> bool:
        """Every source frame shown exactly once, in order."""
        return self.source == tuple(range(self.source_frames))

    @property
    def variable(self) -> bool:
        """True when frame intervals differ by more than 1% (variable frame rate)."""
        if self.interval_min is None or self.interval_max is None or self.interval_mean is None:
            return False
        return self.interval_max - self.interval_min > self.interval_mean / 100

    @property
    def average_fps(self) -> Fraction:
        """The source's average rate: frames over duration."""
        return self.source_frames / self.duration if self.duration > 0 else self.fps

    def summary(self) -> str:
        """One line: the source's rate and intervals, and what numbering at ``fps`` did."""
        rate = "variable" if self.variable else "constant"
        if self.interval_mean is not None and self.interval_min is not None and self.interval_max is not None:
            spacing = (f", interval {_ms(self.interval_mean)} ms mean, {_ms(self.interval_min)}-"
                       f"{_ms(self.interval_max)} ms")
        else:
            spacing = ""
        head = (f"{self.source_frames} source frames, {rate} rate {float(self.average_fps):.3f} fps average"
                f"{spacing}")
        if self.one_to_one:
            return f"{head}; 1:1 as {len(self)} frames at {_fps(self.fps)} fps (none dropped or doubled)"
        return (f"{head}; mapped to {len(self)} frames at {_fps(self.fps)} fps by nearest time: "
                f"{self.dropped} source frames dropped, {self.doubled} doubled")

    def to_dict(self) -> dict[str, object]:
        """For plate reports (JSON): rates as text fractions and floats, intervals in ms."""
        sec = lambda v: None if v is None else round(float(v) * 1000, 4)  # noqa: E731
        return {"fps": str(self.fps), "fps_float": float(self.fps), "frames": len(self),
                "source_frames": self.source_frames, "source_average_fps": round(float(self.average_fps), 6),
                "source_duration_s": round(float(self.duration), 6), "variable_rate": self.variable,
                "interval_mean_ms": sec(self.interval_mean), "interval_min_ms": sec(self.interval_min),
                "interval_max_ms": sec(self.interval_max), "one_to_one": self.one_to_one,
                "dropped": self.dropped, "doubled": self.doubled, "repeats": self.repeats,
                "source_index": list(self.source)}


def map_frames(times: Sequence[Fraction], duration: Fraction, fps: Fraction) -> FrameMap:
    """Number a video's frames at ``fps``: output frame ``n`` (time ``n / fps``) shows the source
    frame nearest in time. ``times`` are the source's presentation times in seconds from its
    first frame (sorted), ``duration`` runs to the end of the last frame: every output time
    inside it gets a frame, so a constant-rate video at its own rate maps 1:1."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    if not times:
        raise ValueError("a video with no frames cannot be mapped")
    span = duration * fps
    count = max(1, -(-span.numerator // span.denominator))  # output times n/fps inside [0, duration)
    source: list[int] = []
    last = len(times) - 1
    for n in range(count):
        t = Fraction(n) / fps
        k = bisect.bisect_left(times, t)  # the first frame at or after t
        if k > last or (k > 0 and t - times[k - 1] <= times[k] - t):
            k -= 1
        source.append(k)
    intervals = [b - a for a, b in zip(times, times[1:])]
    mean = (times[-1] - times[0]) / len(intervals) if intervals else None
    return FrameMap(Fraction(fps), tuple(source), len(times), duration, mean,
                    min(intervals) if intervals else None, max(intervals) if intervals else None)


def _ms(seconds: Fraction) -> str:
    return f"{float(seconds) * 1000:.2f}"


def _fps(rate: Fraction) -> str:
    return f"{float(rate):.3f}".rstrip("0").rstrip(".")


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
