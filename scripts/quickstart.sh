#!/usr/bin/env bash
# Quickstart: set up this machine (guest toolchain, native host, example extras), then run the
# end-to-end example: pretrained EfficientNet-Lite0 -> signed component -> the cat photo's top-5.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup.sh"
bash "$here/examples/image-classification/run.sh"
