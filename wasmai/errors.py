"""Errors that reach the user as one line and a non-zero exit code.

Exit codes (documented in the README and ``wasmai --help``):
0 ok, 1 user error (:class:`WasmaiError`), 2 usage error (bad flags), 3 internal error.
"""


class WasmaiError(Exception):
    """A failure caused by the input or the environment; the CLI prints ``error: <message>``
    and exits with :attr:`exit_code` (1)."""

    exit_code = 1


class ToolchainError(WasmaiError):
    """A required tool (rustc, cargo-component, wasm-tools, ...) is missing or failed."""


class VerificationError(WasmaiError):
    """A signature, digest or identity policy check failed."""


class ValidationError(WasmaiError):
    """A converted model disagrees with its reference beyond the requested tolerances."""


def first_line(exc: BaseException, limit: int = 400) -> str:
    """The first non-empty line of ``str(exc)`` (at most ``limit`` characters), or the exception's
    type name when it has no text: how a library's multi-line failure becomes one ``error:`` line."""
    for line in str(exc).strip().splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__
