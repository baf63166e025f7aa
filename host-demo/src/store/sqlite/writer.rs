//! The writer of a database in this process: one thread with its own connection, shared by
//! every sink of the database (`sink`), and turns for the database's other writes.
//!
//! Every sink sends its work to the same writer, in order, so two sinks (two mailboxes of one
//! tenant, served on one thread) never hold SQLite's write lock against each other: their
//! deliveries go into one open transaction, and any sink's commit commits it (a sink's
//! messages may so be committed before its own commit, never after it; each sink's commit
//! reports exactly its own deliveries). The database's other writes in this process (sync
//! state, outbox, events, tokens, the schema on open) take a *turn* (`turn`,
//! `Database::writing`): the writer commits what is open and waits until that write is done.
//! So no write of this process waits for SQLite's lock held by a transaction that only a
//! blocked thread could end (the stall `mailplug serve` had: docs/SERVE-PLAN.md); what a caller
//! waits for is the writer's own queued work and its fsync.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::segments::SegmentWriter;
use super::sink::Delivered;
use super::{connect, db_err};
use crate::engine::{FetchedMessage, SkippedMessage};
use crate::error::HostError;

/// Work for the writer thread; the number says which sink it is for.
pub(super) enum Job {
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
    pub(super) backlog: Arc<Backlog>,
    pub(super) next_sink: AtomicU64,
}

impl Writer {
    pub(super) fn send(&self, job: Job) -> Result<(), HostError> {
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

pub(super) fn stopped() -> HostError {
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
pub(super) fn writer_for(path: &Path) -> Result<Arc<Writer>, HostError> {
    let k = key(path);
    let mut writers = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
    writers.retain(|(_, w)| w.strong_count() > 0);
    if let Some(w) = writers.iter().filter(|(p, _)| *p == k).find_map(|(_, w)| w.upgrade()) {
        return Ok(w);
    }
    let state = WriterState {
        conn: connect(path)?,
        database: path.to_path_buf(),
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

/// About what one stored message adds to SQLite (its row, index entries and event), for the
/// two thresholds above and below.
const ROW_BYTES: usize = 1024;

/// How much is inserted between two `WriterState::start_writeback`s.
pub(super) const WRITEBACK_EVERY: usize = 1 << 20;

/// Bytes of messages handed to the writer and not yet stored.
#[derive(Default)]
pub(super) struct Backlog {
    bytes: Mutex<usize>,
    drained: Condvar,
}

impl Backlog {
    /// Waits until `size` more bytes fit (a message always fits in an empty backlog), then
    /// counts them; fails when the writer stopped. Returns how long it waited.
    pub(super) fn admit(&self, size: usize, writer: &Writer) -> Result<Duration, HostError> {
        let mut queued = self.bytes.lock().map_err(|_| stopped())?;
        let mut waited = None;
        while *queued > 0 && *queued + size > WRITER_BACKLOG_BYTES {
            if writer.finished() {
                return Err(stopped());
            }
            let since = *waited.get_or_insert_with(std::time::Instant::now);
            queued = self.drained.wait_timeout(queued, Duration::from_millis(100)).map_err(|_| stopped())?.0;
            waited = Some(since);
        }
        *queued += size;
        Ok(waited.map_or(Duration::ZERO, |since| since.elapsed()))
    }

    fn release(&self, size: usize) {
        if let Ok(mut queued) = self.bytes.lock() {
            *queued = queued.saturating_sub(size);
        }
        self.drained.notify_one();
    }
}

/// One sink, as the writer knows it.
pub(super) struct SinkState {
    pub(super) tenant: String,
    pub(super) mailbox: String,
    pub(super) source: String,
    /// What each delivery since the sink's last commit did (committed or still in the open
    /// transaction).
    pub(super) results: Vec<Delivered>,
    pub(super) failed: Option<HostError>,
}

/// The writer thread: its own connection, the open transaction and the sinks writing into it.
pub(super) struct WriterState {
    pub(super) conn: Connection,
    /// The database file (its segments are beside it).
    pub(super) database: PathBuf,
    pub(super) in_tx: bool,
    /// Bytes inserted into SQLite since the last `start_writeback`.
    pub(super) written: usize,
    /// The WAL file, opened for `start_writeback`.
    pub(super) wal: Option<std::fs::File>,
    /// Where the raw bytes go (see `segments`).
    pub(super) segments: SegmentWriter,
    /// Bytes inserted into SQLite since the last checkpoint.
    pub(super) since_checkpoint: usize,
    pub(super) sinks: HashMap<u64, SinkState>,
}

impl WriterState {
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
            self.segments.rolled_back();
            let why = match e {
                HostError::Storage(m) => m.clone(),
                other => other.to_string(),
            };
            for s in self.sinks.values_mut() {
                if !s.results.is_empty() {
                    s.results.clear();
                    s.failed.get_or_insert_with(|| HostError::Storage(why.clone()));
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
            // Reported now, not again at the next commit.
            if let Some(s) = self.sinks.get_mut(&sink) {
                s.failed = None;
            }
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
                        // The bodies went to the segment: SQLite got the row, the
                        // attachments' names and the event.
                        let n = ROW_BYTES + m.parsed.as_ref().map_or(0, |p| p.attachments.len() * 256);
                        self.written += n;
                        self.since_checkpoint += n;
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
