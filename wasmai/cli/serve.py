"""``wasmai serve``: models as a sandboxed inference service (KServe Open Inference Protocol v2;
thin front over :func:`wasmai.serve.serve`)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wasmai.cli._common import console, run_command, shown
from wasmai.cli.options import (
    BundleOpt,
    CertIdentityOpt,
    CertOidcIssuerOpt,
    GithubRefOpt,
    GithubRepositoryOpt,
    GraphOpt,
    InsecureOpt,
    KeyOpt,
    MaxMemoryOpt,
    MaxTensorBytesOpt,
    OfflineOpt,
    PasswordStdinOpt,
    PolicyFileOpt,
    StagingOpt,
    TimeoutOpt,
    TopKOpt,
    TrustConfigOpt,
    TrustedRootOpt,
    UsernameOpt,
)
from wasmai.vocab import Isolation

if TYPE_CHECKING:
    from wasmai.serve import ModelStatus

QUOTA_PANEL = "Quotas (per model; a model's config.toml overrides them)"

IsolationOpt = Annotated[Isolation, typer.Option(
    "--isolation", case_sensitive=False,
    help="process: each instance in its own worker process (a crash in ONNX Runtime or a call blocked in the "
    "host costs that worker, which is restarted: HTTP 500 / 504); thread: instances on threads of the "
    "server (faster; a crashing graph ends the server: trusted models only).")]


def serve(
    paths: Annotated[list[str], typer.Argument(
        metavar="MODEL_REPOSITORY|COMPONENT|oci://REF...",
        help="A model repository (one subfolder per model), component files (.wasm) and/or oci:// "
        "references (resolved to a digest once; the attached signature must pass the policy).")],
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback unless told otherwise).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8080,
    isolation: IsolationOpt = Isolation.PROCESS,
    instances: Annotated[int, typer.Option("--instances", min=1, rich_help_panel=QUOTA_PANEL,
                                           help="Instances per model = inferences running at once (= worker "
                                           "processes with --isolation process).")] = 1,
    queue: Annotated[int, typer.Option("--queue", min=0, rich_help_panel=QUOTA_PANEL,
                                       help="Requests that may wait for an instance (more: 429).")] = 16,
    timeout: TimeoutOpt = None,
    queue_timeout: Annotated[float, typer.Option("--queue-timeout", metavar="S", rich_help_panel=QUOTA_PANEL,
                                                 help="Longest wait for an instance (then 503).")] = 10.0,
    max_memory: MaxMemoryOpt = None,
    max_tensor_bytes: MaxTensorBytesOpt = None,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", metavar="N", min=1,
                                                rich_help_panel=QUOTA_PANEL,
                                                help="Largest request body (then 413).")] = 64 * 2**20,
    top_k: TopKOpt = 5,
    graph: GraphOpt = None,
    poll: Annotated[float, typer.Option("--poll", metavar="S", min=0,
                                        help="Seconds between scans of the repository for hot reload "
                                        "(0: off).")] = 2.0,
    shutdown_timeout: Annotated[float, typer.Option("--shutdown-timeout", metavar="S", min=0,
                                                    help="Seconds in-flight requests get after "
                                                    "SIGTERM/SIGINT.")] = 30.0,
    key: KeyOpt = None,
    cert_identity: CertIdentityOpt = None,
    cert_oidc_issuer: CertOidcIssuerOpt = None,
    github_repository: GithubRepositoryOpt = None,
    github_ref: GithubRefOpt = None,
    trust_config: TrustConfigOpt = None,
    trusted_root: TrustedRootOpt = None,
    staging: StagingOpt = False,
    offline: OfflineOpt = False,
    policy: PolicyFileOpt = None,
    bundle: BundleOpt = None,
    insecure: InsecureOpt = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Serve components over HTTP with the KServe Open Inference Protocol v2 (JSON and binary tensors),
    Prometheus /metrics and hot reload of the repository.

    With --key, --cert-identity/--cert-oidc-issuer, --github-repository or --policy every component's
    signature is verified before it is served; a model that fails is refused (log line, metadata
    parameters.state UNAVAILABLE, /ready 503) and the others are served.

    [bold]Examples:[/bold]

    [dim]# a repository of models (models/NAME/model.wasm + optional config.toml), signed by a key[/dim]
    wasmai serve models/ --key keys/wasmai.pub

    [dim]# two components, two instances each, 5 s per call, on all interfaces[/dim]
    wasmai serve mlp.wasm effnet.wasm --instances 2 --timeout 5 --host 0.0.0.0 --port 8000

    [dim]# models you trust, on the server's threads (faster; a graph that crashes ONNX Runtime ends the server)[/dim]
    wasmai serve models/ --isolation thread

    [dim]# a pushed component, pinned to the digest its tag names now; its attached signature must verify[/dim]
    wasmai serve oci://registry.example.com/acme/effnet:v1 --key keys/wasmai.pub

    [dim]# then, e.g.: an image to a classifier, and the metrics[/dim]
    curl --data-binary @cat.jpg 'http://127.0.0.1:8080/v2/models/effnet/classify?top_k=3'
    curl http://127.0.0.1:8080/metrics
    """
    if bundle is not None and (len(paths) != 1 or Path(paths[0]).is_dir() or paths[0].startswith("oci://")):
        raise typer.BadParameter("--bundle applies to a single component file")

    def work() -> None:
        from wasmai.cli.oci import component_target
        from wasmai.inputs import parse_assignments
        from wasmai.oci import is_oci_reference
        from wasmai.serve import ModelLimits, ServeOptions
        from wasmai.serve import serve as serve_models
        from wasmai.serve.repository import stage_oci
        from wasmai.sign import policy_from_options

        limits = ModelLimits(instances=instances, queue=queue, timeout_s=timeout if timeout is not None else 30.0,
                             queue_timeout_s=queue_timeout,
                             memory_limit_mb=max_memory if max_memory is not None else ModelLimits.memory_limit_mb,
                             max_tensor_bytes=max_tensor_bytes if max_tensor_bytes is not None
                             else ModelLimits.max_tensor_bytes,
                             max_body_bytes=max_body_bytes, top_k=top_k)
        graphs = {k: Path(v) for k, v in parse_assignments(graph, "--graph", form="NAME=FILE.onnx").items()}
        verify_policy = policy_from_options(
            key=key, cert_identity=cert_identity, cert_oidc_issuer=cert_oidc_issuer,
            github_repository=github_repository, github_ref=github_ref, trust_config=trust_config,
            trusted_root=trusted_root, staging=staging, offline=offline, policy=policy)
        with tempfile.TemporaryDirectory(prefix="wasmai-serve-oci-") as staged:
            local: list[Path] = []
            for item in paths:
                if not is_oci_reference(item):
                    local.append(Path(item))
                    continue
                # Resolved to a digest once; served from a folder of the verified, digest-checked bytes.
                component, signature, pulled, _ = component_target(
                    item, policy=verify_policy, bundle=None, insecure=insecure, username=username,
                    password_stdin=password_stdin)
                stage_oci(item, component, signature, pulled, Path(staged))
            if any(is_oci_reference(item) for item in paths):
                local.append(Path(staged))
            options = ServeOptions(paths=local, host=host, port=port, limits=limits, graphs=graphs,
                                   policy=verify_policy, bundle=bundle, poll_interval_s=poll,
                                   shutdown_timeout_s=shutdown_timeout, isolation=isolation)
            serve_models(options, on_started=_startup_table)

    run_command(work, json_out=False)


def _startup_table(models: list[ModelStatus]) -> None:
    """The models and their limits, on stderr (names and reasons escaped: a component chose them)."""
    from rich.table import Table

    table = Table(title="wasmai serve: models")
    for col in ("model", "version", "state", "task", "signed", "instances", "queue", "timeout", "memory",
                "tensor", "body", "load", "sha256 / reason"):
        table.add_column(col, justify="right" if col in ("instances", "queue", "load") else "left")
    for m in models:
        lim = m.limits
        tensor = "-" if lim.max_tensor_bytes is None else f"{lim.max_tensor_bytes / 2**20:g} MiB"
        detail = f"{m.sha256[:12]}…" if m.state == "READY" else shown(m.reason or "")
        state = "[green]READY[/green]" if m.state == "READY" else f"[red]{m.state}[/red]"
        table.add_row(shown(m.name), shown(m.version), state, shown(m.task), "yes" if m.signed else "no",
                      str(lim.instances), str(lim.queue), f"{lim.timeout_s:g} s", f"{lim.memory_limit_mb} MiB",
                      tensor, f"{lim.max_body_bytes / 2**20:g} MiB",
                      f"{m.load_ms:.0f} ms" if m.state == "READY" else "-", detail)
    out = console(stderr=True)
    if not out.is_terminal:
        out.width = 160  # a log file or a container's stderr: one line per model
    out.print(table)
