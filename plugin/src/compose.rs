//! Builds outgoing messages with mail-builder: a new message from an agent's draft (`compose`)
//! and a threaded reply to a stored inbound message (`compose_reply`). Every header value is
//! validated by `headers` first, because mail-builder writes CR/LF inside values verbatim.
//!
//! Nothing here reads the clock or entropy: the Date, the Message-ID and the MIME boundaries
//! all come from the caller's `date_ms` and `nonce` (mail-builder would otherwise read both).

use std::borrow::Cow;

use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;

use crate::error::{Error, Result, Stage};
use crate::headers::{
    check_address, check_header_value, check_mailbox, check_message_id, flatten_header_text, parse_mailbox, Mailbox,
};
use crate::parse::{parse_message, Classification, ParsedMessage};

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

    Ok(Composed { message_id, envelope_from: from.address, envelope_to, raw: as_sent(raw) })
}

/// A file the agent attaches to a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingAttachment {
    /// File name as the customer sees it, without a folder part.
    pub name: String,
    /// `type/subtype`, e.g. `application/pdf`.
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// An agent's answer to a stored inbound message.
#[derive(Clone, Debug)]
pub struct ReplyDraft<'a> {
    /// The raw stored inbound message being answered.
    pub original: &'a [u8],
    /// From / Sender / Reply-To / MAIL FROM.
    pub plan: &'a crate::plan::Plan,
    pub text_body: String,
    pub html_body: Option<String>,
    pub attachments: Vec<OutgoingAttachment>,
    /// The Date header, milliseconds since the Unix epoch.
    pub date_ms: u64,
    /// Answer an auto-reply, bulk mail or a bounce anyway.
    pub force: bool,
}

/// How many ids a reply's References header keeps (RFC 5322 section 3.6.4 leaves it open).
pub const MAX_REFERENCES: usize = 20;
/// Upper bound for the written References value, so the header stays far below the 998-octet
/// line limit even when a server does not fold it.
pub const MAX_REFERENCES_CHARS: usize = 900;

/// Composes the reply to `d.original`: addressed to its Reply-To (or From), threaded with
/// In-Reply-To and References, sent as the plan says. Refuses to answer robots unless forced.
/// `nonce` makes the Message-ID and MIME boundaries unique; the caller supplies randomness.
pub fn compose_reply(d: &ReplyDraft, nonce: u64) -> Result<Composed> {
    let original = parse_message(d.original).map_err(|reason| {
        Error::invalid(
            Stage::Data,
            format!("the message being answered could not be read as an e-mail ({reason}); write a new message instead"),
        )
    })?;
    if !d.force {
        refuse_robot(original.classification)?;
    }

    let plan = d.plan;
    check_mailbox("From", &plan.from)?;
    if let Some(sender) = &plan.sender {
        check_mailbox("Sender", sender)?;
    }
    if let Some(reply_to) = &plan.reply_to {
        check_mailbox("Reply-To", reply_to)?;
    }
    check_address("MAIL FROM", &plan.envelope_from)?;
    for attachment in &d.attachments {
        check_attachment(attachment)?;
    }

    let to = reply_recipients(&original)?;
    let envelope_to: Vec<String> = to.iter().map(|m| m.address.clone()).collect();
    let subject = reply_subject(original.subject.as_deref());
    check_header_value("Subject", &subject)?;

    // A synthetic id exists only in our store; the customer's client has never seen it.
    let original_id = (!original.message_id_synthetic)
        .then_some(original.message_id.as_str())
        .filter(|id| check_message_id("Message-ID", id).is_ok());
    let references = reply_references(&original.references, original_id);

    let message_id = new_message_id(d.date_ms, nonce, &plan.from.address);
    check_message_id("Message-ID", &message_id)?;

    let text = crlf_text(&d.text_body);
    let html = d.html_body.as_deref().map(crlf_text);
    let body = reply_body(&text, html.as_deref(), &d.attachments, d.date_ms, nonce);

    let mut builder = MessageBuilder::new().from(to_address(&plan.from));
    if let Some(sender) = &plan.sender {
        builder = builder.sender(to_address(sender));
    }
    if let Some(reply_to) = &plan.reply_to {
        builder = builder.reply_to(to_address(reply_to));
    }
    builder = builder
        .to(Address::new_list(to.iter().map(to_address).collect()))
        .subject(subject.as_str())
        .date(Date::new((d.date_ms / 1000) as i64))
        .message_id(MessageId::new(message_id.as_str()));
    if let Some(id) = original_id {
        builder = builder.in_reply_to(MessageId::new(id));
    }
    if !references.is_empty() {
        builder = builder.references(MessageId::new_list(references.iter().map(String::as_str)));
    }
    let raw = builder
        .body(body)
        .write_to_vec()
        .map_err(|e| Error::invalid(Stage::Data, format!("the reply could not be built: {e}")))?;

    Ok(Composed { message_id, envelope_from: plan.envelope_from.clone(), envelope_to, raw: as_sent(raw) })
}

fn refuse_robot(classification: Classification) -> Result<()> {
    let what = match classification {
        Classification::Normal => return Ok(()),
        Classification::AutoReply => "an automatic reply (out-of-office or similar)",
        Classification::Bulk => "bulk or mailing-list mail (a newsletter or list post)",
        Classification::Bounce => "a delivery failure report (bounce)",
    };
    Err(Error::invalid(
        Stage::Data,
        format!(
            "the message being answered is {what}; answering robots can start mail loops, so no reply was \
             composed; set force to answer it anyway"
        ),
    ))
}

/// The original's Reply-To if it has one, else its From; one entry per address.
fn reply_recipients(original: &ParsedMessage) -> Result<Vec<Mailbox>> {
    let (field, source) =
        if original.reply_to.is_empty() { ("From", &original.from) } else { ("Reply-To", &original.reply_to) };
    if source.is_empty() {
        return Err(Error::invalid(
            Stage::Envelope,
            "the message being answered has neither a Reply-To nor a From address, so there is no one to reply to; \
             write a new message to the customer's address instead",
        ));
    }
    let mut to: Vec<Mailbox> = Vec::with_capacity(source.len());
    for address in source {
        // A name is cosmetic: flatten what a hostile encoded word may carry. An address is who
        // gets the mail: refuse rather than guess.
        let name = address.name.as_deref().map(flatten_header_text);
        let name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
        let mailbox = Mailbox { name, address: address.address.clone() };
        check_mailbox(field, &mailbox).map_err(|e| {
            Error::invalid(
                Stage::Envelope,
                format!("the message being answered has an unusable {field} address: {}; write a new message instead", e.message),
            )
        })?;
        if !to.iter().any(|m| m.address.eq_ignore_ascii_case(&mailbox.address)) {
            to.push(mailbox);
        }
    }
    Ok(to)
}

/// The original's References (valid ids, each once) followed by its Message-ID, trimmed.
fn reply_references(references: &[String], original_id: Option<&str>) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(references.len() + 1);
    for id in references {
        if check_message_id("References", id).is_ok() && Some(id.as_str()) != original_id && !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids.extend(original_id.map(str::to_string));
    trim_references(&ids, MAX_REFERENCES)
}

/// `<base36(date).hex(nonce)@domain-of-From>` without the brackets.
fn new_message_id(date_ms: u64, nonce: u64, from_address: &str) -> String {
    // Message ids are ASCII on the wire; an internationalised domain would need punycode.
    let domain = from_address.rsplit_once('@').map(|(_, d)| d).filter(|d| !d.is_empty() && d.is_ascii());
    format!("{}.{:x}@{}", base36(date_ms), nonce, domain.unwrap_or("mailplug.invalid"))
}

fn check_attachment(a: &OutgoingAttachment) -> Result<()> {
    check_header_value("attachment name", &a.name)?;
    let bad_name = |why: &str| {
        let shown: String = a.name.chars().take(120).collect();
        Err(Error::invalid(Stage::Data, format!("the attachment name {shown:?} is not valid: {why}; rename the file")))
    };
    if a.name.trim().is_empty() {
        return bad_name("it is empty");
    }
    if a.name.chars().count() > 255 {
        return bad_name("it is longer than 255 characters");
    }
    if a.name.chars().any(char::is_control) {
        return bad_name("it contains a control character");
    }
    if a.name.contains(['/', '\\']) {
        return bad_name("it contains '/' or '\\'; give the file name without its folder");
    }
    check_header_value("attachment media type", &a.media_type)?;
    if !is_media_type(&a.media_type) {
        let shown: String = a.media_type.chars().take(120).collect();
        return Err(Error::invalid(
            Stage::Data,
            format!(
                "the media type {shown:?} of attachment {:?} is not valid; use type/subtype such as \
                 application/pdf (application/octet-stream when unknown)",
                a.name.chars().take(120).collect::<String>()
            ),
        ));
    }
    Ok(())
}

/// `type/subtype` made of RFC 2045 token characters, no parameters. Multipart types are
/// refused: an attachment is one opaque part.
fn is_media_type(value: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.len() <= 127
            && t.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
    };
    match value.split_once('/') {
        Some((kind, subtype)) => token(kind) && token(subtype) && !kind.eq_ignore_ascii_case("multipart"),
        None => false,
    }
}

/// text/plain; with HTML multipart/alternative; with attachments all of that inside multipart/mixed.
fn reply_body<'x>(
    text: &'x str,
    html: Option<&'x str>,
    attachments: &'x [OutgoingAttachment],
    date_ms: u64,
    nonce: u64,
) -> MimePart<'x> {
    // Parts that may be written unencoded (7bit) could contain a boundary line; check those.
    let mut unencoded: Vec<&str> = vec![text];
    unencoded.extend(html);
    unencoded.extend(
        attachments
            .iter()
            .filter(|a| a.media_type.to_ascii_lowercase().starts_with("text/"))
            .filter_map(|a| std::str::from_utf8(&a.bytes).ok()),
    );

    let text_part = MimePart::new("text/plain", BodyPart::Text(Cow::Borrowed(text)));
    let main = match html {
        Some(html) => MimePart::new(
            ContentType::new("multipart/alternative").attribute("boundary", boundary("alt", date_ms, nonce, &unencoded)),
            vec![text_part, MimePart::new("text/html", BodyPart::Text(Cow::Borrowed(html)))],
        ),
        None => text_part,
    };
    if attachments.is_empty() {
        return main;
    }
    let mut parts = Vec::with_capacity(attachments.len() + 1);
    parts.push(main);
    for a in attachments {
        let media_type = ContentType::new(a.media_type.to_ascii_lowercase());
        parts.push(MimePart::new(media_type, BodyPart::Binary(Cow::Borrowed(&a.bytes))).attachment(a.name.as_str()));
    }
    MimePart::new(
        ContentType::new("multipart/mixed").attribute("boundary", boundary("mix", date_ms, nonce, &unencoded)),
        parts,
    )
}

/// A MIME boundary from the date and nonce. "=_" never occurs in quoted-printable or base64
/// output, so only parts written as they are need checking.
fn boundary(kind: &str, date_ms: u64, nonce: u64, unencoded: &[&str]) -> String {
    let base = format!("=_{kind}_{}_{:x}", base36(date_ms), nonce);
    if !unencoded.iter().any(|t| t.contains(&base)) {
        return base;
    }
    // Only a body crafted to collide gets here; each candidate is distinct, so this ends.
    (1u64..)
        .map(|salt| format!("{base}_{salt}"))
        .find(|candidate| !unencoded.iter().any(|t| t.contains(candidate.as_str())))
        .unwrap_or(base)
}

/// The Subject of a reply: exactly one "Re: " in front of the original subject, after removing
/// any chain of reply prefixes ("Re:", "RE[2]:", "AW:", "SV:", "Antw:", "R:", "Odp:", "Vá:",
/// "回复：", ...). Forward markers ("Fwd:", "WG:") stay. Control characters are flattened.
pub fn reply_subject(original: Option<&str>) -> String {
    let flat = flatten_header_text(original.unwrap_or_default());
    let mut rest = flat.trim();
    while let Some(after) = strip_reply_prefix(rest) {
        rest = after.trim_start();
    }
    let rest = rest.trim_end();
    if rest.is_empty() {
        "Re: (no subject)".to_string()
    } else {
        format!("Re: {rest}")
    }
}

/// Reply abbreviations, lower case: English, German (AW, Antw, Antwort), Dutch (Antw),
/// Scandinavian (SV), Finnish (VS), Italian (R, RIF), Polish (Odp), Hungarian (Vá), Turkish
/// (Ynt), Portuguese (RES), Croatian (Odg), Latvian/Lithuanian (Atb, Ats), Russian, Greek, Chinese.
const REPLY_PREFIXES: &[&str] = &[
    "re", "aw", "antw", "antwort", "sv", "vs", "r", "rif", "odp", "vá", "ynt", "res", "odg", "atb", "ats", "отв",
    "ответ", "απ", "σχετ", "回复", "回覆", "答复",
];

/// `rest` after one leading `Word:`, `Word[n]:`, `Word(n):` or `Word :` reply prefix.
fn strip_reply_prefix(subject: &str) -> Option<&str> {
    let word_end = subject.find(|c: char| !c.is_alphabetic()).unwrap_or(subject.len());
    let (word, mut rest) = subject.split_at(word_end);
    if word.is_empty() || !REPLY_PREFIXES.contains(&word.to_lowercase().as_str()) {
        return None;
    }
    // A reply counter: "Re[2]:", "Re(3):".
    for (open, close) in [('[', ']'), ('(', ')')] {
        if let Some(inner) = rest.strip_prefix(open) {
            let digits_end = inner.find(|c: char| !c.is_ascii_digit()).unwrap_or(inner.len());
            let (digits, after) = inner.split_at(digits_end);
            rest = after.strip_prefix(close).filter(|_| !digits.is_empty())?;
        }
    }
    let rest = rest.trim_start();
    rest.strip_prefix(':').or_else(|| rest.strip_prefix('：'))
}

/// At most `max` ids and at most `MAX_REFERENCES_CHARS` characters as written ("<id> <id>"),
/// keeping the first id (the thread root) and as many of the newest as fit; the middle goes.
/// Ids are without angle brackets.
pub fn trim_references(ids: &[String], max: usize) -> Vec<String> {
    let Some((root, rest)) = ids.split_first() else {
        return Vec::new();
    };
    if max == 0 {
        return Vec::new();
    }
    // Brackets plus the separating space.
    let written = |id: &String| id.chars().count() + 3;
    let mut budget = MAX_REFERENCES_CHARS.saturating_sub(written(root));
    let mut newest: Vec<&String> = Vec::new();
    for id in rest.iter().rev() {
        if newest.len() + 1 >= max || written(id) > budget {
            break;
        }
        budget -= written(id);
        newest.push(id);
    }
    std::iter::once(root).chain(newest.into_iter().rev()).cloned().collect()
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

/// The message as SMTP DATA carries it (once the server removed the dot-stuffing): every line
/// end CRLF, the last line ended too (DATA ends the last line, `smtp::data`). Composing these
/// exact bytes makes the copy `save-copy` APPENDs byte for byte the message that was sent,
/// also when a body does not end with a line break. Already clean bytes are not copied.
fn as_sent(raw: Vec<u8>) -> Vec<u8> {
    let clean = raw.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => raw.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && raw[i - 1] == b'\r',
        _ => true,
    });
    let mut out = if clean {
        raw
    } else {
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
        let mut i = 0;
        while i < raw.len() {
            match raw[i] {
                b'\r' => {
                    out.extend_from_slice(b"\r\n");
                    i += if raw.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                }
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        out
    };
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Bare CR, bare LF and CRLF all become CRLF; text that already has only CRLF is not copied.
fn crlf_text(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let clean = bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && bytes.get(i - 1) == Some(&b'\r'),
        _ => true,
    });
    if clean {
        return Cow::Borrowed(text);
    }
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
    Cow::Owned(out)
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

    // ---- replies ----

    use crate::plan::{Plan, Text};
    use mail_parser::{MessageParser, MimeHeaders, PartType};

    fn plan() -> Plan {
        Plan {
            from: Mailbox { name: Some("Shop Support".into()), address: "support@shop.example".into() },
            sender: Some(Mailbox { name: None, address: "relay@mail.example".into() }),
            reply_to: Some(Mailbox { name: Some("Shop Tickets".into()), address: "tickets@shop.example".into() }),
            envelope_from: "bounces@shop.example".into(),
            customer_sees: Text::new("Shop Support", "Shop Support"),
            warnings: Vec::new(),
        }
    }

    const ORIGINAL: &[u8] = b"From: Ann Lee <ann@example.com>\r\n\
        To: support@shop.example\r\n\
        Subject: RE: Aw: Where is my order?\r\n\
        Date: Mon, 20 Nov 2023 11:00:00 +0000\r\n\
        Message-ID: <m3@example.com>\r\n\
        In-Reply-To: <m2@shop.example>\r\n\
        References: <m1@example.com> <m2@shop.example>\r\n\
        \r\n\
        Hello?\r\n";

    /// Leaks its inputs so tests can keep the draft around; fine for a test process.
    fn reply(original: &[u8], plan: &Plan) -> ReplyDraft<'static> {
        ReplyDraft {
            original: Box::leak(original.to_vec().into_boxed_slice()),
            plan: Box::leak(Box::new(plan.clone())),
            text_body: "Hi Ann,\nit ships today.\n".into(),
            html_body: None,
            attachments: Vec::new(),
            date_ms: 1_700_000_000_123,
            force: false,
        }
    }

    /// Root header names as mail-parser sees them, in order.
    fn header_names(raw: &[u8]) -> Vec<String> {
        let m = MessageParser::default().parse(raw).expect("the composed reply parses");
        m.headers_raw().map(|(name, _)| name.to_string()).collect()
    }

    fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
        headers.iter().find(|(h, _)| h.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn invalid_data(e: &Error) -> bool {
        e.kind == ErrorKind::InvalidInput && !e.message.contains('\r') && !e.message.contains('\n')
    }

    #[test]
    fn reply_has_exactly_the_threading_and_sender_headers() {
        let c = compose_reply(&reply(ORIGINAL, &plan()), 0xabc).unwrap();
        assert_eq!(
            header_names(&c.raw),
            [
                "From", "Sender", "Reply-To", "To", "Subject", "Date", "Message-ID", "In-Reply-To", "References",
                "MIME-Version", "Content-Type", "Content-Transfer-Encoding"
            ]
        );
        let (headers, body) = parse(&c.raw);
        assert_eq!(header(&headers, "From"), Some("\"Shop Support\" <support@shop.example>"));
        assert_eq!(header(&headers, "Sender"), Some("<relay@mail.example>"));
        assert_eq!(header(&headers, "Reply-To"), Some("\"Shop Tickets\" <tickets@shop.example>"));
        assert_eq!(header(&headers, "To"), Some("\"Ann Lee\" <ann@example.com>"));
        assert_eq!(header(&headers, "Subject"), Some("Re: Where is my order?"));
        assert_eq!(header(&headers, "Date"), Some("Tue, 14 Nov 2023 22:13:20 +0000"));
        assert_eq!(header(&headers, "In-Reply-To"), Some("<m3@example.com>"));
        assert_eq!(header(&headers, "References"), Some("<m1@example.com> <m2@shop.example> <m3@example.com>"));
        assert_eq!(c.message_id, format!("{}.abc@shop.example", base36(1_700_000_000_123)));
        assert_eq!(header(&headers, "Message-ID"), Some(format!("<{}>", c.message_id).as_str()));
        assert!(header(&headers, "Content-Type").unwrap().starts_with("text/plain"));
        assert_eq!(body, "Hi Ann,\r\nit ships today.\r\n");
        assert_eq!(c.envelope_from, "bounces@shop.example");
        assert_eq!(c.envelope_to, ["ann@example.com"]);
    }

    #[test]
    fn sender_and_reply_to_are_written_only_when_planned() {
        let mut p = plan();
        p.sender = None;
        p.reply_to = None;
        let c = compose_reply(&reply(ORIGINAL, &p), 1).unwrap();
        let names = header_names(&c.raw);
        assert!(!names.iter().any(|n| n == "Sender" || n == "Reply-To"), "{names:?}");
        assert_eq!(names.first().map(String::as_str), Some("From"));
    }

    #[test]
    fn reply_goes_to_all_reply_to_addresses_once_else_to_from() {
        let original = b"From: Ann <ann@example.com>\r\n\
            Reply-To: Team <team@example.com>, Bob <BOB@example.net>, bob@example.net, TEAM@Example.com\r\n\
            Subject: x\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n";
        let c = compose_reply(&reply(original, &plan()), 1).unwrap();
        assert_eq!(c.envelope_to, ["team@example.com", "BOB@example.net"]);
        let (headers, _) = parse(&c.raw);
        assert_eq!(header(&headers, "To"), Some("\"Team\" <team@example.com>, \"Bob\" <BOB@example.net>"));

        let original = b"From: Ann <ann@example.com>, carl@example.org\r\nSubject: x\r\n\r\nbody\r\n";
        let c = compose_reply(&reply(original, &plan()), 1).unwrap();
        assert_eq!(c.envelope_to, ["ann@example.com", "carl@example.org"]);
    }

    #[test]
    fn original_without_any_address_is_refused() {
        let original = b"Subject: who am I\r\nTo: support@shop.example\r\n\r\nbody\r\n";
        let e = compose_reply(&reply(original, &plan()), 1).unwrap_err();
        assert!(invalid_data(&e), "{e:?}");
        assert_eq!(e.stage, Stage::Envelope);
        assert!(e.message.contains("Reply-To") && e.message.contains("From"), "{}", e.message);
    }

    #[test]
    fn synthetic_message_id_is_not_threaded_on() {
        // No Message-ID: parse invents one for the store; the customer's client never saw it.
        let original = b"From: ann@example.com\r\nSubject: hi\r\nReferences: <root@example.com>\r\n\r\nbody\r\n";
        let c = compose_reply(&reply(original, &plan()), 1).unwrap();
        let names = header_names(&c.raw);
        assert!(!names.iter().any(|n| n == "In-Reply-To"), "{names:?}");
        let (headers, _) = parse(&c.raw);
        assert_eq!(header(&headers, "References"), Some("<root@example.com>"));
        assert!(!String::from_utf8_lossy(&c.raw).contains("mailplug.invalid"));

        let original = b"From: ann@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
        let names = header_names(&compose_reply(&reply(original, &plan()), 1).unwrap().raw);
        assert!(!names.iter().any(|n| n == "In-Reply-To" || n == "References"), "{names:?}");
    }

    #[test]
    fn robots_are_refused_unless_forced() {
        let robots: [(&[u8], &str); 3] = [
            (b"From: ann@example.com\r\nAuto-Submitted: auto-replied\r\nSubject: Out of office\r\nMessage-ID: <o@x>\r\n\r\nAway.\r\n", "automatic reply"),
            (b"From: news@example.com\r\nList-Id: <deals.example.com>\r\nSubject: Deals\r\nMessage-ID: <n@x>\r\n\r\nBuy.\r\n", "bulk"),
            (b"From: MAILER-DAEMON@mx.example.com\r\nSubject: Undeliverable: hi\r\nMessage-ID: <d@x>\r\n\r\nSorry.\r\n", "bounce"),
        ];
        for (original, what) in robots {
            let mut d = reply(original, &plan());
            let e = compose_reply(&d, 1).unwrap_err();
            assert!(invalid_data(&e), "{e:?}");
            assert_eq!(e.stage, Stage::Data);
            assert!(e.message.contains(what) && e.message.contains("force"), "{}", e.message);
            d.force = true;
            let c = compose_reply(&d, 1).unwrap();
            assert_eq!(c.envelope_to.len(), 1);
        }
    }

    #[test]
    fn unparseable_original_is_invalid_input() {
        for original in [&b""[..], b"hello world", b"\0\0\0\0"] {
            let e = compose_reply(&reply(original, &plan()), 1).unwrap_err();
            assert!(invalid_data(&e), "{e:?}");
            assert!(e.message.contains("could not be read"), "{}", e.message);
        }
    }

    /// Every header of the composed reply, as (name, raw value), from mail-parser.
    fn raw_headers(raw: &[u8]) -> Vec<(String, String)> {
        let m = MessageParser::default().parse(raw).unwrap();
        m.headers_raw().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    const INTENDED: [&str; 12] = [
        "From", "Sender", "Reply-To", "To", "Subject", "Date", "Message-ID", "In-Reply-To", "References", "MIME-Version",
        "Content-Type", "Content-Transfer-Encoding",
    ];

    #[test]
    fn hostile_subject_and_reply_to_name_are_flattened() {
        // Encoded words survive unfolding and decode to CR LF: the classic way to smuggle a Bcc.
        let original = b"From: ann@example.com\r\n\
            Reply-To: =?utf-8?q?Evil=0D=0ABcc:_x@evil.example?= <ann@example.com>\r\n\
            Subject: =?utf-8?q?Hi=0D=0ABcc:_x@evil.example?=\r\n\
            Message-ID: <ok@example.com>\r\n\r\nbody\r\n";
        let parsed = parse_message(original).unwrap();
        assert_eq!(parsed.subject.as_deref(), Some("Hi\r\nBcc: x@evil.example"), "the attack reaches us");
        let c = compose_reply(&reply(original, &plan()), 1).unwrap();
        let m = MessageParser::default().parse(&c.raw[..]).unwrap();
        assert_eq!(m.subject(), Some("Re: Hi Bcc: x@evil.example"));
        assert_eq!(m.to().and_then(|a| a.first()).and_then(|a| a.name()), Some("Evil Bcc: x@evil.example"));
        assert!(m.bcc().is_none());
        let names = header_names(&c.raw);
        assert!(names.iter().all(|n| INTENDED.contains(&n.as_str())), "{names:?}");
        assert_eq!(c.envelope_to, ["ann@example.com"]);
    }

    #[test]
    fn hostile_ids_are_dropped_not_written() {
        let original = b"From: ann@example.com\r\n\
            Message-ID: <bad id@example.com>\r\n\
            References: <root@example.com> <two words@x> <fine@example.com>\r\n\
            Subject: hi\r\n\r\nbody\r\n";
        let parsed = parse_message(original).unwrap();
        assert_eq!(parsed.message_id, "bad id@example.com", "the hostile id reaches us");
        assert!(parsed.references.iter().any(|r| r == "two words@x"));
        let c = compose_reply(&reply(original, &plan()), 1).unwrap();
        let headers = raw_headers(&c.raw);
        assert!(headers.iter().all(|(n, _)| INTENDED.contains(&n.as_str())), "{headers:?}");
        let refs = header(&headers, "References").unwrap_or_default();
        for id in refs.split_whitespace() {
            let id = id.strip_prefix('<').and_then(|i| i.strip_suffix('>')).expect("bracketed id");
            assert!(check_message_id("References", id).is_ok(), "{id:?} written");
        }
        assert!(!refs.contains("words") && !refs.contains("bad"), "{refs:?}");
        assert_eq!(refs.trim(), "<root@example.com> <fine@example.com>");
        assert!(header(&headers, "In-Reply-To").is_none(), "{headers:?}");

        // The same rules applied to ids as parse could hand them over.
        let ids: Vec<String> = ["root@x", "a\r\nBcc: x@evil", "b c@x", "nul\0@x", "<d@x>", "", "ok@x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(reply_references(&ids, Some("m@x")), ["root@x", "ok@x", "m@x"]);
        assert_eq!(reply_references(&["m@x".into(), "root@x".into(), "root@x".into()], Some("m@x")), ["root@x", "m@x"]);
        assert_eq!(reply_references(&[], None), Vec::<String>::new());
    }

    #[test]
    fn hostile_reply_addresses_are_refused() {
        let mut parsed = parse_message(ORIGINAL).unwrap();
        for bad in ["ann@example.com\r\nBcc: x@evil.example", "ann@example.com\nx", "a b@example.com", "a,b@example.com"] {
            parsed.reply_to = vec![crate::parse::Address { name: None, address: bad.to_string() }];
            let e = reply_recipients(&parsed).unwrap_err();
            assert!(invalid_data(&e), "{e:?}");
            assert_eq!(e.stage, Stage::Envelope);
            assert!(e.message.contains("Reply-To"), "{}", e.message);
        }
        parsed.reply_to = vec![crate::parse::Address { name: Some("A\r\nBcc: x@evil".into()), address: "a@b.example".into() }];
        assert_eq!(reply_recipients(&parsed).unwrap(), [Mailbox { name: Some("A Bcc: x@evil".into()), address: "a@b.example".into() }]);
    }

    #[test]
    fn hostile_plan_values_are_refused() {
        let cases: [fn(&mut Plan); 5] = [
            |p| p.from.name = Some("Shop\r\nBcc: x@evil.example".into()),
            |p| p.from.address = "support@shop.example\r\nBcc: x@evil.example".into(),
            |p| p.sender = Some(Mailbox { name: None, address: "a@b\nc".into() }),
            |p| p.reply_to = Some(Mailbox { name: Some("x\0".into()), address: "t@shop.example".into() }),
            |p| p.envelope_from = "bounces@shop.example>\r\nRCPT TO:<x@evil.example".into(),
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut p = plan();
            mutate(&mut p);
            let e = compose_reply(&reply(ORIGINAL, &p), 1).unwrap_err();
            assert!(invalid_data(&e), "case {i}: {e:?}");
        }
    }

    fn attachment(name: &str, media_type: &str, bytes: &[u8]) -> OutgoingAttachment {
        OutgoingAttachment { name: name.into(), media_type: media_type.into(), bytes: bytes.to_vec() }
    }

    #[test]
    fn html_and_attachments_make_mixed_with_alternative_inside() {
        let mut d = reply(ORIGINAL, &plan());
        d.html_body = Some("<p>Hi Ann,<br>it ships today.</p>\n".into());
        let pdf: Vec<u8> = (0u8..=255).cycle().take(3000).collect();
        d.attachments = vec![attachment("Rechnung Nr. 5 – März.pdf", "Application/PDF", &pdf), attachment("notes.txt", "text/plain", b"a\r\nb\r\n")];
        let c = compose_reply(&d, 7).unwrap();
        let m = MessageParser::default().parse(&c.raw[..]).unwrap();

        let root = m.root_part();
        assert!(root.is_content_type("multipart", "mixed"));
        let children = root.sub_parts().unwrap();
        assert_eq!(children.len(), 3);
        let alternative = m.part(children[0]).unwrap();
        assert!(alternative.is_content_type("multipart", "alternative"));
        let alt_children = alternative.sub_parts().unwrap();
        assert_eq!(alt_children.len(), 2);
        assert!(m.part(alt_children[0]).unwrap().is_content_type("text", "plain"));
        assert!(m.part(alt_children[1]).unwrap().is_content_type("text", "html"));
        assert_eq!(m.body_text(0).as_deref(), Some("Hi Ann,\r\nit ships today.\r\n"));
        assert_eq!(m.body_html(0).as_deref(), Some("<p>Hi Ann,<br>it ships today.</p>\r\n"));

        let file = m.part(children[1]).unwrap();
        assert!(file.is_content_type("application", "pdf"));
        assert_eq!(file.attachment_name(), Some("Rechnung Nr. 5 – März.pdf"));
        assert_eq!(file.contents(), &pdf[..]);
        let notes = m.part(children[2]).unwrap();
        assert_eq!(notes.attachment_name(), Some("notes.txt"));
        assert!(matches!(&notes.body, PartType::Text(t) if t == "a\r\nb\r\n"), "{:?}", notes.body);
        assert_eq!(m.attachment_count(), 2);
    }

    #[test]
    fn html_without_attachments_is_alternative_and_text_with_attachment_is_mixed() {
        let mut d = reply(ORIGINAL, &plan());
        d.html_body = Some("<p>Hi</p>".into());
        let m_raw = compose_reply(&d, 7).unwrap().raw;
        let m = MessageParser::default().parse(&m_raw[..]).unwrap();
        assert!(m.root_part().is_content_type("multipart", "alternative"));
        assert_eq!(m.root_part().sub_parts().unwrap().len(), 2);

        let mut d = reply(ORIGINAL, &plan());
        d.attachments = vec![attachment("a.bin", "application/octet-stream", b"\0\x01\x02")];
        let raw = compose_reply(&d, 7).unwrap().raw;
        let m = MessageParser::default().parse(&raw[..]).unwrap();
        assert!(m.root_part().is_content_type("multipart", "mixed"));
        let children = m.root_part().sub_parts().unwrap();
        assert!(m.part(children[0]).unwrap().is_content_type("text", "plain"));
        assert_eq!(m.part(children[1]).unwrap().contents(), b"\0\x01\x02");
    }

    #[test]
    fn replies_are_deterministic_so_no_clock_or_entropy_is_read() {
        let mut d = reply(ORIGINAL, &plan());
        d.html_body = Some("<p>Hi</p>".into());
        d.attachments = vec![attachment("a.bin", "application/octet-stream", b"xyz")];
        assert_eq!(compose_reply(&d, 9).unwrap().raw, compose_reply(&d, 9).unwrap().raw);
        assert_ne!(compose_reply(&d, 9).unwrap().raw, compose_reply(&d, 10).unwrap().raw);
    }

    #[test]
    fn a_body_containing_the_boundary_gets_another_boundary() {
        let mut d = reply(ORIGINAL, &plan());
        let base = format!("=_alt_{}_{:x}", base36(d.date_ms), 5);
        d.text_body = format!("--{base}\r\nContent-Type: text/html\r\n\r\nforged\r\n--{base}_1\r\n");
        d.html_body = Some("<p>real</p>".into());
        let c = compose_reply(&d, 5).unwrap();
        let m = MessageParser::default().parse(&c.raw[..]).unwrap();
        assert_eq!(m.root_part().sub_parts().unwrap().len(), 2);
        assert_eq!(m.body_text(0).as_deref(), Some(d.text_body.as_str()));
        assert_eq!(m.body_html(0).as_deref(), Some("<p>real</p>"));
        assert!(String::from_utf8_lossy(&c.raw).contains(&format!("boundary=\"{base}_2\"")));
    }

    #[test]
    fn attachment_names_and_media_types_are_validated() {
        let bad = [
            attachment("", "application/pdf", b"x"),
            attachment("  ", "application/pdf", b"x"),
            attachment("a\r\nBcc: x@evil.pdf", "application/pdf", b"x"),
            attachment("a\tb.pdf", "application/pdf", b"x"),
            attachment("../etc/passwd", "text/plain", b"x"),
            attachment("C:\\x.pdf", "application/pdf", b"x"),
            attachment(&"n".repeat(256), "application/pdf", b"x"),
            attachment("a.pdf", "pdf", b"x"),
            attachment("a.pdf", "application/", b"x"),
            attachment("a.pdf", "/pdf", b"x"),
            attachment("a.pdf", "application/pdf; name=x", b"x"),
            attachment("a.pdf", "application/pdf\r\nBcc: x@evil", b"x"),
            attachment("a.pdf", "application/p/df", b"x"),
            attachment("a.pdf", "multipart/mixed", b"x"),
            attachment("a.pdf", "applicätion/pdf", b"x"),
        ];
        for a in bad {
            let mut d = reply(ORIGINAL, &plan());
            d.attachments = vec![attachment("fine.txt", "text/plain", b"ok"), a.clone()];
            let e = compose_reply(&d, 1).unwrap_err();
            assert!(invalid_data(&e), "{a:?}: {e:?}");
        }
        for media_type in ["application/pdf", "image/svg+xml", "application/vnd.ms-excel", "message/rfc822"] {
            let mut d = reply(ORIGINAL, &plan());
            d.attachments = vec![attachment("Ärger (1).pdf", media_type, b"x")];
            assert!(compose_reply(&d, 1).is_ok(), "{media_type}");
        }
    }

    #[test]
    fn reply_subject_normalisation() {
        let table: &[(Option<&str>, &str)] = &[
            (Some("Where is my order?"), "Re: Where is my order?"),
            (Some("Re: Where is my order?"), "Re: Where is my order?"),
            (Some("RE: re: Re:Where"), "Re: Where"),
            (Some("Re:Re:Re: x"), "Re: x"),
            (Some("Re[2]: x"), "Re: x"),
            (Some("RE(3): Re [2]: x"), "Re: Re [2]: x"),
            (Some("Re : x"), "Re: x"),
            (Some("AW: Aw: aw: x"), "Re: x"),
            (Some("SV: VS: R: RIF: x"), "Re: x"),
            (Some("Antw: Antwort: Odp: ODP: x"), "Re: x"),
            (Some("Vá: VÁ: x"), "Re: x"),
            (Some("ΑΠ: Отв: x"), "Re: x"),
            (Some("回复：会议"), "Re: 会议"),
            (Some("Re: Fwd: x"), "Re: Fwd: x"),
            (Some("AW: WG: Angebot"), "Re: WG: Angebot"),
            (Some("Fwd: Re: x"), "Re: Fwd: Re: x"),
            (Some("Rechnung: 42"), "Re: Rechnung: 42"),
            (Some("Regarding: x"), "Re: Regarding: x"),
            (Some("Re[]: x"), "Re: Re[]: x"),
            (Some("Re[2: x"), "Re: Re[2: x"),
            (Some("Rex"), "Re: Rex"),
            (Some("  padded  "), "Re: padded"),
            (Some("Hi\r\nBcc: x@evil.example"), "Re: Hi Bcc: x@evil.example"),
            (Some(""), "Re: (no subject)"),
            (Some("   "), "Re: (no subject)"),
            (Some("Re:"), "Re: (no subject)"),
            (Some("RE: AW:  "), "Re: (no subject)"),
            (None, "Re: (no subject)"),
        ];
        for (input, expected) in table {
            assert_eq!(reply_subject(*input), *expected, "{input:?}");
        }
    }

    fn ids(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("id{i}@example.com")).collect()
    }

    #[test]
    fn trim_references_keeps_the_root_and_the_newest() {
        assert_eq!(trim_references(&ids(0..3), 20), ids(0..3));
        let trimmed = trim_references(&ids(0..30), 20);
        assert_eq!(trimmed.len(), 20);
        assert_eq!(trimmed[0], "id0@example.com");
        assert_eq!(trimmed[1..], ids(11..30)[..]);
        assert_eq!(trim_references(&ids(0..30), 1), ids(0..1));
        assert_eq!(trim_references(&ids(0..30), 0), Vec::<String>::new());
        assert_eq!(trim_references(&[], 20), Vec::<String>::new());
    }

    #[test]
    fn trim_references_respects_the_character_budget() {
        let long: Vec<String> = (0..20).map(|i| format!("{i:02}{}@example.com", "x".repeat(80))).collect();
        let trimmed = trim_references(&long, 20);
        let written = trimmed.iter().map(|id| format!("<{id}>")).collect::<Vec<_>>().join(" ");
        assert!(written.len() <= MAX_REFERENCES_CHARS, "{}", written.len());
        // 97 characters per id (94 + brackets + space): the root and the 8 newest fit in 900.
        assert_eq!(trimmed.len(), 9);
        assert_eq!(trimmed[0], long[0]);
        assert_eq!(trimmed[1..], long[12..]);
    }

    #[test]
    fn compose_reply_trims_a_long_thread() {
        let refs: String = ids(0..40).iter().map(|id| format!("<{id}> ")).collect();
        let original = format!("From: ann@example.com\r\nMessage-ID: <last@example.com>\r\nReferences: {refs}\r\nSubject: x\r\n\r\nb\r\n");
        let c = compose_reply(&reply(original.as_bytes(), &plan()), 1).unwrap();
        let (headers, _) = parse(&c.raw);
        let written: Vec<&str> = header(&headers, "References").unwrap().split_whitespace().collect();
        assert_eq!(written.len(), MAX_REFERENCES);
        assert_eq!(written[0], "<id0@example.com>");
        assert_eq!(written[MAX_REFERENCES - 2], "<id39@example.com>");
        assert_eq!(written[MAX_REFERENCES - 1], "<last@example.com>");
    }

    #[test]
    fn message_id_domain_falls_back_when_not_ascii() {
        assert_eq!(new_message_id(36, 255, "a@shop.example"), "10.ff@shop.example");
        assert_eq!(new_message_id(36, 255, "a@bücher.example"), "10.ff@mailplug.invalid");
    }

    #[test]
    fn crlf_text_copies_only_when_it_must() {
        assert!(matches!(crlf_text("a\r\nb\r\n"), Cow::Borrowed(_)));
        assert!(matches!(crlf_text("plain"), Cow::Borrowed(_)));
        assert_eq!(crlf_text("\na\rb\r\n"), "\r\na\r\nb\r\n");
        assert_eq!(crlf_text("a\n"), "a\r\n");
    }

    /// The bytes a server stores from DATA: the payload without the final ".\r\n" and with
    /// the dot-stuffing removed.
    fn as_received_by_smtp(raw: &[u8]) -> Vec<u8> {
        let data = crate::smtp::encode_data(raw);
        let payload = data.strip_suffix(b".\r\n").expect("DATA ends with .CRLF");
        let mut out = Vec::with_capacity(payload.len());
        for line in payload.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn composed_bytes_are_exactly_what_data_carries_also_without_a_final_newline() {
        // What mail-builder writes may end without a line break and hold bare LFs (a text
        // attachment written as it is); the composed message must be what DATA sends, so the
        // copy saved with APPEND is byte for byte the sent message.
        let texts = ["Thanks!", "Grüße aus Köln", "line one\nline two", ".a dot line\nlast", "ends\r\n"];
        for text in texts {
            let mut d = draft();
            d.text_body = text.into();
            let c = compose(&d, 7).unwrap();
            assert!(c.raw.ends_with(b"\r\n"), "{text:?}: {:?}", String::from_utf8_lossy(&c.raw));
            assert_eq!(as_received_by_smtp(&c.raw), c.raw, "{text:?}");

            let mut r = reply(ORIGINAL, &plan());
            r.text_body = text.into();
            let plain = compose_reply(&r, 9).unwrap();
            r.html_body = Some("<p>no newline</p>".into());
            let html = compose_reply(&r, 9).unwrap();
            r.attachments = vec![OutgoingAttachment {
                name: "notes.txt".into(),
                media_type: "text/plain".into(),
                bytes: b"first\nsecond\rthird".to_vec(),
            }];
            let attached = compose_reply(&r, 9).unwrap();
            for c in [plain, html, attached] {
                assert!(c.raw.ends_with(b"\r\n"), "{text:?}: {:?}", String::from_utf8_lossy(&c.raw));
                assert_eq!(as_received_by_smtp(&c.raw), c.raw, "{text:?}: {:?}", String::from_utf8_lossy(&c.raw));
            }
        }
        // A message that already ends with CRLF gets nothing more.
        assert_eq!(as_sent(b"a\r\n\r\nb\r\n".to_vec()), b"a\r\n\r\nb\r\n");
        assert_eq!(as_sent(b"a\r\n\r\nb".to_vec()), b"a\r\n\r\nb\r\n");
        assert_eq!(as_sent(b"a\n\nb\rc".to_vec()), b"a\r\n\r\nb\r\nc\r\n");
    }
}
