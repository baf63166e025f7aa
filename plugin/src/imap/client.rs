//! The IMAP fetch session: greeting, capabilities, STARTTLS, authentication, then per folder
//! SELECT, UID SEARCH, sizes, one streaming UID FETCH of the batch, the after-fetch action once
//! the host has stored what was delivered (still in that folder); LOGOUT once everything is
//! stored.
//!
//! Nothing on the server changes before the host's `Stored` covers it: a folder with an
//! after-fetch action waits for `Stored` before its STORE/EXPUNGE/MOVE/COPY is written. Stored
//! UIDs stay pending in the sync state until the server confirms that action; UIDs an earlier
//! run left pending get it right after SELECT, before the listing (`client/after_fetch.rs`).
//!
//! A fetch with after-fetch `keep` opens its folders with EXAMINE (read-only), the other
//! actions with SELECT.
//!
//! A check session (`ImapSession::check`) runs the same steps up to the login, then EXAMINEs
//! each folder (read-only) to count its messages, logs out, and reports each step with
//! `Action::Progress`.
//!
//! Everything up to the login is `Connection`'s (shared with the append session).

use std::collections::{BTreeMap, VecDeque};

use super::command::sequence_set;
use super::connection::{check_tag, command_invalid, no_data_pending, Connection, Input};
use super::response::{Code, Fetch, Response, Status};
use super::sync::{FolderSync, SyncState};
use crate::config::{AfterFetch, FirstSync, InboundProtocol, Mailbox, Server};
use crate::error::{Error, Result, ServerReply, Stage};
use crate::session::{
    Action, CheckSummary, Event, FetchSummary, FetchedMessage, FolderCount, Idling, Instant, Outcome, Session,
    SkippedMessage, Step,
};

mod after_fetch;
mod download;
mod folders;
mod idle;
mod listing;
mod session;
mod stored;

use folders::configured_folders;

#[derive(Debug)]
enum State {
    /// The connection's login phase (greeting to delimiter) is running.
    Login,
    Select {
        tag: String,
    },
    Search {
        tag: String,
    },
    Sizes {
        tag: String,
    },
    /// `UID FETCH * (UID)`: the highest UID, for a NewOnly first sync without UIDNEXT.
    MaxUid {
        tag: String,
    },
    Fetch {
        tag: String,
    },
    /// The folder's batch is fetched; its after-fetch action waits for the host's Stored.
    AwaitFolderStored,
    /// After-fetch commands in flight (pipelined), oldest first.
    AfterFetch {
        pending: VecDeque<(String, Op)>,
    },
    AwaitStored,
    Logout {
        tag: String,
    },
    /// `IDLE` sent (RFC 2177); waiting for the server's "+".
    IdleStart {
        tag: String,
    },
    /// The server idles: untagged responses may come; the IDLE command `tag` is in progress.
    Idling {
        tag: String,
    },
    /// `DONE` sent; waiting for the IDLE command's completion.
    IdleDone {
        tag: String,
    },
    /// Handed over with `Action::Idle`: no further events.
    Parked,
    Finished,
    Failed,
}

impl State {
    fn tag(&self) -> Option<&str> {
        match self {
            State::Select { tag }
            | State::Search { tag }
            | State::Sizes { tag }
            | State::MaxUid { tag }
            | State::Fetch { tag }
            | State::Logout { tag }
            | State::IdleStart { tag }
            | State::Idling { tag }
            | State::IdleDone { tag } => Some(tag),
            State::AfterFetch { pending } => pending.front().map(|(t, _)| t.as_str()),
            _ => None,
        }
    }
}

/// One after-fetch command, for the reply handling and the admin's error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    MarkSeen,
    MarkDeleted,
    Expunge,
    Move,
    Copy,
    Create,
    /// After `Create`: its answer does not matter.
    Subscribe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ItemState {
    Pending,
    Delivered,
    /// Oversized (reported now or in an earlier run): handled without fetching.
    Skipped,
}

#[derive(Clone, Copy, Debug)]
struct Item {
    uid: u32,
    state: ItemState,
}

/// The folder being worked on.
#[derive(Debug, Default)]
struct FolderRun {
    index: usize,
    uidvalidity: Option<u32>,
    uidnext: Option<u32>,
    exists: Option<u32>,
    /// Only UIDs above this are new (0 when the whole folder is new).
    after_uid: u32,
    /// A Newest(n) first sync lists the newest n by sequence number; the lowest UID listed
    /// sets the starting point.
    newest: bool,
    /// New UIDs from SEARCH, ascending (empty when sizes were listed without a SEARCH).
    candidates: Vec<u32>,
    searched: bool,
    /// The lowest listed UIDs above `after_uid` with their sizes, at most `capacity` of them
    /// (memory stays bounded by the batch however large the folder); `overflow` counts the
    /// others.
    listed: BTreeMap<u32, u64>,
    capacity: usize,
    overflow: u32,
    /// Previously skipped UIDs seen again (the rest are gone from the server).
    seen_skipped: Vec<u32>,
    max_uid: Option<u32>,
    /// Windowed listing of a large folder: the highest UID to list (UIDNEXT - 1), the span
    /// of the next window, the end of the last one, the highest sequence number seen.
    top: Option<u32>,
    window_span: u32,
    window_end: Option<u32>,
    max_seq: u32,
    /// The listing stopped before the top: previously skipped UIDs not seen may still exist.
    listing_partial: bool,
    /// This run's batch, ascending; `prefix` items from the start are all handled.
    items: Vec<Item>,
    prefix: usize,
    /// TRYCREATE was answered with CREATE once already.
    created: bool,
    /// The UIDs the after-fetch commands in flight act on, ascending.
    action_uids: Vec<u32>,
    /// The after-fetch action for UIDs an earlier run stored but did not get confirmed is
    /// running; the listing follows it.
    retrying: bool,
    /// The server refused part of that retried action (the UIDs stay pending).
    retry_refused: bool,
}

/// Fetches new mail from the configured folders of one IMAP mailbox.
#[derive(Debug)]
pub struct ImapSession {
    mailbox: Mailbox,
    folders: Vec<String>,
    conn: Connection,
    state: State,
    run: FolderRun,
    /// Sync state including deliveries not yet confirmed stored.
    working: SyncState,
    /// What `sync_state` reports: only deliveries the host confirmed stored.
    committed: Option<SyncState>,
    unstored: u32,
    /// The server closed (or said BYE) while we waited for the host to store: finish without
    /// LOGOUT once it has.
    server_gone: bool,
    batch_messages_left: u32,
    batch_bytes_left: u64,
    delivered: u32,
    remaining: u32,
    skipped: u32,
    /// A connection check: EXAMINE instead of fetching, `Action::Progress` for every step
    /// (the login steps are reported by `conn`), no sync state.
    check: bool,
    /// Check only: the folders examined so far with their message counts.
    checked: Vec<FolderCount>,
    /// A retried after-fetch action was refused: the run fetches new mail, then fails with
    /// this error so the admin learns about it.
    deferred: Option<Error>,
    /// IDLE (RFC 2177) on the first folder once nothing is left to fetch (see `client/idle.rs`).
    idle: idle::IdleRun,
}

impl ImapSession {
    /// `sync_state` is what `sync_state()` returned last time (None = never fetched).
    pub fn new(mailbox: Mailbox, sync_state: Option<&[u8]>) -> Result<Self> {
        crate::sasl::check_credentials(&mailbox.credentials)?;
        let folders = configured_folders(&mailbox)?;
        if let AfterFetch::MoveTo(target) = &mailbox.after_fetch {
            let same =
                |f: &String| f == target || (f.eq_ignore_ascii_case("INBOX") && target.eq_ignore_ascii_case("INBOX"));
            if target.is_empty() {
                return Err(Error::invalid(
                    Stage::Connect,
                    "the after-fetch target folder is empty; name the folder to move fetched mail to",
                ));
            }
            if folders.iter().any(same) {
                return Err(Error::invalid(
                    Stage::Connect,
                    format!("the after-fetch target folder {target:?} is also a folder that is fetched, so moved mail would be fetched again; choose another target"),
                ));
            }
        }
        let working = match sync_state {
            Some(bytes) => SyncState::decode(bytes)?,
            None => SyncState::default(),
        };
        Ok(Self::build(mailbox, folders, working, false))
    }

    /// A connection check ("test connection"): greeting, capabilities, STARTTLS when
    /// configured, login, then EXAMINE (read-only) of every configured folder (INBOX when
    /// none) to count its messages, and LOGOUT. Each step is reported with
    /// `Action::Progress`; the session ends with `Outcome::Checked`. Nothing is fetched or
    /// changed on the server; after-fetch and first-sync settings are ignored.
    pub fn check(mut mailbox: Mailbox) -> Result<Self> {
        crate::sasl::check_credentials(&mailbox.credentials)?;
        let folders = configured_folders(&mailbox)?;
        // Ignored in a check; resetting it also keeps a nested move target from asking for
        // the hierarchy delimiter.
        mailbox.after_fetch = AfterFetch::default();
        Ok(Self::build(mailbox, folders, SyncState::default(), true))
    }

    fn build(mailbox: Mailbox, folders: Vec<String>, working: SyncState, check: bool) -> Self {
        let limits = mailbox.limits;
        // Configured names use "/" between levels and may need the server's namespace.
        let mut names: Vec<&str> = folders.iter().map(String::as_str).collect();
        if let AfterFetch::MoveTo(t) = &mailbox.after_fetch {
            names.push(t);
        }
        ImapSession {
            conn: Connection::new(&mailbox.server, &limits, &names, check),
            state: State::Login,
            run: FolderRun::default(),
            working,
            committed: None,
            unstored: 0,
            server_gone: false,
            batch_messages_left: limits.max_batch_messages,
            batch_bytes_left: limits.max_batch_bytes,
            delivered: 0,
            remaining: 0,
            skipped: 0,
            check,
            checked: Vec::new(),
            deferred: None,
            idle: idle::IdleRun::default(),
            folders,
            mailbox,
        }
    }

    fn stage(&self) -> Stage {
        match self.state {
            State::Login => self.conn.stage(),
            State::Select { .. } => Stage::SelectMailbox,
            State::Search { .. } | State::Sizes { .. } | State::MaxUid { .. } => Stage::ListMessages,
            State::Fetch { .. } | State::AwaitFolderStored | State::AfterFetch { .. } | State::AwaitStored => {
                Stage::FetchMessage
            }
            State::IdleStart { .. } | State::Idling { .. } | State::IdleDone { .. } | State::Parked => Stage::ListMessages,
            State::Logout { .. } | State::Finished | State::Failed => Stage::Logout,
        }
    }

    fn folder(&self) -> &str {
        self.folders.get(self.run.index).map_or("", String::as_str)
    }

    fn has_cap(&self, name: &str) -> bool {
        self.conn.has_cap(name)
    }

    fn step(&mut self, event: Event<'_>, now: Instant, out: &mut Vec<Action>) -> Result<()> {
        if self.idle_event(event, now, out)? {
            return Ok(());
        }
        if event == Event::Closed && matches!(self.state, State::Logout { .. }) {
            // Many servers close right after their BYE; the logout is complete either way.
            self.finish(out);
            return Ok(());
        }
        if event == Event::Closed && matches!(self.state, State::AwaitFolderStored) {
            return Err(self.lost_before_after_fetch());
        }
        if event == Event::Closed && matches!(self.state, State::AwaitStored) {
            // Idle servers log out on their own; all we still need is the host's Stored.
            self.server_gone = true;
            return Ok(());
        }
        if self.conn.absorb(event, now, self.stage(), out)? {
            return Ok(());
        }
        if event == Event::Stored {
            self.on_stored(out)?;
        }
        self.pump(out)?;
        self.idle_checkpoint(out)?;
        match self.state {
            State::Finished | State::Failed => {}
            State::Login if self.conn.awaiting_tls() => {}
            State::AwaitStored | State::AwaitFolderStored | State::Parked => self.conn.link.clear_deadline(),
            _ => self.conn.link.expect_reply(now),
        }
        Ok(())
    }

    /// Processes every complete response buffered, as long as the state reads the server.
    fn pump(&mut self, out: &mut Vec<Action>) -> Result<()> {
        while !matches!(self.state, State::Finished | State::Failed) {
            let stage = self.stage();
            match self.conn.next(stage, &self.mailbox.credentials, out)? {
                None => break,
                Some(Input::LoggedIn) => self.start_folder(0, out)?,
                Some(Input::Response(resp)) => self.on_response(resp, out)?,
            }
        }
        Ok(())
    }

    fn on_response(&mut self, resp: Response, out: &mut Vec<Action>) -> Result<()> {
        if self.in_idle() {
            return self.on_idle_response(resp, out);
        }
        let stage = self.stage();
        match resp {
            Response::Status { tag: Some(tag), status, code, text } => {
                check_tag(self.state.tag(), &tag, stage)?;
                if status == Status::Bad && !matches!(self.state, State::Logout { .. } | State::AfterFetch { .. }) {
                    return Err(command_invalid(stage, text));
                }
                self.on_tagged(status, code, text, out)
            }
            Response::Status { tag: None, status, code, text } => self.on_untagged_status(status, code, text),
            Response::Capability(caps) => {
                self.conn.set_caps(caps);
                Ok(())
            }
            Response::Exists(n) => {
                if matches!(self.state, State::Select { .. }) {
                    self.run.exists = Some(n);
                } else {
                    self.idle.exists_after_select(self.selected_folder());
                }
                Ok(())
            }
            Response::Search(ranges) => {
                if !matches!(self.state, State::Search { .. }) {
                    return Ok(());
                }
                // As many UIDs as a SEARCH line of max-line-bytes could list, however the
                // server splits or compresses them.
                // Counted in u64: "1:4294967295" holds 2^32 - 1 UIDs, which a 32-bit usize
                // (wasm32) cannot count.
                let cap = (u64::from(self.mailbox.limits.max_line_bytes) / 2).max(1);
                for (lo, hi) in ranges {
                    let count = u64::from(hi.saturating_sub(lo)) + 1;
                    if (self.run.candidates.len() as u64).saturating_add(count) > cap {
                        return Err(Error::limit(
                            Stage::ListMessages,
                            format!(
                                "the folder {:?} has more than {cap} new messages, more than max-line-bytes allows listing; raise max-line-bytes",
                                self.folder()
                            ),
                        ));
                    }
                    self.run.candidates.extend(lo..=hi);
                }
                Ok(())
            }
            Response::Fetch(f) => self.on_fetch(f, out),
            Response::Continuation(_) => Err(no_data_pending(stage)),
            Response::List { .. } | Response::Namespace(_) | Response::Other => Ok(()),
        }
    }

    fn on_untagged_status(&mut self, status: Status, code: Option<Code>, text: String) -> Result<()> {
        let stage = self.stage();
        let selecting = matches!(self.state, State::Select { .. });
        match (status, code) {
            (Status::Bye, _) if matches!(self.state, State::Logout { .. }) => Ok(()),
            (Status::Bye, _) if matches!(self.state, State::AwaitFolderStored) => {
                Err(self.lost_before_after_fetch().with_reply(ServerReply::new("BYE", text)))
            }
            (Status::Bye, _) if matches!(self.state, State::AwaitStored) => {
                self.server_gone = true;
                Ok(())
            }
            (Status::Ok | Status::No | Status::Bad, Some(Code::UidValidity(v))) if selecting => {
                self.run.uidvalidity = Some(v);
                Ok(())
            }
            (Status::Ok | Status::No | Status::Bad, Some(Code::UidNext(n))) if selecting => {
                self.run.uidnext = Some(n);
                Ok(())
            }
            // BYE, PREAUTH, CAPABILITY, warnings, alerts, PERMANENTFLAGS...
            (status, code) => self.conn.untagged(stage, status, code, text),
        }
    }

    fn on_tagged(&mut self, status: Status, code: Option<Code>, text: String, out: &mut Vec<Action>) -> Result<()> {
        let ok = status == Status::Ok;
        let reply = || ServerReply::new(status.as_str(), text.clone());
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Select { .. } => {
                if !ok {
                    let e = Error::protocol(
                        Stage::SelectMailbox,
                        format!(
                            "the server could not open the folder {:?}; check that it exists and that the user may read it",
                            self.folder()
                        ),
                    )
                    .with_reply(reply());
                    return Err(self.conn.folder_refused(e, self.folder()));
                }
                if self.check {
                    return self.folder_checked(out);
                }
                self.idle.selected(self.run.index);
                self.after_select(out)
            }
            State::Search { .. } => {
                if !ok {
                    return Err(Error::protocol(
                        Stage::ListMessages,
                        format!("the server could not search the folder {:?}", self.folder()),
                    )
                    .with_reply(reply()));
                }
                self.after_search(out)
            }
            State::Sizes { .. } => {
                if !ok {
                    return Err(Error::protocol(
                        Stage::ListMessages,
                        format!("the server could not list message sizes in the folder {:?}", self.folder()),
                    )
                    .with_reply(reply()));
                }
                if let (Some(end), Some(top)) = (self.run.window_end, self.run.top) {
                    if end < top && self.run.listed.len() < self.run.capacity {
                        // Not enough yet: widen the next window, so a sparse folder needs few.
                        self.run.window_span = self.run.window_span.saturating_mul(2);
                        self.send_window(end + 1, out);
                        return Ok(());
                    }
                    if end < top {
                        // Stopped early: the messages above the last one listed, by sequence
                        // number (exact unless another client changes the folder meanwhile).
                        let above = self.run.exists.unwrap_or(0).saturating_sub(self.run.max_seq);
                        self.run.overflow = self.run.overflow.saturating_add(above);
                        self.run.listing_partial = true;
                    }
                }
                self.after_sizes(out)
            }
            State::MaxUid { .. } => {
                if !ok {
                    return Err(Error::protocol(
                        Stage::ListMessages,
                        format!("the server could not report the highest UID in the folder {:?}", self.folder()),
                    )
                    .with_reply(reply()));
                }
                let last = self.run.max_uid.unwrap_or(0);
                self.set_last_uid(last);
                self.commit_baseline();
                self.start_folder(self.run.index + 1, out)
            }
            State::AfterFetch { mut pending } => {
                let Some((_, op)) = pending.pop_front() else {
                    return Err(Error::protocol(
                        Stage::FetchMessage,
                        "the server completed a command that was never sent",
                    ));
                };
                self.on_after_fetch_reply(op, pending, status, code, text, out)
            }
            State::Fetch { .. } => {
                // Messages expunged by another client meanwhile are simply gone; anything else is an error.
                let expunged = matches!(&code, Some(Code::Other(c)) if c.eq_ignore_ascii_case("EXPUNGEISSUED"));
                if !ok && !expunged {
                    return Err(Error::protocol(
                        Stage::FetchMessage,
                        format!("the server could not send messages from the folder {:?}", self.folder()),
                    )
                    .with_reply(reply()));
                }
                self.folder_fetched(out)
            }
            State::Logout { .. } => {
                self.finish(out);
                Ok(())
            }
            other => {
                self.state = other;
                Err(Error::protocol(self.stage(), "the server completed a command that was never sent"))
            }
        }
    }

    fn logout(&mut self, out: &mut Vec<Action>) {
        let tag = self.conn.send_simple(out, "LOGOUT");
        self.state = State::Logout { tag };
    }

    fn finish(&mut self, out: &mut Vec<Action>) {
        self.state = State::Finished;
        self.conn.link.clear_deadline();
        if self.check {
            self.conn.progress(out, Step::Logout, || "logged out".to_string());
            out.push(Action::Close);
            out.push(Action::Finished(Outcome::Checked(CheckSummary { folders: std::mem::take(&mut self.checked) })));
            return;
        }
        out.push(Action::Close);
        out.push(Action::Finished(Outcome::Fetched(FetchSummary {
            delivered: self.delivered,
            remaining: self.remaining,
            skipped: self.skipped,
        })));
    }
}
