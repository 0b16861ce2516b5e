//! The zip side of a PyTorch checkpoint (`<name>/data.pkl`, `<name>/data/<key>`, as
//! `torch.save` writes it): checks the archive's declared size before the zip reader indexes
//! it, finds the one `data.pkl`, and hands out the byte span of stored (uncompressed) entries
//! after checking it against the file's length. Compressed, encrypted or big-endian archives
//! are refused. Reads only.

use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::Path;

use zip::{CompressionMethod, ZipArchive};

use super::limits::{MAX_CENTRAL_DIRECTORY_BYTES, MAX_PICKLE_BYTES, MAX_ZIP_ENTRIES};
use super::PickleError;

/// Where one stored entry's bytes are in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: u64,
    pub len: u64,
}

pub(crate) struct Archive {
    file: File,
    file_len: u64,
    zip: ZipArchive<BufReader<File>>,
    prefix: String,
}

const CORRUPT: PickleError = PickleError::Archive("the zip archive is corrupt or truncated");

fn io(e: std::io::Error) -> PickleError {
    PickleError::Io(e.kind())
}

fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>, PickleError> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).map_err(|_| CORRUPT)?;
    Ok(buf)
}

/// Whether `len` bytes from `start` lie within `total`.
pub(crate) fn fits(start: u64, len: u64, total: u64) -> bool {
    start.checked_add(len).is_some_and(|end| end <= total)
}

fn le(bytes: &[u8], at: usize, n: usize) -> u64 {
    bytes[at..at + n]
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Entry count and central directory size from the end-of-central-directory record (zip64
/// included), checked against the limits before the zip reader allocates anything for them.
fn check_directory(file: &File, file_len: u64) -> Result<(), PickleError> {
    const EOCD_LEN: u64 = 22;
    let tail_len = file_len.min(EOCD_LEN + u64::from(u16::MAX));
    let tail = read_at(file, file_len - tail_len, tail_len as usize)?;
    let at = (0..tail.len().saturating_sub(EOCD_LEN as usize - 1))
        .rev()
        .find(|&i| tail[i..i + 4] == *b"PK\x05\x06")
        .ok_or(CORRUPT)?;
    let (mut entries, mut size) = (le(&tail, at + 10, 2), le(&tail, at + 12, 4));
    if entries == 0xffff || size == 0xffff_ffff {
        let eocd = file_len - tail_len + at as u64;
        let locator = read_at(file, eocd.checked_sub(20).ok_or(CORRUPT)?, 20)?;
        if locator[..4] != *b"PK\x06\x07" {
            return Err(CORRUPT);
        }
        let offset = le(&locator, 8, 8);
        if !fits(offset, 56, file_len) {
            return Err(CORRUPT);
        }
        let record = read_at(file, offset, 56)?;
        if record[..4] != *b"PK\x06\x06" {
            return Err(CORRUPT);
        }
        (entries, size) = (le(&record, 32, 8), le(&record, 40, 8));
    }
    if entries > MAX_ZIP_ENTRIES {
        return Err(PickleError::Limit {
            what: "entries in the zip archive",
            limit: MAX_ZIP_ENTRIES as usize,
        });
    }
    if size > MAX_CENTRAL_DIRECTORY_BYTES {
        return Err(PickleError::Limit {
            what: "bytes of zip central directory",
            limit: MAX_CENTRAL_DIRECTORY_BYTES as usize,
        });
    }
    Ok(())
}

/// The folder of the archive's one `<folder>/data.pkl`.
fn pickle_prefix(zip: &ZipArchive<BufReader<File>>) -> Result<String, PickleError> {
    let mut pickles = zip.file_names_raw().filter_map(|name| {
        let prefix = name.strip_suffix(b"/data.pkl")?;
        (!prefix.contains(&b'/')).then_some(prefix)
    });
    match (pickles.next(), pickles.next()) {
        (Some(p), None) => std::str::from_utf8(p)
            .map(str::to_string)
            .map_err(|_| PickleError::Archive("the archive's folder name is not UTF-8")),
        (None, _) => Err(PickleError::Archive(
            "a zip archive without data.pkl (not a PyTorch checkpoint)",
        )),
        (Some(_), Some(_)) => Err(PickleError::Archive("a zip archive with several data.pkl")),
    }
}

impl Archive {
    /// Opens a zip-format checkpoint; a legacy (non-zip) pickle gets its own error.
    pub(crate) fn open(path: &Path) -> Result<Self, PickleError> {
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut magic = [0u8; 4];
        let n = file.read_at(&mut magic, 0).map_err(io)?;
        if n < 4 || magic != *b"PK\x03\x04" {
            // torch.save(..., _use_new_zipfile_serialization=False) starts with PROTO (0x80).
            return Err(if n >= 1 && magic[0] == 0x80 {
                PickleError::Legacy
            } else {
                PickleError::Archive("neither a zip archive nor a pickle")
            });
        }
        check_directory(&file, file_len)?;
        let reader = BufReader::new(file.try_clone().map_err(io)?);
        let zip = ZipArchive::new(reader).map_err(|_| CORRUPT)?;
        let prefix = pickle_prefix(&zip)?;
        let mut archive = Archive {
            file,
            file_len,
            zip,
            prefix,
        };
        archive.check_byte_order()?;
        Ok(archive)
    }

    fn check_byte_order(&mut self) -> Result<(), PickleError> {
        if self.zip.index_for_name(&self.name("byteorder")).is_none() {
            return Ok(()); // older torch versions wrote no byteorder entry: little-endian
        }
        let span = self.entry("byteorder")?;
        if span.len > 16 || read_at(&self.file, span.start, span.len as usize)? != b"little" {
            return Err(PickleError::Archive(
                "the checkpoint is not little-endian (not supported)",
            ));
        }
        Ok(())
    }

    fn name(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix)
    }

    /// The span of the stored entry `<prefix>/<rel>`.
    pub(crate) fn entry(&mut self, rel: &str) -> Result<Span, PickleError> {
        let index = self
            .zip
            .index_for_name(&self.name(rel))
            .ok_or(PickleError::Archive(
                "an entry the pickle refers to is missing from the zip archive",
            ))?;
        let entry = self.zip.by_index_raw(index).map_err(|_| CORRUPT)?;
        if entry.compression() != CompressionMethod::Stored || entry.encrypted() {
            return Err(PickleError::Archive(
                "compressed or encrypted zip entries are not supported (torch.save stores them \
                 uncompressed)",
            ));
        }
        let len = entry.size();
        if entry.compressed_size() != len {
            return Err(CORRUPT);
        }
        let start = entry.data_start().ok_or(CORRUPT)?;
        if !fits(start, len, self.file_len) {
            return Err(CORRUPT);
        }
        Ok(Span { start, len })
    }

    /// The whole `data.pkl`, at most [`MAX_PICKLE_BYTES`].
    pub(crate) fn read_pickle(&mut self) -> Result<Vec<u8>, PickleError> {
        let span = self.entry("data.pkl")?;
        if span.len > MAX_PICKLE_BYTES {
            return Err(PickleError::Limit {
                what: "bytes of data.pkl",
                limit: MAX_PICKLE_BYTES as usize,
            });
        }
        read_at(&self.file, span.start, span.len as usize)
    }

    /// The file, for reading tensor data later.
    pub(crate) fn into_file(self) -> File {
        self.file
    }
}
