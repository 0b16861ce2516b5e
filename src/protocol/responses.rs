//! Builders for every server-to-client message, with keys in the order the protocol fixes
//! (legacy keys first, then Part 2 keys). Part 2 events always carry `event` and never the
//! keys `image`, `versions` or `action`. Never serializes: see `json` and `codec`.

use serde_json::{Map, Value};

use super::error::ErrorCode;
use crate::registry::addons::{AddOnEntry, AddOns};

/// A PNG as the wire carries it: standard base64 with padding (the `image` field of image
/// messages, and of requests' init images and masks).
pub fn png_base64(png: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png)
}

/// An RGB image as the wire carries it (PNG, then [`png_base64`]); for requests built by tools
/// and tests.
pub fn encode_png_base64(img: &image::RgbImage) -> Result<String, image::ImageError> {
    Ok(png_base64(&crate::pipeline::images::encode_png(img)?))
}

fn obj(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

/// Sent on connect. Both runai fields carry our version so the plugin's Update stays off.
pub(crate) fn versions(version: &str) -> Value {
    obj(vec![(
        "versions",
        obj(vec![
            ("latest_ksd_version", Value::from("1.0.0")),
            ("latest_runai_version", Value::from(version)),
            ("current_runai_version", Value::from(version)),
        ]),
    )])
}

pub(crate) fn progress(step: usize, total: usize, reqtype: &str, job_id: &str) -> Value {
    obj(vec![
        ("action", Value::from(4)),
        ("step", Value::from(step)),
        ("total", Value::from(total)),
        ("reqtype", Value::from(reqtype)),
        ("job_id", Value::from(job_id)),
    ])
}

/// One image. `pos_x`/`pos_y` are echoed exactly as the client sent them; `nsfw` (the
/// safety checker's verdict, when one ran) comes after the legacy keys.
pub fn image(
    png_base64: String,
    reqtype: &str,
    pos_x: &Value,
    pos_y: &Value,
    job_id: &str,
    seed: u64,
    nsfw: Option<bool>,
) -> Value {
    let mut pairs = vec![
        ("image", Value::String(png_base64)),
        ("reqtype", Value::from(reqtype)),
        ("pos_x", pos_x.clone()),
        ("pos_y", pos_y.clone()),
        ("job_id", Value::from(job_id)),
        ("seed", Value::from(seed)),
    ];
    if let Some(flag) = nsfw {
        pairs.push(("nsfw", Value::from(flag)));
    }
    obj(pairs)
}

pub(crate) fn queued(job_id: &str, reqtype: &str, position: usize) -> Value {
    obj(vec![
        ("event", Value::from("queued")),
        ("job_id", Value::from(job_id)),
        ("reqtype", Value::from(reqtype)),
        ("position", Value::from(position)),
    ])
}

pub(crate) fn done(job_id: &str, reqtype: &str, images: usize, elapsed_ms: u64) -> Value {
    obj(vec![
        ("event", Value::from("done")),
        ("job_id", Value::from(job_id)),
        ("reqtype", Value::from(reqtype)),
        ("images", Value::from(images)),
        ("elapsed_ms", Value::from(elapsed_ms)),
    ])
}

/// The end of a `convert`: `model` is the new folder's model name (what `models` will list).
pub(crate) fn converted(job_id: Option<&str>, model: &str, elapsed_ms: u64) -> Value {
    let mut pairs = vec![("event", Value::from("done"))];
    if let Some(j) = job_id {
        pairs.push(("job_id", Value::from(j)));
    }
    pairs.push(("reqtype", Value::from("convert")));
    pairs.push(("images", Value::from(0)));
    pairs.push(("model", Value::from(model)));
    pairs.push(("elapsed_ms", Value::from(elapsed_ms)));
    obj(pairs)
}

pub(crate) fn error(
    code: ErrorCode,
    message: &str,
    job_id: Option<&str>,
    reqtype: Option<&str>,
) -> Value {
    let mut pairs = vec![
        ("event", Value::from("error")),
        ("code", Value::from(code.as_str())),
        ("message", Value::from(message)),
    ];
    if let Some(j) = job_id {
        pairs.push(("job_id", Value::from(j)));
    }
    if let Some(r) = reqtype {
        pairs.push(("reqtype", Value::from(r)));
    }
    obj(pairs)
}

pub(crate) fn cancelled(job_id: &str) -> Value {
    obj(vec![
        ("event", Value::from("cancelled")),
        ("job_id", Value::from(job_id)),
    ])
}

pub(crate) fn pong(version: &str, queue: usize, device: &str, loaded_models: &[String]) -> Value {
    obj(vec![
        ("event", Value::from("pong")),
        ("version", Value::from(version)),
        ("queue", Value::from(queue)),
        ("device", Value::from(device)),
        (
            "loaded_models",
            Value::Array(
                loaded_models
                    .iter()
                    .map(|m| Value::from(m.as_str()))
                    .collect(),
            ),
        ),
    ])
}

/// One entry of the `models` reply.
pub(crate) struct ModelEntry<'a> {
    pub(crate) name: &'a str,
    pub(crate) path: &'a str,
    pub(crate) version: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) format: &'a str,
}

/// The `models` reply: the models, then the LoRAs and textual-inversion embeddings in their
/// folders (`{"name", "path"}` each; `name` is what a prompt or `loras` field writes).
pub(crate) fn models(entries: &[ModelEntry<'_>], add_ons: &AddOns) -> Value {
    let list = entries
        .iter()
        .map(|e| {
            obj(vec![
                ("name", Value::from(e.name)),
                ("path", Value::from(e.path)),
                ("version", Value::from(e.version)),
                ("kind", Value::from(e.kind)),
                ("format", Value::from(e.format)),
            ])
        })
        .collect();
    let files = |list: &[AddOnEntry]| {
        Value::Array(
            list.iter()
                .map(|e| {
                    obj(vec![
                        ("name", Value::from(e.name.as_str())),
                        ("path", Value::from(e.path.to_string_lossy().as_ref())),
                    ])
                })
                .collect(),
        )
    };
    obj(vec![
        ("event", Value::from("models")),
        ("models", Value::Array(list)),
        ("loras", files(&add_ons.loras)),
        ("embeddings", files(&add_ons.embeddings)),
    ])
}

/// The answer to the legacy `update` action; runai changes nothing.
pub(crate) fn upgrade_complete() -> Value {
    obj(vec![("upgrade_complete", Value::Bool(true))])
}

/// Sent to every client when the server drains, just before it closes the connection.
pub(crate) fn closing(reason: &str) -> Value {
    obj(vec![
        ("event", Value::from("closing")),
        ("reason", Value::from(reason)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json::to_python_json;

    #[test]
    fn legacy_shapes_byte_exact() {
        assert_eq!(
            to_python_json(&versions("0.1.0")),
            r#"{"versions": {"latest_ksd_version": "1.0.0", "latest_runai_version": "0.1.0", "current_runai_version": "0.1.0"}}"#
        );
        assert_eq!(
            to_python_json(&progress(0, 20, "txt2img", "j1")),
            r#"{"action": 4, "step": 0, "total": 20, "reqtype": "txt2img", "job_id": "j1"}"#
        );
        assert_eq!(
            to_python_json(&image(
                "QUJD".into(),
                "img2img",
                &Value::from(3),
                &Value::from("7"),
                "j",
                42,
                None
            )),
            r#"{"image": "QUJD", "reqtype": "img2img", "pos_x": 3, "pos_y": "7", "job_id": "j", "seed": 42}"#
        );
        // The checker's verdict follows the legacy keys.
        assert_eq!(
            to_python_json(&image(
                "QUJD".into(),
                "txt2img",
                &Value::from(0),
                &Value::from(0),
                "j",
                7,
                Some(true)
            )),
            r#"{"image": "QUJD", "reqtype": "txt2img", "pos_x": 0, "pos_y": 0, "job_id": "j", "seed": 7, "nsfw": true}"#
        );
    }

    #[test]
    fn events_never_carry_legacy_keys() {
        let all = [
            queued("j", "txt2img", 1),
            done("j", "txt2img", 1, 5),
            error(ErrorCode::Busy, "full", Some("j"), Some("txt2img")),
            error(ErrorCode::BadRequest, "x", None, None),
            cancelled("j"),
            pong("v", 0, "cpu", &[]),
            models(&[], &AddOns::default()),
            closing("shutdown"),
        ];
        for v in all {
            let m = v.as_object().unwrap();
            assert!(m.contains_key("event"));
            for k in ["image", "versions", "action"] {
                assert!(!m.contains_key(k), "{k} in {v}");
            }
        }
        assert_eq!(
            to_python_json(&error(
                ErrorCode::Busy,
                "queue full",
                Some("j"),
                Some("txt2img")
            )),
            r#"{"event": "error", "code": "busy", "message": "queue full", "job_id": "j", "reqtype": "txt2img"}"#
        );
    }
}
