"""A graph that crashes ONNX Runtime ends a worker process, not `wasmai run` (hostile components,
finding 5): an integer Div of INT32_MIN by -1 raises SIGFPE on x86-64 inside ONNX Runtime."""

from __future__ import annotations

import json
import pickle
import platform
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import TensorProto, helper

from wasmai.host import ComponentError, Host, InferenceError
from wasmai.worker import crash_message, in_worker


def _int_div(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Div", ["a", "b"], ["q"])], "int-div",
        [helper.make_tensor_value_info("a", TensorProto.INT32, [1]),
         helper.make_tensor_value_info("b", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("q", TensorProto.INT32, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_host_errors_cross_the_worker_boundary_with_their_fields():
    for exc in (ComponentError("guest trapped", "trap"), InferenceError("too-large", "tensor x is 9 bytes")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and back.code == exc.code
    for _ in ("before", "after"):  # forked before this process has a host; spawned once it has one
        with pytest.raises(InferenceError) as err:
            in_worker(_raise_inference)
        assert err.value.code == "bad-input" and err.value.message == "no such input"
        assert in_worker(divmod, 7, 2) == (3, 1)
        Host()
    assert Host.created
    assert "SIGFPE" in crash_message(-8) and "exit status 3" in crash_message(3)


def _raise_inference() -> None:
    raise InferenceError("bad-input", "no such input")


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="INT_MIN / -1 traps (SIGFPE) on x86-64 only")
def test_a_graph_that_crashes_onnxruntime_is_one_error_line(build_component, tmp_path):
    component = build_component(_int_div(tmp_path / "div.onnx"))
    for name, a, b in (("ok", 7, 2), ("boom", np.iinfo(np.int32).min, -1)):
        np.save(tmp_path / f"a-{name}.npy", np.array([a], np.int32))
        np.save(tmp_path / f"b-{name}.npy", np.array([b], np.int32))

    ok = run_cli("run", str(component), "--input", f"a={tmp_path / 'a-ok.npy'}", "--input",
                 f"b={tmp_path / 'b-ok.npy'}", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["outputs"][0]["values"] == [3]  # the worker's result came back

    boom = run_cli("run", str(component), "--input", f"a={tmp_path / 'a-boom.npy'}", "--input",
                   f"b={tmp_path / 'b-boom.npy'}")
    assert boom.returncode == 1, (boom.returncode, boom.stderr)
    lines = boom.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "SIGFPE" in lines[0], boom.stderr
    assert "Traceback" not in boom.stderr

    # bench measures in a forked worker too: the same crash is one error line.
    bench = run_cli("bench", str(component), "--input", f"a={tmp_path / 'a-boom.npy'}", "--input",
                    f"b={tmp_path / 'b-boom.npy'}", "-n", "3", "--json")
    assert bench.returncode == 1, (bench.returncode, bench.stderr)
    lines = bench.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "SIGFPE" in lines[0], bench.stderr
    ok_bench = run_cli("bench", str(component), "--input", f"a={tmp_path / 'a-ok.npy'}", "--input",
                       f"b={tmp_path / 'b-ok.npy'}", "-n", "3", "--json")
    assert ok_bench.returncode == 0, ok_bench.stderr
    assert json.loads(ok_bench.stdout)["steady"]["latency_ms"]["p50"] > 0
