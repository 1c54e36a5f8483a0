"""``wasmai keygen``, ``wasmai sign`` and ``wasmai verify`` (thin fronts over :mod:`wasmai.sign`)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from wasmai.cli._common import JSON_HELP, console, run_command


def _quiet_sigstore() -> None:
    # sigstore/tuf log warnings (e.g. "TUF repository is loaded in offline mode") through the
    # logging last-resort handler; keep stderr to the one `error:` line the CLI promises.
    for name in ("sigstore", "tuf", "model_signing"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())


def _plain(out):
    """``out.print`` without rich markup (paths and identities may contain brackets)."""
    printer = out.print
    return lambda text: printer(text, markup=False, soft_wrap=True)


def keygen(
    out_dir: Path = typer.Option(Path("."), "-o", "--out-dir", help="Folder for NAME.key and NAME.pub."),
    name: str = typer.Option("wasmai", "--name", help="Base file name of the key pair."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing key pair."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Generate an ECDSA P-256 key pair for air-gapped `wasmai sign --key` (private key mode 0600)."""
    from wasmai.sign import keygen as run_keygen

    def render(pair) -> None:
        out = console()
        out.print = _plain(out)
        out.print(f"private key: {pair.private_key} (0600, keep it secret)")
        out.print(f"public key:  {pair.public_key}")
        out.print(f"fingerprint: sha256:{pair.fingerprint}")

    run_command(lambda: run_keygen(out_dir, name, force=force), json_out=json_out, render=render)


def sign(
    component: Path = typer.Argument(..., help="The .wasm component (or any file) to sign."),
    key: Path | None = typer.Option(None, "--key", help="Sign with this ECDSA PEM private key "
                                       "(air-gapped, no Sigstore; passphrase in WASMAI_KEY_PASSWORD)."),
    identity_token: str | None = typer.Option(None, "--identity-token", envvar="SIGSTORE_IDENTITY_TOKEN",
                                                 help="OIDC identity token for keyless signing "
                                                 "(default: ambient CI credential, else interactive)."),
    trust_config: Path | None = typer.Option(None, "--trust-config",
                                                help="ClientTrustConfig JSON of another Sigstore instance."),
    staging: bool = typer.Option(False, "--staging", help="Use Sigstore's staging instance."),
    bundle: Path | None = typer.Option(None, "--bundle", help="Bundle path (default COMPONENT.sigstore.json)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Sign a component: keyless with Sigstore (default) or with --key; writes a detached Sigstore bundle."""
    from wasmai.sign import sign_component

    _quiet_sigstore()

    def render(res) -> None:
        out = console()
        out.print = _plain(out)
        out.print(f"signed {res.component} (sha256 {res.digest})")
        if res.kind == "keyless":
            out.print(f"identity {res.identity} from {res.issuer}, transparency log index {res.log_index}")
        else:
            out.print(f"key sha256:{res.key_fingerprint}")
        out.print(f"bundle {res.bundle}")

    run_command(lambda: sign_component(component, key=key, identity_token=identity_token,
                                       trust_config=trust_config, staging=staging, bundle=bundle),
                json_out=json_out, render=render)


def verify(
    component: Path = typer.Argument(..., help="The component to verify."),
    bundle: Path | None = typer.Option(None, "--bundle", help="Bundle path (default COMPONENT.sigstore.json)."),
    cert_identity: str | None = typer.Option(None, "--cert-identity",
                                                help="Required signer identity (certificate SAN, exact)."),
    cert_oidc_issuer: str | None = typer.Option(None, "--cert-oidc-issuer",
                                                   help="Required OIDC issuer URL of the signer identity."),
    github_repository: str | None = typer.Option(None, "--github-repository",
                                                    help="Require a GitHub Actions identity from OWNER/REPO."),
    github_ref: str | None = typer.Option(None, "--github-ref",
                                             help="With --github-repository: required git ref (refs/heads/main)."),
    key: Path | None = typer.Option(None, "--key", help="Require a signature by this PEM public key."),
    trust_config: Path | None = typer.Option(None, "--trust-config", help="ClientTrustConfig JSON to trust."),
    trusted_root: Path | None = typer.Option(None, "--trusted-root", help="TrustedRoot JSON to trust."),
    staging: bool = typer.Option(False, "--staging", help="Trust Sigstore's staging instance."),
    offline: bool = typer.Option(False, "--offline", help="Do not refresh the trusted root over TUF; "
                                 "use the cached (or embedded) one."),
    policy_file: Path | None = typer.Option(None, "--policy", help="TOML policy file (VerificationPolicy "
                                               "field names); explicit options override it."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Verify a component's signature and signer. A policy is required: --key, --cert-identity with
    --cert-oidc-issuer, or --github-repository. Exit 0 only if everything holds."""
    from wasmai.errors import WasmaiError
    from wasmai.sign import policy_from_options, verify_component

    _quiet_sigstore()

    def run():
        policy = policy_from_options(key=key, cert_identity=cert_identity, cert_oidc_issuer=cert_oidc_issuer,
                                     github_repository=github_repository, github_ref=github_ref,
                                     trust_config=trust_config, trusted_root=trusted_root, staging=staging,
                                     offline=offline, policy=policy_file)
        if policy is None:
            raise WasmaiError("no verification policy: pass --key PUBLIC.pem, or --cert-identity ID with "
                              "--cert-oidc-issuer URL, or --github-repository OWNER/REPO "
                              "(there is no 'any identity' default)")
        return verify_component(component, policy, bundle=bundle)

    def render(res) -> None:
        who = (f"{res.identity} ({res.issuer}), log index {res.log_index}" if res.kind == "keyless"
               else f"key sha256:{res.key_fingerprint}")
        from rich.markup import escape

        console().print(f"[green]verified[/] {escape(f'{res.component} (sha256 {res.digest}) signed by {who}')}", soft_wrap=True)

    run_command(run, json_out=json_out, render=render)
