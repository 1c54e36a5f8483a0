"""``wasmai build``: ONNX model + manifest -> a WebAssembly component that imports wasi:nn.

Pipeline:

1. Read the manifest (``--manifest``, else ``MODEL.toml`` beside the model, else derive a
   ``tensor`` manifest from the ONNX graph) and pick a template folder under ``templates/``
   (``--task`` or the manifest's task; each folder has a ``template.toml``).
2. Render the template into a crate folder keyed by the hash of every input (template files,
   WIT, rendered ``model.rs``, model bytes, target, profile, toolchain versions):
   ``~/.cache/wasmai/crates/<key>/``. The same inputs always give the same path, whatever the
   working directory, so the compiler sees the same paths and produces the same bytes.
3. ``cargo component build --locked`` with :meth:`wasmai.toolchain.Toolchain.cargo_env` and the
   shared ``CARGO_TARGET_DIR`` :func:`wasmai.toolchain.guest_target_dir` (dependencies and the
   std built from source are compiled once). ``--remap-path-prefix`` hides the cargo registry
   and the crate cache root; these flags are constant, so cargo's caches stay valid.
4. Check the result with ``wasm-tools validate`` and ``wasm-tools component wit`` (the imports
   and exports the template's ``[check]`` table lists), cache it beside the crate and write
   the output atomically.

A second build of the same inputs reuses the cached component (``cached=True``).

Modules: :mod:`wasmai.build.templates` (template folders), :mod:`wasmai.build.render`
(manifest -> crate), :mod:`wasmai.build.cargo` (cargo-component, diagnostics, output checks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wasmai import WIT_PACKAGE
from wasmai._atomic import write_bytes
from wasmai.build.cargo import (
    CARGO_TARGET,
    CargoBuildError,
    ErrorBlocks,
    ProgressFn,
    _check_output,
    _compile,
    cargo_environment,
    crates_dir,
    diagnostics,
    target_lock,
)
from wasmai.build.render import _write_crate, render_crate, render_text, render_values
from wasmai.build.templates import Template, list_templates, load_template, templates_dir, wit_dir
from wasmai.errors import ToolchainError, WasmaiError
from wasmai.manifest import EMBED_LIMIT_BYTES, Manifest, graph_io, load_onnx, manifest_for, sha256_file
from wasmai.vocab import ExecutionTarget

if TYPE_CHECKING:
    from wasmai.toolchain import Toolchain

__all__ = [
    "CARGO_TARGET", "EMBED_LIMIT_BYTES", "TARGETS", "BuildResult", "CargoBuildError", "CrateResult", "ErrorBlocks",
    "ProgressFn", "Template", "ToolchainError", "build", "cargo_environment", "crates_dir", "default_output",
    "derive_manifest", "diagnostics", "list_templates", "load_template", "render_crate", "render_text",
    "render_values", "sha256_file", "target_lock", "templates_dir", "wit_dir",
]

#: Targets ``--target`` accepts.
TARGETS = ("wasm32-wasip2", CARGO_TARGET, "wasm32-unknown-unknown")


def derive_manifest(onnx_path: Path) -> Manifest:
    """A ``tensor`` manifest read off an ONNX graph: inputs (initializers excluded) and outputs
    with their wasi-nn dtypes and shapes (``dim_value`` -> int, ``dim_param`` -> str, unknown
    -> ``"dim<i>"``), name = file stem, sha256 of the file.

    Raises :class:`WasmaiError` if the file is not ONNX or uses an element type wasi-nn lacks.
    """
    inputs, outputs, opset = graph_io(onnx_path)
    return Manifest(name=onnx_path.stem, task="tensor", onnx=onnx_path.name, sha256=sha256_file(onnx_path),
                    inputs=inputs, outputs=outputs, opset=opset, base_dir=onnx_path.resolve().parent)


@dataclass
class BuildResult:
    """A built component (or core module for ``wasm32-wasip1``).

    ``size_bytes`` and ``sha256`` are of the output file; ``build_seconds`` is wall time of the
    whole call; ``cached`` means the component of an earlier build with identical inputs was
    reused (cargo did not run). ``imports``/``exports`` are the interfaces found in the output.
    """

    output: Path
    size_bytes: int
    sha256: str
    build_seconds: float
    cached: bool
    template: str
    world: str
    target: str
    profile: str
    placement: str
    execution_target: str
    crate_dir: Path
    toolchain: dict[str, str] = field(default_factory=dict)
    imports: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)


@dataclass
class CrateResult:
    """The crate ``--emit-crate`` wrote (nothing was compiled)."""

    crate_dir: Path
    template: str
    world: str
    placement: str
    files: list[str]
    build_command: str


def default_output(model: Path, target: str) -> Path:
    """``model.onnx`` -> ``model.wasm`` beside it (``model.core.wasm`` for wasm32-wasip1)."""
    return model.with_suffix(".core.wasm" if target == CARGO_TARGET else ".wasm")


def build(
    model: str | os.PathLike[str],
    *,
    manifest: str | os.PathLike[str] | None = None,
    task: str | None = None,
    output: str | os.PathLike[str] | None = None,
    target: str = "wasm32-wasip2",
    release: bool = True,
    by_name: str | None = None,
    execution_target: ExecutionTarget | str = ExecutionTarget.CPU,
    emit_crate: str | os.PathLike[str] | None = None,
    rebuild: bool = False,
    progress: ProgressFn | None = None,
) -> BuildResult | CrateResult:
    """Build ``model`` (an ONNX file) into a wasi:nn guest component. A ``.toml`` ``model`` is a
    multi-graph manifest (``[[graphs]]``), built by :func:`wasmai.build.graphs.build_graphs`.

    ``manifest`` defaults to ``MODEL.toml`` beside the model; without one a ``tensor`` manifest
    is derived from the graph. ``task`` picks the template (default: the manifest's task).
    ``by_name`` switches from embedding the ONNX bytes (at most :data:`EMBED_LIMIT_BYTES`) to
    ``wasi:nn/graph.load-by-name(by_name)``; ``execution_target`` is the wasi-nn execution target
    (cpu, gpu, tpu) embedded graphs are loaded on. ``emit_crate`` writes the rendered crate there and returns a
    :class:`CrateResult` without compiling. ``rebuild`` ignores an earlier build of the same
    inputs: the crate is rendered afresh and recompiled (dependencies stay cached).
    ``progress`` receives cargo's stderr lines.

    Raises :class:`WasmaiError` for bad input (missing model, bad manifest, oversized embed,
    unsupported target), :class:`ToolchainError` for a missing tool and
    :class:`CargoBuildError` when the crate does not compile.
    """
    started = time.monotonic()
    say = progress or (lambda line: None)
    if target not in TARGETS:
        raise WasmaiError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    if target == "wasm32-unknown-unknown":
        raise WasmaiError(
            "target wasm32-unknown-unknown is not supported: Rust's std there has no clock "
            "(std::time::Instant::now panics, and the image guests time their stages with it) and wasmai "
            "builds and tests its guests for WASI only; use wasm32-wasip2 (a component, runs on any "
            "component host with wasi-nn) or wasm32-wasip1 (the core module)")
    if execution_target not in set(ExecutionTarget):
        raise WasmaiError(f"unknown execution target {execution_target!r} "
                          f"(choose from {', '.join(ExecutionTarget)})")
    execution_target = ExecutionTarget(execution_target)
    if Path(model).suffix == ".toml":  # a multi-graph manifest ([[graphs]], e.g. face-detection)
        from wasmai.build.graphs import build_graphs

        return build_graphs(model, task=task, output=output, target=target, release=release, by_name=by_name,
                            execution_target=execution_target, emit_crate=emit_crate, rebuild=rebuild,
                            progress=progress)
    model_path = Path(model)
    if not model_path.is_file():
        raise WasmaiError(f"model not found: {model_path}")
    model_path = model_path.resolve()
    if by_name is not None:
        if not by_name.strip() or any(ord(c) < 0x20 for c in by_name):
            raise WasmaiError(f"--by-name needs a non-empty printable name, not {by_name!r}")
        placement = f"by-name:{by_name}"
    else:
        placement = "embedded"
        size = model_path.stat().st_size
        if size > EMBED_LIMIT_BYTES:
            raise WasmaiError(
                f"{model_path.name} is {size / 2**20:.1f} MiB, above the {EMBED_LIMIT_BYTES // 2**20} MiB limit "
                "for embedding in a component (the bytes are copied into the guest's 32-bit memory to load); "
                "build with --by-name NAME and register the model with the host under NAME instead")

    man = _read_manifest(model_path, manifest)
    actual_sha = sha256_file(model_path)
    if man.sha256 and man.sha256.lower() != actual_sha:
        raise WasmaiError(f"{model_path.name} does not match its manifest: sha256 {actual_sha[:16]}... but the "
                          f"manifest says {man.sha256[:16]}... (re-run wasmai convert, or pass --manifest)")
    man.sha256 = actual_sha
    _check_graph(model_path, man, embedded=placement == "embedded")

    source = (str(manifest) if manifest is not None else
              manifest_for(model_path).name if manifest_for(model_path).is_file() else
              f"derived from {model_path.name}")
    tmpl = load_template(task or man.task)
    for need in tmpl.requires:
        if need == "preprocess" and man.preprocess is None:
            raise WasmaiError(f"task {tmpl.name} needs a [preprocess] table in the manifest ({source})")
        if need == "text" and (man.text is None or man.embedding is None):
            raise WasmaiError(f"task {tmpl.name} needs [text] and [embedding] tables in the manifest ({source}); "
                              "convert with --task text-embedding")
        if need == "graphs":  # several graphs: built from their manifest (wasmai.build.graphs)
            raise WasmaiError(f"task {tmpl.name} builds from a multi-graph manifest ([[graphs]]): give the "
                              f"manifest, e.g. wasmai build face.toml (examples/face-detection/convert.py writes one)")
        if need not in ("preprocess", "text"):
            raise WasmaiError(f"template {tmpl.name}: unknown requirement {need!r} in template.toml")
    man = dataclasses.replace(man, task=tmpl.name)

    from wasmai import toolchain as tc_mod

    tc = tc_mod.detect()
    versions = tc.versions()
    profile = "release" if release else "debug"
    values = render_values(man, placement=placement, execution_target=execution_target, toolchain=versions,
                           manifest_source=source)
    if man.task == "voice-activity":  # vad_config.rs from the [audio] table (wasmai.tasks.vad)
        from wasmai.tasks import vad as vad_task

        values.update(vad_task.render_values(man))
    extra: dict[str, bytes] = {}
    if "text" in tmpl.requires:  # the tokenizer and pooling of text-embedding (wasmai.tasks.embedding)
        from wasmai.tasks import embedding as text_task

        values.update(text_task.render_values(man))
        extra["tokenizer.json"] = text_task.tokenizer_bytes(man)
    files = {**render_crate(tmpl, values, model_path if placement == "embedded" else None), **extra}

    if emit_crate is not None:
        dest = _emit(files, Path(emit_crate), tmpl)
        return CrateResult(crate_dir=dest, template=tmpl.name, world=tmpl.world, placement=placement,
                           files=sorted(files), build_command="cargo component build --release --locked")

    out_path = Path(output) if output is not None else default_output(model_path, target)
    data, imports, exports, cached, crate_dir = _compile_cached(files, tmpl, tc, target=target, profile=profile,
                                                                rebuild=rebuild, out_path=out_path, say=say)
    return BuildResult(
        output=out_path.resolve(), size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
        build_seconds=round(time.monotonic() - started, 3), cached=cached, template=tmpl.name,
        world=f"{WIT_PACKAGE.split('@')[0]}/{tmpl.world}@{WIT_PACKAGE.split('@')[1]}", target=target,
        profile=profile, placement=placement, execution_target=execution_target.value, crate_dir=crate_dir,
        toolchain=versions, imports=imports, exports=exports)


def _read_manifest(model_path: Path, manifest: str | os.PathLike[str] | None) -> Manifest:
    path = Path(manifest) if manifest is not None else manifest_for(model_path)
    if manifest is None and not path.is_file():
        return derive_manifest(model_path)
    try:
        return Manifest.load(path)
    except (ValueError, TypeError, AttributeError) as exc:
        raise WasmaiError(f"manifest {path}: malformed value: {exc}") from None


def _check_graph(model_path: Path, man: Manifest, *, embedded: bool) -> None:
    """The ONNX file parses, its inputs are the manifest's, and it can be embedded."""
    import onnx

    graph_model = load_onnx(model_path)
    initializers = {t.name for t in graph_model.graph.initializer}
    graph_inputs = [v.name for v in graph_model.graph.input if v.name not in initializers]
    if sorted(graph_inputs) != sorted(s.name for s in man.inputs):
        raise WasmaiError(f"manifest inputs {[s.name for s in man.inputs]} do not match the ONNX graph's "
                          f"{graph_inputs}")
    if not man.outputs:
        raise WasmaiError("manifest lists no outputs")
    if embedded and any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph_model.graph.initializer):
        raise WasmaiError(f"{model_path.name} keeps its weights in external data files, which cannot be "
                          "embedded; build with --by-name NAME")


def _emit(files: dict[str, bytes], dest: Path, tmpl: Template) -> Path:
    """Write the crate to ``dest`` (which must be empty, missing, or an earlier emit of this template)."""
    if dest.exists():
        if not dest.is_dir():
            raise WasmaiError(f"--emit-crate {dest}: exists and is not a folder")
        previous = dest / "Cargo.toml"
        is_ours = previous.is_file() and f'name = "{tmpl.crate}"' in previous.read_text(encoding="utf-8")
        if any(dest.iterdir()) and not is_ours:
            raise WasmaiError(f"--emit-crate {dest}: folder is not empty and holds no {tmpl.name} crate")
    dest.mkdir(parents=True, exist_ok=True)
    _write_crate(files, dest)
    return dest.resolve()


def _compile_cached(files: dict[str, bytes], tmpl: Template, tc: Toolchain, *, target: str, profile: str,
                    rebuild: bool, out_path: Path, say: ProgressFn
                    ) -> tuple[bytes, list[str], list[str], bool, Path]:
    """Compile the rendered crate ``files`` with cargo-component, or reuse the component built
    earlier from identical inputs (content-addressed under :func:`crates_dir`; ``rebuild`` drops
    it first), check its imports and exports against ``tmpl`` and write it atomically to
    ``out_path``. Returns ``(component bytes, imports, exports, reused, crate folder)``. Raises
    WasmaiError when the toolchain is missing or the build or the check fails."""
    tc.require()
    env = cargo_environment(tc)
    crate_dir = crates_dir() / _cache_key(files, target=target, profile=profile, env=env)
    cached_file = crate_dir / "out" / f"{target}-{profile}.wasm"
    if rebuild and crate_dir.exists():
        shutil.rmtree(crate_dir)
    cached = cached_file.is_file()
    if cached:
        say(f"reusing the component built earlier from identical inputs ({crate_dir})")
        data = cached_file.read_bytes()
        imports, exports = _check_output(cached_file, tmpl, target, tc.wasm_tools or "wasm-tools")
    else:
        _write_crate(files, crate_dir)
        data, imports, exports = _compile(crate_dir, tmpl, target, profile, env, tc, say)
        write_bytes(cached_file, data)
    write_bytes(out_path, data)
    return data, imports, exports, cached, crate_dir


def _cache_key(files: dict[str, bytes], *, target: str, profile: str, env: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    relevant = {k: v for k, v in sorted(env.items()) if k.startswith(("CARGO_", "RUSTC", "RUSTFLAGS"))}
    h.update(json.dumps({"target": target, "profile": profile, "env": relevant}, sort_keys=True).encode())
    return h.hexdigest()[:32]


