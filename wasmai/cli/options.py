"""Options shared by several commands, as ``Annotated`` aliases (one definition each).

A command declares ``key: KeyOpt = None`` and gets the flag name, help text and help panel
defined here, so ``run``, ``bench``, ``verify`` and ``serve`` cannot drift apart. Choices are the
library's own ``str`` enums (:mod:`wasmai.vocab`). Imports nothing heavy (``wasmai --help``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from wasmai.vocab import ExecutionTarget

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout "
                                       "(machine-readable; nothing else goes to stdout).")]

# --- the sandbox: `wasmai run` and `wasmai bench` ----------------------------------------------

SANDBOX_PANEL = "Sandbox (default: deny everything)"

DirOpt = Annotated[list[str] | None, typer.Option(
    "--dir", metavar="HOST::GUEST[:ro]", rich_help_panel=SANDBOX_PANEL,
    help="Preopen the host directory HOST in the guest at GUEST, read-only with :ro "
    "(repeatable; default: no file system).")]
EnvOpt = Annotated[list[str] | None, typer.Option(
    "--env", metavar="K=V", rich_help_panel=SANDBOX_PANEL,
    help="Set a guest environment variable (repeatable; default: empty environment).")]
InheritStdioOpt = Annotated[bool, typer.Option(
    "--inherit-stdio", rich_help_panel=SANDBOX_PANEL,
    help="Send guest stdout/stderr to this process's (default: captured in memory).")]
MaxMemoryOpt = Annotated[int | None, typer.Option(
    "--max-memory", metavar="MB", min=1, rich_help_panel=SANDBOX_PANEL,
    help="Memory budget of an instance, MiB: all its linear memories and tables, the tensors the host holds "
         "for it and its graphs' bytes (default 4096).")]
MaxOrtMemoryOpt = Annotated[int | None, typer.Option(
    "--max-ort-memory", metavar="MB", min=1, rich_help_panel=SANDBOX_PANEL,
    help="Cap of ONNX Runtime's memory in this process (weights, tensors of every run), MiB (default 4096).")]
MaxTensorBytesOpt = Annotated[int | None, typer.Option(
    "--max-tensor-bytes", metavar="N", min=0, rich_help_panel=SANDBOX_PANEL,
    help="Refuse any wasi-nn tensor larger than N bytes (wasi-nn error too-large; default 1 GiB).")]
MaxGraphsOpt = Annotated[int | None, typer.Option(
    "--max-graphs", metavar="N", min=0, rich_help_panel=SANDBOX_PANEL,
    help="Refuse graph.load / load-by-name while an instance holds N live graphs (wasi-nn error security; "
         "default 16).")]
TimeoutOpt = Annotated[float | None, typer.Option(
    "--timeout", metavar="S", rich_help_panel=SANDBOX_PANEL, help="Seconds each guest call may take.")]

# --- the host: graphs for load-by-name and execution targets -------------------------------------

HOST_PANEL = "Host (wasi-nn on ONNX Runtime)"

GraphOpt = Annotated[list[str] | None, typer.Option(
    "--graph", metavar="NAME=FILE.onnx", rich_help_panel=HOST_PANEL,
    help="Register an ONNX file for wasi-nn load-by-name (repeatable).")]
AllowTargetFallbackOpt = Annotated[bool, typer.Option(
    "--allow-target-fallback", rich_help_panel=HOST_PANEL,
    help="Run a gpu/tpu execution target on the CPU when ONNX Runtime has no such execution provider "
    "(default: wasi-nn error unsupported-operation).")]
ExecutionTargetOpt = Annotated[ExecutionTarget, typer.Option(
    "--execution-target", case_sensitive=False,
    help="wasi-nn execution target the component asks for when it loads its graph.")]

# --- inputs: `wasmai run` and `wasmai bench` -----------------------------------------------------

INPUT_PANEL = "Inputs"

ImageOpt = Annotated[Path | None, typer.Option(
    "--image", rich_help_panel=INPUT_PANEL, help="PNG or JPEG for an image-classifier component.")]
InputOpt = Annotated[list[str] | None, typer.Option(
    "--input", metavar="NAME=FILE.npy", rich_help_panel=INPUT_PANEL,
    help="One input tensor from a .npy file, matched to the component's input NAME (FILE.npy alone: "
    "by position) and cast to its dtype when that is safe; repeatable.")]
InputsOpt = Annotated[Path | None, typer.Option(
    "--inputs", metavar="FILE.npz", rich_help_panel=INPUT_PANEL, help="An .npz holding the inputs by name.")]

# --- results: `wasmai run` and `wasmai bench` ---------------------------------------------------

TopKOpt = Annotated[int, typer.Option(
    "--top-k", min=1, help="Predictions per classify() call (image-classification components).")]

# --- the signature policy: `verify`, and `run` / `bench` before instantiating --------------------

POLICY_PANEL = "Signature policy"

KeyOpt = Annotated[Path | None, typer.Option(
    "--key", rich_help_panel=POLICY_PANEL, help="Signed with this public key (PEM).")]
CertIdentityOpt = Annotated[str | None, typer.Option(
    "--cert-identity", rich_help_panel=POLICY_PANEL,
    help="Keyless signer identity (certificate SAN; with --cert-oidc-issuer).")]
CertOidcIssuerOpt = Annotated[str | None, typer.Option(
    "--cert-oidc-issuer", rich_help_panel=POLICY_PANEL, help="Keyless OIDC issuer of the identity.")]
GithubRepositoryOpt = Annotated[str | None, typer.Option(
    "--github-repository", metavar="OWNER/REPO", rich_help_panel=POLICY_PANEL,
    help="Signed keylessly by a GitHub Actions workflow of OWNER/REPO.")]
GithubRefOpt = Annotated[str | None, typer.Option(
    "--github-ref", rich_help_panel=POLICY_PANEL, help="With --github-repository: the git ref.")]
TrustConfigOpt = Annotated[Path | None, typer.Option(
    "--trust-config", rich_help_panel=POLICY_PANEL, help="Sigstore ClientTrustConfig JSON of another instance.")]
TrustedRootOpt = Annotated[Path | None, typer.Option(
    "--trusted-root", rich_help_panel=POLICY_PANEL, help="Sigstore TrustedRoot JSON.")]
StagingOpt = Annotated[bool, typer.Option(
    "--staging", rich_help_panel=POLICY_PANEL, help="Use Sigstore's staging trusted root.")]
OfflineOpt = Annotated[bool, typer.Option(
    "--offline", rich_help_panel=POLICY_PANEL, help="Do not refresh the Sigstore trusted root.")]
PolicyFileOpt = Annotated[Path | None, typer.Option(
    "--policy", rich_help_panel=POLICY_PANEL,
    help="A TOML policy file (the options above override it).")]
BundleOpt = Annotated[Path | None, typer.Option(
    "--bundle", rich_help_panel=POLICY_PANEL, help="Signature bundle (default: COMPONENT.sigstore.json).")]

# --- OCI registries: `push`, `pull`, and `oci://` references in `verify`, `run`, `bench`, `sign` ---

REGISTRY_PANEL = "Registry (oci:// references)"

InsecureOpt = Annotated[bool, typer.Option(
    "--insecure", rich_help_panel=REGISTRY_PANEL,
    help="Plain HTTP to a registry on this machine (localhost, 127.0.0.1, [::1] only; default: HTTPS with "
    "certificate verification).")]
UsernameOpt = Annotated[str | None, typer.Option(
    "--username", rich_help_panel=REGISTRY_PANEL,
    help="Registry user name, with --password-stdin (default: REGISTRY_AUTH_FILE, ~/.docker/config.json).")]
PasswordStdinOpt = Annotated[bool, typer.Option(
    "--password-stdin", rich_help_panel=REGISTRY_PANEL, help="Read the registry password from standard input.")]


def option_groups(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The sandbox, signature-policy and component-target option dicts of a command that takes
    the shared sandbox, policy and target flags (``run``, ``bench``), from its parameters by their
    Python names (the command's ``locals()`` before it defines any other name). The dicts are the
    keyword arguments of :meth:`wasmai.sandbox.SandboxOptions.from_options`,
    :func:`wasmai.sign.policy_from_options` and :func:`wasmai.cli.oci.resolve_target`'s
    ``target_options``."""
    p = params
    sandbox = dict(dirs=p["dir_"] or [], env=p["env"] or [], inherit_stdio=p["inherit_stdio"],
                   max_memory_mb=p["max_memory"], timeout_s=p["timeout"], max_tensor_bytes=p["max_tensor_bytes"],
                   max_graphs=p["max_graphs"], max_ort_memory_mb=p["max_ort_memory"])
    policy = {k: p[k] for k in ("key", "cert_identity", "cert_oidc_issuer", "github_repository", "github_ref",
                                "trust_config", "trusted_root", "staging", "offline", "policy")}
    target = {k: p[k] for k in ("bundle", "insecure", "username", "password_stdin")}
    return sandbox, policy, target
