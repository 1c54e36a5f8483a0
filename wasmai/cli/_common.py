"""Shared CLI plumbing: error handling, JSON output and the rich consoles.

Only the standard library is imported at module level (rich is imported on first use) so that
``wasmai --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

T = TypeVar("T")

JSON_HELP = "Print the result as JSON on stdout (machine-readable; nothing else goes to stdout)."


def console(stderr: bool = False):
    """A rich Console on stdout (or stderr)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def to_jsonable(value: Any) -> Any:
    """Dataclasses, Paths, tuples and numpy scalars/arrays -> plain JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.name.startswith("_")}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    return value


def run_command(fn: Callable[[], T], *, json_out: bool, render: Callable[[T], None] | None = None) -> T:
    """Run a library call for a CLI command.

    On success prints ``render(result)`` (or the result as JSON with ``--json``). A
    :class:`wasmai.errors.WasmaiError` becomes ``error: <message>`` on stderr and its exit code
    (1); any other exception is an internal error, exit 3 (traceback with ``WASMAI_DEBUG=1``).
    """
    from wasmai.errors import WasmaiError

    try:
        result = fn()
    except WasmaiError as exc:
        _fail(str(exc), exc.exit_code, json_out)
    except KeyboardInterrupt:
        _fail("interrupted", 130, json_out)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the one place internal errors are reported
        if os.environ.get("WASMAI_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set WASMAI_DEBUG=1 for a traceback)", 3, json_out)
    if json_out:
        sys.stdout.write(json.dumps(to_jsonable(result), indent=2) + "\n")
    elif render is not None:
        render(result)
    return result


def _fail(message: str, code: int, json_out: bool) -> None:
    message = " ".join(message.split("\n")[:1]) if "\n" in message and len(message) > 2000 else message
    if json_out:
        sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


# --- sandbox flags shared by `wasmai run` and `wasmai bench` ------------------------------------

SANDBOX_PANEL = "Sandbox (default: deny everything)"


def dir_option():
    """``--dir HOST::GUEST[:ro]`` (repeatable)."""
    return typer.Option(None, "--dir", metavar="HOST::GUEST[:ro]", rich_help_panel=SANDBOX_PANEL,
                        help="Preopen the host directory HOST in the guest at GUEST, read-only with :ro "
                        "(repeatable; default: no file system).")


def env_option():
    """``--env K=V`` (repeatable)."""
    return typer.Option(None, "--env", metavar="K=V", rich_help_panel=SANDBOX_PANEL,
                        help="Set a guest environment variable (repeatable; default: empty environment).")


def inherit_stdio_option():
    """``--inherit-stdio``."""
    return typer.Option(False, "--inherit-stdio", rich_help_panel=SANDBOX_PANEL,
                        help="Send guest stdout/stderr to this process's (default: captured in memory).")


def max_memory_option():
    """``--max-memory MB``."""
    return typer.Option(None, "--max-memory", metavar="MB", min=1, rich_help_panel=SANDBOX_PANEL,
                        help="Largest linear memory of an instance, MiB (default 4096).")


def max_tensor_bytes_option():
    """``--max-tensor-bytes N``."""
    return typer.Option(None, "--max-tensor-bytes", metavar="N", min=0, rich_help_panel=SANDBOX_PANEL,
                        help="Refuse any wasi-nn tensor larger than N bytes (wasi-nn error too-large).")


def max_graphs_option():
    """``--max-graphs N``."""
    return typer.Option(None, "--max-graphs", metavar="N", min=0, rich_help_panel=SANDBOX_PANEL,
                        help="Refuse graph.load / load-by-name while an instance holds N live graphs "
                        "(wasi-nn error security).")


def sandbox_from_options(dirs, env, inherit_stdio, max_memory, max_tensor_bytes, max_graphs):
    """The :class:`wasmai.runtime.SandboxOptions` for the sandbox flags (raises WasmaiError)."""
    from wasmai.runtime import SandboxOptions

    return SandboxOptions.from_options(dirs=dirs or [], env=env or [], inherit_stdio=inherit_stdio,
                                       max_memory_mb=max_memory, max_tensor_bytes=max_tensor_bytes,
                                       max_graphs=max_graphs)


# --- signature policy flags shared by `wasmai run` and `wasmai bench` ---------------------------

POLICY_PANEL = "Signature policy (verify before instantiating)"


def _policy_option(default, *names: str, help: str):
    return typer.Option(default, *names, help=help, rich_help_panel=POLICY_PANEL)


def key_option():
    """``--key PUB.pem``."""
    return _policy_option(None, "--key", help="Verify first: signed with this public key (PEM).")


def cert_identity_option():
    """``--cert-identity I``."""
    return _policy_option(None, "--cert-identity",
                          help="Verify first: keyless signer identity (certificate SAN; with --cert-oidc-issuer).")


def cert_oidc_issuer_option():
    """``--cert-oidc-issuer URL``."""
    return _policy_option(None, "--cert-oidc-issuer", help="Verify first: keyless OIDC issuer.")


def github_repository_option():
    """``--github-repository OWNER/REPO``."""
    return _policy_option(None, "--github-repository",
                          help="Verify first: signed keylessly by a GitHub Actions workflow of OWNER/REPO.")


def github_ref_option():
    """``--github-ref REF``."""
    return _policy_option(None, "--github-ref", help="With --github-repository: the git ref.")


def trust_config_option():
    """``--trust-config FILE``."""
    return _policy_option(None, "--trust-config", help="Sigstore ClientTrustConfig JSON.")


def trusted_root_option():
    """``--trusted-root FILE``."""
    return _policy_option(None, "--trusted-root", help="Sigstore TrustedRoot JSON.")


def staging_option():
    """``--staging``."""
    return _policy_option(False, "--staging", help="Sigstore staging trust root.")


def offline_option():
    """``--offline``."""
    return _policy_option(False, "--offline", help="Do not refresh the Sigstore trust root.")


def policy_file_option():
    """``--policy FILE``."""
    return _policy_option(None, "--policy", help="Verify first: a TOML policy file (options above override it).")


def bundle_option():
    """``--bundle FILE``."""
    return _policy_option(None, "--bundle", help="Signature bundle (default: beside the component).")


def policy_from_cli(**options):
    """The :class:`wasmai.sign.VerificationPolicy` the policy flags ask for, or None when none is
    given (see :func:`wasmai.sign.policy_from_options`; raises WasmaiError)."""
    from wasmai.sign import policy_from_options

    return policy_from_options(**options)
