"""The model repository: which components ``wasmai serve`` serves, under which names and limits.

A repository is a folder with one subfolder per model; the subfolder's name is the model's name
(letters, digits, ``_ . -``)::

    models/
      mlp/
        model.wasm                  # the component (or the folder's only *.wasm)
        model.wasm.sigstore.json    # optional: its signature bundle (the default name)
        mlp.onnx                    # optional: graphs for wasi-nn load-by-name, by file stem
        config.toml                 # optional: version, limits, policy (below)

``config.toml`` (every key optional; the defaults come from the ``wasmai serve`` flags)::

    version = "2"                   # the model version served (OIP /versions/{v}); default "1"
    instances = 2                   # instance pool size = inferences running at once
    queue = 8                       # requests waiting for an instance; more -> 429 + Retry-After
    timeout_s = 5.0                 # per request guest call; over -> 504, the instance replaced
    queue_timeout_s = 10.0          # longest wait for an instance -> 503 + Retry-After
    memory_limit_mb = 512           # linear memory per instance, MiB
    max_tensor_bytes = 16777216     # per input/output tensor -> 413 / wasi-nn too-large
    max_body_bytes = 67108864       # request body -> 413
    top_k = 5                       # image classifiers: default predictions per image
    policy = "policy.toml"          # a signature policy file (wasmai verify --policy's format)
                                    # that this model must ALSO pass (the server-wide one too)
    [graphs]                        # load-by-name registrations besides the folder's *.onnx
    mlp = "../shared/mlp.onnx"

Components given on the command line are served under their file stem with the server-wide
limits, their bundle beside them (``COMPONENT.sigstore.json``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from wasmai.errors import WasmaiError
from wasmai.sandbox import DEFAULT_MEMORY_LIMIT_MB

#: Characters a model name may use (it is a URL path segment and a metric label).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: The component file looked for first in a model folder.
COMPONENT_FILE = "model.wasm"
#: The per-model configuration file.
CONFIG_FILE = "config.toml"
#: Suffix of a signature bundle beside its component (wasmai.sign's default).
BUNDLE_SUFFIX = ".sigstore.json"


@dataclass(frozen=True)
class ModelLimits:
    """Quotas of one served model.

    ``instances``: pool size (>= 1), each instance runs one inference at a time;
    ``queue``: requests that may wait for an instance (>= 0; more -> 429);
    ``timeout_s``: seconds a request's guest call may take (> 0; -> 504, instance replaced);
    ``queue_timeout_s``: seconds a request may wait for an instance (> 0; -> 503);
    ``memory_limit_mb``: linear memory per instance, MiB; ``max_tensor_bytes``: bytes per tensor
    (None = no limit); ``max_body_bytes``: bytes per request body (-> 413); ``top_k``: default
    predictions per image. Raises :class:`WasmaiError` on a bad value."""

    instances: int = 1
    queue: int = 16
    timeout_s: float = 30.0
    queue_timeout_s: float = 10.0
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    max_tensor_bytes: int | None = 64 * 2**20
    max_body_bytes: int = 64 * 2**20
    top_k: int = 5

    def __post_init__(self) -> None:
        checks = [
            (self.instances >= 1, "instances must be >= 1"),
            (self.queue >= 0, "queue must be >= 0"),
            (self.timeout_s > 0, "timeout_s must be > 0"),
            (self.queue_timeout_s > 0, "queue_timeout_s must be > 0"),
            (self.memory_limit_mb >= 1, "memory_limit_mb must be >= 1"),
            (self.max_tensor_bytes is None or self.max_tensor_bytes >= 0, "max_tensor_bytes must be >= 0"),
            (self.max_body_bytes >= 1, "max_body_bytes must be >= 1"),
            (self.top_k >= 1, "top_k must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise WasmaiError(message)

    def updated(self, values: Mapping[str, Any], where: str) -> ModelLimits:
        """A copy with ``values`` (from a config file named ``where``) applied, types checked.
        Raises WasmaiError naming the key."""
        kinds = {f.name: f.type for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            kind = kinds[key]
            if "float" in str(kind):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                value = float(value) if ok else value
            else:
                ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok:
                raise WasmaiError(f"{where}: {key} must be a number")
            changes[key] = value
        try:
            return replace(self, **changes)
        except WasmaiError as exc:
            raise WasmaiError(f"{where}: {exc}") from None


LIMIT_KEYS = frozenset(f.name for f in fields(ModelLimits))


@dataclass(frozen=True)
class ModelSource:
    """One model as found on disk: ``name``, ``version``, the ``component`` file, its ``bundle``
    (None: the default beside it), ``graphs`` for load-by-name, ``limits``, an extra per-model
    ``policy_file`` and ``fingerprint`` (size and mtime of every file it depends on: a change
    means a reload). ``error`` is set instead when the folder cannot be served as it is."""

    name: str
    version: str = "1"
    component: Path | None = None
    bundle: Path | None = None
    graphs: Mapping[str, Path] = field(default_factory=dict)
    limits: ModelLimits = field(default_factory=ModelLimits)
    policy_file: Path | None = None
    fingerprint: tuple[tuple[str, int, int], ...] = ()
    error: str | None = None


def _stat(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for p in sorted(paths):
        try:
            st = p.stat()
        except OSError:
            out.append((str(p), -1, -1))
            continue
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _read_config(path: Path, defaults: ModelLimits) -> tuple[str, ModelLimits, Path | None, dict[str, Path]]:
    """``config.toml`` -> (version, limits, policy file, graphs). Raises WasmaiError."""
    from wasmai.manifest import read_toml

    doc = read_toml(path, "model config")
    known = LIMIT_KEYS | {"version", "policy", "graphs"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise WasmaiError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    version = doc.get("version", "1")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not NAME_PATTERN.match(version):
        raise WasmaiError(f"{path}: version must be a string of letters, digits, '_', '.', '-'")
    limits = defaults.updated({k: v for k, v in doc.items() if k in LIMIT_KEYS}, str(path))
    policy = doc.get("policy")
    if policy is not None and not isinstance(policy, str):
        raise WasmaiError(f"{path}: policy must be a file name")
    graphs_doc = doc.get("graphs", {})
    if not isinstance(graphs_doc, dict) or not all(isinstance(v, str) for v in graphs_doc.values()):
        raise WasmaiError(f"{path}: [graphs] maps names to ONNX file paths")
    graphs = {str(k): path.parent / v for k, v in graphs_doc.items()}
    return version, limits, (path.parent / policy if policy else None), graphs


def scan_folder(folder: Path, defaults: ModelLimits, graphs: Mapping[str, Path]) -> ModelSource:
    """One model folder -> its :class:`ModelSource` (``error`` set when it cannot be served:
    no or several components, a bad config). ``graphs`` are the server-wide registrations."""
    name = folder.name
    files = [p for p in folder.iterdir() if p.is_file()]
    fingerprint = _stat(files)
    if not NAME_PATTERN.match(name):
        return ModelSource(name, error="a model name uses letters, digits, '_', '.', '-'", fingerprint=fingerprint)
    wasm = [p for p in files if p.suffix == ".wasm"]
    component = folder / COMPONENT_FILE if (folder / COMPONENT_FILE).is_file() else (
        wasm[0] if len(wasm) == 1 else None)
    if component is None:
        why = "no .wasm component" if not wasm else f"{len(wasm)} .wasm files and no {COMPONENT_FILE}"
        return ModelSource(name, error=f"{folder}: {why}", fingerprint=fingerprint)
    registry = dict(graphs)
    registry.update({p.stem: p for p in files if p.suffix == ".onnx"})
    version, limits, policy_file = "1", defaults, None
    config = folder / CONFIG_FILE
    if config.is_file():
        try:
            version, limits, policy_file, extra = _read_config(config, defaults)
        except WasmaiError as exc:
            return ModelSource(name, error=str(exc), fingerprint=fingerprint)
        registry.update(extra)
        fingerprint = _stat(files + list(extra.values()) + ([policy_file] if policy_file else []))
    return ModelSource(name, version=version, component=component, graphs=registry, limits=limits,
                       policy_file=policy_file, fingerprint=fingerprint)


def scan(paths: Sequence[str | os.PathLike[str]], defaults: ModelLimits,
         graphs: Mapping[str, Path] | None = None) -> dict[str, ModelSource]:
    """Every model the command line names: each folder is a repository (its subfolders are
    models, hidden ones skipped), each file a component served under its stem. Sources whose
    folder cannot be served carry ``error``.

    Raises :class:`WasmaiError` when a path does not exist, a component file has a name that is
    not a model name, or two models share a name."""
    out: dict[str, ModelSource] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [scan_folder(sub, defaults, graphs or {}) for sub in sorted(path.iterdir())
                     if sub.is_dir() and not sub.name.startswith(".")]
        elif path.is_file():
            if not NAME_PATTERN.match(path.stem):
                raise WasmaiError(f"{path}: the file stem is the model name and must use letters, digits, "
                                  "'_', '.', '-'")
            bundle = Path(f"{path}{BUNDLE_SUFFIX}")
            found = [ModelSource(path.stem, component=path, graphs=dict(graphs or {}), limits=defaults,
                                 fingerprint=_stat([path, bundle]))]
        else:
            raise WasmaiError(f"not a model repository or component: {path}")
        for source in found:
            if source.name in out:
                raise WasmaiError(f"two models are named {source.name!r}")
            out[source.name] = source
    return out


def stage_oci(reference: str, resolved_component: Path, bundle: Path | None, graphs: Mapping[str, Path],
              root: Path) -> Path:
    """A model folder under ``root`` for a component resolved from an OCI registry
    (:func:`wasmai.oci.resolve_component`): ``<repository name>/model.wasm``, its verified bundle
    as ``model.wasm.sigstore.json`` and its by-name graphs as ``NAME.onnx`` (hard links to the
    digest-checked cache entries where possible, else copies). The model is named after the
    reference's last repository segment. Raises :class:`WasmaiError` when that is not a model name
    or two references give the same one."""
    import shutil

    from wasmai.oci import parse_reference

    name = parse_reference(reference).repository.rsplit("/", 1)[-1]
    if not NAME_PATTERN.match(name):
        raise WasmaiError(f"{reference}: the repository's last segment {name!r} must be a model name "
                          "(letters, digits, '_', '.', '-')")
    folder = root / name
    if folder.exists():
        raise WasmaiError(f"two references are served as model {name!r}")
    folder.mkdir(parents=True)
    files = [(resolved_component, folder / COMPONENT_FILE)]
    if bundle is not None:
        files.append((bundle, folder / f"{COMPONENT_FILE}{BUNDLE_SUFFIX}"))
    files += [(path, folder / f"{graph}.onnx") for graph, path in graphs.items()]
    for src, dst in files:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return folder
