//! What a failure may tell a client: the error's own words, never a backtrace (candle appends
//! one to its errors when `RUST_BACKTRACE` is set), never a path on the server beyond the
//! model's name, and never more than a short paragraph. Pure text functions; never logs.

use std::path::Path;

use crate::registry::model::ResolvedModel;

/// Longest message a client gets; the full text is in the server log.
const MAX_CHARS: usize = 400;

/// `text` without any backtrace, its remaining lines joined with `": "`, at most
/// [`MAX_CHARS`] characters.
pub(crate) fn without_backtrace(text: &str) -> String {
    let mut kept = Vec::new();
    for line in text.lines() {
        if is_backtrace_line(line) {
            break;
        }
        let line = line.trim();
        if !line.is_empty() {
            kept.push(line);
        }
    }
    let joined = kept.join(": ");
    match joined.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &joined[..cut]),
        None => joined,
    }
}

/// `text` for a client of a job on `model`: no backtrace, the model's location shown as its
/// name, and any other absolute path cut to its last component.
pub(crate) fn for_client(text: &str, model: &ResolvedModel) -> String {
    let text = without_backtrace(text);
    let named = replace_path(&text, &model.path, &model.name);
    redact_paths(&named)
}

/// Replaces `path` (as displayed, and as `Debug` shows it inside quotes) with `name`.
fn replace_path(text: &str, path: &Path, name: &str) -> String {
    let shown = path.display().to_string();
    if shown.is_empty() {
        return text.to_string();
    }
    text.replace(&shown, name)
}

/// Every remaining absolute path (a word starting with `/`, also inside quotes) becomes its
/// file name.
fn redact_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_path_start(rest) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',' || c == ')')
            .unwrap_or(tail.len());
        let path = tail[..end].trim_end_matches(':');
        let name = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
        out.push_str(name);
        rest = &tail[path.len()..];
    }
    out.push_str(rest);
    out
}

/// Where the next absolute path starts: a `/` at the start, or after a space, quote or `(`.
fn find_path_start(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find(|&i| {
        bytes[i] == b'/'
            && (i == 0 || matches!(bytes[i - 1], b' ' | b'"' | b'\'' | b'(' | b'\t'))
            && bytes.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace())
    })
}

/// A frame of a Rust backtrace (`  12: crate::f` or `      at src/x.rs:1:2`) or its header.
fn is_backtrace_line(line: &str) -> bool {
    let t = line.trim_start();
    if t.starts_with("stack backtrace:") || (t.starts_with("at ") && t.contains(".rs:")) {
        return true;
    }
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && line.len() > t.len() && t[digits..].starts_with(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::{ModelFormat, ModelKind, ModelVersion, Prediction};
    use std::path::PathBuf;

    fn model() -> ResolvedModel {
        ResolvedModel {
            name: "v1/anything".into(),
            path: PathBuf::from("/srv/models/v1/anything"),
            version: ModelVersion::V1,
            kind: ModelKind::Txt2Img,
            format: ModelFormat::Diffusers,
            prediction: Prediction::Epsilon,
        }
    }

    #[test]
    fn a_candle_backtrace_never_reaches_the_client() {
        let inner = candle_core::Error::Msg("shape mismatch in conv2d, lhs: [2, 4, 8, 8]".into());
        let e = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        let full = format!("generation failed: tensor error: {e}");
        assert!(
            full.lines().count() > 3,
            "the test needs a real backtrace: {full}"
        );
        let shown = for_client(&full, &model());
        assert_eq!(
            shown,
            "generation failed: tensor error: shape mismatch in conv2d, lhs: [2, 4, 8, 8]"
        );
    }

    #[test]
    fn context_lines_are_kept_and_joined() {
        let e = candle_core::Error::Msg("bad dtype".into()).context("loading unet");
        assert_eq!(without_backtrace(&e.to_string()), "loading unet: bad dtype");
    }

    #[test]
    fn paths_become_the_model_name_or_a_file_name() {
        let text = "cannot read /srv/models/v1/anything/unet/config.json: denied; \
                    path: \"/etc/shadow\" (also /home/u/.cache/x.bin)";
        assert_eq!(
            for_client(text, &model()),
            "cannot read v1/anything/unet/config.json: denied; path: \"shadow\" (also x.bin)"
        );
        // Ratios and fractions are not paths.
        assert_eq!(
            for_client("scale 1/8 and a/b", &model()),
            "scale 1/8 and a/b"
        );
    }

    #[test]
    fn long_messages_are_cut() {
        let text = "x".repeat(5000);
        let shown = without_backtrace(&text);
        assert_eq!(shown.chars().count(), MAX_CHARS + 3);
        assert!(shown.ends_with("..."));
    }
}
