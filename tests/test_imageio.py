"""Still-image I/O: colour curves, quantisation, PNG/JPEG/EXR round trips, bad files."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from PIL import Image as PILImage

from splatfx.core import color
from splatfx.core.errors import InputError, OutputError
from splatfx.io.images import (
    image_size,
    layers,
    pack_layer,
    pack_rgba,
    read_exr,
    read_image,
    unpack_layer,
    unpack_rgba,
    write_exr,
    write_image,
    write_jpeg,
    write_png,
)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10.0 * np.log10(np.mean((a.astype(np.float64) - b) ** 2)))


def assert_one_line_naming(err: pytest.ExceptionInfo[InputError], path: Path) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message


# --------------------------------------------------------------------------- colour


def test_srgb_curve_matches_the_standard() -> None:
    encoded = np.array([0.0, 0.04045, 0.5, 1.0], dtype=np.float32)
    expected = np.array([0.0, 0.04045 / 12.92, ((0.5 + 0.055) / 1.055) ** 2.4, 1.0])
    np.testing.assert_allclose(color.srgb_to_linear(encoded), expected, rtol=1e-6, atol=1e-9)
    # 18% grey encodes to the well-known 0.4613561...
    assert color.linear_to_srgb(np.float32(0.18)) == pytest.approx(0.46135612, abs=1e-6)
    # The two segments meet: no jump at the knee on either side.
    knee = color.srgb_to_linear(np.array([0.04045 - 1e-6, 0.04045 + 1e-6], dtype=np.float32))
    assert abs(float(knee[1] - knee[0])) < 1e-6


def test_srgb_curve_inverts_beyond_zero_one() -> None:
    x = np.linspace(-0.5, 4.0, 10001, dtype=np.float32)
    np.testing.assert_allclose(color.linear_to_srgb(color.srgb_to_linear(x)), x, atol=2e-6)
    assert color.srgb_to_linear(x).dtype == np.float32


def test_quantisation_rounds_to_nearest_and_clips() -> None:
    values = np.array([0.0, 0.49 / 255, 0.51 / 255, 127.49 / 255, 127.51 / 255, 1.0, 1.5, -0.2,
                       np.nan], dtype=np.float32)
    assert color.to_uint8(values).tolist() == [0, 0, 1, 127, 128, 255, 255, 0, 0]
    codes8 = np.arange(256, dtype=np.uint8)
    codes16 = np.arange(65536, dtype=np.uint16)
    assert np.array_equal(color.to_uint8(color.from_uint8(codes8)), codes8)
    assert np.array_equal(color.to_uint16(color.from_uint16(codes16)), codes16)
    assert color.from_uint16(codes16).dtype == np.float32


# --------------------------------------------------------------------------- PNG / JPEG


def test_lego_pngs_are_rgba_200(data_dir: Path) -> None:
    files = sorted((data_dir / "lego_200" / "train").glob("*.png"))
    assert len(files) == 100
    assert {image_size(f) for f in files} == {(200, 200)}
    image = read_image(files[0])
    assert image.pixels.shape == (200, 200, 4)
    assert image.pixels.dtype == np.float32
    assert (image.encoding, image.bit_depth) == ("srgb", 8)
    raw = np.asarray(PILImage.open(files[0]))
    np.testing.assert_array_equal(image.pixels, raw.astype(np.float32) / 255)
    assert 0.0 < image.pixels[..., 3].mean() < 1.0  # a real alpha matte, not constant


def test_png8_round_trip_is_exact(data_dir: Path, tmp_path: Path) -> None:
    image = read_image(data_dir / "lego_200" / "train" / "r_3.png").pixels
    write_png(tmp_path / "copy.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "copy.png").pixels, image)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png16_round_trip_is_exact(tmp_path: Path, channels: int) -> None:
    codes = np.random.default_rng(channels).integers(0, 65536, (37, 53, channels),
                                                      dtype=np.uint16)
    write_png(tmp_path / "deep.png", color.from_uint16(codes), bit_depth=16)
    image = read_image(tmp_path / "deep.png")
    assert (image.bit_depth, image.pixels.shape) == (16, codes.shape)
    np.testing.assert_array_equal(color.to_uint16(image.pixels), codes)


def test_png16_keeps_precision_8bit_loses(data_dir: Path, tmp_path: Path) -> None:
    photo = read_image(data_dir / "south_building" / "images" / "P1180141.JPG").pixels
    linear = color.srgb_to_linear(photo)  # smooth values that need more than 8 bits
    write_png(tmp_path / "l16.png", linear, bit_depth=16)
    write_png(tmp_path / "l8.png", linear, bit_depth=8)
    err16 = np.abs(read_image(tmp_path / "l16.png").pixels - linear).max()
    err8 = np.abs(read_image(tmp_path / "l8.png").pixels - linear).max()
    assert err16 <= 0.5 / 65535 + 1e-7
    assert err8 <= 0.5 / 255 + 1e-7
    assert err8 > 50 * err16


def test_south_building_jpeg_reads_and_rewrites(data_dir: Path, tmp_path: Path) -> None:
    image = read_image(data_dir / "south_building" / "images" / "P1180141.JPG")
    assert image.pixels.shape == (576, 768, 3)
    assert (image.encoding, image.bit_depth) == ("srgb", 8)
    write_jpeg(tmp_path / "again.jpg", image.pixels, quality=95)
    assert psnr(read_image(tmp_path / "again.jpg").pixels, image.pixels) > 38.0


def test_write_image_dispatches_on_suffix(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).random((8, 9, 3), dtype=np.float32)
    for name in ("a.png", "a.jpg", "a.exr"):
        write_image(tmp_path / name, pixels)
        back = read_image(tmp_path / name)
        assert back.pixels.shape == pixels.shape
    assert read_image(tmp_path / "a.exr").encoding == "linear"
    np.testing.assert_array_equal(read_image(tmp_path / "a.exr").pixels, pixels)
    with pytest.raises(ValueError):
        write_jpeg(tmp_path / "rgba.jpg", np.zeros((4, 4, 4), np.float32))


# --------------------------------------------------------------------------- EXR


def render_layers(h: int = 24, w: int = 31) -> dict[str, np.ndarray]:
    """A frame like the renderer writes: premultiplied RGBA, depth, motion, mask, ids."""
    rng = np.random.default_rng(7)
    rgba = rng.random((h, w, 4), dtype=np.float32) * 4.0  # HDR values above 1
    rgba[..., :3] *= rgba[..., 3:4] / 4.0
    depth = rng.random((h, w), dtype=np.float32) * 50.0
    depth[0, :5] = np.inf  # background
    depth[1, 0] = np.nan
    channels = pack_rgba(rgba)
    channels.update(pack_layer("depth", depth, ("Z",)))
    channels.update(pack_layer("motion", rng.normal(size=(h, w, 2)).astype(np.float32), "uv"))
    channels["mask.synthetic"] = (rng.random((h, w)) > 0.5).astype(np.float32)
    channels["id"] = rng.integers(0, 2**32, (h, w), dtype=np.uint32)
    return channels


@pytest.mark.parametrize("compression", ["zip", "piz", "none"])
def test_exr_multilayer_round_trip_is_bit_exact(tmp_path: Path, compression: str) -> None:
    channels = render_layers()
    path = tmp_path / f"render.1001.{compression}.exr"
    write_exr(path, channels, half={"mask.synthetic"}, compression=compression, frame=1001,
              fps=Fraction(24000, 1001), attributes={"splatfx/stage": "render",
                                                     "splatfx/scene_sha256": "ab12" * 16})
    got, header = read_exr(path)
    assert set(got) == set(channels)
    for name, original in channels.items():
        stored = got[name]
        assert stored.shape == original.shape
        assert stored.dtype == (np.uint32 if name == "id" else np.float32)
        assert np.array_equal(stored.view(np.uint32), original.view(np.uint32)), name
    assert header.pixel_types["mask.synthetic"] == "half"
    assert header.pixel_types["depth.Z"] == "float"
    assert header.pixel_types["id"] == "uint"
    assert (header.width, header.height, header.compression) == (31, 24, compression)
    assert header.frame == 1001
    assert header.fps == Fraction(24000, 1001)
    assert header.attributes["splatfx/stage"] == "render"
    assert layers(got) == {"": ["A", "B", "G", "R", "id"], "depth": ["Z"],
                           "mask": ["synthetic"], "motion": ["u", "v"]}
    np.testing.assert_array_equal(unpack_layer(got, "motion", ("u", "v")),
                                  np.stack([channels["motion.u"], channels["motion.v"]], -1))


def test_exr_half_rounds_like_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    exact = rng.integers(-2048, 2048, (16, 16)).astype(np.float32) / 64  # representable in half
    inexact = rng.normal(size=(16, 16)).astype(np.float32)
    write_exr(tmp_path / "h.exr", {"R": exact, "G": inexact}, half=True)
    got, header = read_exr(tmp_path / "h.exr")
    assert header.pixel_types == {"R": "half", "G": "half"}
    np.testing.assert_array_equal(got["R"], exact)
    np.testing.assert_array_equal(got["G"], inexact.astype(np.float16).astype(np.float32))
    assert not np.array_equal(got["G"], inexact)


def test_exr_image_reads_rgba_as_linear(tmp_path: Path) -> None:
    channels = render_layers()
    write_exr(tmp_path / "r.exr", channels)
    image = read_image(tmp_path / "r.exr")
    assert (image.encoding, image.bit_depth) == ("linear", 32)
    np.testing.assert_array_equal(image.pixels, unpack_rgba(channels))
    assert image_size(tmp_path / "r.exr") == (31, 24)


def test_exr_data_window_is_placed_in_display_window(tmp_path: Path) -> None:
    ones = np.ones((2, 3), np.float32)
    header = {"dataWindow": (np.array([1, 1], np.int32), np.array([3, 2], np.int32)),
              "displayWindow": (np.array([0, 0], np.int32), np.array([4, 3], np.int32)),
              "compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {"R": ones, "G": 2 * ones, "B": 3 * ones}).write(str(tmp_path / "w.exr"))
    image = read_image(tmp_path / "w.exr").pixels
    assert image.shape == (4, 5, 3)
    expected = np.zeros((4, 5), np.float32)
    expected[1:3, 1:4] = 1.0
    np.testing.assert_array_equal(image[..., 0], expected)
    np.testing.assert_array_equal(image[..., 2], 3 * expected)


def test_write_exr_rejects_bad_channels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="others are"):
        write_exr(tmp_path / "x.exr", {"R": np.zeros((4, 4)), "G": np.zeros((4, 5))})
    with pytest.raises(ValueError, match="cannot be half"):
        write_exr(tmp_path / "x.exr", {"id": np.zeros((4, 4), np.uint32)}, half={"id"})
    with pytest.raises(ValueError, match="reserved"):
        write_exr(tmp_path / "x.exr", {"R": np.zeros((4, 4))}, attributes={"channels": "x"})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_write_exr_refuses_integers_the_header_cannot_hold(tmp_path: Path) -> None:
    """EXR header integers are 32-bit: a larger one wrapped around silently (or crashed beyond 64 bits)."""
    for value in (2**31, -2**31 - 1, 99999999999999999999):
        with pytest.raises(ValueError, match="32-bit"):
            write_exr(tmp_path / "x.exr", {"R": np.zeros((4, 4))}, attributes={"splatfx/seed": value})
        with pytest.raises(ValueError, match="32-bit"):
            write_exr(tmp_path / "x.exr", {"R": np.zeros((4, 4))}, frame=value)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- a full disk (issue #21 case 6)

@contextlib.contextmanager
def tiny_disk(folder: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes at ``folder`` (root only), as tests/test_resume.py mounts one."""
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


_WRITE_IN_CHILD = """
import resource, signal, sys
import numpy as np
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
from splatfx.core.errors import SplatfxError
from splatfx.io.images import write_exr
try:
    write_exr(sys.argv[1], {"R": np.random.default_rng(0).random((200, 200)).astype(np.float32)})
except SplatfxError as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_a_full_disk_while_writing_an_exr_names_the_frame_not_the_temporary(tmp_path: Path, how: str) -> None:
    pixels = {"R": np.random.default_rng(0).random((200, 200)).astype(np.float32)}  # 160 kB, does not compress
    if how == "tmpfs":
        with tiny_disk(tmp_path / "disk", 64 << 10) as disk:
            target = disk / "comp" / "comp.1015.exr"
            with pytest.raises(OutputError) as err:
                write_exr(target, pixels)
            assert str(err.value) == f"{target}: cannot write: No space left on device"
            assert list(target.parent.iterdir()) == []  # the temporary is gone
    else:
        target = tmp_path / "comp.1015.exr"
        done = subprocess.run([sys.executable, "-c", _WRITE_IN_CHILD, str(target)], capture_output=True, text=True,
                              timeout=120)
        assert done.stdout.strip() == f"OutputError {target}: cannot write: File too large", done.stderr
        assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- bad input


def test_corrupt_png_is_reported(data_dir: Path, tmp_path: Path) -> None:
    data = bytearray((data_dir / "lego_200" / "train" / "r_0.png").read_bytes())
    data[len(data) // 2:len(data) // 2 + 200] = bytes(200)  # wipe part of the pixel stream
    bad = tmp_path / "r_0.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError) as err:
        read_image(bad)
    assert_one_line_naming(err, bad)


def test_truncated_jpeg_is_reported(data_dir: Path, tmp_path: Path) -> None:
    data = (data_dir / "south_building" / "images" / "P1180141.JPG").read_bytes()
    bad = tmp_path / "P1180141.JPG"
    bad.write_bytes(data[: len(data) // 2])
    assert image_size(bad) == (768, 576)  # the header survives; the pixels do not
    with pytest.raises(InputError, match="truncated") as err:
        read_image(bad)
    assert_one_line_naming(err, bad)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as err:
        read_image(tmp_path / "nope.png")
    assert_one_line_naming(err, tmp_path / "nope.png")


def test_garbage_exr_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "render.1001.exr"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match="not an OpenEXR file") as err:
        read_exr(bad)
    assert_one_line_naming(err, bad)
    with pytest.raises(InputError):
        image_size(bad)


def test_truncated_exr_is_reported(tmp_path: Path) -> None:
    good = tmp_path / "good.exr"
    write_exr(good, render_layers())
    bad = tmp_path / "cut.exr"
    bad.write_bytes(good.read_bytes()[:-64])
    with pytest.raises(InputError, match="truncated or corrupt") as err:
        read_exr(bad)
    assert_one_line_naming(err, bad)


def test_unknown_suffix_is_reported(data_dir: Path, tmp_path: Path) -> None:
    odd = tmp_path / "frame.bmp"
    shutil.copy(data_dir / "lego_200" / "train" / "r_0.png", odd)
    with pytest.raises(InputError, match="unsupported image type") as err:
        read_image(odd)
    assert_one_line_naming(err, odd)
