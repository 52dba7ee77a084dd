"""PlayCanvas SOG (splatfx.io.formats.sog): layout per the format document, round trips, bad files."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from splatfx.core.errors import InputError
from splatfx.core.sh import SH_C0
from splatfx.io.formats import GaussianArrays, read_gaussians, sog, write_gaussians
from test_formats_ply import fern_gaussians, random_arrays

ALPHA = 0.5 / 255 + 1e-7
QUAT_COMPONENT = 0.5 / 255 * 2 / np.sqrt(2) + 1e-6  # one 8-bit step over [−√½, √½], halved


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _png_free_webp(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGBA").save(buffer, "WEBP", lossless=True, exact=True)
    return buffer.getvalue()


def _bundle(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _pixels(webp: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(webp)).convert("RGBA"))


def _hand_built() -> dict[str, bytes]:
    """Two Gaussians written from the format document alone (4×1 images, 2 trailing pixels)."""
    def image(*rows):
        pixels = np.full((1, 4, 4), 255, np.uint8)
        for i, row in enumerate(rows):
            pixels[0, i] = row
        return _png_free_webp(pixels)

    q = [0, 65535]  # x: min and max of the log range; y, z in between
    meta = {
        "version": 2, "count": 2, "antialias": True,
        "means": {"mins": [-np.log(3.0), 0.0, 0.0], "maxs": [np.log(2.0), np.log(2.0), 1.0],
                  "files": ["means_l.webp", "means_u.webp"]},
        "scales": {"codebook": [-3.0, -2.0, -1.0] + [0.0] * 253, "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": [-1.0, 0.5, 1.5] + [0.0] * 253, "files": ["sh0.webp"]},
        "shN": {"count": 2, "bands": 1, "codebook": [-0.5, 0.0, 0.25, 0.75] + [0.0] * 252,
                "files": ["shN_centroids.webp", "shN_labels.webp"]},
    }
    # Gaussian 0: x = unlog(min) = −2; y = unlog(ln 2) = 1; z = unlog(0) = 0.
    # Gaussian 1: x = unlog(max) = 1; y = 0; z = unlog(1·(32768/65535)).
    means = [(q[0], 65535, 0), (q[1], 0, 32768)]
    centroids = np.full((1, 64 * 3, 4), 255, np.uint8)
    centroids[0, 0:3, :3] = [[0, 1, 2], [3, 3, 3], [1, 1, 1]]     # entry 0: coefficients 0..2 (RGB)
    centroids[0, 3:6, :3] = [[2, 2, 2], [0, 0, 0], [3, 2, 1]]     # entry 1
    return {
        "meta.json": json.dumps(meta).encode(),
        "means_l.webp": image(*[(x & 255, y & 255, z & 255, 255) for x, y, z in means]),
        "means_u.webp": image(*[(x >> 8, y >> 8, z >> 8, 255) for x, y, z in means]),
        # quaternion 0: w dropped (tag 252), x, y, z = 0 → identity; quaternion 1: z dropped (255),
        # w = x = y = (255·(0.5·√2·0.5 + 0.5)) → 0.5 after dequantising, so z = 0.5
        "quats.webp": image((128, 128, 128, 252), (218, 218, 218, 255)),
        "scales.webp": image((0, 1, 2, 255), (2, 2, 2, 255)),
        "sh0.webp": image((0, 1, 2, 0), (2, 2, 2, 255)),
        "shN_centroids.webp": _png_free_webp(centroids),
        "shN_labels.webp": image((1, 0, 0, 255), (0, 0, 0, 255)),
    }


def test_reads_a_hand_built_bundle_per_the_format_document(tmp_path):
    path = tmp_path / "hand.sog"
    path.write_bytes(_bundle(_hand_built()))
    back = sog.read_arrays(path)
    np.testing.assert_allclose(back.means, [[-2.0, 1.0, 0.0], [1.0, 0.0, np.expm1(32768 / 65535)]], atol=1e-6)
    np.testing.assert_allclose(back.log_scales, [[-3, -2, -1], [-1, -1, -1]])
    np.testing.assert_allclose(back.sh[:, 0], [[-1.0, 0.5, 1.5], [1.5, 1.5, 1.5]])
    np.testing.assert_allclose(_sigmoid(back.opacity_logits), [0.25 / 255, 1 - 0.25 / 255], rtol=1e-5)
    kept = (218 / 255 - 0.5) * 2 / np.sqrt(2)
    np.testing.assert_allclose(back.quats, [[1, 0, 0, 0], [kept, kept, kept, np.sqrt(1 - 3 * kept**2)]], atol=3e-3)
    # Gaussian 0 uses palette entry 1, Gaussian 1 entry 0; sh[:, 1 + c, rgb]
    np.testing.assert_allclose(back.sh[0, 1:], [[0.25, 0.25, 0.25], [-0.5, -0.5, -0.5], [0.75, 0.25, 0.0]])
    np.testing.assert_allclose(back.sh[1, 1:], [[-0.5, 0.0, 0.25], [0.75, 0.75, 0.75], [0.0, 0.0, 0.0]])
    assert back.antialiased and back.sh_degree == 1


def test_unbundled_folder_reads_the_same(tmp_path):
    for name, data in _hand_built().items():
        (tmp_path / name).write_bytes(data)
    bundle = tmp_path / "b.sog"
    bundle.write_bytes(_bundle(_hand_built()))
    for source in (tmp_path, tmp_path / "meta.json"):
        for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
            np.testing.assert_array_equal(getattr(sog.read_arrays(source), name), getattr(sog.read_arrays(bundle), name))


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip_within_the_quantisation(tmp_path, degree):
    arrays = random_arrays(3000, degree, seed=degree)
    path = tmp_path / "r.sog"
    sog.write_arrays(arrays, path)
    back = sog.read_arrays(path)
    ref = sog._permuted(arrays, sog.morton_order(arrays.means))  # written in Morton order
    # positions: a 16-bit step of the log range, stretched by d/dl expm1(|l|) = 1 + |p|
    logs = np.sign(ref.means) * np.log1p(np.abs(ref.means))
    step = (logs.max(axis=0) - logs.min(axis=0)) / 65535
    assert np.all(np.abs(back.means - ref.means) <= 0.5 * step * (1 + np.abs(ref.means)) * 1.001 + 1e-6)
    unit = ref.quats / np.linalg.norm(ref.quats, axis=1, keepdims=True)
    unit *= np.sign((unit * back.quats).sum(axis=1, keepdims=True))
    assert np.abs(back.quats - unit).max() <= 3 * QUAT_COMPONENT  # the rebuilt largest one takes the rest
    assert np.abs(_sigmoid(back.opacity_logits) - _sigmoid(ref.opacity_logits)).max() <= ALPHA
    # codebooks: every value lands on its nearest of 256 entries
    for got, want, table in ((back.log_scales, ref.log_scales, "scales"), (back.sh[:, 0], ref.sh[:, 0], "sh0")):
        codebook = np.asarray(json.loads(_members(path.read_bytes())["meta.json"])[table]["codebook"])
        nearest = np.abs(want[..., None] - codebook).min(axis=-1)
        np.testing.assert_allclose(np.abs(got - want), nearest, atol=1e-6)
        assert nearest.max() < 0.02 * (want.max() - want.min())
    assert back.sh_degree == degree


def test_layout_of_a_written_bundle(tmp_path):
    arrays = random_arrays(1000, 2, seed=5)
    arrays.antialiased = True
    files = _members(sog.encode(arrays))
    meta = json.loads(files["meta.json"])
    assert meta["version"] == 2 and meta["count"] == 1000 and meta["antialias"] is True
    assert set(files) == {"meta.json", "means_l.webp", "means_u.webp", "scales.webp", "quats.webp", "sh0.webp",
                          "shN_centroids.webp", "shN_labels.webp"}
    assert len(meta["scales"]["codebook"]) == len(meta["sh0"]["codebook"]) == len(meta["shN"]["codebook"]) == 256
    assert meta["shN"]["bands"] == 2 and meta["shN"]["count"] == sog.palette_size(1000) == 32
    sizes = {name: Image.open(io.BytesIO(data)).size for name, data in files.items() if name.endswith(".webp")}
    assert sizes.pop("shN_centroids.webp") == (64 * 8, 1)
    assert set(sizes.values()) == {(32, 32)}  # ceil(√1000 / 4)·4 wide, ceil(1000 / 32 / 4)·4 high
    quats = _pixels(files["quats.webp"]).reshape(-1, 4)[:1000]
    assert set(np.unique(quats[:, 3])) <= {252, 253, 254, 255}
    labels = _pixels(files["shN_labels.webp"]).reshape(-1, 4)[:1000]
    assert (labels[:, 0].astype(int) + 256 * labels[:, 1].astype(int)).max() < 32


def test_repeated_values_survive_exactly():
    """At most 256 distinct values per codebook and few distinct SH vectors: nothing is lost there."""
    rng = np.random.default_rng(3)
    n = 4096
    levels = rng.uniform(-1, 1, 100).astype(np.float32)
    palette = levels[rng.integers(0, 100, size=(40, 8, 3))]
    arrays = random_arrays(n, 2, seed=8)
    arrays.sh[:, 1:] = palette[rng.integers(0, 40, n)]
    arrays.log_scales[:] = levels[rng.integers(0, 100, size=(n, 3))] - 4
    arrays.sh[:, 0] = levels[rng.integers(0, 100, size=(n, 3))]
    files = sog.encode(arrays, order=False)
    back = sog.decode(lambda name: _members(files)[name], _members(files)["meta.json"], "x")
    np.testing.assert_array_equal(back.sh, arrays.sh)
    np.testing.assert_array_equal(back.log_scales, arrays.log_scales)


def test_fern_capture_through_sog_and_the_format_table(tmp_path, data_dir):
    gaussians = fern_gaussians(data_dir, degree=3)
    path = tmp_path / "fern.sog"
    write_gaussians(gaussians, path)
    back = GaussianArrays.from_gaussians(read_gaussians(path))
    ref = sog._permuted(GaussianArrays.from_gaussians(gaussians), sog.morton_order(gaussians.means.numpy()))
    rgb = np.clip(0.5 + SH_C0 * ref.sh[:, 0], 0, 1)
    assert np.abs(np.clip(0.5 + SH_C0 * back.sh[:, 0], 0, 1) - rgb).max() < 0.01
    extent = ref.means.max(axis=0) - ref.means.min(axis=0)
    assert (np.abs(back.means - ref.means).max(axis=0) < extent * 1e-3).all()
    ply = path.stat().st_size
    assert ply < len(gaussians) * 248 / 4  # far smaller than the 248-byte PLY record


@pytest.mark.parametrize("mutate,message", [
    (lambda files: b"not a zip", "not a SOG bundle"),
    (lambda files: _bundle({k: v for k, v in files.items() if k != "meta.json"}), "has no meta.json"),
    (lambda files: _bundle({**files, "meta.json": b"{"}), "meta.json is not valid JSON"),
    (lambda files: _bundle({**files, "meta.json": files["meta.json"].replace(b'"version": 2', b'"version": 3')}),
     "SOG version 3 is not supported"),
    (lambda files: _bundle({k: v for k, v in files.items() if k != "quats.webp"}), "lacks quats.webp"),
    (lambda files: _bundle({**files, "scales.webp": b"RIFF0000WEBPjunk"}), "image scales.webp does not decode"),
    (lambda files: _bundle({**files, "meta.json": files["meta.json"].replace(b'"count": 2', b'"count": 9')}),
     "fewer than the 9 Gaussians"),
    (lambda files: _bundle({**files, "quats.webp": _png_free_webp(np.full((1, 4, 4), 7, np.uint8))}),
     "quats alpha 7 is reserved"),
    (lambda files: _bundle(files)[:200], "not a SOG bundle"),
])
def test_bad_files_name_the_file(tmp_path, mutate, message):
    path = tmp_path / "bad.sog"
    path.write_bytes(mutate(_hand_built()))
    with pytest.raises(InputError, match=rf"bad\.sog: .*{message}"):
        sog.read_arrays(path)
