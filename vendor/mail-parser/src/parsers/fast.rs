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

    /// How many bytes from here quoted-printable decoding copies unchanged: up to the next
    /// `=`, CR, LF or `-` (which may start a boundary).
    #[inline(always)]
    pub(crate) fn qp_literal_run(&self) -> usize {
        let rest = self.rest();
        let end = memchr::memchr3(b'=', b'\r', b'\n', rest).unwrap_or(rest.len());
        memchr::memchr(b'-', &rest[..end]).unwrap_or(end)
    }

    /// How many bytes from here a raw part scan can skip: up to the next LF or `-`.
    #[inline(always)]
    pub(crate) fn raw_run(&self) -> usize {
        let rest = self.rest();
        memchr::memchr2(b'\n', b'-', rest).unwrap_or(rest.len())
    }
}
