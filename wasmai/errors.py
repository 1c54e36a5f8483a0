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


def printable(text: str) -> str:
    """``text`` as it may be shown on a terminal or in a log: every character ``str.isprintable``
    rejects (C0/C1 controls such as ESC, DEL, bidi overrides and other format characters, line
    breaks) becomes a visible escape, ``\\x1b`` or ``\\u202e``. Text chosen by a component (its
    labels and names, its stderr in a trap message, a wasi-nn message naming its tensors) goes
    through this before it reaches a user, so it cannot move the cursor, recolour or fake output."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
                   for c in text)
