"""Content Credentials: signed C2PA manifests in the comp's PNG frames and MP4 movies.

A C2PA manifest is a signed statement embedded in the file (a ``caBX`` chunk in PNG, a
``uuid`` box in MP4) that says who made the file and how, and is bound to the file's bytes
by a hash, so any later change to the pixels breaks it. The comp's manifests declare:

* ``c2pa.actions.v2``: ``c2pa.created`` by splatfx, whose ``digitalSourceType`` is IPTC's
  ``compositeWithTrainedAlgorithmicMedia`` (real footage composited with elements rendered
  from a reconstruction trained on it; ``trainedAlgorithmicMedia`` for a virtual camera's
  fully rendered shot), plus ``c2pa.edited`` when a diffusion model refined the frame;
* ``org.splatfx.provenance``: the facts of the shot's manifest record (synthetic share,
  seed, grain, the render's hash and key, effects, models, comp settings).

Signing uses the studio's certificate chain and private key (``[comp] c2pa_cert`` /
``c2pa_key``) through c2pa-python (the optional extra ``splatfx[c2pa]``). The C2PA library
refuses a self-signed signing certificate: it must be issued by a CA (a leaf under an
intermediate); :meth:`Signing.load` checks that, and every other problem with the files,
before any frame is made. :func:`read_credentials` reads a manifest back and validates it.

OpenEXR has no place for a C2PA manifest (OpenEXR issue 1497), so an EXR frame gets a
**sidecar**: ``comp.1001.exr`` is bound by ``comp.1001.c2pa`` beside it, a signed manifest
store (not embedded, :meth:`Signing.sign_sidecar`) whose ``c2pa.hash.data`` assertion is the
hash of the EXR's bytes, with the same actions and provenance as the PNG frame.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from splatfx import __version__
from splatfx.core.atomic import atomic_path
from splatfx.shot.config import CompSection, config_to_dict
from splatfx.core.errors import ConfigError, InputError, OutputError, require_file
from splatfx.shot.folder import Shot

#: IPTC digital source type of every comp output: real plates composited with rendered elements
#: of a reconstruction trained on them.
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
#: ... and of a virtual camera's shot (``[render] camera = "virtual"``): every pixel rendered from it.
SYNTHETIC_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
#: Label of the custom assertion holding the frame's provenance (reverse-domain, as C2PA asks).
PROVENANCE_LABEL = "org.splatfx.provenance"
ACTIONS_LABEL = "c2pa.actions.v2"
#: The formats the comp signs, by suffix.
MIME_TYPES = {".png": "image/png", ".mp4": "video/mp4"}
#: Formats without an embedding: signed into a sidecar manifest (``<name>.c2pa``) beside the file.
SIDECAR_MIME_TYPES = {".exr": "image/x-exr"}
SIDECAR_SUFFIX = ".c2pa"
#: The movies the comp signs, and what they show.
MOVIES = {"shot.mp4": "the composited shot", "review.mp4": "left: the plate, right: the composite"}
#: c2pa SDK settings for signing: no embedded JPEG thumbnail (the frame is its own picture; a
#: thumbnail per 768×576 frame cost ~65 ms and up to the PNG's size again).
SIGN_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}
#: Which algorithms fit which key, by key description (see :func:`_key_kind`).
ALGORITHMS_FOR_KEY = {"EC P-256": ("es256",), "EC P-384": ("es384",), "EC P-521": ("es512",),
                      "RSA": ("ps256", "ps384", "ps512"), "Ed25519": ("ed25519",)}
_INSTALL = "c2pa-python is not installed: pip install 'splatfx[c2pa]'"


def _c2pa(source: str) -> Any:
    """The c2pa module; ConfigError naming ``source`` (the setting that asks for it) when missing."""
    try:
        import c2pa
    except ImportError:
        raise ConfigError(source, f"asks for C2PA signing but {_INSTALL}") from None
    return c2pa


# --- signing ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Signing:
    """A checked signing identity: the certificate chain and key files, the algorithm and the
    optional time-stamp authority. Holds paths, not keys, so it can travel to farm workers."""

    cert: Path
    key: Path
    alg: str = "es256"
    tsa_url: str | None = None
    chain_sha256: str = ""  # of the chain's DER certificates: a new certificate re-signs every output
    subject: str = ""  # the signing certificate's subject (RFC 4514)
    expires: str = ""  # its end of validity (ISO 8601, UTC)

    @classmethod
    def load(cls, cert: Path, key: Path, alg: str = "es256", tsa_url: str | None = None,
             setting: str = "[comp]") -> Signing:
        """Read and check the chain and key, then prove them by signing a 1-pixel PNG.

        Problems are one-line errors naming the file: missing or unreadable, not PEM, an
        encrypted key, a key that is not the signing certificate's, a self-signed or expired
        certificate, one the C2PA library refuses (e.g. without a C2PA extended key usage); an
        algorithm that does not fit the key names ``{setting} c2pa_alg``, an unusable TSA
        ``{setting} c2pa_tsa_url``.
        """
        from cryptography import x509
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization

        c2pa = _c2pa(f"{setting} c2pa_cert")
        chain_pem = _read(cert, "C2PA certificate chain")
        try:
            chain = x509.load_pem_x509_certificates(chain_pem)
        except ValueError:
            raise InputError(cert, "is not a PEM certificate chain (-----BEGIN CERTIFICATE----- blocks)") from None
        key_pem = _read(key, "C2PA private key")
        try:
            private = serialization.load_pem_private_key(key_pem, password=None)
        except TypeError:
            raise InputError(key, "is encrypted; splatfx needs the private key as unencrypted PEM") from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InputError(key, f"is not a PEM private key ({exc})") from None
        leaf = chain[0]
        if _self_signed(leaf):
            raise InputError(cert, f"the signing certificate ({leaf.subject.rfc4514_string()}) is self-signed; C2PA "
                                   "needs one issued by a CA (e.g. a leaf under an intermediate, the chain in the file)")
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if private.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
            raise InputError(key, f"is not the private key of the signing certificate in {cert} "
                                  f"({leaf.subject.rfc4514_string()})")
        kind = _key_kind(private)
        if alg not in ALGORITHMS_FOR_KEY.get(kind, ()):
            fits = " or ".join(ALGORITHMS_FOR_KEY.get(kind, ())) or "none of the C2PA algorithms"
            raise ConfigError(f"{setting} c2pa_alg", f"is {alg!r} but {key} is an {kind} key: use {fits}")
        expires = leaf.not_valid_after_utc
        if expires < datetime.now(timezone.utc):
            raise InputError(cert, f"the signing certificate ({leaf.subject.rfc4514_string()}) expired on "
                                   f"{expires:%Y-%m-%d}")
        digest = hashlib.sha256(b"".join(c.public_bytes(serialization.Encoding.DER) for c in chain)).hexdigest()
        signing = cls(cert, key, alg, tsa_url, digest, leaf.subject.rfc4514_string(), expires.isoformat())
        signing._probe(c2pa, None, cert, "is refused by the C2PA library")
        if tsa_url is not None:
            signing._probe(c2pa, tsa_url, f"{setting} c2pa_tsa_url", "could not time-stamp a signature")
        return signing

    @property
    def identity(self) -> dict[str, str | None]:
        """What about the signature changes the outputs (for the comp's frame keys)."""
        return {"chain_sha256": self.chain_sha256, "alg": self.alg, "tsa_url": self.tsa_url}

    def describe(self) -> str:
        """One line for the stage's figures."""
        tsa = f", time-stamped by {self.tsa_url}" if self.tsa_url else ""
        return f"signed ({self.alg}) by {self.subject}, chain sha256 {self.chain_sha256[:16]}…{tsa}"

    def sign(self, path: Path, manifest: dict) -> None:
        """Embed ``manifest`` (a C2PA manifest definition) signed into the PNG or MP4 ``path``,
        in place: signed into a temporary file beside it, which then replaces it."""
        path = Path(path)
        mime = MIME_TYPES.get(path.suffix.lower())
        if mime is None:
            raise OutputError(path, f"cannot carry C2PA credentials here (signed formats: {', '.join(MIME_TYPES)})")
        c2pa = _c2pa(str(path))
        try:
            with atomic_path(path) as tmp, open(path, "rb") as source, open(tmp, "w+b") as dest:
                self._sign_stream(c2pa, manifest, mime, source, dest, self.tsa_url)
        except c2pa.C2paError as exc:
            raise OutputError(path, f"could not be signed with {self.cert}: {_message(exc)}") from None

    def sign_sidecar(self, path: Path, manifest: dict) -> Path:
        """Sign ``manifest`` for the EXR ``path`` into its sidecar ``sidecar_path(path)``
        (written atomically); the manifest's data hash binds every byte of ``path``."""
        path = Path(path)
        mime = SIDECAR_MIME_TYPES.get(path.suffix.lower())
        if mime is None:
            raise OutputError(path, f"no sidecar C2PA signing for this format (sidecars: {', '.join(SIDECAR_MIME_TYPES)})")
        c2pa = _c2pa(str(path))
        sidecar = sidecar_path(path)
        try:
            with open(path, "rb") as source:
                store = self._sign_stream(c2pa, manifest, mime, source, io.BytesIO(), self.tsa_url, embed=False)
        except c2pa.C2paError as exc:
            raise OutputError(path, f"could not be signed with {self.cert}: {_message(exc)}") from None
        with atomic_path(sidecar) as tmp:
            tmp.write_bytes(store)
        return sidecar

    def _sign_stream(self, c2pa: Any, manifest: dict, mime: str, source: Any, dest: Any, tsa_url: str | None,
                     *, embed: bool = True) -> bytes:
        """Sign ``source`` into ``dest``; returns the manifest store (all there is, unembedded)."""
        info = c2pa.C2paSignerInfo(self.alg.encode(), _read(self.cert, "C2PA certificate chain"),
                                   _read(self.key, "C2PA private key"), tsa_url)
        context = c2pa.Context(c2pa.Settings.from_dict(SIGN_SETTINGS))
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest, context=context) as builder:
            if not embed:
                builder.set_no_embed()
            return builder.sign(signer, mime, source, dest)

    def _probe(self, c2pa: Any, tsa_url: str | None, source: str | Path, problem: str) -> None:
        """Sign a 1-pixel PNG in memory; the library's refusal becomes one line naming ``source``."""
        manifest = build_manifest("probe.png", {"probe": True}, [_action("c2pa.created", "credential check")])
        try:
            self._sign_stream(c2pa, manifest, "image/png", io.BytesIO(_probe_png()), io.BytesIO(), tsa_url)
        except c2pa.C2paError as exc:
            cls = InputError if isinstance(source, Path) else ConfigError
            raise cls(source, f"{problem}: {_message(exc)}") from None


def sidecar_path(path: str | Path) -> Path:
    """The sidecar manifest of ``path``: the same name with ``.c2pa`` for its suffix, as C2PA names it."""
    return Path(path).with_suffix(SIDECAR_SUFFIX)


def load_signing(shot: Shot, section: CompSection) -> Signing | None:
    """The comp's signing identity from ``[comp]`` (checked, see :meth:`Signing.load`), or None
    when ``c2pa_cert`` is not set (outputs unsigned)."""
    if section.c2pa_cert is None or section.c2pa_key is None:
        return None
    return Signing.load(shot.path(section.c2pa_cert), shot.path(section.c2pa_key), section.c2pa_alg,
                        section.c2pa_tsa_url, setting=f"{shot.toml_path} [comp]")


def _probe_png() -> bytes:
    """A 1×1 PNG, signed in memory to prove the credentials before any frame is written."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    return buffer.getvalue()


def _read(path: Path, what: str) -> bytes:
    require_file(path, what)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"{what} cannot be read ({exc.strerror or exc})") from None


def _self_signed(certificate: Any) -> bool:
    """Whether ``certificate`` names itself as issuer and its signature verifies with its own key."""
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except Exception:  # noqa: BLE001 - InvalidSignature, ValueError, TypeError: not signed by itself
        return False
    return True


def _key_kind(private: Any) -> str:
    """``"EC P-256"``, ``"RSA"``, ``"Ed25519"`` … for a cryptography private key."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(private, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "EC P-256", "secp384r1": "EC P-384", "secp521r1": "EC P-521"}.get(
            private.curve.name, f"EC {private.curve.name}")
    if isinstance(private, rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return "Ed25519"
    return type(private).__name__


def _message(exc: Exception) -> str:
    """The library's error as one line, without its ``Kind: `` prefix."""
    text = " ".join(str(exc).split())
    head, _, rest = text.partition(": ")
    return rest if rest and " " not in head else text


# --- what the comp declares ------------------------------------------------------------------------
def build_manifest(title: str, provenance: dict, actions: list[dict]) -> dict:
    """A C2PA manifest definition: claim generator splatfx, ``actions``, and ``provenance`` as
    the :data:`PROVENANCE_LABEL` assertion."""
    return {"claim_generator_info": [{"name": "splatfx", "version": __version__}], "title": title,
            "assertions": [{"label": ACTIONS_LABEL, "data": {"actions": actions}},
                           {"label": PROVENANCE_LABEL, "data": provenance}]}


def _action(action: str, description: str, source_type: str = DIGITAL_SOURCE_TYPE) -> dict:
    return {"action": action, "digitalSourceType": source_type, "description": description,
            "softwareAgent": {"name": "splatfx", "version": __version__}}


def comp_actions(shot: Shot, refined: bool) -> list[dict]:
    """``c2pa.created`` (the composite; for a virtual camera's shot, the render), and
    ``c2pa.edited`` when a diffusion model refined it."""
    effects = ", ".join(shot.config.fx.effects) or "no simulated effect"
    if shot.config.render.camera == "virtual":
        source = SYNTHETIC_SOURCE_TYPE
        made = ("rendered by a virtual camera from a 3D Gaussian Splatting reconstruction trained on real "
                f"photographs ({effects})")
    else:
        source = DIGITAL_SOURCE_TYPE
        made = ("real plates composited with elements rendered from a 3D Gaussian Splatting reconstruction "
                f"trained on them ({effects})")
    actions = [_action("c2pa.created", made, source)]
    if refined:
        actions.append(_action("c2pa.edited", f"synthetic pixels refined by the diffusion model "
                                              f"{shot.config.refine.model}", source))
    return actions


def shot_provenance(shot: Shot) -> dict:
    """The facts shared by every comp output: shot, seed, camera, effects, models and comp settings."""
    config = shot.config
    refine = config.refine
    models = {"scene": "3D Gaussian Splatting reconstruction trained on the plates (scene/scene.ply)",
              "refine": None if refine.model is None else {
                  "model": refine.model, "steps": refine.steps, "strength": refine.strength,
                  "seed": config.shot.seed if refine.seed is None else refine.seed}}
    settings = {k: v for k, v in config_to_dict(config.comp).items() if not k.startswith("c2pa_")}
    return {"shot": shot.name, "seed": config.shot.seed, "fps": config.shot.fps, "camera": config.render.camera,
            "effects": list(config.fx.effects),
            "models": models, "comp_settings": settings}


def frame_manifest(shot: Shot, frame: int, figures: dict, name: str) -> dict:
    """The manifest of comp frame ``frame`` (file ``name``): its figures from the comp's record."""
    refined = _refined(shot, frame)
    provenance = {**shot_provenance(shot), "frame": frame, "refined": refined, **figures}
    return build_manifest(name, provenance, comp_actions(shot, refined))


def movie_manifest(shot: Shot, name: str, per_frame: dict[str, dict]) -> dict:
    """The manifest of movie ``name`` (:data:`MOVIES`): every frame's synthetic share and key."""
    frames = sorted(per_frame, key=int)
    refined = [int(f) for f in frames if _refined(shot, int(f))]
    shows = "the shot, rendered by a virtual camera" if shot.config.render.camera == "virtual" else MOVIES[name]
    provenance = {**shot_provenance(shot), "shows": shows,
                  "frames": f"{frames[0]}-{frames[-1]}" if frames else "", "refined_frames": refined,
                  "per_frame": {f: {k: per_frame[f].get(k) for k in ("synthetic_share", "seed", "key")}
                                for f in frames}}
    return build_manifest(name, provenance, comp_actions(shot, bool(refined)))


def _refined(shot: Shot, frame: int) -> bool:
    """Whether the comp used the refine stage's version of ``frame`` (as comp.display.refined_frame_path)."""
    return shot.config.refine.model is not None and shot.refined_frame(frame).is_file()


# --- reading back ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ContentCredentials:
    """The active C2PA manifest of a file and how it validated."""

    manifest: dict  # the active manifest, as c2pa's JSON
    state: str  # "Invalid"; "Valid": signature and hashes check out; "Trusted": also chains to a trust anchor
    failures: tuple[str, ...] = field(default=())  # validation failure codes, e.g. "signingCredential.untrusted"

    def assertion(self, label: str) -> Any:
        """The data of the assertion ``label`` (None if absent)."""
        return next((a["data"] for a in self.manifest.get("assertions", []) if a.get("label") == label), None)

    @property
    def actions(self) -> list[dict]:
        data = self.assertion(ACTIONS_LABEL) or self.assertion("c2pa.actions") or {}
        return list(data.get("actions", []))

    @property
    def digital_source_types(self) -> set[str]:
        return {a["digitalSourceType"] for a in self.actions if "digitalSourceType" in a}

    @property
    def provenance(self) -> dict | None:
        return self.assertion(PROVENANCE_LABEL)


def read_credentials(path: str | Path, trust_anchors: str | Path | None = None) -> ContentCredentials:
    """The C2PA manifest of ``path``, validated: embedded (PNG, MP4), or for an EXR its sidecar
    ``<name>.c2pa`` checked against the EXR's bytes. With ``trust_anchors`` (PEM root
    certificates) the signing chain is also checked against them ("Trusted")."""
    path = Path(path)
    c2pa = _c2pa(str(path))
    require_file(path)
    settings: dict = {"verify": {"verify_trust": True}}
    if trust_anchors is not None:
        settings["trust"] = {"trust_anchors": _read(Path(trust_anchors), "trust anchors").decode("utf-8", "replace")}
    context = c2pa.Context(c2pa.Settings.from_dict(settings))
    sidecar = sidecar_path(path)
    mime = SIDECAR_MIME_TYPES.get(path.suffix.lower())
    if mime is not None and not sidecar.is_file():
        raise InputError(path, f"carries no C2PA manifest (no sidecar {sidecar.name} beside it)")
    try:
        if mime is not None:
            with open(path, "rb") as stream, c2pa.Reader(mime, stream, manifest_data=_read(sidecar, "C2PA sidecar"),
                                                         context=context) as reader:
                return _credentials(reader)
        with c2pa.Reader(str(path), context=context) as reader:
            return _credentials(reader)
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__:
            raise InputError(path, "carries no C2PA manifest (Content Credentials)") from None
        raise InputError(sidecar if mime else path, f"unreadable C2PA manifest: {_message(exc)}") from None


def _credentials(reader: Any) -> ContentCredentials:
    manifest = reader.get_active_manifest() or {}
    state = reader.get_validation_state() or "Invalid"
    results = reader.get_validation_results() or {}
    failures = tuple(f["code"] for f in results.get("activeManifest", {}).get("failure", []))
    return ContentCredentials(manifest, state, failures)

