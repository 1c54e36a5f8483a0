"""voice-activity (issue 17): silero-vad as a component with the audio front end in the guest.

Real speech: two sentences spoken by espeak-ng, padded and separated with digital silence by sox,
at 16 kHz (the master) and resampled by sox to 8, 22.05, 44.1 and 48 kHz, stereo at 44.1 kHz,
32-bit float, 24-bit and 8-bit PCM. The reference is silero-vad's own Python pipeline
(``OnnxWrapper`` on the wheel's ``silero_vad.onnx`` + ``get_speech_timestamps``) on the 16 kHz
master: the component's segments must match it within one window (512 samples = 32 ms at
16 kHz). The component is the real one: ``wasmai convert`` of the wheel's graph, built by
``wasmai build`` (cargo-component), run in wasmai's host.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

pytest.importorskip("silero_vad")
pytest.importorskip("torch")


#: One model window at 16 kHz, in seconds (the parity tolerance of issue 17).
WINDOW_S = 512 / 16000

SENTENCES = ("Hello. This is a test of voice activity detection.",
             "The second sentence comes after a long pause, and it is spoken more slowly.")


def _sox(*args: object) -> None:
    # -R: repeatable (sox seeds its dither and noise generators with a fixed number), so every run
    # tests the same audio; with random dither an 8-bit file's 100 ms pause sat at the edge of
    # min-silence-ms in one CI run and the component and silero split it differently.
    subprocess.run(["sox", "-R", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="session")
def audio(tmp_path_factory) -> dict[str, Path]:
    """Name -> WAV file. ``master``: 16 kHz 16-bit mono, 1.2 s silence, sentence 1, 1.7 s silence,
    sentence 2 (espeak-ng -s 140), 0.9 s silence, normalized to -3 dBFS; the others are sox
    conversions of it, plus 3 s of digital silence and of white, pink and brown noise."""
    d = tmp_path_factory.mktemp("vad-audio")
    parts = []
    for i, (text, speed) in enumerate(zip(SENTENCES, (175, 140), strict=True)):
        raw = d / f"say{i}.wav"
        subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(raw), text], check=True, capture_output=True)
        _sox(raw, "-r", 16000, "-b", 16, d / f"say{i}-16k.wav")
        parts.append(d / f"say{i}-16k.wav")
    for name, seconds in (("pad0", 1.2), ("pad1", 1.7), ("pad2", 0.9)):
        _sox("-n", "-r", 16000, "-b", 16, "-c", 1, d / f"{name}.wav", "trim", 0, seconds)
    master = d / "master.wav"
    _sox(d / "pad0.wav", parts[0], d / "pad1.wav", parts[1], d / "pad2.wav", master, "gain", "-n", -3)
    files = {"master": master}
    for rate in (8000, 22050, 44100, 48000):
        files[f"{rate}"] = d / f"speech-{rate}.wav"
        _sox(master, "-r", rate, files[f"{rate}"])
    files["stereo-44100"] = d / "stereo-44100.wav"
    _sox(master, "-r", 44100, "-c", 2, files["stereo-44100"])
    for name, fmt in (("float32", ["-e", "floating-point", "-b", 32]), ("pcm24", ["-b", 24]),
                      ("pcm8", ["-e", "unsigned-integer", "-b", 8])):
        files[name] = d / f"speech-{name}.wav"
        _sox(master, *fmt, files[name])
    files["silence"] = d / "silence.wav"
    _sox("-n", "-r", 16000, "-b", 16, "-c", 1, files["silence"], "trim", 0, 3)
    for noise, vol in (("whitenoise", 0.1), ("pinknoise", 0.3), ("brownnoise", 0.5)):
        files[noise] = d / f"{noise}.wav"
        _sox("-n", "-r", 16000, "-b", 16, "-c", 1, files[noise], "synth", 3, noise, "vol", vol)
    return files


@pytest.fixture(scope="session")
def vad_model(tmp_path_factory) -> Path:
    """The wheel's silero_vad.onnx through ``wasmai convert --task voice-activity`` (validated,
    graph unchanged: --optimize none)."""
    from wasmai.tasks.vad import silero_onnx_path

    out = tmp_path_factory.mktemp("vad-model") / "silero-vad.onnx"
    proc = run_cli("convert", "--onnx", silero_onnx_path(), "--task", "voice-activity", "--optimize", "none",
                   "-o", out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def vad_component(vad_model, build_component) -> Path:
    return build_component(vad_model)


@pytest.fixture(scope="session")
def detector(vad_component):
    from wasmai.host import Host
    from wasmai.tasks.vad import Detector

    host = Host(intra_op_threads=1)
    inst = host.instantiate(host.load_component(vad_component))
    inst.load()
    return Detector(inst)


@pytest.fixture(scope="session")
def reference():
    from wasmai.tasks.vad import ReferencePipeline

    return ReferencePipeline()


@pytest.fixture(scope="session")
def master_segments(audio, reference) -> list[tuple[float, float]]:
    """get_speech_timestamps on the 16 kHz master, in seconds."""
    wav = audio["master"].read_bytes()
    return [(s["start"] / 16000, s["end"] / 16000) for s in reference.speech_timestamps(reference.audio(wav))]


def _pairs(segments) -> list[tuple[float, float]]:
    return [(s.start_s, s.end_s) for s in segments]


def _max_diff(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    assert len(a) == len(b), f"segment counts differ: {a} vs {b}"
    return max([0.0, *(max(abs(x[0] - y[0]), abs(x[1] - y[1])) for x, y in zip(a, b, strict=True))])


def test_convert_records_the_audio_front_end(vad_model):
    import onnx

    from wasmai.manifest import Manifest, sha256_file
    from wasmai.tasks.vad import AudioSettings, silero_onnx_path

    man = Manifest.load(vad_model.with_suffix(".toml"))
    assert man.task == "voice-activity"
    s = AudioSettings.from_manifest(man)
    assert (s.sample_rate, s.window, s.context, s.state_shape) == (16000, 512, 64, (2, 1, 128))
    assert (s.input, s.state, s.sample_rate_input, s.output, s.state_output) == ("input", "state", "sr", "output",
                                                                               "stateN")
    assert (s.threshold, s.min_speech_ms, s.min_silence_ms, s.speech_pad_ms) == (0.5, 250, 100, 30)
    assert man.validation["passed"] is True and "audio windows" in man.validation["source"]
    # --optimize none: silero's own graph (the same nodes; convert's checks add inferred shapes)
    original, converted = onnx.load(str(silero_onnx_path())), onnx.load(str(vad_model))
    assert [n.op_type for n in converted.graph.node] == [n.op_type for n in original.graph.node]
    assert man.sha256 == sha256_file(vad_model)


def test_convert_refuses_a_graph_without_a_state(tmp_path):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "x.onnx")
    proc = run_cli("convert", "--onnx", tmp_path / "x.onnx", "--task", "voice-activity", "-o", tmp_path / "o.onnx")
    assert proc.returncode == 1
    assert "error: --task voice-activity: the graph has no fp32 state input" in proc.stderr
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "o.toml").exists()


@pytest.mark.slow
def test_16k_probabilities_and_segments_equal_silero(detector, reference, audio, master_segments):
    """Same samples in (16 kHz 16-bit), so the same framing must give the same numbers."""
    wav = audio["master"].read_bytes()
    probs = np.array(detector.probabilities(wav))
    ref = np.array(reference.probabilities(reference.audio(wav)))
    assert probs.shape == ref.shape and len(probs) == -(-len(reference.audio(wav)) // 512)
    assert np.max(np.abs(probs - ref)) <= 1e-5
    segs = _pairs(detector.detect(wav))
    assert len(segs) == 4  # the sentences, each split once at a pause (silero's own result, checked next)
    assert _max_diff(segs, master_segments) <= 1e-9
    t = detector.last_timings()
    # 16 kHz mono: nothing to resample (a copy, which the guest's clock may read as 1 us).
    assert t["windows"] == len(probs) and t["inference_us"] > 0 and t["resample_us"] < 50


@pytest.mark.slow
@pytest.mark.parametrize("name", ["22050", "44100", "48000", "stereo-44100", "float32", "pcm24", "pcm8", "8000"])
def test_segments_match_silero_within_one_window(detector, reference, audio, master_segments, name):
    """Other rates, channels and sample formats: within one window of silero-vad on the 16 kHz
    master, and of silero-vad's pipeline fed the same file (scipy decoding + resample_poly)."""
    wav = audio[name].read_bytes()
    segs = _pairs(detector.detect(wav))
    same_file = [(s["start"] / 16000, s["end"] / 16000)
                 for s in reference.speech_timestamps(reference.audio(wav))]
    assert _max_diff(segs, same_file) <= WINDOW_S + 1e-9
    if name == "8000":
        # 8 kHz audio has nothing above 4 kHz, so the model (run at 16 kHz on the upsampled
        # audio) sees other input than the master's; measured: one boundary 2 windows off.
        # silero-vad's own 8 kHz mode does worse on this file (test below).
        assert _max_diff(segs, master_segments) <= 2 * WINDOW_S + 1e-9
    else:
        assert _max_diff(segs, master_segments) <= WINDOW_S + 1e-9


@pytest.mark.slow
def test_8k_resampled_is_as_close_as_silero_8k_mode(detector, reference, audio, master_segments):
    """Why the guest resamples 8 kHz input to 16 kHz instead of running the model's own 8 kHz mode
    (256-sample windows, 32-sample context): measured against the 16 kHz master, the resampled run
    is at least as close as silero-vad's 8 kHz pipeline on the same file."""
    import torch
    from silero_vad import get_speech_timestamps

    from wasmai.tasks.vad import decode_wav

    x, rate = decode_wav(audio["8000"].read_bytes())
    assert rate == 8000
    native = [(s["start"] / 8000, s["end"] / 8000)
              for s in get_speech_timestamps(torch.from_numpy(x), reference.model, sampling_rate=8000)]
    ours = _pairs(detector.detect(audio["8000"].read_bytes()))
    native_diff = _max_diff(native, master_segments) if len(native) == len(master_segments) else float("inf")
    assert _max_diff(ours, master_segments) <= native_diff


@pytest.mark.slow
@pytest.mark.parametrize("name", ["silence", "whitenoise", "pinknoise", "brownnoise"])
def test_silence_and_noise_have_no_speech(detector, reference, audio, name):
    wav = audio[name].read_bytes()
    assert detector.detect(wav) == []
    assert reference.speech_timestamps(reference.audio(wav)) == []


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    {"min_silence_ms": 600}, {"threshold": 0.8}, {"speech_pad_ms": 200}, {"min_speech_ms": 1500},
    {"max_speech_s": 1.5}, {"threshold": 0.6, "neg_threshold": 0.5},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_options_are_get_speech_timestamps_options(detector, reference, audio, options):
    from wasmai.tasks.vad import DetectOptions

    opts = DetectOptions(**options)
    wav = audio["master"].read_bytes()
    segs = _pairs(detector.detect(wav, opts))
    ref = [(s["start"] / 16000, s["end"] / 16000) for s in reference.speech_timestamps(reference.audio(wav), opts)]
    assert segs and _max_diff(segs, ref) <= 1e-9
    assert segs != _pairs(detector.detect(wav))  # each option changes the result on this audio


@pytest.mark.slow
def test_bad_audio_is_one_error(detector, vad_component, tmp_path):
    from wasmai.errors import WasmaiError
    from wasmai.host import InferenceError
    from wasmai.tasks.vad import DetectOptions

    with pytest.raises(InferenceError) as err:
        detector.detect(b"RIFF\x00\x00\x00\x00WAVEjunk")
    assert err.value.code == "bad-input"
    with pytest.raises(WasmaiError, match="threshold 1.5 is not in 0..1"):
        detector.detect(b"", DetectOptions(threshold=1.5))
    empty, short = io.BytesIO(), io.BytesIO()  # no samples at all; fewer than one window
    for buf, frames in ((empty, 0), (short, 100)):
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(bytes(2 * frames))
    assert detector.detect(empty.getvalue()) == [] and detector.probabilities(empty.getvalue()) == []
    assert detector.detect(short.getvalue()) == [] and len(detector.probabilities(short.getvalue())) == 1
    (tmp_path / "not.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    proc = run_cli("run", vad_component, "--audio", tmp_path / "not.wav")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: bad-input: not a readable WAV file") and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_end_to_end_convert_build_sign_verify_run_bench(vad_model, vad_component, audio, master_segments, tmp_path):
    """CLI: (convert: the vad_model fixture) -> build -> keygen -> sign --key -> verify --key ->
    run --key --audio (table and --json) -> bench --audio; a tampered copy is refused."""
    wasm = tmp_path / "vad.wasm"
    proc = run_cli("build", vad_model, "-o", wasm)
    assert proc.returncode == 0, proc.stderr
    assert wasm.read_bytes() == vad_component.read_bytes()  # same inputs, same bytes
    assert run_cli("keygen", "-o", tmp_path / "keys").returncode == 0
    key, pub = tmp_path / "keys" / "wasmai.key", tmp_path / "keys" / "wasmai.pub"
    proc = run_cli("sign", wasm, "--key", key)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("verify", wasm, "--key", pub)
    assert proc.returncode == 0, proc.stderr

    proc = run_cli("run", wasm, "--key", pub, "--audio", audio["stereo-44100"])
    assert proc.returncode == 0, proc.stderr
    assert "signature verified" in proc.stdout and "4 speech segment(s)" in proc.stdout
    proc = run_cli("run", wasm, "--key", pub, "--audio", audio["44100"], "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    got = [(s["start_s"], s["end_s"]) for s in out["segments"]]
    assert _max_diff(got, master_segments) <= WINDOW_S + 1e-9
    assert all(0.5 <= s["probability"] <= 1 for s in out["segments"])
    assert out["sample_rate"] == 44100 and out["guest_timings_us"]["resample_us"] > 0

    proc = run_cli("bench", wasm, "--key", pub, "--audio", audio["22050"], "-n", 3, "--warmup", 1, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for side in ("component_us", "reference_us"):
        assert set(report[side]) == {"decode_us", "resample_us", "inference_us", "postprocess_us"}
        assert report[side]["inference_us"] > 0
    assert report["max_boundary_diff_ms"] is not None and report["max_boundary_diff_ms"] <= 32 + 1e-6

    tampered = tmp_path / "tampered.wasm"
    data = bytearray(wasm.read_bytes())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(bytes(data))
    shutil.copy(wasm.with_name(wasm.name + ".sigstore.json"), tampered.with_name(tampered.name + ".sigstore.json"))
    proc = run_cli("run", tampered, "--key", pub, "--audio", audio["master"])
    assert proc.returncode == 1 and proc.stderr.startswith("error:")


@pytest.mark.slow
def test_cli_vad_options(vad_component, reference, audio):
    """``run --audio --vad KEY=VALUE`` passes get_speech_timestamps options; a bad one is one error line."""
    from wasmai.tasks.vad import DetectOptions

    proc = run_cli("run", vad_component, "--audio", audio["master"], "--vad", "min-silence-ms=600",
                   "--vad", "speech-pad-ms=50", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["options"]["min_silence_ms"] == 600 and out["options"]["speech_pad_ms"] == 50
    wav = audio["master"].read_bytes()
    ref = [(s["start"] / 16000, s["end"] / 16000) for s in
           reference.speech_timestamps(reference.audio(wav), DetectOptions(min_silence_ms=600, speech_pad_ms=50))]
    assert _max_diff([(s["start_s"], s["end_s"]) for s in out["segments"]], ref) <= 1e-9
    for bad, message in (("loudness=3", "expected KEY=VALUE"), ("threshold=x", "is not a number"),
                         ("threshold=1.5", "threshold 1.5 is not in 0..1")):
        proc = run_cli("run", vad_component, "--audio", audio["master"], "--vad", bad)
        assert proc.returncode == 1 and proc.stderr.startswith("error: ") and message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
