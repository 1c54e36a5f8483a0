"""Face detection with MTCNN (Zhang et al. 2016, "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks"), as the ``face-detection`` task.

* :func:`convert_mtcnn` - facenet-pytorch's pretrained P-Net, R-Net and O-Net (the weights ship in
  its wheel: ``facenet_pytorch/data/{pnet,rnet,onet}.pt``) -> three ONNX graphs, each exported,
  validated against the PyTorch network and optionally int8-quantized by :func:`wasmai.convert.convert`
  on real photo crops, and one multi-graph manifest (``[[graphs]]``, see :mod:`wasmai.manifest`).
  ``wasmai build MANIFEST.toml`` embeds the three graphs in a ``face-detection`` component
  (``wasmai/templates/face-detection``, world ``wasmai:inference/face-detector@0.2.0`` in
  ``wasmai/wit/face-detection.wit``).
* :func:`detect` / :func:`annotate` / :func:`last_timings` - call the component's
  ``wasmai:inference/face-detection@0.2.0`` exports through :meth:`wasmai.host.Instance.call_export`.
* :func:`run_faces` / :func:`bench_faces` - ``wasmai run`` / ``bench`` (their fronts: :mod:`wasmai.cli._face`).

The component runs facenet-pytorch's ``detect_face`` (``models/utils/detect_face.py``, v2.6.0)
in the guest: image pyramid (``interpolate(mode="area")``), P-Net per scale, NMS within and
across scales, box regression and squaring, R-Net and O-Net on batched crops, landmarks and the
final "Min" NMS. facenet-pytorch's own ``MTCNN.detect`` is the reference (tests/test_face.py).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasmai.errors import WasmaiError
from wasmai.tasks import TaskRun, call_task, instantiate_task, verify_first

#: The task name (template folder, ``Task.FACE_DETECTION``, ``metadata.info().task``).
TASK = "face-detection"
#: The component's face-detection interface, as :meth:`Instance.call_export` names its functions.
INTERFACE = "wasmai:inference/face-detection@0.2.0"

#: facenet-pytorch's ``MTCNN`` defaults (``models/mtcnn.py``): smallest face in pixels, pyramid
#: scale factor, P-/R-/O-Net score thresholds.
MIN_FACE_SIZE = 20.0
SCALE_FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.7)

#: The three graphs: name -> (network class in ``facenet_pytorch.models.mtcnn``, input name,
#: example input shape for the export, dynamic axes of the input, output names in network order).
GRAPHS: dict[str, tuple[str, str, list[int], list[int], list[str]]] = {
    "pnet": ("PNet", "pnet_image", [1, 3, 120, 160], [2, 3], ["pnet_offsets", "pnet_probs"]),
    "rnet": ("RNet", "rnet_image", [1, 3, 24, 24], [0], ["rnet_offsets", "rnet_probs"]),
    "onet": ("ONet", "onet_image", [1, 3, 48, 48], [0], ["onet_offsets", "onet_landmarks", "onet_probs"]),
}

#: Photos from scikit-image's data folder (bundled, no download) for int8 calibration and validation;
#: none of them is a test photo (tests/test_face.py uses astronaut, camera, coffee, rocket, chelsea).
CALIBRATION_PHOTOS = ("motorcycle_left.png", "horse.png", "brick.png", "grass.png", "gravel.png", "page.png")
#: Crops per graph kept for R-Net / O-Net calibration and validation (a seeded random subset).
MAX_CROPS = 240

#: int8 (static QDQ) validation tolerance on every output (probabilities in 0..1, box offsets and
#: landmark fractions of a box side). Loose on purpose: a few P-Net probabilities move by up to ~0.4
#: under int8 (measured 0.40 on the real-photo samples); the pipeline-level check is the test's
#: box IoU >= 0.9 against facenet-pytorch.
INT8_ATOL = 0.5


def _network(cls_name: str) -> Any:
    """A facenet-pytorch MTCNN network with its pretrained weights, in eval mode.

    ``facenet_pytorch.models.mtcnn`` is imported as a module: the package ``__init__`` runs too
    (it imports the InceptionResnetV1 module and its downloader, which download nothing at
    import time) and ``detect_face`` imports torchvision (for its NMS, used by the reference only).
    Raises :class:`WasmaiError` if facenet-pytorch is not installed."""
    try:
        from facenet_pytorch.models import mtcnn  # type: ignore[import-untyped]
    except ImportError as exc:
        raise WasmaiError(f"facenet-pytorch is needed for the MTCNN weights ({exc}); "
                          "pip install --no-deps facenet-pytorch torchvision") from None
    net = getattr(mtcnn, cls_name)(pretrained=True)
    net.eval()
    return net


def pnet() -> Any:
    """facenet-pytorch's pretrained P-Net: image ``[1, 3, H, W]`` fp32 (``(x - 127.5) / 128``) ->
    box offsets ``[1, 4, h, w]`` and face probabilities ``[1, 2, h, w]`` (h = ceil((H - 2) / 2) - 4)."""
    return _network("PNet")


def rnet() -> Any:
    """facenet-pytorch's pretrained R-Net: crops ``[N, 3, 24, 24]`` -> offsets ``[N, 4]``, probabilities ``[N, 2]``."""
    return _network("RNet")


def onet() -> Any:
    """facenet-pytorch's pretrained O-Net: crops ``[N, 3, 48, 48]`` -> offsets ``[N, 4]``, landmarks
    ``[N, 10]`` (5 x then 5 y, fractions of the box) and probabilities ``[N, 2]``."""
    return _network("ONet")


def _photos() -> list[Path]:
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return [folder / name for name in CALIBRATION_PHOTOS if (folder / name).is_file()]


def lfw_mosaic() -> Any:
    """The 100 face images of scikit-image's ``lfw_subset.npy`` (Labeled Faces in the Wild, 25x25
    grey; the first 100 entries are faces) enlarged to 60x60 (Pillow bicubic) in a 10 x 10 grid: a
    600x600 RGB uint8 array of real faces that no test uses."""
    import numpy as np
    import skimage.data
    from PIL import Image

    faces = np.load(Path(skimage.data.__file__).parent / "lfw_subset.npy")[:100]
    side = 60
    grid = np.zeros((10 * side, 10 * side), dtype=np.uint8)
    for k, face in enumerate(faces):
        tile = Image.fromarray((face * 255).round().astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
        row, col = divmod(k, 10)
        grid[row * side:(row + 1) * side, col * side:(col + 1) * side] = np.asarray(tile)
    return np.repeat(grid[:, :, None], 3, axis=2)


@functools.lru_cache(maxsize=2)
def sample_inputs(seed: int = 0) -> dict[str, Any]:
    """Real-photo samples for each graph's calibration and validation: graph name -> array
    ``[K, 1, 3, H, W]`` (one batch-1 sample per entry), normalized as MTCNN does.

    Images: :data:`CALIBRATION_PHOTOS` and :func:`lfw_mosaic`. P-Net: each image area-resized to
    120x160 (``torch.nn.functional.interpolate(mode="area")``, the pipeline's resampling). R-Net /
    O-Net: the crops facenet-pytorch's own pipeline feeds them on those images (its PyTorch networks,
    forward passes recorded), at most :data:`MAX_CROPS` each, a seeded random subset."""
    import numpy as np
    import torch
    from PIL import Image
    from torch.nn.functional import interpolate

    try:
        from facenet_pytorch import MTCNN  # type: ignore[import-untyped]
    except ImportError as exc:
        raise WasmaiError(f"facenet-pytorch and torchvision are needed for MTCNN ({exc}); "
                          "pip install --no-deps facenet-pytorch torchvision") from None
    images = [np.asarray(Image.open(p).convert("RGB")) for p in _photos()] + [lfw_mosaic()]
    mtcnn = MTCNN(keep_all=True)
    crops: dict[str, list[Any]] = {"rnet": [], "onet": []}
    for name in crops:
        net = getattr(mtcnn, name)
        forward = net.forward

        def recorded(x: Any, _forward: Any = forward, _name: str = name) -> Any:
            crops[_name].extend(x[i:i + 1].numpy().copy() for i in range(x.shape[0]))
            return _forward(x)

        net.forward = recorded
    pnet_in = []
    with torch.no_grad():
        for rgb in images:
            img = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)
            pnet_in.append(((interpolate(img, size=(120, 160), mode="area") - 127.5) * 0.0078125).numpy())
            mtcnn.detect(Image.fromarray(rgb))
    rng = np.random.default_rng(seed)
    out = {"pnet": np.stack(pnet_in)}
    for name, found in crops.items():
        if not found:
            raise WasmaiError(f"no {name} crops from the calibration photos")
        pick = rng.permutation(len(found))[:MAX_CROPS]
        out[name] = np.stack([found[i] for i in sorted(pick)])
    return out


@dataclass
class MtcnnResult:
    """What :func:`convert_mtcnn` wrote: the manifest, the ONNX files by graph name, and per graph
    the :class:`wasmai.convert.ConvertResult` (validation, report, steps)."""

    manifest: Path
    graphs: dict[str, Path]
    results: dict[str, Any] = field(default_factory=dict)


def convert_mtcnn(output: str | os.PathLike[str], *, quantize: str = "none", name: str = "mtcnn",
                  version: str = "0.1.0", progress: Callable[[str, str, str], None] | None = None) -> MtcnnResult:
    """Convert facenet-pytorch's MTCNN into three ONNX graphs and one multi-graph manifest.

    ``output`` is the manifest path (``face.toml``); the graphs are written beside it as
    ``<stem>-pnet.onnx``, ``<stem>-rnet.onnx``, ``<stem>-onet.onnx``. P-Net keeps a dynamic height
    and width (``[1, 3, "height", "width"]``), R-Net and O-Net a dynamic batch. Each graph goes
    through :func:`wasmai.convert.convert` (TorchScript export, opset 17, ONNX Runtime basic
    optimization, validation against the PyTorch network on :func:`sample_inputs`: fp32 within
    atol 1e-4 / rtol 1e-3; ``quantize="static"``: int8 QDQ calibrated on the same real-photo samples,
    within :data:`INT8_ATOL`). The manifest's ``[detection]`` table holds facenet-pytorch's defaults
    (:data:`MIN_FACE_SIZE`, :data:`SCALE_FACTOR`, :data:`THRESHOLDS`).

    Raises :class:`WasmaiError` for an unknown ``quantize`` mode or a missing facenet-pytorch,
    :class:`wasmai.errors.ValidationError` when a graph disagrees with PyTorch. Nothing is written
    unless all three graphs convert."""
    import numpy as np

    from wasmai._atomic import atomic_path
    from wasmai.convert import ConvertOptions, InputSpec, convert
    from wasmai.manifest import GraphEntry, Manifest

    if quantize not in ("none", "static"):
        raise WasmaiError(f"--quantize {quantize!r}: MTCNN converts with none (fp32) or static (int8)")
    out = Path(output)
    if out.suffix != ".toml":
        raise WasmaiError(f"{out}: the multi-graph manifest must end in .toml")
    samples = sample_inputs()
    entries: list[GraphEntry] = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="wasmai-mtcnn-") as tmp:
        work = Path(tmp)
        for graph, (cls_name, input_name, shape, dynamic, output_names) in GRAPHS.items():
            npz = work / f"{graph}.npz"
            np.savez(npz, **{input_name: samples[graph]})
            opts = ConvertOptions(
                output=work / f"{out.stem}-{graph}.onnx", torch=f"wasmai.tasks.face:{graph}",
                inputs=[InputSpec(input_name, shape)], dynamic={input_name: dynamic}, output_names=output_names,
                name=f"{name}-{graph}", version=version, quantize=quantize,
                calibration=npz if quantize == "static" else None, validation=npz,
                atol=INT8_ATOL if quantize == "static" else None,
                rtol=0.0 if quantize == "static" else None)
            if progress is not None:
                progress(graph, "start", f"{cls_name} -> {opts.output.name}")
            res = convert(opts, progress)
            results[graph] = res
            man = Manifest.load(res.manifest)
            inputs = man.inputs
            if graph == "pnet":  # the exporter names dynamic axes after the input; say what they are
                inputs[0].shape = [1, 3, "height", "width"]
                for spec in man.outputs:
                    spec.shape = [*spec.shape[:2], "out_height", "out_width"]
            for table in (man.validation, man.quantization):
                for key in ("source", "calibration_source"):
                    if key in table:
                        table[key] = "real-photo samples (wasmai.tasks.face.sample_inputs)"
            entries.append(GraphEntry(name=graph, onnx=res.onnx.name, sha256=man.sha256, inputs=inputs,
                                      outputs=man.outputs, opset=man.opset, quantization=man.quantization,
                                      validation=man.validation, report=man.report, provenance=man.provenance))
        manifest = Manifest(name=name, task=TASK, onnx="", sha256="", inputs=[], outputs=[], version=version,
                            graphs=entries, detection={"min_face_size": MIN_FACE_SIZE, "scale_factor": SCALE_FACTOR,
                                                       "thresholds": list(THRESHOLDS)},
                            provenance={"source": "facenet-pytorch MTCNN (pretrained weights from its wheel)",
                                        "quantize": quantize})
        out.parent.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for entry in entries:
            dest = out.parent / entry.onnx
            with atomic_path(dest) as tmp_file:
                shutil.copyfile(work / entry.onnx, tmp_file)
            written[entry.name] = dest
        manifest.save(out)
    return MtcnnResult(manifest=out, graphs=written, results=results)


# ---------------------------------------------------------------------------------------------
# Calling a face-detection component


@dataclass
class Face:
    """One detected face, in pixels of the input image: box corners ``(x1, y1, x2, y2)``, the
    O-Net probability ``score`` (0..1) and five ``landmarks`` ``(x, y)``: left eye, right eye,
    nose, left and right mouth corners (as facenet-pytorch orders them)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: list[tuple[float, float]]


@dataclass
class DetectOptions:
    """``detect`` options (defaults: facenet-pytorch's MTCNN): smallest face side in pixels, pyramid
    scale factor (0 < f < 1), and the P-, R-, O-Net score thresholds (0..1)."""

    min_face_size: float = MIN_FACE_SIZE
    scale_factor: float = SCALE_FACTOR
    thresholds: tuple[float, float, float] = THRESHOLDS

    def to_wit(self) -> dict[str, Any]:
        """The WIT record ``detect-options``. Raises :class:`WasmaiError` for values out of range."""
        if not self.min_face_size >= 1:
            raise WasmaiError(f"min face size must be at least 1 pixel, not {self.min_face_size}")
        if not 0 < self.scale_factor < 1:
            raise WasmaiError(f"scale factor must be between 0 and 1, not {self.scale_factor}")
        if len(self.thresholds) != 3 or not all(0 <= t <= 1 for t in self.thresholds):
            raise WasmaiError(f"thresholds must be three values in 0..1, not {list(self.thresholds)}")
        return {"min-face-size": float(self.min_face_size), "scale-factor": float(self.scale_factor),
                "thresholds": tuple(float(t) for t in self.thresholds)}


def _call(instance: Any, func: str, *args: Any) -> Any:
    return call_task(instance, INTERFACE, func, *args)


def _face(record: dict[str, Any]) -> Face:
    b = record["bbox"]
    return Face(box=(b["x1"], b["y1"], b["x2"], b["y2"]), score=record["score"],
                landmarks=[(p["x"], p["y"]) for p in record["landmarks"]])


def detect(instance: Any, image: bytes, options: DetectOptions | None = None) -> list[Face]:
    """``face-detection.detect`` on a face-detection component's :class:`wasmai.host.Instance`:
    PNG/JPEG bytes -> faces, highest score first. ``options`` None = the defaults built into the
    component (the manifest's ``[detection]`` table). Raises InferenceError (``bad-image``,
    ``bad-input``, wasi-nn codes) or ComponentError."""
    opts = options.to_wit() if options is not None else None
    return [_face(r) for r in _call(instance, "detect", bytes(image), opts)]


def annotate(instance: Any, image: bytes, faces: Sequence[Face]) -> bytes:
    """``face-detection.annotate``: the image as PNG with a green box around each face and a dot on
    each landmark (drawn in the guest with imageproc). Raises InferenceError ``bad-image``."""
    records = [{"bbox": {"x1": f.box[0], "y1": f.box[1], "x2": f.box[2], "y2": f.box[3]}, "score": f.score,
                "landmarks": [{"x": x, "y": y} for x, y in f.landmarks]} for f in faces]
    return bytes(_call(instance, "annotate", bytes(image), records))


def last_timings(instance: Any) -> dict[str, int]:
    """Guest-measured microseconds of the last ``detect`` call, by stage: decode, pyramid (resizing
    and P-Net inputs), pnet (wasi-nn compute, all scales), nms (P-Net boxes, within and across
    scales), rnet (crops + compute + filtering), onet (crops + compute + landmarks + final NMS)."""
    return {k.replace("-", "_").removesuffix("_us"): int(v) for k, v in dict(_call(instance, "last-timings")).items()}


def default_options(instance: Any) -> DetectOptions:
    """``face-detection.default-options``: the component's defaults (its manifest's ``[detection]``)."""
    o = dict(_call(instance, "default-options"))
    t = [float(v) for v in o["thresholds"]]
    return DetectOptions(min_face_size=float(o["min-face-size"]), scale_factor=float(o["scale-factor"]),
                         thresholds=(t[0], t[1], t[2]))


def is_face_detector(info: dict[str, Any]) -> bool:
    """Whether ``metadata.info()`` describes a face-detection component."""
    return info.get("task") == TASK


def is_face_component(component: str | os.PathLike[str]) -> bool:
    """Whether the file ``component`` exports ``wasmai:inference/face-detection@0.2.0``: its bytes
    must contain the interface name (a scan of the mapped file, milliseconds even for a large
    embedded model) and ``wasm-tools component wit`` must list the export (nothing compiled). False
    for anything that is not a local component file (an ``oci://`` reference, a missing file, a
    core module)."""
    import mmap

    from wasmai.runtime import component_wit

    path = Path(component)
    if str(component).startswith("oci://") or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(INTERFACE.encode()) < 0:
                return False
        return f"export {INTERFACE};" in component_wit(path)
    except (OSError, ValueError, WasmaiError):
        return False


@dataclass(kw_only=True)
class FaceRunResult(TaskRun):
    """What ``wasmai run FACE.wasm --image PHOTO`` did (:class:`~wasmai.tasks.TaskRun`): the
    faces and, with ``annotate``, the PNG (``_annotated``, not serialized)."""

    image: str
    width: int
    height: int
    options: DetectOptions
    faces: list[Face]
    annotated: str | None = None
    _annotated: bytes = b""


def _open(path: Path, policy: Any, bundle: Any, verified: Any, host: Any) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Verify (when asked, before compiling), compile and instantiate; refuse a non-face component."""
    signature = verify_first(path, policy, bundle, verified)
    return (signature, *instantiate_task(host, path, signature, TASK))


def _image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the PNG/JPEG header, (0, 0) when Pillow cannot read it (the component
    reports the error)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError):
        return 0, 0


def run_faces(path: str | os.PathLike[str], *, image: str | os.PathLike[str] | bytes,
              options: DetectOptions | None = None, annotated: bool = False, policy: Any = None,
              bundle: str | os.PathLike[str] | None = None, sandbox: Any = None, verified: Any = None) -> FaceRunResult:
    """``wasmai run FACE.wasm --image PHOTO [--annotate OUT.png]``: verify (when ``policy`` is given,
    before anything is compiled), compile, instantiate, load the three graphs, ``detect`` (options
    default to the component's ``default-options``) and, with ``annotated``, ``annotate``. Raises
    WasmaiError (missing file, not a face-detection component), VerificationError,
    ComponentError / InferenceError from the component."""
    import time

    from wasmai.host import Host
    from wasmai.inputs import read_image
    from wasmai.sandbox import SandboxOptions

    path = Path(path)
    data = read_image(image)
    host = Host(**(sandbox or SandboxOptions()).host_kwargs())
    signature, comp, inst, info = _open(path, policy, bundle, verified, host)
    t0 = time.perf_counter()
    inst.load()
    load_ms = (time.perf_counter() - t0) * 1e3
    opts = options or default_options(inst)
    t0 = time.perf_counter()
    faces = detect(inst, data, opts)
    call_ms = (time.perf_counter() - t0) * 1e3
    timings = {k if k in ("scales", "rnet_boxes", "onet_boxes") else f"{k}_us": v
               for k, v in last_timings(inst).items()}
    png = annotate(inst, data, faces) if annotated else b""
    width, height = _image_size(data)
    return FaceRunResult(**TaskRun.facts(path, comp, inst, info),
                         image="<bytes>" if isinstance(image, bytes) else str(image), width=width, height=height,
                         options=opts, faces=faces, guest_timings_us=timings, load_ms=load_ms, call_ms=call_ms,
                         signature=signature, _annotated=png)


# ---------------------------------------------------------------------------------------------
# The Python reference pipeline and `wasmai bench FACE.wasm --image PHOTO`


class ReferencePipeline:
    """facenet-pytorch's ``MTCNN(keep_all=True).detect(img, landmarks=True)`` on a Pillow RGB image,
    with its three networks' forward passes timed (wrapped, results unchanged). ``timings_us`` of the
    last call: decode (Pillow), pnet / rnet / onet (the networks), other (pyramid resampling, NMS,
    crops: the rest of ``detect``). Needs facenet-pytorch and torchvision (its NMS)."""

    def __init__(self) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise WasmaiError(f"the Python reference needs facenet-pytorch and torchvision ({exc})") from None
        self.mtcnn = MTCNN(keep_all=True)
        self.timings_us: dict[str, int] = {}
        self._net_ns: dict[str, int] = {}
        for name in ("pnet", "rnet", "onet"):
            self._wrap(name)

    def _wrap(self, name: str) -> None:
        import time

        net = getattr(self.mtcnn, name)
        forward = net.forward

        def timed(*args: Any) -> Any:
            t0 = time.perf_counter_ns()
            out = forward(*args)
            self._net_ns[name] = self._net_ns.get(name, 0) + time.perf_counter_ns() - t0
            return out

        net.forward = timed

    def detect(self, data: bytes) -> list[Face]:
        """Faces in the PNG/JPEG ``data``, as facenet-pytorch finds them (largest first)."""
        import io
        import time

        from PIL import Image

        t0 = time.perf_counter_ns()
        img = Image.open(io.BytesIO(data)).convert("RGB")
        t1 = time.perf_counter_ns()
        self._net_ns = {}
        boxes, probs, points = self.mtcnn.detect(img, landmarks=True)
        t2 = time.perf_counter_ns()
        nets = {k: self._net_ns.get(k, 0) // 1000 for k in ("pnet", "rnet", "onet")}
        self.timings_us = {"decode_us": (t1 - t0) // 1000, **{f"{k}_us": v for k, v in nets.items()},
                           "other_us": (t2 - t1) // 1000 - sum(nets.values())}
        if boxes is None:
            return []
        return [Face(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])), score=float(p),
                     landmarks=[(float(x), float(y)) for x, y in m])
                for b, p, m in zip(boxes, probs, points, strict=True)]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (0.0 when either is empty)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_faces(found: Sequence[Face], reference: Sequence[Face]) -> list[tuple[Face, Face, float]]:
    """Pair each reference face with the found face of highest IoU (greedy, best pairs first):
    ``(found, reference, iou)`` triples; unpaired faces are left out (compare the counts)."""
    pairs = sorted(((box_iou(f.box, r.box), i, j) for i, f in enumerate(found) for j, r in enumerate(reference)),
                   reverse=True)
    used_f: set[int] = set()
    used_r: set[int] = set()
    out = []
    for iou, i, j in pairs:
        if i not in used_f and j not in used_r and iou > 0:
            used_f.add(i)
            used_r.add(j)
            out.append((found[i], reference[j], iou))
    return out


@dataclass
class FaceBenchResult:
    """``wasmai bench FACE.wasm --image PHOTO``: per-stage medians (µs) of the component (guest-measured)
    and of the Python reference on the same bytes, the whole call's percentiles (ms), and the agreement
    of the faces (count, smallest IoU, largest score and landmark differences)."""

    component: str
    image: str
    runs: int
    warmup: int
    threads: int
    faces: int
    reference_faces: int
    min_iou: float | None
    max_score_diff: float | None
    max_landmark_diff_px: float | None
    component_us: dict[str, float]
    reference_us: dict[str, float]
    component_call_ms: dict[str, float]
    reference_call_ms: dict[str, float]
    reference: str = "facenet-pytorch MTCNN(keep_all=True).detect(landmarks=True), torch CPU"


def _stats(values: Sequence[float]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "min": float(a.min())}


def agreement(found: Sequence[Face], reference: Sequence[Face]) -> tuple[float | None, float | None, float | None]:
    """(smallest IoU, largest |score difference|, largest landmark distance in pixels) over the
    matched pairs; Nones when nothing matched."""
    pairs = match_faces(found, reference)
    if not pairs:
        return None, None, None
    lm = max(max(((fx - rx) ** 2 + (fy - ry) ** 2) ** 0.5 for (fx, fy), (rx, ry) in zip(f.landmarks, r.landmarks,
                                                                                          strict=True))
             for f, r, _ in pairs)
    return min(p[2] for p in pairs), max(abs(f.score - r.score) for f, r, _ in pairs), lm


def bench_faces(path: str | os.PathLike[str], *, image: str | os.PathLike[str], runs: int = 10, warmup: int = 1,
                threads: int = 1, policy: Any = None, bundle: str | os.PathLike[str] | None = None,
                sandbox: Any = None, verified: Any = None, reference: bool = True) -> FaceBenchResult:
    """Time ``detect`` on one image ``runs`` times (after ``warmup``) in one instance with the guest's
    stage times, next to :class:`ReferencePipeline` on the same bytes; ONNX Runtime (the host's pool)
    and torch both get ``threads`` intra-op threads (torch's setting is process-wide); ``sandbox``
    (:class:`~wasmai.sandbox.SandboxOptions`) limits the instance as in :func:`run_faces`. Raises
    like :func:`run_faces`."""
    import time

    from wasmai.host import Host
    from wasmai.inputs import read_image
    from wasmai.sandbox import SandboxOptions

    if runs < 1 or warmup < 0 or threads < 1:
        raise WasmaiError("bench of a face-detection component needs -n >= 1, --warmup >= 0, --threads >= 1")
    path = Path(path)
    data = read_image(image)
    host = Host(intra_op_threads=threads, **(sandbox or SandboxOptions()).host_kwargs())
    _sig, _comp, inst, _info = _open(path, policy, bundle, verified, host)
    inst.load()
    stages = ("decode", "pyramid", "pnet", "nms", "rnet", "onet")
    comp_t: dict[str, list[float]] = {k: [] for k in stages}
    comp_call: list[float] = []
    faces: list[Face] = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        faces = detect(inst, data)
        dt = (time.perf_counter() - t0) * 1e3
        timings = last_timings(inst)
        if i >= warmup:
            comp_call.append(dt)
            for k in stages:
                comp_t[k].append(timings[k])
    ref_t: dict[str, list[float]] = {}
    ref_call: list[float] = []
    ref_faces: list[Face] = []
    if reference:
        import torch

        torch.set_num_threads(threads)
        ref = ReferencePipeline()
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            ref_faces = ref.detect(data)
            dt = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                ref_call.append(dt)
                for k, v in ref.timings_us.items():
                    ref_t.setdefault(k.removesuffix("_us"), []).append(v)
    import numpy as np

    iou, score, marks = agreement(faces, ref_faces) if reference else (None, None, None)
    return FaceBenchResult(
        component=str(path), image=str(image), runs=runs, warmup=warmup, threads=threads, faces=len(faces),
        reference_faces=len(ref_faces), min_iou=iou, max_score_diff=score, max_landmark_diff_px=marks,
        component_us={k: float(np.median(v)) for k, v in comp_t.items()},
        reference_us={k: float(np.median(v)) for k, v in ref_t.items()},
        component_call_ms=_stats(comp_call), reference_call_ms=_stats(ref_call) if ref_call else {})

