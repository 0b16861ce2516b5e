//! The request fields that say how prompts are read: `A_prompt_syntax` (`a1111`, the
//! default, or `literal`), `A_pad_cond_uncond`, `A_loras`, and `A_clip_skip` (counted as
//! A1111 counts it with the A1111 syntax, as diffusers does with literal text). With the
//! A1111 syntax the prompt's `<lora:NAME:MULT>` tags are cut out of the text and join the
//! `loras` list.

use serde_json::{Map, Value};

use super::error::{ErrorCode, RequestError};
use super::lenient;
use crate::pipeline::params::{LoraRequest, PromptSyntax};
use crate::pipeline::prompt::tags::{extract_tags, parse_multiplier};

/// Most LoRAs one request may apply.
pub const MAX_LORAS: usize = 16;
/// Longest LoRA name, in bytes.
const MAX_LORA_NAME: usize = 256;

/// How the prompts of a request are read, and what they ask for.
#[derive(Debug)]
pub struct PromptFields {
    pub syntax: PromptSyntax,
    pub prompt: String,
    pub clip_skip: Option<usize>,
    pub loras: Vec<LoraRequest>,
}

fn invalid(field: &str, message: impl std::fmt::Display) -> RequestError {
    RequestError::new(ErrorCode::InvalidField, format!("{field}: {message}"))
}

/// Reads the fields for action prefix `a` from options `o`; `prompt` is the already bounded
/// prompt text.
pub fn parse_prompt_fields(
    o: &Map<String, Value>,
    a: &str,
    prompt: String,
) -> Result<PromptFields, RequestError> {
    let key = |name: &str| format!("{a}_{name}");
    let syntax_key = key("prompt_syntax");
    let a1111 = match lenient::get_str(o, &syntax_key).map_err(|e| invalid(&syntax_key, e))? {
        None => true,
        Some(s) => match s.trim().to_ascii_lowercase().as_str() {
            "" | "a1111" => true,
            "literal" => false,
            _ => {
                return Err(invalid(
                    &syntax_key,
                    format!(
                        "expected `a1111` or `literal`, got {}",
                        lenient::short(&Value::String(s))
                    ),
                ))
            }
        },
    };
    let pad_key = key("pad_cond_uncond");
    let pad_cond_uncond = lenient::get_bool(o, &pad_key)
        .map_err(|e| invalid(&pad_key, e))?
        .unwrap_or(false);

    let clip_key = key("clip_skip");
    let raw_skip = lenient::get_i64(o, &clip_key).map_err(|e| invalid(&clip_key, e))?;
    let clip_skip = match (raw_skip, a1111) {
        (None, _) => None,
        // A1111's "Clip skip": 1 (and 0) = the last layer, n = the n-th layer from the end.
        (Some(c), true) if (0..=12).contains(&c) => (c > 1).then(|| c as usize - 1),
        (Some(c), false) if (0..=11).contains(&c) => Some(c as usize),
        (Some(c), true) => return Err(invalid(&clip_key, format!("must be 0..=12, got {c}"))),
        (Some(c), false) => return Err(invalid(&clip_key, format!("must be 0..=11, got {c}"))),
    };

    let loras_key = key("loras");
    let mut loras = parse_loras(o.get(&loras_key), &loras_key)?;
    let (prompt, syntax) = if a1111 {
        let (text, tagged) = extract_tags(&prompt).map_err(|e| invalid(&key("prompt"), e))?;
        loras.extend(tagged);
        (text, PromptSyntax::A1111 { pad_cond_uncond })
    } else {
        (prompt, PromptSyntax::Literal)
    };
    if loras.len() > MAX_LORAS {
        return Err(invalid(
            &loras_key,
            format!("at most {MAX_LORAS} LoRAs, got {}", loras.len()),
        ));
    }
    if let Some(l) = loras.iter().find(|l| l.name.len() > MAX_LORA_NAME) {
        return Err(invalid(
            &loras_key,
            format!(
                "LoRA name of {} bytes (at most {MAX_LORA_NAME})",
                l.name.len()
            ),
        ));
    }
    Ok(PromptFields {
        syntax,
        prompt,
        clip_skip,
        loras,
    })
}

/// `A_loras`: a list of `"NAME"`, `"NAME:MULT"` or `{"name": NAME, "multiplier": MULT}`
/// (multiplier 1 when absent); `null`, `""` or absent for none.
fn parse_loras(value: Option<&Value>, key: &str) -> Result<Vec<LoraRequest>, RequestError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(invalid(
                key,
                format!("expected a list of LoRAs, got {}", lenient::short(other)),
            ))
        }
    };
    if items.len() > MAX_LORAS {
        return Err(invalid(
            key,
            format!("at most {MAX_LORAS} LoRAs, got {}", items.len()),
        ));
    }
    items
        .iter()
        .map(|item| {
            let (name, multiplier) = match item {
                Value::String(s) => match s.rsplit_once(':') {
                    Some((name, m)) => (name.to_owned(), Some(m.to_owned())),
                    None => (s.clone(), None),
                },
                Value::Object(map) => {
                    let name = lenient::get_str(map, "name")
                        .map_err(|e| invalid(key, e))?
                        .unwrap_or_default();
                    let m = match map.get("multiplier").or_else(|| map.get("weight")) {
                        None | Some(Value::Null) => None,
                        Some(Value::Number(n)) => Some(n.to_string()),
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(other) => Some(lenient::short(other)),
                    };
                    (name, m)
                }
                other => {
                    return Err(invalid(
                        key,
                        format!(
                            "expected a LoRA name or object, got {}",
                            lenient::short(other)
                        ),
                    ))
                }
            };
            let name = name.trim().to_owned();
            if name.is_empty() {
                return Err(invalid(key, "a LoRA without a name"));
            }
            let multiplier = match multiplier {
                Some(m) => {
                    parse_multiplier(&m, &format!("LoRA {name}")).map_err(|e| invalid(key, e))?
                }
                None => 1.0,
            };
            Ok(LoraRequest {
                name,
                text_multiplier: multiplier,
                unet_multiplier: multiplier,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Result<PromptFields, RequestError> {
        let o = v.as_object().unwrap().clone();
        let prompt = lenient::get_str(&o, "txt2img_prompt")
            .unwrap()
            .unwrap_or_default();
        parse_prompt_fields(&o, "txt2img", prompt)
    }

    #[test]
    fn a1111_is_the_default_and_tags_become_loras() {
        let f = fields(json!({"txt2img_prompt": "fox <lora:ink:0.5>",
                              "txt2img_loras": ["fox_style:0.6", {"name": "b"}]}))
        .unwrap();
        assert_eq!(
            f.syntax,
            PromptSyntax::A1111 {
                pad_cond_uncond: false
            }
        );
        assert_eq!(f.prompt, "fox ");
        let names: Vec<_> = f
            .loras
            .iter()
            .map(|l| (l.name.as_str(), l.unet_multiplier))
            .collect();
        assert_eq!(names, vec![("fox_style", 0.6), ("b", 1.0), ("ink", 0.5)]);
    }

    #[test]
    fn literal_keeps_the_text_and_the_old_clip_skip() {
        let f = fields(json!({"txt2img_prompt": "fox <lora:ink:0.5>",
                              "txt2img_prompt_syntax": "literal", "txt2img_clip_skip": 1}))
        .unwrap();
        assert_eq!(f.syntax, PromptSyntax::Literal);
        assert_eq!(f.prompt, "fox <lora:ink:0.5>");
        assert!(f.loras.is_empty());
        assert_eq!(f.clip_skip, Some(1));
    }

    #[test]
    fn a1111_counts_clip_skip_from_one() {
        for (given, want) in [(0, None), (1, None), (2, Some(1)), (12, Some(11))] {
            let f = fields(json!({"txt2img_clip_skip": given})).unwrap();
            assert_eq!(f.clip_skip, want, "{given}");
        }
        assert!(fields(json!({"txt2img_clip_skip": 13})).is_err());
    }

    #[test]
    fn bad_fields_are_named() {
        for bad in [
            json!({"txt2img_prompt_syntax": "markdown"}),
            json!({"txt2img_loras": "fox"}),
            json!({"txt2img_loras": [""]}),
            json!({"txt2img_loras": ["fox:abc"]}),
            json!({"txt2img_loras": [{"name": "fox", "multiplier": "inf"}]}),
            json!({"txt2img_prompt": "<lora:fox:x>"}),
        ] {
            let e = fields(bad.clone()).unwrap_err();
            assert!(e.message.starts_with("txt2img_"), "{bad}: {}", e.message);
        }
    }
}
