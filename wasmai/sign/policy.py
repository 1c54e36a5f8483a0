"""Who must have signed a component: the verification policy, from options or a TOML file.

Pure data and validation; :mod:`wasmai.sign.keyless` turns a keyless policy into sigstore's own
composable policies (:mod:`sigstore.verify.policy`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wasmai.errors import WasmaiError

#: OIDC issuer of GitHub Actions workflow identities (GitHub's "OpenID Connect" documentation:
#: the ``iss`` claim of every Actions token, which Fulcio copies into the certificate).
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"

_PATH_FIELDS = ("key", "trust_config", "trusted_root")
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
        ``[policy]`` table); relative paths are relative to the file.

        Raises :class:`WasmaiError` if the file is unreadable, has unknown keys or wrong types,
        or the policy is invalid (see :meth:`validate`)."""
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
            # An absolute path stays as it is: Path("/dir") / "/abs" is Path("/abs").
            values[name] = path.parent / str(value) if name in _PATH_FIELDS else value
        return cls(**values)

    def validate(self) -> None:
        """Check that exactly one identity policy is given and the options agree.

        Raises :class:`WasmaiError` with a one-line explanation otherwise."""
        keyless = any([self.cert_identity, self.cert_oidc_issuer, self.github_repository, self.github_ref])
        if self.key is None and not keyless:
            raise WasmaiError("no verification policy: pass --key PUBLIC.pem, or --cert-identity ID with "
                              "--cert-oidc-issuer URL, or --github-repository OWNER/REPO "
                              "(there is no 'any identity' default)")
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
        if bool(self.trust_config) + bool(self.trusted_root) + bool(self.staging) > 1:
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
    explicit options override).

    Returns None when no option at all is given (the caller decides whether unsigned is
    acceptable); otherwise a validated policy. Raises :class:`WasmaiError` for an invalid or
    incomplete policy or an unreadable policy file."""
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
