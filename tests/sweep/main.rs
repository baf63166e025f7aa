//! `mailplug-sweep`: the fault sweep (issue 10, item 14). For IMAP keep / delete / move and
//! POP3 keep / delete against the rig's Dovecot (plaintext listeners, so the proxy can name the
//! command in progress), and for a new-only first sync (IMAP and POP3 delete), it
//! - cuts the connection of a fetch (host library) at byte offsets spread over every phase of
//!   the session (greeting, login, listing, download, acknowledgement, delete/move, logout),
//! - kills `mailplug fetch --json` with SIGKILL where a proxy stalls the session (once the host
//!   has processed what it got and is idle) and while its database's -wal file changes,
//!
//! then puts one more message into the mailbox, runs cleanly and checks: every message stored
//! exactly once with its bytes, nothing deleted or moved unstored, the server left as the
//! after-fetch action says, mail older than a new-only first sync untouched, and each stored
//! message reported as new exactly once. It prints every case, the counts, and exits 1 on any
//! failure (the failing cases' directories, with their databases, are kept).
//!
//! Usage (the rig up, the component and CLI built; see docs/SECURITY.md "Fault sweep"):
//!   MAILPLUG_WASM=.../mailplug_plugin.wasm MAILPLUG_BIN=.../debug/mailplug \
//!     cargo run -p mailplug-tests --bin mailplug-sweep -- [--cuts N] [--kills N] [--wal-kills N]
//!     [--modes imap-keep,imap-delete,...] [--bin PATH] [--quiet]
//! N are per mode (defaults 44, 11, 4: with 7 modes about 300 cuts and 90 kills, some 30
//! minutes). Uses rig boxes 35-39; do not run it while `tests/e2e/faults.rs` runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use mailplug_tests::sweep::{self, count_wal_writes, cut_case, kill_case, measure, pick_offsets, CaseResult, KillAt, Tally};
use mailplug_tests::{plugin, rig};

struct Args {
    cuts: usize,
    kills: usize,
    wal_kills: usize,
    modes: Option<Vec<String>>,
    quiet: bool,
    bin: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        cuts: 44,
        kills: 11,
        wal_kills: 4,
        modes: None,
        quiet: false,
        bin: std::env::var("MAILPLUG_BIN").map(PathBuf::from).unwrap_or_else(|_| "/var/tmp/mailplug-target/debug/mailplug".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--cuts" => a.cuts = num("--cuts")?,
            "--kills" => a.kills = num("--kills")?,
            "--wal-kills" => a.wal_kills = num("--wal-kills")?,
            "--modes" => a.modes = Some(it.next().ok_or("--modes needs a list")?.split(',').map(str::to_string).collect()),
            "--bin" => a.bin = it.next().ok_or("--bin needs a path")?.into(),
            "--quiet" => a.quiet = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// `count` values spread evenly over 1..=max.
fn spread(max: usize, count: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..count).map(|j| 1 + j * max.saturating_sub(1) / count.saturating_sub(1).max(1)).collect();
    v.dedup();
    v
}

fn report(r: &CaseResult, what: &str, mode: &str, quiet: bool, tally: &mut Tally, failures: &mut Vec<String>) {
    tally.add(&r.tally);
    match &r.failure {
        Some(f) => {
            println!("{f}");
            failures.push(f.clone());
        }
        None if !quiet => println!("ok   {mode} {what} at {}", r.point),
        None => {}
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\nusage: mailplug-sweep [--cuts N] [--kills N] [--wal-kills N] [--modes a,b] [--bin PATH] [--quiet]");
            return ExitCode::from(2);
        }
    };
    if (a.kills > 0 || a.wal_kills > 0) && !a.bin.exists() {
        eprintln!("mailplug-sweep: no CLI at {} (build it: cargo build -p mailplug-host --bins; or set MAILPLUG_BIN)", a.bin.display());
        return ExitCode::from(2);
    }
    let _ = rig();
    let started = Instant::now();
    let work = std::env::temp_dir().join(format!("mailplug-sweep-{}", std::process::id()));
    let mut total = Tally::default();
    let mut failures = Vec::new();
    for mode in sweep::modes() {
        let name = mode.name();
        if a.modes.as_ref().is_some_and(|m| !m.contains(&name)) {
            continue;
        }
        let proxy = sweep::fault_proxy(mode.upstream(), None).await;
        let clean = measure(plugin(), &mode, &proxy, &work.join(format!("{name}-measure"))).await;
        let (size, outline) = clean.clone();
        println!("== {name}: a clean session is {size} bytes; client commands at:");
        for (offset, label) in &outline {
            println!("     {offset:>6}  {label}");
        }
        let mut mode_tally = Tally::default();
        for offset in pick_offsets(size, &outline, a.cuts) {
            let dir = work.join(format!("{name}-cut-{offset}"));
            let r = cut_case(plugin(), &mode, &proxy, offset, &clean, &dir).await;
            report(&r, "cut", &name, a.quiet, &mut mode_tally, &mut failures);
            if r.failure.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        let mut wal_points = Vec::new();
        if a.wal_kills > 0 {
            let writes = count_wal_writes(&a.bin, &mode, &proxy, &work.join(format!("{name}-wal-measure"))).await;
            println!("== {name}: a clean CLI run changes its -wal file {writes} times (as polled every 0.1 ms)");
            wal_points = spread(writes, a.wal_kills);
        }
        let kill_points = pick_offsets(size, &outline, a.kills).into_iter().map(KillAt::Stall).chain(wal_points.into_iter().map(KillAt::Wal));
        for at in kill_points {
            let dir = work.join(format!("{name}-kill-{}", sweep::next_case()));
            let r = kill_case(&a.bin, &mode, &proxy, at, &clean, &dir).await;
            report(&r, "kill", &name, a.quiet, &mut mode_tally, &mut failures);
            if r.failure.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        println!("-- {name}: {}", mode_tally.summary());
        total.add(&mode_tally);
    }
    println!("\n== fault sweep, {} s:\n{}", started.elapsed().as_secs(), total.summary().replace(" | ", "\n"));
    if total.all_failures() > 0 || total.failed_cases > 0 {
        println!("\n{} failing case(s); their directories are kept under {}", failures.len(), work.display());
        ExitCode::from(1)
    } else {
        let _ = std::fs::remove_dir_all(&work);
        ExitCode::SUCCESS
    }
}
