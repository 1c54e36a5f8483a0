//! Image classification around the model: PNG/JPEG bytes -> input tensor -> predictions.
//!
//! Preprocessing follows the manifest's `[preprocess]` table (`model::PREPROCESS`):
//! 1. decode PNG or JPEG with the `image` crate and convert to 8-bit RGB (alpha is dropped,
//!    16-bit samples are scaled to 8 bits, grey is replicated);
//! 2. if `resize_shorter = S`: scale both sides by `S / min(w, h)`, rounded to the nearest
//!    pixel (halves to even, like Python's `round` in `wasmai.preprocess`), with
//!    `fast_image_resize`'s bilinear convolution (Pillow's `BILINEAR`, antialiasing when
//!    shrinking; wasm SIMD128 kernels);
//! 3. an image still smaller than the crop is enlarged to cover it (aspect kept), then centre
//!    cropped to `crop_height x crop_width` at `((w - cw) / 2, (h - ch) / 2)` (integer division);
//! 4. channels in RGB or BGR order; channel `c` (in that order) becomes
//!    `(x - mean[c]) / std[c]` with x in 0..=255;
//! 5. NCHW `[1, 3, H, W]` or NHWC `[1, H, W, 3]`, fp32 (or fp16 if the model input is fp16).

use std::cell::Cell;
use std::time::Instant;

use fast_image_resize as fir;
use image::imageops;
use image::RgbImage;

use crate::bindings::exports::wasmai::inference::image_classification::{Prediction, Timings};
use crate::bindings::wasi::nn::tensor::TensorType;
use crate::bindings::wasmai::inference::types::{Error, Tensor};
use crate::image_io::{self, MAX_ALLOC};
use crate::model;
use crate::nn;
use crate::spec::{dtype_name, dtype_size, Color, Dim, Layout, Preprocess};

/// Largest accepted image side, in pixels (decoder limit).
pub const MAX_SIDE: u32 = 16384;

// The model must look like an image classifier: checked when the crate compiles.
const fn input_fits(pre: Preprocess) -> bool {
    if model::INPUTS.len() != 1 {
        return false;
    }
    let input = model::INPUTS[0];
    if input.shape.len() != 4 {
        return false;
    }
    let (c, h, w) = match pre.layout {
        Layout::Nchw => (input.shape[1], input.shape[2], input.shape[3]),
        Layout::Nhwc => (input.shape[3], input.shape[1], input.shape[2]),
    };
    let channels_ok = matches!(c, Dim::Fixed(3) | Dim::Dynamic(_));
    let h_ok = match h {
        Dim::Fixed(n) => n == pre.crop_height,
        Dim::Dynamic(_) => true,
    };
    let w_ok = match w {
        Dim::Fixed(n) => n == pre.crop_width,
        Dim::Dynamic(_) => true,
    };
    let ty_ok = matches!(input.dtype, TensorType::Fp32 | TensorType::Fp16);
    channels_ok && h_ok && w_ok && ty_ok
}

const PRE: Preprocess = match model::PREPROCESS {
    Some(pre) => pre,
    None => panic!("the image-classification template needs a [preprocess] table in the manifest"),
};
const _: () = assert!(
    input_fits(PRE),
    "the image-classification template needs one fp32/fp16 input shaped [N, 3, crop_height, crop_width] (NCHW) or [N, crop_height, crop_width, 3] (NHWC)"
);
const _: () = assert!(!model::OUTPUTS.is_empty(), "the model has no outputs");

thread_local! {
    static TIMINGS: Cell<Timings> = const { Cell::new(Timings {
        decode_us: 0,
        preprocess_us: 0,
        inference_us: 0,
        postprocess_us: 0,
    }) };
}

fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Decode PNG or JPEG bytes to 8-bit RGB, at most [`MAX_SIDE`] pixels a side.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, Error> {
    image_io::decode(bytes, MAX_SIDE)
}

/// Python's `round`: to the nearest integer, halves to even (as `wasmai.preprocess` rounds).
fn round_half_even(x: f64) -> u64 {
    x.round_ties_even().max(0.0) as u64
}

/// Resize to `nw x nh` (convolution with the bilinear filter, as Pillow's `BILINEAR`:
/// antialiased when shrinking) unless the image already has that size.
fn resize_to(image: RgbImage, nw: u64, nh: u64) -> Result<RgbImage, Error> {
    let (w, h) = image.dimensions();
    if nw.saturating_mul(nh).saturating_mul(3) > MAX_ALLOC {
        return Err(Error::BadImage(format!("resizing the {w}x{h} image would give {nw}x{nh} pixels, too large")));
    }
    if (nw, nh) == (w as u64, h as u64) {
        return Ok(image);
    }
    let (nw, nh) = (nw as u32, nh as u32);
    let internal = |e: &dyn std::fmt::Display| Error::Internal(format!("resize {w}x{h} -> {nw}x{nh}: {e}"));
    let src =
        fir::images::Image::from_vec_u8(w, h, image.into_raw(), fir::PixelType::U8x3).map_err(|e| internal(&e))?;
    let mut dst = fir::images::Image::new(nw, nh, fir::PixelType::U8x3);
    let options = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
    fir::Resizer::new().resize(&src, &mut dst, &options).map_err(|e| internal(&e))?;
    RgbImage::from_raw(nw, nh, dst.into_vec()).ok_or_else(|| internal(&"buffer size"))
}

/// Resize so the shorter side is `shorter` pixels, aspect ratio kept: both sides are scaled
/// by `shorter / min(w, h)` and rounded like `wasmai.preprocess` (halves to even, at least 1).
fn resize_shorter(image: RgbImage, shorter: u32) -> Result<RgbImage, Error> {
    let (w, h) = (image.width() as f64, image.height() as f64);
    let scale = shorter as f64 / w.min(h);
    let nw = round_half_even(w * scale).max(1);
    let nh = round_half_even(h * scale).max(1);
    resize_to(image, nw, nh)
}

/// Enlarge an image smaller than the crop so that it covers it (aspect ratio kept), as
/// `wasmai.preprocess` does.
fn cover_crop(image: RgbImage, cw: u32, ch: u32) -> Result<RgbImage, Error> {
    let (w, h) = image.dimensions();
    if w >= cw && h >= ch {
        return Ok(image);
    }
    let scale = (cw as f64 / w as f64).max(ch as f64 / h as f64);
    let nw = round_half_even(w as f64 * scale).max(cw as u64);
    let nh = round_half_even(h as f64 * scale).max(ch as u64);
    resize_to(image, nw, nh)
}

/// Resize, centre crop, reorder channels, normalize and lay out a decoded image as the
/// model's input tensor.
pub fn to_tensor(image: RgbImage) -> Result<Tensor, Error> {
    let image = match PRE.resize_shorter {
        Some(s) => resize_shorter(image, s)?,
        None => image,
    };
    let (cw, ch) = (PRE.crop_width, PRE.crop_height);
    let image = cover_crop(image, cw, ch)?;
    let (w, h) = image.dimensions();
    let crop = imageops::crop_imm(&image, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
    let order: [usize; 3] = match PRE.color {
        Color::Rgb => [0, 1, 2],
        Color::Bgr => [2, 1, 0],
    };
    let (cw, ch) = (cw as usize, ch as usize);
    let mut values = vec![0f32; 3 * cw * ch];
    for (x, y, pixel) in crop.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        for (c, &src) in order.iter().enumerate() {
            let v = (pixel.0[src] as f32 - PRE.mean[c]) / PRE.std[c];
            let index = match PRE.layout {
                Layout::Nchw => (c * ch + y) * cw + x,
                Layout::Nhwc => (y * cw + x) * 3 + c,
            };
            values[index] = v;
        }
    }
    let input = model::INPUTS[0];
    let data: Vec<u8> = match input.dtype {
        TensorType::Fp16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let shape = match PRE.layout {
        Layout::Nchw => vec![1, 3, ch as u32, cw as u32],
        Layout::Nhwc => vec![1, ch as u32, cw as u32, 3],
    };
    let tensor = Tensor { name: input.name.to_string(), dtype: input.dtype, shape, data };
    nn::check_tensor(&input, &tensor)?;
    Ok(tensor)
}

/// `image-classification.preprocess`.
pub fn preprocess(bytes: &[u8]) -> Result<Tensor, Error> {
    to_tensor(decode(bytes)?)
}

/// Scores of the first batch row of a float tensor, as f32.
fn scores(tensor: &Tensor) -> Result<Vec<f32>, Error> {
    let size = dtype_size(tensor.dtype);
    let count = tensor.shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d as usize));
    if count.and_then(|n| n.checked_mul(size)) != Some(tensor.data.len()) {
        return Err(Error::BadInput(format!(
            "output {:?}: {} bytes do not match its shape {:?}",
            tensor.name,
            tensor.data.len(),
            tensor.shape
        )));
    }
    let classes = tensor.shape.last().copied().unwrap_or(1) as usize;
    let row_bytes = classes
        .checked_mul(size)
        .filter(|&n| n > 0 && n <= tensor.data.len())
        .ok_or_else(|| Error::BadInput(format!("output {:?} has no scores", tensor.name)))?;
    let row = &tensor.data[..row_bytes];
    let chunks = row.chunks_exact(size);
    let values: Vec<f32> = match tensor.dtype {
        TensorType::Fp32 => chunks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        TensorType::Fp16 => chunks.map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        TensorType::Bf16 => chunks.map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        TensorType::Fp64 => {
            chunks.map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32).collect()
        }
        other => {
            return Err(Error::BadInput(format!(
                "output {:?} is {}, expected floating-point scores",
                tensor.name,
                dtype_name(other)
            )))
        }
    };
    Ok(values)
}

/// Numerically stable softmax.
fn softmax(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 && sum.is_finite() {
        for v in values.iter_mut() {
            *v /= sum;
        }
    }
}

/// `image-classification.postprocess`: the model's first output (by name, else the first
/// tensor), first batch row, softmax if the manifest says so, best `top_k` first (ties by
/// lower index).
pub fn postprocess(outputs: &[Tensor], top_k: u32) -> Result<Vec<Prediction>, Error> {
    let wanted = model::OUTPUTS[0].name;
    let tensor = outputs
        .iter()
        .find(|t| t.name == wanted)
        .or_else(|| outputs.first())
        .ok_or_else(|| Error::BadInput("no output tensors".to_string()))?;
    let mut values = scores(tensor)?;
    if model::SOFTMAX {
        softmax(&mut values);
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(top_k as usize);
    Ok(order
        .into_iter()
        .map(|i| Prediction {
            label: model::LABELS.get(i).map(|s| s.to_string()).unwrap_or_else(|| i.to_string()),
            index: i as u32,
            score: values[i],
        })
        .collect())
}

/// `image-classification.classify`: decode, preprocess, infer and postprocess, timing each
/// stage with `std::time::Instant` (microseconds; see `last_timings`).
pub fn classify(bytes: &[u8], top_k: u32) -> Result<Vec<Prediction>, Error> {
    let mut timings = Timings { decode_us: 0, preprocess_us: 0, inference_us: 0, postprocess_us: 0 };
    let result = (|| {
        let start = Instant::now();
        let image = decode(bytes)?;
        timings.decode_us = micros(start);
        let start = Instant::now();
        let input = to_tensor(image)?;
        timings.preprocess_us = micros(start);
        let start = Instant::now();
        let outputs = nn::infer(vec![input])?;
        timings.inference_us = micros(start);
        let start = Instant::now();
        let predictions = postprocess(&outputs, top_k)?;
        timings.postprocess_us = micros(start);
        Ok(predictions)
    })();
    TIMINGS.with(|t| t.set(timings));
    result
}

/// `image-classification.last-timings`: the stages of the last `classify` call (zeros for
/// stages that did not run).
pub fn last_timings() -> Timings {
    TIMINGS.with(|t| t.get())
}

#[cfg(test)]
mod tests {
    //! Native unit tests (`cargo test` on the host target; wasi-nn is not called).

    use super::*;

    fn tensor(dtype: TensorType, shape: Vec<u32>, values: &[f32]) -> Tensor {
        Tensor {
            name: model::OUTPUTS[0].name.to_string(),
            dtype,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn junk_and_empty_bytes_are_bad_images() {
        assert!(matches!(preprocess(b""), Err(Error::BadImage(_))));
        assert!(matches!(preprocess(b"GIF89a not a png"), Err(Error::BadImage(_))));
        assert!(matches!(preprocess(b"\x89PNG\r\n\x1a\n truncated"), Err(Error::BadImage(_))));
    }

    #[test]
    fn postprocess_ranks_and_checks_its_input() {
        let n = match model::OUTPUTS[0].shape.last() {
            Some(Dim::Fixed(n)) => *n as usize,
            _ => 4,
        };
        let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let best = postprocess(&[tensor(TensorType::Fp32, vec![1, n as u32], &values)], 2).unwrap();
        assert_eq!(best.len(), 2.min(n));
        assert_eq!(best[0].index as usize, n - 1);
        if model::SOFTMAX {
            let all = postprocess(&[tensor(TensorType::Fp32, vec![1, n as u32], &values)], n as u32).unwrap();
            let sum: f32 = all.iter().map(|p| p.score).sum();
            assert!((sum - 1.0).abs() < 1e-5);
        }
        let short = Tensor { data: vec![0; 3], ..tensor(TensorType::Fp32, vec![1, n as u32], &values) };
        assert!(matches!(postprocess(&[short], 1), Err(Error::BadInput(_))));
        assert!(matches!(postprocess(&[], 1), Err(Error::BadInput(_))));
        let empty = tensor(TensorType::Fp32, vec![0, n as u32], &[]);
        assert!(matches!(postprocess(&[empty], 1), Err(Error::BadInput(_))));
    }

    /// With `WASMAI_VISION_IMAGE=<png/jpeg>` and `WASMAI_VISION_OUT=<file>`, writes the input
    /// tensor's bytes for that image (used by wasmai's tests to compare with wasmai.preprocess).
    #[test]
    fn preprocess_image_file() {
        let (Ok(image), Ok(out)) = (std::env::var("WASMAI_VISION_IMAGE"), std::env::var("WASMAI_VISION_OUT")) else {
            return;
        };
        let bytes = std::fs::read(image).unwrap();
        let tensor = preprocess(&bytes).unwrap();
        std::fs::write(out, &tensor.data).unwrap();
    }
}
