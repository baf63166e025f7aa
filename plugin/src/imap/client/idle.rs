//! IDLE (RFC 2177) without a live instance: when a fetch asked to idle (`with_idle`) has
//! nothing more to do and the server offers IDLE, the session sends `IDLE` on the first
//! folder and, on the server's "+", hands the host `Action::Idle` with a small idle state
//! (`super::super::idle::IdleState`) and the sync state; the host keeps the connection and
//! drops the instance. `ImapSession::resume` continues in a fresh instance with what ended the
//! host's wait:
//! - bytes: untagged responses are read; EXISTS means new mail: `DONE`, the tagged OK, a fetch
//!   of the watched folder (same storing rules), then `IDLE` again. Anything else (EXPUNGE,
//!   FETCH flags, `* OK still here`) re-parks the session at once, nothing written;
//! - `timer` (the host's re-IDLE timer): `DONE`, then `IDLE` again;
//! - `stop`: `DONE`, then LOGOUT;
//! - `closed`, or a BYE: a `network` error with retry advice `later`.
//!
//! Mail that arrives while the fetch runs is announced by an EXISTS before the IDLE starts
//! (or right after it): the session notices it and fetches the folder once more first.

use super::super::idle::{IdleState, MAX_IDLE_STATE_BYTES};
use super::*;
use crate::error::Retry;

/// Fetch rounds one session may run for mail announced while it idles (or just before);
/// past it the session logs out and the host opens a new one.
const MAX_ROUNDS: u32 = 50;

/// The capabilities a resumed session can use (after the login); the idle state keeps only
/// these, so it stays small.
const KEPT_CAPS: [&str; 7] = ["ESEARCH", "IDLE", "IMAP4rev2", "LITERAL+", "LITERAL-", "MOVE", "UIDPLUS"];

#[derive(Debug, Default)]
pub(super) struct IdleRun {
    /// The mailbox asked to idle.
    wanted: bool,
    /// Fetch only the first folder (a round started by IDLE).
    pub(super) watch_only: bool,
    /// The server announced new mail (EXISTS) in the watched folder since its listing.
    news: bool,
    /// The folder selected last (index into the configured folders).
    selected: Option<usize>,
    rounds: u32,
    /// The host asked to end politely.
    stopping: bool,
}

impl IdleRun {
    /// A SELECT / EXAMINE of folder `index` succeeded; its listing follows.
    pub(super) fn selected(&mut self, index: usize) {
        self.selected = Some(index);
        if index == 0 {
            self.news = false;
        }
    }

    /// An EXISTS outside SELECT: while the watched folder is selected, new mail may have come.
    pub(super) fn exists_after_select(&mut self, selected: Option<usize>) {
        if selected == Some(0) {
            self.news = true;
        }
    }
}

impl ImapSession {
    /// Idle on the first folder when the fetch is done and the server offers IDLE.
    pub fn with_idle(mut self, idle: bool) -> Self {
        self.idle.wanted = idle && !self.check;
        self
    }

    /// Continues an idling session handed over with `Action::Idle`, on the connection the host
    /// kept. `mailbox` must be the one the session was opened with; `sync_state` and
    /// `idle_state` those of the `Idling` record. A state that is unreadable, of another
    /// version, or of another server, account or folder is `invalid-input`.
    pub fn resume(mailbox: Mailbox, sync_state: &[u8], idle_state: &[u8]) -> Result<Self> {
        if idle_state.len() > MAX_IDLE_STATE_BYTES {
            return Err(Error::invalid(Stage::Connect, "the saved IDLE state is too large to be one; open the mailbox afresh (a new connection)"));
        }
        let mut s = Self::new(mailbox, Some(sync_state))?;
        let st = IdleState::decode(idle_state, &s.mailbox, &s.folders[0])?;
        if let Some(f) = s.working.folders.get(&s.folders[0]) {
            if f.uidvalidity != st.uidvalidity {
                return Err(Error::invalid(
                    Stage::Connect,
                    "the saved IDLE state and the sync state disagree about the folder's UIDVALIDITY; open the mailbox afresh (a new connection)",
                ));
            }
        }
        s.conn = Connection::resumed(&s.mailbox.server, &s.mailbox.limits, st.caps.clone(), st.last_tag, st.names.clone());
        s.committed = Some(s.working.clone());
        s.state = State::Idling { tag: st.idle_tag() };
        s.idle = IdleRun { wanted: true, watch_only: true, selected: Some(0), ..IdleRun::default() };
        Ok(s)
    }

    pub(super) fn selected_folder(&self) -> Option<usize> {
        self.idle.selected
    }

    pub(super) fn in_idle(&self) -> bool {
        matches!(self.state, State::IdleStart { .. } | State::Idling { .. } | State::IdleDone { .. })
    }

    /// Events with a meaning of their own while idling: the re-IDLE timer and a lost
    /// connection. `Ok(true)` when handled.
    pub(super) fn idle_event(&mut self, event: Event<'_>, now: Instant, out: &mut Vec<Action>) -> Result<bool> {
        if !self.in_idle() {
            return Ok(false);
        }
        match event {
            Event::Closed => Err(idle_lost(None)),
            // No reply is awaited (no deadline): the host's re-IDLE timer.
            Event::Timer if self.conn.link.deadline().is_none() => {
                if let State::Idling { tag } = &self.state {
                    let tag = tag.clone();
                    connection_write(out, b"DONE\r\n");
                    self.state = State::IdleDone { tag };
                    self.conn.link.expect_reply(now);
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The fetch is done: idle when asked and possible, otherwise log out.
    pub(super) fn end_or_idle(&mut self, out: &mut Vec<Action>) -> Result<()> {
        let can = self.idle.wanted
            && !self.check
            && !self.idle.stopping
            && self.remaining == 0
            && self.has_cap("IDLE")
            && self.idle.rounds < MAX_ROUNDS;
        if !can {
            self.logout(out);
            return Ok(());
        }
        if self.idle.selected == Some(0) && !self.idle.news {
            let tag = self.conn.send_simple(out, "IDLE");
            self.state = State::IdleStart { tag };
            return Ok(());
        }
        // Another folder is selected, or mail came meanwhile: the watched folder once more.
        self.another_round(out)
    }

    fn another_round(&mut self, out: &mut Vec<Action>) -> Result<()> {
        self.idle.rounds += 1;
        self.idle.watch_only = true;
        self.start_folder(0, out)
    }

    pub(super) fn on_idle_response(&mut self, resp: Response, out: &mut Vec<Action>) -> Result<()> {
        let stage = self.stage();
        match resp {
            Response::Status { tag: Some(tag), status, text, .. } => {
                check_tag(self.state.tag(), &tag, stage)?;
                match std::mem::replace(&mut self.state, State::Failed) {
                    // IDLE refused: end as a server without IDLE would.
                    State::IdleStart { .. } => {
                        self.idle.wanted = false;
                        self.logout(out);
                        Ok(())
                    }
                    State::Idling { .. } | State::IdleDone { .. } if status == Status::Bad => {
                        Err(command_invalid(stage, text))
                    }
                    // Ended by DONE, or by the server itself.
                    _ => self.after_idle(out),
                }
            }
            Response::Status { tag: None, status: Status::Bye, text, .. } => Err(idle_lost(Some(text))),
            Response::Status { tag: None, status, code, text } => self.conn.untagged(stage, status, code, text),
            Response::Exists(_) => {
                self.idle.news = true;
                Ok(())
            }
            Response::Continuation(_) => match std::mem::replace(&mut self.state, State::Failed) {
                State::IdleStart { tag } => {
                    self.state = State::Idling { tag };
                    Ok(())
                }
                _ => Err(no_data_pending(stage)),
            },
            Response::Capability(caps) => {
                self.conn.set_caps(caps);
                Ok(())
            }
            // EXPUNGE, RECENT, FETCH flags and the like: nothing to fetch.
            Response::Fetch(_) | Response::Search(_) | Response::List { .. } | Response::Namespace(_) | Response::Other => {
                Ok(())
            }
        }
    }

    /// The IDLE command completed: log out, fetch what was announced, or idle again.
    fn after_idle(&mut self, out: &mut Vec<Action>) -> Result<()> {
        if self.idle.stopping {
            self.logout(out);
            return Ok(());
        }
        if self.idle.news {
            if self.idle.rounds >= MAX_ROUNDS {
                self.logout(out);
                return Ok(());
            }
            return self.another_round(out);
        }
        let tag = self.conn.send_simple(out, "IDLE");
        self.state = State::IdleStart { tag };
        Ok(())
    }

    /// After every event: an idling session with news (or asked to stop) ends IDLE; one with
    /// nothing to do and nothing half-read is handed over.
    pub(super) fn idle_checkpoint(&mut self, out: &mut Vec<Action>) -> Result<()> {
        let State::Idling { tag } = &self.state else { return Ok(()) };
        if self.idle.stopping || self.idle.news {
            let tag = tag.clone();
            connection_write(out, b"DONE\r\n");
            self.state = State::IdleDone { tag };
        } else if self.conn.link.pending() == 0 {
            let idling = self.idling(tag)?;
            out.push(Action::Idle(idling));
            self.state = State::Parked;
        }
        Ok(())
    }

    /// The host asks to end politely.
    pub(super) fn stop_idle(&mut self, now: Instant, out: &mut Vec<Action>) -> Result<()> {
        self.idle.stopping = true;
        if let State::Idling { tag } = &self.state {
            let tag = tag.clone();
            connection_write(out, b"DONE\r\n");
            self.state = State::IdleDone { tag };
            self.conn.link.expect_reply(now);
        }
        Ok(())
    }

    fn idling(&self, tag: &str) -> Result<Idling> {
        let folder = self.folders[0].clone();
        let committed = self.committed.as_ref().unwrap_or(&self.working);
        let (uidvalidity, last_uid) =
            committed.folders.get(&folder).map_or((self.run.uidvalidity.unwrap_or(0), 0), |f| (f.uidvalidity, f.last_uid));
        let idle_tag = tag.strip_prefix('a').and_then(|n| n.parse::<u32>().ok()).ok_or_else(|| {
            Error::protocol(Stage::ListMessages, "the IDLE command's tag cannot be saved")
        })?;
        let mut names: Vec<&str> = self.folders.iter().map(String::as_str).collect();
        if let AfterFetch::MoveTo(t) = &self.mailbox.after_fetch {
            names.push(t);
        }
        let state = IdleState {
            v: 1,
            kind: "imap-idle".into(),
            host: self.mailbox.server.host.clone(),
            port: self.mailbox.server.port,
            user: self.mailbox.credentials.username().to_string(),
            folder,
            uidvalidity,
            last_uid,
            idle_tag,
            last_tag: self.conn.last_tag(),
            secure: self.conn.link.is_secure(),
            caps: self.conn.caps().iter().filter(|c| KEPT_CAPS.iter().any(|k| k.eq_ignore_ascii_case(c))).cloned().collect(),
            names: names.into_iter().map(|n| (n.to_string(), self.wire_name(n))).collect(),
        };
        Ok(Idling {
            idle_state: state.encode(),
            sync_state: committed.encode(),
            summary: FetchSummary { delivered: self.delivered, remaining: self.remaining, skipped: self.skipped },
        })
    }
}

fn connection_write(out: &mut Vec<Action>, bytes: &[u8]) {
    super::super::connection::write(out, bytes.to_vec());
}

/// The connection ended while idling: the host opens a new one.
fn idle_lost(bye: Option<String>) -> Error {
    let e = Error::network(
        Stage::ListMessages,
        match bye {
            Some(_) => "the server ended the idling connection (BYE); mailplug connects again",
            None => "the server closed the connection while the mailbox was idling (IMAP IDLE); mailplug connects again",
        },
    )
    .with_retry(Retry::Later);
    match bye {
        Some(text) => e.with_reply(ServerReply::new("BYE", text)),
        None => e,
    }
}
