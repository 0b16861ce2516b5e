//! A1111's extra-network tags: every `<type:arg:arg...>` in a prompt (`type` a word) is cut
//! out of the text; `<lora:NAME>`, `<lora:NAME:MULT>` and `<lora:NAME:TE:UNET>` (also
//! `lyco`) name LoRAs to apply. Tags of other types (hypernetworks) are removed and ignored,
//! as A1111 does when it has no such network.

use std::fmt;

/// A LoRA asked for by a request: its name (file stem, or a path below a LoRA root) and its
/// multipliers for the text encoder(s) and the UNet.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraRequest {
    pub name: String,
    pub text_multiplier: f64,
    pub unet_multiplier: f64,
}

/// A tag that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct TagError(pub String);

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A multiplier as written in a tag or a `loras` entry: a finite number.
pub fn parse_multiplier(s: &str, what: &str) -> Result<f64, TagError> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(TagError(format!(
            "{what}: multiplier {:?} is not a finite number",
            s.chars().take(40).collect::<String>()
        ))),
    }
}

/// One LoRA from a tag's arguments (`NAME[:TE[:UNET]]`, A1111's positional form; `te=`/
/// `unet=` named forms too).
fn lora_from_args(args: &str) -> Result<LoraRequest, TagError> {
    let mut parts = args.split(':');
    let name = parts.next().unwrap_or_default().trim().to_owned();
    if name.is_empty() {
        return Err(TagError("<lora:...> tag without a name".into()));
    }
    let what = format!("<lora:{name}>");
    let (mut positional, mut te, mut unet) = (Vec::new(), None, None);
    for p in parts {
        match p.split_once('=') {
            Some(("te", v)) => te = Some(parse_multiplier(v, &what)?),
            Some(("unet", v)) => unet = Some(parse_multiplier(v, &what)?),
            Some(_) => {}
            None => positional.push(parse_multiplier(p, &what)?),
        }
    }
    let text_multiplier = te.or(positional.first().copied()).unwrap_or(1.0);
    let unet_multiplier = unet
        .or(positional.get(1).copied())
        .unwrap_or(text_multiplier);
    Ok(LoraRequest {
        name,
        text_multiplier,
        unet_multiplier,
    })
}

/// The end of a tag starting at `s[0] == '<'`: `<(\w+):([^>]+)>`. Returns (type, args, len).
fn tag_at(s: &str) -> Option<(&str, &str, usize)> {
    let body = &s[1..];
    let kind_len = body
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    if kind_len == 0 || !body[kind_len..].starts_with(':') {
        return None;
    }
    let args_start = kind_len + 1;
    let args_len = body[args_start..].find('>')?;
    if args_len == 0 {
        return None;
    }
    let kind = &body[..kind_len];
    let args = &body[args_start..args_start + args_len];
    Some((kind, args, 1 + args_start + args_len + 1))
}

/// Removes every extra-network tag from `prompt`; returns the remaining text and the LoRAs
/// asked for, in order.
pub fn extract_tags(prompt: &str) -> Result<(String, Vec<LoraRequest>), TagError> {
    let mut text = String::with_capacity(prompt.len());
    let mut loras = Vec::new();
    let mut rest = prompt;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        rest = &rest[open..];
        match tag_at(rest) {
            Some((kind, args, len)) => {
                if kind == "lora" || kind == "lyco" {
                    loras.push(lora_from_args(args)?);
                }
                rest = &rest[len..];
            }
            None => {
                text.push('<');
                rest = &rest[1..];
            }
        }
    }
    text.push_str(rest);
    Ok((text, loras))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lora(name: &str, te: f64, unet: f64) -> LoraRequest {
        LoraRequest {
            name: name.into(),
            text_multiplier: te,
            unet_multiplier: unet,
        }
    }

    #[test]
    fn tags_are_removed_and_combined() {
        let (text, loras) =
            extract_tags("a red fox in the snow <lora:fox_style:0.6> <lora:ink_style:0.8>")
                .unwrap();
        assert_eq!(text, "a red fox in the snow  ");
        assert_eq!(
            loras,
            vec![lora("fox_style", 0.6, 0.6), lora("ink_style", 0.8, 0.8)]
        );
        let (text, loras) = extract_tags("<lora:a> x <hypernet:h:1> <lora:b:0.5:0.25>").unwrap();
        assert_eq!(text, " x  ");
        assert_eq!(loras, vec![lora("a", 1.0, 1.0), lora("b", 0.5, 0.25)]);
        let (_, loras) = extract_tags("<lora:c:te=0.3:unet=2>").unwrap();
        assert_eq!(loras, vec![lora("c", 0.3, 2.0)]);
    }

    #[test]
    fn text_that_is_not_a_tag_stays() {
        for s in ["a < b", "<lora>", "<:x>", "<lora:>", "x <lora:a", "<ä:b> c"] {
            let (text, loras) = extract_tags(s).unwrap();
            if s == "<ä:b> c" {
                assert_eq!(text, " c");
            } else {
                assert_eq!(text, s);
            }
            assert!(loras.is_empty(), "{s}");
        }
    }

    #[test]
    fn bad_multipliers_are_errors() {
        for s in ["<lora:a:x>", "<lora:a:inf>", "<lora: :1>", "<lora:a:NaN>"] {
            assert!(extract_tags(s).is_err(), "{s}");
        }
    }
}
