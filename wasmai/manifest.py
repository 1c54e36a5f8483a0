"""The model manifest (TOML): what ``convert`` writes and ``build``, ``run`` and ``bench`` read.

Layout (all keys but ``[model]`` and ``[[inputs]]``/``[[outputs]]`` optional)::

    [model]
    name = "efficientnet-lite0"
    version = "0.1.0"
    task = "image-classification"      # or "tensor"
    onnx = "efficientnet-lite0.onnx"   # path relative to the manifest
    sha256 = "<hex sha256 of the .onnx bytes>"
    opset = 17

    [[inputs]]                          # one table per graph input, in graph order
    name = "input"
    dtype = "fp32"                      # wasi-nn tensor-type, lower case: fp16 fp32 fp64 bf16 u8 i32 i64
    shape = ["batch", 3, 224, 224]      # ints are fixed axes, strings are dynamic axes

    [[outputs]]
    name = "logits"
    dtype = "fp32"
    shape = ["batch", 1000]

    [preprocess]                        # image tasks only
    resize_shorter = 256                # shorter side to this many pixels (aspect kept); omit = none
    crop = [224, 224]                   # centre crop (height, width)
    color = "RGB"                       # or "BGR"
    layout = "NCHW"                     # or "NHWC"
    mean = [127.0, 127.0, 127.0]        # on 0..255 pixel values: (x - mean) / std
    std = [128.0, 128.0, 128.0]

    [postprocess]
    softmax = true                      # scores are softmax(logits); false = outputs are scores
    labels = ["tench", ...]             # class names by output index

    [text]                              # text-embedding only: the tokenizer
    tokenizer = "model.tokenizer.json"  # Hugging Face tokenizer.json, relative to the manifest
    tokenizer_sha256 = "<hex sha256>"   # embedded in the component with the graph
    max_length = 256                    # tokens per text, special tokens included (longer: truncated)

    [embedding]                         # text-embedding only: token vectors -> one vector per text
    output = "last_hidden_state"        # graph output (batch, sequence, dimension)
    dimension = 384
    pooling = "mean"                    # mean over the attention mask
    normalization = "l2"                # or "none"

    [audio]                             # voice-activity only (wasmai.tasks.vad): front end + segments
    sample_rate = 16000                 # Hz the model runs at; WAV input is resampled to it
    window = 512                        # new samples per model window
    context = 64                        # samples of the previous input prepended to each window
    state_shape = [2, 1, 128]           # recurrent state, zeros at first, carried between windows
    input = "input"                     # graph tensor names: window, state in, sample rate (i64
    state = "state"                     # scalar), probability out, state out
    sample_rate_input = "sr"
    output = "output"
    state_output = "stateN"
    threshold = 0.5                     # get_speech_timestamps defaults (neg_threshold, max_speech_s
    min_speech_ms = 250                 # optional)
    min_silence_ms = 100
    speech_pad_ms = 30

    [provenance] / [quantization] / [validation] / [report]   # free-form tables written by convert

A model of several graphs (face-detection: MTCNN's P-Net, R-Net, O-Net) has no ``[model].onnx``,
``[[inputs]]`` or ``[[outputs]]``; it lists its graphs instead, in the order the task runs them::

    [[graphs]]
    name = "pnet"                       # the guest finds the graph by this name
    onnx = "face-pnet.onnx"             # relative to the manifest
    sha256 = "<hex sha256 of the .onnx bytes>"
    opset = 17
    inputs = [{ name = "pnet_image", dtype = "fp32", shape = [1, 3, "height", "width"] }]
    outputs = [{ name = "pnet_offsets", ... }, ...]
    # optional per graph: quantization, validation, report, provenance tables (written by convert)

    [detection]                         # face-detection defaults (facenet-pytorch's MTCNN)
    min_face_size = 20.0                # pixels
    scale_factor = 0.709                # image pyramid
    thresholds = [0.6, 0.7, 0.7]        # P-Net, R-Net, O-Net scores
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wasmai.errors import WasmaiError
from wasmai.vocab import DTYPES, Color, Layout, Task, dtype_from_onnx

#: Largest model (bytes of the .onnx file) that ``wasmai build`` embeds in the component: the
#: bytes become a data segment, are copied into the guest's 32-bit linear memory (4 GiB at most)
#: when wasi-nn loads them, and the host keeps its own copy. Larger models are shipped beside the
#: component and loaded with ``--by-name`` (wasi-nn load-by-name). 256 MiB.
EMBED_LIMIT_BYTES = 256 * 1024 * 1024


@dataclass
class TensorSpec:
    """One graph input or output: name, wasi-nn dtype and shape (int = fixed, str = dynamic axis)."""

    name: str
    dtype: str
    shape: list[int | str]

    @property
    def dynamic_axes(self) -> list[int]:
        """Indices of the dynamic axes."""
        return [i for i, d in enumerate(self.shape) if not isinstance(d, int)]


@dataclass
class Preprocess:
    """Image preprocessing. Each channel value x in 0..255 becomes ``(x - mean[c]) / std[c]``."""

    crop: tuple[int, int]
    resize_shorter: int | None = None
    color: str = "RGB"
    layout: str = "NCHW"
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])

    def __post_init__(self) -> None:
        self.crop = (int(self.crop[0]), int(self.crop[1]))
        if self.color not in _values(Color):
            raise WasmaiError(f"manifest: preprocess.color must be RGB or BGR, not {self.color!r}")
        if self.layout not in _values(Layout):
            raise WasmaiError(f"manifest: preprocess.layout must be NCHW or NHWC, not {self.layout!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise WasmaiError("manifest: preprocess.mean and .std need 3 values each, std non-zero")
        if min(self.crop) <= 0 or (self.resize_shorter is not None and self.resize_shorter <= 0):
            raise WasmaiError("manifest: preprocess sizes must be positive")


@dataclass
class TextInput:
    """``[text]``: the Hugging Face ``tokenizer.json`` (path relative to the manifest, and its
    sha256) and the longest token sequence, special tokens included, the model is fed."""

    tokenizer: str
    tokenizer_sha256: str
    max_length: int

    def __post_init__(self) -> None:
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 2:
            raise WasmaiError(f"manifest: text.max_length must be an integer >= 2, not {self.max_length!r}")


@dataclass
class Embedding:
    """``[embedding]``: graph output ``output`` (fp32, (batch, sequence, dimension)) pooled to
    one vector per text (``pooling`` "mean": over the attention mask) and normalized
    (``normalization`` "l2" or "none")."""

    output: str
    dimension: int
    pooling: str = "mean"
    normalization: str = "l2"

    def __post_init__(self) -> None:
        if self.pooling != "mean":
            raise WasmaiError(f"manifest: embedding.pooling must be \"mean\", not {self.pooling!r}")
        if self.normalization not in ("l2", "none"):
            raise WasmaiError(f"manifest: embedding.normalization must be l2 or none, not {self.normalization!r}")
        if isinstance(self.dimension, bool) or not isinstance(self.dimension, int) or self.dimension <= 0:
            raise WasmaiError(f"manifest: embedding.dimension must be a positive integer, not {self.dimension!r}")


@dataclass
class GraphEntry:
    """One graph of a multi-graph model (``[[graphs]]``): its name, ONNX file (relative to the
    manifest), sha256, inputs and outputs, and the tables ``convert`` wrote for it."""

    name: str
    onnx: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int | None = None
    quantization: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``[[graphs]]`` entry (None values dropped)."""
        doc: dict[str, Any] = {"name": self.name, "onnx": self.onnx, "sha256": self.sha256,
                               "inputs": [asdict(s) for s in self.inputs], "outputs": [asdict(s) for s in self.outputs]}
        if self.opset is not None:
            doc["opset"] = self.opset
        for key in ("quantization", "validation", "report", "provenance"):
            if getattr(self, key):
                doc[key] = _drop_none(getattr(self, key))
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> GraphEntry:
        """From a parsed ``[[graphs]]`` entry. Raises KeyError / TypeError on missing keys."""
        return cls(name=doc["name"], onnx=doc["onnx"], sha256=doc.get("sha256", ""),
                   inputs=[TensorSpec(**s) for s in doc["inputs"]], outputs=[TensorSpec(**s) for s in doc["outputs"]],
                   opset=doc.get("opset"), quantization=doc.get("quantization", {}),
                   validation=doc.get("validation", {}), report=doc.get("report", {}),
                   provenance=doc.get("provenance", {}))


@dataclass
class Manifest:
    """A converted model and everything later stages need to know about it."""

    name: str
    task: str
    onnx: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    version: str = "0.1.0"
    opset: int | None = None
    preprocess: Preprocess | None = None
    softmax: bool = False
    labels: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    text: TextInput | None = None
    embedding: Embedding | None = None
    #: ``[audio]``: a voice-activity model's front end and segmentation settings (checked by
    #: :class:`wasmai.tasks.vad.AudioSettings`).
    audio: dict[str, Any] = field(default_factory=dict)
    #: A multi-graph model's graphs (``[[graphs]]``); empty for a single-graph model.
    graphs: list[GraphEntry] = field(default_factory=list)
    #: ``[detection]``: face-detection defaults (min_face_size, scale_factor, thresholds).
    detection: dict[str, Any] = field(default_factory=dict)
    #: Folder the manifest was read from; ``onnx`` is relative to it. Not serialized.
    base_dir: Path = field(default=Path("."), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.task not in _values(Task):
            raise WasmaiError(f"manifest: unknown task {self.task!r} (known: {', '.join(_values(Task))})")
        if self.graphs and not self.inputs and not self.outputs:
            self.inputs = [s for g in self.graphs for s in g.inputs]
            self.outputs = [s for g in self.graphs for s in g.outputs]
        for spec in [*self.inputs, *self.outputs]:
            if spec.dtype not in DTYPES:
                raise WasmaiError(f"manifest: tensor {spec.name!r} has unknown dtype {spec.dtype!r}")
        if self.task == Task.IMAGE_CLASSIFICATION and self.preprocess is None:
            raise WasmaiError("manifest: task image-classification needs a [preprocess] table")
        if self.task == Task.TEXT_EMBEDDING and (self.text is None or self.embedding is None):
            raise WasmaiError("manifest: task text-embedding needs [text] and [embedding] tables")

    @property
    def onnx_path(self) -> Path:
        """Absolute path of the ONNX model."""
        return (self.base_dir / self.onnx).resolve()

    def to_dict(self) -> dict[str, Any]:
        """The TOML document as a dict (None values dropped, TOML has no null)."""
        doc: dict[str, Any] = {
            "model": {"name": self.name, "version": self.version, "task": self.task,
                      "onnx": self.onnx, "sha256": self.sha256},
            "inputs": [asdict(s) for s in self.inputs],
            "outputs": [asdict(s) for s in self.outputs],
        }
        if self.opset is not None:
            doc["model"]["opset"] = self.opset
        if self.preprocess is not None:
            pre = asdict(self.preprocess)
            pre["crop"] = list(self.preprocess.crop)
            doc["preprocess"] = {k: v for k, v in pre.items() if v is not None}
        if self.softmax or self.labels:
            doc["postprocess"] = {"softmax": self.softmax, "labels": list(self.labels)}
        if self.graphs:  # a multi-graph model: the graphs carry the files and tensors
            for key in ("onnx", "sha256"):
                doc["model"].pop(key)
            doc.pop("inputs")
            doc.pop("outputs")
            doc["graphs"] = [g.to_dict() for g in self.graphs]
        if self.detection:
            doc["detection"] = dict(self.detection)
        if self.text is not None:
            doc["text"] = asdict(self.text)
        if self.embedding is not None:
            doc["embedding"] = asdict(self.embedding)
        if self.audio:
            doc["audio"] = _drop_none(self.audio)
        for key in ("provenance", "quantization", "validation", "report"):
            value = getattr(self, key)
            if value:
                doc[key] = _drop_none(value)
        return doc

    def dumps(self) -> str:
        """Serialize to TOML text (tomli-w)."""
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the manifest atomically to ``path``; returns the path."""
        from wasmai._atomic import write_text

        write_text(path, self.dumps())
        return Path(path)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], base_dir: Path = Path(".")) -> Manifest:
        """Build from a parsed TOML document. Raises :class:`WasmaiError` on missing keys."""
        try:
            model = doc["model"]
            pre = doc.get("preprocess")
            post = doc.get("postprocess", {})
            return cls(
                name=model["name"], version=model.get("version", "0.1.0"), task=model["task"],
                onnx=model["onnx"] if "graphs" not in doc else model.get("onnx", ""),
                sha256=model.get("sha256", ""), opset=model.get("opset"),
                inputs=[TensorSpec(**s) for s in doc.get("inputs", [])],
                outputs=[TensorSpec(**s) for s in doc.get("outputs", [])],
                preprocess=Preprocess(**pre) if pre else None,
                softmax=bool(post.get("softmax", False)), labels=list(post.get("labels", [])),
                provenance=doc.get("provenance", {}), quantization=doc.get("quantization", {}),
                audio=dict(doc.get("audio", {})),
                validation=doc.get("validation", {}), report=doc.get("report", {}),
                text=TextInput(**doc["text"]) if "text" in doc else None,
                embedding=Embedding(**doc["embedding"]) if "embedding" in doc else None,
                graphs=[GraphEntry.from_dict(g) for g in doc.get("graphs", [])],
                detection=dict(doc.get("detection", {})),
                base_dir=base_dir,
            )
        except (KeyError, TypeError) as exc:
            raise WasmaiError(f"manifest: missing or malformed key: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a manifest file. Raises :class:`WasmaiError` if unreadable or invalid."""
        path = Path(path)
        return cls.from_dict(read_toml(path, "manifest"), base_dir=path.resolve().parent)


def read_toml(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Parse a TOML file. Raises :class:`WasmaiError` (``<what> not found: ...`` or
    ``cannot read <what> ...``) if it is missing, unreadable or not valid TOML."""
    import tomllib  # here, not at module level: `wasmai run` imports this module but reads no TOML

    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WasmaiError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise WasmaiError(f"cannot read {what} {path}: {exc}") from None


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """``onnx.load`` without external data: an ``onnx.ModelProto``. Raises :class:`WasmaiError`
    (one line) if the file is missing or not a readable ONNX model."""
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise WasmaiError(f"{path} is not a readable ONNX model: {exc}") from None


def graph_io(path: str | os.PathLike[str]) -> tuple[list[TensorSpec], list[TensorSpec], int | None]:
    """Graph inputs (initializers excluded) and outputs of an ONNX file as :class:`TensorSpec`
    (dims with ``dim_value`` -> int, ``dim_param`` -> its name, unknown -> ``"dim<i>"``), and the
    default-domain opset. Raises :class:`WasmaiError` for unreadable files and for element types
    wasi-nn cannot carry (see :data:`wasmai.vocab.DTYPES`)."""
    import onnx

    model = load_onnx(path)
    inits = {i.name for i in model.graph.initializer}

    def spec(vi: Any) -> TensorSpec:
        tt = vi.type.tensor_type
        dtype = dtype_from_onnx(tt.elem_type)
        if dtype is None:
            raise WasmaiError(f"tensor {vi.name!r} has ONNX element type "
                              f"{onnx.TensorProto.DataType.Name(tt.elem_type)}, which wasi-nn cannot carry "
                              f"(supported: {', '.join(DTYPES)})")
        shape: list[int | str] = []
        for i, d in enumerate(tt.shape.dim):
            shape.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or f"dim{i}"))
        return TensorSpec(vi.name, dtype.name, shape)

    ins = [spec(v) for v in model.graph.input if v.name not in inits]
    outs = [spec(v) for v in model.graph.output]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return ins, outs, opset


def manifest_for(onnx_path: str | os.PathLike[str]) -> Path:
    """The conventional manifest path beside a model: ``model.onnx`` -> ``model.toml``."""
    return Path(onnx_path).with_suffix(".toml")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks."""
    import hashlib  # here: `wasmai run` imports this module before its worker forks, and hashes nothing

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _values(choices: type[Task] | type[Color] | type[Layout]) -> tuple[str, ...]:
    """The string values of a :mod:`wasmai.vocab` enum, in definition order."""
    return tuple(c.value for c in choices)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value if v is not None]
    return value
