//! The MTCNN detection pipeline, step for step as facenet-pytorch's `detect_face`
//! (facenet_pytorch/models/utils/detect_face.py, v2.6.0), which is the reference:
//!
//! 1. decode PNG/JPEG to 8-bit RGB, kept as one summed-area table per channel (see `Planes`);
//! 2. pyramid: `m = 12 / min_face_size`, scales `m * f^k` while `min(h, w) * m * f^k >= 12` (in f64,
//!    as Python computes); each level is the image resized to `(int(h * s + 1), int(w * s + 1))`
//!    with `interpolate(mode="area")` (= adaptive average pooling: output cell `i` averages input
//!    rows `floor(i * H / h) .. ceil((i + 1) * H / h)`), normalized `(x - 127.5) * 0.0078125`;
//! 3. P-Net per level; cells with probability >= threshold 0 give boxes
//!    `floor((2 * (x, y) + 1) / s)` .. `floor((2 * (x, y) + 12) / s)` (fp32); NMS (IoU > 0.5) per
//!    level, then NMS (IoU > 0.7) across levels; box regression by the P-Net offsets, squaring;
//! 4. R-Net on every box's crop (clipped to the image, area-resized to 24x24), one batched call;
//!    probability > threshold 1; NMS (IoU > 0.7); regression (`w = x2 - x1 + 1`), squaring;
//! 5. O-Net on 48x48 crops; probability > threshold 2; landmarks `w * p + x1 - 1`; regression;
//!    NMS with the "Min" overlap (intersection / smaller area, +1 pixel areas) > 0.7;
//! 6. faces ordered by box area, largest first (`MTCNN.detect` with `select_largest=True`).
//!
//! NMS with IoU is torchvision's `nms` (boxes by score, stable, descending; areas without +1;
//! suppress IoU > threshold); the "Min" NMS is facenet-pytorch's `nms_numpy`. Arithmetic is fp32
//! wherever the reference's tensors are fp32.

use std::cell::Cell;
use std::time::Instant;

use crate::bindings::exports::wasmai::inference::face_detection::{BoundingBox, DetectOptions, Face, Point, Timings};
use crate::bindings::wasmai::inference::types::Error;
use crate::image_io;
use crate::model;
use crate::nn;

/// Smallest pyramid level side P-Net accepts: its 12x12 receptive field (MTCNN paper).
const CELL: f64 = 12.0;
/// P-Net's output stride in input pixels (two 2x2 poolings folded: the reference's `stride = 2`).
const STRIDE: f32 = 2.0;
/// P-Net's box side in input pixels (the reference's `cellsize = 12`).
const CELL_SIZE: f32 = 12.0;
/// NMS thresholds of the reference: within a P-Net level, across levels, after R-Net, after O-Net.
const NMS_LEVEL: f64 = 0.5;
const NMS_ACROSS: f64 = 0.7;
const NMS_RNET: f64 = 0.7;
const NMS_ONET: f32 = 0.7;
/// Largest image side accepted by `detect` (pixels).
pub const MAX_SIDE: u32 = 8192;

thread_local! {
    static TIMINGS: Cell<Timings> = const { Cell::new(Timings {
        decode_us: 0, pyramid_us: 0, pnet_us: 0, nms_us: 0, rnet_us: 0, onet_us: 0,
        scales: 0, rnet_boxes: 0, onet_boxes: 0,
    }) };
}

fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// `face-detection.default-options`: the manifest's `[detection]` table.
pub fn default_options() -> DetectOptions {
    DetectOptions {
        min_face_size: model::MIN_FACE_SIZE,
        scale_factor: model::SCALE_FACTOR,
        thresholds: model::THRESHOLDS,
    }
}

/// `face-detection.last-timings`.
pub fn last_timings() -> Timings {
    TIMINGS.with(|t| t.get())
}

/// An f32 option as the f64 the user wrote (0.709f32 -> 0.709f64, not 0.70899999141...), since
/// the reference computes the pyramid in Python floats.
fn as_written(v: f32) -> f64 {
    format!("{v}").parse::<f64>().unwrap_or(v as f64)
}

/// An RGB image as one summed-area table per channel: `sums[c][y * (w + 1) + x]` is the sum of
/// channel `c` over rows `0..y` and columns `0..x`, in wrapping u32 arithmetic (a window's sum
/// comes out exact whenever it is below 2^32, i.e. always for images up to `MAX_SIDE`).
///
/// The reference averages fp32 pixel values 0..=255 with fp32 sums; sums of integers are exact in
/// fp32 below 2^24 (a 256x256 window of white), so for every window up to that the mean computed
/// here, `(exact sum as f32) / (count as f32)`, is bit for bit the reference's.
struct Planes {
    width: usize,
    height: usize,
    sums: [Vec<u32>; 3],
}

impl Planes {
    fn from_rgb(image: &image::RgbImage) -> Planes {
        let (width, height) = (image.width() as usize, image.height() as usize);
        let stride = width + 1;
        let mut sums =
            [vec![0u32; stride * (height + 1)], vec![0u32; stride * (height + 1)], vec![0u32; stride * (height + 1)]];
        let raw = image.as_raw();
        for (c, table) in sums.iter_mut().enumerate() {
            for y in 0..height {
                let mut row = 0u32;
                for x in 0..width {
                    row = row.wrapping_add(raw[(y * width + x) * 3 + c] as u32);
                    table[(y + 1) * stride + x + 1] = table[y * stride + x + 1].wrapping_add(row);
                }
            }
        }
        Planes { width, height, sums }
    }

    /// Area-resample the region (columns `x0..x1`, rows `y0..y1`) to `oh x ow`, normalized
    /// `(x - 127.5) * 0.0078125`, appended to `out` as three planes (torch's
    /// `adaptive_avg_pool2d` bins: `floor(i * in / out) .. ceil((i + 1) * in / out)`).
    fn area_resize_into(
        &self,
        (x0, y0, x1, y1): (usize, usize, usize, usize),
        oh: usize,
        ow: usize,
        out: &mut Vec<f32>,
    ) {
        let (iw, ih) = (x1 - x0, y1 - y0);
        let stride = self.width + 1;
        let bins = |o: usize, n_out: usize, n_in: usize| (o * n_in / n_out, ((o + 1) * n_in).div_ceil(n_out));
        let cols: Vec<(usize, usize)> = (0..ow).map(|o| bins(o, ow, iw)).map(|(s, e)| (x0 + s, x0 + e)).collect();
        for table in &self.sums {
            for oy in 0..oh {
                let (ys, ye) = bins(oy, oh, ih);
                let (top, bottom) = (&table[(y0 + ys) * stride..], &table[(y0 + ye) * stride..]);
                let rows = (ye - ys) as f32;
                for &(xs, xe) in &cols {
                    let sum = bottom[xe].wrapping_sub(bottom[xs]).wrapping_sub(top[xe]).wrapping_add(top[xs]);
                    let mean = sum as f32 / (rows * (xe - xs) as f32);
                    out.push((mean - 127.5) * 0.0078125);
                }
            }
        }
    }
}

/// A candidate: corners, score, regression offsets (and landmarks after O-Net).
#[derive(Clone, Copy, Debug)]
struct Candidate {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
    marks: [f32; 10],
}

/// torchvision's `nms`: indices kept, best score first (stable for equal scores); a box is
/// dropped when its IoU with a kept box is > `threshold` (areas `(x2 - x1) * (y2 - y1)`, fp32).
fn nms_iou(boxes: &[Candidate], threshold: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| boxes[b].score.total_cmp(&boxes[a].score));
    let area = |c: &Candidate| (c.b[2] - c.b[0]) * (c.b[3] - c.b[1]);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = &boxes[i];
        let ai = area(bi);
        for &j in &order[k + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &boxes[j];
            let w = (bi.b[2].min(bj.b[2]) - bi.b[0].max(bj.b[0])).max(0.0);
            let h = (bi.b[3].min(bj.b[3]) - bi.b[1].max(bj.b[1])).max(0.0);
            let inter = w * h;
            let iou = inter / (ai + area(bj) - inter);
            if iou as f64 > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// facenet-pytorch's `nms_numpy` with method "Min": overlap = intersection / smaller area, areas
/// with +1 pixel; best score first; a box is dropped when its overlap is > `threshold`.
fn nms_min(boxes: &[Candidate], threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    // np.argsort(s) ascending, then taken from the end: best first.
    order.sort_by(|&a, &b| boxes[a].score.total_cmp(&boxes[b].score));
    let area = |c: &Candidate| (c.b[2] - c.b[0] + 1.0) * (c.b[3] - c.b[1] + 1.0);
    let mut keep = Vec::new();
    while let Some(i) = order.pop() {
        keep.push(i);
        let bi = &boxes[i];
        order.retain(|&j| {
            let bj = &boxes[j];
            let w = (bi.b[2].min(bj.b[2]) - bi.b[0].max(bj.b[0]) + 1.0).max(0.0);
            let h = (bi.b[3].min(bj.b[3]) - bi.b[1].max(bj.b[1]) + 1.0).max(0.0);
            let inter = w * h;
            inter / area(bi).min(area(bj)) <= threshold
        });
    }
    keep
}

/// The reference's `rerec`: the box made square around its centre, side = max(w, h).
fn square(c: &mut Candidate) {
    let h = c.b[3] - c.b[1];
    let w = c.b[2] - c.b[0];
    let l = w.max(h);
    c.b[0] = c.b[0] + w * 0.5 - l * 0.5;
    c.b[1] = c.b[1] + h * 0.5 - l * 0.5;
    c.b[2] = c.b[0] + l;
    c.b[3] = c.b[1] + l;
}

/// The reference's `bbreg`: corners moved by the offsets times the side (+1 pixel).
fn regress(c: &mut Candidate) {
    let w = c.b[2] - c.b[0] + 1.0;
    let h = c.b[3] - c.b[1] + 1.0;
    c.b[0] += c.reg[0] * w;
    c.b[1] += c.reg[1] * h;
    c.b[2] += c.reg[2] * w;
    c.b[3] += c.reg[3] * h;
}

/// The reference's `pad` + crop: the box truncated to integers and clipped to the image
/// (1-based in the reference); None when nothing of it is inside.
fn crop_region(c: &Candidate, width: usize, height: usize) -> Option<(usize, usize, usize, usize)> {
    let t = |v: f32| v.trunc() as i64;
    let x = t(c.b[0]).max(1);
    let y = t(c.b[1]).max(1);
    let ex = t(c.b[2]).min(width as i64);
    let ey = t(c.b[3]).min(height as i64);
    if ey > y - 1 && ex > x - 1 {
        Some(((x - 1) as usize, (y - 1) as usize, ex as usize, ey as usize))
    } else {
        None
    }
}

fn check_options(o: &DetectOptions) -> Result<(), Error> {
    let (t0, t1, t2) = o.thresholds;
    if !(o.min_face_size >= 1.0 && o.min_face_size.is_finite()) {
        return Err(Error::BadInput(format!("min-face-size must be >= 1 pixel, not {}", o.min_face_size)));
    }
    if !(o.scale_factor > 0.0 && o.scale_factor < 1.0) {
        return Err(Error::BadInput(format!("scale-factor must be between 0 and 1, not {}", o.scale_factor)));
    }
    if ![t0, t1, t2].iter().all(|t| (0.0..=1.0).contains(t)) {
        return Err(Error::BadInput(format!("thresholds must be in 0..1, not ({t0}, {t1}, {t2})")));
    }
    Ok(())
}

/// The pyramid scales of the reference (f64, as Python computes them).
fn scales(width: usize, height: usize, o: &DetectOptions) -> Vec<f64> {
    let m = CELL / as_written(o.min_face_size);
    let factor = as_written(o.scale_factor);
    let mut minl = width.min(height) as f64 * m;
    let mut scale = m;
    let mut out = Vec::new();
    while minl >= CELL {
        out.push(scale);
        scale *= factor;
        minl *= factor;
    }
    out
}

/// Crops of every candidate area-resized to `side x side`, one batch: (kept candidates, values).
fn crops(img: &Planes, boxes: Vec<Candidate>, side: usize) -> (Vec<Candidate>, Vec<f32>) {
    let mut kept = Vec::with_capacity(boxes.len());
    let mut values = Vec::with_capacity(boxes.len() * 3 * side * side);
    for c in boxes {
        if let Some(region) = crop_region(&c, img.width, img.height) {
            img.area_resize_into(region, side, side, &mut values);
            kept.push(c);
        }
    }
    (kept, values)
}

/// Stage 1: P-Net on every pyramid level; boxes after NMS within and across levels,
/// regression and squaring.
fn stage_pnet(img: &Planes, o: &DetectOptions, t: &mut Timings) -> Result<Vec<Candidate>, Error> {
    let pnet = nn::graph_index("pnet")?;
    let mut all: Vec<Candidate> = Vec::new();
    let (w, h) = (img.width, img.height);
    let levels = scales(w, h, o);
    t.scales = levels.len() as u32;
    for scale in levels {
        let start = Instant::now();
        let hs = (h as f64 * scale + 1.0) as usize;
        let ws = (w as f64 * scale + 1.0) as usize;
        let mut input = Vec::with_capacity(3 * hs * ws);
        img.area_resize_into((0, 0, w, h), hs, ws, &mut input);
        t.pyramid_us += micros(start);

        let start = Instant::now();
        let outputs = nn::run_f32(pnet, &[1, 3, hs as u32, ws as u32], &input)?;
        t.pnet_us += micros(start);

        let start = Instant::now();
        let probs = outputs
            .iter()
            .find(|t| t.name == "pnet_probs")
            .or_else(|| outputs.get(1))
            .ok_or_else(|| Error::Internal("P-Net gave no probabilities".to_string()))?;
        let (oh, ow) = match probs.shape.as_slice() {
            [1, 2, oh, ow] => (*oh as usize, *ow as usize),
            other => return Err(Error::Internal(format!("P-Net probabilities shaped {other:?}"))),
        };
        let probs = nn::output_f32(&outputs, "pnet_probs", 1, 2 * oh * ow)?;
        let offsets = nn::output_f32(&outputs, "pnet_offsets", 0, 4 * oh * ow)?;
        let plane = oh * ow;
        let scale32 = scale as f32;
        let mut level = Vec::new();
        for y in 0..oh {
            for x in 0..ow {
                let p = probs[plane + y * ow + x];
                if p >= o.thresholds.0 {
                    let (bx, by) = (x as f32, y as f32);
                    let q = |v: f32, add: f32| ((STRIDE * v + add) / scale32).floor();
                    let reg = [0, 1, 2, 3].map(|c| offsets[c * plane + y * ow + x]);
                    level.push(Candidate {
                        b: [q(bx, 1.0), q(by, 1.0), q(bx, CELL_SIZE), q(by, CELL_SIZE)],
                        score: p,
                        reg,
                        marks: [0.0; 10],
                    });
                }
            }
        }
        all.extend(nms_iou(&level, NMS_LEVEL).into_iter().map(|i| level[i]));
        t.nms_us += micros(start);
    }
    let start = Instant::now();
    let mut boxes: Vec<Candidate> = nms_iou(&all, NMS_ACROSS).into_iter().map(|i| all[i]).collect();
    for c in boxes.iter_mut() {
        // P-Net regression: sides without +1 (the reference's regw / regh).
        let rw = c.b[2] - c.b[0];
        let rh = c.b[3] - c.b[1];
        c.b = [c.b[0] + c.reg[0] * rw, c.b[1] + c.reg[1] * rh, c.b[2] + c.reg[2] * rw, c.b[3] + c.reg[3] * rh];
        square(c);
    }
    t.nms_us += micros(start);
    Ok(boxes)
}

/// Stage 2: R-Net on 24x24 crops.
fn stage_rnet(img: &Planes, boxes: Vec<Candidate>, o: &DetectOptions) -> Result<Vec<Candidate>, Error> {
    let (kept, values) = crops(img, boxes, 24);
    if kept.is_empty() {
        return Ok(kept);
    }
    let n = kept.len();
    let outputs = nn::run_f32(nn::graph_index("rnet")?, &[n as u32, 3, 24, 24], &values)?;
    let probs = nn::output_f32(&outputs, "rnet_probs", 1, 2 * n)?;
    let offsets = nn::output_f32(&outputs, "rnet_offsets", 0, 4 * n)?;
    let passed: Vec<Candidate> = kept
        .into_iter()
        .enumerate()
        .filter(|(i, _)| probs[2 * i + 1] > o.thresholds.1)
        .map(|(i, c)| Candidate {
            score: probs[2 * i + 1],
            reg: [offsets[4 * i], offsets[4 * i + 1], offsets[4 * i + 2], offsets[4 * i + 3]],
            ..c
        })
        .collect();
    let mut out: Vec<Candidate> = nms_iou(&passed, NMS_RNET).into_iter().map(|i| passed[i]).collect();
    for c in out.iter_mut() {
        regress(c);
        square(c);
    }
    Ok(out)
}

/// Stage 3: O-Net on 48x48 crops, landmarks, regression, "Min" NMS.
fn stage_onet(img: &Planes, boxes: Vec<Candidate>, o: &DetectOptions) -> Result<Vec<Candidate>, Error> {
    let (kept, values) = crops(img, boxes, 48);
    if kept.is_empty() {
        return Ok(kept);
    }
    let n = kept.len();
    let outputs = nn::run_f32(nn::graph_index("onet")?, &[n as u32, 3, 48, 48], &values)?;
    let probs = nn::output_f32(&outputs, "onet_probs", 2, 2 * n)?;
    let offsets = nn::output_f32(&outputs, "onet_offsets", 0, 4 * n)?;
    let marks = nn::output_f32(&outputs, "onet_landmarks", 1, 10 * n)?;
    let mut passed = Vec::new();
    for (i, c) in kept.into_iter().enumerate() {
        let score = probs[2 * i + 1];
        if score <= o.thresholds.2 {
            continue;
        }
        let w = c.b[2] - c.b[0] + 1.0;
        let h = c.b[3] - c.b[1] + 1.0;
        let mut m = [0f32; 10];
        for k in 0..5 {
            m[k] = w * marks[10 * i + k] + c.b[0] - 1.0;
            m[5 + k] = h * marks[10 * i + 5 + k] + c.b[1] - 1.0;
        }
        let mut c = Candidate {
            score,
            reg: [offsets[4 * i], offsets[4 * i + 1], offsets[4 * i + 2], offsets[4 * i + 3]],
            marks: m,
            ..c
        };
        regress(&mut c);
        passed.push(c);
    }
    Ok(nms_min(&passed, NMS_ONET).into_iter().map(|i| passed[i]).collect())
}

fn run(bytes: &[u8], o: &DetectOptions, t: &mut Timings) -> Result<Vec<Face>, Error> {
    check_options(o)?;
    let start = Instant::now();
    let rgb = image_io::decode(bytes, MAX_SIDE)?;
    let img = Planes::from_rgb(&rgb);
    drop(rgb);
    t.decode_us = micros(start);
    nn::load()?;

    let boxes = stage_pnet(&img, o, t)?;
    t.rnet_boxes = boxes.len() as u32;
    let start = Instant::now();
    let boxes = stage_rnet(&img, boxes, o)?;
    t.rnet_us = micros(start);
    t.onet_boxes = boxes.len() as u32;
    let start = Instant::now();
    let mut faces = stage_onet(&img, boxes, o)?;
    // MTCNN.detect(select_largest=True): largest box area first.
    let area = |c: &Candidate| (c.b[2] - c.b[0]) * (c.b[3] - c.b[1]);
    faces.sort_by(|a, b| area(b).total_cmp(&area(a)));
    t.onet_us = micros(start);
    Ok(faces
        .into_iter()
        .map(|c| Face {
            bbox: BoundingBox { x1: c.b[0], y1: c.b[1], x2: c.b[2], y2: c.b[3] },
            score: c.score,
            landmarks: (0..5).map(|k| Point { x: c.marks[k], y: c.marks[5 + k] }).collect(),
        })
        .collect())
}

/// `face-detection.detect`: every stage timed (see `last-timings`).
pub fn detect(bytes: &[u8], options: DetectOptions) -> Result<Vec<Face>, Error> {
    let mut t = Timings {
        decode_us: 0,
        pyramid_us: 0,
        pnet_us: 0,
        nms_us: 0,
        rnet_us: 0,
        onet_us: 0,
        scales: 0,
        rnet_boxes: 0,
        onet_boxes: 0,
    };
    let result = run(bytes, &options, &mut t);
    TIMINGS.with(|cell| cell.set(t));
    result
}

#[cfg(test)]
mod tests {
    //! Native unit tests of the box arithmetic (`cargo test`; wasi-nn is not called).

    use super::*;

    fn cand(b: [f32; 4], score: f32) -> Candidate {
        Candidate { b, score, reg: [0.0; 4], marks: [0.0; 10] }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let boxes =
            [cand([0.0, 0.0, 10.0, 10.0], 0.8), cand([1.0, 1.0, 11.0, 11.0], 0.9), cand([50.0, 50.0, 60.0, 60.0], 0.7)];
        assert_eq!(nms_iou(&boxes, 0.5), vec![1, 2]);
        assert_eq!(nms_min(&boxes, 0.7), vec![1, 2]);
        // IoU 81/119 = 0.68: kept at 0.7.
        assert_eq!(nms_iou(&boxes, 0.7), vec![1, 0, 2]);
    }

    #[test]
    fn pyramid_matches_the_reference() {
        // detect_face on a 512x512 image with the defaults: 0.6 * 0.709^k while 512 * 0.6 * 0.709^k >= 12.
        let o = DetectOptions { min_face_size: 20.0, scale_factor: 0.709, thresholds: (0.6, 0.7, 0.7) };
        let s = scales(512, 512, &o);
        assert_eq!(s.len(), 10);
        assert!((s[1] - 0.6 * 0.709).abs() < 1e-15);
    }

    #[test]
    fn area_resize_averages_bins() {
        // red channel [[0, 1, 2, 3], [4, 5, 6, 7]]
        let rgb = image::RgbImage::from_fn(4, 2, |x, y| image::Rgb([(y * 4 + x) as u8, 0, 255]));
        let img = Planes::from_rgb(&rgb);
        let mut out = Vec::new();
        img.area_resize_into((0, 0, 4, 2), 1, 2, &mut out);
        assert_eq!(out[..2], [(2.5 - 127.5) * 0.0078125, (4.5 - 127.5) * 0.0078125]);
        assert_eq!(out[2..4], [-127.5 * 0.0078125; 2]);
        assert_eq!(out[4..6], [127.5 * 0.0078125; 2]);
        // 3 columns -> 2: bins 0..2 and 1..3 (overlapping, as torch's), a crop of rows 1..2
        out.clear();
        img.area_resize_into((1, 1, 4, 2), 1, 2, &mut out);
        assert_eq!(out[..2], [(5.5 - 127.5) * 0.0078125, (6.5 - 127.5) * 0.0078125]);
    }
}
