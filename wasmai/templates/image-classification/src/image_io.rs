//! Bounded PNG/JPEG decoding with the `image` crate, shared by the image templates
//! (image-classification, and face-detection, which takes this file from it as its base).

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits, RgbImage};

use crate::bindings::wasmai::inference::types::Error;

/// Largest decoder allocation, in bytes.
pub const MAX_ALLOC: u64 = 256 * 1024 * 1024;

/// Decode PNG or JPEG bytes to 8-bit RGB (alpha dropped, 16-bit scaled, grey replicated); other
/// formats, sides above `max_side` pixels, allocations above [`MAX_ALLOC`] and undecodable bytes
/// are `error::bad-image`.
pub fn decode(bytes: &[u8], max_side: u32) -> Result<RgbImage, Error> {
    if bytes.is_empty() {
        return Err(Error::BadImage("empty image".to_string()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::BadImage(format!("cannot read image: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Png) | Some(ImageFormat::Jpeg) => {}
        _ => return Err(Error::BadImage("not a PNG or JPEG image".to_string())),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| Error::BadImage(format!("cannot decode image: {e}")))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(Error::BadImage("image has no pixels".to_string()));
    }
    Ok(image.into_rgb8())
}
