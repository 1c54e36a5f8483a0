"""Convert facenet-pytorch's pretrained MTCNN into face-detection models for ``wasmai build``.

    python examples/face-detection/convert.py out/            # out/face.toml (fp32) and out/face-int8.toml
    python examples/face-detection/convert.py out/ --variant fp32

Each variant is three graphs beside its manifest (``face-pnet.onnx``, ``face-rnet.onnx``,
``face-onet.onnx``; ``face-int8-*.onnx``), each exported and validated against its PyTorch network
by ``wasmai.convert`` (see ``wasmai.tasks.face.convert_mtcnn``); int8 is static QDQ calibrated on
real photo crops. Needs ``pip install --no-deps facenet-pytorch torchvision`` (the weights ship in
facenet-pytorch's wheel) and scikit-image (the photos). Exit 1 with one ``error:`` line on
failure; nothing is written for a variant unless all three of its graphs convert.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wasmai.errors import WasmaiError
from wasmai.tasks.face import convert_mtcnn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="output folder (face.toml, face-int8.toml and their graphs)")
    parser.add_argument("--variant", choices=("fp32", "int8"), action="append",
                        help="fp32 and/or int8 (default: both)")
    parser.add_argument("--name", default="mtcnn", help="model name recorded in the manifests")
    args = parser.parse_args()

    def progress(step: str, event: str, detail: str) -> None:
        if (event == "done" and step != "write") or (event == "start" and step in ("pnet", "rnet", "onet")):
            print(f"{'==' if step in ('pnet', 'rnet', 'onet') else '  ✓'} {step}: {detail}", flush=True)

    for variant in args.variant or ["fp32", "int8"]:
        manifest = Path(args.folder) / ("face.toml" if variant == "fp32" else "face-int8.toml")
        print(f"# {variant}", flush=True)
        try:
            result = convert_mtcnn(manifest, quantize="none" if variant == "fp32" else "static", name=args.name,
                                   progress=progress)
        except WasmaiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for graph, path in result.graphs.items():
            checks = result.results[graph].validation["outputs"]
            worst = ", ".join(f"{o['name']} max abs {o['max_abs_diff']:.3g}" for o in checks)
            print(f"{graph}: {path} ({path.stat().st_size / 1024:.0f} KiB; vs PyTorch: {worst})")
        print(f"manifest: {result.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
