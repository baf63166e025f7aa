/*
 * Added for mailplug (not part of mail-parser 0.11.9): fast paths for the MIME body decoders.
 * Each one handles only input on which the byte-at-a-time loop it sits in would do nothing but
 * copy or decode, and leaves everything else (boundaries, padding, whitespace, broken input) to
 * that loop, so results are the same as upstream's; `tests/parse_compare.rs` in mailplug's
 * plugin crate checks that against the published crate.
 *
 * SPDX-License-Identifier: Apache-2.0 OR MIT
 */

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
            while let Some(&b) = rest.get(i) {
                if QP_STOP[b as usize] {
                    break;
                }
                i += 1;
            }
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
