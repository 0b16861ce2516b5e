//! AUTOMATIC1111's "infotext": the generation parameters as text, written into every PNG's
//! `parameters` chunk and `info.infotexts`, and read back by `/png-info`:
//!
//! ```text
//! <prompt>
//! Negative prompt: <negative prompt>          (only when there is one)
//! Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 42, Size: 512x512, Model: name, ...
//! ```
//!
//! Values holding `,`, `:` or a newline are JSON-quoted, as A1111 does. Pure text.

use serde_json::{Map, Value};

/// What one image's infotext says.
#[derive(Debug, Clone)]
pub(crate) struct InfoText<'a> {
    pub(crate) prompt: &'a str,
    pub(crate) negative_prompt: &'a str,
    pub(crate) steps: usize,
    pub(crate) sampler: &'a str,
    pub(crate) schedule: &'a str,
    pub(crate) cfg_scale: f64,
    pub(crate) seed: u64,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) model: &'a str,
    /// Only for image-conditioned jobs.
    pub(crate) denoising_strength: Option<f64>,
    /// A1111's "Clip skip" (1 = last layer, not written).
    pub(crate) clip_skip: usize,
}

/// A Python-style float: `7.0`, `7.5`.
pub(crate) fn py_float(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        v.to_string()
    }
}

fn quote(v: &str) -> String {
    if v.contains([',', ':', '\n']) {
        Value::String(v.to_string()).to_string()
    } else {
        v.to_string()
    }
}

impl InfoText<'_> {
    pub(crate) fn render(&self) -> String {
        let mut params: Vec<(&str, String)> = vec![
            ("Steps", self.steps.to_string()),
            ("Sampler", self.sampler.to_string()),
            ("Schedule type", self.schedule.to_string()),
            ("CFG scale", py_float(self.cfg_scale)),
            ("Seed", self.seed.to_string()),
            ("Size", format!("{}x{}", self.width, self.height)),
            ("Model", self.model.to_string()),
        ];
        if let Some(d) = self.denoising_strength {
            params.push(("Denoising strength", py_float(d)));
        }
        if self.clip_skip > 1 {
            params.push(("Clip skip", self.clip_skip.to_string()));
        }
        params.push((
            "Version",
            format!("runai {}", crate::protocol::RUNAI_VERSION),
        ));
        let line = params
            .iter()
            .map(|(k, v)| format!("{k}: {}", quote(v)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = self.prompt.to_string();
        if !self.negative_prompt.is_empty() {
            out.push_str("\nNegative prompt: ");
            out.push_str(self.negative_prompt);
        }
        out.push('\n');
        out.push_str(&line);
        out
    }
}

/// Splits `k: v, k: "quoted, v"` into pairs.
fn parse_params(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while let Some(colon) = rest.find(": ") {
        let key = rest[..colon]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_string();
        rest = &rest[colon + 2..];
        let value = if rest.starts_with('"') {
            let mut de = serde_json::Deserializer::from_str(rest).into_iter::<String>();
            match de.next() {
                Some(Ok(s)) => {
                    rest = &rest[de.byte_offset()..];
                    s
                }
                _ => {
                    let v = rest.to_string();
                    rest = "";
                    v
                }
            }
        } else {
            let end = rest.find(", ").unwrap_or(rest.len());
            let v = rest[..end].to_string();
            rest = &rest[end..];
            v
        };
        out.push((key, value));
        rest = rest.trim_start_matches([',', ' ']);
    }
    out
}

/// Reads an infotext back: `Prompt`, `Negative prompt` and each parameter, as strings.
pub(crate) fn parse(text: &str) -> Map<String, Value> {
    let mut lines: Vec<&str> = text.lines().collect();
    let mut map = Map::new();
    let params = match lines.last() {
        Some(last) if last.starts_with("Steps: ") => {
            let p = parse_params(last);
            lines.pop();
            p
        }
        _ => Vec::new(),
    };
    let mut prompt = Vec::new();
    let mut negative: Option<Vec<&str>> = None;
    for line in lines {
        match (&mut negative, line.strip_prefix("Negative prompt: ")) {
            (None, Some(first)) => negative = Some(vec![first]),
            (Some(n), _) => n.push(line),
            (None, None) => prompt.push(line),
        }
    }
    map.insert("Prompt".into(), Value::from(prompt.join("\n")));
    map.insert(
        "Negative prompt".into(),
        Value::from(negative.map(|n| n.join("\n")).unwrap_or_default()),
    );
    for (k, v) in params {
        map.insert(k, Value::from(v));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(prompt: &'a str, neg: &'a str, model: &'a str) -> InfoText<'a> {
        InfoText {
            prompt,
            negative_prompt: neg,
            steps: 20,
            sampler: "DPM++ 2M",
            schedule: "Karras",
            cfg_scale: 7.0,
            seed: 1234,
            width: 512,
            height: 768,
            model,
            denoising_strength: None,
            clip_skip: 2,
        }
    }

    #[test]
    fn renders_a1111_layout() {
        let t = sample("a cat", "blurry", "sd15").render();
        let mut lines = t.lines();
        assert_eq!(lines.next(), Some("a cat"));
        assert_eq!(lines.next(), Some("Negative prompt: blurry"));
        let params = lines.next().unwrap();
        assert!(
            params.starts_with(
                "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, \
                 Seed: 1234, Size: 512x768, Model: sd15, Clip skip: 2, Version: runai "
            ),
            "{params}"
        );
        let no_neg = sample("a cat", "", "sd15").render();
        assert!(!no_neg.contains("Negative prompt"));
    }

    #[test]
    fn round_trips_through_parse() {
        let t = sample("line one\nline two", "bad, ugly", "dir/model: v2, final").render();
        let p = parse(&t);
        assert_eq!(p["Prompt"], "line one\nline two");
        assert_eq!(p["Negative prompt"], "bad, ugly");
        assert_eq!(p["Model"], "dir/model: v2, final");
        assert_eq!(p["Seed"], "1234");
        assert_eq!(p["Size"], "512x768");
        assert_eq!(p["CFG scale"], "7.0");
    }
}
