//! The sans-IO driving protocol (`session` in the WIT) as plain Rust, shared by every client.

use crate::config::Server;
use crate::error::{Error, Result, Retry, ServerReply};

/// Milliseconds since the Unix epoch, from the host's clock.
pub type Instant = u64;

/// Something that happened on the host's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Connected,
    Received(&'a [u8]),
    TlsEstablished,
    TlsFailed(&'a str),
    Closed,
    Timer,
    Stored,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedMessage {
    pub id: String,
    pub folder: String,
    pub raw: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FetchSummary {
    pub delivered: u32,
    pub remaining: u32,
    /// Messages reported with `Action::Skipped` in this session.
    pub skipped: u32,
}

/// A message the guest will not deliver (too large for the limits). Reported once: the sync
/// state records it as handled, so it is not retried on every run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedMessage {
    pub id: String,
    pub folder: String,
    /// The size the server reported, in bytes.
    pub size: u64,
    /// A sentence for the admin: why, and what to change to get it.
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientResult {
    pub address: String,
    pub accepted: bool,
    pub reply: ServerReply,
    /// A refused recipient's own advice: `Later` for 4xx, `FixFirst` for 5xx; None when accepted.
    pub retry: Option<Retry>,
}

impl RecipientResult {
    /// A recipient as answered to RCPT TO, with the retry advice its reply code implies.
    pub fn from_reply(address: String, code: u16, reply: ServerReply) -> Self {
        let accepted = (200..300).contains(&code);
        let retry = match code {
            _ if accepted => None,
            400..=499 => Some(Retry::Later),
            _ => Some(Retry::FixFirst),
        };
        RecipientResult { address, accepted, reply, retry }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReport {
    pub final_reply: ServerReply,
    pub recipients: Vec<RecipientResult>,
}

/// A step of a session, reported with `Action::Progress` as it completes: the admin portal's
/// "test connection" shows them one by one, and a host may log them.
/// What happened to one message of a batch submission (see `delivery` in the WIT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    Transient,
    Permanent,
    Uncertain,
    NotSent,
}

/// The outcome of one message of a batch (see `message-result` in the WIT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageResult {
    pub index: u32,
    pub message_id: String,
    pub delivery: Delivery,
    pub final_reply: Option<ServerReply>,
    pub recipients: Vec<RecipientResult>,
    pub error: Option<Error>,
}

/// What a batch submission did (see `batch-report` in the WIT).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BatchReport {
    pub delivered: u32,
    pub not_delivered: u32,
    pub stopped: Option<Error>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The server's greeting arrived and was positive.
    Greeting,
    /// The server's capabilities were learnt (CAPABILITY, CAPA, EHLO), before and again after STARTTLS.
    Capabilities,
    /// STARTTLS / STLS succeeded: the connection is now encrypted.
    Starttls,
    /// The authentication mechanisms offered, and the one chosen.
    Mechanisms,
    /// The login succeeded.
    Login,
    /// A folder was opened and its messages counted (IMAP EXAMINE/SELECT, POP3 STAT).
    Folder,
    /// SMTP: MAIL FROM and RCPT TO were accepted.
    Envelope,
    /// SMTP check: the probe transaction was reset (RSET), nothing was sent.
    Reset,
    /// The session ended politely (LOGOUT, QUIT).
    Logout,
}

/// One completed step and what it found, for the admin. Never contains secrets, and never
/// text the server sent before TLS on a STARTTLS connection (it could be forged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    pub step: Step,
    pub detail: String,
}

impl StepReport {
    pub fn new(step: Step, detail: impl Into<String>) -> Self {
        StepReport { step, detail: detail.into() }
    }
}

/// A folder and how many messages it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderCount {
    pub folder: String,
    pub messages: u32,
}

/// What a check session found.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CheckSummary {
    /// Inbound: every configured folder with its message count (POP3: "INBOX"). Empty for SMTP.
    pub folders: Vec<FolderCount>,
}

/// Where an append session saved its message (IMAP APPEND).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedCopy {
    /// The folder as configured (UTF-8, "/" between levels).
    pub folder: String,
    /// The folder's UIDVALIDITY, when the server reported it (UIDPLUS APPENDUID).
    pub uid_validity: Option<u32>,
    /// The saved message's UID, when the server reported it (UIDPLUS APPENDUID).
    pub uid: Option<u32>,
    /// True when the folder did not exist and the session created it.
    pub created_folder: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Fetched(FetchSummary),
    Sent(SendReport),
    /// A check session (opened by `check`) went through every step; nothing was fetched,
    /// sent or changed.
    Checked(CheckSummary),
    /// An append session (`imap::AppendSession`) saved a copy of a message into a folder.
    Appended(SavedCopy),
    SentBatch(BatchReport),
}

/// Something the host must do now, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Write(Vec<u8>),
    StartTls,
    Deliver(FetchedMessage),
    /// A message that will not be delivered; tell the admin.
    Skipped(SkippedMessage),
    Close,
    /// A step completed; nothing to do but show or log it.
    Progress(StepReport),
    CommitPoint(u32),
    MessageDone(MessageResult),
    Finished(Outcome),
    /// Batch submissions: the host sends this message's bytes with `Session::message_data`.
    NeedMessage(u32),
    /// Batch submissions: the host writes this message's bytes as it has them (checked, by
    /// the host or the session: they need no change on the wire); the final dot follows in a
    /// `Write`.
    WriteMessage(u32),
    /// Batch submissions: a write for the host to perform the moment the next bytes read match
    /// (see `ArmedWrite` and `arm-write` in the WIT); they then come back with
    /// `Session::received_armed`.
    ArmWrite(ArmedWrite),
    /// The server is idling (IMAP IDLE): keep the connection, store the states, drop the
    /// session; `inbound.resume` continues it (see `idle` in the WIT).
    Idle(Idling),
}

/// A write prepared for the server's next replies (`armed-write` in the WIT): when the next
/// bytes read are exactly `lines.len()` lines as `mailplug_wire::armed_lines_match` defines,
/// the host records `CommitPoint(message)`, writes the message's bytes and `after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmedWrite {
    pub lines: Vec<&'static str>,
    pub max_line: u32,
    pub message: u32,
    pub after: Vec<u8>,
}

/// What an idling session hands over (see `idling` in the WIT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idling {
    /// Opaque, versioned; never holds credentials.
    pub idle_state: Vec<u8>,
    pub sync_state: Vec<u8>,
    pub summary: FetchSummary,
}

/// How the host answers for a batch message's bytes (`message-bytes` in the WIT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBytes {
    /// The bytes, for the session to check and encode.
    Raw(Vec<u8>),
    /// The host checked them (`mailplug_wire::clean_for_data`) and keeps them: clean, ending
    /// with CRLF, `size` bytes (which must be the announced size).
    Clean { size: u64, eight_bit: bool },
}

/// One conversation with one server. Every protocol client implements this; the WIT glue
/// only converts types.
pub trait Session {
    /// The server the host must connect to.
    fn server(&self) -> &Server;
    /// Feed one event at time `now`; returns the actions to perform in order.
    /// After an `Err` or a `Finished` action the session accepts no further events.
    fn handle(&mut self, event: Event<'_>, now: Instant) -> Result<Vec<Action>>;
    /// Batch submissions: the bytes of message `index`, asked for with `Action::NeedMessage`
    /// (the event `message-data`). Other sessions ask for none.
    fn message_data(&mut self, index: u32, _bytes: MessageBytes, _now: Instant) -> Result<Vec<Action>> {
        Err(Error::protocol(
            crate::error::Stage::Data,
            format!("the host handed over message {index}, but this session asked for no message (only batch submissions do)"),
        ))
    }
    /// Batch submissions: bytes read that matched the write armed with `Action::ArmWrite`,
    /// which the host performed before this call. Otherwise as `handle` with `Received`.
    fn received_armed(&mut self, _bytes: &[u8], _now: Instant) -> Result<Vec<Action>> {
        Err(Error::protocol(
            crate::error::Stage::Data,
            "the host reported bytes that matched an armed write, but this session armed none (only batch submissions do)",
        ))
    }
    /// When the guest gives up waiting, if it is waiting.
    fn deadline(&self) -> Option<Instant>;
    /// Opaque, versioned sync state to store for the next run (inbound only).
    fn sync_state(&self) -> Option<Vec<u8>> {
        None
    }
    /// True while a STARTTLS connection is still in clear text: anything the server says now
    /// could have been forged, so errors raised now must not quote it (see `scrub_unverified`).
    fn unverified(&self) -> bool;
    /// The secret in the forms it may take on the wire (see `sasl::secret_forms`), for
    /// redaction of errors.
    fn secret_forms(&self) -> Vec<String> {
        Vec::new()
    }
    /// The host asks the session to end politely (the WIT's `stop` event): an idling IMAP
    /// session ends IDLE and logs out. Sessions without anything to wait for ignore it and end
    /// on their own within their limits.
    fn stop(&mut self, _now: Instant) -> Result<Vec<Action>> {
        Ok(Vec::new())
    }
}

/// Feeds `event` to `session` and cleans any error it returns, for every protocol alike:
/// secrets the server echoed (password, token, their encodings) are redacted, and when the
/// error was raised before TLS on a STARTTLS connection every piece of server text (the reply
/// and each excerpt recorded with `Error::with_quote`) is withheld: an attacker on the path
/// could have written it, and the admin must never be shown it as the server's message.
pub fn handle_checked(session: &mut dyn Session, event: Event<'_>, now: Instant) -> Result<Vec<Action>> {
    checked(session, |s| s.handle(event, now))
}

/// `received_armed` with the same cleaning of errors as `handle_checked`.
pub fn received_armed_checked(session: &mut dyn Session, bytes: &[u8], now: Instant) -> Result<Vec<Action>> {
    checked(session, |s| s.received_armed(bytes, now))
}

/// `stop` with the same cleaning of errors as `handle_checked`.
pub fn stop_checked(session: &mut dyn Session, now: Instant) -> Result<Vec<Action>> {
    checked(session, |s| s.stop(now))
}

/// Runs `call` on `session` and cleans the error it returns (see `handle_checked`).
fn checked(session: &mut dyn Session, call: impl FnOnce(&mut dyn Session) -> Result<Vec<Action>>) -> Result<Vec<Action>> {
    // Checked before the call: only text processed while unverified can be forged, and a
    // session never goes from encrypted back to clear text.
    let unverified = session.unverified();
    call(&mut *session).map_err(|mut e| {
        e.redact(&session.secret_forms());
        if unverified {
            e.withhold_server_text();
        }
        e.quoted.clear();
        e
    })
}

/// A blind scripted server for the hostile-server tests of every protocol: each chunk is fed
/// in turn through `handle_checked` (as the component does), whatever the client wrote.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::error::Error;

    pub(crate) struct Outcome {
        /// Every byte the client wrote.
        pub wire: Vec<u8>,
        /// Every other action.
        pub actions: Vec<Action>,
        pub error: Option<Error>,
    }

    impl Outcome {
        pub fn err(&self) -> &Error {
            self.error.as_ref().unwrap_or_else(|| panic!("no error; actions: {:?}", self.actions))
        }
        /// Everything an admin could see: the error's Display and Debug, and every step.
        pub fn shown(&self) -> String {
            format!("{} {:?} {:?}", self.error.as_ref().map(|e| e.to_string()).unwrap_or_default(), self.error, self.actions)
        }
        pub fn wire_text(&self) -> String {
            String::from_utf8_lossy(&self.wire).into_owned()
        }
    }

    /// The text a hostile server hides in its replies (a phone number to call).
    pub(crate) const ATTACK: &str = "555-0100";
    /// The password a hostile server echoes back.
    pub(crate) const ECHOED_PASSWORD: &str = "Pa55-w0rd-echo";

    /// The login of the hostile-server tests: a user name and `ECHOED_PASSWORD`.
    pub(crate) fn echoed_login() -> crate::config::Credentials {
        crate::config::Credentials::Basic { username: "agent@example.com".into(), password: ECHOED_PASSWORD.into() }
    }

    /// An OAuth2 token outside the RFC 6750 grammar (a control character and a SASL field).
    pub(crate) fn token_outside_the_grammar() -> crate::config::Credentials {
        crate::config::Credentials::OAuth2 { username: "agent@example.com".into(), access_token: "x\u{1}host=evil".into(), mechanism: None }
    }

    /// Each `(name, script)` fails over STARTTLS with the server's text before TLS withheld
    /// (no reply, no quote, the withheld note), and the same failure over implicit TLS keeps
    /// the server's text so the admin can act. `session` opens a session with that security.
    pub(crate) fn assert_withheld_before_tls(cases: &[(&str, Vec<&[u8]>)], session: impl Fn(crate::config::Security) -> Box<dyn Session>) {
        use crate::config::Security;
        for (name, script) in cases {
            let script: Vec<Option<&[u8]>> = script.iter().copied().map(Some).collect();
            let out = run(&mut *session(Security::Starttls), &script);
            let e = out.err();
            assert!(!out.shown().contains(ATTACK), "{name}: pre-TLS text shown: {}", out.shown());
            assert_eq!(e.reply, None, "{name}");
            assert!(e.quoted.is_empty(), "{name}");
            assert!(e.message.contains(crate::error::WITHHELD), "{name}: {e}");
            let tls = run(&mut *session(Security::ImplicitTls), &script);
            assert!(tls.shown().contains(ATTACK), "{name}: over TLS the server's text is kept: {}", tls.shown());
        }
    }

    /// A login refused with a reply that echoes `ECHOED_PASSWORD`: auth-rejected, and the
    /// password shown nowhere, `<redacted>` in its place.
    pub(crate) fn assert_echo_redacted(out: &Outcome) {
        let e = out.err();
        assert_eq!(e.kind, crate::error::ErrorKind::AuthRejected, "{e}");
        assert!(!out.shown().contains(ECHOED_PASSWORD), "{}", out.shown());
        assert!(out.shown().contains("<redacted>"), "{}", out.shown());
    }

    /// Connects, then feeds each event in turn; a `None` stands for `TlsEstablished`.
    pub(crate) fn run(session: &mut dyn Session, script: &[Option<&[u8]>]) -> Outcome {
        let mut out = Outcome { wire: Vec::new(), actions: Vec::new(), error: None };
        let events = std::iter::once(Event::Connected).chain(script.iter().map(|s| s.map_or(Event::TlsEstablished, Event::Received)));
        for (i, event) in events.enumerate() {
            match handle_checked(session, event, 1_000 + i as u64) {
                Ok(actions) => {
                    for a in actions {
                        match a {
                            Action::Write(b) => out.wire.extend_from_slice(&b),
                            other => out.actions.push(other),
                        }
                    }
                }
                Err(e) => {
                    out.error = Some(e);
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Credentials, Limits, Security, SubmissionServer};
    use crate::smtp::SmtpSession;

    fn smtp(security: Security) -> SmtpSession {
        let submission = SubmissionServer {
            server: Server { host: "smtp.shop.example".into(), port: 587, security },
            credentials: Credentials::Basic { username: "agent@shop.example".into(), password: "pw-Secret-1".into() },
            helo_name: "client.shop.example".into(),
            limits: Limits::default(),
        };
        SmtpSession::new(submission, "agent@shop.example".into(), vec!["ann@example.com".into()], b"Subject: x\r\n\r\nhi\r\n".to_vec())
            .unwrap()
    }

    #[test]
    fn server_text_before_starttls_never_reaches_the_admin() {
        let mut s = smtp(Security::Starttls);
        handle_checked(&mut s, Event::Connected, 0).unwrap();
        let e = handle_checked(&mut s, Event::Received(b"554 5.7.1 Call +1-555-0100 to unlock your account\r\n"), 1).unwrap_err();
        assert_eq!(e.reply, None, "forged text quoted: {e:?}");
        assert!(!e.to_string().contains("555-0100"), "{e}");
    }

    #[test]
    fn server_text_over_tls_is_kept() {
        let mut s = smtp(Security::ImplicitTls);
        handle_checked(&mut s, Event::Connected, 0).unwrap();
        let e = handle_checked(&mut s, Event::Received(b"554 5.7.1 Service unavailable\r\n"), 1).unwrap_err();
        assert_eq!(e.reply.map(|r| r.code), Some("554".to_string()));
    }
}
