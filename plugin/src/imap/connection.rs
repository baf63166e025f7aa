//! What every IMAP session does the same way: the connection (link, framer, tags, coalesced
//! writes, capabilities) and the login phase that opens it: greeting, CAPABILITY, STARTTLS,
//! authentication, the server's namespaces when a configured folder name is not INBOX (and the
//! server offers NAMESPACE), and, when a name has levels and no namespace told it, the
//! hierarchy delimiter.
//!
//! The fetch and check session (`client`) and the append session (`append`) each own one
//! `Connection`; while it logs in, `Connection::next` consumes the server's responses itself
//! and finally reports `Input::LoggedIn`, after which the owner reads the responses.

use super::auth::Auth;
use super::command::{Command, LiteralMode, Tagger};
use super::namespace::{self, Namespaces};
use super::response::{self, Code, Framer, Response, Status};
use super::untagged::{UntaggedBudget, MAX_UNTAGGED_EXTRA_BYTES};
use crate::config::{Credentials, Limits, Server};
use crate::error::{Error, Result, ServerReply, Stage};
use crate::link::Link;
use crate::session::{Action, Event, Instant, Step, StepReport};

mod report;

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
    /// `NAMESPACE` (RFC 2342): where the server keeps the user's folders, so configured names
    /// can be mapped into it (Courier keeps them all under "INBOX.").
    Namespace {
        tag: String,
    },
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
            Login::Capability { tag } | Login::StartTls { tag } | Login::Namespace { tag } | Login::Delimiter { tag } => {
                Some(tag)
            }
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
    /// The server's namespaces, once asked (only when `wants_namespace`).
    namespaces: Option<Namespaces>,
    login: Login,
    connected: bool,
    /// A configured folder name has a "/": ask for the delimiter before handing over.
    wants_delimiter: bool,
    /// A configured folder name is not INBOX: ask for the namespaces (when offered).
    wants_namespace: bool,
    /// A connection check: every step is reported with `Action::Progress`.
    report: bool,
    /// Untagged responses since the last tagged one (the command in progress).
    untagged: UntaggedBudget,
    /// A connection resumed from an idle state: the configured folder names as the server
    /// spells them, learnt by the session that logged in (`wire_name` uses these).
    resumed_names: Option<std::collections::BTreeMap<String, String>>,
}

impl Connection {
    /// `names` are the configured folder names the session will use ("/" between levels).
    pub(super) fn new(server: &Server, limits: &Limits, names: &[&str], report: bool) -> Self {
        Connection {
            link: Link::new(server, limits),
            framer: Framer::new(limits.max_line_bytes as usize, limits.max_message_bytes),
            tags: Tagger::default(),
            caps: None,
            delimiter: None,
            namespaces: None,
            login: Login::Greeting,
            connected: false,
            wants_delimiter: names.iter().any(|n| n.contains('/')),
            wants_namespace: names.iter().any(|n| !n.eq_ignore_ascii_case("INBOX")),
            report,
            untagged: UntaggedBudget::with_max_bytes(limits.max_batch_bytes.saturating_add(MAX_UNTAGGED_EXTRA_BYTES)),
            resumed_names: None,
        }
    }

    /// A connection another instance logged in and left idling (`super::idle::IdleState`):
    /// connected, past the login, encrypted unless the mailbox is plaintext, with the
    /// capabilities, folder names and tag counter that session had.
    pub(super) fn resumed(
        server: &Server,
        limits: &Limits,
        caps: Vec<String>,
        last_tag: u32,
        names: std::collections::BTreeMap<String, String>,
    ) -> Self {
        let mut c = Connection::new(server, limits, &[], false);
        c.link = Link::resumed(server, limits);
        c.tags = Tagger::resumed(last_tag);
        c.caps = Some(caps);
        c.login = Login::Done;
        c.connected = true;
        c.resumed_names = Some(names);
        c
    }

    /// How many tags were handed out so far (saved in an idle state).
    pub(super) fn last_tag(&self) -> u32 {
        self.tags.last()
    }

    /// The stage of the login phase; once logged in the owner's state says where it is.
    pub(super) fn stage(&self) -> Stage {
        match self.login {
            Login::Greeting => Stage::Greeting,
            Login::Capability { .. } => Stage::Capabilities,
            Login::StartTls { .. } | Login::TlsHandshake => Stage::Starttls,
            Login::Auth(_) => Stage::Authenticate,
            Login::Namespace { .. } | Login::Delimiter { .. } | Login::Done => Stage::SelectMailbox,
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
    /// hierarchy delimiter (the personal namespace's, else LIST's, when known), modified
    /// UTF-7, and mapped into the personal namespace (see `namespace`).
    pub(super) fn wire_name(&self, name: &str) -> String {
        if let Some(wire) = self.resumed_names.as_ref().and_then(|m| m.get(name)) {
            return wire.clone();
        }
        let personal = self.namespaces.as_ref().and_then(Namespaces::personal);
        let delimiter = personal.map_or(self.delimiter, |n| n.delimiter);
        namespace::wire_name(name, delimiter, self.namespaces.as_ref())
    }

    /// A refusal about the configured folder `name`: on a server that keeps folders under a
    /// prefix, it says so and names the name that was asked for.
    pub(super) fn folder_refused(&self, e: Error, name: &str) -> Error {
        match self.namespaces.as_ref().and_then(Namespaces::personal_prefix) {
            Some(prefix) => namespace::prefix_note(e, prefix, name, &self.wire_name(name)),
            None => e,
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
            // Only the first answer to our NAMESPACE is used.
            Response::Namespace(_) => !matches!(self.login, Login::Namespace { .. }) || self.namespaces.is_some(),
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
                if status == Status::Bad && matches!(self.login, Login::Namespace { .. }) {
                    // A server that lists NAMESPACE but cannot answer it: names stay unmapped.
                    return self.on_tagged(Status::No, code, text, creds, out);
                }
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
            Response::Namespace(namespaces) => {
                if matches!(self.login, Login::Namespace { .. }) && self.namespaces.is_none() {
                    self.namespaces = Some(namespaces);
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
            Login::Namespace { .. } => {
                // Refused: the names are used as configured.
                self.after_namespace(out);
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

    /// Authenticated (or PREAUTH): the namespaces, then the delimiter, when folder names need
    /// them.
    fn logged_in(&mut self, out: &mut Vec<Action>) {
        if self.wants_namespace && (self.has_cap("NAMESPACE") || self.has_cap("IMAP4rev2")) {
            self.login = Login::Namespace { tag: self.send_simple(out, "NAMESPACE") };
            return;
        }
        self.after_namespace(out);
    }

    /// The delimiter when a name has levels and the personal namespace did not tell it.
    fn after_namespace(&mut self, out: &mut Vec<Action>) {
        let told = self.namespaces.as_ref().and_then(Namespaces::personal).is_some();
        self.login = if self.wants_delimiter && !told {
            Login::Delimiter { tag: self.send_simple(out, "LIST \"\" \"\"") }
        } else {
            Login::Done
        };
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

pub(super) fn has_capability(caps: &[String], name: &str) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(name))
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
