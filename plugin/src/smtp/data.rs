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
    let found = scan(message);
    if found.clean {
        // Already CRLF with no line starting with a dot (composed messages are): one copy.
        let mut out = Vec::with_capacity(message.len() + 5);
        out.extend_from_slice(message);
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        let size = out.len() as u64;
        out.extend_from_slice(b".\r\n");
        return Encoded { bytes: out, size, eight_bit: found.eight_bit };
    }
    encode_slow(message)
}

pub(crate) use mailplug_wire::{scan, Scan};

/// Spare capacity left after an encoded message for the commands that follow it in one write.
const ENVELOPE_SLACK: usize = 256;

/// `encode` for a message the caller gives away, already `scan`ned (`found`) and without a
/// NUL: a clean message (composed ones are) gets its terminator appended in place, without a
/// copy.
pub(crate) fn encode_scanned(message: Vec<u8>, found: &Scan) -> Encoded {
    if !found.clean {
        return encode_slow(&message);
    }
    encode_clean(message, found.eight_bit)
}

/// The terminator appended in place to a clean message (see `scan`).
fn encode_clean(mut message: Vec<u8>, eight_bit: bool) -> Encoded {
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

    /// Checks every encoder against the line-by-line encoder (`scan` itself is checked
    /// against the byte-by-byte rules in plugin/wire).
    fn check(m: &[u8]) {
        let found = scan(m);
        let slow = encode_slow(m);
        let want = (&slow.bytes, slow.size, slow.eight_bit);
        let fast = encode(m);
        assert_eq!((&fast.bytes, fast.size, fast.eight_bit), want, "{:?}", String::from_utf8_lossy(m));
        {
            let scanned = encode_scanned(m.to_vec(), &found);
            assert_eq!((&scanned.bytes, scanned.size, scanned.eight_bit), want, "{:?}", String::from_utf8_lossy(m));
        }
        if found.clean {
            // Clean means the encoding adds only the terminator (and a missing CRLF).
            assert!(slow.bytes.starts_with(m));
        }
    }

    #[test]
    fn the_fast_path_matches_the_line_by_line_encoding() {
        let samples: [&[u8]; 12] = [
            b"",
            b"\r\n",
            b"a",
            b"a\r\n",
            b"a\r\nb",
            b"Subject: x\r\n\r\nbody\r\n",
            b".a\r\n",
            b"a\r\n.b\r\n",
            b"a\nb\r\n",
            b"a\r",
            b"a\rb\r\n",
            "Grüße\r\n".as_bytes(),
        ];
        for m in samples {
            check(m);
        }
        assert!(scan(b"a\r\nb").clean && !scan(b"a\nb").clean && !scan(b"a\r\n.b").clean && !scan(b".").clean && !scan(b"a\rb").clean);
    }

    #[test]
    fn the_encoders_agree_on_random_messages() {
        mailplug_wire::testing::samples(check);
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
