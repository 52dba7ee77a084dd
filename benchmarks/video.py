"""Benchmark of reading phone video as plates: 1080p and UHD H.264 / HEVC (8 and 10 bit), portrait.

Usage::

    python benchmarks/video.py [--work DIR] [--frames 24] [--sizes 1920x1080] [--json FILE]

The clips are made once (kept in ``--work``) from ``south_building_full`` (24 camera photos,
3072x2304), each photo scaled to cover the size and centre-cropped, encoded with PyAV as a
phone records: 30 fps on a 1/600 clock, stored landscape with a display matrix rotating
-90 degrees (portrait). Timed: ``open_plates`` (demux index, first frame for the display
matrix) and reading every frame in order through the plates (decode, colour conversion to
float32 RGB, rotation upright), as ``splatfx init`` and the solve do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPLATFX_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "src"))

from splatfx.io.plates import open_plates  # noqa: E402

CODECS = (("h264-8bit", "libx264", "yuv420p"), ("hevc-8bit", "libx265", "yuv420p"),
          ("hevc-10bit", "libx265", "yuv420p10le"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/splatfx-bench-video"), help="kept between runs")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--sizes", default="1920x1080", help="comma-separated WxH, e.g. 1920x1080,3840x2160")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def photos(size: tuple[int, int], count: int) -> list[np.ndarray]:
    """South-building photos scaled to cover ``size`` and centre-cropped (uint8 RGB)."""
    files = sorted((DATA / "south_building_full" / "images").glob("*"))
    out = []
    for i in range(count):
        image = Image.open(files[i % len(files)]).convert("RGB")
        scale = max(size[0] / image.width, size[1] / image.height)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        left, top = (image.width - size[0]) // 2, (image.height - size[1]) // 2
        out.append(np.asarray(image.crop((left, top, left + size[0], top + size[1]))))
    return out


def make_clip(path: Path, frames: list[np.ndarray], codec: str, pix_fmt: str) -> None:
    with av.open(str(path), "w", options={"video_track_timescale": "600"}) as container:
        stream = container.add_stream(codec, rate=30)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt, stream.time_base = pix_fmt, Fraction(1, 600)
        stream.codec_context.time_base = Fraction(1, 600)
        stream.options = {"crf": "20", "preset": "veryfast",
                          **({"x265-params": "log-level=error"} if codec == "libx265" else {})}
        stream.set_display_rotation(-90)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts, frame.time_base = 20 * i, Fraction(1, 600)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    figures = []
    for text in args.sizes.split(","):
        size = tuple(int(v) for v in text.split("x"))
        frames: list[np.ndarray] | None = None
        for name, codec, pix_fmt in CODECS:
            clip = args.work / f"{name}-{text}-{args.frames}.mov"
            if not clip.exists():
                frames = frames or photos(size, args.frames)  # type: ignore[arg-type]
                make_clip(clip, frames, codec, pix_fmt)
            t0 = time.perf_counter()
            with open_plates(clip) as plates:
                opened = time.perf_counter() - t0
                t1 = time.perf_counter()
                for _, pixels in plates.items():
                    assert pixels.shape == (size[0], size[1], 3)  # upright: portrait
                read = time.perf_counter() - t1
                row = {"clip": name, "stored": text, "upright": f"{plates.width}x{plates.height}",
                       "frames": len(plates), "open_s": round(opened, 3),
                       "read_ms_per_frame": round(1000 * read / len(plates), 1),
                       "read_frames_per_s": round(len(plates) / read, 2)}
            figures.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
