"""C2PA Content Credentials on the comp's PNG frames and MP4 movies: signed with a certificate
chain made on the fly (root CA → intermediate → leaf), read back with c2pa's Reader."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("c2pa")
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_comp import make_shot

from splatfx.comp.stage import run_comp
from splatfx.shot.config import config_from_dict, config_to_dict, save_config
from splatfx.comp.credentials import (
    DIGITAL_SOURCE_TYPE,
    Signing,
    build_manifest,
    comp_actions,
    read_credentials,
    sidecar_path,
)
from splatfx.core.errors import ConfigError, InputError, OutputError
from splatfx.io.images import read_exr, write_exr, write_png
from splatfx.render.stage import run_render
from splatfx.shot.folder import Shot
from splatfx.io.video import VideoReader

UNTRUSTED = ("signingCredential.untrusted",)  # an on-the-fly root is in no trust list


# --- certificates ------------------------------------------------------------------------------------
@dataclass
class Chain:
    cert: Path  # leaf + intermediate, PEM
    key: Path  # the leaf's private key, PEM
    root: Path  # the root CA, PEM (a trust anchor for the reader)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "splatfx test studio"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(subject: str, key, issuer: str, issuer_key, ca: bool, eku: bool = True) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                            crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if not ca and eku:  # C2PA signing certificates need one of its EKUs: emailProtection is one
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_chain(folder: Path, leaf_eku: bool = True) -> Chain:
    """A root CA, an intermediate under it and an ECDSA P-256 signing leaf under that."""
    folder.mkdir(parents=True, exist_ok=True)
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate("Test Root CA", root_key, "Test Root CA", root_key, ca=True)
    mid = _certificate("Test Intermediate CA", mid_key, "Test Root CA", root_key, ca=True)
    leaf = _certificate("Test Comp Signer", leaf_key, "Test Intermediate CA", mid_key, ca=False, eku=leaf_eku)
    chain = Chain(folder / "chain.pem", folder / "signer.key", folder / "root.pem")
    chain.cert.write_bytes(_pem(leaf) + _pem(mid))
    chain.key.write_bytes(_key_pem(leaf_key))
    chain.root.write_bytes(_pem(root))
    return chain


def self_signed(folder: Path) -> Chain:
    """What `openssl req -x509` makes: a certificate that issued itself."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("Self Signed", key, "Self Signed", key, ca=True)
    chain = Chain(folder / "self.pem", folder / "self.key", folder / "self.pem")
    chain.cert.write_bytes(_pem(cert))
    chain.key.write_bytes(_key_pem(key))
    return chain


# --- signing a file ----------------------------------------------------------------------------------
def _png(path: Path) -> Path:
    pixels = np.random.default_rng(0).random((48, 64, 3)).astype(np.float32)
    write_png(path, pixels)
    return path


def _manifest(name: str) -> dict:
    return build_manifest(name, {"synthetic_share": 0.25, "seed": 7}, [{
        "action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE}])


def test_signed_png_keeps_its_pixels_and_validates(tmp_path):
    chain = make_chain(tmp_path / "certs")
    signing = Signing.load(chain.cert, chain.key)
    png = _png(tmp_path / "frame.png")
    before = png.read_bytes()
    signing.sign(png, _manifest(png.name))
    assert png.read_bytes() != before and not list(tmp_path.glob(".frame.png.tmp*"))  # replaced, no leftovers
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(io.BytesIO(before))))
    creds = read_credentials(png)
    assert creds.state == "Valid" and creds.failures == UNTRUSTED
    assert creds.digital_source_types == {DIGITAL_SOURCE_TYPE}
    assert creds.provenance == {"synthetic_share": 0.25, "seed": 7}
    assert creds.manifest["claim_generator_info"][0]["name"] == "splatfx"
    assert creds.manifest["signature_info"]["common_name"] == "Test Comp Signer"
    trusted = read_credentials(png, trust_anchors=chain.root)
    assert trusted.state == "Trusted" and trusted.failures == ()


def test_a_changed_pixel_breaks_the_signature(tmp_path):
    chain = make_chain(tmp_path / "certs")
    png = _png(tmp_path / "frame.png")
    Signing.load(chain.cert, chain.key).sign(png, _manifest(png.name))
    data = bytearray(png.read_bytes())
    data[data.index(b"IDAT") + 20] ^= 0xFF  # one byte of the compressed pixels
    png.write_bytes(bytes(data))
    creds = read_credentials(png, trust_anchors=chain.root)
    assert creds.state == "Invalid" and "assertion.dataHash.mismatch" in creds.failures


def test_a_self_signed_certificate_is_refused(tmp_path):
    chain = self_signed(tmp_path)
    with pytest.raises(InputError, match="self-signed") as err:
        Signing.load(chain.cert, chain.key)
    assert str(err.value).startswith(str(chain.cert)) and "\n" not in str(err.value)


def test_a_certificate_the_library_refuses_names_the_file(tmp_path):
    chain = make_chain(tmp_path, leaf_eku=False)  # no C2PA extended key usage
    with pytest.raises(InputError, match="refused by the C2PA library") as err:
        Signing.load(chain.cert, chain.key)
    assert str(err.value).startswith(str(chain.cert)) and "\n" not in str(err.value)


def test_missing_unreadable_or_mismatched_key(tmp_path):
    chain = make_chain(tmp_path / "a")
    missing = tmp_path / "a" / "missing.key"
    with pytest.raises(InputError, match="does not exist") as err:
        Signing.load(chain.cert, missing)
    assert str(err.value).startswith(str(missing))
    other = make_chain(tmp_path / "b")
    with pytest.raises(InputError, match="is not the private key of the signing certificate") as err:
        Signing.load(chain.cert, other.key)
    assert str(err.value).startswith(str(other.key))
    with pytest.raises(InputError, match="is not a PEM certificate chain") as err:
        Signing.load(chain.key, chain.key)
    assert str(err.value).startswith(str(chain.key))
    with pytest.raises(ConfigError, match="use es256") as err:
        Signing.load(chain.cert, chain.key, alg="ps256", setting="shot.toml [comp]")
    assert str(err.value).startswith("shot.toml [comp] c2pa_alg")


def test_settings_need_both_files_and_a_web_tsa():
    with pytest.raises(ConfigError, match=r"\[comp\] c2pa_key: must be set together with c2pa_cert"):
        config_from_dict({"comp": {"c2pa_cert": "certs/chain.pem"}})
    with pytest.raises(ConfigError, match="must stay inside the shot folder"):
        config_from_dict({"comp": {"c2pa_cert": "../chain.pem", "c2pa_key": "k.pem"}})
    with pytest.raises(ConfigError, match="c2pa_tsa_url: must be an http"):
        config_from_dict({"comp": {"c2pa_cert": "c.pem", "c2pa_key": "k.pem", "c2pa_tsa_url": "ftp://tsa"}})


def test_without_c2pa_installed_the_error_says_which_extra(tmp_path, monkeypatch):
    chain = make_chain(tmp_path)
    monkeypatch.setitem(sys.modules, "c2pa", None)  # import c2pa now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'splatfx\[c2pa\]'"):
        Signing.load(chain.cert, chain.key, setting="shot.toml [comp]")


# --- the comp ----------------------------------------------------------------------------------------
def test_exr_sidecar_binds_the_frame_and_a_changed_byte_breaks_it(tmp_path):
    chain = make_chain(tmp_path / "certs")
    signing = Signing.load(chain.cert, chain.key)
    exr = tmp_path / "comp.1001.exr"
    pixels = np.random.default_rng(1).random((32, 48)).astype(np.float32)
    write_exr(exr, {"R": pixels, "G": pixels, "B": pixels})
    before = exr.read_bytes()
    sidecar = signing.sign_sidecar(exr, _manifest(exr.name))
    assert sidecar == sidecar_path(exr) == tmp_path / "comp.1001.c2pa"
    assert exr.read_bytes() == before and sidecar.stat().st_size > 1000  # the EXR is untouched
    creds = read_credentials(exr)
    assert creds.state == "Valid" and creds.failures == UNTRUSTED
    assert creds.provenance == {"synthetic_share": 0.25, "seed": 7}
    assert creds.digital_source_types == {DIGITAL_SOURCE_TYPE}
    assert any(a["label"].startswith("c2pa.hash.data") for a in creds.manifest.get("assertions", [])) or \
        creds.manifest.get("title") == exr.name
    assert read_credentials(exr, trust_anchors=chain.root).state == "Trusted"
    changed = bytearray(before)
    changed[len(changed) // 2] ^= 0x01  # one bit of the pixel data
    exr.write_bytes(bytes(changed))
    tampered = read_credentials(exr)
    assert tampered.state == "Invalid" and "assertion.dataHash.mismatch" in tampered.failures
    sidecar.unlink()
    with pytest.raises(InputError, match=r"comp\.1001\.exr: carries no C2PA manifest \(no sidecar comp\.1001\.c2pa"):
        read_credentials(exr)
    with pytest.raises(OutputError, match="no sidecar C2PA signing"):
        signing.sign_sidecar(_png(tmp_path / "x.png"), _manifest("x.png"))


def _configure(shot: Shot, **comp) -> Shot:
    settings = config_to_dict(shot.config)
    settings["comp"].update(comp)
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    return Shot.open(shot.root)


@pytest.fixture(scope="module")
def signed_shot(tmp_path_factory, data_dir):
    """A 2-frame collapse shot composited unsigned, then signed; the unsigned PNG bytes kept."""
    root = tmp_path_factory.mktemp("credentials")
    shot = make_shot(root, data_dir, frames=2)
    shot = _configure(shot, outputs=["exr", "png", "mp4"])
    run_render(shot)
    unsigned = run_comp(shot)
    assert unsigned.value["content_credentials"].startswith("unsigned")
    pngs = {f: (shot.comp_dir / f"comp.{f}.png").read_bytes() for f in (1001, 1002)}
    chain = make_chain(shot.root / "credentials")
    shot = _configure(shot, c2pa_cert="credentials/chain.pem", c2pa_key="credentials/signer.key")
    signed = run_comp(shot)
    return shot, chain, pngs, signed


def test_comp_signs_every_png_and_movie(signed_shot):
    shot, chain, unsigned, result = signed_shot
    assert result.ran and result.value["composited"] == 2  # the new certificate re-made every frame
    assert result.value["content_credentials"].startswith("signed (es256) by") and "Test Comp Signer" in \
        result.value["content_credentials"]
    per_frame = result.value["per_frame"]
    for frame, before in unsigned.items():
        png = shot.comp_dir / f"comp.{frame}.png"
        assert png.read_bytes() != before
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(io.BytesIO(before))))
        creds = read_credentials(png)
        assert creds.state == "Valid" and creds.failures == UNTRUSTED
        assert creds.digital_source_types == {DIGITAL_SOURCE_TYPE}
        assert [a["action"] for a in creds.actions] == ["c2pa.created"]
        facts = creds.provenance
        assert facts["frame"] == frame and facts["synthetic_share"] == per_frame[str(frame)]["synthetic_share"]
        assert facts["effects"] == ["collapse"] and facts["seed"] == 0 and facts["refined"] is False
        assert facts["render_sha256"] == per_frame[str(frame)]["render_sha256"]
        assert read_credentials(png, trust_anchors=chain.root).state == "Trusted"
    for name, width in (("shot.mp4", 768), ("review.mp4", 2 * 768)):
        creds = read_credentials(shot.comp_dir / name, trust_anchors=chain.root)
        assert creds.state == "Trusted" and creds.failures == ()
        assert creds.digital_source_types == {DIGITAL_SOURCE_TYPE}
        assert creds.provenance["frames"] == "1001-1002" and set(creds.provenance["per_frame"]) == {"1001", "1002"}
        with VideoReader(shot.comp_dir / name) as movie:  # still a playable movie
            assert (movie.frame_count, movie.width, movie.codec) == (2, width, "h264")
        assert read_credentials(shot.comp_dir / name).failures == UNTRUSTED
    record = [r for r in json.loads(shot.manifest_path.read_text())["runs"] if r["stage"] == "comp"][-1]
    assert record["config"]["c2pa_cert"] == "credentials/chain.pem" and "c2pa_cert" in record["inputs"]


def test_comp_signs_every_exr_frame_with_a_sidecar(signed_shot):
    shot, chain, _, result = signed_shot
    per_frame = result.value["per_frame"]
    for frame in (1001, 1002):
        exr = shot.comp_dir / f"comp.{frame}.exr"
        assert (shot.comp_dir / f"comp.{frame}.c2pa").is_file()
        creds = read_credentials(exr, trust_anchors=chain.root)
        assert creds.state == "Trusted" and creds.failures == ()
        assert creds.provenance["frame"] == frame
        assert creds.provenance["render_sha256"] == per_frame[str(frame)]["render_sha256"]
        assert creds.digital_source_types == {DIGITAL_SOURCE_TYPE}
        assert read_exr(exr)  # still an ordinary EXR


def test_skipped_frames_stay_signed_and_a_new_certificate_re_signs(signed_shot, tmp_path):
    shot, chain, _, _ = signed_shot
    assert not run_comp(shot).ran  # up to date
    (shot.comp_dir / "comp.1002.png").unlink()
    result = run_comp(shot)
    assert (result.value["composited"], result.value["skipped"]) == (1, 1)
    for frame in (1001, 1002):  # the kept frame is still signed and valid
        assert read_credentials(shot.comp_dir / f"comp.{frame}.png", trust_anchors=chain.root).state == "Trusted"
    serial = read_credentials(shot.comp_dir / "comp.1001.png").manifest["signature_info"]["cert_serial_number"]
    old_root = tmp_path / "old_root.pem"
    old_root.write_bytes(chain.root.read_bytes())
    new = make_chain(shot.root / "credentials")  # the studio's certificate renewed, same file names
    result = run_comp(shot)
    assert result.ran and result.value["composited"] == 2
    for name in ("comp.1001.png", "comp.1002.png", "shot.mp4"):
        creds = read_credentials(shot.comp_dir / name, trust_anchors=new.root)
        assert creds.state == "Trusted", name
        assert creds.manifest["signature_info"]["cert_serial_number"] != serial
        assert read_credentials(shot.comp_dir / name, trust_anchors=old_root).state == "Valid"  # not trusted


def test_comp_refuses_bad_credentials_before_compositing(signed_shot):
    from dataclasses import replace

    shot, _, _, _ = signed_shot
    comp = shot.config.comp
    before = shot.manifest_path.read_bytes()
    bad = shot.with_config(replace(shot.config, comp=replace(comp, c2pa_key="credentials/missing.key")))
    with pytest.raises(InputError, match="missing.key: C2PA private key does not exist"):
        run_comp(bad)
    self_signed(shot.root / "credentials")
    bad = shot.with_config(replace(shot.config, comp=replace(comp, c2pa_cert="credentials/self.pem",
                                                             c2pa_key="credentials/self.key")))
    with pytest.raises(InputError, match="self.pem: the signing certificate .* is self-signed"):
        run_comp(bad)
    assert shot.manifest_path.read_bytes() == before  # refused before the stage started


def test_refined_frames_declare_the_edit(signed_shot):
    from dataclasses import replace

    shot, _, _, _ = signed_shot
    refined = shot.with_config(replace(shot.config, refine=replace(shot.config.refine, model="models/refiner")))
    actions = comp_actions(refined, refined=True)
    assert [a["action"] for a in actions] == ["c2pa.created", "c2pa.edited"]
    assert {a["digitalSourceType"] for a in actions} == {DIGITAL_SOURCE_TYPE} and "models/refiner" in actions[1][
        "description"]


def test_virtual_camera_shot_is_signed_as_trained_algorithmic_media(tmp_path, data_dir):
    from splatfx.comp.credentials import SYNTHETIC_SOURCE_TYPE

    shot = make_shot(tmp_path, data_dir, frames=2)
    (shot.root / "camera.json").write_text(json.dumps({"keyframes": [
        {"frame": 1001, "position": [0.0, -3.0, 2.0], "look_at": [0.0, 7.0, 2.0]},
        {"frame": 1002, "position": [0.5, -2.5, 2.2], "look_at": [0.0, 7.0, 2.0]}]}))
    chain = make_chain(shot.root / "credentials")
    settings = config_to_dict(shot.config)
    settings["render"].update({"camera": "virtual", "virtual_camera": "camera.json", "resolution_scale": 0.25})
    settings["comp"].update({"outputs": ["png", "mp4"], "c2pa_cert": "credentials/chain.pem",
                             "c2pa_key": "credentials/signer.key"})
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    shot = Shot.open(shot.root)
    run_render(shot)
    result = run_comp(shot)
    assert result.value["camera"] == "virtual" and result.value["content_credentials"].startswith("signed")
    for name in ("comp.1001.png", "comp.1002.png", "shot.mp4"):
        creds = read_credentials(shot.comp_dir / name, trust_anchors=chain.root)
        assert creds.state == "Trusted" and creds.failures == (), name
        assert creds.digital_source_types == {SYNTHETIC_SOURCE_TYPE}
        assert creds.provenance["camera"] == "virtual"
    assert read_credentials(shot.comp_dir / "comp.1002.png").provenance["synthetic_share"] == 1.0
