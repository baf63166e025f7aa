//! Saving a copy of a message into a folder of an IMAP mailbox (IMAP APPEND), e.g. a reply
//! just submitted over SMTP into the mailbox's "Sent" folder, so the mailbox owner sees it.
//!
//! One short session: greeting, capabilities, STARTTLS when configured, login and the
//! hierarchy delimiter when the folder name has a "/" (the same `Connection` as the fetch
//! session), then `APPEND "<folder>" (\Seen) {n}` with the message as one literal
//! (non-synchronising with LITERAL+, otherwise written after the server's "+"), and LOGOUT.
//! When the server answers `NO [TRYCREATE]` the folder is created (and subscribed, so mail
//! programs that show only subscribed folders list it) and the APPEND is sent once more;
//! never a second time. The folder name is mapped into the server's personal namespace
//! (`namespace`: "Sent" is "INBOX.Sent" on Courier); a NO to the APPEND is a refused save of
//! the copy, quoting the server, and names the prefix on a server that has one.

use std::collections::VecDeque;
use std::fmt;

use super::command::{Command, LiteralMode, Wire};
use super::connection::{check_tag, command_invalid, no_data_pending, write, Connection, Input};
use super::response::{Code, Response, Status};
use crate::config::{InboundProtocol, Mailbox, Server};
use crate::error::{Error, ErrorKind, Result, Retry, ServerReply, Stage};
use crate::session::{Action, Event, Instant, Outcome, SavedCopy, Session};

#[derive(Debug)]
enum State {
    /// The connection's login phase (greeting to delimiter) is running.
    Login,
    /// APPEND written up to its first synchronising literal; `pending` are the parts still to
    /// write, each after a "+" (empty once the whole message is on the wire). `subscribe` is
    /// the tag of a SUBSCRIBE pipelined before it, whose answer does not matter.
    Append {
        tag: String,
        pending: VecDeque<Wire>,
        subscribe: Option<String>,
    },
    Create {
        tag: String,
    },
    Logout {
        tag: String,
    },
    Finished,
    Failed,
}

impl State {
    fn tag(&self) -> Option<&str> {
        match self {
            State::Append { tag, .. } | State::Create { tag } | State::Logout { tag } => Some(tag),
            State::Login | State::Finished | State::Failed => None,
        }
    }
}

/// Saves one message into one folder of an IMAP mailbox, flagged \Seen.
pub struct AppendSession {
    mailbox: Mailbox,
    /// The folder as configured: UTF-8, "/" between levels.
    folder: String,
    message: Vec<u8>,
    conn: Connection,
    state: State,
    /// TRYCREATE was answered with CREATE once already.
    created: bool,
    saved: Option<SavedCopy>,
}

impl fmt::Debug for AppendSession {
    // The message may be long and is nobody's business in a log line; credentials redact themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppendSession")
            .field("server", &self.mailbox.server)
            .field("credentials", &self.mailbox.credentials)
            .field("folder", &self.folder)
            .field("message_bytes", &self.message.len())
            .field("state", &self.state)
            .field("stage", &self.stage())
            .finish_non_exhaustive()
    }
}

impl AppendSession {
    /// A session that saves `message` (RFC 5322 bytes, CRLF line endings) into `folder` of
    /// `mailbox` (an IMAP mailbox; its folders, after-fetch and first-sync settings only serve
    /// to refuse a folder that is fetched). Refused before connecting: a POP3 mailbox, an
    /// empty or fetched folder name, an empty message, NUL bytes, a message over
    /// `limits.max_message_bytes`.
    pub fn new(mailbox: Mailbox, folder: String, message: Vec<u8>) -> Result<Self> {
        crate::sasl::check_credentials(&mailbox.credentials)?;
        if mailbox.protocol != InboundProtocol::Imap {
            return Err(Error::invalid(
                Stage::Connect,
                "a copy can only be saved into an IMAP mailbox, and this mailbox is configured as POP3; turn saving copies off or fetch the mailbox over IMAP",
            ));
        }
        if folder.trim().is_empty() || folder.chars().any(char::is_control) {
            return Err(Error::invalid(
                Stage::SelectMailbox,
                "the folder to save copies in is empty or contains control characters; name it, e.g. \"Sent\"",
            ));
        }
        let fetched = |f: &str| f == folder || (f.eq_ignore_ascii_case("INBOX") && folder.eq_ignore_ascii_case("INBOX"));
        if mailbox.folders.iter().any(|f| fetched(f)) || (mailbox.folders.is_empty() && fetched("INBOX")) {
            return Err(Error::invalid(
                Stage::SelectMailbox,
                format!("the folder {folder:?} is fetched as inbound mail, so a copy saved there would come back as a new message; save copies in another folder, e.g. \"Sent\""),
            ));
        }
        if message.is_empty() {
            return Err(Error::invalid(Stage::Data, "the message to save is empty"));
        }
        let max = mailbox.limits.max_message_bytes;
        if message.len() as u64 > max {
            return Err(Error::limit(
                Stage::Data,
                format!(
                    "the message is {} bytes, more than the limit of {max} bytes (max-message-bytes), so no copy is saved in {folder:?}; raise the limit to keep copies of large messages",
                    message.len()
                ),
            ));
        }
        if message.contains(&0) {
            return Err(Error::invalid(Stage::Data, "the message contains NUL bytes, which IMAP cannot store"));
        }
        Ok(AppendSession {
            conn: Connection::new(&mailbox.server, &mailbox.limits, &[folder.as_str()], false),
            state: State::Login,
            created: false,
            saved: None,
            mailbox,
            folder,
            message,
        })
    }

    fn stage(&self) -> Stage {
        match self.state {
            State::Login => self.conn.stage(),
            State::Create { .. } => Stage::SelectMailbox,
            State::Append { .. } => Stage::Data,
            State::Logout { .. } | State::Finished | State::Failed => Stage::Logout,
        }
    }

    /// RFC 7889 APPENDLIMIT=<n>: the largest message the server accepts.
    fn append_limit(&self) -> Option<u64> {
        self.conn.caps().iter().find_map(|c| {
            let (name, value) = c.split_once('=')?;
            name.eq_ignore_ascii_case("APPENDLIMIT").then(|| value.parse().ok()).flatten()
        })
    }

    fn step(&mut self, event: Event<'_>, now: Instant, out: &mut Vec<Action>) -> Result<()> {
        if event == Event::Closed && matches!(self.state, State::Logout { .. }) {
            // Many servers close right after their BYE; the copy is saved either way.
            self.finish(out);
            return Ok(());
        }
        // Nothing is delivered, so a Stored has nothing to act on.
        if self.conn.absorb(event, now, self.stage(), out)? {
            return Ok(());
        }
        self.pump(out)?;
        let waiting_for_tls = matches!(self.state, State::Login) && self.conn.awaiting_tls();
        if !waiting_for_tls && !matches!(self.state, State::Finished | State::Failed) {
            self.conn.link.expect_reply(now);
        }
        Ok(())
    }

    /// Processes every complete response buffered, as long as the state reads the server.
    fn pump(&mut self, out: &mut Vec<Action>) -> Result<()> {
        while !matches!(self.state, State::Finished | State::Failed) {
            let stage = self.stage();
            match self.conn.next(stage, &self.mailbox.credentials, out)? {
                None => break,
                Some(Input::LoggedIn) => self.send_append(out, None)?,
                Some(Input::Response(resp)) => self.on_response(resp, out)?,
            }
        }
        Ok(())
    }

    fn on_response(&mut self, resp: Response, out: &mut Vec<Action>) -> Result<()> {
        let stage = self.stage();
        match resp {
            Response::Status { tag: Some(tag), status, code, text } => {
                if let State::Append { subscribe, .. } = &mut self.state {
                    if subscribe.as_deref() == Some(tag.as_str()) {
                        // A folder not subscribed is still there; the APPEND's answer follows.
                        *subscribe = None;
                        return Ok(());
                    }
                }
                check_tag(self.state.tag(), &tag, stage)?;
                if status == Status::Bad && !matches!(self.state, State::Logout { .. }) {
                    return Err(command_invalid(stage, text));
                }
                self.on_tagged(status, code, text, out)
            }
            Response::Status { tag: None, status: Status::Bye, .. } if matches!(self.state, State::Logout { .. }) => {
                Ok(())
            }
            Response::Status { tag: None, status, code, text } => self.conn.untagged(stage, status, code, text),
            Response::Capability(caps) => {
                self.conn.set_caps(caps);
                Ok(())
            }
            Response::Continuation(_) => {
                let State::Append { pending, .. } = &mut self.state else { return Err(no_data_pending(stage)) };
                let Some(part) = pending.pop_front() else { return Err(no_data_pending(stage)) };
                write(out, part.0);
                Ok(())
            }
            // EXISTS for the new message, FETCH flag updates...: nothing to do.
            Response::List { .. }
            | Response::Namespace(_)
            | Response::Exists(_)
            | Response::Search(_)
            | Response::Fetch(_)
            | Response::Other => {
                Ok(())
            }
        }
    }

    /// Writes the APPEND (after `subscribe`'s SUBSCRIBE, when pipelined) up to its first
    /// synchronising literal.
    fn send_append(&mut self, out: &mut Vec<Action>, subscribe: Option<String>) -> Result<()> {
        if let Some(limit) = self.append_limit().filter(|&l| self.message.len() as u64 > l) {
            return Err(Error::limit(
                Stage::Data,
                format!(
                    "the server accepts messages of at most {limit} bytes (APPENDLIMIT) and this one is {} bytes, so no copy is saved in {:?}",
                    self.message.len(),
                    self.folder
                ),
            ));
        }
        let tag = self.conn.next_tag();
        let wire = self.conn.wire_name(&self.folder);
        let mode = self.conn.literal_mode();
        // The folder name is quoted (modified UTF-7 is ASCII; control characters are refused),
        // so the message is the only literal; the flag keeps the owner's unread count honest.
        let cmd = Command::new(&tag, "APPEND")
            .string(&wire, LiteralMode::Sync)
            .raw(" (\\Seen)")
            .literal(&self.message, mode)
            .finish();
        let mut pending: VecDeque<Wire> = cmd.parts.into();
        if let Some(first) = pending.pop_front() {
            write(out, first.0);
        }
        self.state = State::Append { tag, pending, subscribe };
        Ok(())
    }

    fn on_tagged(&mut self, status: Status, code: Option<Code>, text: String, out: &mut Vec<Action>) -> Result<()> {
        let ok = status == Status::Ok;
        let reply = || ServerReply::new(status.as_str(), text.clone());
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Append { .. } => {
                if ok {
                    let (uid_validity, uid) = appenduid(code.as_ref()).unzip();
                    self.saved = Some(SavedCopy {
                        folder: self.folder.clone(),
                        uid_validity,
                        uid,
                        created_folder: self.created,
                    });
                    let tag = self.conn.send_simple(out, "LOGOUT");
                    self.state = State::Logout { tag };
                    return Ok(());
                }
                if code_is(code.as_ref(), "TRYCREATE") && !self.created {
                    self.created = true;
                    let wire = self.conn.wire_name(&self.folder);
                    let tag = self.conn.send_with_folder(out, "CREATE", &wire);
                    self.state = State::Create { tag };
                    return Ok(());
                }
                Err(self.append_refused(code.as_ref(), reply()))
            }
            State::Create { .. } => {
                // Created meanwhile by someone else: just as good.
                if !ok && !code_is(code.as_ref(), "ALREADYEXISTS") {
                    let e = Error::protocol(
                        Stage::SelectMailbox,
                        format!(
                            "the folder {:?} for the copy does not exist and the server refused to create it; create it in the mailbox or choose an existing folder",
                            self.folder
                        ),
                    )
                    .with_reply(reply());
                    return Err(self.conn.folder_refused(e, &self.folder));
                }
                let wire = self.conn.wire_name(&self.folder);
                let tag = self.conn.send_with_folder(out, "SUBSCRIBE", &wire);
                self.send_append(out, Some(tag))
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

    /// The server answered the APPEND with NO: a refused save of the copy, why in the admin's
    /// terms, with the server's words.
    fn append_refused(&self, code: Option<&Code>, reply: ServerReply) -> Error {
        let folder = &self.folder;
        let answer = crate::error::quote(format!("{} {}", reply.code, reply.text).as_bytes(), 120);
        let e = if code_is(code, "OVERQUOTA") {
            Error::limit(
                Stage::Data,
                format!("the mailbox is over its quota, so no copy was saved in {folder:?}; free space in the mailbox or raise its quota"),
            )
        } else if code_is(code, "TOOBIG") {
            Error::limit(
                Stage::Data,
                format!("the server refused the copy for {folder:?} as too large ({} bytes)", self.message.len()),
            )
        } else if code_is(code, "TRYCREATE") {
            let e = Error::protocol(
                Stage::Data,
                format!("the server still says the folder {folder:?} does not exist after creating it; create it in the mailbox or choose another folder"),
            );
            self.conn.folder_refused(e, folder)
        } else {
            let e = Error::protocol(
                Stage::Data,
                format!("the server refused to save the copy in the folder {folder:?} and answered {answer}; check that the folder exists, that the user may write to it, and the mailbox's quota"),
            )
            .with_quote(answer);
            let e = if code_is(code, "UNAVAILABLE") || code_is(code, "INUSE") || code_is(code, "SERVERBUG") {
                e.with_retry(Retry::Later)
            } else {
                e
            };
            self.conn.folder_refused(e, folder)
        };
        e.with_reply(reply)
    }

    fn finish(&mut self, out: &mut Vec<Action>) {
        self.state = State::Finished;
        self.conn.link.clear_deadline();
        out.push(Action::Close);
        let saved = self.saved.clone().unwrap_or_else(|| SavedCopy {
            folder: self.folder.clone(),
            uid_validity: None,
            uid: None,
            created_folder: self.created,
        });
        out.push(Action::Finished(Outcome::Appended(saved)));
    }
}

/// True when the response code is `name` (its arguments ignored).
fn code_is(code: Option<&Code>, name: &str) -> bool {
    matches!(code, Some(Code::Other(c)) if c.split(' ').next().is_some_and(|n| n.eq_ignore_ascii_case(name)))
}

/// RFC 4315 `[APPENDUID <uidvalidity> <uid>]`.
fn appenduid(code: Option<&Code>) -> Option<(u32, u32)> {
    let Some(Code::Other(c)) = code else { return None };
    let mut words = c.split(' ');
    if !words.next()?.eq_ignore_ascii_case("APPENDUID") {
        return None;
    }
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

impl Session for AppendSession {
    fn server(&self) -> &Server {
        &self.mailbox.server
    }

    fn handle(&mut self, event: Event<'_>, now: Instant) -> Result<Vec<Action>> {
        if matches!(self.state, State::Finished | State::Failed) {
            return Err(Error::protocol(self.stage(), "the session has already ended; open a new session"));
        }
        let whole_message_sent = matches!(&self.state, State::Append { pending, .. } if pending.is_empty());
        let mut out = Vec::new();
        match self.step(event, now, &mut out) {
            Ok(()) => Ok(out),
            Err(_) if self.saved.is_some() => {
                // The copy is saved; a LOGOUT that goes wrong changes nothing.
                let mut out = Vec::new();
                self.finish(&mut out);
                Ok(out)
            }
            Err(mut e) => {
                self.state = State::Failed;
                self.conn.link.clear_deadline();
                if whole_message_sent && matches!(e.kind, ErrorKind::Network | ErrorKind::Timeout) {
                    e.retry = Retry::Uncertain;
                    e.message.push_str(&format!(
                        "; the whole message had been sent, so the server may have saved it: look in {:?} before saving it again",
                        self.folder
                    ));
                }
                Err(e)
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.conn.link.deadline()
    }

    fn unverified(&self) -> bool {
        self.conn.link.unverified()
    }

    fn secret_forms(&self) -> Vec<String> {
        crate::sasl::secret_forms(&self.mailbox.credentials)
    }
}

#[cfg(test)]
mod tests;
