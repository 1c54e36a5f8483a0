"""``wasmai run``: run a component once on an image or on tensors (thin front over
:func:`wasmai.runtime.run_component`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wasmai.cli._common import console, run_command, shown, warm_renderer
from wasmai.cli._text import TextOpt
from wasmai.cli.oci import COMPONENT_HELP
from wasmai.cli.options import (
    AllowTargetFallbackOpt,
    BundleOpt,
    CertIdentityOpt,
    CertOidcIssuerOpt,
    DirOpt,
    EnvOpt,
    GithubRefOpt,
    GithubRepositoryOpt,
    GraphOpt,
    ImageOpt,
    InheritStdioOpt,
    InputOpt,
    InputsOpt,
    InsecureOpt,
    JsonOpt,
    KeyOpt,
    MaxGraphsOpt,
    MaxMemoryOpt,
    MaxOrtMemoryOpt,
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
    option_groups,
)

if TYPE_CHECKING:
    from wasmai.runtime import RunResult


def run(
    component: Annotated[str, typer.Argument(help=f"The component (.wasm) to run, or {COMPONENT_HELP}.")],
    image: ImageOpt = None,
    audio: Annotated[Path | None, typer.Option(
        "--audio", rich_help_panel="Inputs",
        help="WAV file for a voice-activity component: its speech segments.")] = None,
    vad: Annotated[list[str] | None, typer.Option(
        "--vad", metavar="KEY=VALUE", rich_help_panel="Inputs",
        help="With --audio: a get_speech_timestamps option, repeatable (threshold, neg-threshold, "
        "min-speech-ms, min-silence-ms, speech-pad-ms, max-speech-s; default: the component's).")] = None,
    annotate: Annotated[Path | None, typer.Option(
        "--annotate", rich_help_panel="Inputs", metavar="OUT.png",
        help="Face-detection components: also write the image with the faces boxed (PNG).")] = None,
    text: TextOpt = None,
    input_: InputOpt = None,
    inputs: InputsOpt = None,
    top_k: TopKOpt = 5,
    graph: GraphOpt = None,
    allow_target_fallback: AllowTargetFallbackOpt = False,
    timeout: TimeoutOpt = None,
    dir_: DirOpt = None,
    env: EnvOpt = None,
    inherit_stdio: InheritStdioOpt = False,
    max_memory: MaxMemoryOpt = None,
    max_ort_memory: MaxOrtMemoryOpt = None,
    max_tensor_bytes: MaxTensorBytesOpt = None,
    max_graphs: MaxGraphsOpt = None,
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show timings and host details.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Run a component once: top-k predictions for an image, or output tensors for inputs.

    With --key, --cert-identity/--cert-oidc-issuer, --github-repository or --policy the signature is
    verified first; a failed check refuses to compile or instantiate the component.

    [bold]Examples:[/bold]

    [dim]# an image classifier, only if its signature verifies against a public key[/dim]
    wasmai run model.wasm --key wasmai.pub --image cat.png --top-k 5

    [dim]# tensors by name (a .npy per input) or all at once (.npz), with a read-only folder[/dim]
    wasmai run model.wasm --input x=x.npy --dir ./assets::/assets:ro --max-memory 512

    [dim]# a voice-activity component: the speech segments of a WAV file (any rate, mono or stereo)[/dim]
    wasmai run vad.wasm --audio speech.wav --vad threshold=0.6 --vad min-silence-ms=300

    [dim]# a face-detection component: a table of faces, and the photo with the faces boxed[/dim]
    wasmai run face.wasm --image photo.png --annotate faces.png

    [dim]# a text-embedding component: dimension, norms and pairwise cosines (--json: the vectors)[/dim]
    wasmai run emb.wasm --text "A man is eating food." --text "A man eats bread."

    [dim]# a component that loads its graph by name from the host[/dim]
    wasmai run model.wasm --inputs inputs.npz --graph mlp=mlp.onnx --json

    [dim]# a pushed component by digest: the attached signature must verify under the policy[/dim]
    wasmai run oci://ghcr.io/acme/model@sha256:4c98... --key wasmai.pub --image cat.png
    """
    if vad and audio is None:
        raise typer.BadParameter("--vad goes with --audio")
    # The sandbox, signature-policy and component-target flags, shared by every task's front.
    sandbox_options, policy_options, target_options = option_groups(locals())
    if audio is not None:  # voice-activity components (wasmai.tasks.vad)
        if image is not None or input_ or inputs is not None:
            raise typer.BadParameter("give --audio alone, not with --image/--input/--inputs")
        from wasmai.cli._audio import cli_run

        cli_run(component, audio, options=None, settings=vad, graphs=graph, verbose=verbose, json_out=json_out,
                sandbox_options=sandbox_options, policy_options=policy_options, target_options=target_options)
        return
    if text:  # text-embedding components (wasmai.tasks.embedding)
        if image is not None or audio is not None or input_ or inputs is not None:
            raise typer.BadParameter("give --text alone, not with --image/--audio/--input/--inputs")
        from wasmai.cli._text import run_text

        run_text(component, text, graphs=graph, allow_target_fallback=allow_target_fallback, verbose=verbose,
                 json_out=json_out, sandbox_options=sandbox_options, policy_options=policy_options,
                 target_options=target_options)
        return
    if image is not None and not input_ and inputs is None:  # maybe a face-detection component
        from wasmai.tasks.face import is_face_component

        if is_face_component(component):
            from wasmai.cli._face import cli_run as face_run

            face_run(component, image, annotate=annotate, verbose=verbose, json_out=json_out,
                     sandbox_options=sandbox_options, policy_options=policy_options,
                     target_options=target_options)
            return
    if annotate is not None:
        raise typer.BadParameter("--annotate needs --image and a face-detection component")
    if image is not None and (input_ or inputs is not None):
        raise typer.BadParameter("give --image or --input/--inputs, not both")
    if image is None and not input_ and inputs is None:
        raise typer.BadParameter("give --image, --input NAME=FILE.npy or --inputs FILE.npz")

    def work() -> RunResult:
        from wasmai.cli.oci import resolve_target
        from wasmai.inputs import parse_assignments
        from wasmai.runtime import run_input_files
        from wasmai.sandbox import SandboxOptions
        from wasmai.worker import submit

        sandbox = SandboxOptions.from_options(**sandbox_options)
        graphs = parse_assignments(graph, "--graph", form="NAME=FILE.onnx")
        path, signature, pulled_graphs, verified, verify_policy = resolve_target(component, policy_options,
                                                                                 target_options)
        # In the worker main() forked (wasmai.worker.prefork): a graph that crashes ONNX Runtime ends
        # the worker, not this command. The worker also reads the .npy / .npz inputs: this process
        # never imports numpy.
        call = submit(run_input_files, path, input_items=input_, npz=inputs, image=image, top_k=top_k,
                      graphs={**pulled_graphs, **graphs}, allow_target_fallback=allow_target_fallback,
                      sandbox=sandbox, policy=verify_policy, bundle=signature, verified=verified)
        if not json_out:
            warm_renderer()  # while the worker runs
        return call.result()

    run_command(work, json_out=json_out, render=lambda r: _render(r, verbose))


def _render(result: RunResult, verbose: bool) -> None:
    """Predictions or output tensors as a rich table; timings and host details with ``verbose``."""
    from rich.table import Table

    out = console()
    if result.signature is not None:
        out.print("[green]signature verified[/green]")
    if result.predictions is not None:
        table = Table(title=f"{shown(result.model)} — top {len(result.predictions)}")
        table.add_column("label")
        table.add_column("index", justify="right")
        table.add_column("score", justify="right")
        for p in result.predictions:
            table.add_row(shown(p.label), str(p.index), f"{p.score:.4f}")
    else:
        table = Table(title=f"{shown(result.model)} — outputs")
        for col in ("name", "dtype", "shape", "min", "max", "mean", "values"):
            table.add_column(col, justify="right" if col in ("min", "max", "mean") else "left")
        for o in result.outputs or []:
            vals = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in o.values)
            table.add_row(shown(o.name), o.dtype, str(list(o.shape)), f"{o.min:.4g}", f"{o.max:.4g}",
                          f"{o.mean:.4g}", vals)
    out.print(table)
    if verbose:
        cache = "cached load" if result.cache_hit else "cold compile"
        out.print(f"component {shown(result.component)} sha256 {result.sha256[:16]}…")
        out.print(f"{cache} {result.compile_ms:.1f} ms, instantiate {result.instantiate_ms:.1f} ms, "
                  f"load {result.load_ms:.1f} ms, call {result.call_ms:.2f} ms "
                  f"(onnxruntime run {result.ort_run_ms:.2f} ms on {shown(result.execution_provider)})")
        if result.guest_timings_us:
            out.print("guest: " + ", ".join(f"{k} {v} µs" for k, v in result.guest_timings_us.items()))
        out.print(f"linear memory {result.linear_memory_bytes / 2**20:.1f} MiB")
