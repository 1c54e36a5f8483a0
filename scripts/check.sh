#!/usr/bin/env bash
# Static checks, run by .ci/run before the tests (each stops the run on its first finding):
# ruff and mypy --strict on the Python package (config in pyproject.toml); rustfmt, clippy
# -D warnings and the unit tests (cargo test --lib) of the native host; rustfmt on the templates
# and test guests and clippy on every template as `wasmai build` renders it
# (scripts/clippy_templates.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

echo "check: ruff"
python3 -m ruff check
echo "check: mypy --strict wasmai/"
python3 -m mypy

echo "check: host (cargo fmt --check, cargo clippy -D warnings, cargo test --lib)"
(cd host && cargo fmt --check &&
  export CARGO_TARGET_DIR="${WASMAI_HOST_TARGET_DIR:-$HOME/.cache/wasmai/host-target}" &&
  cargo clippy --locked --release --quiet -- -D warnings &&
  cargo test --locked --release --lib --quiet)

# Template and guest sources declare `mod bindings;`, which cargo-component generates at build
# time, so rustfmt reads them from stdin (where it does not follow modules).
echo "check: rustfmt wasmai/templates/ tests/guests/"
for f in wasmai/templates/*/src/*.rs tests/guests/*/src/*.rs; do
  rustfmt --edition 2021 --emit stdout < "$f" | diff -u "$f" - > /dev/null ||
    { echo "check: $f is not formatted (rustfmt --edition 2021 $f)"; exit 1; }
done
echo "check: clippy on the rendered templates"
python3 scripts/clippy_templates.py
