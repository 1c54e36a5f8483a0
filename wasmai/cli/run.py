"""``wasmai run``: run a component once on an image or on tensors (thin front over
:func:`wasmai.runtime.run_component`)."""

from __future__ import annotations

from pathlib import Path

import typer

from wasmai.cli._common import (
    JSON_HELP,
    bundle_option,
    cert_identity_option,
    cert_oidc_issuer_option,
    console,
    dir_option,
    env_option,
    github_ref_option,
    github_repository_option,
    inherit_stdio_option,
    key_option,
    max_graphs_option,
    max_memory_option,
    max_tensor_bytes_option,
    offline_option,
    policy_file_option,
    policy_from_cli,
    run_command,
    sandbox_from_options,
    staging_option,
    trust_config_option,
    trusted_root_option,
)


def run(
    component: Path = typer.Argument(..., help="The component (.wasm) to run."),
    image: Path | None = typer.Option(None, "--image", help="PNG or JPEG for an image-classifier component."),
    input_: list[str] | None = typer.Option(None, "--input", help="NAME=FILE.npy for one input "
                                               "(FILE.npy alone = by position); repeatable."),
    inputs: Path | None = typer.Option(None, "--inputs", help=".npz holding the inputs by name."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Predictions to show for an image."),
    graph: list[str] | None = typer.Option(None, "--graph", help="NAME=FILE.onnx for wasi-nn "
                                              "load-by-name; repeatable."),
    allow_target_fallback: bool = typer.Option(False, "--allow-target-fallback", help="Run a gpu/tpu "
                                               "execution target on the CPU when no such provider exists."),
    timeout: float | None = typer.Option(None, "--timeout", help="Seconds each guest call may take."),
    dir_: list[str] | None = dir_option(),
    env: list[str] | None = env_option(),
    inherit_stdio: bool = inherit_stdio_option(),
    max_memory: int | None = max_memory_option(),
    max_tensor_bytes: int | None = max_tensor_bytes_option(),
    max_graphs: int | None = max_graphs_option(),
    key: Path | None = key_option(),
    cert_identity: str | None = cert_identity_option(),
    cert_oidc_issuer: str | None = cert_oidc_issuer_option(),
    github_repository: str | None = github_repository_option(),
    github_ref: str | None = github_ref_option(),
    trust_config: Path | None = trust_config_option(),
    trusted_root: Path | None = trusted_root_option(),
    staging: bool = staging_option(),
    offline: bool = offline_option(),
    policy: Path | None = policy_file_option(),
    bundle: Path | None = bundle_option(),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show timings and host details."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Run a component once: top-k predictions for an image, or output tensors for inputs.

    With --key, --cert-identity/--cert-oidc-issuer, --github-repository or --policy the signature is
    verified first; a failed check refuses to compile or instantiate the component.
    """
    if image is not None and (input_ or inputs is not None):
        raise typer.BadParameter("give --image or --input/--inputs, not both")
    if image is None and not input_ and inputs is None:
        raise typer.BadParameter("give --image, --input NAME=FILE.npy or --inputs FILE.npz")

    def work():
        from wasmai.runtime import load_input_arrays, parse_graph_options, run_component

        arrays = None if image is not None else load_input_arrays(input_ or [], inputs)
        return run_component(component, image=image, inputs=arrays, top_k=top_k,
                             graphs=parse_graph_options(graph or []),
                             allow_target_fallback=allow_target_fallback, timeout_s=timeout,
                             sandbox=sandbox_from_options(dir_, env, inherit_stdio, max_memory,
                                                          max_tensor_bytes, max_graphs),
                             policy=policy_from_cli(
                                 key=key, cert_identity=cert_identity, cert_oidc_issuer=cert_oidc_issuer,
                                 github_repository=github_repository, github_ref=github_ref,
                                 trust_config=trust_config, trusted_root=trusted_root, staging=staging,
                                 offline=offline, policy=policy),
                             bundle=bundle)

    run_command(work, json_out=json_out, render=lambda r: _render(r, verbose))


def _render(result, verbose: bool) -> None:
    from rich.table import Table

    out = console()
    if result.signature is not None:
        out.print("[green]signature verified[/green]")
    if result.predictions is not None:
        table = Table(title=f"{result.model} — top {len(result.predictions)}")
        table.add_column("label")
        table.add_column("index", justify="right")
        table.add_column("score", justify="right")
        for p in result.predictions:
            table.add_row(p.label, str(p.index), f"{p.score:.4f}")
    else:
        table = Table(title=f"{result.model} — outputs")
        for col in ("name", "dtype", "shape", "min", "max", "mean", "values"):
            table.add_column(col, justify="right" if col in ("min", "max", "mean") else "left")
        for o in result.outputs or []:
            vals = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in o.values)
            table.add_row(o.name, o.dtype, str(list(o.shape)), f"{o.min:.4g}", f"{o.max:.4g}",
                          f"{o.mean:.4g}", vals)
    out.print(table)
    if verbose:
        cache = "cached load" if result.cache_hit else "cold compile"
        out.print(f"component {result.component} sha256 {result.sha256[:16]}…")
        out.print(f"{cache} {result.compile_ms:.1f} ms, instantiate {result.instantiate_ms:.1f} ms, "
                  f"load {result.load_ms:.1f} ms, call {result.call_ms:.2f} ms "
                  f"(onnxruntime run {result.ort_run_ms:.2f} ms on {result.execution_provider})")
        if result.guest_timings_us:
            out.print("guest: " + ", ".join(f"{k} {v} µs" for k, v in result.guest_timings_us.items()))
        out.print(f"linear memory {result.linear_memory_bytes / 2**20:.1f} MiB")
