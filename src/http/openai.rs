//! OpenAI-style images: `POST /v1/images/generations` (JSON: prompt, n, size "WxH",
//! response_format `b64_json`, model = a runai model name or ignored) and
//! `POST /v1/images/edits` (multipart image + optional mask + prompt, run as inpainting; the
//! mask's transparent pixels, or the image's own, mark what to repaint, as OpenAI defines
//! it). Both go through the A1111 translation and the same queue; errors use OpenAI's body.
//! `response_format: url` is refused: runai stores nothing to link to.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::web::{self, Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use image::{DynamicImage, GrayImage, Luma};
use serde_json::{json, Map, Value};

use super::a1111_request::{translate, Endpoint};
use super::a1111_response::{infotext, tagged_png, unix_now};
use super::auth::caller_of;
use super::body;
use super::error::{ApiError, Dialect};
use super::generate::{prepare, resolve, run};
use super::multipart;
use super::state::HttpState;
use crate::messages::session::ErrorKind;
use crate::protocol::lenient;
use crate::protocol::validate::decode_image;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Fields OpenAI clients send, read from either a JSON body or form fields.
struct ImageRequest {
    prompt: String,
    n: i64,
    size: Option<(i64, i64)>,
    model: Option<String>,
    /// runai extensions passed on to the A1111 translation (steps, seed, ...).
    extra: Map<String, Value>,
}

fn parse_size(s: &str) -> Result<Option<(i64, i64)>, ApiError> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    let bad = || {
        ApiError::invalid(format!(
            "size: expected \"WIDTHxHEIGHT\" such as \"512x512\", got {s:?}"
        ))
    };
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok(Some((
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    )))
}

fn read_request(fields: &Map<String, Value>) -> Result<ImageRequest, ApiError> {
    let field = |e: lenient::FieldError| ApiError::invalid(e.to_string());
    let prompt = lenient::get_str(fields, "prompt")
        .map_err(field)?
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("prompt: required"))?;
    let n = lenient::get_i64(fields, "n").map_err(field)?.unwrap_or(1);
    let size = match lenient::get_str(fields, "size").map_err(field)? {
        Some(s) => parse_size(&s)?,
        None => None,
    };
    match lenient::get_str(fields, "response_format")
        .map_err(field)?
        .as_deref()
    {
        None | Some("b64_json") => {}
        Some("url") => {
            return Err(ApiError::invalid(
                "response_format: \"url\" is not available: runai stores no images to link to; \
                 ask for \"b64_json\"",
            ))
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "response_format: expected \"b64_json\", got {other:?}"
            )))
        }
    }
    let model = lenient::get_str(fields, "model").map_err(field)?;
    let mut extra = Map::new();
    for k in [
        "negative_prompt",
        "steps",
        "seed",
        "cfg_scale",
        "sampler_name",
        "scheduler",
    ] {
        if let Some(v) = fields.get(k) {
            extra.insert(k.to_string(), v.clone());
        }
    }
    Ok(ImageRequest {
        prompt,
        n,
        size,
        model,
        extra,
    })
}

/// The model to use: a runai model if `model` names one; OpenAI names are ignored, but a
/// path outside the roots is refused.
async fn model_override(
    state: &HttpState,
    model: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let Some(m) = model.map(str::trim).filter(|m| !m.is_empty()) else {
        return Ok(None);
    };
    match resolve(state, m).await {
        Ok(found) => Ok(Some(found.name)),
        Err(e) if e.kind == ErrorKind::ModelNotFound => {
            log::debug!("http: OpenAI model {m:?} is not a runai model; using the default");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Runs an A1111-shaped body built from an OpenAI request and answers OpenAI's way.
async fn generate(
    state: &Data<HttpState>,
    req: &HttpRequest,
    endpoint: Endpoint,
    mut body: Map<String, Value>,
    r: ImageRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_of(req)?;
    if let Some(m) = model_override(state, r.model.as_deref()).await? {
        body.insert(
            "override_settings".into(),
            json!({"sd_model_checkpoint": m}),
        );
    }
    body.insert("prompt".into(), Value::from(r.prompt.clone()));
    body.insert("batch_size".into(), Value::from(r.n));
    if let Some((w, h)) = r.size {
        body.insert("width".into(), Value::from(w));
        body.insert("height".into(), Value::from(h));
    }
    body.extend(r.extra);
    let request = translate(endpoint, &body, &state.callers.defaults(&caller))?;
    let prepared = prepare(state, request).await?;
    run(state, caller, prepared, Dialect::OpenAi, |p, result| {
        let data = result
            .images
            .iter()
            .map(|img| {
                let png = tagged_png(img, &infotext(p, img.seed))?;
                Ok(json!({"b64_json": png, "revised_prompt": p.params.prompt}))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(json!({"created": unix_now(), "data": data}))
    })
    .await
}

pub(crate) async fn generations(
    req: HttpRequest,
    payload: Payload,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let run = async {
        let fields = body::read_json(&req, payload, state.max_body).await?;
        let r = read_request(&fields)?;
        generate(&state, &req, Endpoint::Txt2Img, Map::new(), r).await
    };
    run.await.map_err(|e| e.in_dialect(Dialect::OpenAi))
}

/// What to repaint from an RGBA image: its transparent pixels, as a white-on-black mask.
fn transparent_mask(img: &DynamicImage) -> Option<GrayImage> {
    if !img.color().has_alpha() {
        return None;
    }
    let rgba = img.to_rgba8();
    let mask = GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        Luma([if rgba.get_pixel(x, y).0[3] < 128 {
            255
        } else {
            0
        }])
    });
    mask.pixels().any(|p| p.0[0] == 255).then_some(mask)
}

fn png_base64(mask: &GrayImage) -> Result<String, ApiError> {
    let mut png = Vec::new();
    mask.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("cannot encode the mask: {e}")))?;
    Ok(b64().encode(png))
}

pub(crate) async fn edits(
    req: HttpRequest,
    payload: Payload,
    state: Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let run = async {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let boundary = multipart::boundary(content_type)
            .ok_or_else(|| ApiError::bad_request("expected a multipart/form-data body"))?;
        let bytes = body::read(&req, payload, state.max_body).await?;
        let parts = multipart::parts(&bytes, &boundary)?;
        let mut fields = Map::new();
        let (mut image, mut mask) = (None, None);
        for p in &parts {
            match p.name.as_str() {
                "image" | "image[]" if image.is_none() => image = Some(b64().encode(p.data)),
                "mask" => mask = Some(b64().encode(p.data)),
                name if p.filename.is_none() => {
                    let text = String::from_utf8_lossy(p.data).to_string();
                    fields.insert(name.to_string(), Value::from(text));
                }
                _ => {}
            }
        }
        let image = image.ok_or_else(|| ApiError::invalid("image: a PNG file is required"))?;
        let r = read_request(&fields)?;
        let limits = state.limits;
        // Decoded here only to read sizes and alpha; the validator decodes the image again.
        let (image, mask, size) = web::block(move || {
            let img = decode_image("image", &image, &limits)?;
            let mask = match mask {
                Some(m) => {
                    let decoded = decode_image("mask", &m, &limits)?;
                    match transparent_mask(&decoded) {
                        Some(from_alpha) => Some(png_base64(&from_alpha)?),
                        None if decoded.color().has_alpha() => None,
                        None => Some(m),
                    }
                }
                None => transparent_mask(&img).map(|m| png_base64(&m)).transpose()?,
            };
            Ok::<_, ApiError>((
                image,
                mask,
                (
                    i64::from(img.width() / 8 * 8),
                    i64::from(img.height() / 8 * 8),
                ),
            ))
        })
        .await
        .map_err(|_| ApiError::new(ErrorKind::Internal, "image decoding failed"))??;
        let mut body = Map::new();
        body.insert("init_images".into(), json!([image]));
        body.insert("denoising_strength".into(), json!(1.0));
        body.insert("mask_blur".into(), json!(0));
        if let Some(m) = mask {
            body.insert("mask".into(), Value::from(m));
        }
        let r = ImageRequest {
            size: r.size.or(Some(size)),
            ..r
        };
        generate(&state, &req, Endpoint::Img2Img, body, r).await
    };
    run.await.map_err(|e| e.in_dialect(Dialect::OpenAi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_formats() {
        assert_eq!(parse_size("512x768").unwrap(), Some((512, 768)));
        assert_eq!(parse_size("auto").unwrap(), None);
        assert!(parse_size("big").is_err());
        let fields = |v: Value| v.as_object().unwrap().clone();
        let e = read_request(&fields(json!({"prompt": "x", "response_format": "url"})))
            .err()
            .unwrap();
        assert!(e.message.contains("b64_json"));
        assert!(read_request(&fields(json!({"n": 1}))).is_err());
        let r = read_request(&fields(
            json!({"prompt": "x", "n": "2", "steps": 3, "style": "vivid"}),
        ))
        .unwrap();
        assert_eq!((r.n, r.extra.len()), (2, 1));
    }

    #[test]
    fn transparent_pixels_become_the_mask() {
        let mut rgba = image::RgbaImage::from_pixel(8, 8, image::Rgba([9, 9, 9, 255]));
        rgba.put_pixel(1, 2, image::Rgba([0, 0, 0, 0]));
        let m = transparent_mask(&DynamicImage::ImageRgba8(rgba)).unwrap();
        assert_eq!((m.get_pixel(1, 2).0[0], m.get_pixel(0, 0).0[0]), (255, 0));
        let opaque = DynamicImage::ImageRgb8(image::RgbImage::new(8, 8));
        assert!(transparent_mask(&opaque).is_none());
    }
}
