//! AUTOMATIC1111's attention syntax: a prompt becomes a list of (text, weight) pieces.
//! `(x)` multiplies by 1.1, `[x]` divides by 1.1, `(x:1.35)` multiplies by 1.35, `\(` `\)`
//! `\[` `\]` `\\` are literal characters, and `BREAK` (a whole word) closes the current
//! 75-token chunk. Unbalanced brackets are tolerated as A1111 tolerates them: an unclosed `(`
//! or `[` still weights everything after it, a stray `)` or `]` is plain text. Adjacent pieces
//! of equal weight are merged. Pure text processing; no tokenizer.

/// The factor of one pair of round brackets.
const ROUND: f64 = 1.1;
/// The factor of one pair of square brackets.
const SQUARE: f64 = 1.0 / 1.1;
/// The weight A1111 gives a `BREAK` piece (never a real weight).
pub const BREAK_WEIGHT: f64 = -1.0;

/// One piece of a parsed prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub text: String,
    pub weight: f64,
}

impl Piece {
    fn new(text: impl Into<String>, weight: f64) -> Piece {
        Piece {
            text: text.into(),
            weight,
        }
    }

    /// Whether this piece is a chunk break (A1111 marks it as ("BREAK", -1)).
    pub fn is_break(&self) -> bool {
        self.text == "BREAK" && self.weight == BREAK_WEIGHT
    }
}

/// One lexical token of the attention syntax.
#[derive(Debug)]
enum Lex<'a> {
    /// `\x`: the character(s) after the backslash, literally (empty for a lone `\`).
    Escaped(&'a str),
    Open,
    OpenSquare,
    /// `:1.35)`: the number as written and the whole match.
    Weight {
        number: &'a str,
        all: &'a str,
    },
    Close,
    CloseSquare,
    /// A run of ordinary characters, or a lone `:`.
    Text(&'a str),
}

/// Splits `text` the way A1111's `re_attention` does (first matching alternative wins).
fn lex(text: &str) -> Vec<Lex<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let (lexeme, len) = match c {
            '\\' => {
                let next = rest[1..].chars().next();
                match next {
                    Some(n @ ('(' | ')' | '[' | ']' | '\\')) => {
                        (Lex::Escaped(&rest[1..2]), 1 + n.len_utf8())
                    }
                    _ => (Lex::Escaped(""), 1),
                }
            }
            '(' => (Lex::Open, 1),
            '[' => (Lex::OpenSquare, 1),
            ':' => match weight_at(rest) {
                Some((number, len)) => (
                    Lex::Weight {
                        number,
                        all: &rest[..len],
                    },
                    len,
                ),
                None => (Lex::Text(&rest[..1]), 1),
            },
            ')' => (Lex::Close, 1),
            ']' => (Lex::CloseSquare, 1),
            _ => {
                let end = rest
                    .find(['\\', '(', ')', '[', ']', ':'])
                    .unwrap_or(rest.len());
                (Lex::Text(&rest[..end]), end)
            }
        };
        out.push(lexeme);
        rest = &rest[len..];
    }
    out
}

/// `:\s*([+-]?[.\d]+)\s*\)` at the start of `s`: the number and the match length.
fn weight_at(s: &str) -> Option<(&str, usize)> {
    let skip_ws = |from: usize| {
        s[from..]
            .char_indices()
            .find(|(_, c)| !c.is_whitespace())
            .map_or(s.len(), |(i, _)| from + i)
    };
    let start = skip_ws(1);
    let mut end = start;
    if s[end..].starts_with(['+', '-']) {
        end += 1;
    }
    let digits_from = end;
    end += s[end..]
        .find(|c: char| !(c == '.' || c.is_ascii_digit()))
        .unwrap_or(s.len() - end);
    if end == digits_from {
        return None;
    }
    let close = skip_ws(end);
    s[close..]
        .starts_with(')')
        .then(|| (&s[start..end], close + 1))
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `re.split(r"\s*\bBREAK\b\s*", text)`: the parts around each whole-word `BREAK`, with the
/// whitespace next to it removed.
fn split_breaks(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut part_start = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("BREAK") {
        let at = search + found;
        let end = at + "BREAK".len();
        let before_ok = !text[..at].chars().next_back().is_some_and(is_word_char);
        let after_ok = !text[end..].chars().next().is_some_and(is_word_char);
        if before_ok && after_ok {
            let left = text[part_start..at].trim_end_matches(char::is_whitespace);
            // The whitespace before BREAK belongs to the separator only as far back as the
            // current part starts.
            parts.push(left);
            let right = &text[end..];
            let trimmed = right.trim_start_matches(char::is_whitespace);
            part_start = end + (right.len() - trimmed.len());
            search = part_start;
        } else {
            search = at + 1;
        }
    }
    parts.push(&text[part_start..]);
    parts
}

/// Parses `text` into weighted pieces exactly as A1111's `parse_prompt_attention`, except
/// that a weight that is not a number (`(x:1.2.3)`) is kept as text instead of failing the
/// request.
pub fn parse_prompt_attention(text: &str) -> Vec<Piece> {
    let mut res: Vec<Piece> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<Piece>, from: usize, by: f64| {
        for p in &mut res[from..] {
            p.weight *= by;
        }
    };
    for lexeme in lex(text) {
        match lexeme {
            Lex::Escaped(s) => res.push(Piece::new(s, 1.0)),
            Lex::Open => round.push(res.len()),
            Lex::OpenSquare => square.push(res.len()),
            Lex::Weight { number, all } if !round.is_empty() => match number.parse::<f64>() {
                Ok(w) => {
                    if let Some(from) = round.pop() {
                        multiply(&mut res, from, w);
                    }
                }
                Err(_) => push_text(&mut res, all),
            },
            Lex::Close if !round.is_empty() => {
                if let Some(from) = round.pop() {
                    multiply(&mut res, from, ROUND);
                }
            }
            Lex::CloseSquare if !square.is_empty() => {
                if let Some(from) = square.pop() {
                    multiply(&mut res, from, SQUARE);
                }
            }
            Lex::Weight { .. } | Lex::Close | Lex::CloseSquare | Lex::Text(_) => {
                push_text(&mut res, lexeme_text(&lexeme))
            }
        }
    }
    for from in round {
        multiply(&mut res, from, ROUND);
    }
    for from in square {
        multiply(&mut res, from, SQUARE);
    }
    if res.is_empty() {
        res.push(Piece::new("", 1.0));
    }
    let mut merged: Vec<Piece> = Vec::with_capacity(res.len());
    for piece in res {
        match merged.last_mut() {
            Some(last) if last.weight == piece.weight => last.text.push_str(&piece.text),
            _ => merged.push(piece),
        }
    }
    merged
}

/// The matched text of a lexeme that falls through to A1111's plain-text branch.
fn lexeme_text<'a>(lexeme: &Lex<'a>) -> &'a str {
    match lexeme {
        Lex::Close => ")",
        Lex::CloseSquare => "]",
        Lex::Text(s) | Lex::Escaped(s) => s,
        Lex::Weight { all, .. } => all,
        Lex::Open => "(",
        Lex::OpenSquare => "[",
    }
}

fn push_text(res: &mut Vec<Piece>, text: &str) {
    for (i, part) in split_breaks(text).into_iter().enumerate() {
        if i > 0 {
            res.push(Piece::new("BREAK", BREAK_WEIGHT));
        }
        res.push(Piece::new(part, 1.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(String, f64)> {
        parse_prompt_attention(text)
            .into_iter()
            .map(|p| (p.text, p.weight))
            .collect()
    }

    fn close(a: &[(String, f64)], b: &[(&str, f64)]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|((t, w), (u, v))| t == u && (w - v).abs() < 1e-12)
    }

    /// The examples of A1111's own docstring.
    #[test]
    fn a1111_docstring_examples() {
        let cases: &[(&str, &[(&str, f64)])] = &[
            ("normal text", &[("normal text", 1.0)]),
            (
                "an (important) word",
                &[("an ", 1.0), ("important", 1.1), (" word", 1.0)],
            ),
            ("(unbalanced", &[("unbalanced", 1.1)]),
            ("\\(literal\\]", &[("(literal]", 1.0)]),
            ("(unnecessary)(parens)", &[("unnecessaryparens", 1.1)]),
            (
                "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
                &[
                    ("a ", 1.0),
                    ("house", 1.5730000000000004),
                    (" ", 1.1),
                    ("on", 1.0),
                    (" a ", 1.1),
                    ("hill", 0.55),
                    (", sun, ", 1.1),
                    ("sky", 1.4641000000000006),
                    (".", 1.1),
                ],
            ),
        ];
        for (text, want) in cases {
            let got = parsed(text);
            assert!(close(&got, want), "{text}: {got:?}");
        }
    }

    #[test]
    fn breaks_split_whole_words_only() {
        assert!(close(
            &parsed("a castle  BREAK\ta dragon"),
            &[("a castle", 1.0), ("BREAK", -1.0), ("a dragon", 1.0)]
        ));
        assert!(close(&parsed("BREAKFAST x"), &[("BREAKFAST x", 1.0)]));
        assert!(close(
            &parsed("BREAK"),
            &[("", 1.0), ("BREAK", -1.0), ("", 1.0)]
        ));
    }

    #[test]
    fn stray_brackets_and_bad_weights_are_text() {
        assert!(close(&parsed("a) b] c"), &[("a) b] c", 1.0)]));
        assert!(close(&parsed("x:1.2) y"), &[("x:1.2) y", 1.0)]));
        assert!(close(&parsed("(x:1..2)"), &[("x:1..2)", 1.1)]));
        assert!(close(&parsed("a \\ b"), &[("a  b", 1.0)]));
        assert!(close(&parsed(""), &[("", 1.0)]));
        assert!(close(&parsed("(("), &[("", 1.0)]));
    }
}
