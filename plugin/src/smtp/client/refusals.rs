//! Ordinary refusals (`ErrorKind::Refused`): recipients refused at RCPT TO, and a message over
//! the server's size limit. Neither is a fault of the connection or the settings, so neither
//! is a `protocol` error; server text enters the sentences only through `error::quote`.

use crate::error::{quote, Refusal, RefusalCause};

use super::*;

/// Most characters of one recipient's reply quoted in the error sentence.
const QUOTED_REPLY_CHARS: usize = 120;

impl SmtpSession {
    /// Every recipient was refused (a send: nothing was sent), or some were (a check).
    /// Names the refused ones with their quoted replies and what each refusal means; the
    /// reply shown is the first one `explain` knows, else the first refusal. Retry `Later`
    /// when some refusal is temporary (a later attempt can reach that recipient).
    pub(super) fn recipients_refused_error(&self) -> Error {
        let refused: Vec<&RecipientResult> = self.recipients.iter().filter(|r| !r.accepted).collect();
        let mut quoted = Vec::new();
        let mut list: Vec<String> = refused
            .iter()
            .take(SHOWN_RECIPIENTS)
            .map(|r| {
                let shown = quote(format!("{} {}", r.reply.code, r.reply.text.replace('\n', " ")).as_bytes(), QUOTED_REPLY_CHARS);
                let meaning = match r.retry {
                    Some(Retry::Later) => "temporary: try again later",
                    _ => "permanent: correct or remove the address",
                };
                let item = format!("<{}> {shown} ({meaning})", r.address);
                quoted.push(shown);
                item
            })
            .collect();
        if refused.len() > SHOWN_RECIPIENTS {
            list.push(format!("and {} more", refused.len() - SHOWN_RECIPIENTS));
        }
        let what = if self.check {
            format!(
                "the server refused {} of {} recipients (a check sends nothing): {}",
                refused.len(),
                self.recipients.len(),
                list.join("; ")
            )
        } else {
            let all = if refused.len() == 1 { "the only recipient".to_string() } else { format!("all {} recipients", refused.len()) };
            format!("the server refused {all}, so the message was not sent: {}", list.join("; "))
        };
        let code_of = |r: &RecipientResult| r.reply.code.parse::<u16>().unwrap_or(0);
        let known_of = |r: &&RecipientResult| explain::lookup(code_of(r), &r.reply.text);
        let shown = refused.iter().find(|r| known_of(r).is_some()).or(refused.first());
        let known = shown.and_then(known_of);
        let retry = if refused.iter().any(|r| r.retry == Some(Retry::Later)) { Retry::Later } else { Retry::FixFirst };
        let refusal = Refusal { cause: RefusalCause::Recipients, recipients: self.recipients.clone() };
        let mut error = Error::refused(Stage::Envelope, explained(what, known, ""), refusal).with_retry(retry);
        if let Some(r) = shown {
            error = error.with_reply(r.reply.clone());
        }
        for q in quoted {
            error = error.with_quote(q);
        }
        error
    }

    /// The message is bigger than the server's advertised SIZE limit: refused before MAIL FROM.
    pub(super) fn over_size_limit_error(&self, limit: u64) -> Error {
        let refusal = Refusal {
            cause: RefusalCause::MessageTooBig { size: self.message_size, server_limit: Some(limit) },
            recipients: Vec::new(),
        };
        Error::refused(
            Stage::Envelope,
            format!(
                "the message is {} bytes, but the server accepts at most {limit} bytes (its SIZE limit, set by the provider), so it was not sent; send a smaller message (fewer or smaller attachments) or ask the provider",
                self.message_size
            ),
            refusal,
        )
    }

    /// A refusal of MAIL FROM (with SIZE=) or of the message data that says the message is too
    /// big (552, or 5.3.4 / 5.2.3), as an ordinary refusal; None for any other reply.
    pub(super) fn too_big_error(&self, stage: Stage, reply: &Reply) -> Option<Error> {
        let enhanced = reply.lines().next().and_then(super::super::reply::enhanced_status);
        let too_big = match enhanced {
            Some(code) => matches!(&code[1..], ".3.4" | ".2.3"),
            // RFC 1870: 552 to MAIL FROM with SIZE=, or for data over the fixed maximum.
            None => reply.code == 552,
        };
        if !too_big {
            return None;
        }
        let limit = self.caps.size_limit;
        let over = match limit {
            Some(l) => format!(" (its limit: {l} bytes, set by the provider)"),
            None => " (its limit is set by the provider)".to_string(),
        };
        let shown = quote(one_line(reply).as_bytes(), QUOTED_REPLY_CHARS);
        let refusal = Refusal { cause: RefusalCause::MessageTooBig { size: self.message_size, server_limit: limit }, recipients: Vec::new() };
        let error = Error::refused(
            stage,
            format!(
                "the server refused the message as too big: {shown}; the message is {} bytes, more than the server accepts{over}, so it was not sent; send a smaller message (fewer or smaller attachments) or ask the provider",
                self.message_size
            ),
            refusal,
        );
        Some(error.with_reply(reply.to_server_reply()).with_retry(retry_for(reply.code)).with_quote(shown))
    }
}
