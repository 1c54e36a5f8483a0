"""wasmai: ship ML models as signed, sandboxed WebAssembly components.

Pipeline (one module per stage): :mod:`wasmai.convert` (model -> ONNX + manifest),
:mod:`wasmai.build` (ONNX -> wasm32-wasip2 component importing wasi:nn),
:mod:`wasmai.sign` (Sigstore bundles), :mod:`wasmai.runtime` (``wasmai run`` / ``inspect`` over
:mod:`wasmai.host`, the embedded wasmtime host with wasi-nn on ONNX Runtime, sandboxed as
:mod:`wasmai.sandbox` says) and :mod:`wasmai.bench`. :mod:`wasmai.vocab` defines the shared
vocabulary (dtypes, tasks, execution targets). See ARCHITECTURE.md. Importing this package is
cheap: stages import their heavy dependencies lazily.
"""

__version__ = "0.1.0"

#: The wasi-nn version every component imports and the host implements.
WASI_NN_VERSION = "0.2.0-rc-2024-10-28"
#: Our WIT package (see wit/inference.wit).
WIT_PACKAGE = "wasmai:inference@0.2.0"
