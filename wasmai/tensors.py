"""Tensors as they cross the component boundary, and the numpy helpers every stage shares.

* :class:`Tensor` - a named wasi-nn tensor: lower-case wasi-nn ``dtype`` (:data:`wasmai.vocab.DTYPES`),
  ``shape`` and row-major little-endian bytes.
* :func:`numpy_dtype` - the numpy dtype holding a wasi-nn dtype's elements.
* :func:`softmax` - the numerically stable softmax used by ``convert`` validation and by bench's
  ONNX Runtime baseline.

numpy is imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wasmai.errors import WasmaiError
from wasmai.vocab import DTYPES, dtype, dtype_from_numpy

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


def numpy_dtype(name: str) -> np.dtype[Any]:
    """The numpy dtype of wasi-nn dtype ``name`` (``fp32`` -> ``float32``; ``bf16`` -> ``uint16``,
    its raw bits). Raises :class:`WasmaiError` for an unknown name."""
    import numpy as np

    return np.dtype(dtype(name).numpy)


def softmax(x: NDArray[Any], axis: int = -1) -> NDArray[np.float64]:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``: probabilities in 0..1 summing to 1, the
    same shape as ``x``. Subtracting the maximum first keeps ``exp`` from overflowing and does not
    change the result (softmax is invariant to adding a constant)."""
    import numpy as np

    z = np.asarray(x, dtype=np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    result: NDArray[np.float64] = e / e.sum(axis=axis, keepdims=True)
    return result


@dataclass
class Tensor:
    """A named tensor crossing the component boundary.

    ``dtype`` is the wasi-nn tensor type in lower case (:data:`wasmai.vocab.DTYPES`), ``shape``
    the dimensions and ``data`` the row-major little-endian element bytes
    (``len(data) == prod(shape) * itemsize``). bf16 has no numpy dtype and is carried as uint16.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @classmethod
    def from_numpy(cls, name: str, array: Any, dtype: str | None = None) -> Tensor:
        """Tensor from a numpy array (or anything ``numpy.asarray`` takes). ``dtype`` (a wasi-nn
        type) defaults to the one matching the array's dtype; pass ``"bf16"`` for raw bfloat16
        bits in a uint16 array.

        ``data`` is one copy of the array's bytes (``tobytes``; a non-contiguous or big-endian
        array is first made contiguous little-endian): an immutable ``bytes`` that
        :meth:`wasmai.host.Instance.infer` lends to the guest without another copy.

        Raises :class:`WasmaiError` for array dtypes wasi-nn cannot carry (e.g. bool, int8) and
        for an array whose dtype is not the one ``dtype`` needs."""
        import numpy as np

        array = np.asarray(array)
        if dtype is None:
            found = dtype_from_numpy(array.dtype.name)
            if found is None:
                supported = sorted(d.numpy for d in DTYPES.values() if d.name != "bf16")
                raise WasmaiError(f"tensor {name!r}: numpy dtype {array.dtype} has no wasi-nn tensor type "
                                  f"(supported: {', '.join(supported)})")
            dtype = found.name
        if dtype not in DTYPES:
            raise WasmaiError(f"tensor {name!r}: unknown wasi-nn type {dtype!r}")
        want = numpy_dtype(dtype)
        if array.dtype != want:
            raise WasmaiError(f"tensor {name!r}: {dtype} needs a {want} array, got {array.dtype}")
        data = np.ascontiguousarray(array, dtype=want.newbyteorder("<")).tobytes()
        return cls(name=name, dtype=dtype, shape=tuple(int(d) for d in array.shape), data=data)

    def numpy(self) -> NDArray[Any]:
        """The data as a read-only numpy array of this shape (bf16 -> uint16 view of the raw bits).

        Raises :class:`WasmaiError` if the byte length does not match the shape and dtype."""
        import numpy as np

        info = dtype(self.dtype)
        count = 1
        for d in self.shape:
            count *= d
        if count * info.itemsize != len(self.data):
            raise WasmaiError(f"tensor {self.name!r}: {len(self.data)} bytes do not fit "
                              f"{self.dtype} {list(self.shape)}")
        return np.frombuffer(self.data, dtype=np.dtype(info.numpy).newbyteorder("<")).reshape(self.shape)
