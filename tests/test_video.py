"""Video I/O: H.264 review movies and frame-accurate reading, on real photos."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from splatfx.core.errors import InputError
from splatfx.io.images import read_image
from splatfx.io.video import VideoReader, pick_encoder, write_mp4


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10.0 * np.log10(np.mean((a.astype(np.float64) - b) ** 2)))


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
