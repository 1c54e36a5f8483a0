"""Signing and verifying components with Sigstore bundles.

Two kinds of signature, both written as a detached Sigstore bundle (v0.3 JSON) beside the
component (``COMPONENT.sigstore.json``); the component itself is never modified:

* **keyless** (default): an OIDC identity token (ambient CI credential, ``--identity-token`` or
  the interactive browser flow) buys a short-lived Fulcio certificate; the component's sha256 is
  signed with the unmodified ``sigstore`` signer (``Hashed`` input, so large files are streamed
  once) and logged in Rekor. Verification uses ``sigstore.verify.Verifier`` against a trusted root
  (production by default) plus a mandatory identity policy.
* **key-based** (air-gapped): sigstore's ``model-signing`` signs the component as a single-file
  model with an ECDSA key. The bundle holds a DSSE envelope whose in-toto payload lists the file's
  sha256 (``predicate.resources[0].digest``) and a public-key hint instead of a certificate; no
  transparency log is involved. :func:`keygen` makes a P-256 key pair for it.

Heavy dependencies (sigstore, model_signing, cryptography) are imported inside the functions.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wasmai.errors import VerificationError, WasmaiError, first_line
from wasmai.manifest import sha256_file

#: Suffix of the detached bundle written beside a component.
BUNDLE_SUFFIX = ".sigstore.json"
#: OIDC issuer of GitHub Actions workflow identities.
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
#: Environment variable holding the passphrase of an encrypted ``--key`` private key.
KEY_PASSWORD_ENV = "WASMAI_KEY_PASSWORD"

_OID_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
_OID_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
_OID_OTHERNAME = "1.3.6.1.4.1.57264.1.7"
_OID_SOURCE_REPO_URI = "1.3.6.1.4.1.57264.1.12"
_OID_SOURCE_REPO_REF = "1.3.6.1.4.1.57264.1.14"
_MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0"


# --- results -----------------------------------------------------------------------------------

@dataclass
class KeyPair:
    """A key pair written by :func:`keygen`: PEM paths and the public key fingerprint
    (hex sha256 of the DER SubjectPublicKeyInfo)."""

    private_key: Path
    public_key: Path
    fingerprint: str
    curve: str = "P-256"


@dataclass
class SignResult:
    """What :func:`sign_component` did. ``kind`` is ``keyless`` or ``key``; ``digest`` is the hex
    sha256 of the component bytes. Keyless: ``identity``/``issuer`` from the certificate and the
    Rekor ``log_index``. Key: ``key_fingerprint``."""

    component: Path
    bundle: Path
    kind: str
    digest: str
    identity: str | None = None
    issuer: str | None = None
    log_index: int | None = None
    key_fingerprint: str | None = None


@dataclass
class VerifyResult:
    """A successful :func:`verify_component` (failures raise). Same fields as :class:`SignResult`
    plus ``policy``, a human-readable description of what was required."""

    component: Path
    bundle: Path
    kind: str
    digest: str
    policy: str
    identity: str | None = None
    issuer: str | None = None
    log_index: int | None = None
    key_fingerprint: str | None = None
    verified: bool = True


# --- policy ------------------------------------------------------------------------------------

_PATH_FIELDS = ("key", "trust_config", "trusted_root")
_STR_FIELDS = ("cert_identity", "cert_oidc_issuer", "github_repository", "github_ref")
_BOOL_FIELDS = ("staging", "offline")


@dataclass
class VerificationPolicy:
    """Who must have signed a component, and which root of trust to check it against.

    Exactly one identity policy: ``key`` (a PEM public key), ``cert_identity`` +
    ``cert_oidc_issuer`` (certificate SAN and OIDC issuer, exact match), or ``github_repository``
    (``OWNER/REPO``; optional ``github_ref`` such as ``refs/heads/main``, optional
    ``cert_identity`` = workflow identity). Trust root for keyless bundles: ``trust_config``
    (ClientTrustConfig JSON) or ``trusted_root`` (TrustedRoot JSON) or ``staging``; default
    Sigstore production, refreshed over TUF unless ``offline`` (cached/embedded root).
    """

    key: Path | None = None
    cert_identity: str | None = None
    cert_oidc_issuer: str | None = None
    github_repository: str | None = None
    github_ref: str | None = None
    trust_config: Path | None = None
    trusted_root: Path | None = None
    staging: bool = False
    offline: bool = False

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> VerificationPolicy:
        """Read a TOML policy file whose keys are this class's field names (top level or in a
        ``[policy]`` table); relative paths are relative to the file. Raises
        :class:`WasmaiError` if the file is unreadable, has unknown keys or wrong types, or the
        policy is invalid (see :meth:`validate`)."""
        policy = cls._read(path)
        policy.validate()
        return policy

    @classmethod
    def _read(cls, path: str | os.PathLike[str]) -> VerificationPolicy:
        from wasmai.manifest import read_toml

        path = Path(path)
        doc = read_toml(path, "policy file")
        if isinstance(doc.get("policy"), dict) and len(doc) == 1:
            doc = doc["policy"]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise WasmaiError(f"policy file {path}: unknown key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        for name, value in doc.items():
            want = bool if name in _BOOL_FIELDS else str
            if not isinstance(value, want):
                raise WasmaiError(f"policy file {path}: {name} must be a {want.__name__}")
            if name in _PATH_FIELDS:
                value = (path.parent / value) if not Path(value).is_absolute() else Path(value)
            values[name] = value
        return cls(**values)

    def validate(self) -> None:
        """Check that exactly one identity policy is given and options agree. Raises
        :class:`WasmaiError` with a one-line explanation otherwise."""
        hint = ("pass --key PUBLIC.pem, or --cert-identity ID with --cert-oidc-issuer URL, "
                "or --github-repository OWNER/REPO")
        keyless = any([self.cert_identity, self.cert_oidc_issuer, self.github_repository, self.github_ref])
        if self.key is None and not keyless:
            raise WasmaiError(f"no verification policy: {hint} (there is no 'any identity' default)")
        if self.key is not None:
            if keyless:
                raise WasmaiError("ambiguous verification policy: --key cannot be combined with "
                                  "--cert-identity/--cert-oidc-issuer/--github-repository/--github-ref")
            if self.trust_config or self.trusted_root or self.staging:
                raise WasmaiError("--trust-config/--trusted-root/--staging apply to keyless bundles, "
                                  "not to --key verification")
            return
        if self.github_ref and not self.github_repository:
            raise WasmaiError("--github-ref needs --github-repository")
        if self.github_repository:
            parts = self.github_repository.split("/")
            if len(parts) != 2 or not all(parts):
                raise WasmaiError(f"--github-repository must be OWNER/REPO, not {self.github_repository!r}")
            if self.cert_oidc_issuer and self.cert_oidc_issuer != GITHUB_ISSUER:
                raise WasmaiError(f"--github-repository implies issuer {GITHUB_ISSUER}; "
                                  f"conflicting --cert-oidc-issuer {self.cert_oidc_issuer}")
        else:
            if not self.cert_identity:
                raise WasmaiError("--cert-oidc-issuer needs --cert-identity (the expected signer identity)")
            if not self.cert_oidc_issuer:
                raise WasmaiError("--cert-identity needs --cert-oidc-issuer (the expected OIDC issuer URL)")
        chosen = [n for n in ("trust_config", "trusted_root") if getattr(self, n)]
        if len(chosen) + bool(self.staging) > 1:
            raise WasmaiError("choose one of --trust-config, --trusted-root, --staging")

    @property
    def issuer(self) -> str | None:
        """The required OIDC issuer (GitHub's for a repository policy)."""
        return GITHUB_ISSUER if self.github_repository else self.cert_oidc_issuer

    def describe(self) -> str:
        """One line describing the policy, e.g. ``identity dev@x.org from https://...``."""
        if self.key is not None:
            return f"key {self.key}"
        if self.github_repository:
            text = f"GitHub Actions in {self.github_repository}"
            if self.github_ref:
                text += f" at {self.github_ref}"
            if self.cert_identity:
                text += f" as {self.cert_identity}"
            return text
        return f"identity {self.cert_identity} from {self.cert_oidc_issuer}"


def policy_from_options(*, key: str | os.PathLike[str] | None = None, cert_identity: str | None = None,
                        cert_oidc_issuer: str | None = None, github_repository: str | None = None,
                        github_ref: str | None = None, trust_config: str | os.PathLike[str] | None = None,
                        trusted_root: str | os.PathLike[str] | None = None, staging: bool = False,
                        offline: bool = False, policy: str | os.PathLike[str] | None = None
                        ) -> VerificationPolicy | None:
    """Build a policy from CLI-style options (``policy`` = a TOML policy file, whose values the
    explicit options override). Returns None when no option at all is given (the caller decides
    whether unsigned is acceptable); otherwise a validated policy. Raises :class:`WasmaiError`
    for an invalid or incomplete policy."""
    explicit: dict[str, Any] = {
        "key": Path(key) if key else None, "cert_identity": cert_identity or None,
        "cert_oidc_issuer": cert_oidc_issuer or None, "github_repository": github_repository or None,
        "github_ref": github_ref or None, "trust_config": Path(trust_config) if trust_config else None,
        "trusted_root": Path(trusted_root) if trusted_root else None,
        "staging": bool(staging), "offline": bool(offline),
    }
    given = {k: v for k, v in explicit.items() if v}
    if policy is None and not given:
        return None
    result = VerificationPolicy._read(policy) if policy is not None else VerificationPolicy()
    for name, value in given.items():
        setattr(result, name, value)
    result.validate()
    return result


# --- keys --------------------------------------------------------------------------------------

def key_fingerprint(public_key: Any) -> str:
    """Hex sha256 of the DER SubjectPublicKeyInfo of a cryptography public key."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


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


def _load_public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise WasmaiError(f"public key not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise WasmaiError(f"cannot read public key {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise WasmaiError(f"{path}: only ECDSA P-256/P-384/P-521 public keys are supported")
    return key


def _load_private_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    password = os.environ.get(KEY_PASSWORD_ENV)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password.encode() if password else None)
    except FileNotFoundError:
        raise WasmaiError(f"private key not found: {path}") from None
    except TypeError:
        raise WasmaiError(f"{path} is encrypted: set {KEY_PASSWORD_ENV} to its passphrase") from None
    except (OSError, ValueError) as exc:
        raise WasmaiError(f"cannot read private key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
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
    return ms.hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)


# --- paths and bundle parsing ------------------------------------------------------------------

def default_bundle_path(component: str | os.PathLike[str]) -> Path:
    """``COMPONENT.sigstore.json`` beside the component."""
    return Path(f"{os.fspath(component)}{BUNDLE_SUFFIX}")


def _component(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise WasmaiError(f"component not found: {path}")
    if not path.is_file():
        raise WasmaiError(f"not a file: {path}")
    return path


def _bundle_path(component: Path, bundle: str | os.PathLike[str] | None) -> Path:
    target = Path(bundle) if bundle is not None else default_bundle_path(component)
    if target.exists() and target.resolve() == component.resolve():
        raise WasmaiError("the bundle path is the component itself")
    return target


def _read_bundle(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VerificationError(f"missing bundle: {path} (sign with `wasmai sign` or pass --bundle)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VerificationError(f"malformed bundle {path}: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VerificationError(f"malformed bundle {path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("verificationMaterial"), dict):
        raise VerificationError(f"malformed bundle {path}: no verificationMaterial")
    return text, doc


def _bundle_kind(doc: dict[str, Any]) -> str:
    material = doc["verificationMaterial"]
    if "publicKey" in material:
        return "key"
    if "certificate" in material or "x509CertificateChain" in material:
        return "keyless"
    return "unknown"


def _key_payload(doc: dict[str, Any], where: Path) -> dict[str, Any]:
    """The signed single-file manifest of a model-signing bundle: ``{"digest", "hint"}``."""
    try:
        envelope = doc["dsseEnvelope"]
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        resources = statement["predicate"]["resources"]
        if statement.get("predicateType") != _MODEL_SIGNING_PREDICATE:
            raise ValueError(f"unexpected predicate type {statement.get('predicateType')!r}")
        if len(resources) != 1 or resources[0].get("algorithm") != "sha256":
            raise ValueError("expected a single-file sha256 manifest")
        if not envelope["signatures"]:
            raise ValueError("no signature")
        return {"digest": str(resources[0]["digest"]),
                "hint": doc["verificationMaterial"]["publicKey"].get("hint", "")}
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise VerificationError(f"malformed bundle {where}: {exc}") from None


def _pem_hint(public_key: Any) -> str:
    """model-signing's public-key hint: hex sha256 of the PEM SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _der_utf8(raw: bytes) -> str:
    """Decode a DER UTF8String (tag 0x0C); falls back to the raw bytes as text."""
    if len(raw) >= 2 and raw[0] == 0x0C:
        n, off = raw[1], 2
        if n & 0x80:
            width = n & 0x7F
            n, off = int.from_bytes(raw[2:2 + width], "big"), 2 + width
        return raw[off:off + n].decode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def _cert_ext(cert: Any, oid: str, der: bool) -> str | None:
    from cryptography import x509

    try:
        value = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
    except x509.ExtensionNotFound:
        return None
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    return _der_utf8(raw) if der else raw.decode("utf-8", "replace")


def _cert_identity(cert: Any) -> tuple[str | None, str | None]:
    """(identity, issuer) of a Fulcio certificate: first SAN (email, URI or Sigstore other
    name) and the OIDC issuer extension (v2, else legacy)."""
    from cryptography import x509

    identity = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        values = [*san.get_values_for_type(x509.RFC822Name), *san.get_values_for_type(x509.UniformResourceIdentifier),
                  *[o.value.decode("utf-8", "replace") for o in san.get_values_for_type(x509.OtherName)
                    if o.type_id.dotted_string == _OID_OTHERNAME]]
        identity = values[0] if values else None
    except x509.ExtensionNotFound:
        pass
    issuer = _cert_ext(cert, _OID_ISSUER_V2, der=True) or _cert_ext(cert, _OID_ISSUER_V1, der=False)
    return identity, issuer


def _tlog_index(doc: dict[str, Any]) -> int | None:
    try:
        return int(doc["verificationMaterial"]["tlogEntries"][0]["logIndex"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _keyless_digest(doc: dict[str, Any]) -> str | None:
    try:
        return base64.b64decode(doc["messageSignature"]["messageDigest"]["digest"]).hex()
    except (KeyError, TypeError, ValueError):
        return None


# --- signing -----------------------------------------------------------------------------------

def sign_component(path: str | os.PathLike[str], *, key: str | os.PathLike[str] | None = None,
                   identity_token: str | None = None, trust_config: str | os.PathLike[str] | None = None,
                   staging: bool = False, bundle: str | os.PathLike[str] | None = None) -> SignResult:
    """Sign the exact bytes of a component and write a detached Sigstore bundle atomically to
    ``bundle`` (default :func:`default_bundle_path`). The component is never modified.

    With ``key`` (ECDSA PEM private key): key-based signing via model-signing, no network.
    Otherwise keyless: ``identity_token``, else an ambient CI credential, else (on a terminal)
    the interactive OIDC flow; Sigstore production, ``staging`` or ``trust_config``
    (ClientTrustConfig JSON). Returns a :class:`SignResult`. Raises :class:`WasmaiError` on bad
    input, conflicting options, a missing identity or a failing Sigstore service.
    """
    component = _component(path)
    target = _bundle_path(component, bundle)
    if key is not None:
        if identity_token or trust_config or staging:
            raise WasmaiError("--key signs without Sigstore: it cannot be combined with "
                              "--identity-token/--trust-config/--staging")
        return _sign_with_key(component, Path(key), target)
    return _sign_keyless(component, target, identity_token, trust_config, staging)


def _sign_with_key(component: Path, key_path: Path, target: Path) -> SignResult:
    from wasmai._atomic import atomic_path

    private_key = _load_private_key(key_path)
    ms = _model_signing()
    digest = sha256_file(component)
    password = os.environ.get(KEY_PASSWORD_ENV)
    try:
        with atomic_path(target) as tmp:
            config = ms.signing.Config().set_hashing_config(_file_hashing(ms))
            config.use_elliptic_key_signer(private_key=key_path, password=password.encode() if password else None)
            config.sign(component.resolve(), tmp)  # resolved: model-signing refuses symlinks
            signed = _key_payload(json.loads(tmp.read_text(encoding="utf-8")), target)["digest"]
            if signed != digest:
                raise WasmaiError(f"{component} changed while it was being signed; try again")
    except (OSError, ValueError) as exc:
        raise WasmaiError(f"cannot sign {component}: {exc}") from None
    return SignResult(component=component, bundle=target, kind="key", digest=digest,
                      key_fingerprint=key_fingerprint(private_key.public_key()))


def _trust_config(trust_config: str | os.PathLike[str] | None, staging: bool, offline: bool = False) -> Any:
    from sigstore.models import ClientTrustConfig

    if trust_config is not None:
        path = Path(trust_config)
        try:
            return ClientTrustConfig.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WasmaiError(f"trust config not found: {path}") from None
        except Exception as exc:  # noqa: BLE001 - pydantic/sigstore raise many types on bad input
            raise WasmaiError(f"cannot read trust config {path}: {first_line(exc)}") from None
    where = "staging" if staging else "production"
    try:
        return ClientTrustConfig.staging(offline=offline) if staging else ClientTrustConfig.production(offline=offline)
    except Exception as exc:  # noqa: BLE001 - TUF/network errors
        raise WasmaiError(f"cannot load the Sigstore {where} trust root ({first_line(exc)}); "
                          "use --offline for the cached root or --trusted-root/--trust-config FILE") from None


def _identity_token(raw: str | None, trust: Any) -> Any:
    from sigstore import oidc

    if not raw:
        try:
            raw = oidc.detect_credential()
        except Exception as exc:  # noqa: BLE001 - IdentityError from the CI-specific detectors
            raise WasmaiError(f"ambient OIDC credential detection failed: {first_line(exc)} "
                              "(GitHub Actions needs `permissions: id-token: write`)") from None
    if not raw:
        if not sys.stdin.isatty():
            raise WasmaiError("no identity token: pass --identity-token (or SIGSTORE_IDENTITY_TOKEN), "
                              "run in CI with OIDC enabled (GitHub Actions: permissions id-token: write), "
                              "or sign with --key")
        try:
            return oidc.Issuer(trust.signing_config.get_oidc_url()).identity_token()
        except Exception as exc:  # noqa: BLE001 - OAuth flow errors (IssuerError, requests)
            raise WasmaiError(f"cannot get an identity token interactively: {first_line(exc)}") from None
    try:
        return oidc.IdentityToken(raw)
    except Exception as exc:  # noqa: BLE001 - IdentityError wraps jwt errors
        raise WasmaiError(f"identity token rejected: {first_line(exc)}") from None


def _sign_keyless(component: Path, target: Path, raw_token: str | None,
                  trust_config: str | os.PathLike[str] | None, staging: bool) -> SignResult:
    from sigstore.hashes import Hashed
    from sigstore.sign import SigningContext
    from sigstore_models.common.v1 import HashAlgorithm

    from wasmai._atomic import write_text

    if trust_config is not None and staging:
        raise WasmaiError("choose one of --trust-config and --staging")
    trust = _trust_config(trust_config, staging)
    token = _identity_token(raw_token, trust)
    digest = sha256_file(component)
    try:
        context = SigningContext.from_trust_config(trust)
        with context.signer(token, cache=True) as signer:
            bundle = signer.sign_artifact(Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest)))
    except Exception as exc:  # noqa: BLE001 - Fulcio/Rekor/network/expired-token errors
        raise WasmaiError(f"keyless signing failed: {type(exc).__name__}: {first_line(exc)}") from None
    text = bundle.to_json()
    try:
        write_text(target, text)
    except OSError as exc:
        raise WasmaiError(f"cannot write bundle {target}: {exc}") from None
    identity, issuer = _cert_identity(bundle.signing_certificate)
    return SignResult(component=component, bundle=target, kind="keyless", digest=digest,
                      identity=identity, issuer=issuer, log_index=_tlog_index(json.loads(text)))


# --- verification ------------------------------------------------------------------------------

def verify_component(path: str | os.PathLike[str], policy: VerificationPolicy,
                     bundle: str | os.PathLike[str] | None = None) -> VerifyResult:
    """Verify a component against its bundle (default :func:`default_bundle_path`) and a policy.

    Recomputes the component's sha256, checks the signature (keyless: certificate chain to the
    trusted root at the log's integration time, SCT, transparency log inclusion proof, checkpoint
    and promise, then the identity policy; key: the DSSE signature with the public key and the
    signed file digest). Returns a :class:`VerifyResult` only when everything holds. Raises
    :class:`WasmaiError` for an invalid policy or missing component, and
    :class:`VerificationError` with one line naming what failed (missing/malformed bundle, digest
    mismatch, wrong key/identity/issuer, untrusted chain, expired certificate, ...).
    """
    policy.validate()
    component = _component(path)
    where = _bundle_path(component, bundle)
    text, doc = _read_bundle(where)
    kind = _bundle_kind(doc)
    if kind == "unknown":
        raise VerificationError(f"malformed bundle {where}: neither a certificate nor a public key")
    if policy.key is not None and kind != "key":
        raise VerificationError(f"{where} is a keyless (certificate) bundle but the policy requires key "
                                f"{policy.key}; verify with --cert-identity/--github-repository")
    if policy.key is None and kind != "keyless":
        raise VerificationError(f"{where} is a key-signed bundle but the policy requires a keyless identity; "
                                "verify with --key PUBLIC.pem")
    digest = sha256_file(component)
    if kind == "key":
        return _verify_with_key(component, where, doc, digest, policy)
    return _verify_keyless(component, where, text, doc, digest, policy)


def _verify_with_key(component: Path, where: Path, doc: dict[str, Any], digest: str,
                     policy: VerificationPolicy) -> VerifyResult:
    assert policy.key is not None
    public_key = _load_public_key(policy.key)
    payload = _key_payload(doc, where)
    fingerprint = key_fingerprint(public_key)
    if payload["hint"] and payload["hint"] != _pem_hint(public_key):
        raise VerificationError(f"wrong key: {where} was signed by a different key than {policy.key} "
                                f"(sha256 {fingerprint[:16]}...)")
    ms = _model_signing()
    config = ms.verifying.Config().set_hashing_config(_file_hashing(ms)).use_elliptic_key_verifier(
        public_key=policy.key)
    try:
        # model-signing prints compatibility warnings on stdout; keep stdout for --json.
        with contextlib.redirect_stdout(io.StringIO()):
            config.verify(component.resolve(), where)
    except Exception as exc:  # noqa: BLE001 - InvalidSignature, ValueError, protobuf/JSON errors
        if payload["digest"] != digest:
            raise VerificationError(f"digest mismatch: {component} has sha256 {digest}, "
                                    f"the bundle signs {payload['digest']}") from None
        raise VerificationError(f"signature invalid: {where} does not verify with {policy.key} "
                                f"({type(exc).__name__}: {first_line(exc)})") from None
    if payload["digest"] != digest:  # model-signing compared manifests; make the file digest explicit
        raise VerificationError(f"digest mismatch: {component} has sha256 {digest}, "
                                f"the bundle signs {payload['digest']}")
    return VerifyResult(component=component, bundle=where, kind="key", digest=digest,
                        policy=policy.describe(), key_fingerprint=fingerprint)


def _sigstore_policy(policy: VerificationPolicy) -> Any:
    from sigstore.verify import policy as sp

    if not policy.github_repository:
        return sp.Identity(identity=policy.cert_identity or "", issuer=policy.cert_oidc_issuer)
    rules: list[Any] = [sp.OIDCIssuer(GITHUB_ISSUER),
                        sp.OIDCSourceRepositoryURI(f"https://github.com/{policy.github_repository}")]
    if policy.github_ref:
        rules.append(sp.OIDCSourceRepositoryRef(policy.github_ref))
    if policy.cert_identity:
        rules.append(sp.Identity(identity=policy.cert_identity, issuer=GITHUB_ISSUER))
    return sp.AllOf(rules)


def _policy_mismatch(cert: Any, policy: VerificationPolicy) -> str | None:
    """A one-line description of how the certificate fails the identity policy, or None."""
    identity, issuer = _cert_identity(cert)
    legacy_issuer = _cert_ext(cert, _OID_ISSUER_V1, der=False)
    if policy.issuer and policy.issuer not in {issuer, legacy_issuer}:
        return f"wrong issuer: signed with an identity from {issuer}, policy requires {policy.issuer}"
    if policy.github_repository:
        repo = _cert_ext(cert, _OID_SOURCE_REPO_URI, der=True)
        want = f"https://github.com/{policy.github_repository}"
        if repo != want:
            return f"wrong repository: signed from {repo}, policy requires {want}"
        ref = _cert_ext(cert, _OID_SOURCE_REPO_REF, der=True)
        if policy.github_ref and ref != policy.github_ref:
            return f"wrong ref: signed at {ref}, policy requires {policy.github_ref}"
    if policy.cert_identity:
        from cryptography import x509

        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = {*san.get_values_for_type(x509.RFC822Name), *san.get_values_for_type(x509.UniformResourceIdentifier)}
        except x509.ExtensionNotFound:
            sans = set()
        if policy.cert_identity not in sans and policy.cert_identity != identity:
            return f"wrong identity: signed by {identity}, policy requires {policy.cert_identity}"
    return None


def _verify_keyless(component: Path, where: Path, text: str, doc: dict[str, Any], digest: str,
                    policy: VerificationPolicy) -> VerifyResult:
    from sigstore.hashes import Hashed
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier
    from sigstore_models.common.v1 import HashAlgorithm

    try:
        bundle = Bundle.from_json(text)
    except Exception as exc:  # noqa: BLE001 - InvalidBundle, pydantic ValidationError, ValueError
        raise VerificationError(f"malformed bundle {where}: {first_line(exc)}") from None
    if "messageSignature" not in doc:
        raise VerificationError(f"malformed bundle {where}: expected a message signature over the "
                                "component, found a DSSE envelope")
    signed = _keyless_digest(doc)
    if signed is not None and signed != digest:
        raise VerificationError(f"digest mismatch: {component} has sha256 {digest}, the bundle signs {signed}")

    if policy.trusted_root is not None:
        try:
            trusted_root = TrustedRoot.from_file(str(policy.trusted_root))
        except FileNotFoundError:
            raise WasmaiError(f"trusted root not found: {policy.trusted_root}") from None
        except Exception as exc:  # noqa: BLE001 - pydantic/sigstore raise many types on bad input
            raise WasmaiError(f"cannot read trusted root {policy.trusted_root}: {first_line(exc)}") from None
    else:
        trusted_root = _trust_config(policy.trust_config, policy.staging, policy.offline).trusted_root

    cert = bundle.signing_certificate
    try:
        verifier = Verifier(trusted_root=trusted_root)
        verifier.verify_artifact(Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest)),
                                 bundle, _sigstore_policy(policy))
    except Exception as exc:  # noqa: BLE001 - classified below into one line
        raise VerificationError(_classify_keyless_failure(exc, cert, doc, policy, where)) from None
    identity, issuer = _cert_identity(cert)
    return VerifyResult(component=component, bundle=where, kind="keyless", digest=digest,
                        policy=policy.describe(), identity=identity, issuer=issuer, log_index=_tlog_index(doc))


def _classify_keyless_failure(exc: Exception, cert: Any, doc: dict[str, Any],
                              policy: VerificationPolicy, where: Path) -> str:
    import datetime as dt

    from sigstore.errors import CertValidationError

    message = first_line(exc)
    if isinstance(exc, CertValidationError):
        try:
            integrated = int(doc["verificationMaterial"]["tlogEntries"][0]["integratedTime"])
            when = dt.datetime.fromtimestamp(integrated, dt.UTC)
            if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
                return (f"expired: the signing certificate (valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} to "
                        f"{cert.not_valid_after_utc:%H:%M:%S} UTC) was not valid when the log recorded the "
                        f"signature ({when:%Y-%m-%d %H:%M:%S} UTC)")
        except (KeyError, IndexError, TypeError, ValueError):
            pass
        return f"untrusted certificate chain: the signing certificate does not chain to the trusted root ({message})"
    mismatch = _policy_mismatch(cert, policy)
    if mismatch:
        return mismatch
    low = message.lower()
    if "expired" in low:
        return f"expired: {message}"
    if "sct" in low:
        return f"untrusted certificate: its certificate transparency timestamp is not from a trusted log ({message})"
    if "log entry" in low or "checkpoint" in low or "inclusion" in low or "set:" in low:
        return f"untrusted transparency log entry: {message}"
    if "signature is invalid" in low or "digest mismatch" in low:
        return f"digest mismatch: {where} does not sign the bytes of this component ({message})"
    return f"verification failed: {message}"


# --- inspection --------------------------------------------------------------------------------

def bundle_summary(component: str | os.PathLike[str],
                   bundle: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """What a component's bundle claims, WITHOUT verifying signatures or trust (for
    ``wasmai inspect``). Returns None if there is no bundle; otherwise a dict with ``bundle``,
    ``kind`` (keyless/key), ``identity``/``issuer``/``log_index`` (keyless) or ``key_hint``
    (model-signing's sha256 of the PEM public key), ``signed_digest``, ``digest`` (of the file)
    and ``digest_matches``. A malformed bundle gives ``kind: "malformed"`` and ``error``."""
    path = Path(component)
    where = Path(bundle) if bundle is not None else default_bundle_path(path)
    if not where.is_file():
        return None
    summary: dict[str, Any] = {"bundle": str(where), "verified": False}
    try:
        _, doc = _read_bundle(where)
        kind = _bundle_kind(doc)
        summary["kind"] = kind
        if kind == "key":
            payload = _key_payload(doc, where)
            summary.update(key_hint=payload["hint"], signed_digest=payload["digest"], log_index=None)
        elif kind == "keyless":
            from cryptography import x509

            material = doc["verificationMaterial"]
            raw = (material["certificate"]["rawBytes"] if "certificate" in material
                   else material["x509CertificateChain"]["certificates"][0]["rawBytes"])
            identity, issuer = _cert_identity(x509.load_der_x509_certificate(base64.b64decode(raw)))
            summary.update(identity=identity, issuer=issuer, log_index=_tlog_index(doc),
                           signed_digest=_keyless_digest(doc))
        else:
            raise VerificationError(f"malformed bundle {where}: neither a certificate nor a public key")
    except (VerificationError, KeyError, TypeError, IndexError, ValueError) as exc:
        return {"bundle": str(where), "verified": False, "kind": "malformed", "error": str(exc)}
    if path.is_file():
        summary["digest"] = sha256_file(path)
        summary["digest_matches"] = summary.get("signed_digest") == summary["digest"]
    return summary
