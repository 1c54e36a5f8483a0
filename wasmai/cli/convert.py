"""``wasmai convert``: typer front over :func:`wasmai.convert.convert` (imports only typer/stdlib here)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wasmai.cli._common import console, run_command
from wasmai.cli.options import JsonOpt
from wasmai.vocab import CalibrationMethod, Color, Exporter, Layout, Optimize, Quantize, Task

if TYPE_CHECKING:
    from wasmai.convert import ConvertResult

SOURCE = "Source"
TASK_PANEL = "Task (image classification: preprocessing and labels)"
QUANT_PANEL = "Optimize and quantize"
VALIDATE_PANEL = "Validate"


def convert(
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Output model OUT.onnx; the manifest goes to OUT.toml.", show_default=False)],
    torch_spec: Annotated[str | None, typer.Option(
        "--torch", rich_help_panel=SOURCE, help="PyTorch model: module:callable, file.py:callable "
        "(returns an nn.Module) or a TorchScript file.")] = None,
    weights: Annotated[Path | None, typer.Option(
        "--weights", rich_help_panel=SOURCE, help="State dict loaded into the --torch module.")] = None,
    onnx_path: Annotated[Path | None, typer.Option(
        "--onnx", rich_help_panel=SOURCE, help="An existing ONNX model.")] = None,
    hf: Annotated[Path | None, typer.Option(
        "--hf", rich_help_panel=SOURCE, help="A local Hugging Face model folder (config.json + weights).")] = None,
    inputs: Annotated[list[str] | None, typer.Option(
        "--input", metavar="NAME=1x3x224x224[:dtype]", rich_help_panel=SOURCE,
        help="Example input shape and wasi-nn dtype for the export (repeatable).")] = None,
    dynamic: Annotated[list[str] | None, typer.Option(
        "--dynamic", metavar="NAME=0[,1]", rich_help_panel=SOURCE,
        help="Dynamic axes of an input (repeatable).")] = None,
    output_names: Annotated[list[str] | None, typer.Option(
        "--output-name", rich_help_panel=SOURCE, help="Name of each model output, in order (repeatable).")] = None,
    opset: Annotated[int, typer.Option("--opset", rich_help_panel=SOURCE,
                                       help="ONNX opset for the PyTorch export.")] = 17,
    exporter: Annotated[Exporter, typer.Option("--exporter", rich_help_panel=SOURCE,
                                               help="torch.onnx exporter (dynamo needs onnxscript).")]
    = Exporter.TORCHSCRIPT,
    task: Annotated[Task, typer.Option("--task", rich_help_panel=TASK_PANEL,
                                       help="What the component will do; picks the template.")] = Task.TENSOR,
    labels: Annotated[Path | None, typer.Option(
        "--labels", rich_help_panel=TASK_PANEL, help="Class names, one per line (image-classification).")] = None,
    softmax: Annotated[bool | None, typer.Option(
        "--softmax/--no-softmax", rich_help_panel=TASK_PANEL,
        help="Scores are softmax(logits) (default on for image-classification).")] = None,
    resize_shorter: Annotated[int | None, typer.Option(
        "--resize-shorter", rich_help_panel=TASK_PANEL, help="Resize the shorter image side to this (pixels).")] = None,
    crop: Annotated[str | None, typer.Option(
        "--crop", rich_help_panel=TASK_PANEL, help="Centre crop: N or HxW (default: the input's H and W).")] = None,
    mean: Annotated[str, typer.Option("--mean", rich_help_panel=TASK_PANEL,
                                      help="Per-channel mean on 0..255 pixels.")] = "0,0,0",
    std: Annotated[str, typer.Option("--std", rich_help_panel=TASK_PANEL,
                                     help="Per-channel std on 0..255 pixels: (x - mean) / std.")] = "1,1,1",
    layout: Annotated[Layout, typer.Option("--layout", case_sensitive=False, rich_help_panel=TASK_PANEL,
                                           help="Image tensor layout.")] = Layout.NCHW,
    color: Annotated[Color, typer.Option("--color", case_sensitive=False, rich_help_panel=TASK_PANEL,
                                         help="Channel order.")] = Color.RGB,
    name: Annotated[str | None, typer.Option(
        "--name", help="Model name in the manifest (default: OUT's stem).")] = None,
    version: Annotated[str, typer.Option("--version", help="Model version in the manifest.")] = "0.1.0",
    optimize: Annotated[Optimize, typer.Option(
        "--optimize", rich_help_panel=QUANT_PANEL, help="ONNX Runtime offline graph optimization level.")]
    = Optimize.BASIC,
    quantize: Annotated[Quantize, typer.Option(
        "--quantize", rich_help_panel=QUANT_PANEL,
        help="dynamic (int8 weights), static (int8 QDQ, calibrated) or fp16.")] = Quantize.NONE,
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", rich_help_panel=QUANT_PANEL, help="Folder of images or NPZ for --quantize static.")] = None,
    calibration_method: Annotated[CalibrationMethod, typer.Option(
        "--calibration-method", rich_help_panel=QUANT_PANEL, help="Calibration for --quantize static.")]
    = CalibrationMethod.MINMAX,
    keep_io_types: Annotated[bool, typer.Option(
        "--keep-io-types/--fp16-io", rich_help_panel=QUANT_PANEL, help="fp16: keep fp32 inputs/outputs.")] = True,
    validation: Annotated[Path | None, typer.Option(
        "--validation", rich_help_panel=VALIDATE_PANEL, help="Folder of images or NPZ for validation "
        "(default: the calibration samples, else random inputs).")] = None,
    atol: Annotated[float | None, typer.Option(
        "--atol", rich_help_panel=VALIDATE_PANEL, help="Absolute tolerance (default depends on --quantize).")] = None,
    rtol: Annotated[float | None, typer.Option(
        "--rtol", rich_help_panel=VALIDATE_PANEL, help="Relative tolerance (default depends on --quantize).")] = None,
    min_top1: Annotated[float | None, typer.Option(
        "--min-top1-agreement", rich_help_panel=VALIDATE_PANEL,
        help="Classifiers: minimum top-1 agreement 0..1 (default 0.7 for int8, unchecked otherwise).")] = None,
    fail_on_mismatch: Annotated[bool, typer.Option(
        "--fail-on-mismatch/--no-fail-on-mismatch", rich_help_panel=VALIDATE_PANEL,
        help="Exit 1 and write nothing when validation fails.")] = True,
    latency_runs: Annotated[int, typer.Option(
        "--latency-runs", rich_help_panel=VALIDATE_PANEL,
        help="ONNX Runtime runs timed for the latency report.")] = 10,
    json_out: JsonOpt = False,
) -> None:
    """Convert a PyTorch, Hugging Face or ONNX model to ONNX + manifest: export/load, optimize,
    quantize, validate, report, write.

    Examples:

      [dim]# check an ONNX model, validate it and write its manifest[/dim]
      wasmai convert --onnx model.onnx -o out/model.onnx

      [dim]# a PyTorch classifier, int8 QDQ calibrated on real photos[/dim]
      wasmai convert --torch examples/image-classification/model.py:efficientnet_lite0 \\
          --input input=1x3x224x224 --task image-classification --labels labels.txt \\
          --resize-shorter 256 --crop 224 --mean 127,127,127 --std 128,128,128 \\
          --quantize static --calibration photos/ -o effnet-int8.onnx

      [dim]# a Hugging Face text encoder, int8 weights[/dim]
      wasmai convert --hf ./all-MiniLM-L6-v2 --input input_ids=1x128:i64 \\
          --input attention_mask=1x128:i64 --dynamic input_ids=0,1 --quantize dynamic -o minilm.onnx
    """

    def work() -> ConvertResult:
        from wasmai import convert as conv
        from wasmai.errors import WasmaiError
        from wasmai.manifest import Preprocess

        pre = None
        if task == Task.IMAGE_CLASSIFICATION and (crop or resize_shorter or mean != "0,0,0" or std != "1,1,1"
                                                  or layout != Layout.NCHW or color != Color.RGB):
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
                crop_hw = _crop_from_inputs(inputs or [], layout)
            pre = Preprocess(crop=crop_hw, resize_shorter=resize_shorter, color=color.value, layout=layout.value,
                             mean=conv.parse_floats3(mean, "--mean"), std=conv.parse_floats3(std, "--std"))
        opts = conv.ConvertOptions(
            output=output, torch=torch_spec, weights=weights, onnx=onnx_path, hf=hf,
            inputs=[conv.parse_input_spec(i) for i in inputs or []], dynamic=conv.parse_dynamic(dynamic or []),
            output_names=list(output_names or []), task=task, labels=labels, softmax=softmax, preprocess=pre,
            name=name, version=version, optimize=optimize, quantize=quantize, calibration=calibration,
            calibration_method=calibration_method, keep_io_types=keep_io_types, validation=validation,
            atol=atol, rtol=rtol, min_top1_agreement=min_top1, fail_on_mismatch=fail_on_mismatch,
            opset=opset, exporter=exporter, latency_runs=latency_runs)
        with _progress() as progress:
            return conv.convert(opts, progress=progress)

    run_command(work, json_out=json_out, render=_render)


def _crop_from_inputs(inputs: list[str], layout: Layout) -> tuple[int, int]:
    from wasmai.convert import parse_input_spec
    from wasmai.errors import WasmaiError

    if inputs:
        shape = parse_input_spec(inputs[0]).shape
        if len(shape) == 4:
            return (shape[2], shape[3]) if layout == Layout.NCHW else (shape[1], shape[2])
    raise WasmaiError("--crop is needed (no 4-D --input to take H and W from)")


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[str, str, str], None]]:
    """Rich progress display on stderr: a line per pipeline step, added when the step starts; the
    step running when an error escapes is marked failed."""
    from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

    tasks: dict[str, TaskID] = {}
    running: list[str] = []
    with Progress(SpinnerColumn(finished_text=" "), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console(stderr=True), transient=False) as bar:

        def event(step: str, kind: str, detail: str) -> None:
            if kind == "start":
                tasks[step] = bar.add_task(f"{step} ...", total=1)
                running.append(step)
            elif kind == "done":
                bar.update(tasks[step], completed=1, description=f"[green]✓[/] {step}: {detail}")
                running.remove(step)
            else:
                bar.update(bar.add_task(f"[dim]- {step}: {detail}", total=1), completed=1)

        try:
            yield event
        except BaseException:
            for step in running:
                bar.update(tasks[step], completed=1, description=f"[red]✗[/] {step}")
            raise


def _render(result: ConvertResult) -> None:
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
    size, latency = rep["size"], rep["latency"]
    out.print(f"  size {size['before_bytes'] / 1e6:.2f} MB -> {size['after_bytes'] / 1e6:.2f} MB, "
              f"ORT latency {latency['before_ms']:.2f} -> {latency['after_ms']:.2f} ms (median, 1 thread)")
    w = rep["wasi_nn"]
    hosts = ", ".join(f"{h}: {'yes' if i['accepts'] else 'no'}" for h, i in w["hosts"].items())
    out.print(f"  wasi-nn: {hosts}; embeddable: {'yes' if w['embed']['fits'] else 'no'}; opset {w['opset']['model']} "
              f"(onnxruntime {w['opset']['onnxruntime_version']} takes <= {w['opset']['onnxruntime_max_opset']})")
    err = console(stderr=True)
    for msg in result.warnings:
        err.print(f"warning: {msg}")
