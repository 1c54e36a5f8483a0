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
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wasmai import WIT_PACKAGE, __version__
from wasmai._atomic import write_bytes
from wasmai.errors import ToolchainError, WasmaiError
from wasmai.manifest import (
    EMBED_LIMIT_BYTES,
    Manifest,
    TensorSpec,
    graph_io,
    load_onnx,
    manifest_for,
    sha256_file,
)
from wasmai.vocab import ExecutionTarget, dtype

if TYPE_CHECKING:
    from wasmai.toolchain import Toolchain

#: Targets ``--target`` accepts.
TARGETS = ("wasm32-wasip2", "wasm32-wasip1", "wasm32-unknown-unknown")

#: The cargo target cargo-component compiles for; wasm32-wasip2 components are this core
#: module adapted with the ``wasi_snapshot_preview1`` reactor adapter.
CARGO_TARGET = "wasm32-wasip1"

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_REPO_ROOT = Path(__file__).resolve().parent.parent

#: Receives each line cargo prints; its return value is ignored.
ProgressFn = Callable[[str], object]


# --------------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Template:
    """A guest template folder (``templates/<name>/template.toml``)."""

    name: str
    path: Path
    description: str
    world: str
    crate: str
    base: str | None
    render: tuple[str, ...]
    requires: tuple[str, ...]
    check_imports: tuple[str, ...]
    check_exports: tuple[str, ...]


def templates_dir() -> Path:
    """Folder holding the templates: ``$WASMAI_TEMPLATES_DIR`` or ``templates/`` in the source tree."""
    return Path(os.environ.get("WASMAI_TEMPLATES_DIR") or _REPO_ROOT / "templates")


def wit_dir() -> Path:
    """Folder holding ``inference.wit`` and ``deps/wasi-nn``: ``$WASMAI_WIT_DIR`` or ``wit/``."""
    return Path(os.environ.get("WASMAI_WIT_DIR") or _REPO_ROOT / "wit")


def list_templates() -> dict[str, Template]:
    """Every template folder, by name. Raises :class:`WasmaiError` on a malformed ``template.toml``."""
    root = templates_dir()
    found = {}
    for toml_path in sorted(root.glob("*/template.toml")):
        tmpl = _read_template(toml_path)
        found[tmpl.name] = tmpl
    return found


def load_template(name: str) -> Template:
    """The template called ``name``. Raises :class:`WasmaiError` naming the known ones."""
    templates = list_templates()
    if name not in templates:
        raise WasmaiError(f"no template for task {name!r} (known: {', '.join(sorted(templates)) or 'none'}; "
                          f"templates live in {templates_dir()})")
    return templates[name]


def _read_template(toml_path: Path) -> Template:
    try:
        doc = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        t = doc["template"]
        check = doc.get("check", {})
        return Template(
            name=t["name"], path=toml_path.parent, description=t.get("description", ""),
            world=t["world"], crate=t["crate"], base=t.get("base") or None,
            render=tuple(t.get("render", [])), requires=tuple(t.get("requires", [])),
            check_imports=tuple(check.get("imports", [])), check_exports=tuple(check.get("exports", [])),
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise WasmaiError(f"bad template {toml_path}: {exc}") from None


def _template_files(tmpl: Template, _chain: tuple[str, ...] = ()) -> dict[str, Path]:
    """Relative path -> source file: the base template's files overridden by this one's."""
    files: dict[str, Path] = {}
    if tmpl.base:
        if tmpl.base in (*_chain, tmpl.name):
            raise WasmaiError(f"template {tmpl.name!r}: circular base {' -> '.join((*_chain, tmpl.name, tmpl.base))}")
        files.update(_template_files(load_template(tmpl.base), (*_chain, tmpl.name)))
    for path in sorted(tmpl.path.rglob("*")):
        rel = path.relative_to(tmpl.path).as_posix()
        if path.is_file() and rel != "template.toml" and not _ignored(rel):
            files[rel] = path
    return files


def _ignored(rel: str) -> bool:
    parts = rel.split("/")
    return "target" in parts or rel == "src/bindings.rs" or any(p.startswith(".") for p in parts)


# ---------------------------------------------------------------------------------- manifest


def derive_manifest(onnx_path: Path) -> Manifest:
    """A ``tensor`` manifest read off an ONNX graph: inputs (initializers excluded) and outputs
    with their wasi-nn dtypes and shapes (``dim_value`` -> int, ``dim_param`` -> str, unknown
    -> ``"dim<i>"``), name = file stem, sha256 of the file.

    Raises :class:`WasmaiError` if the file is not ONNX or uses an element type wasi-nn lacks.
    """
    inputs, outputs, opset = graph_io(onnx_path)
    return Manifest(name=onnx_path.stem, task="tensor", onnx=onnx_path.name, sha256=sha256_file(onnx_path),
                    inputs=inputs, outputs=outputs, opset=opset, base_dir=onnx_path.resolve().parent)


# --------------------------------------------------------------------------------- rendering


def _rust_str(text: str) -> str:
    """A Rust string literal for ``text`` (quotes, backslashes and control characters escaped)."""
    text = str(text)
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _rust_f32(value: float) -> str:
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise WasmaiError(f"manifest: preprocess value {value} is not finite")
    return f"{value!r}_f32"


def _rust_spec(spec: TensorSpec) -> str:
    dims = []
    for d in spec.shape:
        if isinstance(d, bool) or not isinstance(d, (int, str)):
            raise WasmaiError(f"manifest: tensor {spec.name!r} has a bad axis {d!r} (int or name)")
        if isinstance(d, int):
            if not 0 <= d <= 0xFFFFFFFF:
                raise WasmaiError(f"manifest: tensor {spec.name!r} has an axis of size {d}")
            dims.append(f"Dim::Fixed({d})")
        else:
            dims.append(f"Dim::Dynamic({_rust_str(d)})")
    # wit-bindgen names the cases of wasi-nn's tensor-type fp32 -> Fp32, u8 -> U8, ...
    return (f"    Spec {{ name: {_rust_str(spec.name)}, dtype: TensorType::{dtype(spec.dtype).name.capitalize()}, "
            f"shape: &[{', '.join(dims)}] }},")


def render_values(manifest: Manifest, *, placement: str, execution_target: ExecutionTarget,
                  toolchain: dict[str, str], manifest_source: str) -> dict[str, str]:
    """Placeholder name -> Rust source text for ``model.rs.in``.

    ``placement`` is ``"embedded"`` or ``"by-name:NAME"``; ``execution_target`` the wasi-nn
    execution target embedded graphs are loaded on.
    """
    pre = manifest.preprocess
    if pre is None:
        preprocess = "None"
    else:
        preprocess = (
            "Some(Preprocess {\n"
            f"    resize_shorter: {'None' if pre.resize_shorter is None else f'Some({int(pre.resize_shorter)})'},\n"
            f"    crop_height: {pre.crop[0]},\n"
            f"    crop_width: {pre.crop[1]},\n"
            f"    color: Color::{pre.color.capitalize()},\n"
            f"    layout: Layout::{pre.layout.capitalize()},\n"
            f"    mean: [{', '.join(_rust_f32(v) for v in pre.mean)}],\n"
            f"    std: [{', '.join(_rust_f32(v) for v in pre.std)}],\n"
            "})"
        )
    if placement == "embedded":
        placement_rs = 'Placement::Embedded(include_bytes!("../model.onnx"))'
    else:
        placement_rs = f"Placement::ByName({_rust_str(placement.split(':', 1)[1])})"
    return {
        "manifest_source": manifest_source,
        "name": _rust_str(manifest.name),
        "version": _rust_str(manifest.version),
        "task": _rust_str(manifest.task),
        "sha256": _rust_str(manifest.sha256),
        "placement": placement_rs,
        "execution_target": f"ExecutionTarget::{ExecutionTarget(execution_target).value.capitalize()}",
        "wasmai_version": _rust_str(__version__),
        "toolchain": "\n".join(f"    ({_rust_str(k)}, {_rust_str(v)})," for k, v in sorted(toolchain.items())),
        "inputs": "\n".join(_rust_spec(s) for s in manifest.inputs),
        "outputs": "\n".join(_rust_spec(s) for s in manifest.outputs),
        "labels": "\n".join(f"    {_rust_str(label)}," for label in manifest.labels),
        "softmax": "true" if manifest.softmax else "false",
        "preprocess": preprocess,
    }


def render_text(text: str, values: dict[str, str], source: str) -> str:
    """Replace every ``{{ name }}`` in ``text``. Raises :class:`WasmaiError` on an unknown name."""
    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise WasmaiError(f"template {source}: unknown placeholder {{{{ {key} }}}}")
        return values[key]

    return _PLACEHOLDER.sub(sub, text)


def render_crate(tmpl: Template, values: dict[str, str], onnx_path: Path | None) -> dict[str, bytes]:
    """Relative path -> bytes of every file of the crate: template files (rendered where
    listed), the WIT folder under ``wit/`` and, when embedding, ``model.onnx``."""
    files: dict[str, bytes] = {}
    for rel, src in _template_files(tmpl).items():
        data = src.read_bytes()
        if rel in tmpl.render:
            rel = rel.removesuffix(".in")
            data = render_text(data.decode("utf-8"), values, f"{tmpl.name}/{rel}").encode("utf-8")
        files[rel] = data
    wit_root = wit_dir()
    for path in sorted(wit_root.rglob("*.wit")):
        files["wit/" + path.relative_to(wit_root).as_posix()] = path.read_bytes()
    if onnx_path is not None:
        files["model.onnx"] = onnx_path.read_bytes()
    return files


def _write_crate(files: dict[str, bytes], dest: Path) -> None:
    """Write the crate files under ``dest``, leaving unchanged files (and their mtimes) alone."""
    for rel, data in files.items():
        path = dest / rel
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)


# ------------------------------------------------------------------------------------- build


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


class CargoBuildError(ToolchainError):
    """``cargo component build`` failed; ``diagnostics`` holds the compiler's error blocks."""

    def __init__(self, message: str, diagnostics: str, log_path: Path | None) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics
        self.log_path = log_path


def crates_dir() -> Path:
    """Root of the rendered crates: ``<wasmai cache>/crates`` (``~/.cache/wasmai/crates``)."""
    from wasmai.toolchain import cache_dir

    return cache_dir() / "crates"


def default_output(model: Path, target: str) -> Path:
    """``model.onnx`` -> ``model.wasm`` beside it (``model.core.wasm`` for wasm32-wasip1)."""
    return model.with_suffix(".core.wasm" if target == "wasm32-wasip1" else ".wasm")


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
    """Build ``model`` (an ONNX file) into a wasi:nn guest component.

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
        if need not in ("preprocess",):
            raise WasmaiError(f"template {tmpl.name}: unknown requirement {need!r} in template.toml")
    man = dataclasses.replace(man, task=tmpl.name)

    from wasmai import toolchain as tc_mod

    tc = tc_mod.detect()
    versions = tc.versions()
    profile = "release" if release else "debug"
    values = render_values(man, placement=placement, execution_target=execution_target, toolchain=versions,
                           manifest_source=source)
    files = render_crate(tmpl, values, model_path if placement == "embedded" else None)

    if emit_crate is not None:
        dest = _emit(files, Path(emit_crate), tmpl)
        return CrateResult(crate_dir=dest, template=tmpl.name, world=tmpl.world, placement=placement,
                           files=sorted(files), build_command="cargo component build --release --locked")

    tc.require()
    env = cargo_environment(tc)
    key = _cache_key(files, target=target, profile=profile, env=env)
    crate_dir = crates_dir() / key
    out_path = Path(output) if output is not None else default_output(model_path, target)
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


def _cache_key(files: dict[str, bytes], *, target: str, profile: str, env: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    relevant = {k: v for k, v in sorted(env.items()) if k.startswith(("CARGO_", "RUSTC", "RUSTFLAGS"))}
    h.update(json.dumps({"target": target, "profile": profile, "env": relevant}, sort_keys=True).encode())
    return h.hexdigest()[:32]


def _remap_flags() -> list[str]:
    """``--remap-path-prefix`` flags hiding the cargo registry and the crate cache root. Both
    paths are the same for every build on a machine, so RUSTFLAGS (and cargo's caches) stay put."""
    cargo_home = Path(os.environ.get("CARGO_HOME") or Path.home() / ".cargo")
    flags = []
    for src, dst in ((cargo_home / "registry" / "src", "/cargo/registry/src"),
                     (crates_dir(), "/wasmai/crates")):
        if not any(c.isspace() for c in str(src)):
            flags.append(f"--remap-path-prefix={src}={dst}")
    return flags


def cargo_environment(tc: Toolchain) -> dict[str, str]:
    """The full environment for ``cargo component build``: ``os.environ`` without any
    RUSTFLAGS overrides, plus ``tc.cargo_env()``, the path remapping, the shared
    ``CARGO_TARGET_DIR`` and plain (non-interactive) cargo output."""
    from wasmai import toolchain as tc_mod

    env = {k: v for k, v in os.environ.items()
           if k not in ("RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CARGO_BUILD_TARGET",
                        "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR")}
    env.update(tc.cargo_env())
    flags_var = f"CARGO_TARGET_{CARGO_TARGET.upper().replace('-', '_')}_RUSTFLAGS"
    env[flags_var] = " ".join([*env.get(flags_var, "").split(), *_remap_flags()])
    env["CARGO_TARGET_DIR"] = str(tc_mod.guest_target_dir())
    env["CARGO_TERM_COLOR"] = "never"
    env["CARGO_TERM_PROGRESS_WHEN"] = "never"
    return env


@contextlib.contextmanager
def target_lock(say: ProgressFn | None = None) -> Iterator[None]:
    """Hold the exclusive lock on the shared guest target dir (``.wasmai-build.lock`` in it).

    Every guest crate writes its artifact to the same ``CARGO_TARGET_DIR``; holding this lock
    from ``cargo component build`` until the artifact is copied out keeps another build from
    replacing it in between. Anything else that runs cargo in that target dir takes it too.
    """
    from wasmai import toolchain as tc_mod

    target_dir = tc_mod.guest_target_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    with open(target_dir / ".wasmai-build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if say is not None:
                say("waiting for another wasmai build to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _compile(crate_dir: Path, tmpl: Template, target: str, profile: str, env: dict[str, str], tc: Toolchain,
             say: ProgressFn) -> tuple[bytes, list[str], list[str]]:
    """Run cargo component build under the target-dir lock; return the output bytes and its
    checked imports/exports."""
    from wasmai import toolchain as tc_mod

    target_dir = tc_mod.guest_target_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    cmd = [tc.cargo or "cargo", "component", "build", "--locked", "--manifest-path",
           str(crate_dir / "Cargo.toml")]
    if profile == "release":
        cmd.append("--release")
    log_path = crate_dir / "build.log"
    with target_lock(say):
        # Every crate dir builds a package of the same name into the same target dir, so the
        # artifact file is shared: a crate cargo considers fresh may find another crate's build
        # there. Touching lib.rs makes cargo recompile this crate (dependencies stay cached).
        os.utime(crate_dir / "src" / "lib.rs")
        lines = _run_streaming(cmd, env, crate_dir, say, log_path)
        artifact_dir = target_dir / CARGO_TARGET / profile
        stem = tmpl.crate.replace("-", "_")
        artifact = artifact_dir / (f"deps/{stem}.wasm" if target == "wasm32-wasip1" else f"{stem}.wasm")
        if lines is not None:
            raise _cargo_failure(lines, log_path)
        if not artifact.is_file():
            raise ToolchainError(f"cargo component build succeeded but {artifact} is missing")
        data = artifact.read_bytes()
    kind = data[4:8]
    if target == "wasm32-wasip1" and kind != b"\x01\x00\x00\x00":
        raise ToolchainError(f"{artifact} is not a core wasm module")
    if target == "wasm32-wasip2" and kind == b"\x01\x00\x00\x00":
        raise ToolchainError(f"{artifact} is a core module, not a component (did cargo-component run?)")
    check_path = crate_dir / "out" / f".check-{target}-{profile}.wasm"
    check_path.parent.mkdir(parents=True, exist_ok=True)
    check_path.write_bytes(data)
    try:
        imports, exports = _check_output(check_path, tmpl, target, tc.wasm_tools or "wasm-tools")
    finally:
        check_path.unlink(missing_ok=True)
    return data, imports, exports


def _run_streaming(cmd: list[str], env: dict[str, str], cwd: Path, say: ProgressFn,
                   log_path: Path) -> list[str] | None:
    """Run ``cmd``, passing each stderr line to ``say`` and to ``log_path``. Returns None on
    success, else every stderr line."""
    lines: list[str] = []
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1)
    except OSError as exc:
        raise ToolchainError(f"cannot run {cmd[0]}: {exc}") from None
    with open(log_path, "w", encoding="utf-8") as log:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                line = line.rstrip("\n")
                lines.append(line)
                log.write(line + "\n")
                say(line)
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
    return None if proc.wait() == 0 else lines


class ErrorBlocks:
    """Picks the error blocks out of cargo/rustc output, line by line: each ``error...`` line and
    the lines after it up to the next blank line. Calling it with a line returns whether the line
    belongs to an error block; ``emit`` (if given) receives those lines, and ``""`` after each block.
    """

    def __init__(self, emit: Callable[[str], object] | None = None) -> None:
        self.emit = emit
        self.inside = False

    def __call__(self, line: str) -> bool:
        if line.startswith("error"):
            self.inside = True
        elif not line.strip():
            if self.inside and self.emit is not None:
                self.emit("")
            self.inside = False
        if self.inside and self.emit is not None:
            self.emit(line)
        return self.inside


def diagnostics(lines: list[str]) -> list[str]:
    """The error blocks of cargo/rustc output (see :class:`ErrorBlocks`), blocks separated by ``""``."""
    out: list[str] = []
    blocks = ErrorBlocks(out.append)
    for line in lines:
        blocks(line)
    return out


def _cargo_failure(lines: list[str], log_path: Path) -> CargoBuildError:
    blocks = diagnostics(lines)
    first = next((b for b in blocks if b.startswith("error") and "could not compile" not in b), None)
    first = first or next((b for b in blocks if b.startswith("error")), None)
    first = first or (lines[-1] if lines else "no output")
    where = next((b.strip() for b in blocks if b.strip().startswith("-->")), "")
    detail = first.removeprefix("error: ").strip() + (f" ({where.removeprefix('--> ')})" if where else "")
    return CargoBuildError(f"cargo component build failed: {detail} (full log: {log_path})",
                           "\n".join(blocks), log_path)


_WIT_ITEM = re.compile(r"^\s*(import|export)\s+([^;{]+?)\s*;", re.M)
_CORE_IMPORT = re.compile(r'\(import "([^"]+)" "')
_CORE_EXPORT = re.compile(r'\(export "([^"#]+)#')


def _check_output(path: Path, tmpl: Template, target: str, wasm_tools: str) -> tuple[list[str], list[str]]:
    """``wasm-tools validate`` the output and check the template's imports and exports are there.
    Returns (imports, exports): WIT interface names (component) or import module / export
    interface names (core module)."""
    _tool([wasm_tools, "validate", str(path)], f"wasm-tools validate rejected the build output {path}")
    if target == "wasm32-wasip1":
        text = _tool([wasm_tools, "print", "--skeleton", str(path)], f"wasm-tools print failed on {path}")
        imports = sorted(set(_CORE_IMPORT.findall(text)))
        exports = sorted(set(_CORE_EXPORT.findall(text)))
    else:
        text = _tool([wasm_tools, "component", "wit", str(path)], f"wasm-tools component wit failed on {path}")
        imports = sorted({name for kind, name in _WIT_ITEM.findall(text) if kind == "import"})
        exports = sorted({name for kind, name in _WIT_ITEM.findall(text) if kind == "export"})
    missing = [f"import {i}" for i in tmpl.check_imports if i not in imports]
    missing += [f"export {e}" for e in tmpl.check_exports if e not in exports]
    if missing:
        raise ToolchainError(f"the built {target} output lacks {', '.join(missing)}")
    return imports, exports


def _tool(cmd: list[str], failure: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolchainError(f"{failure}: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[0]
        raise ToolchainError(f"{failure}: {detail}")
    return proc.stdout
