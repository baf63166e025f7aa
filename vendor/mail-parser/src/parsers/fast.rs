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
    ///
    /// The lines after it that have the same length and line end are decoded with it, in one
    /// call for up to `BASE64_BATCH` characters (session 14: one set-up and no scalar tail per
    /// 76-character line). Padding ends a batch. When a batch does not decode, its lines are
    /// decoded one by one up to the first that does not, and no batch is tried again before
    /// `no_batch_before` (the caller's, set to that batch's end): each line is part of at most
    /// one batch that failed, so hostile input costs at most about twice the work.
    #[inline(always)]
    pub(crate) fn base64_line(&mut self, buf: &mut Vec<u8>, no_batch_before: &mut usize) -> Option<(u8, usize)> {
        let rest = self.rest();
        let lf = memchr::memchr(b'\n', rest)?;
        let line = rest.get(..lf)?;
        let text = line.strip_suffix(b"\r").unwrap_or(line);
        let len = text.len();
        if len == 0 || len % 4 != 0 {
            return None;
        }
        let (start, stride) = (self.pos, lf + 1);
        // Whether line `n` from here has this line's length and line end (the decoder refuses a
        // CR or LF inside a line).
        let alike = |n: usize| rest.get(n * stride..(n + 1) * stride).is_some_and(|l| l[lf] == b'\n' && (lf == len || l[len] == b'\r'));
        let one = |n: usize, buf: &mut Vec<u8>| base64_simd::STANDARD.decode_append(&rest[n * stride..n * stride + len], buf).is_ok();
        let decoded = if start >= *no_batch_before && 2 * len <= BASE64_BATCH && text[len - 1] != b'=' && alike(1) {
            let mut batch = [0u8; BASE64_BATCH];
            let (mut lines, mut filled) = (0, 0);
            while filled + len <= BASE64_BATCH && alike(lines) {
                let text = &rest[lines * stride..lines * stride + len];
                batch[filled..filled + len].copy_from_slice(text);
                filled += len;
                lines += 1;
                if text[len - 1] == b'=' {
                    break;
                }
            }
            if base64_simd::STANDARD.decode_append(&batch[..filled], buf).is_ok() {
                lines
            } else {
                *no_batch_before = start + lines * stride;
                (0..lines).take_while(|&n| one(n, buf)).count()
            }
        } else {
            usize::from(one(0, buf))
        };
        if decoded == 0 {
            return None;
        }
        self.skip_bytes(decoded * stride);
        Some((rest[decoded * stride - 2], start + (decoded - 1) * stride + len))
    }

    /// Quoted-printable outside an escape: copies literal bytes and decodes `=XX` escapes up to
    /// the next CR, LF, `-` (which may start a boundary), or `=` that is not followed by two hex
    /// digits. Given the loop's last two bytes, returns the updated trailing-whitespace count and
    /// last two bytes (as the byte loop would have tracked them), or None when nothing was consumed.
    ///
    /// Literal bytes are copied 16 at a time (`copy_run` with `first_qp_stop`; session 14,
    /// docs/BENCHMARKS.md).
    #[inline(always)]
    pub(crate) fn qp_run(&mut self, buf: &mut Vec<u8>, ws_count: usize, last_two: (u8, u8)) -> Option<(usize, u8, u8)> {
        let rest = self.rest();
        let mut i = 0;
        loop {
            i = copy_run(rest, i, buf, first_qp_stop, |b| QP_STOP[b as usize]);
            // An escape, or the end of the run.
            match rest.get(i..i + 3) {
                Some(&[b'=', h1, h2]) => {
                    let (h1v, h2v) = (HEX_MAP[h1 as usize], HEX_MAP[h2 as usize]);
                    if h1v < 0 || h2v < 0 {
                        break;
                    }
                    buf.push(((h1v as u8) << 4) | h2v as u8);
                    i += 3;
                }
                _ => break,
            }
        }
        if i == 0 {
            return None;
        }
        self.skip_bytes(i);
        // What the byte loop would have tracked: the whitespace literals at the end (an escape
        // ends with a hex digit, so the count stops there, as the loop's reset does; CR and LF
        // are stops, never consumed here) and the last two bytes consumed.
        let consumed = &rest[..i];
        let trailing = consumed.iter().rev().take_while(|b| b.is_ascii_whitespace()).count();
        let ws_count = if trailing == i { ws_count + trailing } else { trailing };
        let (before_last, last) = if i > 1 { (consumed[i - 2], consumed[i - 1]) } else { (last_two.1, consumed[0]) };
        Some((ws_count, before_last, last))
    }

    /// How many bytes from here a raw part scan can skip: up to the next LF or `-`.
    #[inline(always)]
    pub(crate) fn raw_run(&self) -> usize {
        let rest = self.rest();
        memchr::memchr2(b'\n', b'-', rest).unwrap_or(rest.len())
    }
}

/// At most this many base64 characters are decoded in one call (`base64_line`).
const BASE64_BATCH: usize = 4096;

/// Bytes that end a quoted-printable literal run.
static QP_STOP: [bool; 256] = {
    let mut t = [false; 256];
    t[b'=' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'-' as usize] = true;
    t
};

/// Appends `src[i..]` to `out` up to the first byte that `first` finds in a 16-byte step (all
/// 16 are appended and those from that byte on taken back, so a short run costs one fixed-size
/// copy rather than a `memcpy` call) or, in the last 15 bytes, that `stop` holds for; returns
/// the position of that byte (or the end).
#[inline(always)]
pub(crate) fn copy_run(src: &[u8], mut i: usize, out: &mut Vec<u8>, first: fn(&[u8; 16]) -> Option<usize>, stop: impl Fn(u8) -> bool) -> usize {
    loop {
        let Some(chunk) = src.get(i..i + 16).and_then(|c| <&[u8; 16]>::try_from(c).ok()) else {
            while let Some(&b) = src.get(i).filter(|&&b| !stop(b)) {
                out.push(b);
                i += 1;
            }
            return i;
        };
        out.extend_from_slice(chunk);
        if let Some(at) = first(chunk) {
            out.truncate(out.len() - (16 - at));
            return i + at;
        }
        i += 16;
    }
}

/// The 16 bytes as a wasm SIMD vector (built from the array: the crate has no `unsafe` load).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn vector(c: &[u8; 16]) -> core::arch::wasm32::v128 {
    core::arch::wasm32::u8x16(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15])
}

/// The lowest set bit of a vector's bit mask.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn first_set(mask: u16) -> Option<usize> {
    (mask != 0).then(|| mask.trailing_zeros() as usize)
}

/// The 16 bytes as two little-endian words, for the searches outside the component.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn words(c: &[u8; 16]) -> (u64, u64) {
    let (low, high) = c.split_at(8);
    let word = |half: &[u8]| u64::from_le_bytes(half.try_into().unwrap_or_default());
    (word(low), word(high))
}

/// The byte of the lowest high-bit mark in two words of marks (low word first). Only the lowest
/// mark of each word need be exact.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn first_marked(low: u64, high: u64) -> Option<usize> {
    match (low, high) {
        (0, 0) => None,
        (0, h) => Some(8 + (h.trailing_zeros() / 8) as usize),
        (l, _) => Some((l.trailing_zeros() / 8) as usize),
    }
}

/// The position of the first byte of `chunk` that is in `QP_STOP`, if any: wasm SIMD in the
/// component (four compares and a bit mask), two eight-byte words elsewhere.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn first_qp_stop(chunk: &[u8; 16]) -> Option<usize> {
    use core::arch::wasm32::{u8x16_bitmask, u8x16_eq, u8x16_splat, v128_or};
    let v = vector(chunk);
    let is = |b: u8| u8x16_eq(v, u8x16_splat(b));
    first_set(u8x16_bitmask(v128_or(v128_or(is(b'='), is(b'\r')), v128_or(is(b'\n'), is(b'-')))))
}

/// `first_qp_stop` outside the component (native builds and their tests).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn first_qp_stop(chunk: &[u8; 16]) -> Option<usize> {
    let (low, high) = words(chunk);
    first_marked(qp_stops(low), qp_stops(high))
}

/// The bytes of `word` (little-endian) that are in `QP_STOP`, each marked by its high bit. Only
/// the lowest mark is exact (a borrow can mark a byte above a real one), which is all that
/// `first_qp_stop` uses.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
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

/// The position of the first byte of `chunk` that is not ASCII, if any: the vector's high bits
/// in the component, the words' high bits elsewhere.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub(crate) fn first_non_ascii(chunk: &[u8; 16]) -> Option<usize> {
    first_set(core::arch::wasm32::u8x16_bitmask(vector(chunk)))
}

/// `first_non_ascii` outside the component.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
pub(crate) fn first_non_ascii(chunk: &[u8; 16]) -> Option<usize> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let (low, high) = words(chunk);
    first_marked(low & HIGH, high & HIGH)
}
