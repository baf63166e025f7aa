//! What the admin is told: check step details, and the errors for refused recipients.

use super::*;

impl SmtpSession {
    pub(super) fn envelope_detail(&self) -> String {
        let mut to: Vec<String> = self.envelope_to.iter().take(SHOWN_RECIPIENTS).map(|a| format!("<{a}>")).collect();
        if self.envelope_to.len() > SHOWN_RECIPIENTS {
            to.push(format!("{} more", self.envelope_to.len() - SHOWN_RECIPIENTS));
        }
        format!("MAIL FROM:<{}> and RCPT TO:{} accepted", self.envelope_from, to.join(", "))
    }

    /// Check mode: some recipient was refused. Names the refused ones with their replies;
    /// the first refusal is the reply shown and explained.
    pub(super) fn refused_recipients_error(&self) -> Error {
        let refused: Vec<&RecipientResult> = self.recipients.iter().filter(|r| !r.accepted).collect();
        let mut list: Vec<String> = refused
            .iter()
            .take(SHOWN_RECIPIENTS)
            .map(|r| format!("<{}>: {} {}", r.address, r.reply.code, r.reply.text.replace('\n', " ")))
            .collect();
        if refused.len() > SHOWN_RECIPIENTS {
            list.push(format!("and {} more", refused.len() - SHOWN_RECIPIENTS));
        }
        let what = format!(
            "the server refused {} of {} recipients ({}); nothing was sent",
            refused.len(),
            self.recipients.len(),
            list.join("; ")
        );
        let code_of = |r: &RecipientResult| r.reply.code.parse::<u16>().unwrap_or(0);
        let first = refused.first();
        let known = first.and_then(|r| explain::lookup(code_of(r), &r.reply.text));
        let retry = if refused.iter().any(|r| retry_for(code_of(r)) == Retry::Later) { Retry::Later } else { Retry::FixFirst };
        let fix = "check the addresses, and that the account may send to them";
        let mut error = Error::protocol(Stage::Envelope, explained(what, known, fix)).with_retry(retry);
        if let Some(r) = first {
            error = error.with_reply(r.reply.clone());
        }
        error
    }

    /// Check mode: reports a completed step. `detail` is only built in check mode.
    pub(super) fn progress(&self, actions: &mut Vec<Action>, step: Step, detail: impl FnOnce() -> String) {
        if self.check {
            actions.push(Action::Progress(StepReport::new(step, detail())));
        }
    }

    /// Server text fit for a step's detail, or None while it cannot be trusted (before TLS
    /// on a STARTTLS connection). Control characters removed, echoed secrets redacted,
    /// at most `MAX_QUOTED_CHARS` characters.
    pub(super) fn quoted(&self, text: &str) -> Option<String> {
        if self.link.unverified() {
            return None;
        }
        let clean: String = text.chars().filter(|c| !c.is_control()).collect();
        Some(redact(&clean, &self.secret_forms()).chars().take(MAX_QUOTED_CHARS).collect())
    }

    /// What an EHLO reply told us. Before TLS only what we derived from it: its text could
    /// have been forged, and it is asked again after TLS anyway.
    pub(super) fn capabilities_detail(&self, reply: &Reply) -> String {
        let extensions = reply.lines.iter().skip(1).map(String::as_str).collect::<Vec<_>>().join(", ");
        match self.quoted(&extensions) {
            Some(text) if text.is_empty() => "EHLO accepted; the server advertises no extensions".to_string(),
            Some(text) => format!("EHLO accepted; extensions: {text}"),
            None if self.caps.starttls => "STARTTLS offered (the other extensions arrived before encryption and are asked again after it)".to_string(),
            None => "STARTTLS not offered".to_string(),
        }
    }

    pub(super) fn no_recipient_error(&self) -> Error {
        const SHOWN: usize = 5;
        let mut list: Vec<String> = self
            .recipients
            .iter()
            .take(SHOWN)
            .map(|r| format!("<{}>: {} {}", r.address, r.reply.code, r.reply.text.replace('\n', " ")))
            .collect();
        if self.recipients.len() > SHOWN {
            list.push(format!("and {} more", self.recipients.len() - SHOWN));
        }
        let what = format!("the server accepted none of the recipients ({}); the message was not sent", list.join("; "));
        let code_of = |r: &RecipientResult| r.reply.code.parse::<u16>().unwrap_or(0);
        let known = self.recipients.last().and_then(|r| explain::lookup(code_of(r), &r.reply.text));
        // A recipient refused only for now can make a later attempt worthwhile.
        let retry = if self.recipients.iter().any(|r| retry_for(code_of(r)) == Retry::Later) { Retry::Later } else { Retry::FixFirst };
        let mut error = Error::protocol(Stage::Envelope, explained(what, known, "check the addresses")).with_retry(retry);
        if let Some(last) = self.recipients.last() {
            error = error.with_reply(last.reply.clone());
        }
        error
    }
}
