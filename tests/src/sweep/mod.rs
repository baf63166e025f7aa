//! Helper F (fault sweep), shared parts: a proxy that cuts or stalls a connection at a byte
//! offset and names the protocol phase it was in, the sweep's mailboxes and messages, and the
//! checks run after each faulted run and after the clean run that follows it.
//!
//! Used by `tests/e2e/faults.rs` (a subset) and the `mailplug-sweep` binary (the full sweep,
//! `tests/sweep/`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::rig;

mod proxy;
mod run;

pub use proxy::{command_label, fault_proxy, phase_at, Fault, FaultPoint, FaultProxy, Outline};
pub use run::{count_wal_writes, cut_case, kill_case, measure, CaseResult, KillAt};

// ---------------------------------------------------------------------------------------------
// The sweep's mailboxes and runs.

/// What happens to fetched mail on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    Keep,
    Delete,
    Move,
}

/// The folder `After::Move` moves to.
pub const MOVE_TARGET: &str = "Archive";

/// The folder IMAP modes fetch.
pub const SWEEP_FOLDER: &str = "Sweep";

/// One protocol and after-fetch action, on its own rig mailbox.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    pub protocol: &'static str,
    pub after: After,
    pub boxn: u32,
    /// `first_sync = "new-only"`: the mail already there is older than the first sync and
    /// must be left alone; only mail arriving later is fetched (the faulted run is then the
    /// first sync, which takes the baseline).
    pub new_only: bool,
}

impl Mode {
    pub fn name(&self) -> String {
        let after = match self.after {
            After::Keep => "keep",
            After::Delete => "delete",
            After::Move => "move",
        };
        format!("{}-{after}{}", self.protocol, if self.new_only { "-new-only" } else { "" })
    }
    /// The folder fetched: POP3 has only INBOX; IMAP fetches a folder made afresh for each case,
    /// so UIDs (and so the length of every command) are the same in every case and a fault
    /// planned at a command boundary lands there.
    pub fn folder(&self) -> &'static str {
        if self.protocol == "imap" {
            SWEEP_FOLDER
        } else {
            "INBOX"
        }
    }
    /// The rig's plaintext listener for this protocol (the proxy must read the commands to name
    /// the phase of each fault; TLS would hide them).
    pub fn upstream(&self) -> (String, u16) {
        let r = rig();
        match self.protocol {
            "imap" => (r.get("RIG_IMAP_NOTLS_HOST").to_string(), r.port("RIG_IMAP_NOTLS_PORT")),
            _ => (r.get("RIG_POP3_NOTLS_HOST").to_string(), r.port("RIG_POP3_NOTLS_PORT")),
        }
    }
}

/// The modes of the sweep: IMAP keep, delete, move; POP3 keep, delete (first sync "all"), and
/// IMAP and POP3 delete with first sync "new-only"; rig boxes 35-39, or the five boxes in
/// `MAILPLUG_SWEEP_BOXES` (e.g. "17,18,19,20,30", so the full sweep can run beside the test
/// suite, whose e2e subset uses 35-39).
pub fn modes() -> Vec<Mode> {
    let boxes: Vec<u32> = std::env::var("MAILPLUG_SWEEP_BOXES")
        .ok()
        .map(|v| v.split(',').filter_map(|b| b.trim().parse().ok()).collect())
        .filter(|v: &Vec<u32>| v.len() == 5)
        .unwrap_or_else(|| vec![35, 36, 37, 38, 39]);
    let m = |protocol, after, i: usize, new_only| Mode { protocol, after, boxn: boxes[i], new_only };
    vec![
        m("imap", After::Keep, 0, false),
        m("imap", After::Delete, 1, false),
        m("imap", After::Move, 2, false),
        m("pop3", After::Keep, 3, false),
        m("pop3", After::Delete, 4, false),
        m("imap", After::Delete, 1, true),
        m("pop3", After::Delete, 4, true),
    ]
}

/// A message of the sweep.
#[derive(Clone)]
pub struct Msg {
    pub id: String,
    pub raw: Vec<u8>,
    /// There before a new-only first sync: must be neither fetched nor touched.
    pub old: bool,
}

/// Bulk lines per message: sizes from about 0.6 to 6 KB, some 20 KB per mailbox, so a whole
/// session is a few tens of KB and cuts land in every phase, message data included.
const BULK: &[usize] = &[4, 30, 90, 12, 60, 20];

pub fn sweep_message(mode: &str, tag: &str) -> Msg {
    let id = format!("sweep-{mode}-{tag}@test");
    let mut raw = crate::sample_message(&id, &format!("fault sweep {tag}"));
    let lines = tag.parse::<usize>().ok().and_then(|i| BULK.get(i % BULK.len()).copied()).unwrap_or(8);
    for k in 0..lines {
        raw.extend(format!("{tag} line {k:03} of body text so that cuts land inside message data\r\n").bytes());
    }
    Msg { id, raw, old: false }
}

/// Empties the mailbox (every folder but INBOX deleted) and fills the mode's folder with the
/// sweep's messages.
pub fn fill(mode: &Mode, user: &str) -> Vec<Msg> {
    let r = rig();
    r.reset_mailbox(user);
    if mode.after == After::Move {
        r.doveadm(&["mailbox", "create", "-u", user, MOVE_TARGET]);
    }
    let msgs: Vec<Msg> =
        (0..BULK.len()).map(|i| Msg { old: mode.new_only, ..sweep_message(&mode.name(), &i.to_string()) }).collect();
    for m in &msgs {
        r.put(user, mode.folder(), &m.raw);
    }
    msgs
}

/// A case directory with the tenant configuration (database inside it, password in a file).
pub fn write_config(dir: &Path, mode: &Mode, proxy_port: u16, user: &str, pass: &str) -> PathBuf {
    let r = rig();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("case dir");
    std::fs::write(dir.join("in.pw"), pass).expect("pw");
    std::fs::write(dir.join("out.pw"), r.pass("AGENT")).expect("pw");
    let after = match mode.after {
        After::Keep => "after_fetch = \"keep\"\n".to_string(),
        After::Delete => "after_fetch = \"delete\"\n".to_string(),
        After::Move => format!("after_fetch = \"move\"\nmove_to = \"{MOVE_TARGET}\"\n"),
    };
    let folders = if mode.protocol == "imap" { format!("folders = [\"{SWEEP_FOLDER}\"]\n") } else { String::new() };
    let text = format!(
        "tenant = \"sweep\"\nlicensed = true\nextra_ca_file = \"{ca}\"\ndatabase = \"{db}\"\n\
         [limits]\nreply_timeout_secs = 5\nconnect_timeout_secs = 5\n\
         [[mailbox]]\nname = \"inbox\"\naddress = \"{user}\"\nprotocol = \"{proto}\"\nfirst_sync = \"{first}\"\n{folders}{after}\
         host = \"127.0.0.1\"\nport = {proxy_port}\ntls = false\ninsecure_plaintext = true\nusername = \"{user}\"\npassword_file = \"in.pw\"\n\
         [[queue]]\nname = \"q\"\nmailboxes = [\"inbox\"]\n[queue.smtp]\nhost = \"localhost\"\nport = {smtps}\ntls = true\n\
         username = \"{agent}\"\npassword_file = \"out.pw\"\n",
        ca = r.get("RIG_CA"),
        db = dir.join("mailplug.sqlite3").display(),
        proto = mode.protocol,
        first = if mode.new_only { "new-only" } else { "all" },
        smtps = r.port("RIG_SMTPS_PORT"),
        agent = r.user("AGENT"),
    );
    let path = dir.join("tenant.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Offsets spread over a session of `total` bytes: each client command's first byte (the
/// fault falls just before it, just inside it and halfway through the answer), the last bytes
/// of the session (acknowledgement, delete, logout), then evenly spaced points up to `count`.
pub fn pick_offsets(total: usize, outline: &Outline, count: usize) -> Vec<usize> {
    let mut marks = BTreeSet::new();
    for (i, (start, _)) in outline.iter().enumerate() {
        let next = outline.get(i + 1).map(|x| x.0).unwrap_or(total);
        marks.extend([*start, start + 1, (start + next) / 2]);
    }
    for back in [1, 10, 40, 120] {
        marks.insert(total.saturating_sub(back));
    }
    let mut marks: Vec<usize> = marks.into_iter().filter(|&n| n >= 1 && n < total).collect();
    if marks.len() > count {
        let len = marks.len();
        marks = (0..count).map(|k| marks[k * len / count]).collect();
        marks.dedup();
    }
    let mut set: BTreeSet<usize> = marks.into_iter().collect();
    let mut k = 0;
    while set.len() < count.min(total.saturating_sub(1)) {
        // Evenly spaced, shifted a little at each round so new points appear.
        let step = total / count.max(1);
        let n = 1 + (k % count) * step + (k / count) * (step / 3 + 1);
        if n < total {
            set.insert(n);
        }
        k += 1;
    }
    set.into_iter().collect()
}

/// One byte into the first command after the last download (the acknowledgement: UID STORE,
/// UID MOVE, DELE or the logout): messages are stored there, not yet acknowledged.
pub fn ack_offset(outline: &Outline) -> Option<usize> {
    let last_download = outline.iter().rposition(|(_, l)| l.starts_with("RETR") || l.starts_with("UID FETCH"))?;
    outline.get(last_download + 1).map(|(start, _)| start + 1)
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// What the sweep counts, over all cases.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub cuts: usize,
    pub kills: usize,
    /// Faults planned but never reached (the session ended before the offset).
    pub not_reached: usize,
    /// Expected messages checked after clean runs (the sweep's messages plus one that arrives
    /// between the faulted and the clean run, per case).
    pub messages: usize,
    pub stored_once: usize,
    pub duplicates: usize,
    /// Neither stored nor on the server any more.
    pub lost: usize,
    /// Still on the server, but not stored after the clean run.
    pub unfetched: usize,
    /// Gone from the fetched folder (deleted or moved) without being stored, after a faulted run.
    pub deleted_unstored: usize,
    /// Mail older than a new-only first sync that was fetched anyway.
    pub old_fetched: usize,
    /// Stored with other bytes than the server holds.
    pub wrong_content: usize,
    /// Stored but never reported as new, or reported as new more than once (CLI `--json`
    /// lines, or the library's commit results).
    pub unreported: usize,
    pub reported_twice: usize,
    /// After the clean run: delete/move not applied to stored mail, or the move target holding
    /// something else than each stored message once.
    pub server_mismatch: usize,
    pub clean_run_failures: usize,
    pub failed_cases: usize,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.cuts += o.cuts;
        self.kills += o.kills;
        self.not_reached += o.not_reached;
        self.messages += o.messages;
        self.stored_once += o.stored_once;
        self.duplicates += o.duplicates;
        self.lost += o.lost;
        self.unfetched += o.unfetched;
        self.deleted_unstored += o.deleted_unstored;
        self.wrong_content += o.wrong_content;
        self.old_fetched += o.old_fetched;
        self.unreported += o.unreported;
        self.reported_twice += o.reported_twice;
        self.server_mismatch += o.server_mismatch;
        self.clean_run_failures += o.clean_run_failures;
        self.failed_cases += o.failed_cases;
    }
    /// Losses, duplicates, mail deleted unstored, wrong content.
    pub fn mail_failures(&self) -> usize {
        self.duplicates + self.lost + self.unfetched + self.deleted_unstored + self.wrong_content
    }
    pub fn all_failures(&self) -> usize {
        self.mail_failures() + self.old_fetched + self.unreported + self.reported_twice + self.server_mismatch + self.clean_run_failures
    }
    pub fn summary(&self) -> String {
        format!(
            "cuts {} | kills {} | faults not reached {} | messages {} | stored exactly once {} | duplicates {} | lost {} | \
             unfetched {} | deleted/moved unstored {} | wrong content {} | older than a new-only first sync but fetched {} | stored but not reported new {} | reported new twice {} | \
             server state wrong {} | clean runs failed {} | failed cases {}",
            self.cuts,
            self.kills,
            self.not_reached,
            self.messages,
            self.stored_once,
            self.duplicates,
            self.lost,
            self.unfetched,
            self.deleted_unstored,
            self.wrong_content,
            self.old_fetched,
            self.unreported,
            self.reported_twice,
            self.server_mismatch,
            self.clean_run_failures,
            self.failed_cases
        )
    }
}

/// The server side: Message-IDs in the fetched folder ("inbox" below) and in the move target.
pub struct ServerView {
    pub inbox: Vec<String>,
    pub target: Vec<String>,
}

pub fn server_view(mode: &Mode, user: &str) -> ServerView {
    let r = rig();
    let ids = |folder| r.listing(user, folder).into_iter().map(|m| m.2).collect::<Vec<_>>();
    ServerView { inbox: ids(mode.folder()), target: if mode.after == After::Move { ids(MOVE_TARGET) } else { Vec::new() } }
}

/// The store side: Message-ID -> (count, raw bytes of each row); server id -> Message-ID.
pub struct StoreView {
    pub rows: BTreeMap<String, Vec<Vec<u8>>>,
    pub by_server_id: BTreeMap<String, String>,
}

pub fn store_view(db_path: &Path) -> Result<StoreView, String> {
    let db = mailplug_host::db::Database::open(db_path).map_err(|e| format!("opening the store: {e}"))?;
    let msgs = db.messages("sweep", "inbox").map_err(|e| format!("reading the store: {e}"))?;
    let mut rows: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut by_server_id = BTreeMap::new();
    for m in msgs {
        by_server_id.insert(m.server_id.clone(), m.message_id.clone());
        rows.entry(m.message_id).or_default().push(m.raw);
    }
    Ok(StoreView { rows, by_server_id })
}

fn same_content(a: &[u8], b: &[u8]) -> bool {
    let norm = |x: &[u8]| {
        let v: Vec<u8> = x.iter().copied().filter(|&c| c != b'\r').collect();
        let end = v.iter().rposition(|&c| c != b'\n').map(|p| p + 1).unwrap_or(0);
        v[..end].to_vec()
    };
    norm(a) == norm(b)
}

/// After the faulted run: nothing left the fetched folder unstored, nothing stored twice.
pub fn check_after_fault(mode: &Mode, msgs: &[Msg], server: &ServerView, store: &StoreView, t: &mut Tally, problems: &mut Vec<String>) {
    let inbox: BTreeSet<&str> = server.inbox.iter().map(String::as_str).collect();
    let target: BTreeSet<&str> = server.target.iter().map(String::as_str).collect();
    for m in msgs {
        if inbox.contains(m.id.as_str()) || store.rows.contains_key(&m.id) {
            continue;
        }
        t.deleted_unstored += 1;
        let where_ = if target.contains(m.id.as_str()) { "moved to the target" } else { "deleted from the server" };
        problems.push(format!("{} {where_} without being stored", m.id));
    }
    let _ = mode;
    for (id, rows) in &store.rows {
        if rows.len() > 1 {
            problems.push(format!("{id} stored {} times after the faulted run", rows.len()));
        }
    }
}

/// After the clean run: every message stored exactly once with its bytes, the server holding
/// what the after-fetch action leaves, and each stored message reported as new exactly once.
pub fn check_final(
    mode: &Mode,
    msgs: &[Msg],
    server: &ServerView,
    store: &StoreView,
    new_reports: &BTreeMap<String, usize>,
    t: &mut Tally,
    problems: &mut Vec<String>,
) {
    let count = |v: &[String], id: &str| v.iter().filter(|x| x.as_str() == id).count();
    for m in msgs.iter().filter(|m| m.old) {
        let (rows, left) = (store.rows.get(&m.id).map_or(0, Vec::len), count(&server.inbox, &m.id));
        if rows > 0 {
            t.old_fetched += 1;
            problems.push(format!("{} fetched although older than the new-only first sync", m.id));
        }
        if left != 1 {
            t.server_mismatch += 1;
            problems.push(format!("{} (older than the first sync) is in {} {left} times, expected untouched", m.id, mode.folder()));
        }
    }
    for m in msgs.iter().filter(|m| !m.old) {
        t.messages += 1;
        let rows = store.rows.get(&m.id).map(Vec::as_slice).unwrap_or(&[]);
        match rows.len() {
            0 if count(&server.inbox, &m.id) + count(&server.target, &m.id) > 0 => {
                t.unfetched += 1;
                problems.push(format!("{} not stored by the clean run although still on the server", m.id));
            }
            0 => {
                t.lost += 1;
                problems.push(format!("{} LOST: neither stored nor on the server", m.id));
            }
            1 => t.stored_once += 1,
            n => {
                t.duplicates += n - 1;
                problems.push(format!("{} stored {n} times", m.id));
            }
        }
        if rows.iter().any(|r| !same_content(r, &m.raw)) {
            t.wrong_content += 1;
            problems.push(format!("{} stored with other bytes than were sent", m.id));
        }
        if !rows.is_empty() {
            match new_reports.get(&m.id).copied().unwrap_or(0) {
                1 => {}
                0 => {
                    t.unreported += 1;
                    problems.push(format!("{} stored but never reported as new", m.id));
                }
                n => {
                    t.reported_twice += 1;
                    problems.push(format!("{} reported as new {n} times", m.id));
                }
            }
        }
        let (in_inbox, in_target) = (count(&server.inbox, &m.id), count(&server.target, &m.id));
        let expected = match mode.after {
            After::Keep => (1, 0),
            After::Delete => (0, 0),
            After::Move => (0, 1),
        };
        if (in_inbox, in_target) != expected {
            t.server_mismatch += 1;
            let target =
                if mode.after == After::Move { format!(", {in_target} in {MOVE_TARGET} (expected {})", expected.1) } else { String::new() };
            problems.push(format!(
                "{} on the server after the clean run: {in_inbox} in {} (expected {}){target}",
                m.id,
                mode.folder(),
                expected.0
            ));
        }
    }
    let known: BTreeSet<&str> = msgs.iter().map(|m| m.id.as_str()).collect();
    for id in store.rows.keys().filter(|id| !known.contains(id.as_str())) {
        t.wrong_content += 1;
        problems.push(format!("the store holds an unexpected message {id}"));
    }
}

/// The case's line for a report.
pub fn case_line(mode: &Mode, what: &str, point: &str, problems: &[String]) -> String {
    let mut s = format!("FAIL {} {what} at {point}:", mode.name());
    for p in problems {
        let _ = write!(s, "\n    - {p}");
    }
    s
}

/// The CPU time of the threads of a process, in ns (`/proc/PID/task/*/schedstat`), but for
/// the host's epoch ticker, which runs all the time.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let mut sum = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let task = entry.ok()?.path();
        if std::fs::read_to_string(task.join("comm")).is_ok_and(|c| c.trim() == "mailplug-epoch") {
            continue;
        }
        let p = task.join("schedstat");
        if let Ok(s) = std::fs::read_to_string(p) {
            sum += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Some(sum)
}

/// A process-unique sequence for case directories.
pub fn next_case() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}
