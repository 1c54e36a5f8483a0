"""Shared graphs (host/src/nn/cache.rs): instances of one host that load the same graph bytes share
one ONNX Runtime session, kept under an LRU byte budget, and their computes on it overlap. Real
components built from the repo templates, real ONNX models from tests/onnx_factory.py."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import onnx_factory as factory
import pytest
import test_sandbox
from conftest import in_threads, slow_model
from onnx import TensorProto, helper, numpy_helper

from wasmai.errors import WasmaiError
from wasmai.host import ComponentError, Host
from wasmai.tensors import Tensor

pytestmark = pytest.mark.slow  # the fixtures build components with cargo-component

# The sandbox probe (tests/guests/sandbox): a component that loads any bytes or name it is given.
probe = test_sandbox.probe

#: Big MLPs: x [batch, 20000] -> [batch, 4] with 20000 x 8 fp32 weights, ~0.63 MiB of graph bytes each.
BIG = {"n_in": 20000, "hidden": 8}


@pytest.fixture(scope="module")
def comps(tmp_path_factory, build_component) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("shared-models")
    return {
        "mlp": build_component(factory.save(factory.mlp(), d / "mlp.onnx")),
        "big0": build_component(factory.save(factory.mlp(**BIG, seed=0), d / "big0.onnx")),
        "big1": build_component(factory.save(factory.mlp(**BIG, seed=1), d / "big1.onnx")),
        "slow": build_component(factory.save(slow_model(), d / "slow.onnx")),
    }


def _x(i: int, n_in: int = 16) -> np.ndarray:
    return np.linspace(-1, 1, 2 * n_in, dtype=np.float32).reshape(2, n_in) * (i + 1)


def test_instances_of_a_component_share_one_session(tmp_path, comps):
    host = Host(cache_dir=tmp_path)
    comp = host.load_component(comps["mlp"])
    a, b = host.instantiate(comp), host.instantiate(comp)
    a.load()
    b.load()
    stats = host.graph_cache_stats()
    # The second instance's guest asked for its graph by digest (load-by-name "sha256:<hex>") and
    # got the first instance's without the host reading the bytes again.
    assert (stats["graphs"], stats["misses"], stats["hits"], stats["by_digest"]) == (1, 1, 1, 1)
    assert stats["bytes"] == factory.mlp().ByteSize()
    for i, inst in enumerate((a, b)):
        (y,) = inst.infer([Tensor.from_numpy("x", _x(i))])
        np.testing.assert_allclose(y.numpy(), factory.mlp_reference(_x(i)), rtol=1e-5, atol=1e-5)
    # Released by both instances: the session stays cached for the next one.
    a.release()
    b.release()
    c = host.instantiate(comp)
    c.load()
    assert (host.graph_cache_stats()["hits"], host.graph_cache_stats()["by_digest"]) == (2, 2)


def test_a_digest_name_finds_only_graphs_of_the_same_component(tmp_path, comps, probe):
    """``load-by-name("sha256:<hex>")`` answers with a cached graph only for an instance of a
    component whose instances loaded those bytes: another component (the probe) cannot run the
    MLP by naming its hash, while another probe instance does get the probe's own graph."""
    host = Host(cache_dir=tmp_path)
    host.instantiate(host.load_component(comps["mlp"])).load()
    mlp_digest = hashlib.sha256(factory.mlp().SerializeToString()).hexdigest()
    probe_comp = host.load_component(probe)
    tag, message = host.instantiate(probe_comp).call_export("load-graphs", f"sha256:{mlp_digest}", 1)
    assert tag == "err" and message.startswith(f"not-found: no graph named 'sha256:{mlp_digest}'"), message

    data = np.arange(8, dtype=np.uint8)
    out = helper.make_tensor_value_info("y", TensorProto.UINT8, [8])
    const = helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(data))
    graph = helper.make_model(helper.make_graph([const], "constant", [], [out]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()
    tag, got = host.instantiate(probe_comp).call_export("load-graph-bytes", graph)
    assert (tag, bytes(got)) == ("ok", data.tobytes())
    own = f"sha256:{hashlib.sha256(graph).hexdigest()}"
    assert host.instantiate(probe_comp).call_export("load-graphs", own, 2) == ("ok", 2)
    assert host.graph_cache_stats()["by_digest"] == 2
    # The same probe loaded again is another loaded component: its digests start empty.
    assert host.instantiate(host.load_component(probe)).call_export("load-graphs", own, 1)[0] == "err"


def test_zero_budget_shares_nothing(tmp_path, comps):
    host = Host(cache_dir=tmp_path, graph_cache_mb=0)
    comp = host.load_component(comps["mlp"])
    for _ in range(2):
        inst = host.instantiate(comp)
        (y,) = inst.infer([Tensor.from_numpy("x", _x(0))])
        np.testing.assert_allclose(y.numpy(), factory.mlp_reference(_x(0)), rtol=1e-5, atol=1e-5)
    assert host.graph_cache_stats() == {"graphs": 0, "bytes": 0, "max_bytes": 0, "hits": 0, "by_digest": 0,
                                        "misses": 0, "evictions": 0}


def test_negative_budget_is_refused():
    with pytest.raises(WasmaiError, match="graph-cache-mb must be >= 0"):
        Host(graph_cache_mb=-1)


def test_lru_evicts_under_a_small_budget_and_a_held_graph_keeps_working(tmp_path, comps):
    host = Host(cache_dir=tmp_path, graph_cache_mb=1)  # room for one 0.63 MiB graph
    big0, big1 = host.load_component(comps["big0"]), host.load_component(comps["big1"])
    first = host.instantiate(big0)
    first.load()
    assert host.graph_cache_stats()["graphs"] == 1
    host.instantiate(big1).load()  # evicts big0's session, which `first` still holds
    stats = host.graph_cache_stats()
    assert (stats["graphs"], stats["evictions"], stats["misses"]) == (1, 1, 2)
    assert stats["bytes"] <= stats["max_bytes"] == 1 << 20
    x = _x(0, BIG["n_in"])
    (y,) = first.infer([Tensor.from_numpy("x", x)])
    np.testing.assert_allclose(y.numpy(), factory.mlp_reference(x, **BIG, seed=0), rtol=1e-4, atol=1e-4)
    host.instantiate(big0).load()  # evicted: a new session (a miss), which evicts big1's
    stats = host.graph_cache_stats()
    assert (stats["graphs"], stats["evictions"], stats["misses"], stats["hits"]) == (1, 2, 3, 0)


def test_concurrent_computes_on_one_session_are_correct(tmp_path, comps):
    host = Host(cache_dir=tmp_path, intra_op_threads=1)
    comp = host.load_component(comps["mlp"])
    instances = [host.instantiate(comp) for _ in range(4)]
    wrong: list[int] = []

    def work(i: int) -> None:
        for _ in range(50):
            (y,) = instances[i].infer([Tensor.from_numpy("x", _x(i))])
            if not np.allclose(y.numpy(), factory.mlp_reference(_x(i)), rtol=1e-5, atol=1e-5):
                wrong.append(i)

    assert not in_threads(work, 4) and not wrong
    assert host.graph_cache_stats()["graphs"] == 1


def test_a_callers_timeout_does_not_stop_the_others_run(tmp_path, comps, loop_iterations):
    """Caller A runs the shared slow graph past the host's timeout; caller B, started after A on
    the same session, runs alongside (it does not wait for A: it ends before A's deadline) and
    gets its right result while A's run is stopped."""
    host = Host(cache_dir=tmp_path, timeout_s=2.0)
    comp = host.load_component(comps["slow"])
    a, b = host.instantiate(comp), host.instantiate(comp)
    a.load()
    b.load()
    assert host.graph_cache_stats()["graphs"] == 1

    def slow_inputs(n: int) -> list[Tensor]:
        return [Tensor.from_numpy("x", np.array([0.5], np.float32)), Tensor.from_numpy("n", np.array([n], np.int64))]

    a_error: list[BaseException] = []
    a_end: list[float] = []

    def run_a() -> None:
        try:
            a.infer(slow_inputs(loop_iterations(20.0)))
        except ComponentError as exc:
            a_error.append(exc)
        a_end.append(time.perf_counter())

    thread = threading.Thread(target=run_a)
    thread.start()
    time.sleep(0.2)  # A is running
    n_b = loop_iterations(0.3)
    (y,) = b.infer(slow_inputs(n_b))
    b_end = time.perf_counter()
    thread.join()
    assert y.numpy().tolist() == [0.5 + n_b]
    assert len(a_error) == 1 and a_error[0].code == "timeout"
    assert b_end < a_end[0]
