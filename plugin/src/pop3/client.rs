//! The POP3 fetch session: greeting, CAPA, STLS, AUTH or USER/PASS, STAT/UIDL/LIST, RETR of
//! the new messages, a wait for the host to store them, then (with after-fetch `Delete`) DELE
//! of stored messages, then QUIT. Deletions only take effect when QUIT succeeds (RFC 1939
//! UPDATE state), and nothing is marked for deletion before the host confirmed it stored it.
//!
//! A check session (`Pop3Session::check`) runs the same login, then only STAT and QUIT, and
//! reports each step with `Action::Progress`.

use std::collections::{HashSet, VecDeque};
use std::fmt;

use crate::config::{AfterFetch, Credentials, FirstSync, InboundProtocol, Limits, Mailbox, Server};
use crate::error::{Error, Result, Stage};
use crate::link::Link;
use crate::sasl::{self, Mechanism};
use crate::session::{
    Action, CheckSummary, Event, FetchSummary, FetchedMessage, FolderCount, Instant, Outcome, Session, SkippedMessage,
    Step, StepReport,
};

use super::response::{self, Status};
use super::sync::SyncState;

mod auth;
mod check;
mod listing;
mod retrieve;

use check::shown;

/// RFC 2449 section 4: a command line is at most 255 octets. A longer AUTH initial response
/// (OAuth tokens usually are) is sent after the server's empty challenge (RFC 5034 section 4).
const MAX_COMMAND_LINE: usize = 255;

/// RETR commands in flight when the server allows PIPELINING: enough to hide the round trips,
/// few enough that unread commands never fill a socket buffer. Refilled at half.
const RETR_WINDOW: usize = 16;

/// DELE commands in flight with PIPELINING; their replies are one short line each.
const DELE_WINDOW: usize = 64;

/// The folder every POP3 message is reported in.
const INBOX: &str = "INBOX";

/// The SASL mechanisms we can run; only these are kept from the CAPA SASL line.
const KNOWN_MECHANISMS: [Mechanism; 4] =
    [Mechanism::Plain, Mechanism::Login, Mechanism::XOAuth2, Mechanism::OAuthBearer];

#[derive(Debug, Default)]
struct Capabilities {
    stls: bool,
    pipelining: bool,
    sasl: Vec<String>,
    /// Lines of the CAPA listing read so far.
    lines: usize,
}

/// Most lines a CAPA listing may have; real servers send about 10 (RFC 2449 defines 11
/// capabilities). A server that keeps sending lines never finishes the listing.
pub(crate) const MAX_CAPA_LINES: usize = 128;

/// Most characters of one unique-id (RFC 1939 section 7: 1 to 70 characters 0x21-0x7E).
pub(crate) const MAX_UID_CHARS: usize = 70;

/// Most bytes of unique-ids one UIDL listing may hold in memory (about 16 MiB: 240 000
/// messages of the longest ids, a million of typical ones).
pub(crate) const MAX_UIDL_LISTING_BYTES: usize = 16 << 20;

/// Server text quoted in a check report is cut to this many characters.
const MAX_SHOWN_CHARS: usize = 200;

/// SASL mechanism names kept for a check report; more are not worth showing.
const MAX_SHOWN_MECHANISMS: usize = 16;

/// What a check session (`Pop3Session::check`) learns for its step reports. Only filled from
/// text we may quote (never before TLS on a STARTTLS connection).
#[derive(Debug, Default)]
struct Check {
    /// The capability lines of the last CAPA, cleaned and joined, bounded.
    capabilities: String,
    /// Every SASL mechanism the last CAPA named, also those we cannot run.
    mechanisms: Vec<String>,
    /// The last CAPA listed USER.
    user: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthStep {
    /// `AUTH <mech>` was sent alone; waiting for the empty challenge to send the response.
    AwaitPrompt(Mechanism),
    /// The SASL response was sent; waiting for +OK / -ERR, or an OAuth error challenge.
    AwaitResult(Mechanism),
    /// The OAuth error challenge was answered; waiting for the final -ERR.
    AwaitFinal,
    User,
    Pass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the host to connect.
    Connecting,
    Greeting,
    /// `body`: the +OK was read and capability lines follow.
    Capa {
        body: bool,
    },
    Stls,
    /// The host is running the TLS handshake.
    TlsHandshake,
    Auth(AuthStep),
    Stat,
    Uidl {
        body: bool,
    },
    List {
        body: bool,
    },
    Retr,
    /// Every message of the batch was delivered; the host has to store them.
    AwaitStored,
    /// DELE of stored messages (after-fetch `Delete`).
    Dele,
    Quit,
    Done,
    Failed,
}

impl Phase {
    fn stage(self) -> Stage {
        match self {
            Phase::Connecting => Stage::Connect,
            Phase::Greeting => Stage::Greeting,
            Phase::Capa { .. } => Stage::Capabilities,
            Phase::Stls | Phase::TlsHandshake => Stage::Starttls,
            Phase::Auth(_) => Stage::Authenticate,
            Phase::Stat | Phase::Uidl { .. } | Phase::List { .. } => Stage::ListMessages,
            Phase::Retr | Phase::AwaitStored => Stage::FetchMessage,
            Phase::Dele | Phase::Quit | Phase::Done | Phase::Failed => Stage::Logout,
        }
    }

    /// True when the next thing to happen is a reply from the server (so a deadline runs).
    fn waits_for_server(self) -> bool {
        !matches!(self, Phase::Connecting | Phase::TlsHandshake | Phase::AwaitStored | Phase::Done | Phase::Failed)
    }
}

/// One message on the server, from UIDL (and LIST for its size).
#[derive(Debug)]
struct Entry {
    number: u32,
    uid: String,
    size: Option<u64>,
}

#[derive(Debug, Default)]
struct Listing {
    /// The message count from STAT, which bounds the listings.
    count: u32,
    entries: Vec<Entry>,
    /// Bytes of the unique-ids in `entries`.
    uid_bytes: usize,
    /// STAT, UIDL and LIST were sent in one write.
    pipelined: bool,
}

#[derive(Debug)]
struct Target {
    number: u32,
    uid: String,
    size: u64,
}

/// A message by its number in this session and its UIDL.
#[derive(Debug)]
struct MessageRef {
    number: u32,
    uid: String,
}

/// The message being received.
struct Body {
    raw: Vec<u8>,
    /// Body bytes received, also after it turned out too large.
    received: u64,
    /// Larger than `max_message_bytes` although LIST said otherwise: read to the end and dropped.
    oversized: bool,
}

#[derive(Default)]
struct Fetch {
    /// Planned, RETR not sent yet.
    queued: VecDeque<Target>,
    /// RETR sent; the front one is being received.
    in_flight: VecDeque<Target>,
    body: Option<Body>,
    window: usize,
    delivered: u32,
    remaining: u32,
    /// Reported with `Action::Skipped`.
    skipped: u32,
    /// Delivered, but the host has not confirmed they are stored.
    unconfirmed: Vec<MessageRef>,
}

/// After-fetch `Delete`: stored messages to DELE once the batch is over.
#[derive(Default)]
struct Deletion {
    /// Stored (in this run or an earlier one); DELE not sent yet.
    queued: Vec<MessageRef>,
    /// DELE sent, reply pending, in order.
    in_flight: VecDeque<MessageRef>,
    window: usize,
    /// Accepted by DELE; gone from the server only once QUIT succeeds.
    marked: Vec<String>,
    quit_sent: bool,
}

/// A POP3 fetch session over one connection.
pub struct Pop3Session {
    mailbox: Mailbox,
    link: Link,
    phase: Phase,
    /// The stage of the error that ended the session, for events that still arrive.
    failed_at: Stage,
    /// `None` when the server refused CAPA.
    caps: Option<Capabilities>,
    sync: SyncState,
    /// False until the session has a sync state worth storing (given one, or listed the mailbox).
    has_sync_state: bool,
    listing: Listing,
    fetch: Fetch,
    deletion: Deletion,
    /// The server's OAuth error challenge, decoded, for the admin.
    oauth_challenge: Option<String>,
    /// The server closed while the host was storing messages.
    server_closed: bool,
    /// Set for a check session: report steps, STAT instead of the listing, change nothing.
    check: Option<Check>,
    /// Commands of this `handle` call, coalesced into one write (may hold a secret while
    /// authenticating, so `Debug` skips it).
    out: Vec<u8>,
    actions: Vec<Action>,
}

impl fmt::Debug for Pop3Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pop3Session")
            .field("server", &self.mailbox.server)
            .field("username", &self.mailbox.credentials.username())
            .field("phase", &self.phase)
            .field("delivered", &self.fetch.delivered)
            .field("remaining", &self.fetch.remaining)
            .field("skipped", &self.fetch.skipped)
            .field("marked_for_deletion", &self.deletion.marked.len())
            .field("check", &self.check.is_some())
            .finish_non_exhaustive()
    }
}

impl Pop3Session {
    /// `sync_state` is what `sync_state()` returned last time (None = never fetched).
    pub fn new(mailbox: Mailbox, sync_state: Option<&[u8]>) -> Result<Self> {
        if mailbox.protocol != InboundProtocol::Pop3 {
            return Err(Error::invalid(Stage::Connect, "this mailbox is configured for IMAP, not POP3"));
        }
        crate::sasl::check_credentials(&mailbox.credentials)?;
        if mailbox.credentials.username().bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(Error::invalid(
                Stage::Authenticate,
                "the user name contains a line break or NUL character; correct the mailbox's user name",
            ));
        }
        if let AfterFetch::MoveTo(folder) = &mailbox.after_fetch {
            return Err(Error::invalid(
                Stage::Connect,
                format!(
                    "POP3 cannot move messages to the folder \"{folder}\": it only sees the inbox. Set the after-fetch action to keep or delete, or fetch this mailbox over IMAP to move fetched messages"
                ),
            ));
        }
        let (sync, has_sync_state) = match sync_state {
            Some(bytes) => (SyncState::decode(bytes)?, true),
            None => (SyncState::default(), false),
        };
        let link = Link::new(&mailbox.server, &mailbox.limits);
        Ok(Pop3Session {
            mailbox,
            link,
            phase: Phase::Connecting,
            failed_at: Stage::Connect,
            caps: None,
            sync,
            has_sync_state,
            listing: Listing::default(),
            fetch: Fetch::default(),
            deletion: Deletion::default(),
            oauth_challenge: None,
            server_closed: false,
            check: None,
            out: Vec::new(),
            actions: Vec::new(),
        })
    }

    /// A connection check ("test connection"): greeting, CAPA, STLS when configured, login,
    /// STAT, QUIT, each step reported with `Action::Progress`, then
    /// `Finished(Outcome::Checked)`. Nothing is listed, fetched or deleted, and there is no sync
    /// state; the mailbox's after-fetch action and first-sync policy are ignored.
    pub fn check(mailbox: Mailbox) -> Result<Pop3Session> {
        // Keep: the check must never reach a deletion path, and MoveTo (refused for fetching)
        // does not matter for a check.
        let mailbox = Mailbox { after_fetch: AfterFetch::default(), ..mailbox };
        let mut session = Pop3Session::new(mailbox, None)?;
        session.check = Some(Check::default());
        Ok(session)
    }

    /// Messages reported with `Action::Skipped` so far in this session (larger than
    /// `max_message_bytes`, or than `max_batch_bytes`). They are recorded as handled, so they
    /// are reported once and stay on the server untouched.
    pub fn skipped_oversized(&self) -> u32 {
        self.fetch.skipped
    }

    fn handle_event(&mut self, event: Event<'_>, now: Instant) -> Result<()> {
        // End of stream is expected after QUIT, and harmless while the host stores the batch
        // (the server may have timed us out): the messages are already delivered.
        if event == Event::Closed {
            match self.phase {
                Phase::Quit if self.check.is_some() => {
                    return self.finish_check("logged out (the server closed the connection after QUIT)")
                }
                Phase::Quit => return self.finish(),
                Phase::AwaitStored => {
                    self.server_closed = true;
                    return Ok(());
                }
                Phase::Dele => {
                    return Err(Error::network(
                        Stage::Logout,
                        "the server closed the connection before the deletions were committed, so nothing was deleted; the messages are stored, and the next run deletes them",
                    ))
                }
                _ => {}
            }
        }
        let stage = self.phase.stage();
        if self.link.absorb(&event, now, stage)? {
            return Ok(());
        }
        match event {
            Event::Connected => {
                if self.phase != Phase::Connecting {
                    return Err(Error::protocol(stage, "the host reported a connection that was already established"));
                }
                self.phase = Phase::Greeting;
            }
            Event::TlsEstablished => {
                if self.phase != Phase::TlsHandshake {
                    return Err(Error::protocol(
                        stage,
                        "the host reported a TLS handshake the session did not ask for",
                    ));
                }
                self.report(Step::Starttls, |_| "the connection is now encrypted (STLS succeeded)".into());
                // RFC 2595: what the server said in clear text may have been forged; ask again.
                self.send_capa();
            }
            Event::Stored => self.on_stored()?,
            Event::Received(_) | Event::Timer | Event::Closed | Event::TlsFailed(_) => {}
        }
        while self.step()? {}
        if self.phase.waits_for_server() {
            // The deadline is for silence: refresh it when the server spoke or we asked something.
            if matches!(event, Event::Received(_)) || !self.out.is_empty() || self.link.deadline().is_none() {
                self.link.expect_reply(now);
            }
        } else {
            self.link.clear_deadline();
        }
        Ok(())
    }

    /// Consumes what is buffered for the current phase; false when more input (or a host
    /// event) is needed.
    fn step(&mut self) -> Result<bool> {
        match self.phase {
            Phase::Connecting | Phase::TlsHandshake | Phase::Done | Phase::Failed => Ok(false),
            Phase::Retr => self.retr_step(),
            Phase::AwaitStored => {
                // Nothing is owed to us; a server may announce its idle logout. Drop such lines.
                let found = self.link.next_line(Stage::FetchMessage)?.is_some();
                Ok(found)
            }
            phase => {
                let Some(line) = self.link.next_line(phase.stage())? else {
                    return Ok(false);
                };
                let line = line.0.to_vec();
                self.on_line(phase, &line)?;
                Ok(true)
            }
        }
    }

    fn on_line(&mut self, phase: Phase, line: &[u8]) -> Result<()> {
        let stage = phase.stage();
        match phase {
            Phase::Greeting => match response::status(line, stage)? {
                Status::Ok(text) => {
                    self.report(Step::Greeting, |s| {
                        if s.link.unverified() {
                            "server ready (its text arrived before encryption and is not shown)".into()
                        } else {
                            format!("server ready: {}", shown(text))
                        }
                    });
                    self.send_capa();
                    Ok(())
                }
                Status::Err(text) => Err(Error::protocol(
                    stage,
                    "the server refused the session in its greeting; it may be overloaded or blocking this address, retry later",
                )
                .with_reply(response::reply("-ERR", text))),
                Status::Continue(_) => Err(unexpected(line, stage)),
            },
            Phase::Capa { body: false } => match response::status(line, stage)? {
                Status::Ok(_) => {
                    self.caps = Some(Capabilities::default());
                    self.phase = Phase::Capa { body: true };
                    Ok(())
                }
                // A server without RFC 2449 support: no STLS, no SASL, plain USER/PASS.
                Status::Err(_) => {
                    self.caps = None;
                    self.after_capabilities()
                }
                Status::Continue(_) => Err(unexpected(line, stage)),
            },
            Phase::Capa { body: true } => match response::unstuff(line) {
                Some(capability) => self.note_capability(capability),
                None => self.after_capabilities(),
            },
            Phase::Stls => match response::status(line, stage)? {
                Status::Ok(_) => {
                    self.link.begin_starttls()?;
                    self.emit(Action::StartTls);
                    self.phase = Phase::TlsHandshake;
                    Ok(())
                }
                Status::Err(text) => Err(Error::policy(
                    stage,
                    "the server refused STLS, so the connection cannot be encrypted; no credentials were sent. Fix TLS on the server or switch the mailbox to implicit TLS (usually port 995)",
                )
                .with_reply(response::reply("-ERR", text))),
                Status::Continue(_) => Err(unexpected(line, stage)),
            },
            Phase::Auth(step) => self.on_auth_line(step, line),
            Phase::Stat if self.check.is_some() => self.on_check_stat(line),
            Phase::Stat => self.on_stat(line),
            Phase::Uidl { body: false } | Phase::List { body: false } => match response::status(line, stage)? {
                Status::Ok(_) => {
                    self.phase = match phase {
                        Phase::Uidl { .. } => Phase::Uidl { body: true },
                        _ => Phase::List { body: true },
                    };
                    Ok(())
                }
                Status::Err(text) if matches!(phase, Phase::Uidl { .. }) => Err(Error::protocol(
                    stage,
                    "the server does not support UIDL (unique message ids), so mailplug cannot tell which messages it already fetched; enable UIDL on the server or use IMAP",
                )
                .with_reply(response::reply("-ERR", text))),
                Status::Err(text) => Err(Error::protocol(stage, "the server refused to list message sizes (LIST)")
                    .with_reply(response::reply("-ERR", text))),
                Status::Continue(_) => Err(unexpected(line, stage)),
            },
            Phase::Uidl { body: true } => match response::unstuff(line) {
                Some(entry) => self.on_uidl_entry(entry),
                None => {
                    // Message numbers are normally listed in order; LIST lookups need them sorted.
                    self.listing.entries.sort_unstable_by_key(|e| e.number);
                    if !self.listing.pipelined {
                        self.write(b"LIST\r\n");
                    }
                    self.phase = Phase::List { body: false };
                    Ok(())
                }
            },
            Phase::List { body: true } => match response::unstuff(line) {
                Some(entry) => self.on_list_entry(entry),
                None => self.finish_listing(),
            },
            Phase::Dele => self.on_dele_reply(line),
            Phase::Quit if self.check.is_some() => self.on_check_quit_reply(line),
            Phase::Quit => self.on_quit_reply(line),
            Phase::Connecting | Phase::TlsHandshake | Phase::Retr | Phase::AwaitStored | Phase::Done | Phase::Failed => {
                Err(unexpected(line, stage))
            }
        }
    }

    /// With deletions pending, only +OK to QUIT means they happened (RFC 1939 UPDATE state).
    fn on_quit_reply(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::Logout;
        if self.deletion.marked.is_empty() {
            // Nothing to commit: whatever the server says, the session is over.
            return self.finish();
        }
        match response::status(line, stage)? {
            Status::Ok(_) => {
                for uid in std::mem::take(&mut self.deletion.marked) {
                    self.sync.forget(&uid);
                }
                self.finish()
            }
            // They stay recorded as stored, so the next run deletes them without delivering them again.
            Status::Err(text) => Err(Error::protocol(
                stage,
                format!(
                    "the server answered QUIT with an error, so the {} messages marked for deletion may still be on the server; they are stored, and the next run deletes them",
                    self.deletion.marked.len()
                ),
            )
            .with_reply(response::reply("-ERR", text))),
            Status::Continue(_) => Err(unexpected(line, stage)),
        }
    }

    fn send_quit(&mut self) {
        self.write(b"QUIT\r\n");
        self.deletion.quit_sent = true;
        self.phase = Phase::Quit;
    }

    fn finish(&mut self) -> Result<()> {
        self.emit(Action::Close);
        self.emit(Action::Finished(Outcome::Fetched(FetchSummary {
            delivered: self.fetch.delivered,
            remaining: self.fetch.remaining,
            skipped: self.fetch.skipped,
        })));
        self.phase = Phase::Done;
        self.link.clear_deadline();
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            self.actions.push(Action::Write(std::mem::take(&mut self.out)));
        }
    }

    /// Queues an action. Commands written so far go out first when order matters (before
    /// StartTls, Close); a delivery or a skip report does not depend on them, so they keep
    /// coalescing.
    fn emit(&mut self, action: Action) {
        if !matches!(action, Action::Deliver(_) | Action::Skipped(_)) {
            self.flush();
        }
        self.actions.push(action);
    }
}

impl Session for Pop3Session {
    fn server(&self) -> &Server {
        &self.mailbox.server
    }

    fn handle(&mut self, event: Event<'_>, now: Instant) -> Result<Vec<Action>> {
        match self.phase {
            Phase::Done => {
                return Err(Error::protocol(Stage::Logout, "the POP3 session has already finished; start a new one"))
            }
            Phase::Failed => {
                return Err(Error::protocol(self.failed_at, "the POP3 session has already failed; start a new one"))
            }
            _ => {}
        }
        match self.handle_event(event, now) {
            Ok(()) => {
                self.flush();
                Ok(std::mem::take(&mut self.actions))
            }
            Err(error) => {
                self.phase = Phase::Failed;
                self.failed_at = error.stage;
                self.link.clear_deadline();
                self.out.clear();
                self.actions.clear();
                Err(error)
            }
        }
    }

    fn unverified(&self) -> bool {
        self.link.unverified()
    }

    fn secret_forms(&self) -> Vec<String> {
        crate::sasl::secret_forms(&self.mailbox.credentials)
    }

    fn deadline(&self) -> Option<Instant> {
        self.link.deadline()
    }

    fn sync_state(&self) -> Option<Vec<u8>> {
        self.has_sync_state.then(|| self.sync.encode())
    }
}

fn unexpected(line: &[u8], stage: Stage) -> Error {
    Error::protocol_quoting(stage, line, |t| format!("the server sent an unexpected {t} during {}", stage.as_str()))
}
