"""Plates: the real footage of a shot, opened from a folder, a numbered sequence or a video.

:func:`open_plates` accepts

* a sequence pattern: ``plate.%04d.exr``, ``plate.####.exr`` or ``plate.@@@@.exr``
  (each ``#``/``@`` is one digit of padding, as in Nuke; ``%d`` is unpadded);
* a folder: one numbered sequence (``name.0001.png``, ``name_12.png``: the frame
  number follows a ``.``, ``_`` or ``-``) keeps its file's frame numbers; otherwise
  the images (e.g. camera photos ``P1180141.JPG``) form a set sorted by name and
  numbered from ``start_frame``;
* a video file (frames numbered from ``start_frame`` at ``fps``: each frame shows the
  source frame nearest its time, so variable-rate phone video gets one frame per
  ``1/fps`` seconds and the :class:`~splatfx.io.video.FrameMap` says what was dropped or
  doubled; frames are turned upright as the display matrix says);
* a single image (one frame).

Opening checks every frame's header (sizes must agree) without decoding pixels;
``read(frame)`` decodes one frame when asked, so long 4K plates never sit in memory.
:func:`undecodable_frames` decodes every frame once (``splatfx init`` does, so that a
truncated file is refused before the solve), and ``leave_out`` turns frames into gaps.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from splatfx.core.errors import InputError
from splatfx.core.progress import track
from splatfx.io.images import EXR_SUFFIXES, IMAGE_SUFFIXES, Encoding, check_image, image_size, read_image
from splatfx.io.video import VIDEO_SUFFIXES, FrameDecodeError, FrameMap, VideoReader, map_frames

PathLike = str | os.PathLike[str]
DEFAULT_START_FRAME = 1001

# A frame-number token in a pattern: %04d / %d, a run of '#', or a run of '@'.
_TOKEN = re.compile(r"%(0?\d+)?d|#+|@+")
# A numbered file name: the frame number follows '.', '_' or '-' (or is the whole stem).
_NUMBERED = re.compile(r"^(?P<prefix>(?:.*[._-])?)(?P<digits>\d+)(?P<suffix>\.[^.]+)$")


@dataclass(frozen=True)
class SequencePattern:
    """A numbered file name split around its frame number; padding 0 means unpadded."""

    directory: Path
    prefix: str
    padding: int
    suffix: str

    def name(self, frame: int) -> str:
        return f"{self.prefix}{frame:0{self.padding}d}{self.suffix}"

    @property
    def name_pattern(self) -> str:
        """The file-name part, e.g. ``plate.####.exr`` (``%d`` when unpadded)."""
        token = "#" * self.padding if self.padding else "%d"
        return f"{self.prefix}{token}{self.suffix}"

    def __str__(self) -> str:
        return str(self.directory / self.name_pattern)

    def frame_of(self, file_name: str) -> int | None:
        """The frame number of ``file_name`` if it belongs to this sequence, else None."""
        if not (file_name.startswith(self.prefix) and file_name.endswith(self.suffix)):
            return None
        digits = file_name[len(self.prefix):len(file_name) - len(self.suffix)]
        if not digits.isdigit() or self.name(int(digits)) != file_name:
            return None  # wrong padding, e.g. plate.01.exr against plate.####.exr
        return int(digits)


def parse_pattern(path: PathLike) -> SequencePattern | None:
    """Split ``dir/name.%04d.ext``, ``name.####.ext`` or ``name.@@@@.ext``; None if no token."""
    p = Path(path)
    matches = list(_TOKEN.finditer(p.name))
    if not matches:
        return None
    if len(matches) > 1:
        raise InputError(p, "pattern has more than one frame-number token")
    m = matches[0]
    token = m.group(0)
    padding = int(m.group(1)) if token.startswith("%") and m.group(1) else (
        0 if token.startswith("%") else len(token))
    return SequencePattern(p.parent, p.name[:m.start()], padding, p.name[m.end():])


def find_frames(pattern: SequencePattern) -> dict[int, Path]:
    """Every existing file of a sequence, by frame number."""
    if not pattern.directory.is_dir():
        raise InputError(pattern.directory, "folder of the sequence does not exist")
    found: dict[int, Path] = {}
    for entry in pattern.directory.iterdir():
        frame = pattern.frame_of(entry.name)
        if frame is not None and entry.is_file():
            found[frame] = entry
    return dict(sorted(found.items()))


def missing_frames(frames: list[int]) -> list[int]:
    """Frame numbers absent between the first and last of ``frames`` (sorted)."""
    if not frames:
        return []
    present = set(frames)
    return [f for f in range(frames[0], frames[-1] + 1) if f not in present]


class Plates(ABC):
    """An ordered run of same-size frames, numbered and read lazily one at a time."""

    def __init__(self, source: Path, kind: str, frames: list[int], width: int, height: int,
                 fps: Fraction | None, encoding: Encoding) -> None:
        self.source = source
        self.kind = kind  # "sequence", "images", "image" or "video"
        self.frames = frames  # sorted frame numbers present
        self._present = frozenset(frames)
        self.width = width
        self.height = height
        self.fps = fps
        self.encoding = encoding  # "srgb" (display-referred) or "linear" (scene-linear)

    def __len__(self) -> int:
        return len(self.frames)

    def __contains__(self, frame: object) -> bool:
        return frame in self._present

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]

    @property
    def missing(self) -> list[int]:
        """Frame numbers that are absent between the first and the last (gaps)."""
        return missing_frames(self.frames)

    def read(self, frame: int) -> np.ndarray:
        """Frame ``frame`` as float32 H x W x C, decoded now (values as stored, normalised)."""
        if frame not in self:
            gap = " (a gap in the sequence)" if self.first <= frame <= self.last else ""
            raise InputError(self.source, f"has no frame {frame}{gap}; frames are "
                                          f"{self.first}-{self.last}")
        return self._read(frame)

    def items(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(frame, pixels)`` for every frame in order, one decoded at a time."""
        for frame in self.frames:
            yield frame, self.read(frame)

    def check(self, frame: int) -> None:
        """Decode ``frame`` fully without keeping it; InputError names what does not decode."""
        self.read(frame)

    def leave_out(self, frames: Collection[int]) -> None:
        """Drop ``frames`` (e.g. ones that do not decode): they become gaps in the numbers."""
        drop = set(frames)
        kept = [f for f in self.frames if f not in drop]
        if not kept:
            raise InputError(self.source, "no frame is left once the skipped frames are left out")
        self.frames = kept
        self._present = frozenset(kept)

    def summary(self) -> str:
        """One line for the artist: what was opened, its size, range and colour encoding."""
        gaps = f", {len(self.missing)} missing" if self.missing else ""
        rate = f", {float(self.fps):g} fps" if self.fps else ""
        return (f"{self.source}: {self.kind}, {len(self)} frames {self.first}-{self.last}{gaps}, "
                f"{self.width}x{self.height}, {self.encoding}{rate}")

    @abstractmethod
    def _read(self, frame: int) -> np.ndarray: ...

    def close(self) -> None:
        """Release open files (video plates keep a decoder open)."""

    def __enter__(self) -> Plates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImagePlates(Plates):
    """Plates stored as one image file per frame."""

    def __init__(self, source: Path, files: dict[int, Path], kind: str,
                 fps: Fraction | None) -> None:
        self.files = files
        width, height = _common_size(list(files.values()))
        super().__init__(source, kind, list(files), width, height, fps,
                         _common_encoding(source, files))

    def path(self, frame: int) -> Path:
        """The file holding ``frame``."""
        return self.files[frame]

    def _read(self, frame: int) -> np.ndarray:
        path = self.files[frame]
        image = read_image(path)
        self._check_size(path, image.width, image.height)
        return image.pixels

    def check(self, frame: int) -> None:
        """Decode ``frame``'s file fully (without converting its pixels to float)."""
        path = self.files[frame]
        self._check_size(path, *check_image(path))

    def _check_size(self, path: Path, width: int, height: int) -> None:
        if (width, height) != (self.width, self.height):
            raise InputError(path, f"decodes to {width}x{height}, the header said {self.width}x{self.height}")

    def leave_out(self, frames: Collection[int]) -> None:
        super().leave_out(frames)
        self.files = {f: p for f, p in self.files.items() if f in self}


class VideoPlates(Plates):
    """Plates decoded from one video file (frame-accurate random access), numbered at ``fps``
    (the video's nominal rate when None) through :attr:`frame_map`, and upright."""

    def __init__(self, source: Path, start_frame: int, fps: Fraction | None) -> None:
        self.reader = VideoReader(source)
        try:
            rate = fps if fps is not None else self.reader.nominal_fps
            self.frame_map: FrameMap = map_frames(self.reader.times, self.reader.duration, rate)
        except BaseException:
            self.reader.close()
            raise
        self.start_frame = start_frame
        frames = list(range(start_frame, start_frame + len(self.frame_map)))
        super().__init__(source, "video", frames, self.reader.width, self.reader.height, rate, "srgb")

    def source_index(self, frame: int) -> int:
        """The video's frame (presentation order, from 0) that plate ``frame`` shows."""
        return self.frame_map.source[frame - self.start_frame]

    def _read(self, frame: int) -> np.ndarray:
        try:
            return self.reader.read(self.source_index(frame))
        except FrameDecodeError as exc:  # named by the plate's frame number, not the video's index
            raise InputError(self.source, f"cannot decode frame {frame} (frame {exc.index} of the video, "
                                          f"counting from 0): {exc.reason}") from None

    def video_summary(self) -> str:
        """One line on the video itself: codec, depth, rotation, and how its frames were numbered."""
        r = self.reader
        turn = (f", {r.orientation.describe()}: {r.coded_width}x{r.coded_height} stored, "
                f"{r.width}x{r.height} upright") if not r.orientation.is_upright else ""
        return f"{r.codec} {r.pixel_format} ({r.bit_depth}-bit){turn}; {self.frame_map.summary()}"

    def summary(self) -> str:
        return f"{super().summary()}; {self.video_summary()}"

    def report(self) -> dict[str, object]:
        """What opening the video did, for ``plates.json``: codec, depth, colour tags,
        orientation, sizes and the frame mapping (every plate frame's source frame)."""
        r = self.reader
        mapping = self.frame_map.to_dict()
        source_index = mapping.pop("source_index")
        return {"source": str(self.source), "codec": r.codec, "pixel_format": r.pixel_format,
                "bit_depth": r.bit_depth, "decoded_as": "float32 from 16-bit RGB" if r.bit_depth > 8 else
                "float32 from 8-bit RGB", "colour": r.colour_tags,
                "stored_size": [r.coded_width, r.coded_height], "size": [self.width, self.height],
                "rotation_degrees": r.orientation.degrees, "mirrored": r.orientation.mirrored,
                "first_frame": self.start_frame, "summary": self.video_summary(), **mapping,
                "frames_to_source": {str(self.start_frame + n): k for n, k in enumerate(source_index)}}

    def close(self) -> None:
        self.reader.close()


def open_plates(path: PathLike, start_frame: int | None = None,
                fps: Fraction | float | int | None = None) -> Plates:
    """Open footage as plates (see the module doc for what ``path`` may be).

    ``start_frame``: the first frame number for unnumbered images and video (default
    1001); for a numbered sequence it renumbers the files so the first is ``start_frame``
    (gaps kept), and None keeps the files' own numbers. ``fps`` labels the plates'
    rate (a video's own rate when None). Raises InputError naming the bad file.
    """
    p = Path(path)
    rate = Fraction(fps).limit_denominator(1001000) if fps is not None else None
    pattern = parse_pattern(p) if not p.exists() else None
    if pattern is not None:
        files = find_frames(pattern)
        if not files:
            raise InputError(p, "no files match this sequence pattern")
        return ImagePlates(p, _renumber(files, start_frame), "sequence", rate)
    if not p.exists():
        raise InputError(p, "plates do not exist")
    if p.is_dir():
        kind, files = _scan_folder(p, start_frame)
        return ImagePlates(p, files, kind, rate)
    suffix = p.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return VideoPlates(p, _start(start_frame), rate)
    if suffix in IMAGE_SUFFIXES:
        return ImagePlates(p, {_start(start_frame): p}, "image", rate)
    raise InputError(p, f"is neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                        f"a video ({', '.join(sorted(VIDEO_SUFFIXES))}) nor a folder")


def undecodable_frames(plates: Plates) -> dict[int, InputError]:
    """Decode every frame once, one at a time in order (a progress bar shows it): the frames
    that do not decode, each with the one-line error naming its file or frame number."""
    bad: dict[int, InputError] = {}
    what = f"extracting {len(plates)} frames from {plates.source.name}" if isinstance(plates, VideoPlates) \
        else f"decoding {len(plates)} plates"
    for frame in track(plates.frames, what):
        try:
            plates.check(frame)
        except InputError as exc:
            bad[frame] = exc
    return bad


def _start(start_frame: int | None) -> int:
    return DEFAULT_START_FRAME if start_frame is None else int(start_frame)


def _renumber(files: dict[int, Path], start_frame: int | None) -> dict[int, Path]:
    """Shift a sequence's frame numbers so the first is ``start_frame`` (None: keep them)."""
    if start_frame is None:
        return files
    shift = int(start_frame) - next(iter(files))
    return {frame + shift: path for frame, path in files.items()}


def _scan_folder(folder: Path, start_frame: int | None) -> tuple[str, dict[int, Path]]:
    """Classify a folder's images as one numbered sequence or a set sorted by name."""
    images = sorted(e for e in folder.iterdir()
                    if e.suffix.lower() in IMAGE_SUFFIXES and not e.name.startswith(".")
                    and e.is_file())
    if not images:
        raise InputError(folder, f"holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    groups: dict[tuple[str, str], list[Path]] = {}
    loose: list[Path] = []
    for image in images:
        m = _NUMBERED.match(image.name)
        if m:
            groups.setdefault((m["prefix"], m["suffix"]), []).append(image)
        else:
            loose.append(image)
    if len(groups) == 1 and not loose:
        (prefix, suffix), members = next(iter(groups.items()))
        pattern = SequencePattern(folder, prefix, _padding(members, prefix, suffix), suffix)
        files: dict[int, Path] = {}
        for member in members:
            frame = pattern.frame_of(member.name)
            if frame is None:
                raise InputError(member, f"does not follow the padding of the sequence {pattern}")
            files[frame] = member
        return "sequence", _renumber(dict(sorted(files.items())), start_frame)
    sequences = {k: v for k, v in groups.items() if len(v) > 1}
    if sequences:
        names = ", ".join(
            f"{SequencePattern(folder, prefix, _padding(v, prefix, suffix), suffix).name_pattern}"
            f" ({len(v)} files)" for (prefix, suffix), v in sorted(sequences.items()))
        others = len(images) - sum(len(v) for v in sequences.values())
        extra = f" and {others} other images" if others else ""
        raise InputError(folder, f"mixes numbered sequences {names}{extra}; "
                                 "open one by its pattern (e.g. name.####.exr)")
    first = _start(start_frame)
    return "images", {first + i: image for i, image in enumerate(images)}


def _padding(files: list[Path], prefix: str, suffix: str) -> int:
    """The padding a folder's sequence uses: the digit count if zero-padded, else 0."""
    digits = [f.name[len(prefix):len(f.name) - len(suffix)] for f in files]
    zero_padded = [len(d) for d in digits if len(d) > 1 and d.startswith("0")]
    if zero_padded:
        return min(zero_padded)
    lengths = {len(d) for d in digits}
    return lengths.pop() if len(lengths) == 1 else 0


def _common_size(files: list[Path]) -> tuple[int, int]:
    """The one size every file's header declares; InputError names the first odd file."""
    first = files[0]
    width, height = image_size(first)
    for f in files[1:]:
        size = image_size(f)
        if size != (width, height):
            raise InputError(f, f"is {size[0]}x{size[1]} but {first.name} is {width}x{height}; "
                                "all plates must share one size")
    return width, height


def _common_encoding(source: Path, files: dict[int, Path]) -> Encoding:
    """scene-linear for EXR, sRGB for PNG/JPEG; a mix of the two is refused."""
    linear = {p.suffix.lower() in EXR_SUFFIXES for p in files.values()}
    if len(linear) > 1:
        raise InputError(source, "mixes scene-linear EXR with display-referred PNG/JPEG images")
    return "linear" if linear.pop() else "srgb"
