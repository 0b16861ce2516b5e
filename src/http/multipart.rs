//! A small `multipart/form-data` reader for `/v1/images/edits`: the body is already in
//! memory (within the size limit), so parts are slices of it. Knows fields and files by
//! their `name`; never panics on a malformed body (it is an error instead).

use super::error::ApiError;

/// One part of the form.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Part<'a> {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
    pub(crate) data: &'a [u8],
}

/// The boundary of a `multipart/form-data` content type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `name="x"` (or `filename="x"`) in a Content-Disposition header.
fn disposition_param(header: &str, key: &str) -> Option<String> {
    header.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Every part of `body`.
pub(crate) fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("malformed multipart body: {why}"));
    let delimiter = format!("--{boundary}");
    let start = find(body, delimiter.as_bytes()).ok_or_else(|| bad("no boundary"))?;
    let mut rest = &body[start + delimiter.len()..];
    let next_delimiter = format!("\r\n--{boundary}");
    let mut out = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(out);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or_else(|| bad("no line break after a boundary"))?;
        let head_end = find(rest, b"\r\n\r\n").ok_or_else(|| bad("part without headers"))?;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let data_start = head_end + 4;
        let data_len = find(&rest[data_start..], next_delimiter.as_bytes())
            .ok_or_else(|| bad("part without a closing boundary"))?;
        let disposition = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then(|| v.to_string())
            })
            .ok_or_else(|| bad("part without Content-Disposition"))?;
        let name =
            disposition_param(&disposition, "name").ok_or_else(|| bad("part without a name"))?;
        out.push(Part {
            name,
            filename: disposition_param(&disposition, "filename"),
            data: &rest[data_start..data_start + data_len],
        });
        rest = &rest[data_start + data_len + next_delimiter.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_files() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na red fox\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"in.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x00\x01\r\n--XyZ--\r\n";
        assert_eq!(
            boundary("multipart/form-data; boundary=\"XyZ\"").as_deref(),
            Some("XyZ")
        );
        assert_eq!(boundary("application/json"), None);
        let p = parts(body, "XyZ").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].data),
            ("prompt", &b"a red fox"[..])
        );
        assert_eq!(p[1].filename.as_deref(), Some("in.png"));
        assert_eq!(p[1].data, b"\x89PNG\r\n\x00\x01");
        for broken in [
            &b"--XyZ\r\nno headers"[..],
            b"nothing",
            b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--",
        ] {
            assert!(parts(broken, "XyZ").is_err());
        }
    }
}
