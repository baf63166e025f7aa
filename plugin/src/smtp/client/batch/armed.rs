//! Armed writes (`arm-write`, `received-armed`): the write that answers the server's 354 goes
//! out without a call into the component first.
//!
//! With PIPELINING, once message j's MAIL, RCPT and DATA went out, the replies the server owes
//! are known in the common case: 250 for the previous message's final dot (when it is still
//! owed), 250 for MAIL and for each RCPT, 354 for DATA. What the session then writes is known
//! as well, once message j's bytes are with the host and the next message's commands can be
//! built: j's bytes, its final dot and the next message's MAIL, RCPT and DATA. So the session
//! hands that write to the host ahead of time with the starts of the lines it waits for. The
//! host performs it the moment exactly those lines arrive (`mailplug_wire::armed_lines_match`)
//! and hands them over with `received-armed`; the session reads them as it reads any reply and
//! takes out of its actions the write the host already performed. Anything else (a refusal, a
//! multi-line reply, a split read) comes as `received`, and the session writes what it calls for
//! itself, one call later.
//!
//! The session arms only when that write cannot depend on more than the lines' starts: no line
//! or multi-line reply is half read, message j's bytes are with the host (`write-message`), and
//! the next message's bytes are here or with the host (so its commands are written after the
//! 354 in any case). A step that does not match what was armed cannot happen while both sides
//! apply the same rules; should it, the host has written message j, so the batch stops with j
//! uncertain, never sent twice.

use super::*;
use crate::session::ArmedWrite;

/// The start of a line that accepts the final dot, MAIL FROM or RCPT TO (RFC 5321 4.2.2).
const OK: &str = "250 ";
/// The start of the line that asks for the data (RFC 5321 4.2.2, 354 for DATA).
const GO_AHEAD: &str = "354 ";

impl SmtpSession {
    /// At the end of a step (`handle` or `message-data`): arms the write for the replies the
    /// server owes next, when the session may (see the module's documentation) and has not yet.
    pub(in crate::smtp::client) fn arm_ahead(&mut self, actions: &mut Vec<Action>) {
        if !matches!(self.state, State::Batch) || !self.pipelined || self.link.pending() > 0 || !self.reader.idle() {
            return;
        }
        let Some(b) = self.batch.as_ref() else { return };
        if b.armed.is_some() || b.waiting || b.mail_error.is_some() {
            return;
        }
        // The replies owed: [the previous message's final dot,] MAIL, each RCPT, DATA of j.
        let mut owed = b.expect.iter().copied().peekable();
        let mut lines = Vec::with_capacity(b.expect.len());
        if let Some(Expect::DataEnd(_)) = owed.peek() {
            owed.next();
            lines.push(OK);
        }
        let Some(Expect::Mail(j)) = owed.next() else { return };
        lines.push(OK);
        let recipients = b.items[j].to.len();
        for k in 0..recipients {
            if owed.next() != Some(Expect::Rcpt(j, k)) {
                return;
            }
            lines.push(OK);
        }
        if owed.next() != Some(Expect::Data(j)) || owed.next().is_some() || b.next != j + 1 {
            return;
        }
        lines.push(GO_AHEAD);
        let Body::Held(terminator) = b.items[j].body else { return };
        // What `on_batch_reply` writes on the 354: the final dot, then `advance` with the next
        // message's commands (no QUIT: message j's final reply is still owed then).
        let mut after = Vec::with_capacity(256);
        after.extend_from_slice(terminator);
        if let Some(next) = b.items.get(j + 1) {
            if !matches!(next.body, Body::Held(_) | Body::Ready(_)) || !self.push_mail(j + 1, &mut after) {
                return;
            }
            for to in &next.to {
                push_rcpt(&mut after, to);
            }
            after.extend_from_slice(b"DATA\r\n");
        }
        let max_line = self.link.max_line().min(u32::MAX as usize) as u32;
        let armed = ArmedWrite { lines, max_line, message: j as u32, after };
        // Kept to check `received-armed` and the step after it against.
        self.batch().armed = Some(armed.clone());
        actions.push(Action::ArmWrite(armed));
    }

    /// Any event but `message-data` ends the arm (the host drops it as well).
    pub(in crate::smtp::client) fn disarm(&mut self) {
        if let Some(b) = self.batch.as_mut() {
            b.armed = None;
        }
    }

    /// The bytes that matched the armed write, which the host performed: read as `received`,
    /// then the write the host already performed (its commit point, the message, the bytes
    /// after it) is taken out of the actions.
    pub(in crate::smtp::client) fn on_received_armed(&mut self, bytes: &[u8], now: Instant) -> Result<Vec<Action>> {
        let armed = self.batch.as_mut().and_then(|b| b.armed.take());
        let Some(ArmedWrite { message, lines, max_line, after }) = armed else {
            return Err(Error::protocol(
                self.stage(),
                "the host reported bytes that matched an armed write, but no write is armed (each arm-write is used once)",
            ));
        };
        let j = message as usize;
        self.batch().fired = Some(j);
        if !mailplug_wire::armed_lines_match(bytes, &lines, max_line as usize) {
            // The host wrote message j on bytes that do not call for it: nothing more is
            // written, j's delivery is unknown, the batch stops before reading them.
            let mut actions = self.take_deferred();
            let error = Error::protocol(
                Stage::Data,
                format!("the host wrote message {j} of the batch for replies that did not match the write armed for it (it broke the contract); the batch stopped"),
            );
            self.stop_batch(error, &mut actions);
            self.seal_outcomes(&mut actions);
            return Ok(actions);
        }
        let mut actions = self.handle(Event::Received(bytes), now)?;
        let performed = [Action::CommitPoint(j as u32), Action::WriteMessage(j as u32), Action::Write(after)];
        match actions.windows(3).position(|w| w == performed) {
            Some(at) => {
                actions.drain(at..at + 3);
            }
            // The batch ended in this step (its outcomes say so), before or after the write.
            None if matches!(self.state, State::Finished | State::Failed) => {
                let (commit, message, write) = (&performed[0], &performed[1], &performed[2]);
                actions.retain(|a| a != commit && a != message && a != write);
            }
            None => {
                // Both sides apply the same rules, so this does not happen; should it, nothing
                // this step would write goes out and message j is uncertain.
                actions.retain(|a| matches!(a, Action::MessageDone(_)));
                let held_back = self.take_deferred();
                actions.extend(held_back);
                let error = Error::protocol(
                    Stage::Data,
                    format!("internal error: the replies that matched the write armed for message {j} called for another write; the batch stopped"),
                );
                self.stop_batch(error, &mut actions);
                self.seal_outcomes(&mut actions);
            }
        }
        if let Some(b) = self.batch.as_mut() {
            b.fired = None;
        }
        Ok(actions)
    }
}
