//! Validation at the edge: turns a raw generation request into the typed `GenerateParams`
//! the pipeline trusts. Every refusal names the field, the limit and the given value. Image
//! fields are checked from the PNG header before any pixel is decoded. Never lets an
//! out-of-range value through and never panics on client input.

use std::io::Cursor;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, RgbImage};
use serde_json::Value;

use super::error::{ErrorCode, RequestError};
use super::lenient::{self, FieldError};
use super::prompt_fields::parse_prompt_fields;
use super::request::{GenerateAction, RawGenerate};
use crate::pipeline::params::{GenerateParams, SchedulerKind, Task};

/// Limits a request must respect; from the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_steps: usize,
    /// Output width x height limit.
    pub max_pixels: u64,
    pub max_samples: usize,
    /// Limit for decoded input images (pixels / mask), checked from the PNG header.
    pub max_input_pixels: u64,
    /// Longest prompt and negative prompt, in characters (Unicode scalar values).
    pub max_prompt_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 150,
            max_pixels: 2048 * 2048,
            max_samples: 8,
            max_input_pixels: 4096 * 4096,
            max_prompt_chars: 20_000,
        }
    }
}

/// Smallest accepted output side: the latent must be at least 8x8.
pub const MIN_SIDE: u32 = 64;
/// Longest side of any input image, whatever its pixel count.
pub const MAX_INPUT_SIDE: u32 = 16384;

/// Largest native size of a supported model (SDXL 1024 px), for limit checks.
pub const NATIVE_SIDE_MAX: u32 = 1024;

pub const DEFAULT_STEPS: i64 = 20;
pub const DEFAULT_SCALE: f64 = 7.5;
pub const DEFAULT_SEED: u64 = 42;
pub const DEFAULT_IMG2IMG_STRENGTH: f64 = 0.8;
pub const DEFAULT_INPAINT_STRENGTH: f64 = 1.0;

/// A validated generation request plus what the replies must echo.
#[derive(Debug, Clone)]
pub struct ValidGenerateRequest {
    pub(crate) action: GenerateAction,
    pub job_id: Option<String>,
    /// Requested model (`A_model`); empty means the server's default model.
    pub model: String,
    pub params: GenerateParams,
    pub pos_x: Value,
    pub pos_y: Value,
    /// True when the client asked for a random seed (reported in each image's `seed`).
    pub random_seed: bool,
    /// `do_nsfw_filter` as sent (None when absent).
    pub nsfw_filter: Option<bool>,
}

pub(super) fn invalid(field: &str, message: String) -> RequestError {
    RequestError::new(ErrorCode::InvalidField, format!("{field}: {message}"))
}

pub(super) fn from_field(e: FieldError) -> RequestError {
    RequestError::new(ErrorCode::InvalidField, e.to_string())
}

/// Validates `raw` against `limits`. `random_seed` supplies the seed when the client asks for
/// a random one (seed `""` or `-1`).
pub fn validate_generate(
    raw: &RawGenerate,
    limits: &Limits,
    random_seed: &mut dyn FnMut() -> u64,
) -> Result<ValidGenerateRequest, RequestError> {
    let reqtype = raw.action.as_str();
    validate_inner(raw, limits, random_seed)
        .map_err(|e| e.for_job(raw.job_id.clone(), Some(reqtype.to_string())))
}

fn validate_inner(
    raw: &RawGenerate,
    limits: &Limits,
    random_seed: &mut dyn FnMut() -> u64,
) -> Result<ValidGenerateRequest, RequestError> {
    let a = raw.action.as_str();
    let o = &raw.options;
    let key = |name: &str| format!("{a}_{name}");

    let prompt = parse_prompt(o, &key("prompt"), limits)?;
    let negative_prompt = parse_prompt(o, &key("negative_prompt"), limits)?;

    let steps_key = key("steps");
    let steps = lenient::get_i64(o, &steps_key)
        .map_err(from_field)?
        .unwrap_or(DEFAULT_STEPS);
    if steps < 1 || steps as u64 > limits.max_steps as u64 {
        return Err(invalid(
            &steps_key,
            format!("must be 1..={}, got {steps}", limits.max_steps),
        ));
    }

    let scale_key = key("scale");
    let guidance_scale = lenient::get_f64(o, &scale_key)
        .map_err(from_field)?
        .unwrap_or(DEFAULT_SCALE);
    if !guidance_scale.is_finite() || guidance_scale < 0.0 {
        return Err(invalid(
            &scale_key,
            format!("must be a finite number >= 0, got {guidance_scale}"),
        ));
    }

    let seed_key = key("seed");
    let (seed, random) = parse_seed(o, &seed_key, random_seed)?;

    let samples_key = key("n_samples");
    let n_samples = lenient::get_i64(o, &samples_key)
        .map_err(from_field)?
        .unwrap_or(1);
    if n_samples < 1 || n_samples as u64 > limits.max_samples as u64 {
        return Err(invalid(
            &samples_key,
            format!("must be 1..={}, got {n_samples}", limits.max_samples),
        ));
    }
    // Image i uses seed + i: a batch whose last seed would pass 2^64 - 1 is refused rather
    // than silently wrapped to 0 (the plugin's seeds are 32-bit, far from the edge).
    if seed.checked_add(n_samples as u64 - 1).is_none() {
        return Err(invalid(
            &seed_key,
            format!(
                "{seed} with {n_samples} samples: seed + n_samples - 1 must not exceed {}",
                u64::MAX
            ),
        ));
    }

    let sched_key = key("scheduler");
    let scheduler = match lenient::get_str(o, &sched_key).map_err(from_field)? {
        None => SchedulerKind::EulerAncestral,
        Some(s) if s.trim().is_empty() => SchedulerKind::EulerAncestral,
        Some(s) => SchedulerKind::from_name(&s).ok_or_else(|| {
            invalid(
                &sched_key,
                format!(
                    "unknown scheduler {}, expected one of {}",
                    lenient::short(&Value::String(s.clone())),
                    SchedulerKind::names().join(" ")
                ),
            )
        })?,
    };

    let eta_key = key("ddim_eta");
    let eta = lenient::get_f64(o, &eta_key)
        .map_err(from_field)?
        .unwrap_or(0.0);
    if !eta.is_finite() || !(0.0..=1.0).contains(&eta) {
        return Err(invalid(&eta_key, format!("must be in [0, 1], got {eta}")));
    }

    let fields = parse_prompt_fields(o, a, prompt)?;

    let (timestep_spacing, xl) = super::sampling::parse_sampling(o, a)?;

    let width = parse_side(o, &key("width"), limits)?;
    let height = parse_side(o, &key("height"), limits)?;
    if width.is_some() || height.is_some() {
        // A missing side takes the model's native size; assume the largest (768) here.
        let (w, h) = (
            width.unwrap_or(NATIVE_SIDE_MAX),
            height.unwrap_or(NATIVE_SIDE_MAX),
        );
        let pixels = w as u64 * h as u64;
        if pixels > limits.max_pixels {
            return Err(invalid(
                &key("width"),
                format!(
                    "{w}x{h} = {pixels} pixels exceeds the limit of {} pixels",
                    limits.max_pixels
                ),
            ));
        }
    }

    // Lenient parse so a malformed flag is reported; the worker's safety mode uses it.
    let nsfw_filter = lenient::get_bool(o, "do_nsfw_filter").map_err(from_field)?;

    let model = lenient::get_str(o, &key("model"))
        .map_err(from_field)?
        .unwrap_or_default()
        .trim()
        .to_string();

    let (task, width, height) = match raw.action {
        GenerateAction::Txt2Img => (Task::Txt2Img, width, height),
        GenerateAction::Img2Img => {
            let strength = parse_strength(o, a, DEFAULT_IMG2IMG_STRENGTH, true)?;
            let init = required_image(o, limits)?;
            let (init, w, h) = fit_init(init, width, height, limits)?;
            (Task::Img2Img { init, strength }, Some(w), Some(h))
        }
        GenerateAction::Inpaint | GenerateAction::Outpaint => {
            let strength = parse_strength(o, a, DEFAULT_INPAINT_STRENGTH, false)?;
            let init = required_image(o, limits)?;
            let (init, w, h) = fit_init(init, width, height, limits)?;
            let mask = match o.get("mask") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => {
                    let m = decode_image("mask", s, limits)?.to_luma8();
                    // A mask of another size is stretched to the image (documented).
                    Some(if m.dimensions() == (w, h) {
                        m
                    } else {
                        image::imageops::resize(&m, w, h, FilterType::Triangle)
                    })
                }
                Some(other) => {
                    return Err(RequestError::new(
                        ErrorCode::BadRequest,
                        format!(
                            "mask: expected a base64 PNG or null, got {}",
                            lenient::short(other)
                        ),
                    ))
                }
            };
            (
                Task::Inpaint {
                    init,
                    mask,
                    strength,
                },
                Some(w),
                Some(h),
            )
        }
    };

    Ok(ValidGenerateRequest {
        action: raw.action,
        job_id: raw.job_id.clone(),
        model,
        params: GenerateParams {
            task,
            prompt: fields.prompt,
            negative_prompt,
            steps: steps as usize,
            guidance_scale,
            seed,
            width,
            height,
            n_samples: n_samples as usize,
            scheduler,
            eta,
            clip_skip: fields.clip_skip,
            syntax: fields.syntax,
            loras: fields.loras,
            timestep_spacing,
            xl,
        },
        pos_x: o.get("pos_x").cloned().unwrap_or(Value::from(0)),
        pos_y: o.get("pos_y").cloned().unwrap_or(Value::from(0)),
        random_seed: random,
        nsfw_filter,
    })
}

/// A prompt field, at most `limits.max_prompt_chars` characters (checked before copying).
fn parse_prompt(
    o: &serde_json::Map<String, Value>,
    k: &str,
    limits: &Limits,
) -> Result<String, RequestError> {
    if let Some(Value::String(s)) = o.get(k) {
        // Bytes bound characters from above, so short prompts skip the count.
        if s.len() > limits.max_prompt_chars && s.chars().nth(limits.max_prompt_chars).is_some() {
            return Err(invalid(
                k,
                format!(
                    "at most {} characters, got {}",
                    limits.max_prompt_chars,
                    s.chars().count()
                ),
            ));
        }
    }
    Ok(lenient::get_str(o, k)
        .map_err(from_field)?
        .unwrap_or_default())
}

fn parse_seed(
    o: &serde_json::Map<String, Value>,
    seed_key: &str,
    random_seed: &mut dyn FnMut() -> u64,
) -> Result<(u64, bool), RequestError> {
    let blank = matches!(o.get(seed_key), Some(Value::String(s)) if s.trim().is_empty());
    if blank {
        return Ok((random_seed(), true));
    }
    // Seeds above i64::MAX arrive as u64 numbers or their text.
    let unsigned = match o.get(seed_key) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    if let Some(u) = unsigned {
        return Ok((u, false));
    }
    match lenient::get_i64(o, seed_key).map_err(from_field)? {
        None => Ok((DEFAULT_SEED, false)),
        Some(-1) => Ok((random_seed(), true)),
        Some(s) if s >= 0 => Ok((s as u64, false)),
        Some(s) => Err(invalid(
            seed_key,
            format!("must be >= 0 (or -1 or \"\" for a random seed), got {s}"),
        )),
    }
}

fn parse_side(
    o: &serde_json::Map<String, Value>,
    k: &str,
    limits: &Limits,
) -> Result<Option<u32>, RequestError> {
    let Some(v) = lenient::get_i64(o, k).map_err(from_field)? else {
        return Ok(None);
    };
    let max_side = limits.max_pixels / MIN_SIDE as u64;
    if v < MIN_SIDE as i64 || v as u64 > max_side || v % 8 != 0 {
        return Err(invalid(
            k,
            format!("must be a multiple of 8 in {MIN_SIDE}..={max_side}, got {v}"),
        ));
    }
    Ok(Some(v as u32))
}

fn parse_strength(
    o: &serde_json::Map<String, Value>,
    action: &str,
    default: f64,
    legacy_key: bool,
) -> Result<f64, RequestError> {
    // Part 2 `A_strength` wins over the legacy `img2img_strength`.
    let part2 = format!("{action}_strength");
    let (k, v) = match lenient::get_f64(o, &part2).map_err(from_field)? {
        Some(v) => (part2, Some(v)),
        None if legacy_key => {
            let k = "img2img_strength".to_string();
            let v = lenient::get_f64(o, &k).map_err(from_field)?;
            (k, v)
        }
        None => (part2, None),
    };
    let s = v.unwrap_or(default);
    if !s.is_finite() || !(0.0..=1.0).contains(&s) {
        return Err(invalid(&k, format!("must be in [0, 1], got {s}")));
    }
    Ok(s)
}

fn required_image(
    o: &serde_json::Map<String, Value>,
    limits: &Limits,
) -> Result<DynamicImage, RequestError> {
    match o.get("pixels") {
        None | Some(Value::Null) => Err(invalid(
            "pixels",
            "required for image-conditioned actions, got nothing".to_string(),
        )),
        Some(Value::String(s)) if s.is_empty() => Err(invalid(
            "pixels",
            "required for image-conditioned actions, got an empty string".to_string(),
        )),
        Some(Value::String(s)) => decode_image("pixels", s, limits),
        Some(other) => Err(RequestError::new(
            ErrorCode::BadRequest,
            format!(
                "pixels: expected a base64 PNG, got {}",
                lenient::short(other)
            ),
        )),
    }
}

/// The init image at the requested size: without a size the image's own size rounded down
/// to multiples of 8; an image of another size is resized to the requested one.
fn fit_init(
    img: DynamicImage,
    width: Option<u32>,
    height: Option<u32>,
    limits: &Limits,
) -> Result<(RgbImage, u32, u32), RequestError> {
    let w = width.unwrap_or(img.width() / 8 * 8);
    let h = height.unwrap_or(img.height() / 8 * 8);
    if w < MIN_SIDE || h < MIN_SIDE {
        return Err(invalid(
            "pixels",
            format!(
                "image is {}x{}, smaller than the minimum {MIN_SIDE}x{MIN_SIDE}",
                img.width(),
                img.height()
            ),
        ));
    }
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(invalid(
            "pixels",
            format!(
                "output {w}x{h} exceeds the limit of {} pixels",
                limits.max_pixels
            ),
        ));
    }
    let rgb = img.to_rgb8();
    let rgb = if rgb.dimensions() == (w, h) {
        rgb
    } else {
        image::imageops::resize(&rgb, w, h, FilterType::Triangle)
    };
    Ok((rgb, w, h))
}

fn b64_engine() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// Decodes a base64 PNG, refusing huge dimensions from the header before decoding pixels.
pub fn decode_image(field: &str, b64: &str, limits: &Limits) -> Result<DynamicImage, RequestError> {
    let bytes = b64_engine().decode(b64.trim()).map_err(|e| {
        RequestError::new(
            ErrorCode::BadRequest,
            format!("{field}: not valid base64: {e}"),
        )
    })?;
    let not_image = |e: &dyn std::fmt::Display| {
        RequestError::new(
            ErrorCode::BadRequest,
            format!("{field}: not a PNG image: {e}"),
        )
    };
    let (w, h) = png_header_size(&bytes).ok_or_else(|| not_image(&"no PNG header"))?;
    let pixels = w as u64 * h as u64;
    if w == 0
        || h == 0
        || w > MAX_INPUT_SIDE
        || h > MAX_INPUT_SIDE
        || pixels > limits.max_input_pixels
    {
        return Err(invalid(
            field,
            format!(
                "image is {w}x{h}, limit {} pixels and {MAX_INPUT_SIDE} per side",
                limits.max_input_pixels
            ),
        ));
    }
    let mut reader = ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| not_image(&e))?;
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(MAX_INPUT_SIDE);
    decode_limits.max_image_height = Some(MAX_INPUT_SIDE);
    decode_limits.max_alloc = Some(limits.max_input_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(decode_limits);
    reader.decode().map_err(|e| not_image(&e))
}

/// Width and height from the PNG signature and IHDR chunk, without touching pixel data.
fn png_header_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.get(..8)? != SIGNATURE || bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(bytes.get(20..24)?.try_into().ok()?);
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::{parse_request, Request};
    use proptest::prelude::*;
    use serde_json::json;

    fn raw(v: Value) -> RawGenerate {
        match parse_request(v.to_string().as_bytes()).unwrap() {
            Request::Generate(g) => g,
            other => panic!("{other:?}"),
        }
    }

    fn check(v: Value) -> Result<ValidGenerateRequest, RequestError> {
        validate_generate(&raw(v), &Limits::default(), &mut || 777)
    }

    fn png_b64(w: u32, h: u32) -> String {
        crate::protocol::responses::encode_png_base64(&RgbImage::from_pixel(
            w,
            h,
            image::Rgb([10, 20, 30]),
        ))
        .unwrap()
    }

    #[test]
    fn defaults_and_strings() {
        let v = check(json!({"action": "txt2img", "options": {
            "txt2img_prompt": "cat", "txt2img_steps": "3", "txt2img_scale": "7.0",
            "txt2img_seed": "5", "txt2img_width": "64", "txt2img_height": 128,
            "img2img_steps": "not read", "pos_x": "12"}}))
        .unwrap();
        assert_eq!(v.params.steps, 3);
        assert_eq!(v.params.guidance_scale, 7.0);
        assert_eq!(v.params.seed, 5);
        assert_eq!((v.params.width, v.params.height), (Some(64), Some(128)));
        assert_eq!(v.pos_x, json!("12"));
        assert_eq!(v.pos_y, json!(0));
        let d = check(json!({"action": "txt2img"})).unwrap();
        assert_eq!(d.params.steps, 20);
        assert_eq!(d.params.seed, 42);
        assert_eq!(d.params.scheduler, SchedulerKind::EulerAncestral);
        assert_eq!((d.params.width, d.params.height), (None, None));
        assert!(!d.random_seed);
    }

    #[test]
    fn random_seed_requests() {
        for seed in [json!(""), json!(-1), json!("-1")] {
            let v = check(json!({"action": "txt2img", "options": {"txt2img_seed": seed}})).unwrap();
            assert_eq!(v.params.seed, 777);
            assert!(v.random_seed);
        }
        let e = check(json!({"action": "txt2img", "options": {"txt2img_seed": -5}})).unwrap_err();
        assert!(e.message.contains("txt2img_seed"));
    }

    #[test]
    fn refusals_name_field_limit_and_value() {
        let cases = [
            (json!({"txt2img_steps": 0}), "txt2img_steps", "150", "0"),
            (
                json!({"txt2img_steps": "151"}),
                "txt2img_steps",
                "150",
                "151",
            ),
            (
                json!({"txt2img_width": 513}),
                "txt2img_width",
                "multiple of 8",
                "513",
            ),
            (
                json!({"txt2img_width": 4096, "txt2img_height": 4096}),
                "txt2img_width",
                "4194304",
                "4096x4096",
            ),
            (
                json!({"txt2img_n_samples": 9}),
                "txt2img_n_samples",
                "8",
                "9",
            ),
            (json!({"txt2img_scale": -1}), "txt2img_scale", ">= 0", "-1"),
            (
                json!({"txt2img_scale": "nan"}),
                "txt2img_scale",
                ">= 0",
                "NaN",
            ),
            (
                json!({"txt2img_scheduler": "bogus"}),
                "txt2img_scheduler",
                "euler_a",
                "bogus",
            ),
        ];
        for (opts, field, limit, value) in cases {
            let e =
                check(json!({"action": "txt2img", "job_id": "j", "options": opts})).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField, "{}", e.message);
            assert!(e.message.contains(field), "{}", e.message);
            assert!(e.message.contains(limit), "{}", e.message);
            assert!(e.message.contains(value), "{}", e.message);
            assert_eq!(e.job_id.as_deref(), Some("j"));
            assert_eq!(e.reqtype.as_deref(), Some("txt2img"));
        }
        let e = check(json!({"action": "img2img", "options": {"img2img_strength": 1.5, "pixels": png_b64(64, 64)}})).unwrap_err();
        assert!(e.message.contains("img2img_strength") && e.message.contains("1.5"));
    }

    #[test]
    fn prompts_are_bounded_in_characters() {
        let limits = Limits {
            max_prompt_chars: 10,
            ..Limits::default()
        };
        let run = |opts: Value| {
            let r = raw(json!({"action": "inpaint", "options": opts}));
            validate_generate(&r, &limits, &mut || 1)
        };
        // Ten characters in 20 bytes are fine; the limit counts characters, not bytes.
        let ok = run(json!({"inpaint_prompt": "éééééééééé", "pixels": png_b64(64, 64)})).unwrap();
        assert_eq!(ok.params.prompt.chars().count(), 10);
        for field in ["inpaint_prompt", "inpaint_negative_prompt"] {
            let e = run(json!({field: "x".repeat(11), "pixels": png_b64(64, 64)})).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField, "{}", e.message);
            assert!(e.message.contains(field), "{}", e.message);
            assert!(e.message.contains("at most 10"), "{}", e.message);
            assert!(e.message.contains("got 11"), "{}", e.message);
        }
        // The default is generous for real prompts and refuses a flood.
        let long = "a painting of a fox, ".repeat(900);
        assert!(check(json!({"action": "txt2img", "options": {"txt2img_prompt": long}})).is_ok());
        let flood = "x".repeat(Limits::default().max_prompt_chars + 1);
        let e = check(json!({"action": "txt2img", "options": {"txt2img_negative_prompt": flood}}))
            .unwrap_err();
        assert!(
            e.message.contains("txt2img_negative_prompt"),
            "{}",
            e.message
        );
    }

    #[test]
    fn seeds_never_wrap_within_a_batch() {
        let max = u64::MAX;
        let last = check(json!({"action": "txt2img", "options": {
            "txt2img_seed": max, "txt2img_n_samples": 1}}))
        .unwrap();
        assert_eq!(last.params.seed, max);
        let fits = check(json!({"action": "txt2img", "options": {
            "txt2img_seed": max - 1, "txt2img_n_samples": "2"}}))
        .unwrap();
        assert_eq!(fits.params.seed, max - 1);
        let e = check(json!({"action": "txt2img", "job_id": "w", "options": {
            "txt2img_seed": max.to_string(), "txt2img_n_samples": 2}}))
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert!(e.message.contains("txt2img_seed"), "{}", e.message);
        assert!(e.message.contains(&max.to_string()), "{}", e.message);
        assert_eq!(e.job_id.as_deref(), Some("w"));
        // A random seed is 32-bit, so a full batch always fits.
        let r = validate_generate(
            &raw(json!({"action": "txt2img", "options": {"txt2img_seed": -1, "txt2img_n_samples": 8}})),
            &Limits::default(),
            &mut || u32::MAX as u64,
        )
        .unwrap();
        assert_eq!(r.params.seed, u32::MAX as u64);
    }

    #[test]
    fn img2img_needs_pixels() {
        let e = check(json!({"action": "img2img", "options": {}})).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert!(e.message.contains("pixels"));
        let e = check(json!({"action": "img2img", "options": {"pixels": "!!!"}})).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = check(json!({"action": "img2img", "options": {"pixels": "aGVsbG8="}})).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("not a PNG"));
    }

    #[test]
    fn img2img_resizes_to_requested_size() {
        let v = check(json!({"action": "img2img", "options": {
            "pixels": png_b64(100, 80), "img2img_width": 64, "img2img_height": 64}}))
        .unwrap();
        match v.params.task {
            Task::Img2Img { init, strength } => {
                assert_eq!(init.dimensions(), (64, 64));
                assert_eq!(strength, 0.8);
            }
            other => panic!("{other:?}"),
        }
        // No size given: the image's own size rounded down to multiples of 8.
        let v =
            check(json!({"action": "img2img", "options": {"pixels": png_b64(100, 80)}})).unwrap();
        assert_eq!((v.params.width, v.params.height), (Some(96), Some(80)));
    }

    #[test]
    fn inpaint_mask_resized_and_null_mask() {
        let v = check(json!({"action": "inpaint", "options": {
            "pixels": png_b64(64, 64), "mask": png_b64(32, 32)}}))
        .unwrap();
        match v.params.task {
            Task::Inpaint {
                mask: Some(m),
                strength,
                ..
            } => {
                assert_eq!(m.dimensions(), (64, 64));
                assert_eq!(strength, 1.0);
            }
            other => panic!("{other:?}"),
        }
        let v = check(
            json!({"action": "outpaint", "options": {"pixels": png_b64(64, 64), "mask": null}}),
        )
        .unwrap();
        assert!(matches!(v.params.task, Task::Inpaint { mask: None, .. }));
    }

    #[test]
    fn huge_png_refused_from_header() {
        // A valid PNG header claiming 100000x100000: refused before decoding.
        let mut png = Vec::new();
        png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
        png.extend_from_slice(&13u32.to_be_bytes());
        let mut chunk = b"IHDR".to_vec();
        chunk.extend_from_slice(&100_000u32.to_be_bytes());
        chunk.extend_from_slice(&100_000u32.to_be_bytes());
        chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
        let e = check(json!({"action": "img2img", "options": {"pixels": b64}})).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField, "{}", e.message);
        assert!(e.message.contains("100000x100000"));
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for b in data {
            crc ^= *b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    proptest! {
        #[test]
        fn validator_never_panics(steps in any::<i64>(), w in any::<i64>(), h in any::<i64>(),
                                  scale in any::<f64>(), n in any::<i64>(), seed in any::<i64>(),
                                  sched in "[a-z_+]{0,12}", pix in "[A-Za-z0-9+/=]{0,40}") {
            let r = raw(json!({"action": "inpaint", "options": {
                "inpaint_steps": steps, "inpaint_width": w, "inpaint_height": h,
                "inpaint_scale": if scale.is_finite() { json!(scale) } else { json!("inf") },
                "inpaint_n_samples": n, "inpaint_seed": seed, "inpaint_scheduler": sched,
                "pixels": pix, "mask": pix}}));
            let _ = validate_generate(&r, &Limits::default(), &mut || 1);
        }
    }
}
