"""A bounded fuzz run of the host against hostile input (issue 12): random and mutated ONNX bytes,
tensor names, dtypes, shapes and data lengths, and mutated graphs hiding external-data tensors,
through real components built by the real toolchain, must never crash, hang or leak a file.

How it runs. Hypothesis (``derandomize=True``, no example database: the same examples on every
run) generates the inputs in this process; each one is executed by a *fuzz worker*, a fresh
Python process (``python tests/test_fuzz.py serve ...``, not a fork of pytest, so none of the
host threads an earlier test started (epoch ticker, ONNX Runtime pool, run watchdog) is missing
in it) holding one :class:`wasmai.host.Host` with a 2 s call timeout. Requests and replies cross a
pipe. An example that takes longer than :data:`HANG_S` kills the worker and fails (a hang). A
worker that dies is a crash: the input is saved (pickle + hex) under the test's tmp folder, the
exit is described by :func:`wasmai.worker.crash_message`, and the input is replayed alone under
``gdb`` to see where the signal was raised: inside ``libonnxruntime`` (a known limitation,
SECURITY.md: recorded, reported, not a failure) or anywhere else (the host's own code: a failure).

Targets (probe = tests/guests/sandbox, which hands bytes to wasi-nn unchecked):

1. graph bytes through the probe's ``load-graph-bytes`` (``graph.load`` + ``compute``): random
   bytes, and real ONNX models (tests/onnx_factory.py and self-contained graphs) mutated by bit
   flips, truncations, splices, deletions, duplicated ranges, corrupted varints, the model
   repeated (protobuf merges the copies) and messages nested around the external-data walk's
   depth limit. Property: an ``ok`` or a wasi-nn error string, never ``host-panic``, no crash of
   the host's code, within the deadline.
2. tensors: random inputs (names, the seven dtypes and unknown ones, ranks 0..6, dims 0..2**32-1,
   data lengths that match or not) to ``identity_all_types`` with a dynamic batch, both through
   the built tensor template's ``model.infer`` (``Instance.infer`` with ``Tensor`` built directly)
   and through the probe's ``compute-tensors``, which gives the host's wasi-nn tensor constructor
   and ``compute`` exactly what was drawn (a hostile component skips the template's checks). The
   host's verdict is compared with the input rule it documents (host/src/nn/mod.rs); outputs of
   the Identity graph must equal the inputs; a trap leaves the instance ``dead`` and a fresh one
   works; no other call finds it dead.
3. the external-data walk (host/src/nn/onnx_check.rs): valid graphs whose external tensor sits
   in one of many places (initializer, sparse values/indices, ``Constant`` value/sparse_value,
   attribute ``tensors``, ``If``/``Loop``/``Scan`` bodies, nested ``If`` graphs, function nodes,
   function attribute defaults, training info), with several location forms, then mutated. The
   secret is planted both in the worker's current directory and in the host's own empty
   external-data folder (after the host checked it is empty), so that the walk alone stands
   between ONNX Runtime and the file. Property: the secret's bytes never come back, inotify sees
   no open of either secret file, no ONNX Runtime error mentions external data (that would mean
   ONNX Runtime saw a tensor the walk missed), and an unmutated graph is refused by the walk.

What this cannot show: that no input crashes or hangs the host (a few thousand derandomized
examples explore a tiny part of the input space, mostly failing early in protobuf parsing or
the input checks); memory-safety bugs that do not fault at once; crashes in ONNX Runtime that
need inputs (the probe computes graphs with none); and anything about graph loads that are slow
or allocate much (not cancellable: SECURITY.md), which the generators avoid on purpose.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import pickle
import platform
import random
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import onnx_factory as factory  # noqa: E402
import test_sandbox  # noqa: E402

# The probe guest (tests/guests/sandbox built by cargo component): test_sandbox's session fixture.
probe = test_sandbox.probe

SECRET = b"fuzz secret, host only: ssh-ed25519 AAAAC3NzaFUZZ"
#: Seconds one example may take (the host's call timeout is 2 s; a graph load is not cancellable).
HANG_S = 20.0
CALL_TIMEOUT_S = 2.0
#: Examples per target, chosen so the four fuzz tests take about 60 s on 2 cores.
GRAPH_EXAMPLES = 4000
TENSOR_EXAMPLES = 600
INFER_EXAMPLES = 600
EXTERNAL_EXAMPLES = 2000
OPSET = 17
IR_VERSION = 9
#: wasi-nn tensor types and their item sizes.
ITEMSIZE = {"fp16": 2, "fp32": 4, "fp64": 8, "bf16": 2, "u8": 1, "i32": 4, "i64": 8}
WASI_NN_CODES = ("invalid-argument", "invalid-encoding", "timeout", "runtime-error", "unsupported-operation",
                 "too-large", "not-found", "security", "unknown")


# --- the graph the tensor targets run: Identity for each of the seven types, batch dynamic --------

def identity_graph() -> onnx.ModelProto:
    return factory.identity_all_types(shape=("batch", 3))


# --- protobuf wire encoding (for messages onnx.helper will not build) ----------------------------

def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if not v:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def ld(field_number: int, body: bytes) -> bytes:
    """A length-delimited field."""
    return varint(field_number << 3 | 2) + varint(len(body)) + body


def vi(field_number: int, value: int) -> bytes:
    """A varint field."""
    return varint(field_number << 3) + varint(value)


# --- external-data tensors in many places (target 3) ---------------------------------------------

#: Location forms: plain (resolves in the host's external-data folder, where the secret is
#: planted), ./, a path through a subfolder and back, absolute (the worker's cwd), ORT's
#: in-memory address form.
def locations(cwd: Path) -> list[str]:
    return ["secret.txt", "./secret.txt", "sub/../secret.txt", str(cwd / "secret.txt"), "*/_ORT_MEM_ADDR_/*",
            "secret.txt\x00.png"]


def external(name: str, location: str, how: str = "both") -> TensorProto:
    """A u8 tensor of len(SECRET) bytes stored in ``location``: ``how`` = both (external_data
    entries + data_location EXTERNAL), entries (no data_location) or flag (data_location only)."""
    t = TensorProto()
    t.name, t.data_type = name, TensorProto.UINT8
    t.dims.append(len(SECRET))
    if how in ("both", "flag"):
        t.data_location = TensorProto.EXTERNAL
    if how in ("both", "entries"):
        for key, value in (("location", location), ("offset", "0"), ("length", str(len(SECRET)))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
    return t


def _u8_out(name: str = "y") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.UINT8, [len(SECRET)])


def _model(graph: onnx.GraphProto, **kwargs: Any) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                   helper.make_opsetid("fuzz", 1)],
                             ir_version=IR_VERSION, **kwargs)


def _constant(out: str, tensor: TensorProto, node_name: str = "leak") -> onnx.NodeProto:
    return helper.make_node("Constant", [], [out], name=node_name, value=tensor)


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))


def place_initializer(t: TensorProto) -> onnx.ModelProto:
    return _model(helper.make_graph([helper.make_node("Identity", [t.name], ["y"])], "main", [], [_u8_out()], [t]))


def place_sparse_values(t: TensorProto) -> onnx.ModelProto:
    indices = numpy_helper.from_array(np.arange(len(SECRET), dtype=np.int64), "idx")
    sparse = helper.make_sparse_tensor(t, indices, [len(SECRET)])
    return _model(helper.make_graph([helper.make_node("Identity", [t.name], ["y"])], "main", [], [_u8_out()],
                                    sparse_initializer=[sparse]))


def place_sparse_indices(t: TensorProto) -> onnx.ModelProto:
    t.data_type = TensorProto.INT64
    values = numpy_helper.from_array(np.zeros(len(SECRET), np.uint8), "vals")
    sparse = helper.make_sparse_tensor(values, t, [len(SECRET)])
    return _model(helper.make_graph([helper.make_node("Identity", ["vals"], ["y"])], "main", [], [_u8_out()],
                                    sparse_initializer=[sparse]))


def place_constant(t: TensorProto) -> onnx.ModelProto:
    return _model(helper.make_graph([_constant("c", t), helper.make_node("Identity", ["c"], ["y"])], "main", [],
                                    [_u8_out()]))


def place_constant_sparse(t: TensorProto) -> onnx.ModelProto:
    indices = numpy_helper.from_array(np.arange(len(SECRET), dtype=np.int64), "idx")
    node = helper.make_node("Constant", [], ["c"], name="leak",
                            sparse_value=helper.make_sparse_tensor(t, indices, [len(SECRET)]))
    return _model(helper.make_graph([node, helper.make_node("Identity", ["c"], ["y"])], "main", [], [_u8_out()]))


def place_attribute_tensors(t: TensorProto) -> onnx.ModelProto:
    """A custom-domain node whose ``tensors`` attribute lists the tensor (ONNX Runtime refuses the
    unknown op, after parsing it)."""
    node = helper.make_node("Leak", [], ["y"], domain="fuzz", tensors=[t])
    return _model(helper.make_graph([node], "main", [], [_u8_out()]))


def _branch(name: str, t: TensorProto) -> onnx.GraphProto:
    return helper.make_graph([_constant(f"{name}_out", t, f"{name}_c")], name, [], [_u8_out(f"{name}_out")])


def _if(inner: onnx.GraphProto, out: str, name: str) -> onnx.NodeProto:
    zeros = numpy_helper.from_array(np.zeros(len(SECRET), np.uint8), f"{name}_z")
    other = helper.make_graph([_constant(f"{name}_e", zeros, f"{name}_ec")], f"{name}_else", [],
                              [_u8_out(f"{name}_e")])
    return helper.make_node("If", [f"{name}_cond"], [out], name=name, then_branch=inner, else_branch=other)


def place_if_branch(t: TensorProto) -> onnx.ModelProto:
    return _model(helper.make_graph([_const("choose_cond", np.array(True)), _if(_branch("then", t), "y", "choose")],
                                    "main", [], [_u8_out()]))


def place_nested_if(t: TensorProto, depth: int = 6) -> onnx.ModelProto:
    inner = _branch("leaf", t)
    for level in range(depth):
        name = f"if{level}"
        inner = helper.make_graph([_const(f"{name}_cond", np.array(True)), _if(inner, f"{name}_out", name)],
                                  f"g{level}", [], [_u8_out(f"{name}_out")])
    return _model(helper.make_graph([_const("top_cond", np.array(True)), _if(inner, "y", "top")], "main", [],
                                    [_u8_out()]))


def place_loop_body(t: TensorProto) -> onnx.ModelProto:
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), _constant("v_out", t, "body_c")], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _u8_out("v_in")],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _u8_out("v_out")])
    nodes = [_const("M", np.array(1, np.int64)), _const("cond", np.array(True)),
             _const("v0", np.zeros(len(SECRET), np.uint8)), helper.make_node("Loop", ["M", "cond", "v0"], ["y"],
                                                                             name="loop", body=body)]
    return _model(helper.make_graph(nodes, "main", [], [_u8_out()]))


def place_scan_body(t: TensorProto) -> onnx.ModelProto:
    body = helper.make_graph([_constant("s_out", t, "scan_c"), helper.make_node("Identity", ["x_in"], ["x_out"])],
                             "scan_body", [helper.make_tensor_value_info("x_in", TensorProto.UINT8, [])],
                             [helper.make_tensor_value_info("x_out", TensorProto.UINT8, []), _u8_out("s_out")])
    nodes = [_const("xs", np.zeros(2, np.uint8)),
             helper.make_node("Scan", ["xs"], ["ys", "y"], name="scan", body=body, num_scan_inputs=1)]
    return _model(helper.make_graph(nodes, "main", [], [helper.make_tensor_value_info("ys", TensorProto.UINT8, [2]),
                                                        _u8_out()]))


def place_function_node(t: TensorProto) -> onnx.ModelProto:
    fn = helper.make_function("fuzz", "Leak", [], ["out"], [_constant("out", t, "fn_c")],
                              [helper.make_opsetid("", OPSET)])
    node = helper.make_node("Leak", [], ["y"], domain="fuzz", name="call")
    return _model(helper.make_graph([node], "main", [], [_u8_out()]), functions=[fn])


def place_function_attribute_default(t: TensorProto) -> onnx.ModelProto:
    """A function whose attribute ``w`` defaults to the tensor; its Constant refers to ``w``."""
    constant = helper.make_node("Constant", [], ["out"])
    ref = constant.attribute.add()
    ref.name, ref.ref_attr_name, ref.type = "value", "w", onnx.AttributeProto.TENSOR
    fn = helper.make_function("fuzz", "Leak", [], ["out"], [constant], [helper.make_opsetid("", OPSET)])
    fn.attribute_proto.append(helper.make_attribute("w", t))
    node = helper.make_node("Leak", [], ["y"], domain="fuzz", name="call")
    return _model(helper.make_graph([node], "main", [], [_u8_out()]), functions=[fn])


def place_training_info(t: TensorProto) -> onnx.ModelProto:
    model = place_constant(numpy_helper.from_array(np.zeros(len(SECRET), np.uint8), "inline"))
    info = model.training_info.add()
    info.initialization.CopyFrom(helper.make_graph([_constant("init", t, "train_c")], "init", [], [_u8_out("init")]))
    return model


PLACES: dict[str, Callable[[TensorProto], onnx.ModelProto]] = {
    f.__name__.removeprefix("place_"): f for f in (
        place_initializer, place_sparse_values, place_sparse_indices, place_constant, place_constant_sparse,
        place_attribute_tensors, place_if_branch, place_nested_if, place_loop_body, place_scan_body,
        place_function_node, place_function_attribute_default, place_training_info)
}


# --- seeds for the graph-bytes target -------------------------------------------------------------

def _self_contained() -> list[bytes]:
    """Graphs with no inputs (the probe computes with none), so that a seed runs end to end."""
    data = np.frombuffer(b"self-contained bytes", np.uint8)
    inline = numpy_helper.from_array(data, "w")
    out = helper.make_tensor_value_info("y", TensorProto.UINT8, [data.size])
    i32 = helper.make_tensor_value_info("q", TensorProto.INT32, [2])
    f32 = helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, 2])
    graphs = [
        helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "inline", [], [out], [inline]),
        helper.make_graph([_constant("c", inline), helper.make_node("Identity", ["c"], ["y"])], "const", [], [out]),
        # integer Div of constants: 7 / 2 (INT32_MIN / -1 raises SIGFPE in ONNX Runtime)
        helper.make_graph([_const("a", np.array([7, -9], np.int32)), _const("b", np.array([2, 3], np.int32)),
                           helper.make_node("Div", ["a", "b"], ["q"])], "div", [], [i32]),
        helper.make_graph([_const("m", np.eye(2, dtype=np.float32)), _const("n", np.ones((2, 2), np.float32)),
                           helper.make_node("MatMul", ["m", "n"], ["p"]),
                           helper.make_node("Reshape", ["p", "shape"], ["r"]),
                           _const("shape", np.array([2, 2], np.int64))], "matmul", [], [f32]),
    ]
    seeds = [_model(g).SerializeToString() for g in graphs]
    seeds.append(place_if_branch(numpy_helper.from_array(np.zeros(len(SECRET), np.uint8), "inline"))
                 .SerializeToString())
    seeds.append(place_loop_body(numpy_helper.from_array(np.ones(len(SECRET), np.uint8), "inline"))
                 .SerializeToString())
    return seeds


def graph_seeds() -> list[bytes]:
    models = [factory.identity(d) for d in factory.DTYPES] + [factory.add(), factory.mlp(), factory.cnn_classifier(),
                                                              identity_graph()]
    return [m.SerializeToString() for m in models] + _self_contained()


def nested(depth: int, leaf: bytes) -> bytes:
    """A model whose graph nests ``depth`` node > attribute > graph levels around ``leaf`` (the
    innermost graph's body), as raw protobuf (field numbers of onnx.proto)."""
    graph = leaf
    for _ in range(depth):
        graph = ld(1, ld(5, ld(1, b"g") + vi(20, 5) + ld(6, graph)) + ld(4, b"If"))
    return vi(1, IR_VERSION) + ld(8, ld(1, b"") + vi(2, OPSET)) + ld(7, ld(2, b"main") + graph)


#: Byte runs a varint corruption writes: 10-byte varints (max, overflowing), a 5-byte u32 overflow,
#: non-minimal encodings, a lone continuation byte.
VARINTS = (b"\xff" * 9 + b"\x01", b"\xff" * 10, b"\x80" * 9 + b"\x02", b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x10",
           b"\x81\x80\x80\x80\x00", b"\x80", b"\x00", b"\x7f", b"\xff\xff\xff\xff\x07")


def mutate(data: bytes, ops: list[tuple[str, int, int, int]], donors: list[bytes]) -> bytes:
    """Apply mutation ``ops`` ((kind, a, b, c): positions and values taken modulo the length)."""
    buf = bytearray(data)
    for kind, a, b, c in ops:
        n = len(buf)
        if n == 0:
            buf.extend(varint(a))
            continue
        p = a % n
        if kind == "flip":
            buf[p] ^= 1 << (b % 8)
        elif kind == "byte":
            buf[p] = (0x00, 0xFF, 0x7F, 0x80, 0x08, 0x0A, 0x12, 0x3A, b & 0xFF)[c % 9]
        elif kind == "truncate":
            del buf[p:]
        elif kind == "delete":
            del buf[p:p + 1 + b % 64]
        elif kind == "duplicate":
            chunk = buf[p:p + 1 + b % 256]
            buf[p:p] = chunk * (1 + c % 4)
        elif kind == "splice":
            donor = donors[c % len(donors)]
            start = b % len(donor)
            buf[p:p] = donor[start:start + 1 + (a // 7) % 512]
        elif kind == "varint":
            run = VARINTS[b % len(VARINTS)]
            buf[p:p + 1 + c % 5] = run
        elif kind == "repeat":
            buf.extend(bytes(buf))
        elif kind == "length":
            # Rewrite the byte after a length-delimited key (wire type 2) as another length.
            keys = [i for i in range(n - 1) if buf[i] & 7 == 2 and buf[i] < 0x80]
            if keys:
                i = keys[b % len(keys)]
                buf[i + 1] = c & 0xFF
    return bytes(buf)


MUTATIONS = ("flip", "byte", "truncate", "delete", "duplicate", "splice", "varint", "repeat", "length")


# --- the fuzz worker ----------------------------------------------------------------------------

@dataclass
class Setup:
    """What a worker needs: component files, the cache folder, the folder it runs in."""

    probe: str
    identity: str
    cache: str
    cwd: str


class _Server:
    """The worker's side: one Host, the probe and the tensor component, an instance of each."""

    def __init__(self, setup: Setup) -> None:
        from wasmai.host import Host

        os.chdir(setup.cwd)
        planted = Path(setup.cache) / "no-external-data" / "secret.txt"
        holding = Path(setup.cwd) / "planted-secret.txt"
        if planted.exists():  # left by a worker that crashed: the host wants the folder empty
            os.rename(planted, holding)
        self.host = Host(cache_dir=setup.cache, timeout_s=CALL_TIMEOUT_S, memory_limit_mb=512,
                         max_tensor_bytes=16 << 20, intra_op_threads=1)
        self.probe = self.host.load_component(setup.probe)
        self.identity = self.host.load_component(setup.identity)
        # Moved in (same file, so the test's inotify watch follows it) after the host checked that
        # its external-data folder is empty: only the walk stops a graph that names it.
        os.rename(holding, planted)
        self.instances: dict[str, Any] = {}

    def instance(self, which: str) -> Any:
        if which not in self.instances:
            self.instances[which] = self.host.instantiate(self.probe if which == "probe" else self.identity)
        return self.instances[which]

    def handle(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        from wasmai.host import ComponentError, InferenceError
        from wasmai.tensors import Tensor

        kind = request[0]
        which = "identity" if kind == "infer" else "probe"
        inst = self.instance(which)
        try:
            if kind == "graph":
                result: Any = inst.call_export("load-graph-bytes", request[1])
            elif kind == "tensors":
                # WIT enum cases are upper case (tensor-type FP16 ... I64).
                inputs = [(n, s, d.upper(), b) for n, s, d, b in request[2]]
                tag, value = inst.call_export("compute-tensors", request[1], inputs)
                result = (tag, [(n, s, d.lower(), bytes(b)) for n, s, d, b in value] if tag == "ok" else value)
            elif kind == "infer":
                result = [(t.name, t.dtype, t.shape, t.data) for t in
                          inst.infer([Tensor(n, d, tuple(s), b) for n, d, s, b in request[1]])]
            else:
                raise ValueError(f"unknown request {kind!r}")
            return ("ok", result)
        except InferenceError as exc:
            return ("inference", exc.code, exc.message)
        except ComponentError as exc:
            dead = None
            if exc.code in ("trap", "timeout", "memory-limit"):
                # The instance must now refuse calls; a fresh one must work.
                try:
                    inst.call_export("say", "x") if which == "probe" else inst.info()
                    dead = "alive"
                except ComponentError as again:
                    dead = again.code
                del self.instances[which]
                fresh = self.instance(which)
                fresh.call_export("say", "fresh") if which == "probe" else fresh.info()
            return ("component", exc.code, str(exc), dead)
        except Exception as exc:  # noqa: BLE001 - not a wasmai error: the property fails on it
            return ("python", type(exc).__name__, str(exc))


def _serve(setup: Setup, conn: Connection) -> None:
    server = _Server(setup)
    conn.send(("ready",))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        conn.send(server.handle(request))


class Worker:
    """The test's side of a fuzz worker: a fresh process, restarted after a crash."""

    def __init__(self, setup: Setup, crash_dir: Path) -> None:
        self.setup = setup
        self.crash_dir = crash_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.crashes: list[Crash] = []
        self.requests = 0
        self.stderr = crash_dir / "worker-stderr.txt"

    def start(self) -> None:
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        setup_blob = pickle.dumps(self.setup).hex()
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "serve", setup_blob, str(child_r), str(child_w)],
                pass_fds=(child_r, child_w), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                start_new_session=True)
        os.close(child_r)
        os.close(child_w)
        self.conn = _DuplexConn(parent_r, parent_w)
        if not self.conn.poll(120):
            self.stop()
            raise AssertionError("the fuzz worker did not start in 120 s")
        assert self.conn.recv() == ("ready",)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 9)
            self.proc.wait()
        if self.conn is not None:
            self.conn.close()
        self.proc, self.conn = None, None

    def run(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        """The worker's reply to ``request``; ("crash", Crash) if the worker died on it. Fails on a
        hang (no reply within HANG_S)."""
        if self.proc is None:
            self.start()
        assert self.conn is not None and self.proc is not None
        self.requests += 1
        self.conn.send(request)
        try:
            if not self.conn.poll(HANG_S):
                path = save_input(self.crash_dir, "hang", request)
                self.stop()
                raise AssertionError(f"a request took more than {HANG_S} s (hang): input saved in {path}")
            return tuple(self.conn.recv())
        except (EOFError, OSError):
            code = self.proc.wait()
            self.stop()
            crash = classify(self.setup, self.crash_dir, request, code)
            self.crashes.append(crash)
            return ("crash", crash)


class _DuplexConn(Connection):
    """A ``multiprocessing`` Connection over a pair of pipe fds (reads one, writes the other)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        super().__init__(read_fd, readable=True, writable=False)
        self._writer = Connection(write_fd, readable=False, writable=True)

    def send(self, obj: Any) -> None:
        self._writer.send(obj)

    def close(self) -> None:
        self._writer.close()
        super().close()


def _serve_main(argv: list[str]) -> None:
    setup: Setup = pickle.loads(bytes.fromhex(argv[0]))
    _serve(setup, _DuplexConn(int(argv[1]), int(argv[2])))


# --- crashes: save, replay under gdb, say where ---------------------------------------------------

@dataclass
class Crash:
    request_kind: str
    exitcode: int | None
    message: str
    saved: Path
    where: str  # "onnxruntime", "host", "not reproduced" or "unknown: ..."
    backtrace: str = field(repr=False, default="")


def save_input(crash_dir: Path, tag: str, request: tuple[Any, ...]) -> Path:
    blob = pickle.dumps(request)
    path = crash_dir / f"{tag}-{request[0]}-{hashlib.sha256(blob).hexdigest()[:12]}.pickle"
    path.write_bytes(blob)
    payload = request[1] if isinstance(request[1], bytes) else blob
    path.with_suffix(".hex").write_text(payload.hex() + "\n")
    return path


#: gdb script: run; skip the signals wasmtime raises and handles itself (traps in JIT code, which
#: belongs to no shared object and has no symbol); at the first other signal print the backtrace.
GDB_SCRIPT = """
import gdb
gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("run")
for _ in range(10000):
    try:
        frame = gdb.newest_frame()
    except gdb.error:
        print("WASMAI-EXITED")
        break
    pc = frame.pc()
    if gdb.solib_name(pc) is None and frame.name() is None:
        gdb.execute("continue")
        continue
    print("WASMAI-STOPPED")
    gdb.execute("info program")
    gdb.execute("bt 60")
    break
"""

#: Shared objects whose frames say nothing about the culprit (the C/C++ runtime).
_RUNTIME_LIBS = ("libc.so", "libc-", "libpthread", "libstdc++", "libgcc_s", "libm.so", "ld-linux")


def where_from_backtrace(bt: str) -> str:
    """``onnxruntime`` when the innermost frame outside the C/C++ runtime is in libonnxruntime,
    ``host`` otherwise (the wasmai._host extension, wasmtime, Python)."""
    for line in bt.splitlines():
        if not line.startswith("#"):
            continue
        if any(lib in line for lib in _RUNTIME_LIBS) or " raise (" in line or " abort (" in line:
            continue
        return "onnxruntime" if "libonnxruntime" in line or "onnxruntime::" in line else "host"
    return "unknown: no frame"


def classify(setup: Setup, crash_dir: Path, request: tuple[Any, ...], returncode: int) -> Crash:
    from wasmai.worker import crash_message

    saved = save_input(crash_dir, "crash", request)
    message = crash_message(returncode)
    gdb = shutil.which("gdb")
    if gdb is None:
        return Crash(request[0], returncode, message, saved, "unknown: gdb is not installed")
    script = crash_dir / "classify.py"
    script.write_text(GDB_SCRIPT)
    proc = subprocess.run(
        [gdb, "-nx", "-batch", "-x", str(script), "--args", sys.executable, __file__, "replay",
         pickle.dumps(setup).hex(), str(saved)], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    (saved.with_suffix(".gdb.txt")).write_text(out)
    if "WASMAI-STOPPED" not in out:
        return Crash(request[0], returncode, message, saved, "not reproduced", out[-3000:])
    bt = out.split("WASMAI-STOPPED", 1)[1]
    return Crash(request[0], returncode, message, saved, where_from_backtrace(bt), bt[:6000])


def _replay_main(argv: list[str]) -> None:
    setup: Setup = pickle.loads(bytes.fromhex(argv[0]))
    request = pickle.loads(Path(argv[1]).read_bytes())
    print(_Server(setup).handle(request)[:2])


# --- inotify: did anything open the secret files? ------------------------------------------------

class Opens:
    """Counts opens and reads of files (Linux inotify through libc)."""

    IN_ACCESS, IN_OPEN, IN_NONBLOCK = 0x1, 0x20, 0o4000

    def __init__(self, paths: list[Path]) -> None:
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self.libc.inotify_init1(self.IN_NONBLOCK)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.watches = {}
        for p in paths:
            wd = self.libc.inotify_add_watch(self.fd, str(p).encode(), self.IN_OPEN | self.IN_ACCESS)
            assert wd >= 0, (p, os.strerror(ctypes.get_errno()))
            self.watches[wd] = p

    def events(self) -> list[Path]:
        seen = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return seen
            offset = 0
            while offset < len(buf):
                wd, _mask, _cookie, length = struct.unpack_from("iIII", buf, offset)
                seen.append(self.watches.get(wd, Path("?")))
                offset += 16 + length

    def close(self) -> None:
        os.close(self.fd)


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_setup(tmp_path_factory, build_component, probe) -> tuple[Setup, Path]:
    """The probe and the identity component (real builds), a private compiled-code cache and a
    working folder with the secret; plus the folder for crash inputs."""
    folder = tmp_path_factory.mktemp("fuzz")
    identity = build_component(factory.save(identity_graph(), folder / "identity_all.onnx"))
    cwd = folder / "cwd"
    cwd.mkdir()
    (cwd / "secret.txt").write_bytes(SECRET)
    (cwd / "planted-secret.txt").write_bytes(SECRET)  # moved into the host's external-data folder
    crash_dir = folder / "inputs"
    crash_dir.mkdir()
    return Setup(str(probe), str(identity), str(folder / "cache"), str(cwd)), crash_dir


@pytest.fixture(scope="module")
def worker(fuzz_setup):
    setup, crash_dir = fuzz_setup
    w = Worker(setup, crash_dir)
    w.start()
    yield w
    w.stop()
    for crash in w.crashes:
        print(f"crash ({crash.where}): {crash.message}; input {crash.saved}")



# --- strategies -----------------------------------------------------------------------------------

SEEDS = graph_seeds()
DTYPE_NAMES = tuple(ITEMSIZE)
INPUT_NAMES = tuple(f"x_{d}" for d in DTYPE_NAMES)

mutation_op = st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 1 << 20), st.integers(0, 1 << 16),
                        st.integers(0, 255))
mutation_ops = st.lists(mutation_op, min_size=1, max_size=4)


@st.composite
def graph_bytes(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["random", "onnx-random", "mutated", "mutated", "mutated", "mutated", "nested"]))
    if how == "random":
        return draw(st.binary(max_size=300))
    if how == "onnx-random":
        return b"\x08" + draw(st.binary(min_size=2, max_size=300))
    if how == "nested":
        depth = draw(st.sampled_from([1, 2, 3, 50, 97, 98, 99, 100, 101, 102, 200]))
        inline = numpy_helper.from_array(np.zeros(4, np.uint8), "w").SerializeToString()
        leaf = draw(st.sampled_from([b"", ld(5, inline), ld(5, external("w", "secret.txt").SerializeToString())]))
        data = nested(depth, leaf)
        ops = draw(st.lists(mutation_op, max_size=2))
        return mutate(data, ops, SEEDS) if ops else data
    return mutate(draw(st.sampled_from(SEEDS)), draw(mutation_ops), SEEDS)


names = st.one_of(st.sampled_from(INPUT_NAMES), st.sampled_from(["", "0", "3", "6", "7", "+1", "007", "y_fp32",
                                                                "99999999999999999999999", "x_FP32"]),
                  st.text(max_size=8))
dims = st.one_of(st.integers(0, 4), st.just(3), st.sampled_from([2**16, 2**31 - 1, 2**32 - 1]))


def _bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _exact(dtype: str, shape: list[int]) -> int:
    return int(np.prod(shape, dtype=object)) * ITEMSIZE[dtype] if shape else ITEMSIZE[dtype]


@st.composite
def tensor_list(draw: st.DrawFn, dtypes: Any = None) -> list[tuple[str, str, list[int], bytes]]:
    """Inputs for identity_all_types: mostly the seven valid ones with a few perturbations, else
    random; each (name, dtype, shape, data). ``dtypes``: a strategy (default: the seven)."""
    dtypes = dtypes if dtypes is not None else st.sampled_from(DTYPE_NAMES)
    seed = draw(st.integers(0, 2**32))
    if draw(st.booleans()):
        batch = draw(st.integers(0, 5))
        inputs = [(f"x_{d}", d, [batch, 3], _bytes(seed + i, batch * 3 * ITEMSIZE[d]))
                  for i, d in enumerate(DTYPE_NAMES)]
        if draw(st.booleans()):
            inputs = [("", d, s, b) for _, d, s, b in inputs]
        for _ in range(draw(st.integers(0, 2))):
            i = draw(st.integers(0, len(inputs) - 1)) if inputs else 0
            what = draw(st.sampled_from(["name", "dtype", "dim", "rank", "length", "drop", "twice", "shuffle"]))
            if not inputs:
                break
            name, dtype, shape, data = inputs[i]
            if what == "name":
                inputs[i] = (draw(names), dtype, shape, data)
            elif what == "dtype":
                inputs[i] = (name, draw(dtypes), shape, data)
            elif what == "dim":
                shape = list(shape)
                shape[draw(st.integers(0, 1))] = draw(dims)
                inputs[i] = (name, dtype, shape, data)
            elif what == "rank":
                inputs[i] = (name, dtype, draw(st.lists(dims, max_size=6)), data)
            elif what == "length":
                delta = draw(st.sampled_from([-8, -1, 1, 2, 7, 64]))
                inputs[i] = (name, dtype, shape, _bytes(seed, max(0, len(data) + delta)))
            elif what == "drop":
                del inputs[i]
            elif what == "twice":
                inputs.append(inputs[i])
            else:
                inputs = draw(st.permutations(inputs))
        return inputs
    out = []
    for i in range(draw(st.integers(0, 9))):
        dtype = draw(dtypes)
        shape = draw(st.lists(dims, max_size=6))
        exact = _exact(dtype, shape) if dtype in ITEMSIZE else 4
        n = draw(st.sampled_from(["exact", "near", "random"]))
        length = (exact if n == "exact" and exact <= 1 << 20 else
                  max(0, min(exact, 1 << 20) + draw(st.integers(-8, 8))) if n == "near" else draw(st.integers(0, 64)))
        out.append((draw(names), dtype, shape, _bytes(seed + i, length)))
    return out


def _index(name: str, pos: int) -> int | None:
    """How host/src/nn/mod.rs check_inputs places an input: position for an empty name, the
    number for a decimal name (Rust's usize parse: ASCII digits, optional '+'), else by name."""
    if name == "":
        return pos
    digits = name[1:] if name.startswith("+") else name
    if digits and all("0" <= c <= "9" for c in digits) and int(digits) < 2**64:
        return int(digits)
    return INPUT_NAMES.index(name) if name in INPUT_NAMES else None


def host_accepts(inputs: list[tuple[str, str, list[int], bytes]]) -> bool:
    """The rule host/src/nn/mod.rs documents for identity_all_types (x_<dtype> [?, 3]): every
    input once, dtype equal, rank 2 with 3 on the fixed axis, bytes = product(shape) * size."""
    slots: list[tuple[str, list[int], bytes] | None] = [None] * len(INPUT_NAMES)
    for pos, (name, dtype, shape, data) in enumerate(inputs):
        i = _index(name, pos)
        if i is None or i >= len(slots) or slots[i] is not None:
            return False
        slots[i] = (dtype, shape, data)
    for want, slot in zip(DTYPE_NAMES, slots, strict=True):
        if slot is None:
            return False
        dtype, shape, data = slot
        if dtype != want or len(shape) != 2 or shape[1] != 3 or _exact(dtype, shape) != len(data):
            return False
    return True


def template_accepts(inputs: list[tuple[str, str, list[int], bytes]]) -> bool:
    """The tensor template's own checks (templates/tensor/src/nn.rs, wasm32: sizes in u32) and
    then the host's: seven inputs, all named or all positional, dynamic axes > 0."""
    if len(inputs) != len(INPUT_NAMES):
        return False
    if all(name == "" for name, *_ in inputs):
        ordered = inputs
    else:
        if sorted(name for name, *_ in inputs) != sorted(INPUT_NAMES):
            return False
        ordered = sorted(inputs, key=lambda t: INPUT_NAMES.index(t[0]))
    for want, (_, dtype, shape, data) in zip(DTYPE_NAMES, ordered, strict=True):
        if dtype != want or len(shape) != 2 or shape[0] == 0 or shape[1] != 3:
            return False
        if _exact(dtype, shape) >= 2**32 or _exact(dtype, shape) != len(data):
            return False
    return host_accepts([(f"x_{d}", d, s, b) for (_, d, s, b) in ordered])


FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])


def _crash_ok(reply: tuple[Any, ...]) -> bool:
    """True for a crash inside ONNX Runtime (recorded, a known limitation); fails for any other."""
    if reply[0] != "crash":
        return False
    crash: Crash = reply[1]
    assert crash.where == "onnxruntime", (
        f"the host process died ({crash.message}) and the crash is not inside ONNX Runtime ({crash.where}); "
        f"input: {crash.saved}\n{crash.backtrace}")
    return True


def _check_component_error(reply: tuple[Any, ...]) -> None:
    """A ComponentError only for a trap / timeout / memory limit, and then the instance is dead."""
    _, code, message, dead = reply
    assert code in ("trap", "timeout", "memory-limit"), f"ComponentError {code}: {message}"
    assert dead == "dead", f"after {code} the instance answered {dead}"


# --- target 1: graph bytes ------------------------------------------------------------------------

@pytest.mark.slow
def test_fuzz_graph_bytes(worker):
    stats: dict[str, int] = {}
    start = time.perf_counter()

    @settings(FUZZ, max_examples=GRAPH_EXAMPLES)
    @given(data=graph_bytes())
    def run(data: bytes) -> None:
        reply = worker.run(("graph", data))
        if _crash_ok(reply):
            stats["onnxruntime crash"] = stats.get("onnxruntime crash", 0) + 1
            return
        if reply[0] == "component":
            _check_component_error(reply)
            stats[reply[1]] = stats.get(reply[1], 0) + 1
            return
        assert reply[0] == "ok", reply
        tag, value = reply[1]
        if tag == "err":
            code = value.split(":", 1)[0]
            assert code in WASI_NN_CODES or value == "the graph has no output", value
            stats[code] = stats.get(code, 0) + 1
        else:
            stats["ok"] = stats.get("ok", 0) + 1

    run()
    print(f"graph bytes: {sum(stats.values())} calls in {time.perf_counter() - start:.1f} s: {stats}")
    assert stats.get("ok", 0) > 0 and stats.get("invalid-encoding", 0) > 0, stats


# --- target 2: tensors ----------------------------------------------------------------------------

@pytest.mark.slow
def test_fuzz_tensors_through_the_host_checks(worker):
    """The probe hands the drawn tensors to wasi-nn as they are: the host's verdict must be the
    documented rule's, and what it computes the Identity's."""
    graph = identity_graph().SerializeToString()
    stats = {"ok": 0, "refused": 0}
    start = time.perf_counter()

    @settings(FUZZ, max_examples=TENSOR_EXAMPLES)
    @given(inputs=tensor_list())
    def run(inputs: list[tuple[str, str, list[int], bytes]]) -> None:
        reply = worker.run(("tensors", graph, [(n, s, d, b) for n, d, s, b in inputs]))
        if _crash_ok(reply):
            return
        assert reply[0] == "ok", reply
        tag, value = reply[1]
        accepts = host_accepts(inputs)
        if tag == "err":
            assert not accepts, f"the host refused valid inputs: {value}"
            assert value.startswith("invalid-argument: "), value
            stats["refused"] += 1
            return
        assert accepts, "the host computed inputs its rule refuses"
        given_by_slot = {}
        for pos, (name, dtype, shape, data) in enumerate(inputs):
            given_by_slot[_index(name, pos)] = (dtype, shape, data)
        outputs = {name: (d, s, b) for name, s, d, b in value}
        for i, dtype in enumerate(DTYPE_NAMES):
            want_dtype, want_shape, want_data = given_by_slot[i]
            assert outputs[f"y_{dtype}"] == (want_dtype, want_shape, want_data)
        stats["ok"] += 1

    run()
    print(f"tensors (probe): {sum(stats.values())} calls in {time.perf_counter() - start:.1f} s: {stats}")
    assert stats["ok"] > 0 and stats["refused"] > 0, stats


@pytest.mark.slow
def test_fuzz_tensors_through_instance_infer(worker):
    """``Instance.infer`` on the built tensor template with ``Tensor`` built directly (unknown
    dtypes and dims outside u32 too): outputs equal to the inputs, or an error with a code."""
    stats = {"ok": 0, "refused": 0}
    start = time.perf_counter()
    dtypes = st.one_of(st.sampled_from(DTYPE_NAMES), st.sampled_from(["fp8", "", "FP32", "bool"]))

    @settings(FUZZ, max_examples=INFER_EXAMPLES)
    @given(inputs=tensor_list(dtypes), bad_dim=st.sampled_from([None, None, None, -1, 2**32, 2**64]),
           bad_name=st.sampled_from([False] * 7 + [True]))
    def run(inputs: list[tuple[str, str, list[int], bytes]], bad_dim: int | None, bad_name: bool) -> None:
        if bad_dim is not None and inputs:
            name, dtype, shape, data = inputs[0]
            inputs = [(name, dtype, [*shape, bad_dim], data), *inputs[1:]]
        if bad_name and inputs:
            inputs = [*inputs[:-1], ("x_\ud800", *inputs[-1][1:])]  # a lone surrogate: not UTF-8
        reply = worker.run(("infer", inputs))
        if _crash_ok(reply):
            return
        valid_types = all(d in ITEMSIZE and all(0 <= x < 2**32 for x in s) and "\ud800" not in n
                          for n, d, s, _ in inputs)
        if reply[0] == "component":
            assert reply[1] == "argument" and not valid_types, reply
            stats["refused"] += 1
            return
        if reply[0] == "inference":
            assert reply[1] in ("bad-input", *WASI_NN_CODES), reply
            assert not (valid_types and template_accepts(inputs)), f"valid inputs refused: {reply}"
            stats["refused"] += 1
            return
        assert reply[0] == "ok", reply
        assert valid_types and template_accepts(inputs), "the template computed inputs it should refuse"
        by_name = {n: (d, list(s), b) for n, d, s, b in inputs}
        positional = all(n == "" for n, *_ in inputs)
        for i, (name, dtype, shape, data) in enumerate(reply[1]):
            want = inputs[i][1:] if positional else by_name[f"x_{dtype}"]
            assert name == f"y_{dtype}" and (dtype, list(shape), data) == tuple(want), name
        stats["ok"] += 1

    run()
    print(f"tensors (infer): {sum(stats.values())} calls in {time.perf_counter() - start:.1f} s: {stats}")
    assert stats["ok"] > 0 and stats["refused"] > 0, stats


# --- target 3: external data ----------------------------------------------------------------------

@pytest.mark.slow
def test_fuzz_external_data_never_reaches_onnxruntime(worker, fuzz_setup):
    setup, _ = fuzz_setup
    cwd = Path(setup.cwd)
    opens = Opens([cwd / "secret.txt", Path(setup.cache) / "no-external-data" / "secret.txt"])
    where = locations(cwd)
    stats: dict[str, int] = {}
    start = time.perf_counter()

    @settings(FUZZ, max_examples=EXTERNAL_EXAMPLES)
    @given(place=st.sampled_from(sorted(PLACES)), location=st.integers(0, len(where) - 1),
           how=st.sampled_from(["both", "entries", "flag"]),
           ops=st.one_of(st.just([]), mutation_ops))
    def run(place: str, location: int, how: str, ops: list[tuple[str, int, int, int]]) -> None:
        data = PLACES[place](external("w", where[location], how)).SerializeToString()
        if ops:
            data = mutate(data, ops, SEEDS)
        reply = worker.run(("graph", data))
        assert not opens.events(), f"a secret file was opened ({place}, {where[location]!r}, {how}, {ops})"
        assert SECRET not in pickle.dumps(reply) and SECRET.decode() not in repr(reply), "the secret came back"
        if _crash_ok(reply):
            return
        if reply[0] == "component":
            _check_component_error(reply)
            return
        tag, value = reply[1]
        walk = tag == "err" and "is stored outside the graph" in value
        if not ops:
            assert walk and value.startswith("invalid-argument: tensor '"), (place, how, value)
        if tag == "err" and not walk:
            # ONNX Runtime's own words about external data mean it saw a tensor the walk missed. (Its
            # initializer-loading errors print SaveInitializedTensors' C++ signature, which names the
            # type ExternalDataLoaderManager whatever went wrong: not words about a tensor.)
            words = value.lower().replace("externaldataloadermanager", "")
            assert "external" not in words and "stored in" not in value, value
        key = "refused by the walk" if walk else value.split(":", 1)[0] if tag == "err" else "ok"
        stats[key] = stats.get(key, 0) + 1

    try:
        run()
    finally:
        opens.close()
    print(f"external data: {sum(stats.values())} calls in {time.perf_counter() - start:.1f} s: {stats}")
    assert stats.get("refused by the walk", 0) > 0, stats


@pytest.mark.slow
@pytest.mark.parametrize(("inputs", "words"), [
    ([("x_fp32", "fp32", [-1], b"")], "dimension -1 is not an int in 0..=4294967295"),
    ([("x_fp32", "fp32", [2**32], b"")], "dimension 4294967296 is not an int"),
    ([("x_fp32", "fp32", [2**64, 3], b"")], "dimension 18446744073709551616 is not an int"),
    ([("x_\ud800", "fp32", [1, 3], bytes(12))], "the name is not a str"),
])
def test_infer_refuses_what_wasi_nn_cannot_carry_with_an_argument_error(worker, inputs, words):
    """Found by the fuzz (minimized): a shape dimension outside u32 or a name that is not UTF-8
    made ``Instance.infer`` raise a bare OverflowError / UnicodeEncodeError from the native
    layer; it is a ComponentError ``argument`` naming the tensor."""
    reply = worker.run(("infer", inputs))
    assert reply[:2] == ("component", "argument"), reply
    assert words in reply[2], reply

# --- the harness tells an ONNX Runtime crash apart ----------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="INT_MIN / -1 traps (SIGFPE) on x86-64 only")
@pytest.mark.skipif(shutil.which("gdb") is None, reason="the crash is located with gdb")
def test_an_onnxruntime_crash_is_located_in_onnxruntime(worker):
    """INT32_MIN / -1 in an integer Div (constants: ONNX Runtime folds them at graph.load) kills
    the worker with SIGFPE; the replay under gdb puts the signal inside libonnxruntime; the next
    request gets a fresh worker."""
    graph = helper.make_graph([_const("a", np.array([np.iinfo(np.int32).min], np.int32)),
                               _const("b", np.array([-1], np.int32)), helper.make_node("Div", ["a", "b"], ["q"])],
                              "boom", [], [helper.make_tensor_value_info("q", TensorProto.INT32, [1])])
    reply = worker.run(("graph", _model(graph).SerializeToString()))
    assert reply[0] == "crash", reply
    crash: Crash = reply[1]
    print(crash.message, crash.where, crash.backtrace[:1500], sep="\n")
    assert "SIGFPE" in crash.message and crash.where == "onnxruntime", crash
    assert crash.saved.is_file() and crash.saved.with_suffix(".hex").is_file()
    worker.crashes.remove(crash)
    assert worker.run(("graph", SEEDS[-2]))[0] == "ok"


if __name__ == "__main__":
    {"serve": _serve_main, "replay": _replay_main}[sys.argv[1]](sys.argv[2:])
    sys.exit(0)
