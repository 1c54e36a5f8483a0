"""``wasmai convert``: typer front over :func:`wasmai.convert.convert` (imports only typer/stdlib here)."""

from __future__ import annotations

from pathlib import Path

import typer

from wasmai.cli._common import JSON_HELP, console, run_command


def convert(
    output: Path = typer.Option(..., "-o", "--output", help="Output model OUT.onnx; the manifest goes to OUT.toml."),
    torch_spec: str | None = typer.Option(None, "--torch", help="PyTorch model: module:callable, file.py:callable "
                                             "(returns an nn.Module) or a TorchScript file."),
    weights: Path | None = typer.Option(None, "--weights", help="State dict loaded into the --torch module."),
    onnx_path: Path | None = typer.Option(None, "--onnx", help="An existing ONNX model."),
    hf: Path | None = typer.Option(None, "--hf", help="A local Hugging Face model folder (config.json + weights)."),
    inputs: list[str] = typer.Option([], "--input", help="Example input NAME=1x3x224x224[:dtype] (repeatable)."),
    dynamic: list[str] = typer.Option([], "--dynamic", help="Dynamic axes NAME=0[,1] (repeatable)."),
    output_names: list[str] = typer.Option([], "--output-name", help="Name of each model output, in order (repeatable)."),
    task: str = typer.Option("tensor", "--task", help="tensor or image-classification."),
    labels: Path | None = typer.Option(None, "--labels", help="Class names, one per line (image-classification)."),
    softmax: bool | None = typer.Option(None, "--softmax/--no-softmax",
                                           help="Scores are softmax(logits) (default on for image-classification)."),
    resize_shorter: int | None = typer.Option(None, "--resize-shorter", help="Resize the shorter image side to this (pixels)."),
    crop: str | None = typer.Option(None, "--crop", help="Centre crop: N or HxW (default: the input's H and W)."),
    mean: str = typer.Option("0,0,0", "--mean", help="Per-channel mean on 0..255 pixels."),
    std: str = typer.Option("1,1,1", "--std", help="Per-channel std on 0..255 pixels: (x - mean) / std."),
    layout: str = typer.Option("NCHW", "--layout", help="NCHW or NHWC."),
    color: str = typer.Option("RGB", "--color", help="RGB or BGR."),
    name: str | None = typer.Option(None, "--name", help="Model name in the manifest (default: OUT's stem)."),
    version: str = typer.Option("0.1.0", "--version", help="Model version in the manifest."),
    optimize: str = typer.Option("basic", "--optimize", help="ONNX Runtime offline optimization: none, basic, extended, all."),
    quantize: str = typer.Option("none", "--quantize", help="none, dynamic (int8 weights), static (QDQ int8), fp16."),
    calibration: Path | None = typer.Option(None, "--calibration", help="Folder of images or NPZ for --quantize static."),
    calibration_method: str = typer.Option("minmax", "--calibration-method", help="minmax, entropy or percentile."),
    keep_io_types: bool = typer.Option(True, "--keep-io-types/--fp16-io", help="fp16: keep fp32 inputs/outputs."),
    validation: Path | None = typer.Option(None, "--validation", help="Folder of images or NPZ for validation "
                                              "(default: the calibration samples, else random inputs)."),
    atol: float | None = typer.Option(None, "--atol", help="Absolute tolerance (default depends on --quantize)."),
    rtol: float | None = typer.Option(None, "--rtol", help="Relative tolerance (default depends on --quantize)."),
    min_top1: float | None = typer.Option(None, "--min-top1-agreement",
                                             help="Classifiers: minimum top-1 agreement 0..1 (default 0.7 for int8, unchecked otherwise)."),
    fail_on_mismatch: bool = typer.Option(True, "--fail-on-mismatch/--no-fail-on-mismatch",
                                          help="Exit 1 and write nothing when validation fails."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset for the PyTorch export."),
    exporter: str = typer.Option("torchscript", "--exporter", help="torch.onnx exporter: torchscript or dynamo (needs onnxscript)."),
    latency_runs: int = typer.Option(10, "--latency-runs", help="ONNX Runtime runs timed for the latency report."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Convert a PyTorch, Hugging Face or ONNX model to ONNX + manifest: export/load, optimize,
    quantize, validate, report, write."""

    def work():
        from wasmai import convert as conv
        from wasmai.errors import WasmaiError
        from wasmai.manifest import Preprocess

        pre = None
        if task == "image-classification" and (crop or resize_shorter or mean != "0,0,0" or std != "1,1,1"
                                               or layout != "NCHW" or color != "RGB"):
            crop_hw = None
            if crop:
                try:
                    parts = [int(p) for p in crop.lower().split("x")]
                except ValueError:
                    parts = []
                if len(parts) not in (1, 2):
                    raise WasmaiError(f"--crop {crop!r}: expected N or HxW")
                crop_hw = (parts[0], parts[-1])
            else:
                crop_hw = _crop_from_inputs(inputs, layout)
            pre = Preprocess(crop=crop_hw, resize_shorter=resize_shorter, color=color.upper(), layout=layout.upper(),
                             mean=conv.parse_floats3(mean, "--mean"), std=conv.parse_floats3(std, "--std"))
        opts = conv.ConvertOptions(
            output=output, torch=torch_spec, weights=weights, onnx=onnx_path, hf=hf,
            inputs=[conv.parse_input_spec(i) for i in inputs], dynamic=conv.parse_dynamic(dynamic),
            output_names=list(output_names), task=task, labels=labels, softmax=softmax, preprocess=pre,
            name=name, version=version, optimize=optimize, quantize=quantize, calibration=calibration,
            calibration_method=calibration_method, keep_io_types=keep_io_types, validation=validation,
            atol=atol, rtol=rtol, min_top1_agreement=min_top1, fail_on_mismatch=fail_on_mismatch,
            opset=opset, exporter=exporter, latency_runs=latency_runs)
        with _progress() as progress:
            return conv.convert(opts, progress=progress)

    run_command(work, json_out=json_out, render=_render)


def _crop_from_inputs(inputs: list[str], layout: str):
    from wasmai.convert import parse_input_spec
    from wasmai.errors import WasmaiError

    if inputs:
        shape = parse_input_spec(inputs[0]).shape
        if len(shape) == 4:
            return (shape[2], shape[3]) if layout.upper() == "NCHW" else (shape[1], shape[2])
    raise WasmaiError("--crop is needed (no 4-D --input to take H and W from)")


class _progress:
    """Rich progress display on stderr: a line per pipeline step, added when the step starts."""

    def __enter__(self):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._p = Progress(SpinnerColumn(finished_text=" "), TextColumn("{task.description}"), TimeElapsedColumn(),
                           console=console(stderr=True), transient=False)
        self._p.__enter__()
        self._tasks: dict[str, int] = {}
        self._running: str | None = None
        return self._event

    def _event(self, step: str, event: str, detail: str) -> None:
        if event == "start":
            self._tasks[step] = self._p.add_task(f"{step} ...", total=1)
            self._running = step
        elif event == "done":
            self._p.update(self._tasks[step], completed=1, description=f"[green]✓[/] {step}: {detail}")
            self._running = None
        else:
            self._p.update(self._p.add_task(f"[dim]- {step}: {detail}", total=1), completed=1)

    def __exit__(self, *exc):
        if exc[0] is not None and self._running is not None:
            self._p.update(self._tasks[self._running], completed=1, description=f"[red]✗[/] {self._running}")
        return self._p.__exit__(*exc)


def _render(result) -> None:
    out = console()
    out.print(f"[bold]{result.name}[/] ({result.task}) -> {result.onnx} + {result.manifest.name} "
              f"in {result.seconds:.1f} s")
    val = result.validation
    for o in val["outputs"]:
        out.print(f"  {o['name']}: max abs diff {o['max_abs_diff']:.3g}, max rel diff {o['max_rel_diff']:.3g}"
                  f" vs {val['reference']} on {val['samples_count']} samples ({val['source']})")
    if "top1_agreement" in val:
        out.print(f"  top-1 agreement {val['top1_agreement']:.2f}")
        for s in val.get("samples", [])[:8]:
            top = ", ".join(f"{t['label']} {t['score']:.3f}" for t in s["result_top5"][:3])
            out.print(f"    {s['sample']}: {top}")
    rep = result.report
    out.print(f"  size {rep['size']['before_bytes'] / 1e6:.2f} MB -> {rep['size']['after_bytes'] / 1e6:.2f} MB, "
              f"ORT latency {rep['latency']['before_ms']:.2f} -> {rep['latency']['after_ms']:.2f} ms (median, 1 thread)")
    w = rep["wasi_nn"]
    hosts = ", ".join(f"{h}: {'yes' if i['accepts'] else 'no'}" for h, i in w["hosts"].items())
    out.print(f"  wasi-nn: {hosts}; embeddable: {'yes' if w['embed']['fits'] else 'no'}; opset {w['opset']['model']} "
              f"(onnxruntime {w['opset']['onnxruntime_version']} takes <= {w['opset']['onnxruntime_max_opset']})")
    err = console(stderr=True)
    for msg in result.warnings:
        err.print(f"warning: {msg}")
