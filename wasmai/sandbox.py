"""What a component may touch and how much it may use: the ONE place these settings are checked.

A component gets nothing ambient. :class:`SandboxOptions` grants preopened directories
(:class:`Preopen`), environment variables and the process's stdio, and sets the limits: a
memory budget per instance (MiB), ONNX Runtime's memory (MiB, per process), wall-clock time per
guest call (s), bytes per wasi-nn tensor and live wasi-nn graphs per instance.
:class:`HostOptions` holds the rest of a host's settings: ONNX files registered for wasi-nn
``load-by-name``, CPU fallback for gpu/tpu targets, ONNX Runtime's intra-op threads and the byte
budget of the graphs a host's instances share. Both
validate on construction (one :class:`WasmaiError` line naming the flag); :class:`wasmai.host.Host`
builds them from its keyword arguments, and the native host trusts what it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasmai.errors import WasmaiError
from wasmai.inputs import parse_assignments

#: Default memory budget of each instance, MiB: its linear memories and tables, the wasi-nn
#: tensors the host holds for it and the graphs it loads (the README's "4096 MiB by default").
DEFAULT_MEMORY_LIMIT_MB = 4096
#: Default cap of ONNX Runtime's CPU arena for the whole process, MiB. Not tied to one instance's
#: budget: the first host of a process sets the arena, and a host with a small budget (an inspect,
#: a test) must not shrink it for every later one.
DEFAULT_ORT_MEMORY_LIMIT_MB = 4096
#: Default largest wasi-nn tensor, bytes (1 GiB: a 16384 x 16384 fp32 matrix).
DEFAULT_MAX_TENSOR_BYTES = 1 << 30
#: Default most live wasi-nn graphs per instance (the largest template, face detection, loads 3).
DEFAULT_MAX_GRAPHS = 16
#: Default byte budget of a host's shared graphs, MiB of graph bytes: the graphs its instances
#: load stay cached (one ONNX Runtime session per distinct graph) until they exceed it. A quarter
#: of the default ONNX Runtime arena, so cached sessions leave most of it to runs.
DEFAULT_GRAPH_CACHE_MB = 1024


@dataclass(frozen=True)
class Preopen:
    """A host directory preopened in the guest at ``guest`` (read-only when ``read_only``).

    Raises :class:`WasmaiError` when ``host`` is not an existing directory or ``guest`` is empty."""

    host: Path
    guest: str
    read_only: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", Path(self.host))
        if not self.host.is_dir():
            raise WasmaiError(f"--dir: host directory not found: {self.host}")
        if not self.guest:
            raise WasmaiError(f"--dir {self.host}: the guest path is empty")

    @classmethod
    def parse(cls, value: str) -> Preopen:
        """``HOST::GUEST`` or ``HOST::GUEST:ro`` (the ``--dir`` syntax; ``:rw`` is accepted too).
        Raises WasmaiError on a malformed value or when HOST is not an existing directory."""
        host, sep, guest = value.partition("::")
        read_only = False
        for suffix, ro in ((":ro", True), (":rw", False)):
            if guest.endswith(suffix):
                guest, read_only = guest[:-len(suffix)], ro
                break
        if not sep or not host or not guest:
            raise WasmaiError(f"--dir expects HOST::GUEST or HOST::GUEST:ro, got {value!r}")
        _, colon, mode = guest.rpartition(":")
        if colon and "/" not in mode:
            raise WasmaiError(f"--dir {value!r}: unknown mode {mode!r} (use :ro or :rw)")
        return cls(Path(host), guest, read_only)


@dataclass(frozen=True)
class SandboxOptions:
    """The sandbox of every instance of a host. The defaults are the deny-by-default sandbox.

    ``dirs``: preopened directories; ``env``: guest environment variables; ``inherit_stdio``:
    guest stdout/stderr go to this process's instead of an in-memory capture;
    ``memory_limit_mb``: memory budget per instance, MiB, >= 1, charged with all its linear
    memories and tables, the wasi-nn tensors the host holds for it and the bytes of the graphs it
    loads; ``ort_memory_limit_mb``: cap of ONNX Runtime's CPU arena (weights, constant folding,
    intermediate and output tensors of every graph), MiB, >= 1, per process (the first host's
    value holds); ``timeout_s``: wall-clock limit of each guest
    call, seconds, > 0 (None = none); ``max_tensor_bytes``: largest wasi-nn tensor, bytes, >= 0
    (wasi-nn error ``too-large``); ``max_graphs``: live wasi-nn graphs per instance, >= 0
    (wasi-nn error ``security``); None for either = unbounded. Raises :class:`WasmaiError` on a
    bad value.
    """

    dirs: tuple[Preopen, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    inherit_stdio: bool = False
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    timeout_s: float | None = None
    max_tensor_bytes: int | None = DEFAULT_MAX_TENSOR_BYTES
    max_graphs: int | None = DEFAULT_MAX_GRAPHS
    ort_memory_limit_mb: int = DEFAULT_ORT_MEMORY_LIMIT_MB

    def __post_init__(self) -> None:
        object.__setattr__(self, "dirs", tuple(self.dirs))
        object.__setattr__(self, "env", dict(self.env))
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise WasmaiError(f"--env: invalid variable name {key!r}")
        if self.memory_limit_mb < 1:
            raise WasmaiError("memory_limit_mb must be >= 1")
        if self.ort_memory_limit_mb < 1:
            raise WasmaiError("max-ort-memory must be >= 1 MiB")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise WasmaiError(f"timeout must be positive, not {self.timeout_s}")
        if self.max_tensor_bytes is not None and self.max_tensor_bytes < 0:
            raise WasmaiError(f"max-tensor-bytes must be >= 0, not {self.max_tensor_bytes}")
        if self.max_graphs is not None and self.max_graphs < 0:
            raise WasmaiError(f"max-graphs must be >= 0, not {self.max_graphs}")

    @classmethod
    def from_options(cls, *, dirs: Sequence[str] = (), env: Sequence[str] = (), inherit_stdio: bool = False,
                     max_memory_mb: int | None = None, timeout_s: float | None = None,
                     max_tensor_bytes: int | None = None, max_graphs: int | None = None,
                     max_ort_memory_mb: int | None = None) -> SandboxOptions:
        """From the CLI flags (``--dir``, ``--env``, ``--inherit-stdio``, ``--max-memory``,
        ``--timeout``, ``--max-tensor-bytes``, ``--max-graphs``, ``--max-ort-memory``; None =
        the default). Raises WasmaiError on a bad value."""
        return cls(dirs=tuple(Preopen.parse(d) for d in dirs),
                   env=parse_assignments(env, "--env", allow_empty_value=True),
                   inherit_stdio=inherit_stdio,
                   memory_limit_mb=DEFAULT_MEMORY_LIMIT_MB if max_memory_mb is None else max_memory_mb,
                   timeout_s=timeout_s,
                   max_tensor_bytes=DEFAULT_MAX_TENSOR_BYTES if max_tensor_bytes is None else max_tensor_bytes,
                   max_graphs=DEFAULT_MAX_GRAPHS if max_graphs is None else max_graphs,
                   ort_memory_limit_mb=DEFAULT_ORT_MEMORY_LIMIT_MB if max_ort_memory_mb is None else max_ort_memory_mb)

    def host_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`wasmai.host.Host` that set this sandbox."""
        return {"dirs": list(self.dirs), "env": dict(self.env), "inherit_stdio": self.inherit_stdio,
                "memory_limit_mb": self.memory_limit_mb, "timeout_s": self.timeout_s,
                "max_tensor_bytes": self.max_tensor_bytes, "max_graphs": self.max_graphs,
                "ort_memory_limit_mb": self.ort_memory_limit_mb}


@dataclass(frozen=True)
class HostOptions:
    """A host's settings besides the sandbox.

    ``graphs``: ONNX files for wasi-nn ``load-by-name`` by name (each must exist; stored
    resolved); ``allow_target_fallback``: run a gpu/tpu execution target on the CPU when ONNX
    Runtime has no such provider; ``intra_op_threads``: ONNX Runtime intra-op threads, >= 0
    (0 = ONNX Runtime's default); ``graph_cache_mb``: byte budget of the graphs the host's
    instances share (MiB of graph bytes, >= 0; 0 = every ``graph.load`` makes its own session);
    ``instance_slots``: 0 (default) allocates an instance's memories when it is created, N > 0
    uses wasmtime's pooling allocator with room for N live instances (faster instantiation; the
    N+1-th live instance is refused; it reserves N x 2 x the memory budget of address space).
    Raises :class:`WasmaiError` on a bad value.
    """

    graphs: Mapping[str, Path] = field(default_factory=dict)
    allow_target_fallback: bool = False
    intra_op_threads: int = 0
    graph_cache_mb: int = DEFAULT_GRAPH_CACHE_MB
    instance_slots: int = 0

    def __post_init__(self) -> None:
        registry: dict[str, Path] = {}
        for name, path in self.graphs.items():
            if not name:
                raise WasmaiError("a registered graph needs a non-empty name")
            p = Path(path)
            if not p.is_file():
                raise WasmaiError(f"graph {name!r}: file not found: {p}")
            registry[str(name)] = p.resolve()
        object.__setattr__(self, "graphs", registry)
        if self.intra_op_threads < 0:
            raise WasmaiError("intra_op_threads must be >= 0")
        if self.graph_cache_mb < 0:
            raise WasmaiError(f"graph-cache-mb must be >= 0, not {self.graph_cache_mb}")
        if self.instance_slots < 0:
            raise WasmaiError(f"instance-slots must be >= 0, not {self.instance_slots}")
