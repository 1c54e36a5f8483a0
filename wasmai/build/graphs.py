"""``wasmai build MANIFEST.toml`` for a model of several graphs (a manifest with ``[[graphs]]``,
e.g. MTCNN's P-Net, R-Net and O-Net for ``face-detection``).

The same steps as :func:`wasmai.build.build` (render, cache key, cargo-component, output checks),
with every graph checked against its sha256 and embedded as ``graphs/<name>.onnx`` in the crate;
the template's ``model.rs.in`` gets a ``{{ graphs }}`` list (name, ONNX bytes, inputs, outputs)
and the ``[detection]`` defaults. ``model_sha256`` of a multi-graph component is the sha256 of
the text ``"<name> <sha256>\\n"`` per graph, in manifest order (:func:`graphs_sha256`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from wasmai import WIT_PACKAGE
from wasmai.build.cargo import ProgressFn
from wasmai.build.render import _rust_f32, _rust_spec, _rust_str, render_crate, render_values
from wasmai.build.templates import load_template
from wasmai.errors import WasmaiError
from wasmai.manifest import EMBED_LIMIT_BYTES, GraphEntry, Manifest, TensorSpec, graph_io, sha256_file
from wasmai.vocab import ExecutionTarget

if TYPE_CHECKING:
    from wasmai.build import BuildResult, CrateResult


def graphs_sha256(graphs: list[GraphEntry]) -> str:
    """Hex sha256 of ``"<name> <sha256>\\n"`` for each graph in order: a multi-graph model's digest."""
    return hashlib.sha256("".join(f"{g.name} {g.sha256}\n" for g in graphs).encode()).hexdigest()


def is_graphs_manifest(path: Path) -> bool:
    """Whether ``path`` is a TOML manifest (what ``wasmai build`` then builds from its ``[[graphs]]``)."""
    return path.suffix == ".toml"


def _check_graphs(man: Manifest) -> None:
    """Every graph file exists, matches its sha256, can be embedded and has the manifest's inputs."""
    import onnx

    from wasmai.manifest import load_onnx

    total = 0
    if not man.graphs:
        raise WasmaiError(f"manifest for {man.name!r} lists no [[graphs]]: build a single graph from its .onnx file")
    for g in man.graphs:
        path = man.base_dir / g.onnx
        if not path.is_file():
            raise WasmaiError(f"graph {g.name!r}: {path} not found")
        actual = sha256_file(path)
        if g.sha256 and g.sha256.lower() != actual:
            raise WasmaiError(f"graph {g.name!r}: {path.name} does not match its manifest: sha256 {actual[:16]}... "
                              f"but the manifest says {g.sha256[:16]}... (re-run the conversion)")
        g.sha256 = actual
        total += path.stat().st_size
        inputs, _, _ = graph_io(path)
        if sorted(s.name for s in inputs) != sorted(s.name for s in g.inputs):
            raise WasmaiError(f"graph {g.name!r}: manifest inputs {[s.name for s in g.inputs]} do not match the "
                              f"ONNX graph's {[s.name for s in inputs]}")
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in load_onnx(path).graph.initializer):
            raise WasmaiError(f"graph {g.name!r}: {path.name} keeps its weights in external data files")
    if total > EMBED_LIMIT_BYTES:
        raise WasmaiError(f"the graphs are {total / 2**20:.1f} MiB together, above the "
                          f"{EMBED_LIMIT_BYTES // 2**20} MiB embedding limit")


def _spec_rs(spec: TensorSpec) -> str:
    return _rust_spec(spec).strip().rstrip(",")


def _graph_rs(g: GraphEntry) -> str:
    """One ``Graph { .. }`` entry of ``model.rs``'s ``GRAPHS``."""
    spec = _spec_rs
    return (f"    Graph {{\n        name: {_rust_str(g.name)},\n"
            f"        onnx: include_bytes!(\"../graphs/{g.name}.onnx\"),\n"
            f"        sha256: {_rust_str(g.sha256)},\n"
            f"        inputs: &[{', '.join(spec(s) for s in g.inputs)}],\n"
            f"        outputs: &[{', '.join(spec(s) for s in g.outputs)}],\n    }},")


def build_graphs(manifest_path: str | os.PathLike[str], *, task: str | None = None,
                 output: str | os.PathLike[str] | None = None, target: str = "wasm32-wasip2",
                 release: bool = True, by_name: str | None = None,
                 execution_target: ExecutionTarget | str = ExecutionTarget.CPU,
                 emit_crate: str | os.PathLike[str] | None = None, rebuild: bool = False,
                 progress: ProgressFn | None = None) -> BuildResult | CrateResult:
    """Build a multi-graph manifest into a component (see the module docstring); arguments as
    :func:`wasmai.build.build`, which calls this for a ``.toml`` model argument. Returns a
    :class:`wasmai.build.BuildResult` (or ``CrateResult`` for ``emit_crate``).

    Raises :class:`WasmaiError` for a missing or mismatched graph, a template that does not take
    several graphs, ``by_name`` (multi-graph components embed their graphs), and as ``build`` does."""
    from wasmai.build import TARGETS, BuildResult, CrateResult, _compile_cached, _emit

    started = time.monotonic()
    say = progress or (lambda line: None)
    path = Path(manifest_path)
    if not path.is_file():
        raise WasmaiError(f"manifest not found: {path}")
    if target not in TARGETS or target == "wasm32-unknown-unknown":
        raise WasmaiError(f"target {target!r}: multi-graph components build for wasm32-wasip2 or wasm32-wasip1")
    if by_name is not None:
        raise WasmaiError("--by-name: a multi-graph component embeds its graphs (drop --by-name)")
    execution_target = ExecutionTarget(execution_target)
    try:
        man = Manifest.load(path)
    except (ValueError, TypeError, AttributeError) as exc:
        raise WasmaiError(f"manifest {path}: malformed value: {exc}") from None
    _check_graphs(man)
    tmpl = load_template(task or man.task)
    if "graphs" not in tmpl.requires:
        raise WasmaiError(f"template {tmpl.name} builds one graph: give its .onnx file, not the manifest {path.name}")
    man = dataclasses.replace(man, task=tmpl.name, sha256=graphs_sha256(man.graphs))
    det = man.detection

    from wasmai import toolchain as tc_mod

    tc = tc_mod.detect()
    versions = tc.versions()
    profile = "release" if release else "debug"
    values = render_values(man, placement="embedded", execution_target=execution_target, toolchain=versions,
                           manifest_source=path.name)
    try:
        thresholds = [float(t) for t in det.get("thresholds", [0.6, 0.7, 0.7])]
        if len(thresholds) != 3:
            raise ValueError("thresholds needs 3 values")
        values.update(
            placement="Placement::Embedded(&[])",
            graphs="\n".join(_graph_rs(g) for g in man.graphs),
            min_face_size=_rust_f32(float(det.get("min_face_size", 20.0))),
            scale_factor=_rust_f32(float(det.get("scale_factor", 0.709))),
            thresholds=f"({', '.join(_rust_f32(t) for t in thresholds)})")
    except (TypeError, ValueError) as exc:
        raise WasmaiError(f"manifest {path}: [detection]: {exc}") from None
    files = render_crate(tmpl, values, None)
    for g in man.graphs:
        files[f"graphs/{g.name}.onnx"] = (man.base_dir / g.onnx).read_bytes()

    if emit_crate is not None:
        dest = _emit(files, Path(emit_crate), tmpl)
        return CrateResult(crate_dir=dest, template=tmpl.name, world=tmpl.world, placement="embedded",
                           files=sorted(files), build_command="cargo component build --release --locked")

    out_path = Path(output) if output is not None else path.with_suffix(".wasm")
    data, imports, exports, cached, crate_dir = _compile_cached(files, tmpl, tc, target=target, profile=profile,
                                                                rebuild=rebuild, out_path=out_path, say=say)
    package, version = WIT_PACKAGE.split("@")
    return BuildResult(
        output=out_path.resolve(), size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
        build_seconds=round(time.monotonic() - started, 3), cached=cached, template=tmpl.name,
        world=f"{package}/{tmpl.world}@{version}", target=target, profile=profile, placement="embedded",
        execution_target=execution_target.value, crate_dir=crate_dir, toolchain=versions, imports=imports,
        exports=exports)
