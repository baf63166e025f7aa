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
        let extensions = reply.lines().skip(1).collect::<Vec<_>>().join(", ");
        match self.quoted(&extensions) {
            Some(text) if text.is_empty() => "EHLO accepted; the server advertises no extensions".to_string(),
            Some(text) => format!("EHLO accepted; extensions: {text}"),
            None if self.caps.starttls => "STARTTLS offered (the other extensions arrived before encryption and are asked again after it)".to_string(),
            None => "STARTTLS not offered".to_string(),
        }
    }
}
