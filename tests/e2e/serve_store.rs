//! The store under `mailplug serve` with several busy mailboxes of one tenant: the mailbox
//! actors share one thread, and their sinks and store writes share one SQLite database. Every
//! message must be stored, nothing may wait for SQLite's busy timeout (10 s: "database is
//! locked"), and each mailbox's messages must arrive without a pause anywhere near it. Rig
//! boxes 78 to 80; every wait is bounded.

use std::time::Instant;

use mailplug_tests::serve::*;
use mailplug_tests::{rig, test_box};

/// Messages per mailbox, and the body of each (about 24 KB: several commits per run).
const PER_BOX: usize = 150;

fn message(mid: &str, i: usize) -> Vec<u8> {
    let line = format!("{i:05} the quick brown fox jumps over the lazy dog, message {mid}\r\n");
    let body = line.repeat(24_000 / line.len());
    format!(
        "From: Customer <customer@example.test>\r\nTo: support@example.test\r\nSubject: busy {i}\r\n\
         Date: Mon, 07 Dec 2026 04:00:00 +0000\r\nMessage-ID: <{mid}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    )
    .into_bytes()
}

/// Three mailboxes of one tenant, each with 150 messages, served at once: all 450 stored, no
/// "database is locked" in the log, no mailbox in back-off, and no pause of 5 s or more
/// between two consecutive stores of a mailbox (a stall waits 10 s for the busy timeout).
#[test]
fn busy_mailboxes_of_one_tenant_store_everything_without_waiting_for_the_database_lock() {
    let r = rig();
    let dir = workdir("store-busy");
    let tag = std::process::id();
    let boxes = [("a", 78), ("b", 79), ("c", 80)];
    for (name, n) in boxes {
        let (user, pass) = test_box(n);
        r.reset_mailbox(&user);
        let msgs: Vec<Vec<u8>> = (0..PER_BOX).map(|i| message(&format!("busy-{name}-{i}-{tag}@test"), i)).collect();
        append_many(&user, &pass, &msgs);
    }
    let tok = "tenant-busy-token-0123456789abcdef";
    write_tenant(&dir, "busy.toml", &imap_tenant(&dir, "busy", tok, 1, &boxes));
    let started = Instant::now();
    let s = Serve::start(&dir, "serve-store.log");
    let all = wait_for("every message stored", 240, || {
        let list = try_messages(&s, "busy", tok).ok()?;
        (list.len() >= PER_BOX * boxes.len()).then_some(list)
    });
    let took = started.elapsed();
    let log = std::fs::read_to_string(dir.join("serve-store.log")).unwrap_or_default();
    assert!(!log.contains("database is locked"), "a store write waited for the busy timeout:\n{log}");
    assert_eq!(all.len(), PER_BOX * boxes.len(), "each message once");
    for (name, _) in boxes {
        let mut at: Vec<i64> = all.iter().filter(|m| m["mailbox"] == name).map(|m| m["stored_at_ms"].as_i64().expect("stored_at_ms")).collect();
        assert_eq!(at.len(), PER_BOX, "mailbox {name}");
        for i in 0..PER_BOX {
            assert_eq!(with_mid(&all, &format!("busy-{name}-{i}-{tag}@test")).len(), 1, "mailbox {name} message {i}");
        }
        at.sort_unstable();
        let pause = at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        println!("mailbox {name}: {} ms from first to last store, longest pause {pause} ms", at[PER_BOX - 1] - at[0]);
        assert!(pause < 5_000, "mailbox {name} paused {pause} ms between two stores:\n{log}");
        let st = mailbox_state(&s, "busy", name);
        assert!(st["last_error"].is_null(), "mailbox {name}: {st}");
    }
    println!("all {} messages stored {:.1} s after the start", all.len(), took.as_secs_f64());
    let (status, _) = s.terminate();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
    // The boxes are left empty (tests/e2e/durable.rs uses them too, one after the other).
    for (_, n) in boxes {
        r.reset_mailbox(&test_box(n).0);
    }
}
