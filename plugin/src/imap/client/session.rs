//! The `Session` trait for the fetch and check session: events in (errors end it), the
//! deadline, the committed sync state, and `stop`.

use super::*;

impl Session for ImapSession {
    fn server(&self) -> &Server {
        &self.mailbox.server
    }

    fn handle(&mut self, event: Event<'_>, now: Instant) -> Result<Vec<Action>> {
        if matches!(self.state, State::Finished | State::Failed) {
            return Err(Error::protocol(self.stage(), "the session has already ended; open a new session"));
        }
        if matches!(self.state, State::Parked) {
            return Err(parked_error());
        }
        let mut out = Vec::new();
        match self.step(event, now, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                self.state = State::Failed;
                self.conn.link.clear_deadline();
                Err(e)
            }
        }
    }

    fn unverified(&self) -> bool {
        self.conn.link.unverified()
    }

    fn secret_forms(&self) -> Vec<String> {
        crate::sasl::secret_forms(&self.mailbox.credentials)
    }

    fn deadline(&self) -> Option<Instant> {
        self.conn.link.deadline()
    }

    fn sync_state(&self) -> Option<Vec<u8>> {
        if self.check {
            return None;
        }
        self.committed.as_ref().map(SyncState::encode)
    }

    fn stop(&mut self, now: Instant) -> Result<Vec<Action>> {
        if matches!(self.state, State::Finished | State::Failed) {
            return Err(Error::protocol(self.stage(), "the session has already ended; open a new session"));
        }
        if matches!(self.state, State::Parked) {
            return Err(parked_error());
        }
        let mut out = Vec::new();
        match self.stop_idle(now, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                self.state = State::Failed;
                self.conn.link.clear_deadline();
                Err(e)
            }
        }
    }
}

/// An event for a session that was handed over with `Action::Idle`.
fn parked_error() -> Error {
    Error::protocol(
        Stage::ListMessages,
        "the session went idle and was handed over; continue it with inbound.resume in a fresh session",
    )
}
