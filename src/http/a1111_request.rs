//! AUTOMATIC1111 `txt2img`/`img2img` request bodies translated into the socket protocol's
//! option map, so both front ends share one validator (`protocol::validate`) and its limits.
//! Like A1111's pydantic models, unknown keys are ignored; numbers may arrive as strings, the
//! seed as a number or a string (-1 or "" = random). Error messages name the A1111 field.
//! Pure translation: image bytes are decoded later, by the validator.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::samplers::{self, SamplerChoice};
use crate::protocol::lenient;
use crate::protocol::request::{GenerateAction, RawGenerate};

/// A1111's defaults for fields a request leaves out.
pub(crate) const DEFAULT_STEPS: i64 = 50;
pub(crate) const DEFAULT_CFG_SCALE: f64 = 7.0;
pub(crate) const DEFAULT_SIDE: i64 = 512;
pub(crate) const DEFAULT_DENOISING: f64 = 0.75;
/// A1111's "Clip skip" range (1 = the last layer).
const MAX_CLIP_STOP: i64 = 12;

/// Which endpoint a body came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Txt2Img,
    Img2Img,
}

/// What the caller chose earlier through `POST /sdapi/v1/options`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CallerDefaults {
    pub(crate) model: Option<String>,
    pub(crate) clip_stop: Option<i64>,
}

/// A translated request: the protocol-level request plus what only the HTTP reply needs.
#[derive(Debug, Clone)]
pub(crate) struct A1111Job {
    pub(crate) raw: RawGenerate,
    pub(crate) sampler: SamplerChoice,
    /// A1111's clip skip (1 = none).
    pub(crate) clip_stop: i64,
    pub(crate) send_images: bool,
    pub(crate) invert_mask: bool,
    pub(crate) mask_blur: u32,
    /// The request with defaults filled in and image data left out, for `parameters`.
    pub(crate) echo: Map<String, Value>,
}

/// Keys A1111 and runai's `A_` options share, for error messages: (option suffix, field).
const FIELD_NAMES: &[(&str, &str)] = &[
    ("negative_prompt", "negative_prompt"),
    ("prompt", "prompt"),
    ("steps", "steps"),
    ("scale", "cfg_scale"),
    ("seed", "seed"),
    ("n_samples", "batch_size x n_iter"),
    ("width", "width"),
    ("height", "height"),
    ("ddim_eta", "eta"),
    ("strength", "denoising_strength"),
    ("model", "override_settings.sd_model_checkpoint"),
];

/// Rewrites the protocol's option names in a refusal into the A1111 field names.
pub(crate) fn a1111_names(message: &str, action: GenerateAction) -> String {
    let a = action.as_str();
    let mut out = message.replace("img2img_strength", "denoising_strength");
    for (suffix, field) in FIELD_NAMES {
        out = out.replace(&format!("{a}_{suffix}"), field);
    }
    out.replace("pixels:", "init_images:")
}

fn field_error(e: lenient::FieldError) -> ApiError {
    ApiError::invalid(e.to_string())
}

/// A base64 image as A1111 clients send it: bare, or as a `data:` URL.
pub(crate) fn strip_data_url(s: &str) -> &str {
    match (s.starts_with("data:"), s.find(',')) {
        (true, Some(comma)) => &s[comma + 1..],
        _ => s,
    }
}

fn image_field(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(strip_data_url(s).to_string())),
        Some(other) => Err(ApiError::invalid(format!(
            "{key}: expected a base64 image, got {}",
            lenient::short(other)
        ))),
    }
}

fn positive(body: &Map<String, Value>, key: &str) -> Result<i64, ApiError> {
    let v = lenient::get_i64(body, key)
        .map_err(field_error)?
        .unwrap_or(1);
    if v < 1 {
        return Err(ApiError::invalid(format!(
            "{key}: must be at least 1, got {v}"
        )));
    }
    Ok(v)
}

/// The model a request asks for: `override_settings.sd_model_checkpoint`, else the caller's
/// choice; a title's ` [hash]` suffix is dropped.
pub(crate) fn checkpoint_name(title: &str) -> String {
    let t = title.trim();
    match (t.ends_with(']'), t.rfind(" [")) {
        (true, Some(i)) => t[..i].trim().to_string(),
        _ => t.to_string(),
    }
}

/// Translates an A1111 body.
pub(crate) fn translate(
    endpoint: Endpoint,
    body: &Map<String, Value>,
    defaults: &CallerDefaults,
) -> Result<A1111Job, ApiError> {
    let overrides = match body.get("override_settings") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "override_settings: expected an object, got {}",
                lenient::short(other)
            )))
        }
    };
    let init = match endpoint {
        Endpoint::Txt2Img => None,
        Endpoint::Img2Img => Some(match body.get("init_images") {
            Some(Value::Array(list)) if !list.is_empty() => match &list[0] {
                Value::String(s) if !s.is_empty() => strip_data_url(s).to_string(),
                other => {
                    return Err(ApiError::invalid(format!(
                        "init_images: expected base64 images, got {}",
                        lenient::short(other)
                    )))
                }
            },
            _ => {
                return Err(ApiError::invalid(
                    "init_images: img2img needs one base64 image in init_images",
                ))
            }
        }),
    };
    let mask = match endpoint {
        Endpoint::Txt2Img => None,
        Endpoint::Img2Img => image_field(body, "mask")?,
    };
    let action = match (endpoint, &mask) {
        (Endpoint::Txt2Img, _) => GenerateAction::Txt2Img,
        (Endpoint::Img2Img, None) => GenerateAction::Img2Img,
        (Endpoint::Img2Img, Some(_)) => GenerateAction::Inpaint,
    };
    let a = action.as_str();
    let key = |s: &str| format!("{a}_{s}");
    let mut o = Map::new();
    let copy = |o: &mut Map<String, Value>, from: &str, to: String, default: Value| {
        let v = match body.get(from) {
            None | Some(Value::Null) => default,
            Some(v) => v.clone(),
        };
        o.insert(to, v);
    };
    copy(&mut o, "prompt", key("prompt"), Value::from(""));
    copy(
        &mut o,
        "negative_prompt",
        key("negative_prompt"),
        Value::from(""),
    );
    copy(&mut o, "steps", key("steps"), Value::from(DEFAULT_STEPS));
    copy(
        &mut o,
        "cfg_scale",
        key("scale"),
        Value::from(DEFAULT_CFG_SCALE),
    );
    copy(&mut o, "seed", key("seed"), Value::from(-1));
    copy(&mut o, "width", key("width"), Value::from(DEFAULT_SIDE));
    copy(&mut o, "height", key("height"), Value::from(DEFAULT_SIDE));
    if let Some(eta) = body.get("eta").filter(|v| !v.is_null()) {
        o.insert(key("ddim_eta"), eta.clone());
    }
    let samples = positive(body, "batch_size")? * positive(body, "n_iter")?;
    o.insert(key("n_samples"), Value::from(samples));
    if endpoint == Endpoint::Img2Img {
        copy(
            &mut o,
            "denoising_strength",
            key("strength"),
            Value::from(DEFAULT_DENOISING),
        );
        o.insert("pixels".into(), Value::from(init.unwrap_or_default()));
        if let Some(m) = &mask {
            o.insert("mask".into(), Value::from(m.as_str()));
        }
    }
    let model = match lenient::get_str(&overrides, "sd_model_checkpoint").map_err(field_error)? {
        Some(m) if !m.trim().is_empty() => checkpoint_name(&m),
        _ => defaults.model.clone().unwrap_or_default(),
    };
    o.insert(key("model"), Value::from(model));

    let sampler_name = match lenient::get_str(body, "sampler_name").map_err(field_error)? {
        Some(s) if !s.trim().is_empty() => Some(s),
        _ => lenient::get_str(body, "sampler_index").map_err(field_error)?,
    };
    let schedule = lenient::get_str(body, "scheduler").map_err(field_error)?;
    let sampler = samplers::choose(sampler_name.as_deref(), schedule.as_deref());

    let clip_stop = match lenient::get_i64(&overrides, "CLIP_stop_at_last_layers")
        .map_err(|e| ApiError::invalid(format!("override_settings.{e}")))?
    {
        Some(c) => Some(c),
        None => lenient::get_i64(body, "clip_skip").map_err(field_error)?,
    }
    .or(defaults.clip_stop)
    .unwrap_or(1);
    if !(1..=MAX_CLIP_STOP).contains(&clip_stop) {
        return Err(ApiError::invalid(format!(
            "CLIP_stop_at_last_layers: must be 1..={MAX_CLIP_STOP}, got {clip_stop}"
        )));
    }
    let flag = |k: &str, default: bool| -> Result<bool, ApiError> {
        Ok(lenient::get_bool(body, k)
            .map_err(field_error)?
            .unwrap_or(default))
    };
    let send_images = flag("send_images", true)?;
    let invert_mask = lenient::get_i64(body, "inpainting_mask_invert")
        .map_err(field_error)?
        .unwrap_or(0)
        != 0;
    let mask_blur = lenient::get_i64(body, "mask_blur")
        .map_err(field_error)?
        .unwrap_or(4);
    if !(0..=64).contains(&mask_blur) {
        return Err(ApiError::invalid(format!(
            "mask_blur: must be 0..=64, got {mask_blur}"
        )));
    }
    if body.contains_key("alwayson_scripts")
        || body.get("script_name").is_some_and(|v| !v.is_null())
    {
        log::debug!("http: alwayson_scripts and script_name are accepted and ignored");
    }

    let mut echo = body.clone();
    for k in ["init_images", "mask"] {
        if echo.contains_key(k) {
            echo.insert(k.into(), Value::Null);
        }
    }
    let fill = [
        ("prompt", o[&key("prompt")].clone()),
        ("negative_prompt", o[&key("negative_prompt")].clone()),
        ("steps", o[&key("steps")].clone()),
        ("cfg_scale", o[&key("scale")].clone()),
        ("seed", o[&key("seed")].clone()),
        ("width", o[&key("width")].clone()),
        ("height", o[&key("height")].clone()),
        ("batch_size", Value::from(1)),
        ("n_iter", Value::from(1)),
        ("sampler_name", Value::from(sampler.sampler)),
        ("scheduler", Value::from(sampler.schedule)),
    ];
    for (k, v) in fill {
        match echo.get(k) {
            None | Some(Value::Null) => {
                echo.insert(k.into(), v);
            }
            _ => {}
        }
    }

    Ok(A1111Job {
        raw: RawGenerate {
            action,
            job_id: None,
            options: o,
        },
        sampler,
        clip_stop,
        send_images,
        invert_mask,
        mask_blur: mask_blur as u32,
        echo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn open_webui_body_gets_a1111_defaults() {
        let body = obj(json!({"prompt": "a fox", "batch_size": 2, "width": 256, "height": 128}));
        let j = translate(Endpoint::Txt2Img, &body, &CallerDefaults::default()).unwrap();
        let o = &j.raw.options;
        assert_eq!(j.raw.action, GenerateAction::Txt2Img);
        assert_eq!(o["txt2img_prompt"], "a fox");
        assert_eq!(o["txt2img_steps"], 50);
        assert_eq!(o["txt2img_scale"], 7.0);
        assert_eq!(o["txt2img_seed"], -1);
        assert_eq!(o["txt2img_n_samples"], 2);
        assert_eq!(o["txt2img_width"], 256);
        assert_eq!(j.sampler.sampler, "Euler a");
        assert_eq!(j.clip_stop, 1);
        assert!(j.send_images);
        assert_eq!(j.echo["steps"], 50);
    }

    #[test]
    fn overrides_caller_defaults_and_legacy_sampler_index() {
        let body = obj(json!({
            "prompt": "x", "seed": "123", "sampler_index": "DPM++ 2M Karras",
            "override_settings": {"CLIP_stop_at_last_layers": 2, "sd_model_checkpoint": "sd15 [abc123]"},
            "n_iter": "2", "batch_size": 3, "url": "http://ignored", "auth": "ignored"
        }));
        let j = translate(Endpoint::Txt2Img, &body, &CallerDefaults::default()).unwrap();
        assert_eq!(j.raw.options["txt2img_model"], "sd15");
        assert_eq!(j.raw.options["txt2img_seed"], "123");
        assert_eq!(j.raw.options["txt2img_n_samples"], 6);
        assert_eq!(j.clip_stop, 2);
        assert_eq!(j.sampler.schedule, "Karras");
        let mine = CallerDefaults {
            model: Some("tiny".into()),
            clip_stop: Some(3),
        };
        let j = translate(Endpoint::Txt2Img, &obj(json!({"prompt": "x"})), &mine).unwrap();
        assert_eq!(j.raw.options["txt2img_model"], "tiny");
        assert_eq!(j.clip_stop, 3);
    }

    #[test]
    fn img2img_with_mask_is_inpaint_and_data_urls_are_stripped() {
        let body = obj(json!({
            "init_images": ["data:image/png;base64,AAAA"], "mask": "BBBB",
            "denoising_strength": 0.5, "inpainting_mask_invert": 1, "mask_blur": 0
        }));
        let j = translate(Endpoint::Img2Img, &body, &CallerDefaults::default()).unwrap();
        assert_eq!(j.raw.action, GenerateAction::Inpaint);
        assert_eq!(j.raw.options["pixels"], "AAAA");
        assert_eq!(j.raw.options["mask"], "BBBB");
        assert_eq!(j.raw.options["inpaint_strength"], 0.5);
        assert!(j.invert_mask);
        assert_eq!(j.echo["init_images"], Value::Null);
        let plain = obj(json!({"init_images": ["AAAA"]}));
        let j = translate(Endpoint::Img2Img, &plain, &CallerDefaults::default()).unwrap();
        assert_eq!(j.raw.action, GenerateAction::Img2Img);
        assert_eq!(j.raw.options["img2img_strength"], 0.75);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let cases = [
            (json!({"batch_size": "many"}), "batch_size"),
            (json!({"batch_size": 0}), "batch_size"),
            (json!({"override_settings": [1]}), "override_settings"),
            (
                json!({"override_settings": {"CLIP_stop_at_last_layers": 40}}),
                "CLIP_stop_at_last_layers",
            ),
            (json!({"sampler_name": {"a": 1}}), "sampler_name"),
        ];
        for (body, field) in cases {
            let e =
                translate(Endpoint::Txt2Img, &obj(body), &CallerDefaults::default()).unwrap_err();
            assert!(e.message.contains(field), "{}", e.message);
        }
        let e = translate(
            Endpoint::Img2Img,
            &obj(json!({})),
            &CallerDefaults::default(),
        )
        .unwrap_err();
        assert!(e.message.contains("init_images"));
        assert_eq!(
            a1111_names("txt2img_scale: must be >= 0", GenerateAction::Txt2Img),
            "cfg_scale: must be >= 0"
        );
        assert_eq!(
            a1111_names(
                "inpaint_negative_prompt: at most 3",
                GenerateAction::Inpaint
            ),
            "negative_prompt: at most 3"
        );
    }
}
