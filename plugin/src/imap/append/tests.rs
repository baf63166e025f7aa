use super::*;
use crate::config::{AfterFetch, Credentials, FirstSync, Limits, Security};
use crate::imap::transcript::{self, drive, drive_all, Scripted, Step};
use crate::sasl;
use Step::{Closed, Tls, C, S};

const PASSWORD: &str = "Sent-Pw\"9\\x";
const USER: &str = "agent@example.com";
const MSG: &[u8] = b"From: agent@example.com\r\nTo: ann@example.org\r\nSubject: Re: Order\r\n\r\nIt ships today.\r\n";

fn mailbox(security: Security) -> Mailbox {
    Mailbox {
        protocol: InboundProtocol::Imap,
        server: Server { host: "imap.example.com".into(), port: 993, security },
        credentials: Credentials::Basic { username: USER.into(), password: PASSWORD.into() },
        folders: vec![],
        limits: Limits { max_line_bytes: 1024, max_message_bytes: 4096, ..Limits::default() },
        after_fetch: AfterFetch::default(),
        first_sync: FirstSync::All,
    }
}

fn session(security: Security, folder: &str) -> AppendSession {
    AppendSession::new(mailbox(security), folder.into(), MSG.to_vec()).expect("valid")
}

impl Scripted for AppendSession {
    // Scripts may stop checking what is written once the point is made.
    const CHECKS_EVERY_WRITE: bool = false;

    fn after_handle(&self) {
        let tls_handshake = matches!(self.state, State::Login) && self.conn.awaiting_tls();
        let waiting = !tls_handshake && !matches!(self.state, State::Finished | State::Failed);
        assert_eq!(self.deadline().is_some(), waiting, "a deadline exactly while waiting for the server");
    }
}

type Run = transcript::Run<AppendSession>;

impl Run {
    fn saved(&self) -> Option<&SavedCopy> {
        self.actions.iter().find_map(|a| if let Action::Finished(Outcome::Appended(s)) = a { Some(s) } else { None })
    }
}

fn assert_no_secret(run: &Run) {
    let text = format!("{:?} {:?}", run.error, run.actions);
    for form in [PASSWORD.to_string(), sasl::plain(USER, PASSWORD)] {
        assert!(!text.contains(&form), "secret leaked: {text}");
    }
}

fn with_crlf(head: &str, body: &[u8]) -> Vec<u8> {
    let mut v = head.as_bytes().to_vec();
    v.extend_from_slice(body);
    v.extend_from_slice(b"\r\n");
    v
}

const GREETING_PLUS: &[u8] =
    b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ UIDPLUS AUTH=PLAIN] Dovecot ready.\r\n";

/// A session over implicit TLS saving to "Sent", through `script`.
fn to_sent(script: &[Step<'_>]) -> Run {
    drive_all(|| session(Security::ImplicitTls, "Sent"), script)
}

/// `to_sent` after a LITERAL+ greeting and an accepted login (what is written unchecked).
fn logged_in(rest: &[Step<'_>]) -> Run {
    to_sent(&[&[S(GREETING_PLUS), S(b"a1 OK Logged in\r\n")], rest].concat())
}

/// The SASL-IR login the sessions write.
fn plain_login() -> String {
    format!("a1 AUTHENTICATE PLAIN {}\r\n", sasl::plain(USER, PASSWORD))
}

/// `tag APPEND "folder" (\Seen) {n+}` (non-synchronising) with the message and its CRLF.
fn append_plus(tag: &str, folder: &str) -> Vec<u8> {
    with_crlf(&format!("{tag} APPEND \"{folder}\" (\\Seen) {{{}+}}\r\n", MSG.len()), MSG)
}

#[test]
fn implicit_tls_literal_plus_appends_in_one_write_and_reports_appenduid() {
    let login = plain_login();
    let append = append_plus("a2", "Sent");
    let run = to_sent(&[
        S(GREETING_PLUS),
        C(login.as_bytes()),
        S(b"a1 OK [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS APPENDLIMIT=100000] Logged in\r\n"),
        C(&append),
        S(b"* 3 EXISTS\r\n* 1 RECENT\r\na2 OK [APPENDUID 1700000000 42] Append completed.\r\n"),
        C(b"a3 LOGOUT\r\n"),
        S(b"* BYE Logging out\r\na3 OK Logout completed.\r\n"),
    ]);
    assert_eq!(run.error, None);
    assert_eq!(
        run.saved(),
        Some(&SavedCopy {
            folder: "Sent".into(),
            uid_validity: Some(1_700_000_000),
            uid: Some(42),
            created_folder: false
        })
    );
    assert_eq!(run.actions.iter().filter(|a| **a == Action::Close).count(), 1);
    assert_eq!(run.writes, 3, "login, APPEND with its literal, LOGOUT");
}

#[test]
fn synchronising_literal_waits_for_the_continuation() {
    let head = format!("a2 APPEND \"Sent\" (\\Seen) {{{}}}\r\n", MSG.len());
    let run = to_sent(&[
        S(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"),
        C(b"a1 AUTHENTICATE PLAIN\r\n"),
        S(b"+ \r\n"),
        C(format!("{}\r\n", sasl::plain(USER, PASSWORD)).as_bytes()),
        S(b"a1 OK Logged in\r\n"),
        C(head.as_bytes()),
        S(b"+ OK\r\n"),
        C(&with_crlf("", MSG)),
        S(b"a2 OK Append completed.\r\n"),
        C(b"a3 LOGOUT\r\n"),
        Closed,
    ]);
    assert_eq!(run.error, None);
    let saved = run.saved().expect("saved");
    assert_eq!((saved.uid_validity, saved.uid), (None, None), "no UIDPLUS, no APPENDUID");
}

#[test]
fn literal_minus_sends_small_messages_at_once() {
    let append = append_plus("a2", "Sent");
    let run = to_sent(&[
        S(b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL- AUTH=PLAIN] ready\r\n"),
        S(b"a1 OK Logged in\r\n"),
        C(&[plain_login().as_bytes(), &append].concat()),
    ]);
    assert_eq!(run.error, None);
}

#[test]
fn starttls_discards_clear_text_capabilities_and_logs_in_after_tls() {
    // Tags: a1 STARTTLS, a2 CAPABILITY, a3 AUTHENTICATE, a4 APPEND.
    let head = format!("a4 APPEND \"Sent\" (\\Seen) {{{}}}\r\n", MSG.len());
    let run = drive_all(
        || session(Security::Starttls, "Sent"),
        &[
            // Offers made before TLS could be forged: none of them may be used afterwards.
            S(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LITERAL+ AUTH=PLAIN SASL-IR] ready\r\n"),
            C(b"a1 STARTTLS\r\n"),
            S(b"a1 OK Begin TLS negotiation now.\r\n"),
            Tls,
            C(b"a2 CAPABILITY\r\n"),
            S(b"* CAPABILITY IMAP4rev1 AUTH=LOGIN LOGINDISABLED\r\na2 OK done\r\n"),
            C(b"a3 AUTHENTICATE LOGIN\r\n"),
            S(b"+ VXNlcm5hbWU6\r\n"),
            C(format!("{}\r\n", sasl::login_step(USER)).as_bytes()),
            S(b"+ UGFzc3dvcmQ6\r\n"),
            C(format!("{}\r\n", sasl::login_step(PASSWORD)).as_bytes()),
            S(b"a3 OK Logged in\r\n"),
            C(head.as_bytes()),
        ],
    );
    assert_eq!(run.error, None);
}

#[test]
fn starttls_not_offered_fails_before_any_credential() {
    let run = drive_all(
        || session(Security::Starttls, "Sent"),
        &[S(b"* OK ready\r\n"), C(b"a1 CAPABILITY\r\n"), S(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na1 OK\r\n")],
    );
    assert_eq!(run.err().kind, ErrorKind::Policy);
    assert_eq!(run.err().stage, Stage::Starttls);
    assert_eq!(run.wire, b"a1 CAPABILITY\r\n");
}

#[test]
fn starttls_refused_is_a_policy_error() {
    let run = drive_all(
        || session(Security::Starttls, "Sent"),
        &[S(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"), S(b"a1 NO not now\r\n")],
    );
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Policy, Stage::Starttls));
    assert_eq!(run.wire, b"a1 STARTTLS\r\n");
}

#[test]
fn trycreate_creates_and_subscribes_the_folder_once_then_appends_again() {
    let append = |tag: &str| append_plus(tag, "Sent");
    let run = logged_in(&[
        C(&[plain_login().into_bytes(), append("a2")].concat()),
        S(b"a2 NO [TRYCREATE] Mailbox doesn't exist: Sent\r\n"),
        C(b"a3 CREATE \"Sent\"\r\n"),
        S(b"a3 OK Create completed.\r\n"),
        C(&[b"a4 SUBSCRIBE \"Sent\"\r\n".to_vec(), append("a5")].concat()),
        S(b"a4 OK Subscribe completed.\r\na5 OK [APPENDUID 9 1] Append completed.\r\n"),
        C(b"a6 LOGOUT\r\n"),
        S(b"a6 OK bye\r\n"),
    ]);
    assert_eq!(run.error, None);
    assert_eq!(
        run.saved(),
        Some(&SavedCopy { folder: "Sent".into(), uid_validity: Some(9), uid: Some(1), created_folder: true })
    );
}

#[test]
fn trycreate_after_create_is_an_error_not_a_loop() {
    let run = logged_in(&[
        S(b"a2 NO [TRYCREATE] no such mailbox\r\n"),
        S(b"a3 OK Create completed.\r\n"),
        S(b"a4 OK subscribed\r\na5 NO [TRYCREATE] still no such mailbox\r\n"),
    ]);
    let e = run.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::Data));
    assert!(e.message.contains("after creating it"), "{e}");
    assert_eq!(String::from_utf8_lossy(&run.wire).matches("CREATE").count(), 1);
}

#[test]
fn create_refused_names_the_folder() {
    let run = logged_in(&[
        S(b"a2 NO [TRYCREATE] no such mailbox\r\n"),
        S(b"a3 NO [NOPERM] Permission denied\r\n"),
    ]);
    let e = run.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::SelectMailbox));
    assert!(e.message.contains("\"Sent\"") && e.message.contains("create"), "{e}");
    assert_eq!(e.reply.as_ref().map(|r| r.code.as_str()), Some("NO"));
}

#[test]
fn no_on_append_is_a_typed_error_with_the_server_text() {
    let run = logged_in(&[S(b"a2 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n")]);
    let e = run.err();
    assert_eq!((e.kind, e.stage, e.retry), (ErrorKind::Limit, Stage::Data, Retry::FixFirst));
    assert!(e.message.contains("quota"), "{e}");
    assert!(e.reply.as_ref().is_some_and(|r| r.text.contains("Quota exceeded")), "{e:?}");

    let run = logged_in(&[S(b"a2 NO Permission denied\r\n")]);
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Protocol, Stage::Data));
    assert!(run.err().message.contains("may write to it"), "{}", run.err());
}

#[test]
fn oversize_messages_are_refused_before_connecting_and_against_appendlimit() {
    let big = vec![b'x'; 4097];
    let e = AppendSession::new(mailbox(Security::ImplicitTls), "Sent".into(), big).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Limit, Stage::Data));
    assert!(e.message.contains("4097") && e.message.contains("4096"), "{e}");

    let run = to_sent(&[S(GREETING_PLUS), S(b"a1 OK [CAPABILITY IMAP4rev1 LITERAL+ APPENDLIMIT=10] Logged in\r\n")]);
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Limit, Stage::Data));
    assert!(!String::from_utf8_lossy(&run.wire).contains("APPEND "), "nothing appended");
}

#[test]
fn auth_failure_carries_the_server_text_but_never_the_password() {
    let run = to_sent(&[S(GREETING_PLUS), S(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")]);
    let e = run.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::AuthRejected, Stage::Authenticate));
    assert!(e.reply.as_ref().is_some_and(|r| r.text.contains("Authentication failed")), "{e:?}");
    assert!(e.message.contains(USER), "{e}");
    assert_no_secret(&run);
    assert!(!format!("{:?}", session(Security::ImplicitTls, "Sent")).contains(PASSWORD));
}

#[test]
fn nested_folder_uses_the_server_delimiter_and_modified_utf7() {
    let head = format!("a3 APPEND \"Archiv.Gesendete &AMQ-nderungen\" (\\Seen) {{{}}}\r\n", MSG.len());
    let run = drive_all(
        || session(Security::ImplicitTls, "Archiv/Gesendete Änderungen"),
        &[
            S(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n"),
            S(b"a1 OK Logged in\r\n"),
            C(format!("a1 AUTHENTICATE PLAIN {}\r\na2 LIST \"\" \"\"\r\n", sasl::plain(USER, PASSWORD)).as_bytes()),
            S(b"* LIST (\\Noselect) \".\" \"\"\r\na2 OK List completed.\r\n"),
            C(head.as_bytes()),
        ],
    );
    assert_eq!(run.error, None);
}

#[test]
fn connection_lost_after_the_whole_message_is_uncertain() {
    let run = logged_in(&[Closed]);
    let e = run.err();
    assert_eq!((e.kind, e.retry), (ErrorKind::Network, Retry::Uncertain));
    assert!(e.message.contains("may have saved it"), "{e}");

    // Before the "+" nothing of the message was sent: an ordinary transient error.
    let run = to_sent(&[S(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n"), S(b"a1 OK Logged in\r\n"), Closed]);
    assert_eq!((run.err().kind, run.err().retry), (ErrorKind::Network, Retry::Later));
}

#[test]
fn a_failed_logout_after_the_copy_is_saved_still_succeeds() {
    let run = logged_in(&[
        S(b"a2 OK [APPENDUID 5 6] done\r\n"),
        S(b"a3 WHAT\r\n"),
    ]);
    assert_eq!(run.error, None);
    assert_eq!(run.saved().map(|s| s.uid), Some(Some(6)));
}

#[test]
fn folders_that_cannot_hold_copies_are_refused_before_connecting() {
    let new = |m: Mailbox, f: &str| AppendSession::new(m, f.into(), MSG.to_vec()).unwrap_err();
    for f in ["INBOX", "inbox", "", "Sent\r\nx"] {
        assert_eq!(new(mailbox(Security::ImplicitTls), f).kind, ErrorKind::InvalidInput, "{f:?}");
    }
    let mut m = mailbox(Security::ImplicitTls);
    m.folders = vec!["Support".into()];
    assert!(new(m.clone(), "Support").message.contains("come back"), "a fetched folder");
    assert!(AppendSession::new(m, "INBOX".into(), MSG.to_vec()).is_ok(), "INBOX is not fetched here");
    let mut pop = mailbox(Security::ImplicitTls);
    pop.protocol = InboundProtocol::Pop3;
    assert!(new(pop, "Sent").message.contains("POP3"));
    let e = AppendSession::new(mailbox(Security::ImplicitTls), "Sent".into(), b"a\0b".to_vec()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidInput);
}

#[test]
fn starttls_bytes_injected_after_ok_abort_before_credentials() {
    let run = drive(
        session(Security::Starttls, "Sent"),
        &[S(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\na1 OK go\r\n* OK injected\r\n")],
        usize::MAX,
    );
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Policy, Stage::Starttls));
    assert!(run.err().message.contains("injection"), "{}", run.err());
    assert!(!run.actions.contains(&Action::StartTls));
}

/// Courier: every folder lives under "INBOX.", and "Sent" alone is refused.
const COURIER: &[u8] = b"* OK [CAPABILITY IMAP4rev1 UIDPLUS NAMESPACE LITERAL+ SASL-IR AUTH=PLAIN] Courier-IMAP ready.\r\n";

/// `to_sent` against Courier: the login and its NAMESPACE answer (tags a1, a2), then `rest`.
fn courier(rest: &[Step<'_>]) -> Run {
    let login = plain_login();
    let head = [
        S(COURIER),
        C(login.as_bytes()),
        S(b"a1 OK Logged in\r\n"),
        C(b"a2 NAMESPACE\r\n"),
        S(b"* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\r\na2 OK NAMESPACE completed\r\n"),
    ];
    to_sent(&[&head[..], rest].concat())
}

#[test]
fn the_copy_goes_under_the_personal_namespace_created_and_subscribed() {
    let append = |tag: &str| append_plus(tag, "INBOX.Sent");
    let run = courier(&[
        C(&append("a3")),
        S(b"a3 NO [TRYCREATE] Mailbox does not exist.\r\n"),
        C(b"a4 CREATE \"INBOX.Sent\"\r\n"),
        S(b"a4 OK \"INBOX.Sent\" created.\r\n"),
        C(&[&b"a5 SUBSCRIBE \"INBOX.Sent\"\r\n"[..], &append("a6")].concat()),
        S(b"a5 OK Folder subscribed.\r\na6 OK [APPENDUID 1 1] APPEND Ok.\r\n"),
        C(b"a7 LOGOUT\r\n"),
        S(b"a7 OK LOGOUT completed\r\n"),
    ]);
    assert_eq!(run.error, None);
    let saved = run.saved().expect("saved");
    assert_eq!((saved.folder.as_str(), saved.created_folder, saved.uid), ("Sent", true, Some(1)));
}

#[test]
fn a_refused_append_is_a_refused_copy_quoting_the_server_and_naming_the_prefix() {
    let run = courier(&[C(&append_plus("a3", "INBOX.Sent")), S(b"a3 NO Invalid mailbox name.\r\n")]);
    let e = run.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::Data));
    assert!(e.message.starts_with("the server refused to save the copy in the folder \"Sent\""), "{}", e.message);
    assert!(e.message.contains("answered \"NO Invalid mailbox name.\""), "{}", e.message);
    assert!(e.message.contains("keeps its folders under the prefix \"INBOX.\""), "{}", e.message);
    assert!(e.message.contains("asked for as \"INBOX.Sent\""), "{}", e.message);
    assert!(!e.message.contains("message data"), "{}", e.message);
    assert!(e.quoted.contains(&"\"NO Invalid mailbox name.\"".to_string()), "{:?}", e.quoted);
    assert_eq!(e.reply, Some(ServerReply::new("NO", "Invalid mailbox name.")));

    // Without namespaces (Dovecot's empty prefix), no prefix is blamed.
    let login = plain_login();
    let append = append_plus("a2", "Sent");
    let run = to_sent(&[S(GREETING_PLUS), C(login.as_bytes()), S(b"a1 OK Logged in\r\n"), C(&append), S(b"a2 NO [NOPERM] no\r\n")]);
    let e = run.err();
    assert!(e.message.contains("refused to save the copy") && !e.message.contains("prefix"), "{}", e.message);
}
