"""The detached bundle beside a component: where it lives, what it records, what signing and
verifying report, and :func:`bundle_summary` (what a bundle claims, unverified).

Both kinds of bundle are Sigstore bundles in protobuf-specs JSON (``dev.sigstore.bundle.v1``):
keyless ones hold ``verificationMaterial.certificate`` (or ``x509CertificateChain``), a
``messageSignature`` over the component's sha256 and one Rekor ``tlogEntries`` item; key-based
ones (model-signing) hold ``verificationMaterial.publicKey`` and a ``dsseEnvelope``. The few
fields read here are read from that JSON; everything that is verified is verified by sigstore or
model-signing.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wasmai.errors import VerificationError, WasmaiError
from wasmai.manifest import sha256_file

#: Suffix of the detached bundle written beside a component (the ``.sigstore.json`` extension
#: sigstore-python and cosign use for bundles).
BUNDLE_SUFFIX = ".sigstore.json"
#: ``predicateType`` of the in-toto statement model-signing signs (model-signing 1.x,
#: ``model_signing._signing.signing._PREDICATE_TYPE``; not exported by the library).
MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0"

BundleKind = Literal["keyless", "key"]


@dataclass
class SignResult:
    """What :func:`wasmai.sign.sign_component` did. ``kind`` is ``keyless`` or ``key``; ``digest``
    is the hex sha256 of the component bytes. Keyless: ``identity``/``issuer`` from the
    certificate and the Rekor ``log_index``. Key: ``key_fingerprint``."""

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
    """A successful :func:`wasmai.sign.verify_component` (failures raise). Same fields as
    :class:`SignResult` plus ``policy``, a human-readable description of what was required."""

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


@dataclass
class KeyPayload:
    """The signed single-file manifest of a model-signing bundle."""

    digest: str  # hex sha256 the DSSE statement signs
    hint: str  # model-signing's public-key hint (hex sha256 of the PEM public key), or ""


def default_bundle_path(component: str | os.PathLike[str]) -> Path:
    """``COMPONENT.sigstore.json`` beside the component (:data:`BUNDLE_SUFFIX`)."""
    return Path(f"{os.fspath(component)}{BUNDLE_SUFFIX}")


def component_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is an existing file. Raises :class:`WasmaiError` otherwise."""
    path = Path(path)
    if not path.exists():
        raise WasmaiError(f"component not found: {path}")
    if not path.is_file():
        raise WasmaiError(f"not a file: {path}")
    return path


def bundle_path(component: Path, bundle: str | os.PathLike[str] | None) -> Path:
    """The bundle of ``component``: ``bundle`` or :func:`default_bundle_path`. Raises
    :class:`WasmaiError` if that is the component itself."""
    target = Path(bundle) if bundle is not None else default_bundle_path(component)
    if target.exists() and target.resolve() == component.resolve():
        raise WasmaiError("the bundle path is the component itself")
    return target


def read_bundle(path: Path) -> tuple[str, dict[str, Any]]:
    """The bundle's text and JSON object. Raises :class:`VerificationError` (``missing bundle``,
    ``malformed bundle``) if it is absent, unreadable, not JSON or has no verification material."""
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


def bundle_kind(doc: dict[str, Any], where: Path) -> BundleKind:
    """``key`` (public-key material) or ``keyless`` (a certificate). Raises
    :class:`VerificationError` (``malformed bundle``) for neither."""
    material = doc["verificationMaterial"]
    if "publicKey" in material:
        return "key"
    if "certificate" in material or "x509CertificateChain" in material:
        return "keyless"
    raise VerificationError(f"malformed bundle {where}: neither a certificate nor a public key")


def key_payload(doc: dict[str, Any], where: Path) -> KeyPayload:
    """The signed digest and key hint of a model-signing bundle (its DSSE payload is an in-toto
    statement whose ``predicate.resources`` lists the one signed file). Raises
    :class:`VerificationError` (``malformed bundle``) if the bundle has another shape."""
    try:
        envelope = doc["dsseEnvelope"]
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        resources = statement["predicate"]["resources"]
        if statement.get("predicateType") != MODEL_SIGNING_PREDICATE:
            raise ValueError(f"unexpected predicate type {statement.get('predicateType')!r}")
        if len(resources) != 1 or resources[0].get("algorithm") != "sha256":
            raise ValueError("expected a single-file sha256 manifest")
        if not envelope["signatures"]:
            raise ValueError("no signature")
        return KeyPayload(digest=str(resources[0]["digest"]),
                          hint=str(doc["verificationMaterial"]["publicKey"].get("hint") or ""))
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise VerificationError(f"malformed bundle {where}: {exc}") from None


def keyless_digest(doc: dict[str, Any]) -> str | None:
    """The hex sha256 a keyless bundle's ``messageSignature`` claims to sign, if recorded."""
    try:
        return base64.b64decode(doc["messageSignature"]["messageDigest"]["digest"]).hex()
    except (KeyError, TypeError, ValueError):
        return None


def tlog_entry_field(doc: dict[str, Any], name: str) -> int | None:
    """An integer field (``logIndex``, ``integratedTime``) of the bundle's transparency log
    entry, if present. sigstore's :class:`~sigstore.models.Bundle` keeps these on a private
    attribute (``log_entry._inner``), so they are read from the JSON."""
    try:
        return int(doc["verificationMaterial"]["tlogEntries"][0][name])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def bundle_summary(component: str | os.PathLike[str],
                   bundle: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """What a component's bundle claims, WITHOUT verifying signatures or trust (for
    ``wasmai inspect``).

    Returns None if there is no bundle; otherwise a dict with ``bundle``, ``kind``
    (keyless/key), ``identity``/``issuer``/``log_index`` (keyless) or ``key_hint``
    (model-signing's sha256 of the PEM public key), ``signed_digest``, ``digest`` (of the file)
    and ``digest_matches``. A malformed bundle gives ``kind: "malformed"`` and ``error``; nothing
    is raised."""
    from wasmai.sign import keyless

    path = Path(component)
    where = Path(bundle) if bundle is not None else default_bundle_path(path)
    if not where.is_file():
        return None
    summary: dict[str, Any] = {"bundle": str(where), "verified": False}
    try:
        text, doc = read_bundle(where)
        kind = bundle_kind(doc, where)
        summary["kind"] = kind
        if kind == "key":
            payload = key_payload(doc, where)
            summary.update(key_hint=payload.hint, signed_digest=payload.digest, log_index=None)
        else:
            identity, issuer = keyless.cert_identity(keyless.load_bundle(text, where).signing_certificate)
            summary.update(identity=identity, issuer=issuer, log_index=tlog_entry_field(doc, "logIndex"),
                           signed_digest=keyless_digest(doc))
    except VerificationError as exc:
        return {"bundle": str(where), "verified": False, "kind": "malformed", "error": str(exc)}
    if path.is_file():
        summary["digest"] = sha256_file(path)
        summary["digest_matches"] = summary.get("signed_digest") == summary["digest"]
    return summary
