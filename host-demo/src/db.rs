//! The host's message store: SQLite, one file per tenant configuration.
//!
//! Messages are inserted inside a transaction that `commit` closes with `synchronous = FULL`,
//! so `stored` is only sent to the guest once they are on disk. Deduplication is by the
//! server id (mailbox + "imap:<folder>:<uidvalidity>:<uid>" / "pop3:<uidl>") and by the
//! Message-ID within a mailbox (a content hash when the message has none), so at-least-once
//! delivery from the guest becomes exactly-once in the store.
//!
//! Each message is written once, as its raw bytes; attachments are recorded by name, type and
//! size only (their content is in the raw message), so a commit syncs little more than the
//! bytes fetched.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use std::thread::JoinHandle;

use rusqlite::{params, Connection, OptionalExtension};

use crate::driver::MessageSink;
use crate::engine::{Classification, FetchedMessage, SkippedMessage, Tokens};
use crate::error::HostError;
use crate::store::SyncStateStore;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    id              INTEGER PRIMARY KEY,
    tenant          TEXT NOT NULL,
    mailbox         TEXT NOT NULL,
    server_id       TEXT NOT NULL,
    folder          TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    message_id_synthetic INTEGER NOT NULL,
    subject         TEXT,
    from_addr       TEXT,
    date_ms         INTEGER,
    classification  TEXT NOT NULL,
    parse_error     TEXT,
    text_body       TEXT,
    html_body       TEXT,
    size            INTEGER NOT NULL,
    raw             BLOB NOT NULL,
    stored_at_ms    INTEGER NOT NULL,
    UNIQUE (tenant, mailbox, server_id),
    UNIQUE (tenant, mailbox, message_id)
);
CREATE TABLE IF NOT EXISTS attachments (
    message         INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    name            TEXT,
    media_type      TEXT NOT NULL,
    size            INTEGER NOT NULL,
    content_id      TEXT,
    -- Left empty since attachments are no longer stored twice: decode the part from messages.raw.
    bytes           BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS skipped (
    tenant          TEXT NOT NULL,
    mailbox         TEXT NOT NULL,
    server_id       TEXT NOT NULL,
    folder          TEXT NOT NULL,
    size            INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    PRIMARY KEY (tenant, mailbox, server_id)
);
CREATE TABLE IF NOT EXISTS oauth_tokens (
    tenant          TEXT NOT NULL,
    client          TEXT NOT NULL,
    username        TEXT NOT NULL,
    access_token    TEXT NOT NULL,
    refresh_token   TEXT,
    expires_at_ms   INTEGER,
    scopes          TEXT NOT NULL,
    account         TEXT,
    updated_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (tenant, client, username)
);
CREATE TABLE IF NOT EXISTS sync_state (
    tenant          TEXT NOT NULL,
    mailbox         TEXT NOT NULL,
    state           BLOB NOT NULL,
    PRIMARY KEY (tenant, mailbox)
);
"#;

fn connect(path: &Path) -> Result<Connection, HostError> {
    let conn = Connection::open(path)
        .map_err(|e| HostError::Storage(format!("cannot open the database {}: {e}", path.display())))?;
    // 16 KB pages (only takes effect when the file is created): a message of tens of kilobytes
    // spans a few overflow pages instead of a chain of 4 KB ones, and unlike 64 KB pages, where
    // a 33 KB row leaves half of its page empty, the WAL (and so the fsync at each commit)
    // stays close to the size of the data. Measured in docs/BENCHMARKS.md.
    conn.execute_batch(
        "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
    )
    .map_err(db_err("database settings"))?;
    Ok(conn)
}

fn db_err(what: &str) -> impl Fn(rusqlite::Error) -> HostError + '_ {
    move |e| HostError::Storage(format!("{what}: {e}"))
}

/// An open message store.
pub struct Database {
    conn: Connection,
    path: PathBuf,
    /// The keys OAuth2 tokens are encrypted with (`crate::tokens`).
    keys: crate::tokens::SecretKeys,
}

/// One stored message, as tests and tools read it back.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub server_id: String,
    pub folder: String,
    pub message_id: String,
    pub subject: Option<String>,
    pub classification: String,
    pub parse_error: Option<String>,
    pub raw: Vec<u8>,
    pub attachments: usize,
}

impl Database {
    /// Opens (or creates) the database, private to this user (mode 0600, see
    /// `private_files::secure_database`), with the token keys from the environment
    /// (`tokens::SecretKeys::from_env`).
    pub fn open(path: &Path) -> Result<Database, HostError> {
        Database::open_with_keys(path, crate::tokens::SecretKeys::from_env())
    }

    /// Opens the database with the given keys for OAuth2 tokens.
    pub fn open_with_keys(path: &Path, keys: crate::tokens::SecretKeys) -> Result<Database, HostError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private_files::create_dir(dir)?;
        }
        crate::private_files::secure_database(path)?;
        let conn = connect(path)?;
        conn.execute_batch(SCHEMA).map_err(db_err("database schema"))?;
        Ok(Database { conn, path: path.to_path_buf(), keys })
    }

    /// A sink that stores one mailbox's deliveries into this database. Inserts run on a
    /// writer thread with its own connection, so storing overlaps with fetching and parsing;
    /// `commit` waits until everything delivered so far is committed to disk.
    pub fn sink(&self, tenant: &str, mailbox: &str) -> DbSink<'_> {
        DbSink {
            db: self,
            tenant: tenant.to_string(),
            mailbox: mailbox.to_string(),
            writer: None,
            results: Vec::new(),
            stats: SinkStats::default(),
        }
    }

    /// Every stored message of a mailbox, in insertion order.
    pub fn messages(&self, tenant: &str, mailbox: &str) -> Result<Vec<StoredMessage>, HostError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT server_id, folder, message_id, subject, classification, parse_error, raw,
                        (SELECT COUNT(*) FROM attachments a WHERE a.message = m.id)
                 FROM messages m WHERE tenant = ?1 AND mailbox = ?2 ORDER BY id",
            )
            .map_err(db_err("reading messages"))?;
        let rows = st
            .query_map(params![tenant, mailbox], |r| {
                Ok(StoredMessage {
                    server_id: r.get(0)?,
                    folder: r.get(1)?,
                    message_id: r.get(2)?,
                    subject: r.get(3)?,
                    classification: r.get(4)?,
                    parse_error: r.get(5)?,
                    raw: r.get(6)?,
                    attachments: r.get::<_, i64>(7)? as usize,
                })
            })
            .map_err(db_err("reading messages"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err("reading messages"))
    }

    /// A stored message by its database id, server id or Message-ID (without angle brackets):
    /// (mailbox, raw bytes).
    pub fn find(&self, tenant: &str, reference: &str) -> Result<Option<(String, Vec<u8>)>, HostError> {
        let reference = reference.trim().trim_start_matches('<').trim_end_matches('>');
        self.conn
            .query_row(
                "SELECT mailbox, raw FROM messages WHERE tenant = ?1
                   AND (server_id = ?2 OR message_id = ?2 OR CAST(id AS TEXT) = ?2) ORDER BY id DESC LIMIT 1",
                params![tenant, reference],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_err("finding a message"))
    }

    /// Skipped notices of a mailbox: (server id, size, reason).
    pub fn skipped(&self, tenant: &str, mailbox: &str) -> Result<Vec<(String, u64, String)>, HostError> {
        let mut st = self
            .conn
            .prepare("SELECT server_id, size, reason FROM skipped WHERE tenant = ?1 AND mailbox = ?2 ORDER BY rowid")
            .map_err(db_err("reading skipped"))?;
        let rows = st
            .query_map(params![tenant, mailbox], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)))
            .map_err(db_err("reading skipped"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err("reading skipped"))
    }
}

impl SyncStateStore for Database {
    fn load(&self, tenant: &str, mailbox: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.conn
            .query_row("SELECT state FROM sync_state WHERE tenant = ?1 AND mailbox = ?2", params![tenant, mailbox], |r| r.get(0))
            .optional()
            .map_err(db_err("reading sync state"))
    }
    fn save(&self, tenant: &str, mailbox: &str, state: &[u8]) -> Result<(), HostError> {
        self.conn
            .execute(
                "INSERT INTO sync_state (tenant, mailbox, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, mailbox) DO UPDATE SET state = excluded.state",
                params![tenant, mailbox, state],
            )
            .map(|_| ())
            .map_err(db_err("saving sync state"))
    }

    fn load_tokens(&self, tenant: &str, client: &str, username: &str) -> Result<Option<Tokens>, HostError> {
        crate::tokens::load(&self.conn, &self.keys, tenant, client, username)
    }

    fn save_tokens(&self, tenant: &str, client: &str, username: &str, t: &Tokens) -> Result<(), HostError> {
        crate::tokens::save(&self.conn, &self.keys, tenant, client, username, t)
    }

    fn token_storage_ready(&self) -> Result<(), HostError> {
        self.keys.ready()
    }
}

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
    writer: Option<Writer>,
    /// After each `commit`: (server id, newly stored) per delivery since the previous commit.
    pub results: Vec<(String, bool)>,
    pub stats: SinkStats,
}

/// Work for the writer thread.
enum Job {
    /// A message and the bytes it holds (counted in the `Backlog`).
    Deliver(FetchedMessage, usize),
    Skipped(SkippedMessage),
    /// Commit and answer with what each delivery since the last commit did.
    Commit(SyncSender<Result<Vec<(String, bool)>, HostError>>),
}

struct Writer {
    jobs: SyncSender<Job>,
    thread: JoinHandle<()>,
    backlog: Arc<Backlog>,
}

/// At most this many jobs, holding at most `WRITER_BACKLOG_BYTES` of messages (or a single
/// larger message), wait for the writer: host memory stays bounded whatever the mailbox
/// holds, while bursts of small messages (one read can complete dozens) do not stall the
/// session on the writer's every insert.
const WRITER_QUEUE: usize = 64;
const WRITER_BACKLOG_BYTES: usize = 8 << 20;

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
    fn admit(&self, size: usize, writer: &JoinHandle<()>) -> Result<(), HostError> {
        let stopped = || HostError::Storage("the database writer stopped".into());
        let mut queued = self.bytes.lock().map_err(|_| stopped())?;
        while *queued > 0 && *queued + size > WRITER_BACKLOG_BYTES {
            if writer.is_finished() {
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

/// The writer thread: its own connection and the open transaction.
struct WriterState {
    conn: Connection,
    tenant: String,
    mailbox: String,
    in_tx: bool,
    /// Raw bytes inserted since the last `start_writeback`.
    written: usize,
    /// The WAL file, opened for `start_writeback`.
    wal: Option<std::fs::File>,
    results: Vec<(String, bool)>,
    failed: Option<HostError>,
}

impl WriterState {
    fn begin(&mut self) -> Result<(), HostError> {
        if !self.in_tx {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err("starting a transaction"))?;
            self.in_tx = true;
        }
        Ok(())
    }

    /// Stores a message; returns false when it was already there (a duplicate).
    fn insert(&mut self, m: &FetchedMessage) -> Result<bool, HostError> {
        self.begin()?;
        let now = crate::driver::now_ms() as i64;
        let c = &self.conn;
        let inserted = match &m.parsed {
            Ok(p) => {
                let from = p.from.first().map(|a| match &a.name {
                    Some(n) => format!("{n} <{}>", a.address),
                    None => a.address.clone(),
                });
                c.prepare_cached(
                    "INSERT OR IGNORE INTO messages (tenant, mailbox, server_id, folder, message_id, message_id_synthetic,
                        subject, from_addr, date_ms, classification, parse_error, text_body, html_body, size, raw, stored_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, ?11, ?12, ?13, ?14, ?15)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        self.tenant, self.mailbox, m.id, m.folder, p.message_id, p.message_id_synthetic, p.subject, from,
                        p.date_ms, classification_name(p.classification), p.text_body, p.html_body, m.raw.len() as i64,
                        m.raw, now
                    ])
                })
                .map_err(db_err("storing a message"))?
            }
            Err(why) => {
                // Unparseable: stored raw with the reason; deduplicated by a content hash id.
                let synthetic = format!("unparsed-{}@mailplug.invalid", content_key(&m.raw));
                c.execute(
                    "INSERT OR IGNORE INTO messages (tenant, mailbox, server_id, folder, message_id, message_id_synthetic,
                        classification, parse_error, size, raw, stored_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, 'normal', ?6, ?7, ?8, ?9)",
                    params![self.tenant, self.mailbox, m.id, m.folder, synthetic, why, m.raw.len() as i64, m.raw, now],
                )
                .map_err(db_err("storing a message"))?
            }
        };
        if inserted == 1 {
            if let Ok(p) = &m.parsed {
                let rowid = c.last_insert_rowid();
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
        }
        Ok(inserted == 1)
    }

    /// Asks the kernel to start writing the WAL to disk now, without waiting: SQLite fills the
    /// WAL as the transaction grows, and the fsync at `COMMIT` then finds most of it already
    /// written instead of flushing the whole batch while the session waits. Durability is
    /// unchanged: `COMMIT` still syncs.
    fn start_writeback(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            if self.wal.is_none() {
                self.wal = self.conn.path().and_then(|p| std::fs::File::open(format!("{p}-wal")).ok());
            }
            if let Some(f) = &self.wal {
                // SAFETY: a valid open descriptor; the call only starts write-back of its pages.
                unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
            }
        }
    }

    fn skipped(&mut self, s: &SkippedMessage) -> Result<(), HostError> {
        self.begin()?;
        self.conn
            .execute(
                "INSERT OR IGNORE INTO skipped (tenant, mailbox, server_id, folder, size, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![self.tenant, self.mailbox, s.id, s.folder, s.size as i64, s.reason],
            )
            .map_err(db_err("recording a skipped message"))?;
        Ok(())
    }

    fn commit(&mut self) -> Result<Vec<(String, bool)>, HostError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.in_tx {
            self.conn.execute_batch("COMMIT").map_err(db_err("committing"))?;
            self.in_tx = false;
            // SQLite may replace the WAL file between transactions: opened afresh next time.
            self.wal = None;
            self.written = 0;
        }
        Ok(std::mem::take(&mut self.results))
    }

    fn run(mut self, jobs: Receiver<Job>, backlog: Arc<Backlog>) {
        for job in jobs {
            if let Job::Deliver(_, size) = &job {
                backlog.release(*size);
            }
            match job {
                // After a failure, work is dropped until the next commit reports it.
                Job::Deliver(..) | Job::Skipped(_) if self.failed.is_some() => {}
                Job::Deliver(m, _) => match self.insert(&m) {
                    Ok(new) => {
                        self.results.push((m.id, new));
                        self.written += m.raw.len();
                        if self.written >= WRITEBACK_EVERY {
                            self.written = 0;
                            self.start_writeback();
                        }
                    }
                    Err(e) => self.failed = Some(e),
                },
                Job::Skipped(s) => {
                    if let Err(e) = self.skipped(&s) {
                        self.failed = Some(e);
                    }
                }
                Job::Commit(answer) => {
                    let _ = answer.send(self.commit());
                }
            }
        }
        // The sink was dropped with a batch open. The guest only delivers complete messages, so
        // keeping it is safe: the server still has them and the next run deduplicates.
        if self.in_tx && self.failed.is_none() && self.conn.execute_batch("COMMIT").is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A short, stable key for bytes (FNV-1a 64 twice with different seeds); only used to
/// deduplicate messages that could not be parsed.
fn content_key(raw: &[u8]) -> String {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x8422_2325_cbf2_9ce4;
    for &x in raw {
        a = (a ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        b = (b ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3 ^ 0x1000);
    }
    format!("{a:016x}{b:016x}{:x}", raw.len())
}

impl DbSink<'_> {
    /// The writer thread, started on first use.
    fn writer(&mut self) -> Result<&Writer, HostError> {
        if self.writer.is_none() {
            let state = WriterState {
                conn: connect(&self.db.path)?,
                tenant: self.tenant.clone(),
                mailbox: self.mailbox.clone(),
                in_tx: false,
                written: 0,
                wal: None,
                results: Vec::new(),
                failed: None,
            };
            let (jobs, rx) = sync_channel(WRITER_QUEUE);
            let backlog = Arc::new(Backlog::default());
            let b2 = backlog.clone();
            let thread = std::thread::Builder::new()
                .name("mailplug-db-writer".into())
                .spawn(move || state.run(rx, b2))
                .map_err(|e| HostError::Storage(format!("cannot start the database writer: {e}")))?;
            self.writer = Some(Writer { jobs, thread, backlog });
        }
        self.writer.as_ref().ok_or_else(|| HostError::Storage("the database writer stopped".into()))
    }

    fn send(&mut self, job: Job) -> Result<(), HostError> {
        self.writer()?.jobs.send(job).map_err(|_| HostError::Storage("the database writer stopped".into()))
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
        let writer = self.writer()?;
        writer.backlog.admit(size, &writer.thread)?;
        self.send(Job::Deliver(m, size))
    }

    fn skipped(&mut self, s: SkippedMessage) -> Result<(), HostError> {
        self.stats.skipped += 1;
        self.send(Job::Skipped(s))
    }

    fn commit(&mut self) -> Result<(), HostError> {
        self.results.clear();
        if self.writer.is_none() {
            return Ok(());
        }
        let (answer, result) = sync_channel(1);
        self.send(Job::Commit(answer))?;
        self.results = result.recv().map_err(|_| HostError::Storage("the database writer stopped".into()))??;
        for (_, new) in &self.results {
            if *new {
                self.stats.stored += 1;
            } else {
                self.stats.duplicates += 1;
            }
        }
        Ok(())
    }
}

impl Drop for DbSink<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            drop(w.jobs);
            let _ = w.thread.join();
        }
    }
}
