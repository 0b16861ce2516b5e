//! Parses one assembled message into a typed request envelope. Accepts any valid JSON style
//! in UTF-8; ignores unknown keys. Never validates generation options (see `validate`), never
//! panics on any input.

use serde_json::{Map, Value};

use super::error::{ErrorCode, RequestError};

/// Longest client-chosen job id.
pub(crate) const MAX_JOB_ID_CHARS: usize = 64;

/// The four generation actions of the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum GenerateAction {
    Txt2Img,
    Img2Img,
    Inpaint,
    Outpaint,
}

impl GenerateAction {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "txt2img" => Some(GenerateAction::Txt2Img),
            "img2img" => Some(GenerateAction::Img2Img),
            "inpaint" => Some(GenerateAction::Inpaint),
            "outpaint" => Some(GenerateAction::Outpaint),
            _ => None,
        }
    }

    /// The action name, also the `reqtype` of replies and the prefix of option keys.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GenerateAction::Txt2Img => "txt2img",
            GenerateAction::Img2Img => "img2img",
            GenerateAction::Inpaint => "inpaint",
            GenerateAction::Outpaint => "outpaint",
        }
    }
}

/// A generation request before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RawGenerate {
    pub(crate) action: GenerateAction,
    pub(crate) job_id: Option<String>,
    pub(crate) options: Map<String, Value>,
}

/// Every request a client can make.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Generate(RawGenerate),
    Cancel {
        job_id: Option<String>,
    },
    Ping,
    Models,
    Update,
    /// Convert a single-file checkpoint into a diffusers folder beside it.
    Convert {
        job_id: Option<String>,
        /// The `.safetensors`/`.ckpt` file, named like a model (relative or absolute).
        model: String,
    },
    Auth {
        token: String,
    },
}

/// Parses the envelope `{"action": ..., "options": {...}, "job_id": ...}`.
pub fn parse_request(bytes: &[u8]) -> Result<Request, RequestError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| RequestError::new(ErrorCode::BadRequest, format!("not valid JSON: {e}")))?;
    let Value::Object(mut top) = value else {
        return Err(RequestError::new(
            ErrorCode::BadRequest,
            "a request must be a JSON object",
        ));
    };
    let job_id = parse_job_id(&top)?;
    let action = match top.get("action") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(RequestError::new(
                ErrorCode::BadRequest,
                format!(
                    "action: expected a string, got {}",
                    super::lenient::short(other)
                ),
            )
            .for_job(job_id, None))
        }
        None => {
            return Err(
                RequestError::new(ErrorCode::BadRequest, "missing \"action\"")
                    .for_job(job_id, None),
            )
        }
    };
    if let Some(gen) = GenerateAction::from_name(&action) {
        let options = match top.remove("options") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(RequestError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "options: expected an object, got {}",
                        super::lenient::short(&other)
                    ),
                )
                .for_job(job_id, Some(action)))
            }
        };
        return Ok(Request::Generate(RawGenerate {
            action: gen,
            job_id,
            options,
        }));
    }
    match action.as_str() {
        "cancel" => Ok(Request::Cancel { job_id }),
        "ping" => Ok(Request::Ping),
        "models" => Ok(Request::Models),
        "update" => Ok(Request::Update),
        "convert" => parse_convert(&top, job_id),
        "auth" => match top.get("token") {
            Some(Value::String(t)) => Ok(Request::Auth { token: t.clone() }),
            _ => Err(RequestError::new(
                ErrorCode::BadRequest,
                "auth: \"token\" must be a string",
            )),
        },
        _ => {
            let shown = super::lenient::short(&Value::String(action.clone()));
            Err(
                RequestError::new(ErrorCode::UnknownAction, format!("unknown action {shown}"))
                    .for_job(job_id, None),
            )
        }
    }
}

/// The option keys naming the file to convert, in priority order (`model_path` is the key
/// the plugin sends).
pub(crate) const CONVERT_MODEL_KEYS: [&str; 2] = ["model_path", "model"];

fn parse_convert(
    top: &Map<String, Value>,
    job_id: Option<String>,
) -> Result<Request, RequestError> {
    let reqtype = Some("convert".to_string());
    let options = match top.get("options") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            return Err(RequestError::new(
                ErrorCode::BadRequest,
                format!(
                    "options: expected an object, got {}",
                    super::lenient::short(other)
                ),
            )
            .for_job(job_id, reqtype))
        }
    };
    for key in CONVERT_MODEL_KEYS {
        match options.and_then(|o| o.get(key)) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if s.trim().is_empty() => continue,
            Some(Value::String(s)) => {
                return Ok(Request::Convert {
                    job_id,
                    model: s.trim().to_string(),
                })
            }
            Some(other) => {
                return Err(RequestError::new(
                    ErrorCode::InvalidField,
                    format!(
                        "{key}: expected a string, got {}",
                        super::lenient::short(other)
                    ),
                )
                .for_job(job_id, reqtype))
            }
        }
    }
    Err(RequestError::new(
        ErrorCode::InvalidField,
        "model_path: convert needs the .safetensors or .ckpt file to convert",
    )
    .for_job(job_id, reqtype))
}

fn parse_job_id(top: &Map<String, Value>) -> Result<Option<String>, RequestError> {
    match top.get("job_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_JOB_ID_CHARS => Ok(Some(s.clone())),
        Some(Value::String(s)) => Err(RequestError::new(
            ErrorCode::InvalidField,
            format!(
                "job_id: at most {MAX_JOB_ID_CHARS} characters, got {}",
                s.chars().count()
            ),
        )),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(RequestError::new(
            ErrorCode::InvalidField,
            format!(
                "job_id: expected a string, got {}",
                super::lenient::short(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generate_envelope() {
        let r = parse_request(
            br#"{"action":"txt2img","options":{"txt2img_steps":"3"},"job_id":"a1","x":1}"#,
        )
        .unwrap();
        match r {
            Request::Generate(g) => {
                assert_eq!(g.action, GenerateAction::Txt2Img);
                assert_eq!(g.job_id.as_deref(), Some("a1"));
                assert_eq!(g.options.get("txt2img_steps"), Some(&Value::from("3")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_actions() {
        assert_eq!(
            parse_request(br#"{"action": "ping"}"#).unwrap(),
            Request::Ping
        );
        assert_eq!(
            parse_request(br#"{"action": "cancel", "job_id": "j"}"#).unwrap(),
            Request::Cancel {
                job_id: Some("j".into())
            }
        );
        assert_eq!(
            parse_request(br#"{"action": "models"}"#).unwrap(),
            Request::Models
        );
    }

    #[test]
    fn convert_names_its_file() {
        assert_eq!(
            parse_request(br#"{"action": "convert", "options": {"model_path": " v1/a.ckpt "}}"#)
                .unwrap(),
            Request::Convert {
                job_id: None,
                model: "v1/a.ckpt".into()
            }
        );
        assert_eq!(
            parse_request(
                br#"{"action": "convert", "job_id": "c", "options": {"model": "b.safetensors"}}"#
            )
            .unwrap(),
            Request::Convert {
                job_id: Some("c".into()),
                model: "b.safetensors".into()
            }
        );
        let e = parse_request(br#"{"action": "convert", "job_id": "c"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert!(e.message.contains("model_path"));
        assert_eq!(e.reqtype.as_deref(), Some("convert"));
        let e =
            parse_request(br#"{"action": "convert", "options": {"model_path": 3}}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
    }

    #[test]
    fn errors_have_codes() {
        assert_eq!(
            parse_request(b"{nope").unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            parse_request(b"[1]").unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            parse_request(b"\xff\xfe").unwrap_err().code,
            ErrorCode::BadRequest
        );
        let e = parse_request(br#"{"action": "dance", "job_id": "q"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownAction);
        assert_eq!(e.job_id.as_deref(), Some("q"));
        let long = format!(r#"{{"action": "ping", "job_id": "{}"}}"#, "j".repeat(65));
        assert_eq!(
            parse_request(long.as_bytes()).unwrap_err().code,
            ErrorCode::InvalidField
        );
        assert_eq!(
            parse_request(br#"{"action": "txt2img", "options": 3}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn utf8_prompt_accepted() {
        let r = parse_request(
            "{\"action\": \"txt2img\", \"options\": {\"txt2img_prompt\": \"猫\"}}".as_bytes(),
        );
        assert!(r.is_ok());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_request(&data);
        }

        #[test]
        fn never_panics_on_json_like(s in r#"\{("[a-z_]{0,8}": ("[a-z0-9]{0,5}"|[0-9]{1,3}|null|\{\}), ){0,4}"action": "[a-z2]{0,8}"\}"#) {
            let _ = parse_request(s.as_bytes());
        }
    }
}
