//! The window loop and the segments.
//!
//! Framing is silero-vad's `OnnxWrapper` (silero-vad 6.x): audio at `SAMPLE_RATE` is cut into
//! windows of `WINDOW` samples from sample 0 (the last one zero-padded); each model input is the
//! last `CONTEXT` samples of the previous input (zeros before the first) followed by the window,
//! shape `[1, CONTEXT + WINDOW]`; the recurrent state (`STATE_SHAPE`, zeros at first) goes in
//! with each window and the state the model returns goes in with the next; the sample rate goes
//! in as a scalar i64. Segments follow `get_speech_timestamps_from_probs` of silero-vad 6.2
//! (`use_max_poss_sil_at_max_speech = True`, `min_silence_at_max_speech = 98` ms, its defaults),
//! in samples at `SAMPLE_RATE`, converted to seconds at the end without rounding.

use std::cell::RefCell;
use std::time::Instant;

use crate::bindings::exports::wasmai::inference::voice_activity::{Segment, Timings, VadOptions};
use crate::bindings::wasi::nn::tensor::TensorType;
use crate::bindings::wasmai::inference::types::{Error, Tensor};
use crate::vad_config as cfg;
use crate::{audio, nn};

/// silero-vad's `min_silence_at_max_speech`: a pause at least this long (ms) inside a segment
/// is a candidate cut when the segment reaches `max-speech-s`.
const MIN_SILENCE_AT_MAX_SPEECH_MS: f64 = 98.0;

thread_local! {
    static TIMINGS: RefCell<Timings> = const {
        RefCell::new(Timings { decode_us: 0, resample_us: 0, inference_us: 0, postprocess_us: 0, windows: 0 })
    };
}

fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// `voice-activity.default-options`: the manifest's values.
pub fn default_options() -> VadOptions {
    VadOptions {
        threshold: cfg::THRESHOLD,
        neg_threshold: cfg::NEG_THRESHOLD,
        min_speech_ms: cfg::MIN_SPEECH_MS,
        min_silence_ms: cfg::MIN_SILENCE_MS,
        speech_pad_ms: cfg::SPEECH_PAD_MS,
        max_speech_s: cfg::MAX_SPEECH_S,
    }
}

/// `voice-activity.last-timings`.
pub fn last_timings() -> Timings {
    TIMINGS.with(|t| *t.borrow())
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Decode and resample: mono samples at `SAMPLE_RATE`, with the stage times recorded.
fn front_end(wav: &[u8], timings: &mut Timings) -> Result<Vec<f32>, Error> {
    let t0 = Instant::now();
    let mono = audio::decode(wav)?;
    timings.decode_us = micros(t0);
    let t1 = Instant::now();
    let samples = audio::resample(mono.samples, mono.rate, cfg::SAMPLE_RATE)?;
    timings.resample_us = micros(t1);
    Ok(samples)
}

/// The speech probability of every window of `samples` (at `SAMPLE_RATE`), state carried over.
fn window_probabilities(samples: &[f32]) -> Result<Vec<f32>, Error> {
    let state_len: usize = cfg::STATE_SHAPE.iter().map(|&d| d as usize).product();
    let mut state = f32_bytes(&vec![0.0; state_len]);
    let mut x = vec![0.0f32; cfg::CONTEXT + cfg::WINDOW];
    let width = (cfg::CONTEXT + cfg::WINDOW) as u32;
    let mut probs = Vec::with_capacity(samples.len().div_ceil(cfg::WINDOW));
    for start in (0..samples.len()).step_by(cfg::WINDOW) {
        let chunk = &samples[start..(start + cfg::WINDOW).min(samples.len())];
        x[cfg::CONTEXT..cfg::CONTEXT + chunk.len()].copy_from_slice(chunk);
        x[cfg::CONTEXT + chunk.len()..].fill(0.0);
        let mut inputs = vec![
            Tensor {
                name: cfg::INPUT.to_string(),
                dtype: TensorType::Fp32,
                shape: vec![1, width],
                data: f32_bytes(&x),
            },
            Tensor {
                name: cfg::STATE.to_string(),
                dtype: TensorType::Fp32,
                shape: cfg::STATE_SHAPE.to_vec(),
                data: std::mem::take(&mut state),
            },
        ];
        if let Some(name) = cfg::SAMPLE_RATE_INPUT {
            let rate = i64::from(cfg::SAMPLE_RATE).to_le_bytes().to_vec();
            inputs.push(Tensor { name: name.to_string(), dtype: TensorType::I64, shape: vec![], data: rate });
        }
        let mut outputs = nn::infer(inputs)?;
        let take = |outputs: &mut Vec<Tensor>, name: &str, position: usize| -> Result<Tensor, Error> {
            match outputs.iter().position(|t| t.name == name) {
                Some(i) => Ok(outputs.swap_remove(i)),
                None if outputs.len() > position => Ok(outputs.remove(position)),
                None => Err(Error::Internal(format!("the model returned no {name:?} output"))),
            }
        };
        let prob = take(&mut outputs, cfg::OUTPUT, 0)?;
        let new_state = take(&mut outputs, cfg::STATE_OUTPUT, 0)?;
        if prob.dtype != TensorType::Fp32 || prob.data.len() < 4 {
            return Err(Error::Internal(format!("output {:?} is not an fp32 probability", cfg::OUTPUT)));
        }
        if new_state.dtype != TensorType::Fp32 || new_state.data.len() != state_len * 4 {
            return Err(Error::Internal(format!(
                "output {:?} is not an fp32 state of shape {:?}",
                cfg::STATE_OUTPUT,
                cfg::STATE_SHAPE
            )));
        }
        probs.push(f32::from_le_bytes([prob.data[0], prob.data[1], prob.data[2], prob.data[3]]));
        state = new_state.data;
        // The next window's context: the last CONTEXT samples of this input.
        x.copy_within(cfg::WINDOW.., 0);
    }
    Ok(probs)
}

/// `voice-activity.probabilities`.
pub fn probabilities(wav: &[u8]) -> Result<Vec<f32>, Error> {
    let mut timings = Timings { decode_us: 0, resample_us: 0, inference_us: 0, postprocess_us: 0, windows: 0 };
    let samples = front_end(wav, &mut timings)?;
    let t0 = Instant::now();
    let probs = window_probabilities(&samples)?;
    timings.inference_us = micros(t0);
    timings.windows = probs.len() as u32;
    TIMINGS.with(|t| *t.borrow_mut() = timings);
    Ok(probs)
}

/// `voice-activity.detect`.
pub fn detect(wav: &[u8], options: &VadOptions) -> Result<Vec<Segment>, Error> {
    let params = Params::new(options)?;
    let mut timings = Timings { decode_us: 0, resample_us: 0, inference_us: 0, postprocess_us: 0, windows: 0 };
    let samples = front_end(wav, &mut timings)?;
    let t0 = Instant::now();
    let probs = window_probabilities(&samples)?;
    timings.inference_us = micros(t0);
    timings.windows = probs.len() as u32;
    let t1 = Instant::now();
    let rate = f64::from(cfg::SAMPLE_RATE);
    let segments = speech_timestamps(&probs, samples.len() as i64, &params)
        .into_iter()
        .map(|(start, end)| Segment {
            start_s: start as f64 / rate,
            end_s: end as f64 / rate,
            probability: mean_probability(&probs, start, end),
        })
        .collect();
    timings.postprocess_us = micros(t1);
    TIMINGS.with(|t| *t.borrow_mut() = timings);
    Ok(segments)
}

/// Mean probability of the windows starting in `[start, end)` (samples); the window holding
/// `start` when none does.
fn mean_probability(probs: &[f32], start: i64, end: i64) -> f32 {
    let w = cfg::WINDOW as i64;
    let first = ((start + w - 1) / w).max(0) as usize;
    let last = (((end + w - 1) / w).max(0) as usize).min(probs.len());
    if first < last {
        probs[first..last].iter().sum::<f32>() / (last - first) as f32
    } else {
        probs.get((start / w).max(0) as usize).copied().unwrap_or(0.0)
    }
}

/// Segmentation settings in samples at `SAMPLE_RATE` (silero-vad's formulas).
struct Params {
    threshold: f64,
    neg_threshold: f64,
    min_speech_samples: f64,
    speech_pad_samples: f64,
    max_speech_samples: f64,
    min_silence_samples: f64,
    min_silence_samples_at_max_speech: f64,
}

impl Params {
    fn new(o: &VadOptions) -> Result<Self, Error> {
        let unit = |v: f32| v.is_finite() && (0.0..=1.0).contains(&v);
        if !unit(o.threshold) {
            return Err(Error::BadInput(format!("threshold {} is not in 0..=1", o.threshold)));
        }
        if let Some(neg) = o.neg_threshold {
            if !unit(neg) {
                return Err(Error::BadInput(format!("neg-threshold {neg} is not in 0..=1")));
            }
        }
        if let Some(max) = o.max_speech_s {
            if !(max.is_finite() && max > 0.0) {
                return Err(Error::BadInput(format!("max-speech-s {max} is not a positive number of seconds")));
            }
        }
        let rate = f64::from(cfg::SAMPLE_RATE);
        let threshold = f64::from(o.threshold);
        let speech_pad_samples = rate * f64::from(o.speech_pad_ms) / 1000.0;
        let max_speech_samples = match o.max_speech_s {
            Some(s) => rate * f64::from(s) - cfg::WINDOW as f64 - 2.0 * speech_pad_samples,
            None => f64::INFINITY,
        };
        Ok(Self {
            threshold,
            neg_threshold: o.neg_threshold.map(f64::from).unwrap_or((threshold - 0.15).max(0.01)),
            min_speech_samples: rate * f64::from(o.min_speech_ms) / 1000.0,
            speech_pad_samples,
            max_speech_samples,
            min_silence_samples: rate * f64::from(o.min_silence_ms) / 1000.0,
            min_silence_samples_at_max_speech: rate * MIN_SILENCE_AT_MAX_SPEECH_MS / 1000.0,
        })
    }
}

/// silero-vad's `get_speech_timestamps_from_probs`: window probabilities -> (start, end) in
/// samples, padded. `audio_len` is the number of samples at `SAMPLE_RATE`.
fn speech_timestamps(probs: &[f32], audio_len: i64, p: &Params) -> Vec<(i64, i64)> {
    let w = cfg::WINDOW as i64;
    let mut speeches: Vec<(i64, i64)> = Vec::new();
    let mut triggered = false;
    let mut current: Option<i64> = None;
    // 0 means "unset", as in the Python original.
    let mut temp_end: i64 = 0;
    let mut possible_ends: Vec<(i64, i64)> = Vec::new();
    for (i, &prob) in probs.iter().enumerate() {
        let prob = f64::from(prob);
        let cur = w * i as i64;
        if prob >= p.threshold && temp_end != 0 {
            let silence = cur - temp_end;
            if silence as f64 > p.min_silence_samples_at_max_speech {
                possible_ends.push((temp_end, silence));
            }
            temp_end = 0;
        }
        if prob >= p.threshold && !triggered {
            triggered = true;
            current = Some(cur);
            continue;
        }
        if let (true, Some(start)) = (triggered, current) {
            if (cur - start) as f64 > p.max_speech_samples {
                // The longest pause inside the segment (the first of equals), else cut here.
                let longest = possible_ends.iter().copied().fold(None, |best: Option<(i64, i64)>, e| match best {
                    Some(b) if b.1 >= e.1 => Some(b),
                    _ => Some(e),
                });
                if let Some((end, silence)) = longest {
                    speeches.push((start, end));
                    let next_start = end + silence;
                    if next_start < end + cur {
                        current = Some(next_start);
                    } else {
                        current = None;
                        triggered = false;
                    }
                    temp_end = 0;
                    possible_ends.clear();
                } else {
                    speeches.push((start, cur));
                    current = None;
                    temp_end = 0;
                    triggered = false;
                    possible_ends.clear();
                    continue;
                }
            }
        }
        if prob < p.neg_threshold && triggered {
            if temp_end == 0 {
                temp_end = cur;
            }
            if ((cur - temp_end) as f64) < p.min_silence_samples {
                continue;
            }
            if let Some(start) = current {
                if (temp_end - start) as f64 > p.min_speech_samples {
                    speeches.push((start, temp_end));
                }
            }
            current = None;
            temp_end = 0;
            triggered = false;
            possible_ends.clear();
            continue;
        }
    }
    if let Some(start) = current {
        if (audio_len - start) as f64 > p.min_speech_samples {
            speeches.push((start, audio_len));
        }
    }
    let pad = p.speech_pad_samples;
    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[0].0 = (speeches[0].0 as f64 - pad).max(0.0) as i64;
        }
        if i + 1 < n {
            let silence = speeches[i + 1].0 - speeches[i].1;
            if (silence as f64) < 2.0 * pad {
                speeches[i].1 += silence.div_euclid(2);
                speeches[i + 1].0 = (speeches[i + 1].0 - silence.div_euclid(2)).max(0);
            } else {
                speeches[i].1 = (audio_len as f64).min(speeches[i].1 as f64 + pad) as i64;
                speeches[i + 1].0 = (speeches[i + 1].0 as f64 - pad).max(0.0) as i64;
            }
        } else {
            speeches[i].1 = (audio_len as f64).min(speeches[i].1 as f64 + pad) as i64;
        }
    }
    speeches
}
