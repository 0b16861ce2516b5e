//! PNG text chunks, as A1111 stores its infotext: a `tEXt` chunk (Latin-1) when the text
//! fits, else an uncompressed `iTXt` chunk (UTF-8), inserted right after `IHDR` so the pixel
//! data stays byte for byte as the worker encoded it; and the reader for `/png-info`. Works
//! on encoded bytes only; never decodes pixels and never panics on a stranger's file.

const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out
}

/// `png` with a text chunk `keyword` = `text` after its header; `None` if `png` is not a PNG.
pub(crate) fn with_text(png: &[u8], keyword: &str, text: &str) -> Option<Vec<u8>> {
    // Signature (8) + IHDR chunk (4 length + 4 type + 13 data + 4 CRC).
    const AFTER_IHDR: usize = 8 + 25;
    if png.get(..8)? != SIGNATURE || png.get(12..16)? != b"IHDR" || png.len() < AFTER_IHDR {
        return None;
    }
    let latin1: Option<Vec<u8>> = text
        .chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect();
    let new_chunk = match latin1 {
        Some(bytes) => {
            let mut data = keyword.as_bytes().to_vec();
            data.push(0);
            data.extend_from_slice(&bytes);
            chunk(b"tEXt", &data)
        }
        None => {
            // keyword, NUL, compression flag 0, method 0, empty language, NUL, empty
            // translated keyword, NUL, UTF-8 text.
            let mut data = keyword.as_bytes().to_vec();
            data.extend_from_slice(&[0, 0, 0, 0, 0]);
            data.extend_from_slice(text.as_bytes());
            chunk(b"iTXt", &data)
        }
    };
    let mut out = Vec::with_capacity(png.len() + new_chunk.len());
    out.extend_from_slice(&png[..AFTER_IHDR]);
    out.extend_from_slice(&new_chunk);
    out.extend_from_slice(&png[AFTER_IHDR..]);
    Some(out)
}

/// Every uncompressed text chunk of a PNG as (keyword, text), in file order. Stops at the
/// first malformed chunk; `None` when `png` is not a PNG at all.
pub(crate) fn texts(png: &[u8]) -> Option<Vec<(String, String)>> {
    if png.get(..8)? != SIGNATURE {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 8usize;
    while let Some(len) = png.get(at..at + 4) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(kind) = png.get(at + 4..at + 8) else {
            break;
        };
        let Some(data) = at.checked_add(8 + len).and_then(|end| png.get(at + 8..end)) else {
            break;
        };
        match kind {
            b"tEXt" => {
                if let Some(nul) = data.iter().position(|b| *b == 0) {
                    let key = data[..nul].iter().map(|b| char::from(*b)).collect();
                    let text = data[nul + 1..].iter().map(|b| char::from(*b)).collect();
                    out.push((key, text));
                }
            }
            b"iTXt" => {
                if let Some(t) = read_itxt(data) {
                    out.push(t);
                }
            }
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    Some(out)
}

fn read_itxt(data: &[u8]) -> Option<(String, String)> {
    let nul = data.iter().position(|b| *b == 0)?;
    let key = String::from_utf8_lossy(&data[..nul]).to_string();
    let rest = data.get(nul + 1..)?;
    // Compressed iTXt is not written by runai or A1111; skip it.
    if *rest.first()? != 0 {
        return None;
    }
    let rest = rest.get(2..)?;
    let lang_end = rest.iter().position(|b| *b == 0)?;
    let rest = rest.get(lang_end + 1..)?;
    let tkey_end = rest.iter().position(|b| *b == 0)?;
    let text = rest.get(tkey_end + 1..)?;
    Some((key, String::from_utf8_lossy(text).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_png() -> Vec<u8> {
        let img = image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png
    }

    #[test]
    fn latin1_and_unicode_texts_round_trip_and_keep_pixels() {
        let png = tiny_png();
        for text in ["a cat\nSteps: 3", "ein Bär, 猫\nSteps: 3"] {
            let tagged = with_text(&png, "parameters", text).unwrap();
            assert_eq!(
                texts(&tagged).unwrap(),
                [("parameters".to_string(), text.to_string())]
            );
            let decoded = image::load_from_memory(&tagged).unwrap().to_rgb8();
            assert_eq!(
                decoded.as_raw(),
                image::load_from_memory(&png).unwrap().to_rgb8().as_raw()
            );
        }
    }

    #[test]
    fn strangers_bytes_never_panic() {
        assert!(with_text(b"not a png", "k", "v").is_none());
        assert!(texts(b"GIF89a").is_none());
        let mut png = tiny_png();
        png.truncate(40);
        assert!(texts(&png).is_some());
        let mut huge_len = tiny_png();
        huge_len[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(texts(&huge_len).unwrap(), Vec::<(String, String)>::new());
    }
}
