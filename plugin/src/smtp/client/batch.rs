//! Batch submission (`outbound.open-batch`): many messages over one authenticated session.
//!
//! Replies come back in the order the commands went out (RFC 2920), so the session keeps a
//! queue of the replies it waits for. With PIPELINING, message i's data, its final dot and
//! message i+1's MAIL/RCPT/DATA go out in one write; without it, one command at a time.
//! `commit-point(i)` precedes the write carrying message i's final dot; each message's
//! outcome is reported with `message-done` in batch order as soon as it is known: in the step
//! that learnt it or, when that step also asks for bytes (`need-message`), in the
//! `message-data` step that answers it, which the host performs after the writes and before
//! reading again. So in the steady state the outcome records cross the boundary while the
//! server works on the next message, not between its reply and the write it waits for.
//!
//! The session is opened with the envelopes only. It asks the host for message i's bytes with
//! `need-message(i)` a window ahead (up to 32 KiB of messages asked for and not started, at
//! least the next one; in the steady state one more each time a message starts), so the host
//! copies the next messages while the server works on the current one. A message that has not arrived when
//! its turn comes holds the batch back (`waiting`) until it does. A message that needs no
//! change on the wire (checked in one pass when handed over) is not kept at all: at its turn
//! the host writes its own copy (`write-message`), and the guest writes only the final dot.

use std::collections::VecDeque;

use crate::error::redact_owned;
use crate::session::{BatchReport, Delivery, MessageBytes, MessageResult};

use super::*;

mod armed;
mod outcomes;

/// Most messages in one batch.
pub const MAX_BATCH: usize = 10_000;

/// The bytes of the messages asked for and not started yet: with 10 KB messages, three ahead,
/// one more asked for as each starts; a larger message is asked for alone. Small enough that
/// handing them over (a copy, the checks and the encoding, about 6 us per 10 KB) stays hidden
/// behind the server's work on the message before (measured: 256 KiB windows were no faster).
/// The guest holds at most this, plus the message waiting for its 354, plus one larger message.
const WINDOW: u64 = 32 * 1024;

/// One message to submit, without its bytes (they come with `message_data`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchEnvelope {
    pub message_id: String,
    pub envelope_from: String,
    pub envelope_to: Vec<String>,
    /// The length of its bytes, as `message_data` must hand them over.
    pub size: u64,
}

/// Where a message's bytes stand.
#[derive(Debug)]
enum Body {
    /// Not asked for yet.
    Later,
    /// Asked for with `need-message`; not handed over yet.
    Asked,
    /// The dot-stuffed data with its final dot, waiting for its turn (a message that needed
    /// changes on the wire).
    Ready(Vec<u8>),
    /// Checked and needing no change: the host writes its own copy (`write-message`), then
    /// this terminator ("\r\n.\r\n" when the message does not end with a line end).
    Held(&'static [u8]),
    /// Handed over but not sendable (a NUL, over the limit): reported when its turn comes.
    Bad(Error),
    /// Written, or the message has its outcome.
    Gone,
}

struct Item {
    message_id: String,
    from: String,
    to: Vec<String>,
    body: Body,
    /// The length of its bytes, as announced.
    announced: u64,
    /// Known once the bytes arrived: the RFC 1870 size of the encoded data.
    size: u64,
    eight_bit: bool,
    /// Asked for and not started yet: counted in `Batch::ahead`.
    ahead: bool,
}

/// A reply the session waits for, with the message it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Mail(usize),
    Rcpt(usize, usize),
    Data(usize),
    DataEnd(usize),
    Rset,
}

pub(super) struct Batch {
    items: Vec<Item>,
    /// The next message whose commands were not written yet.
    next: usize,
    /// Messages 0..asked were asked for with `need-message` (or never will be).
    asked: usize,
    /// The announced bytes of the messages asked for and not started yet.
    ahead: u64,
    /// The secret's wire forms (`secret_forms`), for redacting each outcome.
    forms: Vec<String>,
    /// The next message's turn came before its bytes: it starts once they arrive.
    waiting: bool,
    expect: VecDeque<Expect>,
    /// A refusal of the current message's MAIL FROM (its RCPT/DATA replies are then moot).
    mail_error: Option<Error>,
    /// The message whose final dot was handed over and whose verdict has not come yet.
    committed: Option<usize>,
    /// Outcomes not yet reported, slot k for message `reported + k`: empty while that
    /// message's fate is unknown (a later one's waits behind it). Usually one slot, reused.
    known: VecDeque<Option<MessageResult>>,
    /// Outcomes reported so far (messages 0..reported).
    reported: usize,
    /// `message-done` actions of a step that also asked for bytes: returned first by the next
    /// step (the `message-data` that answers it, which comes before any further read).
    deferred: Vec<Action>,
    /// The write armed for the next bytes read (`arm-write`), to check the bytes reported for it
    /// and the step that follows against (`armed.rs`).
    armed: Option<crate::session::ArmedWrite>,
    /// In a `received-armed` step: the message the host wrote when the bytes matched. Should
    /// the step end the batch, its delivery is uncertain like that of `committed`.
    fired: Option<usize>,
    delivered: u32,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("messages", &self.items.len())
            .field("next", &self.next)
            .field("asked", &self.asked)
            .field("waiting", &self.waiting)
            .field("expect", &self.expect)
            .field("committed", &self.committed)
            .field("reported", &self.reported)
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// Message `i` (the next) starts or is skipped: it leaves the window of those asked ahead.
    fn started(&mut self, i: usize) {
        self.next = i + 1;
        let item = &mut self.items[i];
        if std::mem::take(&mut item.ahead) {
            self.ahead = self.ahead.saturating_sub(item.announced.max(1));
        }
    }
}

impl SmtpSession {
    /// A session submitting the messages of `envelopes` in order over one connection (see
    /// `open-batch`); their bytes are asked for one by one with `Action::NeedMessage`.
    pub fn new_batch(submission: SubmissionServer, envelopes: Vec<BatchEnvelope>) -> Result<Self> {
        if envelopes.is_empty() {
            return Err(Error::invalid(Stage::Envelope, "the batch has no message; give at least one"));
        }
        if envelopes.len() > MAX_BATCH {
            return Err(Error::invalid(
                Stage::Envelope,
                format!("the batch has {} messages, more than the {MAX_BATCH} one session sends; split it", envelopes.len()),
            ));
        }
        let max_message = submission.limits.max_message_bytes;
        let first = &envelopes[0];
        let mut session = Self::open(submission, first.envelope_from.clone(), first.envelope_to.clone(), false)?;
        let mut items = Vec::with_capacity(envelopes.len());
        for (i, m) in envelopes.into_iter().enumerate() {
            let named = |e: Error| Error { message: format!("message {i} (Message-ID <{}>): {}", m.message_id, e.message), ..e };
            check_envelope_address("sender", &m.envelope_from).map_err(named)?;
            if m.envelope_to.is_empty() {
                return Err(named(Error::invalid(Stage::Envelope, "the message has no recipient; add at least one address")));
            }
            for to in &m.envelope_to {
                check_envelope_address("recipient", to).map_err(named)?;
            }
            // Never asked for: its bytes would not be sent anyway.
            let body = if m.size > max_message {
                Body::Bad(Error::limit(
                    Stage::Data,
                    format!("the message is {} bytes, more than the configured limit of {max_message} bytes; nothing was sent. Shorten it or remove attachments", m.size),
                ))
            } else {
                Body::Later
            };
            items.push(Item {
                message_id: m.message_id,
                from: m.envelope_from,
                to: m.envelope_to,
                body,
                announced: m.size,
                size: 0,
                eight_bit: false,
                ahead: false,
            });
        }
        let forms = session.secret_forms();
        session.batch = Some(Box::new(Batch {
            forms,
            items,
            next: 0,
            asked: 0,
            ahead: 0,
            waiting: false,
            expect: VecDeque::new(),
            mail_error: None,
            committed: None,
            known: VecDeque::new(),
            reported: 0,
            deferred: Vec::new(),
            armed: None,
            fired: None,
            delivered: 0,
        }));
        Ok(session)
    }

    /// Message `index`'s bytes, asked for with `need-message`: checked (NUL, the size limit)
    /// and encoded now, or the host's word that it checked them (`clean`); a batch waiting for
    /// them goes on.
    pub(super) fn on_message_data(&mut self, index: u32, bytes: MessageBytes, now: Instant) -> Result<Vec<Action>> {
        let stage = self.stage();
        let Some(b) = self.batch.as_mut() else {
            return Err(Error::protocol(
                Stage::Data,
                format!("the host handed over message {index}, but this session sends the one message given to outbound.open"),
            ));
        };
        let i = index as usize;
        if !matches!(b.items.get(i).map(|x| &x.body), Some(Body::Asked)) {
            return Err(Error::protocol(
                stage,
                format!("the host handed over message {index}, which the session did not ask for or already has (answer each need-message once)"),
            ));
        }
        let item = &mut b.items[i];
        let handed = match &bytes {
            MessageBytes::Raw(raw) => raw.len() as u64,
            MessageBytes::Clean { size, .. } => *size,
        };
        if handed != item.announced {
            return Err(Error::protocol(
                stage,
                format!("the host handed over {handed} bytes for message {index}, but its envelope announced {}; the batch stopped", item.announced),
            ));
        }
        item.body = match bytes {
            MessageBytes::Clean { eight_bit, .. } => {
                // The host checked the bytes and writes them itself: clean, ending with CRLF,
                // the announced size (which cannot be under 2 with a CRLF at the end).
                if item.announced < 2 {
                    return Err(Error::protocol(
                        stage,
                        format!("the host said message {index} is clean, but its envelope announced {} bytes, too few to end with CRLF; the batch stopped", item.announced),
                    ));
                }
                item.size = item.announced;
                item.eight_bit = eight_bit;
                Body::Held(b".\r\n")
            }
            MessageBytes::Raw(raw) => {
                // The NUL check, whether the message needs any change and whether it has
                // 8-bit bytes, in one pass.
                let scanned = data::scan(&raw);
                if let Some(at) = scanned.nul {
                    // A NUL would reach the server as is (and "\r\n\0.\r\n" reads as the end
                    // of DATA to some servers): this message is not sent, the others are.
                    Body::Bad(Error::invalid(
                        Stage::Data,
                        format!("the message contains a NUL byte (at byte {at}), which SMTP cannot carry (RFC 5321 2.3.8); nothing was sent. Send binary content as a base64-encoded attachment"),
                    ))
                } else if scanned.clean {
                    // Sent as handed over: the host writes its own copy, so the guest keeps
                    // nothing and nothing crosses the boundary a second time.
                    let ends = raw.ends_with(b"\r\n");
                    item.size = raw.len() as u64 + if ends { 0 } else { 2 };
                    item.eight_bit = scanned.eight_bit;
                    Body::Held(if ends { b".\r\n" } else { b"\r\n.\r\n" })
                } else {
                    let encoded = data::encode_scanned(raw, &scanned);
                    item.size = encoded.size;
                    item.eight_bit = encoded.eight_bit;
                    Body::Ready(encoded.bytes)
                }
            }
        };
        let resume = b.waiting && b.next == i;
        b.waiting &= !resume;
        let mut actions = Vec::new();
        if resume && matches!(self.state, State::Batch) {
            let mut out = Vec::new();
            self.advance(&mut actions, &mut out, true);
            if actions.iter().any(|a| matches!(a, Action::Write(_))) && !matches!(self.state, State::Finished) {
                self.link.expect_reply(now);
            }
        }
        self.ask_ahead(&mut actions);
        Ok(actions)
    }

    /// Asks for the next messages while those asked for and not started stay within `WINDOW`
    /// together (at least the next one). After the writes of the step: the host copies them
    /// while the server works on the message before.
    pub(super) fn ask_ahead(&mut self, actions: &mut Vec<Action>) {
        if matches!(self.state, State::Finished | State::Failed) {
            return;
        }
        let Some(b) = self.batch.as_mut() else { return };
        while b.asked < b.items.len() {
            let item = &mut b.items[b.asked];
            if matches!(item.body, Body::Later) {
                if b.ahead > 0 && b.ahead.saturating_add(item.announced) > WINDOW {
                    break;
                }
                // A message of 0 bytes still counts as one asked ahead.
                b.ahead = b.ahead.saturating_add(item.announced.max(1));
                item.ahead = true;
                item.body = Body::Asked;
                actions.push(Action::NeedMessage(b.asked as u32));
            }
            b.asked += 1;
        }
    }

    /// Messages of the batch whose bytes the session holds (handed over, not yet written).
    #[cfg(test)]
    pub(crate) fn batch_held(&self) -> usize {
        let b = self.batch.as_ref().expect("batch session");
        b.items.iter().filter(|x| matches!(x.body, Body::Ready(_) | Body::Held(_) | Body::Bad(_))).count()
    }

    fn batch(&mut self) -> &mut Batch {
        self.batch.as_mut().expect("batch session")
    }

    /// The stage of the reply waited for, for errors of the link.
    pub(super) fn batch_stage(&self) -> Stage {
        match self.batch.as_ref().and_then(|b| b.expect.front()) {
            Some(Expect::Data(_) | Expect::DataEnd(_)) => Stage::Data,
            _ => Stage::Envelope,
        }
    }

    /// Logged in: the transfer phase begins.
    pub(super) fn begin_batch(&mut self, actions: &mut Vec<Action>) {
        self.pipelined = self.caps.pipelining;
        self.state = State::Batch;
        let mut out = Vec::new();
        self.advance(actions, &mut out, true);
    }

    /// When `start`, writes the next message's commands after `out` (all of them with
    /// PIPELINING, else MAIL FROM when nothing is awaited); QUIT once every message is done.
    /// With PIPELINING a message's commands only ever follow the previous message's data or
    /// its RSET, never a 354 the server sent for data still to come.
    fn advance(&mut self, actions: &mut Vec<Action>, out: &mut Vec<u8>, start: bool) {
        let pipelined = self.pipelined;
        if start && (pipelined || self.batch().expect.is_empty()) {
            while self.batch().next < self.batch().items.len() {
                let i = self.batch().next;
                match std::mem::replace(&mut self.batch().items[i].body, Body::Gone) {
                    body @ (Body::Later | Body::Asked) => {
                        // Its bytes are not here yet: it starts when they arrive.
                        let b = self.batch();
                        b.items[i].body = body;
                        b.waiting = true;
                        break;
                    }
                    Body::Bad(e) => {
                        self.batch().started(i);
                        self.known(i, None, Vec::new(), Some(e));
                        continue;
                    }
                    body => self.batch().items[i].body = body,
                }
                self.batch().started(i);
                match self.mail_command(i, out) {
                    Err(e) => self.known(i, None, Vec::new(), Some(e)),
                    Ok(()) => {
                        let b = self.batch();
                        b.expect.push_back(Expect::Mail(i));
                        if pipelined {
                            for j in 0..b.items[i].to.len() {
                                push_rcpt(out, &b.items[i].to[j]);
                                b.expect.push_back(Expect::Rcpt(i, j));
                            }
                            out.extend_from_slice(b"DATA\r\n");
                            b.expect.push_back(Expect::Data(i));
                        }
                        break;
                    }
                }
            }
        }
        self.report_known(actions);
        let b = self.batch();
        if b.next == b.items.len() && b.expect.is_empty() {
            out.extend_from_slice(b"QUIT\r\n");
            let report = BatchReport { delivered: b.delivered, not_delivered: b.items.len() as u32 - b.delivered, stopped: None };
            self.state = State::Quit(Box::new(Ending::Batch(report)));
        }
        if !out.is_empty() {
            actions.push(Action::Write(std::mem::take(out)));
        }
    }

    /// Appends MAIL FROM for message `i` to `out`, or says why it cannot be sent to this
    /// server at all (and appends nothing).
    fn mail_command(&mut self, i: usize, out: &mut Vec<u8>) -> Result<()> {
        self.message_size = self.batch().items[i].size;
        if self.push_mail(i, out) {
            return Ok(());
        }
        let item = &self.batch.as_ref().expect("batch session").items[i];
        if let Some(limit) = self.caps.size_limit.filter(|limit| item.size > *limit) {
            return Err(self.over_size_limit_error(limit));
        }
        let address = std::iter::once(&item.from).chain(item.to.iter()).find(|a| !a.is_ascii()).cloned().unwrap_or_default();
        Err(Error::invalid(
            Stage::Envelope,
            format!("the address {address} has non-ASCII characters, but this server does not offer SMTPUTF8, so it cannot carry it; use an ASCII form of the address"),
        ))
    }

    /// Appends MAIL FROM for message `i` to `out` and says true, or appends nothing and says
    /// false when the message cannot go to this server (over its SIZE, or a non-ASCII address
    /// without SMTPUTF8; `mail_command` says why). Changes nothing else: an armed write
    /// (`armed.rs`) is built with it ahead of time.
    fn push_mail(&self, i: usize, out: &mut Vec<u8>) -> bool {
        let item = &self.batch.as_ref().expect("batch session").items[i];
        let (size, eight_bit) = (item.size, item.eight_bit);
        if self.caps.size_limit.is_some_and(|limit| size > limit) {
            return false;
        }
        let utf8 = std::iter::once(&item.from).chain(item.to.iter()).any(|a| !a.is_ascii());
        if utf8 && !self.caps.smtputf8 {
            return false;
        }
        // Built piece by piece (no `format!`): this runs once per message of the batch.
        out.extend_from_slice(b"MAIL FROM:<");
        out.extend_from_slice(item.from.as_bytes());
        out.push(b'>');
        if self.caps.size {
            out.extend_from_slice(b" SIZE=");
            push_decimal(out, size);
        }
        if eight_bit && self.caps.eight_bit_mime {
            out.extend_from_slice(b" BODY=8BITMIME");
        }
        if utf8 {
            out.extend_from_slice(b" SMTPUTF8");
        }
        out.extend_from_slice(b"\r\n");
        true
    }

    pub(super) fn on_batch_reply(&mut self, reply: &mut Reply, actions: &mut Vec<Action>) -> Result<()> {
        let Some(expect) = self.batch().expect.pop_front() else {
            return Err(Error::protocol(self.batch_stage(), "the server sent a reply nobody asked for"));
        };
        let mut out = Vec::new();
        match expect {
            Expect::Mail(i) => {
                self.message_size = self.batch().items[i].size;
                self.recipients.clear();
                let refused = if reply.is_positive() {
                    None
                } else {
                    let from = self.batch().items[i].from.clone();
                    Some(self.too_big_error(Stage::Envelope, reply).unwrap_or_else(|| {
                        from_reply(
                            ErrorKind::Protocol,
                            Stage::Envelope,
                            format!("the server refused the sender <{from}> ({})", reply.summary()),
                            "check that the account may send as this address",
                            reply,
                        )
                    }))
                };
                let ok = refused.is_none();
                self.batch().mail_error = refused;
                if !self.pipelined {
                    if ok {
                        out = self.rcpt_of(i, 0);
                        self.batch().expect.push_back(Expect::Rcpt(i, 0));
                    } else {
                        self.refused_before_data(i, actions, out);
                        return Ok(());
                    }
                }
            }
            Expect::Rcpt(i, j) => {
                if self.batch().mail_error.is_none() {
                    let address = self.batch().items[i].to[j].clone();
                    self.recipients.push(RecipientResult::from_reply(address, reply.code, reply.take_server_reply()));
                }
                if !self.pipelined {
                    if j + 1 < self.batch().items[i].to.len() {
                        out = self.rcpt_of(i, j + 1);
                        self.batch().expect.push_back(Expect::Rcpt(i, j + 1));
                    } else if self.accepted_count() > 0 {
                        out = b"DATA\r\n".to_vec();
                        self.batch().expect.push_back(Expect::Data(i));
                    } else {
                        self.refused_before_data(i, actions, out);
                        return Ok(());
                    }
                }
            }
            Expect::Data(i) => {
                let ready = self.batch().mail_error.is_none() && self.accepted_count() > 0;
                if reply.code == 354 && ready {
                    actions.push(Action::CommitPoint(i as u32));
                    let b = self.batch();
                    b.committed = Some(i);
                    b.expect.push_back(Expect::DataEnd(i));
                    let upload = b.items[i].size;
                    out = match std::mem::replace(&mut b.items[i].body, Body::Gone) {
                        Body::Ready(data) => data,
                        Body::Held(terminator) => {
                            actions.push(Action::WriteMessage(i as u32));
                            let mut t = Vec::with_capacity(256);
                            t.extend_from_slice(terminator);
                            t
                        }
                        _ => {
                            return Err(Error::protocol(
                                Stage::Data,
                                format!("internal error: message {i}'s commands went out before its bytes arrived"),
                            ))
                        }
                    };
                    self.upload_bytes += upload;
                    if self.pipelined {
                        self.advance(actions, &mut out, true);
                    }
                } else if reply.code == 354 {
                    // DATA accepted without a valid transaction: hang up without a final dot,
                    // so that no empty message is ever delivered.
                    let error = self.batch().mail_error.take().unwrap_or_else(|| self.recipients_refused_error());
                    let recipients = std::mem::take(&mut self.recipients);
                    self.known(i, None, recipients, Some(error));
                    return Err(Error::protocol(
                        Stage::Data,
                        "the server accepted DATA although it had refused the transaction; the connection was closed without sending any data",
                    ));
                } else {
                    if ready {
                        // Recipients accepted, DATA refused.
                        self.batch().mail_error = Some(from_reply(
                            ErrorKind::Protocol,
                            Stage::Data,
                            format!("the server refused DATA ({}); the message was not sent", reply.summary()),
                            "",
                            reply,
                        ));
                    }
                    self.refused_before_data(i, actions, out);
                    return Ok(());
                }
            }
            Expect::DataEnd(i) => {
                self.batch().committed = None;
                self.message_size = self.batch().items[i].size;
                let recipients = std::mem::take(&mut self.recipients);
                if reply.is_positive() {
                    self.batch().delivered += 1;
                    self.known(i, Some(reply.take_server_reply()), recipients, None);
                } else {
                    let error = self.too_big_error(Stage::Data, reply).unwrap_or_else(|| {
                        from_reply(
                            ErrorKind::Protocol,
                            Stage::Data,
                            format!("the server did not accept the message ({}); it was not sent", reply.summary()),
                            "",
                            reply,
                        )
                    });
                    self.known(i, Some(reply.to_server_reply()), recipients, Some(error));
                }
                let start = !self.pipelined;
                self.advance(actions, &mut out, start);
                return Ok(());
            }
            Expect::Rset => {
                // Whatever RSET got, the next transaction tells.
                let start = !self.pipelined;
                self.advance(actions, &mut out, start);
                return Ok(());
            }
        }
        if !out.is_empty() {
            actions.push(Action::Write(out));
        }
        self.report_known(actions);
        Ok(())
    }

    fn rcpt_of(&mut self, i: usize, j: usize) -> Vec<u8> {
        let mut out = Vec::new();
        push_rcpt(&mut out, &self.batch().items[i].to[j]);
        out
    }

    /// Message `i`'s transaction was refused before its data: report it, RSET, go on.
    fn refused_before_data(&mut self, i: usize, actions: &mut Vec<Action>, mut out: Vec<u8>) {
        let error = self.batch().mail_error.take().unwrap_or_else(|| self.recipients_refused_error());
        let recipients = std::mem::take(&mut self.recipients);
        self.known(i, None, recipients, Some(error));
        out.extend_from_slice(b"RSET\r\n");
        self.batch().expect.push_back(Expect::Rset);
        self.advance(actions, &mut out, true);
    }
}

/// Appends "RCPT TO:<address>\r\n".
fn push_rcpt(out: &mut Vec<u8>, address: &str) {
    out.extend_from_slice(b"RCPT TO:<");
    out.extend_from_slice(address.as_bytes());
    out.extend_from_slice(b">\r\n");
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}
