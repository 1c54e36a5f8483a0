"""Signing and verifying components with Sigstore bundles.

Two kinds of signature, both written as a detached Sigstore bundle beside the component
(``COMPONENT.sigstore.json``); the component itself is never modified:

* **keyless** (default, :mod:`wasmai.sign.keyless`): sigstore-python signs the component's
  sha256 with a short-lived Fulcio certificate for an OIDC identity and logs it in Rekor;
  verification is sigstore's verifier against a trusted root plus a mandatory identity policy.
* **key-based** (air-gapped, :mod:`wasmai.sign.keys`): sigstore's model-signing signs the
  component as a single-file model with an ECDSA key; :func:`keygen` makes a P-256 key pair.

Who must have signed is a :class:`VerificationPolicy` (:mod:`wasmai.sign.policy`); the bundle
file, the results and :func:`bundle_summary` are in :mod:`wasmai.sign.bundle`. sigstore and
model_signing are imported only when a signature is made or checked.
"""

from __future__ import annotations

import os
from pathlib import Path

from wasmai.errors import VerificationError, WasmaiError
from wasmai.manifest import sha256_file
from wasmai.sign.bundle import (
    BUNDLE_SUFFIX,
    SignResult,
    VerifyResult,
    bundle_kind,
    bundle_path,
    bundle_summary,
    component_path,
    default_bundle_path,
    read_bundle,
)
from wasmai.sign.keys import KEY_PASSWORD_ENV, KeyPair, key_fingerprint, keygen, sign_with_key, verify_with_key
from wasmai.sign.policy import GITHUB_ISSUER, VerificationPolicy, policy_from_options

__all__ = [
    "BUNDLE_SUFFIX", "GITHUB_ISSUER", "KEY_PASSWORD_ENV", "KeyPair", "SignResult", "VerificationPolicy",
    "VerifyResult", "bundle_summary", "default_bundle_path", "key_fingerprint", "keygen",
    "policy_from_options", "sign_component", "verify_component",
]


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
    component = component_path(path)
    target = bundle_path(component, bundle)
    if key is not None:
        if identity_token or trust_config or staging:
            raise WasmaiError("--key signs without Sigstore: it cannot be combined with "
                              "--identity-token/--trust-config/--staging")
        return sign_with_key(component, Path(key), target)
    from wasmai.sign.keyless import sign_keyless

    return sign_keyless(component, target, identity_token, trust_config, staging)


def verify_component(path: str | os.PathLike[str], policy: VerificationPolicy,
                     bundle: str | os.PathLike[str] | None = None) -> VerifyResult:
    """Verify a component against its bundle (default :func:`default_bundle_path`) and a policy.

    Recomputes the component's sha256, checks the signature (keyless, in sigstore's order:
    certificate chain to the trusted root at the log's integration time, SCT, the identity
    policy, transparency log inclusion proof, checkpoint and promise, the signature over the
    digest; key: the key hint, the signed file digest and the DSSE signature). Returns a
    :class:`VerifyResult` only when everything holds. Raises
    :class:`WasmaiError` for an invalid policy or missing component, and
    :class:`VerificationError` with one line naming what failed (missing/malformed bundle, digest
    mismatch, wrong key/identity/issuer, untrusted chain, expired certificate, ...).
    """
    policy.validate()
    component = component_path(path)
    where = bundle_path(component, bundle)
    text, doc = read_bundle(where)
    kind = bundle_kind(doc, where)
    if policy.key is not None and kind != "key":
        raise VerificationError(f"{where} is a keyless (certificate) bundle but the policy requires key "
                                f"{policy.key}; verify with --cert-identity/--github-repository")
    if policy.key is None and kind != "keyless":
        raise VerificationError(f"{where} is a key-signed bundle but the policy requires a keyless identity; "
                                "verify with --key PUBLIC.pem")
    digest = sha256_file(component)
    if policy.key is not None:
        return verify_with_key(component, where, doc, digest, policy.key, policy.describe())
    from wasmai.sign.keyless import verify_keyless

    return verify_keyless(component, where, text, doc, digest, policy)
