//! Session tests driven by Dovecot-like transcripts. Server bytes are fed in several chunk
//! sizes (down to one byte) and every byte we write is compared exactly.

use super::Pop3Session;
use crate::config::{AfterFetch, Credentials, FirstSync, InboundProtocol, Limits, Mailbox, Security, Server};
use crate::error::{Error, ErrorKind, Result, Stage};
use crate::sasl;
use crate::session::{
    Action, CheckSummary, Event, FetchSummary, FetchedMessage, FolderCount, Outcome, Session, SkippedMessage, Step,
    StepReport,
};


mod after_fetch;
mod check;
mod login;

const USER: &str = "agent@example.com";
const PASSWORD: &str = "s3cret-Pa55w0rd";
const T0: u64 = 1_700_000_000_000;
const TIMEOUT: u64 = 60_000;
const CHUNKS: [usize; 6] = [1, 2, 3, 7, 64, usize::MAX];

const GREETING: &[u8] = b"+OK Dovecot ready.\r\n";
const CAPA_TLS: &[u8] =
    b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n";
const CAPA_PLAIN_NO_PIPELINING: &[u8] = b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n.\r\n";

// As on the wire: dot-stuffed lines, then the terminator.
const MSG1_WIRE: &[u8] =
    b"+OK 120 octets\r\nFrom: a@example.com\r\nSubject: one\r\n\r\nHello\r\n..leading dot\r\n..\r\n...two\r\n.\r\n";
const MSG1_RAW: &[u8] = b"From: a@example.com\r\nSubject: one\r\n\r\nHello\r\n.leading dot\r\n.\r\n..two\r\n";
const MSG2_WIRE: &[u8] = b"+OK 230 octets\r\nFrom: b@example.com\r\nSubject: two\r\n\r\nBye\r\n.\r\n";
const MSG2_RAW: &[u8] = b"From: b@example.com\r\nSubject: two\r\n\r\nBye\r\n";

fn limits() -> Limits {
    Limits { reply_timeout_ms: TIMEOUT as u32, ..Limits::default() }
}

fn mailbox(security: Security, credentials: Credentials, limits: Limits) -> Mailbox {
    Mailbox {
        protocol: InboundProtocol::Pop3,
        server: Server { host: "pop.example.com".into(), port: 995, security },
        credentials,
        folders: Vec::new(),
        limits,
        after_fetch: AfterFetch::default(),
        first_sync: FirstSync::All,
    }
}

fn basic() -> Credentials {
    Credentials::Basic { username: USER.into(), password: PASSWORD.into() }
}

fn auth_plain() -> Vec<u8> {
    format!("AUTH PLAIN {}\r\n", sasl::plain(USER, PASSWORD)).into_bytes()
}

fn deliver(uid: &str, raw: &[u8]) -> Action {
    Action::Deliver(FetchedMessage { id: format!("pop3:{uid}"), folder: "INBOX".into(), raw: raw.to_vec() })
}

fn finished(delivered: u32, remaining: u32) -> Vec<Action> {
    finished_skipping(delivered, remaining, 0)
}

fn finished_skipping(delivered: u32, remaining: u32, skipped: u32) -> Vec<Action> {
    vec![Action::Close, Action::Finished(Outcome::Fetched(FetchSummary { delivered, remaining, skipped }))]
}

fn skipped(uid: &str, size: u64, reason: &str) -> Action {
    Action::Skipped(SkippedMessage { id: format!("pop3:{uid}"), folder: "INBOX".into(), size, reason: reason.into() })
}

/// A message as the server sends it for RETR: status, body (already dot-stuffed), terminator.
fn wire(body: &str) -> Vec<u8> {
    format!("+OK message follows\r\n{body}.\r\n").into_bytes()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The session's sync state as text (the empty string when it has none).
fn state_of(session: &Pop3Session) -> String {
    session.sync_state().map(|s| text(&s)).unwrap_or_default()
}

/// The expected sync state: stored UIDLs, skipped (UIDL, size), ignored UIDLs.
fn state(stored: &[&str], skipped: &[(&str, u64)], ignored: &[&str]) -> String {
    let list = |uids: &[&str]| uids.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(",");
    let sizes = skipped.iter().map(|(u, n)| format!("\"{u}\":{n}")).collect::<Vec<_>>().join(",");
    format!(
        r#"{{"v":2,"protocol":"pop3","stored":[{}],"skipped":{{{sizes}}},"ignored":[{}]}}"#,
        list(stored),
        list(ignored)
    )
}

fn stored_state(stored: &[&str]) -> String {
    state(stored, &[], &[])
}

/// Drives one session like a host: feeds events, splits the returned actions into the bytes
/// written and everything else, and keeps a record of all bytes ever written and of every
/// other action.
struct Host {
    session: Pop3Session,
    chunk: usize,
    now: u64,
    all_written: Vec<u8>,
    all_others: Vec<Action>,
    /// A check session (`Pop3Session::check`); any other session must never report progress.
    checking: bool,
}

impl Host {
    fn new(mailbox: Mailbox, state: Option<&[u8]>, chunk: usize) -> Self {
        Host::with(Pop3Session::new(mailbox, state).unwrap(), chunk, false)
    }

    fn check(mailbox: Mailbox, chunk: usize) -> Self {
        Host::with(Pop3Session::check(mailbox).unwrap(), chunk, true)
    }

    fn with(session: Pop3Session, chunk: usize, checking: bool) -> Self {
        Host { session, chunk, now: T0, all_written: Vec::new(), all_others: Vec::new(), checking }
    }

    fn event(&mut self, event: Event<'_>) -> Result<(Vec<u8>, Vec<Action>)> {
        let actions = self.session.handle(event, self.now)?;
        if !self.checking {
            assert!(
                !actions.iter().any(|a| matches!(a, Action::Progress(_))),
                "a fetch session reported progress: {actions:?}"
            );
        }
        let mut written = Vec::new();
        let mut others = Vec::new();
        let mut writes = 0;
        for action in actions {
            match action {
                Action::Write(bytes) => {
                    writes += 1;
                    written.extend_from_slice(&bytes);
                }
                other => others.push(other),
            }
        }
        assert!(writes <= 1, "commands of one call must be coalesced into one write");
        self.all_written.extend_from_slice(&written);
        self.all_others.extend(others.iter().cloned());
        Ok((written, others))
    }

    /// Feeds the server's bytes in `chunk`-sized reads, collecting everything produced.
    fn server(&mut self, bytes: &[u8]) -> Result<(Vec<u8>, Vec<Action>)> {
        let mut written = Vec::new();
        let mut others = Vec::new();
        for piece in bytes.chunks(self.chunk.min(bytes.len()).max(1)) {
            self.now += 1;
            let (w, o) = self.event(Event::Received(piece))?;
            written.extend(w);
            others.extend(o);
        }
        Ok((written, others))
    }

    /// The server sends `bytes`; we must answer with exactly `expect_written` and `expect_others`.
    #[track_caller]
    fn exchange(&mut self, bytes: &[u8], expect_written: &[u8], expect_others: Vec<Action>) {
        let (w, o) = self.server(bytes).unwrap_or_else(|e| panic!("chunk {}: {e}", self.chunk));
        assert_eq!(text(&w), text(expect_written), "chunk {}", self.chunk);
        assert_eq!(o, expect_others, "chunk {}", self.chunk);
    }

    #[track_caller]
    fn fails(&mut self, bytes: &[u8]) -> Error {
        match self.server(bytes) {
            Err(e) => e,
            Ok(r) => panic!("expected an error, got {r:?}"),
        }
    }

    fn connect(&mut self) {
        let (w, o) = self.event(Event::Connected).unwrap();
        assert!(w.is_empty() && o.is_empty());
        assert_eq!(self.session.deadline(), Some(self.now + TIMEOUT));
    }

    #[track_caller]
    fn assert_waiting(&self) {
        assert_eq!(self.session.deadline(), Some(self.now + TIMEOUT), "chunk {}", self.chunk);
    }
}

fn oauth() -> Credentials {
    Credentials::OAuth2 { username: USER.into(), access_token: "ya29.token".into(), mechanism: None }
}

fn assert_no_credentials_written(h: &Host) {
    let all = text(&h.all_written);
    for forbidden in ["PASS", "AUTH", "USER", PASSWORD] {
        assert!(!all.contains(forbidden), "{forbidden:?} was written: {all:?}");
    }
}

fn configured(after_fetch: AfterFetch, first_sync: FirstSync, limits: Limits) -> Mailbox {
    Mailbox { after_fetch, first_sync, ..mailbox(Security::ImplicitTls, basic(), limits) }
}

/// Runs greeting, CAPA and AUTH PLAIN on an implicit-TLS Dovecot with PIPELINING.
fn logged_in(mailbox: Mailbox, state: Option<&[u8]>, chunk: usize) -> Host {
    let mut h = Host::new(mailbox, state, chunk);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![]);
    h.exchange(CAPA_TLS, &auth_plain(), vec![]);
    h.exchange(b"+OK Logged in.\r\n", b"STAT\r\nUIDL\r\nLIST\r\n", vec![]);
    h.assert_waiting();
    h
}

fn listing(entries: &[(u32, &str, u64)]) -> Vec<u8> {
    let total: u64 = entries.iter().map(|e| e.2).sum();
    let mut out = format!("+OK {} {total}\r\n+OK\r\n", entries.len());
    for (n, uid, _) in entries {
        out.push_str(&format!("{n} {uid}\r\n"));
    }
    out.push_str(&format!(".\r\n+OK {} messages:\r\n", entries.len()));
    for (n, _, size) in entries {
        out.push_str(&format!("{n} {size}\r\n"));
    }
    out.push_str(".\r\n");
    out.into_bytes()
}

fn two_messages() -> Vec<u8> {
    listing(&[(1, "000000015a1b2c3d", 120), (2, "000000025a1b2c3d", 230)])
}

#[test]
fn implicit_tls_auth_plain_fetches_two_messages_with_dot_stuffing() {
    for chunk in CHUNKS {
        let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), None, chunk);
        // PIPELINING: both RETRs in one write.
        h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
        h.assert_waiting();
        let both = [MSG1_WIRE, MSG2_WIRE].concat();
        h.exchange(&both, b"", vec![deliver("000000015a1b2c3d", MSG1_RAW), deliver("000000025a1b2c3d", MSG2_RAW)]);
        // Waiting for the host, not the server: no deadline, nothing recorded yet.
        assert_eq!(h.session.deadline(), None);
        assert_eq!(state_of(&h.session), stored_state(&[]));
        let (w, o) = h.event(Event::Stored).unwrap();
        assert_eq!(text(&w), "QUIT\r\n");
        assert!(o.is_empty());
        h.assert_waiting();
        assert_eq!(
            state_of(&h.session),
            stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"])
        );
        h.exchange(b"+OK Logging out.\r\n", b"", finished(2, 0));
        assert_eq!(h.session.deadline(), None);
        assert!(!text(&h.all_written).contains("DELE"));
    }
}


#[test]
fn sync_state_round_trip_skips_seen_and_prunes_gone() {
    // Run 1 fetches two messages.
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.server(&[MSG1_WIRE, MSG2_WIRE].concat()).unwrap();
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", finished(2, 0));
    let state = h.session.sync_state().unwrap();

    // Run 2: message 1 was deleted by someone else, a new one arrived.
    for chunk in CHUNKS {
        let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), Some(&state), chunk);
        assert_eq!(h.session.sync_state().unwrap(), state, "given state is reported before listing");
        h.exchange(&listing(&[(1, "000000025a1b2c3d", 230), (2, "000000035a1b2c3d", 90)]), b"RETR 2\r\n", vec![]);
        h.exchange(
            &wire("Subject: three\r\n\r\nnew\r\n"),
            b"",
            vec![deliver("000000035a1b2c3d", b"Subject: three\r\n\r\nnew\r\n")],
        );
        h.event(Event::Stored).unwrap();
        h.exchange(b"+OK\r\n", b"", finished(1, 0));
        assert_eq!(
            state_of(&h.session),
            stored_state(&["000000025a1b2c3d", "000000035a1b2c3d"])
        );
    }

    // Run 3: nothing new, so no RETR and no Stored wait.
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), Some(&state), usize::MAX);
    h.exchange(&two_messages(), b"QUIT\r\n", vec![]);
    h.exchange(b"+OK\r\n", b"", finished(0, 0));
}

#[test]
fn bad_sync_state_or_config_is_invalid_input() {
    let mb = mailbox(Security::ImplicitTls, basic(), limits());
    for state in [&br#"{"v":9,"protocol":"pop3"}"#[..], br#"{"v":1,"protocol":"imap","seen":[]}"#, b"\xff"] {
        let e = Pop3Session::new(mb.clone(), Some(state)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
    }
    let imap = Mailbox { protocol: InboundProtocol::Imap, ..mb.clone() };
    assert_eq!(Pop3Session::new(imap, None).unwrap_err().kind, ErrorKind::InvalidInput);
    let injected = Credentials::Basic { username: "u\r\nDELE 1".into(), password: "p".into() };
    let e = Pop3Session::new(mailbox(Security::ImplicitTls, injected, limits()), None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidInput);
    assert!(Pop3Session::new(mb, None).unwrap().sync_state().is_none(), "no state before listing");
}

#[test]
fn oversized_messages_are_reported_once_and_left_alone() {
    let small = Limits { max_message_bytes: 100, ..limits() };
    let entries = [(1, "u1", 50), (2, "u2", 5000), (3, "u3", 60)];
    let line = "x".repeat(60);
    // Message 3 is larger than LIST claimed (138 bytes): read to its end and dropped.
    let body3 = format!("Subject: c\r\n\r\n{line}\r\n{line}\r\n");
    let mut state_after = Vec::new();
    for chunk in CHUNKS {
        let mb = Mailbox { after_fetch: AfterFetch::Delete, ..mailbox(Security::ImplicitTls, basic(), small) };
        let mut h = logged_in(mb, None, chunk);
        h.exchange(
            &listing(&entries),
            b"RETR 1\r\nRETR 3\r\n",
            vec![skipped("u2", 5000, "message of 4.9 KB exceeds max_message_bytes (100 bytes); it stays on the server, raise the limit to import it")],
        );
        let traffic = [wire("Subject: a\r\n\r\nok\r\n"), wire(&body3)].concat();
        h.exchange(
            &traffic,
            b"",
            vec![
                deliver("u1", b"Subject: a\r\n\r\nok\r\n"),
                skipped("u3", 138, "message of 138 bytes exceeds max_message_bytes (100 bytes); it stays on the server, raise the limit to import it"),
            ],
        );
        assert_eq!(h.session.skipped_oversized(), 2);
        // Recorded as handled at once: a report does not wait for the host to store anything.
        assert_eq!(state_of(&h.session), state(&[], &[("u2", 5000), ("u3", 138)], &[]));
        // Delete is configured, but skipped messages are never deleted.
        let (w, o) = h.event(Event::Stored).unwrap();
        assert_eq!((text(&w), o), ("DELE 1\r\nQUIT\r\n".to_string(), vec![]));
        h.exchange(b"+OK\r\n+OK\r\n", b"", finished_skipping(1, 0, 2));
        assert_eq!(state_of(&h.session), state(&[], &[("u2", 5000), ("u3", 138)], &[]));
        state_after = h.session.sync_state().unwrap();
    }

    // Run 2 (message 1 deleted by run 1): nothing reported, fetched or deleted again.
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), small), Some(&state_after), 5);
    h.exchange(&listing(&[(1, "u2", 5000), (2, "u3", 60)]), b"QUIT\r\n", vec![]);
    h.exchange(b"+OK\r\n", b"", finished(0, 0));
    assert_eq!(state_of(&h.session), state(&[], &[("u2", 5000), ("u3", 138)], &[]));

    // Run 3: the limit was raised above message 3's real size but not message 2's.
    let raised = Limits { max_message_bytes: 1000, ..limits() };
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), raised), Some(&state_after), 5);
    h.exchange(&listing(&[(1, "u2", 5000), (2, "u3", 60)]), b"RETR 2\r\n", vec![]);
    h.exchange(&wire(&body3), b"", vec![deliver("u3", body3.as_bytes())]);
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", finished(1, 0));
    assert_eq!(state_of(&h.session), state(&["u3"], &[("u2", 5000)], &[]));

    // A single line longer than the whole message limit cannot be buffered: limit error.
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), small), None, 16);
    h.exchange(&listing(&[(1, "u1", 50)]), b"RETR 1\r\n", vec![]);
    let e = h.fails(&wire(&format!("Subject: a\r\n\r\n{}\r\n", "z".repeat(150))));
    assert_eq!((e.kind, e.stage), (ErrorKind::Limit, Stage::FetchMessage));
}

#[test]
fn skip_reasons_name_the_limit_in_readable_sizes() {
    // Default limits: 50 MB per message, 200 MB per batch.
    let batch = Limits { max_batch_bytes: 60 * 1024 * 1024, ..limits() };
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), batch), None, usize::MAX);
    let huge = 73 * 1024 * 1024 + 200 * 1024;
    let exact = 50 * 1024 * 1024 + 1;
    h.exchange(
        &listing(&[(1, "big", huge), (2, "edge", exact)]),
        b"QUIT\r\n",
        vec![
            skipped("big", huge, "message of 73.2 MB exceeds max_message_bytes (50 MB); it stays on the server, raise the limit to import it"),
            skipped("edge", exact, "message of 52428801 bytes exceeds max_message_bytes (52428800 bytes); it stays on the server, raise the limit to import it"),
        ],
    );
    h.exchange(b"+OK\r\n", b"", finished_skipping(0, 0, 2));

    let tight_batch = Limits { max_message_bytes: 1000, max_batch_bytes: 500, ..limits() };
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), tight_batch), None, usize::MAX);
    h.exchange(
        &listing(&[(1, "mid", 700)]),
        b"QUIT\r\n",
        vec![skipped("mid", 700, "message of 700 bytes exceeds max_batch_bytes (500 bytes), so it never fits in a batch; it stays on the server, raise max_batch_bytes to import it")],
    );
}

#[test]
fn body_lines_may_exceed_the_line_limit_but_protocol_lines_may_not() {
    let tight = Limits { max_line_bytes: 100, max_message_bytes: 1000, ..limits() };
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), tight), None, 1);
    h.exchange(&listing(&[(1, "u1", 400)]), b"RETR 1\r\n", vec![]);
    let long = "y".repeat(300);
    let body = format!("Subject: long\r\n\r\n{long}\r\n");
    h.exchange(&wire(&body), b"", vec![deliver("u1", body.as_bytes())]);

    for chunk in [1, usize::MAX] {
        let mut h = Host::new(mailbox(Security::ImplicitTls, basic(), tight), None, chunk);
        h.connect();
        let e = h.fails(&[b'+'; 200]);
        assert_eq!((e.kind, e.stage), (ErrorKind::Limit, Stage::Greeting));
    }
}

#[test]
fn batch_limits_leave_messages_for_the_next_run() {
    let five = listing(&[(1, "u1", 40), (2, "u2", 40), (3, "u3", 40), (4, "u4", 10), (5, "u5", 10)]);
    let msg = |s: &str| format!("Subject: {s}\r\n\r\nx\r\n");

    let by_count = Limits { max_batch_messages: 1, ..limits() };
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), by_count), None, 2);
    h.exchange(&five, b"RETR 1\r\n", vec![]);
    h.exchange(&wire(&msg("1")), b"", vec![deliver("u1", msg("1").as_bytes())]);
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", finished(1, 4));

    // 40 + 40 fit in 100 bytes; message 3 does not, and the later small ones wait behind it.
    let by_bytes = Limits { max_batch_bytes: 100, ..limits() };
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), by_bytes), None, usize::MAX);
    h.exchange(&five, b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.exchange(
        &[wire(&msg("1")), wire(&msg("2"))].concat(),
        b"",
        vec![deliver("u1", msg("1").as_bytes()), deliver("u2", msg("2").as_bytes())],
    );
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", finished(2, 3));
}

#[test]
fn without_pipelining_commands_go_one_at_a_time() {
    let mut h = Host::new(mailbox(Security::ImplicitTls, basic(), limits()), None, 4);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![]);
    h.exchange(CAPA_PLAIN_NO_PIPELINING, &auth_plain(), vec![]);
    h.exchange(b"+OK Logged in.\r\n", b"STAT\r\n", vec![]);
    h.exchange(b"+OK 2 350\r\n", b"UIDL\r\n", vec![]);
    h.exchange(b"+OK\r\n1 a\r\n2 b\r\n.\r\n", b"LIST\r\n", vec![]);
    h.exchange(b"+OK\r\n1 120\r\n2 230\r\n.\r\n", b"RETR 1\r\n", vec![]);
    h.exchange(MSG1_WIRE, b"RETR 2\r\n", vec![deliver("a", MSG1_RAW)]);
    h.exchange(MSG2_WIRE, b"", vec![deliver("b", MSG2_RAW)]);
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", finished(2, 0));
}

#[test]
fn pipelined_retr_is_windowed() {
    let entries: Vec<(u32, String, u64)> = (1..=20).map(|n| (n, format!("u{n}"), 30)).collect();
    let refs: Vec<(u32, &str, u64)> = entries.iter().map(|(n, u, s)| (*n, u.as_str(), *s)).collect();
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    let first: String = (1..=16).map(|n| format!("RETR {n}\r\n")).collect();
    h.exchange(&listing(&refs), first.as_bytes(), vec![]);
    let body = "Subject: s\r\n\r\nx\r\n";
    // Seven done: eight still in flight, above half the window, so nothing is sent.
    let seven: Vec<u8> = (0..7).flat_map(|_| wire(body)).collect();
    let (w, o) = h.server(&seven).unwrap();
    assert!(w.is_empty());
    assert_eq!(o.len(), 7);
    // The eighth brings it to half: the rest is sent at once.
    let rest: String = (17..=20).map(|n| format!("RETR {n}\r\n")).collect();
    h.exchange(&wire(body), rest.as_bytes(), vec![deliver("u8", body.as_bytes())]);
    let twelve: Vec<u8> = (0..12).flat_map(|_| wire(body)).collect();
    let (w, o) = h.server(&twelve).unwrap();
    assert!(w.is_empty());
    assert_eq!(o.last(), Some(&deliver("u20", body.as_bytes())));
    assert_eq!(h.session.deadline(), None);
}

#[test]
fn timer_before_the_deadline_is_ignored_after_it_times_out() {
    let mut h = Host::new(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    h.connect();
    let deadline = h.session.deadline().unwrap();
    h.now = deadline - 1;
    assert_eq!(h.event(Event::Timer).unwrap(), (vec![], vec![]));
    assert_eq!(h.session.deadline(), Some(deadline), "a timer does not extend the deadline");
    h.now = deadline;
    let e = h.event(Event::Timer).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Timeout, Stage::Greeting));
    assert_eq!(h.session.deadline(), None);
    assert_eq!(h.event(Event::Received(GREETING)).unwrap_err().kind, ErrorKind::Protocol);
}

#[test]
fn events_after_finishing_are_protocol_errors() {
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    h.exchange(&listing(&[]), b"QUIT\r\n", vec![]);
    h.exchange(b"+OK\r\n", b"", finished(0, 0));
    for event in [Event::Timer, Event::Stored, Event::Received(b"+OK\r\n"), Event::Closed] {
        assert_eq!(h.event(event).unwrap_err().kind, ErrorKind::Protocol);
    }
}

#[test]
fn server_closing_while_host_stores_still_records_the_batch() {
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    h.exchange(&listing(&[(1, "u1", 120)]), b"RETR 1\r\n", vec![]);
    h.exchange(MSG1_WIRE, b"", vec![deliver("u1", MSG1_RAW)]);
    h.exchange(b"-ERR Disconnected for inactivity.\r\n", b"", vec![]);
    assert_eq!(h.event(Event::Closed).unwrap(), (vec![], vec![]));
    let (w, o) = h.event(Event::Stored).unwrap();
    assert!(w.is_empty(), "no QUIT on a closed connection");
    assert_eq!(o, finished(1, 0));
    assert_eq!(state_of(&h.session), stored_state(&["u1"]));
}

#[test]
fn closed_after_quit_finishes_but_closed_mid_session_is_a_network_error() {
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    h.exchange(&listing(&[]), b"QUIT\r\n", vec![]);
    assert_eq!(h.event(Event::Closed).unwrap(), (vec![], finished(0, 0)));

    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.server(MSG1_WIRE).unwrap();
    let e = h.event(Event::Closed).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Network, Stage::FetchMessage));
    // Delivered but never confirmed as stored: not recorded, so fetched again next time.
    assert_eq!(state_of(&h.session), stored_state(&[]));
}

#[test]
fn server_without_uidl_cannot_be_tracked() {
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    let e = h.fails(b"+OK 1 100\r\n-ERR Unknown command\r\n");
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::ListMessages));
    assert!(e.message.contains("UIDL"), "{e}");
}

#[test]
fn inconsistent_or_malformed_listings_are_protocol_errors() {
    let cases: [&[u8]; 5] = [
        b"+OK 1 100\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n", // more ids than STAT
        b"+OK 2 100\r\n+OK\r\n1 a\r\n2 a\r\n.\r\n+OK\r\n1 1\r\n2 1\r\n.\r\n", // duplicate id
        b"+OK 1 100\r\n+OK\r\n1 a\r\n.\r\n+OK\r\n.\r\n", // no size for message 1
        b"+OK 1 100\r\n+OK\r\n1 a\r\n.\r\n+OK\r\n7 10\r\n.\r\n", // size for an unknown message
        b"+OK 1 100\r\n+OK\r\none a\r\n.\r\n",      // not a number
    ];
    for case in cases {
        let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
        let e = h.fails(case);
        assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::ListMessages), "{}", text(case));
    }
}

#[test]
fn err_greeting_and_garbage_are_protocol_errors() {
    let mut h = Host::new(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    h.connect();
    let e = h.fails(b"-ERR too many connections\r\n");
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::Greeting));
    assert_eq!(e.reply.unwrap().text, "too many connections");

    let mut h = Host::new(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    h.connect();
    let e = h.fails(b"* OK IMAP4rev1 ready\r\n");
    assert_eq!(e.kind, ErrorKind::Protocol);
}

#[test]
fn stored_mid_batch_records_what_was_delivered_so_far() {
    let mut h = Host::new(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![]);
    h.exchange(CAPA_PLAIN_NO_PIPELINING, &auth_plain(), vec![]);
    h.exchange(b"+OK\r\n", b"STAT\r\n", vec![]);
    h.exchange(b"+OK 2 350\r\n", b"UIDL\r\n", vec![]);
    h.exchange(b"+OK\r\n1 a\r\n2 b\r\n.\r\n", b"LIST\r\n", vec![]);
    h.exchange(b"+OK\r\n1 120\r\n2 230\r\n.\r\n", b"RETR 1\r\n", vec![]);
    h.exchange(MSG1_WIRE, b"RETR 2\r\n", vec![deliver("a", MSG1_RAW)]);
    assert_eq!(h.event(Event::Stored).unwrap(), (vec![], vec![]));
    h.assert_waiting();
    assert_eq!(state_of(&h.session), stored_state(&["a"]));
}
