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

    fn send_capa(&mut self) {
        self.caps = None;
        if let Some(check) = self.check.as_mut() {
            *check = Check::default();
        }
        self.write(b"CAPA\r\n");
        self.phase = Phase::Capa { body: false };
    }

    fn note_capability(&mut self, line: &[u8]) -> Result<()> {
        if self.caps.is_some() && !self.link.unverified() {
            if let Some(check) = self.check.as_mut() {
                check.note(line);
            }
        }
        let Some(caps) = self.caps.as_mut() else { return Ok(()) };
        caps.lines += 1;
        if caps.lines > MAX_CAPA_LINES {
            return Err(Error::limit(
                Stage::Capabilities,
                format!(
                    "the server sent more than {MAX_CAPA_LINES} CAPA lines without ending the list; the session was stopped. The server may be faulty or hostile: check it with its administrator"
                ),
            ));
        }
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let Some(name) = words.next() else { return Ok(()) };
        if name.eq_ignore_ascii_case(b"STLS") {
            caps.stls = true;
        } else if name.eq_ignore_ascii_case(b"PIPELINING") {
            caps.pipelining = true;
        } else if name.eq_ignore_ascii_case(b"SASL") {
            for word in words {
                let known = KNOWN_MECHANISMS.iter().find(|m| word.eq_ignore_ascii_case(m.name().as_bytes()));
                if let Some(m) = known {
                    if !caps.sasl.iter().any(|s| s == m.name()) {
                        caps.sasl.push(m.name().to_string());
                    }
                }
            }
        }
        Ok(())
    }

    fn after_capabilities(&mut self) -> Result<()> {
        self.report(Step::Capabilities, |s| s.capabilities_detail());
        if self.link.needs_starttls() {
            if self.caps.as_ref().is_some_and(|c| c.stls) {
                self.write(b"STLS\r\n");
                self.phase = Phase::Stls;
                return Ok(());
            }
            return Err(Error::policy(
                Stage::Starttls,
                format!(
                    "{} does not offer STLS, so the connection cannot be encrypted; no credentials were sent. Enable STLS on the server or switch the mailbox to implicit TLS (usually port 995)",
                    self.mailbox.server.host
                ),
            ));
        }
        self.start_auth()
    }

    fn start_auth(&mut self) -> Result<()> {
        self.link.check_credentials_allowed()?;
        let offered: &[String] = self.caps.as_ref().map_or(&[], |c| c.sasl.as_slice());
        // `None`: USER/PASS.
        let mechanism = match &self.mailbox.credentials {
            // PLAIN needs one round trip instead of two, and carries any password byte.
            Credentials::Basic { .. } => {
                offered.iter().any(|m| m == Mechanism::Plain.name()).then_some(Mechanism::Plain)
            }
            creds @ Credentials::OAuth2 { .. } => match sasl::select(creds, offered) {
                Some(mechanism) => Some(mechanism),
                None => {
                    return Err(Error::protocol(
                        Stage::Authenticate,
                        format!(
                            "the server does not offer OAuth2 login by SASL {} over POP3, so the access token cannot be used; enable OAuth2 for POP3 on the server, change the configured mechanism, or use a password",
                            sasl::oauth_wanted(creds)
                        ),
                    ))
                }
            },
        };
        self.report(Step::Mechanisms, |s| s.mechanisms_detail(mechanism));
        match mechanism {
            Some(mechanism) => self.start_sasl(mechanism),
            None => {
                let command = format!("USER {}\r\n", self.mailbox.credentials.username());
                self.write(command.as_bytes());
                self.phase = Phase::Auth(AuthStep::User);
                Ok(())
            }
        }
    }

    fn sasl_response(&self, mechanism: Mechanism) -> Result<String> {
        sasl::initial_response(mechanism, &self.mailbox.credentials).ok_or_else(|| {
            Error::protocol(Stage::Authenticate, format!("{} cannot be used with these credentials", mechanism.name()))
        })
    }

    fn start_sasl(&mut self, mechanism: Mechanism) -> Result<()> {
        let initial = self.sasl_response(mechanism)?;
        let mut command = format!("AUTH {}", mechanism.name());
        if command.len() + 1 + initial.len() + 2 <= MAX_COMMAND_LINE {
            command.push(' ');
            command.push_str(&initial);
            self.phase = Phase::Auth(AuthStep::AwaitResult(mechanism));
        } else {
            self.phase = Phase::Auth(AuthStep::AwaitPrompt(mechanism));
        }
        command.push_str("\r\n");
        self.write(command.as_bytes());
        Ok(())
    }

    fn on_auth_line(&mut self, step: AuthStep, line: &[u8]) -> Result<()> {
        let stage = Stage::Authenticate;
        let status = response::status(line, stage)?;
        match (step, status) {
            (_, Status::Err(text)) => Err(self.rejected(text)),
            (AuthStep::AwaitPrompt(mechanism), Status::Continue(_)) => {
                let mut answer = self.sasl_response(mechanism)?;
                answer.push_str("\r\n");
                self.write(answer.as_bytes());
                self.phase = Phase::Auth(AuthStep::AwaitResult(mechanism));
                Ok(())
            }
            (AuthStep::AwaitResult(mechanism), Status::Continue(challenge)) => {
                // RFC 7628 3.2.3 / Google's XOAUTH2: the token was refused and the challenge
                // says why; answer with the dummy response to get the final -ERR.
                let dummy: &[u8] = match mechanism {
                    Mechanism::OAuthBearer => b"AQ==\r\n",
                    Mechanism::XOAuth2 => b"\r\n",
                    Mechanism::Plain | Mechanism::Login => {
                        return Err(Error::protocol(
                            stage,
                            format!("the server asked for more data after AUTH {}, which takes none", mechanism.name()),
                        ))
                    }
                };
                self.oauth_challenge = Some(decode_challenge(challenge));
                self.write(dummy);
                self.phase = Phase::Auth(AuthStep::AwaitFinal);
                Ok(())
            }
            (AuthStep::User, Status::Ok(_)) => {
                let Credentials::Basic { password, .. } = &self.mailbox.credentials else {
                    return Err(Error::protocol(stage, "USER/PASS login needs a password"));
                };
                if password.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                    return Err(Error::invalid(
                        stage,
                        "the password contains a line break or NUL character, which POP3 USER/PASS login cannot carry; change the password",
                    ));
                }
                let command = format!("PASS {password}\r\n");
                self.write(command.as_bytes());
                self.phase = Phase::Auth(AuthStep::Pass);
                Ok(())
            }
            (AuthStep::AwaitResult(_) | AuthStep::AwaitFinal | AuthStep::Pass, Status::Ok(_)) => {
                self.report(Step::Login, |s| format!("logged in as {}", s.mailbox.credentials.username()));
                self.start_listing();
                Ok(())
            }
            _ => Err(unexpected(line, stage)),
        }
    }

    /// The error for a -ERR during login. RFC 2449 response codes tell a locked or broken
    /// mailbox apart from wrong credentials.
    fn rejected(&self, text: &[u8]) -> Error {
        let stage = Stage::Authenticate;
        let username = self.mailbox.credentials.username();
        let error = match response::response_code(text).as_deref() {
            Some("IN-USE") => Error::protocol(
                stage,
                "the mailbox is locked by another POP3 session (another client is fetching it); stop the other client or retry later",
            ),
            Some("SYS/TEMP") => Error::protocol(stage, "the server has a temporary problem logging in; retry later"),
            Some("SYS/PERM") => Error::protocol(
                stage,
                "the server has a permanent problem with this mailbox; contact the mail provider",
            ),
            _ => match &self.mailbox.credentials {
                Credentials::Basic { .. } => Error::auth(
                    stage,
                    format!(
                        "the server rejected the user name \"{username}\" or its password; check the credentials (some providers require an app password or POP3 to be enabled for the account)"
                    ),
                ),
                Credentials::OAuth2 { .. } => {
                    let details = self.oauth_challenge.as_deref().map(|c| format!(" (server details: {c})")).unwrap_or_default();
                    let e = Error::auth(
                        stage,
                        format!(
                            "the server rejected the OAuth2 access token for \"{username}\"; it may have expired or lack the POP scope, or the account may not allow POP{details}"
                        ),
                    );
                    match &self.oauth_challenge {
                        Some(c) => e.with_quote(c.clone()),
                        None => e,
                    }
                }
            },
        };
        error.with_reply(response::reply("-ERR", text))
    }

    fn start_listing(&mut self) {
        if self.check.is_some() {
            // A check only counts: no UIDL, no LIST.
            self.write(b"STAT\r\n");
            self.phase = Phase::Stat;
            return;
        }
        let pipelined = self.caps.as_ref().is_some_and(|c| c.pipelining);
        self.listing.pipelined = pipelined;
        self.write(if pipelined { b"STAT\r\nUIDL\r\nLIST\r\n" } else { b"STAT\r\n" });
        self.phase = Phase::Stat;
    }

    fn on_stat(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::ListMessages;
        match response::status(line, stage)? {
            Status::Ok(text) => {
                let count = text.split(|&b| b == b' ').next().and_then(response::parse_u64);
                let Some(count) = count.and_then(|c| u32::try_from(c).ok()) else {
                    return Err(Error::protocol_quoting(stage, text, |t| {
                        format!("the server's STAT reply {t} has no message count")
                    }));
                };
                self.listing.count = count;
                if count == 0 && !self.listing.pipelined {
                    return self.finish_listing();
                }
                if !self.listing.pipelined {
                    self.write(b"UIDL\r\n");
                }
                self.phase = Phase::Uidl { body: false };
                Ok(())
            }
            Status::Err(text) => Err(Error::protocol(stage, "the server refused to report the mailbox size (STAT)")
                .with_reply(response::reply("-ERR", text))),
            Status::Continue(_) => Err(unexpected(line, stage)),
        }
    }

    /// Check mode: STAT gives the folder report, then QUIT.
    fn on_check_stat(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::ListMessages;
        match response::status(line, stage)? {
            Status::Ok(text) => {
                let mut words = text.split(|&b| b == b' ');
                let count = words.next().and_then(response::parse_u64).and_then(|c| u32::try_from(c).ok());
                let Some(count) = count else {
                    return Err(Error::protocol_quoting(stage, text, |t| {
                        format!("the server's STAT reply {t} has no message count")
                    }));
                };
                // Fetching only needs the count, so a missing size is not an error here either.
                let size = words.next().and_then(response::parse_u64);
                self.listing.count = count;
                let messages = if count == 1 { "1 message".to_string() } else { format!("{count} messages") };
                let detail = match size {
                    Some(bytes) => format!("{INBOX}: {messages}, {bytes} bytes"),
                    None => format!("{INBOX}: {messages}"),
                };
                self.report(Step::Folder, |_| detail);
                self.send_quit();
                Ok(())
            }
            Status::Err(text) => Err(Error::protocol(stage, "the server refused to report the mailbox size (STAT)")
                .with_reply(response::reply("-ERR", text))),
            Status::Continue(_) => Err(unexpected(line, stage)),
        }
    }

    fn on_uidl_entry(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::ListMessages;
        let Some((number, uid)) = response::listing_entry(line).filter(|(_, uid)| response::valid_uid(uid)) else {
            return Err(Error::protocol_quoting(stage, line, |t| format!("the server sent a malformed UIDL line {t}")));
        };
        if uid.len() > MAX_UID_CHARS {
            return Err(Error::limit(
                stage,
                format!(
                    "the server sent a unique-id of {} characters for message {number}; RFC 1939 allows at most {MAX_UID_CHARS}, so it cannot be tracked reliably. The server does not follow POP3: check it with its administrator",
                    uid.len()
                ),
            ));
        }
        self.listing.uid_bytes += uid.len();
        if self.listing.uid_bytes > MAX_UIDL_LISTING_BYTES {
            return Err(Error::limit(
                stage,
                format!(
                    "the server's UIDL listing holds more than {} MiB of unique-ids; the session was stopped. Empty the mailbox on the server (or fetch it with IMAP)",
                    MAX_UIDL_LISTING_BYTES >> 20
                ),
            ));
        }
        // The listing can only be as long as STAT said; this also bounds the memory it takes.
        if self.listing.entries.len() >= self.listing.count as usize {
            return Err(Error::protocol(
                stage,
                format!("the server listed more unique ids than the {} messages STAT reported", self.listing.count),
            ));
        }
        let uid = String::from_utf8_lossy(uid).into_owned();
        self.listing.entries.push(Entry { number, uid, size: None });
        Ok(())
    }

    fn on_list_entry(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::ListMessages;
        let parsed = response::listing_entry(line).and_then(|(n, size)| Some((n, response::parse_u64(size)?)));
        let Some((number, size)) = parsed else {
            return Err(Error::protocol_quoting(stage, line, |t| format!("the server sent a malformed LIST line {t}")));
        };
        let entries = &mut self.listing.entries;
        match entries.binary_search_by_key(&number, |e| e.number) {
            Ok(i) => {
                if let Some(entry) = entries.get_mut(i) {
                    entry.size = Some(size);
                }
                Ok(())
            }
            Err(_) => Err(Error::protocol(
                stage,
                format!("the server's LIST shows message {number}, which its UIDL did not list"),
            )),
        }
    }

    /// The listing is complete: prune the sync state, apply the first-sync policy, report
    /// messages too large to fetch, plan the batch and the deletions of stored messages.
    fn finish_listing(&mut self) -> Result<()> {
        let stage = Stage::ListMessages;
        let entries = std::mem::take(&mut self.listing.entries);
        {
            let mut present: HashSet<&str> = HashSet::with_capacity(entries.len());
            for entry in &entries {
                if entry.size.is_none() {
                    return Err(Error::protocol(
                        stage,
                        format!("the server's UIDL lists message {} but its LIST does not", entry.number),
                    ));
                }
                if !present.insert(entry.uid.as_str()) {
                    return Err(Error::protocol(
                        stage,
                        format!(
                            "the server gives two messages the same unique id \"{}\", so they cannot be told apart; the server's UIDL support is broken",
                            entry.uid
                        ),
                    ));
                }
            }
            self.sync.retain_present(&present);
        }
        // Without a sync state this is the mailbox's first sync: the policy decides how many of
        // the messages already there (the oldest, by message number) are left out for good.
        let left_out = if self.has_sync_state {
            0
        } else {
            match self.mailbox.first_sync {
                FirstSync::All => 0,
                FirstSync::NewOnly => entries.len(),
                FirstSync::Newest(n) => entries.len().saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)),
            }
        };
        self.has_sync_state = true;

        let limits = self.mailbox.limits;
        let delete = self.mailbox.after_fetch == AfterFetch::Delete;
        // Deletions left over from earlier runs are bounded like a batch, so a mailbox switched
        // to Delete with years of mail is cleaned up over several runs, each one committing.
        let mut earlier_deletions = 0usize;
        // A message larger than the whole batch could never be delivered either.
        let largest = limits.max_message_bytes.min(limits.max_batch_bytes);
        let mut batch_bytes = 0u64;
        let mut batch_full = false;
        for (index, entry) in entries.into_iter().enumerate() {
            let Some(size) = entry.size else { continue };
            if index < left_out {
                self.sync.record_ignored(entry.uid);
                continue;
            }
            if self.sync.is_stored(&entry.uid) {
                // Stored in an earlier run but still here: that run's QUIT did not commit.
                if delete && earlier_deletions < limits.max_batch_messages as usize {
                    earlier_deletions += 1;
                    self.deletion.queued.push(MessageRef { number: entry.number, uid: entry.uid });
                }
                continue;
            }
            if self.sync.is_ignored(&entry.uid) {
                continue;
            }
            match self.sync.skipped_size(&entry.uid) {
                // Reported in an earlier run; fetched once the limits were raised enough.
                Some(known) if known.max(size) > largest => continue,
                Some(_) => {}
                None if size > largest => {
                    self.skip(entry.uid, size);
                    continue;
                }
                None => {}
            }
            // Oldest first, and no overtaking: a later run continues where this one stopped.
            let fits = self.fetch.queued.len() < limits.max_batch_messages as usize
                && batch_bytes.saturating_add(size) <= limits.max_batch_bytes;
            if batch_full || !fits {
                batch_full = true;
                self.fetch.remaining += 1;
                continue;
            }
            batch_bytes += size;
            self.fetch.queued.push_back(Target { number: entry.number, uid: entry.uid, size });
        }

        if self.fetch.queued.is_empty() {
            self.start_deletions();
        } else {
            self.fetch.window = if self.listing.pipelined { RETR_WINDOW } else { 1 };
            self.request_more();
            self.phase = Phase::Retr;
        }
        Ok(())
    }

    /// Reports a message too large for the limits, once: the sync state remembers it.
    fn skip(&mut self, uid: String, size: u64) {
        let reason = too_large_reason(size, &self.mailbox.limits);
        self.fetch.skipped += 1;
        self.emit(Action::Skipped(SkippedMessage { id: format!("pop3:{uid}"), folder: INBOX.into(), size, reason }));
        self.sync.record_skipped(uid, size);
    }

    fn request_more(&mut self) {
        while self.fetch.in_flight.len() < self.fetch.window {
            let Some(target) = self.fetch.queued.pop_front() else { break };
            let command = format!("RETR {}\r\n", target.number);
            self.out.extend_from_slice(command.as_bytes());
            self.fetch.in_flight.push_back(target);
        }
    }

    fn retr_step(&mut self) -> Result<bool> {
        let stage = Stage::FetchMessage;
        if self.fetch.body.is_none() {
            let Some(line) = self.link.next_line(stage)? else {
                return Ok(false);
            };
            let line = line.0.to_vec();
            self.on_retr_status(&line)?;
            return Ok(true);
        }
        // A body line is bounded by the message limit, not the protocol line limit.
        let max_message = usize::try_from(self.mailbox.limits.max_message_bytes).unwrap_or(usize::MAX);
        let Some(line) = self.link.next_line_max(max_message, stage)? else {
            return Ok(false);
        };
        let Some(content) = response::unstuff(line.0) else {
            self.finish_message()?;
            return Ok(true);
        };
        if let Some(body) = self.fetch.body.as_mut() {
            let line_bytes = u64::try_from(content.len()).unwrap_or(u64::MAX).saturating_add(2);
            body.received = body.received.saturating_add(line_bytes);
            if !body.oversized {
                if body.received > self.mailbox.limits.max_message_bytes {
                    body.oversized = true;
                    body.raw = Vec::new();
                } else {
                    body.raw.extend_from_slice(content);
                    body.raw.extend_from_slice(b"\r\n");
                }
            }
        }
        Ok(true)
    }

    fn on_retr_status(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::FetchMessage;
        let Some(target) = self.fetch.in_flight.front() else {
            return Err(unexpected(line, stage));
        };
        match response::status(line, stage)? {
            Status::Ok(_) => {
                let max_message = usize::try_from(self.mailbox.limits.max_message_bytes).unwrap_or(usize::MAX);
                let expected = usize::try_from(target.size).unwrap_or(usize::MAX).min(max_message);
                self.fetch.body = Some(Body { raw: Vec::with_capacity(expected), received: 0, oversized: false });
                Ok(())
            }
            Status::Err(text) => Err(Error::protocol(
                stage,
                format!(
                    "the server refused to send message {} (unique id {}); it may have been deleted by another client, retry later",
                    target.number, target.uid
                ),
            )
            .with_reply(response::reply("-ERR", text))),
            Status::Continue(_) => Err(unexpected(line, stage)),
        }
    }

    fn finish_message(&mut self) -> Result<()> {
        let (Some(target), Some(body)) = (self.fetch.in_flight.pop_front(), self.fetch.body.take()) else {
            return Err(Error::protocol(Stage::FetchMessage, "a message ended that was never requested"));
        };
        if body.oversized {
            // LIST understated its size; it is reported with the size actually received.
            self.skip(target.uid, body.received);
        } else {
            self.fetch.delivered += 1;
            self.emit(Action::Deliver(FetchedMessage {
                id: format!("pop3:{}", target.uid),
                folder: INBOX.into(),
                raw: body.raw,
            }));
            self.fetch.unconfirmed.push(MessageRef { number: target.number, uid: target.uid });
        }
        if self.fetch.in_flight.len() <= self.fetch.window / 2 {
            self.request_more();
        }
        if self.fetch.in_flight.is_empty() {
            if self.fetch.unconfirmed.is_empty() {
                self.start_deletions();
            } else {
                self.phase = Phase::AwaitStored;
            }
        }
        Ok(())
    }

    /// The host stored everything delivered so far: only now do those messages count as
    /// stored, and only now may they be deleted.
    fn on_stored(&mut self) -> Result<()> {
        let delete = self.mailbox.after_fetch == AfterFetch::Delete;
        for message in self.fetch.unconfirmed.drain(..) {
            self.sync.record_stored(message.uid.clone());
            if delete {
                self.deletion.queued.push(message);
            }
        }
        if self.phase == Phase::AwaitStored {
            if self.server_closed {
                // Nothing can be deleted now; the next run deletes them (they are stored).
                return self.finish();
            }
            self.start_deletions();
        }
        Ok(())
    }

    /// The batch is over and stored: DELE what is queued for deletion, then QUIT.
    fn start_deletions(&mut self) {
        if self.deletion.queued.is_empty() {
            self.send_quit();
            return;
        }
        // Popped from the back, so highest number last: commands go out in ascending order.
        self.deletion.queued.sort_unstable_by_key(|m| std::cmp::Reverse(m.number));
        self.deletion.window = if self.listing.pipelined { DELE_WINDOW } else { 1 };
        self.phase = Phase::Dele;
        self.request_deletions();
    }

    fn request_deletions(&mut self) {
        while self.deletion.in_flight.len() < self.deletion.window {
            let Some(message) = self.deletion.queued.pop() else { break };
            let command = format!("DELE {}\r\n", message.number);
            self.out.extend_from_slice(command.as_bytes());
            self.deletion.in_flight.push_back(message);
        }
        // With PIPELINING the QUIT follows the last DELE in the same write.
        if self.listing.pipelined && self.deletion.queued.is_empty() && !self.deletion.quit_sent {
            self.write(b"QUIT\r\n");
            self.deletion.quit_sent = true;
        }
    }

    fn on_dele_reply(&mut self, line: &[u8]) -> Result<()> {
        let stage = Stage::Logout;
        let Some(message) = self.deletion.in_flight.pop_front() else {
            return Err(unexpected(line, stage));
        };
        match response::status(line, stage)? {
            Status::Ok(_) => self.deletion.marked.push(message.uid),
            Status::Err(text) => {
                return Err(Error::protocol(
                    stage,
                    format!(
                        "the server refused to delete message {} (unique id {}); it is already stored, so nothing is lost, and the next run tries again. If this repeats, check the mailbox with the provider or set the after-fetch action to keep",
                        message.number, message.uid
                    ),
                )
                .with_reply(response::reply("-ERR", text)));
            }
            Status::Continue(_) => return Err(unexpected(line, stage)),
        }
        if self.deletion.in_flight.len() <= self.deletion.window / 2 {
            self.request_deletions();
        }
        if self.deletion.in_flight.is_empty() {
            if self.deletion.quit_sent {
                self.phase = Phase::Quit;
            } else {
                self.send_quit();
            }
        }
        Ok(())
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

    /// Check mode: nothing was changed, so any answer to QUIT ends the check well.
    fn on_check_quit_reply(&mut self, line: &[u8]) -> Result<()> {
        let detail = match response::status(line, Stage::Logout) {
            Ok(Status::Ok(_)) => "logged out",
            Ok(Status::Err(_)) => "logged out (the server answered QUIT with an error, which is harmless: nothing was changed)",
            _ => "logged out (the server's answer to QUIT was not understood, which is harmless: nothing was changed)",
        };
        self.finish_check(detail)
    }

    fn finish_check(&mut self, logout: &str) -> Result<()> {
        self.report(Step::Logout, |_| logout.to_string());
        self.emit(Action::Close);
        self.emit(Action::Finished(Outcome::Checked(CheckSummary {
            folders: vec![FolderCount { folder: INBOX.into(), messages: self.listing.count }],
        })));
        self.phase = Phase::Done;
        self.link.clear_deadline();
        Ok(())
    }

    /// Check mode only: reports a completed step; `detail` is only built for a check.
    fn report(&mut self, step: Step, detail: impl FnOnce(&Self) -> String) {
        if self.check.is_some() {
            let detail = detail(self);
            self.emit(Action::Progress(StepReport::new(step, detail)));
        }
    }

    /// What the CAPA reply told us. Before TLS on a STARTTLS connection only what we derived
    /// from it: the text itself could have been forged.
    fn capabilities_detail(&self) -> String {
        let Some(caps) = self.caps.as_ref() else {
            return "the server does not support CAPA; USER/PASS login is assumed".into();
        };
        if self.link.unverified() {
            let stls = if caps.stls { "STLS offered" } else { "STLS not offered" };
            return format!("{stls} (the full list arrived before encryption and is not shown)");
        }
        match self.check.as_ref().map(|c| c.capabilities.as_str()) {
            Some(list) if !list.is_empty() => format!("offered: {}", shown(list.as_bytes())),
            _ => "the server lists no capabilities".into(),
        }
    }

    /// The mechanisms offered and the one we use (`None`: USER/PASS).
    fn mechanisms_detail(&self, chosen: Option<Mechanism>) -> String {
        let mut offered: Vec<&str> = Vec::new();
        if let Some(check) = self.check.as_ref() {
            offered.extend(check.mechanisms.iter().map(String::as_str));
            if check.user || self.caps.is_none() {
                offered.push("USER/PASS");
            }
        }
        let offered = if offered.is_empty() {
            "none advertised".to_string()
        } else {
            shown(offered.join(" ").as_bytes())
        };
        let using = match chosen {
            Some(mechanism) => format!("AUTH {}", mechanism.name()),
            None => "USER/PASS".into(),
        };
        format!("offered: {offered}; using {using}")
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

impl Check {
    /// Remembers one capability line for the report, bounded whatever the server sends.
    fn note(&mut self, line: &[u8]) {
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let Some(name) = words.next() else { return };
        if name.eq_ignore_ascii_case(b"USER") {
            self.user = true;
        } else if name.eq_ignore_ascii_case(b"SASL") {
            for word in words {
                let word = shown(word);
                let room = self.mechanisms.len() < MAX_SHOWN_MECHANISMS;
                if room && !word.is_empty() && !self.mechanisms.contains(&word) {
                    self.mechanisms.push(word);
                }
            }
        }
        // A little more than is shown, so the report can tell it was cut.
        if self.capabilities.len() <= MAX_SHOWN_CHARS * 4 {
            let cleaned = shown(line);
            if !cleaned.is_empty() {
                if !self.capabilities.is_empty() {
                    self.capabilities.push_str(", ");
                }
                self.capabilities.push_str(&cleaned);
            }
        }
    }
}

/// Server text for a check report: control characters removed, at most `MAX_SHOWN_CHARS`.
fn shown(text: &[u8]) -> String {
    let cleaned: String = String::from_utf8_lossy(text).chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned.trim();
    if cleaned.chars().count() <= MAX_SHOWN_CHARS {
        return cleaned.to_string();
    }
    let mut cut: String = cleaned.chars().take(MAX_SHOWN_CHARS - 3).collect();
    cut.push_str("...");
    cut
}

fn unexpected(line: &[u8], stage: Stage) -> Error {
    Error::protocol_quoting(stage, line, |t| format!("the server sent an unexpected {t} during {}", stage.as_str()))
}

/// An OAuth error challenge is base64 JSON; show it decoded when it is text.
fn decode_challenge(challenge: &[u8]) -> String {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(challenge) {
        Ok(json) if std::str::from_utf8(&json).is_ok() => crate::error::quote(&json, 80),
        _ => crate::error::quote(challenge, 80),
    }
}

/// The sentence for the admin about a message too large to fetch.
fn too_large_reason(size: u64, limits: &Limits) -> String {
    if size > limits.max_message_bytes {
        let (size, limit) = human_sizes(size, limits.max_message_bytes);
        format!("message of {size} exceeds max_message_bytes ({limit}); it stays on the server, raise the limit to import it")
    } else {
        let (size, limit) = human_sizes(size, limits.max_batch_bytes);
        format!(
            "message of {size} exceeds max_batch_bytes ({limit}), so it never fits in a batch; it stays on the server, raise max_batch_bytes to import it"
        )
    }
}

/// Two sizes in the same readable form; exact bytes when rounding would make them look equal.
fn human_sizes(a: u64, b: u64) -> (String, String) {
    let (ha, hb) = (human_size(a), human_size(b));
    if ha == hb {
        (format!("{a} bytes"), format!("{b} bytes"))
    } else {
        (ha, hb)
    }
}

fn human_size(bytes: u64) -> String {
    const KB: u64 = 1024;
    const MB: u64 = 1024 * 1024;
    const GB: u64 = 1024 * 1024 * 1024;
    let (unit, name) = match bytes {
        b if b >= GB => (GB, "GB"),
        b if b >= MB => (MB, "MB"),
        b if b >= KB => (KB, "KB"),
        b => return format!("{b} bytes"),
    };
    // One decimal, without a trailing ".0"; integer arithmetic so huge sizes stay exact.
    let tenths = (u128::from(bytes) * 10 + u128::from(unit) / 2) / u128::from(unit);
    if tenths % 10 == 0 {
        format!("{} {name}", tenths / 10)
    } else {
        format!("{}.{} {name}", tenths / 10, tenths % 10)
    }
}
