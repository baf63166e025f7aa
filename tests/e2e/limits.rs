//! The host's per-tenant caps on the component: memory, enforced by wasmtime, explained to the
//! admin instead of crashing the host.

use mailplug_host::ops;
use mailplug_host::store::{MemorySink, NoSyncState};
use mailplug_host::error::Trap;
use mailplug_host::HostError;
use mailplug_tests::{plugin, rig, tenant, ServerSpec};

#[tokio::test]
async fn too_little_memory_to_start_is_a_clear_error() {
    let e = plugin().instantiate(64 * 1024, 1000).await.err().expect("64 KiB cannot hold the component");
    assert!(matches!(e, HostError::Plugin(_)), "{e}");
    assert!(e.to_string().contains("guest_memory_mb"), "{e}");
}

#[tokio::test]
async fn a_message_larger_than_guest_memory_stops_with_the_memory_limit() {
    let r = rig();
    // A 24 MB message straight into the sales mailbox (bigger than Postfix would accept).
    let marker = format!("memory-limit-{}", std::process::id());
    let dir = std::env::temp_dir().join(&marker);
    std::fs::create_dir_all(&dir).expect("dir");
    let eml = dir.join("big.eml");
    let mut big = format!("From: <a@example.test>\r\nTo: <b@example.test>\r\nSubject: {marker}\r\n\r\n").into_bytes();
    for _ in 0..(24 * 1024 * 1024 / 64) {
        big.extend_from_slice(&[b'x'; 62]);
        big.extend_from_slice(b"\r\n");
    }
    std::fs::write(&eml, &big).expect("write");
    let user = "support";
    let folder = format!("LimitTest{}", std::process::id());
    let save = std::process::Command::new(r.get("DOVEADM"))
        .args(["mailbox", "create", "-u", r.user("SUPPORT"), &folder])
        .status()
        .expect("doveadm");
    assert!(save.success(), "create {folder} for {user}");
    let save = std::process::Command::new(r.get("DOVEADM"))
        .args(["save", "-u", r.user("SUPPORT"), "-m", &folder])
        .stdin(std::fs::File::open(&eml).expect("open"))
        .status()
        .expect("doveadm");
    assert!(save.success(), "doveadm save");

    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, r.user("SUPPORT"), r.pass("SUPPORT"));
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    let mut cfg = tenant("imap", &inb, &smtp, true);
    cfg.mailboxes[0].folders = vec![folder.clone()];
    cfg.limits.guest_memory_mb = 16;
    cfg.limits.max_message_bytes = 100 * 1024 * 1024;
    let mut sink = MemorySink::default();
    let result = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &NoSyncState).await;

    // Clean up before asserting, so a failure leaves no 24 MB message behind.
    let _ = std::process::Command::new(r.get("DOVEADM"))
        .args(["mailbox", "delete", "-u", r.user("SUPPORT"), "-r", &folder])
        .status();
    let _ = std::fs::remove_dir_all(&dir);

    let e = result.expect_err("24 MB cannot fit in 16 MB of guest memory");
    assert!(matches!(e, HostError::Trap(Trap::Memory { limit_bytes }) if limit_bytes == 16 << 20), "{e:?}");
    assert!(e.to_string().contains("memory limit of 16 MB"), "{e}");
    assert!(sink.messages.is_empty());

    // The same fetch with enough memory works: the limit, not the message, stopped it.
    // (Checked on a small folder to keep the test quick.)
    cfg.limits.guest_memory_mb = 256;
    cfg.mailboxes[0].folders = vec![];
    ops::fetch(plugin(), &cfg, "inbox", &mut MemorySink::default(), &NoSyncState).await.expect("fetch with room");
}
