//! Pixel <-> tensor conversions exactly as diffusers' VaeImageProcessor does them: 8-bit RGB
//! to [-1, 1], masks binarised at 0.5, decoded tensors to 8-bit via (x/2+0.5).clamp(0,1)*255
//! rounded half-to-even. Pure conversions: no resizing, no colour management.

use candle_core::{DType, Device, Tensor};
use image::{GrayImage, RgbImage};

use super::error::{PipelineError, Result};

/// RGB8 -> `[1, 3, H, W]` f32 in [-1, 1] (`2 * (v / 255) - 1`, in f32 like numpy/torch).
pub fn rgb_to_tensor(image: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (x, y, px) in image.enumerate_pixels() {
        for c in 0..3 {
            let v = f32::from(px.0[c]) / 255.0;
            data[c * h * w + y as usize * w + x as usize] = 2.0 * v - 1.0;
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
}

/// Binarised mask, row-major `H*W` of 0.0 / 1.0: 1 where `v / 255 >= 0.5` (repaint).
pub fn binarize_mask(mask: &GrayImage) -> Vec<f32> {
    mask.pixels()
        .map(|p| {
            if f32::from(p.0[0]) / 255.0 < 0.5 {
                0.0
            } else {
                1.0
            }
        })
        .collect()
}

/// Nearest-neighbour resize of a row-major plane as torch's `F.interpolate(mode="nearest")`:
/// source index = floor(dst * in / out).
pub(crate) fn nearest_resize(src: &[f32], sh: usize, sw: usize, dh: usize, dw: usize) -> Vec<f32> {
    let sy = sh as f32 / dh as f32;
    let sx = sw as f32 / dw as f32;
    let mut out = Vec::with_capacity(dh * dw);
    for y in 0..dh {
        let yy = ((y as f32 * sy).floor() as usize).min(sh.saturating_sub(1));
        for x in 0..dw {
            let xx = ((x as f32 * sx).floor() as usize).min(sw.saturating_sub(1));
            out.push(src.get(yy * sw + xx).copied().unwrap_or(0.0));
        }
    }
    out
}

/// Decoded pixels `[n, 3, H, W]` -> the float image `(x / 2 + 0.5).clamp(0, 1)` (f32).
pub(crate) fn decoded_to_unit(x: &Tensor) -> Result<Tensor> {
    Ok(((x.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
}

/// Unit-range `[n, 3, H, W]` -> n RGB8 images, `round_half_even(v * 255)`.
pub fn unit_to_rgb(x: &Tensor) -> Result<Vec<RgbImage>> {
    let (n, c, h, w) = x.dims4()?;
    if c != 3 {
        return Err(PipelineError::InvalidRequest(format!(
            "decoded image has {c} channels, expected 3"
        )));
    }
    let data: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut images = Vec::with_capacity(n);
    for i in 0..n {
        let base = i * 3 * h * w;
        let mut buf = Vec::with_capacity(h * w * 3);
        for p in 0..h * w {
            for ch in 0..3 {
                let v = data.get(base + ch * h * w + p).copied().unwrap_or(0.0);
                buf.push((v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8);
            }
        }
        let img = RgbImage::from_raw(w as u32, h as u32, buf)
            .ok_or_else(|| PipelineError::InvalidRequest("image buffer size mismatch".into()))?;
        images.push(img);
    }
    Ok(images)
}

/// Encodes an RGB image as PNG (8-bit RGB).
pub fn encode_png(img: &image::RgbImage) -> std::result::Result<Vec<u8>, image::ImageError> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}
