//! Lenient option readers: numbers may be JSON numbers or numeric strings, booleans may be
//! `true` or `"true"`, `null` and missing keys mean "use the default". Errors name the field
//! and quote (a bounded prefix of) the value; never echoes a whole large value.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) message: String,
}

fn field_error(field: &str, expected: &str, got: &Value) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: format!("expected {expected}, got {}", short(got)),
    }
}

/// A short, log-safe rendering of a client value for error messages.
pub(crate) fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
        other => other.to_string(),
    };
    if text.chars().count() > 40 {
        let head: String = text.chars().take(40).collect();
        format!("{head}...")
    } else {
        text
    }
}

fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

/// A string option; numbers are accepted and rendered (a prompt of `5` is "5").
pub(crate) fn get_str(map: &Map<String, Value>, key: &str) -> Result<Option<String>, FieldError> {
    match present(map, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(field_error(key, "a string", other)),
    }
}

/// An integer option. Integral floats (`20.0`, `"20.0"`) are accepted; `""` means missing.
pub(crate) fn get_i64(map: &Map<String, Value>, key: &str) -> Result<Option<i64>, FieldError> {
    let Some(v) = present(map, key) else {
        return Ok(None);
    };
    let parsed = match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| is_integral(*f)).map(|f| f as i64)),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => {
            let t = s.trim();
            t.parse::<i64>().ok().or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| is_integral(*f))
                    .map(|f| f as i64)
            })
        }
        _ => None,
    };
    parsed
        .map(Some)
        .ok_or_else(|| field_error(key, "an integer", v))
}

fn is_integral(f: f64) -> bool {
    f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e18
}

/// A float option; `""` means missing. Non-finite values are returned for the validator
/// to refuse with its limit in the message.
pub(crate) fn get_f64(map: &Map<String, Value>, key: &str) -> Result<Option<f64>, FieldError> {
    let Some(v) = present(map, key) else {
        return Ok(None);
    };
    let parsed = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    parsed
        .map(Some)
        .ok_or_else(|| field_error(key, "a number", v))
}

/// A boolean option: `true`/`false`, `"true"`/`"false"` (any case), `1`/`0`.
pub(crate) fn get_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, FieldError> {
    let Some(v) = present(map, key) else {
        return Ok(None);
    };
    let parsed = match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            "" => return Ok(None),
            _ => None,
        },
        _ => None,
    };
    parsed
        .map(Some)
        .ok_or_else(|| field_error(key, "a boolean", v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn numbers_or_numeric_strings() {
        let m =
            map(json!({"a": 20, "b": "20", "c": " 7 ", "d": 20.0, "e": "x", "f": null, "g": ""}));
        assert_eq!(get_i64(&m, "a").unwrap(), Some(20));
        assert_eq!(get_i64(&m, "b").unwrap(), Some(20));
        assert_eq!(get_i64(&m, "c").unwrap(), Some(7));
        assert_eq!(get_i64(&m, "d").unwrap(), Some(20));
        assert!(get_i64(&m, "e").unwrap_err().message.contains("\"x\""));
        assert_eq!(get_i64(&m, "f").unwrap(), None);
        assert_eq!(get_i64(&m, "g").unwrap(), None);
        assert_eq!(get_i64(&m, "missing").unwrap(), None);
        let m = map(json!({"s": "7.5", "t": 0.8, "u": [1]}));
        assert_eq!(get_f64(&m, "s").unwrap(), Some(7.5));
        assert_eq!(get_f64(&m, "t").unwrap(), Some(0.8));
        assert_eq!(get_f64(&m, "u").unwrap_err().field, "u");
        assert!(get_i64(&m, "s").is_err());
    }

    #[test]
    fn booleans_or_strings() {
        let m = map(json!({"a": true, "b": "false", "c": "TRUE", "d": 0, "e": "maybe"}));
        assert_eq!(get_bool(&m, "a").unwrap(), Some(true));
        assert_eq!(get_bool(&m, "b").unwrap(), Some(false));
        assert_eq!(get_bool(&m, "c").unwrap(), Some(true));
        assert_eq!(get_bool(&m, "d").unwrap(), Some(false));
        assert!(get_bool(&m, "e").is_err());
    }

    #[test]
    fn long_values_are_shortened() {
        let long = "a".repeat(1000);
        let m = map(json!({ "x": long }));
        let err = get_i64(&m, "x").unwrap_err();
        assert!(err.message.len() < 100);
    }
}
