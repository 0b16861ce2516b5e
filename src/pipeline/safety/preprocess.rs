//! CLIPImageProcessor on an 8-bit RGB image: resize so the shortest edge has the configured
//! length (the other `int(edge * long / short)`, as transformers computes it) with
//! antialiased bicubic filtering, center crop, rescale and normalise to `[1, 3, H, W]` f32.
//!
//! The resize is our own implementation of torch's uint8 antialiased bicubic path (what
//! transformers 5's CLIPImageProcessor runs through torchvision): the kernel with a = -0.5
//! and support widened by the downscale factor (shared with PIL's `BICUBIC`), weights
//! quantised to int16 fixed point, horizontal pass first with an 8-bit intermediate. On the
//! fixture images it reproduces the reference crops bit for bit (0 levels); float weights give
//! up to 2 levels of difference, the `image` crate's CatmullRom up to 19 (BENCHMARKS.md).

use candle_core::{Device, Tensor};
use image::RgbImage;

use super::config::Preprocess;
use crate::pipeline::error::{PipelineError, Result};

/// Bicubic kernel with a = -0.5 (PIL, torch's antialiased path).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// One output index: the first input index and its fixed-point weights.
struct Taps {
    lo: usize,
    weights: Vec<i32>,
}

/// The taps of one axis with the weights quantised as torch's uint8 path does: the most
/// fractional bits (at most 22) that keep the largest weight of the axis within int16,
/// rounded half away from zero.
fn taps(input: usize, output: usize) -> (Vec<Taps>, u32) {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let float: Vec<(usize, Vec<f64>)> = (0..output)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).trunc().max(0.0)) as usize;
            let hi = ((center + support + 0.5).trunc() as usize).min(input);
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| bicubic((j as f64 - center + 0.5) / filter_scale))
                .collect();
            let sum: f64 = w.iter().sum();
            if sum != 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            (lo, w)
        })
        .collect();
    let max = float
        .iter()
        .flat_map(|(_, w)| w.iter().copied())
        .fold(0.0f64, f64::max);
    let mut precision = 0u32;
    while precision < 22 && ((0.5 + max * f64::from(1u32 << (precision + 1))) as i64) < 1 << 15 {
        precision += 1;
    }
    let one = f64::from(1u32 << precision);
    let taps = float
        .into_iter()
        .map(|(lo, w)| Taps {
            lo,
            weights: w
                .iter()
                .map(|v| {
                    let v = v * one;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect(),
        })
        .collect();
    (taps, precision)
}

/// One output value: the weighted sum with rounding, shifted back and clamped to 8 bits.
fn accumulate(values: impl Iterator<Item = u8>, taps: &Taps, precision: u32) -> u8 {
    let half = if precision == 0 {
        0
    } else {
        1i64 << (precision - 1)
    };
    let sum: i64 = taps
        .weights
        .iter()
        .zip(values)
        .map(|(w, v)| i64::from(*w) * i64::from(v))
        .sum::<i64>()
        + half;
    (sum >> precision).clamp(0, 255) as u8
}

/// Resizes an RGB8 image to `dw` x `dh`: horizontal pass, 8-bit intermediate, vertical pass.
fn resize_bicubic(src: &RgbImage, dw: usize, dh: usize) -> RgbImage {
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let raw = src.as_raw();
    let (cols, cp) = taps(sw, dw);
    let mut mid = vec![0u8; dw * sh * 3];
    for y in 0..sh {
        for (x, t) in cols.iter().enumerate() {
            for c in 0..3 {
                let px = (t.lo..).map(|j| raw[(y * sw + j) * 3 + c]);
                mid[(y * dw + x) * 3 + c] = accumulate(px, t, cp);
            }
        }
    }
    let (rows, rp) = taps(sh, dh);
    let mut out = vec![0u8; dw * dh * 3];
    for (y, t) in rows.iter().enumerate() {
        for x in 0..dw {
            for c in 0..3 {
                let px = (t.lo..).map(|j| mid[(j * dw + x) * 3 + c]);
                out[(y * dw + x) * 3 + c] = accumulate(px, t, rp);
            }
        }
    }
    RgbImage::from_raw(dw as u32, dh as u32, out).unwrap_or_default()
}

/// `(width, height)` with the shortest edge `edge`, the other truncated as transformers does.
fn shortest_edge_size(w: usize, h: usize, edge: usize) -> (usize, usize) {
    let (short, long) = (w.min(h), w.max(h));
    let other = ((edge as f64 * long as f64 / short as f64) as usize).max(1);
    if w <= h {
        (edge, other)
    } else {
        (other, edge)
    }
}

/// torchvision's center-crop offset: `int(round((size - crop) / 2))`, ties to even.
fn crop_offset(size: usize, crop: usize) -> usize {
    ((size.saturating_sub(crop)) as f64 / 2.0).round_ties_even() as usize
}

/// Resize and center crop: the 8-bit image whose normalisation gives `pixel_values`.
pub fn resize_and_crop(image: &RgbImage, p: &Preprocess) -> Result<RgbImage> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w == 0 || h == 0 {
        return Err(PipelineError::InvalidRequest(
            "safety checker: empty image".into(),
        ));
    }
    let resized = match p.shortest_edge {
        Some(edge) => {
            let (nw, nh) = shortest_edge_size(w, h, edge);
            if (nw, nh) == (w, h) {
                image.clone()
            } else {
                resize_bicubic(image, nw, nh)
            }
        }
        None => image.clone(),
    };
    let Some((ch, cw)) = p.crop else {
        return Ok(resized);
    };
    let (rw, rh) = (resized.width() as usize, resized.height() as usize);
    // torchvision pads a too-small image with zeros before cropping.
    let (left, top) = (crop_offset(rw, cw) as i64, crop_offset(rh, ch) as i64);
    let (left, top) = (
        if rw < cw {
            -(((cw - rw) / 2) as i64)
        } else {
            left
        },
        if rh < ch {
            -(((ch - rh) / 2) as i64)
        } else {
            top
        },
    );
    Ok(RgbImage::from_fn(cw as u32, ch as u32, |x, y| {
        let (sx, sy) = (left + i64::from(x), top + i64::from(y));
        if sx < 0 || sy < 0 || sx >= rw as i64 || sy >= rh as i64 {
            image::Rgb([0, 0, 0])
        } else {
            *resized.get_pixel(sx as u32, sy as u32)
        }
    }))
}

/// Rescale and normalise an 8-bit image into `[1, 3, H, W]` f32.
pub fn normalize(image: &RgbImage, p: &Preprocess, device: &Device) -> Result<Tensor> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (x, y, px) in image.enumerate_pixels() {
        for c in 0..3 {
            let mut v = f32::from(px.0[c]);
            if let Some(r) = p.rescale {
                v *= r;
            }
            if p.normalize {
                v = (v - p.mean[c]) / p.std[c];
            }
            data[c * h * w + y as usize * w + x as usize] = v;
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
}

/// The whole processor: `pixel_values` `[1, 3, crop_h, crop_w]`.
pub(crate) fn pixel_values(image: &RgbImage, p: &Preprocess, device: &Device) -> Result<Tensor> {
    normalize(&resize_and_crop(image, p)?, p, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_transformers() {
        assert_eq!(shortest_edge_size(64, 96, 224), (224, 336));
        assert_eq!(shortest_edge_size(128, 80, 224), (358, 224));
        assert_eq!(shortest_edge_size(512, 512, 224), (224, 224));
        assert_eq!(crop_offset(358, 224), 67);
        assert_eq!(crop_offset(336, 224), 56);
    }

    #[test]
    fn weights_sum_to_one_and_constant_images_stay_constant() {
        for (i, o) in [(64, 224), (512, 224), (97, 13)] {
            let (taps, precision) = taps(i, o);
            for t in taps {
                let sum: i32 = t.weights.iter().sum();
                assert!((sum - (1 << precision)).abs() <= t.weights.len() as i32);
            }
        }
        let img = RgbImage::from_pixel(37, 53, image::Rgb([10, 200, 77]));
        let out = resize_bicubic(&img, 224, 320);
        assert!(out.pixels().all(|p| p.0 == [10, 200, 77]));
    }
}
