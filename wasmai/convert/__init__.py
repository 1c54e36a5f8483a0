"""``wasmai convert``: a model (PyTorch, local Hugging Face folder or ONNX) -> ONNX + TOML manifest.

Pipeline, each step timed and reported to an optional progress callback and in the result:

1. **load** - export with ``torch.onnx`` or load the ONNX file; ``onnx.checker`` full check and
   ONNX shape inference either way.
2. **optimize** - optional ONNX Runtime offline graph optimization (``basic`` by default).
3. **quantize** - optional: ``dynamic`` (int8 weights, ``quantize_dynamic``), ``static`` (QDQ,
   per-channel int8, ``quantize_static`` calibrated on real preprocessed images or NPZ tensors),
   ``fp16`` (``onnxconverter_common.float16``, fp32 inputs/outputs kept by default).
4. **validate** - the result against the reference (the PyTorch model itself, or the unoptimized,
   unquantized ONNX model) on the validation samples: max abs/rel difference per output and,
   for classifiers, top-1 agreement. Beyond tolerance -> :class:`ValidationError`, nothing written.
5. **report** - size and ONNX Runtime latency before/after, wasi-nn compatibility.
6. **write** - ``OUT.onnx`` and ``OUT.toml`` atomically (:mod:`wasmai._atomic`).

Heavy dependencies (torch, transformers, onnxruntime.quantization) are imported lazily, only by
the code path that needs them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from wasmai.convert._base import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCES,
    DYNAMIC_OP_TYPES,
    HOST_TENSOR_TYPES,
    RANDOM_SAMPLES,
    STEPS,
    ConvertOptions,
    ConvertResult,
    Feed,
    InputSpec,
    ProgressFn,
    ReferenceFn,
    StepReport,
    _ort,
    _Steps,
    ort_max_opset,
    parse_dynamic,
    parse_floats3,
    parse_input_spec,
)
from wasmai.convert._quantize import _optimize, _quantize
from wasmai.convert._samples import _check_feeds, _random_samples, _read_labels, _samples_from
from wasmai.convert._sources import _export_torch, _hf_module, _import_torch, _torch_module, check_onnx
from wasmai.convert._validate import _latency_ms, _run, _validate, wasi_nn_compat
from wasmai.errors import ValidationError, WasmaiError, first_line
from wasmai.manifest import (
    EMBED_LIMIT_BYTES,
    Manifest,
    Preprocess,
    TensorSpec,
    graph_io,
    manifest_for,
    sha256_file,
)
from wasmai.vocab import CalibrationMethod, Exporter, Optimize, Quantize, Task, choice

#: The public API (the CLI, bench and the benchmarks import these from ``wasmai.convert``).
__all__ = [
    "DEFAULT_OPSET", "DEFAULT_TOLERANCES", "DYNAMIC_OP_TYPES", "EMBED_LIMIT_BYTES",
    "HOST_TENSOR_TYPES", "RANDOM_SAMPLES", "STEPS",
    "ConvertOptions", "ConvertResult", "InputSpec", "ProgressFn", "StepReport", "check_onnx", "convert",
    "graph_io", "ort_max_opset", "parse_dynamic", "parse_floats3", "parse_input_spec", "wasi_nn_compat",
]


def _check_options(opts: ConvertOptions) -> None:
    sources = [s for s in (opts.torch, opts.onnx, opts.hf) if s]
    if len(sources) != 1:
        raise WasmaiError("give exactly one source: --torch, --onnx or --hf")
    if opts.output.suffix != ".onnx":
        raise WasmaiError(f"-o {opts.output}: the output must end in .onnx")
    choice(Task, opts.task, "--task")
    choice(Quantize, opts.quantize, "--quantize")
    choice(Optimize, opts.optimize, "--optimize")
    choice(CalibrationMethod, opts.calibration_method, "--calibration-method")
    choice(Exporter, opts.exporter, "--exporter")
    if opts.quantize != "none" and opts.optimize in ("extended", "all"):
        raise WasmaiError(f"--optimize {opts.optimize} writes ONNX Runtime-specific fused ops that cannot be "
                          "quantized; use --optimize basic or none with --quantize")
    if opts.quantize == "static" and opts.calibration is None:
        raise WasmaiError("--quantize static needs --calibration DIR|NPZ")
    if opts.calibration is not None and opts.quantize != "static":
        raise WasmaiError("--calibration is only used with --quantize static")
    if opts.weights is not None and not opts.torch:
        raise WasmaiError("--weights goes with --torch")
    if opts.task == "text-embedding" and not opts.hf:
        raise WasmaiError("--task text-embedding converts a Hugging Face folder (--hf): the component embeds "
                          "its tokenizer.json")
    if opts.torch and not opts.inputs:
        raise WasmaiError("--torch needs example input shapes: --input NAME=1x3x224x224[:dtype]")
    if opts.opset < 7:
        raise WasmaiError("--opset must be at least 7")
    for tol in (opts.atol, opts.rtol):
        if tol is not None and tol < 0:
            raise WasmaiError("--atol/--rtol must be non-negative")
    if opts.min_top1_agreement is not None and not 0 <= opts.min_top1_agreement <= 1:
        raise WasmaiError("--min-top1-agreement must be between 0 and 1")
    for path, flag in ((opts.calibration, "--calibration"), (opts.validation, "--validation"),
                       (opts.labels, "--labels"), (opts.weights, "--weights"), (opts.hf, "--hf")):
        if path is not None and not Path(path).exists():
            raise WasmaiError(f"{flag}: not found: {path}")


def _default_preprocess(opts: ConvertOptions, inputs: list[TensorSpec]) -> Preprocess:
    if opts.preprocess is not None:
        return opts.preprocess
    shape = inputs[0].shape if inputs else []
    if len(shape) == 4:
        h, w = shape[2:4] if shape[1] == 3 else shape[1:3]
        if isinstance(h, int) and isinstance(w, int):
            layout = "NCHW" if shape[1] == 3 else "NHWC"
            return Preprocess(crop=(h, w), layout=layout)
    raise WasmaiError("--task image-classification needs --crop (the model input has no fixed HxW)")


def convert(opts: ConvertOptions, progress: ProgressFn | None = None) -> ConvertResult:
    """Convert a model to ONNX + manifest; see the module docstring for the steps.

    Writes ``opts.output`` (.onnx) and ``manifest_for(opts.output)`` (.toml) only when every
    step, validation included, succeeded (or validation failed with ``fail_on_mismatch=False``).
    Raises :class:`WasmaiError` for bad input (unknown callable, wrong shapes, export failure,
    corrupted ONNX, empty calibration folder, unreadable image, ...) and
    :class:`ValidationError` when the result disagrees with the reference beyond tolerance.
    """
    t_start = time.perf_counter()
    _check_options(opts)
    torch = _import_torch("hf" if opts.hf else "torch") if (opts.torch or opts.hf) else None
    threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        # PyTorch reference and export run single-threaded: on a loaded machine OpenMP's
        # spin-waiting threads made EfficientNet-Lite0 ~30x slower (3.4 s vs 0.11 s per image).
        torch.set_num_threads(1)
    try:
        # Library and user code (model builders, exporters, calibrators) print to stdout; the
        # CLI's stdout carries only the result (--json), so their chatter goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            return _convert(opts, progress, t_start)
    finally:
        if torch is not None and threads is not None:
            torch.set_num_threads(threads)


def _convert(opts: ConvertOptions, progress: ProgressFn | None, t_start: float) -> ConvertResult:
    """The body of :func:`convert` (options already checked)."""
    labels = _read_labels(opts.labels) if opts.labels else []
    for folder in (opts.calibration, opts.validation):
        if folder is not None and folder.is_dir() and opts.task == "image-classification":
            from wasmai.preprocess import list_images, load_image

            for image in list_images(folder):  # fail before the export on an empty folder or a bad image
                load_image(image)
    text_src = None
    if opts.task == "text-embedding" and opts.hf is not None:  # tokenizer + max length (wasmai.tasks.embedding)
        from wasmai.tasks import embedding as text_task

        text_src = text_task.text_settings(Path(opts.hf))
    steps = _Steps(progress)
    warn: list[str] = []
    rng = np.random.default_rng(0)
    given = {s.name: s for s in opts.inputs}

    with tempfile.TemporaryDirectory(prefix="wasmai-convert-") as tmp:
        work = Path(tmp)
        base = work / "model.onnx"
        reference: ReferenceFn | None = None
        vocab = 10
        source: dict[str, Any]
        # 1. load / export
        with steps.step("load") as st:
            if opts.onnx:
                source = {"kind": "onnx", "path": str(opts.onnx),
                          "sha256": sha256_file(opts.onnx) if opts.onnx.is_file() else None}
                check_onnx(Path(opts.onnx), base)
                st["detail"] = f"checked {opts.onnx.name}"
            else:
                raw = work / "export.onnx"
                if opts.torch:
                    torch = _import_torch()
                    model = _torch_module(opts.torch, opts.weights)
                    specs = opts.inputs
                    axis_names = {0: "batch"}
                    hf_axes: list[dict[int, str]] | None = None

                    source = {"kind": "torch", "spec": opts.torch, "torch_version": torch.__version__}
                    if opts.weights:
                        source["weights"] = str(opts.weights)
                        source["weights_sha256"] = sha256_file(opts.weights)
                else:
                    if opts.hf is None:  # not reached: _check_options requires exactly one source
                        raise WasmaiError("give exactly one source: --torch, --onnx or --hf")
                    torch = _import_torch()
                    model, names, hf_outs, vocab = _hf_module(Path(opts.hf))
                    specs = [given.get(n, InputSpec(n, [1, 8], "i64")) for n in names]
                    for s in specs:
                        if s.dtype != "i64":
                            raise WasmaiError(f"--input {s.name}: Hugging Face inputs are i64")
                    hf_axes = None
                    if not opts.dynamic:
                        # batch and sequence stay dynamic in and out (last_hidden_state: (batch, sequence, hidden))
                        opts = dataclasses.replace(opts, dynamic={n: [0, 1] for n in names})
                        hf_axes = [{0: "batch", 1: "sequence"}] + [{0: "batch"}] * (len(hf_outs) - 1)
                    if not opts.output_names:
                        opts = dataclasses.replace(opts, output_names=hf_outs)
                    axis_names = {0: "batch", 1: "sequence"}
                    source = {"kind": "huggingface", "path": str(opts.hf), "torch_version": torch.__version__}
                reference, out_names = _export_torch(model, specs, opts.dynamic, list(opts.output_names), opts.opset,
                                                     opts.exporter, raw, rng, vocab, axis_names,
                                                     "logits" if opts.task == "image-classification" else "output",
                                                     hf_axes)
                source.update(exporter=opts.exporter, opset=opts.opset)
                check_onnx(raw, base)
                st["detail"] = f"exported with torch.onnx ({opts.exporter}, opset {opts.opset})"
        inputs, outputs, opset = graph_io(base)
        if not inputs:
            raise WasmaiError("the model has no inputs")
        if reference is not None:
            dropped = [s.name for s in specs if s.name not in {i.name for i in inputs}]
            if dropped:
                raise WasmaiError(f"the model does not use input(s) {', '.join(dropped)}, so the exporter dropped "
                                  "them; leave them out of --input")

        audio: dict[str, Any] = {}
        if opts.task == Task.VOICE_ACTIVITY:  # the [audio] table (wasmai.tasks.vad); refuses other graphs
            from wasmai.tasks import vad as vad_task

            audio = vad_task.audio_table(inputs, outputs)
        pre = _default_preprocess(opts, inputs) if opts.task == "image-classification" else None
        softmax = opts.softmax if opts.softmax is not None else opts.task == "image-classification"
        if opts.task == "image-classification":
            last = outputs[0].shape[-1] if outputs[0].shape else None
            if labels and isinstance(last, int) and last != len(labels):
                raise WasmaiError(f"--labels has {len(labels)} lines but output {outputs[0].name!r} has {last} classes")
            if len(inputs) != 1:
                raise WasmaiError("--task image-classification needs a model with one input, "
                                  f"this one has {len(inputs)}")
            if pre is not None:
                shape = inputs[0].shape
                hw = shape[2:4] if pre.layout == "NCHW" else shape[1:3]
                # rank 4 checked first: hw and crop both hold (height, width)
                if len(shape) != 4 or any(isinstance(d, int) and d != c for d, c in zip(hw, pre.crop, strict=True)):
                    raise WasmaiError(f"--crop {pre.crop[0]}x{pre.crop[1]} ({pre.layout}) does not fit input "
                                      f"{inputs[0].name!r} of shape {shape}")

        # samples: calibration, validation
        calib: list[Feed] = []
        calib_names: list[str] = []
        if opts.calibration is not None:
            calib, calib_names = _samples_from(opts.calibration, opts.task, pre, inputs, "calibration")
            calib = _check_feeds(calib, inputs, "calibration")
        if opts.validation is not None:
            val, val_names = _samples_from(opts.validation, opts.task, pre, inputs, "validation")
            val = _check_feeds(val, inputs, "validation")
            val_source = str(opts.validation)
        elif calib:
            val, val_names, val_source = calib, calib_names, f"calibration samples ({opts.calibration})"
        elif audio:  # audio windows: a random sample-rate scalar would take no branch of the graph
            from wasmai.tasks import vad as vad_task

            val, val_names, val_source = vad_task.validation_feeds(inputs, audio)
            val = _check_feeds(val, inputs, "voice-activity")
        elif text_src is not None:
            val, val_names = text_task.validation_feeds(*text_src, [i.name for i in inputs])
            val = _check_feeds(val, inputs, "validation")
            val_source = f"{len(val)} sentences tokenized by {text_src[0].name} (wasmai.tasks.embedding.SENTENCES)"
        else:
            val = _check_feeds(_random_samples(inputs, given, rng, vocab), inputs, "random")
            val_names = [f"random[{i}]" for i in range(len(val))]
            val_source = f"{len(val)} random inputs (seed 0)"

        # 2. optimize
        current = base
        if opts.optimize == "none":
            steps.skip("optimize", "--optimize none")
        else:
            with steps.step("optimize") as st:
                opt = work / "optimized.onnx"
                _optimize(current, opt, opts.optimize)
                current = opt
                st["detail"] = f"onnxruntime {opts.optimize}"
                if opts.optimize in ("extended", "all"):
                    warn.append(f"--optimize {opts.optimize} may insert ONNX Runtime contrib ops and hardware-specific "
                                "layouts; the model then runs only on ONNX Runtime hosts on similar CPUs")

        # 3. quantize
        quant: dict[str, Any] = {"mode": "none"}
        if opts.quantize == "none":
            steps.skip("quantize", "--quantize none")
        else:
            with steps.step("quantize") as st:
                qpath = work / "quantized.onnx"
                keep = (text_task.feed_forward_matmuls(current) if text_src is not None and opts.quantize == "dynamic"
                        else [])
                quant = _quantize(current, qpath, opts, calib, work, warn, keep)
                if opts.calibration is not None:
                    quant["calibration_source"] = str(opts.calibration)
                current = qpath
                st["detail"] = ", ".join(f"{k}={v}" for k, v in quant.items()
                                         if k in ("mode", "format", "calibration_method", "calibration_samples"))
            try:
                import onnx

                onnx.checker.check_model(str(current), full_check=True)
            except Exception as exc:  # noqa: BLE001
                raise WasmaiError(f"the quantized model fails the ONNX checker: {first_line(exc)}") from None

        final_inputs, final_outputs, final_opset = graph_io(current)

        # 4. validate
        atol_d, rtol_d, top1_d = DEFAULT_TOLERANCES[opts.quantize]
        explicit_tol = opts.atol is not None or opts.rtol is not None
        atol = opts.atol if explicit_tol else atol_d
        rtol = opts.rtol if explicit_tol else rtol_d
        classifier = opts.task == "image-classification"
        min_top1 = opts.min_top1_agreement if opts.min_top1_agreement is not None else (top1_d if classifier else None)
        with steps.step("validate") as st:
            if reference is not None:
                ref_out = reference(val)
                ref_kind = f"PyTorch model ({source['kind']})"
            else:
                ref_out = _run(base, val)
                ref_kind = "unoptimized, unquantized ONNX model (onnxruntime)"
            cand_out = _run(current, val)
            out_names = [o.name for o in final_outputs]
            if any(len(r) != len(out_names) for r in ref_out):
                raise WasmaiError("the reference and the ONNX model have different numbers of outputs")
            validation = _validate(ref_out, cand_out, out_names, atol, rtol, min_top1, classifier, softmax,
                                   labels, val_names, val_source)
            validation["reference"] = ref_kind
            if text_src is not None:  # pooled, normalized vectors against the reference's
                names = [o.name for o in final_outputs]
                check = text_task.check_embeddings(
                    ref_out, cand_out, val, names.index("last_hidden_state") if "last_hidden_state" in names else 0,
                    text_task.MIN_COSINE[opts.quantize], val_names)
                validation["embedding"] = check
                if not check["passed"]:
                    validation["passed"] = False
                    validation["failures"].append(f"embedding cosine {check['min_cosine']:.6f} < {check['threshold']}")
            if atol is None and rtol is None and (min_top1 is None or not classifier) and text_src is None:
                validation["checks"] = "none (report only)"
                warn.append(f"no validation threshold applies to --quantize {opts.quantize} on a tensor task; "
                            "pass --atol/--rtol to enforce one")
            summary = [f"{o['name']}: max abs {o['max_abs_diff']:.3g}" for o in validation["outputs"]]
            if "embedding" in validation:
                summary.append(f"embedding min cosine {validation['embedding']['min_cosine']:.6f}")
            if "top1_agreement" in validation:
                summary.append(f"top-1 agreement {validation['top1_agreement']:.2f}")
            st["detail"] = ("ok " if validation["passed"] else "FAILED ") + "; ".join(summary)
        if not validation["passed"]:
            msg = "validation failed: " + "; ".join(validation["failures"])
            if opts.fail_on_mismatch:
                raise ValidationError(msg + " - nothing written (--no-fail-on-mismatch writes anyway)")
            warn.append(msg)

        # 5. report
        with steps.step("report") as st:
            size_before, size_after = base.stat().st_size, current.stat().st_size
            lat_before = _latency_ms(base, val[0], opts.latency_runs)
            lat_after = _latency_ms(current, val[0], opts.latency_runs) if current != base else lat_before
            wasi_nn = wasi_nn_compat(current, final_inputs, final_outputs, final_opset)
            report: dict[str, Any] = {
                "size": {"before_bytes": size_before, "after_bytes": size_after,
                         "ratio": round(size_after / size_before, 4) if size_before else None},
                "latency": {"before_ms": lat_before, "after_ms": lat_after,
                            "speedup": round(lat_before / lat_after, 3) if lat_after else None,
                            "statistic": "median", "runs": opts.latency_runs, "threads": 1,
                            "engine": "onnxruntime CPUExecutionProvider",
                            "note": "before = model as exported/loaded, after = written model; this machine"},
                "wasi_nn": wasi_nn,
            }
            for host, info in wasi_nn["hosts"].items():
                if not info["accepts"]:
                    warn.append(f"host {host} rejects tensor types {', '.join(info['rejects'])}")
            if not wasi_nn["embed"]["fits"]:
                warn.append(f"model is {size_after} bytes, over the {EMBED_LIMIT_BYTES} byte embed limit: "
                            "load it from a file at run time")
            st["detail"] = (f"{size_before / 1e6:.2f} MB -> {size_after / 1e6:.2f} MB, "
                            f"{lat_before:.2f} ms -> {lat_after:.2f} ms")

        # 6. write
        out = Path(opts.output)
        man_path = manifest_for(out)
        name = opts.name or out.stem
        validation_table = {k: v for k, v in validation.items() if k != "samples"}
        if "samples" in validation:
            validation_table["top1"] = [{"sample": s["sample"], "reference": s["reference_top5"][0]["label"],
                                         "result": s["result_top5"][0]["label"]} for s in validation["samples"]]
        from wasmai import __version__

        provenance = {**{k: v for k, v in source.items() if v is not None},
                      "wasmai_version": __version__, "onnxruntime_version": _ort().__version__,
                      "optimize": opts.optimize,
                      "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
        with steps.step("write") as st:
            from wasmai._atomic import atomic_path

            text_tables: dict[str, Any] = {}
            if text_src is not None:  # [text] + [embedding]; the tokenizer is copied beside the model
                text_tables = text_task.manifest_tables(out, text_src, final_outputs)
            with atomic_path(out) as tmp_onnx, atomic_path(man_path) as tmp_toml:
                shutil.copyfile(current, tmp_onnx)
                manifest = Manifest(
                    name=name, version=opts.version, task=opts.task, onnx=out.name, sha256=sha256_file(tmp_onnx),
                    inputs=final_inputs, outputs=final_outputs, opset=final_opset, preprocess=pre,
                    softmax=softmax, labels=labels, provenance=provenance, quantization=quant,
                    validation=validation_table, report=report, **text_tables)
                manifest.audio = audio
                tmp_toml.write_text(manifest.dumps(), encoding="utf-8")
                if text_src is not None:
                    from wasmai._atomic import write_bytes

                    write_bytes(out.parent / text_task.tokenizer_name(out), text_src[0].read_bytes())
            st["detail"] = f"{out} + {man_path.name}"

    return ConvertResult(onnx=out, manifest=man_path, name=name, task=opts.task, source=source,
                         inputs=final_inputs, outputs=final_outputs, steps=steps.done, quantization=quant,
                         validation=validation, report=report, warnings=warn,
                         seconds=round(time.perf_counter() - t_start, 3))
