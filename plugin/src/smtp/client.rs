//! The submission state machine: greeting, EHLO, STARTTLS, AUTH, envelope, DATA, QUIT.

use crate::config::{Credentials, Server, SubmissionServer};
use crate::error::{redact, Error, ErrorKind, Result, Retry, ServerReply, Stage};
use crate::link::Link;
use crate::sasl::{self, Mechanism};
use crate::session::{
    Action, BatchReport, CheckSummary, Event, Instant, MessageBytes, Outcome, RecipientResult, SendReport, Session, Step, StepReport,
};

use super::data;
use super::explain::{self, Known};
use super::reply::{Capabilities, Reply, ReplyReader};

mod auth;
mod batch;
mod envelope;
mod errors;
mod refusals;
mod report;

use errors::*;

pub use batch::{BatchEnvelope, MAX_BATCH};

/// Pessimistic upload speed used to stretch the deadline after the message data is written:
/// the host may still be writing it when the normal reply timeout would run out.
const DATA_BYTES_PER_MS: u64 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthStep {
    /// Sent `AUTH <mech> <initial response>`.
    InitialResponse(Mechanism),
    /// Sent `AUTH LOGIN`, waiting for the user name prompt.
    LoginUser,
    /// Sent the user name, waiting for the password prompt.
    LoginPassword,
    /// Sent the password, waiting for the result.
    LoginResult,
    /// The server answered an OAuth token with an error challenge; we sent the empty
    /// response it requires and wait for the final failure.
    OAuthFailure(Mechanism),
}

#[derive(Debug)]
enum State {
    AwaitConnected,
    Greeting,
    Ehlo,
    Helo,
    Starttls,
    TlsHandshake,
    Auth(AuthStep),
    Mail,
    /// Waiting for the reply to RCPT number `.0`.
    Rcpt(usize),
    /// Waiting for the reply to DATA (354).
    DataCommand,
    /// Message written, waiting for the final reply.
    DataEnd,
    /// No recipient was accepted; waiting for the RSET reply, then QUIT (sent already when pipelining).
    Reset {
        quit_sent: bool,
    },
    /// Check mode: the probe envelope was accepted; waiting for the RSET reply, then QUIT.
    ProbeReset,
    /// A batch submission after login: replies are matched with the batch's queue.
    Batch,
    /// QUIT sent; how the session ends once the server answers or hangs up.
    Quit(Box<Ending>),
    Finished,
    Failed,
}

#[derive(Debug)]
enum Ending {
    Sent(SendReport),
    /// A batch submission: every message has its outcome.
    Batch(BatchReport),
    /// Check mode: every step passed.
    Checked,
    Failed(Error),
}

/// Most characters of server text quoted in a check step's detail.
const MAX_QUOTED_CHARS: usize = 200;
/// Recipients named one by one in the envelope step; the rest are counted.
const SHOWN_RECIPIENTS: usize = 5;

/// One submission of one message, or (opened by `check`) a probe that goes as far as the
/// envelope, resets it and sends nothing.
pub struct SmtpSession {
    server: Server,
    credentials: Credentials,
    helo_name: String,
    envelope_from: String,
    envelope_to: Vec<String>,
    /// The dot-stuffed DATA payload; moved out when written.
    data: Vec<u8>,
    message_size: u64,
    eight_bit: bool,
    link: Link,
    reader: ReplyReader,
    caps: Capabilities,
    pipelined: bool,
    recipients: Vec<RecipientResult>,
    /// The error to report once RSET/QUIT are done.
    pending_failure: Option<Error>,
    /// A check session: reports each step with `Action::Progress`, never sends DATA.
    check: bool,
    /// A batch submission (`new_batch`): the messages and where they stand.
    batch: Option<Box<batch::Batch>>,
    /// Message data written in this step, for the deadline's upload allowance.
    upload_bytes: u64,
    state: State,
}

impl std::fmt::Debug for SmtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials Debug is redacted; the message bytes are left out as noise.
        f.debug_struct("SmtpSession")
            .field("server", &self.server)
            .field("credentials", &self.credentials)
            .field("envelope_from", &self.envelope_from)
            .field("envelope_to", &self.envelope_to)
            .field("message_size", &self.message_size)
            .field("check", &self.check)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl SmtpSession {
    pub fn new(submission: SubmissionServer, envelope_from: String, envelope_to: Vec<String>, message: Vec<u8>) -> Result<Self> {
        let max = submission.limits.max_message_bytes;
        let mut session = Self::open(submission, envelope_from, envelope_to, false)?;
        if message.len() as u64 > max {
            return Err(Error::limit(
                Stage::Data,
                format!(
                    "the message is {} bytes, more than the configured limit of {max} bytes; shorten it or remove attachments",
                    message.len()
                ),
            ));
        }
        // The NUL check and whether the message needs any change, in one pass.
        let found = data::scan(&message);
        if let Some(at) = found.nul {
            // A NUL would reach the server as is (and "\r\n\0.\r\n" reads as the end of
            // DATA to some servers): refused before anything is sent.
            return Err(Error::invalid(
                Stage::Data,
                format!("the message contains a NUL byte (at byte {at}), which SMTP cannot carry (RFC 5321 2.3.8); nothing was sent. Send binary content as a base64-encoded attachment"),
            ));
        }
        let encoded = data::encode_scanned(message, &found);
        session.data = encoded.bytes;
        session.message_size = encoded.size;
        session.eight_bit = encoded.eight_bit;
        Ok(session)
    }

    /// A connection check ("test connection"): greeting, EHLO, STARTTLS when configured, AUTH,
    /// `MAIL FROM` and a `RCPT TO` for each recipient, then RSET and QUIT. Never DATA: nothing
    /// is sent. Each step is reported with `Action::Progress`; a refused sender fails at
    /// `Stage::Envelope` with the server's reply, a refused recipient as an ordinary refusal
    /// (`ErrorKind::Refused`) with every recipient's answer.
    pub fn check(submission: SubmissionServer, envelope_from: String, envelope_to: Vec<String>) -> Result<Self> {
        Self::open(submission, envelope_from, envelope_to, true)
    }

    /// Validates the envelope and EHLO name; the message (if any) is added by the caller.
    fn open(submission: SubmissionServer, envelope_from: String, envelope_to: Vec<String>, check: bool) -> Result<Self> {
        sasl::check_credentials(&submission.credentials)?;
        check_envelope_address("sender", &envelope_from)?;
        if envelope_to.is_empty() {
            let why = if check {
                "the check needs at least one recipient address to try RCPT TO; add one"
            } else {
                "the message has no recipient; add at least one address"
            };
            return Err(Error::invalid(Stage::Envelope, why));
        }
        for to in &envelope_to {
            check_envelope_address("recipient", to)?;
        }
        let helo_name = if submission.helo_name.is_empty() { "localhost".to_string() } else { submission.helo_name };
        if helo_name.contains(|c: char| c.is_control() || c == ' ') {
            return Err(Error::invalid(
                Stage::Envelope,
                "the EHLO name contains a space, line break or control character; set a plain host name",
            ));
        }
        let link = Link::new(&submission.server, &submission.limits);
        Ok(SmtpSession {
            server: submission.server,
            credentials: submission.credentials,
            helo_name,
            envelope_from,
            envelope_to,
            data: Vec::new(),
            message_size: 0,
            eight_bit: false,
            link,
            reader: ReplyReader::default(),
            caps: Capabilities::default(),
            pipelined: false,
            recipients: Vec::new(),
            pending_failure: None,
            check,
            batch: None,
            upload_bytes: 0,
            state: State::AwaitConnected,
        })
    }

    fn stage(&self) -> Stage {
        match self.state {
            State::AwaitConnected => Stage::Connect,
            State::Greeting => Stage::Greeting,
            State::Ehlo | State::Helo => Stage::Capabilities,
            State::Starttls | State::TlsHandshake => Stage::Starttls,
            State::Auth(_) => Stage::Authenticate,
            State::Mail | State::Rcpt(_) | State::Reset { .. } | State::ProbeReset => Stage::Envelope,
            State::DataCommand | State::DataEnd => Stage::Data,
            State::Batch => self.batch_stage(),
            State::Quit(_) | State::Finished | State::Failed => Stage::Logout,
        }
    }

    fn step(&mut self, event: Event<'_>, now: Instant) -> Result<Vec<Action>> {
        if let State::Quit(_) = self.state {
            // The outcome is already decided; a server that hangs up or never answers QUIT
            // must not turn a delivered message into an error (the host would send it again).
            let deadline_passed = self.link.deadline().is_some_and(|d| now >= d);
            if event == Event::Closed {
                return self.end(Some("the server closed the connection after QUIT".to_string()));
            }
            if event == Event::Timer && deadline_passed {
                // Not a polite ending, so no logout step; the outcome stands all the same.
                return self.end(None);
            }
        }
        if self.link.absorb(&event, now, self.stage())? {
            return Ok(Vec::new());
        }
        // A batch's steady step: commit point, write-message, write, need-message.
        let mut actions = Vec::with_capacity(if matches!(self.state, State::Batch) { 6 } else { 0 });
        let mut wrote_data = false;
        match event {
            Event::Connected => {
                if !matches!(self.state, State::AwaitConnected) {
                    return Err(Error::protocol(self.stage(), "the host reported a second connection for one session"));
                }
                self.state = State::Greeting;
            }
            Event::TlsEstablished => {
                // Capabilities from before TLS could have been forged; ask again.
                self.caps = Capabilities::default();
                self.progress(&mut actions, Step::Starttls, || "STARTTLS succeeded: the connection is now encrypted".to_string());
                actions.push(self.ehlo());
            }
            Event::Received(_) => {
                if matches!(self.state, State::AwaitConnected) {
                    return Err(Error::protocol(Stage::Connect, "the host passed data before reporting the connection"));
                }
                if let Err(e) = self.read_replies(&mut actions, &mut wrote_data) {
                    if !matches!(self.state, State::Batch) {
                        return Err(e);
                    }
                    // Keep what this step already did (outcomes, the data of a committed
                    // message): the batch ends with every message's outcome.
                    self.stop_batch(e, &mut actions);
                }
            }
            Event::Stored => {
                return Err(Error::protocol(self.stage(), "the host reported stored messages, but a submission delivers none"));
            }
            // Fully handled by `absorb` (errors, or a timer before the deadline).
            Event::TlsFailed(_) | Event::Closed | Event::Timer => {}
        }
        if !matches!(self.state, State::Finished) {
            let uploaded = std::mem::take(&mut self.upload_bytes) + if wrote_data { self.message_size } else { 0 };
            let allowance = uploaded / DATA_BYTES_PER_MS;
            self.link.expect_reply(now.saturating_add(allowance));
        }
        // A batch asks for the next messages' bytes after this step's writes.
        self.ask_ahead(&mut actions);
        Ok(actions)
    }

    /// Reads every complete reply buffered and acts on each.
    fn read_replies(&mut self, actions: &mut Vec<Action>, wrote_data: &mut bool) -> Result<()> {
        while !matches!(self.state, State::TlsHandshake | State::Finished) {
            let stage = self.stage();
            let reply = loop {
                let Some(line) = self.link.next_line(stage)? else {
                    break None;
                };
                if let Some(reply) = self.reader.feed(line.0, stage)? {
                    break Some(reply);
                }
            };
            let Some(mut reply) = reply else { break };
            *wrote_data |= matches!(self.state, State::DataCommand) && reply.code == 354;
            if matches!(self.state, State::Batch) {
                let done = self.on_batch_reply(&mut reply, actions);
                self.reader.recycle(reply.text);
                done?;
            } else {
                self.on_reply(reply, actions)?;
            }
        }
        Ok(())
    }

    fn on_reply(&mut self, reply: Reply, actions: &mut Vec<Action>) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Greeting => {
                if reply.code != 220 {
                    return Err(from_reply(
                        ErrorKind::Protocol,
                        Stage::Greeting,
                        format!("the server refused the session in its greeting ({})", reply.summary()),
                        "it may be overloaded or block this client's address",
                        &reply,
                    ));
                }
                self.progress(actions, Step::Greeting, || match self.quoted(&one_line(&reply)) {
                    Some(text) => format!("server ready: {text}"),
                    None => "server ready (its text arrived before encryption and is not shown)".to_string(),
                });
                actions.push(self.ehlo());
            }
            State::Ehlo => {
                if reply.is_positive() {
                    self.caps = Capabilities::from_ehlo(&reply);
                    self.progress(actions, Step::Capabilities, || self.capabilities_detail(&reply));
                    self.after_capabilities(actions)?;
                } else if matches!(reply.code, 500 | 502) {
                    if self.link.needs_starttls() {
                        return Err(Error::policy(
                            Stage::Starttls,
                            "the server does not support EHLO, so it cannot offer STARTTLS; turn TLS on (port 465) or use a server that supports STARTTLS",
                        )
                        .with_reply(reply.to_server_reply()));
                    }
                    actions.push(Action::Write(format!("HELO {}\r\n", self.helo_name).into_bytes()));
                    self.state = State::Helo;
                } else {
                    return Err(refused(Stage::Capabilities, "EHLO", &reply));
                }
            }
            State::Helo => {
                if !reply.is_positive() {
                    return Err(refused(Stage::Capabilities, "HELO", &reply));
                }
                self.caps = Capabilities::default();
                self.progress(actions, Step::Capabilities, || {
                    "the server does not support EHLO (HELO accepted), so it advertises no extensions".to_string()
                });
                self.after_capabilities(actions)?;
            }
            State::Starttls => {
                if reply.code != 220 {
                    return Err(Error::policy(
                        Stage::Starttls,
                        format!(
                            "the server refused STARTTLS ({}); nothing was sent in clear text. Check the server's TLS setup or turn TLS on",
                            reply.summary()
                        ),
                    )
                    .with_reply(reply.to_server_reply())
                    .with_retry(retry_for(reply.code)));
                }
                self.link.begin_starttls()?;
                actions.push(Action::StartTls);
                self.state = State::TlsHandshake;
            }
            State::Auth(step) => self.on_auth_reply(step, reply, actions)?,
            State::Mail => {
                if let Some(e) = self.too_big_error(Stage::Envelope, &reply) {
                    return Err(e);
                }
                if !reply.is_positive() {
                    return Err(from_reply(
                        ErrorKind::Protocol,
                        Stage::Envelope,
                        format!("the server refused the sender <{}> ({})", self.envelope_from, reply.summary()),
                        "check that the account may send as this address",
                        &reply,
                    ));
                }
                self.state = State::Rcpt(0);
                if !self.pipelined {
                    actions.push(Action::Write(self.rcpt_command(0)));
                }
            }
            State::Rcpt(i) => {
                let address = self.envelope_to.get(i).cloned().unwrap_or_default();
                self.recipients.push(RecipientResult::from_reply(address, reply.code, reply.to_server_reply()));
                let next = i + 1;
                if next < self.envelope_to.len() {
                    self.state = State::Rcpt(next);
                    if !self.pipelined {
                        actions.push(Action::Write(self.rcpt_command(next)));
                    }
                } else if self.check {
                    self.end_probe(actions);
                } else if self.pipelined {
                    // DATA went out with the envelope; its reply comes next.
                    self.state = State::DataCommand;
                } else if self.accepted_count() > 0 {
                    actions.push(Action::Write(b"DATA\r\n".to_vec()));
                    self.state = State::DataCommand;
                } else {
                    self.reset(actions);
                }
            }
            State::DataCommand => {
                if self.accepted_count() == 0 {
                    if reply.code == 354 {
                        // A pipelined DATA accepted without recipients: hang up without the
                        // final dot so that no (empty) message is ever delivered.
                        return Err(self.recipients_refused_error());
                    }
                    self.reset(actions);
                } else if reply.code == 354 {
                    actions.push(Action::Write(std::mem::take(&mut self.data)));
                    self.state = State::DataEnd;
                } else {
                    return Err(refused(Stage::Data, "DATA", &reply));
                }
            }
            State::DataEnd => {
                if let Some(e) = self.too_big_error(Stage::Data, &reply) {
                    return Err(e);
                }
                if !reply.is_positive() {
                    return Err(from_reply(
                        ErrorKind::Protocol,
                        Stage::Data,
                        format!("the server did not accept the message ({}); it was not sent", reply.summary()),
                        "",
                        &reply,
                    ));
                }
                let report = SendReport { final_reply: reply.to_server_reply(), recipients: std::mem::take(&mut self.recipients) };
                actions.push(Action::Write(b"QUIT\r\n".to_vec()));
                self.state = State::Quit(Box::new(Ending::Sent(report)));
            }
            State::ProbeReset => {
                if !reply.is_positive() {
                    return Err(from_reply(
                        ErrorKind::Protocol,
                        Stage::Envelope,
                        format!(
                            "the server refused RSET ({}) after the probe envelope; nothing was sent, but the server does not follow SMTP",
                            reply.summary()
                        ),
                        "",
                        &reply,
                    ));
                }
                self.progress(actions, Step::Reset, || "the probe was reset: nothing was sent".to_string());
                actions.push(Action::Write(b"QUIT\r\n".to_vec()));
                self.state = State::Quit(Box::new(Ending::Checked));
            }
            State::Reset { quit_sent } => {
                // Whatever RSET got, the session ends with the recipient failure.
                if !quit_sent {
                    actions.push(Action::Write(b"QUIT\r\n".to_vec()));
                }
                let failure = self.pending_failure.take().unwrap_or_else(|| self.recipients_refused_error());
                self.state = State::Quit(Box::new(Ending::Failed(failure)));
            }
            State::Quit(ending) => {
                self.state = State::Quit(ending);
                let detail = self
                    .quoted(&one_line(&reply))
                    .map_or_else(|| "the server answered QUIT".to_string(), |text| format!("the server answered QUIT: {text}"));
                actions.extend(self.end(Some(detail))?);
            }
            State::AwaitConnected | State::TlsHandshake | State::Batch | State::Finished | State::Failed => {
                return Err(Error::protocol(self.stage(), "the server sent a reply nobody asked for"));
            }
        }
        Ok(())
    }

    fn ehlo(&mut self) -> Action {
        self.state = State::Ehlo;
        Action::Write(format!("EHLO {}\r\n", self.helo_name).into_bytes())
    }

    /// Decides what an error means for the message. Once the server accepted (or finally
    /// refused) the message, trouble around QUIT or RSET does not change that outcome; after
    /// the data was handed over without a verdict, delivery is unknown.
    fn settle(&mut self, error: Error, data_handed_over: bool) -> Result<Vec<Action>> {
        match &self.state {
            State::Quit(_) => self.end(None),
            State::Reset { .. } => Err(self.pending_failure.take().unwrap_or(error)),
            State::Batch => {
                let mut actions = Vec::new();
                self.stop_batch(error, &mut actions);
                Ok(actions)
            }
            // A complete negative reply is a verdict (it carries the reply); anything else is not.
            _ if data_handed_over && error.reply.is_none() => Err(uncertain(error)),
            _ => Err(error),
        }
    }

    /// QUIT answered or the server hung up: finish with the outcome decided earlier. A check
    /// reports the logout step with `logout` when the session ended politely.
    fn end(&mut self, logout: Option<String>) -> Result<Vec<Action>> {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Quit(ending) => match *ending {
                Ending::Sent(report) => {
                    self.link.clear_deadline();
                    Ok(vec![Action::Close, Action::Finished(Outcome::Sent(report))])
                }
                Ending::Batch(report) => {
                    self.link.clear_deadline();
                    Ok(vec![Action::Close, Action::Finished(Outcome::SentBatch(report))])
                }
                Ending::Checked => {
                    self.link.clear_deadline();
                    let mut actions = Vec::with_capacity(3);
                    if let Some(detail) = logout {
                        self.progress(&mut actions, Step::Logout, || detail);
                    }
                    actions.push(Action::Close);
                    actions.push(Action::Finished(Outcome::Checked(CheckSummary::default())));
                    Ok(actions)
                }
                Ending::Failed(error) => {
                    self.state = State::Failed;
                    Err(error)
                }
            },
            other => {
                self.state = other;
                Err(Error::protocol(self.stage(), "the session ended in an unexpected state"))
            }
        }
    }

    fn scrubbed(&self, reply: ServerReply) -> ServerReply {
        ServerReply { code: reply.code, text: redact(&reply.text, &self.secret_forms()) }
    }
}

impl Session for SmtpSession {
    fn server(&self) -> &Server {
        &self.server
    }

    fn handle(&mut self, event: Event<'_>, now: Instant) -> Result<Vec<Action>> {
        if matches!(self.state, State::Finished | State::Failed) {
            return Err(Error::protocol(
                Stage::Logout,
                "the submission session is already over; the host sent another event (start a new session)",
            ));
        }
        // The message data (and its final dot) went to the host in an earlier call.
        let data_handed_over = matches!(self.state, State::DataEnd);
        self.disarm();
        let deferred = self.take_deferred();
        let result = match self.step(event, now) {
            Err(e) => self.settle(e, data_handed_over),
            ok => ok,
        }
        .map(|actions| {
            let mut actions = first(deferred, actions);
            self.defer_outcomes(&mut actions);
            self.seal_outcomes(&mut actions);
            self.arm_ahead(&mut actions);
            actions
        });
        if result.is_err() {
            self.state = State::Failed;
        }
        if matches!(self.state, State::Finished | State::Failed) {
            self.link.clear_deadline();
        }
        result
    }

    fn unverified(&self) -> bool {
        self.link.unverified()
    }

    fn secret_forms(&self) -> Vec<String> {
        sasl::secret_forms(&self.credentials)
    }

    fn deadline(&self) -> Option<Instant> {
        self.link.deadline()
    }

    fn received_armed(&mut self, bytes: &[u8], now: Instant) -> Result<Vec<Action>> {
        if matches!(self.state, State::Finished | State::Failed) {
            return Err(Error::protocol(
                Stage::Logout,
                "the submission session is already over; the host reported bytes for an armed write after it ended",
            ));
        }
        let result = self.on_received_armed(bytes, now);
        if result.is_err() {
            self.state = State::Failed;
            self.link.clear_deadline();
        }
        result
    }

    fn message_data(&mut self, index: u32, bytes: MessageBytes, now: Instant) -> Result<Vec<Action>> {
        if matches!(self.state, State::Finished | State::Failed) {
            return Err(Error::protocol(
                Stage::Logout,
                format!("the submission session is already over; the host handed over message {index} after it ended"),
            ));
        }
        let deferred = self.take_deferred();
        let result = self.on_message_data(index, bytes, now).map(|actions| {
            let mut actions = first(deferred, actions);
            self.seal_outcomes(&mut actions);
            self.arm_ahead(&mut actions);
            actions
        });
        if result.is_err() {
            self.state = State::Failed;
            self.link.clear_deadline();
        }
        result
    }
}

/// `before`, then `actions` (no copy when `before` is empty, as it mostly is).
fn first(mut before: Vec<Action>, actions: Vec<Action>) -> Vec<Action> {
    if before.is_empty() {
        return actions;
    }
    before.extend(actions);
    before
}
