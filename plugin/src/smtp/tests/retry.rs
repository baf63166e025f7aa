//! Retry advice (4xx later, 5xx fix first, uncertain after the final dot) and the provider
//! explanations that come with refusing replies.

use super::*;

#[test]
fn greeting_421_and_starttls_454_retry_later() {
    let mut s = session(Security::ImplicitTls);
    connect(&mut s);
    let e = server(&mut s, b"421 4.3.2 Service not available, closing channel\r\n", Chunking::Whole).unwrap_err();
    assert_eq!((e.stage, e.retry), (Stage::Greeting, Retry::Later));

    let mut s = session(Security::Starttls);
    connect(&mut s);
    exchange(&mut s, GREETING, EHLO, Chunking::Whole);
    exchange(&mut s, b"250-mx\r\n250 STARTTLS\r\n", b"STARTTLS\r\n", Chunking::Whole);
    let e = server(&mut s, b"454 4.7.0 TLS not available due to local problem\r\n", Chunking::Whole).unwrap_err();
    assert_eq!((e.kind, e.retry), (ErrorKind::Policy, Retry::Later));
}

#[test]
fn starttls_required_at_auth_is_explained() {
    let mut s = session(Security::InsecurePlaintext);
    connect(&mut s);
    exchange(&mut s, GREETING, EHLO, Chunking::Whole);
    exchange(&mut s, b"250-mx\r\n250 AUTH PLAIN\r\n", AUTH_PLAIN, Chunking::Whole);
    let e = server(&mut s, b"530 5.7.0 Must issue a STARTTLS command first. x1sm - gsmtp\r\n", Chunking::Whole).unwrap_err();
    assert_eq!((e.kind, e.retry), (ErrorKind::AuthRejected, Retry::FixFirst));
    assert!(e.message.contains("only over an encrypted connection") && e.message.contains("port 465"), "{}", e.message);
    assert_no_secret(&e, b"");
}

#[test]
fn auth_535_is_fix_first_and_454_is_later_neither_revealing_the_password() {
    for (reply, retry, hint) in [
        (&b"535 5.7.8 Error: authentication failed\r\n"[..], Retry::FixFirst, "password"),
        (b"454 4.7.0 Temporary authentication failure\r\n", Retry::Later, "try again later"),
    ] {
        let mut s = session(Security::ImplicitTls);
        connect(&mut s);
        exchange(&mut s, GREETING, EHLO, Chunking::Whole);
        exchange(&mut s, EHLO_TLS_CAPS, AUTH_PLAIN, Chunking::Whole);
        let e = server(&mut s, reply, Chunking::Whole).unwrap_err();
        assert_eq!((e.kind, e.stage, e.retry), (ErrorKind::AuthRejected, Stage::Authenticate, retry), "{e}");
        assert!(e.message.contains(hint), "{}", e.message);
        assert_no_secret(&e, b"");
    }
}

#[test]
fn connection_lost_after_the_final_dot_is_uncertain() {
    for chunking in ALL {
        let mut s = data_sent(chunking);
        let e = s.handle(Event::Closed, T0 + 5).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Network);
        assert_uncertain(&e);
        assert_eq!(s.deadline(), None);

        let mut s = data_sent(chunking);
        let deadline = s.deadline().unwrap();
        assert!(s.handle(Event::Timer, deadline - 1).unwrap().is_empty());
        let e = s.handle(Event::Timer, deadline).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert_uncertain(&e);

        // A reply that cannot be read is no verdict either.
        let mut s = data_sent(chunking);
        let e = server(&mut s, b"25O queued\r\n", chunking).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert_uncertain(&e);
        assert!(e.message.contains("25O queued"), "{}", e.message);
    }
}

#[test]
fn connection_lost_before_the_data_was_handed_over_retries_later() {
    // Waiting for the MAIL/RCPT/DATA replies.
    let mut s = envelope_sent(Chunking::Whole);
    let e = s.handle(Event::Closed, T0).unwrap_err();
    assert_eq!((e.kind, e.stage, e.retry), (ErrorKind::Network, Stage::Envelope, Retry::Later));

    // Waiting for 354.
    let mut s = envelope_sent(Chunking::Whole);
    exchange(&mut s, b"250 Ok\r\n250 Ok\r\n250 Ok\r\n", b"", Chunking::Whole);
    let deadline = s.deadline().unwrap();
    let e = s.handle(Event::Timer, deadline).unwrap_err();
    assert_eq!((e.kind, e.stage, e.retry), (ErrorKind::Timeout, Stage::Data, Retry::Later));

    // 354 and garbage in one read: the error replaces the data write, so nothing was sent.
    let mut s = envelope_sent(Chunking::Whole);
    let e = server(&mut s, b"250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\nnonsense\r\n", Chunking::Whole).unwrap_err();
    assert_eq!((e.kind, e.retry), (ErrorKind::Protocol, Retry::FixFirst));
}

#[test]
fn trouble_after_the_message_was_accepted_keeps_it_sent() {
    for ending in [&b"garbage instead of 221\r\n"[..], &[b'x'; 600]] {
        let mut s = data_sent(Chunking::Whole);
        exchange(&mut s, b"250 2.0.0 Ok: queued as 7\r\n", b"QUIT\r\n", Chunking::Whole);
        let end = server(&mut s, ending, Chunking::Whole).unwrap();
        assert!(matches!(end.as_slice(), [Action::Close, Action::Finished(Outcome::Sent(_))]), "{end:?}");
    }
    // The 250 and garbage in one read: the outcome is still Sent (no QUIT needed, we close).
    let mut s = data_sent(Chunking::Whole);
    let end = server(&mut s, b"250 Ok\r\n\x00\x01\r\n", Chunking::Whole).unwrap();
    assert!(matches!(end.as_slice(), [Action::Close, Action::Finished(Outcome::Sent(_))]), "{end:?}");
    let mut s = data_sent(Chunking::Whole);
    exchange(&mut s, b"250 Ok\r\n", b"QUIT\r\n", Chunking::Whole);
    let end = s.handle(Event::TlsFailed("reset by peer"), T0).unwrap();
    assert!(matches!(end.as_slice(), [Action::Close, Action::Finished(Outcome::Sent(_))]), "{end:?}");
}

#[test]
fn send_as_denied_after_the_dot_is_explained_in_both_languages() {
    let mut s = data_sent(Chunking::Whole);
    let reply = "554 5.2.252 SendAsDenied; agent@shop.example not allowed to send as support@shop.example; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied\r\n";
    let e = server(&mut s, reply.as_bytes(), Chunking::Whole).unwrap_err();
    assert_eq!((e.stage, e.retry), (Stage::Data, Retry::FixFirst));
    assert!(e.message.starts_with("the server did not accept the message (554 5.2.252 SendAsDenied"), "{}", e.message);
    assert!(e.message.contains("Send As or Send on Behalf") && e.message.contains("Delegation"), "{}", e.message);
    assert_eq!(e.reply.as_ref().unwrap().code, "554");
    assert!(e.reply.as_ref().unwrap().text.starts_with("5.2.252 SendAsDenied"));
    let x = explain_error(&e).unwrap();
    assert!(x.action.de.contains("„Senden als“") && x.action.de.contains("Delegierung"), "{}", x.action.de);
}

#[test]
fn mail_from_send_as_refusal_and_relay_denial_are_explained() {
    let mut s = envelope_sent(Chunking::Whole);
    let e = server(&mut s, b"550 5.7.60 SMTP; Client does not have permissions to send as this sender\r\n", Chunking::Whole).unwrap_err();
    assert_eq!((e.stage, e.retry), (Stage::Envelope, Retry::FixFirst));
    assert!(e.message.contains("<agent@shop.example>") && e.message.contains("Send As"), "{}", e.message);

    let mut s = envelope_sent(Chunking::Whole);
    exchange(&mut s, b"250 Ok\r\n554 5.7.1 Relay access denied\r\n554 5.7.1 Relay access denied\r\n554 5.5.1 no valid recipients\r\n", b"RSET\r\nQUIT\r\n", Chunking::Whole);
    let e = server(&mut s, b"250 Ok\r\n221 Bye\r\n", Chunking::Whole).unwrap_err();
    assert!(e.message.contains("relaying denied") && e.message.contains("submission server"), "{}", e.message);
}

#[test]
fn auth_explanations_depend_on_the_credentials_type() {
    let gmail = b"535-5.7.8 Username and Password not accepted. For more information, go to\r\n535 5.7.8  https://support.google.com/mail/?p=BadCredentials - gsmtp\r\n";
    // Basic: Gmail's app password advice.
    let mut s = session(Security::ImplicitTls);
    connect(&mut s);
    exchange(&mut s, GREETING, EHLO, Chunking::Whole);
    exchange(&mut s, EHLO_TLS_CAPS, AUTH_PLAIN, Chunking::Whole);
    let e = server(&mut s, gmail, Chunking::Whole).unwrap_err();
    assert!(e.message.contains("Gmail accepts only an app password"), "{}", e.message);
    assert_no_secret(&e, b"");

    // OAuth2 refused without a challenge: no password advice, the token hint instead.
    let mut s = session_with(Security::ImplicitTls, oauth(), &["ann@example.com"]);
    connect(&mut s);
    exchange(&mut s, GREETING, EHLO, Chunking::Whole);
    let ir = crate::sasl::xoauth2("agent@shop.example", TOKEN);
    exchange(&mut s, b"250-mx\r\n250 AUTH XOAUTH2\r\n", format!("AUTH XOAUTH2 {ir}\r\n").as_bytes(), Chunking::Whole);
    let e = server(&mut s, gmail, Chunking::Whole).unwrap_err();
    assert!(!e.message.contains("app password") && e.message.contains("refresh the token"), "{}", e.message);
    assert_no_secret(&e, b"");

    // Microsoft's SMTP AUTH switch applies to both.
    let mut s = session_with(Security::ImplicitTls, oauth(), &["ann@example.com"]);
    connect(&mut s);
    exchange(&mut s, GREETING, EHLO, Chunking::Whole);
    exchange(&mut s, b"250-mx\r\n250 AUTH XOAUTH2\r\n", format!("AUTH XOAUTH2 {ir}\r\n").as_bytes(), Chunking::Whole);
    let e = server(&mut s, b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.\r\n", Chunking::Whole)
        .unwrap_err();
    assert!(e.message.contains("Set-CASMailbox"), "{}", e.message);
    assert_eq!(e.retry, Retry::FixFirst);
}

#[test]
fn utf8_address_without_smtputf8_is_a_local_error_and_with_it_is_flagged() {
    for chunking in ALL {
        let mut s = session_with(Security::ImplicitTls, basic(), &["jörg@example.com"]);
        connect(&mut s);
        exchange(&mut s, GREETING, EHLO, chunking);
        exchange(&mut s, EHLO_TLS_CAPS, AUTH_PLAIN, chunking);
        let e = server(&mut s, AUTH_OK, chunking).unwrap_err();
        assert_eq!((e.kind, e.stage), (ErrorKind::InvalidInput, Stage::Envelope));
        assert!(e.message.contains("jörg@example.com") && e.message.contains("SMTPUTF8"), "{}", e.message);
    }
    let mut s = session_with(Security::ImplicitTls, basic(), &["jörg@example.com"]);
    connect(&mut s);
    exchange(&mut s, GREETING, EHLO, Chunking::Whole);
    // The same capabilities plus SMTPUTF8 (inserted before the last line, "250 CHUNKING").
    let caps = String::from_utf8(EHLO_TLS_CAPS.to_vec()).unwrap().replacen("250 ", "250-SMTPUTF8\r\n250 ", 1);
    exchange(&mut s, caps.as_bytes(), AUTH_PLAIN, Chunking::Whole);
    let mail = server(&mut s, AUTH_OK, Chunking::Whole).unwrap();
    assert!(text(&written(&mail)).starts_with("MAIL FROM:<agent@shop.example>") && text(&written(&mail)).contains(" SMTPUTF8\r\n"), "{}", text(&written(&mail)));
}
