//! The IMAP fetch session: greeting, capabilities, STARTTLS, authentication, then per folder
//! SELECT, UID SEARCH, sizes, one streaming UID FETCH of the batch; LOGOUT once the host has
//! stored what was delivered.

use std::collections::VecDeque;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::command::{sequence_set, Command, LiteralMode, Tagger, Wire};
use super::response::{self, Code, Fetch, Framer, Response, Status};
use super::sync::{FolderSync, SyncState};
use super::utf7::encode_folder_name;
use crate::config::{Credentials, InboundProtocol, Mailbox, Server};
use crate::error::{Error, Result, ServerReply, Stage};
use crate::link::Link;
use crate::sasl::{self, Mechanism};
use crate::session::{Action, Event, FetchSummary, FetchedMessage, Instant, Outcome, Session};

#[derive(Debug)]
enum State {
    Greeting,
    Capability { tag: String },
    StartTls { tag: String },
    TlsHandshake,
    Auth(Auth),
    Select { tag: String },
    Search { tag: String },
    Sizes { tag: String },
    Fetch { tag: String },
    AwaitStored,
    Logout { tag: String },
    Finished,
    Failed,
}

#[derive(Debug)]
struct Auth {
    tag: String,
    /// What the user sees in errors: "LOGIN", "AUTHENTICATE PLAIN", ...
    method: &'static str,
    /// Answers to the server's "+" continuations, in order.
    answers: VecDeque<Wire>,
    /// For OAuth mechanisms: the reply to an error challenge, after which the server sends
    /// its tagged NO.
    on_error_challenge: Option<&'static [u8]>,
    /// The decoded error challenge, kept for the admin.
    challenge: Option<String>,
}

impl State {
    fn stage(&self) -> Stage {
        match self {
            State::Greeting => Stage::Greeting,
            State::Capability { .. } => Stage::Capabilities,
            State::StartTls { .. } | State::TlsHandshake => Stage::Starttls,
            State::Auth(_) => Stage::Authenticate,
            State::Select { .. } => Stage::SelectMailbox,
            State::Search { .. } | State::Sizes { .. } => Stage::ListMessages,
            State::Fetch { .. } | State::AwaitStored => Stage::FetchMessage,
            State::Logout { .. } | State::Finished | State::Failed => Stage::Logout,
        }
    }

    fn tag(&self) -> Option<&str> {
        match self {
            State::Capability { tag }
            | State::StartTls { tag }
            | State::Auth(Auth { tag, .. })
            | State::Select { tag }
            | State::Search { tag }
            | State::Sizes { tag }
            | State::Fetch { tag }
            | State::Logout { tag } => Some(tag),
            _ => None,
        }
    }
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
    /// New UIDs, ascending; `sizes` parallel to it.
    candidates: Vec<u32>,
    sizes: Vec<Option<u64>>,
    /// The batch being fetched, ascending; `delivered` parallel to it.
    batch: Vec<u32>,
    delivered: Vec<bool>,
}

/// Fetches new mail from the configured folders of one IMAP mailbox.
#[derive(Debug)]
pub struct ImapSession {
    mailbox: Mailbox,
    folders: Vec<String>,
    link: Link,
    framer: Framer,
    tags: Tagger,
    caps: Option<Vec<String>>,
    state: State,
    connected: bool,
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
}

impl ImapSession {
    /// `sync_state` is what `sync_state()` returned last time (None = never fetched).
    pub fn new(mailbox: Mailbox, sync_state: Option<&[u8]>) -> Result<Self> {
        if mailbox.protocol != InboundProtocol::Imap {
            return Err(Error::invalid(
                Stage::Connect,
                "an IMAP session was requested for a mailbox configured as POP3",
            ));
        }
        let mut folders: Vec<String> = Vec::new();
        for f in &mailbox.folders {
            if f.is_empty() {
                return Err(Error::invalid(
                    Stage::Connect,
                    "a folder name is empty; remove it or name the folder (INBOX for the inbox)",
                ));
            }
            if !folders.contains(f) {
                folders.push(f.clone());
            }
        }
        if folders.is_empty() {
            folders.push("INBOX".to_string());
        }
        let working = match sync_state {
            Some(bytes) => SyncState::decode(bytes)?,
            None => SyncState::default(),
        };
        let limits = mailbox.limits;
        Ok(ImapSession {
            link: Link::new(&mailbox.server, &limits),
            framer: Framer::new(limits.max_line_bytes as usize, limits.max_message_bytes),
            tags: Tagger::default(),
            caps: None,
            state: State::Greeting,
            connected: false,
            run: FolderRun::default(),
            working,
            committed: None,
            unstored: 0,
            server_gone: false,
            batch_messages_left: limits.max_batch_messages,
            batch_bytes_left: limits.max_batch_bytes,
            delivered: 0,
            remaining: 0,
            folders,
            mailbox,
        })
    }

    fn folder(&self) -> &str {
        self.folders.get(self.run.index).map_or("", String::as_str)
    }

    fn has_cap(&self, name: &str) -> bool {
        self.caps.as_ref().is_some_and(|c| c.iter().any(|x| x.eq_ignore_ascii_case(name)))
    }

    fn literal_mode(&self) -> LiteralMode {
        if self.has_cap("LITERAL+") {
            LiteralMode::NonSyncAny
        } else if self.has_cap("LITERAL-") {
            LiteralMode::NonSyncSmall
        } else {
            LiteralMode::Sync
        }
    }

    fn step(&mut self, event: Event<'_>, now: Instant, out: &mut Vec<Action>) -> Result<()> {
        if event == Event::Closed && matches!(self.state, State::Logout { .. }) {
            // Many servers close right after their BYE; the logout is complete either way.
            self.finish(out);
            return Ok(());
        }
        if event == Event::Closed && matches!(self.state, State::AwaitStored) {
            // Idle servers log out on their own; all we still need is the host's Stored.
            self.server_gone = true;
            return Ok(());
        }
        if self.link.absorb(&event, now, self.state.stage())? {
            return Ok(());
        }
        match event {
            Event::Connected => {
                if self.connected {
                    return Err(Error::protocol(self.state.stage(), "the host reported the connection twice"));
                }
                self.connected = true;
            }
            Event::TlsEstablished => {
                // Anything learnt in clear text may have been forged: ask again.
                self.caps = None;
                self.send_capability(out);
            }
            Event::Stored => self.on_stored(out),
            Event::Received(_) | Event::Timer | Event::Closed | Event::TlsFailed(_) => {}
        }
        self.pump(out)?;
        match self.state {
            State::TlsHandshake | State::Finished | State::Failed => {}
            State::AwaitStored => self.link.clear_deadline(),
            _ => self.link.expect_reply(now),
        }
        Ok(())
    }

    /// Processes every complete response buffered, as long as the state reads the server.
    fn pump(&mut self, out: &mut Vec<Action>) -> Result<()> {
        while !matches!(self.state, State::TlsHandshake | State::Finished | State::Failed) {
            let stage = self.state.stage();
            let Some(frame) = self.framer.next(&mut self.link, stage)? else { break };
            let resp = response::parse(frame, stage)?;
            self.on_response(resp, out)?;
        }
        Ok(())
    }

    fn send(&mut self, out: &mut Vec<Action>, bytes: &[u8]) {
        // Coalesce: everything written in one handle call goes out in one write.
        if let Some(Action::Write(buf)) = out.last_mut() {
            buf.extend_from_slice(bytes);
        } else {
            out.push(Action::Write(bytes.to_vec()));
        }
    }

    fn send_simple(&mut self, out: &mut Vec<Action>, verb: &str) -> String {
        let tag = self.tags.next();
        self.send(out, format!("{tag} {verb}\r\n").as_bytes());
        tag
    }

    fn send_capability(&mut self, out: &mut Vec<Action>) {
        let tag = self.send_simple(out, "CAPABILITY");
        self.state = State::Capability { tag };
    }

    fn on_response(&mut self, resp: Response, out: &mut Vec<Action>) -> Result<()> {
        let stage = self.state.stage();
        match resp {
            Response::Status { tag: Some(tag), status, code, text } => {
                if self.state.tag() != Some(tag.as_str()) {
                    return Err(Error::protocol(
                        stage,
                        format!("the server answered command {tag:?}, which is not the one in progress"),
                    ));
                }
                if status == Status::Bad && matches!(self.state, State::StartTls { .. }) {
                    return Err(Error::policy(
                        Stage::Starttls,
                        "the server rejected STARTTLS, so the password cannot be sent safely; fix the server's TLS setup or use implicit TLS (port 993)",
                    )
                    .with_reply(ServerReply::new("BAD", text)));
                }
                if status == Status::Bad && !matches!(self.state, State::Logout { .. }) {
                    return Err(Error::protocol(
                        stage,
                        format!("the server rejected a command as invalid during {}", stage.as_str()),
                    )
                    .with_reply(ServerReply::new("BAD", text)));
                }
                self.on_tagged(status, code, text, out)
            }
            Response::Status { tag: None, status, code, text } => self.on_untagged_status(status, code, text, out),
            Response::Capability(caps) => {
                self.caps = Some(caps);
                Ok(())
            }
            Response::Exists(n) => {
                if matches!(self.state, State::Select { .. }) {
                    self.run.exists = Some(n);
                }
                Ok(())
            }
            Response::Search(ranges) => {
                if !matches!(self.state, State::Search { .. }) {
                    return Ok(());
                }
                // As many UIDs as a SEARCH line of max-line-bytes could list, however the
                // server splits or compresses them.
                let cap = (self.mailbox.limits.max_line_bytes as usize / 2).max(1);
                for (lo, hi) in ranges {
                    let count = (hi - lo) as usize + 1;
                    if self.run.candidates.len().saturating_add(count) > cap {
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
            Response::Continuation(text) => self.on_continuation(text, out),
            Response::Other => Ok(()),
        }
    }

    fn on_untagged_status(
        &mut self,
        status: Status,
        code: Option<Code>,
        text: String,
        out: &mut Vec<Action>,
    ) -> Result<()> {
        let stage = self.state.stage();
        if matches!(self.state, State::Greeting) {
            return self.on_greeting(status, code, text, out);
        }
        match (status, code) {
            (Status::Bye, _) => {
                if matches!(self.state, State::Logout { .. }) {
                    return Ok(());
                }
                if matches!(self.state, State::AwaitStored) {
                    self.server_gone = true;
                    return Ok(());
                }
                Err(Error::protocol(stage, format!("the server ended the session during {}", stage.as_str()))
                    .with_reply(ServerReply::new("BYE", text)))
            }
            (Status::Preauth, _) => Err(Error::protocol(stage, "the server sent PREAUTH in the middle of the session")),
            (_, Some(Code::Capability(caps))) => {
                self.caps = Some(caps);
                Ok(())
            }
            (_, Some(Code::UidValidity(v))) if matches!(self.state, State::Select { .. }) => {
                self.run.uidvalidity = Some(v);
                Ok(())
            }
            (_, Some(Code::UidNext(n))) if matches!(self.state, State::Select { .. }) => {
                self.run.uidnext = Some(n);
                Ok(())
            }
            // Warnings, alerts, PERMANENTFLAGS...: nothing to do.
            _ => Ok(()),
        }
    }

    fn on_greeting(&mut self, status: Status, code: Option<Code>, text: String, out: &mut Vec<Action>) -> Result<()> {
        if let Some(Code::Capability(caps)) = code {
            self.caps = Some(caps);
        }
        match status {
            Status::Ok => self.after_greeting(out),
            Status::Preauth => {
                if self.link.needs_starttls() {
                    return Err(Error::policy(
                        Stage::Greeting,
                        "the server greeted with PREAUTH on a connection that must first run STARTTLS; an attacker may have stripped TLS. Use implicit TLS (port 993) or fix the server",
                    )
                    .with_reply(ServerReply::new("PREAUTH", text)));
                }
                self.start_folder(0, out)
            }
            Status::Bye => Err(Error::protocol(
                Stage::Greeting,
                "the server refused the connection in its greeting; it may be overloaded or block this client",
            )
            .with_reply(ServerReply::new("BYE", text))),
            Status::No | Status::Bad => {
                Err(Error::protocol(Stage::Greeting, "the server sent an invalid greeting; is this an IMAP port?")
                    .with_reply(ServerReply::new(status.as_str(), text)))
            }
        }
    }

    fn after_greeting(&mut self, out: &mut Vec<Action>) -> Result<()> {
        if self.caps.is_none() {
            self.send_capability(out);
            Ok(())
        } else {
            self.after_capabilities(out)
        }
    }

    fn after_capabilities(&mut self, out: &mut Vec<Action>) -> Result<()> {
        if self.link.needs_starttls() {
            if !self.has_cap("STARTTLS") {
                return Err(Error::policy(
                    Stage::Starttls,
                    "the server does not offer STARTTLS, so the password cannot be sent safely; enable TLS on the server or use implicit TLS (port 993)",
                ));
            }
            let tag = self.send_simple(out, "STARTTLS");
            self.state = State::StartTls { tag };
            return Ok(());
        }
        self.authenticate(out)
    }

    fn on_tagged(&mut self, status: Status, code: Option<Code>, text: String, out: &mut Vec<Action>) -> Result<()> {
        let ok = status == Status::Ok;
        let reply = || ServerReply::new(status.as_str(), text.clone());
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Capability { .. } => {
                if let Some(Code::Capability(caps)) = code {
                    self.caps = Some(caps);
                }
                if !ok {
                    return Err(Error::protocol(Stage::Capabilities, "the server refused the CAPABILITY command")
                        .with_reply(reply()));
                }
                if self.caps.is_none() {
                    self.caps = Some(Vec::new());
                }
                self.after_capabilities(out)
            }
            State::StartTls { .. } => {
                if !ok {
                    return Err(Error::policy(
                        Stage::Starttls,
                        "the server refused STARTTLS, so the password cannot be sent safely; fix the server's TLS setup or use implicit TLS (port 993)",
                    )
                    .with_reply(reply()));
                }
                self.link.begin_starttls()?;
                self.caps = None;
                self.state = State::TlsHandshake;
                out.push(Action::StartTls);
                Ok(())
            }
            State::Auth(auth) => {
                if !ok {
                    return Err(self.auth_rejected(&auth, reply()));
                }
                if let Some(Code::Capability(caps)) = code {
                    self.caps = Some(caps);
                }
                self.start_folder(0, out)
            }
            State::Select { .. } => {
                if !ok {
                    return Err(Error::protocol(
                        Stage::SelectMailbox,
                        format!(
                            "the server could not open the folder {:?}; check that it exists and that the user may read it",
                            self.folder()
                        ),
                    )
                    .with_reply(reply()));
                }
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
                self.after_sizes(out)
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
                self.start_folder(self.run.index + 1, out)
            }
            State::Logout { .. } => {
                self.finish(out);
                Ok(())
            }
            other => {
                self.state = other;
                Err(Error::protocol(self.state.stage(), "the server completed a command that was never sent"))
            }
        }
    }

    fn auth_rejected(&self, auth: &Auth, reply: ServerReply) -> Error {
        let user = self.mailbox.credentials.username();
        let hint = match self.mailbox.credentials {
            Credentials::Basic { .. } => {
                "check the user name and password (or app password), and that IMAP access is enabled for the mailbox"
            }
            Credentials::OAuth2 { .. } => {
                "check that the access token is current, was issued for this user and has the IMAP scope"
            }
        };
        let detail = auth.challenge.as_deref().map(|c| format!(" (server detail: {c})")).unwrap_or_default();
        Error::auth(
            Stage::Authenticate,
            format!("the server rejected {} for user {user:?}{detail}; {hint}", auth.method),
        )
        .with_reply(reply)
    }

    fn authenticate(&mut self, out: &mut Vec<Action>) -> Result<()> {
        self.link.check_credentials_allowed()?;
        let offered: Vec<String> = self
            .caps
            .iter()
            .flatten()
            .filter_map(|c| c.get(..5).filter(|p| p.eq_ignore_ascii_case("AUTH=")).map(|_| c[5..].to_string()))
            .collect();
        let offers = |m: Mechanism| offered.iter().any(|o| o.eq_ignore_ascii_case(m.name()));
        let mech = match &self.mailbox.credentials {
            Credentials::Basic { username, password } => {
                if offers(Mechanism::Plain) {
                    Mechanism::Plain
                } else if !self.has_cap("LOGINDISABLED") {
                    let tag = self.tags.next();
                    let mode = self.literal_mode();
                    let cmd = Command::new(&tag, "LOGIN").string(username, mode).string(password, mode).finish();
                    let mut parts: VecDeque<Wire> = cmd.parts.into();
                    if let Some(first) = parts.pop_front() {
                        self.send(out, &first.0);
                    }
                    self.state = State::Auth(Auth { tag, method: "LOGIN", answers: parts, on_error_challenge: None, challenge: None });
                    return Ok(());
                } else if offers(Mechanism::Login) {
                    Mechanism::Login
                } else {
                    return Err(Error::policy(
                        Stage::Authenticate,
                        "the server disabled password LOGIN and offers no password mechanism this plugin supports (PLAIN, LOGIN); enable TLS or one of them on the server",
                    ));
                }
            }
            creds @ Credentials::OAuth2 { .. } => sasl::select(creds, &offered).ok_or_else(|| {
                Error::policy(
                    Stage::Authenticate,
                    "the server offers neither OAUTHBEARER nor XOAUTH2, so the OAuth2 token cannot be used; use a password or enable OAuth2 on the server",
                )
            })?,
        };
        let tag = self.tags.next();
        let (method, on_error_challenge): (&'static str, Option<&'static [u8]>) = match mech {
            Mechanism::Plain => ("AUTHENTICATE PLAIN", None),
            Mechanism::Login => ("AUTHENTICATE LOGIN", None),
            // XOAUTH2 expects an empty answer to its error challenge, OAUTHBEARER a ^A (RFC 7628 3.2.3).
            Mechanism::XOAuth2 => ("AUTHENTICATE XOAUTH2", Some(b"\r\n")),
            Mechanism::OAuthBearer => ("AUTHENTICATE OAUTHBEARER", Some(b"AQ==\r\n")),
        };
        let mut first = Wire(format!("{tag} {method}").into_bytes());
        let mut answers = VecDeque::new();
        let crlf = |s: String| {
            let mut w = s.into_bytes();
            w.extend_from_slice(b"\r\n");
            Wire(w)
        };
        match sasl::initial_response(mech, &self.mailbox.credentials) {
            Some(ir) if self.has_cap("SASL-IR") => {
                first.0.push(b' ');
                first.0.extend_from_slice(ir.as_bytes());
            }
            Some(ir) => answers.push_back(crlf(ir)),
            None => {
                let creds = &self.mailbox.credentials;
                answers.push_back(crlf(sasl::login_step(creds.username())));
                answers.push_back(crlf(sasl::login_step(creds.secret())));
            }
        }
        first.0.extend_from_slice(b"\r\n");
        self.send(out, &first.0);
        self.state = State::Auth(Auth { tag, method, answers, on_error_challenge, challenge: None });
        Ok(())
    }

    fn on_continuation(&mut self, text: String, out: &mut Vec<Action>) -> Result<()> {
        let stage = self.state.stage();
        let State::Auth(auth) = &mut self.state else {
            return Err(Error::protocol(
                stage,
                format!("the server asked for command data during {}, but none was pending", stage.as_str()),
            ));
        };
        if let Some(answer) = auth.answers.pop_front() {
            self.send(out, &answer.0);
            return Ok(());
        }
        match auth.on_error_challenge.take() {
            Some(reply) => {
                let decoded = STANDARD.decode(text.trim()).ok().and_then(|b| String::from_utf8(b).ok());
                auth.challenge = Some(decoded.unwrap_or(text));
                self.send(out, reply);
                Ok(())
            }
            None => Err(Error::protocol(
                Stage::Authenticate,
                format!("the server sent an unexpected challenge during {}", auth.method),
            )),
        }
    }

    fn start_folder(&mut self, index: usize, out: &mut Vec<Action>) -> Result<()> {
        self.run = FolderRun { index, ..FolderRun::default() };
        let Some(name) = self.folders.get(index) else {
            return self.done_fetching(out);
        };
        let tag = self.tags.next();
        let cmd = Command::new(&tag, "SELECT").string(&encode_folder_name(name), LiteralMode::Sync).finish();
        for part in &cmd.parts {
            self.send(out, &part.0);
        }
        self.state = State::Select { tag };
        Ok(())
    }

    fn after_select(&mut self, out: &mut Vec<Action>) -> Result<()> {
        let name = self.folder().to_string();
        let Some(uidvalidity) = self.run.uidvalidity else {
            return Err(Error::protocol(
                Stage::SelectMailbox,
                format!("the server did not report UIDVALIDITY for the folder {name:?}, so messages cannot be tracked"),
            ));
        };
        let known = self.working.folders.get(&name).copied().filter(|f| f.uidvalidity == uidvalidity);
        let known = match known {
            Some(k) => k,
            None => {
                // First sync, or the server renumbered the folder: start over from UID 1.
                let fresh = FolderSync { uidvalidity, last_uid: 0 };
                self.working.folders.insert(name.clone(), fresh);
                fresh
            }
        };
        self.run.after_uid = known.last_uid;
        // Nothing new when the folder is empty or the next UID to be assigned is the one after
        // our last: the usual poll then costs no SEARCH round trip.
        let nothing_new = self.run.exists == Some(0)
            || known.last_uid == u32::MAX
            || (known.last_uid > 0 && self.run.uidnext.is_some_and(|n| n <= known.last_uid + 1));
        if nothing_new {
            return self.start_folder(self.run.index + 1, out);
        }
        let criteria = if known.last_uid == 0 { "ALL".to_string() } else { format!("UID {}:*", known.last_uid + 1) };
        // ESEARCH (RFC 4731) answers with a compact set instead of every UID.
        let ret = if self.has_cap("ESEARCH") || self.has_cap("IMAP4rev2") { "RETURN (ALL) " } else { "" };
        let tag = self.send_simple(out, &format!("UID SEARCH {ret}{criteria}"));
        self.state = State::Search { tag };
        Ok(())
    }

    fn after_search(&mut self, out: &mut Vec<Action>) -> Result<()> {
        let after = self.run.after_uid;
        let c = &mut self.run.candidates;
        c.sort_unstable();
        c.dedup();
        // "n:*" always matches the highest UID, even when it is below n.
        c.retain(|&u| u > after);
        if c.is_empty() {
            return self.start_folder(self.run.index + 1, out);
        }
        self.run.sizes = vec![None; c.len()];
        let set = sequence_set(c);
        let tag = self.send_simple(out, &format!("UID FETCH {set} (UID RFC822.SIZE)"));
        self.state = State::Sizes { tag };
        Ok(())
    }

    fn after_sizes(&mut self, out: &mut Vec<Action>) -> Result<()> {
        let limits = self.mailbox.limits;
        let mut batch = Vec::new();
        let mut full = false;
        for (&uid, size) in self.run.candidates.iter().zip(&self.run.sizes) {
            // Expunged meanwhile: no size came back.
            let Some(size) = *size else { continue };
            if size > limits.max_message_bytes || size > limits.max_batch_bytes {
                // Never fits; skipping it keeps the later messages flowing.
                continue;
            }
            // Stop at the first message that does not fit so "highest delivered UID" stays exact.
            if full || self.batch_messages_left == 0 || size > self.batch_bytes_left {
                full = true;
                self.remaining += 1;
                continue;
            }
            batch.push(uid);
            self.batch_messages_left -= 1;
            self.batch_bytes_left -= size;
        }
        if batch.is_empty() {
            return self.start_folder(self.run.index + 1, out);
        }
        let set = sequence_set(&batch);
        self.run.delivered = vec![false; batch.len()];
        self.run.batch = batch;
        let tag = self.send_simple(out, &format!("UID FETCH {set} (UID BODY.PEEK[])"));
        self.state = State::Fetch { tag };
        Ok(())
    }

    fn on_fetch(&mut self, f: Fetch, out: &mut Vec<Action>) -> Result<()> {
        match self.state {
            State::Sizes { .. } => {
                if let (Some(uid), Some(size)) = (f.uid, f.size) {
                    if let Ok(i) = self.run.candidates.binary_search(&uid) {
                        if let Some(slot) = self.run.sizes.get_mut(i) {
                            *slot = Some(size);
                        }
                    }
                }
                Ok(())
            }
            State::Fetch { .. } => {
                let Some(raw) = f.body else { return Ok(()) }; // flag updates and the like
                let Some(uid) = f.uid else {
                    return Err(Error::protocol(
                        Stage::FetchMessage,
                        format!("the server sent message {} without its UID, so it cannot be tracked", f.seq),
                    ));
                };
                if raw.len() as u64 > self.mailbox.limits.max_message_bytes {
                    return Err(Error::limit(
                        Stage::FetchMessage,
                        format!(
                            "message UID {uid} is larger than the limit of {} bytes",
                            self.mailbox.limits.max_message_bytes
                        ),
                    ));
                }
                let Ok(i) = self.run.batch.binary_search(&uid) else { return Ok(()) };
                if self.run.delivered.get(i).copied().unwrap_or(true) {
                    return Ok(());
                }
                self.run.delivered[i] = true;
                let folder = self.folder().to_string();
                let uidvalidity = self.run.uidvalidity.unwrap_or(0);
                if let Some(entry) = self.working.folders.get_mut(&folder) {
                    entry.last_uid = entry.last_uid.max(uid);
                }
                self.delivered += 1;
                self.unstored += 1;
                out.push(Action::Deliver(FetchedMessage {
                    id: format!("imap:{folder}:{uidvalidity}:{uid}"),
                    folder,
                    raw,
                }));
                Ok(())
            }
            // Unsolicited FETCH (flag changes) elsewhere: nothing to do.
            _ => Ok(()),
        }
    }

    fn done_fetching(&mut self, out: &mut Vec<Action>) -> Result<()> {
        if self.unstored > 0 {
            self.state = State::AwaitStored;
            return Ok(());
        }
        self.commit();
        self.logout(out);
        Ok(())
    }

    fn on_stored(&mut self, out: &mut Vec<Action>) {
        self.unstored = 0;
        self.commit();
        if matches!(self.state, State::AwaitStored) {
            if self.server_gone {
                self.finish(out);
            } else {
                self.logout(out);
            }
        }
    }

    fn commit(&mut self) {
        self.committed = Some(self.working.clone());
    }

    fn logout(&mut self, out: &mut Vec<Action>) {
        let tag = self.send_simple(out, "LOGOUT");
        self.state = State::Logout { tag };
    }

    fn finish(&mut self, out: &mut Vec<Action>) {
        self.state = State::Finished;
        self.link.clear_deadline();
        out.push(Action::Close);
        out.push(Action::Finished(Outcome::Fetched(FetchSummary {
            delivered: self.delivered,
            remaining: self.remaining,
            skipped: 0,
        })));
    }
}

impl Session for ImapSession {
    fn server(&self) -> &Server {
        &self.mailbox.server
    }

    fn handle(&mut self, event: Event<'_>, now: Instant) -> Result<Vec<Action>> {
        if matches!(self.state, State::Finished | State::Failed) {
            return Err(Error::protocol(self.state.stage(), "the session has already ended; open a new session"));
        }
        let mut out = Vec::new();
        match self.step(event, now, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                self.state = State::Failed;
                self.link.clear_deadline();
                Err(e)
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.link.deadline()
    }

    fn sync_state(&self) -> Option<Vec<u8>> {
        self.committed.as_ref().map(SyncState::encode)
    }
}
