//! The request options beyond the plugin's: the timestep spacing (`A_timestep_spacing`,
//! `trailing` / `sgm_uniform` for SDXL Turbo and Lightning) and SDXL's micro-conditioning
//! (`A_original_width`/`A_original_height`, `A_crop_top`/`A_crop_left`,
//! `A_target_width`/`A_target_height`). All optional; absent = the model's scheduler config
//! and diffusers' defaults (sizes = the request's, crop (0, 0)). An empty negative prompt on
//! the wire means zeros for an SDXL model whose config asks for them (AUTOMATIC1111's
//! behaviour, [`EmptyNegative::Zeros`]).

use serde_json::Value;

use super::error::RequestError;
use super::lenient;
use super::validate::{from_field, invalid};
use crate::pipeline::params::{EmptyNegative, Spacing, XlOptions};

/// Largest micro-conditioning value accepted (they are pixel sizes and offsets).
const MAX_CONDITIONING_SIDE: i64 = 16384;

fn pixels(o: &serde_json::Map<String, Value>, key: &str) -> Result<Option<u32>, RequestError> {
    match lenient::get_i64(o, key).map_err(from_field)? {
        None => Ok(None),
        Some(v) if (0..=MAX_CONDITIONING_SIDE).contains(&v) => Ok(Some(v as u32)),
        Some(v) => Err(invalid(
            key,
            format!("must be 0..={MAX_CONDITIONING_SIDE}, got {v}"),
        )),
    }
}

/// A (width, height) pair given together or not at all.
fn size(
    o: &serde_json::Map<String, Value>,
    action: &str,
    what: &str,
) -> Result<Option<(u32, u32)>, RequestError> {
    let (wk, hk) = (
        format!("{action}_{what}_width"),
        format!("{action}_{what}_height"),
    );
    match (pixels(o, &wk)?, pixels(o, &hk)?) {
        (None, None) => Ok(None),
        (Some(w), Some(h)) if w > 0 && h > 0 => Ok(Some((w, h))),
        _ => Err(invalid(
            &wk,
            format!("{wk} and {hk} must be given together, both positive"),
        )),
    }
}

/// `A_timestep_spacing` and the SDXL micro-conditioning of action `action` (`txt2img`, ...).
pub(crate) fn parse_sampling(
    o: &serde_json::Map<String, Value>,
    action: &str,
) -> Result<(Option<Spacing>, XlOptions), RequestError> {
    let key = format!("{action}_timestep_spacing");
    let spacing = match lenient::get_str(o, &key).map_err(from_field)? {
        None => None,
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(Spacing::from_name(&s).ok_or_else(|| {
            invalid(
                &key,
                format!(
                    "unknown spacing {}, expected one of leading linspace trailing sgm_uniform",
                    lenient::short(&Value::String(s.clone()))
                ),
            )
        })?),
    };
    let crop_top = pixels(o, &format!("{action}_crop_top"))?.unwrap_or(0);
    let crop_left = pixels(o, &format!("{action}_crop_left"))?.unwrap_or(0);
    let xl = XlOptions {
        original_size: size(o, action, "original")?,
        crop_top_left: (crop_top, crop_left),
        target_size: size(o, action, "target")?,
        empty_negative: EmptyNegative::Zeros,
    };
    Ok((spacing, xl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<(Option<Spacing>, XlOptions), RequestError> {
        parse_sampling(v.as_object().unwrap(), "txt2img")
    }

    #[test]
    fn defaults_and_values() {
        let (s, xl) = parse(json!({})).unwrap();
        assert_eq!((s, xl), (None, XlOptions::default()));
        let (s, xl) = parse(json!({
            "txt2img_timestep_spacing": "SGM_Uniform",
            "txt2img_original_width": "2048",
            "txt2img_original_height": 1536,
            "txt2img_crop_top": 16,
            "txt2img_target_width": 1024,
            "txt2img_target_height": 768,
        }))
        .unwrap();
        assert_eq!(s, Some(Spacing::Trailing));
        assert_eq!(xl.original_size, Some((2048, 1536)));
        assert_eq!(xl.crop_top_left, (16, 0));
        assert_eq!(xl.target_size, Some((1024, 768)));
        assert_eq!(xl.empty_negative, EmptyNegative::Zeros);
    }

    #[test]
    fn bad_values_name_the_field() {
        for (v, field) in [
            (
                json!({"txt2img_timestep_spacing": "sideways"}),
                "txt2img_timestep_spacing",
            ),
            (
                json!({"txt2img_original_width": 512}),
                "txt2img_original_width",
            ),
            (json!({"txt2img_crop_left": -1}), "txt2img_crop_left"),
            (
                json!({"txt2img_target_width": 0, "txt2img_target_height": 8}),
                "txt2img_target_width",
            ),
        ] {
            let err = parse(v).unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}
