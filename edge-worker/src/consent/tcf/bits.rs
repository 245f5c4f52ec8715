//! Reading a TC string segment: web-safe base64 without padding, read as a
//! stream of big-endian bit fields.

use super::TcfError;

/// The bits of one decoded segment, read front to back.
pub(super) struct BitReader {
    bits: Vec<u8>,
    len: usize,
    pos: usize,
}

/// The value of one web-safe base64 character, if it is one.
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

impl BitReader {
    /// Decodes one segment's characters. Padding (`=`) and any character
    /// outside the web-safe alphabet are refused.
    pub(super) fn new(segment: &str) -> Result<BitReader, TcfError> {
        let mut bits = Vec::with_capacity(segment.len() * 6 / 8 + 1);
        let (mut acc, mut held) = (0u32, 0u32);
        for &c in segment.as_bytes() {
            let v = sextet(c).ok_or(TcfError::NotBase64)?;
            acc = (acc << 6) | u32::from(v);
            held += 6;
            if held >= 8 {
                held -= 8;
                bits.push((acc >> held) as u8);
                acc &= (1 << held) - 1;
            }
        }
        let len = bits.len() * 8 + held as usize;
        if held > 0 {
            bits.push((acc << (8 - held)) as u8);
        }
        Ok(BitReader { bits, len, pos: 0 })
    }

    /// How many bits are left.
    pub(super) fn remaining(&self) -> usize {
        self.len - self.pos
    }

    /// The next `width` bits (at most 64) as an unsigned integer.
    pub(super) fn uint(&mut self, width: usize) -> Result<u64, TcfError> {
        debug_assert!(width <= 64);
        if self.remaining() < width {
            return Err(TcfError::Truncated);
        }
        let mut value = 0u64;
        for _ in 0..width {
            let byte = self.bits[self.pos / 8];
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            value = (value << 1) | u64::from(bit);
            self.pos += 1;
        }
        Ok(value)
    }

    /// The next bit as a boolean.
    pub(super) fn flag(&mut self) -> Result<bool, TcfError> {
        Ok(self.uint(1)? == 1)
    }

    /// The next `width` bits (at most 16) as an unsigned 16-bit integer.
    pub(super) fn u16(&mut self, width: usize) -> Result<u16, TcfError> {
        Ok(self.uint(width.min(16))? as u16)
    }

    /// Two 6-bit letters (`A` = 0), as in the language and country codes.
    pub(super) fn letters(&mut self) -> Result<[u8; 2], TcfError> {
        let a = self.uint(6)? as u8;
        let b = self.uint(6)? as u8;
        if a > 25 || b > 25 {
            return Err(TcfError::BadLetter);
        }
        Ok([b'A' + a, b'A' + b])
    }
}
