"""``wasmai push`` and ``wasmai pull`` (thin fronts over :mod:`wasmai.oci`), and the registry
credentials every command taking an ``oci://`` reference reads (:func:`registry_auth`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wasmai.cli._common import console, run_command, shown
from wasmai.cli.options import InsecureOpt, JsonOpt, PasswordStdinOpt, UsernameOpt

if TYPE_CHECKING:
    from wasmai.oci import PullResult, PushResult, RegistryAuth
    from wasmai.sign import VerificationPolicy, VerifyResult

COMPONENT_HELP = "oci://REGISTRY/REPO[:TAG|@sha256:DIGEST] for a pushed one"


def registry_auth(username: str | None, password_stdin: bool) -> RegistryAuth | None:
    """``--username`` and ``--password-stdin`` (one line read from standard input) as explicit
    credentials, or None to use the credential files. Raises WasmaiError if only one is given or
    the password is empty."""
    from wasmai.errors import WasmaiError
    from wasmai.oci import RegistryAuth

    if username is None and not password_stdin:
        return None
    if username is None or not password_stdin:
        raise WasmaiError("--username and --password-stdin go together")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise WasmaiError("--password-stdin read an empty password")
    return RegistryAuth(username=username, password=password)


def component_target(component: str, *, policy: VerificationPolicy | None, bundle: Path | None, insecure: bool,
                     username: str | None, password_stdin: bool
                     ) -> tuple[Path, Path | None, dict[str, Path], VerifyResult | None]:
    """``(component file, bundle, by-name graphs, verification)`` for ``run``, ``bench`` and
    ``serve``: a local path as given (not verified here), or an ``oci://`` reference resolved once by
    :func:`wasmai.oci.resolve_component` (the cached bytes, the attached bundle that verified under
    ``policy`` and that verification, the model of a by-name component)."""
    if not component.startswith("oci://"):  # a file: checked before importing wasmai.oci (CLI cold start)
        return Path(component), bundle, {}, None
    from wasmai.oci import resolve_component

    resolved = resolve_component(component, policy=policy, bundle=bundle,
                                 auth=registry_auth(username, password_stdin), insecure=insecure)
    return resolved.component, resolved.bundle, resolved.graphs, resolved.verified


def resolve_target(component: str, policy_options: dict[str, Any], target_options: dict[str, Any]
                   ) -> tuple[Path, Path | None, dict[str, Path], VerifyResult | None, VerificationPolicy | None]:
    """The signature policy the CLI's policy flags give (``policy_options``: the keyword arguments
    of :func:`wasmai.sign.policy_from_options`) and the component ``component`` names, as
    :func:`component_target` resolves it (``target_options``: its ``bundle``, ``insecure``,
    ``username``, ``password_stdin``): ``(component file, bundle, by-name graphs, verification
    already made, policy)``. The task fronts of ``run`` and ``bench`` share it."""
    policy = None
    if any(policy_options.values()):  # no policy flag: no policy, and no import of wasmai.sign (CLI cold start)
        from wasmai.sign import policy_from_options

        policy = policy_from_options(**policy_options)
    path, bundle, graphs, verified = component_target(component, policy=policy, **target_options)
    return Path(path), bundle, dict(graphs), verified, policy


def push(
    component: Annotated[Path, typer.Argument(help="The component (.wasm) to push.")],
    reference: Annotated[str, typer.Argument(
        metavar="REGISTRY/REPO[:TAG]", help="Where to push (tag default: latest).")],
    bundle: Annotated[Path | None, typer.Option(
        "--bundle", help="Signature bundle to attach as a referrer (default: COMPONENT.sigstore.json when it exists).")
    ] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", help="The ONNX file of a by-name component, pushed as its own artifact and named by digest.")
    ] = None,
    source: Annotated[str | None, typer.Option(
        "--source", help="URL of the source (annotation org.opencontainers.image.source).")] = None,
    licenses: Annotated[str | None, typer.Option(
        "--license", help="SPDX license expression (annotation org.opencontainers.image.licenses).")] = None,
    insecure: InsecureOpt = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Push a component to an OCI registry (Wasm OCI Artifact layout) and attach its signature.

    The bundle beside the component (or --bundle) is attached as an OCI 1.1 referrer, as cosign 3
    stores bundles. Prints the manifest digest: run exactly that with `wasmai run oci://REPO@DIGEST`.

    [bold]Examples:[/bold]

    [dim]# sign, push, then run by digest with the policy[/dim]
    wasmai sign model.wasm --key keys/wasmai.key
    wasmai push model.wasm ghcr.io/acme/model:1.0 --source https://github.com/acme/models --license Apache-2.0

    [dim]# CI: credentials on stdin, the digest as JSON[/dim]
    echo "$TOKEN" | wasmai push model.wasm ghcr.io/acme/model:1.0 --username acme --password-stdin --json

    [dim]# a registry on this machine over plain HTTP; a by-name component with its model[/dim]
    wasmai push mlp.wasm localhost:5000/mlp:dev --model mlp.onnx --insecure
    """
    from wasmai.oci import push as run_push

    def work() -> PushResult:
        return run_push(component, reference, bundle=bundle, model=model, source=source, licenses=licenses,
                        auth=registry_auth(username, password_stdin), insecure=insecure)

    def render(res: PushResult) -> None:
        out = console()
        out.print(f"pushed {shown(res.reference)} ({res.size_bytes / 1024:.1f} KiB component, "
                  f"{res.seconds:.2f} s)", soft_wrap=True)
        out.print(f"digest {res.digest}", soft_wrap=True)
        if res.model_artifact:
            out.print(f"model artifact {res.model_artifact}", soft_wrap=True)
        if res.signature is not None:
            out.print(f"signature attached: referrer {res.signature['digest']} ({res.signature['indexed_by']})",
                      soft_wrap=True)
        else:
            out.print("[yellow]no signature attached[/] (sign first: wasmai sign COMPONENT ...)")
        out.print(f"run: wasmai run oci://{shown(res.pinned)} ...", soft_wrap=True)

    run_command(work, json_out=json_out, render=render)


def pull(
    reference: Annotated[str, typer.Argument(metavar="REF", help="[oci://]REGISTRY/REPO[:TAG|@sha256:DIGEST]")],
    output: Annotated[str | None, typer.Option(
        "-o", "--output", help="Output file, or folder (existing, or ending in /; default: the component's file "
        "name, here).")] = None,
    insecure: InsecureOpt = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Pull a component by tag or digest, checking every digest; its newest attached signature is
    written beside it (FILE.sigstore.json). Pulling verifies no signature: `wasmai verify` does.

    [bold]Examples:[/bold]

    [dim]# by digest (immutable), then verify the file with its bundle[/dim]
    wasmai pull ghcr.io/acme/model@sha256:4c98... -o model.wasm
    wasmai verify model.wasm --key keys/wasmai.pub

    [dim]# by tag, from a registry on this machine[/dim]
    wasmai pull localhost:5000/mlp:dev --insecure --json
    """
    from wasmai.oci import pull as run_pull

    def work() -> PullResult:
        return run_pull(reference, output, auth=registry_auth(username, password_stdin), insecure=insecure)

    def render(res: PullResult) -> None:
        out = console()
        source = "cache" if res.cache_hit else "registry"
        out.print(f"pulled {shown(res.pinned)} -> {shown(res.output)} ({res.size_bytes / 1024:.1f} KiB from the "
                  f"{source}, {res.seconds:.2f} s)", soft_wrap=True)
        if res.bundle:
            out.print(f"signature bundle {shown(res.bundle)} (newest of {res.signatures}; not verified: "
                      "wasmai verify FILE ...)", soft_wrap=True)
        for name, path in res.graphs.items():
            out.print(f"model {shown(name)} -> {shown(path)} (run with --graph {shown(name)}={shown(path)})",
                      soft_wrap=True)

    run_command(work, json_out=json_out, render=render)
