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

// ---- first-sync policy, after-fetch actions, skipped reporting ----

fn leak(v: Vec<u8>) -> &'static [u8] {
    Box::leak(v.into_boxed_slice())
}

/// `login_prefix_rw` with other capabilities.
fn prefix_with_caps(caps: &'static [u8]) -> Vec<Step<'static>> {
    let mut script = login_prefix_rw();
    script[0] = S(caps);
    script
}

/// SELECT answer, SEARCH, sizes and body fetch of UIDs 3 and 4 (tags a2..a5); ends right
/// after the fetch's tagged OK, with no further bytes written.
fn fetch_3_and_4() -> Vec<Step<'static>> {
    let n = MSG2.len();
    vec![
        S(b"* 2 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 3 4\r\na3 OK ok\r\n"),
        C(b"a4 UID FETCH 3:4 (UID RFC822.SIZE)\r\n"),
        S(leak(
            format!("* 1 FETCH (UID 3 RFC822.SIZE {n})\r\n* 2 FETCH (UID 4 RFC822.SIZE {n})\r\na4 OK ok\r\n")
                .into_bytes(),
        )),
        C(b"a5 UID FETCH 3:4 (UID BODY.PEEK[])\r\n"),
        S(leak([body_fetch(1, 3, MSG2), body_fetch(2, 4, MSG2), b"a5 OK ok\r\n".to_vec()].concat())),
        C(b""),
    ]
}

fn with_after(after: AfterFetch) -> Mailbox {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.after_fetch = after;
    mb
}

fn ok_run(mb: &Mailbox, state: Option<&[u8]>, script: &[Step<'_>]) -> Run {
    let run = drive_all(|| ImapSession::new(mb.clone(), state).unwrap(), script);
    assert!(run.error.is_none(), "{:?}", run.error);
    run
}

#[test]
fn first_sync_new_only_delivers_nothing_and_starts_at_uidnext() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.first_sync = FirstSync::NewOnly;
    let mut script = login_prefix();
    script.extend([
        S(b"* 500 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 901] ok\r\na2 OK ok\r\n"),
        C(b"a3 LOGOUT\r\n"),
        S(b"a3 OK bye\r\n"),
    ]);
    let run = ok_run(&mb, None, &script);
    assert!(run.delivered().is_empty());
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":7,"last_uid":900}}}"#);

    // The starting point is kept even if the run fails afterwards (here: the next folder).
    let mut two = mb.clone();
    two.folders = vec!["INBOX".into(), "Archiv".into()];
    let mut script = login_prefix();
    script.extend([
        S(b"* 500 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 901] ok\r\na2 OK ok\r\n"),
        C(b"a3 EXAMINE \"Archiv\"\r\n"),
        S(b"a3 NO no such folder\r\n"),
    ]);
    let run = drive_all(|| ImapSession::new(two.clone(), None).unwrap(), &script);
    assert_eq!(run.err().stage, Stage::SelectMailbox);
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":7,"last_uid":900}}}"#);

    // No UIDNEXT: ask for the highest UID.
    let mut script = login_prefix();
    script.extend([
        S(b"* 500 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID FETCH * (UID)\r\n"),
        S(b"* 500 FETCH (UID 873)\r\na3 OK ok\r\n"),
        C(b"a4 LOGOUT\r\n"),
        S(b"a4 OK bye\r\n"),
    ]);
    let run = ok_run(&mb, None, &script);
    assert!(run.delivered().is_empty());
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":7,"last_uid":873}}}"#);

    // Empty folder without UIDNEXT: 0, no round trip.
    let mut script = login_prefix();
    script.extend([S(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\na2 OK ok\r\n"), C(b"a3 LOGOUT\r\n")]);
    let run = ok_run(&mb, None, &script);
    let s = run.session.unwrap().sync_state().unwrap();
    assert_eq!(s, br#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":7,"last_uid":0}}}"#);
}

#[test]
fn first_sync_newest_n_fetches_only_the_highest_uids() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.first_sync = FirstSync::Newest(2);
    let n = MSG2.len();
    let sizes = format!("* 4 FETCH (UID 20 RFC822.SIZE {n})\r\n* 5 FETCH (UID 31 RFC822.SIZE {n})\r\na3 OK ok\r\n");
    let fetch = [body_fetch(4, 20, MSG2), body_fetch(5, 31, MSG2), b"a4 OK ok\r\n".to_vec()].concat();
    let mut script = login_prefix();
    script.extend([
        S(b"* 5 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 32] ok\r\na2 OK ok\r\n"),
        C(b"a3 FETCH 4:* (UID RFC822.SIZE)\r\n"),
        S(sizes.as_bytes()),
        C(b"a4 UID FETCH 20,31 (UID BODY.PEEK[])\r\n"),
        S(&fetch),
        Stored,
        C(b"a5 LOGOUT\r\n"),
        S(b"a5 OK bye\r\n"),
    ]);
    let run = ok_run(&mb, None, &script);
    assert_eq!(
        run.delivered().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["imap:INBOX:7:20", "imap:INBOX:7:31"]
    );
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":7,"last_uid":31}}}"#);

    // With a batch of one, the state starts just below the newest two, so the older ones are
    // never fetched and the other new one comes next run.
    mb.limits.max_batch_messages = 1;
    let fetch = [body_fetch(4, 20, MSG2), b"a4 OK ok\r\n".to_vec()].concat();
    let mut script = login_prefix();
    script.extend([
        S(b"* 5 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 32] ok\r\na2 OK ok\r\n"),
        C(b"a3 FETCH 4:* (UID RFC822.SIZE)\r\n"),
        S(sizes.as_bytes()),
        C(b"a4 UID FETCH 20 (UID BODY.PEEK[])\r\n"),
        S(&fetch),
        Stored,
        C(b"a5 LOGOUT\r\n"),
        S(b"a5 OK bye\r\n"),
    ]);
    let run = ok_run(&mb, None, &script);
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 1, remaining: 1, skipped: 0 }));
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":7,"last_uid":20}}}"#);
}

#[test]
fn keep_without_mark_seen_writes_nothing_but_logout() {
    let mut script = login_prefix();
    script.extend(fetch_3_and_4());
    script.extend([Idle, Stored, C(b"a6 LOGOUT\r\n")]);
    ok_run(&with_after(AfterFetch::Keep { mark_seen: false }), None, &script);
}

#[test]
fn mark_seen_after_stored_only() {
    let mut script = login_prefix_rw();
    script.extend(fetch_3_and_4());
    script.extend([
        Idle,
        Stored,
        C(b"a6 UID STORE 3:4 +FLAGS.SILENT (\\Seen)\r\n"),
        S(b"a6 OK Store completed.\r\n"),
        C(b"a7 LOGOUT\r\n"),
        S(b"a7 OK bye\r\n"),
    ]);
    let run = ok_run(&with_after(AfterFetch::Keep { mark_seen: true }), None, &script);
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 2, remaining: 0, skipped: 0 }));
}

#[test]
fn delete_uses_uid_expunge_with_uidplus_and_only_flags_without() {
    let mut script = prefix_with_caps(b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready\r\n");
    script.extend(fetch_3_and_4());
    script.extend([
        Idle,
        Stored,
        // Pipelined in one write; never a plain EXPUNGE.
        C(b"a6 UID STORE 3:4 +FLAGS.SILENT (\\Deleted)\r\na7 UID EXPUNGE 3:4\r\n"),
        S(b"a6 OK Store completed.\r\n* 1 EXPUNGE\r\n* 1 EXPUNGE\r\na7 OK Expunge completed.\r\n"),
        C(b"a8 LOGOUT\r\n"),
    ]);
    let run = ok_run(&with_after(AfterFetch::Delete), None, &script);
    assert!(!String::from_utf8_lossy(&run.wire).contains(" EXPUNGE\r\n"));

    let mut script = login_prefix_rw();
    script.extend(fetch_3_and_4());
    script.extend([
        Idle,
        Stored,
        C(b"a6 UID STORE 3:4 +FLAGS.SILENT (\\Deleted)\r\n"),
        S(b"a6 OK Store completed.\r\n"),
        C(b"a7 LOGOUT\r\n"),
    ]);
    ok_run(&with_after(AfterFetch::Delete), None, &script);
}

#[test]
fn move_uses_uid_move_or_copy_then_delete() {
    let mb = with_after(AfterFetch::MoveTo("Erledigt Übernommen".into()));
    let mut script = prefix_with_caps(b"* OK [CAPABILITY IMAP4rev1 MOVE UIDPLUS] ready\r\n");
    script.extend(fetch_3_and_4());
    script.extend([
        Idle,
        Stored,
        C(b"a6 UID MOVE 3:4 \"Erledigt &ANw-bernommen\"\r\n"),
        S(b"* OK [COPYUID 5 3:4 10:11] Moved\r\n* 1 EXPUNGE\r\n* 1 EXPUNGE\r\na6 OK Move completed.\r\n"),
        C(b"a7 LOGOUT\r\n"),
    ]);
    ok_run(&mb, None, &script);

    // No MOVE: COPY, and only after its OK the delete path (pipelined).
    let mut script = prefix_with_caps(b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready\r\n");
    script.extend(fetch_3_and_4());
    script.extend([
        Idle,
        Stored,
        C(b"a6 UID COPY 3:4 \"Erledigt &ANw-bernommen\"\r\n"),
        S(b"a6 OK [COPYUID 5 3:4 10:11] Copy completed.\r\n"),
        C(b"a7 UID STORE 3:4 +FLAGS.SILENT (\\Deleted)\r\na8 UID EXPUNGE 3:4\r\n"),
        S(b"a7 OK done\r\na8 OK done\r\n"),
        C(b"a9 LOGOUT\r\n"),
    ]);
    ok_run(&mb, None, &script);

    // A failed COPY must not flag anything \Deleted.
    let mut script = prefix_with_caps(b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready\r\n");
    script.extend(fetch_3_and_4());
    script.extend([
        Idle,
        Stored,
        C(b"a6 UID COPY 3:4 \"Erledigt &ANw-bernommen\"\r\n"),
        S(b"a6 NO [OVERQUOTA] Quota exceeded\r\n"),
    ]);
    let run = drive_all(|| ImapSession::new(mb.clone(), None).unwrap(), &script);
    let e = run.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::FetchMessage));
    assert!(
        e.message.contains("copy") && e.message.contains("\"INBOX\"") && e.message.contains("Erledigt Übernommen"),
        "{}",
        e.message
    );
    assert_eq!(e.reply.as_ref().unwrap().text, "[OVERQUOTA] Quota exceeded");
    assert!(!String::from_utf8_lossy(&run.wire).contains("Deleted"));
    // The messages are stored: the state already moved past them, and keeps them pending
    // for the next run's retry of the action.
    assert_eq!(
        run.sync(),
        r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":4,"pending":[[3,4]]}}}"#
    );
}

#[test]
fn trycreate_creates_the_target_and_retries_once() {
    let mb = with_after(AfterFetch::MoveTo("Done".into()));
    let mut script = prefix_with_caps(b"* OK [CAPABILITY IMAP4rev1 MOVE] ready\r\n");
    script.extend(fetch_3_and_4());
    script.extend([
        Idle,
        Stored,
        C(b"a6 UID MOVE 3:4 \"Done\"\r\n"),
        S(b"a6 NO [TRYCREATE] Mailbox doesn't exist: Done\r\n"),
        // Created and subscribed (a refused SUBSCRIBE does not matter), then moved.
        C(b"a7 CREATE \"Done\"\r\na8 SUBSCRIBE \"Done\"\r\na9 UID MOVE 3:4 \"Done\"\r\n"),
        S(b"a7 OK Create completed.\r\na8 NO Subscriptions are off.\r\na9 OK Move completed.\r\n"),
        C(b"a10 LOGOUT\r\n"),
    ]);
    ok_run(&mb, None, &script);

    // A second TRYCREATE is an error naming the folder and the action.
    let mut script = prefix_with_caps(b"* OK [CAPABILITY IMAP4rev1 MOVE] ready\r\n");
    script.extend(fetch_3_and_4());
    script.extend([
        Idle,
        Stored,
        C(b"a6 UID MOVE 3:4 \"Done\"\r\n"),
        S(b"a6 NO [TRYCREATE] no such folder\r\n"),
        C(b"a7 CREATE \"Done\"\r\na8 SUBSCRIBE \"Done\"\r\na9 UID MOVE 3:4 \"Done\"\r\n"),
        S(b"a7 OK Create completed.\r\na8 OK Subscribed.\r\na9 NO [TRYCREATE] still none\r\n"),
    ]);
    let run = drive_all(|| ImapSession::new(mb.clone(), None).unwrap(), &script);
    assert!(
        run.err().message.contains("move the fetched messages to \"Done\" in folder \"INBOX\""),
        "{}",
        run.err().message
    );
}

#[test]
fn a_stored_in_the_middle_of_the_batch_writes_nothing_until_the_batch_is_covered() {
    let n = MSG2.len();
    let mut script = prefix_with_caps(b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready\r\n");
    script.extend([
        S(b"* 2 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 3 4\r\na3 OK ok\r\n"),
        C(b"a4 UID FETCH 3:4 (UID RFC822.SIZE)\r\n"),
        S(leak(
            format!("* 1 FETCH (UID 3 RFC822.SIZE {n})\r\n* 2 FETCH (UID 4 RFC822.SIZE {n})\r\na4 OK ok\r\n")
                .into_bytes(),
        )),
        C(b"a5 UID FETCH 3:4 (UID BODY.PEEK[])\r\n"),
        S(leak(body_fetch(1, 3, MSG2))),
        Stored,
        C(b""),
        S(leak([body_fetch(2, 4, MSG2), b"a5 OK ok\r\n".to_vec()].concat())),
        C(b""),
        Idle,
        Stored,
        C(b"a6 UID STORE 3:4 +FLAGS.SILENT (\\Deleted)\r\na7 UID EXPUNGE 3:4\r\n"),
    ]);
    let run = ok_run(&with_after(AfterFetch::Delete), None, &script);
    assert_eq!(run.delivered().len(), 2);
}

#[test]
fn connection_closed_before_stored_is_an_error_and_changes_nothing() {
    for after in [AfterFetch::Delete, AfterFetch::Keep { mark_seen: true }, AfterFetch::MoveTo("Done".into())] {
        let mut script = prefix_with_caps(b"* OK [CAPABILITY IMAP4rev1 UIDPLUS MOVE] ready\r\n");
        script.extend(fetch_3_and_4());
        script.extend([Idle, S(b"* BYE Autologout\r\n")]);
        let run = drive_all(|| ImapSession::new(with_after(after.clone()), None).unwrap(), &script);
        assert_eq!(run.err().stage, Stage::FetchMessage);
        assert_eq!(run.session.as_ref().unwrap().sync_state(), None, "nothing stored, nothing committed");

        let mut script = prefix_with_caps(b"* OK [CAPABILITY IMAP4rev1 UIDPLUS MOVE] ready\r\n");
        script.extend(fetch_3_and_4());
        script.extend([Idle, Closed]);
        let run = drive_all(|| ImapSession::new(with_after(after.clone()), None).unwrap(), &script);
        assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Network, Stage::FetchMessage));
        assert!(run.err().message.contains("folder \"INBOX\""), "{}", run.err().message);
        assert_eq!(run.session.as_ref().unwrap().sync_state(), None);
        let wire = String::from_utf8_lossy(&run.wire).to_string();
        for verb in ["STORE", "EXPUNGE", "MOVE", "COPY"] {
            assert!(!wire.contains(verb), "{verb} written before Stored: {wire}");
        }
    }
}

#[test]
fn each_folder_gets_its_action_before_the_next_select() {
    let mut mb = with_after(AfterFetch::Keep { mark_seen: true });
    mb.folders = vec!["INBOX".into(), "Support".into()];
    let n = MSG2.len();
    let mut script = login_prefix_rw();
    script.extend(fetch_3_and_4());
    script.extend([
        Idle,
        Stored,
        C(b"a6 UID STORE 3:4 +FLAGS.SILENT (\\Seen)\r\n"),
        S(b"a6 OK done\r\n"),
        C(b"a7 SELECT \"Support\"\r\n"),
        S(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 2] ok\r\na7 OK ok\r\n"),
        C(b"a8 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 9\r\na8 OK ok\r\n"),
        C(b"a9 UID FETCH 9 (UID RFC822.SIZE)\r\n"),
        S(leak(format!("* 1 FETCH (UID 9 RFC822.SIZE {n})\r\na9 OK ok\r\n").into_bytes())),
        C(b"a10 UID FETCH 9 (UID BODY.PEEK[])\r\n"),
        S(leak([body_fetch(1, 9, MSG2), b"a10 OK ok\r\n".to_vec()].concat())),
        C(b""),
        Idle,
        Stored,
        C(b"a11 UID STORE 9 +FLAGS.SILENT (\\Seen)\r\n"),
        S(b"a11 OK done\r\n"),
        C(b"a12 LOGOUT\r\n"),
        S(b"a12 OK bye\r\n"),
    ]);
    let run = ok_run(&mb, None, &script);
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 3, remaining: 0, skipped: 0 }));
}

#[test]
fn move_target_that_is_fetched_is_invalid() {
    for (folders, target) in [(vec![], "inbox"), (vec!["INBOX".to_string(), "Done".to_string()], "Done"), (vec![], "")]
    {
        let mut mb = with_after(AfterFetch::MoveTo(target.into()));
        mb.folders = folders;
        assert_eq!(ImapSession::new(mb, None).unwrap_err().kind, ErrorKind::InvalidInput, "{target:?}");
    }
}

#[test]
fn uidvalidity_change_refetches_everything_even_with_new_only() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.first_sync = FirstSync::NewOnly;
    let mut script = login_prefix();
    script.extend(fetch_3_and_4());
    script.extend([Stored, C(b"a6 LOGOUT\r\n")]);
    // fetch_3_and_4 reports UIDVALIDITY 1; the state knew 99.
    let state = state_json(99, 50);
    let run = ok_run(&mb, Some(&state), &script);
    assert_eq!(run.delivered().len(), 2);
    assert_eq!(run.sync().as_bytes(), &state_json(1, 4)[..]);
}

#[test]
fn oversized_message_is_reported_once_and_an_omitted_uid_is_not_jumped_over() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.limits.max_message_bytes = 100;
    let sizes = b"* 1 FETCH (UID 1 RFC822.SIZE 50)\r\n* 2 FETCH (UID 2 RFC822.SIZE 5000)\r\n* 3 FETCH (UID 3 RFC822.SIZE 60)\r\na4 OK ok\r\n";
    // Run 1: UID 2 is too big; the server leaves UID 1 out of its FETCH answer.
    let mut script = login_prefix();
    script.extend([
        S(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 1 2 3\r\na3 OK ok\r\n"),
        C(b"a4 UID FETCH 1:3 (UID RFC822.SIZE)\r\n"),
        S(sizes),
        C(b"a5 UID FETCH 1,3 (UID BODY.PEEK[])\r\n"),
        S(leak([body_fetch(3, 3, MSG2), b"a5 OK ok\r\n".to_vec()].concat())),
        Stored,
        C(b"a6 LOGOUT\r\n"),
        S(b"a6 OK bye\r\n"),
    ]);
    let run = ok_run(&mb, None, &script);
    let skipped: Vec<_> =
        run.actions.iter().filter_map(|a| if let Action::Skipped(s) = a { Some(s) } else { None }).collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        (skipped[0].id.as_str(), skipped[0].folder.as_str(), skipped[0].size),
        ("imap:INBOX:1:2", "INBOX", 5000)
    );
    assert!(
        skipped[0].reason.contains("max_message_bytes") && skipped[0].reason.contains("raise"),
        "{}",
        skipped[0].reason
    );
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 1, remaining: 0, skipped: 1 }));
    // UID 1 was never delivered: last_uid stays below it, and UID 2 is remembered as reported.
    let state = run.sync();
    assert_eq!(state, r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":0,"skipped":[2]}}}"#);

    // Run 2 with that state: UID 1 is asked for again, UID 2 is not reported again.
    let mut script = login_prefix();
    script.extend([
        S(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 1 2 3\r\na3 OK ok\r\n"),
        C(b"a4 UID FETCH 1:3 (UID RFC822.SIZE)\r\n"),
        S(sizes),
        C(b"a5 UID FETCH 1,3 (UID BODY.PEEK[])\r\n"),
        S(leak([body_fetch(1, 1, MSG2), body_fetch(3, 3, MSG2), b"a5 OK ok\r\n".to_vec()].concat())),
        Stored,
        C(b"a6 LOGOUT\r\n"),
        S(b"a6 OK bye\r\n"),
    ]);
    let run = ok_run(&mb, Some(state.as_bytes()), &script);
    assert!(!run.actions.iter().any(|a| matches!(a, Action::Skipped(_))));
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 2, remaining: 0, skipped: 0 }));
    let state = run.sync();
    assert_eq!(state, r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":3}}}"#);

    // Run 3: nothing above 3, nothing reported.
    let mut script = login_prefix();
    script.extend([
        S(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n* OK [UIDNEXT 4] ok\r\na2 OK ok\r\n"),
        C(b"a3 LOGOUT\r\n"),
    ]);
    let run = ok_run(&mb, Some(state.as_bytes()), &script);
    assert!(run.actions.iter().all(|a| !matches!(a, Action::Skipped(_) | Action::Deliver(_))));
}

#[test]
fn skipped_message_gets_no_after_fetch_action() {
    let mut mb = with_after(AfterFetch::Delete);
    mb.limits.max_message_bytes = 100;
    let mut script = prefix_with_caps(b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready\r\n");
    script.extend([
        S(b"* 2 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID SEARCH ALL\r\n"),
        S(b"* SEARCH 1 2\r\na3 OK ok\r\n"),
        C(b"a4 UID FETCH 1:2 (UID RFC822.SIZE)\r\n"),
        S(b"* 1 FETCH (UID 1 RFC822.SIZE 50)\r\n* 2 FETCH (UID 2 RFC822.SIZE 5000)\r\na4 OK ok\r\n"),
        C(b"a5 UID FETCH 1 (UID BODY.PEEK[])\r\n"),
        S(leak([body_fetch(1, 1, MSG2), b"a5 OK ok\r\n".to_vec()].concat())),
        Stored,
        C(b"a6 UID STORE 1 +FLAGS.SILENT (\\Deleted)\r\na7 UID EXPUNGE 1\r\n"),
        S(b"a6 OK ok\r\na7 OK ok\r\n"),
        C(b"a8 LOGOUT\r\n"),
    ]);
    let run = ok_run(&mb, None, &script);
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":2}}}"#);
}

/// A 50,000-message folder, first sync All, default limits: no SEARCH line grows with the
/// folder; UIDs and sizes are listed one FETCH line per message in UID windows sized to the
/// batch (widened while they come back short), and only the batch is kept.
#[test]
fn first_sync_of_fifty_thousand_messages_fits_the_limits() {
    const COUNT: u32 = 50_000;
    let mut mb = mailbox(Security::ImplicitTls);
    mb.limits = Limits::default();
    let body = b"Subject: x\r\n\r\nhi\r\n";
    // Every other UID is gone, so a SEARCH answer would be about 300 KB.
    let listing = |tag: &str, from: u32, to: u32| {
        let mut v = Vec::new();
        for uid in (from..=to).filter(|u| u % 2 == 0) {
            v.extend_from_slice(format!("* {} FETCH (UID {uid} RFC822.SIZE {})\r\n", uid / 2, body.len()).as_bytes());
        }
        v.extend_from_slice(format!("{tag} OK ok\r\n").as_bytes());
        v
    };
    let batch: Vec<u32> = (1..=500).map(|i| i * 2).collect();
    let fetch_cmd = format!("a5 UID FETCH {} (UID BODY.PEEK[])\r\n", super::command::sequence_set(&batch));
    let mut bodies = Vec::new();
    for uid in &batch {
        bodies.extend(body_fetch(uid / 2, *uid, body));
    }
    bodies.extend_from_slice(b"a5 OK ok\r\n");
    let (first, second) = (listing("a3", 1, 500), listing("a4", 501, 1500));
    let mut script = login_prefix();
    script.extend([
        S(b"* 50000 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n* OK [UIDNEXT 100001] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID FETCH 1:500 (UID RFC822.SIZE)\r\n"),
        S(&first),
        C(b"a4 UID FETCH 501:1500 (UID RFC822.SIZE)\r\n"),
        S(&second),
        C(fetch_cmd.as_bytes()),
        S(&bodies),
        Stored,
        C(b"a6 LOGOUT\r\n"),
        S(b"a6 OK bye\r\n"),
    ]);
    for chunk in [usize::MAX, 4096, 333] {
        let run = drive(ImapSession::new(mb.clone(), None).unwrap(), &script, chunk);
        assert!(run.error.is_none(), "{:?}", run.error);
        assert_eq!(run.delivered().len(), 500);
        assert_eq!(run.finished(), Some(&FetchSummary { delivered: 500, remaining: COUNT - 500, skipped: 0 }));
        assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":1000}}}"#);
    }
    // The next run continues above the last UID, the same way.
    let mut script = login_prefix();
    script.extend([
        S(b"* 50000 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n* OK [UIDNEXT 100001] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID FETCH 1001:1500 (UID RFC822.SIZE)\r\n"),
    ]);
    let state = state_json(1, 1000);
    let run = drive(ImapSession::new(mb.clone(), Some(&state)).unwrap(), &script, usize::MAX);
    assert!(run.error.is_none(), "{:?}", run.error);
}

#[test]
fn sparse_large_folder_widens_windows_and_counts_the_rest() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.limits.max_batch_messages = 2;
    let n = MSG2.len();
    let mut script = login_prefix();
    script.extend([
        // 100 messages could make a SEARCH line longer than the 1024-byte limit.
        S(b"* 100 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n* OK [UIDNEXT 5001] ok\r\na2 OK ok\r\n"),
        C(b"a3 UID FETCH 1:2 (UID RFC822.SIZE)\r\n"),
        S(b"a3 OK ok\r\n"),
        C(b"a4 UID FETCH 3:6 (UID RFC822.SIZE)\r\n"),
        S(b"a4 OK ok\r\n"),
        C(b"a5 UID FETCH 7:14 (UID RFC822.SIZE)\r\n"),
        S(leak(format!("* 1 FETCH (UID 10 RFC822.SIZE {n})\r\na5 OK ok\r\n").into_bytes())),
        C(b"a6 UID FETCH 15:30 (UID RFC822.SIZE)\r\n"),
        S(leak(
            format!("* 3 FETCH (UID 25 RFC822.SIZE {n})\r\n* 2 FETCH (UID 20 RFC822.SIZE {n})\r\na6 OK ok\r\n")
                .into_bytes(),
        )),
        C(b"a7 UID FETCH 10,20 (UID BODY.PEEK[])\r\n"),
        S(leak([body_fetch(1, 10, MSG2), body_fetch(2, 20, MSG2), b"a7 OK ok\r\n".to_vec()].concat())),
        Stored,
        C(b"a8 LOGOUT\r\n"),
        S(b"a8 OK bye\r\n"),
    ]);
    let run = ok_run(&mb, None, &script);
    // UID 25 plus the 97 messages above sequence number 3.
    assert_eq!(run.finished(), Some(&FetchSummary { delivered: 2, remaining: 98, skipped: 0 }));
    assert_eq!(run.sync(), r#"{"v":3,"protocol":"imap","folders":{"INBOX":{"uidvalidity":1,"last_uid":20}}}"#);
}

// ---- Connection check (`ImapSession::check`) ----

use crate::session::{CheckSummary, FolderCount, Step as CheckStep, StepReport};

fn progress(run: &Run) -> Vec<(CheckStep, &str)> {
    run.actions
        .iter()
        .filter_map(|a| if let Action::Progress(r) = a { Some((r.step, r.detail.as_str())) } else { None })
        .collect()
}

fn steps(run: &Run) -> Vec<CheckStep> {
    progress(run).into_iter().map(|(s, _)| s).collect()
}

fn report(step: CheckStep, detail: &str) -> Action {
    Action::Progress(StepReport::new(step, detail))
}

fn checked(folders: &[(&str, u32)]) -> Action {
    Action::Finished(Outcome::Checked(CheckSummary {
        folders: folders.iter().map(|&(f, n)| FolderCount { folder: f.into(), messages: n }).collect(),
    }))
}

fn assert_details_hide(run: &Run, hidden: &[&str]) {
    for (step, detail) in progress(run) {
        for h in hidden {
            assert!(!detail.contains(h), "{step:?} detail shows {h:?}: {detail}");
        }
    }
}

#[test]
fn check_on_implicit_tls_examines_every_folder_and_reports_each_step() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.folders = vec!["INBOX".into(), "Entwürfe".into()];
    // Ignored in a check (`new` would refuse this move target).
    mb.after_fetch = AfterFetch::MoveTo("INBOX".into());
    mb.first_sync = FirstSync::NewOnly;
    let auth = format!("a1 AUTHENTICATE PLAIN {}\r\n", plain_ir());
    let script = [
        S(b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN AUTH=XOAUTH2] Dovecot ready.\r\n"),
        C(auth.as_bytes()),
        S(b"a1 OK [CAPABILITY IMAP4rev1 SASL-IR ID UIDPLUS MOVE] Logged in\r\n"),
        C(b"a2 EXAMINE \"INBOX\"\r\n"),
        S(b"* FLAGS (\\Seen \\Deleted)\r\n* 12 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\n* OK [UIDNEXT 13] next\r\na2 OK [READ-ONLY] Examine completed.\r\n"),
        C(b"a3 EXAMINE \"Entw&APw-rfe\"\r\n"),
        S(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 9] ok\r\na3 OK [READ-ONLY] Examine completed.\r\n"),
        C(b"a4 LOGOUT\r\n"),
        S(b"* BYE Logging out\r\na4 OK Logout completed.\r\n"),
    ];
    let run = drive_all(|| ImapSession::check(mb.clone()).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        run.actions,
        vec![
            report(CheckStep::Greeting, "server ready: Dovecot ready."),
            report(CheckStep::Capabilities, "capabilities: IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN AUTH=XOAUTH2"),
            report(CheckStep::Mechanisms, "offered: PLAIN XOAUTH2, LOGIN command; using AUTHENTICATE PLAIN"),
            report(CheckStep::Login, "logged in as agent@example.com"),
            report(CheckStep::Folder, "INBOX: 12 messages"),
            report(CheckStep::Folder, "Entwürfe: 1 message"),
            report(CheckStep::Logout, "logged out"),
            Action::Close,
            checked(&[("INBOX", 12), ("Entwürfe", 1)]),
        ]
    );
    assert_details_hide(&run, &[PASSWORD, "s3cr", &plain_ir()]);
    let s = run.session.as_ref().unwrap();
    assert_eq!(s.sync_state(), None, "a check keeps no sync state");
    assert_eq!(s.deadline(), None);
}

#[test]
fn check_reports_each_step_with_the_bytes_written_next() {
    let mut s = ImapSession::check(mailbox(Security::ImplicitTls)).unwrap();
    assert!(s.handle(Event::Connected, 0).unwrap().is_empty());
    let actions = s.handle(Event::Received(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n"), 10).unwrap();
    let kinds: Vec<_> = actions
        .iter()
        .map(|a| match a {
            Action::Progress(r) => format!("{:?}", r.step),
            Action::Write(w) => String::from_utf8_lossy(&w[..w.len().min(22)]).into_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["Greeting", "Capabilities", "Mechanisms", "a1 AUTHENTICATE PLAIN "]);
    assert_eq!(s.deadline(), Some(10 + TIMEOUT));
    let actions = s.handle(Event::Received(b"a1 OK in\r\n"), 20).unwrap();
    assert!(
        matches!(&actions[..], [Action::Progress(r), Action::Write(w)] if r.step == CheckStep::Login && w == b"a2 EXAMINE \"INBOX\"\r\n"),
        "{actions:?}"
    );
    assert_eq!(s.deadline(), Some(20 + TIMEOUT));
}

#[test]
fn check_over_starttls_reports_tls_and_never_shows_text_sent_before_it() {
    let answer = format!("{}\r\n", plain_ir());
    let script = [
        S(b"* OK FORGED-GREETING call +1 555 for help\r\n"),
        C(b"a1 CAPABILITY\r\n"),
        S(b"* CAPABILITY IMAP4rev1 STARTTLS X-FORGED-CAP AUTH=FORGEDMECH\r\na1 OK FORGED-OK\r\n"),
        C(b"a2 STARTTLS\r\n"),
        S(b"a2 OK Begin TLS negotiation now.\r\n"),
        Tls,
        C(b"a3 CAPABILITY\r\n"),
        S(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN LOGINDISABLED\r\na3 OK Pre-login capabilities listed.\r\n"),
        C(b"a4 AUTHENTICATE PLAIN\r\n"),
        S(b"+ \r\n"),
        C(answer.as_bytes()),
        S(b"a4 OK Logged in\r\n"),
        C(b"a5 EXAMINE \"INBOX\"\r\n"),
        S(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 3] UIDs valid\r\na5 OK [READ-ONLY] Examine completed.\r\n"),
        C(b"a6 LOGOUT\r\n"),
        S(b"* BYE Logging out\r\n"),
        Closed,
    ];
    let run = drive_all(|| ImapSession::check(mailbox(Security::Starttls)).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        run.actions,
        vec![
            report(CheckStep::Greeting, "server ready (its text arrived before encryption and is not shown)"),
            report(
                CheckStep::Capabilities,
                "STARTTLS offered (the other capabilities arrived before encryption and are not shown)"
            ),
            Action::StartTls,
            report(CheckStep::Starttls, "connection encrypted with STARTTLS"),
            report(CheckStep::Capabilities, "capabilities: IMAP4rev1 AUTH=PLAIN LOGINDISABLED"),
            report(CheckStep::Mechanisms, "offered: PLAIN; using AUTHENTICATE PLAIN"),
            report(CheckStep::Login, "logged in as agent@example.com"),
            report(CheckStep::Folder, "INBOX: 0 messages"),
            report(CheckStep::Logout, "logged out"),
            Action::Close,
            checked(&[("INBOX", 0)]),
        ]
    );
    assert_details_hide(&run, &["FORGED", "555", PASSWORD, "s3cr"]);
}

#[test]
fn check_with_opted_in_plaintext_uses_login_and_may_quote_the_server() {
    let mut mb = mailbox(Security::InsecurePlaintext);
    mb.credentials = Credentials::Basic { username: "test".into(), password: "pw-plain-1".into() };
    let script = [
        S(b"* OK test server ready\r\n"),
        C(b"a1 CAPABILITY\r\n"),
        S(b"* CAPABILITY IMAP4rev1\r\na1 OK done\r\n"),
        C(b"a2 LOGIN \"test\" \"pw-plain-1\"\r\n"),
        S(b"a2 OK Logged in\r\n"),
        C(b"a3 EXAMINE \"INBOX\"\r\n"),
        S(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 5] ok\r\na3 OK done\r\n"),
        C(b"a4 LOGOUT\r\n"),
        S(b"a4 OK bye\r\n"),
    ];
    let run = drive_all(|| ImapSession::check(mb.clone()).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        progress(&run),
        [
            (CheckStep::Greeting, "server ready: test server ready"),
            (CheckStep::Capabilities, "capabilities: IMAP4rev1"),
            (CheckStep::Mechanisms, "offered: LOGIN command; using LOGIN"),
            (CheckStep::Login, "logged in as test"),
            (CheckStep::Folder, "INBOX: 3 messages"),
            (CheckStep::Logout, "logged out"),
        ]
    );
    assert_eq!(run.actions.last(), Some(&checked(&[("INBOX", 3)])));
    assert_details_hide(&run, &["pw-plain-1"]);
}

#[test]
fn check_with_rejected_login_fails_like_a_fetch_without_a_login_step() {
    let basic = mailbox(Security::ImplicitTls);
    let mut oauth = mailbox(Security::ImplicitTls);
    oauth.credentials =
        Credentials::OAuth2 { username: "agent@example.com".into(), access_token: "ya29.SECRET-TOKEN".into(), mechanism: None };
    let basic_auth = format!("a1 AUTHENTICATE PLAIN {}\r\n", plain_ir());
    let oauth_auth =
        format!("a1 AUTHENTICATE OAUTHBEARER {}\r\n", sasl::oauthbearer("agent@example.com", "ya29.SECRET-TOKEN"));
    for (mb, auth, mechanisms) in [
        (basic, basic_auth, "offered: PLAIN OAUTHBEARER, LOGIN command; using AUTHENTICATE PLAIN"),
        (oauth, oauth_auth, "offered: PLAIN OAUTHBEARER, LOGIN command; using AUTHENTICATE OAUTHBEARER"),
    ] {
        let script = [
            S(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=OAUTHBEARER] ready\r\n"),
            C(auth.as_bytes()),
            S(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
        ];
        let run = drive_all(|| ImapSession::check(mb.clone()).unwrap(), &script);
        let e = run.err();
        assert_eq!((e.kind, e.stage), (ErrorKind::AuthRejected, Stage::Authenticate));
        assert_eq!(e.reply.as_ref().unwrap().text, "[AUTHENTICATIONFAILED] Authentication failed.");
        assert_eq!(steps(&run), [CheckStep::Greeting, CheckStep::Capabilities, CheckStep::Mechanisms]);
        assert_eq!(progress(&run)[2].1, mechanisms);
        assert!(!run.actions.iter().any(|a| matches!(a, Action::Finished(_))));
        assert_no_secret(&run);
        for text in [format!("{e}"), format!("{e:?}")] {
            assert!(!text.contains("SECRET-TOKEN"), "token leaked: {text}");
        }
        assert_details_hide(&run, &[PASSWORD, "s3cr", "SECRET-TOKEN"]);
    }
}

#[test]
fn check_of_a_missing_folder_fails_like_a_fetch_naming_the_folder() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.folders = vec!["INBOX".into(), "Archiv Kunden".into()];
    let mut script = login_prefix();
    script[3] = C(b"a2 EXAMINE \"INBOX\"\r\n");
    script.extend([
        S(b"* 4 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK [READ-ONLY] ok\r\n"),
        C(b"a3 EXAMINE \"Archiv Kunden\"\r\n"),
        S(b"a3 NO [NONEXISTENT] Mailbox doesn't exist: Archiv Kunden\r\n"),
    ]);
    let run = drive_all(|| ImapSession::check(mb.clone()).unwrap(), &script);
    let e = run.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::SelectMailbox));
    assert!(e.message.contains("\"Archiv Kunden\""), "{}", e.message);
    assert_eq!(e.reply.as_ref().unwrap().code, "NO");
    assert_eq!(
        steps(&run),
        [CheckStep::Greeting, CheckStep::Capabilities, CheckStep::Mechanisms, CheckStep::Login, CheckStep::Folder]
    );

    // A folder without UIDVALIDITY could not be fetched, so the check fails on it too.
    let mut script = login_prefix();
    script[3] = C(b"a2 EXAMINE \"INBOX\"\r\n");
    script.push(S(b"* 4 EXISTS\r\na2 OK ok\r\n"));
    let run = drive_all(|| ImapSession::check(mailbox(Security::ImplicitTls)).unwrap(), &script);
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Protocol, Stage::SelectMailbox));
    assert!(!steps(&run).contains(&CheckStep::Folder));
}

#[test]
fn check_writes_nothing_that_reads_or_changes_messages() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.folders = vec!["Kunden/Anfragen".into()];
    mb.after_fetch = AfterFetch::MoveTo("Erledigt/2026".into());
    let mut script = login_prefix();
    script[3] = C(b"a2 LIST \"\" \"\"\r\n");
    script.extend([
        S(b"* LIST (\\Noselect) \".\" \"\"\r\na2 OK List completed\r\n"),
        C(b"a3 EXAMINE \"Kunden.Anfragen\"\r\n"),
        S(b"* 50000 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n* OK [UIDNEXT 100001] ok\r\na3 OK [READ-ONLY] ok\r\n"),
        C(b"a4 LOGOUT\r\n"),
        S(b"a4 OK bye\r\n"),
    ]);
    let run = drive_all(|| ImapSession::check(mb.clone()).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(progress(&run)[4], (CheckStep::Folder, "Kunden/Anfragen: 50000 messages"));
    assert_eq!(run.actions.last(), Some(&checked(&[("Kunden/Anfragen", 50000)])));
    let wire = String::from_utf8_lossy(&run.wire).to_string();
    for verb in ["SELECT", "SEARCH", "FETCH", "STORE", "EXPUNGE", "MOVE", "COPY", "CREATE"] {
        assert!(!wire.contains(verb), "{verb} written by a check: {wire}");
    }
}

#[test]
fn check_quotes_server_text_without_control_characters_and_at_most_200_characters() {
    let mut greeting = b"* OK \x1b[2J\x07Welcome ".to_vec();
    greeting.extend(std::iter::repeat_n(b'x', 300));
    greeting.extend_from_slice(b"\r\n");
    let script = [S(leak(greeting)), C(b"a1 CAPABILITY\r\n")];
    let run = drive_all(|| ImapSession::check(mailbox(Security::ImplicitTls)).unwrap(), &script);
    let (step, detail) = progress(&run)[0];
    assert_eq!(step, CheckStep::Greeting);
    let quoted = detail.strip_prefix("server ready: [2JWelcome xxx").expect(detail);
    assert!(!detail.chars().any(char::is_control), "{detail:?}");
    assert_eq!(detail.chars().count() - "server ready: ".len(), 200, "{detail}");
    assert!(quoted.ends_with('…'), "{detail}");
}

#[test]
fn check_after_preauth_reports_the_login_without_credentials() {
    let script = [
        S(b"* PREAUTH [CAPABILITY IMAP4rev1] Logged in as agent\r\n"),
        C(b"a1 EXAMINE \"INBOX\"\r\n"),
        S(b"* 2 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na1 OK ok\r\n"),
        C(b"a2 LOGOUT\r\n"),
        S(b"a2 OK bye\r\n"),
    ];
    let run = drive_all(|| ImapSession::check(mailbox(Security::ImplicitTls)).unwrap(), &script);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        progress(&run)[..2],
        [
            (CheckStep::Greeting, "server ready and already logged in (PREAUTH): Logged in as agent"),
            (CheckStep::Login, "the server logged the connection in itself (PREAUTH); no credentials were sent"),
        ]
    );
    assert_eq!(steps(&run)[2..], [CheckStep::Folder, CheckStep::Logout]);
}

#[test]
fn check_validates_the_configuration_like_new() {
    let mut pop = mailbox(Security::ImplicitTls);
    pop.protocol = InboundProtocol::Pop3;
    assert_eq!(ImapSession::check(pop).unwrap_err().kind, ErrorKind::InvalidInput);
    let mut empty = mailbox(Security::ImplicitTls);
    empty.folders = vec!["INBOX".into(), String::new()];
    assert_eq!(ImapSession::check(empty).unwrap_err().kind, ErrorKind::InvalidInput);
}

#[test]
fn starttls_check_without_starttls_fails_before_any_credential() {
    let script = [S(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n")];
    let run = drive_all(|| ImapSession::check(mailbox(Security::Starttls)).unwrap(), &script);
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Policy, Stage::Starttls));
    assert!(run.wire.is_empty());
    // The greeting's actions are lost with the error returned by the same call; the error's
    // stage tells the admin how far it got.
    assert!(steps(&run).is_empty());
}

#[test]
fn normal_sessions_never_report_progress() {
    let starttls = [
        S(b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready\r\n"),
        C(b"a1 STARTTLS\r\n"),
        S(b"a1 OK go\r\n"),
        Tls,
        C(b"a2 CAPABILITY\r\n"),
        S(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\na2 OK done\r\n"),
        C(leak(format!("a3 AUTHENTICATE PLAIN {}\r\n", plain_ir()).into_bytes())),
    ];
    let mut implicit = login_prefix();
    implicit.extend([
        S(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK ok\r\n"),
        C(b"a3 LOGOUT\r\n"),
        S(b"a3 OK bye\r\n"),
    ]);
    for (security, script) in [(Security::Starttls, &starttls[..]), (Security::ImplicitTls, &implicit[..])] {
        let run = drive(ImapSession::new(mailbox(security), None).unwrap(), script, usize::MAX);
        assert!(run.error.is_none(), "{:?}", run.error);
        assert!(!run.actions.is_empty());
        assert!(!run.actions.iter().any(|a| matches!(a, Action::Progress(_))), "{:?}", run.actions);
    }
}

mod pending;
mod namespace;
