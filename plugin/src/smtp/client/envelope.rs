//! The envelope of a single submission or a check: MAIL FROM, RCPT TO, DATA, and the reset
//! after refused recipients.

use super::*;

impl SmtpSession {
    /// Authenticated: MAIL FROM, then RCPT TO and DATA (in the same write when pipelining).
    /// A check has no message: no SIZE or BODY, and one command at a time.
    pub(super) fn begin_envelope(&mut self, actions: &mut Vec<Action>) -> Result<()> {
        if self.batch.is_some() {
            self.begin_batch(actions);
            return Ok(());
        }
        if let (Some(limit), false) = (self.caps.size_limit, self.check) {
            if self.message_size > limit {
                return Err(self.over_size_limit_error(limit));
            }
        }
        let mut out = format!("MAIL FROM:<{}>", self.envelope_from);
        if self.caps.size && !self.check {
            out.push_str(&format!(" SIZE={}", self.message_size));
        }
        if self.eight_bit && self.caps.eight_bit_mime && !self.check {
            out.push_str(" BODY=8BITMIME");
        }
        let international = !self.envelope_from.is_ascii() || self.envelope_to.iter().any(|t| !t.is_ascii());
        if international && !self.caps.smtputf8 {
            let address = std::iter::once(&self.envelope_from)
                .chain(self.envelope_to.iter())
                .find(|a| !a.is_ascii())
                .cloned()
                .unwrap_or_default();
            return Err(Error::invalid(
                Stage::Envelope,
                format!(
                    "the address {address} has non-ASCII characters, but this server does not offer SMTPUTF8, so it cannot carry it; use an ASCII form of the address"
                ),
            ));
        }
        if international {
            out.push_str(" SMTPUTF8");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        self.pipelined = self.caps.pipelining && !self.check;
        if self.pipelined {
            for i in 0..self.envelope_to.len() {
                bytes.extend_from_slice(&self.rcpt_command(i));
            }
            bytes.extend_from_slice(b"DATA\r\n");
        }
        actions.push(Action::Write(bytes));
        self.state = State::Mail;
        Ok(())
    }

    pub(super) fn rcpt_command(&self, i: usize) -> Vec<u8> {
        let to = self.envelope_to.get(i).map(String::as_str).unwrap_or_default();
        format!("RCPT TO:<{to}>\r\n").into_bytes()
    }

    /// Check mode, every RCPT answered: reset the probe when all were accepted; otherwise
    /// reset, quit and fail with the refusals.
    pub(super) fn end_probe(&mut self, actions: &mut Vec<Action>) {
        if self.recipients.iter().all(|r| r.accepted) {
            self.progress(actions, Step::Envelope, || self.envelope_detail());
            self.state = State::ProbeReset;
        } else {
            self.pending_failure = Some(self.recipients_refused_error());
            self.state = State::Reset { quit_sent: false };
        }
        actions.push(Action::Write(b"RSET\r\n".to_vec()));
    }

    pub(super) fn accepted_count(&self) -> usize {
        self.recipients.iter().filter(|r| r.accepted).count()
    }

    /// No recipient accepted: RSET (and QUIT with it when pipelining), then fail.
    pub(super) fn reset(&mut self, actions: &mut Vec<Action>) {
        self.pending_failure = Some(self.recipients_refused_error());
        let quit_sent = self.pipelined;
        let bytes: &[u8] = if quit_sent { b"RSET\r\nQUIT\r\n" } else { b"RSET\r\n" };
        actions.push(Action::Write(bytes.to_vec()));
        self.state = State::Reset { quit_sent };
    }
}
