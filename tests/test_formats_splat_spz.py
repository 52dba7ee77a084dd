"""The lossy web formats: ``.splat`` and Niantic ``.spz`` (splatfx.io.formats.splat/spz)."""

from __future__ import annotations

import gzip
import struct
import tracemalloc

import numpy as np
import pytest
import torch

from splatfx.core.errors import InputError
from splatfx.io.formats import GaussianArrays, read_gaussians, spz, splat, write_gaussians
from splatfx.core.sh import SH_C0, sh_basis
from test_formats_ply import fern_gaussians, random_arrays


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _rotation_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (radians) of the rotation between two sets of (unnormalised) quaternions."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 2 * np.arccos(np.clip(np.abs((a.astype(np.float64) * b).sum(axis=1)), 0, 1))


def _assert_same(a: GaussianArrays, b: GaussianArrays) -> None:
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# --- .splat ---------------------------------------------------------------------------------

# Documented tolerances of one trip through .splat (colours inside [0, 1]):
SPLAT_DC = 0.5 / 255 / SH_C0 + 1e-6     # 8-bit colour, in SH units
SPLAT_ALPHA = 0.5 / 255 + 1e-7          # 8-bit opacity, after the sigmoid
SPLAT_ANGLE = 0.016                     # 8-bit wxyz, radians
SPLAT_LOG_SCALE = 2.0**-23              # float32 scale


def test_splat_round_trip_within_tolerance_and_second_trip_exact(tmp_path):
    arrays = random_arrays(5000, 2, seed=1)
    first, second = tmp_path / "a.splat", tmp_path / "b.splat"
    splat.write_arrays(arrays, first)
    assert first.stat().st_size == 32 * 5000
    back = splat.read_arrays(first)
    assert back.sh_degree == 0 and back.extras == {}
    np.testing.assert_array_equal(back.means, arrays.means)
    # float32 scales: log-scales come back within one float32 step of the scale (2⁻²³)
    assert np.abs(back.log_scales - arrays.log_scales).max() <= SPLAT_LOG_SCALE
    assert (back.log_scales == arrays.log_scales).mean() > 0.9  # most exactly: exp is nudged for that
    assert np.abs(back.sh[:, 0] - arrays.sh[:, 0]).max() <= SPLAT_DC
    assert np.abs(_sigmoid(back.opacity_logits) - _sigmoid(arrays.opacity_logits)).max() <= SPLAT_ALPHA
    assert _rotation_angle(back.quats, arrays.quats).max() <= SPLAT_ANGLE
    splat.write_arrays(back, second)
    assert first.read_bytes() == second.read_bytes()
    _assert_same(splat.read_arrays(second), back)


def test_splat_record_layout(tmp_path):
    arrays = GaussianArrays(
        means=np.array([[1.0, -2.0, 3.5]], np.float32),
        quats=np.array([[2.0, 0.0, 0.0, 0.0]], np.float32),
        log_scales=np.log(np.array([[0.5, 0.25, 2.0]], np.float32)),
        opacity_logits=np.array([0.0], np.float32),
        sh=np.array([[[0.0, (1.0 - 0.5) / SH_C0, (0.0 - 0.5) / SH_C0]]], np.float32),
    )
    record = splat.encode(arrays)
    assert struct.unpack("<3f3f4B4B", record) == (1.0, -2.0, 3.5, 0.5, 0.25, 2.0,
                                                   128, 255, 0, 128,  # rgb 0.5→127.5→128, 1, 0; alpha 0.5→128
                                                   255, 128, 128, 128)  # q/|q| = (1,0,0,0) → 256 clamped


def test_splat_size_must_be_whole_records(tmp_path):
    path = tmp_path / "cut.splat"
    path.write_bytes(bytes(32 * 3 + 5))
    with pytest.raises(InputError, match=r"cut\.splat: \.splat size 101 is not a multiple of 32"):
        splat.read_arrays(path)


# --- .spz -----------------------------------------------------------------------------------

# Documented tolerances of one trip through .spz (12 fraction bits, values in range):
SPZ_POSITION = 0.5 / 4096 + 1e-6
SPZ_LOG_SCALE = 1 / 32 + 1e-6
SPZ_ALPHA = 0.5 / 255 + 1e-7
SPZ_DC = 0.5 / (0.15 * 255) + 1e-6
SPZ_SH1 = 4.5 / 128 + 1e-6
SPZ_SH_REST = 8.5 / 128 + 1e-6
SPZ_ANGLE_V3 = 0.004
SPZ_XYZ_V2 = 0.5 / 127.5 + 1e-6


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spz_round_trip_within_quantisation_and_second_trip_exact(tmp_path, degree):
    arrays = random_arrays(3000, degree, seed=degree)
    first, second = tmp_path / "a.spz", tmp_path / "b.spz"
    spz.write_arrays(arrays, first)
    back = spz.read_arrays(first)
    assert back.sh_degree == degree
    assert np.abs(back.means - arrays.means).max() <= SPZ_POSITION
    assert np.abs(back.log_scales - arrays.log_scales).max() <= SPZ_LOG_SCALE
    assert np.abs(_sigmoid(back.opacity_logits) - _sigmoid(arrays.opacity_logits)).max() <= SPZ_ALPHA
    assert np.abs(back.sh[:, 0] - arrays.sh[:, 0]).max() <= SPZ_DC
    if degree:
        assert np.abs(back.sh[:, 1:4] - arrays.sh[:, 1:4]).max() <= SPZ_SH1
        assert np.abs(back.sh[:, 4:] - arrays.sh[:, 4:]).max(initial=0) <= SPZ_SH_REST
    assert _rotation_angle(back.quats, arrays.quats).max() <= SPZ_ANGLE_V3
    spz.write_arrays(back, second)
    assert first.read_bytes() == second.read_bytes()
    _assert_same(spz.read_arrays(second), back)


def test_spz_header_and_rub_coordinates(tmp_path):
    arrays = random_arrays(2, 1, seed=9)
    arrays.means[0] = (1.0, 2.0, 3.0)
    arrays.quats[0] = (0.5, 0.5, 0.5, 0.5)
    arrays.sh[0, 1:] = [[0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [-0.5, -0.5, -0.5]]  # SH_1^{-1} (y), SH_1^0 (z), SH_1^1 (x)
    raw = gzip.decompress(spz.encode(arrays))
    assert struct.unpack_from("<IIIBBBB", raw) == (0x5053474E, 3, 2, 1, 12, 0, 0)
    fixed = np.frombuffer(raw[16:16 + 9], np.uint8).reshape(3, 3).astype(np.int32)
    values = fixed[:, 0] | fixed[:, 1] << 8 | fixed[:, 2] << 16
    values = (values ^ 0x800000) - 0x800000
    assert values.tolist() == [4096, -2 * 4096, -3 * 4096]  # RDF (1,2,3) is RUB (1,−2,−3)
    rotations = np.frombuffer(raw, np.uint8, count=8, offset=16 + 2 * (9 + 1 + 3 + 3))
    rub = spz._decode_smallest_three(rotations.reshape(2, 4))[0]  # wxyz as stored
    np.testing.assert_allclose(rub * np.sign(rub[0]), [0.5, 0.5, -0.5, -0.5], atol=2e-3)  # q ≡ −q
    sh = np.frombuffer(raw, np.uint8, count=9, offset=16 + 2 * (9 + 1 + 3 + 3 + 4)).reshape(3, 3)
    assert sh[:, 0].tolist() == [64, 96, 64]  # y and z terms negated, x term kept (bucketed by 8)


def test_spz_smallest_three_bit_layout():
    # wxyz (0.8, 0.6, 0, 0) is stored as xyzw (0.6, 0, 0, 0.8): w is dropped (index 3 in the
    # top two bits), x = round(511·0.6/√½) = 434 in bits 20..28, y and z zero
    codes = spz.encode_smallest_three(np.array([[0.8, 0.6, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], np.float32))
    assert codes.view("<u4")[:, 0].tolist() == [(3 << 30) | (434 << 20), 3 << 30]
    np.testing.assert_allclose(spz._decode_smallest_three(codes), [[0.8, 0.6, 0, 0], [1, 0, 0, 0]], atol=1e-3)


def test_spz_sh_sign_table_matches_the_basis_under_the_frame_change():
    dirs = torch.nn.functional.normalize(torch.randn(64, 3, dtype=torch.float64), dim=1)
    flipped = dirs * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    ratio = sh_basis(3, flipped)[:, 1:] / sh_basis(3, dirs)[:, 1:]
    np.testing.assert_allclose(ratio.median(dim=0).values.numpy(), spz.SH_FLIP, atol=1e-9)


def test_spz_reads_version_2(tmp_path):
    arrays = random_arrays(2000, 3, seed=4)
    path = tmp_path / "v2.spz"
    spz.write_arrays(arrays, path, version=2)
    assert spz.read_header(path)["version"] == 2
    back = spz.read_arrays(path)
    unit = arrays.quats / np.linalg.norm(arrays.quats, axis=1, keepdims=True)
    unit *= np.where(unit[:, :1] < 0, -1, 1)  # version 2 stores x, y, z with w ≥ 0
    assert np.abs(back.quats[:, 1:] - unit[:, 1:]).max() <= SPZ_XYZ_V2
    assert np.abs(back.means - arrays.means).max() <= SPZ_POSITION
    np.testing.assert_array_equal(back.sh, spz.read_arrays(_rewritten(tmp_path, arrays, 3)).sh)


def _rewritten(tmp_path, arrays, version):
    path = tmp_path / f"v{version}.spz"
    spz.write_arrays(arrays, path, version=version)
    return path


def test_spz_large_scene_uses_fewer_fraction_bits(tmp_path):
    arrays = random_arrays(100, 0)
    arrays.means[0] = (5000.0, -3000.0, 10.0)  # beyond 2^23 / 4096 = 2048
    path = tmp_path / "big.spz"
    spz.write_arrays(arrays, path)
    assert spz.read_header(path)["fractional_bits"] == 10
    assert np.abs(spz.read_arrays(path).means - arrays.means).max() <= 0.5 / 1024 + 1e-4


@pytest.mark.parametrize("mutate,message", [
    (lambda raw: b"hello" + raw, "not an .spz file"),
    (lambda raw: gzip.compress(struct.pack("<I", 0x12345678) + gzip.decompress(raw)[4:]), "bad spz magic"),
    (lambda raw: gzip.compress(gzip.decompress(raw)[:4] + struct.pack("<I", 5) + gzip.decompress(raw)[8:]),
     "spz version 5 is not supported"),
    (lambda raw: gzip.compress(gzip.decompress(raw)[:-10]), "spz data is truncated: 50 points need"),
    (lambda raw: raw[: len(raw) // 2], "truncated"),
])
def test_spz_malformed_files_name_the_file(tmp_path, mutate, message):
    path = tmp_path / "bad.spz"
    path.write_bytes(mutate(spz.encode(random_arrays(50, 1))))
    with pytest.raises(InputError, match=rf"bad\.spz: .*{message}"):
        spz.read_arrays(path)


def test_spz_huge_point_count_fails_without_allocating(tmp_path):
    raw = bytearray(gzip.decompress(spz.encode(random_arrays(50, 3))))
    raw[8:12] = struct.pack("<I", 4_000_000_000)
    path = tmp_path / "huge.spz"
    path.write_bytes(gzip.compress(bytes(raw)))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="truncated: 4000000000 points"):
            spz.read_arrays(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


@pytest.mark.parametrize("suffix", [".ply", ".splat", ".spz"])
def test_empty_scene_round_trips(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    write_gaussians(random_arrays(0, 0).to_gaussians(), path)
    back = read_gaussians(path)
    assert len(back) == 0 and back.sh_degree == 0


# --- real data ------------------------------------------------------------------------------


def test_fern_points_round_trip_through_splat_and_spz(tmp_path, data_dir):
    gaussians = fern_gaussians(data_dir, degree=3)
    original = GaussianArrays.from_gaussians(gaussians)
    for suffix in (".spz", ".splat"):
        path = tmp_path / f"fern{suffix}"
        write_gaussians(gaussians, path)
        back = read_gaussians(path)
        arrays = GaussianArrays.from_gaussians(back)
        rgb = np.clip(0.5 + SH_C0 * original.sh[:, 0], 0, 1)
        colour_tolerance = SH_C0 * (SPZ_DC if suffix == ".spz" else SPLAT_DC)
        assert np.abs(np.clip(0.5 + SH_C0 * arrays.sh[:, 0], 0, 1) - rgb).max() <= colour_tolerance
        assert np.abs(arrays.means - original.means).max() <= (SPZ_POSITION if suffix == ".spz" else 0)
        assert _rotation_angle(arrays.quats, original.quats).max() <= (SPZ_ANGLE_V3 if suffix == ".spz" else SPLAT_ANGLE)
        assert back.sh_degree == (3 if suffix == ".spz" else 0)
        again = tmp_path / f"again{suffix}"
        write_gaussians(back, again)
        assert again.read_bytes() == path.read_bytes()


# --- .spz byte fixtures built from the published layout (not from splatfx's encoder) ----------

# One Gaussian, as the spec lays it out, in spz's RUB frame: position (1, −2, 0.5) with 12 fraction
# bits, alpha byte 191, colour bytes (128, 64, 200), scale bytes (160, 144, 128), SH degree 1 with
# the y-, z- and x-terms (3DGS order) at bytes 64, 96, 192 for every channel.
_FIXED = [4096, -2 * 4096, 2048]
_POSITIONS = b"".join(struct.pack("<i", v)[:3] for v in _FIXED)
_ALPHA, _COLOURS, _SCALES = bytes([191]), bytes([128, 64, 200]), bytes([160, 144, 128])
_SH1 = bytes([64, 64, 64, 96, 96, 96, 192, 192, 192])
# Rotation RUB (w, x, y, z) = (0.8, 0, 0, 0.6): version 2 stores x, y, z as round(q·127.5 + 127.5);
# versions 3–4 drop w (index 3 in bits 30–31) and keep x, y, z as sign + 9 bits of |q|/√½·511,
# x in the highest of the three 10-bit fields.
_ROT_V2 = bytes([128, 128, 204])
_ROT_V3 = struct.pack("<I", (3 << 30) | (0 << 20) | (0 << 10) | 434)


def _legacy_fixture(version: int, rotation: bytes, flags: int = 0) -> bytes:
    header = struct.pack("<IIIBBBB", 0x5053474E, version, 1, 1, 12, flags, 0)
    return gzip.compress(header + _POSITIONS + _ALPHA + _COLOURS + _SCALES + rotation + _SH1)


def _ngsp_fixture(parts: list[bytes], *, degree: int = 1, flags: int = 0, extensions: bytes = b"",
                  count: int = 1) -> bytes:
    import zstandard

    streams = [zstandard.ZstdCompressor(level=3).compress(p) for p in parts]
    toc_offset = 32 + len(extensions)
    header = struct.pack("<IIIBBBBI12s", 0x5053474E, 4, count, degree, 12, flags, len(parts), toc_offset, bytes(12))
    toc = b"".join(struct.pack("<QQ", len(s), len(p)) for s, p in zip(streams, parts))
    return header + extensions + toc + b"".join(streams)


def _check_fixture(back: GaussianArrays, *, exact_rotation: bool) -> None:
    np.testing.assert_allclose(back.means, [[1.0, 2.0, -0.5]])  # RUB → RDF: y and z negated
    np.testing.assert_allclose(_sigmoid(back.opacity_logits), [191 / 255], rtol=1e-6)
    np.testing.assert_allclose(back.sh[0, 0], (np.array([128, 64, 200]) / 255 - 0.5) / 0.15, rtol=1e-6)
    np.testing.assert_allclose(back.log_scales, [[0.0, -1.0, -2.0]])
    # SH y- and z-terms change sign with the frame, the x-term does not
    np.testing.assert_allclose(back.sh[0, 1:], [[0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.5, 0.5, 0.5]])
    expected = np.array([0.8, 0.0, 0.0, -0.6])  # RUB (0.8, 0, 0, 0.6) in RDF: y, z of the axis negated
    tolerance = 2e-3 if exact_rotation else 0.5 / 127.5 + 1e-3
    np.testing.assert_allclose(back.quats[0], expected, atol=tolerance)


@pytest.mark.parametrize("version", [2, 3, 4])
def test_spz_reads_hand_built_files_of_each_version(tmp_path, version):
    if version == 4:
        data = _ngsp_fixture([_POSITIONS, _ALPHA, _COLOURS, _SCALES, _ROT_V3, _SH1])
    else:
        data = _legacy_fixture(version, _ROT_V2 if version == 2 else _ROT_V3)
    path = tmp_path / f"v{version}.spz"
    path.write_bytes(data)
    _check_fixture(spz.read_arrays(path), exact_rotation=version >= 3)
    assert spz.read_header(path)["version"] == version
    assert f"spz v{version} ({'zstd' if version == 4 else 'gzip'})" in spz.describe(path)


def test_spz_v4_skips_extension_records_and_keeps_the_antialiased_flag(tmp_path):
    record = struct.pack("<II", 0xADBE0002, 12) + struct.pack("<3f", -0.5, 0.5, 1.0)  # safe orbit camera
    data = _ngsp_fixture([_POSITIONS, _ALPHA, _COLOURS, _SCALES, _ROT_V3, _SH1], flags=0x3, extensions=record)
    path = tmp_path / "ext.spz"
    path.write_bytes(data)
    back = spz.read_arrays(path)
    _check_fixture(back, exact_rotation=True)
    assert back.antialiased
    assert "antialiased" in spz.describe(path) and "vendor extensions (skipped)" in spz.describe(path)


def test_spz_v4_degree_4_is_read_as_degree_3(tmp_path):
    sh4 = bytes(range(100, 100 + 72))  # 24 coefficients × RGB
    data = _ngsp_fixture([_POSITIONS, _ALPHA, _COLOURS, _SCALES, _ROT_V3, sh4], degree=4)
    path = tmp_path / "deg4.spz"
    path.write_bytes(data)
    back = spz.read_arrays(path)
    assert back.sh_degree == 3
    stored = (np.frombuffer(sh4, np.uint8).reshape(24, 3)[:15].astype(np.float32) - 128) / 128
    np.testing.assert_allclose(back.sh[0, 1:], stored * spz.SH_FLIP[:, None])


@pytest.mark.parametrize("degree", [0, 3])
def test_spz_v4_round_trip_and_layout(tmp_path, degree):
    arrays = random_arrays(3000, degree, seed=11)
    arrays.antialiased = True
    first, second = tmp_path / "a.spz", tmp_path / "b.spz"
    spz.write_arrays(arrays, first, version=4)
    data = first.read_bytes()
    magic, version, n, deg, bits, flags, streams, toc = struct.unpack_from("<IIIBBBBI", data)
    assert (data[:4], version, n, deg, bits, flags, toc) == (b"NGSP", 4, 3000, degree, 12, 1, 32)
    assert streams == (5 if degree == 0 else 6)  # an empty SH stream is left out
    back = spz.read_arrays(first)
    assert back.antialiased
    v3 = spz.decode(spz.encode(arrays, version=3))
    _assert_same(back, v3)  # the same quantisation as version 3, only the container differs
    spz.write_arrays(back, second, version=4)
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("mutate,message", [
    (lambda raw: raw[:20], "inside the 32-byte NGSP header"),
    (lambda raw: raw[:-7], "truncated: the sh stream"),
    (lambda raw: raw + b"junk", "4 bytes after its last stream"),
    (lambda raw: raw[:8] + struct.pack("<I", 10**6) + raw[12:], "positions stream holds 450 bytes; 1000000 points need"),
    (lambda raw: raw[:4] + struct.pack("<I", 3) + raw[8:], "spz version 3 in an NGSP header"),
    (lambda raw: raw[:16] + struct.pack("<I", 10**9) + raw[20:], "table of contents at byte"),
    (lambda raw: raw[:128] + bytes(4) + raw[132:], "positions stream is corrupt"),  # its zstd magic
])
def test_spz_v4_malformed_files_name_the_file(tmp_path, mutate, message):
    path = tmp_path / "bad4.spz"
    path.write_bytes(mutate(spz.encode(random_arrays(50, 1), version=4)))
    with pytest.raises(InputError, match=rf"bad4\.spz: .*{message}"):
        spz.read_arrays(path)
