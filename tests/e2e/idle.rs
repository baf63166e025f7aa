//! IMAP IDLE without a live instance (issue 13), through the real component against the rig's
//! Dovecot (boxes 41-44): existing mail fetched, then idling with no instance alive; mail
//! delivered during the idle wakes the mailbox and is stored; the re-IDLE timer; a stop logs
//! out; the server closing the connection is a typed error; a server without IDLE ends the
//! session as before; the idle state holds no secret.

use std::time::{Duration, Instant};

use mailplug_host::db::Database;
use mailplug_host::engine::Stage;
use mailplug_host::ops::{self, fetch_and_idle, CancellationToken, IdleHandle, IdleOutcome, Wake};
use mailplug_host::store::{MemorySink, NoSyncState};
use mailplug_host::{HostError, Kind, Plugin, Retry, RuntimeOptions, TenantConfig};
use mailplug_tests::scripted::{s, Fake, Step};
use mailplug_tests::{contains, dovecot_log_len, dovecot_log_since, plugin, rig, sample_message, secret_forms, tenant, test_box, wasm_path, ServerSpec};
use mailplug_tests::TempPath;

fn db_path(name: &str) -> TempPath {
    TempPath::file(&format!("idle-{name}"), "mailplug.sqlite3")
}

/// A tenant whose IMAP mailbox is rig box `n` over implicit TLS, with a re-IDLE timer of
/// `renew_secs`.
fn config(n: u32, renew_secs: u32) -> (TenantConfig, String, String) {
    config_on(n, renew_secs, true)
}

/// `config` over implicit TLS (`tls`) or STARTTLS.
fn config_on(n: u32, renew_secs: u32, tls: bool) -> (TenantConfig, String, String) {
    let r = rig();
    let (user, pass) = test_box(n);
    let port = if tls { r.port("RIG_IMAPS_PORT") } else { r.port("RIG_IMAP_STARTTLS_PORT") };
    let inb = ServerSpec::new("localhost", port, tls, &user, &pass);
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    let mut cfg = tenant("imap", &inb, &smtp, true);
    cfg.limits.idle_renew_secs = renew_secs;
    (cfg, user, pass)
}

async fn idle_or_panic(outcome: Result<IdleOutcome, HostError>) -> IdleHandle {
    match outcome {
        Ok(IdleOutcome::Idling(h)) => h,
        Ok(IdleOutcome::Done(s)) => panic!("the session ended instead of idling: {s:?}"),
        Err(e) => panic!("{e}"),
    }
}

/// Waits (at most `limit`) for the handle to wake up.
async fn wake_within(h: &mut IdleHandle, cancel: &CancellationToken, limit: Duration) -> Wake {
    tokio::time::timeout(limit, h.wait(cancel)).await.expect("the idle wait ended in time")
}

fn stored_ids(db: &Database, cfg: &TenantConfig) -> Vec<String> {
    db.messages(&cfg.tenant, "inbox").expect("messages").into_iter().map(|m| m.message_id).collect()
}

#[tokio::test]
async fn idle_holds_no_instance_and_new_mail_wakes_it_and_is_stored() {
    let r = rig();
    // Two slots: one fetch's instance and its parse instance. Three mailboxes idling at once
    // fit only when an idling mailbox holds none.
    let small = Plugin::load_with(&wasm_path(), &RuntimeOptions::default().with_instances(2)).expect("plugin");
    let (cfg, user, pass) = config(41, 1500);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &sample_message("idle-41-a@test", "first"));
    r.put(&user, "INBOX", &sample_message("idle-41-b@test", "second"));
    let tmp = db_path("41");
    let db = Database::open(&tmp).expect("db");
    let mut sink = db.sink(&cfg.tenant, "inbox");
    let mut h = idle_or_panic(fetch_and_idle(&small, &cfg, "inbox", &mut sink, &db).await).await;
    drop(sink);
    assert_eq!(h.summary().delivered, 2, "existing mail fetched before idling");
    assert_eq!(stored_ids(&db, &cfg).len(), 2);

    // The idle state is small and holds no secret in any of its wire forms.
    let state = h.idle_state().to_vec();
    assert!(state.len() < 1024, "{} bytes", state.len());
    for form in secret_forms(&user, &pass) {
        assert!(!contains(&state, &form), "a form of the password in the idle state");
    }

    // While box 41 idles, two more connections go idle with the same two slots (box 41
    // again: the other boxes belong to the other tests, which run at the same time).
    let mut others = Vec::new();
    for _ in 0..2 {
        let (c, _, _) = config(41, 1500);
        let mut mem = MemorySink::default();
        others.push(idle_or_panic(fetch_and_idle(&small, &c, "inbox", &mut mem, &NoSyncState).await).await);
    }

    // Mail delivered during the idle wakes it and is stored within seconds.
    let cancel = CancellationToken::new();
    let started = Instant::now();
    r.put(&user, "INBOX", &sample_message("idle-41-c@test", "during the idle"));
    let mut stored_c = false;
    for _ in 0..5 {
        let wake = wake_within(&mut h, &cancel, Duration::from_secs(10)).await;
        assert_eq!(wake, Wake::Readable);
        let mut sink = db.sink(&cfg.tenant, "inbox");
        h = idle_or_panic(h.resume(&small, &cfg, wake, &mut sink, &db).await).await;
        drop(sink);
        if stored_ids(&db, &cfg).iter().any(|id| id == "idle-41-c@test") {
            stored_c = true;
            break;
        }
    }
    assert!(stored_c, "the message delivered during the idle was stored");
    assert!(started.elapsed() < Duration::from_secs(10), "stored after {:?}", started.elapsed());
    let ids = stored_ids(&db, &cfg);
    assert_eq!(ids.len(), 3, "each message stored once: {ids:?}");

    // And it idles again, still without an instance: a further fetch fits.
    let (c, _, _) = config(41, 1500);
    let mut mem = MemorySink::default();
    match fetch_and_idle(&small, &c, "inbox", &mut mem, &NoSyncState).await {
        Ok(IdleOutcome::Idling(_)) => {}
        Ok(IdleOutcome::Done(s)) => panic!("ended: {s:?}"),
        Err(e) => panic!("a slot should be free while four mailboxes idle: {e}"),
    }
}

#[tokio::test]
async fn the_renew_timer_re_issues_idle_and_the_mailbox_keeps_working() {
    let r = rig();
    let (cfg, user, _) = config(42, 2);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &sample_message("idle-42-0@test", "before"));
    let tmp = db_path("42");
    let db = Database::open(&tmp).expect("db");
    let mut sink = db.sink(&cfg.tenant, "inbox");
    let mut h = idle_or_panic(fetch_and_idle(plugin(), &cfg, "inbox", &mut sink, &db).await).await;
    drop(sink);
    assert_eq!(h.summary().delivered, 1);
    let cancel = CancellationToken::new();

    // Another client flags the message: Dovecot tells the idling connection (FETCH FLAGS). That
    // wakes it, but nothing is fetched or written, and the re-IDLE deadline stays.
    let uid = r.listing(&user, "INBOX")[0].0;
    let mut noise_seen = false;
    for flag in ["\\Flagged", "\\Answered", "$Label1"] {
        let deadline = h.renews_at();
        r.add_flags(&user, "INBOX", uid, flag);
        let wake = wake_within(&mut h, &cancel, Duration::from_secs(10)).await;
        let mut sink = db.sink(&cfg.tenant, "inbox");
        h = idle_or_panic(h.resume(plugin(), &cfg, wake, &mut sink, &db).await).await;
        if wake == Wake::Readable {
            assert_eq!(h.summary().delivered, 0);
            assert_eq!(h.renews_at(), deadline, "noise must not restart the re-IDLE timer");
            noise_seen = true;
            break;
        }
        // The timer won the race (a loaded machine): try again.
    }
    assert!(noise_seen, "the flag changes never woke the idling connection");
    assert_eq!(stored_ids(&db, &cfg).len(), 1);

    // Twice in a row: the timer fires, the session re-issues IDLE, the deadline moves on.
    for _ in 0..2 {
        let deadline = h.renews_at();
        let wake = wake_within(&mut h, &cancel, Duration::from_secs(10)).await;
        assert_eq!(wake, Wake::Renew);
        assert!(tokio::time::Instant::now() >= deadline);
        let mut sink = db.sink(&cfg.tenant, "inbox");
        h = idle_or_panic(h.resume(plugin(), &cfg, wake, &mut sink, &db).await).await;
        assert_eq!(h.summary().delivered, 0);
        assert!(h.renews_at() >= deadline + Duration::from_secs(2), "renewed");
    }
    // Still working: new mail wakes it (before the next renew, or right after it).
    r.put(&user, "INBOX", &sample_message("idle-42-a@test", "after renewing"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stored_ids(&db, &cfg).iter().any(|id| id == "idle-42-a@test") {
        assert!(Instant::now() < deadline, "the message was not stored in time");
        let wake = wake_within(&mut h, &cancel, Duration::from_secs(10)).await;
        let mut sink = db.sink(&cfg.tenant, "inbox");
        h = idle_or_panic(h.resume(plugin(), &cfg, wake, &mut sink, &db).await).await;
    }
    assert_eq!(stored_ids(&db, &cfg).len(), 2);
}

#[tokio::test]
async fn over_starttls_new_mail_is_stored_and_stop_ends_idle_with_a_logout() {
    let r = rig();
    let (cfg, user, _) = config_on(43, 1500, false);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &sample_message("idle-43-a@test", "before"));
    let log_from = dovecot_log_len();
    let mut sink = MemorySink::default();
    let mut h = idle_or_panic(fetch_and_idle(plugin(), &cfg, "inbox", &mut sink, &NoSyncState).await).await;
    assert_eq!(sink.messages.len(), 1);
    assert!(String::from_utf8_lossy(h.idle_state()).contains(r#""secure":true"#));
    // The resumed session continues on the encrypted connection.
    let cancel = CancellationToken::new();
    r.put(&user, "INBOX", &sample_message("idle-43-b@test", "during"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.messages.len() < 2 {
        assert!(Instant::now() < deadline, "the message was not stored in time");
        let wake = wake_within(&mut h, &cancel, Duration::from_secs(10)).await;
        h = idle_or_panic(h.resume(plugin(), &cfg, wake, &mut sink, &NoSyncState).await).await;
    }
    assert!(contains(&sink.messages[1].raw, b"idle-43-b@test"), "the second message stored is the new one");
    cancel.cancel();
    let wake = wake_within(&mut h, &cancel, Duration::from_secs(5)).await;
    assert_eq!(wake, Wake::Stop);
    match h.resume(plugin(), &cfg, wake, &mut sink, &NoSyncState).await {
        Ok(IdleOutcome::Done(s)) => assert_eq!(s.delivered, 0),
        Ok(IdleOutcome::Idling(_)) => panic!("a stopped mailbox idled again"),
        Err(e) => panic!("{e}"),
    }
    // Dovecot logs "Disconnected: Logged out" for a LOGOUT, "Disconnected: Connection closed"
    // for a connection dropped without one.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = dovecot_log_since(log_from, &user);
        if lines.iter().any(|l| l.contains("Logged out")) {
            assert!(!lines.iter().any(|l| l.contains("Connection closed")), "{lines:#?}");
            break;
        }
        assert!(Instant::now() < deadline, "no logout in Dovecot's log: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_server_closing_the_idle_connection_is_a_network_error_to_retry_later() {
    let r = rig();
    let (cfg, user, _) = config(44, 1500);
    r.reset_mailbox(&user);
    let mut sink = MemorySink::default();
    let mut h = idle_or_panic(fetch_and_idle(plugin(), &cfg, "inbox", &mut sink, &NoSyncState).await).await;
    // Dovecot ends the user's sessions (BYE, then closes), as on a restart.
    r.doveadm(&["kick", &user]);
    let cancel = CancellationToken::new();
    let wake = wake_within(&mut h, &cancel, Duration::from_secs(10)).await;
    assert_eq!(wake, Wake::Readable);
    let e = match h.resume(plugin(), &cfg, wake, &mut sink, &NoSyncState).await {
        Err(e) => e,
        Ok(_) => panic!("a closed idle connection must be an error"),
    };
    assert_eq!(e.kind(), Some(Kind::Network), "{e}");
    assert_eq!(e.retry(), Retry::Later, "{e}");
    assert!(e.to_string().contains("idling"), "{e}");
    // The admin's explanation (check.explain, in the component) says what happened.
    let mut instance = ops::instance_for(plugin(), &cfg).await.expect("instance");
    let d = ops::check::explain(&mut instance, &e, Stage::ListMessages).await.expect("an explanation");
    assert!(d.cause.en.contains("IMAP IDLE") && d.action.en.contains("limits.idle_renew_secs"), "{d:?}");
    assert!(d.cause.de.contains("IMAP IDLE"), "{d:?}");
}

#[tokio::test]
async fn a_server_without_idle_ends_the_session_as_before() {
    // Plaintext (opted in) to a scripted server on loopback: it offers no IDLE.
    let script = vec![
        s("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] fake ready\r\n"),
        Step::Recv,
        s("a1 OK [CAPABILITY IMAP4rev1 UIDPLUS] logged in\r\n"),
        Step::Recv,
        s("* 0 EXISTS\r\n* OK [UIDVALIDITY 5] v\r\n* OK [UIDNEXT 1] n\r\na2 OK [READ-ONLY] examined\r\n"),
        Step::Recv,
        s("* BYE bye\r\na3 OK logged out\r\n"),
    ];
    let fake = Fake::start(script).await;
    let mut spec = ServerSpec::new("localhost", fake.port, false, "agent@example.test", "pw-Fake-1");
    spec.insecure_plaintext = true;
    let cfg = tenant("imap", &spec, &spec, true);
    let mut sink = MemorySink::default();
    match fetch_and_idle(plugin(), &cfg, "inbox", &mut sink, &NoSyncState).await {
        Ok(IdleOutcome::Done(s)) => assert_eq!(s.delivered, 0),
        Ok(IdleOutcome::Idling(_)) => panic!("idling without IDLE"),
        Err(e) => panic!("{e}"),
    }
    let sent = fake.received();
    assert!(sent.contains("a3 LOGOUT"), "{sent}");
    assert!(!sent.contains("IDLE"), "{sent}");
    // A plain fetch of the same server is unchanged.
    let fake = Fake::start(vec![
        s("* OK [CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN] fake ready\r\n"),
        Step::Recv,
        s("a1 OK logged in\r\n"),
        Step::Recv,
        s("* 0 EXISTS\r\n* OK [UIDVALIDITY 5] v\r\n* OK [UIDNEXT 1] n\r\na2 OK [READ-ONLY] examined\r\n"),
        Step::Recv,
        s("* BYE bye\r\na3 OK logged out\r\n"),
    ])
    .await;
    let mut spec = ServerSpec::new("localhost", fake.port, false, "agent@example.test", "pw-Fake-1");
    spec.insecure_plaintext = true;
    let cfg = tenant("imap", &spec, &spec, true);
    ops::fetch(plugin(), &cfg, "inbox", &mut sink, &NoSyncState).await.expect("fetch");
    assert!(!fake.received().contains("IDLE"), "{}", fake.received());
}
