//! Hostile-server tests (issue 10): text sent before STARTTLS never reaches the admin, echoed
//! secrets are redacted, untagged floods end at a cap, and UID sets are bounded on wasm32.

use super::ImapSession;
use crate::config::{AfterFetch, Credentials, FirstSync, InboundProtocol, Limits, Mailbox, Security, Server};
use crate::error::{ErrorKind, Stage};
use crate::session::testing::{assert_echo_redacted, assert_withheld_before_tls, echoed_login, run, token_outside_the_grammar};

fn mailbox(security: Security, credentials: Credentials) -> Mailbox {
    Mailbox {
        protocol: InboundProtocol::Imap,
        server: Server { host: "imap.example.com".into(), port: 143, security },
        credentials,
        folders: vec![],
        limits: Limits { max_line_bytes: 1024, ..Limits::default() },
        after_fetch: AfterFetch::default(),
        first_sync: FirstSync::All,
    }
}

fn session(security: Security) -> ImapSession {
    ImapSession::new(mailbox(security, echoed_login()), None).unwrap()
}

const GREETING: &[u8] = b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] call +1-555-0100 now\r\n";
const LIST: &[u8] = b"* LIST () \"/\" \"call +1-555-0100\"\r\n";

#[test]
fn text_before_starttls_is_withheld_on_every_failure_path() {
    let cases: [(&str, Vec<&[u8]>); 7] = [
        ("greeting that is not IMAP", vec![b"call +1-555-0100 to unlock\r\n"]),
        ("BYE greeting", vec![b"* BYE call +1-555-0100\r\n"]),
        ("foreign tag", vec![GREETING, LIST, b"call+1-555-0100 OK begin\r\n"]),
        ("malformed untagged LIST", vec![GREETING, b"* LIST call +1-555-0100\r\n"]),
        ("malformed ESEARCH", vec![GREETING, b"* ESEARCH ALL call+1-555-0100\r\n"]),
        ("STARTTLS refused", vec![GREETING, LIST, b"a1 NO call +1-555-0100\r\n"]),
        ("STARTTLS BAD", vec![GREETING, LIST, b"a1 BAD call +1-555-0100\r\n"]),
    ];
    assert_withheld_before_tls(&cases, |security| Box::new(session(security)));
}

/// Login (implicit TLS), SELECT of a 3-message INBOX, then the server's `extra` bytes.
fn selected(extra: &[u8], limits: Limits) -> crate::session::testing::Outcome {
    let mut mb = mailbox(Security::ImplicitTls, echoed_login());
    mb.limits = limits;
    let mut s = ImapSession::new(mb, None).unwrap();
    run(
        &mut s,
        &[
            Some(b"* OK [CAPABILITY IMAP4rev1 ESEARCH AUTH=PLAIN SASL-IR] ready\r\n"),
            Some(b"a1 OK logged in\r\n"),
            Some(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 4] n\r\na2 OK [READ-WRITE] selected\r\n"),
            Some(extra),
        ],
    )
}

#[test]
fn a_server_flooding_untagged_ok_ends_at_the_cap() {
    let flood = b"* OK x\r\n".repeat(super::untagged::MAX_IGNORED_UNTAGGED as usize + 1);
    let out = selected(&flood, Limits { max_line_bytes: 1024, ..Limits::default() });
    assert!(out.wire_text().contains("a3 UID SEARCH RETURN (ALL) ALL"), "{}", out.wire_text());
    let e = out.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Limit, Stage::ListMessages), "{e}");
    assert!(e.message.contains("more than 10000 untagged responses"), "{e}");
    // Below the cap, and reset by each tagged answer: no error.
    let some = b"* OK x\r\n".repeat(9_000);
    let out = selected(&some, Limits { max_line_bytes: 1024, ..Limits::default() });
    assert!(out.error.is_none(), "{:?}", out.error);
}

#[test]
fn untagged_bytes_per_command_are_capped() {
    use super::untagged::UntaggedBudget;
    use super::response::Frame;
    let frame = |text: &[u8], literal: usize| Frame {
        text: text.to_vec(),
        literals: if literal > 0 { [(0, vec![b'x'; literal])].into() } else { Default::default() },
    };
    let mut budget = UntaggedBudget::with_max_bytes(100);
    budget.count(&frame(b"* 1 FETCH (FLAGS ())", 40), Stage::FetchMessage).unwrap();
    // A tagged answer ends the command: the budget starts afresh.
    budget.count(&frame(b"a3 OK done", 0), Stage::FetchMessage).unwrap();
    budget.count(&frame(b"* 1 FETCH (FLAGS ())", 40), Stage::FetchMessage).unwrap();
    let e = budget.count(&frame(b"* 2 FETCH (FLAGS ())", 40), Stage::FetchMessage).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit, "{e}");
    assert!(e.message.contains("more than 100 bytes of untagged responses"), "{e}");
}

#[test]
fn esearch_uid_sets_are_counted_in_64_bits_and_uid_0_is_refused() {
    let limits = Limits { max_line_bytes: 1024, ..Limits::default() };
    let out = selected(b"* ESEARCH (TAG \"a3\") UID ALL 1:4294967295\r\n", limits);
    let e = out.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Limit, Stage::ListMessages), "{e}");
    for bad in [&b"* ESEARCH (TAG \"a3\") UID ALL 0:4294967295\r\n"[..], b"* ESEARCH (TAG \"a3\") UID ALL 0\r\n", b"* SEARCH 2 0\r\n", b"* SEARCH 4294967296\r\n"] {
        let out = selected(bad, limits);
        let e = out.err();
        assert_eq!(e.kind, ErrorKind::Protocol, "{e}");
        assert!(e.message.contains("malformed"), "{e}");
    }
}

#[test]
fn an_echoed_password_is_redacted() {
    let out = run(
        &mut session(Security::ImplicitTls),
        &[
            Some(b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
            Some(b"a1 NO [AUTHENTICATIONFAILED] bad password Pa55-w0rd-echo for agent\r\n"),
        ],
    );
    assert_echo_redacted(&out);
}

#[test]
fn an_oauth_token_outside_the_bearer_grammar_is_refused_before_the_wire() {
    let creds = token_outside_the_grammar();
    let e = ImapSession::new(mailbox(Security::ImplicitTls, creds.clone()), None).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::InvalidInput, Stage::Authenticate));
    assert!(ImapSession::check(mailbox(Security::ImplicitTls, creds.clone())).is_err());
    assert!(super::AppendSession::new(mailbox(Security::ImplicitTls, creds), "Sent".into(), b"x".to_vec()).is_err());
}
