"""The sandbox against a hostile component (issue 12): graphs that try to read host files through
ONNX external data, sockets, the shared ONNX Runtime thread pool, a poisoned compiled-code cache
and an ONNX Runtime run that never ends.

Every graph is crafted with the ``onnx`` package and handed to wasi-nn by a real component, the
sandbox probe (tests/guests/sandbox, built by ``cargo component``), through its
``load-graph-bytes`` export (wasi-nn ``graph.load`` + ``compute`` with no inputs; the first
output's bytes, or ``"<error-code>: <message>"``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import test_sandbox
from onnx import TensorProto, helper, numpy_helper

from wasmai.host import Host

# The probe guest and the session's compiled-code cache: test_sandbox's session fixtures.
probe = test_sandbox.probe
cache_dir = test_sandbox.cache_dir

SECRET = b"host-only secret: ssh-ed25519 AAAAC3Nza"
OPSET = 17
IR_VERSION = 9


# --- crafted graphs ------------------------------------------------------------------------------

def _external(name: str, location: str = "secret.txt", length: int = len(SECRET)) -> TensorProto:
    """A u8 tensor of ``length`` bytes whose data is stored in the file ``location``."""
    t = TensorProto()
    t.name, t.data_type = name, TensorProto.UINT8
    t.dims.append(length)
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def _model(nodes, initializers=(), sparse=(), length: int = len(SECRET)) -> bytes:
    out = helper.make_tensor_value_info("y", TensorProto.UINT8, [length])
    graph = helper.make_graph(nodes, "main", [], [out], list(initializers), sparse_initializer=list(sparse))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    return model.SerializeToString()


def identity_of(tensor: TensorProto) -> bytes:
    return _model([helper.make_node("Identity", [tensor.name], ["y"])], initializers=[tensor])


def top_level_initializer() -> bytes:
    return identity_of(_external("w"))


def constant_node() -> bytes:
    return _model([helper.make_node("Constant", [], ["c"], name="leak", value=_external("in-constant")),
                   helper.make_node("Identity", ["c"], ["y"])])


def if_branch() -> bytes:
    def branch(name: str, tensor: TensorProto) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.UINT8, [len(SECRET)])
        return helper.make_graph([helper.make_node("Constant", [], [f"{name}_out"], value=tensor)], name, [], [out])

    inline = numpy_helper.from_array(np.zeros(len(SECRET), np.uint8), "zeros")
    return _model([helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True), "t")),
                   helper.make_node("If", ["cond"], ["y"], name="choose",
                                    then_branch=branch("then", _external("in-branch")),
                                    else_branch=branch("else", inline))])


def sparse_initializer() -> bytes:
    values = _external("sparse-values", length=len(SECRET))
    indices = numpy_helper.from_array(np.arange(len(SECRET), dtype=np.int64), "sparse-indices")
    sparse = helper.make_sparse_tensor(values, indices, [len(SECRET)])
    return _model([helper.make_node("Identity", ["sparse-values"], ["y"])], sparse=[sparse])


def inline_initializer() -> bytes:
    data = np.frombuffer(b"inline bytes are fine, 38 bytes long!!", np.uint8)
    return _model([helper.make_node("Identity", ["w"], ["y"])], initializers=[numpy_helper.from_array(data, "w")],
                  length=data.size)


@pytest.fixture
def secret_cwd(tmp_path, monkeypatch) -> Path:
    """The process's current directory holds ``secret.txt`` (what ONNX Runtime resolves an
    external-data location of a graph loaded from memory against, by default)."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _instance(probe: Path, cache_dir: Path, **kwargs):
    host = Host(cache_dir=cache_dir, **kwargs)
    return host, host.instantiate(host.load_component(probe))


# --- finding 1: host files through ONNX external data --------------------------------------------

def test_the_installed_onnxruntime_reads_the_secret_when_asked(secret_cwd):
    """The vector is real: the installed ONNX Runtime, given these bytes from memory, returns the
    file's bytes (so the host's refusal below is what protects the file)."""
    import onnxruntime as ort

    session = ort.InferenceSession(top_level_initializer(), providers=["CPUExecutionProvider"])
    assert session.run(None, {})[0].tobytes() == SECRET


@pytest.mark.slow
@pytest.mark.parametrize(("graph", "tensor", "place"), [
    (top_level_initializer, "w", "graph 'main' > initializer"),
    (constant_node, "in-constant", "graph 'main' > node 'leak' (Constant) > attribute 'value' > tensor"),
    (if_branch, "in-branch", "node 'choose' (If) > attribute 'then_branch' > graph 'then'"),
    (sparse_initializer, "sparse-values", "graph 'main' > sparse initializer > values"),
])
def test_external_data_is_refused_and_the_secret_never_reaches_the_guest(probe, cache_dir, secret_cwd, graph,
                                                                          tensor, place):
    _, inst = _instance(probe, cache_dir)
    tag, message = inst.call_export("load-graph-bytes", graph())
    assert tag == "err", message
    assert message.startswith(f"invalid-argument: tensor '{tensor}' (")
    assert place in message and "external data 'secret.txt'" in message
    assert "stored outside the graph" in message
    assert SECRET.decode() not in message


@pytest.mark.slow
def test_a_self_contained_graph_still_loads_and_runs(probe, cache_dir, secret_cwd):
    _, inst = _instance(probe, cache_dir)
    tag, data = inst.call_export("load-graph-bytes", inline_initializer())
    assert (tag, bytes(data)) == ("ok", b"inline bytes are fine, 38 bytes long!!")


@pytest.mark.slow
def test_registered_graph_reads_external_data_beside_its_file_only(probe, cache_dir, secret_cwd):
    models = secret_cwd / "models"
    models.mkdir()
    (models / "weights.bin").write_bytes(SECRET)
    beside = models / "beside.onnx"
    beside.write_bytes(identity_of(_external("w", "weights.bin")))
    # The process's current directory has no weights.bin: this loads only if it resolves beside the file.
    _, inst = _instance(probe, cache_dir, graphs={"beside": beside})
    assert inst.call_export("load-graphs", "beside", 1) == ("ok", 1)

    for location in ("../secret.txt", str(secret_cwd / "secret.txt"), "*/_ORT_MEM_ADDR_/*"):
        escape = models / "escape.onnx"
        escape.write_bytes(identity_of(_external("w", location)))
        _, inst = _instance(probe, cache_dir, graphs={"escape": escape})
        tag, message = inst.call_export("load-graphs", "escape", 1)
        assert tag == "err" and message.startswith("invalid-argument: graph 'escape': tensor 'w' ("), message
    (models / "link.bin").symlink_to(secret_cwd / "secret.txt")
    escape.write_bytes(identity_of(_external("w", "link.bin")))
    _, inst = _instance(probe, cache_dir, graphs={"escape": escape})
    tag, message = inst.call_export("load-graphs", "escape", 1)
    assert tag == "err" and "outside the model's folder" in message, message


@pytest.mark.slow
def test_malformed_protobuf_is_refused_before_onnxruntime(probe, cache_dir):
    _, inst = _instance(probe, cache_dir)
    truncated = top_level_initializer()[:-5]
    tag, message = inst.call_export("load-graph-bytes", truncated)
    assert tag == "err" and message.startswith("invalid-encoding: the graph is not a well-formed ONNX protobuf")


# --- finding 6: one ONNX Runtime thread pool, no sockets ----------------------------------------

#: Run in a fresh process (ONNX Runtime's environment and its pool are created once per process):
#: threads of the process (``/proc/self/task``) before the host, after it and after 5 graphs are
#: loaded and kept (5 registered graphs = 5 sessions); then a second host asking for another size,
#: whose graph gets a pool of its own of that size.
_THREADS_SCRIPT = """
import json, os, sys
sys.path.insert(0, sys.argv[4])
import onnx_factory as factory
from wasmai.host import Host
probe, work, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
count = lambda: len(os.listdir("/proc/self/task"))
graphs = {f"g{i}": factory.save(factory.identity("fp32"), f"{work}/g{i}.onnx") for i in range(5)}
start = count()
host = Host(cache_dir=f"{work}/cache", graphs=graphs, intra_op_threads=threads)
inst = host.instantiate(host.load_component(probe))
ready = count()
for name in graphs:
    assert inst.call_export("load-graphs", name, 1) == ("ok", 1)
loaded = count()
other = Host(cache_dir=f"{work}/cache", graphs={"g0": graphs["g0"]}, intra_op_threads=threads + 1)
other_inst = other.instantiate(other.load_component(probe))
assert other_inst.call_export("load-graphs", "g0", 1) == ("ok", 1)
own_pool = count()
Host(cache_dir=f"{work}/cache", intra_op_threads=0)
print(json.dumps({"start": start, "host": ready, "five_graphs": loaded, "other_size": own_pool}))
"""


def _thread_counts(probe: Path, work: Path, threads: int) -> dict:
    work.mkdir()
    proc = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, str(probe), str(work), str(threads),
                           str(Path(__file__).parent)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_graphs_share_one_onnxruntime_thread_pool(probe, tmp_path):
    one = _thread_counts(probe, tmp_path / "one", 1)
    four = _thread_counts(probe, tmp_path / "four", 4)
    print(f"threads: intra-op 1 {one}, intra-op 4 {four}")
    # Loading 5 graphs starts no thread (per-session pools started intra-op - 1 threads each).
    assert one["five_graphs"] == one["host"] and four["five_graphs"] == four["host"]
    # The one pool: intra-op 4 = the caller + 3 pool threads, started with the host.
    assert four["host"] - one["host"] == 3
    # A host asking for another size (bench --threads 5 after a default host) is served: its graph
    # gets a pool of its own of that size (the caller + 4 threads).
    assert four["other_size"] - four["five_graphs"] == 4


@pytest.mark.slow
def test_tcp_connect_is_refused_and_nothing_arrives(probe, cache_dir):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        _, inst = _instance(probe, cache_dir)
        tag, message = inst.call_export("connect-tcp", f"127.0.0.1:{port}")
        # Refused at socket creation (before: created, then refused by the address check).
        assert (tag, message) == ("err", "create-tcp-socket: access-denied")
        with pytest.raises(TimeoutError):
            listener.accept()


# --- finding 4: the compiled-code cache ----------------------------------------------------------

def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.cwasm"))


@pytest.mark.slow
def test_tampered_cache_entry_is_detected_and_recompiled(probe, tmp_path):
    cache = tmp_path / "cache"
    host = Host(cache_dir=cache)
    assert not host.load_component(probe).cache_hit
    assert host.load_component(probe).cache_hit
    (entry,) = _entries(cache)
    assert entry.stat().st_mode & 0o777 == 0o600 and cache.stat().st_mode & 0o777 == 0o700
    key = cache / "cache.key"
    assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_size == 32

    # The verified entry's identity is recorded, so later loads map it without hashing it again;
    # a write restoring the mtime still changes the ctime, so the entry is checked in full.
    assert entry.with_suffix(".ok").is_file()
    before = entry.stat()
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of the native code
    entry.write_bytes(bytes(data))
    os.utime(entry, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert entry.stat().st_size == before.st_size and entry.stat().st_mtime_ns == before.st_mtime_ns
    fresh = Host(cache_dir=cache)
    comp = fresh.load_component(probe)
    assert not comp.cache_hit  # the tampered entry was not run: recompiled
    inst = fresh.instantiate(comp)
    assert inst.info()["name"] == "sandbox-probe" and inst.call_export("hog", 2) == 2
    assert entry.read_bytes() != bytes(data)  # rewritten with a valid tag
    assert Host(cache_dir=cache).load_component(probe).cache_hit

    # A symlink in place of the entry is not followed (even to a valid entry).
    valid = tmp_path / "valid.cwasm"
    entry.rename(valid)
    entry.symlink_to(valid)
    assert not Host(cache_dir=cache).load_component(probe).cache_hit
    assert not entry.is_symlink()

    # An entry written with another key (another user's cache) is not trusted either.
    key.chmod(0o600)
    key.write_bytes(bytes(32))
    assert not Host(cache_dir=cache).load_component(probe).cache_hit


@pytest.mark.slow
def test_changed_file_with_restored_mtime_is_not_served_from_the_cache(probe, tmp_path):
    cache = tmp_path / "cache"
    component = tmp_path / "probe.wasm"
    component.write_bytes(probe.read_bytes())
    host = Host(cache_dir=cache)
    assert host.instantiate(host.load_component(component)).info()["name"] == "sandbox-probe"
    assert host.load_component(component).cache_hit
    before = component.stat()
    # Same size, same inode, mtime put back: only ctime tells the file changed.
    with open(component, "r+b") as f:
        data = f.read()
        f.seek(data.index(b"sandbox-probe"))
        f.write(b"sandbox-probf")
    os.utime(component, ns=(before.st_atime_ns, before.st_mtime_ns))
    changed = host.load_component(component)
    assert not changed.cache_hit
    assert host.instantiate(changed).info()["name"] == "sandbox-probf"


@pytest.mark.slow
def test_unsafe_cache_folders_are_refused(tmp_path):
    from wasmai.host import ComponentError

    cache = tmp_path / "shared-cache"
    cache.mkdir()
    cache.chmod(0o770)
    with pytest.raises(ComponentError) as err:
        Host(cache_dir=cache)
    assert err.value.code == "config"
    assert str(err.value) == (f"compiled-code cache {cache}: is group- or world-writable (mode 0770): whoever can "
                              "write it could make this host run their native code; chmod 700 it or choose another "
                              "folder (WASMAI_CACHE_DIR)")
    cache.chmod(0o700)
    Host(cache_dir=cache)
    (cache / "cache.key").chmod(0o644)
    with pytest.raises(ComponentError, match="cache.key: must be a 32-byte file of this user with mode 0600"):
        Host(cache_dir=cache)


@pytest.mark.slow
def test_a_preopen_overlapping_the_cache_is_refused(tmp_path):
    from wasmai.host import ComponentError

    cache = tmp_path / "data" / "cache"
    cache.mkdir(parents=True)
    cache.chmod(0o700)
    for host_dir in (cache, tmp_path / "data", tmp_path):
        for mode in ("", ":ro"):
            with pytest.raises(ComponentError) as err:
                Host(cache_dir=cache, dirs=[f"{host_dir}::/data{mode}"])
            assert err.value.code == "config" and "overlaps the compiled-code cache" in str(err.value)
    (cache / "inside").mkdir()
    with pytest.raises(ComponentError, match="overlaps the compiled-code cache"):
        Host(cache_dir=cache, dirs=[f"{cache / 'inside'}::/data"])
    (tmp_path / "elsewhere").mkdir()
    Host(cache_dir=cache, dirs=[f"{tmp_path / 'elsewhere'}::/data"])


# --- finding 2 (part): an ONNX Runtime run does not escape the timeout ----------------------------

def endless_loop() -> bytes:
    """``y = Loop(M = 2**62, cond = true, v = [0])`` with body ``v + 1``: ONNX Runtime would run
    for days; each iteration is a few node executions, so the terminate flag is seen at once."""
    f32 = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.ones(1, np.float32), "one")),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", f32, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", f32, [1])])
    consts = [("M", np.array(2**62, np.int64)), ("cond", np.array(True)), ("v0", np.zeros(1, np.float32))]
    nodes = [helper.make_node("Constant", [], [n], value=numpy_helper.from_array(v, n)) for n, v in consts]
    nodes.append(helper.make_node("Loop", ["M", "cond", "v0"], ["y"], body=body))
    graph = helper.make_graph(nodes, "endless", [], [helper.make_tensor_value_info("y", f32, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION).SerializeToString()


@pytest.mark.slow
def test_endless_onnxruntime_loop_is_stopped_at_the_timeout(probe, cache_dir):
    import threading
    import time

    from wasmai.host import ComponentError

    host, inst = _instance(probe, cache_dir, timeout_s=0.5)
    outcome: dict = {}

    def call() -> None:
        t0 = time.perf_counter()
        try:
            outcome["result"] = inst.call_export("load-graph-bytes", endless_loop())
        except ComponentError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.perf_counter() - t0

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the ONNX Runtime run was not stopped"
    print(f"endless Loop stopped after {outcome['seconds']:.3f} s: {outcome.get('error')}")
    err = outcome["error"]
    assert err.code == "timeout" and "load-graph-bytes timed out after 0.500 s" in str(err)
    assert "ONNX Runtime run stopped at the deadline" in str(err)
    assert 0.45 < outcome["seconds"] < 1.5
    with pytest.raises(ComponentError) as dead:
        inst.call_export("hog", 1)
    assert dead.value.code == "dead"
    # The process and the host are healthy: a new instance runs a graph.
    fresh = host.instantiate(host.load_component(probe))
    tag, data = fresh.call_export("load-graph-bytes", inline_initializer())
    assert (tag, bytes(data)) == ("ok", b"inline bytes are fine, 38 bytes long!!")


# --- finding 3: one memory budget per instance, ONNX Runtime's memory capped ----------------------

def _identity_graph() -> bytes:
    """``y = Identity(x)`` on a u8 vector of any length."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, ["n"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION).SerializeToString()


@pytest.mark.slow
def test_tensors_held_by_the_host_count_against_the_instance_budget(probe, cache_dir):
    """A 40 MiB tensor fits each limit alone (one linear memory < 64 MiB, the tensor < the tensor
    limit) but the argument in guest memory plus the host's copy do not fit a 64 MiB budget: the
    tensor is refused with ``too-large`` naming the budget, and the instance still works."""
    host, inst = _instance(probe, cache_dir, memory_limit_mb=64, max_tensor_bytes=1 << 30)
    data = bytes(range(256)) * (40 * 4096)
    tag, message = inst.call_export("compute-tensors", _identity_graph(), [("x", [len(data)], "U8", data)])
    assert tag == "err" and message.startswith("too-large: input tensor 'x': the host refused a tensor of 40.0 MiB")
    assert "over the instance's memory budget (max-memory 64 MiB; in use: linear memories" in message
    small = bytes(range(256))
    tag, outputs = inst.call_export("compute-tensors", _identity_graph(), [("x", [256], "U8", small)])
    assert tag == "ok" and bytes(outputs[0][3]) == small
    stats = inst.host_stats()
    assert stats["memory_budget_bytes"] == 64 << 20 and 40 << 20 < stats["memory_budget_peak_bytes"] <= 64 << 20
    # A 2 MiB tensor fits the same budget, on a fresh instance (the dynamic call lifts the result as
    # one value per byte, within wasmtime's default hostcall fuel).
    _, fresh = _instance(probe, cache_dir, memory_limit_mb=64, max_tensor_bytes=1 << 30)
    data = data[:2 << 20]
    tag, outputs = fresh.call_export("compute-tensors", _identity_graph(), [("x", [len(data)], "U8", data)])
    assert tag == "ok" and bytes(outputs[0][3]) == data


def bomb(shape_from_input: bool) -> bytes:
    """``ConstantOfShape([16000, 16000])`` fp32 (1 GiB) reduced to a scalar: a 200-byte graph.
    With the shape as an initializer ONNX Runtime folds the constant when it loads the graph; with
    the shape as an input (int64[2]) the 1 GiB tensor is made when it runs."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0)]
    inputs, inits = [], []
    if shape_from_input:
        inputs = [helper.make_tensor_value_info("shape", TensorProto.INT64, [2])]
    else:
        inits = [numpy_helper.from_array(np.array([16000, 16000], np.int64), "shape")]
    graph = helper.make_graph(nodes, "bomb", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION).SerializeToString()


_BOMB_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_hostile
from wasmai.host import Host, onnxruntime_log, prepare_host

def peak_rss_mib():
    # VmHWM starts afresh at exec (ru_maxrss would carry pytest's peak across it).
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

if sys.argv[4] == "prepared":  # as in `wasmai run`'s worker: ONNX Runtime started before the host's settings
    prepare_host()
host = Host(cache_dir=sys.argv[3], ort_memory_limit_mb=256)
inst = host.instantiate(host.load_component(sys.argv[2]))
load = inst.call_export("load-graph-bytes", test_hostile.bomb(False))
shape = np.array([16000, 16000], np.int64).tobytes()
run = inst.call_export("compute-tensors", test_hostile.bomb(True), [("shape", [2], "I64", shape)])
fine = inst.call_export("load-graph-bytes", test_hostile.inline_initializer())
print(json.dumps({"load": list(load), "run": list(run), "fine": [fine[0], bytes(fine[1]).decode()],
                  "peak_rss_mib": peak_rss_mib(), "ort_log": onnxruntime_log()}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("start", ["host", "prepared"])
def test_onnxruntime_memory_is_capped_at_load_and_at_run(probe, cache_dir, start):
    """A 200-byte graph asks ONNX Runtime for 1 GiB, at load (constant folding took 2 GiB of RSS
    with the onnxruntime wheel's defaults) or at run. The host loads a guest's graph without
    constant folding, and with max-ort-memory 256 MiB the run is refused with ``too-large``
    naming the cap in both cases; the process stays far below 1 GiB, and the same instance then
    loads and runs a normal graph. In a fresh process: the cap is process-wide, set by the first
    host, also when ONNX Runtime's environment was made before it (``prepared``:
    :func:`wasmai.host.prepare_host`, as in ``wasmai run``'s worker)."""
    proc = subprocess.run([sys.executable, "-c", _BOMB_SCRIPT, str(Path(__file__).parent), str(probe),
                           str(cache_dir), start], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print({k: (v if k in ("peak_rss_mib", "ort_log") else [v[0], str(v[1])[:300]]) for k, v in out.items()})
    for key in ("load", "run"):
        tag, message = out[key]
        assert tag == "err" and message.startswith(
            "too-large: the run needs more memory than ONNX Runtime may use in this host (max-ort-memory 256 MiB)")
    assert out["fine"] == ["ok", "inline bytes are fine, 38 bytes long!!"]
    assert out["peak_rss_mib"] < 400
    # ONNX Runtime's own log lines went to the host's log, not to the process's stderr.
    assert any("ConstantOfShape" in line for line in out["ort_log"]) and "onnxruntime" not in proc.stderr


# --- finding 2 (rest): sleeps and single long kernels ------------------------------------------

def _nap_in_host(probe: str, cache: str, timeout_s: float, ms: int) -> str:
    """A probe instance under ``timeout_s`` sleeps ``ms`` ms in wasi:io/poll (the caller's
    process); the outcome as text."""
    host = Host(cache_dir=cache, timeout_s=timeout_s)
    try:
        host.instantiate(host.load_component(probe)).call_export("nap", ms)
    except Exception as exc:  # noqa: BLE001 - the in-process outcome is reported, not raised
        return f"{type(exc).__name__}: {exc}"
    return "returned"


@pytest.mark.slow
def test_a_sleep_in_wasi_poll_does_not_outlive_the_timeout_in_a_worker(probe, cache_dir):
    """Epochs stop wasm code, not a guest blocked in a host call: in process a 3 s sleep takes its
    3 s whatever the timeout (then counts as a timeout). In a worker (as ``wasmai run`` calls) the
    call ends at the timeout + 1 s with ComponentError ``timeout``, and this process goes on."""
    import time

    from wasmai.host import ComponentError
    from wasmai.worker import GRACE_S, in_worker

    t0 = time.perf_counter()
    outcome = _nap_in_host(str(probe), str(cache_dir), 0.3, 3000)
    in_process = time.perf_counter() - t0
    assert in_process >= 3.0 and "nap timed out after 0.300 s" in outcome
    t0 = time.perf_counter()
    with pytest.raises(ComponentError) as err:
        in_worker(_nap_in_host, str(probe), str(cache_dir), 0.3, 60_000)
    took = time.perf_counter() - t0
    print(f"in process {in_process:.2f} s; in a worker {took:.2f} s: {err.value}")
    assert err.value.code == "timeout" and "nap did not return within 1.300 s" in str(err.value)
    assert 0.3 + GRACE_S <= took < 3.0
    assert in_worker(_nap_in_host, str(probe), str(cache_dir), 0.3, 10) == "returned"


def long_kernel(n: int = 4096) -> bytes:
    """``ReduceSum(MatMul(A, A))`` with ``A = ConstantOfShape([n, n])``: one MatMul kernel of
    2 n^3 flops (137 GFLOP for 4096), which ONNX Runtime's terminate flag cannot interrupt."""
    shape = numpy_helper.from_array(np.array([n, n], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["a"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])),
             helper.make_node("MatMul", ["a", "a"], ["p"]),
             helper.make_node("ReduceSum", ["p"], ["y"], keepdims=0)]
    graph = helper.make_graph(nodes, "long", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
                              [shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION).SerializeToString()


def _long_kernel_in_host(probe: str, cache: str, timeout_s: float) -> str:
    """A probe instance under ``timeout_s`` runs :func:`long_kernel` on one ONNX Runtime thread (the
    caller's process; 1.35 s on two threads of this machine, too close to the 1.3 s bound)."""
    host = Host(cache_dir=cache, timeout_s=timeout_s, intra_op_threads=1)
    try:
        host.instantiate(host.load_component(probe)).call_export("load-graph-bytes", long_kernel())
    except Exception as exc:  # noqa: BLE001 - the in-process outcome is reported, not raised
        return f"{type(exc).__name__}: {exc}"
    return "returned"


@pytest.mark.slow
def test_a_single_long_kernel_does_not_outlive_the_timeout_in_a_worker(probe, cache_dir):
    """ONNX Runtime checks its terminate flag between kernels, so in process one long MatMul runs
    to its end past the timeout. In a worker (as ``wasmai run`` calls), the call ends at the
    timeout + 1 s with ComponentError ``timeout``, and this process goes on."""
    import time

    from wasmai.host import ComponentError
    from wasmai.worker import GRACE_S, in_worker

    t0 = time.perf_counter()
    outcome = _long_kernel_in_host(str(probe), str(cache_dir), 0.3)
    in_process = time.perf_counter() - t0
    t0 = time.perf_counter()
    with pytest.raises(ComponentError) as err:
        in_worker(_long_kernel_in_host, str(probe), str(cache_dir), 0.3)
    took = time.perf_counter() - t0
    print(f"in process {in_process:.2f} s ({outcome}); in a worker {took:.2f} s: {err.value}")
    assert in_process > 0.3 + GRACE_S + 0.5, "the kernel is too short on this machine to show the gap"
    assert err.value.code == "timeout" and "load-graph-bytes did not return within 1.300 s" in str(err.value)
    assert 0.3 + GRACE_S <= took < in_process
