//! Writes JSON exactly as Python's `json.dumps` does with its defaults: separators `", "` and
//! `": "`, ASCII only (`\u` plus four hex digits, lowercase hex, surrogate pairs above U+FFFF), floats as
//! Python's `repr`, keys in insertion order. The plugin was written against that server, so
//! our replies must be byte-identical. Never used for parsing (serde_json reads any style).

use serde_json::Value;

/// Serializes `value` in Python `json.dumps` style.
pub(crate) fn to_python_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(f) = n.as_f64() {
                out.push_str(&python_float_repr(f));
            } else {
                // Arbitrary-precision numbers are not enabled; keep serde's text.
                out.push_str(&n.to_string());
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, k);
                out.push_str(": ");
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            // Python escapes everything outside printable ASCII (DEL included).
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{:04x}", unit));
                }
            }
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, positional for exponents -5 < e < 16,
/// otherwise `d.ddde+XX`; integral values keep a trailing `.0`.
pub(crate) fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "7.5e0", "-1e-5".
    let sci = format!("{:e}", f);
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.push_str(&"0".repeat(int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Expected strings are what CPython 3 `json.dumps` prints for the same values.
    #[test]
    fn separators_and_order() {
        let v = json!({"action": 4, "step": 0, "total": 20, "reqtype": "txt2img"});
        assert_eq!(
            to_python_json(&v),
            r#"{"action": 4, "step": 0, "total": 20, "reqtype": "txt2img"}"#
        );
        let v = json!({"b": [1, 2, {"x": null}], "a": true, "c": false, "d": []});
        assert_eq!(
            to_python_json(&v),
            r#"{"b": [1, 2, {"x": null}], "a": true, "c": false, "d": []}"#
        );
        assert_eq!(to_python_json(&json!({})), "{}");
    }

    #[test]
    fn non_ascii_and_controls_escaped_like_python() {
        // json.dumps("caf\u00e9 \u732b \U0001F431 \"q\" \\ \n\t\x01\x7f")
        let v = json!("café 猫 🐱 \"q\" \\ \n\t\u{1}\u{7f}\u{8}\u{c}\r");
        assert_eq!(
            to_python_json(&v),
            r#""caf\u00e9 \u732b \ud83d\udc31 \"q\" \\ \n\t\u0001\u007f\b\f\r""#
        );
        assert_eq!(to_python_json(&json!("/a/b")), r#""/a/b""#);
    }

    #[test]
    fn floats_like_python_repr() {
        let cases: &[(f64, &str)] = &[
            (7.5, "7.5"),
            (1.0, "1.0"),
            (-2.0, "-2.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.25e17, "1.25e+17"),
            (123456.789, "123456.789"),
            (1e100, "1e+100"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
        ];
        for (f, want) in cases {
            assert_eq!(python_float_repr(*f), *want, "{f}");
        }
        assert_eq!(to_python_json(&json!({"s": 0.8})), r#"{"s": 0.8}"#);
    }

    #[test]
    fn big_integers() {
        assert_eq!(to_python_json(&json!(u64::MAX)), "18446744073709551615");
        assert_eq!(to_python_json(&json!(-42)), "-42");
    }
}
