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
    pub const NAMES: &'static str = "off, black, blur, report";

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Some(SafetyMode::Off),
            "black" => Some(SafetyMode::Black),
            "blur" => Some(SafetyMode::Blur),
            "report" => Some(SafetyMode::Report),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
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
    pub fn for_request(self, do_nsfw_filter: Option<bool>) -> Self {
        match (self, do_nsfw_filter) {
            (SafetyMode::Report, Some(true)) => SafetyMode::Black,
            (mode, _) => mode,
        }
    }

    /// The image to send for a checked image (`nsfw` = flagged).
    pub fn apply(self, image: RgbImage, nsfw: bool) -> RgbImage {
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

/// A blur that leaves only colour blotches: a box-approximated Gaussian with sigma a tenth
/// of the longer side (at least 4 pixels).
pub fn strong_blur(image: &RgbImage) -> RgbImage {
    let sigma = (image.width().max(image.height()) as f32 / 10.0).max(4.0);
    image::imageops::fast_blur(image, sigma)
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
        // A strong blur flattens the horizontal ramp (0..252) to a fraction of its range.
        let row: Vec<u8> = (0..64).map(|x| blurred.get_pixel(x, 24).0[0]).collect();
        let (lo, hi) = (row.iter().min().unwrap(), row.iter().max().unwrap());
        assert!(hi - lo < 160, "ramp range after blur {lo}..{hi}");
    }
}
