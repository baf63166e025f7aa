//! The connection check (`ImapSession::check`): EXAMINE and count each folder, report every
//! step, fetch and change nothing.

use super::*;
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
    let script = Script::login()
        .s(b"* 4 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\na2 OK [READ-ONLY] ok\r\n")
        .c(b"a3 EXAMINE \"Archiv Kunden\"\r\n")
        .s(b"a3 NO [NONEXISTENT] Mailbox doesn't exist: Archiv Kunden\r\n");
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
    let script = Script::login()
        .s(b"* 4 EXISTS\r\na2 OK ok\r\n");
    let run = drive_all(|| ImapSession::check(mailbox(Security::ImplicitTls)).unwrap(), &script);
    assert_eq!((run.err().kind, run.err().stage), (ErrorKind::Protocol, Stage::SelectMailbox));
    assert!(!steps(&run).contains(&CheckStep::Folder));
}

#[test]
fn check_writes_nothing_that_reads_or_changes_messages() {
    let mut mb = mailbox(Security::ImplicitTls);
    mb.folders = vec!["Kunden/Anfragen".into()];
    mb.after_fetch = AfterFetch::MoveTo("Erledigt/2026".into());
    let script = Script::login()
        .with_step(3, C(b"a2 LIST \"\" \"\"\r\n"))
        .s(b"* LIST (\\Noselect) \".\" \"\"\r\na2 OK List completed\r\n")
        .c(b"a3 EXAMINE \"Kunden.Anfragen\"\r\n")
        .s(b"* 50000 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n* OK [UIDNEXT 100001] ok\r\na3 OK [READ-ONLY] ok\r\n")
        .logout_bye(4);
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
