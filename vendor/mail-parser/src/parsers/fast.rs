/*
 * Added for mailplug (not part of mail-parser 0.11.9): fast paths for the MIME body decoders
 * and for turning decoded text into strings. Each body fast path handles only input on which the
 * byte-at-a-time loop it sits in would do nothing but copy or decode, and leaves everything else
 * (boundaries, padding, whitespace, broken input) to that loop; the text helpers give exactly
 * the strings upstream's conversions give. So results are the same as upstream's;
 * `tests/parse_compare.rs` in mailplug's plugin crate checks that against the published crate.
 *
 * SPDX-License-Identifier: Apache-2.0 OR MIT
 */

use std::borrow::Cow;

use super::MessageStream;
use crate::decoders::quoted_printable::HEX_MAP;

impl<'x> MessageStream<'x> {
    /// The bytes not read yet.
    #[inline(always)]
    pub(crate) fn rest(&self) -> &'x [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    /// At the start of a line with no partial base64 group pending: decodes the whole line if it
    /// is nothing but base64 (a multiple of 4 characters, padding only at its end) followed by
    /// LF or CRLF, appends the bytes to `buf` and moves past the LF. Returns the last byte before
    /// the LF and the offset where that line's text ends (as the byte loop would have recorded
    /// them), or None, having changed nothing, for any other line.
    #[inline(always)]
    pub(crate) fn base64_line(&mut self, buf: &mut Vec<u8>) -> Option<(u8, usize)> {
        let rest = self.rest();
        let lf = memchr::memchr(b'\n', rest)?;
        let line = rest.get(..lf)?;
        let text = line.strip_suffix(b"\r").unwrap_or(line);
        if text.is_empty() || text.len() % 4 != 0 {
            return None;
        }
        base64_simd::STANDARD.decode_append(text, buf).ok()?;
        let before_lf = *line.last()?;
        let start = self.pos;
        self.skip_bytes(lf + 1);
        Some((before_lf, start + text.len()))
    }

    /// Quoted-printable outside an escape: copies literal bytes and decodes `=XX` escapes up to
    /// the next CR, LF, `-` (which may start a boundary), or `=` that is not followed by two hex
    /// digits. Given the loop's last two bytes, returns the updated trailing-whitespace count and
    /// last two bytes (as the byte loop would have tracked them), or None when nothing was consumed.
    #[inline(always)]
    pub(crate) fn qp_run(&mut self, buf: &mut Vec<u8>, mut ws_count: usize, last_two: (u8, u8)) -> Option<(usize, u8, u8)> {
        let rest = self.rest();
        let mut i = 0;
        let (mut before_last, mut last) = last_two;
        loop {
            let start = i;
            i = qp_literal_end(rest, i);
            if i > start {
                let bytes = &rest[start..i];
                buf.extend_from_slice(bytes);
                let trailing = bytes.iter().rev().take_while(|b| b.is_ascii_whitespace()).count();
                ws_count = if trailing == bytes.len() { ws_count + trailing } else { trailing };
                (before_last, last) = if bytes.len() > 1 { (bytes[bytes.len() - 2], bytes[bytes.len() - 1]) } else { (last, bytes[0]) };
            }
            match rest.get(i..i + 3) {
                Some(&[b'=', h1, h2]) => {
                    let (h1v, h2v) = (HEX_MAP[h1 as usize], HEX_MAP[h2 as usize]);
                    if h1v < 0 || h2v < 0 {
                        break;
                    }
                    buf.push(((h1v as u8) << 4) | h2v as u8);
                    ws_count = 0;
                    (before_last, last) = (h1, h2);
                    i += 3;
                }
                _ => break,
            }
        }
        if i == 0 {
            return None;
        }
        self.skip_bytes(i);
        Some((ws_count, before_last, last))
    }

    /// How many bytes from here a raw part scan can skip: up to the next LF or `-`.
    #[inline(always)]
    pub(crate) fn raw_run(&self) -> usize {
        let rest = self.rest();
        memchr::memchr2(b'\n', b'-', rest).unwrap_or(rest.len())
    }
}

/// Bytes that end a quoted-printable literal run.
static QP_STOP: [bool; 256] = {
    let mut t = [false; 256];
    t[b'=' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'-' as usize] = true;
    t
};

/// Where the quoted-printable literal run starting at `from` ends: the first byte at or after
/// `from` that is in `QP_STOP`, or the end. Eight bytes are looked at in one step (runs between
/// `=XX` escapes are often short, so a vector search's set-up would not pay).
#[inline(always)]
fn qp_literal_end(rest: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(chunk) = rest.get(i..i + 8) {
        let stops = qp_stops(u64::from_le_bytes(chunk.try_into().unwrap_or([b'='; 8])));
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = rest.get(i) {
        if QP_STOP[b as usize] {
            break;
        }
        i += 1;
    }
    i
}

/// The bytes of `word` (little-endian) that are in `QP_STOP`, each marked by its high bit. Only
/// the lowest mark is exact (a borrow can mark a byte above a real one), which is all that
/// `qp_literal_end` uses.
#[inline(always)]
fn qp_stops(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let is = |b: u8| zero(word ^ (ONES * u64::from(b)));
    is(b'=') | is(b'\r') | is(b'\n') | is(b'-')
}

/// Text bytes declared (or taken to be) UTF-8 as an owned `String`: validated vectorised and
/// copied once; invalid UTF-8 is converted lossily, as upstream's `String::from_utf8` fallback does.
pub(crate) fn utf8_owned(bytes: Vec<u8>) -> String {
    match simdutf8::basic::from_utf8(&bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Borrowed text bytes as UTF-8: the same slice when it is valid (validated vectorised),
/// otherwise converted lossily, as upstream's `String::from_utf8_lossy` does.
pub(crate) fn utf8_cow(bytes: &[u8]) -> Cow<'_, str> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// How many bytes at the start of `bytes` are ASCII, looked at 16 at a time.
#[inline(always)]
pub(crate) fn ascii_prefix_len(bytes: &[u8]) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    for pair in bytes.chunks_exact(16) {
        let (a, b) = pair.split_at(8);
        let word = |half: &[u8]| u64::from_le_bytes(half.try_into().unwrap_or([0x80; 8]));
        if (word(a) | word(b)) & HIGH != 0 {
            break;
        }
        i += 16;
    }
    i + bytes[i..].iter().take_while(|b| b.is_ascii()).count()
}
