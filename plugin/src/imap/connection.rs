//! What every IMAP session does the same way: the connection (link, framer, tags, coalesced
//! writes, capabilities) and the login phase that opens it: greeting, CAPABILITY, STARTTLS,
//! authentication and, when a configured folder name has levels, the hierarchy delimiter.
//!
//! The fetch and check session (`client`) and the append session (`append`) each own one
//! `Connection`; while it logs in, `Connection::next` consumes the server's responses itself
//! and finally reports `Input::LoggedIn`, after which the owner reads the responses.

use std::collections::VecDeque;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::command::{Command, LiteralMode, Tagger, Wire};
use super::response::{self, Code, Frame, Framer, Response, Status};
use super::utf7::encode_folder_name;
use crate::config::{Credentials, Limits, Server};
use crate::error::{Error, Result, ServerReply, Stage};
use crate::link::Link;
use crate::sasl::{self, Mechanism};
use crate::session::{Action, Event, Instant, Step, StepReport};

/// Where the login phase is.
#[derive(Debug)]
enum Login {
    Greeting,
    Capability {
        tag: String,
    },
    StartTls {
        tag: String,
    },
    TlsHandshake,
    Auth(Auth),
    /// `LIST "" ""`: learning the server's hierarchy delimiter, because configured folder
    /// names use "/" and servers differ ("." on many Dovecot and Courier setups).
    Delimiter {
        tag: String,
    },
    /// Logged in: from now on the owner reads the server.
    Done,
}

impl Login {
    fn tag(&self) -> Option<&str> {
        match self {
            Login::Capability { tag } | Login::StartTls { tag } | Login::Delimiter { tag } => Some(tag),
            Login::Auth(auth) => Some(&auth.tag),
            Login::Greeting | Login::TlsHandshake | Login::Done => None,
        }
    }
}

/// What `Connection::next` hands the owner.
pub(super) enum Input {
    /// The login phase just completed: the capabilities (and the delimiter, when it was
    /// needed) are known; the owner sends its first command now.
    LoggedIn,
    /// A server response after the login, for the owner to handle.
    Response(Response),
}

/// One IMAP connection and its login phase.
#[derive(Debug)]
pub(super) struct Connection {
    pub(super) link: Link,
    framer: Framer,
    tags: Tagger,
    caps: Option<Vec<String>>,
    /// The server's hierarchy delimiter, once asked (only when `wants_delimiter`).
    delimiter: Option<char>,
    login: Login,
    connected: bool,
    /// A configured folder name has a "/": ask for the delimiter before handing over.
    wants_delimiter: bool,
    /// A connection check: every step is reported with `Action::Progress`.
    report: bool,
    /// Untagged responses since the last tagged one (the command in progress).
    untagged: UntaggedBudget,
}

/// Untagged responses this client has no use for (untagged OK/NO/BAD without a response code
/// it acts on, EXPUNGE, RECENT, unknown kinds) that one command may bring. A real server sends
/// a handful; a server that keeps sending `* OK` never finishes the command.
pub(super) const MAX_IGNORED_UNTAGGED: u32 = 10_000;

/// Untagged responses of any kind one command may bring: more than the messages of any real
/// folder (one FETCH line each in a listing).
pub(super) const MAX_UNTAGGED: u32 = 4_000_000;

/// Bytes of untagged responses (text and literals) one command may bring beyond the batch's
/// message bytes (`max_batch_bytes`).
pub(super) const MAX_UNTAGGED_EXTRA_BYTES: u64 = 256 << 20;

/// What the command in progress has received so far, untagged.
#[derive(Debug, Default)]
pub(super) struct UntaggedBudget {
    count: u32,
    ignored: u32,
    bytes: u64,
    max_bytes: u64,
}

impl UntaggedBudget {
    pub(super) fn with_max_bytes(max_bytes: u64) -> Self {
        UntaggedBudget { max_bytes, ..UntaggedBudget::default() }
    }

    /// Counts one complete response; a tagged one ends the command and starts afresh.
    pub(super) fn count(&mut self, frame: &Frame, stage: Stage) -> Result<()> {
        match frame.text.first() {
            Some(b'*') => {}
            Some(b'+') => return Ok(()),
            _ => {
                let max_bytes = self.max_bytes;
                *self = UntaggedBudget { max_bytes, ..UntaggedBudget::default() };
                return Ok(());
            }
        }
        self.count += 1;
        let literals: u64 = frame.literals.iter().map(|(_, l)| l.len() as u64).sum();
        self.bytes = self.bytes.saturating_add(frame.text.len() as u64 + literals);
        if self.count > MAX_UNTAGGED {
            return Err(too_many_untagged(stage, format!("more than {MAX_UNTAGGED} untagged responses")));
        }
        if self.bytes > self.max_bytes {
            return Err(too_many_untagged(stage, format!("more than {} bytes of untagged responses", self.max_bytes)));
        }
        Ok(())
    }

    /// Counts a response the client ignores.
    fn ignored(&mut self, stage: Stage) -> Result<()> {
        self.ignored += 1;
        if self.ignored > MAX_IGNORED_UNTAGGED {
            return Err(too_many_untagged(
                stage,
                format!("more than {MAX_IGNORED_UNTAGGED} untagged responses that carry nothing this client uses (such as \"* OK\")"),
            ));
        }
        Ok(())
    }
}

fn too_many_untagged(stage: Stage, what: String) -> Error {
    Error::limit(
        stage,
        format!(
            "the server sent {what} in answer to one command during {} without finishing it; the session was stopped. The server may be faulty or hostile: check it with its administrator",
            stage.as_str()
        ),
    )
}

impl Connection {
    pub(super) fn new(server: &Server, limits: &Limits, wants_delimiter: bool, report: bool) -> Self {
        Connection {
            link: Link::new(server, limits),
            framer: Framer::new(limits.max_line_bytes as usize, limits.max_message_bytes),
            tags: Tagger::default(),
            caps: None,
            delimiter: None,
            login: Login::Greeting,
            connected: false,
            wants_delimiter,
            report,
            untagged: UntaggedBudget::with_max_bytes(limits.max_batch_bytes.saturating_add(MAX_UNTAGGED_EXTRA_BYTES)),
        }
    }

    /// The stage of the login phase; once logged in the owner's state says where it is.
    pub(super) fn stage(&self) -> Stage {
        match self.login {
            Login::Greeting => Stage::Greeting,
            Login::Capability { .. } => Stage::Capabilities,
            Login::StartTls { .. } | Login::TlsHandshake => Stage::Starttls,
            Login::Auth(_) => Stage::Authenticate,
            Login::Delimiter { .. } | Login::Done => Stage::SelectMailbox,
        }
    }

    /// True while the host runs the STARTTLS handshake: nothing to read, no deadline.
    pub(super) fn awaiting_tls(&self) -> bool {
        matches!(self.login, Login::TlsHandshake)
    }

    pub(super) fn caps(&self) -> &[String] {
        self.caps.as_deref().unwrap_or_default()
    }

    pub(super) fn has_cap(&self, name: &str) -> bool {
        has_capability(self.caps(), name)
    }

    /// Capabilities the server announced after the login (untagged CAPABILITY).
    pub(super) fn set_caps(&mut self, caps: Vec<String>) {
        self.caps = Some(caps);
    }

    /// How literals may be sent to this server (RFC 7888).
    pub(super) fn literal_mode(&self) -> LiteralMode {
        if self.has_cap("LITERAL+") {
            LiteralMode::NonSyncAny
        } else if self.has_cap("LITERAL-") {
            LiteralMode::NonSyncSmall
        } else {
            LiteralMode::Sync
        }
    }

    /// A configured folder name ("/" separates levels) as the server spells it: its
    /// hierarchy delimiter (when known) and modified UTF-7.
    pub(super) fn wire_name(&self, name: &str) -> String {
        match self.delimiter {
            Some(d) if d != '/' => encode_folder_name(&name.replace('/', &d.to_string())),
            _ => encode_folder_name(name),
        }
    }

    pub(super) fn next_tag(&mut self) -> String {
        self.tags.next()
    }

    /// Writes `<tag> <verb>` under a new tag and returns the tag.
    pub(super) fn send_simple(&mut self, out: &mut Vec<Action>, verb: &str) -> String {
        let tag = self.tags.next();
        write(out, format!("{tag} {verb}\r\n").into_bytes());
        tag
    }

    /// Writes `<tag> <verb> "<folder>"` under a new tag and returns the tag. `folder` is a
    /// wire name: modified UTF-7 is ASCII, so it is always quoted, never a literal.
    pub(super) fn send_with_folder(&mut self, out: &mut Vec<Action>, verb: &str, folder: &str) -> String {
        let tag = self.tags.next();
        let cmd = Command::new(&tag, verb).string(folder, LiteralMode::Sync).finish();
        for part in cmd.parts {
            write(out, part.0);
        }
        tag
    }

    /// Check only: reports a completed step (other sessions never emit `Progress`).
    pub(super) fn progress(&self, out: &mut Vec<Action>, step: Step, detail: impl FnOnce() -> String) {
        if self.report {
            out.push(Action::Progress(StepReport::new(step, detail())));
        }
    }

    /// Handles the events every session treats alike; `Ok(true)` when nothing is left to do
    /// (see `Link::absorb`).
    pub(super) fn absorb(&mut self, event: Event<'_>, now: Instant, stage: Stage, out: &mut Vec<Action>) -> Result<bool> {
        if self.link.absorb(&event, now, stage)? {
            return Ok(true);
        }
        match event {
            Event::Connected => {
                if self.connected {
                    return Err(Error::protocol(stage, "the host reported the connection twice"));
                }
                self.connected = true;
            }
            Event::TlsEstablished => {
                self.progress(out, Step::Starttls, || "connection encrypted with STARTTLS".to_string());
                // Anything learnt in clear text may have been forged: ask again.
                self.caps = None;
                self.send_capability(out);
            }
            Event::Received(_) | Event::TlsFailed(_) | Event::Closed | Event::Timer | Event::Stored => {}
        }
        Ok(false)
    }

    /// The next thing for the owner: handles every complete response of the login phase
    /// itself, then reports `LoggedIn` once, then hands over responses (parsed for
    /// `owner_stage`). `None` until more bytes arrive, or while TLS is being started.
    pub(super) fn next(&mut self, owner_stage: Stage, creds: &Credentials, out: &mut Vec<Action>) -> Result<Option<Input>> {
        while !matches!(self.login, Login::Done) {
            if self.awaiting_tls() {
                return Ok(None);
            }
            let Some(resp) = self.read(self.stage())? else { return Ok(None) };
            self.on_login_response(resp, creds, out)?;
            if matches!(self.login, Login::Done) {
                return Ok(Some(Input::LoggedIn));
            }
        }
        Ok(self.read(owner_stage)?.map(Input::Response))
    }

    fn read(&mut self, stage: Stage) -> Result<Option<Response>> {
        let Some(frame) = self.framer.next(&mut self.link, stage)? else { return Ok(None) };
        self.untagged.count(&frame, stage)?;
        let resp = response::parse(frame, stage)?;
        let ignored = match &resp {
            Response::Other => true,
            Response::Status { tag: None, status: Status::Ok | Status::No | Status::Bad, code, .. } => {
                !matches!(code, Some(Code::Capability(_) | Code::UidValidity(_) | Code::UidNext(_)))
            }
            _ => false,
        };
        if ignored {
            self.untagged.ignored(stage)?;
        }
        Ok(Some(resp))
    }

    /// An untagged status the owner has no use for: BYE and PREAUTH end the session,
    /// capabilities are kept, the rest (alerts, warnings, untagged NO) is left to the tagged
    /// answer.
    pub(super) fn untagged(&mut self, stage: Stage, status: Status, code: Option<Code>, text: String) -> Result<()> {
        match (status, code) {
            (Status::Bye, _) => {
                Err(Error::protocol(stage, format!("the server ended the session during {}", stage.as_str()))
                    .with_reply(ServerReply::new("BYE", text)))
            }
            (Status::Preauth, _) => Err(Error::protocol(stage, "the server sent PREAUTH in the middle of the session")),
            (_, Some(Code::Capability(caps))) => {
                self.caps = Some(caps);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_login_response(&mut self, resp: Response, creds: &Credentials, out: &mut Vec<Action>) -> Result<()> {
        let stage = self.stage();
        match resp {
            Response::Status { tag: Some(tag), status, code, text } => {
                check_tag(self.login.tag(), &tag, stage)?;
                if status == Status::Bad {
                    if matches!(self.login, Login::StartTls { .. }) {
                        return Err(starttls_refused("rejected", ServerReply::new("BAD", text)));
                    }
                    return Err(command_invalid(stage, text));
                }
                self.on_tagged(status, code, text, creds, out)
            }
            Response::Status { tag: None, status, code, text } if matches!(self.login, Login::Greeting) => {
                self.on_greeting(status, code, text, creds, out)
            }
            Response::Status { tag: None, status, code, text } => self.untagged(stage, status, code, text),
            Response::Capability(caps) => {
                self.caps = Some(caps);
                Ok(())
            }
            Response::List { delimiter } => {
                if matches!(self.login, Login::Delimiter { .. }) {
                    self.delimiter = delimiter;
                }
                Ok(())
            }
            Response::Continuation(text) => {
                let Login::Auth(auth) = &mut self.login else { return Err(no_data_pending(stage)) };
                let answer = auth.answer(text)?;
                write(out, answer.0);
                Ok(())
            }
            Response::Exists(_) | Response::Search(_) | Response::Fetch(_) | Response::Other => Ok(()),
        }
    }

    fn on_greeting(
        &mut self,
        status: Status,
        code: Option<Code>,
        text: String,
        creds: &Credentials,
        out: &mut Vec<Action>,
    ) -> Result<()> {
        if let Some(Code::Capability(caps)) = code {
            self.caps = Some(caps);
        }
        match status {
            Status::Ok => {
                self.progress(out, Step::Greeting, || self.greeting_detail("server ready", &text));
                if self.caps.is_none() {
                    self.send_capability(out);
                    return Ok(());
                }
                self.after_capabilities(creds, out)
            }
            Status::Preauth => {
                if self.link.needs_starttls() {
                    return Err(preauth_before_starttls(text));
                }
                self.progress(out, Step::Greeting, || {
                    self.greeting_detail("server ready and already logged in (PREAUTH)", &text)
                });
                self.progress(out, Step::Login, || {
                    "the server logged the connection in itself (PREAUTH); no credentials were sent".to_string()
                });
                self.logged_in(out);
                Ok(())
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

    fn send_capability(&mut self, out: &mut Vec<Action>) {
        let tag = self.send_simple(out, "CAPABILITY");
        self.login = Login::Capability { tag };
    }

    fn after_capabilities(&mut self, creds: &Credentials, out: &mut Vec<Action>) -> Result<()> {
        self.progress(out, Step::Capabilities, || self.capabilities_detail());
        if self.link.needs_starttls() {
            if !self.has_cap("STARTTLS") {
                return Err(starttls_not_offered());
            }
            let tag = self.send_simple(out, "STARTTLS");
            self.login = Login::StartTls { tag };
            return Ok(());
        }
        self.link.check_credentials_allowed()?;
        let tag = self.tags.next();
        let start = Auth::begin(tag, creds, self.caps(), self.literal_mode())?;
        self.progress(out, Step::Mechanisms, || self.mechanisms_detail(&start.offered, start.auth.method));
        write(out, start.first.0);
        self.login = Login::Auth(start.auth);
        Ok(())
    }

    fn on_tagged(
        &mut self,
        status: Status,
        code: Option<Code>,
        text: String,
        creds: &Credentials,
        out: &mut Vec<Action>,
    ) -> Result<()> {
        let ok = status == Status::Ok;
        let reply = || ServerReply::new(status.as_str(), text.clone());
        // Every arm below sets the next phase (or fails, which ends the session).
        match std::mem::replace(&mut self.login, Login::Done) {
            Login::Capability { .. } => {
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
                self.after_capabilities(creds, out)
            }
            Login::StartTls { .. } => {
                if !ok {
                    return Err(starttls_refused("refused", reply()));
                }
                self.link.begin_starttls()?;
                self.caps = None;
                self.login = Login::TlsHandshake;
                out.push(Action::StartTls);
                Ok(())
            }
            Login::Auth(auth) => {
                if !ok {
                    return Err(auth.rejected(creds, reply()));
                }
                if let Some(Code::Capability(caps)) = code {
                    self.caps = Some(caps);
                }
                self.progress(out, Step::Login, || format!("logged in as {}", creds.username()));
                self.logged_in(out);
                Ok(())
            }
            Login::Delimiter { .. } => {
                if !ok {
                    return Err(Error::protocol(
                        Stage::SelectMailbox,
                        "the server refused to tell its folder hierarchy delimiter (LIST \"\" \"\")",
                    )
                    .with_reply(reply()));
                }
                Ok(())
            }
            other => {
                self.login = other;
                Err(Error::protocol(self.stage(), "the server completed a command that was never sent"))
            }
        }
    }

    /// Authenticated (or PREAUTH): the delimiter first when a folder name needs it.
    fn logged_in(&mut self, out: &mut Vec<Action>) {
        self.login = if self.wants_delimiter {
            Login::Delimiter { tag: self.send_simple(out, "LIST \"\" \"\"") }
        } else {
            Login::Done
        };
    }

    /// `what` happened; the server's own words only when they cannot have been forged.
    fn greeting_detail(&self, what: &str, text: &str) -> String {
        if self.link.unverified() {
            return format!("{what} (its text arrived before encryption and is not shown)");
        }
        match shown(without_code(text)) {
            t if t.is_empty() => what.to_string(),
            t => format!("{what}: {t}"),
        }
    }

    fn capabilities_detail(&self) -> String {
        if self.link.unverified() {
            // Only what we concluded; the list itself could have been forged.
            let starttls = if self.has_cap("STARTTLS") { "STARTTLS offered" } else { "STARTTLS not offered" };
            return format!("{starttls} (the other capabilities arrived before encryption and are not shown)");
        }
        match shown(&self.caps().join(" ")) {
            c if c.is_empty() => "the server listed no capabilities".to_string(),
            c => format!("capabilities: {c}"),
        }
    }

    /// "offered: PLAIN XOAUTH2, LOGIN command; using AUTHENTICATE PLAIN".
    fn mechanisms_detail(&self, offered: &[String], method: &str) -> String {
        let mut list = offered.join(" ");
        if !self.has_cap("LOGINDISABLED") {
            if !list.is_empty() {
                list.push_str(", ");
            }
            list.push_str("LOGIN command");
        }
        let list = shown(&list);
        let list = if list.is_empty() { "no login method" } else { list.as_str() };
        format!("offered: {list}; using {method}")
    }
}

/// Everything written in one `handle` call goes out in one write; a lone part (e.g. an
/// APPEND's message literal) is moved, not copied.
pub(super) fn write(out: &mut Vec<Action>, bytes: Vec<u8>) {
    if let Some(Action::Write(buf)) = out.last_mut() {
        buf.extend_from_slice(&bytes);
    } else {
        out.push(Action::Write(bytes));
    }
}

/// A tagged answer must be for the command in progress (`expected`).
pub(super) fn check_tag(expected: Option<&str>, tag: &str, stage: Stage) -> Result<()> {
    if expected == Some(tag) {
        return Ok(());
    }
    let shown = crate::error::quote(tag.as_bytes(), 40);
    Err(Error::protocol(stage, format!("the server answered command {shown}, which is not the one in progress")).with_quote(shown))
}

/// The server answered BAD: it found our command invalid.
pub(super) fn command_invalid(stage: Stage, text: String) -> Error {
    Error::protocol(stage, format!("the server rejected a command as invalid during {}", stage.as_str()))
        .with_reply(ServerReply::new("BAD", text))
}

/// A "+" continuation while no command waits for one.
pub(super) fn no_data_pending(stage: Stage) -> Error {
    Error::protocol(
        stage,
        format!("the server asked for command data during {}, but none was pending", stage.as_str()),
    )
}

/// An authentication command in flight.
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

/// What `Auth::begin` produced: the state to wait in, the first line to write, and the SASL
/// mechanisms the server offered (for a check's report).
struct AuthStart {
    auth: Auth,
    first: Wire,
    offered: Vec<String>,
}

fn has_capability(caps: &[String], name: &str) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(name))
}

impl Auth {
    /// Chooses how to log in with `creds` from the server's capabilities (AUTHENTICATE PLAIN,
    /// else the LOGIN command unless LOGINDISABLED, else AUTHENTICATE LOGIN; OAuth2:
    /// OAUTHBEARER or XOAUTH2) and builds the command under `tag`. The caller must have checked
    /// that credentials may cross the connection.
    fn begin(tag: String, creds: &Credentials, caps: &[String], literal_mode: LiteralMode) -> Result<AuthStart> {
        let offered: Vec<String> = caps
            .iter()
            .filter_map(|c| c.get(..5).filter(|p| p.eq_ignore_ascii_case("AUTH=")).map(|_| c[5..].to_string()))
            .collect();
        let offers = |m: Mechanism| offered.iter().any(|o| o.eq_ignore_ascii_case(m.name()));
        let mech = match creds {
            Credentials::Basic { username, password } => {
                if offers(Mechanism::Plain) {
                    Mechanism::Plain
                } else if !has_capability(caps, "LOGINDISABLED") {
                    let cmd = Command::new(&tag, "LOGIN")
                        .string(username, literal_mode)
                        .string(password, literal_mode)
                        .finish();
                    let mut parts: VecDeque<Wire> = cmd.parts.into();
                    let first = parts.pop_front().unwrap_or_default();
                    let auth = Auth { tag, method: "LOGIN", answers: parts, on_error_challenge: None, challenge: None };
                    return Ok(AuthStart { auth, first, offered });
                } else if offers(Mechanism::Login) {
                    Mechanism::Login
                } else {
                    return Err(Error::policy(
                        Stage::Authenticate,
                        "the server disabled password LOGIN and offers no password mechanism this plugin supports (PLAIN, LOGIN); enable TLS or one of them on the server",
                    ));
                }
            }
            Credentials::OAuth2 { .. } => sasl::select(creds, &offered).ok_or_else(|| {
                Error::policy(
                    Stage::Authenticate,
                    format!(
                        "the server does not offer {}, so the OAuth2 token cannot be used; use a password, enable OAuth2 on the server, or change the configured mechanism",
                        sasl::oauth_wanted(creds)
                    ),
                )
            })?,
        };
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
        match sasl::initial_response(mech, creds) {
            Some(ir) if has_capability(caps, "SASL-IR") => {
                first.0.push(b' ');
                first.0.extend_from_slice(ir.as_bytes());
            }
            Some(ir) => answers.push_back(crlf(ir)),
            None => {
                answers.push_back(crlf(sasl::login_step(creds.username())));
                answers.push_back(crlf(sasl::login_step(creds.secret())));
            }
        }
        first.0.extend_from_slice(b"\r\n");
        let auth = Auth { tag, method, answers, on_error_challenge, challenge: None };
        Ok(AuthStart { auth, first, offered })
    }

    /// The bytes that answer the server's "+" continuation `text`.
    fn answer(&mut self, text: String) -> Result<Wire> {
        if let Some(answer) = self.answers.pop_front() {
            return Ok(answer);
        }
        match self.on_error_challenge.take() {
            Some(reply) => {
                let decoded = STANDARD.decode(text.trim()).ok().and_then(|b| String::from_utf8(b).ok());
                self.challenge = Some(decoded.unwrap_or(text));
                Ok(Wire(reply.to_vec()))
            }
            None => Err(Error::protocol(
                Stage::Authenticate,
                format!("the server sent an unexpected challenge during {}", self.method),
            )),
        }
    }

    /// The error for a rejected login: who, how, what the server said, and what to check.
    fn rejected(&self, creds: &Credentials, reply: ServerReply) -> Error {
        let user = creds.username();
        let hint = match creds {
            Credentials::Basic { .. } => {
                "check the user name and password (or app password), and that IMAP access is enabled for the mailbox"
            }
            Credentials::OAuth2 { .. } => {
                "check that the access token is current, was issued for this user and has the IMAP scope"
            }
        };
        let shown = self.challenge.as_deref().map(|c| crate::error::quote(c.as_bytes(), 300));
        let detail = shown.as_deref().map(|c| format!(" (server detail: {c})")).unwrap_or_default();
        let e = Error::auth(Stage::Authenticate, format!("the server rejected {} for user {user:?}{detail}; {hint}", self.method))
            .with_reply(reply);
        match shown {
            Some(s) => e.with_quote(s),
            None => e,
        }
    }
}

/// STARTTLS is configured but the server does not offer it: no fallback to clear text.
fn starttls_not_offered() -> Error {
    Error::policy(
        Stage::Starttls,
        "the server does not offer STARTTLS, so the password cannot be sent safely; enable TLS on the server or use implicit TLS (port 993)",
    )
}

/// The server answered STARTTLS with NO ("refused") or BAD ("rejected").
fn starttls_refused(how: &str, reply: ServerReply) -> Error {
    Error::policy(
        Stage::Starttls,
        format!("the server {how} STARTTLS, so the password cannot be sent safely; fix the server's TLS setup or use implicit TLS (port 993)"),
    )
    .with_reply(reply)
}

/// PREAUTH on a connection that must run STARTTLS first: the session could be an attacker's.
fn preauth_before_starttls(text: String) -> Error {
    Error::policy(
        Stage::Greeting,
        "the server greeted with PREAUTH on a connection that must first run STARTTLS; an attacker may have stripped TLS. Use implicit TLS (port 993) or fix the server",
    )
    .with_reply(ServerReply::new("PREAUTH", text))
}

/// Longest server text quoted in a check step, in characters.
const MAX_SHOWN_CHARS: usize = 200;

/// Server text fit for a check step: control characters (terminal escapes, line breaks)
/// removed, at most `MAX_SHOWN_CHARS` characters.
fn shown(text: &str) -> String {
    let mut clean = text.chars().filter(|c| !c.is_control());
    let mut out: String = clean.by_ref().take(MAX_SHOWN_CHARS).collect();
    if clean.next().is_some() {
        out.pop();
        out.push('…');
    }
    out.trim().to_string()
}

/// Status text without its leading response code ("[CAPABILITY ...] Dovecot ready." ->
/// "Dovecot ready.").
fn without_code(text: &str) -> &str {
    let t = text.trim_start();
    match t.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        Some((_, after)) => after.trim_start(),
        None => t,
    }
}
