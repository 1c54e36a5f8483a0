"""Rendering a template into a crate: ``{{ placeholder }}`` substitution of ``model.rs.in`` from
the manifest (Rust literals for names, dtypes, shapes, preprocessing), plus ``wit/`` and, for
embedded models, ``model.onnx``."""

from __future__ import annotations

import re
from pathlib import Path

from wasmai import __version__
from wasmai._atomic import write_bytes
from wasmai.build.templates import Template, _template_files, wit_dir
from wasmai.errors import WasmaiError
from wasmai.manifest import Manifest, TensorSpec
from wasmai.vocab import ExecutionTarget, dtype

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def _rust_str(text: str) -> str:
    """A Rust string literal for ``text``: quotes and backslashes escaped, and every character
    ``str.isprintable`` rejects (controls, bidi overrides and other format characters, which
    rustc refuses raw in a literal: lint ``text_direction_codepoint_in_literal``) as ``\\u{..}``."""
    text = str(text)
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif not ch.isprintable():
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


