"""``text-embedding``: sentence-embedding models (e.g. all-MiniLM-L6-v2) whose component carries
its own tokenizer, pooling and normalization (template ``wasmai/templates/text-embedding``, WIT
``wasmai/wit/text-embedding.wit``).

What each stage takes from here:

* ``convert --hf FOLDER --task text-embedding``: :func:`text_settings` (the folder's
  ``tokenizer.json`` and max sequence length), :func:`validation_feeds` (real sentences instead
  of random token ids), :func:`check_embeddings` (cosine of the pooled, normalized vectors
  against the PyTorch reference) and :func:`tables` (the manifest's ``[text]`` and
  ``[embedding]``).
* ``build``: :func:`render_values` (``text_model.rs``) and :func:`tokenizer_bytes` (embedded
  beside the graph).
* ``run --text`` / ``bench --text``: :class:`Embedder` (the component's ``text-embedding``
  export through :meth:`wasmai.host.Instance.call_export`), :class:`ReferencePipeline` (the
  Python pipeline: ``tokenizers`` + ONNX Runtime + mean pooling + L2), :func:`run_text` and
  :func:`bench_text`.

Pooling and normalization follow sentence-transformers (``Pooling`` with
``pooling_mode_mean_tokens``: sum of the token vectors where the attention mask is 1 divided by
the mask's sum clamped to >= 1e-9; ``Normalize``: ``torch.nn.functional.normalize``, norm clamped
to >= 1e-12).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wasmai.errors import WasmaiError
from wasmai.manifest import Embedding, Manifest, TextInput, sha256_file
from wasmai.tasks import call_task, instantiate_task, verify_first

#: The WIT interface the template exports (``wasmai/wit/text-embedding.wit``).
INTERFACE = "wasmai:inference/text-embedding@0.2.0"

#: Texts per graph run inside the component (``embed`` splits longer lists). 32 is
#: sentence-transformers' default ``encode(batch_size=32)``.
MAX_BATCH = 32

#: Lowest accepted cosine between a pooled, normalized vector of the converted model and the
#: reference's, per ``--quantize`` mode (the parity targets of issue 17: 0.9999 fp32, 0.99 int8).
MIN_COSINE: dict[str, float] = {"none": 0.9999, "fp16": 0.999, "dynamic": 0.99, "static": 0.99}

#: Real sentences for validation: ASCII, accented Latin, German, CJK, emoji, an empty text and
#: one longer than any max length (truncated).
SENTENCES: tuple[str, ...] = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "Le café était délicieux, mais l'addition était salée.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "今日は天気がとても良いので、公園を散歩しました。",
    "我喜欢在周末读书和喝茶。",
    "Great job on the launch 🚀🎉 see you at the party 🥳",
    "",
    " ".join(["The quick brown fox jumps over the lazy dog near the riverbank at dawn."] * 40),
)


# ---------------------------------------------------------------------------------------------
# convert


def text_settings(folder: Path, max_length: int | None = None) -> tuple[Path, int]:
    """The tokenizer and max sequence length of a local Hugging Face model folder.

    Returns ``(folder/tokenizer.json, max_length)``. ``max_length`` when given, else
    sentence-transformers' ``max_seq_length`` (``sentence_bert_config.json``, 256 for
    all-MiniLM-L6-v2), else the tokenizer's ``model_max_length`` (``tokenizer_config.json``) if
    below 10^6, else the model's ``max_position_embeddings`` (``config.json``), else 512.
    Raises :class:`WasmaiError` when the folder has no ``tokenizer.json`` (a fast tokenizer file;
    the component cannot run slow Python tokenizers) or the length is not an integer >= 2."""
    tokenizer = folder / "tokenizer.json"
    if not tokenizer.is_file():
        raise WasmaiError(f"--hf {folder}: no tokenizer.json (text-embedding embeds the model's Hugging Face "
                          "fast tokenizer; save one with tokenizer.save_pretrained)")

    def read(name: str) -> dict[str, Any]:
        try:
            doc = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    if max_length is None:
        candidates = (read("sentence_bert_config.json").get("max_seq_length"),
                      read("tokenizer_config.json").get("model_max_length"),
                      read("config.json").get("max_position_embeddings"), 512)
        max_length = next(int(c) for c in candidates
                          if isinstance(c, (int, float)) and not isinstance(c, bool) and 2 <= c < 1e6)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise WasmaiError(f"text-embedding: max length must be an integer >= 2, not {max_length!r}")
    return tokenizer, max_length


def load_tokenizer(path: str | os.PathLike[str], max_length: int) -> Any:
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json`` with truncation at ``max_length`` and
    no padding (the settings the component uses). Raises :class:`WasmaiError` when the package
    is missing or the file does not load."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise WasmaiError("text-embedding needs the tokenizers package: pip install tokenizers") from None
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises its own Exception types
        raise WasmaiError(f"{path}: not a Hugging Face tokenizer.json: {str(exc).splitlines()[0]}") from None
    tok.enable_truncation(max_length)
    tok.no_padding()
    return tok


def pad_id(path: str | os.PathLike[str]) -> int:
    """The padding token id ``tokenizer.json`` sets (``padding.pad_id``), 0 when it sets none
    (the component pads with the same id)."""
    try:
        padding = json.loads(Path(path).read_text(encoding="utf-8")).get("padding") or {}
    except (OSError, ValueError, AttributeError):
        return 0
    value = padding.get("pad_id", 0) if isinstance(padding, dict) else 0
    return int(value) if isinstance(value, int) else 0


def feeds_for(tokenizer: Any, texts: Sequence[str], input_names: Sequence[str], *, pad: int = 0,
              dtype: str = "int64") -> dict[str, np.ndarray]:
    """One batch for the graph: ``texts`` encoded by ``tokenizer`` (special tokens added,
    truncated as configured), padded to the longest with ``pad`` (see :func:`pad_id`) and
    attention mask 0, as ``{name: (batch, sequence) array}`` for the names in ``input_names``
    (``input_ids``, ``attention_mask``, ``token_type_ids``). Raises :class:`WasmaiError` for any
    other input name."""
    return encodings_to_feeds([tokenizer.encode(t) for t in texts], input_names, pad_id=pad, dtype=dtype)


def encodings_to_feeds(encodings: Sequence[Any], input_names: Sequence[str], *, pad_id: int = 0,
                       dtype: str = "int64") -> dict[str, np.ndarray]:
    """``tokenizers.Encoding`` objects -> the padded ``(batch, sequence)`` arrays of
    :func:`feeds_for`."""
    width = max([len(e.ids) for e in encodings] + [1])
    arrays = {"input_ids": np.full((len(encodings), width), pad_id, dtype=dtype),
              "attention_mask": np.zeros((len(encodings), width), dtype=dtype),
              "token_type_ids": np.zeros((len(encodings), width), dtype=dtype)}
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        arrays["input_ids"][row, :n] = enc.ids
        arrays["attention_mask"][row, :n] = enc.attention_mask
        arrays["token_type_ids"][row, :n] = enc.type_ids
    unknown = [n for n in input_names if n not in arrays]
    if unknown:
        raise WasmaiError(f"text-embedding: graph input(s) {', '.join(unknown)} are not input_ids, attention_mask "
                          "or token_type_ids")
    return {n: arrays[n] for n in input_names}


def feed_forward_matmuls(path: Path) -> list[str]:
    """Names of the MatMul nodes of a transformer's feed-forward blocks: a constant 2-D weight
    that is not square ((hidden, intermediate) or (intermediate, hidden); attention projections
    are (hidden, hidden)). ``convert --task text-embedding --quantize dynamic`` keeps these in fp32.

    Why (measured on all-MiniLM-L6-v2 with :data:`SENTENCES`, ONNX Runtime 1.32
    ``quantize_dynamic``, int8 per-channel weights, reduce_range): every MatMul in int8 gives a
    minimum cosine of 0.984 to the fp32 vectors (23 MB); the feed-forward blocks in fp32 give
    0.9945 (44 MB), above the 0.99 target. Their inputs (the GELU output and the LayerNorm output
    feeding a 4x wider layer) are where dynamic per-tensor uint8 activation quantization loses
    the most; no single layer dominates (leaving any one layer in fp32: 0.980-0.987)."""
    from wasmai.manifest import load_onnx

    graph = load_onnx(path).graph
    weights = {t.name: list(t.dims) for t in graph.initializer}
    return [n.name for n in graph.node
            if n.op_type == "MatMul" and len(n.input) == 2 and len(weights.get(n.input[1], [])) == 2
            and weights[n.input[1]][0] != weights[n.input[1]][1]]


def validation_feeds(tokenizer_path: Path, max_length: int, input_names: Sequence[str],
                     texts: Sequence[str] = SENTENCES) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    """One single-text feed per sentence of ``texts`` (default :data:`SENTENCES`) and the
    sample names (the first 40 characters of each text)."""
    tok = load_tokenizer(tokenizer_path, max_length)
    feeds = [feeds_for(tok, [t], input_names, pad=pad_id(tokenizer_path)) for t in texts]
    return feeds, [repr(t[:40]) for t in texts]


def pool(hidden: np.ndarray, mask: np.ndarray, normalization: str = "l2") -> np.ndarray:
    """Mean pooling over the attention mask and optional L2 normalization, as
    sentence-transformers: ``hidden`` (batch, sequence, dim) float, ``mask`` (batch, sequence)
    0/1 -> (batch, dim) float32."""
    h = hidden.astype(np.float32)
    m = mask.astype(np.float32)[..., None]
    pooled = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    if normalization == "l2":
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return np.asarray(pooled, dtype=np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, dim) arrays (float64, zero vectors give 0)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a64, axis=-1), np.linalg.norm(b64, axis=-1)
    return np.asarray((a64 * b64).sum(axis=-1) / np.maximum(na * nb, 1e-300))


def check_embeddings(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]],
                     feeds: list[dict[str, np.ndarray]], output_index: int, min_cosine: float,
                     names: Sequence[str]) -> dict[str, Any]:
    """Pool both models' token vectors (output ``output_index`` of each sample) over each feed's
    ``attention_mask``, L2-normalize, and compare: ``{"min_cosine", "mean_cosine",
    "threshold", "passed", "samples": [{"sample", "cosine"}]}``."""
    cos = []
    for ref, cand, feed in zip(reference, candidate, feeds, strict=True):
        mask = feed["attention_mask"]
        cos.append(float(cosine(pool(ref[output_index], mask), pool(cand[output_index], mask)).min()))
    worst = min(cos) if cos else 1.0
    return {"min_cosine": round(worst, 7), "mean_cosine": round(float(np.mean(cos)) if cos else 1.0, 7),
            "threshold": min_cosine, "passed": worst >= min_cosine, "pooling": "mean", "normalization": "l2",
            "samples": [{"sample": n, "cosine": round(c, 7)} for n, c in zip(names, cos, strict=True)]}


def tables(tokenizer_name: str, tokenizer_sha256: str, max_length: int, output: str,
           dimension: int) -> tuple[TextInput, Embedding]:
    """The manifest's ``[text]`` and ``[embedding]`` tables (mean pooling, L2)."""
    return (TextInput(tokenizer=tokenizer_name, tokenizer_sha256=tokenizer_sha256, max_length=max_length),
            Embedding(output=output, dimension=dimension, pooling="mean", normalization="l2"))


def manifest_tables(onnx_output: Path, settings: tuple[Path, int],
                    outputs: Sequence[Any]) -> dict[str, TextInput | Embedding]:
    """``{"text": ..., "embedding": ...}`` for a converted model written to ``onnx_output``: the
    tokenizer ``settings[0]`` (to be copied to :func:`tokenizer_name`), max length
    ``settings[1]``, and the graph output ``last_hidden_state`` (else the first output) whose
    last axis is the dimension. Raises :class:`WasmaiError` if that axis is not fixed."""
    tokenizer, max_length = settings
    hidden = next((o for o in outputs if o.name == "last_hidden_state"), outputs[0])
    dim = hidden.shape[-1] if hidden.shape else None
    if len(hidden.shape) != 3 or not isinstance(dim, int):
        raise WasmaiError(f"text-embedding: output {hidden.name!r} has shape {hidden.shape}, "
                          "expected (batch, sequence, dimension) with a fixed dimension")
    text, emb = tables(tokenizer_name(onnx_output), sha256_file(tokenizer), max_length, hidden.name, dim)
    return {"text": text, "embedding": emb}


def tokenizer_name(onnx_output: Path) -> str:
    """Where ``convert`` puts the tokenizer: ``emb.onnx`` -> ``emb.tokenizer.json`` beside it."""
    return onnx_output.with_suffix(".tokenizer.json").name


# ---------------------------------------------------------------------------------------------
# build


def _rust_str(text: str) -> str:
    from wasmai.build.render import _rust_str as rust_str

    return rust_str(text)


def render_values(man: Manifest) -> dict[str, str]:
    """Placeholders of ``text_model.rs.in`` from the manifest's ``[text]``/``[embedding]``.
    Raises :class:`WasmaiError` when they are missing or ``output`` is not a graph output."""
    text, emb = man.text, man.embedding
    if text is None or emb is None:
        raise WasmaiError("task text-embedding needs [text] and [embedding] tables in the manifest")
    outputs = [o.name for o in man.outputs]
    if emb.output not in outputs:
        raise WasmaiError(f"manifest: embedding.output {emb.output!r} is not a graph output ({', '.join(outputs)})")
    return {
        "tokenizer_sha256": _rust_str(text.tokenizer_sha256),
        "max_length": str(int(text.max_length)),
        "max_batch": str(MAX_BATCH),
        "dimension": str(int(emb.dimension)),
        "embedding_output": _rust_str(emb.output),
        "pooling": "Pooling::Mean",
        "normalization": "Normalization::L2" if emb.normalization == "l2" else "Normalization::None",
    }


def tokenizer_bytes(man: Manifest) -> bytes:
    """The bytes of the manifest's ``tokenizer.json``, checked against ``tokenizer_sha256``.
    Raises :class:`WasmaiError` if it is missing or differs."""
    if man.text is None:
        raise WasmaiError("task text-embedding needs a [text] table in the manifest")
    path = (man.base_dir / man.text.tokenizer).resolve()
    if not path.is_file():
        raise WasmaiError(f"manifest: tokenizer not found: {path}")
    if man.text.tokenizer_sha256 and sha256_file(path) != man.text.tokenizer_sha256.lower():
        raise WasmaiError(f"{path.name} does not match the manifest's text.tokenizer_sha256 (re-run wasmai convert)")
    return path.read_bytes()


# ---------------------------------------------------------------------------------------------
# run and bench


class Embedder:
    """The ``text-embedding`` export of an instantiated component (:class:`wasmai.host.Instance`).

    Every method raises :class:`wasmai.host.InferenceError` when the component returns an error
    and :class:`wasmai.host.ComponentError` for traps, timeouts and a component without the export.
    """

    def __init__(self, instance: Any) -> None:
        self.instance = instance

    def _call(self, func: str, *args: Any) -> Any:
        return call_task(self.instance, INTERFACE, func, *args)

    def info(self) -> dict[str, Any]:
        """``info``: dimension, max-length, pooling, normalization, tokenizer-sha256,
        output, max-batch (WIT field names)."""
        return dict(self._call("info"))

    def dimension(self) -> int:
        """Length of every vector (384 for all-MiniLM-L6-v2)."""
        return int(self._call("dimension"))

    def tokenize(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """The component's tokenizer alone: per text ``{"ids", "type-ids", "tokens"}``, with
        special tokens, truncated, unpadded."""
        return list(self._call("tokenize", list(texts)))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``embed``: (len(texts), dimension) float32, rows in text order (unit length with L2)."""
        vectors = self._call("embed", list(texts))
        dim = self.dimension() if not vectors else len(vectors[0])
        return np.asarray(vectors, dtype=np.float32).reshape(len(vectors), dim)

    def last_timings(self) -> dict[str, int]:
        """The last ``embed`` call's guest stages in microseconds (``tokenize-us``,
        ``inference-us``, ``pool-us``) and its ``texts`` and ``batches``."""
        return {str(k): int(v) for k, v in dict(self._call("last-timings")).items()}


class ReferencePipeline:
    """The same embedding in Python: ``tokenizers`` (the same ``tokenizer.json``, truncation at
    ``max_length``), ONNX Runtime on the same ONNX file, :func:`pool` (mean + L2). ``timings``
    holds the last call's stages in microseconds (``tokenize-us``, ``inference-us``,
    ``pool-us``)."""

    def __init__(self, onnx_path: Path, tokenizer_path: Path, max_length: int, output: str,
                 normalization: str = "l2", threads: int = 0) -> None:
        from wasmai.convert._base import _session

        self.tokenizer = load_tokenizer(tokenizer_path, max_length)
        self.pad_id = pad_id(tokenizer_path)
        self.session = _session(onnx_path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output = output
        self.normalization = normalization
        self.timings: dict[str, int] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32 in text order, batched like the component: longest
        texts first, :data:`MAX_BATCH` per graph run, each padded to its longest."""
        clock = time.perf_counter_ns
        stages = {"tokenize-us": 0, "inference-us": 0, "pool-us": 0}
        t0 = clock()
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))  # stable, like Rust's sort_by_key
        stages["tokenize-us"] += (clock() - t0) // 1000
        rows = []
        for start in range(0, len(texts), MAX_BATCH):
            t0 = clock()
            feed = encodings_to_feeds([encodings[i] for i in order[start:start + MAX_BATCH]], self.input_names,
                                      pad_id=self.pad_id)
            t1 = clock()
            (hidden,) = self.session.run([self.output], feed)
            t2 = clock()
            rows.append(pool(hidden, feed["attention_mask"], self.normalization))
            t3 = clock()
            stages["tokenize-us"] += (t1 - t0) // 1000
            stages["inference-us"] += (t2 - t1) // 1000
            stages["pool-us"] += (t3 - t2) // 1000
        self.timings = stages
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        out = np.empty((len(texts), rows[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(rows)
        return out


def reference_for(component: Path, info: Mapping[str, Any], model: str | os.PathLike[str] | None = None,
                  threads: int = 0) -> tuple[ReferencePipeline | None, str | None]:
    """The Python pipeline for a component: its ONNX file found by sha256 (as ``bench`` finds
    it: ``model`` or a manifest beside the component) and that manifest's tokenizer. Returns
    ``(pipeline, None)`` or ``(None, reason)``."""
    from wasmai.bench import find_ort_model

    onnx_path, reason = find_ort_model(component, str(info.get("model_sha256", "")), model)
    if onnx_path is None:
        return None, reason
    for toml in sorted(onnx_path.parent.glob("*.toml")):
        try:
            man = Manifest.load(toml)
        except WasmaiError:
            continue
        if man.onnx_path == onnx_path.resolve() and man.text is not None and man.embedding is not None:
            tok = (man.base_dir / man.text.tokenizer).resolve()
            if not tok.is_file():
                return None, f"the manifest's tokenizer {tok} is missing"
            return ReferencePipeline(onnx_path, tok, man.text.max_length, man.embedding.output,
                                     man.embedding.normalization, threads), None
    return None, f"no text-embedding manifest for {onnx_path.name} (its [text] table names the tokenizer)"


@dataclass
class EmbedResult:
    """What ``wasmai run --text`` did: the vectors, their norms, the pairwise cosine table, the
    guest's stage timings (µs) and the call's wall time (ms)."""

    component: str
    sha256: str
    model: str
    dimension: int
    texts: list[str]
    norms: list[float]
    cosine: list[list[float]]
    vectors: list[list[float]]
    info: dict[str, Any]
    call_ms: float
    load_ms: float
    guest_timings_us: dict[str, int] = field(default_factory=dict)
    signature: Any = None


def run_text(path: str | os.PathLike[str], texts: Sequence[str], *,
             graphs: Mapping[str, str | os.PathLike[str]] | None = None, allow_target_fallback: bool = False,
             policy: Any = None, bundle: str | os.PathLike[str] | None = None, sandbox: Any = None,
             verified: Any = None) -> EmbedResult:
    """Embed ``texts`` with a text-embedding component once (``wasmai run --text``): verify when
    ``policy`` is given (before compiling), instantiate under ``sandbox``
    (:class:`wasmai.sandbox.SandboxOptions`), ``load``, ``embed``. Returns an
    :class:`EmbedResult`. Raises WasmaiError for a missing file or no texts, VerificationError,
    and ComponentError / InferenceError from the component (a component without the
    ``text-embedding`` export: WasmaiError naming its task)."""
    from wasmai.host import Host
    from wasmai.sandbox import SandboxOptions

    path = Path(path)
    if not texts:
        raise WasmaiError("give at least one --text")
    signature = verify_first(path, policy, bundle, verified)
    host = Host(graphs=graphs, allow_target_fallback=allow_target_fallback,
                **(sandbox or SandboxOptions()).host_kwargs())
    comp, inst, meta = instantiate_task(host, path, signature, "text-embedding",
                                        ": --text needs a component built with --task text-embedding")
    emb = Embedder(inst)
    t0 = time.perf_counter()
    inst.load()
    load_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    vectors = emb.embed(texts)
    call_ms = (time.perf_counter() - t0) * 1e3
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    unit = vectors / np.maximum(norms, 1e-12)[:, None]
    table = np.clip(unit.astype(np.float64) @ unit.T.astype(np.float64), -1.0, 1.0)
    return EmbedResult(component=str(path), sha256=comp.sha256,
                       model=f"{meta.get('name', '')} {meta.get('version', '')}".strip(),
                       dimension=emb.dimension(), texts=list(texts), norms=[float(n) for n in norms],
                       cosine=table.tolist(), vectors=vectors.tolist(), info=emb.info(), call_ms=call_ms,
                       load_ms=load_ms, guest_timings_us=emb.last_timings(), signature=signature)


@dataclass
class TextBenchReport:
    """``wasmai bench --text``: the component's ``embed`` and the Python pipeline on the same texts,
    latency p50/p90 in ms and per-stage p50 in µs (guest stages measured inside the component),
    and the largest difference between their vectors (1 - cosine)."""

    component: str
    component_sha256: str
    texts: int
    n: int
    cold_start_ms: dict[str, float]
    component_ms: dict[str, float]
    guest_stages_us: dict[str, float]
    reference_ms: dict[str, float] | None
    reference_stages_us: dict[str, float] | None
    ratio_p50: float | None
    max_one_minus_cosine: float | None
    reference: str
    notes: list[str] = field(default_factory=list)


def _p(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "mean": round(float(a.mean()), 3)}


def bench_text(path: str | os.PathLike[str], texts: Sequence[str], *, n: int = 20, warmup: int = 3,
               threads: int = 0, model: str | os.PathLike[str] | None = None, native: bool = True,
               policy: Any = None, bundle: str | os.PathLike[str] | None = None, sandbox: Any = None,
               verified: Any = None) -> TextBenchReport:
    """Time ``embed(texts)`` in the component ``n`` times after ``warmup`` calls, with the guest's
    stage timings, and (``native``) the Python pipeline (:class:`ReferencePipeline`, same ONNX
    file and tokenizer, ``threads`` intra-op threads on both sides) in alternating blocks. Raises
    WasmaiError for bad arguments or a component that is not text-embedding."""
    from wasmai.host import Host
    from wasmai.sandbox import SandboxOptions

    path = Path(path)
    if not texts or n < 1 or warmup < 0:
        raise WasmaiError("bench --text needs at least one --text, -n >= 1 and --warmup >= 0")
    signature = verify_first(path, policy, bundle, verified)
    clock = time.perf_counter_ns
    host = Host(intra_op_threads=threads, **(sandbox or SandboxOptions()).host_kwargs())
    t0 = clock()
    comp, inst, meta = instantiate_task(host, path, signature, "text-embedding")
    t1 = clock()
    emb = Embedder(inst)
    inst.load()
    t2 = clock()
    first = emb.embed(texts)
    t3 = clock()
    cold = {"compile_ms": round(comp.compile_ms, 3), "cache_hit": float(comp.cache_hit),
            "load_instantiate_ms": round((t1 - t0) / 1e6, 3), "graph_load_ms": round((t2 - t1) / 1e6, 3),
            "first_embed_ms": round((t3 - t2) / 1e6, 3)}
    notes = [] if signature is not None else ["signature not verified (no policy option given)"]
    ref, reason = reference_for(path, meta, model, threads) if native else (None, "--no-native")
    for _ in range(warmup):
        emb.embed(texts)
        if ref is not None:
            ref.embed(texts)
    comp_ms: list[float] = []
    ref_ms: list[float] = []
    guest: dict[str, list[float]] = {"tokenize-us": [], "inference-us": [], "pool-us": []}
    host_stages: dict[str, list[float]] = {"tokenize-us": [], "inference-us": [], "pool-us": []}
    block = max(1, n // 4)
    done = 0
    while done < n:
        size = min(block, n - done)
        for _ in range(size):
            t0 = clock()
            emb.embed(texts)
            comp_ms.append((clock() - t0) / 1e6)
            timings = emb.last_timings()
            for k in guest:
                guest[k].append(float(timings[k]))
        if ref is not None:
            for _ in range(size):
                t0 = clock()
                ref.embed(texts)
                ref_ms.append((clock() - t0) / 1e6)
                for k in host_stages:
                    host_stages[k].append(float(ref.timings[k]))
        done += size
    max_diff = None
    if ref is not None:
        max_diff = float((1.0 - cosine(first, ref.embed(texts))).max())
    comp_p = _p(comp_ms)
    ref_p = _p(ref_ms) if ref_ms else None
    return TextBenchReport(
        component=str(path), component_sha256=comp.sha256, texts=len(texts), n=n, cold_start_ms=cold,
        component_ms=comp_p, guest_stages_us={k: _p(v)["p50"] for k, v in guest.items()},
        reference_ms=ref_p,
        reference_stages_us={k: _p(v)["p50"] for k, v in host_stages.items()} if ref_ms else None,
        ratio_p50=round(comp_p["p50"] / ref_p["p50"], 3) if ref_p else None,
        max_one_minus_cosine=max_diff,
        reference=("tokenizers + onnxruntime (same ONNX file and tokenizer.json) + mean pool + L2 in Python"
                   if ref is not None else f"not run: {reason}"),
        notes=notes)
