"""Video I/O: H.264 review movies and frame-accurate reading, on real photos."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import av
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

from splatfx.core.errors import InputError
from splatfx.io.images import read_image
from splatfx.io.video import VideoReader, map_frames, nominal_rate, pick_encoder, write_mp4


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10.0 * np.log10(np.mean((a.astype(np.float64) - b) ** 2)))


def make_clip(path: Path, frames: list[np.ndarray], *, codec: str = "libx264", pix_fmt: str = "yuv420p",
              ticks: list[int] | None = None, timescale: int = 600, rotation: int = 0, hflip: bool = False,
              options: dict[str, str] | None = None) -> Path:
    """A clip as a phone or camera writes one: float RGB frames encoded with ``codec`` in
    ``pix_fmt`` (BT.709 limited range, tagged), each stamped at ``ticks`` of a 1/``timescale``
    clock (iPhones use 600; default: 20 ticks apart, 30 fps), and a display matrix that
    rotates by ``rotation`` degrees counter-clockwise (then mirrors with ``hflip``)."""
    ticks = ticks if ticks is not None else [20 * i for i in range(len(frames))]
    deep = "10" in pix_fmt
    with av.open(str(path), "w", options={"video_track_timescale": str(timescale)}) as container:
        steps = sorted(b - a for a, b in zip(ticks, ticks[1:])) or [timescale // 30]
        stream = container.add_stream(codec, rate=Fraction(timescale, steps[len(steps) // 2]))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        stream.time_base = Fraction(1, timescale)
        ctx = stream.codec_context
        ctx.time_base = Fraction(1, timescale)  # frames keep their exact ticks (no rounding to 1/fps)
        ctx.colorspace, ctx.color_range = Colorspace.ITU709, ColorRange.MPEG
        ctx.color_primaries, ctx.color_trc = ColorPrimaries.BT709, ColorTrc.IEC61966_2_1
        quiet = {"x265-params": "log-level=error"} if codec == "libx265" else {}
        stream.options = {**quiet, **(options or {"crf": "16", "preset": "veryfast"})}
        if rotation or hflip:
            stream.set_display_rotation(rotation, hflip=hflip)
        for pixels, tick in zip(frames, ticks, strict=True):
            codes = np.round(np.clip(pixels, 0, 1) * (65535 if deep else 255)).astype(np.uint16 if deep else np.uint8)
            rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(codes), format="rgb48le" if deep else "rgb24")
            frame = rgb.reformat(format=pix_fmt, dst_colorspace=Colorspace.ITU709, src_color_range=ColorRange.JPEG,
                                 dst_color_range=ColorRange.MPEG)
            frame.colorspace, frame.color_range = Colorspace.ITU709, ColorRange.MPEG
            frame.pts, frame.time_base = tick, Fraction(1, timescale)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def south_images(data_dir: Path, count: int, step: int = 2) -> list[np.ndarray]:
    """The first ``count`` south_building photos (768x576) at 1/``step`` size by block means
    (384x288 by default), as a camera's downscaler would make them."""
    files = sorted((data_dir / "south_building" / "images").glob("*.JPG"))[:count]
    shrink = lambda a: a.reshape(576 // step, step, 768 // step, step, 3).mean(axis=(1, 3))  # noqa: E731
    return [shrink(read_image(f).pixels.astype(np.float64)).astype(np.float32) for f in files]


@pytest.fixture(scope="module")
def south_frames(data_dir: Path) -> list[np.ndarray]:
    files = sorted((data_dir / "south_building" / "images").glob("*.JPG"))[:6]
    return [read_image(f).pixels for f in files]


@pytest.fixture(scope="module")
def gop_movie(south_frames: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 small frames with a keyframe every 5: random access has to seek across GOPs."""
    small = [f[::4, ::4] for f in south_frames]
    frames = [np.roll(small[i % 6], 3 * i, axis=1) for i in range(30)]  # every frame distinct
    path = tmp_path_factory.mktemp("gop") / "gop.mp4"
    write_mp4(path, iter(frames), fps=25, crf=23, preset="veryfast", keyframe_interval=5)
    return path


def test_libx264_is_available() -> None:
    assert pick_encoder() == "libx264"


def test_mp4_of_south_building_reads_back(south_frames: list[np.ndarray], tmp_path: Path) -> None:
    path = tmp_path / "review.mp4"
    movie = write_mp4(path, iter(south_frames), fps=Fraction(24000, 1001), crf=18)
    assert (movie.frames, movie.width, movie.height, movie.encoder) == (6, 768, 576, "libx264")
    assert [p.name for p in tmp_path.iterdir()] == ["review.mp4"]  # no temporary left behind
    with VideoReader(path) as video:
        assert (len(video), video.width, video.height, video.codec) == (6, 768, 576, "h264")
        assert video.fps == Fraction(24000, 1001)
        decoded = list(video)
    scores = [psnr(d, o) for d, o in zip(decoded, south_frames)]
    assert len(decoded) == 6
    assert min(scores) > 32.0, scores
    # Each decoded frame matches its own original far better than its neighbour.
    assert psnr(decoded[0], south_frames[1]) < min(scores) - 10


def test_random_access_equals_sequential_decode(gop_movie: Path) -> None:
    with VideoReader(gop_movie) as video:
        sequential = list(video)
        assert len(video.keyframes) >= 6 and video.keyframes[0] == 0
    assert len(sequential) == 30
    order = np.random.default_rng(0).permutation(30).tolist() + [29, 0, 12, 13, 14, 3]
    with VideoReader(gop_movie) as video:
        for i in order:
            assert np.array_equal(video.read(i), sequential[i]), i
        with pytest.raises(IndexError):
            video.read(30)


def test_colour_round_trip_uses_one_matrix(tmp_path: Path) -> None:
    """A flat colour survives RGB -> BT.709 YUV -> RGB within 8-bit YUV precision."""
    rgb = np.float32([0.8, 0.2, 0.1])
    frames = [np.broadcast_to(rgb, (64, 96, 3))] * 3
    write_mp4(tmp_path / "flat.mp4", frames, fps=24)
    with VideoReader(tmp_path / "flat.mp4") as video:
        back = video.read(1).reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(back, rgb, atol=2.5 / 255)


def test_odd_size_is_padded_to_even(south_frames: list[np.ndarray], tmp_path: Path) -> None:
    frames = [f[300:375, 300:401] for f in south_frames[:2]]  # textured (the corner is sky)
    movie = write_mp4(tmp_path / "odd.mp4", frames, fps=24)
    assert (movie.width, movie.height) == (102, 76)
    with VideoReader(tmp_path / "odd.mp4") as video:
        first = video.read(0)
    assert first.shape == (76, 102, 3)
    assert 28.0 < psnr(first[:75, :101], frames[0]) < 60.0
    np.testing.assert_allclose(first[75], first[74], atol=0.05)  # padding repeats the edge


def test_failed_write_leaves_nothing(south_frames: list[np.ndarray], tmp_path: Path) -> None:
    frames = [south_frames[0][:64, :64], south_frames[1][:64, :80]]
    with pytest.raises(ValueError, match="the first was 64x64"):
        write_mp4(tmp_path / "bad.mp4", frames, fps=24)
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(tmp_path / "empty.mp4", [], fps=24)
    assert not list(tmp_path.iterdir())


def test_unreadable_video_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "plate.mp4"
    bad.write_bytes(np.random.default_rng(1).bytes(20000))
    with pytest.raises(InputError, match="not a readable video") as err:
        VideoReader(bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)


def test_missing_video_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as err:
        VideoReader(tmp_path / "gone.mp4")
    assert str(tmp_path / "gone.mp4") in str(err.value)


def test_truncated_video_is_reported(gop_movie: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(gop_movie.read_bytes()[: gop_movie.stat().st_size // 2])
    with pytest.raises(InputError) as err:
        with VideoReader(cut) as video:
            for _ in video:
                pass
    assert str(cut) in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- phone and camera video (issue #16)


def test_hevc_and_h264_encoders_are_available_for_test_clips() -> None:
    """PyAV's bundled FFmpeg encodes H.264 (libx264), HEVC (libx265, 8 and 10 bit) and ProRes."""
    for name in ("libx264", "libx265", "prores_ks"):
        av.codec.Codec(name, "w")
    assert "yuv420p10le" in {f.name for f in av.codec.Codec("libx265", "w").video_formats}


@pytest.mark.parametrize("codec, suffix, name", [("libx265", ".mov", "hevc"), ("libx264", ".mp4", "h264")])
def test_phone_clip_of_south_building_reads_back(data_dir: Path, tmp_path: Path, codec: str, suffix: str,
                                                 name: str) -> None:
    frames = south_images(data_dir, 6)
    clip = make_clip(tmp_path / f"clip{suffix}", frames, codec=codec)
    with VideoReader(clip) as video:
        assert (video.codec, len(video), video.width, video.height, video.bit_depth) == (name, 6, 384, 288, 8)
        assert video.nominal_fps == 30 and video.orientation.is_upright
        decoded = list(video)
    scores = [psnr(d, f) for d, f in zip(decoded, frames)]
    assert min(scores) > 31.0, scores
    assert psnr(decoded[2], frames[3]) < min(scores) - 10  # each frame is its own photo


@pytest.mark.parametrize("rotation, hflip, turn", [
    (-90, False, lambda a: np.rot90(a, -1)),  # a phone held upright: stored landscape, shown portrait
    (90, False, lambda a: np.rot90(a, 1)),
    (180, False, lambda a: a[::-1, ::-1]),
    (90, True, lambda a: np.rot90(a, 1)[:, ::-1]),  # rotated, then mirrored (a front camera)
])
def test_rotated_clip_comes_out_upright(data_dir: Path, tmp_path: Path, rotation: int, hflip: bool,
                                        turn) -> None:  # type: ignore[no-untyped-def]
    frames = [f[:, :352] for f in south_images(data_dir, 2)]  # 352x288: not square, so a turn shows
    clip = make_clip(tmp_path / "portrait.mov", frames, rotation=rotation, hflip=hflip)
    with av.open(str(clip)) as container:  # what ffprobe would say: the display matrix is there
        first = next(container.decode(video=0))
        assert first.rotation == (rotation if rotation != 180 else -180)
        assert (first.width, first.height) == (352, 288)
    with VideoReader(clip) as video:
        upright = turn(frames[1])
        assert (video.height, video.width) == upright.shape[:2]
        assert (video.coded_width, video.coded_height) == (352, 288)
        assert video.orientation.mirrored == hflip
        pixels = video.read(1)
    assert pixels.shape == upright.shape and pixels.flags.c_contiguous
    assert psnr(pixels, upright) > 32.0
    wrong = turn(frames[1])[::-1]  # the same turn upside down: must not match
    assert psnr(pixels, wrong) < psnr(pixels, upright) - 15


def test_a_clip_turned_by_an_odd_angle_is_refused(data_dir: Path, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "tilted.mp4", south_images(data_dir, 1, step=8), rotation=30)
    with pytest.raises(InputError, match="turns the picture by") as err:
        VideoReader(clip)
    assert str(err.value).startswith(f"{clip}: ") and "\n" not in str(err.value)


def brute_force_map(times: list[float], duration: float, fps: float) -> list[int]:
    """Nearest source time for every output time n / fps inside the duration (ties: earlier)."""
    out = []
    n = 0
    while n / fps < duration - 1e-9:
        gaps = [abs(t - n / fps) for t in times]
        out.append(min(range(len(times)), key=lambda k: (round(gaps[k], 9), k)))
        n += 1
    return out


# An iPhone-like variable-rate clip at a nominal 30 fps on a 1/600 clock: the phone stalled once
# (40 ticks: source frame 2 fills two frames) and once sent a frame 10 ticks early (frame 5,
# which no 30 fps frame needs).
VFR_TICKS = [0, 20, 40, 80, 100, 110, 120, 140, 160, 180, 200, 220]


def test_variable_rate_clip_maps_each_frame_to_the_nearest_source_frame(data_dir: Path, tmp_path: Path) -> None:
    frames = south_images(data_dir, len(VFR_TICKS), step=4)
    clip = make_clip(tmp_path / "vfr.mov", frames, ticks=VFR_TICKS)
    with VideoReader(clip) as video:
        assert [t * 600 for t in video.times] == VFR_TICKS
        assert video.duration == Fraction(240, 600) and video.nominal_fps == 30
        mapping = map_frames(video.times, video.duration, video.nominal_fps)
        assert mapping.source == (0, 1, 2, 2, 3, 4, 6, 7, 8, 9, 10, 11)
        assert (mapping.dropped, mapping.doubled, mapping.repeats, mapping.variable) == (1, 1, 1, True)
        assert (mapping.interval_min, mapping.interval_max) == (Fraction(10, 600), Fraction(40, 600))
        assert mapping.interval_mean == Fraction(20, 600)
        line = mapping.summary()
        assert "12 source frames, variable rate" in line and "16.67-66.67 ms" in line
        assert line.endswith("mapped to 12 frames at 30 fps by nearest time: 1 source frames dropped, 1 doubled")
        for fps in (24, 25, Fraction(30000, 1001), 60):  # other rates against a brute-force search
            other = map_frames(video.times, video.duration, Fraction(fps))
            assert list(other.source) == brute_force_map([float(t) for t in video.times], 0.4, float(fps)), fps
            assert other.dropped == 12 - len(set(other.source))
        # The frames read are the photos the map names (a doubled frame twice, without a re-decode).
        for n, k in enumerate(mapping.source):
            pixels = video.read(k)
            assert psnr(pixels, frames[k]) > 27.0, (n, k)
            assert psnr(pixels, frames[k]) > max(psnr(pixels, f) for j, f in enumerate(frames) if j != k) + 5


def test_constant_rate_video_at_its_own_rate_maps_one_to_one() -> None:
    for rate, base in ((Fraction(30000, 1001), Fraction(1, 30000)), (Fraction(24), Fraction(1, 15360)),
                       (Fraction(25), Fraction(1, 1000))):
        step = (1 / rate / base)
        ticks = [round(i * step) for i in range(500)]  # a coarse clock rounds each stamp
        times = [t * base for t in ticks]
        mapping = map_frames(times, (ticks[-1] + round(step)) * base, nominal_rate(
            [b - a for a, b in zip(times, times[1:])]) or rate)
        assert mapping.fps == rate and mapping.one_to_one and len(mapping) == 500, rate
        assert mapping.summary().endswith("1:1 as 500 frames at " + f"{float(rate):.3f}".rstrip("0").rstrip(".")
                                          + " fps (none dropped or doubled)")
    # 30 fps played at 24: one source frame in five is dropped, none doubled.
    times = [Fraction(i, 30) for i in range(300)]
    mapping = map_frames(times, Fraction(10), Fraction(24))
    assert (len(mapping), mapping.dropped, mapping.doubled) == (240, 60, 0)


LOSSLESS_X265 = {"x265-params": "lossless=1:log-level=error"}


@pytest.mark.parametrize("codec, options, worst", [
    ("libx265", LOSSLESS_X265, 0.5),  # only the 10-bit YUV rounding remains
    ("prores_ks", {"profile": "4", "bits_per_mb": "8000"}, 2.0),  # ProRes 4444, as cinema cameras record
])
def test_ten_bit_video_keeps_more_than_eight_bits(data_dir: Path, tmp_path: Path, codec: str,
                                                  options: dict[str, str], worst: float) -> None:
    # Photos downsampled by block means hold values between the 8-bit codes, as a 10-bit camera records.
    fine = south_images(data_dir, 1, step=4)[0]
    ten = make_clip(tmp_path / "ten.mov", [fine] * 3, codec=codec, pix_fmt="yuv444p10le", options=options)
    eight = make_clip(tmp_path / "eight.mov", [fine] * 3, codec="libx265", pix_fmt="yuv444p", options=LOSSLESS_X265)
    with VideoReader(ten) as video:
        assert video.bit_depth >= 10  # ProRes 4444 decodes as 12-bit
        decoded = video.read(1)
    with VideoReader(eight) as video:
        assert video.bit_depth == 8
        through_eight_bits = video.read(1)
    assert decoded.dtype == np.float32
    assert (np.abs(decoded * 255 - np.round(decoded * 255)) > 0.1).mean() > 0.5  # between the 8-bit codes
    error, error_8 = np.abs(decoded - fine), np.abs(through_eight_bits - fine)
    assert error.mean() < 0.5 * error_8.mean(), (error.mean(), error_8.mean())
    assert error.max() < worst / 255, error.max() * 255


def test_ten_bit_hevc_main10_as_phones_record(data_dir: Path, tmp_path: Path) -> None:
    frames = south_images(data_dir, 3)
    clip = make_clip(tmp_path / "hdr.mov", frames, codec="libx265", pix_fmt="yuv420p10le")
    with VideoReader(clip) as video:
        assert (video.codec, video.bit_depth) == ("hevc", 10)
        decoded = list(video)
    assert min(psnr(d, f) for d, f in zip(decoded, frames)) > 32.0
    assert len(np.unique(np.round(decoded[0][..., 1] * 65535))) > 256  # more levels than 8 bits hold
