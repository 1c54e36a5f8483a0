//! The audio front end: WAV bytes -> mono f32 samples in -1..1 at the model's sample rate.
//!
//! 1. parse with `hound` (RIFF WAVE, PCM integer 8/16/24/32-bit scaled by 2^(bits-1), or
//!    IEEE float 32-bit as is; WAVE_FORMAT_EXTENSIBLE too); anything else is `error::bad-input`.
//!    Packed 16-bit and float samples are read from the data chunk hound located in one pass;
//!    the other layouts through hound's sample iterator;
//! 2. mix down to mono: the mean of the channels of each frame (what silero-vad's `read_audio`
//!    does); a trailing partial frame is dropped;
//! 3. resample to the model's rate with rubato's synchronous FFT resampler (`rubato::Fft`,
//!    fixed input chunks of 1024 frames, BlackmanHarris2 anti-aliasing window; the resampler's
//!    delay is trimmed, so sample `n` of the output is at time `n / rate` like the input's).
//!    Audio already at the model's rate is passed through untouched.

use std::io::Cursor;

use hound::{SampleFormat, WavReader};
use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Resampler};

use crate::bindings::wasmai::inference::types::Error;

/// Lowest and highest sample rate accepted (Hz).
pub const MIN_RATE: u32 = 1_000;
pub const MAX_RATE: u32 = 768_000;

/// Frames per resampler chunk.
const RESAMPLE_CHUNK: usize = 1024;

/// Decoded audio: mono samples in -1..1 and their sample rate (Hz).
pub struct Mono {
    pub samples: Vec<f32>,
    pub rate: u32,
}

fn bad(message: String) -> Error {
    Error::BadInput(message)
}

/// Mean of each frame's `channels` interleaved samples, each multiplied by `scale`.
fn mix<T: Copy + Into<f32>>(interleaved: &[T], channels: usize, scale: f32) -> Vec<f32> {
    if channels == 1 {
        return interleaved.iter().map(|&s| s.into() * scale).collect();
    }
    let per = scale / channels as f32;
    interleaved.chunks_exact(channels).map(|frame| frame.iter().map(|&s| s.into()).sum::<f32>() * per).collect()
}

/// The bytes of the data chunk when its samples are packed in `size` bytes each: `start` is
/// where hound left its cursor (just after the `data` chunk header), `n` hound's sample count.
/// None for any other layout (e.g. 16 valid bits in a 24-bit container), which then goes
/// through hound's sample iterator.
fn packed_data(wav: &[u8], start: usize, n: usize, size: usize) -> Option<&[u8]> {
    let header = wav.get(start.checked_sub(8)?..start)?;
    let chunk_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let bytes = n.checked_mul(size)?;
    if &header[..4] != b"data" || chunk_len / size != n {
        return None;
    }
    wav.get(start..start.checked_add(bytes)?)
}

/// Parse WAV bytes and mix them down to mono. Errors: `bad-input` naming what is wrong.
pub fn decode(wav: &[u8]) -> Result<Mono, Error> {
    let open = || WavReader::new(Cursor::new(wav)).map_err(|e| bad(format!("not a readable WAV file: {e}")));
    let reader = open()?;
    let spec = reader.spec();
    let channels = spec.channels as usize;
    if channels == 0 {
        return Err(bad("the WAV file has no channels".to_string()));
    }
    if !(MIN_RATE..=MAX_RATE).contains(&spec.sample_rate) {
        return Err(bad(format!("sample rate {} Hz is outside {MIN_RATE}..={MAX_RATE} Hz", spec.sample_rate)));
    }
    let n = reader.len() as usize;
    let start = usize::try_from(reader.into_inner().position()).unwrap_or(usize::MAX);
    let read_err = |e: hound::Error| bad(format!("cannot read the WAV samples: {e}"));
    let samples = match (spec.sample_format, spec.bits_per_sample) {
        // 16-bit PCM and 32-bit float, the common cases, straight from the data chunk's bytes.
        (SampleFormat::Int, 16) => match packed_data(wav, start, n, 2) {
            Some(bytes) => {
                let raw: Vec<i16> = bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
                mix(&raw, channels, 1.0 / 32768.0)
            }
            None => {
                let raw: Vec<i16> = open()?.into_samples::<i16>().collect::<Result<_, _>>().map_err(read_err)?;
                mix(&raw, channels, 1.0 / 32768.0)
            }
        },
        (SampleFormat::Float, 32) => match packed_data(wav, start, n, 4) {
            Some(bytes) => {
                let raw: Vec<f32> =
                    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                mix(&raw, channels, 1.0)
            }
            None => {
                let raw: Vec<f32> = open()?.into_samples::<f32>().collect::<Result<_, _>>().map_err(read_err)?;
                mix(&raw, channels, 1.0)
            }
        },
        (SampleFormat::Int, bits @ (8 | 24 | 32)) => {
            let raw: Vec<i32> = open()?.into_samples::<i32>().collect::<Result<_, _>>().map_err(read_err)?;
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            let per = scale / channels as f64;
            raw.chunks_exact(channels).map(|f| (f.iter().map(|&s| s as f64).sum::<f64>() * per) as f32).collect()
        }
        (format, bits) => {
            let kind = if format == SampleFormat::Float { "float" } else { "integer" };
            return Err(bad(format!(
                "unsupported WAV sample format: {bits}-bit {kind} (PCM 8/16/24/32-bit integer or 32-bit float)"
            )));
        }
    };
    Ok(Mono { samples, rate: spec.sample_rate })
}

/// `samples` at `from` Hz -> `to` Hz (a copy when the rates are equal). About
/// `len * to / from` samples come out. Errors: `internal` if rubato refuses the rates.
pub fn resample(samples: Vec<f32>, from: u32, to: u32) -> Result<Vec<f32>, Error> {
    if from == to || samples.is_empty() {
        return Ok(samples);
    }
    let internal =
        |what: &str, e: &dyn std::fmt::Display| Error::Internal(format!("resampling {from} -> {to} Hz: {what}: {e}"));
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, RESAMPLE_CHUNK, 1, FixedSync::Input)
        .map_err(|e| internal("setup", &e))?;
    let frames = samples.len();
    let input = SequentialSlice::new(&samples[..], 1, frames).map_err(|e| internal("input", &e))?;
    let output = resampler.process_all(&input, frames, None).map_err(|e| internal("process", &e))?;
    Ok(output.take_data())
}
