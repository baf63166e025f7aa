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
fn starttls_runs_stls_and_asks_capabilities_again() {
    for chunk in CHUNKS {
        let mut h = Host::new(mailbox(Security::Starttls, basic(), limits()), None, chunk);
        h.connect();
        h.exchange(GREETING, b"CAPA\r\n", vec![]);
        // Clear-text CAPA offers SASL PLAIN; the encrypted one does not, so USER/PASS proves
        // the first list was discarded.
        h.exchange(b"+OK\r\nCAPA\r\nUIDL\r\nSTLS\r\nSASL PLAIN\r\nUSER\r\n.\r\n", b"STLS\r\n", vec![]);
        h.exchange(b"+OK Begin TLS negotiation now.\r\n", b"", vec![Action::StartTls]);
        assert_eq!(h.session.deadline(), None);
        let (w, o) = h.event(Event::TlsEstablished).unwrap();
        assert_eq!((text(&w), o), ("CAPA\r\n".to_string(), vec![]));
        h.assert_waiting();
        h.exchange(b"+OK\r\nCAPA\r\nUIDL\r\nUSER\r\n.\r\n", format!("USER {USER}\r\n").as_bytes(), vec![]);
        h.exchange(b"+OK\r\n", format!("PASS {PASSWORD}\r\n").as_bytes(), vec![]);
        h.exchange(b"+OK Logged in.\r\n", b"STAT\r\n", vec![]);
        // Empty mailbox, no pipelining: straight to QUIT, no Stored wait.
        h.exchange(b"+OK 0 0\r\n", b"QUIT\r\n", vec![]);
        h.exchange(b"+OK Logging out.\r\n", b"", finished(0, 0));
        assert_eq!(state_of(&h.session), stored_state(&[]));
    }
}

fn assert_no_credentials_written(h: &Host) {
    let all = text(&h.all_written);
    for forbidden in ["PASS", "AUTH", "USER", PASSWORD] {
        assert!(!all.contains(forbidden), "{forbidden:?} was written: {all:?}");
    }
}

#[test]
fn starttls_without_stls_is_a_policy_error_before_any_credential() {
    for capa in [&b"+OK\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n.\r\n"[..], b"-ERR unknown command\r\n"] {
        for chunk in CHUNKS {
            let mut h = Host::new(mailbox(Security::Starttls, basic(), limits()), None, chunk);
            h.connect();
            h.exchange(GREETING, b"CAPA\r\n", vec![]);
            let e = h.fails(capa);
            assert_eq!((e.kind, e.stage), (ErrorKind::Policy, Stage::Starttls), "{e}");
            assert!(e.message.contains("STLS"), "{e}");
            assert_no_credentials_written(&h);
            assert_eq!(h.session.deadline(), None);
        }
    }
}

#[test]
fn stls_refused_is_a_policy_error_with_the_reply() {
    let mut h = Host::new(mailbox(Security::Starttls, basic(), limits()), None, usize::MAX);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![]);
    h.exchange(b"+OK\r\nSTLS\r\n.\r\n", b"STLS\r\n", vec![]);
    let e = h.fails(b"-ERR TLS not available\r\n");
    assert_eq!(e.kind, ErrorKind::Policy);
    assert_eq!(e.reply.unwrap().text, "TLS not available");
    assert_no_credentials_written(&h);
}

#[test]
fn bytes_injected_after_stls_ok_abort_the_session() {
    for chunk in [64, usize::MAX] {
        let mut h = Host::new(mailbox(Security::Starttls, basic(), limits()), None, chunk);
        h.connect();
        h.exchange(GREETING, b"CAPA\r\n", vec![]);
        h.exchange(b"+OK\r\nSTLS\r\nUSER\r\n.\r\n", b"STLS\r\n", vec![]);
        let e = h.fails(b"+OK Begin TLS\r\n+OK\r\nSASL PLAIN\r\n.\r\n");
        assert_eq!((e.kind, e.stage), (ErrorKind::Policy, Stage::Starttls), "{e}");
        assert_no_credentials_written(&h);
        // The session is over.
        let again = h.event(Event::TlsEstablished).unwrap_err();
        assert_eq!(again.kind, ErrorKind::Protocol);
    }
}

#[test]
fn auth_rejection_carries_the_server_text_never_the_password() {
    let plain_b64 = sasl::plain(USER, PASSWORD);
    for chunk in CHUNKS {
        let mut h = Host::new(mailbox(Security::ImplicitTls, basic(), limits()), None, chunk);
        h.connect();
        h.exchange(GREETING, b"CAPA\r\n", vec![]);
        h.exchange(CAPA_TLS, &auth_plain(), vec![]);
        let e = h.fails(b"-ERR [AUTH] Authentication failed.\r\n");
        assert_eq!((e.kind, e.stage), (ErrorKind::AuthRejected, Stage::Authenticate));
        let reply = e.reply.clone().unwrap();
        assert_eq!((reply.code.as_str(), reply.text.as_str()), ("-ERR", "[AUTH] Authentication failed."));
        for shown in [e.to_string(), format!("{e:?}"), format!("{:?}", h.session)] {
            assert!(!shown.contains(PASSWORD) && !shown.contains(&plain_b64), "secret leaked: {shown}");
        }
        assert!(e.message.contains(USER), "the admin needs to know which login failed: {e}");
        assert_eq!(h.session.deadline(), None);
    }
}

#[test]
fn user_pass_fallback_when_capa_fails_and_pass_rejected() {
    let mut h = Host::new(mailbox(Security::ImplicitTls, basic(), limits()), None, 3);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![]);
    h.exchange(b"-ERR unknown command\r\n", format!("USER {USER}\r\n").as_bytes(), vec![]);
    h.exchange(b"+OK\r\n", format!("PASS {PASSWORD}\r\n").as_bytes(), vec![]);
    let e = h.fails(b"-ERR invalid password\r\n");
    assert_eq!(e.kind, ErrorKind::AuthRejected);
    assert_eq!(e.reply.as_ref().unwrap().text, "invalid password");
    assert!(!format!("{e} {e:?}").contains(PASSWORD));
}

#[test]
fn locked_mailbox_is_reported_as_in_use_not_as_bad_credentials() {
    let mut h = Host::new(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![]);
    h.exchange(CAPA_TLS, &auth_plain(), vec![]);
    let e = h.fails(b"-ERR [IN-USE] Mailbox is locked\r\n");
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.message.contains("locked"), "{e}");
}

#[test]
fn insecure_plaintext_is_allowed_only_as_configured() {
    let mut h = Host::new(mailbox(Security::InsecurePlaintext, basic(), limits()), None, usize::MAX);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![]);
    h.exchange(CAPA_TLS, &auth_plain(), vec![]);
}

fn oauth() -> Credentials {
    Credentials::OAuth2 { username: USER.into(), access_token: "ya29.token".into(), mechanism: None }
}

#[test]
fn xoauth2_error_challenge_is_answered_then_rejected() {
    let mut h = Host::new(mailbox(Security::ImplicitTls, oauth(), limits()), None, 5);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![]);
    let auth = format!("AUTH XOAUTH2 {}\r\n", sasl::xoauth2(USER, "ya29.token"));
    h.exchange(b"+OK\r\nUSER\r\nSASL PLAIN XOAUTH2\r\n.\r\n", auth.as_bytes(), vec![]);
    // base64 of {"status":"401","schemes":"bearer"}
    h.exchange(b"+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n", b"\r\n", vec![]);
    let e = h.fails(b"-ERR [AUTH] Invalid credentials\r\n");
    assert_eq!(e.kind, ErrorKind::AuthRejected);
    assert!(e.message.contains(r#""status":"401""#), "decoded challenge shown: {e}");
    assert!(!format!("{e} {e:?}").contains("ya29.token"));
}

#[test]
fn long_oauth_token_waits_for_the_empty_challenge() {
    let token = "t".repeat(400);
    let creds = Credentials::OAuth2 { username: USER.into(), access_token: token.clone(), mechanism: None };
    let mut h = Host::new(mailbox(Security::ImplicitTls, creds, limits()), None, 7);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![]);
    // OAUTHBEARER is preferred when both are offered.
    h.exchange(b"+OK\r\nSASL XOAUTH2 OAUTHBEARER\r\n.\r\n", b"AUTH OAUTHBEARER\r\n", vec![]);
    let answer = format!("{}\r\n", sasl::oauthbearer(USER, &token));
    h.exchange(b"+ \r\n", answer.as_bytes(), vec![]);
    h.exchange(b"+OK Welcome\r\n", b"STAT\r\n", vec![]);
}

#[test]
fn oauth_without_an_oauth_mechanism_fails_before_sending_anything() {
    let mut h = Host::new(mailbox(Security::ImplicitTls, oauth(), limits()), None, usize::MAX);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![]);
    let e = h.fails(CAPA_TLS);
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::Authenticate));
    assert_eq!(text(&h.all_written), "CAPA\r\n");
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

fn configured(after_fetch: AfterFetch, first_sync: FirstSync, limits: Limits) -> Mailbox {
    Mailbox { after_fetch, first_sync, ..mailbox(Security::ImplicitTls, basic(), limits) }
}

fn deleting() -> Mailbox {
    configured(AfterFetch::Delete, FirstSync::All, limits())
}

/// Logs in on a server without PIPELINING; STAT was just sent.
fn logged_in_one_at_a_time(mailbox: Mailbox, state: Option<&[u8]>, chunk: usize) -> Host {
    let mut h = Host::new(mailbox, state, chunk);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![]);
    h.exchange(CAPA_PLAIN_NO_PIPELINING, &auth_plain(), vec![]);
    h.exchange(b"+OK Logged in.\r\n", b"STAT\r\n", vec![]);
    h
}

/// STAT, UIDL and LIST answered one at a time; after LIST we must write `expect_written`.
fn list_one_at_a_time(h: &mut Host, entries: &[(u32, &str, u64)], expect_written: &[u8], expect_others: Vec<Action>) {
    let total: u64 = entries.iter().map(|e| e.2).sum();
    h.exchange(format!("+OK {} {total}\r\n", entries.len()).as_bytes(), b"UIDL\r\n", vec![]);
    let uidl: String = entries.iter().map(|(n, uid, _)| format!("{n} {uid}\r\n")).collect();
    h.exchange(format!("+OK\r\n{uidl}.\r\n").as_bytes(), b"LIST\r\n", vec![]);
    let list: String = entries.iter().map(|(n, _, size)| format!("{n} {size}\r\n")).collect();
    h.exchange(format!("+OK\r\n{list}.\r\n").as_bytes(), expect_written, expect_others);
}

fn msg(subject: &str) -> String {
    format!("Subject: {subject}\r\n\r\nbody\r\n")
}

fn four() -> Vec<u8> {
    listing(&[(1, "u1", 30), (2, "u2", 30), (3, "u3", 30), (4, "u4", 30)])
}

#[test]
fn first_sync_new_only_delivers_nothing_and_remembers_the_mailbox() {
    let mut state_after = Vec::new();
    for chunk in CHUNKS {
        let mb = configured(AfterFetch::Delete, FirstSync::NewOnly, limits());
        let mut h = logged_in(mb, None, chunk);
        h.exchange(&four(), b"QUIT\r\n", vec![]);
        h.exchange(b"+OK\r\n", b"", finished(0, 0));
        assert_eq!(state_of(&h.session), state(&[], &[], &["u1", "u2", "u3", "u4"]));
        state_after = h.session.sync_state().unwrap();
    }
    // Next run: only the new message is fetched, and with Delete only it is deleted; the old
    // ones were never imported, so they stay on the server.
    let mb = configured(AfterFetch::Delete, FirstSync::NewOnly, limits());
    let mut h = logged_in(mb, Some(&state_after), 3);
    h.exchange(&listing(&[(1, "u2", 30), (2, "u4", 30), (3, "u5", 30)]), b"RETR 3\r\n", vec![]);
    h.exchange(&wire(&msg("5")), b"", vec![deliver("u5", msg("5").as_bytes())]);
    let (w, _) = h.event(Event::Stored).unwrap();
    assert_eq!(text(&w), "DELE 3\r\nQUIT\r\n");
    h.exchange(b"+OK\r\n+OK\r\n", b"", finished(1, 0));
    // u1 and u3 were deleted by someone else: pruned. u5 was deleted by us: forgotten.
    assert_eq!(state_of(&h.session), state(&[], &[], &["u2", "u4"]));
    assert!(!text(&h.all_written).contains("DELE 1") && !text(&h.all_written).contains("DELE 2"));
}

#[test]
fn first_sync_newest_n_delivers_the_highest_numbers() {
    for chunk in CHUNKS {
        let mut h = logged_in(configured(AfterFetch::default(), FirstSync::Newest(2), limits()), None, chunk);
        h.exchange(&four(), b"RETR 3\r\nRETR 4\r\n", vec![]);
        assert_eq!(state_of(&h.session), state(&[], &[], &["u1", "u2"]));
        h.exchange(
            &[wire(&msg("3")), wire(&msg("4"))].concat(),
            b"",
            vec![deliver("u3", msg("3").as_bytes()), deliver("u4", msg("4").as_bytes())],
        );
        let (w, _) = h.event(Event::Stored).unwrap();
        assert_eq!(text(&w), "QUIT\r\n", "Keep deletes nothing");
        h.exchange(b"+OK\r\n", b"", finished(2, 0));
        assert_eq!(state_of(&h.session), state(&["u3", "u4"], &[], &["u1", "u2"]));
    }

    // More wanted than there are: everything. None wanted: nothing.
    let mut h = logged_in(configured(AfterFetch::default(), FirstSync::Newest(9), limits()), None, usize::MAX);
    h.exchange(&listing(&[(1, "u1", 30), (2, "u2", 30)]), b"RETR 1\r\nRETR 2\r\n", vec![]);
    let mut h = logged_in(configured(AfterFetch::default(), FirstSync::Newest(0), limits()), None, usize::MAX);
    h.exchange(&listing(&[(1, "u1", 30), (2, "u2", 30)]), b"QUIT\r\n", vec![]);
    assert_eq!(state_of(&h.session), state(&[], &[], &["u1", "u2"]));

    // The newest three do not fit one batch: the rest of them come in the next run.
    let one = Limits { max_batch_messages: 1, ..limits() };
    let mut h = logged_in(configured(AfterFetch::default(), FirstSync::Newest(3), one), None, usize::MAX);
    h.exchange(&four(), b"RETR 2\r\n", vec![]);
    h.exchange(&wire(&msg("2")), b"", vec![deliver("u2", msg("2").as_bytes())]);
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", finished(1, 2));
    let state_after = h.session.sync_state().unwrap();
    let mut h = logged_in(configured(AfterFetch::default(), FirstSync::Newest(3), one), Some(&state_after), 4);
    h.exchange(&four(), b"RETR 3\r\n", vec![]);
    h.exchange(&wire(&msg("3")), b"", vec![deliver("u3", msg("3").as_bytes())]);
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", finished(1, 1));
}

#[test]
fn first_sync_policy_applies_only_without_a_sync_state() {
    let empty = stored_state(&[]);
    let mut h = logged_in(configured(AfterFetch::default(), FirstSync::NewOnly, limits()), Some(empty.as_bytes()), 7);
    h.exchange(&listing(&[(1, "u1", 30), (2, "u2", 30)]), b"RETR 1\r\nRETR 2\r\n", vec![]);
}

#[test]
fn delete_waits_for_stored_then_pipelines_dele_and_quit() {
    for chunk in CHUNKS {
        let mut h = logged_in(deleting(), None, chunk);
        h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
        h.exchange(
            &[MSG1_WIRE, MSG2_WIRE].concat(),
            b"",
            vec![deliver("000000015a1b2c3d", MSG1_RAW), deliver("000000025a1b2c3d", MSG2_RAW)],
        );
        assert!(!text(&h.all_written).contains("DELE"), "nothing is deleted before Stored");
        assert_eq!(h.session.deadline(), None);
        let (w, o) = h.event(Event::Stored).unwrap();
        assert_eq!((text(&w), o), ("DELE 1\r\nDELE 2\r\nQUIT\r\n".to_string(), vec![]));
        h.assert_waiting();
        h.exchange(b"+OK Marked to be deleted.\r\n", b"", vec![]);
        h.assert_waiting();
        h.exchange(b"+OK Marked to be deleted.\r\n", b"", vec![]);
        // Until QUIT succeeds nothing is deleted: both are still recorded as stored.
        assert_eq!(state_of(&h.session), stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"]));
        h.exchange(b"+OK Logging out, messages deleted.\r\n", b"", finished(2, 0));
        assert_eq!(state_of(&h.session), stored_state(&[]));
        assert_eq!(h.session.deadline(), None);
    }
}

#[test]
fn delete_without_pipelining_sends_one_command_at_a_time() {
    let mut h = logged_in_one_at_a_time(deleting(), None, 2);
    list_one_at_a_time(&mut h, &[(1, "a", 120), (2, "b", 230)], b"RETR 1\r\n", vec![]);
    h.exchange(MSG1_WIRE, b"RETR 2\r\n", vec![deliver("a", MSG1_RAW)]);
    h.exchange(MSG2_WIRE, b"", vec![deliver("b", MSG2_RAW)]);
    let (w, _) = h.event(Event::Stored).unwrap();
    assert_eq!(text(&w), "DELE 1\r\n");
    h.exchange(b"+OK\r\n", b"DELE 2\r\n", vec![]);
    h.exchange(b"+OK\r\n", b"QUIT\r\n", vec![]);
    h.exchange(b"+OK\r\n", b"", finished(2, 0));
    assert_eq!(state_of(&h.session), stored_state(&[]));
}

#[test]
fn stored_mid_batch_covers_only_what_was_delivered_before_it() {
    // Message 2 turns out larger than LIST said, so after the mid-batch Stored nothing else
    // is delivered: only message 1 is covered, and only it is deleted.
    let small = Limits { max_message_bytes: 100, ..limits() };
    let big = format!("Subject: big\r\n\r\n{}\r\n{}\r\n", "y".repeat(60), "y".repeat(60));
    for chunk in [1, 5, usize::MAX] {
        let mut h = logged_in_one_at_a_time(configured(AfterFetch::Delete, FirstSync::All, small), None, chunk);
        list_one_at_a_time(&mut h, &[(1, "a", 50), (2, "b", 60)], b"RETR 1\r\n", vec![]);
        h.exchange(&wire(&msg("1")), b"RETR 2\r\n", vec![deliver("a", msg("1").as_bytes())]);
        assert_eq!(h.event(Event::Stored).unwrap(), (vec![], vec![]), "no DELE while RETR 2 is outstanding");
        h.assert_waiting();
        assert_eq!(state_of(&h.session), stored_state(&["a"]));
        let (w, o) = h.server(&wire(&big)).unwrap();
        assert_eq!(text(&w), "DELE 1\r\n");
        assert!(matches!(o.as_slice(), [Action::Skipped(s)] if s.id == "pop3:b" && s.size == 140), "{o:?}");
        h.exchange(b"+OK\r\n", b"QUIT\r\n", vec![]);
        h.exchange(b"+OK\r\n", b"", finished_skipping(1, 0, 1));
        assert!(!text(&h.all_written).contains("DELE 2"));
    }

    // Stored arrives between two deliveries; the second one waits for its own Stored.
    let mut h = logged_in_one_at_a_time(deleting(), None, usize::MAX);
    list_one_at_a_time(&mut h, &[(1, "a", 120), (2, "b", 230)], b"RETR 1\r\n", vec![]);
    h.exchange(MSG1_WIRE, b"RETR 2\r\n", vec![deliver("a", MSG1_RAW)]);
    h.event(Event::Stored).unwrap();
    h.exchange(MSG2_WIRE, b"", vec![deliver("b", MSG2_RAW)]);
    assert!(!text(&h.all_written).contains("DELE"));
    assert_eq!(state_of(&h.session), stored_state(&["a"]));
    let (w, _) = h.event(Event::Stored).unwrap();
    assert_eq!(text(&w), "DELE 1\r\n");
    assert_eq!(state_of(&h.session), stored_state(&["a", "b"]));
}

#[test]
fn connection_closed_before_stored_writes_no_dele() {
    // Closed while messages are still coming: a network error; nothing recorded, nothing deleted.
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.server(MSG1_WIRE).unwrap();
    let e = h.event(Event::Closed).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Network, Stage::FetchMessage));
    assert_eq!(state_of(&h.session), stored_state(&[]));
    assert!(!text(&h.all_written).contains("DELE"));

    // Closed while the host stores the batch: the Stored that follows finishes the session
    // without writing anything; the next run deletes them without delivering them again.
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.server(&[MSG1_WIRE, MSG2_WIRE].concat()).unwrap();
    assert_eq!(h.event(Event::Closed).unwrap(), (vec![], vec![]));
    let (w, o) = h.event(Event::Stored).unwrap();
    assert!(w.is_empty(), "no DELE or QUIT on a closed connection");
    assert_eq!(o, finished(2, 0));
    assert!(!text(&h.all_written).contains("DELE"));
    let state_after = h.session.sync_state().unwrap();
    assert_eq!(text(&state_after), stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"]));

    let mut h = logged_in(deleting(), Some(&state_after), 3);
    h.exchange(&two_messages(), b"DELE 1\r\nDELE 2\r\nQUIT\r\n", vec![]);
    h.exchange(b"+OK\r\n+OK\r\n+OK\r\n", b"", finished(0, 0));
    assert_eq!(state_of(&h.session), stored_state(&[]));
}

#[test]
fn stored_but_still_on_the_server_is_deleted_without_redelivery() {
    // A version-1 state: its seen UIDLs were all stored by the host.
    let v1 = br#"{"v":1,"protocol":"pop3","seen":["u1","gone"]}"#;
    for chunk in CHUNKS {
        let mut h = logged_in(deleting(), Some(v1), chunk);
        h.exchange(&listing(&[(1, "u1", 30), (2, "u2", 30)]), b"RETR 2\r\n", vec![]);
        h.exchange(&wire(&msg("2")), b"", vec![deliver("u2", msg("2").as_bytes())]);
        let (w, _) = h.event(Event::Stored).unwrap();
        assert_eq!(text(&w), "DELE 1\r\nDELE 2\r\nQUIT\r\n");
        h.exchange(b"+OK\r\n+OK\r\n+OK\r\n", b"", finished(1, 0));
        assert_eq!(state_of(&h.session), stored_state(&[]));
    }
    // Keep: the same state only skips it.
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), Some(v1), usize::MAX);
    h.exchange(&listing(&[(1, "u1", 30)]), b"QUIT\r\n", vec![]);
    h.exchange(b"+OK\r\n", b"", finished(0, 0));
    assert_eq!(state_of(&h.session), stored_state(&["u1"]));
    // Without pipelining, with nothing new.
    let mut h = logged_in_one_at_a_time(deleting(), Some(v1), 4);
    list_one_at_a_time(&mut h, &[(1, "x", 30), (2, "u1", 30)], b"RETR 1\r\n", vec![]);
    h.exchange(&wire(&msg("x")), b"", vec![deliver("x", msg("x").as_bytes())]);
    let (w, _) = h.event(Event::Stored).unwrap();
    assert_eq!(text(&w), "DELE 1\r\n");
    h.exchange(b"+OK\r\n", b"DELE 2\r\n", vec![]);
}

#[test]
fn deletions_left_from_earlier_runs_are_bounded_per_run() {
    let stored: Vec<String> = (1..=5).map(|n| format!("u{n}")).collect();
    let refs: Vec<&str> = stored.iter().map(String::as_str).collect();
    let state_before = stored_state(&refs);
    let entries: Vec<(u32, &str, u64)> = refs.iter().enumerate().map(|(i, u)| (i as u32 + 1, *u, 30)).collect();
    let two = Limits { max_batch_messages: 2, ..limits() };
    let mut h = logged_in(configured(AfterFetch::Delete, FirstSync::All, two), Some(state_before.as_bytes()), 64);
    h.exchange(&listing(&entries), b"DELE 1\r\nDELE 2\r\nQUIT\r\n", vec![]);
    h.exchange(b"+OK\r\n+OK\r\n+OK\r\n", b"", finished(0, 0));
    assert_eq!(state_of(&h.session), stored_state(&["u3", "u4", "u5"]));
}

#[test]
fn many_deletions_are_windowed() {
    let uids: Vec<String> = (1..=100).map(|n| format!("u{n}")).collect();
    let refs: Vec<&str> = uids.iter().map(String::as_str).collect();
    let state_before = stored_state(&refs);
    let entries: Vec<(u32, &str, u64)> = refs.iter().enumerate().map(|(i, u)| (i as u32 + 1, *u, 30)).collect();
    let mut h = logged_in(deleting(), Some(state_before.as_bytes()), usize::MAX);
    let first: String = (1..=64).map(|n| format!("DELE {n}\r\n")).collect();
    h.exchange(&listing(&entries), first.as_bytes(), vec![]);
    // 31 answered: 33 still in flight, above half the window.
    h.exchange(&b"+OK\r\n".repeat(31), b"", vec![]);
    // The 32nd brings it to half: topped up to a full window again.
    let more: String = (65..=96).map(|n| format!("DELE {n}\r\n")).collect();
    h.exchange(b"+OK\r\n", more.as_bytes(), vec![]);
    h.exchange(&b"+OK\r\n".repeat(31), b"", vec![]);
    // The last ones go out with the QUIT behind them.
    let rest: String = (97..=100).map(|n| format!("DELE {n}\r\n")).collect::<String>() + "QUIT\r\n";
    h.exchange(b"+OK\r\n", rest.as_bytes(), vec![]);
    h.exchange(&b"+OK\r\n".repeat(36), b"", vec![]);
    let mut sorted = refs.clone();
    sorted.sort_unstable();
    assert_eq!(state_of(&h.session), stored_state(&sorted), "not deleted before QUIT succeeds");
    h.exchange(b"+OK\r\n", b"", finished(0, 0));
    assert_eq!(state_of(&h.session), stored_state(&[]));
}

#[test]
fn dele_refused_is_a_protocol_error_naming_the_message() {
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.server(&[MSG1_WIRE, MSG2_WIRE].concat()).unwrap();
    h.event(Event::Stored).unwrap();
    let e = h.fails(b"+OK\r\n-ERR Message is locked\r\n");
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::Logout));
    assert!(e.message.contains("message 2") && e.message.contains("000000025a1b2c3d"), "{e}");
    assert!(e.message.contains("already stored"), "{e}");
    assert_eq!(e.reply.unwrap().text, "Message is locked");
    // Both stay recorded as stored: the next run deletes them, it does not deliver them again.
    assert_eq!(state_of(&h.session), stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"]));
    assert_eq!(h.session.deadline(), None);
}

#[test]
fn quit_failure_leaves_the_messages_recorded_for_deletion_next_run() {
    for chunk in CHUNKS {
        let mut h = logged_in(deleting(), None, chunk);
        h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
        h.server(&[MSG1_WIRE, MSG2_WIRE].concat()).unwrap();
        h.event(Event::Stored).unwrap();
        let e = h.fails(b"+OK\r\n+OK\r\n-ERR Some deleted messages not removed\r\n");
        assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::Logout), "{e}");
        assert!(e.message.contains("2 messages marked for deletion"), "{e}");
        assert_eq!(e.reply.unwrap().text, "Some deleted messages not removed");
        assert_eq!(state_of(&h.session), stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"]));
    }

    // The connection ends before QUIT is answered: the run is done, but the deletions are not
    // known to have happened, so they stay recorded.
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.server(&[MSG1_WIRE, MSG2_WIRE].concat()).unwrap();
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n+OK\r\n", b"", vec![]);
    assert_eq!(h.event(Event::Closed).unwrap(), (vec![], finished(2, 0)));
    assert_eq!(state_of(&h.session), stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"]));

    // The connection ends while DELE replies are outstanding: nothing was committed.
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&two_messages(), b"RETR 1\r\nRETR 2\r\n", vec![]);
    h.server(&[MSG1_WIRE, MSG2_WIRE].concat()).unwrap();
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", vec![]);
    let e = h.event(Event::Closed).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Network, Stage::Logout));
    assert!(e.message.contains("nothing was deleted"), "{e}");
    assert_eq!(state_of(&h.session), stored_state(&["000000015a1b2c3d", "000000025a1b2c3d"]));

    // No deletions pending: an -ERR to QUIT changes nothing, the run is done.
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&listing(&[]), b"QUIT\r\n", vec![]);
    h.exchange(b"-ERR whatever\r\n", b"", finished(0, 0));
}

#[test]
fn dele_replies_time_out_like_any_other_wait() {
    let mut h = logged_in(deleting(), None, usize::MAX);
    h.exchange(&listing(&[(1, "u1", 120)]), b"RETR 1\r\n", vec![]);
    h.server(MSG1_WIRE).unwrap();
    h.now += 10;
    h.event(Event::Stored).unwrap();
    let deadline = h.session.deadline().unwrap();
    assert_eq!(deadline, h.now + TIMEOUT);
    h.now = deadline;
    let e = h.event(Event::Timer).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Timeout, Stage::Logout));
}

#[test]
fn keep_deletes_nothing_and_ignores_mark_seen() {
    let mb = configured(AfterFetch::Keep { mark_seen: true }, FirstSync::All, limits());
    let mut h = logged_in(mb, Some(stored_state(&["000000015a1b2c3d"]).as_bytes()), usize::MAX);
    h.exchange(&two_messages(), b"RETR 2\r\n", vec![]);
    h.exchange(MSG2_WIRE, b"", vec![deliver("000000025a1b2c3d", MSG2_RAW)]);
    let (w, _) = h.event(Event::Stored).unwrap();
    assert_eq!(text(&w), "QUIT\r\n");
    h.exchange(b"+OK\r\n", b"", finished(1, 0));
    assert!(!text(&h.all_written).contains("DELE"));
}

#[test]
fn move_to_is_refused_for_pop3() {
    let mb = configured(AfterFetch::MoveTo("Archive/Imported".into()), FirstSync::All, limits());
    let e = Pop3Session::new(mb, None).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::InvalidInput, Stage::Connect));
    assert!(e.message.contains("Archive/Imported") && e.message.contains("IMAP"), "{e}");
}

// ---- Check mode ("test connection") ----

fn progress(step: Step, detail: &str) -> Action {
    Action::Progress(StepReport::new(step, detail))
}

fn checked(messages: u32) -> Action {
    Action::Finished(Outcome::Checked(CheckSummary {
        folders: vec![FolderCount { folder: "INBOX".into(), messages }],
    }))
}

fn steps(actions: &[Action]) -> Vec<Step> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Progress(r) => Some(r.step),
            _ => None,
        })
        .collect()
}

fn details(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Progress(r) => Some(r.detail.clone()),
            _ => None,
        })
        .collect()
}

#[track_caller]
fn assert_no_detail_contains(actions: &[Action], forbidden: &[&str]) {
    for detail in details(actions) {
        for f in forbidden {
            assert!(!detail.contains(f), "{f:?} appears in the report {detail:?}");
        }
    }
}

/// Nothing beyond counting was asked of the server.
#[track_caller]
fn assert_read_only(h: &Host) {
    let all = text(&h.all_written);
    for forbidden in ["UIDL", "LIST", "RETR", "DELE", "TOP"] {
        assert!(!all.contains(forbidden), "{forbidden} was written in a check: {all:?}");
    }
}

const ALL_STEPS_WITH_STLS: [Step; 8] = [
    Step::Greeting,
    Step::Capabilities,
    Step::Starttls,
    Step::Capabilities,
    Step::Mechanisms,
    Step::Login,
    Step::Folder,
    Step::Logout,
];

#[test]
fn check_over_implicit_tls_reports_every_step_and_changes_nothing() {
    for chunk in CHUNKS {
        let mut h = Host::check(mailbox(Security::ImplicitTls, basic(), limits()), chunk);
        h.connect();
        h.exchange(GREETING, b"CAPA\r\n", vec![progress(Step::Greeting, "server ready: Dovecot ready.")]);
        h.exchange(
            CAPA_TLS,
            &auth_plain(),
            vec![
                progress(
                    Step::Capabilities,
                    "offered: CAPA, TOP, UIDL, RESP-CODES, PIPELINING, AUTH-RESP-CODE, USER, SASL PLAIN LOGIN",
                ),
                progress(Step::Mechanisms, "offered: PLAIN LOGIN USER/PASS; using AUTH PLAIN"),
            ],
        );
        // PIPELINING is offered, yet only STAT is asked: a check lists nothing.
        h.exchange(b"+OK Logged in.\r\n", b"STAT\r\n", vec![progress(Step::Login, &format!("logged in as {USER}"))]);
        h.assert_waiting();
        h.exchange(b"+OK 12 345678\r\n", b"QUIT\r\n", vec![progress(Step::Folder, "INBOX: 12 messages, 345678 bytes")]);
        h.assert_waiting();
        h.exchange(
            b"+OK Logging out.\r\n",
            b"",
            vec![progress(Step::Logout, "logged out"), Action::Close, checked(12)],
        );
        assert_eq!(h.session.deadline(), None);
        assert_eq!(h.session.sync_state(), None, "a check has no sync state");
        assert_eq!(text(&h.all_written), format!("CAPA\r\n{}STAT\r\nQUIT\r\n", text(&auth_plain())));
        assert_read_only(&h);
        assert_no_detail_contains(&h.all_others, &[PASSWORD, &sasl::plain(USER, PASSWORD)]);
        assert!(h.event(Event::Received(b"+OK\r\n")).is_err(), "a finished check accepts nothing more");
    }
}

#[test]
fn check_reports_come_before_the_bytes_written_next_in_the_same_action_list() {
    let mut session = Pop3Session::check(mailbox(Security::ImplicitTls, basic(), limits())).unwrap();
    assert!(session.handle(Event::Connected, T0).unwrap().is_empty());
    let progress_then_write = |actions: Vec<Action>, step: Step, written: &[u8]| {
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(matches!(&actions[0], Action::Progress(r) if r.step == step), "{actions:?}");
        assert_eq!(actions[1], Action::Write(written.to_vec()));
    };
    progress_then_write(session.handle(Event::Received(GREETING), T0).unwrap(), Step::Greeting, b"CAPA\r\n");
    let actions = session.handle(Event::Received(CAPA_TLS), T0).unwrap();
    assert_eq!(steps(&actions), [Step::Capabilities, Step::Mechanisms]);
    assert_eq!(actions.last(), Some(&Action::Write(auth_plain())));
    progress_then_write(session.handle(Event::Received(b"+OK\r\n"), T0).unwrap(), Step::Login, b"STAT\r\n");
    progress_then_write(session.handle(Event::Received(b"+OK 0 0\r\n"), T0).unwrap(), Step::Folder, b"QUIT\r\n");
    let actions = session.handle(Event::Received(b"+OK\r\n"), T0).unwrap();
    assert_eq!(actions, vec![progress(Step::Logout, "logged out"), Action::Close, checked(0)]);
}

#[test]
fn check_over_starttls_never_shows_what_the_server_said_before_tls() {
    let forged_greeting = b"+OK FORGED-GREETING ready\r\n";
    let forged_capa = b"+OK\r\nX-FORGED-CAPA\r\nSTLS\r\nSASL FORGEDMECH PLAIN\r\nUSER\r\n.\r\n";
    for chunk in CHUNKS {
        let mut h = Host::check(mailbox(Security::Starttls, basic(), limits()), chunk);
        h.connect();
        h.exchange(
            forged_greeting,
            b"CAPA\r\n",
            vec![progress(Step::Greeting, "server ready (its text arrived before encryption and is not shown)")],
        );
        h.exchange(
            forged_capa,
            b"STLS\r\n",
            vec![progress(Step::Capabilities, "STLS offered (the full list arrived before encryption and is not shown)")],
        );
        h.exchange(b"+OK Begin TLS FORGED\r\n", b"", vec![Action::StartTls]);
        let actions = h.session.handle(Event::TlsEstablished, h.now).unwrap();
        assert_eq!(
            actions,
            vec![
                progress(Step::Starttls, "the connection is now encrypted (STLS succeeded)"),
                Action::Write(b"CAPA\r\n".to_vec()),
            ]
        );
        h.all_others.push(actions[0].clone());
        h.all_written.extend_from_slice(b"CAPA\r\n");
        h.assert_waiting();
        // After TLS the server's own text may be shown; the first list was discarded, so no PLAIN.
        h.exchange(
            b"+OK\r\nUIDL\r\nUSER\r\nIMPLEMENTATION Real server\r\n.\r\n",
            format!("USER {USER}\r\n").as_bytes(),
            vec![
                progress(Step::Capabilities, "offered: UIDL, USER, IMPLEMENTATION Real server"),
                progress(Step::Mechanisms, "offered: USER/PASS; using USER/PASS"),
            ],
        );
        h.exchange(b"+OK\r\n", format!("PASS {PASSWORD}\r\n").as_bytes(), vec![]);
        h.exchange(b"+OK Logged in.\r\n", b"STAT\r\n", vec![progress(Step::Login, &format!("logged in as {USER}"))]);
        h.exchange(b"+OK 1 120\r\n", b"QUIT\r\n", vec![progress(Step::Folder, "INBOX: 1 message, 120 bytes")]);
        h.exchange(b"+OK Bye\r\n", b"", vec![progress(Step::Logout, "logged out"), Action::Close, checked(1)]);
        assert_eq!(steps(&h.all_others), ALL_STEPS_WITH_STLS);
        assert_no_detail_contains(&h.all_others, &["FORGED", PASSWORD]);
        assert_read_only(&h);
    }
}

#[test]
fn check_over_opted_in_plaintext_without_capa_assumes_user_pass() {
    let mut h = Host::check(mailbox(Security::InsecurePlaintext, basic(), limits()), usize::MAX);
    h.connect();
    // Plaintext was opted in: nothing is "before TLS", so the greeting is shown.
    h.exchange(b"+OK Test POP3 server\r\n", b"CAPA\r\n", vec![progress(Step::Greeting, "server ready: Test POP3 server")]);
    h.exchange(
        b"-ERR unknown command\r\n",
        format!("USER {USER}\r\n").as_bytes(),
        vec![
            progress(Step::Capabilities, "the server does not support CAPA; USER/PASS login is assumed"),
            progress(Step::Mechanisms, "offered: USER/PASS; using USER/PASS"),
        ],
    );
    h.exchange(b"+OK\r\n", format!("PASS {PASSWORD}\r\n").as_bytes(), vec![]);
    h.exchange(b"+OK\r\n", b"STAT\r\n", vec![progress(Step::Login, &format!("logged in as {USER}"))]);
    // A STAT without the size (seen on old servers) still counts.
    h.exchange(b"+OK 3\r\n", b"QUIT\r\n", vec![progress(Step::Folder, "INBOX: 3 messages")]);
    // Closing right after QUIT is a polite end too.
    let (w, o) = h.event(Event::Closed).unwrap();
    assert!(w.is_empty());
    assert_eq!(
        o,
        vec![
            progress(Step::Logout, "logged out (the server closed the connection after QUIT)"),
            Action::Close,
            checked(3)
        ]
    );
    assert_eq!(
        steps(&h.all_others),
        [Step::Greeting, Step::Capabilities, Step::Mechanisms, Step::Login, Step::Folder, Step::Logout]
    );
    assert_no_detail_contains(&h.all_others, &[PASSWORD]);
}

#[test]
fn check_with_oauth_names_every_offered_mechanism_and_never_the_token() {
    let mut h = Host::check(mailbox(Security::ImplicitTls, oauth(), limits()), 4);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![progress(Step::Greeting, "server ready: Dovecot ready.")]);
    let auth = format!("AUTH OAUTHBEARER {}\r\n", sasl::oauthbearer(USER, "ya29.token"));
    h.exchange(
        b"+OK\r\nSASL PLAIN XOAUTH2 OAUTHBEARER GSSAPI\r\n.\r\n",
        auth.as_bytes(),
        vec![
            progress(Step::Capabilities, "offered: SASL PLAIN XOAUTH2 OAUTHBEARER GSSAPI"),
            progress(Step::Mechanisms, "offered: PLAIN XOAUTH2 OAUTHBEARER GSSAPI; using AUTH OAUTHBEARER"),
        ],
    );
    h.exchange(b"+OK\r\n", b"STAT\r\n", vec![progress(Step::Login, &format!("logged in as {USER}"))]);
    h.exchange(b"+OK 0 0\r\n", b"QUIT\r\n", vec![progress(Step::Folder, "INBOX: 0 messages, 0 bytes")]);
    h.exchange(b"-ERR odd\r\n", b"", vec![
        progress(
            Step::Logout,
            "logged out (the server answered QUIT with an error, which is harmless: nothing was changed)",
        ),
        Action::Close,
        checked(0),
    ]);
    assert_no_detail_contains(&h.all_others, &["ya29.token", &sasl::oauthbearer(USER, "ya29.token")]);
}

#[test]
fn check_login_failure_is_the_usual_auth_error_and_reports_no_login() {
    let plain_b64 = sasl::plain(USER, PASSWORD);
    for chunk in CHUNKS {
        let mut h = Host::check(mailbox(Security::ImplicitTls, basic(), limits()), chunk);
        h.connect();
        h.exchange(GREETING, b"CAPA\r\n", vec![progress(Step::Greeting, "server ready: Dovecot ready.")]);
        h.server(CAPA_TLS).unwrap();
        let e = h.fails(b"-ERR [AUTH] Authentication failed.\r\n");
        assert_eq!((e.kind, e.stage), (ErrorKind::AuthRejected, Stage::Authenticate));
        assert_eq!(e.reply.as_ref().unwrap().text, "[AUTH] Authentication failed.");
        for shown in [e.to_string(), format!("{e:?}"), format!("{:?}", h.session)] {
            assert!(!shown.contains(PASSWORD) && !shown.contains(&plain_b64), "secret leaked: {shown}");
        }
        assert_eq!(steps(&h.all_others), [Step::Greeting, Step::Capabilities, Step::Mechanisms]);
        assert!(!h.all_others.iter().any(|a| matches!(a, Action::Finished(_))));
        assert_no_detail_contains(&h.all_others, &[PASSWORD, &plain_b64]);
        assert_eq!(h.session.deadline(), None);
        assert_read_only(&h);
    }

    // USER/PASS after STLS: the PASS rejection too.
    let mut h = Host::check(mailbox(Security::Starttls, basic(), limits()), usize::MAX);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![progress(Step::Greeting, "server ready (its text arrived before encryption and is not shown)")]);
    h.server(b"+OK\r\nSTLS\r\n.\r\n").unwrap();
    h.server(b"+OK\r\n").unwrap();
    h.event(Event::TlsEstablished).unwrap();
    h.server(b"+OK\r\nUSER\r\n.\r\n").unwrap();
    h.server(b"+OK\r\n").unwrap();
    let e = h.fails(b"-ERR invalid password\r\n");
    assert_eq!((e.kind, e.stage), (ErrorKind::AuthRejected, Stage::Authenticate));
    assert!(!format!("{e} {e:?}").contains(PASSWORD));
    assert!(!steps(&h.all_others).contains(&Step::Login));
    assert_no_detail_contains(&h.all_others, &[PASSWORD]);
}

#[test]
fn check_over_starttls_without_stls_fails_before_any_credential() {
    let mut h = Host::check(mailbox(Security::Starttls, basic(), limits()), usize::MAX);
    h.connect();
    h.server(GREETING).unwrap();
    let e = h.fails(b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n");
    assert_eq!((e.kind, e.stage), (ErrorKind::Policy, Stage::Starttls), "{e}");
    assert_no_credentials_written(&h);
    assert_eq!(steps(&h.all_others), [Step::Greeting]);
}

#[test]
fn check_with_a_malformed_or_refused_stat_is_a_listing_error() {
    let cases: [&[u8]; 5] = [b"+OK lots of mail\r\n", b"+OK\r\n", b"+OK -1 5\r\n", b"-ERR not now\r\n", b"* 12 EXISTS\r\n"];
    for case in cases {
        let mut h = Host::check(mailbox(Security::ImplicitTls, basic(), limits()), usize::MAX);
        h.connect();
        h.server(GREETING).unwrap();
        h.server(CAPA_TLS).unwrap();
        h.exchange(b"+OK\r\n", b"STAT\r\n", vec![progress(Step::Login, &format!("logged in as {USER}"))]);
        let e = h.fails(case);
        assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::ListMessages), "{}: {e}", text(case));
        assert!(!steps(&h.all_others).contains(&Step::Folder));
        assert_eq!(h.session.deadline(), None);
    }
}

#[test]
fn check_ignores_the_after_fetch_action_and_first_sync_policy() {
    for after_fetch in [AfterFetch::Delete, AfterFetch::MoveTo("Done".into()), AfterFetch::Keep { mark_seen: true }] {
        let mailbox = configured(after_fetch, FirstSync::Newest(5), limits());
        let mut h = Host::check(mailbox, usize::MAX);
        h.connect();
        h.server(GREETING).unwrap();
        h.server(CAPA_TLS).unwrap();
        h.server(b"+OK\r\n").unwrap();
        h.exchange(b"+OK 4 1000\r\n", b"QUIT\r\n", vec![progress(Step::Folder, "INBOX: 4 messages, 1000 bytes")]);
        let (_, o) = h.server(b"+OK\r\n").unwrap();
        assert_eq!(o.last(), Some(&checked(4)));
        assert_read_only(&h);
        assert_eq!(h.session.sync_state(), None);
    }
    let imap = Mailbox { protocol: InboundProtocol::Imap, ..mailbox(Security::ImplicitTls, basic(), limits()) };
    assert_eq!(Pop3Session::check(imap).unwrap_err().kind, ErrorKind::InvalidInput);
}

#[test]
fn check_reports_clean_bounded_server_text() {
    let mut greeting = b"+OK \x1b[31mred\x07 ".to_vec();
    greeting.extend_from_slice(&[b'x'; 500]);
    greeting.extend_from_slice(b"\r\n");
    let mut capa = b"+OK\r\n".to_vec();
    // Within MAX_CAPA_LINES (128), far more text than a report shows.
    for n in 0..120 {
        capa.extend_from_slice(format!("X-CAP-{n}\r\n").as_bytes());
    }
    capa.extend_from_slice(b"SASL PLAIN\r\n.\r\n");
    let mut h = Host::check(mailbox(Security::ImplicitTls, basic(), limits()), 64);
    h.connect();
    h.server(&greeting).unwrap();
    h.server(&capa).unwrap();
    let reports = details(&h.all_others);
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert!(reports[0].starts_with("server ready: [31mred x"), "{}", reports[0]);
    for detail in &reports {
        assert!(!detail.chars().any(char::is_control), "control character in {detail:?}");
        // Our own wording plus at most 200 characters of the server's.
        assert!(detail.chars().count() <= 250, "{} chars: {detail}", detail.chars().count());
    }
    assert!(reports[1].starts_with("offered: X-CAP-0, X-CAP-1") && reports[1].ends_with("..."), "{}", reports[1]);
    assert_eq!(reports[2], "offered: PLAIN; using AUTH PLAIN");
}

#[test]
fn check_waits_with_a_deadline_and_times_out_at_the_step_it_was_in() {
    let mut h = Host::check(mailbox(Security::ImplicitTls, basic(), limits()), usize::MAX);
    h.connect();
    h.server(GREETING).unwrap();
    h.server(CAPA_TLS).unwrap();
    h.server(b"+OK\r\n").unwrap();
    h.assert_waiting();
    h.now += TIMEOUT;
    let e = h.event(Event::Timer).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Timeout, Stage::ListMessages));
}

#[test]
fn fetch_sessions_never_report_progress() {
    // Host::event asserts it for every non-check session; this runs both TLS modes explicitly.
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    h.exchange(&listing(&[(1, "u1", 120)]), b"RETR 1\r\n", vec![]);
    h.exchange(MSG1_WIRE, b"", vec![deliver("u1", MSG1_RAW)]);
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", finished(1, 0));

    let mut h = Host::new(mailbox(Security::Starttls, basic(), limits()), None, usize::MAX);
    h.connect();
    h.server(GREETING).unwrap();
    h.server(b"+OK\r\nSTLS\r\nUSER\r\n.\r\n").unwrap();
    h.server(b"+OK\r\n").unwrap();
    h.event(Event::TlsEstablished).unwrap();
    h.server(b"+OK\r\nUSER\r\n.\r\n").unwrap();
    h.server(b"+OK\r\n").unwrap();
    h.server(b"+OK\r\n").unwrap();
    h.server(b"+OK 0 0\r\n").unwrap();
    h.exchange(b"+OK\r\n", b"", finished(0, 0));
    assert!(steps(&h.all_others).is_empty());
    assert!(!h.all_others.is_empty(), "the record of actions is kept");
}
