//! `annotate`: green boxes and landmark dots drawn with `imageproc`, encoded as PNG.

use image::codecs::png::PngEncoder;
use image::{ImageEncoder, Rgb};
use imageproc::drawing::{draw_filled_circle_mut, draw_hollow_rect_mut};
use imageproc::rect::Rect;

use crate::bindings::exports::wasmai::inference::face_detection::Face;
use crate::bindings::wasmai::inference::types::Error;

/// Box colour (pure green) and landmark colour (red), 8-bit RGB.
const GREEN: Rgb<u8> = Rgb([0, 255, 0]);
const RED: Rgb<u8> = Rgb([255, 0, 0]);

/// `face-detection.annotate`: each face's box in green (line width about 1/200 of the shorter
/// image side, at least 2 px) and its landmarks as red dots (radius about 1/30 of the face's
/// side), as PNG bytes.
pub fn annotate(bytes: &[u8], faces: &[Face]) -> Result<Vec<u8>, Error> {
    let mut img = crate::image_io::decode(bytes, crate::mtcnn::MAX_SIDE)?;
    let (w, h) = img.dimensions();
    let width = (w.min(h) / 200).max(2) as i32;
    for face in faces {
        let b = &face.bbox;
        if ![b.x1, b.y1, b.x2, b.y2].iter().all(|v| v.is_finite()) {
            return Err(Error::BadInput("a face box has a non-finite corner".to_string()));
        }
        let (x1, y1) = (b.x1.round() as i32, b.y1.round() as i32);
        let (x2, y2) = (b.x2.round() as i32, b.y2.round() as i32);
        for k in 0..width {
            let (rw, rh) = (x2 - x1 - 2 * k, y2 - y1 - 2 * k);
            if rw > 0 && rh > 0 {
                draw_hollow_rect_mut(&mut img, Rect::at(x1 + k, y1 + k).of_size(rw as u32, rh as u32), GREEN);
            }
        }
        // Dots about 1/30 of the face's side, at most the line width + 1.
        let radius = (((x2 - x1).min(y2 - y1) + 15) / 30).clamp(1, width + 1);
        for p in &face.landmarks {
            if p.x.is_finite() && p.y.is_finite() {
                draw_filled_circle_mut(&mut img, (p.x.round() as i32, p.y.round() as i32), radius, RED);
            }
        }
    }
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::Internal(format!("PNG encoding failed: {e}")))?;
    Ok(png)
}
