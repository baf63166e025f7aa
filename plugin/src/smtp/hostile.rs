//! Hostile-server tests (issue 10): text sent before STARTTLS never reaches the admin, NUL
//! never reaches DATA, tokens are checked before the wire, OAuth error challenges answered.

use super::SmtpSession;
use crate::config::{Credentials, Limits, Security, Server, SubmissionServer};
use crate::error::{ErrorKind, Stage};
use crate::sasl::Mechanism;
use crate::session::testing::{run, Outcome};

const ATTACK: &str = "555-0100";

fn submission(security: Security, credentials: Credentials) -> SubmissionServer {
    SubmissionServer {
        server: Server { host: "smtp.example.com".into(), port: 587, security },
        credentials,
        helo_name: "client.example.com".into(),
        limits: Limits::default(),
    }
}

fn basic() -> Credentials {
    Credentials::Basic { username: "agent@example.com".into(), password: "pw-Secret-1".into() }
}

fn oauth(token: &str, mechanism: Option<Mechanism>) -> Credentials {
    Credentials::OAuth2 { username: "agent@example.com".into(), access_token: token.into(), mechanism }
}

fn send(security: Security, credentials: Credentials, message: &[u8]) -> crate::error::Result<SmtpSession> {
    SmtpSession::new(submission(security, credentials), "agent@example.com".into(), vec!["ann@example.org".into()], message.to_vec())
}

fn script(security: Security, lines: &[&[u8]]) -> Outcome {
    let mut s = send(security, basic(), b"Subject: x\r\n\r\nhi\r\n").unwrap();
    let script: Vec<Option<&[u8]>> = lines.iter().copied().map(Some).collect();
    run(&mut s, &script)
}

const GREETING: &[u8] = b"220-mx.example.com call +1-555-0100\r\n220 ESMTP ready\r\n";
const EHLO: &[u8] = b"250-mx.example.com call +1-555-0100\r\n250-STARTTLS\r\n250 8BITMIME\r\n";

#[test]
fn text_before_starttls_is_withheld_on_every_failure_path() {
    // The last field: the same script fails at the same point over implicit TLS (the
    // STARTTLS answers are not asked for there).
    let cases: [(&str, Vec<&[u8]>, bool); 7] = [
        ("greeting that is not SMTP", vec![b"call +1-555-0100 to unlock\r\n"], true),
        ("multi-line greeting refusal", vec![b"554-call +1-555-0100\r\n554 5.7.1 go away\r\n"], true),
        ("EHLO answer that is not SMTP", vec![GREETING, b"250-mx\r\ncall +1-555-0100\r\n"], true),
        ("multi-line EHLO refusal", vec![GREETING, b"550-call +1-555-0100\r\n550 5.7.1 no\r\n"], true),
        ("STARTTLS refused, multi-line", vec![GREETING, EHLO, b"454-call +1-555-0100\r\n454 4.7.0 TLS not available\r\n"], false),
        ("STARTTLS refused, last line", vec![GREETING, EHLO, b"454 4.7.0 call +1-555-0100\r\n"], false),
        ("STARTTLS answer that is not SMTP", vec![GREETING, EHLO, b"call +1-555-0100\r\n"], false),
    ];
    for (name, lines, same_over_tls) in cases {
        let out = script(Security::Starttls, &lines);
        let e = out.err();
        assert!(!out.shown().contains(ATTACK), "{name}: pre-TLS text shown: {}", out.shown());
        assert_eq!(e.reply, None, "{name}");
        assert!(e.message.contains(crate::error::WITHHELD), "{name}: {e}");
        if !same_over_tls {
            continue;
        }
        let tls = script(Security::ImplicitTls, &lines);
        assert!(tls.shown().contains(ATTACK), "{name}: over TLS the server's text is kept: {}", tls.shown());
    }
}

#[test]
fn nul_in_the_message_is_refused_before_anything_is_sent() {
    let e = send(Security::ImplicitTls, basic(), b"Subject: x\r\n\r\nhi\r\n\0.\r\nRCPT TO:<evil@x>\r\n").unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::InvalidInput, Stage::Data), "{e}");
    assert!(e.message.contains("NUL"), "{e}");
    assert!(send(Security::ImplicitTls, basic(), b"Subject: x\r\n\r\n\x01\x7f\r\n").is_ok(), "other control bytes pass");
}

#[test]
fn tokens_outside_the_bearer_grammar_and_nul_in_plain_fields_are_refused() {
    let e = send(Security::ImplicitTls, oauth("x\u{1}host=evil", None), b"x").err().unwrap();
    assert_eq!((e.kind, e.stage), (ErrorKind::InvalidInput, Stage::Authenticate));
    assert!(!format!("{e} {e:?}").contains("evil"));
    let nul = Credentials::Basic { username: "agent@example.com".into(), password: "pw\0authzid".into() };
    assert!(send(Security::ImplicitTls, nul.clone(), b"x").is_err());
    assert!(SmtpSession::check(submission(Security::ImplicitTls, nul), "a@b.c".into(), vec!["d@e.f".into()]).is_err());
}

fn oauth_refused(mechanism: Mechanism) -> Outcome {
    let mut s = send(Security::ImplicitTls, oauth("ya29.token", Some(mechanism)), b"Subject: x\r\n\r\nhi\r\n").unwrap();
    run(
        &mut s,
        &[
            Some(b"220 mx ESMTP\r\n"),
            Some(b"250-mx\r\n250 AUTH OAUTHBEARER XOAUTH2\r\n"),
            // {"status":"invalid_token","scope":"mail"}
            Some(b"334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJtYWlsIn0=\r\n"),
            Some(b"535 5.7.8 Authentication credentials invalid\r\n"),
        ],
    )
}

#[test]
fn an_oauthbearer_error_challenge_is_answered_with_the_dummy_response() {
    let out = oauth_refused(Mechanism::OAuthBearer);
    assert!(out.wire_text().ends_with("\r\nAQ==\r\n"), "{}", out.wire_text());
    let e = out.err();
    assert_eq!(e.kind, ErrorKind::AuthRejected, "{e}");
    assert!(e.message.contains("invalid_token"), "{e}");
    // XOAUTH2 (Google) expects an empty line.
    let out = oauth_refused(Mechanism::XOAuth2);
    assert!(out.wire_text().ends_with("\r\n\r\n") && !out.wire_text().contains("AQ=="), "{}", out.wire_text());
}
