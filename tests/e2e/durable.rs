//! Mail that must not be lost or mis-filed when runs fail (issue 10, items 4, 4b, 4c, 6, 7, 8),
//! through the real component against real Dovecot, mostly through the `mailplug` binary:
//! the sync state survives failed first runs and cut runs (progress across runs that all drop
//! at the same point), every stored message is reported as new once, a lost connection is
//! explained as such, a forged Message-ID never makes the genuine message vanish, replies name
//! their original explicitly, and a sync state is never reused for another server.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use mailplug_host::config::{AfterFetch, TenantConfig};
use mailplug_host::db::Database;
use mailplug_host::ops;
use mailplug_tests::{output_text as text, plugin, rig, run_mailplug as run, sample_message, server_toml, switch_proxy, tenant, tenant_head_toml, test_box, ServerSpec, TempDatabase, TempPath};

fn tmpdir(name: &str) -> TempPath {
    TempPath::dir(&format!("durable-{name}"))
}

/// The mailbox settings a CLI test varies.
struct Mb<'a> {
    protocol: &'a str,
    port: u16,
    tls: bool,
    user: &'a str,
    pass: &'a str,
    first_sync: &'a str,
    folders: &'a [&'a str],
    after: &'a str,
}

/// Writes `dir/tenant.toml` (database in `dir`) with one mailbox "inbox" and a queue serving it.
fn write_config(dir: &Path, m: &Mb) -> String {
    let r = rig();
    std::fs::write(dir.join("in.pw"), m.pass).expect("pw");
    std::fs::write(dir.join("out.pw"), r.pass("AGENT")).expect("pw");
    let folders = if m.folders.is_empty() {
        String::new()
    } else {
        format!("folders = [{}]\n", m.folders.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", "))
    };
    let after = match m.after.strip_prefix("move:") {
        Some(target) => format!("after_fetch = \"move\"\nmove_to = \"{target}\"\n"),
        None => format!("after_fetch = \"{}\"\n", m.after),
    };
    let config = format!(
        r#"{head}[limits]
reply_timeout_secs = 5
connect_timeout_secs = 5

[[mailbox]]
name = "inbox"
address = "{user}"
protocol = "{protocol}"
first_sync = "{first}"
{folders}{after}{inbound}
[[queue]]
name = "support"
mailboxes = ["inbox"]
[queue.smtp]
{smtp}"#,
        head = tenant_head_toml("durable", &dir.join("mailplug.sqlite3")),
        user = m.user,
        protocol = m.protocol,
        first = m.first_sync,
        inbound = server_toml("localhost", m.port, m.tls, m.user, "in.pw"),
        smtp = server_toml("localhost", r.port("RIG_SUBMISSION_PORT"), false, r.user("AGENT"), "out.pw"),
    );
    let path = dir.join("tenant.toml");
    std::fs::write(&path, config).expect("config");
    path.to_str().expect("utf8").to_string()
}

/// The JSON objects `fetch --json` printed for messages (not warnings).
fn json_messages(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v| v.get("id").is_some())
        .collect()
}

/// The Message-IDs in the subjects ("about <id>") of `fetch --json` lines.
fn fetched_ids(o: &Output) -> Vec<String> {
    json_messages(o)
        .iter()
        .map(|v| v["subject"].as_str().unwrap_or_default().trim_start_matches("about ").to_string())
        .collect()
}

fn put(user: &str, id: &str) -> String {
    rig().put(user, "INBOX", &sample_message(id, &format!("about {id}")));
    id.to_string()
}

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

/// Tests sharing a rig mailbox run one after the other.
fn lock(boxn: u32) -> std::sync::MutexGuard<'static, ()> {
    static LOCKS: [std::sync::Mutex<()>; 6] = [const { std::sync::Mutex::new(()) }; 6];
    LOCKS[(boxn - 21) as usize].lock().unwrap_or_else(|e| e.into_inner())
}

fn port(protocol: &str) -> u16 {
    rig().port(if protocol == "imap" { "RIG_IMAPS_PORT" } else { "RIG_POP3S_PORT" })
}

// ---- Item 4: the sync state is saved on every outcome ------------------------------------

/// IMAP, first sync `new-only`, the first run fails in its second folder: the first folder's
/// baseline is kept, so the three messages arriving before the next run are all fetched (before:
/// no baseline was written and the next run's baseline sat above them: 0 of 3).
#[test]
fn imap_new_only_first_run_failing_in_a_second_folder_keeps_its_baseline() {
    let _box = lock(21);
    let r = rig();
    let (user, pass) = test_box(21);
    r.reset_mailbox(&user);
    put(&user, "old-1@durable");
    put(&user, "old-2@durable");
    let dir = tmpdir("imap-second-folder");
    let mb = Mb { protocol: "imap", port: port("imap"), tls: true, user: &user, pass: &pass, first_sync: "new-only", folders: &["INBOX", "NoSuchFolder"], after: "keep" };
    let cfg = write_config(&dir, &mb);
    let o = run(&["fetch", "--config", &cfg, "--json"]);
    assert!(!o.status.success(), "the missing folder fails the run: {}", text(&o));
    assert!(fetched_ids(&o).is_empty(), "new-only imports nothing: {}", text(&o));

    let new: Vec<String> = (1..=3).map(|i| put(&user, &format!("between-{i}@durable"))).collect();
    // The admin removes the broken folder; the same database (and state) is used.
    let cfg = write_config(&dir, &Mb { folders: &["INBOX"], ..mb });
    let o = run(&["fetch", "--config", &cfg, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(set(&fetched_ids(&o)), set(&new), "the mail that arrived between the runs: {}", text(&o));
}

/// First sync `new-only`, the first run is cut by the network after the server listed the
/// mailbox: the baseline is kept, and the three messages arriving before the next run are
/// fetched (IMAP and POP3).
fn new_only_first_run_cut_keeps_its_baseline(protocol: &str, boxn: u32) {
    let _box = lock(boxn);
    let r = rig();
    let (user, pass) = test_box(boxn);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    r.reset_mailbox(&user);
    put(&user, "old-1@durable");
    put(&user, "old-2@durable");
    // Every run goes through one proxy (one server to the host), cut or not. A clean first run
    // (in a scratch database) gives the session's length.
    let proxy = rt.block_on(switch_proxy(("localhost".into(), port(protocol))));
    let dir = tmpdir(&format!("{protocol}-cut-measure"));
    let mb = Mb { protocol, port: proxy.port, tls: true, user: &user, pass: &pass, first_sync: "new-only", folders: &[], after: "keep" };
    let o = run(&["fetch", "--config", &write_config(&dir, &mb), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let total = proxy.last_total();

    // Cut ever earlier from the end of the session until a run fails (the logout exchange).
    for back in (8..400).step_by(8) {
        let cut = total - back;
        let dir = tmpdir(&format!("{protocol}-cut-{cut}"));
        let cfg = write_config(&dir, &mb);
        proxy.set_cut(Some(cut));
        let o = run(&["fetch", "--config", &cfg, "--json"]);
        if o.status.success() {
            continue;
        }
        assert!(fetched_ids(&o).is_empty(), "new-only imports nothing: {}", text(&o));
        let new: Vec<String> = (1..=3).map(|i| put(&user, &format!("{protocol}-after-cut-{cut}-{i}@durable"))).collect();
        proxy.set_cut(None);
        let o = run(&["fetch", "--config", &cfg, "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(set(&fetched_ids(&o)), set(&new), "{protocol}: first run cut at {cut}/{total}: {}", text(&o));
        return;
    }
    panic!("{protocol}: no cut near the end of a {total}-byte session failed the run");
}

#[test]
fn imap_new_only_first_run_cut_keeps_its_baseline() {
    new_only_first_run_cut_keeps_its_baseline("imap", 21);
}

#[test]
fn pop3_new_only_first_run_cut_keeps_its_baseline() {
    new_only_first_run_cut_keeps_its_baseline("pop3", 22);
}

/// A scripted IMAP server (plain text, loopback) that serves `messages` (UID = position + 1)
/// and answers every `UID STORE` with NO: Dovecot in the rig runs as root, so no folder setup
/// makes it refuse one. Records every command line.
struct RefusingImap {
    port: u16,
    messages: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    commands: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

async fn refusing_imap() -> RefusingImap {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let commands = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (msgs, cmds) = (messages.clone(), commands.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (msgs, cmds) = (msgs.clone(), cmds.clone());
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r);
                let _ = w.write_all(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] scripted\r\n").await;
                let mut line = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.trim_end().to_string();
                    cmds.lock().expect("lock").push(l.clone());
                    let mut words = l.splitn(3, ' ');
                    let (tag, verb, rest) = (words.next().unwrap_or(""), words.next().unwrap_or("").to_ascii_uppercase(), words.next().unwrap_or(""));
                    let all = msgs.lock().expect("lock").clone();
                    let uids = |set: &str| -> Vec<usize> {
                        let top = all.len();
                        let mut v = Vec::new();
                        for part in set.split(',') {
                            let (a, b) = part.split_once(':').unwrap_or((part, part));
                            let n = |x: &str| if x == "*" { top } else { x.parse().unwrap_or(0) };
                            let (a, b) = (n(a).min(n(b)), n(a).max(n(b)));
                            v.extend((a.max(1)..=b.min(top)).collect::<Vec<_>>());
                        }
                        v
                    };
                    let reply = match (verb.as_str(), rest) {
                        ("CAPABILITY", _) => format!("* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN\r\n{tag} OK done\r\n"),
                        ("AUTHENTICATE", _) | ("LOGIN", _) => format!("{tag} OK logged in\r\n"),
                        ("SELECT", _) => format!(
                            "* {} EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT {}] ok\r\n{tag} OK [READ-WRITE] selected\r\n",
                            all.len(),
                            all.len() + 1
                        ),
                        ("UID", r) if r.to_ascii_uppercase().starts_with("SEARCH") => {
                            let from = r.split_whitespace().last().and_then(|s| s.split(':').next()).and_then(|s| s.parse().ok()).unwrap_or(1usize);
                            let found: Vec<String> = (from.max(1)..=all.len()).map(|u| u.to_string()).collect();
                            format!("* SEARCH {}\r\n{tag} OK searched\r\n", found.join(" "))
                        }
                        ("UID", r) if r.to_ascii_uppercase().starts_with("FETCH") => {
                            let set = r.split_whitespace().nth(1).unwrap_or("");
                            let body = r.contains("BODY.PEEK[]");
                            let mut out = String::new();
                            for u in uids(set) {
                                let raw = String::from_utf8_lossy(&all[u - 1]).into_owned();
                                if body {
                                    out.push_str(&format!("* {u} FETCH (UID {u} BODY[] {{{}}}\r\n{raw})\r\n", raw.len()));
                                } else {
                                    out.push_str(&format!("* {u} FETCH (UID {u} RFC822.SIZE {})\r\n", raw.len()));
                                }
                            }
                            format!("{out}{tag} OK fetched\r\n")
                        }
                        ("UID", r) if r.to_ascii_uppercase().starts_with("STORE") => format!("{tag} NO [CANNOT] flags cannot be changed here\r\n"),
                        ("LOGOUT", _) => {
                            let _ = w.write_all(format!("* BYE bye\r\n{tag} OK logged out\r\n").as_bytes()).await;
                            return;
                        }
                        _ => format!("{tag} OK\r\n"),
                    };
                    if w.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    RefusingImap { port, messages, commands }
}

/// After-fetch `mark-seen`, and the server answers the `UID STORE` with NO once the batch is
/// stored: the run fails, but the state covering the stored batch was saved, so the next run
/// fetches only the mail that arrived since instead of the same batch again (before: the same
/// batch was fetched, refused and fetched again on every run).
#[test]
fn imap_uid_store_refused_does_not_refetch_the_batch() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt.block_on(refusing_imap());
    let batch: Vec<String> = (1..=3).map(|i| format!("refused-{i}@durable")).collect();
    for id in &batch {
        server.messages.lock().expect("lock").push(sample_message(id, &format!("about {id}")));
    }
    let dir = tmpdir("refused");
    let mb = Mb { protocol: "imap", port: server.port, tls: false, user: "scripted@example.test", pass: "pw", first_sync: "all", folders: &[], after: "mark-seen" };
    let cfg = write_config(&dir, &mb);
    let path = dir.join("tenant.toml");
    let plain = std::fs::read_to_string(&path).expect("config").replacen("host = \"localhost\"", "host = \"127.0.0.1\"", 1).replacen("tls = false\n", "tls = false\ninsecure_plaintext = true\n", 1);
    std::fs::write(&path, plain).expect("config");
    let o = run(&["fetch", "--config", &cfg, "--json"]);
    assert!(!o.status.success(), "the STORE is refused: {}", text(&o));
    assert!(text(&o).contains("refused to mark the fetched messages"), "{}", text(&o));
    assert_eq!(set(&fetched_ids(&o)), set(&batch), "the batch is stored and reported: {}", text(&o));

    server.messages.lock().expect("lock").push(sample_message("after-refusal@durable", "about after-refusal@durable"));
    server.commands.lock().expect("lock").clear();
    let o = run(&["fetch", "--config", &cfg, "--json"]);
    assert!(!o.status.success(), "the new message's STORE is refused too: {}", text(&o));
    assert_eq!(fetched_ids(&o), vec!["after-refusal@durable".to_string()], "only the new message: {}", text(&o));
    let fetched: Vec<String> = server.commands.lock().expect("lock").iter().filter(|c| c.contains("BODY.PEEK[]")).cloned().collect();
    assert!(fetched.len() == 1 && fetched[0].contains("UID FETCH 4 "), "the batch is not downloaded again: {fetched:?}");
}

fn library_config(protocol: &str, port: u16, user: &str, pass: &str) -> TenantConfig {
    let r = rig();
    let inb = ServerSpec::new("localhost", port, true, user, pass);
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    let mut cfg = tenant(protocol, &inb, &smtp, true);
    cfg.limits.reply_timeout_secs = 5;
    cfg
}

fn db_at(name: &str) -> TempDatabase {
    TempDatabase::open(&format!("durable-{name}"))
}

/// Every run is cut at the same byte offset, and mail arrives between runs: the state saved
/// after each `stored` makes each run continue where the previous one stopped, until every
/// message is stored, each once (before: each retry re-downloaded the same messages and never
/// got past them).
async fn runs_cut_at_the_same_point_make_progress(protocol: &str, boxn: u32) {
    let _box = lock(boxn);
    let r = rig();
    let (user, pass) = test_box(boxn);
    r.reset_mailbox(&user);
    let body = "a line of body text that makes every message a few kilobytes long\r\n".repeat(60);
    let mut all = BTreeSet::new();
    let add = |all: &mut BTreeSet<String>, i: usize| {
        let id = format!("{protocol}-progress-{i}@durable");
        let mut raw = sample_message(&id, "progress");
        raw.extend_from_slice(body.as_bytes());
        r.put(&user, "INBOX", &raw);
        all.insert(id);
    };
    for i in 0..20 {
        add(&mut all, i);
    }
    let proxy = switch_proxy(("localhost".into(), port(protocol))).await;
    let cfg = library_config(protocol, proxy.port, &user, &pass);
    let scratch = db_at(&format!("{protocol}-progress-measure"));
    let mut sink = scratch.sink(&cfg.tenant, "inbox");
    ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*scratch).await.expect("a clean run");
    drop(sink);
    let total = proxy.last_total();

    let cut = total * 3 / 10;
    proxy.set_cut(Some(cut));
    let db = db_at(&format!("{protocol}-progress"));
    let mut stored_before = 0;
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 12, "{protocol}: no end after {runs} runs cut at {cut}/{total}");
        let mut sink = db.sink(&cfg.tenant, "inbox");
        let result = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*db).await;
        drop(sink);
        let stored: Vec<String> = db.messages(&cfg.tenant, "inbox").expect("messages").into_iter().map(|m| m.message_id).collect();
        assert_eq!(stored.len(), stored.iter().collect::<BTreeSet<_>>().len(), "{protocol}: stored twice: {stored:?}");
        if result.is_ok() && stored.len() == all.len() {
            break;
        }
        assert!(result.is_err(), "{protocol}: a run that was not cut stopped early");
        assert!(stored.len() > stored_before, "{protocol}: run {runs} cut at {cut}/{total} made no progress ({stored_before} stored)");
        stored_before = stored.len();
        if runs == 1 {
            // Mail arriving between runs is fetched too.
            add(&mut all, 20);
            add(&mut all, 21);
        }
    }
    let stored: BTreeSet<String> = db.messages("test", "inbox").expect("messages").into_iter().map(|m| m.message_id).collect();
    assert_eq!(stored, all, "{protocol}: after {runs} runs");
    assert!(runs >= 3, "{protocol}: the cut at {cut}/{total} should have needed several runs, took {runs}");
}

#[tokio::test]
async fn imap_runs_cut_at_the_same_point_make_progress() {
    runs_cut_at_the_same_point_make_progress("imap", 23).await;
}

#[tokio::test]
async fn pop3_runs_cut_at_the_same_point_make_progress() {
    runs_cut_at_the_same_point_make_progress("pop3", 24).await;
}

// ---- Items 4b and 4c: reported once; a lost connection explained as such -----------------

/// A run cut in the middle reports what it stored (as new, with the message naming the lost
/// connection, how many were stored and that the next run continues, in English and German,
/// without any library's documentation URL); messages stored by a run that never reported them
/// (a platform killed after storing) are reported by the next `fetch --json` as new, once.
#[test]
fn every_stored_message_is_reported_new_once_and_a_cut_is_explained() {
    let _box = lock(25);
    let r = rig();
    let (user, pass) = test_box(25);
    r.reset_mailbox(&user);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let body = "some body text to make the message bigger than one read of the proxy\r\n".repeat(80);
    let mut all = Vec::new();
    for i in 0..8 {
        let id = format!("reported-{i}@durable");
        let mut raw = sample_message(&id, &format!("about {id}"));
        raw.extend_from_slice(body.as_bytes());
        r.put(&user, "INBOX", &raw);
        all.push(id);
    }
    let dir = tmpdir("reported");
    let proxy = rt.block_on(switch_proxy(("localhost".into(), port("imap"))));
    let scratch = tmpdir("reported-measure");
    let mb = Mb { protocol: "imap", port: proxy.port, tls: true, user: &user, pass: &pass, first_sync: "all", folders: &[], after: "keep" };
    assert!(run(&["fetch", "--config", &write_config(&scratch, &mb), "--json"]).status.success());
    let total = proxy.last_total();

    let cfg = write_config(&dir, &mb);
    proxy.set_cut(Some(total / 2));
    let o = run(&["fetch", "--config", &cfg, "--json"]);
    assert!(!o.status.success(), "cut: {}", text(&o));
    let first = fetched_ids(&o);
    assert!(!first.is_empty() && first.len() < all.len(), "the cut run stored some: {}", text(&o));
    assert!(json_messages(&o).iter().all(|v| v["duplicate"] == false), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    // In the words every command uses for a broken connection, then what it means here.
    assert!(err.contains("The connection broke") && err.contains("Die Verbindung ist abgebrochen"), "{err}");
    assert!(err.contains(&format!("{} message(s) were stored", first.len())) && err.contains("the next run continues"), "{err}");
    assert!(err.contains(&format!("{} Nachricht(en) wurden vorher gespeichert", first.len())), "{err}");
    assert!(!err.contains("could not be reached") && !err.contains("Verbindungsaufbau"), "not a connect failure: {err}");
    assert!(!err.contains("http://") && !err.contains("https://"), "no documentation URLs: {err}");

    // A platform run through the library stores the rest and reports nothing (as if killed).
    put(&user, "late@durable");
    all.push("late@durable".into());
    proxy.set_cut(None);
    let platform = TenantConfig::load(&dir.join("tenant.toml")).expect("config");
    let db = Database::open(&platform.database).expect("db");
    let mut sink = db.sink(&platform.tenant, "inbox");
    rt.block_on(ops::fetch(plugin(), &platform, "inbox", &mut sink, &db)).expect("library run");
    drop(sink);
    drop(db);

    let o = run(&["fetch", "--config", &cfg, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("warning"), "the same server: {}", text(&o));
    let second = fetched_ids(&o);
    assert!(json_messages(&o).iter().all(|v| v["duplicate"] == false), "{}", text(&o));
    let mut both = first.clone();
    both.extend(second.iter().cloned());
    assert_eq!(both.len(), all.len(), "each reported once: {first:?} then {second:?}");
    assert_eq!(set(&both), set(&all));
    let o = run(&["fetch", "--config", &cfg, "--json"]);
    assert!(o.status.success() && fetched_ids(&o).is_empty(), "nothing is reported twice: {}", text(&o));
}

// ---- Item 6: deduplication never acknowledges a message it did not store ------------------

/// A forged copy reusing the genuine message's Message-ID arrives first; with `delete` and
/// `move` (IMAP) and `delete` (POP3) both are stored, the genuine one flagged as a Message-ID
/// collision, before the server removes either (before: the genuine one was deleted or moved
/// on the server and absent from the store).
async fn forged_copy_first(protocol: &str, boxn: u32, after: AfterFetch) {
    let r = rig();
    let (user, pass) = test_box(boxn);
    r.reset_mailbox(&user);
    let forged = b"From: Mallory <mallory@evil.test>\r\nTo: support@example.test\r\nSubject: forged\r\nMessage-ID: <genuine-6@durable>\r\n\r\nPay to my account.\r\n".to_vec();
    r.put(&user, "INBOX", &forged);
    let genuine = sample_message("genuine-6@durable", "the genuine one");
    r.put(&user, "INBOX", &genuine);
    let mut cfg = library_config(protocol, port(protocol), &user, &pass);
    cfg.mailboxes[0].after_fetch = after.clone();
    let db = db_at(&format!("forged-{protocol}-{boxn}"));
    let mut sink = db.sink(&cfg.tenant, "inbox");
    ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*db).await.expect("fetch");
    drop(sink);
    let stored = db.messages(&cfg.tenant, "inbox").expect("messages");
    assert_eq!(stored.len(), 2, "{protocol} {after:?}: both stored: {stored:?}");
    assert_eq!(stored[0].raw, forged);
    assert_eq!(stored[1].raw, genuine);
    assert!(!stored[0].collision && stored[1].collision, "the second is flagged as a Message-ID collision");
    assert!(r.listing(&user, "INBOX").is_empty(), "{protocol} {after:?}: both removed from INBOX after storing");
    if let AfterFetch::MoveTo(target) = &after {
        assert_eq!(r.listing(&user, target).len(), 2, "both moved");
    }
    // A second run finds nothing new and stores nothing twice.
    let mut sink = db.sink(&cfg.tenant, "inbox");
    assert_eq!(ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*db).await.expect("again").delivered, 0);
    drop(sink);
    assert_eq!(db.messages(&cfg.tenant, "inbox").expect("messages").len(), 2);
}

#[tokio::test]
async fn a_forged_message_id_never_hides_the_genuine_message() {
    // One box, one case after another.
    let _box = lock(26);
    forged_copy_first("imap", 26, AfterFetch::Delete).await;
    forged_copy_first("imap", 26, AfterFetch::MoveTo("Archive".into())).await;
    forged_copy_first("pop3", 26, AfterFetch::Delete).await;
}

// ---- Item 7: replies name their original explicitly --------------------------------------
// ---- Item 8: a sync state is never reused for another server ------------------------------

/// POP3, first over implicit TLS, then the same account through the
/// STARTTLS port: the state is bound to protocol, host, port and user, so the second run
/// starts afresh with a warning (stderr and JSON) instead of reusing the UIDLs; with a forged
/// Message-ID stored, `send --reply-to-message` refuses the ambiguous `mid:` form and bare
/// references, lists the candidates, and sends with `db:`.
#[test]
fn sync_state_is_bound_to_the_server_and_replies_name_their_original() {
    let _box = lock(26);
    let r = rig();
    let (user, pass) = test_box(26);
    r.reset_mailbox(&user);
    let dir = tmpdir("binding");
    r.put(&user, "INBOX", b"From: Mallory <mallory@evil.test>\r\nSubject: forged\r\nMessage-ID: <17>\r\n\r\nx\r\n");
    r.put(&user, "INBOX", &sample_message("17", "about 17"));
    let mb = Mb { protocol: "pop3", port: port("pop3"), tls: true, user: &user, pass: &pass, first_sync: "all", folders: &[], after: "keep" };
    let o = run(&["fetch", "--config", &write_config(&dir, &mb), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json_messages(&o).len(), 2);
    assert!(!text(&o).contains("warning"), "{}", text(&o));

    let stls = Mb { port: r.port("RIG_POP3_STLS_PORT"), tls: false, ..mb };
    let o = run(&["fetch", "--config", &write_config(&dir, &stls), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("server or account changed") && err.contains("starts afresh") && err.contains("Warnung"), "{err}");
    let warning = String::from_utf8_lossy(&o.stdout).lines().find(|l| l.contains("\"warning\"")).map(str::to_string);
    assert!(warning.is_some_and(|w| w.contains("pop3:localhost:") && w.contains("\"de\"")), "{}", text(&o));
    // Started afresh: both messages were fetched again (and recognised as stored).
    let again = json_messages(&o);
    assert_eq!(again.len(), 2, "{}", text(&o));
    assert!(again.iter().all(|v| v["duplicate"] == true), "{}", text(&o));
    // The same server again: no warning, nothing fetched.
    let o = run(&["fetch", "--config", &write_config(&dir, &stls), "--json"]);
    assert!(o.status.success() && !text(&o).contains("warning") && json_messages(&o).is_empty(), "{}", text(&o));

    // Item 7.
    let cfg = write_config(&dir, &stls);
    let send = |reference: &str| run(&["send", "--config", &cfg, "--queue", "support", "--reply-to-message", reference, "--body", "Thanks"]);
    let o = send("mid:<17>");
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("matches 2 stored messages") && err.contains("db:1") && err.contains("db:2"), "{err}");
    for bare in ["17", "1"] {
        let o = send(bare);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("does not say what it names"), "{}", text(&o));
    }
    let o = send("db:999");
    assert!(!o.status.success() && text(&o).contains("no stored message"), "{}", text(&o));
    let o = send("db:2");
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("250"), "{}", text(&o));
}
