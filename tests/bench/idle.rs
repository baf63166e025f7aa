//! Memory of idling IMAP mailboxes (issue 13): N connections to the rig's Dovecot (boxes 41 to
//! 44 in turn, over implicit TLS) left idling by `ops::fetch_and_idle`, with no instance alive;
//! the process's resident memory before, half way and after, per idling mailbox. Then one
//! message delivered to each box wakes every handle; the wake-ups are resumed and idle again.
//!
//! Usage: mailplug-bench idle [N]   (default 50, at most 80: the rig's Dovecot runs at most 100
//! IMAP sessions at once (its default_process_limit, one process per session), shared with every
//! other test; a run that takes them all makes other sessions wait for a login)

use std::time::{Duration, Instant};

use mailplug_host::ops::{fetch_and_idle, CancellationToken, IdleHandle, IdleOutcome, Wake};
use mailplug_host::store::{MemorySink, NoSyncState};
use mailplug_host::{Plugin, RuntimeOptions, TenantConfig};
use mailplug_tests::{rig, sample_message, tenant, test_box, wasm_path, ServerSpec};

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

fn config(n: u32) -> TenantConfig {
    let r = rig();
    let (user, pass) = test_box(n);
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, &user, &pass);
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    tenant("imap", &inb, &smtp, true)
}

async fn idle(plugin: &Plugin, cfg: &TenantConfig) -> IdleHandle {
    let mut sink = MemorySink::default();
    match fetch_and_idle(plugin, cfg, "inbox", &mut sink, &NoSyncState).await {
        Ok(IdleOutcome::Idling(h)) => h,
        Ok(IdleOutcome::Done(s)) => panic!("the session ended instead of idling: {s:?}"),
        Err(e) => panic!("{e}"),
    }
}

fn mb(b: usize) -> f64 {
    b as f64 / (1 << 20) as f64
}

pub async fn run(args: &[usize]) {
    let n = args.first().copied().unwrap_or(50).clamp(2, 80);
    let r = rig();
    let boxes = [41u32, 42, 43, 44];
    let configs: Vec<TenantConfig> = boxes.iter().map(|&b| config(b)).collect();
    for &b in &boxes {
        r.reset_mailbox(&test_box(b).0);
    }
    let plugin = Plugin::load_with(&wasm_path(), &RuntimeOptions::default().with_instances(4)).expect("plugin");
    // Compiling here would leave tens of MB of freed heap that the handles then reuse, and the
    // growth measured would be too small: measure with the compile cache warm.
    let cached = matches!(plugin.cache_status(), mailplug_host::runtime::CacheStatus::Loaded(_));
    // Warm up: the allocator's arenas, the shared TLS configuration, the pool's first slots.
    for cfg in &configs {
        drop(idle(&plugin, cfg).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss();
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    let mut half = 0;
    for i in 0..n {
        handles.push(idle(&plugin, &configs[i % configs.len()]).await);
        if i + 1 == n / 2 {
            half = rss();
        }
    }
    let opened = started.elapsed();
    let after = rss();
    let state_sizes: Vec<usize> = handles.iter().map(|h| h.idle_state().len()).collect();
    let (smin, smax) = (state_sizes.iter().min().copied().unwrap_or(0), state_sizes.iter().max().copied().unwrap_or(0));

    // One message per box wakes every handle on it; each wake-up is resumed in a fresh instance.
    for (i, &b) in boxes.iter().enumerate() {
        r.put(&test_box(b).0, "INBOX", &sample_message(&format!("idle-bench-{i}@test"), "wake up"));
    }
    let cancel = CancellationToken::new();
    let mut resumed = Duration::ZERO;
    let mut stored = 0;
    let mut again = Vec::with_capacity(n);
    for (i, mut h) in handles.into_iter().enumerate() {
        let wake = tokio::time::timeout(Duration::from_secs(30), h.wait(&cancel)).await.expect("woke up in time");
        assert_eq!(wake, Wake::Readable);
        let mut sink = MemorySink::default();
        let t = Instant::now();
        let outcome = h.resume(&plugin, &configs[i % configs.len()], wake, &mut sink, &NoSyncState).await;
        resumed += t.elapsed();
        match outcome {
            Ok(IdleOutcome::Idling(h)) => again.push(h),
            Ok(IdleOutcome::Done(s)) => panic!("ended: {s:?}"),
            Err(e) => panic!("{e}"),
        }
        stored += sink.messages.len();
    }
    let after_wake = rss();

    // Noise: another client flags the message on each box; every handle wakes, is resumed,
    // reads the FETCH FLAGS line and idles again without fetching or writing (the cost of a
    // keep-alive such as Dovecot's `* OK Still here`, sent every 2 minutes by default).
    for &b in &boxes {
        let user = test_box(b).0;
        let uid = r.listing(&user, "INBOX")[0].0;
        r.add_flags(&user, "INBOX", uid, "\\Flagged");
    }
    let mut noise = Duration::ZERO;
    let mut noise_resumes = 0;
    let mut parked = Vec::with_capacity(n);
    for (i, mut h) in again.into_iter().enumerate() {
        let wake = tokio::time::timeout(Duration::from_secs(30), h.wait(&cancel)).await.expect("woke up in time");
        assert_eq!(wake, Wake::Readable);
        let mut sink = MemorySink::default();
        let t = Instant::now();
        let resumed = h.resume(&plugin, &configs[i % configs.len()], wake, &mut sink, &NoSyncState).await;
        noise += t.elapsed();
        match resumed {
            Ok(IdleOutcome::Idling(h)) => parked.push(h),
            Ok(IdleOutcome::Done(s)) => panic!("ended: {s:?}"),
            Err(e) => panic!("{e}"),
        }
        assert!(sink.messages.is_empty());
        noise_resumes += 1;
    }
    drop(parked);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dropped = rss();

    let half_n = n / 2;
    println!("Idling IMAP mailboxes, {n} connections to Dovecot over TLS (boxes 41-44), one process\n");
    if !cached {
        println!("(the component was compiled in this process, not loaded from the compile cache: run again for valid figures)\n");
    }
    println!("| measure | value |\n|---|---:|");
    println!("| RSS before (plugin loaded, warmed up) | {:.1} MB |", mb(before));
    println!("| RSS with {half_n} idling | {:.1} MB |", mb(half));
    println!("| RSS with {n} idling | {:.1} MB |", mb(after));
    println!("| per idling mailbox, all {n}: (after - before) / {n} | {:.1} KB |", (after - before) as f64 / n as f64 / 1024.0);
    println!(
        "| per idling mailbox, second half: (after - half) / {} | {:.1} KB |",
        n - half_n,
        (after.saturating_sub(half)) as f64 / (n - half_n) as f64 / 1024.0
    );
    println!("| idle state size | {smin} to {smax} bytes |");
    println!("| fetch + idle, per mailbox (sequential) | {:.1} ms |", opened.as_secs_f64() * 1e3 / n as f64);
    println!(
        "| wake-up by new mail: `resume` (instantiate, DONE, SELECT, SEARCH, FETCH 1 message, parse, IDLE, drop), per mailbox | {:.1} ms |",
        resumed.as_secs_f64() * 1e3 / n as f64
    );
    println!("| messages stored by the wake-ups | {stored} |");
    println!("| RSS after the wake-ups | {:.1} MB |", mb(after_wake));
    println!(
        "| wake-up by noise only (FETCH FLAGS): `resume` (instantiate, read, idle again, drop), per mailbox | {:.2} ms |",
        noise.as_secs_f64() * 1e3 / noise_resumes.max(1) as f64
    );
    println!("| RSS after dropping every handle | {:.1} MB |", mb(dropped));
}
