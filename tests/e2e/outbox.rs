//! The durable outbox and the events table (issue 13) through the real .wasm: enqueue then
//! drain delivers once (Postfix, the received copy byte for byte; a reply with its copy in
//! Sent), a 4xx after the data then 250 is retried and delivered once, refusals in one batch
//! against smtp2 (550 failed with the explanation, 451 queued again with backoff), a connection
//! lost after the final dot is held and never resent by the next drain (an admin resend sends
//! the same bytes), `kill -9` of `mailplug outbox drain` in the middle of a batch leaves the
//! in-flight message held and sends nothing twice, and a `fetch` killed mid-batch keeps every
//! stored message with its `message.stored` event.
//! Rig mailboxes: box45 (Postfix), box46 + box47 (a reply and its copy in Sent), box48 (the
//! killed fetch); scripted SMTP servers (tests/src/scripted_smtp.rs) for the faults.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mailplug_host::db::Database;
use mailplug_host::ops::outbox::{self, Compose};
use mailplug_host::ops::Outgoing;
use mailplug_host::store::events::{Events, MESSAGE_STORED, OUTBOX_STATE_CHANGED};
use mailplug_host::store::{Outbox, OutboxState};
use mailplug_host::TenantConfig;
use mailplug_tests::scripted_smtp::{scripted_smtp, DataAnswer, ScriptedSmtp};
use mailplug_tests::sweep::{fault_proxy, Fault};
use mailplug_tests::{plugin, rig, sample_message, smtp2_spooled, test_box, wasm_path};
use mailplug_tests::TempPath;

fn bin() -> PathBuf {
    std::env::var("MAILPLUG_BIN").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/var/tmp/mailplug-target/debug/mailplug"))
}

fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).env("MAILPLUG_WASM", wasm_path()).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    format!("{what} {nanos}")
}

fn now_ms() -> i64 {
    mailplug_host::driver::now_ms() as i64
}

fn tmpdir(name: &str) -> TempPath {
    TempPath::dir(&format!("outbox-{name}"))
}

/// Where the queue sends.
enum Smtp {
    /// Postfix's submission port (STARTTLS).
    Postfix,
    /// smtp2 (STARTTLS).
    Smtp2,
    /// A scripted server (plain TCP).
    Scripted(u16),
}

/// Writes `dir/tenant.toml`: mailbox "inbox" = rig box `n` over IMAPS (with `save_sent` when
/// given), queue "out" logging in as that box; the database in `dir`.
fn write_config(dir: &Path, n: u32, smtp: Smtp, save_sent: Option<&str>, limits: &str) -> PathBuf {
    let r = rig();
    let (user, pw) = test_box(n);
    std::fs::write(dir.join("box.pw"), &pw).expect("pw");
    let (host, port, plain) = match smtp {
        Smtp::Postfix => ("localhost".to_string(), r.port("RIG_SUBMISSION_PORT"), false),
        Smtp::Smtp2 => (r.get("RIG_SMTP2_HOST").to_string(), r.port("RIG_SMTP2_STARTTLS_PORT"), false),
        Smtp::Scripted(p) => ("127.0.0.1".to_string(), p, true),
    };
    let save = save_sent.map(|f| format!("save_sent = \"{f}\"\n")).unwrap_or_default();
    let text = format!(
        "tenant = \"outbox\"\nlicensed = true\nextra_ca_file = \"{ca}\"\ndatabase = \"{db}\"\n[limits]\nreply_timeout_secs = 30\nconnect_timeout_secs = 5\n{limits}\n\
         [[mailbox]]\nname = \"inbox\"\naddress = \"{user}\"\nprotocol = \"imap\"\nfirst_sync = \"all\"\n{save}host = \"localhost\"\nport = {imaps}\ntls = true\n\
         username = \"{user}\"\npassword_file = \"box.pw\"\n\n\
         [[queue]]\nname = \"out\"\nmailboxes = [\"inbox\"]\n[queue.smtp]\nhost = \"{host}\"\nport = {port}\ntls = false\ninsecure_plaintext = {plain}\n\
         username = \"{user}\"\npassword_file = \"box.pw\"\n",
        ca = r.get("RIG_CA"),
        db = dir.join("mailplug.sqlite3").display(),
        imaps = r.port("RIG_IMAPS_PORT"),
    );
    let path = dir.join("tenant.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn load(path: &Path) -> TenantConfig {
    TenantConfig::load(path).expect("config loads")
}

/// The states an outbox row went through, from its events.
fn row_states(db: &Database, tenant: &str, id: &str) -> Vec<String> {
    db.list_after(tenant, None, 10_000)
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == OUTBOX_STATE_CHANGED && e.payload["id"] == id)
        .map(|e| e.payload["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// How many times `message_id` is in a folder, waiting (at most 30 s) until it is there.
async fn wait_in(user: &str, folder: &str, message_id: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = rig().listing(user, folder).iter().filter(|(_, _, m)| m == message_id).count();
        if n > 0 || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The message as Dovecot stored it, line endings as LF.
fn stored_text(user: &str, folder: &str, message_id: &str) -> String {
    let out = rig().doveadm(&["fetch", "-u", user, "text", "mailbox", folder, "header", "Message-ID", message_id]);
    out.replace("\r\n", "\n")
}

async fn enqueue_draft(cfg: &TenantConfig, db: &Database, to: &str, what: &str) -> (String, String) {
    let m = Outgoing { to: vec![to.to_string()], subject: unique(what), text_body: format!("{what}\n") };
    let e = outbox::enqueue(plugin(), cfg, "out", db, &Compose::Draft(m), outbox::DEFAULT_MAX_AGE).await.expect("enqueued");
    assert_eq!(e.row.state, OutboxState::Queued);
    (e.row.id, e.row.message_id)
}

fn state(db: &Database, id: &str) -> mailplug_host::store::OutboxRow {
    db.get("outbox", id, false).expect("read").expect("row")
}

// ---- enqueue then drain ----------------------------------------------------------------

#[test]
fn cli_enqueue_then_drain_delivers_once_through_postfix() {
    let dir = tmpdir("postfix");
    let (user, _) = test_box(45);
    let cfg = write_config(&dir, 45, Smtp::Postfix, None, "");
    let c = cfg.to_str().expect("utf8");
    let subject = unique("outbox through postfix");
    let out = run(&["enqueue", "--config", c, "--queue", "out", "--to", &user, "--subject", &subject, "--body", "Hello from the outbox.\n.a line with a dot\n", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v = &json_lines(&out)[0];
    let (id, mid) = (v["id"].as_str().expect("id").to_string(), v["message_id"].as_str().expect("mid").to_string());
    assert_eq!(v["state"], "queued");
    // Accepted means committed: the row is there before anything is sent.
    let db = Database::open(&dir.join("mailplug.sqlite3")).expect("db");
    let raw = db.get("outbox", &id, true).expect("read").expect("row").raw;
    assert!(String::from_utf8_lossy(&raw).contains(&mid));
    let listed = json_lines(&run(&["outbox", "list", "--config", c, "--json"]));
    assert_eq!(listed.iter().map(|r| (r["id"].as_str().unwrap_or(""), r["state"].as_str().unwrap_or(""))).collect::<Vec<_>>(), [(id.as_str(), "queued")]);
    assert_eq!(rig().listing(&user, "INBOX").iter().filter(|(_, _, m)| *m == mid).count(), 0, "enqueue sends nothing");

    let out = run(&["outbox", "drain", "--config", c, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 1, "{}", text(&out));
    assert_eq!((rows[0]["id"].as_str(), rows[0]["state"].as_str()), (Some(id.as_str()), Some("delivered")));
    assert!(rows[0]["last_reply"].as_str().unwrap_or("").starts_with("250"), "{}", rows[0]);
    // A second pass sends nothing.
    let again = run(&["outbox", "drain", "--config", c, "--json"]);
    assert!(again.status.success() && again.stdout.is_empty(), "{}", text(&again));

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    assert_eq!(rt.block_on(wait_in(&user, "INBOX", &mid)), 1, "delivered exactly once");
    // The received copy is the row's bytes (Postfix only adds its trace headers in front).
    let got = stored_text(&user, "INBOX", &mid);
    let sent = String::from_utf8_lossy(&raw).replace("\r\n", "\n");
    assert!(got.trim_end().ends_with(sent.trim_end()), "received:\n{got}\nsent:\n{sent}");
    assert_eq!(row_states(&db, "outbox", &id), ["queued", "in-flight", "delivered"]);
}

/// A reply to a fetched message: enqueued by reference, delivered to the original's sender,
/// its copy saved in the mailbox's Sent folder and recorded in the row; the fetch wrote one
/// `message.stored` event for the original.
#[test]
fn a_reply_through_the_outbox_is_delivered_and_copied_to_sent() {
    let dir = tmpdir("reply");
    let r = rig();
    let (me, _) = test_box(46);
    let (customer, _) = test_box(47);
    r.reset_mailbox(&me);
    let original_id = format!("outbox-original-{}@example.test", std::process::id());
    let original = String::from_utf8(sample_message(&original_id, "please help")).expect("utf8").replace("customer@example.test", &customer);
    r.put(&me, "INBOX", original.as_bytes());
    let cfg = write_config(&dir, 46, Smtp::Postfix, Some("Sent"), "");
    let c = cfg.to_str().expect("utf8");
    let out = run(&["fetch", "--config", c, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let db = Database::open(&dir.join("mailplug.sqlite3")).expect("db");
    let stored = db.list_after("outbox", None, 100).expect("events");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!((stored[0].kind.as_str(), stored[0].payload["message_id"].as_str()), (MESSAGE_STORED, Some(original_id.as_str())));

    let reference = format!("mid:<{original_id}>");
    let out = run(&["enqueue", "--config", c, "--queue", "out", "--reply-to-message", &reference, "--body", "We are on it.\n", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v = &json_lines(&out)[0];
    let (id, mid) = (v["id"].as_str().expect("id").to_string(), v["message_id"].as_str().expect("mid").to_string());
    assert_eq!((v["to"][0].as_str(), v["save_copy"].as_str()), (Some(customer.as_str()), Some("inbox")));
    let out = run(&["outbox", "drain", "--config", c, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let row = &json_lines(&out)[0];
    assert_eq!(row["state"], "delivered", "{row}");
    assert_eq!((row["sent_copy"]["saved"].as_bool(), row["sent_copy"]["folder"].as_str()), (Some(true), Some("Sent")), "{row}");
    assert_eq!(state(&db, &id).sent_copy.expect("recorded")["saved"], true);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    assert_eq!(rt.block_on(wait_in(&customer, "INBOX", &mid)), 1);
    assert_eq!(r.listing(&me, "Sent").iter().filter(|(_, _, m)| *m == mid).count(), 1, "one copy in Sent");
}

// ---- retries, refusals, uncertainty ------------------------------------------------------

#[tokio::test]
async fn a_4xx_after_the_data_is_retried_with_backoff_and_delivered_once() {
    let dir = tmpdir("retry");
    let server = scripted_smtp(vec![DataAnswer::Reply("451 4.3.0 Try again later".into())]).await;
    let cfg = load(&write_config(&dir, 45, Smtp::Scripted(server.port), None, ""));
    let db = Database::open(&cfg.database).expect("db");
    let (id, mid) = enqueue_draft(&cfg, &db, "someone@example.test", "retry me").await;
    let t0 = now_ms();
    let report = outbox::drain(plugin(), &cfg, &db, "out", t0).await.expect("drain");
    assert_eq!(report.rows.len(), 1);
    let row = state(&db, &id);
    assert_eq!((row.state, row.attempts), (OutboxState::Queued, 1));
    assert!(row.last_reply.as_deref().unwrap_or("").starts_with("451"), "{row:?}");
    // Backoff: about a minute from the attempt.
    assert!(row.next_attempt_at_ms >= t0 + 55_000 && row.next_attempt_at_ms <= now_ms() + 65_000, "{row:?}");
    let e = row.explanation.expect("explained");
    // The component's explanation, not the provisional one recorded with the outcome.
    assert!(!e.en.is_empty() && !e.de.is_empty() && e.en != e.de && !e.en.starts_with("Sending failed: "), "{e:?}");
    // Not due yet: nothing is sent.
    let report = outbox::drain(plugin(), &cfg, &db, "out", now_ms()).await.expect("drain");
    assert!(report.rows.is_empty());
    assert_eq!(server.count(&mid), 1);
    // Due: delivered, once, with the same bytes.
    let report = outbox::drain(plugin(), &cfg, &db, "out", row.next_attempt_at_ms).await.expect("drain");
    assert_eq!(report.rows.iter().map(|r| r.state).collect::<Vec<_>>(), [OutboxState::Delivered]);
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].data, got[1].data, "the retry is byte-identical");
    assert_eq!((server.count(&mid), server.accepted(&mid)), (2, 1));
    assert_eq!(state(&db, &id).attempts, 2);
    assert_eq!(row_states(&db, "outbox", &id), ["queued", "in-flight", "queued", "in-flight", "delivered"]);
    // Nothing left to send.
    assert!(outbox::drain(plugin(), &cfg, &db, "out", i64::MAX / 2).await.expect("drain").rows.is_empty());
}

/// A message whose next attempt would fall after its max age (`enqueue --max-age`) is failed
/// instead of queued again, saying so in English and German.
#[test]
fn a_message_past_its_max_age_fails_instead_of_retrying() {
    let dir = tmpdir("maxage");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let server = rt.block_on(scripted_smtp(vec![DataAnswer::Reply("451 4.3.0 Try again later".into())]));
    let path = write_config(&dir, 45, Smtp::Scripted(server.port), None, "");
    let c = path.to_str().expect("utf8");
    let out = run(&["enqueue", "--config", c, "--queue", "out", "--to", "someone@example.test", "--subject", "old", "--body", "x\n", "--max-age", "30", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json_lines(&out)[0]["max_age_ms"], 30_000);
    let out = run(&["outbox", "drain", "--config", c, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let row = &json_lines(&out)[0];
    assert_eq!((row["state"].as_str(), row["attempts"].as_u64()), (Some("failed"), Some(1)), "{row}");
    assert!(row["explanation"]["en"].as_str().unwrap_or("").starts_with("Given up after 1 attempts"), "{row}");
    assert!(row["explanation"]["de"].as_str().unwrap_or("").starts_with("Nach 1 Versuchen aufgegeben"), "{row}");
    let listed = json_lines(&run(&["outbox", "list", "--config", c, "--state", "failed", "--json"]));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["explanation"], row["explanation"], "recorded as reported");
    drop(server);
}

/// One batch against smtp2: a 550 recipient fails with the admin explanation (English and
/// German), a 451 recipient is queued again with backoff, a good one is delivered; the
/// refused ones never reach the spool.
#[tokio::test]
async fn refusals_in_a_batch_fail_or_queue_again_with_the_explanation() {
    let dir = tmpdir("smtp2");
    let r = rig();
    let cfg = load(&write_config(&dir, 45, Smtp::Smtp2, None, ""));
    let db = Database::open(&cfg.database).expect("db");
    let (nouser_id, nouser_mid) = enqueue_draft(&cfg, &db, r.get("RIG_SMTP2_NOUSER_RCPT"), "to nouser").await;
    let (busy_id, busy_mid) = enqueue_draft(&cfg, &db, r.get("RIG_SMTP2_BUSY_RCPT"), "to busy").await;
    let (ok_id, ok_mid) = enqueue_draft(&cfg, &db, "someone@smtp2.test", "to someone").await;
    let report = outbox::drain(plugin(), &cfg, &db, "out", now_ms()).await.expect("drain");
    assert_eq!(report.rows.iter().map(|r| r.state).collect::<Vec<_>>(), [OutboxState::Failed, OutboxState::Queued, OutboxState::Delivered]);
    let failed = state(&db, &nouser_id);
    assert!(failed.last_reply.as_deref().unwrap_or("").starts_with("550"), "{failed:?}");
    let e = failed.explanation.expect("explanation");
    // The component's explanation, not the provisional one recorded with the outcome.
    assert!(!e.en.is_empty() && !e.de.is_empty() && e.en != e.de && !e.en.starts_with("Sending failed: "), "English and German: {e:?}");
    let busy = state(&db, &busy_id);
    assert_eq!((busy.state, busy.attempts), (OutboxState::Queued, 1));
    assert!(busy.last_reply.as_deref().unwrap_or("").starts_with("451") && busy.next_attempt_at_ms > now_ms(), "{busy:?}");
    // Refused at RCPT: never in flight.
    assert_eq!(row_states(&db, "outbox", &nouser_id), ["queued", "failed"]);
    assert_eq!(row_states(&db, "outbox", &busy_id), ["queued", "queued"]);
    assert_eq!(row_states(&db, "outbox", &ok_id), ["queued", "in-flight", "delivered"]);
    mailplug_tests::smtp2_wait_spooled(&ok_mid).await;
    assert!(smtp2_spooled(&nouser_mid).is_none() && smtp2_spooled(&busy_mid).is_none());
}

#[tokio::test]
async fn a_connection_lost_after_the_final_dot_is_held_and_never_resent_silently() {
    let dir = tmpdir("held");
    let server = scripted_smtp(vec![DataAnswer::Cut]).await;
    let cfg = load(&write_config(&dir, 45, Smtp::Scripted(server.port), None, ""));
    let db = Database::open(&cfg.database).expect("db");
    let (a, a_mid) = enqueue_draft(&cfg, &db, "someone@example.test", "cut after my dot").await;
    let (b, b_mid) = enqueue_draft(&cfg, &db, "someone@example.test", "after the cut").await;
    let report = outbox::drain(plugin(), &cfg, &db, "out", now_ms()).await.expect("drain");
    assert_eq!(report.rows.iter().map(|r| r.state).collect::<Vec<_>>(), [OutboxState::Held, OutboxState::Queued]);
    let held = state(&db, &a);
    let e = held.explanation.clone().expect("explained");
    assert!(e.en.contains("may have been delivered") && e.en.contains(&a_mid) && e.de.contains("möglicherweise zugestellt"), "{e:?}");
    assert_eq!(report.rows[0].explanation.as_ref(), Some(&e), "reported as recorded");
    assert_eq!(state(&db, &b).attempts, 1, "not sent: retried later");
    // Later drains send b, never a.
    let later = now_ms() + 3_600_000;
    let report = outbox::drain(plugin(), &cfg, &db, "out", later).await.expect("drain");
    assert_eq!(report.rows.iter().map(|r| (r.id.clone(), r.state)).collect::<Vec<_>>(), [(b.clone(), OutboxState::Delivered)]);
    assert!(outbox::drain(plugin(), &cfg, &db, "out", later).await.expect("drain").rows.is_empty());
    assert_eq!((server.count(&a_mid), server.count(&b_mid)), (1, 1));
    assert_eq!(row_states(&db, "outbox", &a), ["queued", "in-flight", "held"]);
    // The admin resends it: the same bytes and Message-ID.
    assert_eq!(db.resend("outbox", &a, now_ms()).expect("resend").state, OutboxState::Queued);
    let report = outbox::drain(plugin(), &cfg, &db, "out", now_ms()).await.expect("drain");
    assert_eq!(report.rows.iter().map(|r| (r.id.clone(), r.state)).collect::<Vec<_>>(), [(a.clone(), OutboxState::Delivered)]);
    let got: Vec<Vec<u8>> = server.received().into_iter().filter(|r| String::from_utf8_lossy(&r.data).contains(&a_mid)).map(|r| r.data).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], got[1], "resent byte for byte");
}

// ---- kill -9 ------------------------------------------------------------------------------

/// Polls `check` every 50 ms for at most 30 s.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILL (what `Child::kill` sends on Unix), then reaps the child.
fn kill9(child: &mut std::process::Child) {
    child.kill().expect("kill -9");
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_drain_mid_batch_holds_the_in_flight_message_and_sends_nothing_twice() {
    let dir = tmpdir("kill");
    // The second message's final dot is never answered: the drain waits there.
    let server: ScriptedSmtp = scripted_smtp(vec![DataAnswer::Accept, DataAnswer::Stall]).await;
    let path = write_config(&dir, 45, Smtp::Scripted(server.port), None, "");
    let c = path.to_str().expect("utf8").to_string();
    let mut rows = Vec::new();
    for i in 0..3 {
        let out = run(&["enqueue", "--config", &c, "--queue", "out", "--to", "someone@example.test", "--subject", &unique(&format!("kill {i}")), "--body", "x\n"]);
        assert!(out.status.success(), "{}", text(&out));
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (id, mid) = line.split_once(' ').expect("id and Message-ID");
        rows.push((id.to_string(), mid.trim_matches(['<', '>']).to_string()));
    }
    let mut child = Command::new(bin())
        .args(["outbox", "drain", "--config", &c])
        .env("MAILPLUG_WASM", wasm_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("drain runs");
    let db = Database::open(&dir.join("mailplug.sqlite3")).expect("db");
    let cfg = load(&path);
    wait_until("the second message in flight at the stalled server", || {
        server.received().len() == 2 && state(&db, &rows[1].0).state == OutboxState::InFlight
    });
    kill9(&mut child);
    assert_eq!(state(&db, &rows[0].0).state, OutboxState::Delivered);
    assert_eq!(state(&db, &rows[2].0).state, OutboxState::Queued);

    let out = tokio::task::spawn_blocking(move || run(&["outbox", "drain", "--config", &c, "--json"])).await.expect("join");
    assert!(out.status.success(), "{}", text(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["recovered"], true, "{}", text(&out));
    assert_eq!((lines[0]["id"].as_str(), lines[0]["state"].as_str()), (Some(rows[1].0.as_str()), Some("held")));
    assert_eq!((lines[1]["id"].as_str(), lines[1]["state"].as_str()), (Some(rows[2].0.as_str()), Some("delivered")));
    let held = state(&db, &rows[1].0);
    assert_eq!(held.state, OutboxState::Held);
    assert!(held.explanation.is_some_and(|e| e.de.contains("möglicherweise zugestellt")));
    for (_, mid) in &rows {
        assert_eq!(server.count(mid), 1, "{mid} reached the server exactly once");
    }
    assert_eq!(row_states(&db, &cfg.tenant, &rows[1].0), ["queued", "in-flight", "held"]);
}

/// `fetch` killed with -9 in the middle of its batch (the server stalled mid-transfer, messages
/// already handed to the store's writer): every stored message has its `message.stored` event
/// and every event its message; the next fetch stores the rest, one event per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_killed_mid_batch_keeps_each_message_with_its_event() {
    let dir = tmpdir("fetchkill");
    let r = rig();
    let (user, _) = test_box(48);
    r.reset_mailbox(&user);
    let body = "a line of body text that makes every message some kilobytes long\r\n".repeat(200);
    for i in 0..12 {
        let mut raw = sample_message(&format!("fetchkill-{i}-{}@outbox", std::process::id()), "fetch kill");
        raw.extend_from_slice(body.as_bytes());
        r.put(&user, "INBOX", &raw);
    }
    let proxy = fault_proxy(("localhost".into(), r.port("RIG_IMAPS_PORT")), None).await;
    // Six messages per run: one batch, committed at its end.
    let path = write_config(&dir, 48, Smtp::Postfix, None, "max_batch_messages = 6");
    let text_cfg = std::fs::read_to_string(&path).expect("config").replace(&format!("port = {}\ntls = true", r.port("RIG_IMAPS_PORT")), &format!("port = {}\ntls = true", proxy.port));
    std::fs::write(&path, text_cfg).expect("config");
    let c = path.to_str().expect("utf8").to_string();
    // Two clean runs into another database measure the second run's bytes.
    let scratch = dir.join("scratch.sqlite3");
    let mut measure = load(&path);
    measure.database = scratch.clone();
    let sdb = Database::open(&scratch).expect("db");
    for _ in 0..2 {
        let mut sink = sdb.sink(&measure.tenant, "inbox");
        mailplug_host::ops::fetch(plugin(), &measure, "inbox", &mut sink, &sdb).await.expect("clean run");
    }
    assert_eq!(sdb.messages(&measure.tenant, "inbox").expect("messages").len(), 12);
    let second_run = proxy.last_total.load(std::sync::atomic::Ordering::SeqCst);

    let db_path = dir.join("mailplug.sqlite3");
    let counts = |p: &Path| -> (i64, i64, i64) {
        let conn = rusqlite::Connection::open(p).expect("open");
        let q = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap_or(-1);
        (
            q("SELECT COUNT(*) FROM messages"),
            q("SELECT COUNT(*) FROM events WHERE kind = 'message.stored'"),
            // Messages without their event, and events without their message.
            q("SELECT (SELECT COUNT(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.kind = 'message.stored' AND json_extract(e.payload, '$.message') = 'db:' || m.id))
                    + (SELECT COUNT(*) FROM events e WHERE e.kind = 'message.stored' AND NOT EXISTS (SELECT 1 FROM messages m WHERE 'db:' || m.id = json_extract(e.payload, '$.message')))"),
        )
    };
    let fetch = |c: String| async move { tokio::task::spawn_blocking(move || run(&["fetch", "--config", &c])).await.expect("join") };
    let out = fetch(c.clone()).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(counts(&db_path), (6, 6, 0));

    // The second run stalls after 60% of its bytes, with messages of its batch delivered.
    proxy.set_plan(Some((second_run * 6 / 10, Fault::Stall)));
    let mut child = Command::new(bin())
        .args(["fetch", "--config", &c])
        .env("MAILPLUG_WASM", wasm_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("fetch runs");
    let fired = proxy.fired_handle();
    wait_until("the stall", || fired.lock().expect("lock").is_some());
    kill9(&mut child);
    // The host commits what was delivered once a read would wait (runtime/driver.rs), so the
    // kill lands before, during or after that commit: whichever, messages and events go together.
    let (messages, events, orphans) = counts(&db_path);
    assert!((6..12).contains(&messages), "{messages} stored");
    assert_eq!((events, orphans), (messages, 0), "each stored message with its event, and no other");

    proxy.set_plan(None);
    let out = fetch(c.clone()).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(counts(&db_path), (12, 12, 0), "the rest, one event per message");
}
