//! The host's message store: SQLite, one file per tenant configuration.
//!
//! Messages are inserted inside a transaction that `commit` closes with `synchronous = FULL`,
//! so `stored` is only sent to the guest once they are on disk. Deduplication is by the
//! server id (mailbox + "imap:<folder>:<uidvalidity>:<uid>" / "pop3:<uidl>") and by the
//! Message-ID within a mailbox (a content hash when the message has none), so at-least-once
//! delivery from the guest becomes exactly-once in the store.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::driver::MessageSink;
use crate::engine::{Classification, FetchedMessage, SkippedMessage};
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
CREATE TABLE IF NOT EXISTS sync_state (
    tenant          TEXT NOT NULL,
    mailbox         TEXT NOT NULL,
    state           BLOB NOT NULL,
    PRIMARY KEY (tenant, mailbox)
);
"#;

fn db_err(what: &str) -> impl Fn(rusqlite::Error) -> HostError + '_ {
    move |e| HostError::Storage(format!("{what}: {e}"))
}

/// An open message store.
pub struct Database {
    conn: Connection,
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
    pub fn open(path: &Path) -> Result<Database, HostError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| HostError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| HostError::Storage(format!("cannot open the database {}: {e}", path.display())))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(db_err("database settings"))?;
        conn.execute_batch(SCHEMA).map_err(db_err("database schema"))?;
        Ok(Database { conn })
    }

    /// A sink that stores one mailbox's deliveries into this database.
    pub fn sink<'a>(&'a self, tenant: &str, mailbox: &str) -> DbSink<'a> {
        DbSink { db: self, tenant: tenant.to_string(), mailbox: mailbox.to_string(), in_tx: false, stats: SinkStats::default() }
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
    in_tx: bool,
    pub stats: SinkStats,
}

fn classification_name(c: Classification) -> &'static str {
    match c {
        Classification::Normal => "normal",
        Classification::AutoReply => "auto-reply",
        Classification::Bulk => "bulk",
        Classification::Bounce => "bounce",
    }
}

impl DbSink<'_> {
    fn begin(&mut self) -> Result<(), HostError> {
        if !self.in_tx {
            self.db.conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err("starting a transaction"))?;
            self.in_tx = true;
        }
        Ok(())
    }

    /// Stores a message; returns false when it was already there (a duplicate).
    fn insert(&mut self, m: &FetchedMessage) -> Result<bool, HostError> {
        self.begin()?;
        let now = crate::driver::now_ms() as i64;
        let c = &self.db.conn;
        let inserted = match &m.parsed {
            Ok(p) => {
                let from = p.from.first().map(|a| match &a.name {
                    Some(n) => format!("{n} <{}>", a.address),
                    None => a.address.clone(),
                });
                c.execute(
                    "INSERT OR IGNORE INTO messages (tenant, mailbox, server_id, folder, message_id, message_id_synthetic,
                        subject, from_addr, date_ms, classification, parse_error, text_body, html_body, size, raw, stored_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, ?11, ?12, ?13, ?14, ?15)",
                    params![
                        self.tenant, self.mailbox, m.id, m.folder, p.message_id, p.message_id_synthetic, p.subject, from,
                        p.date_ms, classification_name(p.classification), p.text_body, p.html_body, m.raw.len() as i64,
                        m.raw, now
                    ],
                )
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
                for a in &p.attachments {
                    c.execute(
                        "INSERT INTO attachments (message, name, media_type, size, content_id, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![rowid, a.name, a.media_type, a.size as i64, a.content_id, a.bytes],
                    )
                    .map_err(db_err("storing an attachment"))?;
                }
            }
        }
        Ok(inserted == 1)
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

impl MessageSink for DbSink<'_> {
    fn deliver(&mut self, m: FetchedMessage) -> Result<(), HostError> {
        self.stats.bytes += m.raw.len() as u64;
        if self.insert(&m)? {
            self.stats.stored += 1;
        } else {
            self.stats.duplicates += 1;
        }
        Ok(())
    }

    fn skipped(&mut self, s: SkippedMessage) -> Result<(), HostError> {
        self.begin()?;
        self.db
            .conn
            .execute(
                "INSERT OR IGNORE INTO skipped (tenant, mailbox, server_id, folder, size, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![self.tenant, self.mailbox, s.id, s.folder, s.size as i64, s.reason],
            )
            .map_err(db_err("recording a skipped message"))?;
        self.stats.skipped += 1;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), HostError> {
        if self.in_tx {
            self.db.conn.execute_batch("COMMIT").map_err(db_err("committing"))?;
            self.in_tx = false;
        }
        Ok(())
    }
}

impl Drop for DbSink<'_> {
    fn drop(&mut self) {
        // The guest only delivers complete messages, so keeping an unacknowledged batch is safe:
        // the server still has them, the next run delivers them again and they deduplicate.
        if self.in_tx {
            if self.db.conn.execute_batch("COMMIT").is_err() {
                let _ = self.db.conn.execute_batch("ROLLBACK");
            }
        }
    }
}
