#!/usr/bin/env bash
# The steps of the wasmai GitHub Action (action.yml at the repository root): install wasmai and the
# guest toolchain, convert (validate, optionally quantize) an ONNX model, build the component, sign
# it (keyless by default, or with a key) and verify it. action.yml runs this script with its inputs
# as WASMAI_* variables; run it the same way on any machine (tests/test_action.py does, in key mode):
#
#   WASMAI_MODEL=model.onnx WASMAI_SIGNING=key WASMAI_KEY=keys/wasmai.key bash scripts/action.sh
#
# Inputs (environment):
#   WASMAI_MODEL        the ONNX model (required)
#   WASMAI_TASK         tensor (default) or another template's task
#   WASMAI_QUANTIZE     none (default), dynamic, static or fp16
#   WASMAI_CONVERT_ARGS more `wasmai convert` arguments (labels, preprocessing, calibration, ...)
#   WASMAI_SIGNING      keyless (default: Sigstore with the job's OIDC token), key or none
#   WASMAI_KEY          private key (PEM from `wasmai keygen`) for WASMAI_SIGNING=key
#   WASMAI_PUBLIC_KEY   its public key for the verification (default: WASMAI_KEY with .pub for .key)
#   WASMAI_OUTPUT_DIR   where the component goes (default wasmai-out)
#   WASMAI_PACKAGE      what `pip install` installs: a wheel path or a version spec; default: this
#                       checkout (maturin builds the host, CARGO_TARGET_DIR ~/.cache/wasmai/host-target);
#                       none: use the wasmai already on PATH
# Outputs (appended to $GITHUB_OUTPUT when set, always printed): component, digest (sha256:...),
# bundle, manifest, onnx.
set -euo pipefail

model="${WASMAI_MODEL:?WASMAI_MODEL (the action input model) is required}"
task="${WASMAI_TASK:-tensor}"
quantize="${WASMAI_QUANTIZE:-none}"
signing="${WASMAI_SIGNING:-keyless}"
out="${WASMAI_OUTPUT_DIR:-wasmai-out}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
package="${WASMAI_PACKAGE:-$here}"

fail() { echo "error: $*" >&2; exit 1; }
[ -f "$model" ] || fail "model $model: no such file"
case "$signing" in
  keyless|none) ;;
  key) [ -n "${WASMAI_KEY:-}" ] && [ -f "$WASMAI_KEY" ] || fail "signing: key needs the key input (a PEM private key file)" ;;
  *) fail "signing: $signing (expected keyless, key or none)" ;;
esac
# GitHub folds the lines between ::group:: and ::endgroup:: in the job log; elsewhere they are plain text.
step() { echo "::group::wasmai: $*"; }
endstep() { echo "::endgroup::"; }

export PATH="$HOME/.cargo/bin:$PATH"
if [ "$package" != none ]; then
  step "pip install $package"
  CARGO_TARGET_DIR="${WASMAI_HOST_TARGET_DIR:-$HOME/.cache/wasmai/host-target}" python3 -m pip install -q "$package"
  endstep
fi

step "guest toolchain (wasmai toolchain install)"
# Without $CI: under $CI the toolchain installer also adds Debian's build-std packages, which only
# this project's own test suite needs (and which Ubuntu runners may not carry).
env -u CI wasmai toolchain install
endstep

name="$(basename "${model%.*}")"
mkdir -p "$out"
step "convert $model (task $task, quantize $quantize)"
# shellcheck disable=SC2086  # WASMAI_CONVERT_ARGS is a list of arguments
wasmai convert --onnx "$model" --task "$task" --quantize "$quantize" ${WASMAI_CONVERT_ARGS:-} -o "$out/$name.onnx"
endstep

step "build $out/$name.wasm"
wasmai build "$out/$name.onnx" -o "$out/$name.wasm" --json > "$out/build.json"
endstep
digest="sha256:$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["sha256"])' "$out/build.json")"
bundle=""

case "$signing" in
  keyless)
    step "sign (keyless) and verify against this workflow's identity"
    wasmai sign "$out/$name.wasm" --json > "$out/sign.json"
    wasmai verify "$out/$name.wasm" --github-repository "${GITHUB_REPOSITORY:?keyless verification runs in GitHub Actions}" \
      --github-ref "${GITHUB_REF:?}" --cert-identity "https://github.com/${GITHUB_WORKFLOW_REF:?}"
    bundle="$out/$name.wasm.sigstore.json"
    endstep ;;
  key)
    public="${WASMAI_PUBLIC_KEY:-${WASMAI_KEY%.key}.pub}"
    [ -f "$public" ] || fail "public key $public: no such file (set the public-key input)"
    step "sign with $WASMAI_KEY and verify with $public"
    wasmai sign "$out/$name.wasm" --key "$WASMAI_KEY" --json > "$out/sign.json"
    wasmai verify "$out/$name.wasm" --key "$public"
    bundle="$out/$name.wasm.sigstore.json"
    endstep ;;
  none) echo "wasmai: not signed (signing: none)" ;;
esac

outputs="component=$out/$name.wasm
digest=$digest
bundle=$bundle
manifest=$out/$name.toml
onnx=$out/$name.onnx"
echo "$outputs"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  echo "$outputs" >> "$GITHUB_OUTPUT"
fi
