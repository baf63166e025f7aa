//! Check mode ("test connection"): step reports, read-only sessions, nothing before TLS quoted.

use super::*;

fn progress(step: Step, detail: &str) -> Action {
    Action::Progress(StepReport::new(step, detail))
}

fn checked(messages: u32) -> Action {
    Action::Finished(Outcome::Checked(CheckSummary {
        folders: vec![FolderCount { folder: "INBOX".into(), messages }],
    }))
}

fn steps(actions: &[Action]) -> Vec<Step> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Progress(r) => Some(r.step),
            _ => None,
        })
        .collect()
}

fn details(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Progress(r) => Some(r.detail.clone()),
            _ => None,
        })
        .collect()
}

#[track_caller]
fn assert_no_detail_contains(actions: &[Action], forbidden: &[&str]) {
    for detail in details(actions) {
        for f in forbidden {
            assert!(!detail.contains(f), "{f:?} appears in the report {detail:?}");
        }
    }
}

/// Nothing beyond counting was asked of the server.
#[track_caller]
fn assert_read_only(h: &Host) {
    let all = text(&h.all_written);
    for forbidden in ["UIDL", "LIST", "RETR", "DELE", "TOP"] {
        assert!(!all.contains(forbidden), "{forbidden} was written in a check: {all:?}");
    }
}

const ALL_STEPS_WITH_STLS: [Step; 8] = [
    Step::Greeting,
    Step::Capabilities,
    Step::Starttls,
    Step::Capabilities,
    Step::Mechanisms,
    Step::Login,
    Step::Folder,
    Step::Logout,
];

#[test]
fn check_over_implicit_tls_reports_every_step_and_changes_nothing() {
    for chunk in CHUNKS {
        let mut h = Host::check(mailbox(Security::ImplicitTls, basic(), limits()), chunk);
        h.connect();
        h.exchange(GREETING, b"CAPA\r\n", vec![progress(Step::Greeting, "server ready: Dovecot ready.")]);
        h.exchange(
            CAPA_TLS,
            &auth_plain(),
            vec![
                progress(
                    Step::Capabilities,
                    "offered: CAPA, TOP, UIDL, RESP-CODES, PIPELINING, AUTH-RESP-CODE, USER, SASL PLAIN LOGIN",
                ),
                progress(Step::Mechanisms, "offered: PLAIN LOGIN USER/PASS; using AUTH PLAIN"),
            ],
        );
        // PIPELINING is offered, yet only STAT is asked: a check lists nothing.
        h.exchange(b"+OK Logged in.\r\n", b"STAT\r\n", vec![progress(Step::Login, &format!("logged in as {USER}"))]);
        h.assert_waiting();
        h.exchange(b"+OK 12 345678\r\n", b"QUIT\r\n", vec![progress(Step::Folder, "INBOX: 12 messages, 345678 bytes")]);
        h.assert_waiting();
        h.exchange(
            b"+OK Logging out.\r\n",
            b"",
            vec![progress(Step::Logout, "logged out"), Action::Close, checked(12)],
        );
        assert_eq!(h.session.deadline(), None);
        assert_eq!(h.session.sync_state(), None, "a check has no sync state");
        assert_eq!(text(&h.all_written), format!("CAPA\r\n{}STAT\r\nQUIT\r\n", text(&auth_plain())));
        assert_read_only(&h);
        assert_no_detail_contains(&h.all_others, &[PASSWORD, &sasl::plain(USER, PASSWORD)]);
        assert!(h.event(Event::Received(b"+OK\r\n")).is_err(), "a finished check accepts nothing more");
    }
}

#[test]
fn check_reports_come_before_the_bytes_written_next_in_the_same_action_list() {
    let mut session = Pop3Session::check(mailbox(Security::ImplicitTls, basic(), limits())).unwrap();
    assert!(session.handle(Event::Connected, T0).unwrap().is_empty());
    let progress_then_write = |actions: Vec<Action>, step: Step, written: &[u8]| {
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(matches!(&actions[0], Action::Progress(r) if r.step == step), "{actions:?}");
        assert_eq!(actions[1], Action::Write(written.to_vec()));
    };
    progress_then_write(session.handle(Event::Received(GREETING), T0).unwrap(), Step::Greeting, b"CAPA\r\n");
    let actions = session.handle(Event::Received(CAPA_TLS), T0).unwrap();
    assert_eq!(steps(&actions), [Step::Capabilities, Step::Mechanisms]);
    assert_eq!(actions.last(), Some(&Action::Write(auth_plain())));
    progress_then_write(session.handle(Event::Received(b"+OK\r\n"), T0).unwrap(), Step::Login, b"STAT\r\n");
    progress_then_write(session.handle(Event::Received(b"+OK 0 0\r\n"), T0).unwrap(), Step::Folder, b"QUIT\r\n");
    let actions = session.handle(Event::Received(b"+OK\r\n"), T0).unwrap();
    assert_eq!(actions, vec![progress(Step::Logout, "logged out"), Action::Close, checked(0)]);
}

#[test]
fn check_over_starttls_never_shows_what_the_server_said_before_tls() {
    let forged_greeting = b"+OK FORGED-GREETING ready\r\n";
    let forged_capa = b"+OK\r\nX-FORGED-CAPA\r\nSTLS\r\nSASL FORGEDMECH PLAIN\r\nUSER\r\n.\r\n";
    for chunk in CHUNKS {
        let mut h = Host::check(mailbox(Security::Starttls, basic(), limits()), chunk);
        h.connect();
        h.exchange(
            forged_greeting,
            b"CAPA\r\n",
            vec![progress(Step::Greeting, "server ready (its text arrived before encryption and is not shown)")],
        );
        h.exchange(
            forged_capa,
            b"STLS\r\n",
            vec![progress(Step::Capabilities, "STLS offered (the full list arrived before encryption and is not shown)")],
        );
        h.exchange(b"+OK Begin TLS FORGED\r\n", b"", vec![Action::StartTls]);
        let actions = h.session.handle(Event::TlsEstablished, h.now).unwrap();
        assert_eq!(
            actions,
            vec![
                progress(Step::Starttls, "the connection is now encrypted (STLS succeeded)"),
                Action::Write(b"CAPA\r\n".to_vec()),
            ]
        );
        h.all_others.push(actions[0].clone());
        h.all_written.extend_from_slice(b"CAPA\r\n");
        h.assert_waiting();
        // After TLS the server's own text may be shown; the first list was discarded, so no PLAIN.
        h.exchange(
            b"+OK\r\nUIDL\r\nUSER\r\nIMPLEMENTATION Real server\r\n.\r\n",
            format!("USER {USER}\r\n").as_bytes(),
            vec![
                progress(Step::Capabilities, "offered: UIDL, USER, IMPLEMENTATION Real server"),
                progress(Step::Mechanisms, "offered: USER/PASS; using USER/PASS"),
            ],
        );
        h.exchange(b"+OK\r\n", format!("PASS {PASSWORD}\r\n").as_bytes(), vec![]);
        h.exchange(b"+OK Logged in.\r\n", b"STAT\r\n", vec![progress(Step::Login, &format!("logged in as {USER}"))]);
        h.exchange(b"+OK 1 120\r\n", b"QUIT\r\n", vec![progress(Step::Folder, "INBOX: 1 message, 120 bytes")]);
        h.exchange(b"+OK Bye\r\n", b"", vec![progress(Step::Logout, "logged out"), Action::Close, checked(1)]);
        assert_eq!(steps(&h.all_others), ALL_STEPS_WITH_STLS);
        assert_no_detail_contains(&h.all_others, &["FORGED", PASSWORD]);
        assert_read_only(&h);
    }
}

#[test]
fn check_over_opted_in_plaintext_without_capa_assumes_user_pass() {
    let mut h = Host::check(mailbox(Security::InsecurePlaintext, basic(), limits()), usize::MAX);
    h.connect();
    // Plaintext was opted in: nothing is "before TLS", so the greeting is shown.
    h.exchange(b"+OK Test POP3 server\r\n", b"CAPA\r\n", vec![progress(Step::Greeting, "server ready: Test POP3 server")]);
    h.exchange(
        b"-ERR unknown command\r\n",
        format!("USER {USER}\r\n").as_bytes(),
        vec![
            progress(Step::Capabilities, "the server does not support CAPA; USER/PASS login is assumed"),
            progress(Step::Mechanisms, "offered: USER/PASS; using USER/PASS"),
        ],
    );
    h.exchange(b"+OK\r\n", format!("PASS {PASSWORD}\r\n").as_bytes(), vec![]);
    h.exchange(b"+OK\r\n", b"STAT\r\n", vec![progress(Step::Login, &format!("logged in as {USER}"))]);
    // A STAT without the size (seen on old servers) still counts.
    h.exchange(b"+OK 3\r\n", b"QUIT\r\n", vec![progress(Step::Folder, "INBOX: 3 messages")]);
    // Closing right after QUIT is a polite end too.
    let (w, o) = h.event(Event::Closed).unwrap();
    assert!(w.is_empty());
    assert_eq!(
        o,
        vec![
            progress(Step::Logout, "logged out (the server closed the connection after QUIT)"),
            Action::Close,
            checked(3)
        ]
    );
    assert_eq!(
        steps(&h.all_others),
        [Step::Greeting, Step::Capabilities, Step::Mechanisms, Step::Login, Step::Folder, Step::Logout]
    );
    assert_no_detail_contains(&h.all_others, &[PASSWORD]);
}

#[test]
fn check_with_oauth_names_every_offered_mechanism_and_never_the_token() {
    let mut h = Host::check(mailbox(Security::ImplicitTls, oauth(), limits()), 4);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![progress(Step::Greeting, "server ready: Dovecot ready.")]);
    let auth = format!("AUTH OAUTHBEARER {}\r\n", sasl::oauthbearer(USER, "ya29.token"));
    h.exchange(
        b"+OK\r\nSASL PLAIN XOAUTH2 OAUTHBEARER GSSAPI\r\n.\r\n",
        auth.as_bytes(),
        vec![
            progress(Step::Capabilities, "offered: SASL PLAIN XOAUTH2 OAUTHBEARER GSSAPI"),
            progress(Step::Mechanisms, "offered: PLAIN XOAUTH2 OAUTHBEARER GSSAPI; using AUTH OAUTHBEARER"),
        ],
    );
    h.exchange(b"+OK\r\n", b"STAT\r\n", vec![progress(Step::Login, &format!("logged in as {USER}"))]);
    h.exchange(b"+OK 0 0\r\n", b"QUIT\r\n", vec![progress(Step::Folder, "INBOX: 0 messages, 0 bytes")]);
    h.exchange(b"-ERR odd\r\n", b"", vec![
        progress(
            Step::Logout,
            "logged out (the server answered QUIT with an error, which is harmless: nothing was changed)",
        ),
        Action::Close,
        checked(0),
    ]);
    assert_no_detail_contains(&h.all_others, &["ya29.token", &sasl::oauthbearer(USER, "ya29.token")]);
}

#[test]
fn check_login_failure_is_the_usual_auth_error_and_reports_no_login() {
    let plain_b64 = sasl::plain(USER, PASSWORD);
    for chunk in CHUNKS {
        let mut h = Host::check(mailbox(Security::ImplicitTls, basic(), limits()), chunk);
        h.connect();
        h.exchange(GREETING, b"CAPA\r\n", vec![progress(Step::Greeting, "server ready: Dovecot ready.")]);
        h.server(CAPA_TLS).unwrap();
        let e = h.fails(b"-ERR [AUTH] Authentication failed.\r\n");
        assert_eq!((e.kind, e.stage), (ErrorKind::AuthRejected, Stage::Authenticate));
        assert_eq!(e.reply.as_ref().unwrap().text, "[AUTH] Authentication failed.");
        for shown in [e.to_string(), format!("{e:?}"), format!("{:?}", h.session)] {
            assert!(!shown.contains(PASSWORD) && !shown.contains(&plain_b64), "secret leaked: {shown}");
        }
        assert_eq!(steps(&h.all_others), [Step::Greeting, Step::Capabilities, Step::Mechanisms]);
        assert!(!h.all_others.iter().any(|a| matches!(a, Action::Finished(_))));
        assert_no_detail_contains(&h.all_others, &[PASSWORD, &plain_b64]);
        assert_eq!(h.session.deadline(), None);
        assert_read_only(&h);
    }

    // USER/PASS after STLS: the PASS rejection too.
    let mut h = Host::check(mailbox(Security::Starttls, basic(), limits()), usize::MAX);
    h.connect();
    h.exchange(GREETING, b"CAPA\r\n", vec![progress(Step::Greeting, "server ready (its text arrived before encryption and is not shown)")]);
    h.server(b"+OK\r\nSTLS\r\n.\r\n").unwrap();
    h.server(b"+OK\r\n").unwrap();
    h.event(Event::TlsEstablished).unwrap();
    h.server(b"+OK\r\nUSER\r\n.\r\n").unwrap();
    h.server(b"+OK\r\n").unwrap();
    let e = h.fails(b"-ERR invalid password\r\n");
    assert_eq!((e.kind, e.stage), (ErrorKind::AuthRejected, Stage::Authenticate));
    assert!(!format!("{e} {e:?}").contains(PASSWORD));
    assert!(!steps(&h.all_others).contains(&Step::Login));
    assert_no_detail_contains(&h.all_others, &[PASSWORD]);
}

#[test]
fn check_over_starttls_without_stls_fails_before_any_credential() {
    let mut h = Host::check(mailbox(Security::Starttls, basic(), limits()), usize::MAX);
    h.connect();
    h.server(GREETING).unwrap();
    let e = h.fails(b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n");
    assert_eq!((e.kind, e.stage), (ErrorKind::Policy, Stage::Starttls), "{e}");
    assert_no_credentials_written(&h);
    assert_eq!(steps(&h.all_others), [Step::Greeting]);
}

#[test]
fn check_with_a_malformed_or_refused_stat_is_a_listing_error() {
    let cases: [&[u8]; 5] = [b"+OK lots of mail\r\n", b"+OK\r\n", b"+OK -1 5\r\n", b"-ERR not now\r\n", b"* 12 EXISTS\r\n"];
    for case in cases {
        let mut h = Host::check(mailbox(Security::ImplicitTls, basic(), limits()), usize::MAX);
        h.connect();
        h.server(GREETING).unwrap();
        h.server(CAPA_TLS).unwrap();
        h.exchange(b"+OK\r\n", b"STAT\r\n", vec![progress(Step::Login, &format!("logged in as {USER}"))]);
        let e = h.fails(case);
        assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::ListMessages), "{}: {e}", text(case));
        assert!(!steps(&h.all_others).contains(&Step::Folder));
        assert_eq!(h.session.deadline(), None);
    }
}

#[test]
fn check_ignores_the_after_fetch_action_and_first_sync_policy() {
    for after_fetch in [AfterFetch::Delete, AfterFetch::MoveTo("Done".into()), AfterFetch::Keep { mark_seen: true }] {
        let mailbox = configured(after_fetch, FirstSync::Newest(5), limits());
        let mut h = Host::check(mailbox, usize::MAX);
        h.connect();
        h.server(GREETING).unwrap();
        h.server(CAPA_TLS).unwrap();
        h.server(b"+OK\r\n").unwrap();
        h.exchange(b"+OK 4 1000\r\n", b"QUIT\r\n", vec![progress(Step::Folder, "INBOX: 4 messages, 1000 bytes")]);
        let (_, o) = h.server(b"+OK\r\n").unwrap();
        assert_eq!(o.last(), Some(&checked(4)));
        assert_read_only(&h);
        assert_eq!(h.session.sync_state(), None);
    }
    let imap = Mailbox { protocol: InboundProtocol::Imap, ..mailbox(Security::ImplicitTls, basic(), limits()) };
    assert_eq!(Pop3Session::check(imap).unwrap_err().kind, ErrorKind::InvalidInput);
}

#[test]
fn check_reports_clean_bounded_server_text() {
    let mut greeting = b"+OK \x1b[31mred\x07 ".to_vec();
    greeting.extend_from_slice(&[b'x'; 500]);
    greeting.extend_from_slice(b"\r\n");
    let mut capa = b"+OK\r\n".to_vec();
    // Within MAX_CAPA_LINES (128), far more text than a report shows.
    for n in 0..120 {
        capa.extend_from_slice(format!("X-CAP-{n}\r\n").as_bytes());
    }
    capa.extend_from_slice(b"SASL PLAIN\r\n.\r\n");
    let mut h = Host::check(mailbox(Security::ImplicitTls, basic(), limits()), 64);
    h.connect();
    h.server(&greeting).unwrap();
    h.server(&capa).unwrap();
    let reports = details(&h.all_others);
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert!(reports[0].starts_with("server ready: [31mred x"), "{}", reports[0]);
    for detail in &reports {
        assert!(!detail.chars().any(char::is_control), "control character in {detail:?}");
        // Our own wording plus at most 200 characters of the server's.
        assert!(detail.chars().count() <= 250, "{} chars: {detail}", detail.chars().count());
    }
    assert!(reports[1].starts_with("offered: X-CAP-0, X-CAP-1") && reports[1].ends_with("..."), "{}", reports[1]);
    assert_eq!(reports[2], "offered: PLAIN; using AUTH PLAIN");
}

#[test]
fn check_waits_with_a_deadline_and_times_out_at_the_step_it_was_in() {
    let mut h = Host::check(mailbox(Security::ImplicitTls, basic(), limits()), usize::MAX);
    h.connect();
    h.server(GREETING).unwrap();
    h.server(CAPA_TLS).unwrap();
    h.server(b"+OK\r\n").unwrap();
    h.assert_waiting();
    h.now += TIMEOUT;
    let e = h.event(Event::Timer).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Timeout, Stage::ListMessages));
}

#[test]
fn fetch_sessions_never_report_progress() {
    // Host::event asserts it for every non-check session; this runs both TLS modes explicitly.
    let mut h = logged_in(mailbox(Security::ImplicitTls, basic(), limits()), None, usize::MAX);
    h.exchange(&listing(&[(1, "u1", 120)]), b"RETR 1\r\n", vec![]);
    h.exchange(MSG1_WIRE, b"", vec![deliver("u1", MSG1_RAW)]);
    h.event(Event::Stored).unwrap();
    h.exchange(b"+OK\r\n", b"", finished(1, 0));

    let mut h = Host::new(mailbox(Security::Starttls, basic(), limits()), None, usize::MAX);
    h.connect();
    h.server(GREETING).unwrap();
    h.server(b"+OK\r\nSTLS\r\nUSER\r\n.\r\n").unwrap();
    h.server(b"+OK\r\n").unwrap();
    h.event(Event::TlsEstablished).unwrap();
    h.server(b"+OK\r\nUSER\r\n.\r\n").unwrap();
    h.server(b"+OK\r\n").unwrap();
    h.server(b"+OK\r\n").unwrap();
    h.server(b"+OK 0 0\r\n").unwrap();
    h.exchange(b"+OK\r\n", b"", finished(0, 0));
    assert!(steps(&h.all_others).is_empty());
    assert!(!h.all_others.is_empty(), "the record of actions is kept");
}
