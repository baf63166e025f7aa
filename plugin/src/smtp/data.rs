//! The DATA payload: CRLF line endings, dot-stuffing (RFC 5321 4.5.2) and the terminator.

/// The encoded payload plus what the envelope needs to know about it.
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    /// RFC 1870 message size: the payload without stuffed dots and without the final ".\r\n".
    pub size: u64,
    /// The message has bytes above 0x7F (worth BODY=8BITMIME).
    pub eight_bit: bool,
}

/// CRLF-normalise and dot-stuff a message for DATA, ending with exactly one "\r\n.\r\n".
pub fn encode_data(message: &[u8]) -> Vec<u8> {
    encode(message).bytes
}

pub(crate) fn encode(message: &[u8]) -> Encoded {
    if is_clean(message) {
        // Already CRLF with no line starting with a dot (composed messages are): one copy.
        let mut out = Vec::with_capacity(message.len() + 5);
        out.extend_from_slice(message);
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        let size = out.len() as u64;
        out.extend_from_slice(b".\r\n");
        return Encoded { bytes: out, size, eight_bit: !message.is_ascii() };
    }
    encode_slow(message)
}

/// Every CR is followed by LF, every LF follows a CR, and no line starts with '.': the
/// message needs no change but the terminator. Word-at-a-time scans (memchr), no per-line work.
fn is_clean(message: &[u8]) -> bool {
    if message.first() == Some(&b'.') {
        return false;
    }
    let mut crs = 0usize;
    for i in memchr::memchr_iter(b'\r', message) {
        if message.get(i + 1) != Some(&b'\n') {
            return false;
        }
        crs += 1;
    }
    memchr::memchr_iter(b'\n', message).count() == crs && memchr::memmem::find(message, b"\n.").is_none()
}

/// Spare capacity left after an encoded message for the commands that follow it in one write.
const ENVELOPE_SLACK: usize = 256;

/// What one look at a message's bytes found: the first NUL, and whether it is clean (see
/// `is_clean`; false when it has a NUL).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    pub nul: Option<usize>,
    pub clean: bool,
}

/// `is_clean` and the first NUL in one pass over the bytes (a batch checks every message it
/// is handed: one pass instead of one per question). Once the message is known not to be
/// clean, the rest is only searched for a NUL.
pub(crate) fn scan(message: &[u8]) -> Scan {
    let mut clean = message.first() != Some(&b'.');
    for i in memchr::memchr3_iter(0, b'\r', b'\n', message) {
        match message[i] {
            0 => return Scan { nul: Some(i), clean: false },
            b'\r' => clean &= message.get(i + 1) == Some(&b'\n'),
            _ => clean &= i > 0 && message[i - 1] == b'\r' && message.get(i + 1) != Some(&b'.'),
        }
        if !clean {
            return Scan { nul: memchr::memchr(0, &message[i..]).map(|at| at + i), clean: false };
        }
    }
    Scan { nul: None, clean }
}

/// `encode_owned` for a message already `scan`ned without a NUL: `clean` is what the scan found.
pub(crate) fn encode_scanned(message: Vec<u8>, clean: bool) -> Encoded {
    if !clean {
        return encode_slow(&message);
    }
    encode_clean(message)
}

/// `encode` for a message the caller gives away: a clean message (composed ones are) gets its
/// terminator appended in place, without a copy.
pub(crate) fn encode_owned(message: Vec<u8>) -> Encoded {
    if !is_clean(&message) {
        return encode_slow(&message);
    }
    encode_clean(message)
}

/// The terminator appended in place to a clean message (see `is_clean`).
fn encode_clean(mut message: Vec<u8>) -> Encoded {
    let eight_bit = !message.is_ascii();
    let crlf = !message.ends_with(b"\r\n");
    // Room for the terminator and, in a batch, the next message's MAIL/RCPT/DATA written
    // with it (no second copy of the data to append them).
    message.reserve_exact(if crlf { 5 } else { 3 } + ENVELOPE_SLACK);
    if crlf {
        message.extend_from_slice(b"\r\n");
    }
    let size = message.len() as u64;
    message.extend_from_slice(b".\r\n");
    Encoded { bytes: message, size, eight_bit }
}

fn encode_slow(message: &[u8]) -> Encoded {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    let mut stuffed = 0usize;
    let mut at_line_start = true;
    let mut rest = message;
    // Copy runs between line ends in one go; look at each byte only once.
    while !rest.is_empty() {
        if at_line_start && rest.first() == Some(&b'.') {
            // A line starting with '.' gets one more, so no line of the message can end DATA.
            out.push(b'.');
            stuffed += 1;
        }
        match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            Some(i) => {
                out.extend_from_slice(&rest[..i]);
                out.extend_from_slice(b"\r\n");
                // CRLF, bare CR and bare LF are all one line end.
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                rest = &rest[i + skip..];
                at_line_start = true;
            }
            None => {
                out.extend_from_slice(rest);
                rest = &[];
                at_line_start = false;
            }
        }
    }
    if !at_line_start || out.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    let size = (out.len() - stuffed) as u64;
    out.extend_from_slice(b".\r\n");
    let eight_bit = !message.is_ascii();
    Encoded { bytes: out, size, eight_bit }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(input: &[u8]) -> Vec<u8> {
        let out = encode_data(input);
        // Whatever the input, exactly one terminator and it is at the end.
        assert!(out.ends_with(b"\r\n.\r\n"), "{:?}", String::from_utf8_lossy(&out));
        let count = out.windows(5).filter(|w| w == b"\r\n.\r\n").count();
        assert_eq!(count, 1, "{:?}", String::from_utf8_lossy(&out));
        out
    }

    #[test]
    fn line_endings_become_crlf() {
        assert_eq!(enc(b"a\r\nb\nc\rd\r\n"), b"a\r\nb\r\nc\r\nd\r\n.\r\n");
        assert_eq!(enc(b"a\n\nb\r\r\n"), b"a\r\n\r\nb\r\n\r\n.\r\n");
    }

    #[test]
    fn missing_final_newline_is_added() {
        assert_eq!(enc(b"Subject: x\r\n\r\nbody"), b"Subject: x\r\n\r\nbody\r\n.\r\n");
    }

    #[test]
    fn leading_dots_are_doubled() {
        assert_eq!(enc(b".hidden\r\nmid.dle\r\n..two\r\n"), b"..hidden\r\nmid.dle\r\n...two\r\n.\r\n");
    }

    #[test]
    fn smuggled_terminators_are_neutralised() {
        // Each of these would end DATA early on a lenient server if sent unchanged.
        assert_eq!(enc(b"x\n.\nMAIL FROM:<evil>"), b"x\r\n..\r\nMAIL FROM:<evil>\r\n.\r\n");
        assert_eq!(enc(b"x\r.\rMAIL"), b"x\r\n..\r\nMAIL\r\n.\r\n");
        assert_eq!(enc(b"x\r\n.\nMAIL"), b"x\r\n..\r\nMAIL\r\n.\r\n");
        assert_eq!(enc(b"x\n.\r\nMAIL"), b"x\r\n..\r\nMAIL\r\n.\r\n");
    }

    #[test]
    fn input_already_ending_with_a_terminator_gets_exactly_one() {
        assert_eq!(enc(b"body\r\n.\r\n"), b"body\r\n..\r\n.\r\n");
        assert_eq!(enc(b"body\n.\n"), b"body\r\n..\r\n.\r\n");
        assert_eq!(enc(b"body\r.\r"), b"body\r\n..\r\n.\r\n");
        assert_eq!(enc(b"body\r\n."), b"body\r\n..\r\n.\r\n");
    }

    #[test]
    fn only_dots_and_empty() {
        assert_eq!(enc(b"."), b"..\r\n.\r\n");
        assert_eq!(enc(b"..."), b"....\r\n.\r\n");
        assert_eq!(enc(b".\r\n.\r\n"), b"..\r\n..\r\n.\r\n");
        assert_eq!(enc(b""), b"\r\n.\r\n");
        assert_eq!(enc(b"\r\n"), b"\r\n.\r\n");
    }

    #[test]
    fn the_fast_path_matches_the_line_by_line_encoding() {
        let samples: [&[u8]; 12] = [
            b"", b"\r\n", b"a", b"a\r\n", b"a\r\nb", b"Subject: x\r\n\r\nbody\r\n", b".a\r\n", b"a\r\n.b\r\n",
            b"a\nb\r\n", b"a\r", b"a\rb\r\n", "Grüße\r\n".as_bytes(),
        ];
        for m in samples {
            let (fast, slow, owned) = (encode(m), encode_slow(m), encode_owned(m.to_vec()));
            assert_eq!((&fast.bytes, fast.size, fast.eight_bit), (&slow.bytes, slow.size, slow.eight_bit), "{:?}", String::from_utf8_lossy(m));
            assert_eq!((&owned.bytes, owned.size, owned.eight_bit), (&slow.bytes, slow.size, slow.eight_bit), "{:?}", String::from_utf8_lossy(m));
        }
        for m in samples {
            let found = scan(m);
            assert_eq!(found, Scan { nul: None, clean: is_clean(m) }, "{:?}", String::from_utf8_lossy(m));
            let scanned = encode_scanned(m.to_vec(), found.clean);
            assert_eq!((&scanned.bytes, scanned.size), (&encode_slow(m).bytes, encode_slow(m).size));
        }
        assert!(is_clean(b"a\r\nb") && !is_clean(b"a\nb") && !is_clean(b"a\r\n.b") && !is_clean(b".") && !is_clean(b"a\rb"));
    }

    #[test]
    fn the_scan_finds_the_first_nul_whether_or_not_the_message_is_clean() {
        assert_eq!(scan(b"a\r\nb\0c\0"), Scan { nul: Some(4), clean: false });
        assert_eq!(scan(b"\0"), Scan { nul: Some(0), clean: false });
        // Not clean before the NUL: the rest is still searched.
        assert_eq!(scan(b"a\nb\r\nc\0"), Scan { nul: Some(6), clean: false });
        assert_eq!(scan(b".a\r\n\0"), Scan { nul: Some(4), clean: false });
        assert_eq!(scan(b"a\r\n.b\0"), Scan { nul: Some(5), clean: false });
        assert_eq!(scan(b"a\r\nb\r\n"), Scan { nul: None, clean: true });
        assert_eq!(scan(b"a\r\nb\r"), Scan { nul: None, clean: false });
        assert_eq!(scan(b""), Scan { nul: None, clean: true });
    }

    #[test]
    fn size_excludes_stuffing_and_terminator() {
        let e = encode(b".a\nb");
        assert_eq!(e.bytes, b"..a\r\nb\r\n.\r\n");
        assert_eq!(e.size, b".a\r\nb\r\n".len() as u64);
        assert!(!e.eight_bit);
        assert!(encode("é".as_bytes()).eight_bit);
    }
}
