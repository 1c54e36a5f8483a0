"""``wasmai keygen``, ``wasmai sign`` and ``wasmai verify`` (thin fronts over :mod:`wasmai.sign`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wasmai.cli._common import console, run_command
from wasmai.cli.oci import COMPONENT_HELP, registry_auth
from wasmai.cli.options import (
    BundleOpt,
    CertIdentityOpt,
    CertOidcIssuerOpt,
    GithubRefOpt,
    GithubRepositoryOpt,
    InsecureOpt,
    JsonOpt,
    KeyOpt,
    OfflineOpt,
    PasswordStdinOpt,
    PolicyFileOpt,
    StagingOpt,
    TrustConfigOpt,
    TrustedRootOpt,
    UsernameOpt,
)

if TYPE_CHECKING:
    from rich.console import Console

    from wasmai.oci import Resolved, SignReferenceResult
    from wasmai.sign import KeyPair, SignResult, VerifyResult


def _quiet_sigstore() -> None:
    # sigstore/tuf log warnings (e.g. "TUF repository is loaded in offline mode") through the
    # logging last-resort handler; keep stderr to the one `error:` line the CLI promises.
    for name in ("sigstore", "tuf", "model_signing"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())


def _say(out: Console, text: str) -> None:
    """Print without rich markup (paths and identities may contain brackets)."""
    out.print(text, markup=False, soft_wrap=True)


def keygen(
    out_dir: Annotated[Path, typer.Option("-o", "--out-dir", help="Folder for NAME.key and NAME.pub.")] = Path("."),
    name: Annotated[str, typer.Option("--name", help="Base file name of the key pair.")] = "wasmai",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key pair.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Generate an ECDSA P-256 key pair for air-gapped `wasmai sign --key` (private key mode 0600).

    [bold]Examples:[/bold]

    [dim]# keys/wasmai.key (secret) and keys/wasmai.pub (give this one to verifiers)[/dim]
    wasmai keygen -o keys/

    [dim]# a second, named pair; --force replaces an existing one[/dim]
    wasmai keygen -o keys/ --name release --force
    """
    from wasmai.sign import keygen as run_keygen

    def render(pair: KeyPair) -> None:
        out = console()
        _say(out, f"private key: {pair.private_key} (0600, keep it secret)")
        _say(out, f"public key:  {pair.public_key}")
        _say(out, f"fingerprint: sha256:{pair.fingerprint}")

    run_command(lambda: run_keygen(out_dir, name, force=force), json_out=json_out, render=render)


def sign(
    component: Annotated[str, typer.Argument(help=f"The .wasm component (or any file) to sign, or {COMPONENT_HELP} "
                                             "(the bundle is attached to it as a referrer).")],
    key: Annotated[Path | None, typer.Option(
        "--key", help="Sign with this ECDSA PEM private key (air-gapped, no Sigstore; "
        "passphrase in WASMAI_KEY_PASSWORD).")] = None,
    identity_token: Annotated[str | None, typer.Option(
        "--identity-token", envvar="SIGSTORE_IDENTITY_TOKEN",
        help="OIDC identity token for keyless signing (default: ambient CI credential, else interactive).")] = None,
    trust_config: Annotated[Path | None, typer.Option(
        "--trust-config", help="ClientTrustConfig JSON of another Sigstore instance.")] = None,
    staging: Annotated[bool, typer.Option("--staging", help="Use Sigstore's staging instance.")] = False,
    bundle: Annotated[Path | None, typer.Option(
        "--bundle", help="Bundle path (default COMPONENT.sigstore.json).")] = None,
    insecure: InsecureOpt = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Sign a component: keyless with Sigstore (default) or with --key; writes a detached Sigstore bundle.

    [bold]Examples:[/bold]

    [dim]# keyless in CI (GitHub Actions with permissions: id-token: write)[/dim]
    wasmai sign model.wasm --json

    [dim]# air-gapped, with a key from `wasmai keygen`[/dim]
    wasmai sign model.wasm --key keys/wasmai.key

    [dim]# keyless against Sigstore's staging instance, bundle written elsewhere[/dim]
    wasmai sign model.wasm --staging --bundle dist/model.sigstore.json

    [dim]# a pushed component: sign the bytes its digest names and attach the bundle as a referrer[/dim]
    wasmai sign oci://ghcr.io/acme/model:1.0 --key keys/wasmai.key
    """
    from wasmai.oci import is_oci_reference
    from wasmai.sign import sign_component

    _quiet_sigstore()

    def render(res: SignResult) -> None:
        out = console()
        _say(out, f"signed {res.component} (sha256 {res.digest})")
        if res.kind == "keyless":
            _say(out, f"identity {res.identity} from {res.issuer}, transparency log index {res.log_index}")
        else:
            _say(out, f"key sha256:{res.key_fingerprint}")
        _say(out, f"bundle {res.bundle}")

    if is_oci_reference(component):
        from wasmai.oci import sign_reference

        if bundle is not None:
            raise typer.BadParameter("--bundle is for files: a pushed component's bundle is attached to it")

        def work_oci() -> SignReferenceResult:
            return sign_reference(component, key=key, identity_token=identity_token, trust_config=trust_config,
                                  staging=staging, auth=registry_auth(username, password_stdin), insecure=insecure)

        def render_oci(res: SignReferenceResult) -> None:
            render(res.sign)
            _say(console(), f"attached to {res.pinned} as referrer {res.attached['digest']} "
                            f"({res.attached['indexed_by']})")

        run_command(work_oci, json_out=json_out, render=render_oci)
        return

    run_command(lambda: sign_component(Path(component), key=key, identity_token=identity_token,
                                       trust_config=trust_config, staging=staging, bundle=bundle),
                json_out=json_out, render=render)


def verify(
    component: Annotated[str, typer.Argument(help=f"The component to verify, or {COMPONENT_HELP}.")],
    key: KeyOpt = None,
    cert_identity: CertIdentityOpt = None,
    cert_oidc_issuer: CertOidcIssuerOpt = None,
    github_repository: GithubRepositoryOpt = None,
    github_ref: GithubRefOpt = None,
    trust_config: TrustConfigOpt = None,
    trusted_root: TrustedRootOpt = None,
    staging: StagingOpt = False,
    offline: OfflineOpt = False,
    policy_file: PolicyFileOpt = None,
    bundle: BundleOpt = None,
    insecure: InsecureOpt = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Verify a component's signature and signer. A policy is required: --key, --cert-identity with
    --cert-oidc-issuer, or --github-repository. Exit 0 only if everything holds.

    [bold]Examples:[/bold]

    [dim]# a key-signed component[/dim]
    wasmai verify model.wasm --key keys/wasmai.pub

    [dim]# signed keylessly by a workflow of acme/models on main[/dim]
    wasmai verify model.wasm --github-repository acme/models --github-ref refs/heads/main

    [dim]# signed keylessly by a person, checked against the cached trusted root[/dim]
    wasmai verify model.wasm --cert-identity dev@example.com --cert-oidc-issuer https://accounts.google.com --offline

    [dim]# the policy in a TOML file (VerificationPolicy field names)[/dim]
    wasmai verify model.wasm --policy policy.toml --json

    [dim]# a pushed component: the tag resolved once, the signatures attached to that digest[/dim]
    wasmai verify oci://ghcr.io/acme/model:1.0 --key keys/wasmai.pub
    """
    from wasmai.oci import is_oci_reference
    from wasmai.sign import VerificationPolicy, policy_from_options, verify_component

    _quiet_sigstore()

    def work() -> VerifyResult | Resolved:
        policy = policy_from_options(key=key, cert_identity=cert_identity, cert_oidc_issuer=cert_oidc_issuer,
                                     github_repository=github_repository, github_ref=github_ref,
                                     trust_config=trust_config, trusted_root=trusted_root, staging=staging,
                                     offline=offline, policy=policy_file)
        # No option at all: the empty policy, which verify_component refuses ("no verification policy").
        if is_oci_reference(component):
            from wasmai.oci import resolve_component

            return resolve_component(component, policy=policy or VerificationPolicy(), bundle=bundle,
                                     auth=registry_auth(username, password_stdin), insecure=insecure)
        return verify_component(Path(component), policy or VerificationPolicy(), bundle=bundle)

    def render(result: VerifyResult | Resolved) -> None:
        from rich.markup import escape

        from wasmai.oci import Resolved

        if isinstance(result, Resolved):
            res, name = result.verified, result.pinned
            assert res is not None  # resolve_component with a policy returns only what verified
        else:
            res, name = result, str(result.component)
        who = (f"{res.identity} ({res.issuer}), log index {res.log_index}" if res.kind == "keyless"
               else f"key sha256:{res.key_fingerprint}")
        console().print(f"[green]verified[/] {escape(f'{name} (sha256 {res.digest}) signed by {who}')}",
                        soft_wrap=True)

    run_command(work, json_out=json_out, render=render)
