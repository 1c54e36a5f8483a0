"""Keyless signing and verification with the unmodified sigstore-python.

Signing: an OIDC identity token (``--identity-token``, an ambient CI credential, or the
interactive browser flow) buys a short-lived Fulcio certificate; the component's sha256 is signed
(``Hashed`` input, so large files are streamed once) and logged in Rekor. Verifying:
:class:`sigstore.verify.Verifier` against a trusted root, with the wasmai policy expressed as
sigstore's own composable policies (:mod:`sigstore.verify.policy`, which know the Fulcio
certificate extensions). sigstore's exception *types* decide the first words of the one-line
error; sigstore's own text follows.

This module imports sigstore at import time; :mod:`wasmai.sign` imports it only when a keyless
bundle is signed, verified or summarised.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from sigstore import oidc
from sigstore._internal.fulcio.client import ExpiredCertificate, FulcioClientError
from sigstore._internal.rekor import RekorClientError
from sigstore.errors import CertValidationError
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.hashes import Hashed
from sigstore.models import Bundle, ClientTrustConfig, InvalidBundle, TrustedRoot
from sigstore.sign import SigningContext
from sigstore.verify import Verifier
from sigstore.verify import policy as sp
from sigstore_models.common.v1 import HashAlgorithm

from wasmai.errors import VerificationError, WasmaiError, first_line
from wasmai.manifest import sha256_file
from wasmai.sign.bundle import SignResult, VerifyResult, keyless_digest, tlog_entry_field
from wasmai.sign.policy import VerificationPolicy

# --- trust and identity ------------------------------------------------------------------------


def load_trust_config(trust_config: str | os.PathLike[str] | None, staging: bool,
                      offline: bool = False) -> ClientTrustConfig:
    """The ClientTrustConfig to sign or verify with: the JSON file ``trust_config``, else
    Sigstore staging or production over TUF (``offline``: the cached or embedded root).

    Raises :class:`WasmaiError` for a missing or invalid file or a failed TUF refresh."""
    if trust_config is not None:
        path = Path(trust_config)
        try:
            return ClientTrustConfig.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WasmaiError(f"trust config not found: {path}") from None
        except (OSError, ValueError, SigstoreError) as exc:  # ValueError: pydantic's ValidationError
            raise WasmaiError(f"cannot read trust config {path}: {first_line(exc)}") from None
    where = "staging" if staging else "production"
    try:
        return ClientTrustConfig.staging(offline=offline) if staging else ClientTrustConfig.production(offline=offline)
    except SigstoreError as exc:  # TUFError
        raise WasmaiError(f"cannot load the Sigstore {where} trust root ({first_line(exc)}); "
                          "use --offline for the cached root or --trusted-root/--trust-config FILE") from None


def _load_trusted_root(policy: VerificationPolicy) -> TrustedRoot:
    if policy.trusted_root is None:
        return load_trust_config(policy.trust_config, policy.staging, policy.offline).trusted_root
    try:
        return TrustedRoot.from_file(str(policy.trusted_root))
    except FileNotFoundError:
        raise WasmaiError(f"trusted root not found: {policy.trusted_root}") from None
    except (OSError, ValueError, SigstoreError) as exc:  # ValueError: pydantic's ValidationError
        raise WasmaiError(f"cannot read trusted root {policy.trusted_root}: {first_line(exc)}") from None


def _identity_token(raw: str | None, trust: ClientTrustConfig) -> oidc.IdentityToken:
    if not raw:
        try:
            raw = oidc.detect_credential()
        except oidc.IdentityError as exc:
            raise WasmaiError(f"ambient OIDC credential detection failed: {first_line(exc)} "
                              "(GitHub Actions needs `permissions: id-token: write`)") from None
    if not raw:
        if not sys.stdin.isatty():
            raise WasmaiError("no identity token: pass --identity-token (or SIGSTORE_IDENTITY_TOKEN), "
                              "run in CI with OIDC enabled (GitHub Actions: permissions id-token: write), "
                              "or sign with --key")
        try:
            return oidc.Issuer(trust.signing_config.get_oidc_url()).identity_token()
        except (SigstoreError, oidc.IssuerError) as exc:  # IdentityError, NetworkError
            raise WasmaiError(f"cannot get an identity token interactively: {first_line(exc)}") from None
    try:
        return oidc.IdentityToken(raw)
    except oidc.IdentityError as exc:
        raise WasmaiError(f"identity token rejected: {first_line(exc)}") from None


def _extension_text(cert: x509.Certificate, oid: x509.ObjectIdentifier, *, der: bool) -> str | None:
    """A Fulcio extension's string value: DER UTF8String (``der``) or raw UTF-8 (legacy)."""
    try:
        raw = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    if not isinstance(raw, x509.UnrecognizedExtension):
        return None
    try:
        return asn1.decode_der(str, raw.value) if der else raw.value.decode()
    except ValueError:
        return None


def cert_identity(cert: x509.Certificate) -> tuple[str | None, str | None]:
    """(identity, issuer) of a Fulcio certificate, as shown to users: the first SAN (email,
    URI, or Fulcio's username OtherName, the only OtherName Fulcio issues) and the OIDC issuer
    extension (sigstore's ``OIDCIssuerV2``, else the legacy ``OIDCIssuer``)."""
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        names += san.get_values_for_type(x509.RFC822Name)
        names += san.get_values_for_type(x509.UniformResourceIdentifier)
        for other in san.get_values_for_type(x509.OtherName):
            try:
                names.append(asn1.decode_der(str, other.value))
            except ValueError:
                continue
    issuer = (_extension_text(cert, sp.OIDCIssuerV2.oid, der=True)
              or _extension_text(cert, sp.OIDCIssuer.oid, der=False))
    return (names[0] if names else None), issuer


def load_bundle(text: str, where: Path) -> Bundle:
    """Parse a keyless bundle with sigstore. Raises :class:`VerificationError`
    (``malformed bundle``, sigstore's reason) if sigstore rejects it."""
    try:
        return Bundle.from_json(text)
    except (InvalidBundle, ValueError) as exc:  # ValueError: a certificate cryptography cannot parse
        raise VerificationError(f"malformed bundle {where}: {first_line(exc)}") from None


# --- signing -----------------------------------------------------------------------------------


def sign_keyless(component: Path, target: Path, raw_token: str | None,
                 trust_config: str | os.PathLike[str] | None, staging: bool) -> SignResult:
    """Sign ``component`` keylessly and write the bundle to ``target`` atomically.

    Raises :class:`WasmaiError` for conflicting options, an unreadable trust config, no or a
    rejected identity token, a failing Fulcio/Rekor (``keyless signing failed``, with the
    exception type and its text) or an unwritable target."""
    from wasmai._atomic import write_text

    if trust_config is not None and staging:
        raise WasmaiError("choose one of --trust-config and --staging")
    trust = load_trust_config(trust_config, staging)
    token = _identity_token(raw_token, trust)
    digest = sha256_file(component)
    try:
        context = SigningContext.from_trust_config(trust)
        with context.signer(token, cache=True) as signer:
            bundle = signer.sign_artifact(Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest)))
    except (SigstoreError, oidc.ExpiredIdentity, ExpiredCertificate, FulcioClientError, RekorClientError,
            requests.RequestException) as exc:
        # sigstore's own errors, plus those of its (private) Fulcio and Rekor clients and of
        # requests, which those clients let through on connection failures.
        raise WasmaiError(f"keyless signing failed: {type(exc).__name__}: {first_line(exc)}") from None
    text = bundle.to_json()
    try:
        write_text(target, text)
    except OSError as exc:
        raise WasmaiError(f"cannot write bundle {target}: {exc}") from None
    identity, issuer = cert_identity(bundle.signing_certificate)
    return SignResult(component=component, bundle=target, kind="keyless", digest=digest, identity=identity,
                      issuer=issuer, log_index=tlog_entry_field(json.loads(text), "logIndex"))


# --- the identity policy as sigstore policies --------------------------------------------------


class PolicyMismatch(SigstoreVerificationError):
    """One requirement of the wasmai policy failed; the message is wasmai's one line (which
    requirement, the certificate's signer, then sigstore's reason)."""


class _Requirement:
    """A sigstore policy that names the wasmai requirement it checks when it fails."""

    def __init__(self, what: str, policy: sp.VerificationPolicy) -> None:
        self._what = what
        self._policy = policy

    def verify(self, cert: x509.Certificate) -> None:
        """Raise :class:`PolicyMismatch` if ``cert`` fails the wrapped sigstore policy."""
        try:
            self._policy.verify(cert)
        except SigstoreVerificationError as exc:
            raise PolicyMismatch(f"{self._what}: signed by {cert_identity(cert)[0]} ({first_line(exc)})") from exc


class _IdentityPolicy:
    """The wasmai policy for sigstore's verifier: an :class:`~sigstore.verify.policy.AllOf` of
    requirements, issuer first. The verifier calls it after the certificate chain, SCT and X.509
    profile checks and before the log entry and signature checks; ``reached`` records that."""

    def __init__(self, policy: VerificationPolicy) -> None:
        issuer = policy.issuer or ""
        requirements: list[sp.VerificationPolicy] = [_Requirement("wrong issuer", sp.OIDCIssuer(issuer))]
        if policy.github_repository:
            requirements.append(_Requirement("wrong repository", sp.OIDCSourceRepositoryURI(
                f"https://github.com/{policy.github_repository}")))
        if policy.github_ref:
            requirements.append(_Requirement("wrong ref", sp.OIDCSourceRepositoryRef(policy.github_ref)))
        if policy.cert_identity:
            requirements.append(_Requirement("wrong identity", sp.Identity(identity=policy.cert_identity)))
        self._all = sp.AllOf(requirements)
        self.reached = False

    def verify(self, cert: x509.Certificate) -> None:
        """Raise :class:`PolicyMismatch` for the first requirement ``cert`` fails."""
        self.reached = True
        self._all.verify(cert)


# --- verification ------------------------------------------------------------------------------


def _signs(bundle: Bundle, digest: str) -> bool:
    """Whether the bundle's signature verifies over ``digest`` with its certificate's key."""
    key = bundle.signing_certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(bundle.signature, bytes.fromhex(digest), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def _failure(exc: SigstoreVerificationError, check: _IdentityPolicy, bundle: Bundle, logged_at: int | None,
             digest: str, where: Path) -> str:
    """The one-line error for a failed sigstore verification, chosen by the exception's type and
    the verification stage it was raised in, with sigstore's own text."""
    if isinstance(exc, PolicyMismatch):
        return str(exc)
    reason = first_line(exc)
    cert = bundle.signing_certificate
    if isinstance(exc, CertValidationError):
        if logged_at is not None:
            when = dt.datetime.fromtimestamp(logged_at, dt.UTC)
            if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
                return (f"expired: the signing certificate (valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} "
                        f"to {cert.not_valid_after_utc:%H:%M:%S} UTC) was not valid when the log recorded the "
                        f"signature ({when:%Y-%m-%d %H:%M:%S} UTC): {reason}")
        return f"untrusted certificate chain: the signing certificate does not chain to the trusted root ({reason})"
    if not check.reached:  # the SCT, the X.509 profile or the sources of time
        return f"untrusted certificate: {reason}"
    if not _signs(bundle, digest):
        return f"digest mismatch: {where} does not sign the bytes of this component ({reason})"
    return f"untrusted transparency log entry: {reason}"


def verify_keyless(component: Path, where: Path, text: str, doc: dict[str, Any], digest: str,
                   policy: VerificationPolicy) -> VerifyResult:
    """Verify the keyless bundle ``text`` (JSON ``doc``, read from ``where``) of ``component`` (hex sha256
    ``digest``) against ``policy`` with sigstore's :class:`~sigstore.verify.Verifier`.

    Raises :class:`WasmaiError` for an unreadable trust root, and :class:`VerificationError`
    whose first words say what failed: ``malformed bundle``, ``digest mismatch``, ``wrong
    issuer``/``wrong repository``/``wrong ref``/``wrong identity``, ``expired``, ``untrusted
    certificate chain``, ``untrusted certificate`` or ``untrusted transparency log entry``;
    sigstore's reason follows."""
    bundle = load_bundle(text, where)
    if "messageSignature" not in doc:
        raise VerificationError(f"malformed bundle {where}: expected a message signature over the "
                                "component, found a DSSE envelope")
    signed = keyless_digest(doc)
    if signed is not None and signed != digest:
        raise VerificationError(f"digest mismatch: {component} has sha256 {digest}, the bundle signs {signed}")
    verifier = Verifier(trusted_root=_load_trusted_root(policy))
    check = _IdentityPolicy(policy)
    try:
        verifier.verify_artifact(Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest)),
                                 bundle, check)
    except SigstoreVerificationError as exc:
        message = _failure(exc, check, bundle, tlog_entry_field(doc, "integratedTime"), digest, where)
        raise VerificationError(message) from None
    identity, issuer = cert_identity(bundle.signing_certificate)
    return VerifyResult(component=component, bundle=where, kind="keyless", digest=digest,
                        policy=policy.describe(), identity=identity, issuer=issuer,
                        log_index=tlog_entry_field(doc, "logIndex"))
