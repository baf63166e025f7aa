//! The host's per-tenant caps on the component: memory, enforced by wasmtime, explained to the
//! admin instead of crashing the host.

use std::future::Future;
use std::time::{Duration, Instant};

use mailplug_host::error::Trap;
use mailplug_host::ops;
use mailplug_host::ops::outbox::{enqueue, Compose, DEFAULT_MAX_AGE};
use mailplug_host::store::{MemorySink, NoSyncState, Outbox};
use mailplug_host::{HostError, TenantConfig};
use mailplug_tests::{outgoing, plugin, rig, tenant, ServerSpec};
use mailplug_tests::{TempDatabase, TempPath};

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
    let dir = TempPath::dir(&marker);
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

/// A tenant of `name` whose outbox is in a fresh database of its own; nothing connects.
fn outbox_tenant(name: &str) -> (TenantConfig, TempDatabase) {
    let r = rig();
    let spec = ServerSpec::new("localhost", r.port("RIG_SUBMISSION_PORT"), false, r.user("AGENT"), r.pass("AGENT"));
    let mut cfg = tenant("imap", &spec, &spec, true);
    cfg.tenant = name.into();
    let db = TempDatabase::open(&format!("cpu-{name}"));
    cfg.database = db.path().to_path_buf();
    (cfg, db)
}

/// A draft whose composition takes the component far more CPU than `cpu` allows: `mb`
/// megabytes of body in one line, which the builder must encode.
fn heavy_draft(mb: usize) -> Compose {
    let mut m = outgoing(&["ann@example.test"], "heavy");
    m.text_body = "0123456789abcdef".repeat(mb << 16);
    Compose::Draft(m)
}

/// Isolation by CPU (the memory cap has `serve::a_trapping_tenant_waits_while_its_neighbour_keeps_receiving`):
/// one tenant's guest burns its CPU budget per call while a neighbour in the same host (the
/// same component, the same instance pool, the same thread) enqueues mail. The neighbour's
/// operations all finish, each in time (the trapped call held the thread at most its budget);
/// the trapping tenant gets the typed `Trap::Cpu`, explained in English and German, nothing of
/// it is committed, and its next operation works on a fresh instance. Through the library: in
/// `serve` no hostile input reaches one guest call that long (API bodies are at most 16 KB, and
/// a server's bytes reach the guest one read at a time).
#[tokio::test(flavor = "current_thread")]
async fn a_tenant_over_its_cpu_budget_stops_alone_and_its_next_operation_works() {
    let (mut hog, hog_db) = outbox_tenant("hog");
    hog.limits.guest_cpu_ms_per_call = 100;
    let (calm, calm_db) = outbox_tenant("calm");

    // Without the budget the heavy draft takes the component this long (the default budget is
    // 2 s): what the neighbour would have waited for.
    let unbounded = {
        let mut roomy = hog.clone();
        roomy.limits.guest_cpu_ms_per_call = 60_000;
        let started = Instant::now();
        enqueue(plugin(), &roomy, "q", &*hog_db, &heavy_draft(16), DEFAULT_MAX_AGE).await.expect("the heavy draft composes with room");
        started.elapsed()
    };
    let queued = hog_db.list("hog", None, None, 10).expect("list");
    assert_eq!(queued.len(), 1);
    hog_db.cancel("hog", &queued[0].id, 0).expect("cancel the measuring row");

    // How long the hog held the thread at one go: the longest single poll of its enqueue. That,
    // not the neighbour's wall time (which includes its own fsyncs, slow on a loaded machine),
    // is what the budget bounds.
    let mut hog_held = Duration::ZERO;
    let heavy = heavy_draft(16);
    let hog_run = {
        let mut run = Box::pin(enqueue(plugin(), &hog, "q", &*hog_db, &heavy, DEFAULT_MAX_AGE));
        let held = &mut hog_held;
        std::future::poll_fn(move |cx| {
            let started = Instant::now();
            let polled = run.as_mut().poll(cx);
            *held = (*held).max(started.elapsed());
            polled
        })
    };
    // The neighbour hands the thread over before each enqueue, as the service's actors do at
    // every await.
    let calm_run = async {
        let mut slowest = Duration::ZERO;
        for i in 0..5 {
            let started = Instant::now();
            tokio::task::yield_now().await;
            let what = Compose::Draft(outgoing(&["bob@example.test"], &format!("calm {i}")));
            enqueue(plugin(), &calm, "q", &*calm_db, &what, DEFAULT_MAX_AGE).await.expect("the neighbour's enqueue works");
            slowest = slowest.max(started.elapsed());
        }
        slowest
    };
    let (calm_slowest, hog_result) = tokio::join!(calm_run, hog_run);
    eprintln!("heavy draft: {unbounded:?} without the budget, held the thread at most {hog_held:?} with it; the neighbour's slowest enqueue {calm_slowest:?}");

    let e = hog_result.expect_err("the heavy draft needs more than 100 ms of CPU");
    assert!(matches!(e, HostError::Trap(Trap::Cpu)), "{e:?}");
    assert!(e.to_string().contains("more CPU time in one step") && e.to_string().contains("limits.guest_cpu_ms_per_call"), "{e}");
    let HostError::Trap(t) = &e else { unreachable!() };
    let why = t.explanation();
    assert!(why.en.contains("limits.guest_cpu_ms_per_call") && why.de.contains("Rechenzeit") && why.de.contains("limits.guest_cpu_ms_per_call"), "{why:?}");
    // Stopped by the budget, not run to the end: the neighbour never waited for the hog longer
    // than that.
    assert!(hog_held * 2 < unbounded, "the hog held the thread {hog_held:?} at one go, as long as the unbudgeted run ({unbounded:?})");

    // The neighbour: every enqueue committed, each in bounded time.
    assert_eq!(calm_db.list("calm", None, None, 10).expect("list").len(), 5);
    assert!(calm_slowest < Duration::from_secs(5), "the neighbour's slowest enqueue took {calm_slowest:?}");

    // Nothing of the trapped call was committed; the tenant's next operation works.
    assert!(hog_db.list("hog", None, Some(mailplug_host::store::OutboxState::Queued), 10).expect("list").is_empty());
    let next = Compose::Draft(outgoing(&["ann@example.test"], "after the trap"));
    let row = enqueue(plugin(), &hog, "q", &*hog_db, &next, DEFAULT_MAX_AGE).await.expect("the next operation works").row;
    assert_eq!(hog_db.get("hog", &row.id, false).expect("get").map(|r| r.state), Some(mailplug_host::store::OutboxState::Queued));
}
