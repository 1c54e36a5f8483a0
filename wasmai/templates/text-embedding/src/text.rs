//! The text pipeline: tokenize with the model's Hugging Face tokenizer (the `tokenizers`
//! crate, configured by the embedded `tokenizer.json`; truncation set to the manifest's
//! `max_length`), batch and pad, run the graph through `nn::infer` with INT64 (or INT32)
//! `input_ids` / `attention_mask` / `token_type_ids`, mean-pool the token vectors over the
//! attention mask and L2-normalize, as sentence-transformers does (`Pooling` with
//! `pooling_mode_mean_tokens`, then `Normalize`).

use std::cell::{Cell, RefCell};
use std::time::Instant;

use tokenizers::{Tokenizer, TruncationParams};

use crate::bindings::exports::wasmai::inference::text_embedding::{EmbeddingInfo, Encoding, Timings};
use crate::bindings::wasi::nn::tensor::TensorType;
use crate::bindings::wasmai::inference::types::{Error, Tensor};
use crate::{model, nn, text_model};

/// How token vectors become one vector per text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the token vectors whose attention mask is 1 (sentence-transformers
    /// `pooling_mode_mean_tokens`; the token count is clamped to at least 1e-9 as there).
    Mean,
}

/// What happens to the pooled vector. Which variant is constructed depends on the manifest
/// rendered into `text_model.rs`.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Normalization {
    /// Divided by its Euclidean norm, at least 1e-12 (`torch.nn.functional.normalize`).
    L2,
    /// Left as pooled.
    None,
}

impl Pooling {
    fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
        }
    }
}

impl Normalization {
    fn name(self) -> &'static str {
        match self {
            Normalization::L2 => "l2",
            Normalization::None => "none",
        }
    }
}

thread_local! {
    static TOKENIZER: RefCell<Option<Tokenizer>> = const { RefCell::new(None) };
    /// The padding token id `tokenizer.json` names (0 when it sets no padding).
    static PAD_ID: Cell<u32> = const { Cell::new(0) };
    static TIMINGS: Cell<Timings> = const {
        Cell::new(Timings { tokenize_us: 0, inference_us: 0, pool_us: 0, texts: 0, batches: 0 })
    };
}

/// `embedding-info`: everything `text_model.rs` holds.
pub fn info() -> EmbeddingInfo {
    EmbeddingInfo {
        dimension: text_model::DIMENSION,
        max_length: text_model::MAX_LENGTH,
        pooling: text_model::POOLING.name().to_string(),
        normalization: text_model::NORMALIZATION.name().to_string(),
        tokenizer_sha256: text_model::TOKENIZER_SHA256.to_string(),
        output: text_model::OUTPUT.to_string(),
        max_batch: text_model::MAX_BATCH,
    }
}

pub fn last_timings() -> Timings {
    TIMINGS.with(Cell::get)
}

/// The embedded tokenizer with truncation at `MAX_LENGTH` and without padding (batches are
/// padded here, to their longest text). Parsed once per instance.
fn open_tokenizer() -> Result<Tokenizer, Error> {
    // No thread pool in a wasm guest: the tokenizer's batch helpers must run serially.
    tokenizers::utils::parallelism::set_parallelism(false);
    let mut tokenizer = Tokenizer::from_bytes(text_model::TOKENIZER_JSON)
        .map_err(|e| Error::Internal(format!("the embedded tokenizer.json does not load: {e}")))?;
    let truncation = TruncationParams { max_length: text_model::MAX_LENGTH as usize, ..TruncationParams::default() };
    tokenizer
        .with_truncation(Some(truncation))
        .map_err(|e| Error::Internal(format!("tokenizer truncation to {}: {e}", text_model::MAX_LENGTH)))?;
    PAD_ID.with(|p| p.set(tokenizer.get_padding().map_or(0, |padding| padding.pad_id)));
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Encode every text (special tokens added, truncated); `Err(bad-input)` names the text that fails.
fn encode_all(texts: &[String]) -> Result<Vec<tokenizers::Encoding>, Error> {
    TOKENIZER.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(open_tokenizer()?);
        }
        let tokenizer = cell.as_ref().ok_or_else(|| Error::Internal("tokenizer not loaded".to_string()))?;
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                tokenizer
                    .encode(text.as_str(), true)
                    .map_err(|e| Error::BadInput(format!("text {i} cannot be tokenized: {e}")))
            })
            .collect()
    })
}

/// `tokenize`: the encodings the model would see, unpadded.
pub fn tokenize(texts: &[String]) -> Result<Vec<Encoding>, Error> {
    Ok(encode_all(texts)?
        .into_iter()
        .map(|e| Encoding {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            tokens: e.get_tokens().to_vec(),
        })
        .collect())
}

/// Row-major `[rows, width]` little-endian bytes of `value(row, column)` in the input's dtype,
/// `pad` past each row's length.
fn id_tensor(name: &str, dtype: TensorType, rows: &[&[u32]], width: usize, pad: i64) -> Result<Tensor, Error> {
    let size = match dtype {
        TensorType::I64 => 8,
        TensorType::I32 => 4,
        other => {
            return Err(Error::Internal(format!(
                "graph input {name:?} is {}, a text model takes i64 or i32",
                crate::spec::dtype_name(other)
            )))
        }
    };
    let mut data = Vec::with_capacity(rows.len() * width * size);
    for row in rows {
        for column in 0..width {
            let value = row.get(column).map_or(pad, |&v| i64::from(v));
            if size == 8 {
                data.extend_from_slice(&value.to_le_bytes());
            } else {
                data.extend_from_slice(&(value as i32).to_le_bytes());
            }
        }
    }
    Ok(Tensor { name: name.to_string(), dtype, shape: vec![rows.len() as u32, width as u32], data })
}

/// The graph inputs for a batch of encodings, padded to the longest.
fn batch_inputs(batch: &[tokenizers::Encoding], pad_id: u32) -> Result<Vec<Tensor>, Error> {
    let width = batch.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
    let ids: Vec<&[u32]> = batch.iter().map(|e| e.get_ids()).collect();
    let masks: Vec<&[u32]> = batch.iter().map(|e| e.get_attention_mask()).collect();
    let types: Vec<&[u32]> = batch.iter().map(|e| e.get_type_ids()).collect();
    model::INPUTS
        .iter()
        .map(|spec| match spec.name {
            "input_ids" => id_tensor(spec.name, spec.dtype, &ids, width, i64::from(pad_id)),
            "attention_mask" => id_tensor(spec.name, spec.dtype, &masks, width, 0),
            "token_type_ids" => id_tensor(spec.name, spec.dtype, &types, width, 0),
            other => Err(Error::Internal(format!(
                "graph input {other:?}: a text model takes input_ids, attention_mask and token_type_ids"
            ))),
        })
        .collect()
}

/// Mean over the tokens whose mask is 1 of `hidden` (`[batch, width, dim]` fp32 bytes), then
/// the normalization: one vector per row.
fn pool(hidden: &Tensor, batch: &[tokenizers::Encoding]) -> Result<Vec<Vec<f32>>, Error> {
    let dim = text_model::DIMENSION as usize;
    let rows = batch.len();
    let width = hidden.shape.get(1).copied().unwrap_or(0) as usize;
    if hidden.dtype != TensorType::Fp32
        || hidden.shape.len() != 3
        || hidden.shape[0] as usize != rows
        || hidden.shape[2] as usize != dim
        || hidden.data.len() != rows * width * dim * 4
    {
        return Err(Error::Internal(format!(
            "output {:?}: {} {:?}, expected fp32 [{rows}, sequence, {dim}]",
            hidden.name,
            crate::spec::dtype_name(hidden.dtype),
            hidden.shape
        )));
    }
    let value = |offset: usize| {
        let b = &hidden.data[offset * 4..offset * 4 + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    let mut vectors = Vec::with_capacity(rows);
    for (row, encoding) in batch.iter().enumerate() {
        let mut sum = vec![0f32; dim];
        let mut count = 0f32;
        for (token, &mask) in encoding.get_attention_mask().iter().enumerate().take(width) {
            if mask == 0 {
                continue;
            }
            let base = (row * width + token) * dim;
            for (d, s) in sum.iter_mut().enumerate() {
                *s += value(base + d);
            }
            count += mask as f32;
        }
        let count = count.max(1e-9);
        let mut vector: Vec<f32> = sum.into_iter().map(|s| s / count).collect();
        if text_model::NORMALIZATION == Normalization::L2 {
            let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            vector.iter_mut().for_each(|v| *v /= norm);
        }
        vectors.push(vector);
    }
    Ok(vectors)
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// `embed`: tokenize, run the graph in batches of `MAX_BATCH` (longest texts first), pool and
/// normalize; vectors in the order of `texts`.
pub fn embed(texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
    let mut timings = Timings { tokenize_us: 0, inference_us: 0, pool_us: 0, texts: texts.len() as u32, batches: 0 };
    let started = Instant::now();
    let encodings = encode_all(texts)?;
    let pad_id = PAD_ID.with(Cell::get);
    timings.tokenize_us = micros(started);
    // Longest first, as sentence-transformers batches: each batch is padded to its longest text,
    // so texts of similar length share a batch. Vectors go back to the callers' order.
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
    let sorted: Vec<tokenizers::Encoding> = order.iter().map(|&i| encodings[i].clone()).collect();
    let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
    for batch in sorted.chunks(text_model::MAX_BATCH.max(1) as usize) {
        let started = Instant::now();
        let inputs = batch_inputs(batch, pad_id)?;
        timings.tokenize_us += micros(started);
        let started = Instant::now();
        let outputs = nn::infer(inputs)?;
        timings.inference_us += micros(started);
        let started = Instant::now();
        let hidden = outputs.iter().find(|t| t.name == text_model::OUTPUT).ok_or_else(|| {
            Error::Internal(format!(
                "the graph returned no output {:?} (got {})",
                text_model::OUTPUT,
                outputs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        vectors.extend(pool(hidden, batch)?);
        timings.pool_us += micros(started);
        timings.batches += 1;
    }
    let started = Instant::now();
    let mut ordered: Vec<Vec<f32>> = vec![Vec::new(); vectors.len()];
    for (vector, &i) in vectors.into_iter().zip(&order) {
        ordered[i] = vector;
    }
    timings.pool_us += micros(started);
    TIMINGS.with(|t| t.set(timings));
    Ok(ordered)
}
