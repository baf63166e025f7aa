//! STLS, SASL and USER/PASS logins, OAuth2 challenges, and what never leaks: credentials and injected bytes.

use super::*;

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
