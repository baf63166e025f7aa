//! Check mode ("test connection"): every step is reported, nothing is sent.

use super::*;

/// A check's last actions: the logout step saying `detail`, the close, an empty summary.
fn assert_check_ended(end: &[Action], detail: &str) {
    let want = [
        Action::Progress(StepReport::new(Step::Logout, detail)),
        Action::Close,
        Action::Finished(Outcome::Checked(CheckSummary::default())),
    ];
    assert_eq!(end, want);
}

/// The steps of a check that needs no STARTTLS (implicit TLS, opted-in plaintext).
fn steps_without_starttls() -> Vec<Step> {
    [[Step::Greeting, Step::Capabilities, Step::Mechanisms, Step::Login].as_slice(), &CHECK_ENDING].concat()
}

#[test]
fn check_over_implicit_tls_reports_every_step_and_never_sends_data() {
    for chunking in ALL {
        let mut s = check_session(Security::ImplicitTls, basic(), &["ann@example.com", "bob@example.net"]);
        connect(&mut s);
        let mut all = Vec::new();
        let greeting = exchange(&mut s, GREETING, EHLO, chunking);
        // The report comes before the bytes it led to.
        assert!(matches!(greeting.as_slice(), [Action::Progress(_), Action::Write(_)]), "{greeting:?}");
        assert_detail(&greeting, Step::Greeting, "server ready: 220 smtp.shop.example ESMTP Postfix (Debian/GNU)");
        all.extend(greeting);
        let caps = exchange(&mut s, EHLO_TLS_CAPS, AUTH_PLAIN, chunking);
        assert_eq!(steps(&caps), [Step::Capabilities, Step::Mechanisms]);
        assert!(matches!(caps.last(), Some(Action::Write(_))), "{caps:?}");
        let detail = &reports(&caps)[0].detail;
        assert!(detail.starts_with("EHLO accepted; extensions: PIPELINING, SIZE 10240000") && detail.contains("AUTH PLAIN LOGIN"), "{detail}");
        assert_detail(&caps, Step::Mechanisms, "offered: PLAIN LOGIN; using AUTH PLAIN");
        all.extend(caps);
        // PIPELINING is offered, but a check goes one command at a time, without SIZE.
        let login = exchange(&mut s, AUTH_OK, b"MAIL FROM:<agent@shop.example>\r\n", chunking);
        assert_detail(&login, Step::Login, "logged in as agent@shop.example");
        all.extend(login);
        all.extend(exchange(&mut s, b"250 2.1.0 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", chunking));
        all.extend(exchange(&mut s, b"250 2.1.5 Ok\r\n", b"RCPT TO:<bob@example.net>\r\n", chunking));
        let envelope = exchange(&mut s, b"250 2.1.5 Ok\r\n", b"RSET\r\n", chunking);
        assert!(matches!(envelope.as_slice(), [Action::Progress(_), Action::Write(_)]), "{envelope:?}");
        assert_detail(&envelope, Step::Envelope, "MAIL FROM:<agent@shop.example> and RCPT TO:<ann@example.com>, <bob@example.net> accepted");
        all.extend(envelope);
        let reset = exchange(&mut s, b"250 2.0.0 Ok\r\n", b"QUIT\r\n", chunking);
        assert_detail(&reset, Step::Reset, "the probe was reset: nothing was sent");
        all.extend(reset);
        let end = exchange(&mut s, b"221 2.0.0 Bye\r\n", b"", chunking);
        assert_check_ended(&end, "the server answered QUIT: 221 2.0.0 Bye");
        all.extend(end);
        assert_eq!(steps(&all), steps_without_starttls());
        let wire = text(&written(&all));
        assert!(!wire.contains("DATA") && !wire.contains("SIZE="), "{wire}");
        assert_no_secret_in_details(&all);
        assert_eq!(s.deadline(), None);
    }
}

#[test]
fn check_over_starttls_reports_tls_and_quotes_no_text_from_before_it() {
    for chunking in ALL {
        let mut s = check_session(Security::Starttls, basic(), &["ann@example.com"]);
        connect(&mut s);
        let mut all = exchange(&mut s, b"220 FORGED-greeting ESMTP\r\n", EHLO, chunking);
        assert_detail(&all, Step::Greeting, "server ready (its text arrived before encryption and is not shown)");
        let caps = exchange(&mut s, b"250-FORGED-name\r\n250-AUTH FORGEDMECH\r\n250 STARTTLS\r\n", b"STARTTLS\r\n", chunking);
        assert_eq!(steps(&caps), [Step::Capabilities]);
        assert!(reports(&caps)[0].detail.starts_with("STARTTLS offered"), "{caps:?}");
        all.extend(caps);
        let tls = exchange(&mut s, b"220 2.0.0 FORGED-ready\r\n", b"", chunking);
        assert_eq!(tls, [Action::StartTls]);
        let established = s.handle(Event::TlsEstablished, T0).unwrap();
        assert_eq!(
            established,
            [
                Action::Progress(StepReport::new(Step::Starttls, "STARTTLS succeeded: the connection is now encrypted")),
                Action::Write(EHLO.to_vec()),
            ]
        );
        all.extend(established);
        // After TLS the server's words may be quoted.
        let caps = exchange(&mut s, b"250-smtp.shop.example\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n", AUTH_PLAIN, chunking);
        assert_detail(&caps, Step::Capabilities, "EHLO accepted; extensions: PIPELINING, AUTH PLAIN LOGIN");
        assert_detail(&caps, Step::Mechanisms, "offered: PLAIN LOGIN; using AUTH PLAIN");
        all.extend(caps);
        all.extend(exchange(&mut s, AUTH_OK, b"MAIL FROM:<agent@shop.example>\r\n", chunking));
        all.extend(exchange(&mut s, b"250 2.1.0 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", chunking));
        all.extend(exchange(&mut s, b"250 2.1.5 Ok\r\n", b"RSET\r\n", chunking));
        all.extend(exchange(&mut s, b"250 2.0.0 Ok\r\n", b"QUIT\r\n", chunking));
        let end = exchange(&mut s, b"221 2.0.0 Bye\r\n", b"", chunking);
        assert!(matches!(end.last(), Some(Action::Finished(Outcome::Checked(_)))), "{end:?}");
        all.extend(end);
        assert_eq!(
            steps(&all),
            [
                [Step::Greeting, Step::Capabilities, Step::Starttls, Step::Capabilities, Step::Mechanisms, Step::Login].as_slice(),
                &CHECK_ENDING
            ]
            .concat()
        );
        for r in reports(&all) {
            assert!(!r.detail.contains("FORGED") && !r.detail.contains("ESMTP"), "pre-TLS text shown: {r:?}");
        }
        assert_no_secret_in_details(&all);
    }
}

#[test]
fn check_over_opted_in_plaintext_with_auth_login_ends_when_the_server_hangs_up() {
    let mut s = check_session(Security::InsecurePlaintext, basic(), &["ann@example.com"]);
    connect(&mut s);
    let mut all = exchange(&mut s, b"220 test.local ESMTP\x07 ready\r\n", EHLO, Chunking::Whole);
    // Opted-in plaintext is not "unverified": the text is shown, without control characters.
    assert_detail(&all, Step::Greeting, "server ready: 220 test.local ESMTP ready");
    let caps = exchange(&mut s, b"250-test.local\r\n250 AUTH LOGIN\r\n", b"AUTH LOGIN\r\n", Chunking::Whole);
    assert_detail(&caps, Step::Mechanisms, "offered: LOGIN; using AUTH LOGIN");
    all.extend(caps);
    all.extend(exchange(&mut s, b"334 VXNlcm5hbWU6\r\n", b"YWdlbnRAc2hvcC5leGFtcGxl\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"334 UGFzc3dvcmQ6\r\n", b"czNjcjN0LVBhNTU=\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, AUTH_OK, b"MAIL FROM:<agent@shop.example>\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n", b"RSET\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n", b"QUIT\r\n", Chunking::Whole));
    let end = s.handle(Event::Closed, T0).unwrap();
    assert_check_ended(&end, "the server closed the connection after QUIT");
    all.extend(end);
    assert_eq!(steps(&all), steps_without_starttls());
    assert_no_secret_in_details(&all);
    assert_eq!(s.deadline(), None);
}

#[test]
fn check_with_a_refused_login_fails_without_a_login_step_or_the_password() {
    for chunking in ALL {
        let mut s = check_session(Security::ImplicitTls, basic(), &["ann@example.com"]);
        connect(&mut s);
        let mut all = exchange(&mut s, GREETING, EHLO, chunking);
        all.extend(exchange(&mut s, EHLO_TLS_CAPS, AUTH_PLAIN, chunking));
        let e = server(&mut s, b"535 5.7.8 Error: authentication failed: authentication failure\r\n", chunking).unwrap_err();
        assert_eq!((e.kind, e.stage), (ErrorKind::AuthRejected, Stage::Authenticate));
        assert_eq!(e.reply, Some(ServerReply::new("535", "5.7.8 Error: authentication failed: authentication failure")));
        assert_no_secret(&e, b"");
        assert_eq!(steps(&all), [Step::Greeting, Step::Capabilities, Step::Mechanisms]);
        assert_no_secret_in_details(&all);
        assert_eq!(s.deadline(), None);
    }
}

#[test]
fn check_with_an_oauth_token_reports_the_mechanism_and_never_the_token() {
    let mut s = check_session(Security::ImplicitTls, oauth(), &["ann@example.com"]);
    connect(&mut s);
    let mut all = exchange(&mut s, GREETING, EHLO, Chunking::Whole);
    let ir = crate::sasl::oauthbearer("agent@shop.example", TOKEN);
    let caps = exchange(&mut s, b"250-mx\r\n250 AUTH LOGIN PLAIN XOAUTH2 OAUTHBEARER\r\n", format!("AUTH OAUTHBEARER {ir}\r\n").as_bytes(), Chunking::Whole);
    assert_detail(&caps, Step::Mechanisms, "offered: LOGIN PLAIN XOAUTH2 OAUTHBEARER; using AUTH OAUTHBEARER");
    all.extend(caps);
    all.extend(exchange(&mut s, AUTH_OK, b"MAIL FROM:<agent@shop.example>\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n", b"RSET\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n", b"QUIT\r\n", Chunking::Whole));
    // A careless server echoing the token in its goodbye: redacted in the detail.
    let end = exchange(&mut s, format!("221 bye {TOKEN} {ir}\r\n").as_bytes(), b"", Chunking::Whole);
    assert_detail(&end, Step::Logout, "the server answered QUIT: 221 bye <redacted> <redacted>");
    all.extend(end);
    for r in reports(&all) {
        assert!(!r.detail.contains(TOKEN) && !r.detail.contains(&ir), "{r:?}");
    }
}

#[test]
fn check_with_a_refused_sender_fails_at_the_envelope_with_the_reply() {
    for chunking in ALL {
        let mut s = check_session(Security::ImplicitTls, basic(), &["ann@example.com"]);
        connect(&mut s);
        exchange(&mut s, GREETING, EHLO, chunking);
        exchange(&mut s, EHLO_TLS_CAPS, AUTH_PLAIN, chunking);
        exchange(&mut s, AUTH_OK, b"MAIL FROM:<agent@shop.example>\r\n", chunking);
        let e = server(&mut s, b"550 5.7.60 SMTP; Client does not have permissions to send as this sender\r\n", chunking).unwrap_err();
        assert_eq!((e.kind, e.stage, e.retry), (ErrorKind::Protocol, Stage::Envelope, Retry::FixFirst));
        assert_eq!(e.reply, Some(ServerReply::new("550", "5.7.60 SMTP; Client does not have permissions to send as this sender")));
        assert!(e.message.contains("<agent@shop.example>") && e.message.contains("Send As"), "{}", e.message);
        assert_eq!(s.deadline(), None);
    }
}

/// A check that has reached the RSET of the accepted probe envelope.
fn check_at_reset() -> (SmtpSession, Vec<Action>) {
    let mut s = check_session(Security::ImplicitTls, basic(), &["ann@example.com"]);
    connect(&mut s);
    let mut all = exchange(&mut s, GREETING, EHLO, Chunking::Whole);
    all.extend(exchange(&mut s, EHLO_TLS_CAPS, AUTH_PLAIN, Chunking::Whole));
    all.extend(exchange(&mut s, AUTH_OK, b"MAIL FROM:<agent@shop.example>\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n", b"RSET\r\n", Chunking::Whole));
    (s, all)
}

#[test]
fn check_with_rset_refused_fails_and_without_a_quit_answer_ends_without_a_logout_step() {
    let (mut s, _) = check_at_reset();
    let e = server(&mut s, b"502 5.5.1 RSET not implemented\r\n", Chunking::Whole).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::Envelope));
    assert!(e.message.contains("RSET") && e.message.contains("nothing was sent"), "{}", e.message);

    let (mut s, _) = check_at_reset();
    exchange(&mut s, b"250 Ok\r\n", b"QUIT\r\n", Chunking::Whole);
    let deadline = s.deadline().unwrap();
    assert!(s.handle(Event::Timer, deadline - 1).unwrap().is_empty());
    let end = s.handle(Event::Timer, deadline).unwrap();
    assert_eq!(end, [Action::Close, Action::Finished(Outcome::Checked(CheckSummary::default()))]);
}

#[test]
fn check_flags_smtputf8_only_when_an_address_needs_it() {
    let mut s = check_session(Security::ImplicitTls, basic(), &["jörg@example.com"]);
    connect(&mut s);
    exchange(&mut s, GREETING, EHLO, Chunking::Whole);
    let caps = String::from_utf8(EHLO_TLS_CAPS.to_vec()).unwrap().replacen("250 ", "250-SMTPUTF8\r\n250 ", 1);
    exchange(&mut s, caps.as_bytes(), AUTH_PLAIN, Chunking::Whole);
    exchange(&mut s, AUTH_OK, b"MAIL FROM:<agent@shop.example> SMTPUTF8\r\n", Chunking::Whole);
    exchange(&mut s, b"250 Ok\r\n", "RCPT TO:<jörg@example.com>\r\n".as_bytes(), Chunking::Whole);
}

#[test]
fn check_validates_like_a_send_and_hides_the_password() {
    let make = |from: &str, to: Vec<&str>, helo: &str| {
        let mut sub = submission(Security::ImplicitTls, basic());
        sub.helo_name = helo.into();
        SmtpSession::check(sub, from.into(), to.into_iter().map(String::from).collect())
    };
    for (from, to, helo) in [
        ("", vec!["d@e.f"], "h"),
        ("a@b.c", vec!["d@e.f\r\nDATA"], "h"),
        ("a@b.c", vec![], "h"),
        ("a@b.c", vec!["d@e.f"], "bad name"),
    ] {
        let e = make(from, to.clone(), helo).unwrap_err();
        assert_eq!((e.kind, e.stage), (ErrorKind::InvalidInput, Stage::Envelope), "{from:?} {to:?} {helo:?}");
    }
    let s = make("a@b.c", vec!["d@e.f"], "h").unwrap();
    assert!(!format!("{s:?}").contains(PASSWORD));
}

#[test]
fn normal_sends_report_no_progress() {
    // Pipelined over implicit TLS.
    let mut s = session(Security::ImplicitTls);
    connect(&mut s);
    let mut all = exchange(&mut s, GREETING, EHLO, Chunking::Whole);
    all.extend(exchange(&mut s, EHLO_TLS_CAPS, AUTH_PLAIN, Chunking::Whole));
    all.extend(exchange(&mut s, AUTH_OK, &pipelined_envelope(), Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", DATA, Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n", b"QUIT\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"221 Bye\r\n", b"", Chunking::Whole));
    assert!(matches!(all.last(), Some(Action::Finished(Outcome::Sent(_)))), "{all:?}");
    assert!(reports(&all).is_empty(), "{all:?}");

    // STARTTLS, one command at a time, ended by a hang-up.
    let mut s = session_with(Security::Starttls, basic(), &["ann@example.com"]);
    connect(&mut s);
    let mut all = exchange(&mut s, GREETING, EHLO, Chunking::Whole);
    all.extend(exchange(&mut s, b"250-mx\r\n250 STARTTLS\r\n", b"STARTTLS\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"220 go\r\n", b"", Chunking::Whole));
    all.extend(s.handle(Event::TlsEstablished, T0).unwrap());
    all.extend(exchange(&mut s, b"250-mx\r\n250 AUTH PLAIN\r\n", AUTH_PLAIN, Chunking::Whole));
    all.extend(exchange(&mut s, AUTH_OK, b"MAIL FROM:<agent@shop.example>\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n", b"DATA\r\n", Chunking::Whole));
    all.extend(exchange(&mut s, b"354 go\r\n", DATA, Chunking::Whole));
    all.extend(exchange(&mut s, b"250 Ok\r\n", b"QUIT\r\n", Chunking::Whole));
    all.extend(s.handle(Event::Closed, T0).unwrap());
    assert!(matches!(all.last(), Some(Action::Finished(Outcome::Sent(_)))), "{all:?}");
    assert!(reports(&all).is_empty(), "{all:?}");
}
