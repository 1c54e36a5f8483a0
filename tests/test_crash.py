"""A graph that crashes ONNX Runtime ends a worker process, not `wasmai run` (hostile components,
finding 5): an integer Div of INT32_MIN by -1 raises SIGFPE on x86-64 inside ONNX Runtime."""

from __future__ import annotations

import json
import os
import pickle
import platform
import subprocess
import sys
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


#: A fresh process (no host in it, as the CLI's) using workers forked ahead of their call.
PREFORK = """
import os
import wasmai.worker
from wasmai.host import ComponentError
from wasmai.worker import in_worker, prefork

prefork(("json",), {"WASMAI_PREFORKED": "yes"})
print(in_worker(os.getenv, "WASMAI_PREFORKED"))
print(in_worker(os.getenv, "WASMAI_PREFORKED"))
prefork()
try:
    in_worker(os.abort)
except ComponentError as exc:
    print(exc.code, "SIGABRT" in str(exc))
prefork()
def made_after_the_fork(): pass
try:
    in_worker(made_after_the_fork)
except RuntimeError as exc:
    print("cannot take the call" in str(exc))
prefork()
print(wasmai.worker._EARLY[0].pid)
"""


def test_a_worker_forked_ahead_takes_the_next_call(repo_root):
    """:func:`wasmai.worker.prefork` (as ``wasmai run`` uses it): the next call runs in the worker
    forked ahead (it has the environment prefork gave it; the call after gets a new worker), a
    crash there is one ComponentError ``crash``, a call it cannot unpickle one RuntimeError, and a
    worker no call took is gone once the process exited."""
    proc = subprocess.run([sys.executable, "-c", PREFORK], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo_root)})
    assert proc.returncode == 0, proc.stderr
    first, second, crash, unpicklable, pid = proc.stdout.splitlines()
    assert (first, second, crash, unpicklable) == ("yes", "None", "crash True", "True")
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)


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
