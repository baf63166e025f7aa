//! Turns the raw bytes of a delivered message into what a contact-center host needs: ids for
//! threading, addresses, decoded subject and bodies, attachments, and a classification that
//! tells the host whether a robot sent it (robots must never be auto-answered).
//!
//! Parsing is best effort and never fails on a message that has a header section; anything odd
//! (unknown charsets, broken encodings) becomes a warning. Only bytes that are not a message at
//! all are refused, and the host then stores them raw.

use std::borrow::Cow;

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::decoders::html::html_to_text;
use mail_parser::{
    Address as ParsedAddress, Addr, Encoding, Header, HeaderName, HeaderValue, Message, MessageParser, MessagePart,
    MimeHeaders, PartType,
};
use sha2::{Digest, Sha256};

/// A display name and an address from From, Reply-To, To or Cc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub name: Option<String>,
    pub address: String,
}

/// A MIME part that is not the message body: a file, an inline image, an attached message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// File name without any directory part, decoded (RFC 2231 / RFC 2047).
    pub name: Option<String>,
    /// `type/subtype`, lower case, without parameters.
    pub media_type: String,
    pub size: u64,
    /// Without angle brackets; what `cid:` URLs in the HTML body refer to.
    pub content_id: Option<String>,
    /// The decoded content. Text attachments (text/*) arrive converted to UTF-8.
    pub bytes: Vec<u8>,
}

/// Who sent the message, as far as the headers tell. Anything but `Normal` is a robot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classification {
    Normal,
    /// Out-of-office and other automatic responses.
    AutoReply,
    /// Newsletters and mailing lists.
    Bulk,
    /// Delivery status notifications: a message we sent did not arrive.
    Bounce,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedMessage {
    /// Without angle brackets; a stable synthetic one when the message has none.
    pub message_id: String,
    pub message_id_synthetic: bool,
    /// Ids without angle brackets.
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub from: Vec<Address>,
    pub reply_to: Vec<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    /// Decoded UTF-8.
    pub subject: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub date_ms: Option<i64>,
    /// UTF-8; derived from the HTML body when the message has no plain-text body.
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub attachments: Vec<Attachment>,
    pub classification: Classification,
    /// What could not be decoded cleanly, for the admin; the message is still usable.
    pub warnings: Vec<String>,
}

/// Never panics, whatever the bytes. Err(reason) when the bytes are not a message at all (empty,
/// no header section, binary garbage): the host then stores the raw bytes with that reason.
pub fn parse_message(raw: &[u8]) -> Result<ParsedMessage, String> {
    // mail-parser has debug assertions that malformed MIME can reach (see the test
    // `mail_parser_debug_assertion_is_contained`). Release builds compile them out; builds that
    // unwind get a refusal here instead of a crash.
    std::panic::catch_unwind(|| parse_structured(raw)).unwrap_or_else(|_| {
        Err("the MIME structure is too broken to parse; the raw bytes are kept as they are".to_string())
    })
}

fn parse_structured(raw: &[u8]) -> Result<ParsedMessage, String> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(EMPTY_MESSAGE.to_string());
    }
    let message = MessageParser::default().parse(raw).ok_or_else(not_a_message)?;
    let Some(root) = message.parts.first() else {
        return Err(not_a_message());
    };
    if !root.headers.iter().any(|h| is_header_field(h, raw)) {
        return Err(not_a_message());
    }

    let mut warnings = Vec::new();
    let (message_id, message_id_synthetic) =
        match message.header_values(HeaderName::MessageId).find_map(|v| message_ids(v).into_iter().next()) {
            Some(id) => (id, false),
            None => (synthetic_message_id(raw), true),
        };
    let in_reply_to = message_ids(message.in_reply_to());
    let references = message_ids(message.references());
    let from = addresses(message.from());
    let reply_to = addresses(message.reply_to());
    let to = message.all_to().flat_map(address_list).collect();
    let cc = message.all_cc().flat_map(address_list).collect();
    let subject = message.subject().map(str::to_string);
    let date_ms = date_ms(&message, &mut warnings);
    let classification = classify(&message, raw, &from, subject.as_deref());
    charset_warnings(&message, raw, &mut warnings);

    let (text_body, html_body, attachments) = take_contents(message, raw);
    Ok(ParsedMessage {
        message_id,
        message_id_synthetic,
        in_reply_to,
        references,
        from,
        reply_to,
        to,
        cc,
        subject,
        date_ms,
        text_body,
        html_body,
        attachments,
        classification,
        warnings,
    })
}

/// The stable synthetic Message-ID for raw bytes (without angle brackets): the SHA-256 of the
/// bytes, so the same message fetched twice (or by two hosts) gets the same id.
pub fn synthetic_message_id(raw: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(raw);
    let mut id = String::with_capacity(digest.len() * 2 + "@mailplug.invalid".len());
    for byte in digest {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    id.push_str("@mailplug.invalid");
    id
}

const EMPTY_MESSAGE: &str = "the server delivered an empty message (no bytes or only blank lines)";

fn not_a_message() -> String {
    "the bytes do not start with a header section (no \"Name: value\" line), so they are not an e-mail message; \
     the raw bytes are kept as they are"
        .to_string()
}

/// mail-parser accepts any text as a header name, even without a colon; a real message has at
/// least one `field-name:` made of printable ASCII (RFC 5322 section 2.2).
fn is_header_field(header: &Header<'_>, raw: &[u8]) -> bool {
    let ends_with_colon =
        (header.offset_start as usize).checked_sub(1).and_then(|colon| raw.get(colon)) == Some(&b':');
    let name_ok = match &header.name {
        HeaderName::Other(name) => !name.is_empty() && name.bytes().all(|b| matches!(b, b'!'..=b'9' | b';'..=b'~')),
        _ => true,
    };
    ends_with_colon && name_ok
}

/// Ids from Message-ID, In-Reply-To or References, without angle brackets.
fn message_ids(value: &HeaderValue<'_>) -> Vec<String> {
    let clean = |id: &str| {
        let id = id.trim().trim_start_matches('<').trim_end_matches('>').trim();
        (!id.is_empty()).then(|| id.to_string())
    };
    match value {
        HeaderValue::Text(id) => clean(id).into_iter().collect(),
        HeaderValue::TextList(ids) => ids.iter().filter_map(|id| clean(id)).collect(),
        _ => Vec::new(),
    }
}

fn addresses(value: Option<&ParsedAddress<'_>>) -> Vec<Address> {
    value.map(address_list).unwrap_or_default()
}

/// Flattens groups; entries without an address (e.g. `undisclosed-recipients:;`) are dropped.
fn address_list(value: &ParsedAddress<'_>) -> Vec<Address> {
    fn convert(addr: &Addr<'_>) -> Option<Address> {
        let address = addr.address.as_deref()?.trim();
        if address.is_empty() {
            return None;
        }
        let name = addr.name.as_deref().map(str::trim).filter(|n| !n.is_empty()).map(str::to_string);
        Some(Address { name, address: address.to_string() })
    }
    match value {
        ParsedAddress::List(list) => list.iter().filter_map(convert).collect(),
        ParsedAddress::Group(groups) => groups.iter().flat_map(|g| g.addresses.iter()).filter_map(convert).collect(),
    }
}

fn date_ms(message: &Message<'_>, warnings: &mut Vec<String>) -> Option<i64> {
    let header = message.header(HeaderName::Date)?;
    let date = header.as_datetime().filter(|d| d.is_valid());
    let ms = date.and_then(|d| d.to_timestamp().checked_mul(1000));
    if ms.is_none() {
        warnings.push("the Date header could not be read as an RFC 5322 date; the message has no date".to_string());
    }
    ms
}

/// Unfolded, trimmed values of every root header called `name` (case-insensitive), read from the
/// raw bytes so that headers mail-parser does not know are treated alike.
fn header_values<'r>(raw: &'r [u8], message: &'r Message<'_>, name: &'r str) -> impl Iterator<Item = String> + 'r {
    message.headers().iter().filter(move |h| header_name(h).eq_ignore_ascii_case(name)).map(move |h| {
        let bytes = raw.get(h.offset_start as usize..h.offset_end as usize).unwrap_or_default();
        String::from_utf8_lossy(bytes).split_whitespace().collect::<Vec<_>>().join(" ")
    })
}

fn header_name<'h>(header: &'h Header<'_>) -> &'h str {
    match &header.name {
        HeaderName::Other(name) => name.trim(),
        known => known.as_static_str(),
    }
}

fn has_header(message: &Message<'_>, name: &str) -> bool {
    message.headers().iter().any(|h| header_name(h).eq_ignore_ascii_case(name))
}

/// The leading keyword, lower case, without parameters or comments:
/// `Auto-Submitted: auto-replied; x=y` -> `auto-replied`, `No (manual)` -> `no`.
fn first_token(value: &str) -> String {
    let value = value.trim_start();
    let end = value.find(|c: char| matches!(c, ';' | ',' | '(') || c.is_whitespace()).unwrap_or(value.len());
    value.get(..end).unwrap_or_default().to_ascii_lowercase()
}

/// Order matters: strong bounce evidence, then auto-reply signals, then the weak bounce signal
/// (RFC 3834 asks auto-responders to send with an empty Return-Path too), then bulk.
fn classify(message: &Message<'_>, raw: &[u8], from: &[Address], subject: Option<&str>) -> Classification {
    let subject_lc = subject.unwrap_or_default().to_lowercase();
    if is_delivery_report(message) || (from.iter().any(is_mailer_daemon) && is_failure_subject(&subject_lc)) {
        return Classification::Bounce;
    }
    if is_auto_reply(message, raw, &subject_lc) {
        return Classification::AutoReply;
    }
    if header_values(raw, message, "Return-Path").any(|v| v.replace(' ', "") == "<>") {
        return Classification::Bounce;
    }
    let bulk_precedence =
        header_values(raw, message, "Precedence").any(|v| matches!(first_token(&v).as_str(), "bulk" | "list" | "junk"));
    if bulk_precedence || has_header(message, "List-Id") || has_header(message, "List-Unsubscribe") {
        return Classification::Bulk;
    }
    Classification::Normal
}

fn is_delivery_report(message: &Message<'_>) -> bool {
    let root_is_report = message.root_part().content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct.attribute("report-type").is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"))
    });
    root_is_report
        || message.parts.iter().any(|part| {
            part.is_content_type("message", "delivery-status")
                || part.is_content_type("message", "global-delivery-status")
        })
}

fn is_mailer_daemon(address: &Address) -> bool {
    let local = address.address.rsplit_once('@').map_or(address.address.as_str(), |(local, _)| local);
    ["mailer-daemon", "mailer_daemon", "postmaster"].iter().any(|d| local.eq_ignore_ascii_case(d))
}

fn is_failure_subject(subject_lc: &str) -> bool {
    const FAILURE: &[&str] = &[
        "undeliverable",
        "undelivered",
        "not delivered",
        "could not be delivered",
        "delivery status notification",
        "delivery failure",
        "delivery has failed",
        "delivery failed",
        "failure notice",
        "returned mail",
        "non-delivery",
        "nondeliverable",
        "unzustellbar",
    ];
    FAILURE.iter().any(|f| subject_lc.contains(f))
}

fn is_auto_reply_subject(subject_lc: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "automatic reply",
        "auto reply",
        "autoreply",
        "auto-reply",
        "auto:",
        "out of office",
        "out of the office",
        "automatische antwort",
        "abwesenheitsnotiz",
        "réponse automatique",
        "respuesta automática",
        "risposta automatica",
    ];
    PREFIXES.iter().any(|p| subject_lc.starts_with(p))
}

/// `X-Auto-Response-Suppress` alone is not enough: Exchange and Outlook put it on ordinary mail
/// (calendar items, mail sent by applications) to ask *others* not to auto-respond. It counts only
/// with an auto-reply subject or Exchange's rule-loop marker, which OOF replies carry.
fn is_auto_reply(message: &Message<'_>, raw: &[u8], subject_lc: &str) -> bool {
    let negative = |v: &str| matches!(first_token(v).as_str(), "no" | "false" | "0");
    if header_values(raw, message, "Auto-Submitted").any(|v| !v.is_empty() && !negative(&v)) {
        return true;
    }
    if ["X-Autoreply", "X-Autorespond"].iter().any(|name| header_values(raw, message, name).any(|v| !negative(&v))) {
        return true;
    }
    if header_values(raw, message, "Precedence").any(|v| first_token(&v) == "auto_reply") {
        return true;
    }
    let suppress_auto_reply = header_values(raw, message, "X-Auto-Response-Suppress").any(|v| {
        v.split([',', ';', ' ']).any(|t| ["all", "oof", "autoreply"].iter().any(|s| t.trim().eq_ignore_ascii_case(s)))
    });
    suppress_auto_reply && (is_auto_reply_subject(subject_lc) || has_header(message, "X-MS-Exchange-Inbox-Rules-Loop"))
}

fn is_utf8_label(charset: &str) -> bool {
    ["utf-8", "utf8", "unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "x-unicode20utf8"]
        .iter()
        .any(|l| charset.eq_ignore_ascii_case(l))
}

fn is_known_charset(charset: &str) -> bool {
    is_utf8_label(charset) || charset_decoder(charset.as_bytes()).is_some()
}

/// mail-parser decodes an unknown charset as UTF-8 without saying so; the admin should know why
/// a message looks garbled, so say which part and how it was shown.
fn charset_warnings(message: &Message<'_>, raw: &[u8], warnings: &mut Vec<String>) {
    for (index, part) in message.parts.iter().enumerate() {
        let media_type = media_type(part);
        if part.is_encoding_problem {
            warnings.push(format!(
                "MIME part {index} ({media_type}) is malformed (bad transfer encoding or missing boundary); \
                 it is shown as raw text"
            ));
        }
        let text = match &part.body {
            PartType::Text(text) | PartType::Html(text) => text,
            _ => continue,
        };
        let Some(charset) = part.content_type().and_then(|ct| ct.attribute("charset")) else {
            continue;
        };
        if charset.trim().is_empty() || is_known_charset(charset.trim()) {
            continue;
        }
        let shown = if text.contains('\u{FFFD}') {
            "decoded as UTF-8 with replacement characters for the bytes that are not UTF-8"
        } else {
            "shown as UTF-8"
        };
        warnings.push(format!("unknown charset {} in MIME part {index} ({media_type}), {shown}", printable(charset)));
    }

    // Encoded words (=?charset?B?...?=) in the root header section.
    let header_end = message.root_part().offset_body as usize;
    let headers = raw.get(..header_end).unwrap_or(raw);
    let mut reported: Vec<String> = Vec::new();
    let mut rest = headers;
    while let Some(start) = rest.windows(2).position(|w| w == b"=?") {
        rest = rest.get(start + 2..).unwrap_or_default();
        let Some(end) = rest.iter().take(64).position(|&b| b == b'?') else { continue };
        let is_encoded_word = rest.get(end + 1..end + 3).is_some_and(|t| {
            matches!(t.first(), Some(b'b' | b'B' | b'q' | b'Q')) && t.get(1) == Some(&b'?')
        });
        let Ok(label) = std::str::from_utf8(rest.get(..end).unwrap_or_default()) else { continue };
        // RFC 2231 adds a language: =?utf-8*en?Q?...?=
        let charset = label.split('*').next().unwrap_or_default();
        if !is_encoded_word || charset.is_empty() || charset.contains(char::is_whitespace) {
            continue;
        }
        if !is_known_charset(charset) && !reported.iter().any(|r| r.eq_ignore_ascii_case(charset)) {
            warnings.push(format!(
                "unknown charset {} in an encoded header word, decoded as UTF-8 (bytes that are not UTF-8 shown as replacement characters)",
                printable(charset)
            ));
            reported.push(charset.to_string());
        }
    }
}

/// Charset names come from the server; keep them short and free of control characters.
fn printable(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).take(40).collect()
}

fn media_type(part: &MessagePart<'_>) -> String {
    if let Some(ct) = part.content_type() {
        let subtype = ct.subtype().unwrap_or(match ct.ctype().to_ascii_lowercase().as_str() {
            "text" => "plain",
            _ => "octet-stream",
        });
        return format!("{}/{}", ct.ctype(), subtype).to_ascii_lowercase();
    }
    match part.body {
        PartType::Message(_) => "message/rfc822",
        PartType::Html(_) => "text/html",
        PartType::Text(_) => "text/plain",
        _ => "application/octet-stream",
    }
    .to_string()
}

/// Moves bodies and attachment bytes out of the parsed message, so that content mail-parser
/// already decoded into owned buffers is not copied again.
fn take_contents(message: Message<'_>, raw: &[u8]) -> (Option<String>, Option<String>, Vec<Attachment>) {
    let Message { html_body, text_body, attachments: attachment_ids, mut parts, .. } = message;

    let html = join_bodies(&mut parts, &html_body, |body| matches!(body, PartType::Html(_)));
    let mut text = join_bodies(&mut parts, &text_body, |body| matches!(body, PartType::Text(_)));
    if text.is_none() {
        // HTML-only mail: agents still need something to read and quote.
        text = html.as_deref().map(html_to_text).filter(|t| !t.trim().is_empty());
    }

    let mut attachments = Vec::with_capacity(attachment_ids.len());
    for id in attachment_ids {
        let Some(part) = parts.get_mut(id as usize) else { continue };
        let media_type = media_type(part);
        let name = part.attachment_name().and_then(file_name);
        let content_id = part
            .content_id()
            .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>').to_string())
            .filter(|id| !id.is_empty());
        let bytes = match std::mem::take(&mut part.body) {
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => bytes.into_owned(),
            PartType::Text(text) | PartType::Html(text) => text.into_owned().into_bytes(),
            // An unencoded attached message is a slice of the raw bytes; an encoded one was
            // decoded into its own buffer.
            PartType::Message(_) if part.encoding == Encoding::None => {
                raw.get(part.offset_body as usize..part.offset_end as usize).unwrap_or_default().to_vec()
            }
            PartType::Message(inner) => inner.raw_message.into_owned(),
            PartType::Multipart(_) => continue,
        };
        attachments.push(Attachment { name, media_type, size: bytes.len() as u64, content_id, bytes });
    }
    (text, html, attachments)
}

/// Several body parts (e.g. text, image, text in multipart/mixed) are joined in order.
fn join_bodies(parts: &mut [MessagePart<'_>], ids: &[u32], wanted: impl Fn(&PartType<'_>) -> bool) -> Option<String> {
    let mut joined: Option<String> = None;
    for &id in ids {
        let Some(part) = parts.get_mut(id as usize) else { continue };
        if !wanted(&part.body) {
            continue;
        }
        let (PartType::Text(body) | PartType::Html(body)) = std::mem::take(&mut part.body) else { continue };
        match &mut joined {
            None => joined = Some(body.into_owned()),
            Some(text) => {
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&body);
            }
        }
    }
    joined
}

/// Decodes leftover encoded words and drops any directory part, so a host that saves the file
/// under this name cannot be sent elsewhere (`../../x`, `C:\x`).
fn file_name(name: &str) -> Option<String> {
    let decoded: Cow<'_, str> = if name.contains("=?") {
        let mut line = Vec::with_capacity(name.len() + 1);
        line.extend_from_slice(name.as_bytes());
        line.push(b'\n');
        match mail_parser::parsers::MessageStream::new(&line).parse_unstructured() {
            HeaderValue::Text(text) => Cow::Owned(text.into_owned()),
            _ => Cow::Borrowed(name),
        }
    } else {
        Cow::Borrowed(name)
    };
    let base = decoded.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    (!clean.is_empty() && clean != "." && clean != "..").then(|| clean.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &[u8] = include_bytes!("../tests/samples/plain.eml");
    const ALTERNATIVE: &[u8] = include_bytes!("../tests/samples/alternative.eml");
    const ATTACHMENTS: &[u8] = include_bytes!("../tests/samples/attachments.eml");
    const RELATED_INLINE: &[u8] = include_bytes!("../tests/samples/related_inline.eml");
    const LATIN1: &[u8] = include_bytes!("../tests/samples/latin1.eml");
    const UNKNOWN_CHARSET: &[u8] = include_bytes!("../tests/samples/unknown_charset.eml");
    const NO_MESSAGE_ID: &[u8] = include_bytes!("../tests/samples/no_message_id.eml");
    const REPLY: &[u8] = include_bytes!("../tests/samples/reply.eml");
    const AUTOREPLY: &[u8] = include_bytes!("../tests/samples/autoreply.eml");
    const OUTLOOK_OOF: &[u8] = include_bytes!("../tests/samples/outlook_oof.eml");
    const LIST: &[u8] = include_bytes!("../tests/samples/list.eml");
    const NEWSLETTER: &[u8] = include_bytes!("../tests/samples/newsletter.eml");
    const DSN: &[u8] = include_bytes!("../tests/samples/dsn.eml");
    const XARS_NORMAL: &[u8] = include_bytes!("../tests/samples/xars_normal.eml");

    const SAMPLES: &[&[u8]] = &[
        PLAIN,
        ALTERNATIVE,
        ATTACHMENTS,
        RELATED_INLINE,
        LATIN1,
        UNKNOWN_CHARSET,
        NO_MESSAGE_ID,
        REPLY,
        AUTOREPLY,
        OUTLOOK_OOF,
        LIST,
        NEWSLETTER,
        DSN,
        XARS_NORMAL,
    ];

    fn parse(raw: &[u8]) -> ParsedMessage {
        match parse_message(raw) {
            Ok(parsed) => parsed,
            Err(reason) => panic!("sample did not parse: {reason}"),
        }
    }

    fn addr(name: Option<&str>, address: &str) -> Address {
        Address { name: name.map(str::to_string), address: address.to_string() }
    }

    /// A minimal message with the given extra header lines.
    fn with_headers(headers: &str, subject: &str) -> Vec<u8> {
        format!(
            "From: Some One <someone@example.com>\r\nTo: support@shop.example\r\nSubject: {subject}\r\n\
             Message-ID: <x@example.com>\r\n{headers}\r\nbody\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn plain_text_message() {
        let m = parse(PLAIN);
        assert_eq!(m.message_id, "CAF123.456@mail.example.com");
        assert!(!m.message_id_synthetic);
        assert_eq!(m.from, vec![addr(Some("Lee, Ann"), "ann@example.com")]);
        assert_eq!(m.to, vec![addr(Some("Support"), "support@shop.example"), addr(None, "orders@shop.example")]);
        assert_eq!(m.cc, vec![addr(Some("Bob"), "bob@example.net")]);
        assert_eq!(m.reply_to, vec![addr(Some("Ann Private"), "ann.lee@example.org")]);
        assert_eq!(m.subject.as_deref(), Some("Where is my order? 📦"));
        assert_eq!(m.date_ms, Some(1_699_996_400_000));
        assert_eq!(m.text_body.as_deref(), Some("Hello,\r\n\r\nmy order 42 has not arrived yet. Grüße, Ann\r\n"));
        assert_eq!(m.html_body, None);
        assert!(m.attachments.is_empty());
        assert!(m.in_reply_to.is_empty() && m.references.is_empty());
        assert_eq!(m.classification, Classification::Normal);
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn multipart_alternative_has_text_and_html() {
        let m = parse(ALTERNATIVE);
        assert_eq!(m.from, vec![addr(Some("René François"), "rene@example.fr")]);
        assert_eq!(m.subject.as_deref(), Some("Problème de livraison"));
        assert_eq!(m.text_body.as_deref(), Some("Bonjour, mon colis est abîmé."));
        let html = m.html_body.as_deref().unwrap_or_default();
        assert!(html.starts_with("<html><body><p>Bonjour, mon colis est <b>abîmé</b>"), "{html}");
        assert!(m.attachments.is_empty(), "{:?}", m.attachments);
        assert_eq!(m.date_ms, Some(1_700_053_200_000));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn html_only_message_gets_a_derived_text_body() {
        let raw = b"From: a@example.com\r\nSubject: hi\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
                    <html><body><p>Hello <b>there</b></p></body></html>\r\n";
        let m = parse(raw);
        assert!(m.html_body.as_deref().is_some_and(|h| h.contains("<b>there</b>")));
        let text = m.text_body.unwrap_or_default();
        assert!(text.contains("Hello") && text.contains("there") && !text.contains('<'), "{text:?}");
    }

    #[test]
    fn attachments_with_rfc2231_and_encoded_word_names() {
        let m = parse(ATTACHMENTS);
        assert_eq!(m.text_body.as_deref(), Some("See the attached files."));
        assert_eq!(m.attachments.len(), 3, "{:?}", m.attachments);

        let pdf = &m.attachments[0];
        assert_eq!(pdf.name.as_deref(), Some("Rechnung März.pdf"));
        assert_eq!(pdf.media_type, "application/pdf");
        assert_eq!(pdf.bytes, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n");
        assert_eq!(pdf.size, pdf.bytes.len() as u64);
        assert_eq!(pdf.content_id, None);

        let zip = &m.attachments[1];
        assert_eq!(zip.name.as_deref(), Some("übersicht.zip"));
        assert_eq!(zip.media_type, "application/zip");
        assert_eq!(zip.bytes, (0..=255u8).collect::<Vec<u8>>());
        assert_eq!(zip.size, 256);

        // A directory part in the name is dropped so the host cannot be made to write elsewhere.
        let csv = &m.attachments[2];
        assert_eq!(csv.name.as_deref(), Some("orders.csv"));
        assert_eq!(csv.media_type, "text/csv");
        assert_eq!(csv.bytes, b"id,qty\r\n42,1");
    }

    #[test]
    fn inline_image_with_content_id() {
        let m = parse(RELATED_INLINE);
        assert!(m.html_body.as_deref().is_some_and(|h| h.contains("cid:logo@shop.example")));
        assert_eq!(m.attachments.len(), 1, "{:?}", m.attachments);
        let image = &m.attachments[0];
        assert_eq!(image.content_id.as_deref(), Some("logo@shop.example"));
        assert_eq!(image.media_type, "image/png");
        assert!(image.bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(image.size, 33);
        // The image is not text, so it must not leak into the text body.
        let text = m.text_body.unwrap_or_default();
        assert!(text.contains("Hi") && !text.contains("PNG"), "{text:?}");
    }

    #[test]
    fn iso_8859_1_body_and_subject_become_utf8() {
        let m = parse(LATIN1);
        assert_eq!(m.subject.as_deref(), Some("Café und Kühlschrank"));
        assert_eq!(m.text_body.as_deref(), Some("Der Kühlschrank ist kaputt. Café?\r\n"));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn unknown_charset_degrades_with_warnings() {
        let m = parse(UNKNOWN_CHARSET);
        let text = m.text_body.unwrap_or_default();
        assert!(text.contains("readable part") && text.contains("caf\u{FFFD} ok"), "{text:?}");
        assert!(m.subject.is_some());
        assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("unknown charset x-foo in MIME part 2 (text/plain)"), "{:?}", m.warnings);
        assert!(m.warnings[0].contains("replacement characters"), "{:?}", m.warnings);
        assert!(m.warnings[1].contains("unknown charset x-foo in an encoded header word"), "{:?}", m.warnings);
    }

    #[test]
    fn known_multibyte_charset_is_decoded_without_warning() {
        // "日本" in Shift_JIS.
        let mut raw = b"From: a@example.com\r\nSubject: =?Shift_JIS?B?k/qWew==?=\r\n\
                        Content-Type: text/plain; charset=Shift_JIS\r\n\r\n"
            .to_vec();
        raw.extend_from_slice(b"\x93\xfa\x96\x7b");
        let m = parse(&raw);
        assert_eq!(m.subject.as_deref(), Some("日本"));
        assert_eq!(m.text_body.as_deref(), Some("日本"));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn missing_message_id_gets_a_stable_synthetic_one() {
        let m = parse(NO_MESSAGE_ID);
        assert!(m.message_id_synthetic);
        assert_eq!(m.message_id, synthetic_message_id(NO_MESSAGE_ID));
        assert_eq!(parse(NO_MESSAGE_ID).message_id, m.message_id, "same bytes, same id");

        let (hash, domain) = m.message_id.split_once('@').unwrap_or_default();
        assert_eq!(domain, "mailplug.invalid");
        assert_eq!(hash.len(), 64);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));

        let mut other = NO_MESSAGE_ID.to_vec();
        other.push(b'x');
        assert_ne!(parse(&other).message_id, m.message_id, "different bytes, different id");
        // Pinned so that a change of hash (which would duplicate every stored message) is noticed.
        assert_eq!(
            synthetic_message_id(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad@mailplug.invalid"
        );
    }

    #[test]
    fn empty_message_id_header_counts_as_missing() {
        let m = parse(b"From: a@example.com\r\nMessage-ID: <>\r\nSubject: x\r\n\r\nbody\r\n");
        assert!(m.message_id_synthetic);
        assert!(m.message_id.ends_with("@mailplug.invalid"));
    }

    #[test]
    fn in_reply_to_and_references() {
        let m = parse(REPLY);
        assert_eq!(m.message_id, "reply-2@example.com");
        assert_eq!(m.in_reply_to, vec!["17000000.abc@shop.example"]);
        assert_eq!(m.references, vec!["first-0@example.com", "17000000.abc@shop.example"]);
        assert_eq!(m.date_ms, Some(1_700_550_309_000));
    }

    #[test]
    fn dates_with_zones_and_bad_dates() {
        let date = |value: &str| {
            parse(format!("From: a@example.com\r\nDate: {value}\r\n\r\nx\r\n").as_bytes()).date_ms
        };
        assert_eq!(date("Thu, 01 Jan 1970 00:00:00 +0000"), Some(0));
        assert_eq!(date("1 Jan 1970 01:00:00 +0100"), Some(0));
        assert_eq!(date("Wed, 31 Dec 1969 19:00:00 -0500"), Some(0));
        assert_eq!(date("Mon, 20 Nov 2023 11:00:00 GMT"), Some(1_700_478_000_000));

        let bad = parse(b"From: a@example.com\r\nDate: next tuesday\r\n\r\nx\r\n");
        assert_eq!(bad.date_ms, None);
        assert!(bad.warnings.iter().any(|w| w.contains("Date header")), "{:?}", bad.warnings);
        assert_eq!(parse(b"From: a@example.com\r\n\r\nx\r\n").date_ms, None);
    }

    #[test]
    fn auto_submitted_auto_replied_is_an_auto_reply() {
        assert_eq!(parse(AUTOREPLY).classification, Classification::AutoReply);
    }

    #[test]
    fn outlook_out_of_office_is_an_auto_reply_not_a_bounce() {
        // It has an empty Return-Path as RFC 3834 recommends; the auto-reply signals win.
        assert_eq!(parse(OUTLOOK_OOF).classification, Classification::AutoReply);
    }

    #[test]
    fn exchange_oof_without_auto_submitted_is_recognised() {
        let raw = with_headers("X-Auto-Response-Suppress: DR, OOF, AutoReply\r\n", "Automatic reply: ticket 9");
        assert_eq!(parse(&raw).classification, Classification::AutoReply);
        let raw = with_headers(
            "X-Auto-Response-Suppress: All\r\nX-MS-Exchange-Inbox-Rules-Loop: x@corp.example\r\n",
            "Ticket 9",
        );
        assert_eq!(parse(&raw).classification, Classification::AutoReply);
    }

    #[test]
    fn x_auto_response_suppress_alone_is_normal() {
        assert_eq!(parse(XARS_NORMAL).classification, Classification::Normal);
        // Nor does an auto-reply-looking subject alone make a robot: people write "Out of office?".
        let raw = with_headers("", "Out of office tomorrow?");
        assert_eq!(parse(&raw).classification, Classification::Normal);
    }

    #[test]
    fn other_auto_reply_headers() {
        for header in [
            "X-Autoreply: yes\r\n",
            "X-Autorespond: vacation\r\n",
            "Precedence: auto_reply\r\n",
            "Auto-Submitted: auto-generated; owner-email=\"x@example.com\"\r\n",
            "auto-submitted: Auto-Notified\r\n",
        ] {
            assert_eq!(parse(&with_headers(header, "hello")).classification, Classification::AutoReply, "{header}");
        }
        assert_eq!(parse(&with_headers("Auto-Submitted: no\r\n", "hello")).classification, Classification::Normal);
        assert_eq!(parse(&with_headers("Auto-Submitted: No (comment)\r\n", "hi")).classification, Classification::Normal);
    }

    #[test]
    fn list_and_bulk_mail() {
        assert_eq!(parse(LIST).classification, Classification::Bulk);
        assert_eq!(parse(NEWSLETTER).classification, Classification::Bulk);
        for header in ["Precedence: list\r\n", "Precedence: junk\r\n", "List-Unsubscribe: <mailto:u@example.com>\r\n"] {
            assert_eq!(parse(&with_headers(header, "deals")).classification, Classification::Bulk, "{header}");
        }
        assert_eq!(parse(&with_headers("Precedence: first-class\r\n", "hi")).classification, Classification::Normal);
    }

    #[test]
    fn delivery_status_notification_is_a_bounce() {
        let m = parse(DSN);
        assert_eq!(m.classification, Classification::Bounce);
        assert!(m.text_body.as_deref().is_some_and(|t| t.contains("could not be delivered")));
        let types: Vec<&str> = m.attachments.iter().map(|a| a.media_type.as_str()).collect();
        assert_eq!(types, vec!["message/delivery-status", "message/rfc822"]);
        let original = String::from_utf8_lossy(&m.attachments[1].bytes);
        assert!(original.starts_with("From: support@shop.example\r\n"), "{original:?}");
        assert!(original.contains("Message-ID: <17000000.abc@shop.example>"), "{original:?}");
        assert!(original.trim_end().ends_with("Your order shipped."), "{original:?}");
    }

    #[test]
    fn other_bounce_signals() {
        // Mailer daemon with a failure subject, no report structure.
        let raw = b"From: MAILER-DAEMON@mx.example.com\r\nSubject: failure notice\r\n\r\nSorry.\r\n";
        assert_eq!(parse(raw).classification, Classification::Bounce);
        let raw = b"From: postmaster@corp.example\r\nSubject: Undeliverable: Your order\r\n\r\nSorry.\r\n";
        assert_eq!(parse(raw).classification, Classification::Bounce);
        // Postmaster writing about something else is a person.
        let raw = b"From: postmaster@corp.example\r\nSubject: Your question\r\n\r\nHello.\r\n";
        assert_eq!(parse(raw).classification, Classification::Normal);
        // Empty Return-Path without auto-reply signals.
        assert_eq!(parse(&with_headers("Return-Path: < >\r\n", "hi")).classification, Classification::Bounce);
        // A message/delivery-status part inside multipart/mixed.
        let raw = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
                    Content-Type: text/plain\r\n\r\nx\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n\
                    Action: failed\r\n--b--\r\n";
        assert_eq!(parse(raw).classification, Classification::Bounce);
    }

    #[test]
    fn empty_and_garbage_input_is_not_a_message() {
        for raw in [&b""[..], b"   \r\n\r\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01", b"hello world", b"\0\0\0\0"] {
            match parse_message(raw) {
                Err(reason) => assert!(!reason.is_empty()),
                Ok(m) => panic!("{raw:?} parsed as {m:?}"),
            }
        }
        assert_eq!(parse_message(b"").err().as_deref(), Some(EMPTY_MESSAGE));
    }

    #[test]
    fn mail_parser_debug_assertion_is_contained() {
        // Found by fuzzing: reaches a `debug_assert!(false)` inside mail-parser 0.11.
        let raw = b"Content-Type:multipart;boundary=a\n\n--aContent-Type:message/rfc822\n\n\
                    Content-Type:message/rfc822\n\n\n--a--";
        let _ = parse_message(raw);
    }

    #[test]
    fn header_only_message_parses() {
        let m = parse(b"From: a@example.com\r\nSubject: only headers\r\n");
        assert_eq!(m.subject.as_deref(), Some("only headers"));
        assert_eq!(m.from, vec![addr(None, "a@example.com")]);
    }

    #[test]
    fn address_groups_are_flattened() {
        let m = parse(b"From: a@example.com\r\nTo: Team: b@example.com, C <c@example.com>;, undisclosed-recipients:;\r\n\r\nx\r\n");
        assert_eq!(m.to, vec![addr(None, "b@example.com"), addr(Some("C"), "c@example.com")]);
    }

    /// A small deterministic generator so that failures reproduce.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn truncated_samples_never_panic() {
        for sample in SAMPLES {
            for len in 0..=sample.len() {
                let _ = parse_message(&sample[..len]);
            }
        }
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        const ALPHABET: &[u8] = b"\r\n:;<>=?\"-\\ \t@abcBQ*'%=\x80\xff\0";
        for _ in 0..3000 {
            let len = rng.below(400);
            let bytes: Vec<u8> = (0..len)
                .map(|_| if rng.below(2) == 0 { rng.next() as u8 } else { ALPHABET[rng.below(ALPHABET.len())] })
                .collect();
            let _ = parse_message(&bytes);
        }
        for sample in SAMPLES {
            for _ in 0..300 {
                let mut bytes = sample.to_vec();
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(bytes.len());
                    match rng.below(3) {
                        0 => bytes[at] = ALPHABET[rng.below(ALPHABET.len())],
                        1 => {
                            bytes.remove(at);
                        }
                        _ => bytes.insert(at, rng.next() as u8),
                    }
                }
                let _ = parse_message(&bytes);
            }
        }
    }
}
