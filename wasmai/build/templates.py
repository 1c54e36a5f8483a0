"""Guest templates: one folder per task under ``templates/``, each with a ``template.toml``
(world, crate name, files to render, required manifest tables, imports/exports to check); a
template may take its files from a ``base`` template and override some."""

from __future__ import annotations

import importlib.resources
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from wasmai.errors import WasmaiError


def _package_dir() -> Path:
    """The installed ``wasmai`` package folder, found with :mod:`importlib.resources` (a wheel's
    site-packages/wasmai, or the checkout's wasmai/ in an editable install). Cargo reads the
    templates and the WIT as files, so a package that is not a folder on disk (a zip import) is
    refused with :class:`WasmaiError`."""
    root = importlib.resources.files("wasmai")
    if not isinstance(root, Path):
        raise WasmaiError(f"the wasmai package is not a folder on disk ({root}); install the wheel "
                          "(pip install wasmai) or set $WASMAI_TEMPLATES_DIR and $WASMAI_WIT_DIR")
    return root


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
    """Folder holding the templates: ``$WASMAI_TEMPLATES_DIR`` or the package's ``templates/``."""
    return Path(os.environ.get("WASMAI_TEMPLATES_DIR") or _package_dir() / "templates")


def wit_dir() -> Path:
    """Folder holding ``inference.wit`` and ``deps/wasi-nn``: ``$WASMAI_WIT_DIR`` or ``wit/``."""
    return Path(os.environ.get("WASMAI_WIT_DIR") or _package_dir() / "wit")


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


