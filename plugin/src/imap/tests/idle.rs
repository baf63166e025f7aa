//! IDLE without a live instance: the hand-over (`Action::Idle`), the resumed session
//! (`ImapSession::resume`) and its events, and idle states that are corrupt or foreign.

use super::*;
use crate::error::Retry;
use crate::session::{handle_checked, stop_checked, Idling};

const GREETING_IDLE: &[u8] = b"* OK [CAPABILITY IMAP4rev1 SASL-IR IDLE UIDPLUS AUTH=PLAIN] ready\r\n";
const GREETING_NO_IDLE: &[u8] = b"* OK [CAPABILITY IMAP4rev1 SASL-IR UIDPLUS AUTH=PLAIN] ready\r\n";

/// Drives a session by hand: every event's written bytes and other actions.
struct H {
    s: ImapSession,
    now: u64,
}

impl H {
    fn new(s: ImapSession) -> Self {
        H { s, now: 1_000 }
    }
    fn ev(&mut self, e: Event<'_>) -> (String, Vec<Action>) {
        self.now += 1;
        let actions = handle_checked(&mut self.s, e, self.now).unwrap_or_else(|e| panic!("{e:?}"));
        split(actions)
    }
    fn ev_err(&mut self, e: Event<'_>) -> crate::error::Error {
        self.now += 1;
        handle_checked(&mut self.s, e, self.now).expect_err("an error")
    }
    fn recv(&mut self, b: &[u8]) -> (String, Vec<Action>) {
        self.ev(Event::Received(b))
    }
    fn stop(&mut self) -> (String, Vec<Action>) {
        self.now += 1;
        split(stop_checked(&mut self.s, self.now).unwrap())
    }
}

fn split(actions: Vec<Action>) -> (String, Vec<Action>) {
    let mut wire = Vec::new();
    let mut rest = Vec::new();
    for a in actions {
        match a {
            Action::Write(b) => wire.extend(b),
            other => rest.push(other),
        }
    }
    (String::from_utf8(wire).unwrap(), rest)
}

fn idling(actions: &[Action]) -> Idling {
    match actions {
        [Action::Idle(i)] => i.clone(),
        other => panic!("not an idle hand-over: {other:?}"),
    }
}

/// Logs in and lists an INBOX holding UIDs 3 and 4 with first-sync All; answers nothing after
/// the listing's last command (returned).
fn to_listing(h: &mut H, greeting: &[u8]) -> String {
    h.ev(Event::Connected);
    let (w, _) = h.recv(greeting);
    assert!(w.starts_with("a1 AUTHENTICATE PLAIN"), "{w}");
    let (w, _) = h.recv(b"a1 OK Logged in\r\n");
    assert_eq!(w, "a2 EXAMINE \"INBOX\"\r\n");
    let (w, _) = h.recv(b"* 2 EXISTS\r\n* OK [UIDVALIDITY 1] v\r\n* OK [UIDNEXT 5] n\r\na2 OK [READ-ONLY] done\r\n");
    w
}

const M3: &[u8] = b"Subject: three\r\n\r\nthree\r\n";
const M4: &[u8] = b"Subject: four\r\n\r\nfour\r\n";

/// From the listing to the host's `Stored`: UIDs 3 and 4 fetched; returns what the session
/// writes after `Stored`.
fn fetch_3_and_4(h: &mut H, listing: &str, search: &[u8]) -> String {
    assert_eq!(listing, "a3 UID SEARCH ALL\r\n");
    let (w, _) = h.recv(search);
    assert_eq!(w, "a4 UID FETCH 3:4 (UID RFC822.SIZE)\r\n");
    let (w, _) = h.recv(b"* 1 FETCH (UID 3 RFC822.SIZE 22)\r\n* 2 FETCH (UID 4 RFC822.SIZE 20)\r\na4 OK done\r\n");
    assert_eq!(w, "a5 UID FETCH 3:4 (UID BODY.PEEK[])\r\n");
    let mut bodies = body_fetch(1, 3, M3);
    bodies.extend(body_fetch(2, 4, M4));
    bodies.extend_from_slice(b"a5 OK done\r\n");
    let (w, a) = h.recv(&bodies);
    assert_eq!(w, "");
    assert_eq!(a.iter().filter(|a| matches!(a, Action::Deliver(_))).count(), 2, "{a:?}");
    let (w, a) = h.ev(Event::Stored);
    assert!(a.is_empty(), "{a:?}");
    w
}

/// A session that fetched UIDs 3 and 4, sent IDLE and got "+": its hand-over.
fn idled() -> (H, Idling) {
    let mut h = H::new(ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap().with_idle(true));
    let listing = to_listing(&mut h, GREETING_IDLE);
    let w = fetch_3_and_4(&mut h, &listing, b"* SEARCH 3 4\r\na3 OK done\r\n");
    assert_eq!(w, "a6 IDLE\r\n");
    assert!(h.s.deadline().is_some(), "the + is a reply the session waits for");
    let (w, a) = h.recv(b"+ idling\r\n");
    assert_eq!(w, "");
    let i = idling(&a);
    assert_eq!(h.s.deadline(), None);
    (h, i)
}

fn resumed(i: &Idling) -> H {
    H::new(ImapSession::resume(mailbox(Security::ImplicitTls), &i.sync_state, &i.idle_state).unwrap())
}

#[test]
fn a_fetch_asked_to_idle_hands_over_a_small_state_without_secrets() {
    let (mut h, i) = idled();
    assert_eq!(i.summary, FetchSummary { delivered: 2, remaining: 0, skipped: 0 });
    assert_eq!(String::from_utf8(i.sync_state.clone()).unwrap(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":4}}}"#);
    let text = String::from_utf8(i.idle_state.clone()).unwrap();
    assert!(i.idle_state.len() < 512, "{} bytes: {text}", i.idle_state.len());
    for secret in [PASSWORD, "s3cr", &plain_ir()] {
        assert!(!text.contains(secret), "secret in the idle state: {text}");
    }
    // Only the capabilities a resumed session uses are kept.
    assert!(!text.contains("SASL-IR") && !text.contains("AUTH="), "{text}");
    for expected in [r#""folder":"INBOX""#, r#""uidvalidity":1"#, r#""last_uid":4"#, r#""idle_tag":6"#, r#""last_tag":6"#, r#""secure":true"#, r#""caps":["IDLE","UIDPLUS"]"#] {
        assert!(text.contains(expected), "{expected} missing: {text}");
    }
    // Handed over: no further events.
    let e = h.ev_err(Event::Received(b"* 3 EXISTS\r\n"));
    assert!(e.message.contains("inbound.resume"), "{e}");
}

#[test]
fn without_idle_on_the_server_or_not_asked_the_session_logs_out_as_before() {
    for (greeting, idle) in [(GREETING_NO_IDLE, true), (GREETING_IDLE, false)] {
        let mut h = H::new(ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap().with_idle(idle));
        let listing = to_listing(&mut h, greeting);
        let w = fetch_3_and_4(&mut h, &listing, b"* SEARCH 3 4\r\na3 OK done\r\n");
        assert_eq!(w, "a6 LOGOUT\r\n");
        let (_, a) = h.recv(b"* BYE bye\r\na6 OK done\r\n");
        assert!(matches!(a.last(), Some(Action::Finished(Outcome::Fetched(FetchSummary { delivered: 2, .. })))), "{a:?}");
    }
    // A server that refuses IDLE: the same.
    let mut h = H::new(ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap().with_idle(true));
    let listing = to_listing(&mut h, GREETING_IDLE);
    let w = fetch_3_and_4(&mut h, &listing, b"* SEARCH 3 4\r\na3 OK done\r\n");
    assert_eq!(w, "a6 IDLE\r\n");
    let (w, _) = h.recv(b"a6 NO not now\r\n");
    assert_eq!(w, "a7 LOGOUT\r\n");
}

#[test]
fn noise_while_idling_re_parks_without_a_fetch() {
    let (_, i) = idled();
    let mut h = resumed(&i);
    let (w, a) = h.recv(b"* 1 EXPUNGE\r\n* 1 FETCH (FLAGS (\\Seen))\r\n* OK Still here\r\n");
    assert_eq!(w, "");
    let again = idling(&a);
    assert_eq!(again.sync_state, i.sync_state);
    assert_eq!(again.summary, FetchSummary::default());
    // Half a line: the session waits (with a deadline) for the rest before handing over.
    let mut h = resumed(&again);
    let (w, a) = h.recv(b"* OK Still");
    assert_eq!((w.as_str(), a.len()), ("", 0));
    assert!(h.s.deadline().is_some());
    let (_, a) = h.recv(b" here\r\n");
    idling(&a);
}

#[test]
fn new_mail_while_idling_is_fetched_after_done_then_idle_again() {
    let (_, i) = idled();
    let mut h = resumed(&i);
    let (w, a) = h.recv(b"* 3 EXISTS\r\n* 1 RECENT\r\n");
    assert_eq!((w.as_str(), a.len()), ("DONE\r\n", 0));
    assert!(h.s.deadline().is_some());
    let (w, _) = h.recv(b"a6 OK Idle completed\r\n");
    assert_eq!(w, "a7 EXAMINE \"INBOX\"\r\n");
    let (w, _) = h.recv(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 1] v\r\n* OK [UIDNEXT 6] n\r\na7 OK done\r\n");
    assert_eq!(w, "a8 UID SEARCH UID 5:*\r\n");
    let (w, _) = h.recv(b"* SEARCH 5\r\na8 OK done\r\n");
    assert_eq!(w, "a9 UID FETCH 5 (UID RFC822.SIZE)\r\n");
    let (w, _) = h.recv(b"* 3 FETCH (UID 5 RFC822.SIZE 22)\r\na9 OK done\r\n");
    assert_eq!(w, "a10 UID FETCH 5 (UID BODY.PEEK[])\r\n");
    let mut body = body_fetch(3, 5, M3);
    body.extend_from_slice(b"a10 OK done\r\n");
    let (w, a) = h.recv(&body);
    assert_eq!(w, "");
    assert!(matches!(&a[..], [Action::Deliver(m)] if m.id == "imap:INBOX:1:5"), "{a:?}");
    // Nothing is committed before the host's Stored.
    assert_eq!(String::from_utf8(h.s.sync_state().unwrap()).unwrap(), String::from_utf8(i.sync_state.clone()).unwrap());
    let (w, _) = h.ev(Event::Stored);
    assert_eq!(w, "a11 IDLE\r\n");
    let (_, a) = h.recv(b"+ idling\r\n");
    let again = idling(&a);
    assert_eq!(again.summary.delivered, 1);
    assert!(String::from_utf8(again.sync_state).unwrap().contains(r#""last_uid":5"#));
    assert!(String::from_utf8(again.idle_state).unwrap().contains(r#""idle_tag":11"#));
}

#[test]
fn the_renew_timer_re_issues_idle_and_stop_logs_out() {
    let (_, i) = idled();
    let mut h = resumed(&i);
    let (w, _) = h.ev(Event::Timer);
    assert_eq!(w, "DONE\r\n");
    let (w, _) = h.recv(b"a6 OK Idle completed\r\n");
    assert_eq!(w, "a7 IDLE\r\n");
    let (_, a) = h.recv(b"+ idling\r\n");
    let again = idling(&a);

    let mut h = resumed(&again);
    let (w, _) = h.stop();
    assert_eq!(w, "DONE\r\n");
    // Mail announced now is left for the next connection.
    let (w, _) = h.recv(b"* 4 EXISTS\r\na7 OK Idle completed\r\n");
    assert_eq!(w, "a8 LOGOUT\r\n");
    let (_, a) = h.recv(b"* BYE Logging out\r\na8 OK done\r\n");
    assert!(matches!(a.last(), Some(Action::Finished(Outcome::Fetched(_)))), "{a:?}");
}

#[test]
fn the_server_may_end_idle_itself() {
    let (_, i) = idled();
    let mut h = resumed(&i);
    let (w, _) = h.recv(b"a6 OK IDLE terminated\r\n");
    assert_eq!(w, "a7 IDLE\r\n");
}

#[test]
fn bye_or_a_closed_connection_while_idling_is_a_network_error_to_retry_later() {
    let (_, i) = idled();
    for (event, reply) in [(Event::Received(b"* BYE Server shutting down\r\n"), true), (Event::Closed, false)] {
        let mut h = resumed(&i);
        let e = h.ev_err(event);
        assert_eq!((e.kind, e.retry), (ErrorKind::Network, Retry::Later), "{e:?}");
        assert_eq!(e.reply.is_some(), reply, "{e:?}");
        assert!(e.message.contains("idling"), "{e}");
    }
}

#[test]
fn mail_announced_during_the_fetch_is_fetched_before_idling() {
    let mut h = H::new(ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap().with_idle(true));
    let listing = to_listing(&mut h, GREETING_IDLE);
    // The EXISTS comes with the search's answer: after the listing began.
    let w = fetch_3_and_4(&mut h, &listing, b"* SEARCH 3 4\r\n* 3 EXISTS\r\na3 OK done\r\n");
    assert_eq!(w, "a6 EXAMINE \"INBOX\"\r\n");
    let (w, _) = h.recv(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 1] v\r\n* OK [UIDNEXT 6] n\r\na6 OK done\r\n");
    assert_eq!(w, "a7 UID SEARCH UID 5:*\r\n");
    let (w, _) = h.recv(b"a7 OK done\r\n");
    assert_eq!(w, "a8 IDLE\r\n");
    // ... and an EXISTS right after the "+" ends IDLE at once.
    let (w, a) = h.recv(b"+ idling\r\n* 4 EXISTS\r\n");
    assert_eq!((w.as_str(), a.len()), ("DONE\r\n", 0));
}

#[test]
fn with_several_folders_the_first_is_selected_again_to_idle() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.folders = vec!["INBOX".into(), "Support".into()];
    let mut h = H::new(ImapSession::new(mb, None).unwrap().with_idle(true));
    h.ev(Event::Connected);
    h.recv(GREETING_IDLE);
    let (w, _) = h.recv(b"a1 OK Logged in\r\n");
    assert_eq!(w, "a2 EXAMINE \"INBOX\"\r\n");
    // Empty folders need no search.
    let (w, _) = h.recv(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] v\r\n* OK [UIDNEXT 1] n\r\na2 OK done\r\n");
    assert_eq!(w, "a3 EXAMINE \"Support\"\r\n");
    let (w, _) = h.recv(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 1] n\r\na3 OK done\r\n");
    assert_eq!(w, "a4 EXAMINE \"INBOX\"\r\n");
    let (w, _) = h.recv(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] v\r\n* OK [UIDNEXT 1] n\r\na4 OK done\r\n");
    assert_eq!(w, "a5 IDLE\r\n");
    let (_, a) = h.recv(b"+ idling\r\n");
    idling(&a);
}

fn resume_err(mb: Mailbox, sync: &[u8], idle: &[u8]) -> crate::error::Error {
    ImapSession::resume(mb, sync, idle).expect_err("a typed error")
}

#[test]
fn a_corrupt_or_foreign_idle_state_is_invalid_input() {
    let (_, i) = idled();
    let text = String::from_utf8(i.idle_state.clone()).unwrap();
    let mb = || mailbox(Security::ImplicitTls);
    let mut other_server = mb();
    other_server.server.host = "imap.other.example".into();
    let mut other_user = mb();
    other_user.credentials = Credentials::Basic { username: "someone@example.com".into(), password: "x".into() };
    let mut other_folder = mb();
    other_folder.folders = vec!["Support".into()];
    let cases: Vec<(Mailbox, Vec<u8>, Vec<u8>)> = vec![
        (mb(), i.sync_state.clone(), b"not json".to_vec()),
        (mb(), i.sync_state.clone(), Vec::new()),
        (mb(), i.sync_state.clone(), text.replace(r#""v":1"#, r#""v":2"#).into_bytes()),
        (mb(), i.sync_state.clone(), text.replace(super::super::idle::kind(), "pop3-idle").into_bytes()),
        (mb(), i.sync_state.clone(), text.replace(r#""idle_tag":6"#, r#""idle_tag":9"#).into_bytes()),
        (mb(), i.sync_state.clone(), text.replace(r#""secure":true"#, r#""secure":false"#).into_bytes()),
        (mb(), i.sync_state.clone(), text.replace("\"INBOX\":\"INBOX\"", "\"INBOX\":\"IN\\r\\nBOX\"").into_bytes()),
        (mb(), i.sync_state.clone(), vec![b' '; 70_000]),
        (other_server, i.sync_state.clone(), i.idle_state.clone()),
        (other_user, i.sync_state.clone(), i.idle_state.clone()),
        (other_folder, i.sync_state.clone(), i.idle_state.clone()),
        // The sync state of another folder generation.
        (mb(), br#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":2,"last_uid":4}}}"#.to_vec(), i.idle_state.clone()),
        (mb(), b"garbage".to_vec(), i.idle_state.clone()),
    ];
    for (n, (m, sync, idle)) in cases.into_iter().enumerate() {
        let e = resume_err(m, &sync, &idle);
        assert_eq!(e.kind, ErrorKind::InvalidInput, "case {n}: {e:?}");
        assert!(!e.to_string().contains(PASSWORD), "{e}");
    }
    // The untouched state resumes.
    resumed(&i);
}

/// The fuzz hook's property, a few thousand times: arbitrary idle-state bytes (random, or a
/// real state with bytes flipped) resume or fail with a typed error, never panic; a session
/// that resumes survives arbitrary server bytes.
#[test]
fn arbitrary_idle_state_bytes_are_a_typed_error() {
    let (_, i) = idled();
    // The fuzz hook's mailbox is on mail.example.com.
    let base = String::from_utf8(i.idle_state).unwrap().replace("imap.example.com", "mail.example.com").into_bytes();
    crate::fuzzing::imap_resume(&base);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..4000 {
        let bytes: Vec<u8> = if round % 2 == 0 {
            let len = (next() % 600) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut b = base.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            b
        };
        crate::fuzzing::imap_resume(&bytes);
    }
}

/// The whole flow (fetch, IDLE, hand-over, resume on new mail, fetch, IDLE again) with every
/// server chunk fed whole or one byte at a time: the same bytes written, the same actions.
#[test]
fn byte_at_a_time_input_gives_the_same_idle_flow() {
    #[derive(Debug, Default, PartialEq)]
    struct Out {
        wire: String,
        actions: Vec<Action>,
    }
    fn feed(h: &mut H, bytes: &[u8], bytewise: bool, out: &mut Out) {
        let chunks: Vec<&[u8]> = if bytewise { bytes.chunks(1).collect() } else { vec![bytes] };
        for c in chunks {
            let (w, a) = h.recv(c);
            out.wire.push_str(&w);
            out.actions.extend(a);
        }
    }
    fn run(bytewise: bool) -> Out {
        let mut out = Out::default();
        let mut h = H::new(ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap().with_idle(true));
        h.ev(Event::Connected);
        feed(&mut h, GREETING_IDLE, bytewise, &mut out);
        feed(&mut h, b"a1 OK Logged in\r\n", bytewise, &mut out);
        feed(&mut h, b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] v\r\n* OK [UIDNEXT 5] n\r\na2 OK [READ-ONLY] done\r\n", bytewise, &mut out);
        feed(&mut h, b"+ idling\r\n", bytewise, &mut out);
        let Some(Action::Idle(i)) = out.actions.last().cloned() else { panic!("no hand-over: {:?}", out.actions) };
        let mut r = H::new(ImapSession::resume(mailbox(Security::ImplicitTls), &i.sync_state, &i.idle_state).unwrap());
        feed(&mut r, b"* 1 EXISTS\r\n* 1 RECENT\r\n", bytewise, &mut out);
        feed(&mut r, b"a3 OK Idle completed\r\n", bytewise, &mut out);
        feed(&mut r, b"* 1 EXISTS\r\n* OK [UIDVALIDITY 1] v\r\n* OK [UIDNEXT 6] n\r\na4 OK done\r\n", bytewise, &mut out);
        feed(&mut r, b"* SEARCH 5\r\na5 OK done\r\n", bytewise, &mut out);
        feed(&mut r, b"* 1 FETCH (UID 5 RFC822.SIZE 22)\r\na6 OK done\r\n", bytewise, &mut out);
        let mut body = body_fetch(1, 5, M3);
        body.extend_from_slice(b"a7 OK done\r\n");
        feed(&mut r, &body, bytewise, &mut out);
        let (w, a) = r.ev(Event::Stored);
        out.wire.push_str(&w);
        out.actions.extend(a);
        feed(&mut r, b"+ idling\r\n", bytewise, &mut out);
        out
    }
    let whole = run(false);
    assert!(
        whole.wire.ends_with("a3 IDLE\r\nDONE\r\na4 EXAMINE \"INBOX\"\r\na5 UID SEARCH ALL\r\na6 UID FETCH 5 (UID RFC822.SIZE)\r\na7 UID FETCH 5 (UID BODY.PEEK[])\r\na8 IDLE\r\n"),
        "{}",
        whole.wire
    );
    assert!(matches!(whole.actions.last(), Some(Action::Idle(i)) if i.summary.delivered == 1), "{:?}", whole.actions);
    assert_eq!(run(true), whole);
}
