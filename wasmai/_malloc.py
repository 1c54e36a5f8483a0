"""Keep large tensor buffers in glibc's heap, so that moving a large tensor does not page-fault.

glibc's ``malloc`` serves a request above its mmap threshold with fresh pages from ``mmap`` and
returns them with ``munmap`` on ``free``. The threshold adapts upwards as such blocks are freed,
but only up to 32 MiB on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``, glibc ``malloc/malloc.c``), so
every buffer of a larger tensor is new memory that the kernel faults in and zeroes page by page
on first touch. A 64 MiB fp32 tensor through an Identity graph allocates four such buffers per
``infer`` (the host's input and output copies, wasmtime's lifted result, the Python ``bytes``):
65,540 minor faults and ~180 ms of system time per call on the benchmark machine, against ~7 ms
for each copy itself (``benchmarks/results/``, issue #13).

:func:`keep_large_buffers` raises the threshold (and the heap-trim threshold with it) so those
buffers come from the heap and are reused from call to call. wasmai applies it in the processes
it owns (the worker of ``run``/``bench``/``inspect``, ``serve`` and its workers). It is
process-wide, so the library does not apply it behind a caller's back: an application that passes
large tensors through :class:`wasmai.host.Host` may call it, or set glibc's
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` environment variables (``mallopt(3)``).
The cost: up to ``trim_bytes`` of freed memory at the top of the heap stays with the process
instead of going back to the system.
"""

from __future__ import annotations

import os

#: ``mallopt(3)`` parameters (glibc ``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Requests up to this size come from the heap (a 1x3x2048x2048 fp32 image is 48 MiB).
MMAP_THRESHOLD_BYTES = 256 << 20

#: Free memory at the top of the heap kept rather than returned to the system.
TRIM_THRESHOLD_BYTES = 512 << 20


def keep_large_buffers(mmap_bytes: int = MMAP_THRESHOLD_BYTES, trim_bytes: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Serve ``malloc`` requests up to ``mmap_bytes`` from glibc's heap and keep up to
    ``trim_bytes`` of freed heap memory (both in bytes) in this process. Returns False, changing
    nothing, when the C library is not glibc (musl, macOS) or refuses a value."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (ValueError, OSError):
        return False
    import ctypes

    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_bytes))
