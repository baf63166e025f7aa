//! Errors built from server replies: explanations, retry advice, uncertain delivery.

use super::*;

/// The decoded JSON of an OAuth error challenge, quoted (see `error::quote`), or None when
/// it was not readable.
pub(super) fn decode_challenge(reply: &Reply) -> Option<String> {
    use base64::Engine;
    let raw = reply.last_line().trim();
    match base64::engine::general_purpose::STANDARD.decode(raw) {
        Ok(bytes) if !bytes.is_empty() => Some(crate::error::quote(&bytes, 300)),
        _ => None,
    }
}

/// A reply on one line: "220 mx.example ESMTP ready".
pub(super) fn one_line(reply: &Reply) -> String {
    let text = reply.text.replace('\n', " ");
    if text.is_empty() { reply.code.to_string() } else { format!("{} {text}", reply.code) }
}

pub(super) fn refused(stage: Stage, command: &str, reply: &Reply) -> Error {
    let what = format!("the server refused {command} ({}) during {}", reply.summary(), stage.as_str());
    from_reply(ErrorKind::Protocol, stage, what, "", reply)
}

/// 4xx is transient, anything else (5xx) stays refused until something is fixed.
pub(super) fn retry_for(code: u16) -> Retry {
    if (400..500).contains(&code) {
        Retry::Later
    } else {
        Retry::FixFirst
    }
}

/// An error for a refusing reply: `what` failed, then the provider-specific cause and action
/// when the reply is a known one, else the generic `fix`; retry advice from the reply code.
pub(super) fn from_reply(kind: ErrorKind, stage: Stage, what: String, fix: &str, reply: &Reply) -> Error {
    let server_reply = reply.to_server_reply();
    let known = explain::lookup(reply.code, &server_reply.text);
    Error::new(kind, stage, explained(what, known, fix)).with_reply(server_reply).with_retry(retry_for(reply.code))
}

pub(super) fn explained(what: String, known: Option<Known>, fix: &str) -> String {
    match known.map(Known::explanation) {
        Some(x) => format!("{what}. {} {}", x.cause.en, x.action.en),
        None if fix.is_empty() => what,
        None => format!("{what}; {fix}"),
    }
}

/// The session failed after the whole message and its final dot were handed to the host,
/// before the server's verdict: it may have been delivered.
pub(super) fn uncertain(e: Error) -> Error {
    let what = match e.kind {
        ErrorKind::Network => "the connection closed after the whole message was sent, before the server confirmed it".to_string(),
        ErrorKind::Timeout => "the server did not confirm the message in time after the whole message was sent".to_string(),
        _ => format!("the server's answer to the sent message could not be read ({})", e.message),
    };
    let message = format!(
        "{what}. The message may have been delivered: do not resend it blindly; first check whether the recipients got it (by its Message-ID), and send it again only if not"
    );
    Error { message, retry: Retry::Uncertain, ..e }
}

pub(super) fn check_envelope_address(role: &str, address: &str) -> Result<()> {
    let why = if address.is_empty() {
        "is empty"
    } else if address.contains(|c: char| c.is_control() || c == ' ' || c == '<' || c == '>') {
        "contains a space, '<', '>', a line break or another control character"
    } else {
        return Ok(());
    };
    let shown: String = address.chars().take(120).collect();
    Err(Error::invalid(Stage::Envelope, format!("the {role} address {shown:?} {why}; give a bare address like name@example.com")))
}
