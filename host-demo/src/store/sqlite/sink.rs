//! Storing mailboxes' deliveries: one writer thread per database in this process, with its own
//! connection, one transaction per batch committed before `stored`, deduplication that never
//! drops a message it did not store.
//!
//! Threading: every sink of a database in this process sends its work to the same writer, in
//! order, so two sinks (two mailboxes of one tenant, served on one thread) never hold SQLite's
//! write lock against each other: their deliveries go into one open transaction, and any sink's
//! commit commits it (a sink's messages may so be committed before its own commit, never after
//! it). The database's other writes in this process (sync state, outbox, events, tokens) take a
//! *turn* (`turn`): the writer commits what is open and waits until that write is done. So no
//! write of this process waits for SQLite's lock held by a transaction that only a blocked
//! thread could end (the stall `mailplug serve` had: docs/SERVE-PLAN.md); what a caller waits
//! for is the writer's own queued work.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::segments::{self, SegmentWriter};
use super::{connect, content_hash, db_err, Database};
use crate::driver::MessageSink;
use crate::engine::{Classification, FetchedMessage, SkippedMessage};
use crate::error::HostError;

/// What a sink did in one run.
#[derive(Debug, Default, Clone, Copy)]
pub struct SinkStats {
    pub stored: u32,
    pub duplicates: u32,
    pub skipped: u32,
    pub bytes: u64,
}

/// Stores one mailbox's deliveries; see `Database::sink`.
pub struct DbSink<'a> {
    db: &'a Database,
    tenant: String,
    mailbox: String,
    /// The database's writer and this sink's number there, from the first use.
    writer: Option<(Arc<Writer>, u64)>,
    /// The server the deliveries come from (`store::binding`), set by `MessageSink::source`.
    source: String,
    /// After each `commit`: what became of each delivery since the previous commit.
    pub results: Vec<Delivered>,
    pub stats: SinkStats,
}

/// What became of one delivery.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The server id it was delivered with.
    pub id: String,
    /// The row that holds it (this delivery's, or the earlier one it duplicates).
    pub row: i64,
    /// Stored now (false: it was stored before).
    pub new: bool,
    /// The row was already reported as new by an earlier `fetch`.
    pub reported: bool,
    /// Stored although another stored message has its Message-ID (another content).
    pub collision: bool,
}

/// Work for the writer thread; the number says which sink it is for.
enum Job {
    /// A sink starts: its tenant, mailbox and source (`MessageSink::source`).
    Open(u64, SinkState),
    /// A message and the bytes it holds (counted in the `Backlog`).
    Deliver(u64, FetchedMessage, usize),
    Skipped(u64, SkippedMessage),
    /// Commit and answer with what each delivery of the sink since its last commit did.
    Commit(u64, SyncSender<Result<Vec<Delivered>, HostError>>),
    /// The sink is dropped: its deliveries are committed, then the answer.
    Close(u64, SyncSender<()>),
    /// Another write of this process on the database (`turn`): commit what is open, answer,
    /// then wait until the second channel closes.
    Turn(SyncSender<()>, Receiver<()>),
}

/// A database's writer in this process, shared by its sinks; the thread ends (committing what
/// is open) when the last sink is dropped.
pub(super) struct Writer {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    backlog: Arc<Backlog>,
    next_sink: AtomicU64,
}

impl Writer {
    fn send(&self, job: Job) -> Result<(), HostError> {
        self.jobs.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())
    }

    fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn stopped() -> HostError {
    HostError::Storage("the database writer stopped".into())
}

/// The running writers, by database path (canonical when the file exists).
static WRITERS: Mutex<Vec<(PathBuf, Weak<Writer>)>> = Mutex::new(Vec::new());

fn key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The database's running writer in this process, if any.
fn running(path: &Path) -> Option<Arc<Writer>> {
    let k = key(path);
    let writers = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
    writers.iter().filter(|(p, _)| *p == k).find_map(|(_, w)| w.upgrade())
}

/// The database's writer, started if none runs.
fn writer_for(path: &Path) -> Result<Arc<Writer>, HostError> {
    let k = key(path);
    let mut writers = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
    writers.retain(|(_, w)| w.strong_count() > 0);
    if let Some(w) = writers.iter().filter(|(p, _)| *p == k).find_map(|(_, w)| w.upgrade()) {
        return Ok(w);
    }
    let state = WriterState {
        conn: connect(path)?,
        in_tx: false,
        written: 0,
        wal: None,
        segments: SegmentWriter::new(path),
        since_checkpoint: 0,
        sinks: HashMap::new(),
    };
    let (jobs, rx) = sync_channel(WRITER_QUEUE);
    let backlog = Arc::new(Backlog::default());
    let b2 = backlog.clone();
    let thread = std::thread::Builder::new()
        .name("mailplug-db-writer".into())
        .spawn(move || state.run(rx, b2))
        .map_err(|e| HostError::Storage(format!("cannot start the database writer: {e}")))?;
    let w = Arc::new(Writer { jobs: Some(jobs), thread: Some(thread), backlog, next_sink: AtomicU64::new(0) });
    writers.push((k, Arc::downgrade(&w)));
    Ok(w)
}

/// While held, this process's writer of the database (if one runs) has committed what was open
/// and waits: a write on another connection of this process then never waits for its lock.
pub(super) struct Turn {
    _resume: Option<(SyncSender<()>, Arc<Writer>)>,
}

/// Takes a turn from the database's writer (see `Turn`); waits only for the writer's queued
/// work and its commit. `None` when no writer runs: nothing of this process holds the lock.
pub(super) fn turn(path: &Path) -> Result<Turn, HostError> {
    let Some(w) = running(path) else { return Ok(Turn { _resume: None }) };
    let (ack, acked) = sync_channel(1);
    let (resume, wait) = sync_channel(1);
    // A writer that stopped (it failed) holds no lock either.
    if w.send(Job::Turn(ack, wait)).is_err() || acked.recv().is_err() {
        return Ok(Turn { _resume: None });
    }
    Ok(Turn { _resume: Some((resume, w)) })
}

/// At most this many jobs, holding at most `WRITER_BACKLOG_BYTES` of messages (or a single
/// larger message), wait for the writer: host memory stays bounded whatever the mailbox
/// holds, while bursts of small messages (one read can complete dozens) do not stall the
/// session on the writer's every insert.
const WRITER_QUEUE: usize = 64;
const WRITER_BACKLOG_BYTES: usize = 8 << 20;

/// After a commit, once this much was inserted into SQLite since the last checkpoint, the
/// writer copies the WAL into the database (SQLite's own threshold, 1000 pages of 16 KB), after
/// answering the commit, so the session does not wait for it.
const CHECKPOINT_EVERY: usize = 16 << 20;

/// How much is inserted between two `WriterState::start_writeback`s.
const WRITEBACK_EVERY: usize = 1 << 20;

/// Bytes of messages handed to the writer and not yet stored.
#[derive(Default)]
struct Backlog {
    bytes: Mutex<usize>,
    drained: Condvar,
}

impl Backlog {
    /// Waits until `size` more bytes fit (a message always fits in an empty backlog), then
    /// counts them; fails when the writer stopped.
    fn admit(&self, size: usize, writer: &Writer) -> Result<(), HostError> {
        let mut queued = self.bytes.lock().map_err(|_| stopped())?;
        while *queued > 0 && *queued + size > WRITER_BACKLOG_BYTES {
            if writer.finished() {
                return Err(stopped());
            }
            queued = self.drained.wait_timeout(queued, Duration::from_millis(100)).map_err(|_| stopped())?.0;
        }
        *queued += size;
        Ok(())
    }

    fn release(&self, size: usize) {
        if let Ok(mut queued) = self.bytes.lock() {
            *queued = queued.saturating_sub(size);
        }
        self.drained.notify_one();
    }
}

/// The classification as stored and printed: normal, auto-reply, bulk, bounce.
pub fn classification_name(c: Classification) -> &'static str {
    match c {
        Classification::Normal => "normal",
        Classification::AutoReply => "auto-reply",
        Classification::Bulk => "bulk",
        Classification::Bounce => "bounce",
    }
}

/// One sink, as the writer knows it.
struct SinkState {
    tenant: String,
    mailbox: String,
    source: String,
    /// What each delivery since the sink's last commit did (committed or still in the open
    /// transaction).
    results: Vec<Delivered>,
    failed: Option<HostError>,
}

/// The writer thread: its own connection, the open transaction and the sinks writing into it.
struct WriterState {
    conn: Connection,
    in_tx: bool,
    /// Bytes inserted into SQLite since the last `start_writeback`.
    written: usize,
    /// The WAL file, opened for `start_writeback`.
    wal: Option<std::fs::File>,
    /// Where the raw bytes go (see `segments`).
    segments: SegmentWriter,
    /// Bytes inserted into SQLite since the last checkpoint.
    since_checkpoint: usize,
    sinks: HashMap<u64, SinkState>,
}

impl WriterState {
    fn begin(&mut self) -> Result<(), HostError> {
        if !self.in_tx {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err("starting a transaction"))?;
            self.in_tx = true;
        }
        Ok(())
    }

    /// Stores a message of `sink` unless the same one is stored already (see the module doc).
    fn insert(&mut self, sink: u64, m: &FetchedMessage) -> Result<Delivered, HostError> {
        self.begin()?;
        let now = crate::driver::now_ms() as i64;
        let c = &self.conn;
        let s = self.sinks.get(&sink).ok_or_else(stopped)?;
        let hash = content_hash(&m.raw);
        let message_id = match &m.parsed {
            Ok(p) => p.message_id.clone(),
            // Unparseable: stored raw with the reason, under a Message-ID made from its content.
            Err(_) => format!("unparsed-{}@mailplug.invalid", content_key(&m.raw)),
        };
        let done = |row: i64, new: bool, reported: bool, collision: bool| Delivered {
            id: m.id.clone(),
            row,
            new,
            reported,
            collision,
        };
        let same_server = c
            .prepare_cached("SELECT id, reported, mid_collision FROM messages WHERE tenant = ?1 AND mailbox = ?2 AND source = ?3 AND server_id = ?4")
            .and_then(|mut st| {
                st.query_row(params![s.tenant, s.mailbox, s.source, m.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()
            })
            .map_err(db_err("looking up a message"))?;
        if let Some((row, reported, collision)) = same_server {
            return Ok(done(row, false, reported, collision));
        }
        // One lookup by Message-ID: the earliest row with the same bytes if there is one, else
        // any row (then this message collides with it).
        let same_mid: Option<(i64, bool, bool, bool)> = c
            .prepare_cached(
                "SELECT id, reported, mid_collision, content_hash IS ?4 AS same FROM messages
                 WHERE tenant = ?1 AND mailbox = ?2 AND message_id = ?3 ORDER BY same DESC, id LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row(params![s.tenant, s.mailbox, message_id, hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()
            })
            .map_err(db_err("looking up a message"))?;
        if let Some((row, reported, collision, true)) = same_mid {
            return Ok(done(row, false, reported, collision));
        }
        let collision = same_mid.is_some();
        // The bytes first (synced at commit, before the row that refers to them), the row after.
        let (segment, offset) = self.segments.append(&m.raw)?;
        match &m.parsed {
            Ok(p) => {
                let from = p.from.first().map(|a| match &a.name {
                    Some(n) => format!("{n} <{}>", a.address),
                    None => a.address.clone(),
                });
                c.prepare_cached(
                    "INSERT INTO messages (tenant, mailbox, source, server_id, folder, message_id, message_id_synthetic,
                        content_hash, mid_collision, subject, from_addr, date_ms, classification, parse_error, text_body,
                        html_body, size, raw, stored_at_ms, raw_segment, raw_offset)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, NULL, ?14, ?15, ?16, X'', ?17, ?18, ?19)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        s.tenant, s.mailbox, s.source, m.id, m.folder, message_id, p.message_id_synthetic, hash,
                        collision, p.subject, from, p.date_ms, classification_name(p.classification), p.text_body,
                        p.html_body, m.raw.len() as i64, now, segment, offset as i64
                    ])
                })
                .map_err(db_err("storing a message"))?;
            }
            Err(why) => {
                c.execute(
                    "INSERT INTO messages (tenant, mailbox, source, server_id, folder, message_id, message_id_synthetic,
                        content_hash, mid_collision, classification, parse_error, size, raw, stored_at_ms, raw_segment, raw_offset)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, 'normal', ?9, ?10, X'', ?11, ?12, ?13)",
                    params![
                        s.tenant, s.mailbox, s.source, m.id, m.folder, message_id, hash, collision, why, m.raw.len() as i64,
                        now, segment, offset as i64
                    ],
                )
                .map_err(db_err("storing a message"))?;
            }
        }
        let rowid = c.last_insert_rowid();
        if let Ok(p) = &m.parsed {
            let mut st = c
                .prepare_cached(
                    "INSERT INTO attachments (message, name, media_type, size, content_id, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(db_err("storing an attachment"))?;
            // The decoded content is not written: it is recovered by decoding the part from
            // `raw`, and writing it again would nearly double what each commit must sync.
            for a in &p.attachments {
                st.execute(params![rowid, a.name, a.media_type, a.size as i64, a.content_id, &[] as &[u8]])
                    .map_err(db_err("storing an attachment"))?;
            }
        }
        // Its `message.stored` event, in the same transaction (issue 13: store::events).
        let (subject, from) = m.parsed.as_ref().map_or((None, None), |p| (p.subject.as_deref(), p.from.first().map(|a| a.address.as_str())));
        let event = serde_json::json!({"message": format!("db:{rowid}"), "mailbox": s.mailbox, "server_id": m.id, "folder": m.folder,
            "message_id": message_id, "subject": subject, "from": from, "size": m.raw.len(), "mid_collision": collision});
        super::events::append(c, &s.tenant, crate::store::events::MESSAGE_STORED, &event, now)?;
        Ok(done(rowid, true, false, collision))
    }

    /// Asks the kernel to start writing the WAL to disk now, without waiting: SQLite fills the
    /// WAL as the transaction grows, and the fsync at `COMMIT` then finds most of it already
    /// written instead of flushing the whole batch while the session waits. Durability is
    /// unchanged: `COMMIT` still syncs.
    fn start_writeback(&mut self) {
        if self.wal.is_none() {
            self.wal = self.conn.path().and_then(|p| std::fs::File::open(format!("{p}-wal")).ok());
        }
        if let Some(f) = &self.wal {
            segments::start_writeback(f);
        }
    }

    fn skipped(&mut self, sink: u64, s: &SkippedMessage) -> Result<(), HostError> {
        self.begin()?;
        let k = self.sinks.get(&sink).ok_or_else(stopped)?;
        self.conn
            .execute(
                "INSERT OR IGNORE INTO skipped (tenant, mailbox, server_id, folder, size, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![k.tenant, k.mailbox, s.id, s.folder, s.size as i64, s.reason],
            )
            .map_err(db_err("recording a skipped message"))?;
        Ok(())
    }

    /// Commits the open transaction (every sink's deliveries in it). When that fails it is
    /// rolled back, and every sink with deliveries in it is told at its next commit.
    fn commit_open(&mut self) -> Result<(), HostError> {
        if !self.in_tx {
            return Ok(());
        }
        // The messages' bytes are on disk before the rows that refer to them are committed.
        let done = self.segments.sync().and_then(|()| self.conn.execute_batch("COMMIT").map_err(db_err("committing")));
        self.in_tx = false;
        // SQLite may replace the WAL file between transactions: opened afresh next time.
        self.wal = None;
        self.written = 0;
        if let Err(e) = &done {
            let _ = self.conn.execute_batch("ROLLBACK");
            for s in self.sinks.values_mut() {
                if !s.results.is_empty() {
                    s.results.clear();
                    s.failed.get_or_insert_with(|| HostError::Storage(e.to_string()));
                }
            }
        }
        done
    }

    fn commit(&mut self, sink: u64) -> Result<Vec<Delivered>, HostError> {
        if let Some(e) = self.sinks.get_mut(&sink).and_then(|s| s.failed.take()) {
            return Err(e);
        }
        if let Err(e) = self.commit_open() {
            self.sinks.get_mut(&sink).map(|s| s.failed.take());
            return Err(e);
        }
        Ok(self.sinks.get_mut(&sink).map(|s| std::mem::take(&mut s.results)).unwrap_or_default())
    }

    /// After a commit: copies the WAL into the database once enough was inserted.
    fn maybe_checkpoint(&mut self) {
        if self.since_checkpoint >= CHECKPOINT_EVERY {
            self.since_checkpoint = 0;
            // Passive: waits for no reader or writer. A failed checkpoint loses nothing (the
            // WAL keeps the commits); the next one or the close retries.
            let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
        }
    }

    fn run(mut self, jobs: Receiver<Job>, backlog: Arc<Backlog>) {
        for job in jobs {
            if let Job::Deliver(_, _, size) = &job {
                backlog.release(*size);
            }
            let failed = |st: &Self, k: &u64| st.sinks.get(k).is_none_or(|s| s.failed.is_some());
            match job {
                Job::Open(k, state) => {
                    self.sinks.insert(k, state);
                }
                // After a failure, the sink's work is dropped until its next commit reports it.
                Job::Deliver(k, ..) | Job::Skipped(k, _) if failed(&self, &k) => {}
                Job::Deliver(k, m, _) => match self.insert(k, &m) {
                    Ok(d) => {
                        if let Some(s) = self.sinks.get_mut(&k) {
                            s.results.push(d);
                        }
                        if let Ok(p) = &m.parsed {
                            let n = p.text_body.as_ref().map_or(0, |b| b.len()) + p.html_body.as_ref().map_or(0, |b| b.len());
                            self.written += n;
                            self.since_checkpoint += n;
                        }
                        if self.written >= WRITEBACK_EVERY {
                            self.written = 0;
                            self.start_writeback();
                        }
                    }
                    Err(e) => {
                        if let Some(s) = self.sinks.get_mut(&k) {
                            s.failed = Some(e);
                        }
                    }
                },
                Job::Skipped(k, s) => {
                    if let Err(e) = self.skipped(k, &s) {
                        if let Some(s) = self.sinks.get_mut(&k) {
                            s.failed = Some(e);
                        }
                    }
                }
                Job::Commit(k, answer) => {
                    let committed = self.commit(k);
                    let ok = committed.is_ok();
                    let _ = answer.send(committed);
                    if ok {
                        self.maybe_checkpoint();
                    }
                }
                Job::Close(k, answer) => {
                    // The sink was dropped with a batch open. The guest only delivers complete
                    // messages, so keeping them is safe: the server still has them and the
                    // next run deduplicates.
                    if self.sinks.get(&k).is_some_and(|s| !s.results.is_empty()) {
                        let _ = self.commit_open();
                    }
                    self.sinks.remove(&k);
                    let _ = answer.send(());
                }
                Job::Turn(answer, wait) => {
                    let _ = self.commit_open();
                    let _ = answer.send(());
                    // Until the turn's write is done (its sender dropped).
                    let _ = wait.recv();
                }
            }
        }
        // The last sink is gone: what is open is kept (see `Job::Close`).
        let _ = self.commit_open();
    }
}

/// A short, stable key for bytes (FNV-1a 64 twice with different seeds): the Message-ID given to
/// messages that could not be parsed (kept as the earlier version made it).
fn content_key(raw: &[u8]) -> String {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x8422_2325_cbf2_9ce4;
    for &x in raw {
        a = (a ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        b = (b ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3 ^ 0x1000);
    }
    format!("{a:016x}{b:016x}{:x}", raw.len())
}

impl<'a> DbSink<'a> {
    pub(super) fn new(db: &'a Database, tenant: &str, mailbox: &str) -> DbSink<'a> {
        DbSink {
            db,
            tenant: tenant.to_string(),
            mailbox: mailbox.to_string(),
            writer: None,
            source: String::new(),
            results: Vec::new(),
            stats: SinkStats::default(),
        }
    }
}

impl DbSink<'_> {
    /// The database's writer, joined on first use.
    fn writer(&mut self) -> Result<(&Writer, u64), HostError> {
        if self.writer.is_none() {
            let w = writer_for(&self.db.path)?;
            let k = w.next_sink.fetch_add(1, Ordering::Relaxed);
            let state = SinkState {
                tenant: self.tenant.clone(),
                mailbox: self.mailbox.clone(),
                source: self.source.clone(),
                results: Vec::new(),
                failed: None,
            };
            w.send(Job::Open(k, state))?;
            self.writer = Some((w, k));
        }
        let (w, k) = self.writer.as_ref().ok_or_else(stopped)?;
        Ok((w, *k))
    }
}

impl MessageSink for DbSink<'_> {
    fn deliver(&mut self, mut m: FetchedMessage) -> Result<(), HostError> {
        self.stats.bytes += m.raw.len() as u64;
        let mut size = m.raw.len();
        if let Ok(p) = &mut m.parsed {
            // Not stored (see `WriterState::insert`): freed here rather than queued.
            for a in &mut p.attachments {
                a.bytes = Vec::new();
            }
            size += p.text_body.as_ref().map_or(0, |b| b.len()) + p.html_body.as_ref().map_or(0, |b| b.len());
        }
        let (writer, k) = self.writer()?;
        writer.backlog.admit(size, writer)?;
        writer.send(Job::Deliver(k, m, size))
    }

    fn skipped(&mut self, s: SkippedMessage) -> Result<(), HostError> {
        self.stats.skipped += 1;
        let (writer, k) = self.writer()?;
        writer.send(Job::Skipped(k, s))
    }

    fn source(&mut self, server: &str) {
        // The writer takes it when it starts: one sink serves one server.
        self.source = server.to_string();
    }

    fn commit(&mut self) -> Result<(), HostError> {
        self.results.clear();
        if self.writer.is_none() {
            return Ok(());
        }
        let (answer, result) = sync_channel(1);
        let (writer, k) = self.writer()?;
        writer.send(Job::Commit(k, answer))?;
        self.results = result.recv().map_err(|_| stopped())??;
        for d in &self.results {
            if d.new {
                self.stats.stored += 1;
            } else {
                self.stats.duplicates += 1;
            }
        }
        Ok(())
    }
}

impl Drop for DbSink<'_> {
    /// Returns once the sink's deliveries are committed (and, for the database's last sink,
    /// the writer has ended).
    fn drop(&mut self) {
        if let Some((w, k)) = self.writer.take() {
            let (answer, done) = sync_channel(1);
            if w.send(Job::Close(k, answer)).is_ok() {
                let _ = done.recv();
            }
        }
    }
}
