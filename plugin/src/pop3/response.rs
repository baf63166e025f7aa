//! POP3 reply parsing: status lines (RFC 1939 section 3), RFC 2449 response codes, SASL
//! continuations (RFC 5034) and the lines of multi-line responses.

use crate::error::{Error, Result, ServerReply, Stage};

/// A single-line reply. The payload is the text after the indicator and one space.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Status<'a> {
    Ok(&'a [u8]),
    Err(&'a [u8]),
    /// `+ <base64>`: a SASL challenge during AUTH.
    Continue(&'a [u8]),
}

/// Parses a status line; anything that is not one is a protocol error at `stage`.
pub(crate) fn status(line: &[u8], stage: Stage) -> Result<Status<'_>> {
    if let Some(rest) = after_indicator(line, b"+OK") {
        Ok(Status::Ok(rest))
    } else if let Some(rest) = after_indicator(line, b"-ERR") {
        Ok(Status::Err(rest))
    } else if let Some(rest) = after_indicator(line, b"+") {
        Ok(Status::Continue(rest))
    } else {
        Err(Error::protocol_quoting(stage, line, |t| {
            format!(
                "the server sent {t} where a POP3 status (+OK or -ERR) was expected during {}; check that the host and port belong to a POP3 server",
                stage.as_str()
            )
        }))
    }
}

/// The text after `indicator` when the line starts with it followed by a space or nothing
/// (so "+OKAY" is not "+OK").
fn after_indicator<'a>(line: &'a [u8], indicator: &[u8]) -> Option<&'a [u8]> {
    let head = line.get(..indicator.len())?;
    if !head.eq_ignore_ascii_case(indicator) {
        return None;
    }
    let rest = line.get(indicator.len()..)?;
    match rest.first() {
        None => Some(rest),
        Some(b' ') => rest.get(1..),
        Some(_) => None,
    }
}

/// The reply to keep for the admin: code "-ERR" (or "+OK") and the server's text.
pub(crate) fn reply(code: &str, text: &[u8]) -> ServerReply {
    ServerReply::new(code, String::from_utf8_lossy(text).trim())
}

/// The RFC 2449 extended response code at the start of a reply text ("[IN-USE] ..."),
/// upper-cased.
pub(crate) fn response_code(text: &[u8]) -> Option<String> {
    let inner = text.strip_prefix(b"[")?;
    let end = inner.iter().position(|&b| b == b']')?;
    let code = inner.get(..end)?;
    Some(String::from_utf8_lossy(code).to_ascii_uppercase())
}

/// One line of a multi-line response: `None` for the terminating ".", otherwise the line
/// with its dot-stuffing undone (a leading "." is dropped when more follows).
pub(crate) fn unstuff(line: &[u8]) -> Option<&[u8]> {
    match line.strip_prefix(b".") {
        Some([]) => None,
        Some(rest) => Some(rest),
        None => Some(line),
    }
}

/// "<msg-number> <argument> [anything]" from a UIDL or LIST listing.
pub(crate) fn listing_entry(line: &[u8]) -> Option<(u32, &[u8])> {
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let number = parse_u64(words.next()?)?;
    let number = u32::try_from(number).ok().filter(|&n| n > 0)?;
    Some((number, words.next()?))
}

/// A decimal number of at most 19 digits (so it fits in a u64).
pub(crate) fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// RFC 1939 unique-ids are printable ASCII without spaces (0x21..0x7E); their length (at most
/// 70) is checked by the caller, with its own error.
pub(crate) fn valid_uid(uid: &[u8]) -> bool {
    !uid.is_empty() && uid.iter().all(|&b| (0x21..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status(b"+OK Dovecot ready.", Stage::Greeting).unwrap(), Status::Ok(b"Dovecot ready."));
        assert_eq!(status(b"+OK", Stage::Greeting).unwrap(), Status::Ok(b""));
        assert_eq!(status(b"-ERR [AUTH] nope", Stage::Greeting).unwrap(), Status::Err(b"[AUTH] nope"));
        assert_eq!(status(b"+ ", Stage::Authenticate).unwrap(), Status::Continue(b""));
        assert_eq!(status(b"+ eyJ9", Stage::Authenticate).unwrap(), Status::Continue(b"eyJ9"));
        assert!(status(b"+OKAY", Stage::Greeting).is_err());
        assert!(status(b"* OK IMAP4rev1", Stage::Greeting).is_err());
        assert!(status(b"", Stage::Greeting).is_err());
    }

    #[test]
    fn response_codes_and_unstuffing() {
        assert_eq!(response_code(b"[IN-USE] locked").as_deref(), Some("IN-USE"));
        assert_eq!(response_code(b"[sys/temp] later").as_deref(), Some("SYS/TEMP"));
        assert_eq!(response_code(b"plain text"), None);
        assert_eq!(unstuff(b"."), None);
        assert_eq!(unstuff(b"..x"), Some(&b".x"[..]));
        assert_eq!(unstuff(b".."), Some(&b"."[..]));
        assert_eq!(unstuff(b"abc"), Some(&b"abc"[..]));
        assert_eq!(unstuff(b""), Some(&b""[..]));
    }

    #[test]
    fn listing_entries() {
        assert_eq!(listing_entry(b"1 00000001a1b2"), Some((1, &b"00000001a1b2"[..])));
        assert_eq!(listing_entry(b"12 3456 extra"), Some((12, &b"3456"[..])));
        assert_eq!(listing_entry(b"0 x"), None);
        assert_eq!(listing_entry(b"x 1"), None);
        assert_eq!(listing_entry(b"99999999999 1"), None);
        assert_eq!(listing_entry(b"3"), None);
        assert_eq!(parse_u64(b"18446744073709551615"), None, "20 digits are refused, not overflowed");
        assert!(valid_uid(b"abc-123"));
        assert!(!valid_uid(b"a\x01b"));
    }
}
