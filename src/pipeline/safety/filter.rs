//! What the server does with a checked image: the administrator's [`SafetyMode`], the
//! request's `do_nsfw_filter` wish (which may tighten `report` but never loosen a filter),
//! and the replacement of a flagged image (black as diffusers does, or a strong blur).

use image::RgbImage;

/// The administrator's setting (`--safety-checker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SafetyMode {
    /// No checker runs; images and messages are as without the feature.
    #[default]
    Off,
    /// A flagged image is replaced by a black one.
    Black,
    /// A flagged image is replaced by a strong blur of itself.
    Blur,
    /// Images are returned unchanged; only the `nsfw` key reports the verdict.
    Report,
}

impl SafetyMode {
    pub(crate) const NAMES: &'static str = "off, black, blur, report";

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Some(SafetyMode::Off),
            "black" => Some(SafetyMode::Black),
            "blur" => Some(SafetyMode::Blur),
            "report" => Some(SafetyMode::Report),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SafetyMode::Off => "off",
            SafetyMode::Black => "black",
            SafetyMode::Blur => "blur",
            SafetyMode::Report => "report",
        }
    }

    /// The mode for one request. `do_nsfw_filter: true` tightens `report` to `black` (the
    /// client asked for filtering); nothing else changes the administrator's choice: `off`
    /// stays off (no checker is loaded), `black` and `blur` filter even when the request
    /// says `false`.
    pub(crate) fn for_request(self, do_nsfw_filter: Option<bool>) -> Self {
        match (self, do_nsfw_filter) {
            (SafetyMode::Report, Some(true)) => SafetyMode::Black,
            (mode, _) => mode,
        }
    }

    /// The image to send for a checked image (`nsfw` = flagged).
    pub(crate) fn apply(self, image: RgbImage, nsfw: bool) -> RgbImage {
        if !nsfw {
            return image;
        }
        match self {
            SafetyMode::Off | SafetyMode::Report => image,
            SafetyMode::Black => RgbImage::new(image.width(), image.height()),
            SafetyMode::Blur => strong_blur(&image),
        }
    }
}

/// A blur that leaves only colour blotches: three passes of a box filter in each direction
/// (close to a Gaussian) with a radius of a sixteenth of the longer side (at least 2 pixels),
/// edges clamped.
fn strong_blur(image: &RgbImage) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let radius = (w.max(h) / 16).max(2);
    let mut data: Vec<f32> = image.as_raw().iter().map(|v| f32::from(*v)).collect();
    for _ in 0..3 {
        data = box_pass(&data, w, h, radius, true);
        data = box_pass(&data, w, h, radius, false);
    }
    let raw = data
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    RgbImage::from_raw(w as u32, h as u32, raw).unwrap_or_else(|| image.clone())
}

/// One box-filter pass along rows (`horizontal`) or columns of interleaved RGB f32.
fn box_pass(src: &[f32], w: usize, h: usize, r: usize, horizontal: bool) -> Vec<f32> {
    let (len, lines) = if horizontal { (w, h) } else { (h, w) };
    let at = |line: usize, i: usize| {
        if horizontal {
            (line * w + i) * 3
        } else {
            (i * w + line) * 3
        }
    };
    let mut out = vec![0f32; src.len()];
    let norm = 1.0 / (2 * r + 1) as f32;
    for line in 0..lines {
        for c in 0..3 {
            let value = |i: isize| src[at(line, i.clamp(0, len as isize - 1) as usize) + c];
            let mut sum: f32 = (-(r as isize)..=r as isize).map(value).sum();
            for i in 0..len {
                out[at(line, i) + c] = sum * norm;
                sum += value(i as isize + r as isize + 1) - value(i as isize - r as isize);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_never_loosen_the_admin_setting() {
        use SafetyMode::*;
        for req in [None, Some(false), Some(true)] {
            assert_eq!(Off.for_request(req), Off);
            assert_eq!(Black.for_request(req), Black);
            assert_eq!(Blur.for_request(req), Blur);
        }
        assert_eq!(Report.for_request(None), Report);
        assert_eq!(Report.for_request(Some(false)), Report);
        assert_eq!(Report.for_request(Some(true)), Black);
        for m in [Off, Black, Blur, Report] {
            assert_eq!(SafetyMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(SafetyMode::parse("on"), None);
    }

    #[test]
    fn flagged_images_are_replaced_and_clean_ones_kept() {
        let img = RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, 200])
        });
        assert_eq!(SafetyMode::Black.apply(img.clone(), false), img);
        let black = SafetyMode::Black.apply(img.clone(), true);
        assert!(black.pixels().all(|p| p.0 == [0, 0, 0]));
        assert_eq!(SafetyMode::Report.apply(img.clone(), true), img);
        let blurred = SafetyMode::Blur.apply(img.clone(), true);
        assert_eq!(blurred.dimensions(), img.dimensions());
        // Detail is gone: 4-pixel black/white stripes become a nearly flat grey.
        let stripes = RgbImage::from_fn(64, 48, |x, _| {
            image::Rgb([if x / 4 % 2 == 0 { 0 } else { 255 }; 3])
        });
        let blurred = SafetyMode::Blur.apply(stripes, true);
        // Away from the clamped edges.
        let row: Vec<u8> = (16..48).map(|x| blurred.get_pixel(x, 24).0[0]).collect();
        let (lo, hi) = (row.iter().min().unwrap(), row.iter().max().unwrap());
        assert!(hi - lo < 40, "stripes after blur span {lo}..{hi}");
    }
}
