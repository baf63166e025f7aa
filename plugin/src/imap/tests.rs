//! Recorded Dovecot-like transcripts driving `ImapSession`, fed whole, in odd chunks and
//! one byte at a time; the bytes written and the actions must be exactly the same each way.

use super::*;
use crate::config::{AfterFetch, Credentials, FirstSync, InboundProtocol, Limits, Mailbox, Security, Server};
use crate::error::{ErrorKind, Stage};
use crate::sasl;
use crate::session::{Action, Event, FetchSummary, FetchedMessage, Outcome, Session};

use super::transcript::{self, drive, drive_all, Scripted, Step};
use Step::{Closed, Idle, Stored, Tls, C, S};

const PASSWORD: &str = "s3cr\"et\\pw";
const TIMEOUT: u64 = 60_000;

fn mailbox(security: Security) -> Mailbox {
    Mailbox {
        protocol: InboundProtocol::Imap,
        server: Server { host: "imap.example.com".into(), port: 993, security },
        credentials: Credentials::Basic { username: "agent@example.com".into(), password: PASSWORD.into() },
        folders: vec![],
        limits: Limits { max_line_bytes: 1024, ..Limits::default() },
        after_fetch: AfterFetch::default(),
        first_sync: FirstSync::All,
    }
}

impl Scripted for ImapSession {
    const CHECKS_EVERY_WRITE: bool = true;
}

type Run = transcript::Run<ImapSession>;

impl Run {
    fn delivered(&self) -> Vec<&FetchedMessage> {
        self.actions.iter().filter_map(|a| if let Action::Deliver(m) = a { Some(m) } else { None }).collect()
    }
    fn finished(&self) -> Option<&FetchSummary> {
        self.actions.iter().find_map(|a| if let Action::Finished(Outcome::Fetched(s)) = a { Some(s) } else { None })
    }
    fn sync(&self) -> String {
        String::from_utf8(self.session.as_ref().unwrap().sync_state().expect("a sync state")).unwrap()
    }
}

fn assert_no_secret(run: &Run) {
    let e = run.err();
    for text in [format!("{e}"), format!("{e:?}"), format!("{:?}", run.session.as_ref().unwrap())] {
        assert!(!text.contains(PASSWORD) && !text.contains("s3cr"), "secret leaked: {text}");
    }
}

const MSG1: &[u8] =
    b"From: a@example.org\r\nSubject: dots\r\n\r\nline\r\n.\r\n) not the end )\r\n* 3 FETCH (UID 9)\r\n";
const MSG2: &[u8] = b"Subject: two\r\n\r\nbody {12}\r\n";

fn body_fetch(seq: u32, uid: u32, body: &[u8]) -> Vec<u8> {
    let mut v = format!("* {seq} FETCH (UID {uid} BODY[] {{{}}}\r\n", body.len()).into_bytes();
    v.extend_from_slice(body);
    v.extend_from_slice(b")\r\n");
    v
}

fn plain_ir() -> String {
    sasl::plain("agent@example.com", PASSWORD)
}

const SELECT_INBOX: &[u8] = b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n\
* 2 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\n* OK [UIDNEXT 8] Predicted next UID\r\n";

#[test]
fn implicit_tls_sasl_ir_plain_happy_path_streams_two_messages() {
    let auth = format!("a1 AUTHENTICATE PLAIN {}\r\n", plain_ir());
    let mut fetch = body_fetch(1, 5, MSG1);
    fetch.extend(body_fetch(2, 7, MSG2));
    fetch.extend_from_slice(b"a5 OK Fetch completed (0.001 + 0.000 secs).\r\n");
    let sizes = format!(
        "* 1 FETCH (UID 5 RFC822.SIZE {})\r\n* 2 FETCH (UID 7 RFC822.SIZE {})\r\na4 OK Fetch completed.\r\n",
        MSG1.len(),
        MSG2.len()
    );
    let script = [
        S(b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n"),
        C(auth.as_bytes()),
        S(b"a1 OK [CAPABILITY IMAP4rev1 SASL-IR ID ENABLE IDLE SORT ESEARCH UIDPLUS] Logged in\r\n"),
        C(b"a2 EXAMINE \"INBOX\"\r\n"),
        S(SELECT_INBOX),
        S(b"a2 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n"),
        C(b"a3 UID SEARCH RETURN (ALL) ALL\r\n"),
        S(b"* ESEARCH (TAG \"a3\") UID ALL 7,5\r\na3 OK Search completed (0.001 + 0.000 secs).\r\n"),
        C(b"a4 UID FETCH 5,7 (UID RFC822.SIZE)\r\n"),
        S(sizes.as_bytes()),
        C(b"a5 UID FETCH 5,7 (UID BODY.PEEK[])\r\n"),
        S(&fetch),
        C(b""),
        Idle,
        Stored,
        C(b"a6 LOGOUT\r\n"),
        S(b"* BYE Logging out\r\na6 OK Logout completed (0.001 + 0.000 secs).\r\n"),
    ];
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        run.actions,
        vec![
            Action::Deliver(FetchedMessage {
                id: "imap:INBOX:1700000000:5".into(),
                folder: "INBOX".into(),
                raw: MSG1.to_vec()
            }),
            Action::Deliver(FetchedMessage {
                id: "imap:INBOX:1700000000:7".into(),
                folder: "INBOX".into(),
                raw: MSG2.to_vec()
            }),
            Action::Close,
            Action::Finished(Outcome::Fetched(FetchSummary { delivered: 2, remaining: 0, skipped: 0 })),
        ]
    );
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1700000000,"last_uid":7}}}"#);
    let s = run.session.as_ref().unwrap();
    assert_eq!(s.deadline(), None);
    assert_eq!(s.server().host, "imap.example.com");
}

/// A session that has sent `a5 UID FETCH 5,7 (UID BODY.PEEK[])`.
fn session_in_fetch() -> ImapSession {
    let mut s = ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap();
    s.handle(Event::Connected, 0).unwrap();
    for input in [
        &b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n"[..],
        b"a1 OK done\r\n",
        b"* 2 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK [READ-WRITE] ok\r\n",
        b"* SEARCH 5 7\r\na3 OK ok\r\n",
        b"* 1 FETCH (UID 5 RFC822.SIZE 100)\r\n* 2 FETCH (UID 7 RFC822.SIZE 100)\r\na4 OK ok\r\n",
    ] {
        s.handle(Event::Received(input), 0).unwrap();
    }
    s
}

#[test]
fn each_message_is_delivered_as_soon_as_its_response_is_complete() {
    let mut s = session_in_fetch();
    let first = body_fetch(1, 5, MSG1);
    let (head, last) = first.split_at(first.len() - 1);
    assert!(s.handle(Event::Received(head), 5).unwrap().is_empty(), "not complete before the final LF");
    assert_eq!(s.deadline(), Some(5 + TIMEOUT), "still waiting for the server");
    let actions = s.handle(Event::Received(last), 6).unwrap();
    assert!(matches!(&actions[..], [Action::Deliver(m)] if m.raw == MSG1), "{actions:?}");
    assert_eq!(s.sync_state(), None, "nothing is committed before the host stored it");
}

#[test]
fn starttls_path_discards_capabilities_learnt_in_clear_text() {
    let ir = plain_ir();
    let answer = format!("{ir}\r\n");
    // Pre-TLS caps claim SASL-IR; after TLS the real server does not, so the client must
    // wait for the continuation.
    let script = [
        S(b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ STARTTLS AUTH=PLAIN LOGINDISABLED] Dovecot ready.\r\n"),
        C(b"a1 STARTTLS\r\n"),
        S(b"a1 OK Begin TLS negotiation now.\r\n"),
        Tls,
        C(b"a2 CAPABILITY\r\n"),
        S(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na2 OK Pre-login capabilities listed.\r\n"),
        C(b"a3 AUTHENTICATE PLAIN\r\n"),
        S(b"+ \r\n"),
        C(answer.as_bytes()),
        S(b"a3 OK Logged in\r\n"),
        C(b"a4 EXAMINE \"INBOX\"\r\n"),
        S(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 3] UIDs valid\r\na4 OK [READ-WRITE] Select completed.\r\n"),
        C(b"a5 LOGOUT\r\n"),
        S(b"* BYE Logging out\r\n"),
        Closed,
    ];
    let make = || ImapSession::new(mailbox(Security::Starttls), None).unwrap();
    let run = drive_all(make, &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        run.actions,
        vec![
            Action::StartTls,
            Action::Close,
            Action::Finished(Outcome::Fetched(FetchSummary { delivered: 0, remaining: 0, skipped: 0 }))
        ]
    );
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":3,"last_uid":0}}}"#);
}

#[test]
fn starttls_not_advertised_is_a_policy_error_before_any_credential() {
    for script in [
        vec![S(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n")],
        vec![S(b"* OK ready\r\n"), C(b"a1 CAPABILITY\r\n"), S(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na1 OK done\r\n")],
    ] {
        let run = drive_all(|| ImapSession::new(mailbox(Security::Starttls), None).unwrap(), &script);
        assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Policy, Stage::Starttls));
        let wire = String::from_utf8_lossy(&run.wire).to_string();
        assert!(!wire.contains("LOGIN") && !wire.contains("AUTHENTICATE") && !wire.contains(&plain_ir()), "{wire}");
        assert_no_secret(&run);
    }
}

#[test]
fn starttls_refused_is_a_policy_error() {
    for (reply, code) in [(&b"a1 NO TLS not configured\r\n"[..], "NO"), (b"a1 BAD TLS not configured\r\n", "BAD")] {
        let script = [S(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"), C(b"a1 STARTTLS\r\n"), S(reply)];
        let run = drive_all(|| ImapSession::new(mailbox(Security::Starttls), None).unwrap(), &script);
        assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Policy, Stage::Starttls));
        let r = run.err().reply.as_ref().unwrap();
        assert_eq!((r.code.as_str(), r.text.as_str()), (code, "TLS not configured"));
        assert_eq!(run.wire, b"a1 STARTTLS\r\n");
    }
}

#[test]
fn preauth_on_starttls_connection_is_a_policy_error_but_fine_on_implicit_tls() {
    let script = [S(b"* PREAUTH [CAPABILITY IMAP4rev1] Logged in as agent\r\n")];
    let run = drive_all(|| ImapSession::new(mailbox(Security::Starttls), None).unwrap(), &script);
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Policy, Stage::Greeting));
    assert!(run.wire.is_empty());

    let script = [S(b"* PREAUTH [CAPABILITY IMAP4rev1] Logged in as agent\r\n"), C(b"a1 EXAMINE \"INBOX\"\r\n")];
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap(), &script);
    assert!(run.error.is_none());
}

#[test]
fn bytes_injected_after_starttls_ok_are_a_policy_error() {
    let script = [
        S(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"),
        C(b"a1 STARTTLS\r\n"),
        S(b"a1 OK Begin TLS negotiation now.\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\n"),
    ];
    // Whole: still buffered at the OK; byte by byte: arrives while TLS is starting. Both abort.
    for chunk in [usize::MAX, 40, 1] {
        let run = drive(ImapSession::new(mailbox(Security::Starttls), None).unwrap(), &script, chunk);
        assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Policy, Stage::Starttls), "chunk {chunk}");
        assert_eq!(run.wire, b"a1 STARTTLS\r\n");
    }
}

#[test]
fn login_quotes_specials_and_no_is_an_auth_error_with_server_text_without_password() {
    let script = [
        S(b"* OK [CAPABILITY IMAP4rev1 ID] ready\r\n"),
        C(b"a1 LOGIN \"agent@example.com\" \"s3cr\\\"et\\\\pw\"\r\n"),
        S(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
    ];
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap(), &script);
    let e = run.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::AuthRejected, Stage::Authenticate));
    let reply = e.reply.as_ref().unwrap();
    assert_eq!((reply.code.as_str(), reply.text.as_str()), ("NO", "[AUTHENTICATIONFAILED] Authentication failed."));
    assert!(e.message.contains("agent@example.com"));
    assert_no_secret(&run);
}

#[test]
fn login_with_non_ascii_password_uses_a_synchronising_literal() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.credentials = Credentials::Basic { username: "u".into(), password: "pässword".into() };
    let script = [
        S(b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        C(b"a1 LOGIN \"u\" {9}\r\n"),
        S(b"+ OK\r\n"),
        C("pässword\r\n".as_bytes()),
        S(b"a1 OK logged in\r\n"),
        C(b"a2 EXAMINE \"INBOX\"\r\n"),
    ];
    let run = drive_all(|| ImapSession::new(mb.clone(), None).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
}

#[test]
fn logindisabled_without_a_mechanism_is_a_policy_error() {
    let script = [S(b"* OK [CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=GSSAPI] ready\r\n")];
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap(), &script);
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Policy, Stage::Authenticate));
    assert!(run.wire.is_empty());
}

#[test]
fn xoauth2_error_challenge_gets_an_empty_answer_then_auth_error() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.credentials = Credentials::OAuth2 { username: "agent@example.com".into(), access_token: "ya29.TOKEN".into(), mechanism: None };
    let ir = sasl::xoauth2("agent@example.com", "ya29.TOKEN");
    let first = format!("a1 AUTHENTICATE XOAUTH2 {ir}\r\n");
    let script = [
        S(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 AUTH=PLAIN] Gimap ready\r\n"),
        C(first.as_bytes()),
        // base64 of {"status":"401","schemes":"Bearer"}
        S(b"+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiQmVhcmVyIn0=\r\n"),
        C(b"\r\n"),
        S(b"a1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n"),
    ];
    let run = drive_all(|| ImapSession::new(mb.clone(), None).unwrap(), &script);
    let e = run.err();
    assert_eq!(e.kind, ErrorKind::AuthRejected);
    assert!(e.message.contains(r#"{"status":"401","schemes":"Bearer"}"#), "{}", e.message);
    assert!(!format!("{e} {e:?}").contains("TOKEN"));
}

fn state_json(uidvalidity: u32, last_uid: u32) -> Vec<u8> {
    format!(
        r#"{{"v":3,"protocol":"imap","folders":{{"INBOX":{{"uidvalidity":{uidvalidity},"last_uid":{last_uid}}}}}}}"#
    )
    .into_bytes()
}

/// Logged in, INBOX opened read-only (after-fetch `keep`).
fn login_prefix() -> Vec<Step<'static>> {
    vec![
        S(b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        C(b"a1 LOGIN \"agent@example.com\" \"s3cr\\\"et\\\\pw\"\r\n"),
        S(b"a1 OK Logged in\r\n"),
        C(b"a2 EXAMINE \"INBOX\"\r\n"),
    ]
}

/// Logged in, INBOX selected for writing (an after-fetch action that changes the server).
fn login_prefix_rw() -> Vec<Step<'static>> {
    let mut v = login_prefix();
    v[3] = C(b"a2 SELECT \"INBOX\"\r\n");
    v
}

#[test]
fn sync_state_skips_old_uids_and_the_highest_uid_quirk() {
    // Nothing new (message 8 came and went): "8:*" still matches UID 7, the highest.
    let mut script = login_prefix();
    script.extend([
        S(b"* 7 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\n* OK [UIDNEXT 9] ok\r\na2 OK [READ-WRITE] ok\r\n"),
        C(b"a3 UID SEARCH UID 8:*\r\n"),
        S(b"* SEARCH 7\r\na3 OK Search completed.\r\n"),
        C(b"a4 LOGOUT\r\n"),
        S(b"a4 OK bye\r\n"),
    ]);
    let state = state_json(42, 7);
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), Some(&state)).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 0, remaining: 0, skipped: 0 }));
    assert_eq!(run.sync().as_bytes(), &state[..]);

    // New ones above the last UID only.
    let mut script = login_prefix();
    let fetch = [body_fetch(8, 9, MSG2), b"a5 OK done\r\n".to_vec()].concat();
    let sizes = format!("* 8 FETCH (UID 9 RFC822.SIZE {})\r\na4 OK done\r\n", MSG2.len());
    script.extend([
        S(b"* 8 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\na2 OK [READ-WRITE] ok\r\n"),
        C(b"a3 UID SEARCH UID 8:*\r\n"),
        S(b"* SEARCH 9 7\r\na3 OK Search completed.\r\n"),
        C(b"a4 UID FETCH 9 (UID RFC822.SIZE)\r\n"),
        S(sizes.as_bytes()),
        C(b"a5 UID FETCH 9 (UID BODY.PEEK[])\r\n"),
        S(&fetch),
        Stored,
        C(b"a6 LOGOUT\r\n"),
        S(b"a6 OK bye\r\n"),
    ]);
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), Some(&state)).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.delivered().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["imap:INBOX:42:9"]);
    assert_eq!(run.sync().as_bytes(), &state_json(42, 9)[..]);
}

#[test]
fn uidvalidity_change_refetches_all() {
    let mut script = login_prefix();
    let fetch = [body_fetch(1, 1, MSG1), body_fetch(2, 2, MSG2), b"a5 OK done\r\n".to_vec()].concat();
    let sizes = format!(
        "* 1 FETCH (UID 1 RFC822.SIZE {})\r\n* 2 FETCH (UID 2 RFC822.SIZE {})\r\na4 OK done\r\n",
        MSG1.len(),
        MSG2.len()
    );
    script.extend([
        S(b"* 2 EXISTS\r\n* OK [UIDVALIDITY 43] ok\r\n* OK [UIDNEXT 3] ok\r\na2 OK [READ-WRITE] ok\r\n"),
        C(b"a3 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 1 2\r\na3 OK Search completed.\r\n"),
        C(b"a4 UID FETCH 1:2 (UID RFC822.SIZE)\r\n"),
        S(sizes.as_bytes()),
        C(b"a5 UID FETCH 1:2 (UID BODY.PEEK[])\r\n"),
        S(&fetch),
        Stored,
        C(b"a6 LOGOUT\r\n"),
        Closed,
    ]);
    let state = state_json(42, 7);
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), Some(&state)).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        run.delivered().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["imap:INBOX:43:1", "imap:INBOX:43:2"]
    );
    assert_eq!(run.sync().as_bytes(), &state_json(43, 2)[..]);
}

#[test]
fn oversized_messages_are_skipped_by_size_and_an_oversized_literal_is_a_limit_error() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.limits.max_message_bytes = 100;
    let mut script = login_prefix();
    script.extend([
        S(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 1 2 3\r\na3 OK ok\r\n"),
        C(b"a4 UID FETCH 1:3 (UID RFC822.SIZE)\r\n"),
        S(b"* 1 FETCH (UID 1 RFC822.SIZE 50)\r\n* 2 FETCH (UID 2 RFC822.SIZE 5000)\r\n* 3 FETCH (UID 3 RFC822.SIZE 60)\r\na4 OK ok\r\n"),
        C(b"a5 UID FETCH 1,3 (UID BODY.PEEK[])\r\n"),
        // The server lied about the size.
        S(b"* 1 FETCH (UID 1 BODY[] {5000}\r\n"),
    ]);
    let run = drive_all(|| ImapSession::new(mb.clone(), None).unwrap(), &script);
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Limit, Stage::FetchMessage));
    assert!(run.delivered().is_empty());
    // After an error every event is refused, without panicking.
    let mut s = run.session.unwrap();
    assert_eq!(s.handle(Event::Received(b"a5 OK\r\n"), 9).unwrap_err().kind, ErrorKind::Protocol);
}

#[test]
fn batch_limit_leaves_the_rest_for_next_time() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.limits.max_batch_messages = 2;
    let mut script = login_prefix();
    let fetch = [body_fetch(1, 10, MSG2), body_fetch(2, 11, MSG2), b"a5 OK done\r\n".to_vec()].concat();
    let n = MSG2.len();
    let sizes = format!("* 1 FETCH (UID 10 RFC822.SIZE {n})\r\n* 2 FETCH (UID 11 RFC822.SIZE {n})\r\n* 3 FETCH (UID 12 RFC822.SIZE {n})\r\na4 OK ok\r\n");
    script.extend([
        S(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 10 11 12\r\na3 OK ok\r\n"),
        C(b"a4 UID FETCH 10:12 (UID RFC822.SIZE)\r\n"),
        S(sizes.as_bytes()),
        C(b"a5 UID FETCH 10:11 (UID BODY.PEEK[])\r\n"),
        S(&fetch),
        Stored,
        C(b"a6 LOGOUT\r\n"),
        S(b"a6 OK bye\r\n"),
    ]);
    let run = drive_all(|| ImapSession::new(mb.clone(), None).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 2, remaining: 1, skipped: 0 }));
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":11}}}"#);
}

#[test]
fn unsolicited_responses_in_the_middle_of_a_fetch_are_tolerated() {
    let mut script = login_prefix();
    let fetch = [
        body_fetch(1, 5, MSG1),
        b"* 3 EXISTS\r\n* 1 RECENT\r\n* FLAGS (\\Seen $Forwarded)\r\n* 1 FETCH (FLAGS (\\Seen))\r\n* OK [ALERT] maintenance soon\r\n".to_vec(),
        body_fetch(2, 7, MSG2),
        b"* 3 EXPUNGE\r\na5 OK done\r\n".to_vec(),
    ]
    .concat();
    let sizes = format!("* 1 FETCH (UID 5 RFC822.SIZE {})\r\n* 2 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (UID 7 RFC822.SIZE {})\r\na4 OK ok\r\n", MSG1.len(), MSG2.len());
    script.extend([
        S(b"* 2 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID SEARCH ALL\r\n"),
        S(b"* 4 EXISTS\r\n* SEARCH 5 7\r\na3 OK ok\r\n"),
        C(b"a4 UID FETCH 5,7 (UID RFC822.SIZE)\r\n"),
        S(sizes.as_bytes()),
        C(b"a5 UID FETCH 5,7 (UID BODY.PEEK[])\r\n"),
        S(&fetch),
        Stored,
        C(b"a6 LOGOUT\r\n"),
    ]);
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.delivered().iter().map(|m| &m.raw[..]).collect::<Vec<_>>(), [MSG1, MSG2]);
}

#[test]
fn several_folders_and_a_stored_in_between() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.folders = vec!["INBOX".into(), "Entwürfe".into()];
    let mut script = login_prefix();
    let sizes = |tag: &str, uid: u32| format!("* 1 FETCH (UID {uid} RFC822.SIZE {})\r\n{tag} OK ok\r\n", MSG2.len());
    let s4 = sizes("a4", 3);
    let s8 = sizes("a8", 4);
    let f5 = [body_fetch(1, 3, MSG2), b"a5 OK ok\r\n".to_vec()].concat();
    let f9 = [body_fetch(1, 4, MSG2), b"a9 OK ok\r\n".to_vec()].concat();
    script.extend([
        S(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 3\r\na3 OK ok\r\n"),
        C(b"a4 UID FETCH 3 (UID RFC822.SIZE)\r\n"),
        S(s4.as_bytes()),
        C(b"a5 UID FETCH 3 (UID BODY.PEEK[])\r\n"),
        S(&f5),
        C(b"a6 EXAMINE \"Entw&APw-rfe\"\r\n"),
        Stored,
        S(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 9] ok\r\na6 OK ok\r\n"),
        C(b"a7 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 4\r\na7 OK ok\r\n"),
        C(b"a8 UID FETCH 4 (UID RFC822.SIZE)\r\n"),
        S(s8.as_bytes()),
        C(b"a9 UID FETCH 4 (UID BODY.PEEK[])\r\n"),
        S(&f9),
        C(b""),
        Idle,
        Stored,
        C(b"a10 LOGOUT\r\n"),
        S(b"a10 OK bye\r\n"),
    ]);
    let run = drive_all(|| ImapSession::new(mb.clone(), None).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    let ids: Vec<_> = run.delivered().iter().map(|m| (m.id.clone(), m.folder.clone())).collect();
    assert_eq!(ids, [("imap:INBOX:1:3".into(), "INBOX".into()), ("imap:Entwürfe:9:4".into(), "Entwürfe".into())]);
    assert_eq!(
        run.sync(),
        r#"{"v":3,"protocol":"imap","folders":{"Entwürfe":{"uidvalidity":9,"last_uid":4},"INBOX":{"uidvalidity":1,"last_uid":3}}}"#
    );
}

#[test]
fn nested_names_use_the_servers_hierarchy_delimiter() {
    // Configured names separate levels with "/"; this server uses ".".
    let mut mb = mailbox(Security::ImplicitTls);
    mb.folders = vec!["Kunden/Anfragen".into()];
    mb.after_fetch = AfterFetch::MoveTo("Erledigt/2026".into());
    let mut script = login_prefix_rw();
    script[3] = C(b"a2 LIST \"\" \"\"\r\n");
    script.extend([
        S(b"* LIST (\\Noselect) \".\" \"\"\r\na2 OK List completed\r\n"),
        C(b"a3 SELECT \"Kunden.Anfragen\"\r\n"),
        S(b"a3 NO [NONEXISTENT] Mailbox doesn't exist\r\n"),
    ]);
    let run = drive(ImapSession::new(mb.clone(), None).unwrap(), &script, 5);
    let e = run.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::SelectMailbox));
    assert!(e.message.contains("\"Kunden/Anfragen\""), "the admin sees the configured name: {}", e.message);

    // A server whose delimiter is "/" gets the names unchanged; NIL (flat) likewise.
    for list in [&b"* LIST (\\Noselect) \"/\" \"\"\r\na2 OK done\r\n"[..], b"* LIST (\\Noselect) NIL \"\"\r\na2 OK done\r\n"] {
        let mut script = login_prefix_rw();
        script[3] = C(b"a2 LIST \"\" \"\"\r\n");
        script.extend([S(list), C(b"a3 SELECT \"Kunden/Anfragen\"\r\n"), S(b"a3 NO nope\r\n")]);
        drive(ImapSession::new(mb.clone(), None).unwrap(), &script, 5).err();
    }
}

#[test]
fn select_failure_names_the_folder() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.folders = vec!["Archiv Kunden".into()];
    let script = [
        S(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n"),
        S(b"a1 OK done\r\n"),
        S(b"a2 NO [NONEXISTENT] Mailbox doesn't exist: Archiv/Kunden\r\n"),
    ];
    let run = drive(ImapSession::new(mb, None).unwrap(), &script, 5);
    let e = run.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::SelectMailbox));
    assert!(e.message.contains("\"Archiv Kunden\""), "{}", e.message);
}

#[test]
fn bye_greeting_bad_reply_and_events_after_finish_are_protocol_errors() {
    let run = drive_all(
        || ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap(),
        &[S(b"* BYE Too many connections\r\n")],
    );
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Protocol, Stage::Greeting));

    let script = [S(b"* OK [CAPABILITY IMAP4rev1] ready\r\n"), S(b"a1 BAD Error in IMAP command\r\n")];
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap(), &script);
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Protocol, Stage::Authenticate));
    assert_no_secret(&run);

    let mut script = login_prefix();
    script.extend([
        S(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 LOGOUT\r\n"),
        S(b"a3 OK bye\r\n"),
    ]);
    let run = drive(ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap(), &script, 4);
    assert!(run.finished().is_some());
    let mut s = run.session.unwrap();
    for ev in [Event::Received(b"* OK\r\n"), Event::Stored, Event::Timer, Event::Closed] {
        assert_eq!(s.handle(ev, 1).unwrap_err().kind, ErrorKind::Protocol);
    }
}

#[test]
fn deadline_and_timeout_and_unexpected_close() {
    let mut s = ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap();
    assert!(s.handle(Event::Connected, 100).unwrap().is_empty());
    assert_eq!(s.deadline(), Some(100 + TIMEOUT));
    assert!(s.handle(Event::Timer, 200).unwrap().is_empty(), "an early timer is ignored");
    let e = s.handle(Event::Timer, 100 + TIMEOUT).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Timeout, Stage::Greeting));

    let mut s = ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap();
    s.handle(Event::Connected, 0).unwrap();
    s.handle(Event::Received(b"* OK [CAPABILITY IMAP4rev1] hi\r\n"), 0).unwrap();
    assert_eq!(s.handle(Event::Closed, 0).unwrap_err().kind, ErrorKind::Network);
}

#[test]
fn overlong_untagged_line_is_a_limit_error() {
    let mut s = ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap();
    s.handle(Event::Connected, 0).unwrap();
    let mut line = b"* OK ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 2000));
    assert_eq!(s.handle(Event::Received(&line), 0).unwrap_err().kind, ErrorKind::Limit);
}

#[test]
fn new_validates_configuration_and_sync_state() {
    let mut pop = mailbox(Security::ImplicitTls);
    pop.protocol = InboundProtocol::Pop3;
    assert_eq!(ImapSession::new(pop, None).unwrap_err().kind, ErrorKind::InvalidInput);
    let mut empty = mailbox(Security::ImplicitTls);
    empty.folders = vec![String::new()];
    assert_eq!(ImapSession::new(empty, None).unwrap_err().kind, ErrorKind::InvalidInput);
    for bad in [&br#"{"v":9,"protocol":"imap","folders":{}}"#[..], br#"{"v":1,"protocol":"pop3"}"#] {
        assert_eq!(
            ImapSession::new(mailbox(Security::ImplicitTls), Some(bad)).unwrap_err().kind,
            ErrorKind::InvalidInput
        );
    }
}

#[test]
fn folder_name_api_round_trips() {
    for name in ["Entwürfe", "&", "日本語"] {
        assert_eq!(decode_folder_name(&encode_folder_name(name)).unwrap(), name);
    }
}

#[test]
fn esearch_ranges_are_expanded_within_the_line_limit() {
    let mut script = login_prefix();
    script[0] = S(b"* OK [CAPABILITY IMAP4rev1 ESEARCH] ready\r\n");
    script.extend([
        S(b"* 9 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID SEARCH RETURN (ALL) ALL\r\n"),
        S(b"* ESEARCH (TAG \"a3\") UID ALL 1:4000000000\r\n"),
    ]);
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap(), &script);
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Limit, Stage::ListMessages));

    let mut script = login_prefix();
    script[0] = S(b"* OK [CAPABILITY IMAP4rev1 ESEARCH] ready\r\n");
    script.extend([
        S(b"* 9 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID SEARCH RETURN (ALL) ALL\r\n"),
        S(b"* ESEARCH (TAG \"a3\") UID ALL 4:6,1,9:8\r\na3 OK done\r\n"),
        C(b"a4 UID FETCH 1,4:6,8:9 (UID RFC822.SIZE)\r\n"),
    ]);
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
}

#[test]
fn uidnext_right_after_the_last_uid_skips_the_search() {
    let mut script = login_prefix();
    script.extend([
        S(b"* 7 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\n* OK [UIDNEXT 8] ok\r\na2 OK [READ-WRITE] ok\r\n"),
        C(b"a3 LOGOUT\r\n"),
        S(b"* BYE bye\r\na3 OK bye\r\n"),
    ]);
    let state = state_json(42, 7);
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), Some(&state)).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 0, remaining: 0, skipped: 0 }));
}

#[test]
fn server_closing_while_the_host_stores_still_finishes_after_stored() {
    let mut script = login_prefix();
    let sizes = format!("* 1 FETCH (UID 3 RFC822.SIZE {})\r\na4 OK ok\r\n", MSG2.len());
    let fetch = [body_fetch(1, 3, MSG2), b"a5 OK ok\r\n".to_vec()].concat();
    script.extend([
        S(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 5] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 3\r\na3 OK ok\r\n"),
        C(b"a4 UID FETCH 3 (UID RFC822.SIZE)\r\n"),
        S(sizes.as_bytes()),
        C(b"a5 UID FETCH 3 (UID BODY.PEEK[])\r\n"),
        S(&fetch),
        S(b"* BYE Autologout; idle for too long\r\n"),
        Closed,
        Idle,
        Stored,
        C(b""),
    ]);
    let run = drive_all(|| ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 1, remaining: 0, skipped: 0 }));
    assert_eq!(run.actions.iter().filter(|a| **a == Action::Close).count(), 1);
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":5,"last_uid":3}}}"#);
}

#[test]
fn debug_output_never_shows_pending_credentials() {
    let mut s = ImapSession::new(mailbox(Security::ImplicitTls), None).unwrap();
    s.handle(Event::Connected, 0).unwrap();
    // No SASL-IR: the PLAIN response waits inside the session for the continuation.
    let out = s.handle(Event::Received(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"), 0).unwrap();
    assert_eq!(out, vec![Action::Write(b"a1 AUTHENTICATE PLAIN\r\n".to_vec())]);
    let debug = format!("{s:?}");
    assert!(!debug.contains(PASSWORD) && !debug.contains(&plain_ir()), "{debug}");
    let out = s.handle(Event::Received(b"+ \r\n"), 0).unwrap();
    assert_eq!(out, vec![Action::Write(format!("{}\r\n", plain_ir()).into_bytes())]);
}

#[test]
fn oauthbearer_without_sasl_ir_sends_the_response_after_the_continuation() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.credentials = Credentials::OAuth2 { username: "agent@example.com".into(), access_token: "ya29.TOKEN".into(), mechanism: None };
    let ir = format!("{}\r\n", sasl::oauthbearer("agent@example.com", "ya29.TOKEN"));
    let script = [
        S(b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 AUTH=OAUTHBEARER] ready\r\n"),
        C(b"a1 AUTHENTICATE OAUTHBEARER\r\n"),
        S(b"+ \r\n"),
        C(ir.as_bytes()),
        S(b"+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n"),
        C(b"AQ==\r\n"),
        S(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
    ];
    let run = drive_all(|| ImapSession::new(mb.clone(), None).unwrap(), &script);
    assert_eq!(run.err().kind, ErrorKind::AuthRejected);
    assert!(run.err().message.contains("invalid_token"));
    assert!(!format!("{:?} {:?}", run.err(), run.session).contains("TOKEN"));
}

#[test]
fn garbage_from_the_server_never_panics() {
    // A small deterministic generator: IMAP-ish fragments glued at random.
    let pieces: [&[u8]; 16] = [
        b"* ",
        b"a1 ",
        b"OK ",
        b"NO ",
        b"FETCH (",
        b"UID 4 ",
        b"BODY[] ",
        b"{3}\r\n",
        b"~{2}\r\n",
        b")",
        b"\r\n",
        b"\"q\\\"",
        b"[CAPABILITY AUTH=PLAIN] ",
        b"+ ",
        b"* 1 ",
        b"ESEARCH UID ALL 1:3,",
    ];
    let mut seed = 0x2545_f491_u64;
    for round in 0..400 {
        // Half the rounds at the greeting, half in the middle of a body FETCH.
        let mut s = if round % 2 == 0 {
            let mut s = ImapSession::new(mailbox(Security::Starttls), None).unwrap();
            s.handle(Event::Connected, 0).unwrap();
            s
        } else {
            session_in_fetch()
        };
        let mut input = Vec::new();
        for _ in 0..40 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            input.extend_from_slice(pieces[(seed % pieces.len() as u64) as usize]);
        }
        for chunk in input.chunks(1 + (seed % 9) as usize) {
            if s.handle(Event::Received(chunk), 0).is_err() {
                break;
            }
        }
        assert!(!String::from_utf8_lossy(&format!("{s:?}").into_bytes()).contains(PASSWORD));
    }
}


mod after_fetch;
mod check;
mod namespace;
mod pending;

mod script;
use script::{leak, ok_run, with_after};
use transcript::Script;
mod idle;
