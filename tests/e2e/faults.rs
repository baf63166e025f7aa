//! Connection cuts at many points of whole IMAP and POP3 sessions over TLS (greeting, login,
//! listing, download, the acknowledgement and the delete phase): whatever the cut, nothing is
//! deleted before it is stored, and a clean re-run ends with every message stored exactly once
//! and the mailbox emptied as configured. Then a subset of the fault sweep (`mailplug-sweep`):
//! cuts and `kill -9` of the CLI over IMAP keep/delete/move and POP3 keep/delete.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use mailplug_host::config::{AfterFetch, TenantConfig};
use mailplug_host::ops;
use mailplug_tests::{cutting_proxy, plugin, rig, sample_message, tenant, test_box, ServerSpec, TempDatabase};

const MESSAGES: usize = 4;

fn config(protocol: &str, port: u16, user: &str, pass: &str) -> TenantConfig {
    let r = rig();
    let inb = ServerSpec::new("localhost", port, true, user, pass);
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    let mut cfg = tenant(protocol, &inb, &smtp, true);
    cfg.mailboxes[0].after_fetch = AfterFetch::Delete;
    cfg.limits.reply_timeout_secs = 5;
    cfg
}

fn fill(user: &str, proto: &str) -> BTreeSet<String> {
    let r = rig();
    r.reset_mailbox(user);
    (1..=MESSAGES)
        .map(|i| {
            let id = format!("fault-{proto}-{i}@test");
            let mut raw = sample_message(&id, "fault injection");
            // Some bulk so that cuts also land inside message data.
            raw.extend(std::iter::repeat_n(b"line of body text to make the message larger than one read\r\n", 40 * i).flatten());
            r.put(user, "INBOX", &raw);
            id
        })
        .collect()
}

fn db(name: &str) -> TempDatabase {
    TempDatabase::open(&format!("fault-{name}"))
}

async fn cuts_never_lose_mail(proto: &str, boxn: u32, port_key: &str) {
    let r = rig();
    let (user, pass) = test_box(boxn);
    let upstream = ("localhost".to_string(), r.port(port_key));

    // A clean session through the proxy, to learn how many bytes a whole session takes.
    let all = fill(&user, proto);
    let proxy = cutting_proxy(upstream.clone(), None).await;
    let cfg = config(proto, proxy.port, &user, &pass);
    let store = db(&format!("{proto}-measure"));
    let mut sink = store.sink(&cfg.tenant, "inbox");
    ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*store).await.expect("clean session");
    drop(sink);
    let total = proxy.total.load(Ordering::SeqCst);
    assert!(total > 2000, "a whole session is {total} bytes");

    // Cut points spread over the whole session, denser at the end (acknowledge, delete, logout).
    let mut cuts: Vec<usize> = (0..24).map(|k| 1 + k * total / 24).collect();
    cuts.extend([total - 400, total - 200, total - 120, total - 60, total - 30, total - 10, total - 1]);
    let direct = config(proto, r.port(port_key), &user, &pass);
    for cut in cuts {
        let expected = fill(&user, proto);
        assert_eq!(expected, all);
        let store = db(&format!("{proto}-{cut}"));
        let proxy = cutting_proxy(upstream.clone(), Some(cut)).await;
        let cfg = config(proto, proxy.port, &user, &pass);
        {
            let mut sink = store.sink(&cfg.tenant, "inbox");
            let _ = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*store).await;
        }
        // Nothing that left the server is missing from the store.
        let on_server: BTreeSet<String> = r.listing(&user, "INBOX").into_iter().map(|m| m.2).collect();
        let stored: Vec<String> = store.messages(&cfg.tenant, "inbox").expect("messages").into_iter().map(|m| m.message_id).collect();
        let stored_set: BTreeSet<String> = stored.iter().cloned().collect();
        assert_eq!(stored.len(), stored_set.len(), "cut at {cut}/{total}: a message stored twice: {stored:?}");
        for id in &all {
            assert!(
                on_server.contains(id) || stored_set.contains(id),
                "{proto} cut at {cut}/{total}: {id} was deleted from the server before it was stored"
            );
        }
        // A clean re-run (same store, its sync state) completes the job exactly once.
        let mut sink = store.sink(&direct.tenant, "inbox");
        ops::fetch(plugin(), &direct, "inbox", &mut sink, &*store)
            .await
            .unwrap_or_else(|e| panic!("{proto} re-run after a cut at {cut}/{total}: {e}"));
        drop(sink);
        let stored: Vec<String> = store.messages(&direct.tenant, "inbox").expect("messages").into_iter().map(|m| m.message_id).collect();
        assert_eq!(stored.len(), MESSAGES, "{proto} cut at {cut}/{total}: stored {stored:?}");
        assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), all);
        assert!(r.listing(&user, "INBOX").is_empty(), "{proto} cut at {cut}/{total}: mailbox not emptied after the re-run");
    }
}

#[tokio::test]
async fn imap_cuts_never_lose_or_duplicate_mail() {
    cuts_never_lose_mail("imap", 13, "RIG_IMAPS_PORT").await;
}

#[tokio::test]
async fn pop3_cuts_never_lose_or_duplicate_mail() {
    cuts_never_lose_mail("pop3", 14, "RIG_POP3S_PORT").await;
}

// ---- The fault sweep's subset (the full sweep is `mailplug-sweep`, tests/sweep/main.rs).

use mailplug_tests::sweep::{self, cut_case, kill_case, measure, pick_offsets, KillAt, Mode, Tally};

/// A case directory under the test's own directory.
fn sweep_dir(test: &str, name: &str) -> std::path::PathBuf {
    sweep_root(test).join(format!("{name}-{}", sweep::next_case()))
}

fn sweep_root(test: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mailplug-sweep-e2e-{test}-{}", std::process::id()))
}

/// Removes the test's case directories when every case passed (failing ones are kept).
fn clean_up(test: &str, failures: &[String]) {
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(sweep_root(test));
    }
}

/// Cuts at 5 points of each of IMAP keep / delete / move and POP3 keep / delete (the login,
/// listing, download, acknowledgement and delete/move phases among them, named in any failure)
/// and at 3 of a new-only first sync (IMAP and POP3 delete), then a message arrives and a clean run:
/// nothing lost, duplicated, deleted unstored, skipped or reported twice; mail older than a
/// new-only first sync neither fetched nor touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_subset_cuts_lose_nothing() {
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for mode in sweep::modes() {
        let proxy = sweep::fault_proxy(mode.upstream(), None).await;
        let clean = measure(plugin(), &mode, &proxy, &sweep_dir("cuts", "measure")).await;
        let (size, outline) = clean.clone();
        // A new-only first sync takes its baseline and fetches nothing: a short session.
        assert!(outline.len() >= 3 && (mode.new_only || size > 10_000), "{}: a session of {size} bytes, commands {outline:?}", mode.name());
        // A new-only first sync is a short session: fewer points cover it.
        for offset in pick_offsets(size, &outline, if mode.new_only { 3 } else { 5 }) {
            let r = cut_case(plugin(), &mode, &proxy, offset, &clean, &sweep_dir("cuts", "cut")).await;
            tally.add(&r.tally);
            failures.extend(r.failure);
        }
    }
    clean_up("cuts", &failures);
    assert!(tally.cuts >= 28, "cuts that fired: {}", tally.summary());
    assert!(failures.is_empty(), "{}\n{}", tally.summary(), failures.join("\n"));
    assert_eq!(tally.stored_once, tally.messages, "{}", tally.summary());
}

/// `kill -9` of `mailplug fetch --json` once messages are stored and not yet acknowledged
/// (a proxy stalls the session one byte into the acknowledgement), for IMAP delete and move
/// and POP3 delete, and during a
/// database write of the session (IMAP and POP3 delete), then a clean CLI run: nothing lost,
/// duplicated or deleted unstored, each message reported as new exactly once. Uses rig box 40.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_subset_kills_lose_nothing() {
    let bin = std::path::PathBuf::from(
        std::env::var("MAILPLUG_BIN").unwrap_or_else(|_| "/var/tmp/mailplug-target/debug/mailplug".into()),
    );
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    // Keep modes change nothing on the server; their cuts are in the test above.
    for mode in sweep::modes().into_iter().filter(|m| m.after != sweep::After::Keep && !m.new_only) {
        let mode = Mode { boxn: 40, ..mode };
        let proxy = sweep::fault_proxy(mode.upstream(), None).await;
        let clean = measure(plugin(), &mode, &proxy, &sweep_dir("kills", "measure")).await;
        let outline = clean.1.clone();
        let ack = sweep::ack_offset(&outline).unwrap_or_else(|| panic!("{}: no acknowledgement in {outline:?}", mode.name()));
        let mut points = vec![KillAt::Stall(ack)];
        if mode.after == sweep::After::Delete {
            points.push(KillAt::Wal(2));
        }
        for at in points {
            let r = kill_case(&bin, &mode, &proxy, at, &clean, &sweep_dir("kills", "kill")).await;
            tally.add(&r.tally);
            failures.extend(r.failure);
        }
    }
    clean_up("kills", &failures);
    assert_eq!(tally.kills, 5, "kills that happened: {}", tally.summary());
    assert!(failures.is_empty(), "{}\n{}", tally.summary(), failures.join("\n"));
}
