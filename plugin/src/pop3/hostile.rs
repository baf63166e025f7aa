//! Hostile-server tests (issue 10): text sent before STLS never reaches the admin, echoed
//! secrets are redacted, CAPA and UIDL listings are bounded.

use super::client::{MAX_CAPA_LINES, MAX_UID_CHARS};
use super::Pop3Session;
use crate::config::{AfterFetch, Credentials, FirstSync, InboundProtocol, Limits, Mailbox, Security, Server};
use crate::error::{ErrorKind, Stage};
use crate::session::testing::{assert_echo_redacted, assert_withheld_before_tls, echoed_login, run, token_outside_the_grammar, Outcome};

fn mailbox(security: Security, credentials: Credentials) -> Mailbox {
    Mailbox {
        protocol: InboundProtocol::Pop3,
        server: Server { host: "pop.example.com".into(), port: 110, security },
        credentials,
        folders: vec![],
        limits: Limits::default(),
        after_fetch: AfterFetch::default(),
        first_sync: FirstSync::All,
    }
}

fn session(security: Security) -> Pop3Session {
    Pop3Session::new(mailbox(security, echoed_login()), None).unwrap()
}

fn script(security: Security, lines: &[&[u8]]) -> Outcome {
    let mut s = session(security);
    let script: Vec<Option<&[u8]>> = lines.iter().copied().map(Some).collect();
    run(&mut s, &script)
}

const GREETING: &[u8] = b"+OK call +1-555-0100 now\r\n";
const CAPA: &[u8] = b"+OK\r\nSTLS\r\nX-CALL +1-555-0100\r\nUSER\r\n.\r\n";

#[test]
fn text_before_stls_is_withheld_on_every_failure_path() {
    let cases: [(&str, Vec<&[u8]>); 6] = [
        ("greeting that is not POP3", vec![b"call +1-555-0100 to unlock\r\n"]),
        ("greeting -ERR", vec![b"-ERR call +1-555-0100\r\n"]),
        ("CAPA status that is not POP3", vec![GREETING, b"call +1-555-0100\r\n"]),
        ("STLS answer that is not POP3", vec![GREETING, CAPA, b"call +1-555-0100\r\n"]),
        ("STLS refused", vec![GREETING, CAPA, b"-ERR call +1-555-0100\r\n"]),
        ("unexpected continuation", vec![GREETING, CAPA, b"+ call +1-555-0100\r\n"]),
    ];
    assert_withheld_before_tls(&cases, |security| Box::new(session(security)));
}

#[test]
fn a_capa_listing_that_never_ends_stops_at_the_cap() {
    let mut capa = b"+OK\r\n".to_vec();
    capa.extend(b"X-NOISE\r\n".repeat(MAX_CAPA_LINES + 1));
    let out = script(Security::ImplicitTls, &[b"+OK ready\r\n", &capa]);
    let e = out.err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Limit, Stage::Capabilities), "{e}");
    assert!(e.message.contains("more than 128 CAPA lines"), "{e}");
    // A real listing of that size minus one is fine.
    let mut capa = b"+OK\r\n".to_vec();
    capa.extend(b"X-NOISE\r\n".repeat(MAX_CAPA_LINES - 1));
    capa.extend(b"USER\r\n.\r\n");
    let out = script(Security::ImplicitTls, &[b"+OK ready\r\n", &capa]);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.wire_text().ends_with("USER agent@example.com\r\n"), "{}", out.wire_text());
}

/// USER/PASS login, STAT of two messages, then `uidl` as the UIDL answer.
fn listing(uidl: &[u8]) -> Outcome {
    script(
        Security::ImplicitTls,
        &[b"+OK ready\r\n", b"+OK\r\nUSER\r\n.\r\n", b"+OK\r\n", b"+OK logged in\r\n", b"+OK 2 200\r\n", uidl],
    )
}

#[test]
fn unique_ids_longer_than_70_characters_are_refused() {
    let ok = format!("+OK\r\n1 {}\r\n2 b\r\n.\r\n", "a".repeat(MAX_UID_CHARS));
    let out = listing(ok.as_bytes());
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.wire_text().ends_with("LIST\r\n"), "{}", out.wire_text());
    let long = format!("+OK\r\n1 {}\r\n2 b\r\n.\r\n", "a".repeat(MAX_UID_CHARS + 1));
    let e = listing(long.as_bytes()).error.unwrap();
    assert_eq!((e.kind, e.stage), (ErrorKind::Limit, Stage::ListMessages), "{e}");
    assert!(e.message.contains("71 characters") && e.message.contains("at most 70"), "{e}");
}

#[test]
fn an_echoed_password_is_redacted() {
    let out = script(
        Security::ImplicitTls,
        &[b"+OK ready\r\n", b"+OK\r\nUSER\r\n.\r\n", b"+OK\r\n", b"-ERR [AUTH] wrong password Pa55-w0rd-echo\r\n"],
    );
    assert_echo_redacted(&out);
}

#[test]
fn an_oauth_token_outside_the_bearer_grammar_is_refused_before_the_wire() {
    let creds = token_outside_the_grammar();
    let e = Pop3Session::new(mailbox(Security::ImplicitTls, creds.clone()), None).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::InvalidInput, Stage::Authenticate));
    assert!(Pop3Session::check(mailbox(Security::ImplicitTls, creds)).is_err());
    let nul = Credentials::Basic { username: "agent@example.com".into(), password: "pw\0x".into() };
    assert!(Pop3Session::new(mailbox(Security::ImplicitTls, nul), None).is_err());
}
