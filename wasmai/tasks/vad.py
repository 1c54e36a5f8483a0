"""``voice-activity``: silero-vad style voice activity detectors whose component carries the whole
audio front end (template ``wasmai/templates/voice-activity``, WIT
``wasmai/wit/voice-activity.wit``): WAV bytes in, speech segments out.

What each stage takes from here:

* ``convert --onnx silero_vad.onnx --task voice-activity``: :func:`audio_table` (the manifest's
  ``[audio]`` table: sample rate, window, context, state shape, tensor names, default
  thresholds) and :func:`validation_feeds` (audio windows instead of random tensors: a random
  ``sr`` would pick no branch of the graph's ``If``).
* ``build``: :func:`render_values` (``vad_config.rs``).
* ``run --audio`` / ``bench --audio``: :class:`Detector` (the component's ``voice-activity``
  export through :meth:`wasmai.host.Instance.call_export`), :class:`ReferencePipeline` (the
  Python pipeline: scipy WAV decoding and polyphase resampling, silero-vad's own ONNX wrapper
  and ``get_speech_timestamps``), :func:`run_audio` and :func:`bench_audio`.

Constants are silero-vad 6.x's (``silero_vad/utils_vad.py``): at 16 kHz ``OnnxWrapper`` feeds
windows of 512 new samples, each preceded by the last 64 samples of the previous model input
(zeros before the first), with a recurrent state of shape (2, batch, 128) carried from window to
window and the sample rate as a scalar int64; ``get_speech_timestamps`` defaults to threshold
0.5, neg_threshold max(threshold - 0.15, 0.01), min_speech_duration_ms 250,
min_silence_duration_ms 100, speech_pad_ms 30, max_speech_duration_s inf.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wasmai.errors import WasmaiError
from wasmai.manifest import Manifest, TensorSpec
from wasmai.tasks import TaskRun, call_task, instantiate_task, verify_first

#: The WIT interface the template exports (``wasmai/wit/voice-activity.wit``).
INTERFACE = "wasmai:inference/voice-activity@0.2.0"

#: silero-vad 6.x at 16 kHz: model rate (Hz), new samples per window, context samples.
SAMPLE_RATE = 16000
WINDOW = 512
CONTEXT = 64

#: get_speech_timestamps' defaults (silero-vad 6.2, ``utils_vad.py``).
DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_SPEECH_MS = 250
DEFAULT_MIN_SILENCE_MS = 100
DEFAULT_SPEECH_PAD_MS = 30


# ---------------------------------------------------------------------------------------------
# convert and build


def _pick(specs: Sequence[TensorSpec], what: str, test: Callable[[TensorSpec], bool]) -> TensorSpec:
    found = [s for s in specs if test(s)]
    if not found:
        raise WasmaiError(f"--task voice-activity: the graph has no {what} "
                          f"(graph tensors: {', '.join(f'{s.name} {s.dtype} {s.shape}' for s in specs)})")
    return found[0]


def audio_table(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> dict[str, Any]:
    """The manifest's ``[audio]`` table for a silero-vad style graph: inputs an fp32 audio window
    of rank 2 (batch, samples), an fp32 recurrent state of rank 3 (its fixed axes kept, the
    dynamic batch axis set to 1) and optionally a scalar i64 sample rate; outputs an fp32
    speech probability and the fp32 state (rank 3). Names are matched as silero-vad names them
    (``input``, ``state``, ``sr``; ``output``, ``stateN``) and otherwise by dtype and rank.
    Values: :data:`SAMPLE_RATE`, :data:`WINDOW`, :data:`CONTEXT` and the default thresholds.

    Raises :class:`WasmaiError` for a graph without such tensors."""
    def named(name: str, dtype: str, rank: int) -> Callable[[TensorSpec], bool]:
        return lambda s: s.dtype == dtype and len(s.shape) == rank and s.name == name

    def typed(dtype: str, rank: int) -> Callable[[TensorSpec], bool]:
        return lambda s: s.dtype == dtype and len(s.shape) == rank

    def either(name: str, dtype: str, rank: int, specs: Sequence[TensorSpec], what: str) -> TensorSpec:
        by_name = [s for s in specs if named(name, dtype, rank)(s)]
        return by_name[0] if by_name else _pick(specs, what, typed(dtype, rank))

    audio_in = either("input", "fp32", 2, inputs, "fp32 audio input of rank 2 (batch, samples)")
    state_in = either("state", "fp32", 3, [s for s in inputs if s is not audio_in], "fp32 state input of rank 3")
    rate_in = [s for s in inputs if s.dtype == "i64" and len(s.shape) == 0]
    others = [s.name for s in inputs if s not in (audio_in, state_in, *rate_in[:1])]
    if others:
        raise WasmaiError(f"--task voice-activity: unexpected graph input(s) {', '.join(others)}")
    prob_out = either("output", "fp32", 2, outputs, "fp32 speech probability output")
    state_out = either("stateN", "fp32", 3, [s for s in outputs if s is not prob_out], "fp32 state output of rank 3")
    state_shape = [d if isinstance(d, int) else 1 for d in state_in.shape]
    table: dict[str, Any] = {
        "sample_rate": SAMPLE_RATE, "window": WINDOW, "context": CONTEXT, "state_shape": state_shape,
        "input": audio_in.name, "state": state_in.name, "output": prob_out.name, "state_output": state_out.name,
        "threshold": DEFAULT_THRESHOLD, "min_speech_ms": DEFAULT_MIN_SPEECH_MS,
        "min_silence_ms": DEFAULT_MIN_SILENCE_MS, "speech_pad_ms": DEFAULT_SPEECH_PAD_MS,
        "framing": "silero-vad 6.x OnnxWrapper: each input = last `context` samples of the previous input "
                   "(zeros first) + `window` new samples; state carried; segments as get_speech_timestamps",
    }
    if rate_in:
        table["sample_rate_input"] = rate_in[0].name
    return table


@dataclass(frozen=True)
class AudioSettings:
    """The ``[audio]`` table, checked. Rates in Hz, sizes in samples, durations in ms (``max_speech_s``
    in seconds, None = no limit); ``neg_threshold`` None = max(threshold - 0.15, 0.01)."""

    sample_rate: int
    window: int
    context: int
    state_shape: tuple[int, ...]
    input: str
    state: str
    output: str
    state_output: str
    sample_rate_input: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    neg_threshold: float | None = None
    min_speech_ms: int = DEFAULT_MIN_SPEECH_MS
    min_silence_ms: int = DEFAULT_MIN_SILENCE_MS
    speech_pad_ms: int = DEFAULT_SPEECH_PAD_MS
    max_speech_s: float | None = None

    @classmethod
    def from_manifest(cls, man: Manifest) -> AudioSettings:
        """Read and check ``man.audio``. Raises :class:`WasmaiError` naming the bad key."""
        table = getattr(man, "audio", None) or {}
        if not table:
            raise WasmaiError("task voice-activity needs an [audio] table in the manifest; "
                              "convert with --task voice-activity")
        try:
            s = cls(sample_rate=int(table["sample_rate"]), window=int(table["window"]),
                    context=int(table["context"]), state_shape=tuple(int(d) for d in table["state_shape"]),
                    input=str(table["input"]), state=str(table["state"]), output=str(table["output"]),
                    state_output=str(table["state_output"]),
                    sample_rate_input=table.get("sample_rate_input"),
                    threshold=float(table.get("threshold", DEFAULT_THRESHOLD)),
                    neg_threshold=None if table.get("neg_threshold") is None else float(table["neg_threshold"]),
                    min_speech_ms=int(table.get("min_speech_ms", DEFAULT_MIN_SPEECH_MS)),
                    min_silence_ms=int(table.get("min_silence_ms", DEFAULT_MIN_SILENCE_MS)),
                    speech_pad_ms=int(table.get("speech_pad_ms", DEFAULT_SPEECH_PAD_MS)),
                    max_speech_s=None if table.get("max_speech_s") is None else float(table["max_speech_s"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise WasmaiError(f"manifest: [audio] is missing or has a bad value: {exc}") from None
        if not 1000 <= s.sample_rate <= 768_000 or s.window <= 0 or s.context < 0 or s.context > s.window:
            raise WasmaiError("manifest: [audio] needs sample_rate in 1000..768000, window > 0 and "
                              "0 <= context <= window")
        if not s.state_shape or any(d <= 0 for d in s.state_shape):
            raise WasmaiError(f"manifest: [audio] state_shape {list(s.state_shape)} needs positive sizes")
        DetectOptions(s.threshold, s.neg_threshold, s.min_speech_ms, s.min_silence_ms, s.speech_pad_ms,
                      s.max_speech_s).check()
        return s


def render_values(man: Manifest) -> dict[str, str]:
    """Placeholder name -> Rust source text for the template's ``src/vad_config.rs.in``, from
    ``man.audio``. Raises :class:`WasmaiError` when the table is missing or bad."""
    from wasmai.build.render import _rust_str

    s = AudioSettings.from_manifest(man)

    def f32(v: float) -> str:
        return f"{float(v)!r}_f32"

    def opt(v: float | None) -> str:
        return "None" if v is None else f"Some({f32(v)})"

    return {
        "audio_sample_rate": str(s.sample_rate), "audio_window": str(s.window), "audio_context": str(s.context),
        "audio_state_shape": "[" + ", ".join(str(d) for d in s.state_shape) + "]",
        "audio_input": _rust_str(s.input), "audio_state": _rust_str(s.state), "audio_output": _rust_str(s.output),
        "audio_state_output": _rust_str(s.state_output),
        "audio_sample_rate_input": "None" if s.sample_rate_input is None else f"Some({_rust_str(s.sample_rate_input)})",
        "audio_threshold": f32(s.threshold), "audio_neg_threshold": opt(s.neg_threshold),
        "audio_min_speech_ms": str(s.min_speech_ms), "audio_min_silence_ms": str(s.min_silence_ms),
        "audio_speech_pad_ms": str(s.speech_pad_ms), "audio_max_speech_s": opt(s.max_speech_s),
    }


def validation_feeds(inputs: Sequence[TensorSpec], audio: dict[str, Any],
                     n: int = 16) -> tuple[list[dict[str, np.ndarray]], list[str], str]:
    """``n`` model inputs for ``convert``'s validation: windows of ``context + window`` samples
    (silence, a 220 Hz tone, a vowel-like harmonic series, white noise, a chirp, at several
    levels; numpy seed 0), states drawn from N(0, 0.5) (zeros for the first), the sample rate
    scalar. Returns (feeds, names, description)."""
    rng = np.random.default_rng(0)
    rate, width = int(audio["sample_rate"]), int(audio["context"]) + int(audio["window"])
    t = np.arange(width) / rate
    kinds: list[tuple[str, Callable[[], np.ndarray]]] = [
        ("silence", lambda: np.zeros(width)),
        ("tone", lambda: 0.3 * np.sin(2 * np.pi * 220 * t)),
        ("harmonics", lambda: np.sum([0.2 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 12)], axis=0)),
        ("noise", lambda: 0.05 * rng.standard_normal(width)),
        ("chirp", lambda: 0.4 * np.sin(2 * np.pi * (200 + 1500 * t) * t)),
    ]
    state_shape = [int(d) for d in audio["state_shape"]]
    feeds, names = [], []
    for i in range(n):
        kind, make = kinds[i % len(kinds)]
        level = (1.0, 0.25, 2.0)[(i // len(kinds)) % 3]
        feed = {audio["input"]: (np.clip(make() * level, -1, 1)).astype(np.float32)[None, :],
                audio["state"]: (np.zeros(state_shape) if i == 0 else 0.5 * rng.standard_normal(state_shape))
                .astype(np.float32)}
        if audio.get("sample_rate_input"):
            feed[audio["sample_rate_input"]] = np.array(rate, dtype=np.int64)
        feeds.append(feed)
        names.append(f"{kind}x{level:g}[{i}]")
    expected = {s.name for s in inputs}
    if set(feeds[0]) != expected:
        raise WasmaiError(f"--task voice-activity: validation inputs {sorted(feeds[0])} do not match the "
                          f"graph's {sorted(expected)}")
    return feeds, names, f"{n} synthetic audio windows (silence, tone, harmonics, noise, chirp; seed 0)"


# ---------------------------------------------------------------------------------------------
# the component


@dataclass
class DetectOptions:
    """``vad-options``: get_speech_timestamps' thresholds (0..1) and durations (ms; ``max_speech_s``
    in seconds). ``neg_threshold`` None = max(threshold - 0.15, 0.01); ``max_speech_s`` None = no
    limit."""

    threshold: float = DEFAULT_THRESHOLD
    neg_threshold: float | None = None
    min_speech_ms: int = DEFAULT_MIN_SPEECH_MS
    min_silence_ms: int = DEFAULT_MIN_SILENCE_MS
    speech_pad_ms: int = DEFAULT_SPEECH_PAD_MS
    max_speech_s: float | None = None

    def check(self) -> DetectOptions:
        """Raise :class:`WasmaiError` for a threshold outside 0..1, a negative duration or a
        non-positive ``max_speech_s``; returns self."""
        for name in ("threshold", "neg_threshold"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and 0 <= v <= 1):
                raise WasmaiError(f"{name.replace('_', '-')} {v} is not in 0..1")
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            if not 0 <= int(getattr(self, name)) <= 0xFFFFFFFF:
                raise WasmaiError(f"{name.replace('_', '-')} must be a non-negative number of milliseconds")
        if self.max_speech_s is not None and not (math.isfinite(self.max_speech_s) and self.max_speech_s > 0):
            raise WasmaiError(f"max-speech-s {self.max_speech_s} must be a positive number of seconds")
        return self

    def to_wit(self) -> dict[str, Any]:
        """The ``vad-options`` record for :meth:`wasmai.host.Instance.call_export`."""
        return {"threshold": float(self.threshold), "neg-threshold": self.neg_threshold,
                "min-speech-ms": int(self.min_speech_ms), "min-silence-ms": int(self.min_silence_ms),
                "speech-pad-ms": int(self.speech_pad_ms), "max-speech-s": self.max_speech_s}

    @classmethod
    def from_wit(cls, rec: dict[str, Any]) -> DetectOptions:
        """From a ``vad-options`` record as the host returns it (keys with '-')."""
        return cls(threshold=rec["threshold"], neg_threshold=rec["neg-threshold"],
                   min_speech_ms=rec["min-speech-ms"], min_silence_ms=rec["min-silence-ms"],
                   speech_pad_ms=rec["speech-pad-ms"], max_speech_s=rec["max-speech-s"])


@dataclass
class Segment:
    """One stretch of speech: start and end (seconds from the start of the audio) and the mean
    speech probability (0..1) of the model windows starting inside it."""

    start_s: float
    end_s: float
    probability: float


class Detector:
    """The ``voice-activity`` export of one :class:`wasmai.host.Instance`."""

    def __init__(self, instance: Any) -> None:
        self.instance = instance

    def _call(self, func: str, *args: Any) -> Any:
        return call_task(self.instance, INTERFACE, func, *args)

    def default_options(self) -> DetectOptions:
        """The options recorded in the component (the manifest's ``[audio]`` defaults)."""
        return DetectOptions.from_wit(dict(self._call("default-options")))

    def detect(self, wav: bytes, options: DetectOptions | None = None) -> list[Segment]:
        """WAV bytes -> speech segments in time order. Raises InferenceError ``bad-input`` for
        bytes that are not a supported WAV, WasmaiError for bad options."""
        opts = (options or self.default_options()).check()
        segs = self._call("detect", bytes(wav), opts.to_wit())
        return [Segment(start_s=s["start-s"], end_s=s["end-s"], probability=s["probability"]) for s in segs]

    def probabilities(self, wav: bytes) -> list[float]:
        """WAV bytes -> the speech probability of every model window (at the model's rate)."""
        return [float(p) for p in self._call("probabilities", bytes(wav))]

    def last_timings(self) -> dict[str, int]:
        """Guest-measured microseconds of the last detect/probabilities call: decode_us,
        resample_us, inference_us, postprocess_us, and windows (count)."""
        return {k.replace("-", "_"): int(v) for k, v in dict(self._call("last-timings")).items()}


def read_wav(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a WAV file. Raises :class:`WasmaiError` if it is missing or unreadable."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise WasmaiError(f"audio not found: {p}") from None
    except OSError as exc:
        raise WasmaiError(f"cannot read audio {p}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------
# the Python reference pipeline


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """WAV bytes -> (mono float32 samples in -1..1, sample rate in Hz) with ``scipy.io.wavfile``:
    integer PCM scaled by 2^(bits-1) (8-bit unsigned centred on 128), float as is, channels
    averaged. Raises :class:`WasmaiError` for anything scipy cannot read."""
    from scipy.io import wavfile  # type: ignore[import-untyped]

    try:
        rate, x = wavfile.read(io.BytesIO(data))
    except (ValueError, EOFError, OSError) as exc:
        raise WasmaiError(f"not a readable WAV file: {exc}") from None
    if x.dtype == np.uint8:
        y = (x.astype(np.float64) - 128.0) / 128.0
    elif np.issubdtype(x.dtype, np.integer):
        y = x.astype(np.float64) / float(2 ** (8 * x.dtype.itemsize - 1))
    else:
        y = x.astype(np.float64)
    if y.ndim == 2:
        y = y.mean(axis=1)
    return y.astype(np.float32), int(rate)


def resample(x: np.ndarray, rate: int, to: int = SAMPLE_RATE) -> np.ndarray:
    """``x`` at ``rate`` Hz -> ``to`` Hz with ``scipy.signal.resample_poly`` (polyphase FIR,
    Kaiser window, the ratio reduced by the gcd); a copy when the rates are equal."""
    if rate == to:
        return x.astype(np.float32, copy=True)
    from scipy.signal import resample_poly  # type: ignore[import-untyped]

    g = math.gcd(rate, to)
    out: np.ndarray = resample_poly(x.astype(np.float64), to // g, rate // g).astype(np.float32)
    return out


def silero_onnx_path() -> Path:
    """``silero_vad/data/silero_vad.onnx`` of the installed ``silero-vad`` package (located without
    importing it). Raises :class:`WasmaiError` if the package is missing."""
    import importlib.util

    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise WasmaiError("silero-vad is not installed (pip install --no-deps silero-vad)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise WasmaiError(f"silero-vad has no {path.name} at {path}")
    return path


class ReferencePipeline:
    """silero-vad's own Python pipeline: its ``OnnxWrapper`` on ``onnx`` (default: the package's
    ``silero_vad.onnx``; ONNX Runtime, 1 thread) and ``get_speech_timestamps`` on 16 kHz mono
    float audio, after :func:`decode_wav` and :func:`resample`. Needs torch (silero-vad imports
    it). Raises :class:`WasmaiError` when silero-vad is missing."""

    def __init__(self, onnx: str | os.PathLike[str] | None = None) -> None:
        try:
            from silero_vad.utils_vad import OnnxWrapper  # type: ignore[import-untyped]
        except ImportError as exc:
            raise WasmaiError(f"the reference needs silero-vad and torch ({exc}); "
                              "pip install --no-deps silero-vad") from None
        self.onnx = Path(onnx) if onnx is not None else silero_onnx_path()
        self.model = OnnxWrapper(str(self.onnx), force_onnx_cpu=True)
        self.timings_us: dict[str, int] = {}

    def audio(self, wav: bytes) -> np.ndarray:
        """WAV bytes -> mono float32 at 16 kHz (what the model sees)."""
        x, rate = decode_wav(wav)
        return resample(x, rate)

    def speech_timestamps(self, audio16k: np.ndarray, options: DetectOptions | None = None) -> list[dict[str, int]]:
        """``get_speech_timestamps`` on 16 kHz audio: [{"start", "end"}] in samples."""
        import torch
        from silero_vad import get_speech_timestamps  # type: ignore[import-untyped]

        o = options or DetectOptions()
        return list(get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(audio16k, dtype=np.float32)), self.model,
            threshold=o.threshold, neg_threshold=o.neg_threshold, sampling_rate=SAMPLE_RATE,
            min_speech_duration_ms=o.min_speech_ms, min_silence_duration_ms=o.min_silence_ms,
            speech_pad_ms=o.speech_pad_ms,
            max_speech_duration_s=float("inf") if o.max_speech_s is None else o.max_speech_s))

    def probabilities(self, audio16k: np.ndarray) -> list[float]:
        """The model's probability for each 512-sample window, exactly as get_speech_timestamps
        computes them (reset state, last window zero-padded)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(audio16k, dtype=np.float32))
        self.model.reset_states()
        out = []
        for start in range(0, len(x), WINDOW):
            chunk = x[start:start + WINDOW]
            if len(chunk) < WINDOW:
                chunk = torch.nn.functional.pad(chunk, (0, WINDOW - len(chunk)))
            out.append(float(self.model(chunk, SAMPLE_RATE).item()))
        return out

    def detect(self, wav: bytes, options: DetectOptions | None = None) -> list[Segment]:
        """The whole pipeline with stage times (``timings_us``: decode, resample, inference,
        postprocess; probabilities then ``get_speech_timestamps_from_probs``, which is what
        ``get_speech_timestamps`` does in one call)."""
        from silero_vad import get_speech_timestamps_from_probs

        o = options or DetectOptions()
        t0 = time.perf_counter()
        x, rate = decode_wav(wav)
        t1 = time.perf_counter()
        audio = resample(x, rate)
        t2 = time.perf_counter()
        probs = self.probabilities(audio)
        t3 = time.perf_counter()
        stamps = get_speech_timestamps_from_probs(
            probs, sampling_rate=SAMPLE_RATE, threshold=o.threshold, neg_threshold=o.neg_threshold,
            min_speech_duration_ms=o.min_speech_ms, min_silence_duration_ms=o.min_silence_ms,
            speech_pad_ms=o.speech_pad_ms,
            max_speech_duration_s=float("inf") if o.max_speech_s is None else o.max_speech_s,
            audio_length_samples=len(audio))
        segs = [Segment(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE,
                        _mean_probability(probs, s["start"], s["end"])) for s in stamps]
        t4 = time.perf_counter()
        self.timings_us = {"decode_us": _us(t1 - t0), "resample_us": _us(t2 - t1), "inference_us": _us(t3 - t2),
                           "postprocess_us": _us(t4 - t3), "windows": len(probs)}
        return segs


def _us(seconds: float) -> int:
    return round(seconds * 1e6)


def _mean_probability(probs: Sequence[float], start: int, end: int) -> float:
    """Mean of the windows starting in [start, end) samples (the guest's definition)."""
    first, last = -(-start // WINDOW), min(len(probs), -(-end // WINDOW))
    if first < last:
        return float(np.mean(probs[first:last]))
    i = start // WINDOW
    return float(probs[i]) if 0 <= i < len(probs) else 0.0


# ---------------------------------------------------------------------------------------------
# run and bench


@dataclass(kw_only=True)
class AudioRunResult(TaskRun):
    """What ``wasmai run --audio`` did (:class:`~wasmai.tasks.TaskRun`): the audio and its
    speech segments."""

    audio: str
    duration_s: float
    sample_rate: int
    channels: int
    options: DetectOptions
    segments: list[Segment]


def wav_facts(wav: bytes) -> tuple[float, int, int]:
    """(duration in seconds, sample rate in Hz, channels) from a WAV header (0s when unreadable;
    the component reports the error)."""
    import wave

    try:
        with wave.open(io.BytesIO(wav)) as w:
            return w.getnframes() / w.getframerate(), w.getframerate(), w.getnchannels()
    except (wave.Error, EOFError, ZeroDivisionError):
        pass
    try:
        x, rate = decode_wav(wav)
        return len(x) / rate, rate, 0
    except WasmaiError:
        return 0.0, 0, 0


def run_audio(path: str | os.PathLike[str], *, audio: str | os.PathLike[str], options: DetectOptions | None = None,
              policy: Any = None, bundle: str | os.PathLike[str] | None = None, sandbox: Any = None,
              verified: Any = None, graphs: Any = None, overrides: dict[str, Any] | None = None) -> AudioRunResult:
    """``wasmai run COMPONENT --audio FILE.wav``: verify (when ``policy`` is given, before
    anything is compiled), compile, instantiate, ``load``, then ``voice-activity.detect`` with
    ``options`` (default: the component's own, with ``overrides`` from :func:`parse_settings`
    applied). Raises WasmaiError for a missing file or a
    component without the voice-activity export, VerificationError, ComponentError /
    InferenceError from the component."""
    from wasmai.host import Host
    from wasmai.sandbox import SandboxOptions

    path = Path(path)
    wav = read_wav(audio)
    signature = verify_first(path, policy, bundle, verified)
    host = Host(graphs=graphs, **(sandbox or SandboxOptions()).host_kwargs())
    comp, inst, info = instantiate_task(host, path, signature, "voice-activity",
                                        ": --audio needs a component built with --task voice-activity")
    det = Detector(inst)
    t0 = time.perf_counter()
    inst.load()
    load_ms = (time.perf_counter() - t0) * 1e3
    opts = options or dataclasses.replace(det.default_options(), **(overrides or {}))
    t0 = time.perf_counter()
    segments = det.detect(wav, opts)
    call_ms = (time.perf_counter() - t0) * 1e3
    duration, rate, channels = wav_facts(wav)
    return AudioRunResult(**TaskRun.facts(path, comp, inst, info), audio=str(audio), duration_s=duration,
                          sample_rate=rate, channels=channels, options=opts, segments=segments,
                          guest_timings_us=det.last_timings(), load_ms=load_ms, call_ms=call_ms, signature=signature)


@dataclass
class AudioBenchResult:
    """``wasmai bench --audio``: per-stage medians (µs) of the component (guest-measured) and of
    the Python reference pipeline on the same WAV, the whole call's percentiles (ms), and
    whether both found the same segments."""

    component: str
    audio: str
    runs: int
    warmup: int
    duration_s: float
    windows: int
    component_us: dict[str, float]
    reference_us: dict[str, float]
    component_call_ms: dict[str, float]
    reference_call_ms: dict[str, float]
    segments: list[Segment]
    reference_segments: list[Segment]
    max_boundary_diff_ms: float | None
    #: Bytes of the WAV file, and the median of (whole detect call - the guest's stages): the
    #: host's dynamic call converting the bytes and the segments (ms).
    wav_bytes: int = 0
    call_overhead_ms: float = 0.0
    reference: str = "scipy.io.wavfile + scipy.signal.resample_poly + silero-vad OnnxWrapper (1 thread) + " \
                     "get_speech_timestamps_from_probs"


def _stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "mean": float(a.mean()), "min": float(a.min())}


def max_boundary_diff_s(a: Sequence[Segment], b: Sequence[Segment]) -> float | None:
    """Largest |start/end difference| (seconds) between two segment lists of equal length
    (None when the counts differ; 0.0 when both are empty)."""
    if len(a) != len(b):
        return None
    return max([0.0, *(max(abs(x.start_s - y.start_s), abs(x.end_s - y.end_s)) for x, y in zip(a, b, strict=True))])


def bench_audio(path: str | os.PathLike[str], *, audio: str | os.PathLike[str], runs: int = 20, warmup: int = 2,
                options: DetectOptions | None = None, policy: Any = None,
                bundle: str | os.PathLike[str] | None = None, sandbox: Any = None, verified: Any = None,
                reference: bool = True) -> AudioBenchResult:
    """Time ``detect`` on one WAV ``runs`` times (after ``warmup``) in one instance, with the
    guest's stage times, next to :class:`ReferencePipeline` on the same bytes (ONNX Runtime 1
    thread in both: the host's default pool may use more); ``sandbox``
    (:class:`~wasmai.sandbox.SandboxOptions`) limits the instance as in :func:`run_audio`. Raises
    like :func:`run_audio`."""
    from wasmai.host import Host
    from wasmai.sandbox import SandboxOptions

    if runs < 1 or warmup < 0:
        raise WasmaiError("bench --audio needs -n >= 1 and --warmup >= 0")
    path = Path(path)
    wav = read_wav(audio)
    signature = verify_first(path, policy, bundle, verified)
    host = Host(intra_op_threads=1, **(sandbox or SandboxOptions()).host_kwargs())
    _comp, inst, _info = instantiate_task(host, path, signature, "voice-activity")
    det = Detector(inst)
    inst.load()
    opts = options or det.default_options()
    stages = ("decode_us", "resample_us", "inference_us", "postprocess_us")
    comp_t: dict[str, list[float]] = {k: [] for k in stages}
    comp_call: list[float] = []
    overhead: list[float] = []
    segments: list[Segment] = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        segments = det.detect(wav, opts)
        dt = (time.perf_counter() - t0) * 1e3
        timings = det.last_timings()
        if i >= warmup:
            comp_call.append(dt)
            overhead.append(dt - sum(timings[k] for k in stages) / 1e3)
            for k in stages:
                comp_t[k].append(timings[k])
    ref_t: dict[str, list[float]] = {k: [] for k in stages}
    ref_call: list[float] = []
    ref_segments: list[Segment] = []
    if reference:
        ref = ReferencePipeline()
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            ref_segments = ref.detect(wav, opts)
            dt = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                ref_call.append(dt)
                for k in stages:
                    ref_t[k].append(ref.timings_us[k])
    diff = max_boundary_diff_s(segments, ref_segments) if reference else None
    return AudioBenchResult(
        component=str(path), audio=str(audio), runs=runs, warmup=warmup, duration_s=wav_facts(wav)[0],
        windows=det.last_timings()["windows"],
        component_us={k: float(np.median(v)) for k, v in comp_t.items()},
        reference_us={k: float(np.median(v)) for k, v in ref_t.items() if v},
        component_call_ms=_stats(comp_call), reference_call_ms=_stats(ref_call) if ref_call else {},
        segments=segments, reference_segments=ref_segments,
        max_boundary_diff_ms=None if diff is None else diff * 1e3, wav_bytes=len(wav),
        call_overhead_ms=float(np.median(overhead)))


def segments_jsonable(segs: Sequence[Segment]) -> list[dict[str, float]]:
    """Segments as plain dicts."""
    return [asdict(s) for s in segs]


#: ``--vad KEY=VALUE`` keys -> (DetectOptions field, type).
SETTINGS: dict[str, tuple[str, type]] = {
    "threshold": ("threshold", float), "neg-threshold": ("neg_threshold", float),
    "min-speech-ms": ("min_speech_ms", int), "min-silence-ms": ("min_silence_ms", int),
    "speech-pad-ms": ("speech_pad_ms", int), "max-speech-s": ("max_speech_s", float),
}


def parse_settings(items: Sequence[str] | None) -> dict[str, Any]:
    """``--vad KEY=VALUE`` items (keys of :data:`SETTINGS`, as in ``vad-options``) -> DetectOptions
    field overrides, checked with :meth:`DetectOptions.check`. Raises :class:`WasmaiError` naming
    the bad item."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in SETTINGS:
            raise WasmaiError(f"--vad {item!r}: expected KEY=VALUE with KEY one of {', '.join(SETTINGS)}")
        name, kind = SETTINGS[key.strip()]
        try:
            out[name] = kind(value.strip())
        except ValueError:
            raise WasmaiError(f"--vad {item!r}: {value.strip()!r} is not {'an integer' if kind is int else 'a number'}"
                              ) from None
    dataclasses.replace(DetectOptions(), **out).check()
    return out
