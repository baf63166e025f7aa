//! Entry points for the coverage-guided fuzz targets in `plugin/fuzz/` (not part of the
//! contract). Each function takes arbitrary bytes, runs one parser or a whole session over
//! them and asserts the invariants that are cheap to check: no panic, output bounded by the
//! limits, errors typed and explained. The unit tests below replay the committed seed corpus,
//! so `cargo test` exercises the same code paths as the fuzzers.

use crate::config::{AfterFetch, Credentials, FirstSync, InboundProtocol, Limits, Mailbox, Security, Server, SubmissionServer};
use crate::error::{Error, Stage};
use crate::imap::response::{self as imap_response, Framer, Response};
use crate::link::Link;
use crate::pop3::response as pop3_response;
use crate::session::{Action, Event, Session};
use crate::smtp::reply::{self as smtp_reply, ReplyReader, MAX_REPLY_LINES};

mod batch;
pub use batch::smtp_batch;

/// Line limit used by the harnesses: small, so the fuzzer reaches the limit paths.
const MAX_LINE: u32 = 1024;
/// Message limit used by the harnesses.
const MAX_MESSAGE: u64 = 64 * 1024;
const PASSWORD: &str = "pw-Fuzz-s3cret";
const TOKEN: &str = "ya29.fuzz-access-token";

fn limits() -> Limits {
    Limits { max_line_bytes: MAX_LINE, max_message_bytes: MAX_MESSAGE, max_batch_messages: 5, max_batch_bytes: 4 * MAX_MESSAGE, reply_timeout_ms: 60_000 }
}

fn server(security: Security) -> Server {
    Server { host: "mail.example.com".into(), port: 993, security }
}

/// Every error must be explained (a sentence, not empty).
fn check_error(e: &Error) {
    assert!(!e.message.trim().is_empty(), "an error without a message: {e:?}");
}

/// A session's errors must never carry our secret, even when the server echoes it. The
/// parsers alone do not know the secret, so only sessions are checked.
fn check_no_secret(e: &Error, secret: &str) {
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(secret), "a secret in an error: {text}");
    }
}

/// Splits `data` at every '\n' (kept), so each server line arrives as one read.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split_inclusive(|&b| b == b'\n')
}

/// IMAP: frames the bytes (lines plus literals, each bounded) and parses every frame.
pub fn imap_responses(data: &[u8]) {
    let lim = limits();
    let mut link = Link::new(&server(Security::ImplicitTls), &lim);
    let mut framer = Framer::new(MAX_LINE as usize, MAX_MESSAGE);
    link.absorb(&Event::Connected, 0, Stage::Greeting).unwrap();
    for chunk in lines(data) {
        link.absorb(&Event::Received(chunk), 1, Stage::FetchMessage).unwrap();
        loop {
            match framer.next(&mut link, Stage::FetchMessage) {
                Ok(Some(frame)) => {
                    let body: usize = frame.literals.iter().map(|(_, l)| l.len()).sum();
                    assert!(frame.text.len() <= MAX_LINE as usize, "frame text over the line limit");
                    assert!(body as u64 <= MAX_MESSAGE + MAX_LINE as u64, "literals over the limits");
                    for (at, _) in &frame.literals {
                        assert!(*at <= frame.text.len(), "literal offset past the text");
                    }
                    match imap_response::parse(frame, Stage::FetchMessage) {
                        Ok(Response::Fetch(f)) => {
                            assert!(f.body.map_or(0, |b| b.len() as u64) <= MAX_MESSAGE, "body over the limit");
                        }
                        Ok(Response::Search(ranges)) => {
                            assert!(ranges.iter().all(|(lo, hi)| lo <= hi), "inverted range {ranges:?}");
                        }
                        Ok(_) => {}
                        Err(e) => check_error(&e),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    check_error(&e);
                    return;
                }
            }
        }
    }
}

/// POP3: every line as a status line, a multi-line response line and a listing entry.
pub fn pop3_responses(data: &[u8]) {
    for line in lines(data) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match pop3_response::status(line, Stage::ListMessages) {
            Ok(pop3_response::Status::Ok(rest) | pop3_response::Status::Err(rest) | pop3_response::Status::Continue(rest)) => {
                assert!(rest.len() < line.len().max(1), "payload longer than its line");
                if let Some(code) = pop3_response::response_code(rest) {
                    assert!(code.len() <= rest.len() * 3, "response code grew");
                }
                let r = pop3_response::reply("-ERR", rest);
                assert!(r.text.len() <= rest.len() * 3);
            }
            Err(e) => {
                check_error(&e);
                // The excerpt in the message is bounded, however long the line.
                assert!(e.message.len() < 1024, "unbounded error message: {} bytes", e.message.len());
            }
        }
        if let Some(u) = pop3_response::unstuff(line) {
            assert!(u.len() <= line.len());
        }
        if let Some((n, uid)) = pop3_response::listing_entry(line) {
            assert!(n > 0);
            assert!(uid.len() <= line.len());
            let _ = pop3_response::valid_uid(uid);
        }
        assert!(crate::error::quote(line, 80).chars().count() <= 85, "quote not bounded");
    }
}

/// SMTP: collects replies line by line, reads EHLO keywords and enhanced status codes.
pub fn smtp_replies(data: &[u8]) {
    let mut reader = ReplyReader::default();
    for line in lines(data) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match reader.feed(line, Stage::Envelope) {
            Ok(Some(reply)) => {
                assert!((200..600).contains(&reply.code), "code {}", reply.code);
                assert!(reply.lines().count() <= MAX_REPLY_LINES);
                let caps = smtp_reply::Capabilities::from_ehlo(&reply);
                assert!(caps.auth.len() <= reply.lines().map(|l| l.split_ascii_whitespace().count()).sum::<usize>());
                let _ = reply.summary();
                let _ = reply.to_server_reply();
                for l in reply.lines() {
                    if let Some(code) = smtp_reply::enhanced_status(l) {
                        assert!(code.len() <= 9, "enhanced status code {code:?}");
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                check_error(&e);
                reader = ReplyReader::default();
            }
        }
    }
}

/// MIME: parses a whole message; a parse either fails with a sentence or yields a message
/// whose parts are bounded by the input.
pub fn mime(data: &[u8]) {
    match crate::parse::parse_message(data) {
        Ok(m) => {
            let attached: usize = m.attachments.iter().map(|a| a.size as usize).sum();
            // Decoding (base64, quoted-printable) shrinks content; only a charset conversion to
            // UTF-8 grows it, at most 4 bytes per input byte. Nested messages count once more.
            assert!(attached <= 8 * data.len(), "attachments of {attached} bytes from {} raw bytes", data.len());
            let _ = crate::parse::synthetic_message_id(data);
        }
        Err(e) => assert!(!e.trim().is_empty(), "an empty parse error"),
    }
}

/// Autoconfig XML (Thunderbird's format), as found by discovery.
pub fn autoconfig(data: &[u8]) {
    let Ok(xml) = std::str::from_utf8(data) else { return };
    match crate::discover::parse_autoconfig(xml, "agent@example.com") {
        Ok(candidates) => {
            // A server element takes far more than 32 bytes: the list is bounded by the size limit.
            assert!(candidates.len() <= data.len() / 32, "{} candidates from {} bytes", candidates.len(), data.len());
            for c in &candidates {
                assert!(!c.host.is_empty() && c.host.len() <= 253, "host {:?}", c.host);
                assert!(c.port != 0, "port 0");
            }
        }
        Err(e) => check_error(&e),
    }
}

/// OAuth: a token endpoint's answer (status from the first byte, body from the rest), and
/// the same bytes as a redirect the browser brought back.
pub fn oauth_token(data: &[u8]) {
    use crate::oauth::{self, HttpResponse};
    let Some((&first, body)) = data.split_first() else { return };
    let status = [200u16, 400, 401, 500][usize::from(first % 4)];
    let r = HttpResponse { status, headers: vec![("content-type".into(), "application/json".into())], body: body.to_vec() };
    let previous = (first & 4 != 0).then_some("1//previous-refresh");
    match oauth::parse_token_response(&r, 1_000, previous) {
        Ok(t) => {
            assert!(!t.access_token.is_empty(), "an empty access token accepted");
            assert!(t.access_token.len() <= body.len(), "access token longer than the body");
        }
        Err(e) => assert!(!e.message().trim().is_empty()),
    }
    if let Ok(s) = std::str::from_utf8(body) {
        if let Ok(code) = oauth::parse_redirect(s, "state-123") {
            assert!(!code.is_empty() && code.len() <= s.len(), "code {code:?}");
        }
        if let Ok(d) = oauth::percent_decode(s) {
            assert!(d.len() <= s.len());
        }
    }
}

/// IMAP IDLE: `inbound.resume` with arbitrary idle-state bytes (the host hands them back, and
/// may have kept them for another mailbox or plugin version): a typed `invalid-input` error
/// without secrets, or a session that then takes server bytes, the re-IDLE timer and `stop`
/// without panicking.
pub fn imap_resume(data: &[u8]) {
    let mailbox = Mailbox {
        protocol: InboundProtocol::Imap,
        server: server(Security::ImplicitTls),
        credentials: Credentials::Basic { username: "agent@example.com".into(), password: PASSWORD.into() },
        folders: vec![],
        limits: limits(),
        after_fetch: AfterFetch::Keep { mark_seen: false },
        first_sync: FirstSync::All,
    };
    let sync = br#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":4}}}"#;
    let mut s = match crate::imap::ImapSession::resume(mailbox, sync, data) {
        Ok(s) => s,
        Err(e) => {
            check_error(&e);
            check_no_secret(&e, PASSWORD);
            assert_eq!(e.kind, crate::error::ErrorKind::InvalidInput, "{e:?}");
            return;
        }
    };
    let events: [Event<'_>; 4] = [
        Event::Received(b"* 1 EXPUNGE\r\n* OK still here\r\n"),
        Event::Timer,
        Event::Received(b"* 5 EXISTS\r\n"),
        Event::Closed,
    ];
    for (i, ev) in events.into_iter().enumerate() {
        if let Err(e) = crate::session::handle_checked(&mut s, ev, 2_000 + i as u64) {
            check_error(&e);
            check_no_secret(&e, PASSWORD);
            return;
        }
    }
    let _ = crate::session::stop_checked(&mut s, 3_000);
}

/// Which session a session harness drives.
#[derive(Clone, Copy, Debug)]
pub enum Protocol {
    Imap,
    Pop3,
    Smtp,
}

/// Drives a whole session (the same `Session` trait the component uses) with a fuzzed server.
///
/// Input: byte 0 picks the configuration (security, after-fetch, first sync, check mode,
/// credentials), byte 1 the read size (0: a line per read, else that many bytes); the rest is
/// what the server sends. Two bytes `0xFF k` in the stream are a host event instead of data:
/// `k` = 'T' timer past the deadline, 'C' connection closed, 'F' TLS handshake failed, 'S'
/// stored. A StartTls action is answered with TlsEstablished and a Deliver with Stored (after
/// the current read), as the host does.
pub fn session(protocol: Protocol, data: &[u8]) {
    let (cfg, read, stream) = match data {
        [cfg, read, rest @ ..] => (*cfg, *read, rest),
        _ => return,
    };
    let security = [Security::ImplicitTls, Security::Starttls, Security::InsecurePlaintext, Security::Starttls][usize::from(cfg & 3)];
    let after_fetch = match (cfg >> 2) & 3 {
        0 => AfterFetch::Keep { mark_seen: false },
        1 => AfterFetch::Keep { mark_seen: true },
        2 => AfterFetch::Delete,
        _ => AfterFetch::MoveTo("Archive".into()),
    };
    let first_sync = [FirstSync::All, FirstSync::NewOnly, FirstSync::Newest(2), FirstSync::All][usize::from((cfg >> 4) & 3)];
    let check = cfg & 0x40 != 0;
    let credentials = if cfg & 0x80 != 0 {
        Credentials::OAuth2 { username: "agent@example.com".into(), access_token: TOKEN.into(), mechanism: None }
    } else {
        Credentials::Basic { username: "agent@example.com".into(), password: PASSWORD.into() }
    };
    let lim = limits();
    let mailbox = |protocol| Mailbox {
        protocol,
        server: server(security),
        credentials: credentials.clone(),
        folders: if cfg & 8 != 0 { vec!["INBOX".into(), "Archiv/2024".into()] } else { vec![] },
        limits: lim,
        after_fetch: after_fetch.clone(),
        first_sync,
    };
    let made: crate::error::Result<Box<dyn Session>> = match (protocol, check) {
        (Protocol::Imap, false) => crate::imap::ImapSession::new(mailbox(InboundProtocol::Imap), None).map(|s| Box::new(s) as _),
        (Protocol::Imap, true) => crate::imap::ImapSession::check(mailbox(InboundProtocol::Imap)).map(|s| Box::new(s) as _),
        (Protocol::Pop3, false) => crate::pop3::Pop3Session::new(mailbox(InboundProtocol::Pop3), None).map(|s| Box::new(s) as _),
        (Protocol::Pop3, true) => crate::pop3::Pop3Session::check(mailbox(InboundProtocol::Pop3)).map(|s| Box::new(s) as _),
        (Protocol::Smtp, _) => {
            let submission = SubmissionServer { server: server(security), credentials: credentials.clone(), helo_name: "client.example.com".into(), limits: lim };
            let to = vec!["ann@example.org".into(), "bob@example.org".into()];
            if check {
                crate::smtp::SmtpSession::check(submission, "agent@example.com".into(), to).map(|s| Box::new(s) as _)
            } else {
                crate::smtp::SmtpSession::new(submission, "agent@example.com".into(), to, b"Subject: hi\r\n\r\n.dot\r\nbody\r\n".to_vec())
                    .map(|s| Box::new(s) as _)
            }
        }
    };
    let Ok(mut s) = made else { return };
    // The session's own secret: the password, or the token with OAuth2 credentials.
    // `handle_checked` redacts echoed secrets for every protocol (issue 10 item 12).
    let check_secrets = Some(credentials.secret().to_string());
    let mut driver = Driver { now: 1_000, delivered: 0, written: 0, received: 0, pending: Vec::new(), check_secrets };
    if !driver.feed(&mut *s, Event::Connected) {
        return;
    }
    // Split into reads and host events.
    for piece in pieces(stream) {
        let mut data = match piece {
            Piece::Host(k) => {
                if let Some(ev) = host_event(k) {
                    if matches!(ev, Event::Timer) {
                        driver.now = s.deadline().unwrap_or(driver.now).max(driver.now);
                    }
                    if !driver.feed(&mut *s, ev) {
                        return;
                    }
                }
                continue;
            }
            Piece::Data(data) => data,
        };
        while !data.is_empty() {
            let n = if read == 0 { data.iter().position(|&b| b == b'\n').map_or(data.len(), |p| p + 1) } else { usize::from(read).min(data.len()) };
            let (now, later) = data.split_at(n);
            driver.received += now.len();
            if !driver.feed(&mut *s, Event::Received(now)) {
                return;
            }
            data = later;
        }
    }
    // The server stops talking: the session either waits with a deadline, or is done.
    let _ = driver.feed(&mut *s, Event::Closed);
}

/// A piece of a fuzzed server stream: bytes the server sends, or a host event (or, for the
/// batch harness, a read boundary) written as the two bytes `0xFF k`.
enum Piece<'a> {
    Data(&'a [u8]),
    Host(u8),
}

/// The pieces of a harness's stream, in order.
fn pieces(stream: &[u8]) -> impl Iterator<Item = Piece<'_>> {
    let mut rest = stream;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.iter().position(|&b| b == 0xFF).unwrap_or(rest.len());
        if end == 0 {
            let k = rest.get(1).copied().unwrap_or(0);
            rest = rest.get(2..).unwrap_or_default();
            return Some(Piece::Host(k));
        }
        let (data, after) = rest.split_at(end);
        rest = after;
        Some(Piece::Data(data))
    })
}

/// The host event `0xFF k` stands for: 'T' timer past the deadline, 'C' closed, 'F' TLS
/// handshake failed, 'S' stored.
fn host_event(k: u8) -> Option<Event<'static>> {
    match k {
        b'T' => Some(Event::Timer),
        b'C' => Some(Event::Closed),
        b'F' => Some(Event::TlsFailed("certificate expired")),
        b'S' => Some(Event::Stored),
        _ => None,
    }
}

struct Driver {
    now: u64,
    delivered: usize,
    written: usize,
    received: usize,
    /// Host events owed to the session after the current one (TLS done, stored).
    pending: Vec<Event<'static>>,
    /// The secret errors must not carry (see `check_no_secret`).
    check_secrets: Option<String>,
}

impl Driver {
    /// Feeds one event and whatever the host owes in answer; false once the session ended.
    fn feed(&mut self, s: &mut dyn Session, event: Event<'_>) -> bool {
        self.now += 1;
        let unverified = s.unverified();
        let actions = match crate::session::handle_checked(s, event, self.now) {
            Ok(a) => a,
            Err(e) => {
                check_error(&e);
                if let Some(secret) = &self.check_secrets {
                    check_no_secret(&e, secret);
                }
                if unverified {
                    assert!(e.reply.is_none(), "a reply kept from before TLS: {e:?}");
                }
                return false;
            }
        };
        let mut finished = false;
        for a in actions {
            match a {
                Action::Write(b) => {
                    self.written += b.len();
                    // The client's writes are bounded by what it was sent: commands, not floods.
                    assert!(self.written <= 64 * 1024 + 16 * self.received, "{} bytes written for {} received", self.written, self.received);
                }
                Action::StartTls => self.pending.push(Event::TlsEstablished),
                Action::Deliver(m) => {
                    assert!(m.raw.len() as u64 <= MAX_MESSAGE, "delivered {} bytes over the limit", m.raw.len());
                    self.delivered += 1;
                    assert!(self.delivered <= 5 * 16, "{} deliveries", self.delivered);
                    if !self.pending.contains(&Event::Stored) {
                        self.pending.push(Event::Stored);
                    }
                }
                Action::Finished(_) | Action::Idle(_) => finished = true,
                Action::Close | Action::Skipped(_) | Action::Progress(_) | Action::CommitPoint(_) | Action::MessageDone(_) | Action::NeedMessage(_) | Action::WriteMessage(_) | Action::ArmWrite(_) => {}
            }
        }
        if finished {
            return false;
        }
        while !self.pending.is_empty() {
            let ev = self.pending.remove(0);
            if !self.feed(s, ev) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Runs every committed seed of a fuzz target through its harness.
    fn replay(target: &str, f: impl Fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            f(&bytes);
            n += 1;
        }
        assert!(n > 0, "no seeds in {}", dir.display());
    }

    #[test]
    fn seeds_imap_responses() {
        replay("imap_response", imap_responses);
    }
    #[test]
    fn seeds_pop3_responses() {
        replay("pop3_response", pop3_responses);
    }
    #[test]
    fn seeds_smtp_replies() {
        replay("smtp_reply", smtp_replies);
    }
    #[test]
    fn seeds_mime() {
        replay("mime", mime);
    }
    #[test]
    fn seeds_autoconfig() {
        replay("autoconfig", autoconfig);
    }
    #[test]
    fn seeds_oauth_token() {
        replay("oauth_token", oauth_token);
    }
    #[test]
    fn seeds_imap_resume() {
        replay("imap_resume", imap_resume);
        // The seed is a state the harness's mailbox resumes from.
        let seed = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/imap_resume/valid-state")).unwrap();
        let mailbox = Mailbox {
            protocol: InboundProtocol::Imap,
            server: server(Security::ImplicitTls),
            credentials: Credentials::Basic { username: "agent@example.com".into(), password: PASSWORD.into() },
            folders: vec![],
            limits: limits(),
            after_fetch: AfterFetch::Keep { mark_seen: false },
            first_sync: FirstSync::All,
        };
        let sync = br#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":4}}}"#;
        assert!(crate::imap::ImapSession::resume(mailbox, sync, &seed).is_ok());
    }
    #[test]
    fn seeds_sessions() {
        replay("imap_session", |d| session(Protocol::Imap, d));
        replay("pop3_session", |d| session(Protocol::Pop3, d));
        replay("smtp_session", |d| session(Protocol::Smtp, d));
    }
    #[test]
    fn seeds_smtp_batch() {
        replay("smtp_batch", |d| {
            smtp_batch(d);
        });
        // The seeds reach the batch's outcomes, with and without armed writes.
        let seed = |name: &str| smtp_batch(&std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/smtp_batch").join(name)).unwrap());
        use crate::session::Delivery::*;
        let armed = seed("three-delivered-armed");
        assert_eq!(armed.outcomes, vec![(0, Delivered), (1, Delivered), (2, Delivered)]);
        assert!(armed.armed >= 1, "{armed:?}");
        let lines = seed("three-delivered-lines");
        assert_eq!((lines.outcomes, lines.armed), (vec![(0, Delivered), (1, Delivered), (2, Delivered)], 0));
        let mixed = seed("refused-4xx-lost");
        assert!(mixed.outcomes.iter().any(|o| o.1 == Permanent) && mixed.outcomes.iter().any(|o| o.1 == Transient), "{mixed:?}");
    }
}
