"""3DGS PLY reading, writing and linting (splatfx.io.formats.ply)."""

from __future__ import annotations

import functools
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import numpy.lib.recfunctions
import plyfile
import pytest
import torch

from splatfx.core.errors import InputError
from splatfx.io.formats import GaussianArrays, read_gaussians, write_gaussians
from splatfx.io.formats import ply
from splatfx.core.gaussians import Gaussians
from splatfx.core.sh import SH_C0

REQUIRED = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


# --- helpers shared with the other format tests -------------------------------------------


def random_arrays(n: int, degree: int, seed: int = 0, extras: bool = False) -> GaussianArrays:
    """Plausible Gaussians: SH of degree ≥ 1 kept inside spz's [-1, 1) range."""
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2
    sh = rng.uniform(-0.9, 0.9, size=(n, k, 3)).astype(np.float32)
    sh[:, 0] = rng.uniform(-1.5, 1.5, size=(n, 3))
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    quats *= rng.uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)  # unnormalised, as trained files are
    extra = {"segment": rng.integers(0, 9, n).astype(np.float32), "feature": rng.normal(size=(n, 2)).astype(np.float32)}
    return GaussianArrays(
        means=rng.uniform(-5, 5, size=(n, 3)).astype(np.float32),
        quats=quats,
        log_scales=rng.uniform(-7, 0, size=(n, 3)).astype(np.float32),
        opacity_logits=rng.uniform(-6, 6, size=n).astype(np.float32),
        sh=sh,
        extras=extra if extras else {},
    )


def read_colmap_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """xyz (N,3) float64 and rgb (N,3) uint8 from a COLMAP points3D.bin."""
    data = path.read_bytes()
    (count,) = struct.unpack_from("<Q", data, 0)
    record = struct.Struct("<Q3d3BdQ")  # id, xyz, rgb, error, track length
    xyz, rgb, offset = np.empty((count, 3)), np.empty((count, 3), np.uint8), 8
    for i in range(count):
        _, x, y, z, r, g, b, _, track = record.unpack_from(data, offset)
        xyz[i], rgb[i] = (x, y, z), (r, g, b)
        offset += record.size + 8 * track
    assert offset == len(data)
    return xyz, rgb


@functools.lru_cache(maxsize=4)
def fern_gaussians(data_dir: Path, degree: int = 3) -> Gaussians:
    """Gaussians at fern's COLMAP points with their colours; scales from the distance to
    the nearest neighbours, other parameters seeded. Cached: callers must not modify it."""
    xyz, rgb = read_colmap_points(data_dir / "fern" / "sparse" / "0" / "points3D.bin")
    n = len(xyz)
    means = torch.from_numpy(xyz).float()
    nearest = torch.cat([
        torch.cdist(chunk, means).topk(4, largest=False).values[:, 1:].mean(dim=1) for chunk in means.split(1024)
    ]).clamp_min(1e-4)
    rng = np.random.default_rng(7)
    sh = rng.uniform(-0.3, 0.3, size=(n, (degree + 1) ** 2, 3)).astype(np.float32)
    sh[:, 0] = (rgb / 255.0 - 0.5) / SH_C0
    return Gaussians(
        means=means,
        quats=torch.from_numpy(rng.normal(size=(n, 4)).astype(np.float32)),
        log_scales=nearest.log()[:, None].repeat(1, 3) + torch.from_numpy(rng.normal(0, 0.3, (n, 3)).astype(np.float32)),
        opacity_logits=torch.from_numpy(rng.uniform(-4, 4, n).astype(np.float32)),
        sh=torch.from_numpy(sh),
        source="fern points3D.bin",
    )


def assert_arrays_equal(a: GaussianArrays, b: GaussianArrays) -> None:
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert list(a.extras) == list(b.extras)
    for name in a.extras:
        np.testing.assert_array_equal(a.extras[name], b.extras[name], err_msg=name)


def header_of(path: Path) -> list[str]:
    data = path.read_bytes()
    return data[: data.index(b"end_header\n")].decode().splitlines()


def write_vertices(path: Path, vertices: np.ndarray, text: bool = False, byte_order: str = "<") -> Path:
    plyfile.PlyData([plyfile.PlyElement.describe(vertices, "vertex")], text=text, byte_order=byte_order).write(str(path))
    return path


# --- layout and byte-exact round trips -----------------------------------------------------


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("with_extras", [False, True])
def test_write_read_write_is_byte_identical(tmp_path, degree, with_extras):
    arrays = random_arrays(257, degree, seed=degree, extras=with_extras)
    first, second = tmp_path / "a.ply", tmp_path / "b.ply"
    ply.write_arrays(arrays, first)
    back = ply.read_arrays(first)
    ply.write_arrays(back, second)
    assert first.read_bytes() == second.read_bytes()
    assert back.sh_degree == degree
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_array_equal(getattr(back, name), getattr(arrays, name), err_msg=name)


def test_header_is_exactly_the_inria_layout_with_extras_after_rot(tmp_path):
    path = tmp_path / "scene.ply"
    ply.write_arrays(random_arrays(3, 1, extras=True), path)
    rest = [f"f_rest_{i}" for i in range(9)]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest, "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "segment", "feature_0", "feature_1"]
    assert header_of(path) == ["ply", "format binary_little_endian 1.0", "element vertex 3",
                               *[f"property float {n}" for n in names]]
    assert path.stat().st_size == len(b"\n".join(l.encode() for l in header_of(path))) + len(b"\nend_header\n") + 3 * 4 * len(names)


def test_reader_agrees_with_plyfile_on_a_written_file(tmp_path):
    arrays = random_arrays(500, 3, seed=3, extras=True)
    path = tmp_path / "scene.ply"
    ply.write_arrays(arrays, path)
    vertex = plyfile.PlyData.read(str(path))["vertex"]
    ours = ply.read_arrays(path)
    np.testing.assert_array_equal(ours.means, np.stack([vertex[c] for c in "xyz"], axis=1))
    np.testing.assert_array_equal(ours.opacity_logits, vertex["opacity"])
    np.testing.assert_array_equal(ours.quats, np.stack([vertex[f"rot_{i}"] for i in range(4)], axis=1))
    np.testing.assert_array_equal(ours.log_scales, np.stack([vertex[f"scale_{i}"] for i in range(3)], axis=1))
    # channel-major f_rest: coefficient j of channel c is f_rest_{c·15 + j}
    for c in range(3):
        np.testing.assert_array_equal(ours.sh[:, 0, c], vertex[f"f_dc_{c}"])
        for j in range(15):
            np.testing.assert_array_equal(ours.sh[:, 1 + j, c], vertex[f"f_rest_{c * 15 + j}"])
    np.testing.assert_array_equal(ours.extras["feature_1"], vertex["feature_1"])
    assert not vertex["nx"].any()


def test_fern_points_round_trip_through_ply(tmp_path, data_dir):
    gaussians = fern_gaussians(data_dir)
    assert len(gaussians) > 1000
    path = tmp_path / "fern.ply"
    write_gaussians(gaussians, path)
    back = read_gaussians(path)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        assert torch.equal(getattr(back, name), getattr(gaussians, name)), name
    again = tmp_path / "again.ply"
    write_gaussians(back, again)
    assert path.read_bytes() == again.read_bytes()


# --- reading other PLY dialects -------------------------------------------------------------


def _vertices(n: int, types: dict[str, str], rest: int = 0, extra: tuple[tuple[str, str], ...] = ()) -> np.ndarray:
    names = REQUIRED[:3] + REQUIRED[3:6] + [f"f_rest_{i}" for i in range(rest)] + REQUIRED[6:]
    dtype = [(name, types.get(name, "f4")) for name in names] + list(extra)
    vertices = np.zeros(n, dtype=dtype)
    rng = np.random.default_rng(11)
    for name in vertices.dtype.names:
        kind = vertices.dtype[name].kind
        vertices[name] = rng.integers(0, 200, n) if kind in "iu" else rng.normal(size=n)
    return vertices


@pytest.mark.parametrize("text,byte_order", [(True, "="), (False, ">"), (False, "<")])
def test_reads_ascii_big_endian_mixed_types_without_normals(tmp_path, text, byte_order):
    vertices = _vertices(40, {"f_dc_0": "f8", "opacity": "f8", "x": "f8"}, rest=9,
                         extra=(("red", "u1"), ("label", "i2"), ("weight", "f8")))
    path = write_vertices(tmp_path / "other.ply", vertices, text=text, byte_order=byte_order)
    arrays = ply.read_arrays(path)
    assert arrays.sh_degree == 1 and len(arrays) == 40
    np.testing.assert_allclose(arrays.means[:, 0], vertices["x"], rtol=1e-6)
    np.testing.assert_allclose(arrays.sh[:, 0, 0], vertices["f_dc_0"], rtol=1e-6)
    np.testing.assert_array_equal(arrays.sh[:, 3, 2], vertices["f_rest_8"])
    np.testing.assert_array_equal(arrays.sh[:, 1, 1], vertices["f_rest_3"])
    assert list(arrays.extras) == ["red", "label", "weight"]
    np.testing.assert_array_equal(arrays.extras["red"], vertices["red"].astype(np.float32))
    # written back: INRIA layout with zero normals, the extras after rot_3, stable from then on
    out, again = tmp_path / "out.ply", tmp_path / "again.ply"
    ply.write_arrays(arrays, out)
    ply.write_arrays(ply.read_arrays(out), again)
    assert out.read_bytes() == again.read_bytes()
    assert header_of(out)[-3:] == ["property float red", "property float label", "property float weight"]


def test_nonzero_normals_are_kept_and_written_in_place(tmp_path):
    vertices = _vertices(10, {}, extra=(("nx", "f4"), ("ny", "f4"), ("nz", "f4")))
    path = write_vertices(tmp_path / "normals.ply", vertices)
    arrays = ply.read_arrays(path)
    assert list(arrays.extras) == ["nx", "ny", "nz"]
    out = tmp_path / "out.ply"
    ply.write_arrays(arrays, out)
    assert header_of(out)[3:9] == [f"property float {n}" for n in ("x", "y", "z", "nx", "ny", "nz")]
    np.testing.assert_array_equal(plyfile.PlyData.read(str(out))["vertex"]["ny"], vertices["ny"])


def test_f_rest_count_must_match_a_degree(tmp_path):
    path = write_vertices(tmp_path / "odd.ply", _vertices(4, {}, rest=10))
    with pytest.raises(InputError, match=r"odd\.ply: has 10 f_rest properties"):
        ply.read_arrays(path)


def test_missing_required_properties_are_named(tmp_path):
    vertices = _vertices(4, {})
    kept = [n for n in vertices.dtype.names if n not in ("rot_3", "f_dc_1")]
    path = write_vertices(tmp_path / "partial.ply", np.lib.recfunctions.repack_fields(vertices[kept]))
    with pytest.raises(InputError, match=r"partial\.ply: missing 3DGS PLY properties: f_dc_1, rot_3"):
        ply.read_arrays(path)


# --- malformed files ------------------------------------------------------------------------


def _written(tmp_path: Path, n: int = 20) -> Path:
    path = tmp_path / "scene.ply"
    ply.write_arrays(random_arrays(n, 2), path)
    return path


def test_truncated_file_error_names_the_file(tmp_path):
    path = _written(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError) as info:
        ply.read_arrays(path)
    assert str(info.value).startswith(f"{path}: PLY header declares 20 vertices")
    assert "\n" not in str(info.value)


def test_bad_magic_and_missing_end_header(tmp_path):
    path = _written(tmp_path)
    data = path.read_bytes()
    (tmp_path / "magic.ply").write_bytes(b"plx" + data[3:])
    with pytest.raises(InputError, match=r"magic\.ply: not a PLY file"):
        ply.read_arrays(tmp_path / "magic.ply")
    (tmp_path / "noend.ply").write_bytes(data.replace(b"end_header", b"end_heder"))
    with pytest.raises(InputError, match=r"noend\.ply: PLY header has no 'end_header' line"):
        ply.read_arrays(tmp_path / "noend.ply")
    with pytest.raises(InputError, match="does not exist"):
        ply.read_arrays(tmp_path / "missing.ply")


def test_huge_vertex_count_fails_fast_without_allocating(tmp_path):
    path = _written(tmp_path)
    path.write_bytes(path.read_bytes().replace(b"element vertex 20\n", b"element vertex 1000000000000\n"))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="declares 1000000000000 vertices"):
            ply.read_arrays(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    report = ply.lint(path)  # lint reads the 20 records present, still without allocating for 10¹²
    assert report.find("truncated").count == 10**12 - 20 and report.read == 20


def test_read_gaussians_rejects_non_finite_values_naming_the_file(tmp_path):
    arrays = random_arrays(10, 0)
    arrays.means[3, 1] = np.nan
    path = tmp_path / "nan.ply"
    ply.write_arrays(arrays, path)
    with pytest.raises(InputError, match=r"nan\.ply: means has 1 non-finite"):
        read_gaussians(path)


# --- lint -----------------------------------------------------------------------------------


def test_lint_finds_each_planted_defect_with_its_count(tmp_path):
    arrays = random_arrays(1000, 1, seed=5)
    arrays.quats /= np.linalg.norm(arrays.quats, axis=1, keepdims=True)
    arrays.means[:3, 0] = np.nan                        # 3 NaN in x
    arrays.sh[10:12, 2, 1] = np.inf                     # 2 +Inf in f_rest_4 (G, coefficient 1)
    arrays.log_scales[20:24, 1] = -np.inf               # 4 −Inf in scale_1
    arrays.log_scales[30:35, 2] = 25.0                  # 5 absurd scales
    arrays.quats[40:46] = 0.0                           # 6 zero quaternions
    arrays.quats[50:57] *= 3.0                          # 7 unnormalised quaternions
    arrays.opacity_logits[60:68] = -80.0                # 8 opacity logits out of range
    path = tmp_path / "bad.ply"
    ply.write_arrays(arrays, path)
    report = ply.lint(path)
    found = {(i.code, i.property): i.count for i in report.issues}
    assert found == {
        ("nan", "x"): 3, ("inf", "f_rest_4"): 2, ("inf", "scale_1"): 4, ("scale_too_large", None): 5,
        ("quat_zero", None): 6, ("quat_unnormalised", None): 7, ("opacity_range", None): 8,
    }
    assert report.find("quat_unnormalised").severity == "warning"
    assert not report.ok and report.read == report.declared == 1000 and report.sh_degree == 1


def test_lint_reports_truncation_and_surplus_data(tmp_path):
    path = _written(tmp_path, n=50)
    stride = 4 * len(ply.inria_names(2))
    data = path.read_bytes()
    path.write_bytes(data[: -(3 * stride + 7)])
    report = ply.lint(path)
    assert report.find("truncated").count == 4 and report.read == 46
    path.write_bytes(data + bytes(2 * stride))
    report = ply.lint(path)
    assert report.find("count_mismatch").count == 2 * stride and report.read == 50


def test_lint_of_a_clean_file_and_of_an_unreadable_one(tmp_path):
    arrays = random_arrays(100, 3)
    arrays.quats /= np.linalg.norm(arrays.quats, axis=1, keepdims=True)
    path = tmp_path / "clean.ply"
    ply.write_arrays(arrays, path)
    report = ply.lint(path)
    assert report.ok and report.issues == []
    path.write_bytes(b"not a ply at all")
    report = ply.lint(path)
    assert not report.ok and report.find("unreadable").message.startswith("not a PLY file")
