//! The host's message store: SQLite, one file per tenant configuration.
//!
//! Messages are inserted inside a transaction that `commit` closes with `synchronous = FULL`,
//! so `stored` is only sent to the guest once they are on disk. Deduplication never
//! acknowledges a message it did not store: a delivery is a duplicate only when the same
//! server (protocol, host, port, user: the `source`) already gave a message that server id
//! ("imap:<folder>:<uidvalidity>:<uid>" / "pop3:<uidl>"), or when a message with the same
//! Message-ID *and* the same bytes (SHA-256) is stored. A different message that reuses a
//! stored Message-ID is stored as its own row, flagged `mid_collision`. So at-least-once
//! delivery from the guest becomes exactly-once in the store, and nothing is lost to a forged
//! Message-ID.
//!
//! Each row also records whether it was `reported` as new (by `fetch`): a run that fails or is
//! killed after storing leaves its rows unreported, and the next run reports them.
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
use crate::store::{SavedState, SyncStateStore};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    id              INTEGER PRIMARY KEY,
    tenant          TEXT NOT NULL,
    mailbox         TEXT NOT NULL,
    -- The server the message came from: "protocol:host:port:user" ('' for rows of version 1).
    source          TEXT NOT NULL DEFAULT '',
    server_id       TEXT NOT NULL,
    folder          TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    message_id_synthetic INTEGER NOT NULL,
    -- SHA-256 of raw, hex.
    content_hash    TEXT,
    -- Another stored message had this Message-ID with other content when this one arrived.
    mid_collision   INTEGER NOT NULL DEFAULT 0,
    -- Reported as new by `fetch`.
    reported        INTEGER NOT NULL DEFAULT 0,
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
    UNIQUE (tenant, mailbox, source, server_id)
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
    -- The server the state is for: "protocol:host:port:user" (NULL for states of version 1).
    binding         TEXT,
    PRIMARY KEY (tenant, mailbox)
);
"#;

/// Indexes created once `migrate` brought the tables to the current layout.
const INDEXES: &str = "CREATE INDEX IF NOT EXISTS messages_message_id ON messages (tenant, mailbox, message_id);
CREATE INDEX IF NOT EXISTS messages_unreported ON messages (tenant, mailbox) WHERE reported = 0;";

/// The schema version this code writes (`PRAGMA user_version`). Version 1 (0 in the file)
/// had `UNIQUE (tenant, mailbox, message_id)`, no `source`, `content_hash`, `mid_collision`,
/// `reported` and no sync-state `binding`.
const SCHEMA_VERSION: i64 = 2;

/// Brings a database of an earlier version to the current layout, keeping every row: the
/// messages table is rebuilt without the Message-ID constraint (SQLite cannot drop one), its
/// rows counted as reported (the earlier version printed them) with their content hashes
/// computed; the sync states get an empty binding, adopted by the next run.
fn migrate(conn: &mut Connection) -> Result<(), HostError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db_err("reading the schema version"))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let has_column = |conn: &Connection, table: &str, column: &str| -> Result<bool, HostError> {
        let mut st = conn.prepare(&format!("PRAGMA table_info({table})")).map_err(db_err("reading the schema"))?;
        let names = st.query_map([], |r| r.get::<_, String>(1)).map_err(db_err("reading the schema"))?;
        let found = names.filter_map(Result::ok).any(|n| n == column);
        Ok(found)
    };
    // Dropping the old table must not cascade to the attachments (outside a transaction).
    conn.execute_batch("PRAGMA foreign_keys = OFF").map_err(db_err("migrating the database"))?;
    // Immediate: a second process opening the same old database waits, then finds it migrated.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db_err("migrating the database"))?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db_err("reading the schema version"))?;
    if version >= SCHEMA_VERSION {
        drop(tx);
        conn.execute_batch("PRAGMA foreign_keys = ON").map_err(db_err("migrating the database"))?;
        return Ok(());
    }
    let rebuild = !has_column(&tx, "messages", "content_hash")?;
    if rebuild {
        let new_table = SCHEMA
            .split(';')
            .find(|t| t.contains("TABLE IF NOT EXISTS messages"))
            .unwrap_or_default()
            .replace("TABLE IF NOT EXISTS messages", "TABLE messages_v2");
        let columns = "id, tenant, mailbox, server_id, folder, message_id, message_id_synthetic, subject, from_addr, date_ms, \
                       classification, parse_error, text_body, html_body, size, raw, stored_at_ms";
        tx.execute_batch(&format!(
            "{new_table};
             INSERT INTO messages_v2 ({columns}, reported) SELECT {columns}, 1 FROM messages;
             DROP TABLE messages;
             ALTER TABLE messages_v2 RENAME TO messages;"
        ))
        .map_err(db_err("migrating the messages table"))?;
        let rows: Vec<(i64, Vec<u8>)> = {
            let mut st = tx.prepare("SELECT id, raw FROM messages").map_err(db_err("migrating the messages table"))?;
            let it = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_err("migrating the messages table"))?;
            it.collect::<Result<_, _>>().map_err(db_err("migrating the messages table"))?
        };
        for (id, raw) in rows {
            tx.execute("UPDATE messages SET content_hash = ?1 WHERE id = ?2", params![content_hash(&raw), id])
                .map_err(db_err("migrating the messages table"))?;
        }
    }
    if !has_column(&tx, "sync_state", "binding")? {
        tx.execute_batch("ALTER TABLE sync_state ADD COLUMN binding TEXT").map_err(db_err("migrating the sync states"))?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")).map_err(db_err("migrating the database"))?;
    tx.commit().map_err(db_err("migrating the database"))?;
    conn.execute_batch("PRAGMA foreign_keys = ON").map_err(db_err("migrating the database"))?;
    Ok(())
}

/// SHA-256 of a message's bytes, hex: with the Message-ID, what makes two deliveries the same.
pub fn content_hash(raw: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, raw);
    digest.as_ref().iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

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
}

/// A stored message not yet reported as new.
#[derive(Debug, Clone)]
pub struct Unreported {
    pub row: i64,
    pub server_id: String,
    pub folder: String,
    pub size: u64,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub classification: String,
    pub parse_error: Option<String>,
    pub collision: bool,
    pub raw: Vec<u8>,
}

/// One stored message, as tests and tools read it back.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub row: i64,
    pub server_id: String,
    pub folder: String,
    pub message_id: String,
    pub subject: Option<String>,
    pub classification: String,
    pub parse_error: Option<String>,
    pub raw: Vec<u8>,
    pub attachments: usize,
    /// Stored although another message had its Message-ID.
    pub collision: bool,
    pub reported: bool,
}

impl Database {
    pub fn open(path: &Path) -> Result<Database, HostError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| HostError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = connect(path)?;
        conn.execute_batch(SCHEMA).map_err(db_err("database schema"))?;
        migrate(&mut conn)?;
        conn.execute_batch(INDEXES).map_err(db_err("database schema"))?;
        Ok(Database { conn, path: path.to_path_buf() })
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
            source: String::new(),
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
                        (SELECT COUNT(*) FROM attachments a WHERE a.message = m.id), id, mid_collision, reported
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
                    row: r.get(8)?,
                    collision: r.get(9)?,
                    reported: r.get(10)?,
                })
            })
            .map_err(db_err("reading messages"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err("reading messages"))
    }

    /// A stored message named explicitly: `db:17` (its database id), `mid:<id@host>` or
    /// `<id@host>` (its Message-ID), or its server id (`imap:...`, `pop3:...`). A bare number or
    /// other text is refused, since it could be read more than one way; so is a reference that
    /// matches several messages (a Message-ID reused by another message, or a server id of two
    /// servers), with the candidates listed. Returns (mailbox, raw bytes).
    pub fn find(&self, tenant: &str, reference: &str) -> Result<(String, Vec<u8>), HostError> {
        let r = reference.trim();
        let bracketed = |v: &str| v.strip_prefix('<').and_then(|v| v.strip_suffix('>')).map(str::to_string);
        let (column, value): (&str, rusqlite::types::Value) = if let Some(n) = r.strip_prefix("db:") {
            let id = n.trim().parse::<i64>().map_err(|_| HostError::NotFound(format!("\"{r}\": after db: give the message's database id, a number")))?;
            ("id", id.into())
        } else if let Some(m) = r.strip_prefix("mid:") {
            let m = m.trim();
            ("message_id", bracketed(m).unwrap_or_else(|| m.to_string()).into())
        } else if let Some(m) = bracketed(r) {
            ("message_id", m.into())
        } else if r.starts_with("imap:") || r.starts_with("pop3:") {
            ("server_id", r.to_string().into())
        } else {
            return Err(HostError::NotFound(format!(
                "\"{r}\" does not say what it names; give db:<database id>, mid:<Message-ID> (or <Message-ID> in angle brackets), or the server id (imap:... / pop3:...)"
            )));
        };
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT id, mailbox, server_id, from_addr, subject FROM messages WHERE tenant = ?1 AND {column} = ?2 ORDER BY id LIMIT 11"
            ))
            .map_err(db_err("finding a message"))?;
        type Candidate = (i64, String, String, Option<String>, Option<String>);
        let found: Vec<Candidate> = st
            .query_map(params![tenant, value], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
            .map_err(db_err("finding a message"))?
            .collect::<Result<_, _>>()
            .map_err(db_err("finding a message"))?;
        match found.as_slice() {
            [] => Err(HostError::NotFound(format!("no stored message \"{r}\" for tenant \"{tenant}\""))),
            [(id, mailbox, ..)] => {
                let raw = self
                    .conn
                    .query_row("SELECT raw FROM messages WHERE id = ?1", params![id], |row| row.get(0))
                    .map_err(db_err("finding a message"))?;
                Ok((mailbox.clone(), raw))
            }
            many => {
                let list: Vec<String> = many
                    .iter()
                    .take(10)
                    .map(|(id, mailbox, server_id, from, subject)| {
                        format!(
                            "db:{id} (mailbox {mailbox}, {server_id}, From: {}, Subject: {})",
                            from.as_deref().unwrap_or("-"),
                            subject.as_deref().unwrap_or("-")
                        )
                    })
                    .collect();
                Err(HostError::NotFound(format!(
                    "\"{r}\" matches {}{} stored messages, so the reply is not sent: {}; name the one to answer by its db: id",
                    if many.len() > 10 { "more than " } else { "" },
                    many.len().min(10),
                    list.join("; ")
                )))
            }
        }
    }

    /// Rows of a mailbox not yet reported as new (stored by a run that failed or was killed
    /// before it printed them), oldest first.
    /// `raw` is only read `with_raw` (else empty), so a long backlog does not fill memory.
    pub fn unreported(&self, tenant: &str, mailbox: &str, with_raw: bool) -> Result<Vec<Unreported>, HostError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, server_id, folder, size, from_addr, subject, classification, parse_error, mid_collision,
                        CASE WHEN ?3 THEN raw ELSE X'' END
                 FROM messages WHERE tenant = ?1 AND mailbox = ?2 AND reported = 0 ORDER BY id",
            )
            .map_err(db_err("reading unreported messages"))?;
        let rows = st
            .query_map(params![tenant, mailbox, with_raw], |r| {
                Ok(Unreported {
                    row: r.get(0)?,
                    server_id: r.get(1)?,
                    folder: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    from: r.get(4)?,
                    subject: r.get(5)?,
                    classification: r.get(6)?,
                    parse_error: r.get(7)?,
                    collision: r.get(8)?,
                    raw: r.get(9)?,
                })
            })
            .map_err(db_err("reading unreported messages"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err("reading unreported messages"))
    }

    /// Records that these rows were reported as new, without its own fsync (see `unsynced`): a
    /// mark lost to a power cut reports the rows again, never not at all.
    pub fn mark_reported(&self, rows: &[i64]) -> Result<(), HostError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.unsynced(|conn| {
            let tx = conn.unchecked_transaction().map_err(db_err("marking messages reported"))?;
            {
                let mut st = tx.prepare_cached("UPDATE messages SET reported = 1 WHERE id = ?1").map_err(db_err("marking messages reported"))?;
                for row in rows {
                    st.execute(params![row]).map_err(db_err("marking messages reported"))?;
                }
            }
            tx.commit().map_err(db_err("marking messages reported"))
        })
    }

    /// Runs `f` with `synchronous = NORMAL`: its commit is not synced on its own but by the next
    /// synced commit or checkpoint. The WAL keeps commits in order, so a power cut can lose such
    /// a write but never keep it without everything committed before it (the messages a sync
    /// state covers are committed, synced, before it is saved). Tokens are never written so.
    fn unsynced<T>(&self, f: impl FnOnce(&Connection) -> Result<T, HostError>) -> Result<T, HostError> {
        self.conn.execute_batch("PRAGMA synchronous = NORMAL").map_err(db_err("database settings"))?;
        let result = f(&self.conn);
        self.conn.execute_batch("PRAGMA synchronous = FULL").map_err(db_err("database settings"))?;
        result
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
    fn load(&self, tenant: &str, mailbox: &str) -> Result<Option<SavedState>, HostError> {
        self.conn
            .query_row(
                "SELECT state, binding FROM sync_state WHERE tenant = ?1 AND mailbox = ?2",
                params![tenant, mailbox],
                |r| Ok(SavedState { state: r.get(0)?, binding: r.get(1)? }),
            )
            .optional()
            .map_err(db_err("reading sync state"))
    }
    /// Without its own fsync (see `Database::unsynced`): a lost save only makes the next run
    /// deliver the same messages again, which the store recognises.
    fn save(&self, tenant: &str, mailbox: &str, binding: &str, state: &[u8]) -> Result<(), HostError> {
        self.unsynced(|conn| conn
            .execute(
                "INSERT INTO sync_state (tenant, mailbox, state, binding) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, mailbox) DO UPDATE SET state = excluded.state, binding = excluded.binding",
                params![tenant, mailbox, state, binding],
            )
            .map(|_| ())
            .map_err(db_err("saving sync state")))
    }

    fn load_tokens(&self, tenant: &str, client: &str, username: &str) -> Result<Option<Tokens>, HostError> {
        self.conn
            .query_row(
                "SELECT access_token, refresh_token, expires_at_ms, scopes, account FROM oauth_tokens
                 WHERE tenant = ?1 AND client = ?2 AND username = ?3",
                params![tenant, client, username],
                |r| {
                    let scopes: String = r.get(3)?;
                    Ok(Tokens {
                        access_token: r.get(0)?,
                        refresh_token: r.get(1)?,
                        expires_at: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                        scopes: scopes.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect(),
                        account: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(db_err("reading OAuth2 tokens"))
    }

    fn save_tokens(&self, tenant: &str, client: &str, username: &str, t: &Tokens) -> Result<(), HostError> {
        self.conn
            .execute(
                "INSERT INTO oauth_tokens (tenant, client, username, access_token, refresh_token, expires_at_ms, scopes, account, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (tenant, client, username) DO UPDATE SET access_token = excluded.access_token,
                   refresh_token = excluded.refresh_token, expires_at_ms = excluded.expires_at_ms,
                   scopes = excluded.scopes, account = excluded.account, updated_at_ms = excluded.updated_at_ms",
                params![
                    tenant,
                    client,
                    username,
                    t.access_token,
                    t.refresh_token,
                    t.expires_at.map(|v| v as i64),
                    t.scopes.join(" "),
                    t.account,
                    crate::driver::now_ms() as i64
                ],
            )
            .map(|_| ())
            .map_err(db_err("saving OAuth2 tokens"))
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

/// Work for the writer thread.
enum Job {
    /// A message and the bytes it holds (counted in the `Backlog`).
    Deliver(FetchedMessage, usize),
    Skipped(SkippedMessage),
    /// Commit and answer with what each delivery since the last commit did.
    Commit(SyncSender<Result<Vec<Delivered>, HostError>>),
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
    source: String,
    results: Vec<Delivered>,
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

    /// Stores a message unless the same one is stored already (see the module doc).
    fn insert(&mut self, m: &FetchedMessage) -> Result<Delivered, HostError> {
        self.begin()?;
        let now = crate::driver::now_ms() as i64;
        let c = &self.conn;
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
                st.query_row(params![self.tenant, self.mailbox, self.source, m.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()
            })
            .map_err(db_err("looking up a message"))?;
        if let Some((row, reported, collision)) = same_server {
            return Ok(done(row, false, reported, collision));
        }
        let same_content = c
            .prepare_cached(
                "SELECT id, reported, mid_collision FROM messages WHERE tenant = ?1 AND mailbox = ?2 AND message_id = ?3 AND content_hash = ?4 ORDER BY id LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row(params![self.tenant, self.mailbox, message_id, hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()
            })
            .map_err(db_err("looking up a message"))?;
        if let Some((row, reported, collision)) = same_content {
            return Ok(done(row, false, reported, collision));
        }
        let collision: bool = c
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE tenant = ?1 AND mailbox = ?2 AND message_id = ?3)")
            .and_then(|mut st| st.query_row(params![self.tenant, self.mailbox, message_id], |r| r.get(0)))
            .map_err(db_err("looking up a message"))?;
        match &m.parsed {
            Ok(p) => {
                let from = p.from.first().map(|a| match &a.name {
                    Some(n) => format!("{n} <{}>", a.address),
                    None => a.address.clone(),
                });
                c.prepare_cached(
                    "INSERT INTO messages (tenant, mailbox, source, server_id, folder, message_id, message_id_synthetic,
                        content_hash, mid_collision, subject, from_addr, date_ms, classification, parse_error, text_body,
                        html_body, size, raw, stored_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, NULL, ?14, ?15, ?16, ?17, ?18)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        self.tenant, self.mailbox, self.source, m.id, m.folder, message_id, p.message_id_synthetic, hash,
                        collision, p.subject, from, p.date_ms, classification_name(p.classification), p.text_body,
                        p.html_body, m.raw.len() as i64, m.raw, now
                    ])
                })
                .map_err(db_err("storing a message"))?;
            }
            Err(why) => {
                c.execute(
                    "INSERT INTO messages (tenant, mailbox, source, server_id, folder, message_id, message_id_synthetic,
                        content_hash, mid_collision, classification, parse_error, size, raw, stored_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, 'normal', ?9, ?10, ?11, ?12)",
                    params![self.tenant, self.mailbox, self.source, m.id, m.folder, message_id, hash, collision, why, m.raw.len() as i64, m.raw, now],
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
        Ok(done(rowid, true, false, collision))
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

    fn commit(&mut self) -> Result<Vec<Delivered>, HostError> {
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
                    Ok(d) => {
                        self.results.push(d);
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
                source: self.source.clone(),
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
        self.send(Job::Commit(answer))?;
        self.results = result.recv().map_err(|_| HostError::Storage("the database writer stopped".into()))??;
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
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            drop(w.jobs);
            let _ = w.thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ParsedMessage;

    fn temp_db(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("mailplug-dbtest-{name}-{}.sqlite3", std::process::id()));
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", p.display()));
        }
        p
    }

    fn message(server_id: &str, message_id: &str, body: &str) -> FetchedMessage {
        let raw = format!("Message-ID: <{message_id}>\r\nSubject: s\r\n\r\n{body}\r\n").into_bytes();
        FetchedMessage {
            id: server_id.into(),
            folder: "INBOX".into(),
            raw,
            parsed: Ok(ParsedMessage {
                message_id: message_id.into(),
                message_id_synthetic: false,
                in_reply_to: vec![],
                references: vec![],
                from: vec![],
                reply_to: vec![],
                to: vec![],
                cc: vec![],
                subject: Some("s".into()),
                date_ms: None,
                text_body: Some(body.into()),
                html_body: None,
                attachments: vec![],
                classification: Classification::Normal,
                warnings: vec![],
            }),
        }
    }

    fn deliver(db: &Database, source: &str, msgs: Vec<FetchedMessage>) -> Vec<Delivered> {
        let mut sink = db.sink("t", "m");
        sink.source(source);
        for m in msgs {
            sink.deliver(m).unwrap();
        }
        sink.commit().unwrap();
        sink.results.clone()
    }

    #[test]
    fn a_forged_message_id_never_hides_the_genuine_message() {
        let db = Database::open(&temp_db("forged")).unwrap();
        let r = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "x@y", "forged"), message("imap:INBOX:1:2", "x@y", "genuine")]);
        assert!(r[0].new && !r[0].collision);
        assert!(r[1].new && r[1].collision, "the genuine message is stored as its own row: {r:?}");
        // The same messages again (another folder / a re-fetch): duplicates of their own rows.
        let again = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:2", "x@y", "genuine"), message("imap:Other:5:9", "x@y", "forged")]);
        assert_eq!((again[0].new, again[0].row), (false, r[1].row));
        assert_eq!((again[1].new, again[1].row), (false, r[0].row));
        // Another server reusing a server id is not a duplicate by that id.
        let other = deliver(&db, "pop3:other:995:u", vec![message("imap:INBOX:1:1", "z@y", "other server")]);
        assert!(other[0].new);
        assert_eq!(db.messages("t", "m").unwrap().len(), 3);
    }

    #[test]
    fn references_must_say_what_they_name() {
        let db = Database::open(&temp_db("find")).unwrap();
        let r = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "17", "a"), message("imap:INBOX:1:2", "m@h", "b")]);
        let by_db = format!("db:{}", r[1].row);
        assert_eq!(db.find("t", &by_db).unwrap().1, message("", "m@h", "b").raw);
        assert_eq!(db.find("t", "mid:<17>").unwrap().1, message("", "17", "a").raw);
        assert_eq!(db.find("t", "<m@h>").unwrap().1, message("", "m@h", "b").raw);
        assert_eq!(db.find("t", "imap:INBOX:1:2").unwrap().1, message("", "m@h", "b").raw);
        for bare in ["17", "m@h", &r[1].row.to_string()] {
            let e = db.find("t", bare).unwrap_err().to_string();
            assert!(e.contains("db:<database id>") && e.contains("mid:"), "{bare}: {e}");
        }
        // A reused Message-ID is ambiguous: refused with both candidates.
        deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:3", "m@h", "forged")]);
        let e = db.find("t", "mid:m@h").unwrap_err().to_string();
        assert!(e.contains("matches 2") && e.contains(&format!("db:{}", r[1].row)), "{e}");
        assert!(db.find("t", "db:999").is_err());
    }

    #[test]
    fn unreported_rows_are_reported_once() {
        let db = Database::open(&temp_db("reported")).unwrap();
        let r = deliver(&db, "pop3:h:995:u", vec![message("pop3:a", "a@h", "a"), message("pop3:b", "b@h", "b")]);
        assert_eq!(db.unreported("t", "m", false).unwrap().len(), 2);
        db.mark_reported(&[r[0].row]).unwrap();
        let left = db.unreported("t", "m", true).unwrap();
        assert_eq!(left.iter().map(|u| u.server_id.as_str()).collect::<Vec<_>>(), ["pop3:b"]);
        let again = deliver(&db, "pop3:h:995:u", vec![message("pop3:a", "a@h", "a"), message("pop3:b", "b@h", "b")]);
        assert!(again[0].reported && !again[1].reported);
    }

    /// A database written by the previous version (UNIQUE Message-ID, no binding) opens, keeps
    /// its rows and attachments, counts them as reported, and then stores a colliding message.
    #[test]
    fn databases_of_the_previous_version_are_migrated() {
        let path = temp_db("migrate");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                r#"CREATE TABLE messages (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, mailbox TEXT NOT NULL, server_id TEXT NOT NULL,
                    folder TEXT NOT NULL, message_id TEXT NOT NULL, message_id_synthetic INTEGER NOT NULL, subject TEXT, from_addr TEXT,
                    date_ms INTEGER, classification TEXT NOT NULL, parse_error TEXT, text_body TEXT, html_body TEXT, size INTEGER NOT NULL,
                    raw BLOB NOT NULL, stored_at_ms INTEGER NOT NULL, UNIQUE (tenant, mailbox, server_id), UNIQUE (tenant, mailbox, message_id));
                CREATE TABLE attachments (message INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE, name TEXT,
                    media_type TEXT NOT NULL, size INTEGER NOT NULL, content_id TEXT, bytes BLOB NOT NULL);
                CREATE TABLE sync_state (tenant TEXT NOT NULL, mailbox TEXT NOT NULL, state BLOB NOT NULL, PRIMARY KEY (tenant, mailbox));
                INSERT INTO sync_state VALUES ('t', 'm', X'7B7D');"#,
            )
            .unwrap();
            let old = message("imap:INBOX:1:1", "x@y", "genuine");
            c.execute(
                "INSERT INTO messages (tenant, mailbox, server_id, folder, message_id, message_id_synthetic, classification, size, raw, stored_at_ms)
                 VALUES ('t', 'm', 'imap:INBOX:1:1', 'INBOX', 'x@y', 0, 'normal', 1, ?1, 0)",
                params![old.raw],
            )
            .unwrap();
            c.execute("INSERT INTO attachments VALUES (1, 'a.pdf', 'application/pdf', 3, NULL, X'')", []).unwrap();
        }
        let db = Database::open(&path).unwrap();
        let rows = db.messages("t", "m").unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].reported && rows[0].attachments == 1);
        let saved = db.load("t", "m").unwrap().unwrap();
        assert_eq!((saved.state.as_slice(), saved.binding), (&b"{}"[..], None));
        // The same message again is a duplicate (Message-ID and content); another one with its
        // Message-ID is stored, which the old constraint forbade.
        let r = deliver(&db, "imap:h:993:u", vec![message("imap:INBOX:1:1", "x@y", "genuine"), message("imap:INBOX:1:2", "x@y", "other")]);
        assert!(!r[0].new && r[0].reported);
        assert!(r[1].new && r[1].collision);
        drop(db);
        // Opening again changes nothing.
        assert_eq!(Database::open(&path).unwrap().messages("t", "m").unwrap().len(), 2);
    }
}
