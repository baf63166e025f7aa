//! Faults around idling mailboxes and the event outputs of `mailplug serve`: the real binary
//! (MAILPLUG_BIN) against the rig's Dovecot, observed through its HTTP API, its metrics, an
//! SSE stream and a plain-HTTP webhook receiver. A BYE while idling (`doveadm kick`) is a
//! network error that backs off and reconnects; with a global cap of one fetch, several
//! mailboxes idle at once (an idling mailbox holds no slot and no instance); a webhook
//! receiver answering 500 moves the failure counter, and an event past its maximum age
//! (`MAILPLUG_WEBHOOK_MAX_AGE_SECS`) goes dead; an idle SSE stream gets its heartbeat within
//! `MAILPLUG_SSE_HEARTBEAT_SECS`, and a client that reconnects with `Last-Event-ID` gets what
//! it missed, once. Every wait is bounded; no fixed sleeps race a server. Rig boxes 27, 28,
//! 64, 69, 70.

use std::path::Path;
use std::time::{Duration, Instant};

use mailplug_tests::serve::*;
use mailplug_tests::{rig, sample_message, test_box};

/// A tenant file: IMAPS mailboxes (name, rig box), each polled only every 600 s (new mail
/// must come through IDLE), its API token, and a webhook to 127.0.0.1:`port` when given.
fn tenant_toml(dir: &Path, id: &str, token: &str, mailboxes: &[(&str, u32)], webhook_port: Option<u16>) -> String {
    let r = rig();
    let p = dir.join(format!("secrets/{id}.token"));
    private(&p, token);
    let mut t = format!("tenant = \"{id}\"\nlicensed = true\nextra_ca_file = \"{}\"\napi_token_file = \"{}\"\n", r.get("RIG_CA"), p.display());
    t += "[limits]\nreply_timeout_secs = 15\nconnect_timeout_secs = 5\n";
    for (name, n) in mailboxes {
        let (user, pass) = test_box(*n);
        let pw = dir.join(format!("secrets/box{n}.pw"));
        private(&pw, &pass);
        t += &format!(
            "[[mailbox]]\nname = \"{name}\"\naddress = \"{user}\"\nprotocol = \"imap\"\nfirst_sync = \"all\"\npoll_interval_secs = 600\n\
             host = \"localhost\"\nport = {}\ntls = true\nusername = \"{user}\"\npassword_file = \"{}\"\n",
            r.port("RIG_IMAPS_PORT"),
            pw.display()
        );
    }
    if let Some(port) = webhook_port {
        let secret = dir.join(format!("secrets/{id}.hook"));
        private(&secret, "serve-faults-webhook-secret-0123456789");
        t += &format!("[webhook]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret_file = \"{}\"\ntimeout_secs = 5\n", secret.display());
    }
    t
}

fn listed(s: &Serve, tenant: &str, token: &str, mid: &str) -> bool {
    try_messages(s, tenant, token).is_ok_and(|l| with_mid(&l, mid).len() == 1)
}

fn idling(s: &Serve, tenant: &str, mailbox: &str) -> bool {
    mailbox_state(s, tenant, mailbox)["state"] == "idling"
}

/// Dovecot ends an idling session (BYE, then the connection closes, as on a restart): the
/// mailbox records a network error, backs off, reconnects and idles again, and a message
/// delivered afterwards arrives through the new IDLE session.
#[test]
fn a_bye_while_idling_reconnects_and_mail_delivered_afterwards_is_stored() {
    let r = rig();
    let dir = workdir("faults-bye");
    let (user, _) = test_box(27);
    r.reset_mailbox(&user);
    let tok = "tenant-faults-bye-token-0123456789";
    write_tenant(&dir, "t.toml", &tenant_toml(&dir, "kicked", tok, &[("in", 27)], None));
    let s = Serve::start(&dir, "serve-bye.log");
    wait_for("the mailbox idles", 60, || idling(&s, "kicked", "in").then_some(()));
    let before = mailbox_state(&s, "kicked", "in");
    assert_eq!(before["errors"], 0, "{before}");

    r.doveadm(&["kick", &user]);
    // The BYE wakes the idle wait; the resumed run fails and is recorded.
    let after = wait_for("the BYE recorded as an error", 20, || {
        let st = mailbox_state(&s, "kicked", "in");
        (st["errors"].as_u64().unwrap_or(0) >= 1).then_some(st)
    });
    let m = s.metrics();
    assert_eq!(metric(&m, "mailplug_errors_total{tenant=\"kicked\",mailbox=\"in\",kind=\"network\"}"), Some(1.0), "{after}\n{m}");
    // Reconnected (one more run after the error) and idling on the new connection.
    wait_for("idling again after the back-off", 30, || {
        let st = mailbox_state(&s, "kicked", "in");
        (st["state"] == "idling" && st["runs"].as_u64() > after["runs"].as_u64()).then_some(())
    });
    let st = mailbox_state(&s, "kicked", "in");
    assert!(st["last_error"].is_null(), "a successful run clears the last error: {st}");

    let mid = format!("faults-bye-{}@test", std::process::id());
    let put = Instant::now();
    r.put(&user, "INBOX", &sample_message(&mid, "after the BYE"));
    wait_for("the message delivered after the BYE", 15, || listed(&s, "kicked", tok, &mid).then_some(()));
    eprintln!("new mail after the reconnect listed in {} ms", put.elapsed().as_millis());
    assert!(metric(&s.metrics(), "mailplug_idle_connections") == Some(1.0));
    let (status, _) = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `--max-concurrent 1` (one fetch at a time over all tenants) three mailboxes in two
/// tenants all idle at once, and new mail in each of them is stored: an idling mailbox holds
/// neither a concurrency slot nor a guest instance, only its connection.
#[test]
fn with_a_global_cap_of_one_several_mailboxes_idle_and_all_get_their_mail() {
    let r = rig();
    let dir = workdir("faults-cap");
    let boxes = [28, 64, 69];
    for n in boxes {
        r.reset_mailbox(&test_box(n).0);
    }
    let (ta, tb) = ("tenant-faults-cap-a-token-012345678", "tenant-faults-cap-b-token-012345678");
    write_tenant(&dir, "a.toml", &tenant_toml(&dir, "capa", ta, &[("one", 28), ("two", 64)], None));
    write_tenant(&dir, "b.toml", &tenant_toml(&dir, "capb", tb, &[("three", 69)], None));
    let s = Serve::start_with(&dir, "serve-cap.log", &["--max-concurrent", "1", "--max-per-tenant", "1"], &[]);
    let all = [("capa", "one", ta, 28), ("capa", "two", ta, 64), ("capb", "three", tb, 69)];
    wait_for("all three mailboxes idle at once", 60, || all.iter().all(|(t, mb, _, _)| idling(&s, t, mb)).then_some(()));
    assert_eq!(metric(&s.metrics(), "mailplug_idle_connections"), Some(3.0));

    // Mail for all three at the same moment: each wakes, takes the one slot in turn, stores
    // its message and idles again.
    let tag = std::process::id();
    for (_, mb, _, n) in all {
        r.put(&test_box(n).0, "INBOX", &sample_message(&format!("faults-cap-{mb}-{tag}@test"), "capped"));
    }
    for (t, mb, tok, _) in all {
        let mid = format!("faults-cap-{mb}-{tag}@test");
        wait_for("each mailbox's new message", 30, || listed(&s, t, tok, &mid).then_some(()));
    }
    wait_for("all three idle again", 30, || all.iter().all(|(t, mb, _, _)| idling(&s, t, mb)).then_some(()));
    for (t, mb, _, _) in all {
        let st = mailbox_state(&s, t, mb);
        assert!(st["last_error"].is_null() && st["errors"] == 0, "{st}");
    }
    assert_eq!(metric(&s.metrics(), "mailplug_idle_connections"), Some(3.0));
    let (status, _) = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The webhook receiver answers 500: `mailplug_webhook_failures_total` moves; past its
/// maximum age (5 s here) the event is dead (`mailplug_webhook_dead_total`) and the next one
/// goes, delivered once the receiver answers 200 again. On the same tenant, an idle SSE
/// stream gets heartbeat comments within the interval (2 s here), and a client that
/// reconnects with `Last-Event-ID` gets the events it missed, each once.
#[test]
fn webhook_failures_and_dead_events_are_counted_and_sse_heartbeats_and_replays() {
    let r = rig();
    let dir = workdir("faults-hook");
    let (user, _) = test_box(70);
    r.reset_mailbox(&user);
    let hook = HookReceiver::start(500);
    let tok = "tenant-faults-hook-token-012345678";
    write_tenant(&dir, "t.toml", &tenant_toml(&dir, "hooked", tok, &[("in", 70)], Some(hook.port)));
    let env = [("MAILPLUG_WEBHOOK_MAX_AGE_SECS", "5"), ("MAILPLUG_WEBHOOK_RETRY_SECS", "1"), ("MAILPLUG_SSE_HEARTBEAT_SECS", "2")];
    let s = Serve::start_with(&dir, "serve-hook.log", &[], &env);
    wait_for("the mailbox idles", 60, || idling(&s, "hooked", "in").then_some(()));

    // The SSE heartbeat on a stream with nothing to send: two comments, each within the
    // interval (with 1 s of slack for a loaded machine).
    let (status, idle_stream) = sse_stream(&s.addr, "/v1/tenants/hooked/events", tok, None);
    assert_eq!(status, 200);
    let mut last = Instant::now();
    for _ in 0..2 {
        match idle_stream.recv_timeout(Duration::from_secs(3)) {
            Ok(SseItem::Comment(c)) => assert_eq!(c, "heartbeat"),
            other => panic!("expected a heartbeat comment within 3 s, got {other:?}"),
        }
        assert!(last.elapsed() <= Duration::from_secs(3), "{:?}", last.elapsed());
        last = Instant::now();
    }

    let tag = std::process::id();
    let first = format!("faults-hook-first-{tag}@test");
    r.put(&user, "INBOX", &sample_message(&first, "its webhook fails"));
    let (first_id, _) = next_event(&idle_stream, &first);
    drop(idle_stream);

    // 500: counted as failures, then dead after 3 s.
    let m = wait_for("the event dead after its maximum age", 30, || {
        let m = s.metrics();
        (metric(&m, "mailplug_webhook_dead_total{tenant=\"hooked\"}") == Some(1.0)).then_some(m)
    });
    let failures = metric(&m, "mailplug_webhook_failures_total{tenant=\"hooked\"}").unwrap_or(0.0);
    assert!(failures >= 1.0, "{m}");
    let tries = hook.requests().len();
    assert!(tries >= 2, "tried more than once before giving up: {tries}");
    assert!(hook.requests().iter().all(|b| b["id"] == first_id.as_str()), "only the first event was tried");

    // Two more messages while no SSE client listens; the receiver answers 200 again.
    hook.set_status(200);
    let missed: Vec<String> = (0..2).map(|i| format!("faults-hook-missed-{i}-{tag}@test")).collect();
    for mid in &missed {
        r.put(&user, "INBOX", &sample_message(mid, "while away"));
        wait_for("the message stored", 15, || listed(&s, "hooked", tok, mid).then_some(()));
    }
    wait_for("both delivered to the webhook", 30, || (hook.requests().iter().filter(|b| b["data"]["message_id"].is_string() && missed.iter().any(|m| b["data"]["message_id"] == m.as_str())).count() == 2).then_some(()));
    let m = s.metrics();
    assert_eq!(metric(&m, "mailplug_webhook_dead_total{tenant=\"hooked\"}"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "mailplug_webhook_failures_total{tenant=\"hooked\"}"), Some(failures), "no failure after the switch: {m}");
    assert_eq!(hook.requests().iter().filter(|b| b["id"] == first_id.as_str()).count(), tries, "a dead event is not retried");

    // Reconnect with Last-Event-ID: exactly the two missed events, in order, then heartbeats.
    let (status, replay) = sse_stream(&s.addr, "/v1/tenants/hooked/events", tok, Some(&first_id));
    assert_eq!(status, 200);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match replay.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(SseItem::Event(_, kind, data)) => {
                assert_eq!(kind, "message.stored", "{data}");
                got.push(data["data"]["message_id"].as_str().unwrap_or_default().to_string());
            }
            // The first heartbeat after the replay: everything missed came before it.
            Ok(SseItem::Comment(_)) if !got.is_empty() => break,
            Ok(SseItem::Comment(_)) => {}
            Err(e) => panic!("the replay stream ended or stalled: {e}; got {got:?}"),
        }
    }
    assert_eq!(got, missed, "the missed events, each once, in order");
    let (status, _) = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (bounded) on an SSE stream for the `message.stored` event of `mid`: its id and data.
fn next_event(rx: &std::sync::mpsc::Receiver<SseItem>, mid: &str) -> (String, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(SseItem::Event(id, kind, v)) if kind == "message.stored" && v["data"]["message_id"] == mid => return (id, v),
            Ok(_) => {}
            Err(e) => panic!("no message.stored event for {mid} within 30 s: {e}"),
        }
    }
}
