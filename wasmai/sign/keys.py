"""Key-based (air-gapped) signing with sigstore's model-signing, and :func:`keygen`.

model-signing signs the component as a single-file model with an ECDSA key: the bundle holds a
DSSE envelope whose in-toto payload lists the file's sha256 and a public-key hint instead of a
certificate; no transparency log is involved. cryptography and model_signing are imported
inside the functions (``import wasmai.sign`` stays light).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasmai.errors import VerificationError, WasmaiError, first_line
from wasmai.manifest import sha256_file
from wasmai.sign.bundle import SignResult, VerifyResult, key_payload

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

#: Environment variable holding the passphrase of an encrypted ``--key`` private key.
KEY_PASSWORD_ENV = "WASMAI_KEY_PASSWORD"
#: The curves model-signing accepts for ECDSA keys (its ``_check_supported_ec_key``).
_CURVES = ("secp256r1", "secp384r1", "secp521r1")


@dataclass
class KeyPair:
    """A key pair written by :func:`keygen`: PEM paths and the public key fingerprint
    (hex sha256 of the DER SubjectPublicKeyInfo)."""

    private_key: Path
    public_key: Path
    fingerprint: str
    curve: str = "P-256"


def key_fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """Hex sha256 of the DER SubjectPublicKeyInfo of a cryptography public key."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _pem_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    """model-signing's public-key hint: hex sha256 of the PEM SubjectPublicKeyInfo (computed
    inside its private ``sign_ec_key`` module; there is no public accessor)."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _write_private(dest: Path, data: bytes) -> Path:
    """Write a temp file created 0600 beside ``dest``; the caller renames it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def keygen(out_dir: str | os.PathLike[str], name: str = "wasmai", *, force: bool = False) -> KeyPair:
    """Generate an ECDSA P-256 key pair for key-based signing: ``OUT/NAME.key`` (PKCS#8 PEM,
    unencrypted, mode 0600) and ``OUT/NAME.pub`` (SubjectPublicKeyInfo PEM, 0644).

    P-256 because it is what the Sigstore ecosystem uses throughout (ephemeral Fulcio keys,
    Rekor and CT log keys: ``PKIX_ECDSA_P256_SHA_256``), model-signing accepts only NIST curves
    (P-256/384/521, no Ed25519), and it is widely supported (cosign, sigstore-go, HSMs, FIPS).
    Both files appear atomically or not at all. Raises :class:`WasmaiError` if a file exists
    (unless ``force``), ``name`` is not a plain file name, or the folder is not writable."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not name or "/" in name or name.startswith("."):
        raise WasmaiError(f"key name must be a plain file name, not {name!r}")
    out = Path(out_dir)
    priv, pub = out / f"{name}.key", out / f"{name}.pub"
    if not force:
        for p in (priv, pub):
            if p.exists():
                raise WasmaiError(f"{p} exists (use --force to overwrite)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        priv_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        tmp_priv = _write_private(priv, priv_pem)
        tmp_pub = _write_private(pub, pub_pem)
        try:
            os.chmod(tmp_pub, 0o644)
            os.replace(tmp_priv, priv)
            os.replace(tmp_pub, pub)
        except BaseException:
            tmp_priv.unlink(missing_ok=True)
            tmp_pub.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise WasmaiError(f"cannot write keys to {out}: {exc}") from None
    return KeyPair(private_key=priv, public_key=pub, fingerprint=key_fingerprint(key.public_key()))


def _load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise WasmaiError(f"public key not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise WasmaiError(f"cannot read public key {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
        raise WasmaiError(f"{path}: only ECDSA P-256/P-384/P-521 public keys are supported")
    return key


def _password() -> bytes | None:
    password = os.environ.get(KEY_PASSWORD_ENV)
    return password.encode() if password else None


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), _password())
    except FileNotFoundError:
        raise WasmaiError(f"private key not found: {path}") from None
    except TypeError:
        raise WasmaiError(f"{path} is encrypted: set {KEY_PASSWORD_ENV} to its passphrase") from None
    except (OSError, ValueError) as exc:
        raise WasmaiError(f"cannot read private key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVES:
        raise WasmaiError(f"{path}: only ECDSA P-256/P-384/P-521 private keys are supported "
                          "(make one with `wasmai keygen`)")
    return key


def _model_signing() -> Any:
    """Import model_signing, which imports pyOpenSSL (``OpenSSL``) at import time without
    declaring it as a dependency."""
    try:
        import model_signing
    except ModuleNotFoundError as exc:
        if exc.name == "OpenSSL":
            raise WasmaiError("key-based signing needs pyOpenSSL, which model-signing imports without "
                              "declaring it: pip install pyopenssl") from None
        raise WasmaiError(f"key-based signing needs model-signing: {exc}") from None
    return model_signing


def _file_hashing(ms: Any) -> Any:
    """model-signing's hashing config for one file: a sha256 of its bytes, symlinks refused."""
    return ms.hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)


def sign_with_key(component: Path, key_path: Path, target: Path) -> SignResult:
    """Sign ``component`` with the ECDSA PEM private key at ``key_path`` (passphrase in
    :data:`KEY_PASSWORD_ENV`) and write the model-signing bundle to ``target`` atomically.

    Raises :class:`WasmaiError` for an unreadable, encrypted-without-passphrase or unsupported
    key, missing model-signing/pyOpenSSL, an unwritable target, or a component that changed
    while it was signed."""
    from wasmai._atomic import atomic_path

    private_key = _load_private_key(key_path)
    ms = _model_signing()
    digest = sha256_file(component)
    try:
        with atomic_path(target) as tmp:
            config = ms.signing.Config().set_hashing_config(_file_hashing(ms))
            config.use_elliptic_key_signer(private_key=key_path, password=_password())
            config.sign(component.resolve(), tmp)  # resolved: model-signing refuses symlinks
            if key_payload(json.loads(tmp.read_text(encoding="utf-8")), target).digest != digest:
                raise WasmaiError(f"{component} changed while it was being signed; try again")
    except (OSError, ValueError) as exc:
        raise WasmaiError(f"cannot sign {component}: {exc}") from None
    return SignResult(component=component, bundle=target, kind="key", digest=digest,
                      key_fingerprint=key_fingerprint(private_key.public_key()))


def verify_with_key(component: Path, where: Path, doc: dict[str, Any], digest: str,
                    key_path: Path, policy: str) -> VerifyResult:
    """Verify the model-signing bundle ``doc`` (read from ``where``) of ``component`` (sha256
    ``digest``) with the PEM public key at ``key_path``; ``policy`` describes it in the result.

    Raises :class:`WasmaiError` for an unreadable or unsupported public key, and
    :class:`VerificationError` for a malformed bundle, ``wrong key`` (the bundle's key hint
    names another key), ``digest mismatch`` (the bundle signs other bytes) or ``signature
    invalid`` (model-signing's check fails; its own text follows)."""
    from cryptography.exceptions import InvalidSignature

    public_key = _load_public_key(key_path)
    payload = key_payload(doc, where)
    fingerprint = key_fingerprint(public_key)
    if payload.hint and payload.hint != _pem_hint(public_key):
        raise VerificationError(f"wrong key: {where} was signed by a different key than {key_path} "
                                f"(sha256 {fingerprint[:16]}...)")
    if payload.digest != digest:
        raise VerificationError(f"digest mismatch: {component} has sha256 {digest}, "
                                f"the bundle signs {payload.digest}")
    ms = _model_signing()
    config = ms.verifying.Config().set_hashing_config(_file_hashing(ms)).use_elliptic_key_verifier(
        public_key=key_path)
    try:
        # model-signing prints compatibility warnings on stdout; keep stdout for --json.
        with contextlib.redirect_stdout(io.StringIO()):
            config.verify(component.resolve(), where)
    except (InvalidSignature, ValueError, LookupError, TypeError) as exc:
        # InvalidSignature: the ECDSA check; ValueError: model-signing's key, media type and
        # manifest mismatches (and pydantic's); LookupError/TypeError: its dict handling of an
        # oddly shaped bundle.
        raise VerificationError(f"signature invalid: {where} does not verify with {key_path} "
                                f"({type(exc).__name__}: {first_line(exc)})") from None
    return VerifyResult(component=component, bundle=where, kind="key", digest=digest,
                        policy=policy, key_fingerprint=fingerprint)
