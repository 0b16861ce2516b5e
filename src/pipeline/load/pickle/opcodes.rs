//! Pickle opcodes the reader knows (protocols 2 to 5 as `torch.save` writes them) and a cursor
//! that decodes their arguments with bounds checks. Every length read from the stream is
//! checked against the bytes that remain and [`MAX_STRING_BYTES`] before anything is sliced.

use std::ops::Range;

use super::limits::{MAX_GLOBAL_LINE, MAX_STRING_BYTES};
use super::PickleError;

pub(crate) const PROTO: u8 = 0x80;
pub(crate) const FRAME: u8 = 0x95;
pub(crate) const STOP: u8 = b'.';
pub(crate) const MARK: u8 = b'(';
pub(crate) const POP: u8 = b'0';
pub(crate) const POP_MARK: u8 = b'1';
pub(crate) const DUP: u8 = b'2';
pub(crate) const NONE: u8 = b'N';
pub(crate) const NEWTRUE: u8 = 0x88;
pub(crate) const NEWFALSE: u8 = 0x89;
pub(crate) const BININT: u8 = b'J';
pub(crate) const BININT1: u8 = b'K';
pub(crate) const BININT2: u8 = b'M';
pub(crate) const LONG1: u8 = 0x8a;
pub(crate) const BINFLOAT: u8 = b'G';
pub(crate) const SHORT_BINUNICODE: u8 = 0x8c;
pub(crate) const BINUNICODE: u8 = b'X';
pub(crate) const BINUNICODE8: u8 = 0x8d;
pub(crate) const SHORT_BINBYTES: u8 = b'C';
pub(crate) const BINBYTES: u8 = b'B';
pub(crate) const BINBYTES8: u8 = 0x8e;
pub(crate) const EMPTY_TUPLE: u8 = b')';
pub(crate) const TUPLE: u8 = b't';
pub(crate) const TUPLE1: u8 = 0x85;
pub(crate) const TUPLE2: u8 = 0x86;
pub(crate) const TUPLE3: u8 = 0x87;
pub(crate) const EMPTY_LIST: u8 = b']';
pub(crate) const LIST: u8 = b'l';
pub(crate) const APPEND: u8 = b'a';
pub(crate) const APPENDS: u8 = b'e';
pub(crate) const EMPTY_DICT: u8 = b'}';
pub(crate) const DICT: u8 = b'd';
pub(crate) const SETITEM: u8 = b's';
pub(crate) const SETITEMS: u8 = b'u';
pub(crate) const BINPUT: u8 = b'q';
pub(crate) const LONG_BINPUT: u8 = b'r';
pub(crate) const MEMOIZE: u8 = 0x94;
pub(crate) const BINGET: u8 = b'h';
pub(crate) const LONG_BINGET: u8 = b'j';
pub(crate) const GLOBAL: u8 = b'c';
pub(crate) const STACK_GLOBAL: u8 = 0x93;
pub(crate) const REDUCE: u8 = b'R';
pub(crate) const BINPERSID: u8 = b'Q';
pub(crate) const BUILD: u8 = b'b';

/// Reads opcode arguments from `data.pkl`; positions are reported in errors, bytes never.
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn data(&self) -> &'a [u8] {
        self.data
    }

    pub(crate) fn error(&self, reason: &'static str) -> PickleError {
        PickleError::Malformed {
            reason,
            pos: self.pos,
        }
    }

    fn truncated(&self) -> PickleError {
        self.error("ends in the middle of an opcode")
    }

    /// The next `n` bytes as a range of the stream.
    pub(crate) fn take(&mut self, n: usize) -> Result<Range<usize>, PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| self.truncated())?;
        let range = self.pos..end;
        self.pos = end;
        Ok(range)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let r = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.data[r]);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, PickleError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, PickleError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length-prefixed string or bytes value whose length was just read.
    pub(crate) fn counted(&mut self, len: u64) -> Result<Range<usize>, PickleError> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_STRING_BYTES)
            .ok_or(PickleError::Limit {
                what: "bytes in one string",
                limit: MAX_STRING_BYTES,
            })?;
        self.take(len)
    }

    /// A little-endian two's-complement integer of `n` bytes (`LONG1`), if it fits an i64.
    pub(crate) fn long(&mut self, n: usize) -> Result<i64, PickleError> {
        if n > 8 {
            return Err(self.error("integer wider than 64 bits"));
        }
        let r = self.take(n)?;
        let bytes = &self.data[r];
        let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
        let mut buf = [if negative { 0xff } else { 0 }; 8];
        buf[..n].copy_from_slice(bytes);
        Ok(i64::from_le_bytes(buf))
    }

    /// One newline-terminated line (`GLOBAL`'s module and name), without the newline.
    pub(crate) fn line(&mut self) -> Result<Range<usize>, PickleError> {
        let rest = &self.data[self.pos..];
        let len = rest
            .iter()
            .take(MAX_GLOBAL_LINE + 1)
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.error("GLOBAL line missing or too long"))?;
        let range = self.take(len)?;
        self.pos += 1;
        Ok(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_beyond_the_stream_are_truncation_errors() {
        let mut c = Cursor::new(&[1, 2, 3]);
        assert!(c.counted(4).is_err());
        assert!(c.counted(u64::MAX).is_err());
        assert_eq!(c.counted(3).unwrap(), 0..3);
        assert!(c.u8().is_err());
    }

    #[test]
    fn long1_sign_extends() {
        assert_eq!(Cursor::new(&[0xff]).long(1).unwrap(), -1);
        assert_eq!(Cursor::new(&[0x00, 0x01]).long(2).unwrap(), 256);
        assert_eq!(Cursor::new(&[]).long(0).unwrap(), 0);
        assert!(Cursor::new(&[0; 9]).long(9).is_err());
    }

    #[test]
    fn global_lines_are_bounded() {
        let mut c = Cursor::new(b"torch\nFloatStorage\n");
        assert_eq!(c.line().unwrap(), 0..5);
        assert_eq!(c.line().unwrap(), 6..18);
        let long = vec![b'a'; MAX_GLOBAL_LINE + 10];
        assert!(Cursor::new(&long).line().is_err());
    }
}
