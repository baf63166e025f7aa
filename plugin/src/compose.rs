//! Builds a plain-text message from an agent's draft with mail-builder. Every header value is
//! validated by `headers` first, because mail-builder writes CR/LF inside values verbatim.

use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::MessageBuilder;

use crate::error::{Error, Result, Stage};
use crate::headers::{check_header_value, parse_mailbox, Mailbox};

/// A new message written by an agent (`outbound.draft`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text_body: String,
    /// The Date header, milliseconds since the Unix epoch.
    pub date_ms: u64,
}

/// A message ready to submit (`outbound.composed-message`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Composed {
    /// Without angle brackets.
    pub message_id: String,
    pub envelope_from: String,
    pub envelope_to: Vec<String>,
    /// RFC 5322 bytes, CRLF line endings.
    pub raw: Vec<u8>,
}

/// `nonce` makes the Message-ID unique; the caller supplies randomness (the guest never reads clocks/entropy here).
pub fn compose(draft: &Draft, nonce: u64) -> Result<Composed> {
    let from = parse_mailbox("From", &draft.from)?;
    if draft.to.is_empty() {
        return Err(Error::invalid(Stage::Envelope, "the message has no recipient; add at least one To address"));
    }
    let to = draft.to.iter().map(|t| parse_mailbox("To", t)).collect::<Result<Vec<Mailbox>>>()?;
    check_header_value("Subject", &draft.subject)?;

    // parse_mailbox guarantees exactly one '@' with a non-empty domain.
    let domain = from.address.rsplit('@').next().unwrap_or("localhost");
    let message_id = format!("{}.{:x}@{}", base36(draft.date_ms), nonce, domain);

    let mut envelope_to: Vec<String> = Vec::with_capacity(to.len());
    for m in &to {
        // One RCPT per mailbox even if the agent typed it twice.
        if !envelope_to.iter().any(|e| e.eq_ignore_ascii_case(&m.address)) {
            envelope_to.push(m.address.clone());
        }
    }

    let to_header = Address::new_list(to.iter().map(to_address).collect());
    let raw = MessageBuilder::new()
        .from(to_address(&from))
        .to(to_header)
        .subject(draft.subject.as_str())
        .date(Date::new((draft.date_ms / 1000) as i64))
        .message_id(MessageId::new(message_id.as_str()))
        .text_body(crlf_text(&draft.text_body))
        .write_to_vec()
        .map_err(|e| Error::invalid(Stage::Data, format!("the message could not be built: {e}")))?;

    Ok(Composed { message_id, envelope_from: from.address, envelope_to, raw })
}

fn to_address(m: &Mailbox) -> Address<'_> {
    Address::new_address(m.name.as_deref(), m.address.as_str())
}

/// Lower-case base-36 digits of `n`.
fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(13);
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    out.into_iter().map(char::from).collect()
}

/// Bare CR, bare LF and CRLF all become CRLF.
fn crlf_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                out.push_str("\r\n");
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    fn draft() -> Draft {
        Draft {
            from: "Support Team <support@shop.example>".into(),
            to: vec!["Ann Lee <ann@example.com>".into(), "bob@example.net".into()],
            subject: "Your order 42".into(),
            text_body: "Hello Ann,\nyour order shipped.\r\n.\nBye\r".into(),
            date_ms: 1_700_000_000_123,
        }
    }

    /// Splits a message into unfolded (name, value) headers and the body.
    fn parse(raw: &[u8]) -> (Vec<(String, String)>, String) {
        let text = std::str::from_utf8(raw).expect("composed messages are ASCII/UTF-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("header/body separator");
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with(' ') || line.starts_with('\t') {
                headers.last_mut().expect("fold after a header").1.push_str(line);
            } else {
                let (name, value) = line.split_once(':').expect("header line has a colon");
                headers.push((name.to_string(), value.trim_start().to_string()));
            }
        }
        (headers, body.to_string())
    }

    /// Decodes RFC 2047 encoded words (B and Q) in an unfolded header value.
    fn decode_words(value: &str) -> String {
        let mut out = String::new();
        for word in value.split_whitespace() {
            let inner = word.strip_prefix("=?").and_then(|w| w.strip_suffix("?="));
            let Some(inner) = inner else {
                out.push_str(word);
                out.push(' ');
                continue;
            };
            let mut parts = inner.splitn(3, '?');
            let (_charset, enc, data) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            let bytes = if enc.eq_ignore_ascii_case("b") {
                STANDARD.decode(data).unwrap()
            } else {
                let mut b = Vec::new();
                let mut it = data.bytes();
                while let Some(c) = it.next() {
                    match c {
                        b'_' => b.push(b' '),
                        b'=' => {
                            let hex = [it.next().unwrap(), it.next().unwrap()];
                            b.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
                        }
                        c => b.push(c),
                    }
                }
                b
            };
            out.push_str(&String::from_utf8(bytes).unwrap());
        }
        out.trim_end().to_string()
    }

    #[test]
    fn composed_message_has_exactly_the_intended_headers() {
        let c = compose(&draft(), 0xdead_beef).unwrap();
        let (headers, body) = parse(&c.raw);
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"]
        );
        let get = |n: &str| headers.iter().find(|(h, _)| h == n).unwrap().1.clone();
        assert_eq!(get("From"), "\"Support Team\" <support@shop.example>");
        assert_eq!(get("To"), "\"Ann Lee\" <ann@example.com>, <bob@example.net>");
        assert_eq!(get("Subject"), "Your order 42");
        assert_eq!(get("Date"), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(get("Message-ID"), format!("<{}>", c.message_id));
        assert!(get("Content-Type").starts_with("text/plain"));
        assert_eq!(body, "Hello Ann,\r\nyour order shipped.\r\n.\r\nBye\r\n");
        assert_eq!(c.envelope_from, "support@shop.example");
        assert_eq!(c.envelope_to, ["ann@example.com", "bob@example.net"]);
        // No bare LF or CR anywhere.
        for (i, &b) in c.raw.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(c.raw[i - 1], b'\r', "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(c.raw.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
        }
    }

    #[test]
    fn message_id_is_on_the_senders_domain_and_uses_date_and_nonce() {
        let c = compose(&draft(), 0x1f).unwrap();
        assert_eq!(c.message_id, format!("{}.1f@shop.example", base36(1_700_000_000_123)));
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36 * 36), "100");
        assert_ne!(compose(&draft(), 1).unwrap().message_id, compose(&draft(), 2).unwrap().message_id);
    }

    #[test]
    fn non_ascii_subject_and_name_are_encoded_words() {
        let mut d = draft();
        d.subject = "Grüße aus Köln – Bestellung".into();
        d.from = "Jürgen Groß <j@shop.example>".into();
        let c = compose(&d, 7).unwrap();
        let (headers, _) = parse(&c.raw);
        let get = |n: &str| headers.iter().find(|(h, _)| h == n).unwrap().1.clone();
        let head_end = c.raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        assert!(c.raw[..head_end].is_ascii(), "headers must be 7-bit");
        assert!(get("Subject").starts_with("=?"), "{}", get("Subject"));
        assert_eq!(decode_words(&get("Subject")), "Grüße aus Köln – Bestellung");
        let from = get("From");
        assert!(from.ends_with("<j@shop.example>"), "{from}");
        assert_eq!(decode_words(from.trim_end_matches("<j@shop.example>").trim()), "Jürgen Groß");
    }

    #[test]
    fn header_injection_attempts_are_refused() {
        let cases: [fn(&mut Draft); 7] = [
            |d| d.subject = "Hi\r\nBcc: x@evil.example".into(),
            |d| d.subject = "Hi\nBcc: x@evil.example".into(),
            |d| d.from = "Support\r\nBcc: x@evil.example <support@shop.example>".into(),
            |d| d.from = "support@shop.example\r\nBcc: x@evil.example".into(),
            |d| d.to = vec!["Ann <ann@example.com>\nBcc: x@evil.example".into()],
            |d| d.to = vec!["ann@example.com\r".into()],
            |d| d.to = vec!["ann@example.com, x@evil.example".into()],
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut d = draft();
            mutate(&mut d);
            let e = compose(&d, 1).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "case {i}");
            assert!(!e.message.contains('\r') && !e.message.contains('\n'), "case {i}: {:?}", e.message);
        }
    }

    #[test]
    fn no_recipient_is_refused() {
        let mut d = draft();
        d.to.clear();
        assert_eq!(compose(&d, 1).unwrap_err().kind, ErrorKind::InvalidInput);
    }

    #[test]
    fn duplicate_recipients_get_one_rcpt() {
        let mut d = draft();
        d.to = vec!["ann@example.com".into(), "Ann <ANN@example.com>".into()];
        assert_eq!(compose(&d, 1).unwrap().envelope_to, ["ann@example.com"]);
    }
}
