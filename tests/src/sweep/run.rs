//! One case of the sweep: a faulted run (a cut through the host library, or a `kill -9` of the
//! `mailplug fetch` CLI), the checks, a message arriving, a clean run, the checks again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailplug_host::config::TenantConfig;
use mailplug_host::db::{Database, DbSink};
use mailplug_host::driver::MessageSink;
use mailplug_host::engine::{FetchedMessage, SkippedMessage};
use mailplug_host::{ops, HostError, Plugin};

use super::{
    case_line, check_after_fault, check_final, cpu_ns, fill, server_view, store_view, sweep_message, write_config, Fault, FaultProxy,
    Mode, Msg, Outline, Tally,
};
use crate::{rig, test_box};

/// A command cut short is named after the clean session's command at the same offset (the
/// sessions are byte-identical up to the fault).
fn name_partial(phase: &str, offset: usize, clean: &Outline) -> String {
    match (phase.strip_prefix("(a command, partly sent)"), clean.iter().rev().find(|(start, _)| *start < offset)) {
        (Some(rest), Some((_, label))) => format!("{label} (partly sent){rest}"),
        _ => phase.to_string(),
    }
}

/// What one case found.
pub struct CaseResult {
    pub tally: Tally,
    /// "offset/total (phase)".
    pub point: String,
    /// The failure report, when something is wrong.
    pub failure: Option<String>,
}

/// A database sink that counts, per server id, how often a delivery was reported as new.
struct Recording<'a, 'b> {
    db: DbSink<'a>,
    new: &'b mut BTreeMap<String, usize>,
}

impl MessageSink for Recording<'_, '_> {
    fn deliver(&mut self, m: FetchedMessage) -> Result<(), HostError> {
        self.db.deliver(m)
    }
    fn skipped(&mut self, n: SkippedMessage) -> Result<(), HostError> {
        self.db.skipped(n)
    }
    fn commit(&mut self) -> Result<(), HostError> {
        self.db.commit()?;
        for d in &self.db.results {
            if d.new {
                *self.new.entry(d.id.clone()).or_default() += 1;
            }
        }
        Ok(())
    }
    // The store keys server ids by the server they come from, as without this wrapper.
    fn source(&mut self, server: &str) {
        self.db.source(server)
    }
    fn warning(&mut self, en: &str, de: &str) {
        self.db.warning(en, de)
    }
}

async fn library_fetch(plugin: &Plugin, cfg: &TenantConfig, new: &mut BTreeMap<String, usize>) -> Result<(), HostError> {
    let db = Database::open(&cfg.database)?;
    let mut sink = Recording { db: db.sink(&cfg.tenant, "inbox"), new };
    ops::fetch(plugin, cfg, "inbox", &mut sink, &db).await.map(|_| ())
}

fn load(path: &Path) -> TenantConfig {
    TenantConfig::load(path).unwrap_or_else(|e| panic!("sweep config {}: {e}", path.display()))
}

/// A clean session of the mode through `proxy`: its size in bytes and its client commands.
pub async fn measure(plugin: &Plugin, mode: &Mode, proxy: &FaultProxy, dir: &Path) -> (usize, Outline) {
    let (user, pass) = test_box(mode.boxn);
    fill(mode, &user);
    proxy.set_plan(None);
    let cfg = load(&write_config(dir, mode, proxy.port, &user, &pass));
    library_fetch(plugin, &cfg, &mut BTreeMap::new())
        .await
        .unwrap_or_else(|e| panic!("{}: the clean measuring session failed: {e}", mode.name()));
    let total = proxy.last_total.load(std::sync::atomic::Ordering::SeqCst);
    let outline = proxy.last_outline.lock().expect("outline").clone();
    (total, outline)
}

/// Server ids reported new -> Message-IDs reported new, by the store's rows.
fn by_message_id(reports: &BTreeMap<String, usize>, by_server_id: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (sid, n) in reports {
        let mid = by_server_id.get(sid).cloned().unwrap_or_else(|| format!("(server id {sid} not in the store)"));
        *out.entry(mid).or_default() += n;
    }
    out
}

/// The checks after the faulted run, then a message arrives (mail arriving between runs must
/// be fetched too: a baseline must not skip it).
fn after_fault(mode: &Mode, user: &str, msgs: &mut Vec<Msg>, db_path: &Path, tally: &mut Tally, problems: &mut Vec<String>) {
    match store_view(db_path) {
        Ok(store) => check_after_fault(mode, msgs, &server_view(mode, user), &store, tally, problems),
        Err(e) => problems.push(format!("after the faulted run: {e}")),
    }
    // A new-only mailbox's "from now on" is the state of the mailbox the first time mailplug
    // listed it. A faulted first run that never got that far (cut at the greeting, the login or
    // the SELECT / STAT) has no baseline yet, so mail arriving before the clean run is older
    // than the first sync and must be left alone like the rest (docs/CONTRACT.md).
    let old = mode.new_only && !has_sync_state(db_path);
    let late = Msg { old, ..sweep_message(&mode.name(), "late") };
    rig().put(user, mode.folder(), &late.raw);
    msgs.push(late);
}

/// Whether the store holds a sync state (a baseline) for the sweep's mailbox.
fn has_sync_state(db_path: &Path) -> bool {
    rusqlite::Connection::open(db_path)
        .and_then(|c| {
            c.query_row("SELECT COUNT(*) FROM sync_state WHERE tenant = 'sweep' AND mailbox = 'inbox'", [], |r| r.get::<_, i64>(0))
        })
        .map(|n| n > 0)
        .unwrap_or(false)
}

/// The checks after the clean run (`clean`: its error, if it failed).
#[allow(clippy::too_many_arguments)]
fn after_clean(
    mode: &Mode,
    user: &str,
    msgs: &[Msg],
    db_path: &Path,
    clean: Result<(), String>,
    reports: &BTreeMap<String, usize>,
    tally: &mut Tally,
    problems: &mut Vec<String>,
) {
    if let Err(e) = clean {
        tally.clean_run_failures += 1;
        problems.push(format!("the clean run failed: {e}"));
    }
    match store_view(db_path) {
        Ok(store) => {
            let reported = by_message_id(reports, &store.by_server_id);
            check_final(mode, msgs, &server_view(mode, user), &store, &reported, tally, problems);
        }
        Err(e) => problems.push(format!("after the clean run: {e}")),
    }
}

fn result(mode: &Mode, what: &str, point: String, mut tally: Tally, problems: Vec<String>) -> CaseResult {
    let failure = (!problems.is_empty()).then(|| case_line(mode, what, &point, &problems));
    if failure.is_some() {
        tally.failed_cases += 1;
    }
    CaseResult { tally, point, failure }
}

/// Cuts the connection of a library fetch at `offset`, then runs cleanly and checks.
pub async fn cut_case(plugin: &Plugin, mode: &Mode, proxy: &FaultProxy, offset: usize, clean: &(usize, Outline), dir: &Path) -> CaseResult {
    let total = clean.0;
    let (user, pass) = test_box(mode.boxn);
    let mut msgs = fill(mode, &user);
    let cfg = load(&write_config(dir, mode, proxy.port, &user, &pass));
    let mut reports = BTreeMap::new();
    proxy.set_plan(Some((offset, Fault::Cut)));
    let first = library_fetch(plugin, &cfg, &mut reports).await;
    let mut tally = Tally::default();
    let point = match proxy.fired() {
        Some(f) => {
            tally.cuts += 1;
            format!("{offset}/{total} ({})", name_partial(&f.phase, offset, &clean.1))
        }
        None => {
            tally.not_reached += 1;
            format!("{offset}/{total} (not reached; the run ended: {})", if first.is_ok() { "ok" } else { "error" })
        }
    };
    proxy.set_plan(None);
    let mut problems = Vec::new();
    after_fault(mode, &user, &mut msgs, &cfg.database, &mut tally, &mut problems);
    let clean = library_fetch(plugin, &cfg, &mut reports).await.map_err(|e| e.to_string());
    after_clean(mode, &user, &msgs, &cfg.database, clean, &reports, &mut tally, &mut problems);
    result(mode, "cut", point, tally, problems)
}

/// Where a kill lands.
#[derive(Clone, Copy, Debug)]
pub enum KillAt {
    /// The proxy stalls both directions at this offset; once the host has processed what it
    /// got and is idle (no CPU time used for 20 ms), it is killed.
    Stall(usize),
    /// Killed as soon as the database's -wal file is seen changing (size or modification
    /// time) for the n-th time since the session started: writes of messages, commits, the
    /// sync state.
    Wal(usize),
}

/// Watches a file for changes of its size or modification time.
#[derive(Default)]
struct FileWatch {
    last: Option<(u64, std::time::SystemTime)>,
    changes: usize,
}

impl FileWatch {
    fn poll(&mut self, path: &Path) {
        let now = std::fs::metadata(path).ok().and_then(|m| Some((m.len(), m.modified().ok()?)));
        if now.is_some() && now != self.last {
            self.changes += 1;
            self.last = now;
        }
    }
    fn size(&self) -> u64 {
        self.last.map(|l| l.0).unwrap_or(0)
    }
}

/// Runs the CLI cleanly and counts the changes of its database's -wal file seen once its
/// session has started.
pub async fn count_wal_writes(bin: &Path, mode: &Mode, proxy: &FaultProxy, dir: &Path) -> usize {
    let (user, pass) = test_box(mode.boxn);
    fill(mode, &user);
    proxy.set_plan(None);
    let cfg_path = write_config(dir, mode, proxy.port, &user, &pass);
    let wal = dir.join("mailplug.sqlite3-wal");
    let mut child = spawn_cli(bin, &cfg_path);
    let mut watch = FileWatch::default();
    tokio::task::block_in_place(|| {
        while child.try_wait().ok().flatten().is_none() {
            if proxy.last_total.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                watch.poll(&wal);
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    });
    let (status, _, err) = output_of(child);
    assert!(status.success(), "{}: the clean CLI run failed: {}", mode.name(), String::from_utf8_lossy(&err));
    watch.changes
}

/// A `mailplug fetch --json` run: its process, stdout lines parsed later.
fn spawn_cli(bin: &Path, cfg: &Path) -> std::process::Child {
    Command::new(bin)
        .args(["fetch", "--config"])
        .arg(cfg)
        .arg("--json")
        .env("MAILPLUG_WASM", crate::wasm_path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// Counts `"duplicate": false` lines per server id.
fn count_reports(stdout: &[u8], reports: &mut BTreeMap<String, usize>) {
    for line in String::from_utf8_lossy(stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v.get("duplicate").and_then(|d| d.as_bool()) == Some(false) {
            if let Some(id) = v.get("id").and_then(|i| i.as_str()) {
                *reports.entry(id.to_string()).or_default() += 1;
            }
        }
    }
}

fn output_of(mut child: std::process::Child) -> (std::process::ExitStatus, Vec<u8>, Vec<u8>) {
    use std::io::Read;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_end(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut err);
    }
    (child.wait().expect("wait"), out, err)
}

/// What happened to the faulted CLI run.
enum Killed {
    /// Killed at this point.
    At(String),
    /// It ended by itself first.
    Exited(std::process::ExitStatus),
}

/// Watches the CLI process and kills it (SIGKILL) at the kill point. Blocking.
fn watch_and_kill(child: &mut std::process::Child, at: KillAt, proxy: &FaultProxy, wal: &Path, outline: &Outline) -> Killed {
    let fired = proxy.fired_handle();
    let start = Instant::now();
    let mut watch = FileWatch::default();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Killed::Exited(status);
        }
        let kill_now = match at {
            KillAt::Stall(_) => fired.lock().expect("fired").is_some(),
            KillAt::Wal(n) => {
                if proxy.last_total.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                    watch.poll(wal);
                }
                watch.changes >= n
            }
        };
        if kill_now {
            let label = match at {
                KillAt::Stall(offset) => {
                    // Let the host finish what it can do with the bytes it got (store, commit,
                    // answer), so the kill lands at a state decided by the offset, not by timing.
                    let settled = settle(child.id());
                    let phase = fired.lock().expect("fired").clone().map(|f| name_partial(&f.phase, offset, outline)).unwrap_or_default();
                    format!("stall at {offset} ({phase}){}", if settled { "" } else { ", host still busy after 5 s" })
                }
                KillAt::Wal(n) => {
                    let (offset, phase) = proxy.current_phase();
                    format!("WAL change #{n} (-wal {} bytes; session at {offset}, {phase})", watch.size())
                }
            };
            let _ = child.kill();
            let _ = child.wait();
            return Killed::At(label);
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            return Killed::At("timeout: the kill point was not reached in 60 s".into());
        }
        std::thread::sleep(Duration::from_micros(match at {
            KillAt::Wal(_) => 100,
            KillAt::Stall(_) => 1000,
        }));
    }
}

/// Waits until the process used no CPU for 20 ms (at most 5 s). True when it did settle.
fn settle(pid: u32) -> bool {
    let start = Instant::now();
    let mut last = cpu_ns(pid);
    let mut quiet = 0;
    while start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
        let now = cpu_ns(pid);
        if now == last {
            quiet += 1;
            if quiet >= 4 {
                return true;
            }
        } else {
            quiet = 0;
            last = now;
        }
    }
    false
}

/// Kills a `mailplug fetch` CLI process at `at`, then runs the CLI cleanly and checks.
pub async fn kill_case(bin: &Path, mode: &Mode, proxy: &FaultProxy, at: KillAt, clean: &(usize, Outline), dir: &Path) -> CaseResult {
    let total = clean.0;
    let (user, pass) = test_box(mode.boxn);
    let mut msgs = fill(mode, &user);
    let cfg_path = write_config(dir, mode, proxy.port, &user, &pass);
    let db_path: PathBuf = dir.join("mailplug.sqlite3");
    let wal = dir.join("mailplug.sqlite3-wal");
    proxy.set_plan(match at {
        KillAt::Stall(offset) => Some((offset, Fault::Stall)),
        KillAt::Wal(_) => None,
    });
    let mut child = spawn_cli(bin, &cfg_path);
    let killed = tokio::task::block_in_place(|| watch_and_kill(&mut child, at, proxy, &wal, &clean.1));
    let (_, out, _) = output_of(child);
    let mut reports = BTreeMap::new();
    count_reports(&out, &mut reports);
    let mut tally = Tally::default();
    let point = match killed {
        Killed::At(label) => {
            tally.kills += 1;
            format!("{label} of {total}")
        }
        Killed::Exited(status) => {
            tally.not_reached += 1;
            format!("{at:?} not reached, the run ended first ({status})")
        }
    };
    proxy.set_plan(None);
    let mut problems = Vec::new();
    after_fault(mode, &user, &mut msgs, &db_path, &mut tally, &mut problems);
    let child = spawn_cli(bin, &cfg_path);
    let (status, out, err) = tokio::task::block_in_place(|| output_of(child));
    count_reports(&out, &mut reports);
    let clean = if status.success() {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&err).trim().replace('\n', " | ")))
    };
    after_clean(mode, &user, &msgs, &db_path, clean, &reports, &mut tally, &mut problems);
    result(mode, "kill", point, tally, problems)
}
